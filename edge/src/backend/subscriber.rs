//! The inbox reader's connections on a standalone server: a dedicated subscriber
//! connection (RESP3) subscribed to the node's live channel, where the module pushes
//! every new inbox entry, and a read connection to the same server for the `XRANGE`s
//! that catch up or fill a gap.
//!
//! The reads have a connection of their own so that a large catch-up reply never counts
//! against the subscriber's pub/sub output-buffer limit (Redis applies it to everything
//! a subscribed client is sent): only pushes do. The pushes arrive through the
//! subscriber connection's push sender (a channel this type owns); a closed
//! connection — `CLIENT KILL`, the server's pub/sub output-buffer limit, a failover —
//! shows up as [`Event::Closed`].
//!
//! A demoted primary (`SENTINEL FAILOVER`, `REPLICAOF`) keeps its subscribers connected
//! but no longer receives appends, so the subscriber also keeps one blocking `BLPOP` on
//! a list nobody writes pending ([`Subscriber::role_watch`]): Redis answers every
//! blocked client with an `UNBLOCKED` error and closes it when the server turns replica,
//! so the reader moves to the new primary at once — as a blocked `XREAD` used to — at
//! no cost per message.

use std::future::Future;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{Client, Cmd, ProtocolVersion, PushInfo, PushKind, RedisError, RedisResult, Value};
use roomcast_common::stream_id::StreamId;
use tokio::sync::mpsc::error::TryRecvError;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

use crate::backend::resp::bytes;
use crate::backend::streams::{end_cmd, end_id, entry_parts, reader_config, COUNT};

/// What a subscriber received.
#[derive(Debug, PartialEq, Eq)]
pub enum Event {
    /// A message on the live channel of inbox stream `0` (always 0 here, the one inbox
    /// of a standalone server; a partition's under Redis Cluster): its payload (see
    /// `roomcast_common::push`).
    Push(usize, Vec<u8>),
    /// Pushes may have been lost (the connection is gone); nothing more is delivered
    /// through this subscriber.
    Closed,
}

/// The next event of a connection's `pushes` (`event` tells what each push means;
/// pushes that mean nothing are skipped), or [`Event::Closed`] once it ended.
pub async fn next_event(
    pushes: &mut UnboundedReceiver<PushInfo>,
    event: impl Fn(PushInfo) -> Option<Event>,
) -> Event {
    loop {
        let Some(push) = pushes.recv().await else {
            return Event::Closed;
        };
        if let Some(event) = event(push) {
            return event;
        }
    }
}

/// Like [`next_event`], without waiting: `None` when nothing meaningful is queued.
pub fn try_next_event(
    pushes: &mut UnboundedReceiver<PushInfo>,
    event: impl Fn(PushInfo) -> Option<Event>,
) -> Option<Event> {
    loop {
        match pushes.try_recv() {
            Ok(push) => {
                if let Some(event) = event(push) {
                    return Some(event);
                }
            }
            Err(TryRecvError::Empty) => return None,
            Err(TryRecvError::Disconnected) => return Some(Event::Closed),
        }
    }
}

/// A connection subscribed to one channel, and a read connection to the same server.
pub struct Subscriber {
    /// The subscribed connection (kept open while this lives).
    subscribed: MultiplexedConnection,
    /// What the subscribed connection pushes.
    pushes: UnboundedReceiver<PushInfo>,
    /// The read connection.
    reads: MultiplexedConnection,
}

impl Subscriber {
    /// Connects to the server behind `client` with RESP3 and subscribes to `channel`,
    /// then opens the read connection: once this returns, every message published
    /// after the reads start arrives here.
    pub async fn subscribe(client: &Client, channel: &str) -> RedisResult<Self> {
        let info = client.get_connection_info().clone();
        let settings = info
            .redis_settings()
            .clone()
            .set_protocol(ProtocolVersion::RESP3);
        let resp3 = Client::open(info.set_redis_settings(settings))?;
        let (sender, pushes) = unbounded_channel();
        let config = reader_config().set_push_sender(sender);
        let mut subscribed = resp3
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        subscribed.subscribe(channel).await?;
        let reads = client
            .get_multiplexed_async_connection_with_config(&reader_config())
            .await?;
        Ok(Self {
            subscribed,
            pushes,
            reads,
        })
    }

