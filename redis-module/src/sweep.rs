//! The lease sweep: a module timer that removes nodes whose lease ran out.
//!
//! It only acts on a writable primary that is not loading, so a replica never diverges
//! and a promoted replica takes over (lease expiries are absolute times, and pending
//! removals are listed in the dataset). A promoted replica goes on with pending removals
//! at once but waits [`era::TAKEOVER_GRACE_MS`] before it expires leases, which no edge
//! could renew during the failover. A dead node's connections leave presence and rooms
//! within about one lease period plus [`SWEEP_EVERY`], with no edge alive, and the
//! remaining members' nodes get leave events. The timer also refreshes the gauges shown
//! by `INFO roomcast` ([`gauges::refresh`]), only when a keyspace event said the dataset
//! changed, at most once per [`GAUGES_EVERY`].
//!
//! Removing a node is incremental (see [`node_removal`]'s module docs): a tick starts
//! the removal of every expired node (O(1) each) and then drains pending removals for
//! at most [`SLICE`] of main-thread time. While work is left, the next tick comes after
//! [`SLICE_PAUSE`], so clients are served between slices and no slice stalls Redis for
//! longer than about [`SLICE`], however many connections the node held. A removal thus
//! proceeds at about a third of one core: a node with 10,000 connections in 20,000
//! memberships (rooms spread over 11 nodes) goes in about 2 s, where removing it in one
//! piece stalled Redis for about 0.45 s.
//!
//! # When the timer fires
//!
//! Each wake-up of Redis costs it CPU whatever the tick then does, so the timer is not
//! periodic: each tick arms the next one for the earliest time something is due.
//!
//! - On a primary, the earliest lease expiry the memory knows ([`sweep_memory`] keeps a
//!   lower bound per partition; "now" for a partition it forgot), but not before the
//!   takeover grace ends nor sooner than [`SWEEP_EVERY`] after the previous check: a
//!   partition forgotten because of the sweep's own writes, or whose scan failed, is read
//!   at most that often.
//! - On a primary, pending removals: [`SLICE_PAUSE`] after a slice that ran out of
//!   budget, else [`SWEEP_EVERY`] after the last pass (to confirm a drained partition or
//!   retry a failed one).
//! - A census, once a keyspace event said the dataset changed (or a node new to a
//!   partition), at most once per [`GAUGES_EVERY`].
//! - The net's full rescan, every [`RESCAN_EVERY`]: the longest an idle server sleeps.
//!
//! Whatever may make something due sooner re-arms the timer at once, from where it
//! happens ([`sweep_memory`] calls the sweep's `wake`): `RC.NODE.LEASE` (both forms)
//! when the expiry it writes is the earliest known; a keyspace event that forgets a
//! partition (a lease or removal written by anything but the lease path: another
//! client's `HSET`, a script, `RENAME`, a removal by `RC.NODE.DOWN`, …) or that first
//! makes the census stale; a role change (a promoted replica), an RDB/AOF load or full
//! resync, and `FLUSHALL`/`FLUSHDB`. Re-arming stops the armed timer and arms one for
//! the earlier time. It touches no key (a keyspace-event callback must not write; timers
//! are no part of the keyspace), and it never stops a timer that is firing: a tick
//! marks the timer as unarmed before it does anything, and events during a tick leave
//! the arming to the tick's end, which reads what is due then. So a lease is expired
//! within [`SWEEP_EVERY`] of its expiry whatever wrote it, as when the timer ticked
//! every [`SWEEP_EVERY`]; only a change no event reports (`SWAPDB`, another module's
//! low-level writes) waits for the net. The count of wake-ups is `sweep_ticks` in
//! `INFO roomcast` ([`ticks`]).
//!
//! Lease expiries are wall-clock times (Unix ms, as written in the dataset) and the
//! timer's own periods are monotonic, so a wall clock stepped forward by hand expires
//! the leases it overtook when the armed timer fires, at most [`RESCAN_EVERY`] later.
//!
//! A tick reads only what is due: the module remembers a lower bound of each
//! partition's earliest lease expiry and whether a removal may be pending there
//! ([`sweep_memory`]), and scans a partition's lease table only once that bound has
//! passed (or the memory was forgotten: after a load, a role change, a flush, a write
//! to the lease keys by anything but the lease path, and every [`RESCAN_EVERY`] as a
//! net). An idle server's timer thus costs one O(1) wake-up per [`RESCAN_EVERY`] plus
//! that rescan, whatever the number of partitions and nodes.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError, TryLockError};
use std::time::{Duration, Instant};

