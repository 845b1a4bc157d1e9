//! The lease sweep: a module timer that removes nodes whose lease ran out.
//!
//! It runs every [`SWEEP_EVERY`] on every server but only acts on a writable primary
//! that is not loading, so a replica never diverges and a promoted replica takes over
//! (lease expiries are absolute times, and pending removals are listed in the dataset).
//! A promoted replica goes on with pending removals at once but waits
//! [`era::TAKEOVER_GRACE_MS`] before it expires leases, which no edge could renew during
//! the failover. A dead node's connections leave presence and rooms within about one lease
//! period plus one tick, with no edge alive, and the remaining members' nodes get leave
//! events. Every second it also refreshes the gauges shown by `INFO roomcast`
//! ([`gauges::refresh`]).
//!
//! Removing a node is incremental (see [`node_removal`]'s module docs): each tick starts
//! the removal of every expired node (O(1) each) and then drains pending removals for
//! at most [`SLICE`] of main-thread time. While work is left, the next tick comes after
//! [`SLICE_PAUSE`] instead of [`SWEEP_EVERY`], so clients are served between slices and
//! no slice stalls Redis for longer than about [`SLICE`], however many connections the
//! node held. A removal thus proceeds at about a third of one core: a node with 10,000
//! connections in 20,000 memberships (rooms spread over 11 nodes) goes in about 2 s,
//! where removing it in one piece stalled Redis for about 0.45 s.

use std::time::{Duration, Instant};

use redis_module::{Context, ContextFlags};

use crate::node_removal::{self, Budget, SLICE};
use crate::state::{layout, SWEPT_NODES};
use crate::{era, gauges, ops};

/// Time between two lease checks.
pub const SWEEP_EVERY: Duration = Duration::from_millis(100);
/// Delay of the next slice while removals are pending. Redis fires module timers with a
/// 1 ms resolution (a shorter period still waits 1 ms), so this is the shortest pause.
pub const SLICE_PAUSE: Duration = Duration::from_millis(1);
/// Time between two gauge refreshes.
const GAUGES_EVERY: Duration = Duration::from_secs(1);

/// When the timer next checks leases and refreshes gauges.
#[derive(Debug, Clone, Copy)]
struct Schedule {
    next_check: Instant,
    next_gauges: Instant,
}

/// Arms the first tick; each tick arms the next.
pub fn start(ctx: &Context) {
    let now = Instant::now();
    let schedule = Schedule {
        next_check: now,
        next_gauges: now,
    };
    ctx.create_timer(SWEEP_EVERY, tick, schedule);
}

fn later(from: Instant, by: Duration) -> Instant {
    from.checked_add(by).unwrap_or(from)
}

fn tick(ctx: &Context, mut schedule: Schedule) {
    let flags = ctx.get_flags();
    let primary = flags.contains(ContextFlags::MASTER)
        && !flags.contains(ContextFlags::LOADING)
        && !flags.contains(ContextFlags::READONLY);
    let mut pending = false;
    if primary {
        let budget = Budget::new(SLICE);
        let now = Instant::now();
        if now >= schedule.next_check && !era::in_takeover_grace(ops::now_ms()) {
            expire(ctx);
            schedule.next_check = later(now, SWEEP_EVERY);
        }
        pending = drain_pending(ctx, &budget);
    }
    let now = Instant::now();
    if now >= schedule.next_gauges {
        gauges::refresh(ctx);
        schedule.next_gauges = later(now, GAUGES_EVERY);
    }
    ctx.create_timer(next_tick(pending), tick, schedule);
}

/// Delay before the next tick: short while removals are pending.
fn next_tick(pending: bool) -> Duration {
    if pending {
        SLICE_PAUSE
    } else {
        SWEEP_EVERY
    }
}

/// Starts removing every node whose lease has expired, in every partition.
fn expire(ctx: &Context) {
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
            match node_removal::start_removal(ctx, keys, &node) {
                Ok(_) => SWEPT_NODES.add(1),
                Err(e) => ctx.log_warning(&format!(
                    "roomcast: sweeping node {node} in {} failed: {e}",
                    keys.prefix()
                )),
            }
        }
    }
}

/// Drains pending removals until `budget` is spent; true when work is left.
fn drain_pending(ctx: &Context, budget: &Budget) -> bool {
    let Ok(layout) = layout() else { return false };
    for keys in &layout.keys {
        let nodes = match node_removal::draining_nodes(ctx, keys) {
            Ok(nodes) => nodes,
            Err(e) => {
                ctx.log_warning(&format!(
                    "roomcast: listing removals in {} failed: {e}",
                    keys.prefix()
                ));
                continue;
            }
        };
        for node in nodes {
            if budget.spent() {
                return true;
            }
            match node_removal::drain(ctx, keys, &node, budget) {
                Ok(true) => {}
                Ok(false) => return true,
                // Retried at the normal pace; the other nodes go on.
                Err(e) => ctx.log_warning(&format!(
                    "roomcast: removing node {node} in {} failed: {e}",
                    keys.prefix()
                )),
            }
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pending_removals_tick_fast_and_slices_stay_short() {
        assert_eq!(next_tick(true), SLICE_PAUSE);
        assert_eq!(next_tick(false), SWEEP_EVERY);
        // A slice must stay well under the 1 ms a command may take (RELIABILITY row 20),
        // and the pause must leave clients at least as much time as a slice takes.
        assert!(SLICE <= Duration::from_millis(1));
        assert!(SLICE_PAUSE >= SLICE && SLICE_PAUSE < SWEEP_EVERY);
    }
}