    /// Resolves when the server stops being one that appends (it was demoted: its
    /// blocked clients are answered with an error) or the subscriber connection ends:
    /// a `BLPOP` without timeout on `watch_key`, a key nothing writes (the live channel's
    /// name: channels and keys do not share a namespace), on the subscriber connection.
    pub fn role_watch(&self, watch_key: &str) -> impl Future<Output = RedisError> + 'static {
        let mut conn = self.subscribed.clone();
        let mut cmd = redis::cmd("BLPOP");
        cmd.arg(watch_key).arg(0);
        async move {
            match cmd.query_async::<Value>(&mut conn).await {
                Err(e) => e,
                Ok(_) => RedisError::from((
                    redis::ErrorKind::Io,
                    "the subscriber's role watch was answered",
                )),
            }
        }
    }

    /// The next message or the end of the connection.
    pub async fn next(&mut self) -> Event {
        next_event(&mut self.pushes, event).await
    }

    /// The next message or end already received, if any (without waiting).
    pub fn try_next(&mut self) -> Option<Event> {
        try_next_event(&mut self.pushes, event)
    }

    /// The id of the last entry of stream `key` (`0-0` when it has none), read within
    /// 2 s (the read connection has no response timeout of its own).
    pub async fn end_of(&mut self, key: &str) -> RedisResult<StreamId> {
        let cmd = end_cmd(key);
        let read = cmd.query_async::<Value>(&mut self.reads);
        let reply = tokio::time::timeout(Duration::from_secs(2), read)
            .await
            .map_err(|_| {
                RedisError::from((redis::ErrorKind::Io, "timed out reading inbox ends"))
            })??;
        Ok(end_id(&reply))
    }

    /// `XRANGE key (after end COUNT n`: up to [`COUNT`] entries of stream `key` after
    /// `after` (exclusive) up to `end` (inclusive; `None`: the stream's end). The reply
    /// is a list of entries (see [`entries`]).
    pub async fn range(
        &mut self,
        key: &str,
        after: StreamId,
        end: Option<StreamId>,
    ) -> RedisResult<Value> {
        range_cmd(key, after, end)
            .query_async(&mut self.reads)
            .await
    }
}

/// What a push of the connection means: a channel message, the end of the connection,
/// or nothing (subscription confirmations and other pushes).
fn event(push: PushInfo) -> Option<Event> {
    match push.kind {
        PushKind::Message => push.data.get(1).map(|p| Event::Push(0, bytes(p).to_vec())),
        PushKind::Disconnection => Some(Event::Closed),
        _ => None,
    }
}

/// The `XRANGE` of [`Subscriber::range`].
pub fn range_cmd(key: &str, after: StreamId, end: Option<StreamId>) -> Cmd {
    let mut cmd = redis::cmd("XRANGE");
    cmd.arg(key).arg(format!("({after}"));
    match end {
        Some(end) => cmd.arg(end.to_string()),
        None => cmd.arg("+"),
    };
    cmd.arg("COUNT").arg(COUNT);
    cmd
}

/// The entries of an `XRANGE` reply: each entry's id and flat field/value list,
/// skipping anything malformed.
pub fn entries(reply: &Value) -> impl Iterator<Item = (StreamId, &[Value])> {
    let items: &[Value] = match reply {
        Value::Array(items) => items,
        _ => &[],
    };
    items.iter().filter_map(|item| {
        let (id, fields) = entry_parts(item)?;
        Some((StreamId::parse(id)?, fields))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &[u8]) -> Value {
        Value::BulkString(s.to_vec())
    }

    #[test]
    fn ranges_start_after_the_last_id_read() {
        let after = StreamId { ms: 5, seq: 1 };
        let to_end: Vec<Vec<u8>> = range_cmd("in:n1", after, None)
            .args_iter()
            .map(|a| match a {
                redis::Arg::Simple(b) => b.to_vec(),
                _ => Vec::new(),
            })
            .collect();
        assert_eq!(
            to_end,
            [&b"XRANGE"[..], b"in:n1", b"(5-1", b"+", b"COUNT", b"256"]
        );
        let bounded = range_cmd("in:n1", after, Some(StreamId { ms: 9, seq: 0 }));
        assert_eq!(
            bounded.args_iter().nth(3),
            Some(redis::Arg::Simple(&b"9-0"[..]))
        );
    }

    #[test]
    fn range_replies_are_walked_skipping_what_is_malformed() {
        let good = Value::Array(vec![bulk(b"7-2"), Value::Array(vec![bulk(b"kind")])]);
        let bad_id = Value::Array(vec![bulk(b"x"), Value::Array(vec![])]);
        let reply = Value::Array(vec![good, bad_id, Value::Nil]);
        let got: Vec<_> = entries(&reply).collect();
        assert_eq!(got, [(StreamId { ms: 7, seq: 2 }, &[bulk(b"kind")][..])]);
        assert_eq!(entries(&Value::Nil).count(), 0);
    }

    #[test]
    fn only_channel_messages_and_the_end_are_events() {
        let message = PushInfo {
            kind: PushKind::Message,
            data: vec![bulk(b"chan"), bulk(b"payload")],
        };
        assert_eq!(event(message), Some(Event::Push(0, b"payload".to_vec())));
        let confirmed = PushInfo {
            kind: PushKind::Subscribe,
            data: vec![bulk(b"chan"), Value::Int(1)],
        };
        assert_eq!(event(confirmed), None);
        let gone = PushInfo {
            kind: PushKind::Disconnection,
            data: vec![],
        };
        assert_eq!(event(gone), Some(Event::Closed));
    }
}