use redis_module::raw::RedisModuleTimerID;
use redis_module::{Context, ContextFlags, RedisError};
use roomcast_common::keys::PartitionKeys;

use crate::node_removal::{self, Budget, SLICE};
use crate::state::{layout, SWEPT_NODES};
use crate::{era, gauges, ops, sweep_memory};

/// Least time between two lease checks that scan, and between two passes over pending
/// removals that found no work in progress: the most a lease expiry is delayed.
pub const SWEEP_EVERY: Duration = Duration::from_millis(100);
/// Delay of the next slice while removals are pending. Redis fires module timers with a
/// 1 ms resolution (a shorter period still waits 1 ms), so this is the shortest pause.
pub const SLICE_PAUSE: Duration = Duration::from_millis(1);
/// Least time between two gauge refreshes (taken only when the dataset changed).
pub const GAUGES_EVERY: Duration = Duration::from_secs(1);
/// Time between two full rescans that do not trust the memory ([`sweep_memory`]): the
/// net for changes no keyspace or server event reports (`SWAPDB`, another module's
/// low-level writes). A lease changed that way expires at most this late. Also the
/// longest the timer sleeps.
pub const RESCAN_EVERY: Duration = Duration::from_secs(10);

/// Timer firings since the module loaded.
static TICKS: AtomicU64 = AtomicU64::new(0);

/// How many times the sweep's timer has fired (woken Redis) since the module loaded
/// (`sweep_ticks` in `INFO roomcast`).
pub fn ticks() -> u64 {
    TICKS.load(Ordering::Relaxed)
}

/// When the timer may next do each of its jobs; kept between ticks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Schedule {
    /// The next lease check that scans, at the earliest.
    next_check: Instant,
    /// The next pass over pending removals when none is in progress, at the earliest.
    next_drain: Instant,
    /// The next census, at the earliest.
    next_gauges: Instant,
    /// The next full rescan.
    next_rescan: Instant,
    /// The last slice ran out of budget with removals left.
    work_left: bool,
}

/// What is due besides the schedule, read at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Due {
    /// This server expires leases and drains removals: a writable primary, not loading.
    primary: bool,
    /// Unix ms before which no lease is to be expired: the memory's lower bound, or the
    /// end of the takeover grace.
    leases_at: i64,
    /// A removal may be pending.
    draining: bool,
    /// The dataset may have changed since the last census.
    census_stale: bool,
}

impl Due {
    /// Reads what is due now (no key: the server's flags and the sweep's memory).
    fn read(ctx: &Context) -> Self {
        let outlook = sweep_memory::outlook();
        Self {
            primary: is_primary(ctx),
            leases_at: outlook.next_due.max(era::takeover_grace_ends()),
            draining: outlook.draining,
            census_stale: outlook.census_stale,
        }
    }
}

impl Schedule {
    /// A schedule where everything may run at once but the rescan, one net period away.
    fn new(now: Instant) -> Self {
        Self {
            next_check: now,
            next_drain: now,
            next_gauges: now,
            next_rescan: later(now, RESCAN_EVERY),
            work_left: false,
        }
    }

    /// How long the timer may sleep from `now` (`now_ms` on the wall clock) before the
    /// first job that `due` makes due can run; at most [`RESCAN_EVERY`].
    fn sleep(&self, due: &Due, now: Instant, now_ms: i64) -> Duration {
        let until = |at: Instant| at.saturating_duration_since(now);
        let mut sleep = until(self.next_rescan);
        if due.census_stale {
            sleep = sleep.min(until(self.next_gauges));
        }
        if due.primary {
            if self.work_left {
                sleep = sleep.min(SLICE_PAUSE);
            }
            if due.draining {
                sleep = sleep.min(until(self.next_drain));
            }
            let leases = ms_until(due.leases_at, now_ms).max(until(self.next_check));
            sleep = sleep.min(leases);
        }
        sleep.min(RESCAN_EVERY)
    }
}

