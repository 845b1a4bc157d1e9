//! The typed module client: one function per module command the edge sends, with typed
//! replies. No other file builds an `RC.*` command or picks a reply apart.
//!
//! Publishing (`RC.PUBLISH`, `RC.PUBLISHM` and the worker's batching of them) is in
//! [`publish`].
//!
//! Room and user names go out partition-tagged (`{tag}name`) under Redis Cluster, so
//! each command is routed to the shard serving the name's partition, and plain on a
//! standalone server. Errors come back as [`RedisError`]s; what they mean is
//! [`crate::backend::errors::classify`]'s business.

use std::borrow::Cow;
use std::future::Future;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use redis::aio::MultiplexedConnection;
use redis::{Cmd, RedisError, Value};
use roomcast_common::partition::Partitioner;

use crate::backend::publisher::{BatchPolicy, Publisher};
use crate::backend::replies::{parse_info, stored, History, Info, JoinReply};
use crate::backend::resp::bulk_text;
use crate::backend::Backend;

mod publish;
/// A registration the module lost, to be sent again (see [`Module::register_again`]).
pub enum Again<'a> {
    /// `RC.CONNECT` of connection `conn` of `user`.
    Connect {
        /// The connection's user.
        user: &'a str,
        /// The connection id.
        conn: &'a str,
    },
    /// `RC.JOIN` of connection `conn` of `user` to `room` (no replay).
    Join {
        /// The room.
        room: &'a str,
        /// The connection id.
        conn: &'a str,
        /// The connection's user.
        user: &'a str,
    },
}

/// The module commands of one node (one worker).
#[derive(Clone)]
pub struct Module {
    /// The command connection.
    backend: Backend,
    /// The node id the commands name.
    node: String,
    /// The dataset's partition layout.
    layout: Partitioner,
    /// Redis is a Redis Cluster: names are sent partition-tagged.
    cluster: bool,
    /// The module refused the one-command lease as an arity error (a module older than
    /// this edge): leases go one per partition, as under Cluster.
    lease_each: Arc<AtomicBool>,
    /// The worker's publish queue (see [`crate::backend::publisher`]).
    publisher: Rc<Publisher>,
    /// The module does not know `RC.PUBLISHM` (older than this edge): publishes go
    /// one `RC.PUBLISH` each.
    publish_each: Arc<AtomicBool>,
}

impl Module {
    /// The client of node `node` over `backend`, batching publishes as `batch` says.
    pub fn new(
        backend: Backend,
        node: String,
        layout: Partitioner,
        cluster: bool,
        batch: BatchPolicy,
    ) -> Self {
        Self {
            backend,
            node,
            layout,
            cluster,
            lease_each: Arc::default(),
            publisher: Rc::new(Publisher::new(batch)),
            publish_each: Arc::default(),
        }
    }

