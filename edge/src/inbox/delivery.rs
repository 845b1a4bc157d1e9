//! What every inbox reader shares: handing entries to the fan-out ([`Round`], and
//! [`deliver`] for a whole read reply), lining read positions up with a new server's
//! streams, and pacing blocking reads on a busy inbox.

use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use redis::Value;
use roomcast_common::entry::{Entry, Kind};
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
/// Pause after a small read on a busy inbox (the blocking `RC.READ` under Redis Cluster;
/// a standalone server pushes entries instead). A blocked read returns as soon as one
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

/// One delivery round: entries that arrived together, handed to the fan-out one by one.
///
/// Starting a round closes the connections whose token has expired by now (everything
/// delivered in it was published before it arrived); the round reports progress and
/// probes to the liveness probe, and yields every [`CHUNK_BYTES`] so writers can flush
/// during a large batch.
pub struct Round<'a> {
    ctx: &'a Context,
    liveness: &'a Liveness,
    /// When the round started.
    now: Instant,
    /// Bytes delivered since the last yield.
    chunk: usize,
    /// Entries delivered.
    count: usize,
    /// The stream whose progress was reported last (once per stream and round, not per
    /// entry).
    progressed: Option<usize>,
}

impl<'a> Round<'a> {
    /// Starts a round.
    pub fn start(ctx: &'a Context, liveness: &'a Liveness) -> Self {
        ctx.next_round();
        let now = Instant::now();
        ctx.local.borrow_mut().expire(now);
        Self {
            ctx,
            liveness,
            now,
            chunk: 0,
            count: 0,
            progressed: None,
        }
    }

    /// Delivers `entry` of liveness stream `stream`. Cancel-safe between entries: the
    /// entry is fanned out before the round yields.
    pub async fn entry(&mut self, stream: usize, entry: &Entry<'_>) {
        if self.progressed != Some(stream) {
            self.liveness.progressed(stream, self.now);
            self.progressed = Some(stream);
        }
        if entry.kind == Some(Kind::Probe) {
            self.liveness.probe_seen(stream, entry.data);
        }
        self.chunk += entry.data.len() + 64;
        self.count += 1;
        fan_out(self.ctx, entry);
        if self.chunk >= CHUNK_BYTES {
            self.chunk = 0;
            tokio::task::yield_now().await;
            self.ctx.next_round();
        }
    }

    /// Entries delivered so far.
    pub fn count(&self) -> usize {
        self.count
    }
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
    let mut round = Round::start(ctx, liveness);
    for (key, entries) in streams(reply) {
        let Some(index) = keys.iter().position(|k| k.as_bytes() == key) else {
            continue;
        };
        let stream = stream_nos.get(index).copied().unwrap_or(0);
        for (id, fields) in entries.iter().filter_map(entry_parts) {
            if let (Some(slot), Ok(id)) = (last_ids.get_mut(index), std::str::from_utf8(id)) {
                *slot = id.to_string();
            }
            round.entry(stream, &decode(fields)).await;
        }
    }
    round.count()
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
