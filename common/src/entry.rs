//! Inbox stream entries: the one format the module writes and the edge reads.
//!
//! Every entry is a flat list of field/value pairs. The first field is always
//! [`KIND`]; the other fields depend on the kind:
//!
//! | kind | fields (in this order) | edge delivers |
//! |---|---|---|
//! | `msg` | `room`, `from`, `skip`, `offset`, `data` | `message` to local members of `room`, except connection `skip` |
//! | `direct` | `user`, `from`, `data` | `direct` to every local connection of `user` |
//! | `join` | `room`, `user`, `skip` | `joined` to local members of `room`, except `skip` |
//! | `leave` | `room`, `user` | `left` to local members of `room` |
//! | `kick` | `user`, `conn`, `reason` | closes (1008, `reason`) `conn`, or every local connection of `user` when `conn` is empty |
//! | `probe` | `data` | nothing: the edge writes it into its own inbox (the `data` is a counter) and reads it back to prove its reader is alive |
//! | `batch` | `data` | each entry packed in `data` ([`crate::batch`]), in order, as if each were its own stream entry (a batch inside a batch is not delivered) |
//!
//! Empty values mean "absent" (`from` of a backend publish, `skip` with no sender
//! connection, `offset` while history is off). `data` holds the payload bytes exactly
//! as published: the edge splices them into its frame without re-serializing.

/// Field holding the entry kind.
pub const KIND: &str = "kind";
/// Field: room name (plain, without tag).
pub const ROOM: &str = "room";
/// Field: the user a direct message, presence event or kick is about.
pub const USER: &str = "user";
/// Field: the sending user (empty for backend publishes).
pub const FROM: &str = "from";
/// Field: connection that must not receive the entry (the publisher's own).
pub const SKIP: &str = "skip";
/// Field: room history offset (empty while history is off).
pub const OFFSET: &str = "offset";
/// Field: payload bytes.
pub const DATA: &str = "data";
/// Field: the one connection a kick closes (empty: all of the user's connections).
pub const CONN: &str = "conn";
/// Field: human-readable reason of a kick (sent as the close reason).
pub const REASON: &str = "reason";

/// The kinds of inbox entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A room message.
    Message,
    /// A direct message to one user.
    Direct,
    /// A user's first connection joined a room.
    Join,
    /// A user's last connection left a room.
    Leave,
    /// Close connections of a user.
    Kick,
    /// A liveness probe the edge has appended to its own inbox (`RC.PROBE`).
    Probe,
    /// Several entries for one node in one stream entry ([`crate::batch`]).
    Batch,
}

impl Kind {
    /// The value stored in the [`KIND`] field.
    pub const fn as_str(self) -> &'static str {
        match self {
            Kind::Message => "msg",
            Kind::Direct => "direct",
            Kind::Join => "join",
            Kind::Leave => "leave",
            Kind::Kick => "kick",
            Kind::Probe => "probe",
            Kind::Batch => "batch",
        }
    }

    /// Parses the value of a [`KIND`] field.
    pub fn parse(value: &[u8]) -> Option<Kind> {
        match value {
            b"msg" => Some(Kind::Message),
            b"direct" => Some(Kind::Direct),
            b"join" => Some(Kind::Join),
            b"leave" => Some(Kind::Leave),
            b"kick" => Some(Kind::Kick),
            b"probe" => Some(Kind::Probe),
            b"batch" => Some(Kind::Batch),
            _ => None,
        }
    }

    /// The fields that follow [`KIND`] for this kind, in order.
    pub const fn fields(self) -> &'static [&'static str] {
        match self {
            Kind::Message => &[ROOM, FROM, SKIP, OFFSET, DATA],
            Kind::Direct => &[USER, FROM, DATA],
            Kind::Join => &[ROOM, USER, SKIP],
            Kind::Leave => &[ROOM, USER],
            Kind::Kick => &[USER, CONN, REASON],
            Kind::Probe | Kind::Batch => &[DATA],
        }
    }
}

/// The flat field/value list the module appends for an entry of `kind`: [`KIND`] and the
/// kind's name, then each of [`Kind::fields`] followed by its value, in order. `None` when
/// `values` does not hold exactly one value per field.
pub fn encode<'a>(
    kind: Kind,
    values: &'a [&'a [u8]],
) -> Option<impl Iterator<Item = &'a [u8]> + 'a> {
    let names = kind.fields();
    if names.len() != values.len() {
        return None;
    }
    let head = [KIND.as_bytes(), kind.as_str().as_bytes()];
    let pairs = names
        .iter()
        .zip(values)
        .flat_map(|(name, value)| [name.as_bytes(), *value]);
    Some(head.into_iter().chain(pairs))
}

/// One decoded inbox entry, borrowing from the field/value list it was read from.
///
/// Absent fields are empty (as are fields the module leaves empty, see the table above).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Entry<'a> {
    /// The [`KIND`] field; `None` when missing or unknown.
    pub kind: Option<Kind>,
    /// [`ROOM`] field.
    pub room: &'a str,
    /// [`USER`] field.
    pub user: &'a str,
    /// [`FROM`] field.
    pub from: &'a str,
    /// [`SKIP`] field.
    pub skip: &'a str,
    /// [`OFFSET`] field.
    pub offset: &'a str,
    /// [`CONN`] field.
    pub conn: &'a str,
    /// [`REASON`] field.
    pub reason: &'a str,
    /// [`DATA`] field (raw bytes).
    pub data: &'a [u8],
}

