//! The inbox readers under Redis Cluster: one blocking read per shard.
//!
//! The node has one inbox stream per partition there, and Redis Cluster refuses an
//! `XREAD` over keys in different slots, even on one server. So each shard's primary is
//! read with `RC.READ`, the module's blocking read over several partitions' inboxes (it
//! answers in `XREAD`'s shape, so [`deliver`] handles the reply).
//!
//! A supervisor reads the slot map (`CLUSTER SLOTS`), groups the partitions by the
//! primary serving them and runs one reader per primary. A reader whose primary cannot
//! be reached retries on its own (the others read on); when a read shows partitions
//! moved (`MOVED`, or the module's `NOTSERVED`), when the slot map
//! changes (checked every [`TOPOLOGY_EVERY`]: a failover promotes a replica) or when the
//! liveness probe finds a stream starved, every reader stops at a safe point (never in
//! the middle of delivering a reply) and the supervisor starts over from a fresh slot
//! map. The last id read of every partition survives the restart, so nothing is
//! skipped or delivered twice.

use std::cell::RefCell;
use std::time::{Duration, Instant};

use redis::{RedisError, Value};
use tokio::sync::watch;

use crate::backend::cluster::Shard;
use crate::backend::errors::{classify, no_redis, Failure};
use crate::backend::streams::reader_config;
use crate::context::Context;
use crate::inbox::delivery::{align_to_ends, deliver, Pacer};
use crate::inbox::liveness::Liveness;
use crate::metrics::WorkerMetrics;

/// How often the supervisor compares the slot map with the one its readers follow.
pub const TOPOLOGY_EVERY: Duration = Duration::from_secs(2);

/// Runs until aborted.
pub async fn run(ctx: &Context, liveness: &Liveness) {
    let keys = ctx.inbox_keys();
    // The node's inboxes were emptied at start (RC.NODE.DOWN), so reading from the
    // beginning delivers exactly what was routed to this process.
    let last_ids = RefCell::new(vec!["0-0".to_string(); keys.len()]);
    let mut delay = Duration::from_millis(100);
    loop {
        let shards = match ctx.module.slot_map().await {
            Ok(shards) => shards,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the Redis Cluster slot map; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
                continue;
            }
        };
        tracing::debug!(
            node = %ctx.node(),
            shards = %shards.iter().map(Shard::address).collect::<Vec<_>>().join(","),
            "reading the inboxes shard by shard"
        );
        liveness.reset(Instant::now());
        let (stop, stopped) = watch::channel(false);
        let readers = futures_util::future::join_all(shards.iter().map(|shard| {
            let stopped = stopped.clone();
            read_shard(ctx, liveness, shard, &keys, &last_ids, &stop, stopped)
        }));
        let supervise = async {
            let mut stopped = stopped.clone();
            tokio::select! {
                _ = liveness.restart.notified() => {}
                _ = topology_changed(ctx, &shards) => {
                    tracing::warn!(node = %ctx.node(), "the Redis Cluster slot map changed; regrouping the inbox readers");
                }
                _ = stopped.changed() => {}
            }
            let _ = stop.send(true);
        };
        let (failed, ()) = futures_util::future::join(readers, supervise).await;
        if failed.iter().any(|f| *f) {
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(2));
        } else {
            delay = Duration::from_millis(100);
        }
    }
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

/// Whether a read failed because the partitions are not (all) on this shard any more:
/// the readers must be regrouped from a fresh slot map. Other failures (the primary is
/// unreachable) are retried on the same shard until the slot map changes.
fn calls_for_regrouping(e: &RedisError) -> bool {
    matches!(e.code(), Some("MOVED" | "ASK" | "CLUSTERDOWN" | "TRYAGAIN"))
        || matches!(classify(e), Failure::NotServed(_))
}

/// Reads one shard's partitions until told to stop, retrying on its own (with backoff)
/// while its primary cannot be reached; a read showing that partitions moved stops
/// every reader (the supervisor then regroups). Returns whether it stopped that way.
async fn read_shard(
    ctx: &Context,
    liveness: &Liveness,
    shard: &Shard,
    all_keys: &[String],
    last_ids: &RefCell<Vec<String>>,
    stop: &watch::Sender<bool>,
    mut stopped: watch::Receiver<bool>,
) -> bool {
    let streams: Vec<usize> = shard.partitions.iter().map(|p| *p as usize).collect();
    let keys: Vec<String> = streams
        .iter()
        .filter_map(|s| all_keys.get(*s).cloned())
        .collect();
    let mut ids: Vec<String> = {
        let all = last_ids.borrow();
        streams
            .iter()
            .map(|s| all.get(*s).cloned().unwrap_or_else(|| "0-0".into()))
            .collect()
    };
    let mut delay = Duration::from_millis(100);
    loop {
        let result: redis::RedisResult<()> = async {
            let target = ctx
                .shared()
                .target
                .as_ref()
                .and_then(|t| t.cluster())
                .ok_or_else(no_redis)?;
            let client = target.node(&shard.host, shard.port)?;
            let mut conn = client
                .get_multiplexed_async_connection_with_config(&reader_config())
                .await?;
            align_to_ends(ctx, &mut conn, &keys, &mut ids).await?;
            let mut pacer = Pacer::default();
            loop {
                if *stopped.borrow() {
                    return Ok(());
                }
                let cmd = ctx.module.read_cmd(&shard.partitions, &ids);
                let reply: Value = tokio::select! {
                    reply = cmd.query_async(&mut conn) => reply?,
                    _ = stopped.changed() => return Ok(()),
                };
                let entries = deliver(ctx, liveness, &keys, &streams, &mut ids, &reply).await;
                {
                    let mut all = last_ids.borrow_mut();
                    for (s, id) in streams.iter().zip(&ids) {
                        if let Some(slot) = all.get_mut(*s) {
                            slot.clone_from(id);
                        }
                    }
                }
                pacer.after_read(entries).await;
            }
        }
        .await;
        let Err(e) = result else { return false };
        WorkerMetrics::inc(&ctx.metrics.redis_errors);
        if calls_for_regrouping(&e) {
            tracing::warn!(node = %ctx.node(), shard = %shard.address(), error = %e, "partitions moved; re-reading the slot map");
            let _ = stop.send(true);
            return true;
        }
        tracing::warn!(node = %ctx.node(), shard = %shard.address(), error = %e, "shard inbox read failed; retrying");
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = stopped.changed() => return false,
        }
        delay = (delay * 2).min(Duration::from_secs(2));
    }
}
