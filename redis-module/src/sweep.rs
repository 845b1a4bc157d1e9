//! The lease sweep: a module timer that removes nodes whose lease ran out.
//!
//! It runs every [`SWEEP_EVERY`] on every server but only acts on a writable primary
//! that is not loading, so a replica never diverges and a promoted replica takes over
//! at once (lease expiries are absolute times). A dead node's connections leave
//! presence and rooms within about one lease period plus one tick, with no edge alive,
//! and the remaining members' nodes get leave events. Every few ticks it also refreshes
//! the gauges shown by `INFO roomcast`.

use std::time::Duration;

use redis_module::{Context, ContextFlags};

use crate::commands::info::refresh_gauges;
use crate::state::{layout, SWEPT_NODES};
use crate::{membership, ops};

/// Time between two sweeps.
pub const SWEEP_EVERY: Duration = Duration::from_millis(100);
/// Ticks between two gauge refreshes (one second).
const GAUGE_TICKS: u32 = 10;

/// Arms the first tick; each tick arms the next.
pub fn start(ctx: &Context) {
    ctx.create_timer(SWEEP_EVERY, tick, 0u32);
}

fn tick(ctx: &Context, count: u32) {
    let flags = ctx.get_flags();
    let primary = flags.contains(ContextFlags::MASTER)
        && !flags.contains(ContextFlags::LOADING)
        && !flags.contains(ContextFlags::READONLY);
    if primary {
        sweep(ctx);
    }
    if count.is_multiple_of(GAUGE_TICKS) {
        refresh_gauges(ctx);
    }
    ctx.create_timer(SWEEP_EVERY, tick, count.wrapping_add(1));
}

/// Removes every node whose lease has expired, in every partition.
fn sweep(ctx: &Context) {
    let Ok(layout) = layout() else { return };
    let now = ops::now_ms();
    for keys in &layout.keys {
        let Ok(leases) = ops::hgetall(ctx, &keys.nodes()) else {
            continue;
        };
        for (node, expires) in leases {
            let expired = expires.parse::<i64>().map_or(true, |at| at <= now);
            if !expired {
                continue;
            }
            match membership::remove_node(ctx, keys, &node) {
                Ok(_) => SWEPT_NODES.add(1),
                Err(e) => ctx.log_warning(&format!(
                    "roomcast: sweeping node {node} in {} failed: {e}",
                    keys.prefix()
                )),
            }
        }
    }
}
