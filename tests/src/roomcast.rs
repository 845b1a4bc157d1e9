//! roomcast-specific helpers: key names, inbox contents, state snapshots, `RC.INFO`.

use std::collections::{BTreeMap, BTreeSet};

use redis::{Connection, Value};
use roomcast_common::keys::PartitionKeys;
use roomcast_common::partition::Partitioner;

use crate::reply::{array, text};

/// The layout of a dataset with `count` partitions (the module default is 16).
pub fn layout(count: u32) -> Partitioner {
    Partitioner::new(count).expect("valid partition count")
}

/// Key builder of the partition `name` (a room or user) belongs to, 16 partitions.
pub fn keys_of(name: &str) -> PartitionKeys {
    let p = layout(16);
    PartitionKeys::new(p.tag(p.partition_of(name.as_bytes())))
}

/// One inbox stream entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboxEntry {
    /// Stream id.
    pub id: String,
    /// Field/value pairs in order.
    pub fields: Vec<(String, Vec<u8>)>,
}

impl InboxEntry {
    /// A field's value as text ("" when absent).
    pub fn get(&self, name: &str) -> String {
        self.fields
            .iter()
            .find(|(f, _)| f == name)
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
            .unwrap_or_default()
    }

    /// A field's raw bytes.
    pub fn bytes(&self, name: &str) -> Vec<u8> {
        self.fields
            .iter()
            .find(|(f, _)| f == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    }

    /// Field names in order.
    pub fn names(&self) -> Vec<&str> {
        self.fields.iter().map(|(f, _)| f.as_str()).collect()
    }
}

/// The inbox stream of `node` on a standalone server, where each node has one inbox for
/// all partitions: partition 0's `{tag}:inbox:<node>` (`RC.INFO` says `inbox shared`).
pub fn inbox_key(node: &str) -> String {
    let p = layout(16);
    PartitionKeys::new(p.tag(0)).inbox(node)
}

/// The channel the module pushes `node`'s new inbox entries to on a standalone server
/// (next to its inbox: partition 0's `{tag}:live:<node>`).
pub fn live_channel(node: &str) -> String {
    let p = layout(16);
    PartitionKeys::new(p.tag(0)).live(node)
}

/// Every entry of node `node`'s inbox that concerns `name` (a room or user, or any entry
/// when `name` is empty). The name picks the entries, since one inbox serves every
/// partition on a standalone server.
pub fn inbox(conn: &mut Connection, name: &str, node: &str) -> Vec<InboxEntry> {
    stream(conn, &inbox_key(node))
        .into_iter()
        .filter(|e| name.is_empty() || e.get("room") == name || e.get("user") == name)
        .collect()
}

/// Every entry of a stream.
pub fn stream(conn: &mut Connection, key: &str) -> Vec<InboxEntry> {
    let reply: Value = redis::cmd("XRANGE")
        .arg(key)
        .arg("-")
        .arg("+")
        .query(conn)
        .expect("XRANGE");
    array(&reply)
        .iter()
        .map(|entry| {
            let parts = array(entry);
            let id = text(&parts[0]);
            let flat = array(&parts[1]);
            let fields = flat
                .chunks(2)
                .map(|pair| {
                    let value = match &pair[1] {
                        Value::BulkString(b) => b.clone(),
                        other => text(other).into_bytes(),
                    };
                    (text(&pair[0]), value)
                })
                .collect();
            InboxEntry { id, fields }
        })
        .collect()
}

/// `DEBUG DIGEST`: one hash of the whole dataset (keys, values, expiry times).
pub fn digest(conn: &mut Connection) -> String {
    redis::cmd("DEBUG")
        .arg("DIGEST")
        .query(conn)
        .expect("DEBUG DIGEST")
}

/// Blocks until every replica acknowledged the primary's writes so far.
pub fn wait_replicas(conn: &mut Connection, replicas: usize) {
    let acked: i64 = redis::cmd("WAIT")
        .arg(replicas)
        .arg(5000)
        .query(conn)
        .expect("WAIT");
    assert!(
        acked >= replicas as i64,
        "only {acked} replicas acknowledged"
    );
}

/// `RC.PRESENCE room`: the users in a room, straight from the module (sorted).
pub fn presence(redis: &crate::Redis, room: &str) -> Vec<String> {
    redis::cmd("RC.PRESENCE")
        .arg(room)
        .query(&mut redis.conn())
        .expect("RC.PRESENCE")
}

/// `RC.MEMBERS room`: the connections in a room, straight from the module (sorted).
pub fn members(redis: &crate::Redis, room: &str) -> Vec<String> {
    redis::cmd("RC.MEMBERS")
        .arg(room)
        .query(&mut redis.conn())
        .expect("RC.MEMBERS")
}

/// An `RC.INFO` reply (`[name, value, …]`) by field name.
pub fn rc_info(reply: &Value) -> BTreeMap<String, Value> {
    array(reply)
        .chunks(2)
        .filter_map(|pair| match pair {
            [name, value] => Some((text(name), value.clone())),
            _ => None,
        })
        .collect()
}

/// The integer fields of an `RC.INFO` reply (gauges and counters) by name.
pub fn rc_info_ints(reply: &Value) -> BTreeMap<String, i64> {
    rc_info(reply)
        .into_iter()
        .filter_map(|(name, value)| match value {
            Value::Int(n) => Some((name, n)),
            _ => None,
        })
        .collect()
}

/// The integer fields of `RC.INFO` (gauges and counters) asked on `conn` now.
pub fn rc_info_now(conn: &mut Connection) -> BTreeMap<String, i64> {
    let reply: Value = redis::cmd("RC.INFO").query(conn).expect("RC.INFO");
    rc_info_ints(&reply)
}

/// One integer field of `RC.INFO` asked on `conn` now (`connections`, `published`, …).
pub fn rc_info_field(conn: &mut Connection, name: &str) -> i64 {
    let info = rc_info_now(conn);
    *info
        .get(name)
        .unwrap_or_else(|| panic!("RC.INFO has no {name}: {info:?}"))
}

/// Every command the module registers (`COMMAND LIST FILTERBY MODULE roomcast`, lower
/// case).
pub fn module_commands(conn: &mut Connection) -> Vec<String> {
    redis::cmd("COMMAND")
        .arg("LIST")
        .arg("FILTERBY")
        .arg("MODULE")
        .arg("roomcast")
        .query(conn)
        .expect("COMMAND LIST")
}

/// The module's write commands: those [`module_commands`] that `COMMAND INFO` flags
/// `write`. Checks first that all of the module's commands (15 or more) are there.
pub fn write_commands(conn: &mut Connection) -> BTreeSet<String> {
    let names = module_commands(conn);
    assert!(names.len() >= 15, "{names:?}");
    names
        .into_iter()
        .filter(|name| {
            let info: Value = redis::cmd("COMMAND")
                .arg("INFO")
                .arg(name)
                .query(conn)
                .expect("COMMAND INFO");
            let flags = &array(&array(&info)[0])[2];
            array(flags).iter().any(|f| text(f) == "write")
        })
        .collect()
}
