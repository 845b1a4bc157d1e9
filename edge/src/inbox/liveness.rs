//! The inbox reader's liveness probe.
//!
//! A reader can starve silently: its server was detached or demoted without closing the
//! connection, a network path drops packets without a reset, or the primary moved while
//! the subscription stays on the old one. Nothing errors; messages simply stop. So every
//! [`PROBE_EVERY`] the worker appends a `probe` entry to its own inbox with `RC.PROBE`
//! through the command connection — which always goes to the current primary; the
//! module appends it like any entry and pushes it — and the
//! reader reports each probe it receives back. When a probe stays unseen for [`STARVED_AFTER`]
//! while the reader read nothing else either, the reader is restarted: it drops its
//! connection, looks the primary up again and goes on from the last entry it read.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::context::Context;
use crate::metrics::WorkerMetrics;

/// How often a probe is appended.
pub const PROBE_EVERY: Duration = Duration::from_secs(1);
/// A probe unseen this long, with no other entry read meanwhile, means a starved reader.
pub const STARVED_AFTER: Duration = Duration::from_secs(3);
/// Probes remembered at most (older ones are forgotten: the reader is restarted well
/// before this many pile up).
const MAX_PENDING: usize = 64;

/// What the prober and the reader(s) of one worker share. Kept per inbox stream
/// (one on a standalone server, one per partition under Redis Cluster, where each shard
/// has its own reader that can starve alone).
pub struct Liveness {
    /// Per stream: probes appended and not read back yet, (number, when appended),
    /// oldest first.
    pending: RefCell<Vec<VecDeque<(u64, Instant)>>>,
    /// Per stream: when its reader last read any entry (a probe or not).
    progress: RefCell<Vec<Instant>>,
    /// When the readers were (re)started: the clock for streams not read from yet.
    started: Cell<Instant>,
    /// Wakes the reader(s) to drop their connections and start again.
    pub restart: Notify,
}

impl Default for Liveness {
    fn default() -> Self {
        Self {
            pending: RefCell::new(Vec::new()),
            progress: RefCell::new(Vec::new()),
            started: Cell::new(Instant::now()),
            restart: Notify::new(),
        }
    }
}

impl Liveness {
    /// Probe `n` was appended to stream `stream` at `at`.
    pub fn sent(&self, stream: usize, n: u64, at: Instant) {
        let mut pending = self.pending.borrow_mut();
        if pending.len() <= stream {
            pending.resize_with(stream + 1, VecDeque::new);
        }
        if let Some(queue) = pending.get_mut(stream) {
            if queue.len() >= MAX_PENDING {
                queue.pop_front();
            }
            queue.push_back((n, at));
        }
    }

    /// The reader read entries (probes or not) of stream `stream` at `at`: it is making
    /// progress there.
    pub fn progressed(&self, stream: usize, at: Instant) {
        let mut progress = self.progress.borrow_mut();
        if progress.len() <= stream {
            progress.resize(stream + 1, self.started.get());
        }
        if let Some(p) = progress.get_mut(stream) {
            *p = at;
        }
    }

    /// The reader read back a probe entry of stream `stream` whose data is `data` (its
    /// number): that probe and every earlier one of the stream arrived.
    pub fn probe_seen(&self, stream: usize, data: &[u8]) {
        let Some(n) = std::str::from_utf8(data)
            .ok()
            .and_then(|d| d.parse::<u64>().ok())
        else {
            return;
        };
        if let Some(queue) = self.pending.borrow_mut().get_mut(stream) {
            queue.retain(|(p, _)| *p > n);
        }
    }

