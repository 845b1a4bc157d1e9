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
//! 2. lines its position up with the server's stream ([`line_up`]) and catches
//!    up with `XRANGE` from the last delivered id (exclusive) to the end;
//! 3. delivers pushes: one whose id is not after the last delivered is a duplicate
//!    (already read from the stream) and dropped; one whose previous id is not the last
//!    delivered means pushes were missed — the gap is read from the stream, up to and
//!    including the push, then delivery goes on (see [`crate::inbox::pushed`]).
//!
//! When the connection closes (`CLIENT KILL`, the pub/sub output-buffer limit, a
//! failover), the server is demoted (see [`Subscriber::role_watch`]) or the liveness
//! probe finds the reader starved, it starts again at 1 from the last delivered id. So
//! delivery stays in order, gapless and without duplicates.

use std::time::{Duration, Instant};

use redis::RedisResult;
use roomcast_common::stream_id::StreamId;

use crate::backend::errors::no_redis;
use crate::backend::subscriber::Subscriber;
use crate::context::Context;
use crate::inbox::delivery::line_up;
use crate::inbox::liveness::Liveness;
use crate::inbox::pushed::follow;
use crate::metrics::WorkerMetrics;

/// Runs until aborted.
pub async fn run(ctx: &Context, liveness: &Liveness) {
    let keys = ctx.inbox_keys();
    let Some(key) = keys.first().cloned() else {
        return;
    };
    let keys = [key];
    let channel = ctx.live_channel();
    // The node's inbox was emptied at start (RC.NODE.DOWN), so reading from the
    // beginning delivers exactly what was routed to this process.
    let mut last = StreamId::default();
    let mut delay = Duration::from_millis(100);
    // Entries the first catch-up reads were appended before the subscription existed;
    // after that, what a catch-up reads are missed pushes.
    let mut recovering = false;
    loop {
        let mut sub = match connect(ctx, liveness, &keys[0], &channel, &mut last).await {
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
            followed = follow(ctx, liveness, &mut sub, &keys, std::slice::from_mut(&mut last), recovering) => followed,
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
/// the read position up with its stream (see [`line_up`]).
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
    let end = sub.end_of(key).await?;
    line_up(ctx, key, last, end);
    liveness.reset(Instant::now());
    Ok(sub)
}
