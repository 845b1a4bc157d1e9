//! The `batch` inbox entry: the entries one `RC.PUBLISHM` routes to one node, packed
//! into a single stream entry.
//!
//! A batch command writes one stream entry and one live push per node it reaches,
//! however many messages it carries, so the work Redis does per node (an append, its
//! replication, a push, a subscriber write) is paid once per batch instead of once per
//! message. The stream stays the recovery log: a batch is read back like any entry, and
//! the edge delivers what it packs in order, as if each were its own stream entry.
//!
//! # Layout
//!
//! The entry's `data` field is a sequence of packed entries, each a varint byte length
//! followed by that entry's field/value list in [`crate::push::pack_fields`]'s layout
//! (the same bytes a live push carries after its header). Any kind can be packed; the
//! module packs `msg` entries.

use crate::entry::{self, Entry, Kind};
use crate::push::Fields;
use crate::varint::{put, take_bytes};

/// Appends one packed entry (its fields as [`crate::push::pack_fields`] packs them) to
/// a batch's `data`.
pub fn put_entry(packed_fields: &[u8], data: &mut Vec<u8>) {
    put(data, packed_fields.len() as u64);
    data.extend_from_slice(packed_fields);
}

/// The entries packed in a batch's `data`, in order. Iteration stops at the first
/// malformed length; a packed `batch` is skipped (batches do not nest). Never panics,
/// whatever the bytes.
pub fn entries(data: &[u8]) -> Entries<'_> {
    Entries { rest: data }
}

/// The iterator [`entries`] returns.
#[derive(Debug, Clone)]
pub struct Entries<'a> {
    /// What is left to read.
    rest: &'a [u8],
}

impl<'a> Iterator for Entries<'a> {
    type Item = Entry<'a>;

    fn next(&mut self) -> Option<Entry<'a>> {
        loop {
            let Some(packed) = take_bytes(&mut self.rest) else {
                self.rest = &[];
                return None;
            };
            let entry = entry::decode(Fields::of(packed));
            if entry.kind != Some(Kind::Batch) {
                return Some(entry);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::push::pack_fields;

    fn packed(kind: Kind, values: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        pack_fields(entry::encode(kind, values).into_iter().flatten(), &mut out);
        out
    }

    #[test]
    fn entries_come_back_in_order() {
        let mut data = Vec::new();
        put_entry(
            &packed(Kind::Message, &[b"lobby", b"ann", b"n1.3", b"", b"{}"]),
            &mut data,
        );
        put_entry(
            &packed(Kind::Message, &[b"game", b"", b"", b"7:2", b"[1]"]),
            &mut data,
        );
        let got: Vec<Entry<'_>> = entries(&data).collect();
        assert_eq!(got.len(), 2);
        assert_eq!(
            (got[0].room, got[0].from, got[0].skip),
            ("lobby", "ann", "n1.3")
        );
        assert_eq!(
            (got[1].room, got[1].offset, got[1].data),
            ("game", "7:2", &b"[1]"[..])
        );
        assert!(got.iter().all(|e| e.kind == Some(Kind::Message)));
    }

    #[test]
    fn nested_batches_are_skipped_and_garbage_ends_the_list() {
        let mut inner = Vec::new();
        put_entry(&packed(Kind::Probe, &[b"1"]), &mut inner);
        let mut data = Vec::new();
        put_entry(&packed(Kind::Batch, &[&inner]), &mut data);
        put_entry(&packed(Kind::Probe, &[b"2"]), &mut data);
        data.extend_from_slice(&[9, b'x']);
        let got: Vec<Entry<'_>> = entries(&data).collect();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].data, b"2");
        assert_eq!(entries(b"").count(), 0);
    }
}

#[cfg(test)]
mod props {
    use proptest::collection::vec;
    use proptest::prelude::*;

    use super::*;
    use crate::push::pack_fields;

    proptest! {
        /// Whatever the bytes, decoding ends without panicking.
        #[test]
        fn any_bytes_decode(data in vec(any::<u8>(), 0..512)) {
            let _ = entries(&data).count();
        }

        /// Packed messages come back with their fields intact.
        #[test]
        fn messages_round_trip(
            msgs in vec((
                "[a-z]{1,8}",
                "[a-z]{0,8}",
                vec(any::<u8>(), 0..64),
            ), 0..16),
        ) {
            let mut data = Vec::new();
            for (room, from, payload) in &msgs {
                let values: [&[u8]; 5] = [room.as_bytes(), from.as_bytes(), b"", b"", payload];
                let mut fields = Vec::new();
                pack_fields(entry::encode(Kind::Message, &values).into_iter().flatten(), &mut fields);
                put_entry(&fields, &mut data);
            }
            let got: Vec<Entry<'_>> = entries(&data).collect();
            prop_assert_eq!(got.len(), msgs.len());
            for (e, (room, from, payload)) in got.iter().zip(&msgs) {
                prop_assert_eq!(e.kind, Some(Kind::Message));
                prop_assert_eq!(e.room, room.as_str());
                prop_assert_eq!(e.from, from.as_str());
                prop_assert_eq!(e.data, payload.as_slice());
            }
        }
    }
}