    /// Whether a reader is starved at `now`: on some stream, the oldest unseen probe and
    /// the last entry read are both older than [`STARVED_AFTER`].
    pub fn starved(&self, now: Instant) -> bool {
        let progress = self.progress.borrow();
        self.pending
            .borrow()
            .iter()
            .enumerate()
            .any(|(stream, queue)| {
                let oldest = queue.front().map(|(_, at)| *at);
                let last_read = progress.get(stream).copied().unwrap_or(self.started.get());
                oldest.is_some_and(|at| now.saturating_duration_since(at) > STARVED_AFTER)
                    && now.saturating_duration_since(last_read) > STARVED_AFTER
            })
    }

    /// Forgets the pending probes (after a restart, a new reader starts the clock anew).
    pub fn reset(&self, now: Instant) {
        self.pending.borrow_mut().clear();
        self.progress.borrow_mut().clear();
        self.started.set(now);
    }
}

/// Appends probes and restarts a starved reader, until the task is aborted.
pub async fn run(ctx: Rc<Context>, liveness: Rc<Liveness>) {
    let partitions: Vec<u32> = (0..ctx.inbox_keys().len() as u32).collect();
    let mut ticker = tokio::time::interval(PROBE_EVERY);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut n: u64 = 0;
    liveness.reset(Instant::now());
    loop {
        ticker.tick().await;
        if ctx.is_draining() {
            return;
        }
        n += 1;
        let token = n.to_string();
        let at = Instant::now();
        if ctx.module.probe(&partitions, &token).await.is_ok() {
            for stream in 0..partitions.len() {
                liveness.sent(stream, n, at);
            }
        }
        let now = Instant::now();
        if liveness.starved(now) {
            tracing::warn!(
                node = %ctx.node(),
                "inbox reader received nothing, not even its probe, for 3 s; restarting it"
            );
            WorkerMetrics::inc(&ctx.metrics.reader_restarts);
            liveness.reset(now);
            liveness.restart.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reader_is_starved_only_when_probes_and_everything_else_stop() {
        let t0 = Instant::now();
        let s = |secs: u64| t0 + Duration::from_secs(secs);
        let l = Liveness::default();
        l.reset(t0);
        assert!(!l.starved(s(10)), "no probe sent: nothing to judge");
        l.sent(0, 1, s(1));
        l.sent(0, 2, s(2));
        assert!(!l.starved(s(3)));
        l.progressed(0, s(3));
        l.probe_seen(0, b"1");
        assert!(!l.starved(s(5)), "probe 2 is 3 s old, not more");
        assert!(!l.starved(s(6)), "something was read 3 s ago, not more");
        assert!(l.starved(s(7)), "probe 2 unseen and nothing read for > 3 s");
        // Other entries still flowing (a busy reader behind its backlog) is progress.
        l.progressed(0, s(7));
        assert!(!l.starved(s(9)));
        assert!(l.starved(s(11)));
        // Seeing a later probe clears the earlier ones.
        l.sent(0, 3, s(10));
        l.progressed(0, s(11));
        l.probe_seen(0, b"3");
        assert!(!l.starved(s(30)));
        l.sent(0, 4, s(30));
        l.reset(s(31));
        assert!(!l.starved(s(40)));
        // A garbled probe counts as progress only.
        l.sent(0, 5, s(40));
        l.progressed(0, s(41));
        l.probe_seen(0, b"x");
        assert!(l.starved(s(45)));
    }

    #[test]
    fn one_starved_stream_is_enough() {
        let t0 = Instant::now();
        let s = |secs: u64| t0 + Duration::from_secs(secs);
        let l = Liveness::default();
        l.reset(t0);
        for n in 1..=4 {
            l.sent(0, n, s(n));
            l.sent(1, n, s(n));
            // Stream 0's reader sees every probe; stream 1's (another shard) none.
            l.progressed(0, s(n));
            l.probe_seen(0, n.to_string().as_bytes());
        }
        assert!(!l.starved(s(4)), "stream 1's probe 1 is only 3 s old");
        assert!(
            l.starved(s(5)),
            "stream 1 starved although stream 0 reads on"
        );
        l.reset(s(5));
        assert!(!l.starved(s(20)));
    }
}
