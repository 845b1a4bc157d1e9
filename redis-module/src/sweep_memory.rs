//! What the lease sweep and the gauges remember between timer ticks, so that a tick
//! with nothing due reads no key and the timer sleeps until something is due.
//!
//! Per partition the module keeps a *lower bound* of the earliest lease expiry and
//! whether a node removal may be pending there; for the gauges, whether the dataset may
//! have changed since the last census. A tick reads a partition's keys only when its
//! bound has passed (the scan then finds the true earliest expiry), when a removal may
//! be pending, or when the memory was forgotten. Forgetting is always safe (it costs one
//! scan), so the rule is: whatever may have added or shortened a lease, or listed a
//! removal, without going through the module's lease path, forgets.
//!
//! The sweep arms its timer for the earliest time this memory (and its own schedule)
//! makes something due ([`outlook`]), so every change that may make something due
//! sooner also tells the sweep, which re-arms its timer earlier (the call [`init`] is
//! handed; see [`crate::sweep`]'s module docs):
//!
//! - `RC.NODE.LEASE` lowers the bound to the expiry it wrote ([`lease_write`]), and
//!   tells the sweep when that is the earliest bound known; a renewal only lengthens a
//!   lease, so the bound stays valid and the next scan raises it. A node new to a
//!   partition marks the census stale ([`dataset_changed`]).
//! - Starting a removal marks the partition as draining ([`removal_started`]); its
//!   `SADD` to `{T}:draining` has already forgotten the partition and told the sweep.
//! - Any keyspace event on a partition's `{T}:nodes` or `{T}:draining` key that the
//!   lease path did not cause forgets that partition and tells the sweep
//!   ([`on_keyspace_event`]): writes by other clients or scripts, by the module's own
//!   removals, and the primary's stream on a replica. The module listens to hash and
//!   set events (`HSET`, `HINCRBY`, `SADD`, …) and to key creation (`new`: also
//!   `RENAME`, `RESTORE`, `COPY`, `MOVE` onto the key), which covers every way to add or
//!   shorten a lease or list a removal; deletions cannot make a lease expire sooner.
//!   Not generic events: `expire` fires on the publish path with history, and this
//!   callback should cost nothing there. Any other event marks the census stale, and
//!   the first one after a census tells the sweep.
//! - Module load, every role change (a promoted replica), an RDB/AOF load or full
//!   resync, and `FLUSHALL`/`FLUSHDB` forget everything ([`forget_all`]) and tell the
//!   sweep.
//! - As a net for changes no event reports (`SWAPDB`, another module's low-level
//!   writes), the sweep forgets everything every [`crate::sweep::RESCAN_EVERY`].
//!
//! # Layout
//!
//! - [`Memory`]: the pure bookkeeping, unit-tested.
//! - The process-wide instance and its accessors ([`init`], [`outlook`], [`due`],
//!   [`scanned`], …).
//! - The event handlers that forget and tell the sweep ([`on_keyspace_event`], loading,
//!   flush, role).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock, PoisonError, TryLockError};

use redis_module::server_events::{FlushSubevent, LoadingSubevent, ServerRole};
use redis_module::{Context, NotifyEvent};
use redis_module_macros::{flush_event_handler, loading_event_handler, role_changed_event_handler};

use crate::state::layout;

/// A partition whose earliest expiry is unknown: due at any time.
const UNKNOWN: i64 = i64::MIN;
/// A partition without leases: never due.
const NONE: i64 = i64::MAX;

/// The sweep's memory of every partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Memory {
    /// Per partition: a lower bound of its earliest lease expiry (Unix ms), [`NONE`]
    /// when it holds no lease, [`UNKNOWN`] when it must be scanned.
    earliest: Vec<i64>,
    /// The least of `earliest`: no partition is due before it.
    next_due: i64,
    /// Per partition: a removal may be pending (`{T}:draining` may hold nodes).
    draining: Vec<bool>,
    /// How many of `draining` are true.
    draining_count: usize,
}

impl Memory {
    /// Knows nothing: every partition is due and may be draining.
    pub fn unknown(partitions: usize) -> Self {
        Self {
            earliest: vec![UNKNOWN; partitions],
            next_due: UNKNOWN,
            draining: vec![true; partitions],
            draining_count: partitions,
        }
    }

