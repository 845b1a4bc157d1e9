//! The inbox reader: one per worker, `XREAD BLOCK` over the node's inbox — one stream on a
//! standalone server, one per partition under Redis Cluster — fanning each entry out to
//! local connections.
//!
//! Each entry is encoded into a frame once; the same bytes are queued to every local
//! recipient. The reader has its own connection (a blocked read would stall commands
//! on a shared one) and passes the last id seen per stream, never `$` after the first
//! call, so nothing is skipped; on errors it reconnects with backoff.

use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Value};
use roomcast_common::entry::{self, Kind};
use roomcast_common::keys::PartitionKeys;
use roomcast_common::offset::Offset;
use roomcast_common::stream_id::StreamId;

use crate::frame::{self, close};
use crate::metrics::WorkerMetrics;
use crate::outbox::Pushed;
use crate::protocol;
use crate::worker::Worker;

/// Entries fetched per read.
pub(crate) const COUNT: usize = 256;
/// How long one XREAD blocks.
pub(crate) const BLOCK_MS: u64 = 5_000;
/// Reads returning less than this many entries, while reads follow each other closely,
/// are followed by a short pause (see [`COALESCE`]).
const SMALL_READ: usize = COUNT / 8;
/// Two reads closer than this mean the inbox is busy.
const BUSY_GAP: Duration = Duration::from_micros(500);
/// Pause after a small read on a busy inbox. A blocked `XREAD` returns as soon as one
/// entry arrives, so under steady load every read carries a single entry and Redis pays
/// the whole read (and unblock) per message × node; waiting a moment lets entries
/// accumulate, for at most this much extra latency.
const COALESCE: Duration = Duration::from_millis(1);

/// One decoded inbox entry, borrowing from the reply (the decoder lives next to the
/// field names in `roomcast_common::entry`, where it is property-tested and fuzzed).
pub use roomcast_common::entry::Entry;

fn as_bytes(v: &Value) -> &[u8] {
    match v {
        Value::BulkString(b) => b,
        Value::SimpleString(s) => s.as_bytes(),
        _ => &[],
    }
}

/// Decodes the flat field/value list of one stream entry (see
/// `roomcast_common::entry::decode`); values that are not strings read as empty.
pub fn decode(fields: &[Value]) -> Entry<'_> {
    entry::decode(fields.iter().map(as_bytes))
}

/// The node's inbox streams: one on a standalone server, one per partition under
/// Redis Cluster.
pub fn inbox_keys(worker: &Worker) -> Vec<String> {
    let layout = &worker.shared.layout;
    let partitions = if worker.shared.shared_inbox {
        1
    } else {
        layout.count()
    };
    (0..partitions)
        .map(|p| PartitionKeys::new(layout.tag(p)).inbox(&worker.node))
        .collect()
}

/// Runs until aborted: one reader over the node's inbox on a standalone server, one per
/// shard under Redis Cluster (see `shard_reader`).
pub async fn run(worker: Rc<Worker>) {
    if worker.shared.cluster {
        return crate::shard_reader::run(worker).await;
    }
    let keys = inbox_keys(&worker);
    let streams: Vec<usize> = (0..keys.len()).collect();
    // The node's inboxes were emptied at start (RC.NODE.DOWN), so reading from the
    // beginning delivers exactly what was routed to this process.
    let mut last_ids: Vec<String> = vec!["0-0".to_string(); keys.len()];
    let mut delay = Duration::from_millis(100);
    loop {
        let mut conn = match connect(&worker, &keys, &mut last_ids).await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "inbox reader cannot reach the Redis primary; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
                continue;
            }
        };
        delay = Duration::from_millis(100);
        let mut pacer = Pacer::default();
        loop {
            let mut cmd = redis::cmd("XREAD");
            cmd.arg("COUNT")
                .arg(COUNT)
                .arg("BLOCK")
                .arg(BLOCK_MS)
                .arg("STREAMS");
            cmd.arg(&keys).arg(&last_ids);
            let reply: Result<Value, _> = tokio::select! {
                reply = cmd.query_async(&mut conn) => reply,
                _ = worker.liveness.restart.notified() => break,
            };
            match reply {
                Ok(reply) => {
                    let entries = deliver(&worker, &keys, &streams, &mut last_ids, &reply).await;
                    pacer.after_read(entries).await;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "inbox read failed; reconnecting");
                    WorkerMetrics::inc(&worker.metrics.redis_errors);
                    break;
                }
            }
        }
        tokio::time::sleep(delay).await;
    }
}

/// Spaces reads out a little on a busy inbox (see [`COALESCE`]).
pub struct Pacer {
    /// When the previous read returned.
    last_read: Instant,
}

impl Default for Pacer {
    fn default() -> Self {
        Self {
            last_read: Instant::now(),
        }
    }
}

