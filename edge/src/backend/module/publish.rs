//! The module client's publishes: a client publish joins the worker's batch
//! ([`crate::backend::publisher`]) and goes out in `RC.PUBLISHM`, or alone as
//! `RC.PUBLISH` when batching is off or the module is older than this edge.

use std::sync::atomic::Ordering;

use redis::{RedisError, Value};

use crate::backend::module::Module;
use crate::backend::publisher::{Message, Published, Ticket};
use crate::backend::resp::bulk_text;
use crate::metrics::WorkerMetrics;

impl Module {
    /// A client publish: `data` to `room` as `from` from connection `conn`; the
    /// message's offset (`None` for a room without history). Queued into the worker's
    /// next `RC.PUBLISHM` when publishes are batched, else one `RC.PUBLISH`.
    pub async fn publish(&self, room: &str, data: &[u8], from: &str, conn: &str) -> Published {
        match self.queue_publish(room, data, from, conn) {
            Some(ticket) => ticket.await,
            None => self.publish_one(room, data, from, conn).await,
        }
    }

    /// The same publish, queued into the worker's next `RC.PUBLISHM` now, its reply to
    /// come with the [`Ticket`]; `None` when publishes are not batched (then
    /// [`Module::publish`] sends it alone).
    pub fn queue_publish(&self, room: &str, data: &[u8], from: &str, conn: &str) -> Option<Ticket> {
        if !self.publisher.policy().batching() || self.publish_each.load(Ordering::Relaxed) {
            return None;
        }
        let partition = self.layout.partition_of(room.as_bytes());
        Some(
            self.publisher
                .submit(Message::new(partition, room, data, from, conn)),
        )
    }

    /// `RC.PUBLISH … FROM from CONN conn`.
    async fn publish_one(&self, room: &str, data: &[u8], from: &str, conn: &str) -> Published {
        let mut cmd = redis::cmd("RC.PUBLISH");
        cmd.arg(&*self.routed(room))
            .arg(data)
            .arg("FROM")
            .arg(from)
            .arg("CONN")
            .arg(conn);
        Ok(publish_offset(&self.backend.run(&cmd).await?))
    }

    /// `RC.PUBLISHM` of `messages` (all in one partition under Redis Cluster): one
    /// result per message, in order. A module without `RC.PUBLISHM` gets them as one
    /// `RC.PUBLISH` each, from then on.
    pub async fn publish_batch(&self, messages: &[Message]) -> Vec<Published> {
        let Some(first) = messages.first() else {
            return Vec::new();
        };
        let mut cmd = redis::cmd("RC.PUBLISHM");
        cmd.arg(self.partition_arg(first.partition()))
            .arg(messages.len());
        for message in messages {
            for arg in message.args() {
                cmd.arg(arg);
            }
        }
        let metrics = self.backend.metrics();
        WorkerMetrics::inc(&metrics.publish_batches);
        metrics
            .publish_batched
            .fetch_add(messages.len() as u64, Ordering::Relaxed);
        match self.backend.run(&cmd).await {
            Ok(Value::Array(replies)) if replies.len() == messages.len() => replies
                .into_iter()
                .map(|reply| match reply {
                    Value::ServerError(e) => Err(e.into()),
                    reply => Ok(publish_offset(&reply)),
                })
                .collect(),
            Ok(other) => {
                let e = RedisError::from((
                    redis::ErrorKind::Parse,
                    "unexpected RC.PUBLISHM reply",
                    format!("{other:?}"),
                ));
                vec![Err(e); messages.len()]
            }
            Err(e) if is_unknown_command(&e) => {
                tracing::warn!(
                    "the module does not know RC.PUBLISHM (older than this edge); \
                     publishing one message per command"
                );
                self.publish_each.store(true, Ordering::Relaxed);
                let each = messages.iter().map(|m| {
                    let [room, data, from, conn] = m.args().map(String::from_utf8_lossy);
                    async move { self.publish_one(&room, data.as_bytes(), &from, &conn).await }
                });
                futures_util::future::join_all(each).await
            }
            Err(e) => vec![Err(e); messages.len()],
        }
    }

    /// The worker's publish flush loop (see [`crate::backend::publisher`]); the worker
    /// runs it as a task while it has Redis.
    pub async fn run_publisher(&self) {
        let publisher = self.publisher.clone();
        let send = |messages: Vec<Message>| async move { self.publish_batch(&messages).await };
        publisher.run(self.cluster, send).await;
    }
}

/// The offset in a publish's reply `[connections, nodes, offset]`.
fn publish_offset(reply: &Value) -> Option<String> {
    match reply {
        Value::Array(reply) => reply.get(2).and_then(bulk_text),
        _ => None,
    }
}

/// Redis's own answer to a command it does not know.
fn is_unknown_command(e: &RedisError) -> bool {
    e.code() == Some("ERR") && e.detail().is_some_and(|d| d.contains("unknown command"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An error reply as Redis writes it, through the client's own parser.
    fn server_error(line: &[u8]) -> RedisError {
        match redis::parse_redis_value(line) {
            Ok(Value::ServerError(e)) => e.into(),
            other => panic!("not an error reply: {other:?}"),
        }
    }

    #[test]
    fn an_older_module_is_told_by_redis_unknown_command_error() {
        let unknown = b"-ERR unknown command 'RC.PUBLISHM', with args beginning with: \r\n";
        assert!(is_unknown_command(&server_error(unknown)));
        let refusal = b"-ERR count must be between 1 and 1024\r\n";
        assert!(!is_unknown_command(&server_error(refusal)));
        assert!(!is_unknown_command(&server_error(
            b"-LIMITED retry_after_ms=5\r\n"
        )));
    }

    #[test]
    fn the_offset_is_the_third_element_of_a_publish_reply() {
        let reply = Value::Array(vec![
            Value::Int(2),
            Value::Int(1),
            Value::BulkString(b"k3x9:41".to_vec()),
        ]);
        assert_eq!(publish_offset(&reply).as_deref(), Some("k3x9:41"));
        let no_history = Value::Array(vec![Value::Int(2), Value::Int(1), Value::Nil]);
        assert_eq!(publish_offset(&no_history), None);
    }
}
