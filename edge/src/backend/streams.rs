//! Reading the node's inbox streams: the readers' connections, the shape of a read
//! reply, the entries in it, and where a stream ends.
//!
//! Readers have connections of their own (a subscribed connection takes no other
//! commands, and a large catch-up must not stall the commands sharing a connection);
//! their `XRANGE` replies list entries (see [`crate::backend::subscriber`]).

use std::time::Duration;

use redis::{AsyncConnectionConfig, Cmd, Value};
use roomcast_common::entry::{self, Entry};
use roomcast_common::stream_id::StreamId;

use crate::backend::resp::bytes;

/// Entries fetched per read (`XRANGE`).
pub const COUNT: usize = 256;

/// A reader's connection settings: no response timeout (a subscriber waits for pushes
/// as long as none come).
pub fn reader_config() -> AsyncConnectionConfig {
    AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(None)
}

/// One entry of a stream in a read reply: its id and its flat field/value list.
pub fn entry_parts(item: &Value) -> Option<(&[u8], &[Value])> {
    let Value::Array(item) = item else {
        return None;
    };
    match (item.first(), item.get(1)) {
        (Some(id), Some(Value::Array(fields))) => Some((bytes(id), fields.as_slice())),
        _ => None,
    }
}

/// Decodes the flat field/value list of one stream entry (see
/// `roomcast_common::entry::decode`, where it is property-tested and fuzzed); values
/// that are not strings read as empty.
pub fn decode(fields: &[Value]) -> Entry<'_> {
    entry::decode(fields.iter().map(bytes))
}

/// `XREVRANGE key + - COUNT 1`: where stream `key` ends (see [`end_id`]).
pub fn end_cmd(key: &str) -> Cmd {
    let mut cmd = redis::cmd("XREVRANGE");
    cmd.arg(key).arg("+").arg("-").arg("COUNT").arg(1);
    cmd
}

/// The id of the entry in an [`end_cmd`] reply: the stream's last (`0-0` for an empty or
/// missing stream, or anything malformed).
pub fn end_id(reply: &Value) -> StreamId {
    let last = match reply {
        Value::Array(items) => items.first().and_then(entry_parts),
        _ => None,
    };
    last.and_then(|(id, _)| StreamId::parse(id))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use roomcast_common::entry::Kind;

    fn bulk(s: &[u8]) -> Value {
        Value::BulkString(s.to_vec())
    }

    #[test]
    fn entries_decode_by_field_name() {
        let fields = vec![
            bulk(b"kind"),
            bulk(b"msg"),
            bulk(b"room"),
            bulk(b"lobby"),
            bulk(b"from"),
            bulk(b"ann"),
            bulk(b"skip"),
            bulk(b"n.3"),
            bulk(b"offset"),
            bulk(b""),
            bulk(b"data"),
            bulk(b"{\"x\":1}"),
            bulk(b"extra"),
        ];
        let e = decode(&fields);
        assert_eq!(e.kind, Some(Kind::Message));
        assert_eq!(
            (e.room, e.from, e.skip, e.offset),
            ("lobby", "ann", "n.3", "")
        );
        assert_eq!(e.data, b"{\"x\":1}");
        assert_eq!(decode(&[bulk(b"kind"), bulk(b"nope")]).kind, None);
    }

    #[test]
    fn a_stream_ends_at_its_last_entry_or_at_zero() {
        let last = Value::Array(vec![Value::Array(vec![
            bulk(b"17-3"),
            Value::Array(vec![bulk(b"kind")]),
        ])]);
        assert_eq!(end_id(&last), StreamId { ms: 17, seq: 3 });
        assert_eq!(end_id(&Value::Array(vec![])), StreamId::default());
        assert_eq!(end_id(&Value::Nil), StreamId::default());
        let args: Vec<Vec<u8>> = end_cmd("in:n1")
            .args_iter()
            .map(|a| match a {
                redis::Arg::Simple(b) => b.to_vec(),
                _ => Vec::new(),
            })
            .collect();
        assert_eq!(
            args,
            [&b"XREVRANGE"[..], b"in:n1", b"+", b"-", b"COUNT", b"1"]
        );
    }
}

/// Property tests of the inbox entry decoder over the values an `XRANGE` reply holds
/// (`fuzz/` runs the byte-level decoder under libFuzzer).
#[cfg(test)]
mod props {
    use proptest::collection::vec;
    use proptest::prelude::*;
    use redis::Value;
    use roomcast_common::entry::{
        self, Entry, Kind, CONN, DATA, FROM, OFFSET, REASON, ROOM, SKIP, USER,
    };

