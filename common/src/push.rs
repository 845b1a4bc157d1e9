//! The live push of an inbox entry: what the module publishes to a node's live channel
//! (see [`crate::keys::PartitionKeys::live`]) in the same command that appends the entry
//! to the node's inbox stream, and what the edge decodes.
//!
//! A push carries the entry's stream id, the id of the inbox's previous entry (so the
//! edge sees on a live connection that it missed one: the previous id is not the last
//! one it delivered) and the entry's field/value list exactly as the stream holds it
//! (decoded with [`crate::entry::decode`], like a read entry).
//!
//! # Layout
//!
//! `version` (one byte, [`VERSION`]), then four unsigned LEB128 varints — the id's
//! `ms` and `seq`, the previous id's `ms` and `seq` (`0-0`: the inbox was empty) — then
//! the fields to the end of the payload, each a varint length and that many bytes. The
//! fields part does not depend on the ids, so the module packs it once per entry
//! ([`pack_fields`]) and only prefixes the ids per inbox ([`encode`]).

use crate::stream_id::StreamId;
use crate::varint::{put as put_varint, take as take_varint, take_bytes};

/// The layout version in the first byte of every push.
pub const VERSION: u8 = 1;
/// The most bytes [`encode`] puts before the fields (version and four varints).
pub const MAX_HEADER: usize = 1 + 4 * 10;

/// Appends the fields part of a push: each field as a varint length and its bytes.
pub fn pack_fields<'a>(fields: impl IntoIterator<Item = &'a [u8]>, out: &mut Vec<u8>) {
    for field in fields {
        put_varint(out, field.len() as u64);
        out.extend_from_slice(field);
    }
}

/// A whole push: entry `id`, the inbox's `prev`ious entry id, and `fields` as packed by
/// [`pack_fields`].
pub fn encode(id: StreamId, prev: StreamId, fields: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(MAX_HEADER + fields.len());
    out.push(VERSION);
    for n in [id.ms, id.seq, prev.ms, prev.seq] {
        put_varint(&mut out, n);
    }
    out.extend_from_slice(fields);
    out
}

/// One decoded push, borrowing the payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Push<'a> {
    /// The entry's id in the inbox stream.
    pub id: StreamId,
    /// The id of the entry before it in the inbox (`0-0`: none).
    pub prev: StreamId,
    /// The packed fields (checked well-formed by [`decode`]).
    fields: &'a [u8],
}

impl<'a> Push<'a> {
    /// The entry's field/value list, in stream order.
    pub fn fields(&self) -> Fields<'a> {
        Fields { rest: self.fields }
    }
}

/// The fields of a [`Push`] (or of any field list packed by [`pack_fields`]).
#[derive(Debug, Clone)]
pub struct Fields<'a> {
    /// What is left to read.
    rest: &'a [u8],
}

impl<'a> Fields<'a> {
    /// The fields packed in `packed` ([`pack_fields`]'s layout); iteration stops at the
    /// first malformed length.
    pub fn of(packed: &'a [u8]) -> Self {
        Self { rest: packed }
    }
}

impl<'a> Iterator for Fields<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        let field = take_bytes(&mut self.rest);
        if field.is_none() {
            self.rest = &[];
        }
        field
    }
}

