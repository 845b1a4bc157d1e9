//! A connection's bounded send queue and its writer.
//!
//! Fan-out pushes shared, already-encoded frames (`Bytes`) into the queue; the writer
//! task wakes once, copies everything queued into one buffer and sends it with one
//! write — a batch costs one syscall, not one per frame.
//!
//! Slow consumers: fan-out works in *rounds* (one inbox read, cut into chunks of bounded
//! size, with a yield between chunks so writers run). A connection whose queue still
//! holds more than its limit of bytes from an *earlier* round — its writer had the chance
//! to take them and could not, because the socket is full — has fallen too far behind:
//! its queue is dropped and it is closed with 1008 "slow consumer". A hard cap (limit +
//! [`ROUND_SLACK`]) bounds memory within a single round. A burst that a healthy client
//! absorbs never trips it; one stalled reader never grows memory or slows the others.
//!
//! Closing never waits on the peer for long: once a close is requested (slow consumer,
//! ping timeout, protocol error, …), a write still blocked [`CLOSE_GRACE`] later — the
//! peer stopped reading and its socket buffer is full — is abandoned and the writer
//! stops, so the connection ends and its memory, file descriptor and presence go.
//!
//! Answers owed are answered first: a request already sent to Redis (a publish the
//! module may have routed) holds an [`Owed`] until its answer is queued, and a close
//! requested meanwhile (a kick, a ban, a drain) waits for those answers, at most
//! [`CLOSE_GRACE`], before its close frame, so a client is never told "closed" while a
//! message it sent was delivered unacknowledged. A slow consumer is closed at once.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::Notify;

use crate::ws::frame::{self, close};

/// What happened to a pushed frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    /// Queued for sending.
    Queued,
    /// The connection is closing or closed; the frame was dropped.
    Dropped,
    /// The queue was over its limit: the connection is now closing as a slow consumer.
    SlowConsumer,
}

/// Bytes one fan-out round may add to a queue beyond its limit before the hard cap.
pub const ROUND_SLACK: usize = 1 << 20;

/// How long a write may stay blocked after a close was requested before the writer
/// gives up on the peer (the role of Centrifugo's 1 s write timeout).
pub const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Queue state.
struct Queue {
    /// Frames waiting to be written, in order.
    frames: VecDeque<Bytes>,
    /// Sum of their lengths.
    bytes: usize,
    /// Fan-out round in which the oldest queued frame was pushed.
    oldest_round: u64,
    /// Set once a close was requested: (code, reason). Nothing is queued after it but
    /// the answers owed (see [`Outbox::push_answer`]).
    closing: Option<(u16, String)>,
    /// The close waits for the answers owed (every close but a slow consumer's).
    answers_first: bool,
    /// The writer has finished (socket closed or close frame sent).
    done: bool,
}

/// One connection's outgoing side.
pub struct Outbox {
    /// The queue (single-threaded worker: a RefCell, never held across an await).
    queue: RefCell<Queue>,
    /// Wakes the writer.
    wake: Notify,
    /// Wakes whoever waits for the writer to finish.
    finished: Notify,
    /// Wakes the writer's close-grace timer when a close is requested.
    close_requested: Notify,
    /// Set when the writer gave up on a peer that stopped reading (see [`CLOSE_GRACE`]).
    abandoned: Cell<bool>,
    /// Answers the session still owes for requests already sent on (see [`Owed`]).
    owed: Cell<usize>,
    /// Most bytes that may wait in the queue.
    limit: usize,
}

impl Outbox {
    /// An empty outbox holding at most `limit` bytes.
    pub fn new(limit: usize) -> Self {
        Self {
            queue: RefCell::new(Queue {
                frames: VecDeque::new(),
                bytes: 0,
                oldest_round: 0,
                closing: None,
                answers_first: false,
                done: false,
            }),
            wake: Notify::new(),
            finished: Notify::new(),
            close_requested: Notify::new(),
            abandoned: Cell::new(false),
            owed: Cell::new(0),
            limit,
        }
    }

