//! The inbox entry decoder (`roomcast_common::entry::decode`, which the edge's reader
//! runs on every `XREAD` entry) on arbitrary field/value lists.
//!
//! Input: the fields, separated by 0xFF. The decoder must never panic, must take each
//! field from the last pair with its name, and an entry it decodes must survive being
//! written again the module's way (`entry::encode`) and read back; a `batch` entry's
//! packed entries must decode without panicking.

#![no_main]

use libfuzzer_sys::fuzz_target;
use roomcast_common::batch;
use roomcast_common::entry::{self, Entry, Kind};

fuzz_target!(|input: &[u8]| {
    let fields: Vec<&[u8]> = input.split(|&b| b == 0xff).collect();
    let got = entry::decode(fields.iter().copied());

    let mut want = Entry::default();
    for pair in fields.chunks_exact(2) {
        let (name, value) = (pair[0], pair[1]);
        let text = std::str::from_utf8(value).unwrap_or("");
        match name {
            b"kind" => want.kind = Kind::parse(value),
            b"room" => want.room = text,
            b"user" => want.user = text,
            b"from" => want.from = text,
            b"skip" => want.skip = text,
            b"offset" => want.offset = text,
            b"conn" => want.conn = text,
            b"reason" => want.reason = text,
            b"data" => want.data = value,
            _ => {}
        }
    }
    assert_eq!(got, want);

    let Some(kind) = got.kind else {
        return;
    };
    let value = |name: &str| match name {
        entry::ROOM => got.room.as_bytes(),
        entry::USER => got.user.as_bytes(),
        entry::FROM => got.from.as_bytes(),
        entry::SKIP => got.skip.as_bytes(),
        entry::OFFSET => got.offset.as_bytes(),
        entry::CONN => got.conn.as_bytes(),
        entry::REASON => got.reason.as_bytes(),
        _ => got.data,
    };
    let values: Vec<&[u8]> = kind.fields().iter().map(|f| value(f)).collect();
    let Some(flat) = entry::encode(kind, &values) else {
        panic!("encode refused one value per field");
    };
    let again = entry::decode(flat);
    assert_eq!(again.kind, Some(kind));
    for name in kind.fields() {
        let back = match *name {
            entry::ROOM => again.room.as_bytes(),
            entry::USER => again.user.as_bytes(),
            entry::FROM => again.from.as_bytes(),
            entry::SKIP => again.skip.as_bytes(),
            entry::OFFSET => again.offset.as_bytes(),
            entry::CONN => again.conn.as_bytes(),
            entry::REASON => again.reason.as_bytes(),
            _ => again.data,
        };
        assert_eq!(back, value(name), "field {name} changed on the way back");
    }
    // A batch's packed entries decode whatever its data holds, and never nest.
    if kind == Kind::Batch {
        for packed in batch::entries(got.data) {
            assert_ne!(packed.kind, Some(Kind::Batch), "a batch inside a batch");
        }
    }
});
