//! Keeping the node alive in the module, and restoring its state when Redis lost it.
//!
//! Every worker renews its lease in every partition three times per lease period: one
//! command on a standalone server, one per partition (one pipeline) under Redis
//! Cluster. A renewal answered `1` means the module did not know the node in that
//! partition any more — Redis restarted without data, or a sweep removed the node after
//! a long outage — so the worker registers its connections and memberships there again.

use std::future::Future;
use std::time::Duration;

use redis::RedisError;

use crate::backend::errors::{classify, Failure};
use crate::backend::module::Again;
use crate::context::Context;

/// Removes what a previous process with the same node id left behind, then takes the
/// first leases. Retries (with a clear log line) until Redis answers.
pub async fn start(ctx: &Context) {
    let mut delay = Duration::from_millis(100);
    loop {
        match ctx.module.node_down().await {
            Ok(()) => match renew(ctx).await {
                Ok(_) => {
                    ctx.set_ready(true);
                    return;
                }
                Err(e) => tracing::warn!(error = %e, "taking leases failed; retrying"),
            },
            Err(e) => tracing::warn!(error = %e, "Redis unreachable at start; retrying"),
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(2));
    }
}

/// Renews every lease; returns the partitions where the lease was new.
async fn renew(ctx: &Context) -> Result<Vec<u32>, RedisError> {
    ctx.module.lease(ctx.config().lease_ms).await
}

/// Renews leases until the task is aborted.
pub async fn run(ctx: &Context) {
    let period = Duration::from_millis((ctx.config().lease_ms / 3).max(50));
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    // Partitions whose state must be registered again (kept until that succeeds).
    let mut pending: Vec<u32> = Vec::new();
    loop {
        ticker.tick().await;
        if ctx.is_draining() {
            // The node is going away (`RC.NODE.DOWN`): a renewal now would bring it
            // back, with the connections that are still closing.
            return;
        }
        match renew(ctx).await {
            Ok(lost) => {
                for p in lost {
                    if !pending.contains(&p) {
                        pending.push(p);
                    }
                }
                if !pending.is_empty() {
                    tracing::warn!(
                        node = %ctx.node(),
                        partitions = pending.len(),
                        "the module had lost this node; registering its connections again"
                    );
                    if let Err(e) = reregister(ctx, &pending).await {
                        tracing::warn!(error = %e, "re-registering failed; will retry");
                        continue;
                    }
                    pending.clear();
                }
                ctx.set_ready(true);
            }
            Err(e) => {
                ctx.set_ready(false);
                tracing::warn!(node = %ctx.node(), error = %e, "lease renewal failed");
            }
        }
    }
}

/// Renews the leases now and registers again what the module lost. Called when a
/// command is refused because the node holds no lease (Redis came back empty and the
/// periodic renewal has not run yet).
async fn restore(ctx: &Context) -> Result<(), RedisError> {
    let lost = renew(ctx).await?;
    if !lost.is_empty() {
        reregister(ctx, &lost).await?;
    }
    Ok(())
}

/// Runs a module command that needs the node's lease (`command` sends it), restoring
/// the lease and sending it once more if the module says the node holds none
/// (`NOLEASE`).
pub async fn leased<T, F: Future<Output = Result<T, RedisError>>>(
    ctx: &Context,
    command: impl Fn() -> F,
) -> Result<T, RedisError> {
    match command().await {
        Err(e) if matches!(classify(&e), Failure::NoLease(_)) => {
            tracing::info!(node = %ctx.node(), "the module lost this node; restoring it");
            restore(ctx).await?;
            command().await
        }
        other => other,
    }
}

/// Registers every local connection whose user, and every membership whose room, lives
/// in one of the `lost` partitions.
async fn reregister(ctx: &Context, lost: &[u32]) -> Result<(), RedisError> {
    let layout = ctx.layout();
    let in_lost = |name: &str| lost.contains(&layout.partition_of(name.as_bytes()));
    let batch = {
        let local = ctx.local.borrow();
        let mut again = Vec::new();
        for conn in local.conns.values() {
            if in_lost(&conn.user) {
                again.push(Again::Connect {
                    user: &conn.user,
                    conn: &conn.id,
                });
            }
            for room in &conn.rooms {
                if in_lost(room) {
                    again.push(Again::Join {
                        room,
                        conn: &conn.id,
                        user: &conn.user,
                    });
                }
            }
        }
        ctx.module.register_again(again)
    };
    batch.await
}
