//! The inbox reader on a standalone server (fixed or behind Sentinel): `XREAD BLOCK`
//! over the node's inbox, from the primary as looked up now.

use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use redis::Value;

use crate::backend::errors::no_redis;
use crate::backend::streams::{reader_config, xread};
use crate::context::Context;
use crate::inbox::delivery::{align_to_ends, deliver, Pacer};
use crate::inbox::liveness::Liveness;
use crate::metrics::WorkerMetrics;

/// Runs until aborted.
pub async fn run(ctx: &Context, liveness: &Liveness) {
    let keys = ctx.inbox_keys();
    let streams: Vec<usize> = (0..keys.len()).collect();
    // The node's inboxes were emptied at start (RC.NODE.DOWN), so reading from the
    // beginning delivers exactly what was routed to this process.
    let mut last_ids: Vec<String> = vec!["0-0".to_string(); keys.len()];
    let mut delay = Duration::from_millis(100);
    loop {
        let mut conn = match connect(ctx, liveness, &keys, &mut last_ids).await {
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
            let cmd = xread(&keys, &last_ids);
            let reply: Result<Value, _> = tokio::select! {
                reply = cmd.query_async(&mut conn) => reply,
                _ = liveness.restart.notified() => break,
            };
            match reply {
                Ok(reply) => {
                    let entries =
                        deliver(ctx, liveness, &keys, &streams, &mut last_ids, &reply).await;
                    pacer.after_read(entries).await;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "inbox read failed; reconnecting");
                    WorkerMetrics::inc(&ctx.metrics.redis_errors);
                    break;
                }
            }
        }
        tokio::time::sleep(delay).await;
    }
}

/// Connects to the current primary (looking it up again behind Sentinel) and lines the
/// read positions up with its streams (see [`align_to_ends`]).
async fn connect(
    ctx: &Context,
    liveness: &Liveness,
    keys: &[String],
    last_ids: &mut [String],
) -> redis::RedisResult<MultiplexedConnection> {
    let target = ctx.shared().target.as_ref().ok_or_else(no_redis)?;
    let client = target.resolve().await?;
    let mut conn = client
        .get_multiplexed_async_connection_with_config(&reader_config())
        .await?;
    align_to_ends(ctx, &mut conn, keys, last_ids).await?;
    liveness.reset(Instant::now());
    Ok(conn)
}
