//! The worker's connection to Redis for module commands, and what their errors mean
//! to a client.
//!
//! Commands share one multiplexed connection (`ConnectionManager`, which reconnects on
//! its own with backoff); replies are timed into the Redis round-trip histogram. The
//! blocking inbox reader has its own connection (see `reader`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Cmd, Pipeline, RedisError, Value};

use crate::metrics::WorkerMetrics;
use crate::protocol::ErrorCode;

/// Command connection of one worker.
#[derive(Clone)]
pub struct Backend {
    /// Multiplexed, self-reconnecting connection; `None` under `--bench-floor`, where
    /// every command fails as unavailable (the floor's sessions send none).
    conn: Option<ConnectionManager>,
    /// Where round trips and errors are counted.
    metrics: Arc<WorkerMetrics>,
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
        Some(_) if detail.contains("payload too large") => {
            Failure::Refused(ErrorCode::TooLarge, detail.to_string())
        }
        Some("ERR") => Failure::Refused(ErrorCode::BadRequest, detail.to_string()),
        Some(_) => Failure::Refused(ErrorCode::Internal, detail.to_string()),
        None => Failure::Unavailable,
    }
}

impl Backend {
    /// Connects (lazily: the first command connects, later ones reconnect as needed);
    /// without a client (`--bench-floor`), a backend whose commands all fail.
    pub fn new(
        client: Option<redis::Client>,
        metrics: Arc<WorkerMetrics>,
    ) -> Result<Self, RedisError> {
        let Some(client) = client else {
            return Ok(Self {
                conn: None,
                metrics,
            });
        };
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_secs(5)))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_secs(2));
        let conn = ConnectionManager::new_lazy_with_config(client, config)?;
        Ok(Self {
            conn: Some(conn),
            metrics,
        })
    }

    /// Runs one command.
    pub async fn run(&self, cmd: &Cmd) -> Result<Value, RedisError> {
        let Some(conn) = &self.conn else {
            return Err(no_redis());
        };
        let started = Instant::now();
        let result = cmd.query_async(&mut conn.clone()).await;
        self.observe(started, &result);
        result
    }

    /// Runs a pipeline (errors of individual commands come back as values).
    pub async fn run_pipeline(&self, pipe: &Pipeline) -> Result<Vec<Value>, RedisError> {
        let Some(conn) = &self.conn else {
            return Err(no_redis());
        };
        let started = Instant::now();
        let result = pipe.query_async(&mut conn.clone()).await;
        self.observe(started, &result);
        result
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
}
