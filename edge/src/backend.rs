//! Everything the edge says to Redis: where Redis is, the command connection, the
//! typed module client, and how the inbox streams are read.
//!
//! # Layout
//!
//! - this file: [`Backend`], the worker's command connection (one multiplexed
//!   connection that follows a moving primary).
//! - [`module`]: the typed module client, a function per module command the edge sends,
//!   with typed replies; the only place that builds `RC.*` commands.
//! - [`replies`]: the typed replies of module commands (`JoinReply`, `History`, …).
//! - [`streams`]: reading the inbox streams (the readers' connections, read replies, stream
//!   ends, liveness probes).
//! - [`publisher`]: the worker's publish queue, coalescing client publishes into
//!   `RC.PUBLISHM` batches (one in flight at a time).
//! - [`subscriber`]: the standalone inbox reader's connection: subscribed to the node's
//!   live channel, reading the inbox with `XRANGE` to catch up or fill a gap.
//! - [`shard_subscriber`]: the same under Redis Cluster: subscribed to the live shard
//!   channel of each partition's inbox.
//! - [`errors`]: what a failed command means, by the module's error code.
//! - [`target`]: where the Redis primary is (a fixed address, found through Sentinel, or
//!   a Redis Cluster).
//! - [`cluster`]: Redis Cluster slot map → which shard serves which partition.
//! - [`resp`]: reading reply values.
//!
//! Commands share one multiplexed connection (`ConnectionManager`, which reconnects on
//! its own with backoff); replies are timed into the Redis round-trip histogram. The
//! inbox readers have their own connections (see [`subscriber`] and [`streams`]).
//!
//! Behind Sentinel (see [`target`]) the primary can move: when a command fails in a way
//! that says "not the primary (any more)" or "unreachable", the connection is dropped
//! and the next command looks the primary up again (at most once per [`LOOKUP_GAP`]; in
//! between, commands fail fast as `unavailable`). A command refused with `READONLY` or
//! `NOREPLICAS` was not executed, so it is sent once more to the new primary.

pub mod cluster;
pub mod errors;
pub mod module;
pub mod publisher;
pub mod replies;
pub mod resp;
pub mod shard_subscriber;
pub mod streams;
pub mod subscriber;
pub mod target;

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, RedisError, ServerError, Value};

use crate::backend::errors::{no_redis, not_executed};
use crate::backend::target::{calls_for_lookup, Target};
use crate::metrics::WorkerMetrics;

/// Least time between two lookups of the primary.
pub const LOOKUP_GAP: Duration = Duration::from_millis(250);

/// Command connection of one worker.
#[derive(Clone)]
pub struct Backend {
    /// The link to the primary; `None` under `--bench-floor` and `--echo`, where every
    /// command fails as unavailable (those sessions send none).
    link: Option<Rc<Link>>,
    /// Where round trips and errors are counted.
    metrics: Arc<WorkerMetrics>,
}

/// The current connection and how it was found.
struct Link {
    /// Where the primary is.
    target: Arc<Target>,
    /// Connection to the primary as last looked up (or to the cluster); `None` until the
    /// first command, and after a failure that calls for a new lookup.
    current: RefCell<Option<Connection>>,
    /// One lookup at a time; the others wait for its result.
    lookup: tokio::sync::Mutex<()>,
    /// When the last lookup happened, and whether it failed.
    last_lookup: Cell<Option<(Instant, bool)>>,
}

/// A connection to one primary, or to a whole Redis Cluster.
#[derive(Clone)]
enum Connection {
    /// A standalone primary (fixed or found through Sentinel).
    Single(ConnectionManager),
    /// A Redis Cluster: commands are routed by their first argument.
    Cluster(ClusterConnection),
}

impl Connection {
    /// One command's reply. An error reply is `Err`; an error inside an array reply (one
    /// message's refusal in `RC.PUBLISHM`'s) stays a [`Value::ServerError`] there.
    async fn query(&mut self, cmd: &Cmd) -> Result<Value, RedisError> {
        use redis::aio::ConnectionLike;
        let reply = match self {
            Connection::Single(c) => c.req_packed_command(cmd).await?,
            Connection::Cluster(c) => c.req_packed_command(cmd).await?,
        };
        match reply {
            Value::ServerError(e) => Err(e.into()),
            reply => Ok(reply),
        }
    }

    /// One reply per command, in order; a command's error reply comes back as a
    /// [`Value::ServerError`], a failure to reach Redis as `Err` (under Cluster: only
    /// when no shard was reached).
    async fn batch(&mut self, cmds: Vec<Cmd>) -> Result<Vec<Value>, RedisError> {
        match self {
            Connection::Single(c) => {
                let mut pipe = redis::pipe();
                for cmd in cmds {
                    pipe.add_command(cmd);
                }
                pipe.query_async(c).await
            }
            // Shards fail alone: while one fails over, the commands for the others go
            // through, so the batch fails only when no command reached Redis; a command
            // whose shard could not be reached reads as nil.
            Connection::Cluster(c) => {
                let replies = futures_util::future::join_all(cmds.iter().map(|cmd| {
                    let mut c = c.clone();
                    async move { cmd.query_async::<Value>(&mut c).await }
                }))
                .await;
                let mut unreachable = None;
                let mut values = Vec::with_capacity(replies.len());
                for reply in replies {
                    values.push(match reply {
                        Ok(v) => v,
                        Err(e) if e.code().is_some() => {
                            ServerError::try_from(e).map_or(Value::Nil, Value::ServerError)
                        }
                        Err(e) => {
                            unreachable.get_or_insert(e);
                            Value::Nil
                        }
                    });
                }
                match unreachable {
                    Some(e) if values.iter().all(|v| matches!(v, Value::Nil)) => Err(e),
                    _ => Ok(values),
                }
            }
        }
    }
}