    /// A room or user name as a command's first argument.
    fn routed<'a>(&self, name: &'a str) -> Cow<'a, str> {
        if self.cluster {
            Cow::Owned(self.layout.tagged(name))
        } else {
            Cow::Borrowed(name)
        }
    }

    /// The partition tag argument (`{tag}`) of partition `p`.
    pub fn partition_arg(&self, p: u32) -> String {
        format!("{{{}}}", self.layout.tag(p))
    }

    fn connect_cmd(&self, user: &str, conn: &str) -> Cmd {
        let mut cmd = redis::cmd("RC.CONNECT");
        cmd.arg(&*self.routed(user)).arg(&self.node).arg(conn);
        cmd
    }

    /// `RC.JOIN`; with `since` (an offset or `$`) the reply replays what was missed.
    fn join_cmd(&self, room: &str, conn: &str, user: &str, since: Option<&str>) -> Cmd {
        let mut cmd = redis::cmd("RC.JOIN");
        cmd.arg(&*self.routed(room))
            .arg(&self.node)
            .arg(conn)
            .arg(user);
        if let Some(since) = since {
            cmd.arg("SINCE").arg(since);
        }
        cmd
    }

    fn leave_cmd(&self, room: &str, conn: &str) -> Cmd {
        let mut cmd = redis::cmd("RC.LEAVE");
        cmd.arg(&*self.routed(room)).arg(&self.node).arg(conn);
        cmd
    }

    /// `RC.CONNECT`: registers connection `conn` of `user`.
    pub async fn connect(&self, user: &str, conn: &str) -> Result<(), RedisError> {
        self.backend
            .run(&self.connect_cmd(user, conn))
            .await
            .map(drop)
    }

    /// `RC.JOIN … SINCE since|$`: joins `room` and replays what was missed since `since`
    /// (nothing without it), atomically with the join.
    pub async fn join(
        &self,
        room: &str,
        conn: &str,
        user: &str,
        since: Option<&str>,
    ) -> Result<JoinReply, RedisError> {
        let cmd = self.join_cmd(room, conn, user, Some(since.unwrap_or("$")));
        Ok(match self.backend.run(&cmd).await? {
            Value::Array(reply) => JoinReply {
                recovered: matches!(reply.get(1), Some(Value::Int(1))),
                cut: reply.get(2).and_then(bulk_text),
                replay: reply.get(3).map(stored).unwrap_or_default(),
            },
            _ => JoinReply::default(),
        })
    }

    /// `RC.LEAVE`.
    pub async fn leave(&self, room: &str, conn: &str) -> Result<(), RedisError> {
        self.backend
            .run(&self.leave_cmd(room, conn))
            .await
            .map(drop)
    }

    /// `RC.LEAVE` of every room, then `RC.DISCONNECT`, as one batch: a closed connection.
    pub async fn unregister<'a>(
        &self,
        user: &str,
        conn: &str,
        rooms: impl IntoIterator<Item = &'a str>,
    ) -> Result<(), RedisError> {
        let mut cmds: Vec<Cmd> = rooms
            .into_iter()
            .map(|room| self.leave_cmd(room, conn))
            .collect();
        let mut cmd = redis::cmd("RC.DISCONNECT");
        cmd.arg(&*self.routed(user)).arg(&self.node).arg(conn);
        cmds.push(cmd);
        self.backend.run_batch(cmds).await.map(drop)
    }

    /// `RC.SEND … FROM from`: a direct message to every connection of `user`.
    pub async fn send(&self, user: &str, data: &[u8], from: &str) -> Result<(), RedisError> {
        let mut cmd = redis::cmd("RC.SEND");
        cmd.arg(&*self.routed(user)).arg(data).arg("FROM").arg(from);
        self.backend.run(&cmd).await.map(drop)
    }

    /// `RC.PRESENCE`: the users in `room`.
    pub async fn presence(&self, room: &str) -> Result<Vec<String>, RedisError> {
        let mut cmd = redis::cmd("RC.PRESENCE");
        cmd.arg(&*self.routed(room));
        Ok(match self.backend.run(&cmd).await? {
            Value::Array(users) => users.iter().filter_map(bulk_text).collect(),
            _ => Vec::new(),
        })
    }

    /// `RC.HISTORY [SINCE since] COUNT count`.
    pub async fn history(
        &self,
        room: &str,
        since: Option<&str>,
        count: u32,
    ) -> Result<History, RedisError> {
        let mut cmd = redis::cmd("RC.HISTORY");
        cmd.arg(&*self.routed(room));
        if let Some(since) = since {
            cmd.arg("SINCE").arg(since);
        }
        cmd.arg("COUNT").arg(count);
        Ok(match self.backend.run(&cmd).await? {
            Value::Array(reply) => History {
                cut: reply.first().and_then(bulk_text),
                recovered: matches!(reply.get(1), Some(Value::Int(1))),
                messages: reply.get(2).map(stored).unwrap_or_default(),
            },
            _ => History::default(),
        })
    }

    /// The lease in every partition: the partitions where it was new (the module had
    /// lost the node there). A standalone server holds every partition and renews them
    /// all with one `RC.NODE.LEASE node ttl_ms`; under Redis Cluster each partition's
    /// `RC.NODE.LEASE partition node ttl_ms` goes to its own slot, as one batch.
    pub async fn lease(&self, ttl_ms: u64) -> Result<Vec<u32>, RedisError> {
        if !self.cluster && !self.lease_each.load(Ordering::Relaxed) {
            let mut cmd = redis::cmd("RC.NODE.LEASE");
            cmd.arg(&self.node).arg(ttl_ms);
            match self.backend.run(&cmd).await {
                Ok(reply) => return Ok(created_partitions(&reply)),
                Err(e) if is_arity_error(&e) => {
                    tracing::warn!(
                        "the module does not know the one-command lease (older than this \
                         edge); renewing each partition"
                    );
                    self.lease_each.store(true, Ordering::Relaxed);
                }
                Err(e) => return Err(e),
            }
        }
        let cmds: Vec<Cmd> = (0..self.layout.count())
            .map(|p| {
                let mut cmd = redis::cmd("RC.NODE.LEASE");
                cmd.arg(self.partition_arg(p)).arg(&self.node).arg(ttl_ms);
                cmd
            })
            .collect();
        let replies = self.backend.run_batch(cmds).await?;
        Ok(replies
            .iter()
            .enumerate()
            .filter(|(_, v)| matches!(v, Value::Int(1)))
            .map(|(p, _)| p as u32)
            .collect())
    }

    /// `RC.NODE.DOWN` of this node in every partition, as one batch: at start (to clear
    /// what a previous process with the same id left) and when draining.
    pub async fn node_down(&self) -> Result<(), RedisError> {
        let cmds: Vec<Cmd> = (0..self.layout.count())
            .map(|p| {
                let mut cmd = redis::cmd("RC.NODE.DOWN");
                cmd.arg(self.partition_arg(p)).arg(&self.node);
                cmd
            })
            .collect();
        self.backend.run_batch(cmds).await.map(drop)
    }

    /// `RC.CONNECT` and `RC.JOIN` (without replay) of what the module lost, as one
    /// batch. The commands are built at once, so the caller may borrow what it lists.
    pub fn register_again<'a>(
        &self,
        lost: impl IntoIterator<Item = Again<'a>>,
    ) -> impl Future<Output = Result<(), RedisError>> + 'static {
        let cmds: Vec<Cmd> = lost
            .into_iter()
            .map(|again| match again {
                Again::Connect { user, conn } => self.connect_cmd(user, conn),
                Again::Join { room, conn, user } => self.join_cmd(room, conn, user, None),
            })
            .collect();
        let backend = self.backend.clone();
        async move { backend.run_batch(cmds).await.map(drop) }
    }

    /// `RC.PROBE` of liveness probe `token` into the node's inbox of each of
    /// `partitions`, as one batch: the module appends it like any entry (trimmed to its
    /// cap) and pushes it, so reading it back proves the whole
    /// delivery path.
    pub async fn probe(&self, partitions: &[u32], token: &str) -> Result<(), RedisError> {
        let probes: Vec<Cmd> = partitions
            .iter()
            .map(|p| {
                let mut cmd = redis::cmd("RC.PROBE");
                cmd.arg(self.partition_arg(*p)).arg(&self.node).arg(token);
                cmd
            })
            .collect();
        self.backend.run_batch(probes).await.map(drop)
    }

    /// `CLUSTER SLOTS`, as the shards serving the dataset's partitions.
    pub async fn slot_map(&self) -> redis::RedisResult<Vec<crate::backend::cluster::Shard>> {
        let mut cmd = redis::cmd("CLUSTER");
        cmd.arg("SLOTS");
        let reply = self.backend.run(&cmd).await?;
        crate::backend::cluster::shards(&self.layout, &reply)
    }

    /// Drops the command connection so the next command looks the primary up again.
    pub fn switch_primary(&self) {
        self.backend.switch_primary();
    }
}
/// `RC.INFO`: answered once the module is loaded (the embedded server's readiness).
pub fn info_command() -> Cmd {
    redis::cmd("RC.INFO")
}