/// Time from `now_ms` to `at_ms` (Unix ms); zero when it has passed.
fn ms_until(at_ms: i64, now_ms: i64) -> Duration {
    Duration::from_millis(u64::try_from(at_ms.saturating_sub(now_ms)).unwrap_or(0))
}

/// `d` rounded up to whole milliseconds: Redis takes a timer's period in whole ms, and a
/// timer that fired a fraction of a millisecond early would find nothing due yet and
/// wake Redis once more.
fn whole_ms(d: Duration) -> Duration {
    Duration::from_millis(u64::try_from(d.as_nanos().div_ceil(1_000_000)).unwrap_or(u64::MAX))
}

fn later(from: Instant, by: Duration) -> Instant {
    from.checked_add(by).unwrap_or(from)
}

/// Whether this server expires leases and drains removals.
fn is_primary(ctx: &Context) -> bool {
    let flags = ctx.get_flags();
    flags.contains(ContextFlags::MASTER)
        && !flags.contains(ContextFlags::LOADING)
        && !flags.contains(ContextFlags::READONLY)
}

/// The armed timer.
#[derive(Debug, Clone, Copy)]
struct Armed {
    id: RedisModuleTimerID,
    /// When it fires.
    at: Instant,
}

/// The timer's state.
#[derive(Debug)]
struct Timer {
    schedule: Schedule,
    /// Tags each armed timer (its data). A tick whose tag is not the last one armed was
    /// replaced by an earlier timer and does nothing: a net should stopping it have failed,
    /// so that there is never more than one chain of ticks.
    generation: u64,
    /// The armed timer; `None` while a tick runs (it arms the next one when it ends).
    armed: Option<Armed>,
}

/// The process-wide timer state (`None` until [`start`]). Locked only for bookkeeping
/// and for creating or stopping the timer, never across a call that may write (which
/// would fire events that call [`wake`] on the same thread).
static TIMER: Mutex<Option<Timer>> = Mutex::new(None);

fn lock_timer() -> MutexGuard<'static, Option<Timer>> {
    TIMER.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Creates the sweep's memory (knowing nothing: the first tick scans every partition)
/// and arms the first tick; each tick arms the next.
pub fn start(ctx: &Context) {
    if let Ok(layout) = layout() {
        sweep_memory::init(layout.keys.len(), wake);
    }
    let now = Instant::now();
    let mut guard = lock_timer();
    let timer = guard.insert(Timer {
        schedule: Schedule::new(now),
        generation: 0,
        armed: None,
    });
    arm(ctx, timer, SWEEP_EVERY, now);
}

/// Arms the timer to fire `sleep` after `now`, tagged with a new generation.
fn arm(ctx: &Context, timer: &mut Timer, sleep: Duration, now: Instant) {
    let sleep = whole_ms(sleep.min(RESCAN_EVERY));
    timer.generation = timer.generation.wrapping_add(1);
    // The data is a `u64` and the callback a function item (zero-sized), so what
    // `stop_timer::<u64>` takes back is exactly what `create_timer` boxed.
    let id = ctx.create_timer(sleep, tick, timer.generation);
    timer.armed = Some(Armed {
        id,
        at: later(now, sleep),
    });
}

/// Something may be due sooner than the timer is armed for (called through
/// [`sweep_memory`] from a command or an event callback): re-arms it for the new
/// earliest time when that is earlier. Does nothing while a tick runs (the tick arms the
/// next one from what is due when it ends). Reads no key and writes nothing.
fn wake(ctx: &Context) {
    let mut guard = match TIMER.try_lock() {
        Ok(guard) => guard,
        Err(TryLockError::Poisoned(e)) => e.into_inner(),
        // Only reachable from inside the timer's own bookkeeping, which arms afterwards.
        Err(TryLockError::WouldBlock) => return,
    };
    let Some(timer) = guard.as_mut() else { return };
    let Some(armed) = timer.armed else { return };
    let due = Due::read(ctx);
    let now = Instant::now();
    let sleep = timer.schedule.sleep(&due, now, ops::now_ms());
    if armed.at.saturating_duration_since(later(now, sleep)) < Duration::from_millis(1) {
        return;
    }
    // Stopping fails only for a timer that already fired; its tick then finds its
    // generation replaced and does nothing.
    let _ = ctx.stop_timer::<u64>(armed.id);
    arm(ctx, timer, sleep, now);
}

