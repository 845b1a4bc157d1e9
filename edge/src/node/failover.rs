//! Following a Sentinel failover at once, not at the first error.
//!
//! When Sentinel promotes a replica while the old primary is still up — a manual
//! `SENTINEL FAILOVER`, or a primary cut off from the sentinels but not from the edges —
//! the old primary stays writable until the sentinels get round to reconfiguring it
//! (seconds later), and nothing the edge sends it fails. Every write it acknowledges in
//! that window is lost when it turns replica, and the edge's inbox reader waits on a
//! stream that no longer receives anything. So each worker asks a sentinel every
//! [`WATCH_EVERY`] which server is the primary; when the answer changes, the command
//! connection and the inbox reader both move to the new one.

use std::time::Duration;

use redis::aio::MultiplexedConnection;

use crate::backend::target::Target;
use crate::context::Context;

/// How often a sentinel is asked.
pub const WATCH_EVERY: Duration = Duration::from_secs(1);

/// Watches the sentinels until the task is aborted or the worker drains; returns at once
/// unless the target is Sentinel. When Sentinel names a new primary, the command
/// connection is dropped (the next command looks the primary up) and `moved` is
/// called (the worker restarts its inbox reader).
pub async fn watch(ctx: &Context, moved: impl Fn()) {
    let Some(target) = ctx.shared().target.clone() else {
        return;
    };
    let Target::Sentinel(sentinel) = &*target else {
        return;
    };
    // A connection to the sentinel that answered last.
    let mut conn: Option<MultiplexedConnection> = None;
    // The primary as last named.
    let mut named: Option<(String, i64)> = None;
    let mut ticker = tokio::time::interval(WATCH_EVERY);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        if ctx.is_draining() {
            return;
        }
        if conn.is_none() {
            for address in &sentinel.sentinels {
                if let Ok(c) = sentinel.connect_sentinel(address).await {
                    conn = Some(c);
                    break;
                }
            }
        }
        let Some(c) = conn.as_mut() else { continue };
        let answer = match sentinel.named_on(c).await {
            Ok(answer) => answer,
            Err(e) => {
                tracing::debug!(error = %e, "sentinel did not answer; asking another");
                conn = None;
                continue;
            }
        };
        if named.as_ref().is_some_and(|old| *old != answer) {
            tracing::warn!(
                node = %ctx.node(),
                primary = %format!("{}:{}", answer.0, answer.1),
                "Sentinel names a new primary; moving commands and the inbox reader to it"
            );
            ctx.module.switch_primary();
            moved();
        }
        named = Some(answer);
    }
}