/// Decodes the flat field/value list of one stream entry (what the edge reads).
///
/// Fields are taken by name in any order (the last of a repeated field wins); unknown
/// fields are skipped, and so is a last field without a value. A text field that is not
/// UTF-8 reads as empty, an unknown kind as `None`. Never fails: whatever a stream
/// holds, the entry is delivered as far as it makes sense, or not at all (no kind).
pub fn decode<'a>(fields: impl IntoIterator<Item = &'a [u8]>) -> Entry<'a> {
    let mut entry = Entry::default();
    let mut fields = fields.into_iter();
    while let (Some(name), Some(value)) = (fields.next(), fields.next()) {
        let Ok(name) = std::str::from_utf8(name) else {
            continue;
        };
        let text = std::str::from_utf8(value).unwrap_or("");
        match name {
            KIND => entry.kind = Kind::parse(value),
            ROOM => entry.room = text,
            USER => entry.user = text,
            FROM => entry.from = text,
            SKIP => entry.skip = text,
            OFFSET => entry.offset = text,
            CONN => entry.conn = text,
            REASON => entry.reason = text,
            DATA => entry.data = value,
            _ => {}
        }
    }
    entry
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip() {
        for kind in [
            Kind::Message,
            Kind::Direct,
            Kind::Join,
            Kind::Leave,
            Kind::Kick,
            Kind::Probe,
            Kind::Batch,
        ] {
            assert_eq!(Kind::parse(kind.as_str().as_bytes()), Some(kind));
            assert!(!kind.fields().contains(&KIND));
        }
        assert_eq!(Kind::parse(b"nope"), None);
    }

    #[test]
    fn messages_end_with_the_payload() {
        assert_eq!(Kind::Message.fields().last(), Some(&DATA));
        assert_eq!(Kind::Direct.fields().last(), Some(&DATA));
    }
}

#[cfg(test)]
mod props {
    use proptest::collection::vec;
    use proptest::prelude::*;

    use super::*;

    const KINDS: [Kind; 5] = [
        Kind::Message,
        Kind::Direct,
        Kind::Join,
        Kind::Leave,
        Kind::Kick,
    ];

    /// Field names and values: ours, kind names, and junk.
    fn word() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            2 => prop::sample::select(vec![
                "kind", "room", "user", "from", "skip", "offset", "data", "conn", "reason",
                "msg", "direct", "join", "leave", "kick", "KIND", "",
            ])
            .prop_map(|w| w.as_bytes().to_vec()),
            1 => vec(any::<u8>(), 0..12),
        ]
    }

    /// The value a field of a module-written entry holds.
    fn value_of(field: &'static str) -> BoxedStrategy<Vec<u8>> {
        match field {
            ROOM | USER => "[^\\p{Cc}]{1,16}".prop_map(String::into_bytes).boxed(),
            FROM => "([^\\p{Cc}]{1,16})?".prop_map(String::into_bytes).boxed(),
            SKIP | CONN => "[A-Za-z0-9_.-]{0,12}".prop_map(String::into_bytes).boxed(),
            OFFSET => "([0-9a-z]{1,16}:[0-9]{1,19})?"
                .prop_map(String::into_bytes)
                .boxed(),
            REASON => "[^\\p{Cc}]{0,30}".prop_map(String::into_bytes).boxed(),
            _ => vec(any::<u8>(), 0..64).boxed(),
        }
    }

    /// An entry as the module writes it: a kind and one value per field of the kind.
    fn written() -> impl Strategy<Value = (Kind, Vec<Vec<u8>>)> {
        prop::sample::select(KINDS.to_vec()).prop_flat_map(|kind| {
            let values: Vec<_> = kind.fields().iter().map(|f| value_of(f)).collect();
            (Just(kind), values)
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1024))]

        /// Any field/value list decodes without panicking; each field is the last value
        /// given for its (literally spelled) name, a trailing lone field is ignored.
        #[test]
        fn any_field_list_decodes_by_name(fields in vec(word(), 0..16)) {
            let entry = decode(fields.iter().map(Vec::as_slice));
            let mut want = Entry::default();
            for pair in fields.chunks_exact(2) {
                let (name, value) = (pair[0].as_slice(), pair[1].as_slice());
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
            prop_assert_eq!(entry, want);
        }

        /// Entries laid out by `encode` (the module's layout) decode to their values,
        /// and fields the kind does not have stay empty.
        #[test]
        fn written_entries_decode_to_their_values((kind, values) in written()) {
            let slices: Vec<&[u8]> = values.iter().map(Vec::as_slice).collect();
            let flat: Vec<&[u8]> = encode(kind, &slices).unwrap().collect();
            prop_assert_eq!(flat.len(), 2 + 2 * kind.fields().len());
            prop_assert_eq!(flat[0], KIND.as_bytes());
            let entry = decode(flat.iter().copied());
            prop_assert_eq!(entry.kind, Some(kind));
            let field = |name: &str| {
                kind.fields()
                    .iter()
                    .position(|f| *f == name)
                    .map_or(&b""[..], |i| slices[i])
            };
            prop_assert_eq!(entry.room.as_bytes(), field(ROOM));
            prop_assert_eq!(entry.user.as_bytes(), field(USER));
            prop_assert_eq!(entry.from.as_bytes(), field(FROM));
            prop_assert_eq!(entry.skip.as_bytes(), field(SKIP));
            prop_assert_eq!(entry.offset.as_bytes(), field(OFFSET));
            prop_assert_eq!(entry.conn.as_bytes(), field(CONN));
            prop_assert_eq!(entry.reason.as_bytes(), field(REASON));
            prop_assert_eq!(entry.data, field(DATA));
        }

        /// `encode` refuses a value list that does not match the kind's fields.
        #[test]
        fn encode_checks_the_value_count(kind in prop::sample::select(KINDS.to_vec()), n in 0usize..8) {
            let values = vec![&b"v"[..]; n];
            prop_assert_eq!(encode(kind, &values).is_some(), n == kind.fields().len());
        }
    }
}