    use super::decode;

    /// Bytes that are field names, kind names, or anything.
    fn word() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            2 => prop::sample::select(vec![
                "kind", "room", "user", "from", "skip", "offset", "data", "conn", "reason",
                "msg", "direct", "join", "leave", "kick",
            ])
            .prop_map(|w| w.as_bytes().to_vec()),
            1 => vec(any::<u8>(), 0..12),
        ]
    }

    /// Any RESP value a reply could hold in a field list.
    fn reply_value() -> impl Strategy<Value = Value> {
        prop_oneof![
            6 => word().prop_map(Value::BulkString),
            2 => word().prop_map(|w| Value::SimpleString(String::from_utf8_lossy(&w).into_owned())),
            1 => any::<i64>().prop_map(Value::Int),
            1 => Just(Value::Nil),
            1 => Just(Value::Okay),
            1 => any::<bool>().prop_map(Value::Boolean),
            1 => vec(word().prop_map(Value::BulkString), 0..3).prop_map(Value::Array),
        ]
    }

    fn bytes(v: &Value) -> &[u8] {
        match v {
            Value::BulkString(b) => b,
            Value::SimpleString(s) => s.as_bytes(),
            _ => b"",
        }
    }

    fn value_of(field: &'static str) -> BoxedStrategy<Vec<u8>> {
        match field {
            ROOM | USER => "[^\\p{Cc}]{1,16}".prop_map(String::into_bytes).boxed(),
            FROM => "([^\\p{Cc}]{1,16})?".prop_map(String::into_bytes).boxed(),
            SKIP | CONN => "[A-Za-z0-9_.-]{0,12}".prop_map(String::into_bytes).boxed(),
            OFFSET => "([0-9a-z]{1,16}:[0-9]{1,19})?"
                .prop_map(String::into_bytes)
                .boxed(),
            REASON => "[^\\p{Cc}]{0,30}".prop_map(String::into_bytes).boxed(),
            _ => vec(any::<u8>(), 0..256).boxed(),
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1024))]

        /// Any list of reply values decodes without panicking, as the byte-level decoder
        /// decodes its strings (other values read as empty).
        #[test]
        fn any_reply_values_decode(fields in vec(reply_value(), 0..16)) {
            let got = decode(&fields);
            let want = entry::decode(fields.iter().map(bytes));
            prop_assert_eq!(&got, &want);
            // A trailing lone field and unknown pairs change nothing.
            let mut more = fields.clone();
            if more.len() % 2 == 0 {
                more.push(Value::BulkString(b"room".to_vec()));
            }
            prop_assert_eq!(decode(&more), got.clone());
            let mut unknown = fields.clone();
            if unknown.len() % 2 == 1 {
                unknown.pop();
            }
            let mut extended = unknown.clone();
            extended.extend([Value::BulkString(b"x-extra".to_vec()), Value::Int(1)]);
            prop_assert_eq!(decode(&extended), decode(&unknown));
        }

        /// Entries as the module writes them (`entry::encode`, the layout of
        /// `roomcast::inbox::Entry::new`), read back as bulk strings the way `XREAD`
        /// returns them, decode to the values written.
        #[test]
        fn module_entries_decode_to_their_values(
            (kind, values) in prop::sample::select(vec![
                Kind::Message, Kind::Direct, Kind::Join, Kind::Leave, Kind::Kick,
            ])
            .prop_flat_map(|kind| {
                let values: Vec<_> = kind.fields().iter().map(|f| value_of(f)).collect();
                (Just(kind), values)
            })
        ) {
            let slices: Vec<&[u8]> = values.iter().map(Vec::as_slice).collect();
            let reply: Vec<Value> = entry::encode(kind, &slices)
                .unwrap()
                .map(|b| Value::BulkString(b.to_vec()))
                .collect();
            let got = decode(&reply);
            let field = |name: &str| {
                let i = kind.fields().iter().position(|f| *f == name);
                i.map_or(&b""[..], |i| slices[i])
            };
            let text = |name: &str| std::str::from_utf8(field(name)).unwrap();
            let want = Entry {
                kind: Some(kind),
                room: text(ROOM),
                user: text(USER),
                from: text(FROM),
                skip: text(SKIP),
                offset: text(OFFSET),
                conn: text(CONN),
                reason: text(REASON),
                data: field(DATA),
            };
            prop_assert_eq!(got, want);
        }
    }
}
