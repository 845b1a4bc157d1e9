//! Keeping the node alive in the module, and restoring its state when Redis lost it.
//!
//! Every worker renews its lease in every partition (one pipeline) three times per
//! lease period. A renewal answered `1` means the module did not know the node in that
//! partition any more — Redis restarted without data, or a sweep removed the node after
//! a long outage — so the worker registers its connections and memberships there again.

use std::rc::Rc;
use std::time::Duration;

use redis::Value;

use crate::worker::Worker;

/// Removes what a previous process with the same node id left behind, then takes the
/// first leases. Retries (with a clear log line) until Redis answers.
pub async fn start(worker: &Rc<Worker>) {
    let mut delay = Duration::from_millis(100);
    loop {
        match worker.backend.run_batch(node_down(worker)).await {
            Ok(_) => match renew(worker).await {
                Ok(_) => {
                    worker.set_ready(true);
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

/// `RC.NODE.DOWN` of this node in every partition, as one batch: used at start (to
/// clear what a previous process with the same id left) and when draining.
pub fn node_down(worker: &Worker) -> Vec<redis::Cmd> {
    (0..worker.shared.layout.count())
        .map(|p| {
            let mut cmd = redis::cmd("RC.NODE.DOWN");
            cmd.arg(worker.partition_arg(p)).arg(&worker.node);
            cmd
        })
        .collect()
}

/// Renews every lease; returns the partitions where the lease was new.
async fn renew(worker: &Rc<Worker>) -> Result<Vec<u32>, redis::RedisError> {
    let ttl = worker.shared.config.lease_ms;
    let cmds: Vec<redis::Cmd> = (0..worker.shared.layout.count())
        .map(|p| {
            let mut cmd = redis::cmd("RC.NODE.LEASE");
            cmd.arg(worker.partition_arg(p)).arg(&worker.node).arg(ttl);
            cmd
        })
        .collect();
    let replies = worker.backend.run_batch(cmds).await?;
    Ok(replies
        .iter()
        .enumerate()
        .filter(|(_, v)| matches!(v, Value::Int(1)))
        .map(|(p, _)| p as u32)
        .collect())
}

/// Renews leases until the task is aborted.
pub async fn run(worker: Rc<Worker>) {
    let period = Duration::from_millis((worker.shared.config.lease_ms / 3).max(50));
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    // Partitions whose state must be registered again (kept until that succeeds).
    let mut pending: Vec<u32> = Vec::new();
    loop {
        ticker.tick().await;
        if worker.draining.get() {
            // The node is going away (`RC.NODE.DOWN`): a renewal now would bring it
            // back, with the connections that are still closing.
            return;
        }
        match renew(&worker).await {
            Ok(lost) => {
                for p in lost {
                    if !pending.contains(&p) {
                        pending.push(p);
                    }
                }
                if !pending.is_empty() {
                    tracing::warn!(
                        node = %worker.node,
                        partitions = pending.len(),
                        "the module had lost this node; registering its connections again"
                    );
                    if let Err(e) = reregister(&worker, &pending).await {
                        tracing::warn!(error = %e, "re-registering failed; will retry");
                        continue;
                    }
                    pending.clear();
                }
                worker.set_ready(true);
            }
            Err(e) => {
                worker.set_ready(false);
                tracing::warn!(node = %worker.node, error = %e, "lease renewal failed");
            }
        }
    }
}

/// Renews the leases now and registers again what the module lost. Called when a
/// command is refused because the node holds no lease (Redis came back empty and the
/// periodic renewal has not run yet).
pub async fn restore(worker: &Rc<Worker>) -> Result<(), redis::RedisError> {
    let lost = renew(worker).await?;
    if !lost.is_empty() {
        reregister(worker, &lost).await?;
    }
    Ok(())
}

/// Runs a command that needs the node's lease, restoring the lease once if the module
/// says it holds none.
pub async fn run_leased(worker: &Rc<Worker>, cmd: &redis::Cmd) -> Result<Value, redis::RedisError> {
    match worker.backend.run(cmd).await {
        Err(e) if e.to_string().contains("holds no lease") => {
            tracing::info!(node = %worker.node, "the module lost this node; restoring it");
            restore(worker).await?;
            worker.backend.run(cmd).await
        }
        other => other,
    }
}

/// Registers every local connection whose user, and every membership whose room, lives
/// in one of the `lost` partitions.
async fn reregister(worker: &Rc<Worker>, lost: &[u32]) -> Result<(), redis::RedisError> {
    let layout = &worker.shared.layout;
    let in_lost = |name: &str| lost.contains(&layout.partition_of(name.as_bytes()));
    let mut cmds = Vec::new();
    {
        let local = worker.local.borrow();
        for conn in local.conns.values() {
            if in_lost(&conn.user) {
                let mut cmd = redis::cmd("RC.CONNECT");
                cmd.arg(&*worker.routed_name(&conn.user))
                    .arg(&worker.node)
                    .arg(&*conn.id);
                cmds.push(cmd);
            }
            for room in &conn.rooms {
                if in_lost(room) {
                    let mut cmd = redis::cmd("RC.JOIN");
                    cmd.arg(&*worker.routed_name(room))
                        .arg(&worker.node)
                        .arg(&*conn.id)
                        .arg(&*conn.user);
                    cmds.push(cmd);
                }
            }
        }
    }
    worker.backend.run_batch(cmds).await.map(|_| ())
}