    /// Forgets everything (a load, a role change, a flush, the periodic net).
    pub fn forget_all(&mut self) {
        *self = Self::unknown(self.earliest.len());
    }

    /// Forgets partition `p`: its leases or removals changed in an unknown way.
    pub fn forget(&mut self, p: usize) {
        if let Some(at) = self.earliest.get_mut(p) {
            *at = UNKNOWN;
            self.next_due = UNKNOWN;
        }
        self.removal_started(p);
    }

    /// A lease in partition `p` now expires at `expires_ms`; true when that brought
    /// [`Memory::next_due`] earlier (the sweep's timer may have to fire sooner).
    pub fn leased(&mut self, p: usize, expires_ms: i64) -> bool {
        let Some(at) = self.earliest.get_mut(p) else {
            return false;
        };
        *at = (*at).min(expires_ms);
        let sooner = expires_ms < self.next_due;
        self.next_due = self.next_due.min(expires_ms);
        sooner
    }

    /// A scan of partition `p` found `earliest` as its earliest remaining expiry
    /// (`None`: no lease left).
    pub fn scanned(&mut self, p: usize, earliest: Option<i64>) {
        if let Some(at) = self.earliest.get_mut(p) {
            *at = earliest.unwrap_or(NONE);
            self.next_due = self.earliest.iter().copied().min().unwrap_or(NONE);
        }
    }

    /// Whether any partition is due at `now_ms`: O(1).
    pub fn any_due(&self, now_ms: i64) -> bool {
        self.next_due <= now_ms
    }

    /// Unix ms before which no partition is due (`i64::MIN` when one is unknown,
    /// `i64::MAX` when no partition holds a lease).
    pub fn next_due(&self) -> i64 {
        self.next_due
    }

    /// Whether partition `p` must be scanned at `now_ms`.
    pub fn is_due(&self, p: usize, now_ms: i64) -> bool {
        self.earliest.get(p).is_some_and(|&at| at <= now_ms)
    }

    /// The partitions to scan at `now_ms`: none, without allocating, in O(1) when no
    /// partition is due.
    pub fn due(&self, now_ms: i64) -> Vec<usize> {
        if !self.any_due(now_ms) {
            return Vec::new();
        }
        (0..self.earliest.len())
            .filter(|&p| self.is_due(p, now_ms))
            .collect()
    }

    /// A removal started in partition `p`.
    pub fn removal_started(&mut self, p: usize) {
        if let Some(draining) = self.draining.get_mut(p) {
            if !*draining {
                *draining = true;
                self.draining_count += 1;
            }
        }
    }

    /// Partition `p` was found with no removal pending.
    pub fn drained(&mut self, p: usize) {
        if let Some(draining) = self.draining.get_mut(p) {
            if *draining {
                *draining = false;
                self.draining_count = self.draining_count.saturating_sub(1);
            }
        }
    }

    /// Whether a removal may be pending in partition `p`.
    pub fn may_drain(&self, p: usize) -> bool {
        self.draining.get(p).copied().unwrap_or(false)
    }

    /// Whether a removal may be pending in any partition: O(1).
    pub fn any_draining(&self) -> bool {
        self.draining_count > 0
    }

    /// The partitions where a removal may be pending: none, without allocating, in
    /// O(1) when no removal is.
    pub fn draining(&self) -> Vec<usize> {
        if self.draining_count == 0 {
            return Vec::new();
        }
        (0..self.draining.len())
            .filter(|&p| self.may_drain(p))
            .collect()
    }
}

/// The process-wide memory (`None` until [`init`]). Locked only for bookkeeping, never
/// across a Redis call: a write inside one would fire [`on_keyspace_event`] on the same
/// thread, which only `try_lock`s (see [`FORGET_ALL`]).
static MEMORY: Mutex<Option<Memory>> = Mutex::new(None);
/// Set when an event could not take the lock: the next access forgets everything.
static FORGET_ALL: AtomicBool = AtomicBool::new(false);
/// Set while the lease path writes `{T}:nodes` itself (its events must not forget).
static OWN_WRITE: AtomicBool = AtomicBool::new(false);
/// The dataset may have changed since the last census.
static CENSUS_STALE: AtomicBool = AtomicBool::new(true);
/// The sweep's "something may be due sooner" call, handed over by [`init`]: this
/// module sits above the sweep and cannot name it. Called with the context of the
/// command or event that changed the memory, so the sweep re-arms its timer earlier.
static SOONER: OnceLock<fn(&Context)> = OnceLock::new();

