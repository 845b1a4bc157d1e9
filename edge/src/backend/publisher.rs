//! Batched publishes: a worker's client publishes, coalesced into `RC.PUBLISHM`.
//!
//! Every client publish used to be one `RC.PUBLISH` round trip, and Redis paid a wake-up,
//! a command, a reply and, per node reached, an inbox append and a push for each one.
//! Here a worker queues its clients' publishes and sends them as one `RC.PUBLISHM`
//! (`Module::publish_batch` in [`crate::backend::module`]), which Redis runs as one command writing one inbox
//! entry and one push per node, however many messages it carries.
//!
//! The rule is Nagle's, paced: one batch in flight per worker, and what queues meanwhile
//! goes as the next batch, up to `--publish-batch-max`. Nagle alone hardly batches at
//! real loads (publishes rarely come within one round trip of each other), so after a
//! batch of several ([`worth_pacing`]) the worker sends the next no sooner than
//! `--publish-batch-delay-us` after it ([`hold`]): batches then grow with the rate and
//! Redis runs one command per delay per worker. After a batch of one the next goes at
//! once, so a quiet worker adds no latency. The price, measured in docs/BENCHMARKS.md:
//! up to the delay (plus the timer's 1 ms resolution) of latency under load. A
//! connection does not wait for one publish's reply to queue its next
//! (`session::in_flight`), so pacing caps the worker's commands, not a connection's
//! publishes.
//!
//! Each client still gets its own ack or error: the module answers each message of a
//! batch on its own (rate limits stay per sender and exact, in queue order), and a batch
//! that fails as a whole (Redis unreachable) fails each of its messages with that error.
//! Under Redis Cluster a batch is one command per partition (one slot each), sent
//! together; on a standalone server it is one command.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use redis::RedisError;
use tokio::sync::{oneshot, Notify};

/// What a publish returns: its history offset (`None` for a room without history).
pub type Published = Result<Option<String>, RedisError>;

/// Most payload bytes in one batch (a single larger publish still goes, alone): bounds
/// the command, the inbox entry and the push one batch makes, so a batch of large
/// messages neither holds Redis for long nor pushes a subscriber towards Redis's pub/sub
/// output-buffer limit.
pub const MAX_BATCH_BYTES: usize = 1 << 20;

/// How publishes are batched (`--publish-batch-max`, `--publish-batch-delay-us`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchPolicy {
    /// Most messages in one command; 1 = no batching (each publish its own
    /// `RC.PUBLISH`).
    pub max: usize,
    /// How long a publish that finds nothing queued waits for others.
    pub delay: Duration,
}

impl BatchPolicy {
    /// No batching: every publish is its own `RC.PUBLISH`.
    pub const OFF: BatchPolicy = BatchPolicy {
        max: 1,
        delay: Duration::ZERO,
    };

    /// Whether publishes are batched at all.
    pub fn batching(&self) -> bool {
        self.max > 1
    }
}

/// One queued publish: its partition and its four arguments in one allocation.
pub struct Message {
    /// The room's partition.
    partition: u32,
    /// `room`, `data`, `from` and `conn`, back to back.
    bytes: Vec<u8>,
    /// Where `data`, `from` and `conn` start in `bytes`.
    cuts: [usize; 3],
}

impl Message {
    /// A publish of `data` to `room` (in `partition`) by `from` from connection `conn`.
    pub fn new(partition: u32, room: &str, data: &[u8], from: &str, conn: &str) -> Self {
        let mut bytes = Vec::with_capacity(room.len() + data.len() + from.len() + conn.len());
        bytes.extend_from_slice(room.as_bytes());
        let data_at = bytes.len();
        bytes.extend_from_slice(data);
        let from_at = bytes.len();
        bytes.extend_from_slice(from.as_bytes());
        let conn_at = bytes.len();
        bytes.extend_from_slice(conn.as_bytes());
        Self {
            partition,
            bytes,
            cuts: [data_at, from_at, conn_at],
        }
    }

    /// The room's partition.
    pub fn partition(&self) -> u32 {
        self.partition
    }

    /// The bytes of its four arguments.
    pub fn size(&self) -> usize {
        self.bytes.len()
    }

    /// `room`, `data`, `from`, `conn`: the message's arguments in `RC.PUBLISHM`.
    pub fn args(&self) -> [&[u8]; 4] {
        let [d, f, c] = self.cuts;
        let part = |from: usize, to: usize| self.bytes.get(from..to).unwrap_or_default();
        [
            part(0, d),
            part(d, f),
            part(f, c),
            part(c, self.bytes.len()),
        ]
    }
}