impl Pacer {
    /// Called after each read that returned `entries` entries.
    pub async fn after_read(&mut self, entries: usize) {
        let now = Instant::now();
        let busy = now.duration_since(self.last_read) < BUSY_GAP;
        self.last_read = now;
        if busy && entries > 0 && entries < SMALL_READ {
            tokio::time::sleep(COALESCE).await;
        }
    }
}

/// Connects to the current primary (looking it up again behind Sentinel) and lines the
/// read positions up with its streams (see [`align_to_ends`]).
async fn connect(
    worker: &Worker,
    keys: &[String],
    last_ids: &mut [String],
) -> redis::RedisResult<MultiplexedConnection> {
    let target = worker
        .shared
        .target
        .as_ref()
        .ok_or_else(crate::backend::no_redis)?;
    let client = target.resolve().await?;
    let mut conn = client
        .get_multiplexed_async_connection_with_config(&reader_config())
        .await?;
    align_to_ends(worker, &mut conn, keys, last_ids).await?;
    worker.liveness.reset(Instant::now());
    Ok(conn)
}

/// A reader's connection settings: no response timeout (reads block for seconds).
pub fn reader_config() -> AsyncConnectionConfig {
    AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(None)
}

/// Lines the read positions up with the streams of the server behind `conn`.
///
/// A stream that ends before the last id read means this server is not the one the
/// entries were read from: a promoted replica that had not received the newest entries
/// yet, or a server that lost its data. Everything it holds up to its end was either
/// read already (replication copies a prefix) or never existed here, so reading goes
/// on from its end — not from the old id, which would skip the new primary's entries
/// whose ids its clock puts below it.
pub async fn align_to_ends(
    worker: &Worker,
    conn: &mut MultiplexedConnection,
    keys: &[String],
    last_ids: &mut [String],
) -> redis::RedisResult<()> {
    let mut pipe = redis::pipe();
    for key in keys {
        pipe.cmd("XREVRANGE")
            .arg(key)
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(1);
    }
    let ends: Vec<Value> = tokio::time::timeout(Duration::from_secs(2), pipe.query_async(conn))
        .await
        .map_err(|_| {
            redis::RedisError::from((redis::ErrorKind::Io, "timed out reading inbox ends"))
        })??;
    for ((key, last), end) in keys.iter().zip(last_ids.iter_mut()).zip(&ends) {
        let end = match end {
            Value::Array(items) => items
                .first()
                .and_then(|item| match item {
                    Value::Array(parts) => parts.first().map(crate::target::text),
                    _ => None,
                })
                .unwrap_or_else(|| "0-0".to_string()),
            Value::ServerError(e) => return Err(e.clone().into()),
            _ => "0-0".to_string(),
        };
        if stream_id(&end) < stream_id(last) {
            tracing::warn!(
                node = %worker.node,
                stream = %key,
                read = %last,
                end = %end,
                "the inbox ends before the last entry read (failover or data loss); reading on from its end"
            );
            *last = end;
        }
    }
    Ok(())
}

/// A stream id `ms-seq` as a comparable pair (malformed ids compare as 0-0).
fn stream_id(id: &str) -> (u64, u64) {
    let id = StreamId::parse(id.as_bytes()).unwrap_or_default();
    (id.ms, id.seq)
}

/// Bytes of entries delivered between two yields: bounds how much one round can add to
/// a queue, and lets writers flush during a large read.
const CHUNK_BYTES: usize = 256 * 1024;

/// Starts a new fan-out round (see `outbox`).
pub(crate) fn next_round(worker: &Worker) {
    worker.round.set(worker.round.get() + 1);
}

/// Handles one XREAD (or `RC.READ`) reply: `[[key, [[id, [f, v, …]], …]], …]` (nil on
/// timeout). `stream_nos[i]` is the liveness stream number of `keys[i]` (its index among
/// all the node's inboxes). Returns the number of entries delivered.
pub async fn deliver(
    worker: &Worker,
    keys: &[String],
    stream_nos: &[usize],
    last_ids: &mut [String],
    reply: &Value,
) -> usize {
    let Value::Array(streams) = reply else {
        return 0;
    };
    next_round(worker);
    // Everything in this reply was published before it arrived: close the connections
    // whose token has expired by now first, so none of it reaches them.
    let now = Instant::now();
    worker.local.borrow_mut().expire(now);
    let mut chunk = 0usize;
    let mut count = 0usize;
    for stream in streams {
        let Value::Array(parts) = stream else {
            continue;
        };
        let (Some(key), Some(Value::Array(entries))) = (parts.first(), parts.get(1)) else {
            continue;
        };
        let Some(index) = keys.iter().position(|k| k.as_bytes() == as_bytes(key)) else {
            continue;
        };
        let stream = stream_nos.get(index).copied().unwrap_or(0);
        if !entries.is_empty() {
            // Progress for the liveness probe: once per stream and reply, not per entry.
            worker.liveness.progressed(stream, now);
        }
        for item in entries {
            let Value::Array(item) = item else { continue };
            let (Some(id), Some(Value::Array(fields))) = (item.first(), item.get(1)) else {
                continue;
            };
            if let (Some(slot), Ok(id)) =
                (last_ids.get_mut(index), std::str::from_utf8(as_bytes(id)))
            {
                *slot = id.to_string();
            }
            let entry = decode(fields);
            if entry.kind == Some(Kind::Probe) {
                worker.liveness.probe_seen(stream, entry.data);
            }
            chunk += entry.data.len() + 64;
            count += 1;
            fan_out(worker, &entry);
            if chunk >= CHUNK_BYTES {
                chunk = 0;
                tokio::task::yield_now().await;
                next_round(worker);
            }
        }
    }
    count
}