/// The timer's callback: does what is due and arms the next tick.
fn tick(ctx: &Context, generation: u64) {
    TICKS.fetch_add(1, Ordering::Relaxed);
    let Some(mut schedule) = begin(generation) else {
        return;
    };
    run(ctx, &mut schedule);
    finish(ctx, schedule);
}

/// Marks the timer as firing and returns its schedule; `None` for a replaced timer.
fn begin(generation: u64) -> Option<Schedule> {
    let mut guard = lock_timer();
    let timer = guard.as_mut()?;
    if timer.generation != generation || timer.armed.is_none() {
        return None;
    }
    timer.armed = None;
    Some(timer.schedule)
}

/// Keeps the tick's schedule and arms the next tick for what is due now.
fn finish(ctx: &Context, schedule: Schedule) {
    let due = Due::read(ctx);
    let now = Instant::now();
    let sleep = schedule.sleep(&due, now, ops::now_ms());
    let mut guard = lock_timer();
    if let Some(timer) = guard.as_mut() {
        timer.schedule = schedule;
        arm(ctx, timer, sleep, now);
    }
}

/// One tick's work: the net's rescan when due, then on a primary the lease check and a
/// slice of pending removals, then the census.
fn run(ctx: &Context, schedule: &mut Schedule) {
    let now = Instant::now();
    let now_ms = ops::now_ms();
    if now >= schedule.next_rescan {
        sweep_memory::forget_all();
        schedule.next_rescan = later(now, RESCAN_EVERY);
    }
    schedule.work_left = false;
    if is_primary(ctx) {
        let budget = Budget::new(SLICE);
        if now >= schedule.next_check
            && sweep_memory::any_due(now_ms)
            && !era::in_takeover_grace(now_ms)
        {
            expire(ctx, now_ms);
            schedule.next_check = later(now, SWEEP_EVERY);
        }
        if sweep_memory::any_draining() {
            schedule.work_left = drain_pending(ctx, &budget);
            schedule.next_drain = later(now, SWEEP_EVERY);
        }
    }
    refresh_gauges(ctx, schedule);
}

/// Takes a census when the dataset changed and the last one is old enough.
fn refresh_gauges(ctx: &Context, schedule: &mut Schedule) {
    let now = Instant::now();
    if now >= schedule.next_gauges && sweep_memory::take_census_stale() {
        if !gauges::refresh(ctx) {
            sweep_memory::census_changed();
        }
        schedule.next_gauges = later(now, GAUGES_EVERY);
    }
}