/// `RC.INFO` on `conn` (at start, before any worker runs).
pub async fn info(conn: &mut MultiplexedConnection) -> Result<Info, RedisError> {
    let reply: Vec<Value> = info_command().query_async(conn).await?;
    Ok(parse_info(&reply))
}

/// The partitions named by the one-command lease's reply (where the lease was new).
fn created_partitions(reply: &Value) -> Vec<u32> {
    match reply {
        Value::Array(created) => created
            .iter()
            .filter_map(|v| match v {
                Value::Int(p) => u32::try_from(*p).ok(),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// Redis's own arity error: the command exists but not in that form.
fn is_arity_error(e: &RedisError) -> bool {
    e.code() == Some("ERR")
        && e.detail()
            .is_some_and(|d| d.contains("wrong number of arguments"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_one_command_lease_reply_names_the_new_partitions() {
        let reply = Value::Array(vec![Value::Int(0), Value::Int(7), Value::Int(-1)]);
        assert_eq!(created_partitions(&reply), [0, 7]);
        assert!(created_partitions(&Value::Array(Vec::new())).is_empty());
        assert!(created_partitions(&Value::Nil).is_empty());
    }

    #[test]
    fn names_are_partition_tagged_only_under_cluster() {
        let layout = Partitioner::new(4).unwrap();
        let metrics = std::sync::Arc::default();
        let plain = Module::new(
            Backend::new(None, metrics),
            "n1".into(),
            layout.clone(),
            false,
            BatchPolicy::OFF,
        );
        let tagged = Module {
            cluster: true,
            ..plain.clone()
        };
        assert_eq!(plain.routed("lobby"), "lobby");
        assert_eq!(tagged.routed("lobby"), layout.tagged("lobby"));
        assert_eq!(plain.partition_arg(2), format!("{{{}}}", layout.tag(2)));
        let join = tagged.join_cmd("lobby", "n1.1", "ann", None);
        assert_eq!(join.args_iter().count(), 5, "no SINCE without since");
    }
}
