//! The inbox reader's connections under Redis Cluster: a RESP3 cluster connection
//! subscribed (`SSUBSCRIBE`) to the node's live shard channel of every partition, where
//! the module pushes each new entry of that partition's inbox, and a second cluster
//! connection for the `XRANGE`s that catch up or fill a gap.
//!
//! A shard channel lives in the slot of its name's tag, like the partition's keys, so
//! each subscription is held by the primary serving the partition, and the cluster
//! connection routes each to it. The reads have their own connection so that a large
//! catch-up never counts against a subscriber's pub/sub output-buffer limit.
//!
//! Anything that can lose pushes ends this subscriber ([`Event::Closed`]): a connection
//! to one of the primaries closed (`CLIENT KILL`, the pub/sub output-buffer limit, a
//! failover) — the cluster connection would reconnect and subscribe again by itself,
//! but what was pushed in between would only show up as a gap at the next push — or a
//! server dropping a subscription because its slot moved away (`sunsubscribe`). The
//! reader then starts over: subscribes afresh and reads every inbox from its last id.

use std::collections::HashMap;

use redis::cluster_async::ClusterConnection;
use redis::{PushInfo, PushKind, RedisResult, Value};
use roomcast_common::stream_id::StreamId;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

use crate::backend::cluster::{ClusterTarget, Shard};
use crate::backend::resp::bytes;
use crate::backend::streams::{end_cmd, end_id};
use crate::backend::subscriber::{next_event, range_cmd, try_next_event, Event};

/// Subscriptions to the live shard channels of a node's inboxes, and a read connection.
pub struct ShardSubscriber {
    /// The subscribed connection (kept open while this lives).
    _subscribed: ClusterConnection,
    /// What its connections push.
    pushes: UnboundedReceiver<PushInfo>,
    /// Stream index of each channel.
    streams: HashMap<Vec<u8>, usize>,
    /// The read connection.
    reads: ClusterConnection,
}

impl ShardSubscriber {
    /// Subscribes to `channels` (one per inbox stream, in stream order) through the
    /// cluster behind `target`, whose primaries `shards` lists, then opens the read
    /// connection: once this returns, every entry appended after the reads start is
    /// pushed here.
    pub async fn subscribe(
        target: &ClusterTarget,
        shards: &[Shard],
        channels: &[String],
    ) -> RedisResult<Self> {
        let (sender, pushes) = unbounded_channel();
        let subscribed = target
            .push_client_via(shards, sender)?
            .get_async_connection()
            .await?;
        // One command per channel: channels in different slots may not share one.
        let subscriptions = channels.iter().map(|channel| {
            let mut conn = subscribed.clone();
            async move { conn.ssubscribe(channel).await }
        });
        for subscribed in futures_util::future::join_all(subscriptions).await {
            subscribed?;
        }
        let reads = target.client_via(shards)?.get_async_connection().await?;
        let streams = channels
            .iter()
            .enumerate()
            .map(|(i, c)| (c.as_bytes().to_vec(), i))
            .collect();
        Ok(Self {
            _subscribed: subscribed,
            pushes,
            streams,
            reads,
        })
    }

    /// The next push or the end of this subscriber.
    pub async fn next(&mut self) -> Event {
        let streams = &self.streams;
        next_event(&mut self.pushes, |push| event(streams, push)).await
    }

    /// The next push or end already received, if any (without waiting).
    pub fn try_next(&mut self) -> Option<Event> {
        let streams = &self.streams;
        try_next_event(&mut self.pushes, |push| event(streams, push))
    }

    /// Up to `COUNT` entries of stream `key` after `after` (exclusive) up to `end`
    /// (inclusive; `None`: the stream's end), read on the shard serving it.
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

    /// The id of the last entry of stream `key` (`0-0` when it has none).
    pub async fn end_of(&mut self, key: &str) -> RedisResult<StreamId> {
        let reply: Value = end_cmd(key).query_async(&mut self.reads).await?;
        Ok(end_id(&reply))
    }
}

/// What a push means: a message on one of the channels, the end (a connection lost or
/// a subscription dropped by the server), or nothing (confirmations, other pushes).
fn event(streams: &HashMap<Vec<u8>, usize>, push: PushInfo) -> Option<Event> {
    match push.kind {
        PushKind::SMessage => {
            let stream = *streams.get(bytes(push.data.first()?))?;
            Some(Event::Push(stream, bytes(push.data.get(1)?).to_vec()))
        }
        PushKind::Disconnection | PushKind::SUnsubscribe => Some(Event::Closed),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &[u8]) -> Value {
        Value::BulkString(s.to_vec())
    }

    #[test]
    fn shard_messages_name_their_stream_and_losses_end_the_subscriber() {
        let streams: HashMap<Vec<u8>, usize> =
            [(b"{a}:live:n1".to_vec(), 0), (b"{b}:live:n1".to_vec(), 1)].into();
        let message = |channel: &[u8]| PushInfo {
            kind: PushKind::SMessage,
            data: vec![bulk(channel), bulk(b"payload")],
        };
        assert_eq!(
            event(&streams, message(b"{b}:live:n1")),
            Some(Event::Push(1, b"payload".to_vec()))
        );
        assert_eq!(event(&streams, message(b"{c}:live:n1")), None);
        let confirmed = PushInfo {
            kind: PushKind::SSubscribe,
            data: vec![bulk(b"{a}:live:n1"), Value::Int(1)],
        };
        assert_eq!(event(&streams, confirmed), None);
        for kind in [PushKind::Disconnection, PushKind::SUnsubscribe] {
            let lost = PushInfo { kind, data: vec![] };
            assert_eq!(event(&streams, lost), Some(Event::Closed));
        }
    }
}
