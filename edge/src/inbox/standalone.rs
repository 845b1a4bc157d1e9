//! The inbox reader on a standalone server (fixed or behind Sentinel): live pushes,
//! with the inbox stream as the recovery log.
//!
//! The module pushes every entry it appends to the node's inbox to the node's live
//! channel, in the same command, with the id of the inbox's previous entry (see
//! `roomcast_common::push`). The reader keeps the id of the last entry it delivered
//! and, on the primary as looked up now:
//!
//! 1. subscribes to the channel (a [`Subscriber`] connection) — first, so nothing
//!    appended from then on can be missed;
//! 2. lines its position up with the server's stream ([`align_to_ends`]) and catches
//!    up with `XRANGE` from the last delivered id (exclusive) to the end;
//! 3. delivers pushes: one whose id is not after the last delivered is a duplicate
//!    (already read from the stream) and dropped; one whose previous id is not the last
//!    delivered means pushes were missed — the gap is read from the stream, up to and
//!    including the push, then delivery goes on.
//!
//! When the connection closes (`CLIENT KILL`, the pub/sub output-buffer limit, a
//! failover), the server is demoted (see [`Subscriber::role_watch`]) or the liveness
//! probe finds the reader starved, it starts again at 1 from the last delivered id. So
//! delivery stays in order, gapless and without duplicates.

use std::time::{Duration, Instant};

use redis::RedisResult;
use roomcast_common::entry;
use roomcast_common::push;
use roomcast_common::stream_id::StreamId;

use crate::backend::errors::no_redis;
use crate::backend::streams::{decode, COUNT};
use crate::backend::subscriber::{entries, Event, Subscriber};
use crate::context::Context;
use crate::inbox::delivery::{align_to_ends, Round};
use crate::inbox::liveness::Liveness;
use crate::metrics::WorkerMetrics;

/// The one liveness stream of a standalone server (its single inbox).
const STREAM: usize = 0;

