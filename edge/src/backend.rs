//! The worker's connection to Redis for module commands, and what their errors mean
//! to a client.
//!
//! Commands share one multiplexed connection (`ConnectionManager`, which reconnects on
//! its own with backoff); replies are timed into the Redis round-trip histogram. The
//! blocking inbox reader has its own connection (see `reader`).
//!
//! Behind Sentinel (see `target`) the primary can move: when a command fails in a way
//! that says "not the primary (any more)" or "unreachable", the connection is dropped
//! and the next command looks the primary up again (at most once per [`LOOKUP_GAP`]; in
//! between, commands fail fast as `unavailable`). A command refused with `READONLY` or
//! `NOREPLICAS` was not executed, so it is sent once more to the new primary.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, RedisError, ServerError, Value};

use crate::metrics::WorkerMetrics;
use crate::protocol::ErrorCode;
use crate::target::{calls_for_lookup, Target};

/// Least time between two lookups of the primary.
const LOOKUP_GAP: Duration = Duration::from_millis(250);

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
    async fn query(&mut self, cmd: &Cmd) -> Result<Value, RedisError> {
        match self {
            Connection::Single(c) => cmd.query_async(c).await,
            Connection::Cluster(c) => cmd.query_async(c).await,
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

/// How a failed module command maps onto the client protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// `LIMITED retry_after_ms=N`.
    Limited(u64),
    /// `BANNED retry_after_ms=N`: the connection must be closed.
    Banned(u64),
    /// Any other error reply from the module: (client code, message).
    Refused(ErrorCode, String),
    /// Redis could not be reached.
    Unavailable,
}

/// Parses `retry_after_ms=N` out of an error detail.
fn retry_after(detail: &str) -> u64 {
    detail
        .split_whitespace()
        .find_map(|w| w.strip_prefix("retry_after_ms="))
        .and_then(|n| n.parse().ok())
        .unwrap_or(1000)
}

/// The error of a command attempted without Redis (`--bench-floor`).
pub fn no_redis() -> RedisError {
    RedisError::from((redis::ErrorKind::Client, "no Redis in --bench-floor mode"))
}

/// Classifies an error from a module command.
pub fn classify(err: &RedisError) -> Failure {
    let detail = err.detail().unwrap_or_default();
    match err.code() {
        Some("LIMITED") => Failure::Limited(retry_after(detail)),
        Some("BANNED") => Failure::Banned(retry_after(detail)),
        Some("TOOMANY") => Failure::Refused(ErrorCode::Forbidden, detail.to_string()),
        // The server is not (or no longer, or not yet) a writable primary; or a Redis
        // Cluster is failing over or moving the slot (`CLUSTERDOWN`, `TRYAGAIN`; `MOVED`
        // and `ASK` only when redirections ran out).
        Some(
            "READONLY" | "NOREPLICAS" | "MASTERDOWN" | "LOADING" | "UNBLOCKED" | "CLUSTERDOWN"
            | "TRYAGAIN" | "MOVED" | "ASK",
        ) => Failure::Unavailable,
        Some(_) if detail.contains("payload too large") => {
            Failure::Refused(ErrorCode::TooLarge, detail.to_string())
        }
        Some("ERR") => Failure::Refused(ErrorCode::BadRequest, detail.to_string()),
        Some(_) => Failure::Refused(ErrorCode::Internal, detail.to_string()),
        None => Failure::Unavailable,
    }
}

/// Whether a command refused with this error was not executed, so sending it to the
/// new primary cannot apply it twice.
fn not_executed(err: &RedisError) -> bool {
    matches!(err.code(), Some("READONLY" | "NOREPLICAS"))
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
    /// named another one: see `failover`).
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_times_are_parsed() {
        assert_eq!(retry_after("retry_after_ms=250"), 250);
        assert_eq!(retry_after("garbage"), 1000);
    }

    #[test]
    fn a_server_that_is_not_the_primary_means_unavailable() {
        for code in [
            "READONLY",
            "NOREPLICAS",
            "MASTERDOWN",
            "LOADING",
            "UNBLOCKED",
            "CLUSTERDOWN",
            "TRYAGAIN",
        ] {
            let err = redis::make_extension_error(code.to_string(), Some("now".into()));
            assert_eq!(classify(&err), Failure::Unavailable, "{code}");
            assert_eq!(
                not_executed(&err),
                code == "READONLY" || code == "NOREPLICAS"
            );
        }
        let err = redis::make_extension_error("ERR".into(), Some("bad".into()));
        assert!(matches!(
            classify(&err),
            Failure::Refused(ErrorCode::BadRequest, _)
        ));
    }
}
