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
//!
//! A tick with nothing to do reads no key: the module remembers a lower bound of each
//! partition's earliest lease expiry and whether a removal may be pending there
//! ([`sweep_memory`]), and scans a partition's lease table only once that bound has
//! passed (or the memory was forgotten: after a load, a role change, a flush, a write
//! to the lease keys by anything but the lease path, and every [`RESCAN_EVERY`] as a
//! net). Likewise the gauges are counted again only when a keyspace event said the
//! dataset changed, at most once a second. An idle server's timer thus costs O(1) per
//! tick whatever the number of partitions and nodes.

use std::time::{Duration, Instant};

use redis_module::{Context, ContextFlags};

use redis_module::RedisError;
use roomcast_common::keys::PartitionKeys;

use crate::node_removal::{self, Budget, SLICE};
use crate::state::{layout, SWEPT_NODES};
use crate::{era, gauges, ops, sweep_memory};

/// Time between two lease checks.
pub const SWEEP_EVERY: Duration = Duration::from_millis(100);
/// Delay of the next slice while removals are pending. Redis fires module timers with a
/// 1 ms resolution (a shorter period still waits 1 ms), so this is the shortest pause.
pub const SLICE_PAUSE: Duration = Duration::from_millis(1);
/// Least time between two gauge refreshes (taken only when the dataset changed).
const GAUGES_EVERY: Duration = Duration::from_secs(1);
/// Time between two full rescans that do not trust the memory ([`sweep_memory`]): the
/// net for changes no keyspace or server event reports (`SWAPDB`, another module's
/// low-level writes). A lease changed that way expires at most this late.
pub const RESCAN_EVERY: Duration = Duration::from_secs(10);

/// When the timer next checks leases, refreshes gauges and rescans everything.
#[derive(Debug, Clone, Copy)]
struct Schedule {
    next_check: Instant,
    next_gauges: Instant,
    next_rescan: Instant,
}

/// Creates the sweep's memory (knowing nothing: the first tick scans every partition)
/// and arms the first tick; each tick arms the next.
pub fn start(ctx: &Context) {
    if let Ok(layout) = layout() {
        sweep_memory::init(layout.keys.len());
    }
    let now = Instant::now();
    let schedule = Schedule {
        next_check: now,
        next_gauges: now,
        next_rescan: later(now, RESCAN_EVERY),
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
    if Instant::now() >= schedule.next_rescan {
        sweep_memory::forget_all();
        schedule.next_rescan = later(Instant::now(), RESCAN_EVERY);
    }
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
        if sweep_memory::take_census_stale() && !gauges::refresh(ctx) {
            sweep_memory::census_changed();
        }
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

/// Starts removing every node whose lease has expired, in every partition that is due
/// ([`sweep_memory`]); O(1) when none is.
fn expire(ctx: &Context) {
    let now = ops::now_ms();
    let due = sweep_memory::due(now);
    if due.is_empty() {
        return;
    }
    let Ok(layout) = layout() else { return };
    for p in due {
        let Some(keys) = layout.keys.get(p) else {
            continue;
        };
        // A failed scan or removal leaves the partition due: retried next check.
        if let Ok(earliest) = expire_partition(ctx, keys, now) {
            sweep_memory::scanned(p, earliest);
        }
    }
}

/// Starts removing every node of the partition whose lease expired by `now` (or whose
/// expiry is unreadable); returns the earliest expiry left (`None`: no lease left).
/// Fails when the lease table cannot be read or a removal failed.
fn expire_partition(ctx: &Context, keys: &PartitionKeys, now: i64) -> Result<Option<i64>, ()> {
    let leases = ops::hgetall(ctx, &keys.nodes()).map_err(drop)?;
    let mut earliest: Option<i64> = None;
    let mut failed = false;
    for (node, expires) in leases {
        match expires.parse::<i64>() {
            Ok(at) if at > now => {
                earliest = Some(earliest.map_or(at, |e| e.min(at)));
                continue;
            }
            _ => {}
        }
        if let Err(e) = start_removal(ctx, keys, &node) {
            failed = true;
            ctx.log_warning(&format!(
                "roomcast: sweeping node {node} in {} failed: {e}",
                keys.prefix()
            ));
        }
    }
    if failed {
        Err(())
    } else {
        Ok(earliest)
    }
}

/// Starts the removal of an expired node and counts it.
fn start_removal(ctx: &Context, keys: &PartitionKeys, node: &str) -> Result<(), RedisError> {
    node_removal::start_removal(ctx, keys, node)?;
    SWEPT_NODES.add(1);
    Ok(())
}

/// Drains pending removals until `budget` is spent; true when work is left. Only the
/// partitions where a removal may be pending are read ([`sweep_memory::draining`]).
fn drain_pending(ctx: &Context, budget: &Budget) -> bool {
    let draining = sweep_memory::draining();
    if draining.is_empty() {
        return false;
    }
    let Ok(layout) = layout() else { return false };
    for p in draining {
        let Some(keys) = layout.keys.get(p) else {
            continue;
        };
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
        if nodes.is_empty() {
            sweep_memory::drained(p);
            continue;
        }
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
        // The net rescans rarely next to the tick, and never faster than gauges.
        assert!(RESCAN_EVERY >= GAUGES_EVERY && RESCAN_EVERY > SWEEP_EVERY * 10);
    }
}
