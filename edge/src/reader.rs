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
use roomcast_common::entry::Kind;
use roomcast_common::keys::PartitionKeys;
use roomcast_common::offset::Offset;

use crate::frame::{self, close};
use crate::metrics::WorkerMetrics;
use crate::outbox::Pushed;
use crate::protocol;
use crate::worker::Worker;

/// Entries fetched per read.
const COUNT: usize = 256;
/// How long one XREAD blocks.
const BLOCK_MS: u64 = 5_000;
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

/// One decoded inbox entry, borrowing from the reply.
#[derive(Debug, Default)]
pub struct Entry<'a> {
    /// The `kind` field.
    pub kind: Option<Kind>,
    /// Other fields by name.
    pub room: &'a str,
    /// `user` field.
    pub user: &'a str,
    /// `from` field.
    pub from: &'a str,
    /// `skip` field.
    pub skip: &'a str,
    /// `offset` field.
    pub offset: &'a str,
    /// `conn` field.
    pub conn: &'a str,
    /// `reason` field.
    pub reason: &'a str,
    /// `data` field (raw bytes).
    pub data: &'a [u8],
}

fn as_bytes(v: &Value) -> &[u8] {
    match v {
        Value::BulkString(b) => b,
        Value::SimpleString(s) => s.as_bytes(),
        _ => &[],
    }
}

/// Decodes the flat field/value list of one stream entry.
pub fn decode(fields: &[Value]) -> Entry<'_> {
    let mut e = Entry::default();
    for pair in fields.chunks(2) {
        let (Some(name), Some(value)) = (pair.first(), pair.get(1)) else {
            continue;
        };
        let bytes = as_bytes(value);
        let text = std::str::from_utf8(bytes).unwrap_or("");
        match as_bytes(name) {
            b"kind" => e.kind = Kind::parse(bytes),
            b"room" => e.room = text,
            b"user" => e.user = text,
            b"from" => e.from = text,
            b"skip" => e.skip = text,
            b"offset" => e.offset = text,
            b"conn" => e.conn = text,
            b"reason" => e.reason = text,
            b"data" => e.data = bytes,
            _ => {}
        }
    }
    e
}

/// Runs until aborted.
pub async fn run(worker: Rc<Worker>) {
    let layout = &worker.shared.layout;
    let partitions = if worker.shared.shared_inbox {
        1
    } else {
        layout.count()
    };
    let keys: Vec<String> = (0..partitions)
        .map(|p| PartitionKeys::new(layout.tag(p)).inbox(&worker.node))
        .collect();
    // The node's inboxes were emptied at start (RC.NODE.DOWN), so reading from the
    // beginning delivers exactly what was routed to this process.
    let mut last_ids: Vec<String> = vec!["0-0".to_string(); keys.len()];
    let mut delay = Duration::from_millis(100);
    loop {
        let mut conn = match connect(&worker).await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "inbox reader cannot reach Redis; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
                continue;
            }
        };
        delay = Duration::from_millis(100);
        let mut last_read = Instant::now();
        loop {
            let mut cmd = redis::cmd("XREAD");
            cmd.arg("COUNT")
                .arg(COUNT)
                .arg("BLOCK")
                .arg(BLOCK_MS)
                .arg("STREAMS");
            cmd.arg(&keys).arg(&last_ids);
            let reply: Result<Value, _> = cmd.query_async(&mut conn).await;
            match reply {
                Ok(reply) => {
                    let entries = deliver(&worker, &keys, &mut last_ids, &reply).await;
                    let now = Instant::now();
                    let busy = now.duration_since(last_read) < BUSY_GAP;
                    last_read = now;
                    if busy && entries > 0 && entries < SMALL_READ {
                        tokio::time::sleep(COALESCE).await;
                    }
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

async fn connect(worker: &Worker) -> redis::RedisResult<MultiplexedConnection> {
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(None);
    let client = worker
        .shared
        .redis
        .as_ref()
        .ok_or_else(crate::backend::no_redis)?;
    client
        .get_multiplexed_async_connection_with_config(&config)
        .await
}

/// Bytes of entries delivered between two yields: bounds how much one round can add to
/// a queue, and lets writers flush during a large read.
const CHUNK_BYTES: usize = 256 * 1024;

/// Starts a new fan-out round (see `outbox`).
pub(crate) fn next_round(worker: &Worker) {
    worker.round.set(worker.round.get() + 1);
}

/// Handles one XREAD reply: `[[key, [[id, [f, v, …]], …]], …]` (nil on timeout).
/// Returns the number of entries delivered.
async fn deliver(
    worker: &Worker,
    keys: &[String],
    last_ids: &mut [String],
    reply: &Value,
) -> usize {
    let Value::Array(streams) = reply else {
        return 0;
    };
    next_round(worker);
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
