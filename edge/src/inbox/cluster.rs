//! The inbox reader under Redis Cluster: live pushes on shard channels, with each
//! partition's inbox stream as the recovery log.
//!
//! The node has one inbox stream per partition there (a command may only touch its own
//! slot), and the module pushes every entry it appends to one to the node's live shard
//! channel of that partition (`SPUBLISH` semantics: the channel lives in the
//! partition's slot, on the shard serving it). The reader keeps the id of the last entry
//! delivered from every inbox and, as the standalone reader does with its one inbox:
//!
//! 1. subscribes to every partition's live shard channel (a [`ShardSubscriber`]:
//!    `SSUBSCRIBE` on the primary serving each) — first, so nothing appended from then
//!    on can be missed;
//! 2. lines every position up with the shard's stream (a promoted replica may end
//!    before the last id read) and catches up each inbox with `XRANGE`;
//! 3. delivers pushes, dropping duplicates and filling gaps from the stream
//!    (see [`crate::inbox::pushed`]).
//!
//! It starts again at 1, from the last ids delivered, when pushes may have been lost (a
//! connection to a primary closed, a subscription dropped because its slot moved), when
//! the slot map changes (checked every [`TOPOLOGY_EVERY`]: a failover promotes a
//! replica) or when the liveness probe finds an inbox starved. So delivery stays in
//! order, gapless and without duplicates, and a shard that is down delays only the
//! restart, never another shard's entries for long.

use std::time::{Duration, Instant};

use redis::RedisResult;
use roomcast_common::stream_id::StreamId;

use crate::backend::cluster::Shard;
use crate::backend::errors::no_redis;
use crate::backend::shard_subscriber::ShardSubscriber;
use crate::context::Context;
use crate::inbox::delivery::line_up;
use crate::inbox::liveness::Liveness;
use crate::inbox::pushed::follow;
use crate::metrics::WorkerMetrics;

/// How often the reader compares the slot map with the one it subscribed under.
pub const TOPOLOGY_EVERY: Duration = Duration::from_secs(2);

/// Runs until aborted.
pub async fn run(ctx: &Context, liveness: &Liveness) {
    let keys = ctx.inbox_keys();
    let channels = ctx.live_channels();
    // The node's inboxes were emptied at start (RC.NODE.DOWN), so reading from the
    // beginning delivers exactly what was routed to this process.
    let mut last = vec![StreamId::default(); keys.len()];
    let mut delay = Duration::from_millis(100);
    // Entries the first catch-up reads were appended before the subscriptions existed;
    // after that, what a catch-up reads are missed pushes.
    let mut recovering = false;
    loop {
        let connected = async {
            let shards = ctx.module.slot_map().await?;
            let sub = connect(ctx, liveness, &shards, &keys, &channels, &mut last).await?;
            RedisResult::Ok((shards, sub))
        };
        let (shards, mut sub) = match connected.await {
            Ok(connected) => connected,
            Err(e) => {
                tracing::warn!(error = %e, "inbox reader cannot subscribe on the Redis Cluster; retrying");
                WorkerMetrics::inc(&ctx.metrics.redis_errors);
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
                continue;
            }
        };
        tracing::debug!(
            node = %ctx.node(),
            shards = %shards.iter().map(Shard::address).collect::<Vec<_>>().join(","),
            "following the inboxes' shard channels"
        );
        delay = Duration::from_millis(100);
        let followed = tokio::select! {
            followed = follow(ctx, liveness, &mut sub, &keys, &mut last, recovering) => followed,
            () = topology_changed(ctx, &shards) => {
                tracing::warn!(node = %ctx.node(), "the Redis Cluster slot map changed; subscribing again");
                Ok(())
            }
            _ = liveness.restart.notified() => Ok(()),
        };
        if let Err(e) = followed {
            tracing::warn!(error = %e, "inbox shard subscriptions lost; subscribing again");
            WorkerMetrics::inc(&ctx.metrics.redis_errors);
        }
        WorkerMetrics::inc(&ctx.metrics.inbox_resubscribes);
        recovering = true;
        tokio::time::sleep(delay).await;
    }
}

/// Subscribes to every inbox's shard channel (through the primaries of `shards`, the
/// slot map as the command connection sees it now), then lines each read position up
/// with the end of its stream on the shard now serving it (see [`line_up`]).
async fn connect(
    ctx: &Context,
    liveness: &Liveness,
    shards: &[Shard],
    keys: &[String],
    channels: &[String],
    last: &mut [StreamId],
) -> RedisResult<ShardSubscriber> {
    let target = ctx
        .shared()
        .target
        .as_ref()
        .and_then(|t| t.cluster())
        .ok_or_else(no_redis)?;
    let mut sub = ShardSubscriber::subscribe(target, shards, channels).await?;
    for (key, last) in keys.iter().zip(last.iter_mut()) {
        let end = sub.end_of(key).await?;
        line_up(ctx, key, last, end);
    }
    liveness.reset(Instant::now());
    Ok(sub)
}

/// Returns once the slot map differs from `current` (checked every
/// [`TOPOLOGY_EVERY`]; a map that cannot be read is not a change).
async fn topology_changed(ctx: &Context, current: &[Shard]) {
    let mut ticker = tokio::time::interval(TOPOLOGY_EVERY);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    loop {
        ticker.tick().await;
        if let Ok(now) = ctx.module.slot_map().await {
            if now != current {
                return;
            }
        }
    }
}