fn lock() -> MutexGuard<'static, Option<Memory>> {
    MEMORY.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Runs `f` on the memory (after applying a pending forget-all); `None` before [`init`].
fn with<R>(f: impl FnOnce(&mut Memory) -> R) -> Option<R> {
    apply(lock().as_mut(), f)
}

/// Like [`with`] but never waits: `None` also while the memory is locked (for the
/// event paths, which may run inside a Redis call).
fn try_with<R>(f: impl FnOnce(&mut Memory) -> R) -> Option<R> {
    match MEMORY.try_lock() {
        Ok(mut guard) => apply(guard.as_mut(), f),
        Err(TryLockError::Poisoned(e)) => apply(e.into_inner().as_mut(), f),
        Err(TryLockError::WouldBlock) => None,
    }
}

fn apply<R>(memory: Option<&mut Memory>, f: impl FnOnce(&mut Memory) -> R) -> Option<R> {
    let memory = memory?;
    if FORGET_ALL.swap(false, Ordering::Relaxed) {
        memory.forget_all();
    }
    Some(f(memory))
}

/// Tells the sweep that something may be due sooner than its timer is armed for.
fn sooner(ctx: &Context) {
    if let Some(sooner) = SOONER.get() {
        sooner(ctx);
    }
}

/// Creates the memory, knowing nothing (at module load); `sooner` is the sweep's call
/// for a change that may make something due sooner.
pub fn init(partitions: usize, sooner: fn(&Context)) {
    *lock() = Some(Memory::unknown(partitions));
    CENSUS_STALE.store(true, Ordering::Relaxed);
    // Set once per process; a second init keeps the same sweep.
    let _ = SOONER.set(sooner);
}

/// Forgets everything and marks the census stale.
pub fn forget_all() {
    with(Memory::forget_all);
    CENSUS_STALE.store(true, Ordering::Relaxed);
}

/// What the memory says is due, for the sweep's timer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outlook {
    /// Unix ms before which no lease is due ([`Memory::next_due`]; `i64::MIN` before
    /// [`init`]).
    pub next_due: i64,
    /// A removal may be pending somewhere.
    pub draining: bool,
    /// The dataset may have changed since the last census.
    pub census_stale: bool,
}

/// See [`Outlook`]: O(1). Safe from any event callback; when the memory cannot be
/// read (before [`init`], or locked) everything counts as due.
pub fn outlook() -> Outlook {
    let (next_due, draining) =
        try_with(|m| (m.next_due(), m.any_draining())).unwrap_or((UNKNOWN, true));
    Outlook {
        next_due,
        draining,
        census_stale: CENSUS_STALE.load(Ordering::Relaxed),
    }
}

/// Whether any partition is due at `now_ms` (true before [`init`]): O(1).
pub fn any_due(now_ms: i64) -> bool {
    with(|m| m.any_due(now_ms)).unwrap_or(true)
}

/// The partitions to scan at `now_ms` (none before [`init`]): see [`Memory::due`].
pub fn due(now_ms: i64) -> Vec<usize> {
    with(|m| m.due(now_ms)).unwrap_or_default()
}

/// See [`Memory::scanned`].
pub fn scanned(p: usize, earliest: Option<i64>) {
    with(|m| m.scanned(p, earliest));
}

/// Whether a removal may be pending anywhere (false before [`init`]): O(1).
pub fn any_draining() -> bool {
    with(|m| m.any_draining()).unwrap_or(false)
}

/// The partitions where a removal may be pending (none before [`init`]): see
/// [`Memory::draining`].
pub fn draining() -> Vec<usize> {
    with(|m| m.draining()).unwrap_or_default()
}

/// See [`Memory::drained`].
pub fn drained(p: usize) {
    with(|m| m.drained(p));
}

/// A removal started in the partition whose keys start with `prefix` (`{T}`). Its
/// `SADD` to `{T}:draining` already woke the sweep ([`on_keyspace_event`]).
pub fn removal_started(prefix: &str) {
    if let Some(p) = partition_of_prefix(prefix.as_bytes()) {
        with(|m| m.removal_started(p));
    }
}

