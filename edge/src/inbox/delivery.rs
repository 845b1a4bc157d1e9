//! What every inbox reader shares: handing a read reply to the fan-out, lining read
//! positions up with a new server's streams, and pacing reads on a busy inbox.

use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use redis::Value;
use roomcast_common::entry::Kind;
use roomcast_common::stream_id::StreamId;

use crate::backend::streams::{decode, entry_parts, stream_ends, streams, COUNT};
use crate::context::Context;
use crate::fanout::fan_out;
use crate::inbox::liveness::Liveness;

/// Reads returning less than this many entries, while reads follow each other closely,
/// are followed by a short pause (see [`COALESCE`]).
const SMALL_READ: usize = COUNT / 8;
/// Two reads closer than this mean the inbox is busy.
const BUSY_GAP: Duration = Duration::from_micros(500);
/// Pause after a small read on a busy inbox. A blocked `XREAD` returns as soon as one
/// entry arrives, so under steady load every read carries a single entry and Redis pays
/// the whole read (and unblock) per message × node; waiting a moment lets entries
/// accumulate, for at most this much extra latency.
pub const COALESCE: Duration = Duration::from_millis(1);
/// Bytes of entries delivered between two yields: bounds how much one round can add to
/// a queue, and lets writers flush during a large read.
const CHUNK_BYTES: usize = 256 * 1024;

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

/// Lines the read positions up with the streams of the server behind `conn`.
///
/// A stream that ends before the last id read means this server is not the one the
/// entries were read from: a promoted replica that had not received the newest entries
/// yet, or a server that lost its data. Everything it holds up to its end was either
/// read already (replication copies a prefix) or never existed here, so reading goes
/// on from its end — not from the old id, which would skip the new primary's entries
/// whose ids its clock puts below it.
pub async fn align_to_ends(
    ctx: &Context,
    conn: &mut MultiplexedConnection,
    keys: &[String],
    last_ids: &mut [String],
) -> redis::RedisResult<()> {
    let ends = stream_ends(conn, keys).await?;
    for ((key, last), end) in keys.iter().zip(last_ids.iter_mut()).zip(ends) {
        let end = end?;
        if stream_id(&end) < stream_id(last) {
            tracing::warn!(
                node = %ctx.node(),
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

/// Handles one `XREAD` (or `RC.READ`) reply. `stream_nos[i]` is the liveness stream
/// number of `keys[i]` (its index among all the node's inboxes). Returns the number of
/// entries delivered.
pub async fn deliver(
    ctx: &Context,
    liveness: &Liveness,
    keys: &[String],
    stream_nos: &[usize],
    last_ids: &mut [String],
    reply: &Value,
) -> usize {
    let Value::Array(_) = reply else {
        return 0;
    };
    ctx.next_round();
    // Everything in this reply was published before it arrived: close the connections
    // whose token has expired by now first, so none of it reaches them.
    let now = Instant::now();
    ctx.local.borrow_mut().expire(now);
    let mut chunk = 0usize;
    let mut count = 0usize;
    for (key, entries) in streams(reply) {
        let Some(index) = keys.iter().position(|k| k.as_bytes() == key) else {
            continue;
        };
        let stream = stream_nos.get(index).copied().unwrap_or(0);
        if !entries.is_empty() {
            // Progress for the liveness probe: once per stream and reply, not per entry.
            liveness.progressed(stream, now);
        }
        for (id, fields) in entries.iter().filter_map(entry_parts) {
            if let (Some(slot), Ok(id)) = (last_ids.get_mut(index), std::str::from_utf8(id)) {
                *slot = id.to_string();
            }
            let entry = decode(fields);
            if entry.kind == Some(Kind::Probe) {
                liveness.probe_seen(stream, entry.data);
            }
            chunk += entry.data.len() + 64;
            count += 1;
            fan_out(ctx, &entry);
            if chunk >= CHUNK_BYTES {
                chunk = 0;
                tokio::task::yield_now().await;
                ctx.next_round();
            }
        }
    }
    count
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_ids_compare_numerically() {
        assert!(stream_id("999-5") < stream_id("1000-0"));
        assert!(stream_id("1000-2") < stream_id("1000-10"));
        assert_eq!(stream_id("0-0"), (0, 0));
        assert_eq!(stream_id("garbage"), (0, 0));
    }
}
