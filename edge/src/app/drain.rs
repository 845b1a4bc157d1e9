//! Draining a worker: every connection closed with 1012 ("reconnect elsewhere"), the
//! node removed from the module, and a moment for the sessions to finish.

use std::time::Duration;

use crate::context::Context;
use crate::ws::frame::close;

/// Closes every socket with 1012, removes the node from every partition
/// (`RC.NODE.DOWN`, so the others see leave events at once; not without Redis), and
/// returns.
pub async fn drain(ctx: &Context) {
    ctx.start_draining();
    ctx.set_ready(false);
    let outs: Vec<_> = ctx
        .local
        .borrow()
        .conns
        .values()
        .map(|c| c.out.clone())
        .collect();
    for out in &outs {
        out.close(close::RESTART, "server draining");
    }
    let wait_writers = async {
        for out in &outs {
            out.finished().await;
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), wait_writers).await;
    if ctx.mode().has_redis() {
        if let Err(e) = ctx.module.node_down().await {
            tracing::warn!(node = %ctx.node(), error = %e, "RC.NODE.DOWN failed while draining");
        }
    }
    // Let each session read its peer's close answer and log its close before the
    // runtime (and every socket with it) is dropped; a session waits at most 1 s.
    let sessions_done = async {
        while !ctx.local.borrow().conns.is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    let _ = tokio::time::timeout(Duration::from_millis(1500), sessions_done).await;
    tracing::info!(node = %ctx.node(), connections = outs.len(), "worker drained");
}
