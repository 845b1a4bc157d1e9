//! What every inbox reader shares: handing entries to the fan-out ([`Round`]) and
//! lining read positions up with a new server's streams.

use std::time::Instant;

use roomcast_common::entry::{Entry, Kind};
use roomcast_common::stream_id::StreamId;

use crate::context::Context;
use crate::fanout::fan_out;
use crate::inbox::liveness::Liveness;

/// Bytes of entries delivered between two yields: bounds how much one round can add to
/// a queue, and lets writers flush during a large read.
const CHUNK_BYTES: usize = 256 * 1024;

/// Lines the last id read of stream `key` up with the stream's `end` on the server
/// now serving it.
///
/// A stream that ends before the last id read means this server is not the one the
/// entries were read from: a promoted replica that had not received the newest entries
/// yet, or a server that lost its data. Everything it holds up to its end was either
/// read already (replication copies a prefix) or never existed here, so reading goes
/// on from its end — not from the old id, which would skip the new primary's entries
/// whose ids its clock puts below it.
pub fn line_up(ctx: &Context, key: &str, last: &mut StreamId, end: StreamId) {
    if end >= *last {
        return;
    }
    tracing::warn!(
        node = %ctx.node(),
        stream = %key,
        read = %last,
        end = %end,
        "the inbox ends before the last entry read (failover or data loss); reading on from its end"
    );
    *last = end;
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