/// A queued publish and where its reply goes.
struct Pending {
    message: Message,
    reply: oneshot::Sender<Published>,
}

/// The reply of a queued publish, to come ([`Publisher::submit`]).
pub struct Ticket(oneshot::Receiver<Published>);

impl Future for Ticket {
    type Output = Published;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Published> {
        Pin::new(&mut self.0).poll(cx).map(|answer| {
            answer.unwrap_or_else(|_| {
                Err(RedisError::from((
                    redis::ErrorKind::Io,
                    "the worker stopped before the publish was sent",
                )))
            })
        })
    }
}

/// A worker's publish queue (see the module docs).
pub struct Publisher {
    policy: BatchPolicy,
    /// Publishes waiting for the next batch, in arrival order.
    queue: RefCell<Vec<Pending>>,
    /// Wakes the flush loop when the queue was empty.
    wake: Notify,
}

impl Publisher {
    /// A queue batching as `policy` says.
    pub fn new(policy: BatchPolicy) -> Self {
        Self {
            policy,
            queue: RefCell::new(Vec::new()),
            wake: Notify::new(),
        }
    }

    /// How publishes are batched.
    pub fn policy(&self) -> BatchPolicy {
        self.policy
    }

    /// Queues `message` for the next batch now; the [`Ticket`] resolves to its reply.
    /// Cancel-safe: a publish whose ticket is dropped is still sent (its reply is
    /// dropped), like a command already written to Redis.
    /// A session uses this to send its next publish before the previous one's reply:
    /// publishes queued one after another go out in that order, and their replies come
    /// back in it.
    pub fn submit(&self, message: Message) -> Ticket {
        let (reply, answer) = oneshot::channel();
        self.queue.borrow_mut().push(Pending { message, reply });
        self.wake.notify_one();
        Ticket(answer)
    }

    /// The flush loop, one per worker: sends the queue as batches with `send` (one
    /// result per message, in order), one batch in flight at a time; under Redis Cluster
    /// (`by_partition`) one `send` per partition, together. Runs until the worker stops
    /// it.
    pub async fn run<F, Fut>(&self, by_partition: bool, send: F)
    where
        F: Fn(Vec<Message>) -> Fut,
        Fut: Future<Output = Vec<Published>>,
    {
        let mut last_sent: Option<Instant> = None;
        let mut pacing = false;
        loop {
            if self.queue.borrow().is_empty() {
                self.wake.notified().await;
            }
            if pacing && self.queue.borrow().len() < self.policy.max {
                let wait = hold(Instant::now(), last_sent, self.policy.delay);
                if !wait.is_zero() {
                    tokio::time::sleep(wait).await;
                }
            }
            let taken = {
                let mut queue = self.queue.borrow_mut();
                let n = batch_len(queue.iter().map(|p| p.message.size()), self.policy.max);
                queue.drain(..n).collect::<Vec<_>>()
            };
            if taken.is_empty() {
                continue;
            }
            pacing = worth_pacing(taken.len(), self.policy.delay);
            last_sent = Some(Instant::now());
            send_batch(taken, by_partition, &send).await;
        }
    }
}

/// Whether to pace the next batch, given that this one carries `batch` messages: when it
/// holds two or more, publishes are coming faster than one round trip apart from
/// several clients (or several in flight from one), and a window would gather more.
/// After a batch of one the next goes at once, so a quiet worker is never held.
fn worth_pacing(batch: usize, delay: Duration) -> bool {
    !delay.is_zero() && batch >= 2
}

/// How long the next batch waits when paced and the previous one went out at
/// `last_sent`: until `delay` after it, so a paced worker sends at most one batch per
/// `delay`, each carrying what arrived meanwhile (batches grow with the rate, and Redis
/// runs one command per `delay` per worker instead of one per publish).
fn hold(now: Instant, last_sent: Option<Instant>, delay: Duration) -> Duration {
    last_sent.map_or(Duration::ZERO, |at| {
        (at + delay).saturating_duration_since(now)
    })
}

/// How many of the queued messages (their sizes, in order) the next batch takes: at most
/// `max`, and no more than [`MAX_BATCH_BYTES`] unless a single message is larger.
fn batch_len(sizes: impl Iterator<Item = usize>, max: usize) -> usize {
    let mut bytes = 0;
    let mut n = 0;
    for size in sizes.take(max) {
        if n > 0 && bytes + size > MAX_BATCH_BYTES {
            break;
        }
        bytes += size;
        n += 1;
    }
    n
}

