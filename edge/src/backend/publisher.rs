//! Batched publishes: a worker's client publishes, coalesced into `RC.PUBLISHM`.
//!
//! Every client publish used to be one `RC.PUBLISH` round trip, and Redis paid a wake-up,
//! a command, a reply and, per node reached, an inbox append and a push for each one.
//! Here a worker queues its clients' publishes and sends them as one `RC.PUBLISHM`
//! (`Module::publish_batch` in [`crate::backend::module`]), which Redis runs as one command writing one inbox
//! entry and one push per node, however many messages it carries.
//!
//! The rule is Nagle's, with a bound: one batch in flight per worker. A publish that
//! finds nothing queued waits up to `--publish-batch-delay-us` for others to join it
//! (the most batching adds to a publish's latency), then goes; what queues while a batch
//! is in flight goes as the next batch the moment the reply arrives, without waiting.
//! So at low rates a publish costs one delay and at high rates batches grow with the
//! load, up to `--publish-batch-max`.
//!
//! Each client still gets its own ack or error: the module answers each message of a
//! batch on its own (rate limits stay per sender and exact, in queue order), and a batch
//! that fails as a whole (Redis unreachable) fails each of its messages with that error.
//! Under Redis Cluster a batch is one command per partition (one slot each), sent
//! together; on a standalone server it is one command.

use std::cell::RefCell;
use std::future::Future;
use std::time::Duration;

use redis::RedisError;
use tokio::sync::{oneshot, Notify};

/// What a publish returns: its history offset (`None` for a room without history).
pub type Published = Result<Option<String>, RedisError>;

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

    /// Queues `message` for the next batch and waits for its own reply. Cancel-safe: a
    /// publish dropped while queued is still sent (its reply is dropped), like a command
    /// already written to Redis.
    pub async fn publish(&self, message: Message) -> Published {
        let (reply, answer) = oneshot::channel();
        self.queue.borrow_mut().push(Pending { message, reply });
        self.wake.notify_one();
        answer.await.unwrap_or_else(|_| {
            Err(RedisError::from((
                redis::ErrorKind::Io,
                "the worker stopped before the publish was sent",
            )))
        })
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
        loop {
            if self.queue.borrow().is_empty() {
                self.wake.notified().await;
                if !self.policy.delay.is_zero() {
                    tokio::time::sleep(self.policy.delay).await;
                }
            }
            let taken = {
                let mut queue = self.queue.borrow_mut();
                let n = queue.len().min(self.policy.max);
                queue.drain(..n).collect::<Vec<_>>()
            };
            if !taken.is_empty() {
                send_batch(taken, by_partition, &send).await;
            }
        }
    }
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
    fn one_message_per_command_is_no_batching() {
        assert!(!BatchPolicy::OFF.batching());
        let on = BatchPolicy {
            max: 2,
            delay: Duration::ZERO,
        };
        assert!(on.batching());
    }
}