/// Delivers one entry to its local recipients.
pub fn fan_out(worker: &Worker, e: &Entry<'_>) {
    let Some(kind) = e.kind else { return };
    match kind {
        Kind::Message => {
            let frame = frame::text_with(e.data.len() + e.room.len() + 64, |out| {
                protocol::message(out, e.room, e.from, e.data, e.offset)
            });
            send_to_room(worker, e.room, worker.seq_of(e.skip), e.offset, &frame);
        }
        Kind::Join | Kind::Leave => {
            let frame = frame::text_with(64 + e.room.len() + e.user.len(), |out| {
                protocol::presence_event(out, kind == Kind::Join, e.room, e.user)
            });
            send_to_room(worker, e.room, worker.seq_of(e.skip), "", &frame);
        }
        Kind::Direct => {
            let frame = frame::text_with(e.data.len() + 48, |out| {
                protocol::direct(out, e.from, e.data)
            });
            let local = worker.local.borrow();
            let Some(seqs) = local.users.get(e.user) else {
                return;
            };
            for seq in seqs {
                if let Some(conn) = local.conns.get(seq) {
                    push(worker, &conn.out, frame.clone());
                }
            }
        }
        // Read back by `liveness`; nothing to deliver.
        Kind::Probe => {}
        Kind::Kick => {
            let reason = if e.reason.is_empty() {
                "kicked"
            } else {
                e.reason
            };
            let local = worker.local.borrow();
            let targets: Vec<u64> = if e.conn.is_empty() {
                local.users.get(e.user).cloned().unwrap_or_default()
            } else {
                worker.seq_of(e.conn).into_iter().collect()
            };
            for seq in targets {
                if let Some(conn) = local.conns.get(&seq) {
                    conn.out.close(close::POLICY, reason);
                }
            }
        }
    }
}

/// Queues a room frame to every local member except `skip`; members whose join is
/// still waiting for the module get it later, in order (see `Local::joining`).
fn send_to_room(worker: &Worker, room: &str, skip: Option<u64>, offset: &str, frame: &Bytes) {
    let mut local = worker.local.borrow_mut();
    let local = &mut *local;
    let Some(seqs) = local.rooms.get(room) else {
        return;
    };
    let mut held = local.joining.get_mut(room);
    let mut floors = local.floors.get_mut(room);
    // Parsed only while some recent join in this room still has a floor.
    let parsed = floors.as_ref().and_then(|_| Offset::parse(offset));
    for seq in seqs {
        if Some(*seq) == skip {
            continue;
        }
        if let Some(frames) = held.as_mut().and_then(|h| h.get_mut(seq)) {
            frames.push((offset.to_string(), frame.clone()));
            continue;
        }
        if let (Some(message), Some(floors)) = (&parsed, floors.as_mut()) {
            if let Some(floor) = floors.get(seq) {
                if message.epoch == floor.epoch && message.seq <= floor.seq {
                    continue;
                }
                floors.remove(seq);
            }
        }
        if let Some(conn) = local.conns.get(seq) {
            push(worker, &conn.out, frame.clone());
        }
    }
    if floors.is_some_and(|f| f.is_empty()) {
        local.floors.remove(room);
    }
}

pub fn push(worker: &Worker, out: &crate::outbox::Outbox, frame: Bytes) {
    let m = &worker.metrics;
    let len = frame.len() as u64;
    match out.push(frame, worker.round.get()) {
        Pushed::Queued => {
            WorkerMetrics::inc(&m.deliveries);
            WorkerMetrics::inc(&m.messages_out);
            WorkerMetrics::add(&m.bytes_out, len);
        }
        Pushed::Dropped => WorkerMetrics::inc(&m.dropped),
        Pushed::SlowConsumer => {
            WorkerMetrics::inc(&m.dropped);
            WorkerMetrics::inc(&m.slow_consumer_closes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &[u8]) -> Value {
        Value::BulkString(s.to_vec())
    }

    #[test]
    fn stream_ids_compare_numerically() {
        assert!(stream_id("999-5") < stream_id("1000-0"));
        assert!(stream_id("1000-2") < stream_id("1000-10"));
        assert_eq!(stream_id("0-0"), (0, 0));
        assert_eq!(stream_id("garbage"), (0, 0));
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
}

/// Property tests of the inbox entry decoder over the values an `XREAD` reply holds
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