/// Sends one batch — one `send` per partition when `by_partition`, one in all otherwise
/// — and hands each message its reply.
async fn send_batch<F, Fut>(batch: Vec<Pending>, by_partition: bool, send: &F)
where
    F: Fn(Vec<Message>) -> Fut,
    Fut: Future<Output = Vec<Published>>,
{
    let mut groups: Vec<(u32, Vec<Message>, Vec<oneshot::Sender<Published>>)> = Vec::new();
    for Pending { message, reply } in batch {
        let key = if by_partition { message.partition() } else { 0 };
        let at = match groups.iter().position(|(k, _, _)| *k == key) {
            Some(at) => at,
            None => {
                groups.push((key, Vec::new(), Vec::new()));
                groups.len() - 1
            }
        };
        if let Some((_, messages, replies)) = groups.get_mut(at) {
            messages.push(message);
            replies.push(reply);
        }
    }
    let (messages, replies): (Vec<Vec<Message>>, Vec<_>) =
        groups.into_iter().map(|(_, m, r)| (m, r)).unzip();
    let sent = futures_util::future::join_all(messages.into_iter().map(send)).await;
    for (replies, results) in replies.into_iter().zip(sent) {
        let mut results = results.into_iter();
        for reply in replies {
            let result = results.next().unwrap_or_else(|| {
                Err(RedisError::from((
                    redis::ErrorKind::Parse,
                    "a batch answered fewer messages than it carried",
                )))
            });
            let _ = reply.send(result);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_keeps_its_four_arguments_apart() {
        let m = Message::new(3, "lobby", b"{\"x\":1}", "ann", "n1.7");
        assert_eq!(m.partition(), 3);
        assert_eq!(
            m.args(),
            [&b"lobby"[..], &b"{\"x\":1}"[..], &b"ann"[..], &b"n1.7"[..]]
        );
        let empty = Message::new(0, "r", b"", "", "");
        assert_eq!(empty.args(), [&b"r"[..], &b""[..], &b""[..], &b""[..]]);
    }

    #[test]
    fn a_batch_is_bounded_by_count_and_by_bytes() {
        assert_eq!(batch_len([10, 10, 10].into_iter(), 2), 2);
        assert_eq!(batch_len([10, 10, 10].into_iter(), 256), 3);
        assert_eq!(batch_len(std::iter::empty(), 256), 0);
        let half = MAX_BATCH_BYTES / 2;
        assert_eq!(batch_len([half, half, 1].into_iter(), 256), 2);
        // A message over the bound goes, alone.
        assert_eq!(batch_len([MAX_BATCH_BYTES * 2, 1].into_iter(), 256), 1);
        assert_eq!(batch_len([1, MAX_BATCH_BYTES * 2].into_iter(), 256), 1);
    }

    #[test]
    fn only_a_batch_of_several_paces_the_next() {
        let ms = Duration::from_millis;
        assert!(
            !worth_pacing(1, ms(1)),
            "one publish: the next goes at once"
        );
        assert!(worth_pacing(2, ms(1)));
        assert!(worth_pacing(100, ms(1)));
        assert!(!worth_pacing(100, Duration::ZERO), "0 = never pace");
    }

    #[test]
    fn a_batch_waits_only_within_the_delay_after_the_previous_one() {
        let now = Instant::now();
        let ms = Duration::from_millis;
        assert_eq!(
            hold(now, None, ms(1)),
            Duration::ZERO,
            "the first goes at once"
        );
        let sparse = now.checked_sub(ms(5)).unwrap_or(now);
        assert_eq!(hold(now, Some(sparse), ms(1)), Duration::ZERO);
        let busy = now.checked_sub(Duration::from_micros(300)).unwrap_or(now);
        let wait = hold(now, Some(busy), ms(1));
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_micros(700),
            "{wait:?}"
        );
        assert_eq!(
            hold(now, Some(now), Duration::ZERO),
            Duration::ZERO,
            "0 = no pacing"
        );
    }

    #[test]
    fn one_message_per_command_is_no_batching() {
        assert!(!BatchPolicy::OFF.batching());
        let on = BatchPolicy {
            max: 2,
            delay: Duration::ZERO,
        };
        assert!(on.batching());
    }
}
