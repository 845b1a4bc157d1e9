//! The live push decoder (`roomcast_common::push::decode`, which the edge runs on every
//! message of its live channel) on arbitrary bytes.
//!
//! It must never panic; a push it decodes must encode again (`push::encode` of its ids
//! and its fields packed with `push::pack_fields`) to one that decodes the same, and its
//! fields must decode as an inbox entry without panicking.

#![no_main]

use libfuzzer_sys::fuzz_target;
use roomcast_common::{entry, push};

fuzz_target!(|input: &[u8]| {
    let Some(got) = push::decode(input) else {
        return;
    };
    let _ = entry::decode(got.fields());
    let mut packed = Vec::new();
    push::pack_fields(got.fields(), &mut packed);
    let again = push::encode(got.id, got.prev, &packed);
    let Some(back) = push::decode(&again) else {
        panic!("a re-encoded push does not decode");
    };
    assert_eq!((back.id, back.prev), (got.id, got.prev));
    assert!(back.fields().eq(got.fields()));
});