/// Runs the lease path's own write of partition `p`'s lease, expiring at `expires_ms`:
/// the events it may fire do not forget, the memory learns the expiry, and the sweep
/// is told when that expiry is the earliest it knows of.
pub fn lease_write<R>(ctx: &Context, p: usize, expires_ms: i64, write: impl FnOnce() -> R) -> R {
    let was = OWN_WRITE.swap(true, Ordering::Relaxed);
    let result = write();
    OWN_WRITE.store(was, Ordering::Relaxed);
    if with(|m| m.leased(p, expires_ms)) == Some(true) {
        sooner(ctx);
    }
    result
}

/// The dataset changed in a way no keyspace event reported (a node new to a
/// partition's existing lease table): the census must count it, and the sweep is told
/// when the census was up to date.
pub fn dataset_changed(ctx: &Context) {
    if !CENSUS_STALE.swap(true, Ordering::Relaxed) {
        sooner(ctx);
    }
}

/// A census failed: it must be taken again (the sweep's own tick, which re-arms itself).
pub fn census_changed() {
    CENSUS_STALE.store(true, Ordering::Relaxed);
}

/// Whether a census is needed; clears the flag (the caller sets it again on failure
/// with [`census_changed`]).
pub fn take_census_stale() -> bool {
    CENSUS_STALE.swap(false, Ordering::Relaxed)
}

/// The partition whose keys start with `prefix` (`{T}`).
fn partition_of_prefix(prefix: &[u8]) -> Option<usize> {
    let layout = layout().ok()?;
    layout
        .keys
        .iter()
        .position(|keys| keys.prefix().as_bytes() == prefix)
}

/// The `{T}` prefix of `key` when it is a partition's lease table or draining list
/// (`{T}:nodes`, `{T}:draining`), else `None`. Cheap: runs on every hash and set
/// write and every key creation.
pub fn lease_key_prefix(key: &[u8]) -> Option<&[u8]> {
    if key.first() != Some(&b'{') {
        return None;
    }
    let close = key.iter().position(|&b| b == b'}')?;
    let (prefix, rest) = key.split_at(close.checked_add(1)?);
    matches!(rest, b":nodes" | b":draining").then_some(prefix)
}

/// Keyspace events (hash, set, key creation; from every client, script, the module's own
/// `RM_Call` writes and, on a replica, the primary's stream): any event marks the
/// census stale, and one on a lease table or draining list forgets its partition —
/// unless the lease path is writing it. The sweep is told when the census was up to
/// date or a partition was forgotten; otherwise the event costs two atomic operations
/// and a look at the key's name. Never writes (Redis forbids it here); the sweep only
/// re-arms its timer.
pub fn on_keyspace_event(ctx: &Context, _kind: NotifyEvent, _event: &str, key: &[u8]) {
    if OWN_WRITE.load(Ordering::Relaxed) {
        // The lease path tells the memory and the census itself ([`lease_write`],
        // [`dataset_changed`]).
        return;
    }
    let was_stale = CENSUS_STALE.swap(true, Ordering::Relaxed);
    let Some(prefix) = lease_key_prefix(key) else {
        if !was_stale {
            sooner(ctx);
        }
        return;
    };
    let partition = partition_of_prefix(prefix);
    match MEMORY.try_lock() {
        Ok(mut guard) => forget_in(guard.as_mut(), partition),
        Err(TryLockError::Poisoned(e)) => forget_in(e.into_inner().as_mut(), partition),
        Err(TryLockError::WouldBlock) => FORGET_ALL.store(true, Ordering::Relaxed),
    }
    sooner(ctx);
}

/// Forgets `partition` (everything when the prefix names none of ours).
fn forget_in(memory: Option<&mut Memory>, partition: Option<usize>) {
    if let Some(memory) = memory {
        match partition {
            Some(p) => memory.forget(p),
            None => memory.forget_all(),
        }
    }
}

/// Forgets everything and tells the sweep (which decides, for this server's new role or
/// state, what is due).
fn forget_all_and_wake(ctx: &Context) {
    forget_all();
    sooner(ctx);
}

/// A new role (a replica promoted, a primary demoted): the leases it knows may be
/// another primary's.
#[role_changed_event_handler]
fn forget_on_role_change(ctx: &Context, _role: ServerRole) {
    forget_all_and_wake(ctx);
}

