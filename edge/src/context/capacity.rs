//! The process-wide cap on open WebSocket connections (`--max-conns`).
//!
//! Every socket costs a file descriptor and memory; past the open-file limit `accept`
//! fails with EMFILE and the edge could no longer even answer `/healthz`. So the edge
//! counts its WebSocket connections, all workers together, and refuses upgrades past
//! the cap with 503 — an exact count, because a slot is taken with one atomic add that
//! is undone when it overshoots. The slot is a guard: dropping it, however the
//! connection ends, gives the place back.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Open connections and the cap, shared by every worker.
#[derive(Debug)]
pub struct Capacity {
    /// Connections holding a slot now.
    open: AtomicUsize,
    /// Most slots that may be held at once.
    cap: usize,
}

/// One held place under the cap; released when dropped.
#[derive(Debug)]
pub struct Slot {
    /// The capacity it belongs to.
    capacity: Arc<Capacity>,
}

impl Capacity {
    /// No connection open yet, at most `cap` at once.
    pub fn new(cap: usize) -> Arc<Self> {
        Arc::new(Self {
            open: AtomicUsize::new(0),
            cap,
        })
    }

    /// Takes a slot, or `None` when all `cap` are held.
    pub fn try_acquire(self: &Arc<Self>) -> Option<Slot> {
        // AcqRel is more than the count needs; Relaxed would do, but this is not hot.
        let before = self.open.fetch_add(1, Ordering::AcqRel);
        if before >= self.cap {
            self.open.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(Slot {
            capacity: self.clone(),
        })
    }

    /// Connections holding a slot now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// The cap.
    pub fn cap(&self) -> usize {
        self.cap
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.capacity.open.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exactly_cap_slots_are_handed_out_and_dropping_one_frees_it() {
        let capacity = Capacity::new(3);
        let slots: Vec<_> = (0..5).filter_map(|_| capacity.try_acquire()).collect();
        assert_eq!(slots.len(), 3);
        assert_eq!(capacity.open(), 3);
        assert!(capacity.try_acquire().is_none());
        drop(slots);
        assert_eq!(capacity.open(), 0);
        assert!(capacity.try_acquire().is_some());
    }

    #[test]
    fn threads_racing_for_slots_never_exceed_the_cap() {
        let capacity = Capacity::new(100);
        let held: Vec<Vec<Slot>> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..8)
                .map(|_| {
                    let capacity = &capacity;
                    scope.spawn(move || (0..50).filter_map(|_| capacity.try_acquire()).collect())
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_default())
                .collect()
        });
        assert_eq!(held.iter().map(Vec::len).sum::<usize>(), 100);
        assert_eq!(capacity.open(), 100);
    }
}