/// Runs until aborted.
pub async fn run(ctx: &Context, liveness: &Liveness) {
    let keys = ctx.inbox_keys();
    let Some(key) = keys.first().cloned() else {
        return;
    };
    let channel = ctx.live_channel();
    // The node's inbox was emptied at start (RC.NODE.DOWN), so reading from the
    // beginning delivers exactly what was routed to this process.
    let mut last = StreamId::default();
    let mut delay = Duration::from_millis(100);
    // Entries the first catch-up reads were appended before the subscription existed;
    // after that, what a catch-up reads are missed pushes.
    let mut recovering = false;
    loop {
        let mut sub = match connect(ctx, liveness, &key, &channel, &mut last).await {
            Ok(sub) => sub,
            Err(e) => {
                tracing::warn!(error = %e, "inbox reader cannot reach the Redis primary; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
                continue;
            }
        };
        delay = Duration::from_millis(100);
        let demoted = sub.role_watch(&channel);
        let followed = tokio::select! {
            followed = follow(ctx, liveness, &key, &mut sub, &mut last, recovering) => followed,
            e = demoted => Err(e),
            _ = liveness.restart.notified() => Ok(()),
        };
        if let Err(e) = followed {
            tracing::warn!(error = %e, "inbox subscriber connection lost; reconnecting");
            WorkerMetrics::inc(&ctx.metrics.redis_errors);
        }
        WorkerMetrics::inc(&ctx.metrics.inbox_resubscribes);
        recovering = true;
        tokio::time::sleep(delay).await;
    }
}

/// Subscribes on the current primary (looking it up again behind Sentinel), then lines
/// the read position up with its stream (see [`align_to_ends`]).
async fn connect(
    ctx: &Context,
    liveness: &Liveness,
    key: &str,
    channel: &str,
    last: &mut StreamId,
) -> RedisResult<Subscriber> {
    let target = ctx.shared().target.as_ref().ok_or_else(no_redis)?;
    let client = target.resolve().await?;
    let mut sub = Subscriber::subscribe(&client, channel).await?;
    let mut ids = [last.to_string()];
    align_to_ends(ctx, sub.conn(), &[key.to_string()], &mut ids).await?;
    *last = StreamId::parse(ids[0].as_bytes()).unwrap_or(*last);
    liveness.reset(Instant::now());
    Ok(sub)
}

/// Catches up from `last` (counting what it reads as missed pushes when `recovering`),
/// then delivers pushes until the connection ends (an error). Cancel-safe: `last` is
/// the id of the last entry fanned out.
async fn follow(
    ctx: &Context,
    liveness: &Liveness,
    key: &str,
    sub: &mut Subscriber,
    last: &mut StreamId,
    recovering: bool,
) -> RedisResult<()> {
    let mut round = Round::start(ctx, liveness);
    let caught_up = read_range(&mut round, sub, key, last, None).await?;
    if recovering && caught_up > 0 {
        recovered(ctx, caught_up);
    }
    loop {
        let mut event = sub.next().await;
        let mut round = Round::start(ctx, liveness);
        loop {
            let Event::Push(payload) = event else {
                return Err(closed());
            };
            on_push(ctx, &mut round, sub, key, last, &payload).await?;
            if round.count() >= COUNT {
                break;
            }
            match sub.try_next() {
                Some(next) => event = next,
                None => break,
            }
        }
    }
}

/// Delivers one push: drops a duplicate, fills a gap from the stream first.
async fn on_push(
    ctx: &Context,
    round: &mut Round<'_>,
    sub: &mut Subscriber,
    key: &str,
    last: &mut StreamId,
    payload: &[u8],
) -> RedisResult<()> {
    let Some(pushed) = push::decode(payload) else {
        // Its entry is in the stream: the next push (or probe) shows the gap.
        tracing::warn!(node = %ctx.node(), "malformed inbox push ignored");
        return Ok(());
    };
    match next_step(*last, pushed.id, pushed.prev) {
        Step::Drop => {}
        Step::Deliver => {
            *last = pushed.id;
            round.entry(STREAM, &entry::decode(pushed.fields())).await;
        }
        Step::Fill => {
            let filled = read_range(round, sub, key, last, Some(pushed.id)).await?;
            // The push's own entry, when the range read it, was not missed.
            recovered(ctx, filled.saturating_sub(usize::from(*last == pushed.id)));
            if *last < pushed.id {
                // Not in the stream (trimmed, or the server lost it): the push itself
                // is all there is of it.
                *last = pushed.id;
                round.entry(STREAM, &entry::decode(pushed.fields())).await;
            }
        }
    }
    Ok(())
}

/// What to do with a push of entry `id` whose inbox's previous entry is `prev`, when
/// the last entry delivered is `last`.
#[derive(Debug, PartialEq, Eq)]
enum Step {
    /// Delivered already (read from the stream): drop it.
    Drop,
    /// The next entry: deliver it.
    Deliver,
    /// Entries between `last` and it were missed: read them from the stream first.
    Fill,
}

fn next_step(last: StreamId, id: StreamId, prev: StreamId) -> Step {
    if id <= last {
        Step::Drop
    } else if prev == last {
        Step::Deliver
    } else {
        Step::Fill
    }
}

/// Counts a gap filled with `entries` entries read from the stream.
fn recovered(ctx: &Context, entries: usize) {
    WorkerMetrics::inc(&ctx.metrics.inbox_gaps_filled);
    WorkerMetrics::add(&ctx.metrics.inbox_entries_recovered, entries as u64);
}

/// Delivers the entries of stream `key` after `last` up to `end` (inclusive; `None`:
/// the stream's end), page by page, advancing `last`. Returns how many it delivered.
async fn read_range(
    round: &mut Round<'_>,
    sub: &mut Subscriber,
    key: &str,
    last: &mut StreamId,
    end: Option<StreamId>,
) -> RedisResult<usize> {
    let mut delivered = 0;
    loop {
        if end.is_some_and(|end| *last >= end) {
            return Ok(delivered);
        }
        let reply = sub.range(key, *last, end).await?;
        let mut read = 0;
        for (id, fields) in entries(&reply) {
            read += 1;
            if id <= *last {
                continue;
            }
            *last = id;
            delivered += 1;
            round.entry(STREAM, &decode(fields)).await;
        }
        if read < COUNT {
            return Ok(delivered);
        }
    }
}

/// The error of a subscriber connection that ended.
fn closed() -> redis::RedisError {
    redis::RedisError::from((redis::ErrorKind::Io, "the subscriber connection closed"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(ms: u64, seq: u64) -> StreamId {
        StreamId { ms, seq }
    }

    #[test]
    fn pushes_are_dropped_delivered_or_fill_a_gap() {
        let last = id(100, 3);
        // Read from the stream already (during a catch-up or a fill).
        assert_eq!(next_step(last, id(100, 3), id(100, 2)), Step::Drop);
        assert_eq!(next_step(last, id(99, 0), id(0, 0)), Step::Drop);
        // The next one.
        assert_eq!(next_step(last, id(101, 0), id(100, 3)), Step::Deliver);
        // One (or more) missed in between.
        assert_eq!(next_step(last, id(102, 0), id(101, 0)), Step::Fill);
        // A previous id that is not the last delivered, even an older one (this
        // server's stream differs from what was read): the stream decides.
        assert_eq!(next_step(last, id(102, 0), id(100, 1)), Step::Fill);
        // The first entry of an empty inbox.
        assert_eq!(next_step(id(0, 0), id(5, 0), id(0, 0)), Step::Deliver);
    }
}
