//! The inbox readers under Redis Cluster: one blocking read per shard.
//!
//! The node has one inbox stream per partition there, and Redis Cluster refuses an
//! `XREAD` over keys in different slots, even on one server. So each shard's primary is
//! read with `RC.READ`, the module's blocking read over several partitions' inboxes (it
//! answers in `XREAD`'s shape, so `reader::deliver` handles the reply).
//!
//! A supervisor reads the slot map (`CLUSTER SLOTS`), groups the partitions by the
//! primary serving them and runs one reader per primary. A reader whose primary cannot
//! be reached retries on its own (the others read on); when a read shows partitions
//! moved (`MOVED`, or the module's "not served by this shard"), when the slot map
//! changes (checked every [`TOPOLOGY_EVERY`]: a failover promotes a replica) or when the
//! liveness probe finds a stream starved, every reader stops at a safe point (never in
//! the middle of delivering a reply) and the supervisor starts over from a fresh slot
//! map. The last id read of every partition survives the restart, so nothing is
//! skipped or delivered twice.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use redis::{RedisError, Value};
use tokio::sync::watch;

use crate::cluster::{self, Shard};
use crate::metrics::WorkerMetrics;
use crate::reader::{self, Pacer};
use crate::worker::Worker;

/// How often the supervisor compares the slot map with the one its readers follow.
pub const TOPOLOGY_EVERY: Duration = Duration::from_secs(2);

/// Runs until aborted.
pub async fn run(worker: Rc<Worker>) {
    let keys = reader::inbox_keys(&worker);
    // The node's inboxes were emptied at start (RC.NODE.DOWN), so reading from the
    // beginning delivers exactly what was routed to this process.
    let last_ids = RefCell::new(vec!["0-0".to_string(); keys.len()]);
    let mut delay = Duration::from_millis(100);
    loop {
        let shards = match slot_map(&worker).await {
            Ok(shards) => shards,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the Redis Cluster slot map; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
                continue;
            }
        };
        tracing::debug!(
            node = %worker.node,
            shards = %shards.iter().map(Shard::address).collect::<Vec<_>>().join(","),
            "reading the inboxes shard by shard"
        );
        worker.liveness.reset(Instant::now());
        let (stop, stopped) = watch::channel(false);
        let readers = futures_util::future::join_all(
            shards
                .iter()
                .map(|shard| read_shard(&worker, shard, &keys, &last_ids, &stop, stopped.clone())),
        );
        let supervise = async {
            let mut stopped = stopped.clone();
            tokio::select! {
                _ = worker.liveness.restart.notified() => {}
                _ = topology_changed(&worker, &shards) => {
                    tracing::warn!(node = %worker.node, "the Redis Cluster slot map changed; regrouping the inbox readers");
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

/// The shards serving the dataset's partitions, as the cluster says now.
async fn slot_map(worker: &Worker) -> redis::RedisResult<Vec<Shard>> {
    let mut cmd = redis::cmd("CLUSTER");
    cmd.arg("SLOTS");
    let reply = worker.backend.run(&cmd).await?;
    cluster::shards(&worker.shared.layout, &reply)
}

/// Returns once the slot map differs from `current` (checked every
/// [`TOPOLOGY_EVERY`]; a map that cannot be read is not a change).
async fn topology_changed(worker: &Worker, current: &[Shard]) {
    let mut ticker = tokio::time::interval(TOPOLOGY_EVERY);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    loop {
        ticker.tick().await;
        if let Ok(now) = slot_map(worker).await {
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
        || e.detail()
            .is_some_and(|d| d.contains("not served by this shard"))
}

/// Reads one shard's partitions until told to stop, retrying on its own (with backoff)
/// while its primary cannot be reached; a read showing that partitions moved stops
/// every reader (the supervisor then regroups). Returns whether it stopped that way.
async fn read_shard(
    worker: &Worker,
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
    let tags: Vec<String> = shard
        .partitions
        .iter()
        .map(|p| worker.partition_arg(*p))
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
            let target = worker
                .shared
                .target
                .as_ref()
                .and_then(|t| t.cluster())
                .ok_or_else(crate::backend::no_redis)?;
            let client = target.node(&shard.host, shard.port)?;
            let mut conn = client
                .get_multiplexed_async_connection_with_config(&reader::reader_config())
                .await?;
            reader::align_to_ends(worker, &mut conn, &keys, &mut ids).await?;
            let mut pacer = Pacer::default();
            loop {
                if *stopped.borrow() {
                    return Ok(());
                }
                let mut cmd = redis::cmd("RC.READ");
                cmd.arg(tags.first().map_or("", String::as_str))
                    .arg(&worker.node)
                    .arg("COUNT")
                    .arg(reader::COUNT)
                    .arg("BLOCK")
                    .arg(reader::BLOCK_MS)
                    .arg("STREAMS")
                    .arg(&tags)
                    .arg(&ids);
                let reply: Value = tokio::select! {
                    reply = cmd.query_async(&mut conn) => reply?,
                    _ = stopped.changed() => return Ok(()),
                };
                let entries = reader::deliver(worker, &keys, &streams, &mut ids, &reply).await;
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
        WorkerMetrics::inc(&worker.metrics.redis_errors);
        if calls_for_regrouping(&e) {
            tracing::warn!(node = %worker.node, shard = %shard.address(), error = %e, "partitions moved; re-reading the slot map");
            let _ = stop.send(true);
            return true;
        }
        tracing::warn!(node = %worker.node, shard = %shard.address(), error = %e, "shard inbox read failed; retrying");
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = stopped.changed() => return false,
        }
        delay = (delay * 2).min(Duration::from_secs(2));
    }
}