/// Starts removing every node whose lease has expired by `now` (Unix ms), in every
/// partition that is due ([`sweep_memory`]); O(1) when none is.
fn expire(ctx: &Context, now: i64) {
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

    const MS: Duration = Duration::from_millis(1);
    const NOW_MS: i64 = 1_000_000;

    /// An idle primary: leases far away, nothing pending, census up to date.
    fn idle() -> Due {
        Due {
            primary: true,
            leases_at: i64::MAX,
            draining: false,
            census_stale: false,
        }
    }

    #[test]
    fn an_idle_server_sleeps_until_the_net() {
        let now = Instant::now();
        let s = Schedule::new(now);
        assert_eq!(s.sleep(&idle(), now, NOW_MS), RESCAN_EVERY);
        let replica = Due {
            primary: false,
            ..idle()
        };
        assert_eq!(s.sleep(&replica, now, NOW_MS), RESCAN_EVERY);
        // Never longer, even with a schedule from a later clock.
        let far = Schedule {
            next_rescan: later(now, RESCAN_EVERY * 3),
            ..s
        };
        assert_eq!(far.sleep(&idle(), now, NOW_MS), RESCAN_EVERY);
    }

    #[test]
    fn a_lease_is_checked_at_its_expiry_but_at_most_once_per_sweep_period() {
        let now = Instant::now();
        let s = Schedule::new(now);
        let due = Due {
            leases_at: NOW_MS + 300,
            ..idle()
        };
        assert_eq!(s.sleep(&due, now, NOW_MS), 300 * MS);
        // Already due, or unknown (a forgotten partition): at once.
        for at in [NOW_MS, NOW_MS - 5, i64::MIN] {
            let due = Due {
                leases_at: at,
                ..idle()
            };
            assert_eq!(s.sleep(&due, now, NOW_MS), Duration::ZERO, "{at}");
        }
        // Right after a check: not before the period is over.
        let checked = Schedule {
            next_check: later(now, 60 * MS),
            ..s
        };
        let due = Due {
            leases_at: i64::MIN,
            ..idle()
        };
        assert_eq!(checked.sleep(&due, now, NOW_MS), 60 * MS);
        // Only a primary expires leases.
        let replica = Due {
            primary: false,
            ..due
        };
        assert_eq!(s.sleep(&replica, now, NOW_MS), RESCAN_EVERY);
    }

    #[test]
    fn pending_removals_go_on_after_a_short_pause_and_are_confirmed_later() {
        let now = Instant::now();
        let draining = Due {
            draining: true,
            ..idle()
        };
        let passed = Schedule {
            next_drain: later(now, SWEEP_EVERY),
            ..Schedule::new(now)
        };
        assert_eq!(passed.sleep(&draining, now, NOW_MS), SWEEP_EVERY);
        let busy = Schedule {
            work_left: true,
            ..passed
        };
        assert_eq!(busy.sleep(&draining, now, NOW_MS), SLICE_PAUSE);
        // A removal started by a command: at once.
        assert_eq!(
            Schedule::new(now).sleep(&draining, now, NOW_MS),
            Duration::ZERO
        );
        // A slice must stay well under the 1 ms a command may take (RELIABILITY row 20),
        // and the pause must leave clients at least as much time as a slice takes.
        assert!(SLICE <= MS);
        assert!(SLICE_PAUSE >= SLICE && SLICE_PAUSE < SWEEP_EVERY);
    }

    #[test]
    fn a_census_waits_for_a_change_and_its_period() {
        let now = Instant::now();
        let stale = Due {
            census_stale: true,
            ..idle()
        };
        assert_eq!(
            Schedule::new(now).sleep(&stale, now, NOW_MS),
            Duration::ZERO
        );
        let counted = Schedule {
            next_gauges: later(now, 400 * MS),
            ..Schedule::new(now)
        };
        assert_eq!(counted.sleep(&stale, now, NOW_MS), 400 * MS);
        assert_eq!(counted.sleep(&idle(), now, NOW_MS), RESCAN_EVERY);
        // On a replica too.
        let replica = Due {
            primary: false,
            ..stale
        };
        assert_eq!(counted.sleep(&replica, now, NOW_MS), 400 * MS);
        // The net rescans rarely next to the checks, and never faster than gauges.
        assert!(RESCAN_EVERY >= GAUGES_EVERY && RESCAN_EVERY > SWEEP_EVERY * 10);
    }

    #[test]
    fn a_timer_never_fires_before_its_time() {
        assert_eq!(whole_ms(Duration::from_micros(9_999_700)), RESCAN_EVERY);
        assert_eq!(whole_ms(Duration::from_nanos(1)), MS);
        assert_eq!(whole_ms(Duration::ZERO), Duration::ZERO);
        assert_eq!(whole_ms(SLICE_PAUSE), SLICE_PAUSE);
    }

    #[test]
    fn wall_clock_times_far_off_never_overflow() {
        assert_eq!(
            ms_until(i64::MAX, i64::MIN),
            Duration::from_millis(i64::MAX as u64)
        );
        assert_eq!(ms_until(i64::MIN, i64::MAX), Duration::ZERO);
        assert_eq!(ms_until(NOW_MS + 7, NOW_MS), 7 * MS);
    }
}
