//! The JSON scanner (`roomcast_common::json`) against serde_json, on arbitrary bytes.
//!
//! The module stores `META` only if the scanner accepts it, and the edge's reader splices
//! a payload into its frames as JSON only if the scanner accepts it (else it sends the
//! text as a string). So: whatever the scanner accepts, a real JSON parser must accept;
//! and whatever serde_json accepts within the scanner's depth cap, the scanner must too.

#![no_main]

use libfuzzer_sys::fuzz_target;
use roomcast_common::json::{is_valid, MAX_DEPTH};
use serde_json::value::RawValue;

/// Deepest nesting of `[`/`{` outside strings (meaningful for valid JSON only).
fn depth(bytes: &[u8]) -> usize {
    let (mut depth, mut deepest, mut in_string, mut escaped) = (0usize, 0, false, false);
    for &b in bytes {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

fuzz_target!(|bytes: &[u8]| {
    let ours = is_valid(bytes);
    let serde = serde_json::from_slice::<&RawValue>(bytes).is_ok();
    if ours {
        assert!(serde, "the scanner accepted what serde_json refuses");
    }
    if serde && depth(bytes) <= MAX_DEPTH {
        assert!(ours, "the scanner refused JSON that serde_json accepts");
    }
});