/// An RDB or AOF load, or a full resync from a primary, replaced the dataset.
#[loading_event_handler]
fn forget_on_loading(ctx: &Context, _event: LoadingSubevent) {
    forget_all_and_wake(ctx);
}

/// `FLUSHALL`/`FLUSHDB` emptied the dataset.
#[flush_event_handler]
fn forget_on_flush(ctx: &Context, _event: FlushSubevent) {
    forget_all_and_wake(ctx);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_memory_is_due_and_may_drain_everywhere() {
        let m = Memory::unknown(4);
        assert!(m.any_due(i64::MIN));
        assert!((0..4).all(|p| m.is_due(p, 0) && m.may_drain(p)));
        assert!(!m.is_due(4, 0) && !m.may_drain(4));
    }

    #[test]
    fn a_scanned_partition_is_due_only_when_its_earliest_lease_expires() {
        let mut m = Memory::unknown(2);
        m.scanned(0, Some(1_000));
        assert!(m.any_due(0), "partition 1 is still unknown");
        m.scanned(1, None);
        assert!(!m.any_due(999) && m.due(999).is_empty());
        assert_eq!(m.due(1_000), [0]);
        assert!(m.any_due(1_000) && m.is_due(0, 1_000) && !m.is_due(1, i64::MAX - 1));
    }

    #[test]
    fn a_lease_lowers_the_bound_and_a_renewal_never_raises_it() {
        let mut m = Memory::unknown(2);
        m.scanned(0, None);
        m.scanned(1, None);
        // The earliest expiry known: the sweep is told.
        assert!(m.leased(1, 500));
        assert!(!m.any_due(499) && m.any_due(500) && m.is_due(1, 500));
        assert_eq!(m.next_due(), 500);
        // A renewal lengthens the lease: the bound stays until a scan raises it, and
        // the sweep need not hear of it.
        assert!(!m.leased(1, 900));
        assert!(m.is_due(1, 500));
        m.scanned(1, Some(900));
        assert!(!m.any_due(899));
        assert_eq!(m.next_due(), 900);
        // A shorter lease (another node) lowers it at once.
        assert!(m.leased(0, 100));
        assert!(m.any_due(100) && m.is_due(0, 100));
        // A partition that does not exist changes nothing.
        assert!(!m.leased(2, 1));
    }

    #[test]
    fn forgetting_makes_a_partition_due_and_draining_again() {
        let mut m = Memory::unknown(3);
        for p in 0..3 {
            m.scanned(p, Some(10_000));
            m.drained(p);
        }
        m.forget(1);
        assert!(m.any_due(0) && m.is_due(1, 0) && !m.is_due(0, 0));
        assert!(m.may_drain(1) && !m.may_drain(0));
        assert_eq!(m.draining(), [1]);
        assert_eq!(m.due(0), [1]);
        // A lease on an unknown partition keeps it unknown.
        assert!(!m.leased(1, 20_000));
        assert!(m.is_due(1, 0) && m.next_due() == UNKNOWN);
        m.forget_all();
        assert_eq!(m, Memory::unknown(3));
    }

    #[test]
    fn removals_are_remembered_until_a_partition_is_found_drained() {
        let mut m = Memory::unknown(2);
        m.drained(0);
        m.drained(1);
        m.removal_started(1);
        assert!(!m.may_drain(0) && m.may_drain(1) && m.any_draining());
        m.removal_started(1);
        assert_eq!(m.draining(), [1]);
        m.drained(1);
        m.drained(1);
        assert!(!m.may_drain(1) && m.draining().is_empty() && !m.any_draining());
        assert_eq!(m.draining_count, 0);
    }

    #[test]
    fn only_lease_tables_and_draining_lists_are_lease_keys() {
        assert_eq!(lease_key_prefix(b"{ab}:nodes"), Some(&b"{ab}"[..]));
        assert_eq!(lease_key_prefix(b"{0}:draining"), Some(&b"{0}"[..]));
        for other in [
            &b"{ab}:room:x:nodes"[..],
            b"{ab}:node:n1:users",
            b"{ab}:nodes:x",
            b"ab:nodes",
            b"{ab:nodes",
            b"",
            b"}:nodes",
        ] {
            assert_eq!(lease_key_prefix(other), None, "{other:?}");
        }
    }
}
