//! The typed replies of module commands, and how they are read out of RESP.

use redis::Value;

use crate::backend::resp::{bulk_bytes, bulk_text};

/// What the module answers to a join: `RC.JOIN`'s reply.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct JoinReply {
    /// Everything since the client's `since` was replayed (no gap).
    pub recovered: bool,
    /// The room's position at the join (the cut): `None` for a room without history.
    pub cut: Option<String>,
    /// The messages after `since` up to the cut, oldest first.
    pub replay: Vec<Stored>,
}

/// A page of a room's history: `RC.HISTORY`'s reply.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct History {
    /// The room's position now (`None` for a room without history).
    pub cut: Option<String>,
    /// The messages continue `since` without a gap.
    pub recovered: bool,
    /// The messages, oldest first.
    pub messages: Vec<Stored>,
}

/// One message of a room's history.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Stored {
    /// Its offset.
    pub offset: String,
    /// Its sender.
    pub from: String,
    /// Its payload.
    pub data: Vec<u8>,
}

/// What the edge learns from `RC.INFO` at start.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Info {
    /// The partition count, when reported as a number.
    pub partitions: Option<u32>,
    /// Each node has one inbox for all partitions (`inbox shared`).
    pub shared_inbox: bool,
}

/// Reads the partition count and the inbox layout out of `RC.INFO`'s name/value pairs.
pub fn parse_info(reply: &[Value]) -> Info {
    let partitions = reply.chunks(2).find_map(|pair| match pair {
        [Value::SimpleString(name), Value::Int(n)] if name == "partitions" => {
            u32::try_from(*n).ok()
        }
        _ => None,
    });
    let shared_inbox = reply.chunks(2).any(|pair| {
        matches!(pair, [Value::SimpleString(name), Value::SimpleString(v)]
            if name == "inbox" && v == "shared")
    });
    Info {
        partitions,
        shared_inbox,
    }
}

/// The `[offset, from, data]` messages of a join or history reply; entries without an
/// offset or data are skipped.
pub fn stored(entries: &Value) -> Vec<Stored> {
    let Value::Array(entries) = entries else {
        return Vec::new();
    };
    entries
        .iter()
        .filter_map(|entry| {
            let Value::Array(parts) = entry else {
                return None;
            };
            let offset = parts.first().and_then(bulk_text)?;
            let from = parts.get(1).and_then(bulk_text).unwrap_or_default();
            let data = bulk_bytes(parts.get(2)?).to_vec();
            Some(Stored { offset, from, data })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    fn simple(s: &str) -> Value {
        Value::SimpleString(s.into())
    }

    #[test]
    fn info_gives_the_partition_count_and_inbox_layout() {
        let reply = [
            simple("partitions"),
            Value::Int(16),
            simple("inbox"),
            simple("shared"),
        ];
        let want = Info {
            partitions: Some(16),
            shared_inbox: true,
        };
        assert_eq!(parse_info(&reply), want);
        let reply = [
            simple("inbox"),
            simple("partition"),
            simple("partitions"),
            bulk("x"),
        ];
        assert_eq!(parse_info(&reply), Info::default());
    }

    #[test]
    fn stored_messages_need_an_offset_and_data() {
        let entries = Value::Array(vec![
            Value::Array(vec![bulk("e:1"), bulk("ann"), bulk("{}")]),
            Value::Array(vec![bulk("e:2"), Value::Nil, Value::Int(3)]),
            Value::Array(vec![bulk("e:3"), bulk("bob")]),
            Value::Array(vec![Value::Nil, bulk("bob"), bulk("1")]),
            Value::Nil,
        ]);
        let got = stored(&entries);
        let want = [
            Stored {
                offset: "e:1".into(),
                from: "ann".into(),
                data: b"{}".to_vec(),
            },
            Stored {
                offset: "e:2".into(),
                from: String::new(),
                data: Vec::new(),
            },
        ];
        assert_eq!(got, want);
        assert!(stored(&Value::Nil).is_empty());
    }
}