    /// Queues a frame during fan-out round `round`.
    pub fn push(&self, frame: Bytes, round: u64) -> Pushed {
        self.queue_frame(frame, round, false)
    }

    /// Queues the answer to a request: like [`Outbox::push`], and also while a close
    /// waits for the answers owed.
    pub fn push_answer(&self, frame: Bytes, round: u64) -> Pushed {
        self.queue_frame(frame, round, true)
    }

    /// A request was sent on: its answer is owed until the returned [`Owed`] is dropped
    /// (after the answer is queued, or when it will never come).
    pub fn owe_answer(self: &Rc<Self>) -> Owed {
        self.owed.set(self.owed.get() + 1);
        Owed(self.clone())
    }

    /// True while a close waits for answers owed: answers may still be queued.
    fn awaits_answers(&self, q: &Queue) -> bool {
        q.answers_first && self.owed.get() > 0
    }

    fn queue_frame(&self, frame: Bytes, round: u64, answer: bool) -> Pushed {
        let mut q = self.queue.borrow_mut();
        let open = q.closing.is_none() || (answer && self.awaits_answers(&q));
        if !open || q.done {
            return Pushed::Dropped;
        }
        let behind = q.bytes > self.limit && q.oldest_round < round;
        let over_cap = q.bytes + frame.len() > self.limit.saturating_add(ROUND_SLACK);
        if behind || over_cap {
            q.frames.clear();
            q.bytes = 0;
            q.closing = Some((close::POLICY, "slow consumer".to_string()));
            q.answers_first = false;
            drop(q);
            self.wake.notify_one();
            self.close_requested.notify_waiters();
            return Pushed::SlowConsumer;
        }
        if q.frames.is_empty() {
            q.oldest_round = round;
        }
        q.bytes += frame.len();
        q.frames.push_back(frame);
        drop(q);
        self.wake.notify_one();
        Pushed::Queued
    }

    /// Asks the writer to send what is queued and the answers owed (within
    /// [`CLOSE_GRACE`]), then a close frame, then stop. The first close request wins.
    pub fn close(&self, code: u16, reason: &str) {
        let mut q = self.queue.borrow_mut();
        if q.closing.is_none() && !q.done {
            q.closing = Some((code, reason.to_string()));
            q.answers_first = true;
        }
        drop(q);
        self.wake.notify_one();
        self.close_requested.notify_waiters();
    }

    /// True if the writer stopped because the peer did not take its bytes within
    /// [`CLOSE_GRACE`] of a close: no close frame reached it, and no answer will come.
    pub fn abandoned(&self) -> bool {
        self.abandoned.get()
    }

    /// Resolves [`CLOSE_GRACE`] after a close is requested (counting from now if one
    /// already was); pending until then.
    async fn close_grace_over(&self) {
        loop {
            let notified = self.close_requested.notified();
            if self.queue.borrow().closing.is_some() {
                break;
            }
            notified.await;
        }
        tokio::time::sleep(CLOSE_GRACE).await;
    }

    /// True once a close was requested or the writer stopped.
    pub fn is_closing(&self) -> bool {
        let q = self.queue.borrow();
        q.closing.is_some() || q.done
    }

    /// The close requested (code, reason), if any: ours, or the peer's echoed back.
    pub fn close_status(&self) -> Option<(u16, String)> {
        self.queue.borrow().closing.clone()
    }

    /// Waits until the writer has stopped.
    pub async fn finished(&self) {
        loop {
            let notified = self.finished.notified();
            if self.queue.borrow().done {
                return;
            }
            notified.await;
        }
    }