fn manager_config() -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(Some(Duration::from_secs(5)))
        .set_number_of_retries(2)
        .set_max_delay(Duration::from_secs(2))
}

impl Backend {
    /// A backend for `target` (it connects on the first command and reconnects as
    /// needed); without a target (`--bench-floor`, `--echo`), one whose commands all fail.
    pub fn new(target: Option<Arc<Target>>, metrics: Arc<WorkerMetrics>) -> Self {
        let link = target.map(|target| {
            Rc::new(Link {
                target,
                current: RefCell::new(None),
                lookup: tokio::sync::Mutex::new(()),
                last_lookup: Cell::new(None),
            })
        });
        Self { link, metrics }
    }

    /// This worker's metrics.
    pub fn metrics(&self) -> &WorkerMetrics {
        &self.metrics
    }

    /// Runs one command.
    pub async fn run(&self, cmd: &Cmd) -> Result<Value, RedisError> {
        let Some(link) = &self.link else {
            return Err(no_redis());
        };
        let mut retried = false;
        loop {
            let started = Instant::now();
            let result = match self.connection(link).await {
                Ok(mut conn) => conn.query(cmd).await,
                Err(e) => Err(e),
            };
            self.observe(started, &result);
            match &result {
                Err(e) if !retried && not_executed(e) && self.forget(link, e) => retried = true,
                Err(e) => {
                    self.forget(link, e);
                    return result;
                }
                Ok(_) => return result,
            }
        }
    }

    /// Runs a batch of commands, pipelined where Redis allows it: one reply per
    /// command, in order (a command's error reply comes back as a value).
    pub async fn run_batch(&self, cmds: Vec<Cmd>) -> Result<Vec<Value>, RedisError> {
        let Some(link) = &self.link else {
            return Err(no_redis());
        };
        if cmds.is_empty() {
            return Ok(Vec::new());
        }
        let started = Instant::now();
        let result = match self.connection(link).await {
            Ok(mut conn) => conn.batch(cmds).await,
            Err(e) => Err(e),
        };
        self.observe(started, &result);
        if let Err(e) = &result {
            self.forget(link, e);
        }
        result
    }

    /// The connection to the primary, looking it up first when there is none.
    async fn connection(&self, link: &Link) -> Result<Connection, RedisError> {
        if let Some(conn) = link.current.borrow().as_ref() {
            return Ok(conn.clone());
        }
        let _one_at_a_time = link.lookup.lock().await;
        if let Some(conn) = link.current.borrow().as_ref() {
            return Ok(conn.clone());
        }
        if let Some((at, true)) = link.last_lookup.get() {
            if at.elapsed() < LOOKUP_GAP {
                return Err(RedisError::from((
                    redis::ErrorKind::Io,
                    "no Redis primary found yet",
                )));
            }
        }
        if let Some(cluster) = link.target.cluster() {
            let conn = cluster
                .client()?
                .get_async_connection()
                .await
                .inspect_err(|e| {
                    tracing::warn!(error = %e, "cannot reach the Redis Cluster; retrying");
                })?;
            let conn = Connection::Cluster(conn);
            *link.current.borrow_mut() = Some(conn.clone());
            return Ok(conn);
        }
        let found = link.target.resolve().await;
        link.last_lookup.set(Some((Instant::now(), found.is_err())));
        let client = found.inspect_err(|e| {
            tracing::warn!(error = %e, "cannot find the Redis primary; retrying");
        })?;
        if link.target.follows_failover() {
            tracing::info!(primary = %client.get_connection_info().addr(), "using Redis primary");
        }
        let conn = Connection::Single(ConnectionManager::new_lazy_with_config(
            client,
            manager_config(),
        )?);
        *link.current.borrow_mut() = Some(conn.clone());
        Ok(conn)
    }

    /// Drops the connection so the next command looks the primary up again (Sentinel
    /// named another one: see `node::failover`).
    pub fn switch_primary(&self) {
        if let Some(link) = &self.link {
            if link.current.borrow_mut().take().is_some() {
                WorkerMetrics::inc(&self.metrics.primary_lookups);
            }
            link.last_lookup.set(None);
        }
    }

    /// After a failure: drops the connection when the primary may have moved, so the
    /// next command looks it up again. Returns whether it did.
    fn forget(&self, link: &Link, err: &RedisError) -> bool {
        if !link.target.follows_failover() || !calls_for_lookup(err) {
            return false;
        }
        if link
            .last_lookup
            .get()
            .is_some_and(|(at, _)| at.elapsed() < LOOKUP_GAP)
        {
            return false;
        }
        if link.current.borrow_mut().take().is_none() {
            return false;
        }
        WorkerMetrics::inc(&self.metrics.primary_lookups);
        tracing::warn!(error = %err, "Redis primary failed a command; looking it up again");
        true
    }

    fn observe<T>(&self, started: Instant, result: &Result<T, RedisError>) {
        self.metrics.redis_rtt.observe(started.elapsed());
        if let Err(e) = result {
            if e.code().is_none() {
                WorkerMetrics::inc(&self.metrics.redis_errors);
            }
        }
    }
}