/// Decodes a push; `None` for anything that is not a well-formed push of this
/// [`VERSION`] (never panics, whatever the bytes).
pub fn decode(payload: &[u8]) -> Option<Push<'_>> {
    let (&version, mut rest) = payload.split_first()?;
    if version != VERSION {
        return None;
    }
    let mut id = || take_varint(&mut rest);
    let (ms, seq, prev_ms, prev_seq) = (id()?, id()?, id()?, id()?);
    let fields = rest;
    // Every length must fit in what follows it.
    let mut walk = rest;
    while !walk.is_empty() {
        let len = usize::try_from(take_varint(&mut walk)?).ok()?;
        walk = walk.get(len..)?;
    }
    Some(Push {
        id: StreamId { ms, seq },
        prev: StreamId {
            ms: prev_ms,
            seq: prev_seq,
        },
        fields,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::{self, Kind};

    fn id(ms: u64, seq: u64) -> StreamId {
        StreamId { ms, seq }
    }

    #[test]
    fn a_message_entry_round_trips() {
        let values: [&[u8]; 5] = [b"lobby", b"ann", b"n1.3", b"", b"{\"x\":1}"];
        let mut fields = Vec::new();
        pack_fields(entry::encode(Kind::Message, &values).unwrap(), &mut fields);
        let payload = encode(id(1_700_000_000_123, 4), id(1_700_000_000_123, 3), &fields);
        let push = decode(&payload).unwrap();
        assert_eq!(push.id, id(1_700_000_000_123, 4));
        assert_eq!(push.prev, id(1_700_000_000_123, 3));
        let got = entry::decode(push.fields());
        assert_eq!(got.kind, Some(Kind::Message));
        assert_eq!((got.room, got.from, got.skip), ("lobby", "ann", "n1.3"));
        assert_eq!(got.data, b"{\"x\":1}");
        // Compact: the header is a few bytes, not 32.
        assert!(payload.len() < fields.len() + 16);
    }

    #[test]
    fn malformed_pushes_are_refused() {
        assert_eq!(decode(b""), None);
        assert_eq!(decode(&[2, 0, 0, 0, 0]), None, "unknown version");
        assert_eq!(decode(&[VERSION, 0, 0, 0]), None, "an id is missing");
        assert_eq!(
            decode(&[VERSION, 0, 0, 0, 0, 5, b'a']),
            None,
            "field cut short"
        );
        let empty = decode(&[VERSION, 1, 2, 0, 0]).unwrap();
        assert_eq!((empty.id, empty.prev), (id(1, 2), id(0, 0)));
        assert_eq!(empty.fields().count(), 0);
    }
}

#[cfg(test)]
mod props {
    use proptest::collection::vec;
    use proptest::prelude::*;

    use super::*;

    fn stream_id() -> impl Strategy<Value = StreamId> {
        (any::<u64>(), any::<u64>()).prop_map(|(ms, seq)| StreamId { ms, seq })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1024))]

        /// Whatever the ids and fields, a push decodes to exactly what was encoded.
        #[test]
        fn pushes_round_trip(
            id in stream_id(),
            prev in stream_id(),
            fields in vec(vec(any::<u8>(), 0..300), 0..12),
        ) {
            let mut packed = Vec::new();
            pack_fields(fields.iter().map(Vec::as_slice), &mut packed);
            let payload = encode(id, prev, &packed);
            prop_assert!(payload.len() <= MAX_HEADER + packed.len());
            let push = decode(&payload).unwrap();
            prop_assert_eq!((push.id, push.prev), (id, prev));
            let back: Vec<&[u8]> = push.fields().collect();
            let want: Vec<&[u8]> = fields.iter().map(Vec::as_slice).collect();
            prop_assert_eq!(back, want);
            // Any strict prefix that cuts into the header or a field is refused, or
            // decodes to fewer whole fields.
            for cut in 0..payload.len() {
                if let Some(p) = decode(&payload[..cut]) {
                    prop_assert!(p.fields().count() <= fields.len());
                }
            }
        }

        /// Any bytes decode without panicking, and a push decoded from them encodes
        /// again to one that decodes the same.
        #[test]
        fn any_bytes_decode_safely(bytes in vec(any::<u8>(), 0..128)) {
            if let Some(push) = decode(&bytes) {
                let mut packed = Vec::new();
                pack_fields(push.fields(), &mut packed);
                let again = encode(push.id, push.prev, &packed);
                let back = decode(&again).unwrap();
                prop_assert_eq!((back.id, back.prev), (push.id, push.prev));
                prop_assert!(back.fields().eq(push.fields()));
            }
        }
    }
}