    /// The writer: runs until the close frame is sent or the socket fails.
    pub async fn run_writer<W: AsyncWrite + Unpin>(&self, mut sink: W) {
        // Allocated on first use and shrunk after large batches, so an idle
        // connection holds no write buffer.
        let mut buf = BytesMut::new();
        // Until when a close waits for the answers owed (set when it starts waiting).
        let mut answers_until: Option<tokio::time::Instant> = None;
        loop {
            let notified = self.wake.notified();
            let (closing, awaiting) = {
                let mut q = self.queue.borrow_mut();
                // Taken, not drained: the queue's storage goes with the frames.
                for f in std::mem::take(&mut q.frames) {
                    buf.extend_from_slice(&f);
                }
                q.bytes = 0;
                let awaiting = self.awaits_answers(&q)
                    && answers_until.is_none_or(|at| tokio::time::Instant::now() < at);
                if !awaiting {
                    // Answers that come later are not queued.
                    q.answers_first = false;
                }
                (q.closing.clone().filter(|_| !awaiting), awaiting)
            };
            if let Some((code, reason)) = &closing {
                buf.extend_from_slice(&frame::close_frame(*code, reason));
            }
            if !buf.is_empty() {
                let ok = tokio::select! {
                    written = sink.write_all(&buf) => written.is_ok(),
                    () = self.close_grace_over() => {
                        // The peer stopped reading and a close is due: stop here.
                        self.abandoned.set(true);
                        false
                    }
                };
                // Released after every batch, so an idle connection holds no write buffer.
                buf = BytesMut::new();
                if !ok {
                    break;
                }
            }
            if closing.is_some() {
                // FIN after the close frame; the reader drains what the peer still sends.
                let _ = sink.shutdown().await;
                break;
            }
            if awaiting {
                let until =
                    *answers_until.get_or_insert_with(|| tokio::time::Instant::now() + CLOSE_GRACE);
                let _ = tokio::time::timeout_at(until, notified).await;
            } else {
                notified.await;
            }
        }
        let mut q = self.queue.borrow_mut();
        q.done = true;
        q.frames.clear();
        q.bytes = 0;
        drop(q);
        self.finished.notify_waiters();
    }
}

/// An answer owed to the client (see [`Outbox::owe_answer`]); dropping it settles it.
pub struct Owed(Rc<Outbox>);

impl Drop for Owed {
    fn drop(&mut self) {
        let owed = self.0.owed.get().saturating_sub(1);
        self.0.owed.set(owed);
        if owed == 0 {
            // A close may be waiting for this one.
            self.0.wake.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "current_thread")]
    async fn batches_frames_into_one_write_then_closes() {
        let outbox = Outbox::new(1024);
        assert_eq!(outbox.push(Bytes::from_static(b"a"), 0), Pushed::Queued);
        assert_eq!(outbox.push(Bytes::from_static(b"b"), 0), Pushed::Queued);
        outbox.close(1000, "bye");
        assert_eq!(outbox.push(Bytes::from_static(b"c"), 0), Pushed::Dropped);
        let mut out = Vec::new();
        outbox.run_writer(&mut out).await;
        assert_eq!(&out[..2], b"ab");
        assert_eq!(&out[2..], frame::close_frame(1000, "bye").as_ref());
        outbox.finished().await;
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_burst_within_one_round_is_absorbed() {
        let outbox = Outbox::new(10);
        for _ in 0..100 {
            assert_eq!(outbox.push(Bytes::from(vec![0; 8]), 1), Pushed::Queued);
        }
        // The writer takes everything; the next round starts from an empty queue.
        outbox.close(1000, "");
        let mut out = Vec::new();
        outbox.run_writer(&mut out).await;
        assert_eq!(out.len(), 800 + 4);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_write_blocked_on_a_peer_that_stopped_reading_is_abandoned_after_a_close() {
        let outbox = Outbox::new(1 << 20);
        // A peer that never reads: the pipe takes 64 bytes, then every write blocks.
        let (sink, _peer) = tokio::io::duplex(64);
        assert_eq!(outbox.push(Bytes::from(vec![0; 4096]), 0), Pushed::Queued);
        let started = std::time::Instant::now();
        let close_later = async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            outbox.close(close::POLICY, "ping timeout");
        };
        tokio::join!(outbox.run_writer(sink), close_later);
        outbox.finished().await;
        let waited = started.elapsed();
        assert!(outbox.abandoned());
        assert!(
            waited >= CLOSE_GRACE && waited < CLOSE_GRACE + Duration::from_millis(600),
            "{waited:?}"
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_queue_left_over_the_limit_from_an_earlier_round_is_a_slow_consumer() {
        let outbox = Outbox::new(10);
        assert_eq!(outbox.push(Bytes::from(vec![0; 8]), 1), Pushed::Queued);
        assert_eq!(outbox.push(Bytes::from(vec![0; 8]), 1), Pushed::Queued);
        // Round 2 finds 16 bytes (> 10) still queued from round 1.
        assert_eq!(
            outbox.push(Bytes::from(vec![0; 8]), 2),
            Pushed::SlowConsumer
        );
        assert!(outbox.is_closing());
        let mut out = Vec::new();
        outbox.run_writer(&mut out).await;
        assert_eq!(
            out,
            frame::close_frame(close::POLICY, "slow consumer").as_ref()
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_close_sends_the_answers_owed_before_its_close_frame() {
        let outbox = Rc::new(Outbox::new(1024));
        let owed = outbox.owe_answer();
        outbox.close(close::POLICY, "kicked");
        assert!(outbox.is_closing());
        // Room traffic stops at the close; the answer owed still goes.
        assert_eq!(outbox.push(Bytes::from_static(b"m"), 0), Pushed::Dropped);
        let mut out = Vec::new();
        let answer_later = async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            assert_eq!(
                outbox.push_answer(Bytes::from_static(b"ack"), 0),
                Pushed::Queued
            );
            drop(owed);
        };
        tokio::join!(outbox.run_writer(&mut out), answer_later);
        assert_eq!(&out[..3], b"ack");
        assert_eq!(
            &out[3..],
            frame::close_frame(close::POLICY, "kicked").as_ref()
        );
        // Nothing is owed any more: later answers are dropped.
        assert_eq!(
            outbox.push_answer(Bytes::from_static(b"late"), 0),
            Pushed::Dropped
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_close_waits_for_answers_owed_at_most_the_grace() {
        let outbox = Rc::new(Outbox::new(1024));
        let _never_answered = outbox.owe_answer();
        outbox.close(close::RESTART, "server draining");
        let started = std::time::Instant::now();
        let mut out = Vec::new();
        outbox.run_writer(&mut out).await;
        let waited = started.elapsed();
        assert_eq!(
            out,
            frame::close_frame(close::RESTART, "server draining").as_ref()
        );
        assert!(
            waited >= CLOSE_GRACE && waited < CLOSE_GRACE + Duration::from_millis(600),
            "{waited:?}"
        );
        assert_eq!(
            outbox.push_answer(Bytes::from_static(b"late"), 0),
            Pushed::Dropped
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_slow_consumer_is_closed_without_waiting_for_answers() {
        let outbox = Rc::new(Outbox::new(10));
        let _owed = outbox.owe_answer();
        assert_eq!(outbox.push(Bytes::from(vec![0; 16]), 1), Pushed::Queued);
        assert_eq!(
            outbox.push(Bytes::from(vec![0; 8]), 2),
            Pushed::SlowConsumer
        );
        assert_eq!(
            outbox.push_answer(Bytes::from_static(b"ack"), 2),
            Pushed::Dropped
        );
        let mut out = Vec::new();
        tokio::time::timeout(Duration::from_millis(500), outbox.run_writer(&mut out))
            .await
            .expect("no wait for the answer owed");
        assert_eq!(
            out,
            frame::close_frame(close::POLICY, "slow consumer").as_ref()
        );
    }
}
