//! Where the edge finds its Redis primary: one fixed address, or the primary that Redis
//! Sentinel names.
//!
//! With `--redis redis+sentinel://h1:26379,h2:26379/mymaster` the edge asks the sentinels
//! (in order, the first that answers) for the current primary of `mymaster` and checks
//! that the server there really is a primary (`ROLE`) before using it — right after a
//! failover a sentinel may still name the old one. The command connection and the inbox
//! reader look the primary up again whenever their server fails them or stops being a
//! primary (see [`crate::backend`] and [`crate::inbox`]), so the edge follows a failover by itself.

use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client, RedisError, RedisResult, Value};

use crate::backend::cluster::ClusterTarget;
use crate::backend::resp::text;

/// The scheme of a Sentinel `--redis` URL.
pub const SENTINEL_SCHEME: &str = "redis+sentinel://";
/// Port of a sentinel given without one.
const SENTINEL_PORT: u16 = 26379;
/// How long one sentinel or candidate primary may take to connect or answer.
const ASK_TIMEOUT: Duration = Duration::from_secs(1);

/// Where Redis is.
#[derive(Debug, Clone)]
pub enum Target {
    /// One fixed server (`redis://`, `rediss://`, `unix://`): its client reconnects to
    /// the same address.
    Direct(Client),
    /// The primary Redis Sentinel names.
    Sentinel(SentinelTarget),
    /// A Redis Cluster, reached through the node `--redis` names (the edge finds out at
    /// start that it is one: see `app::backing`).
    Cluster(ClusterTarget),
}

/// A Sentinel-managed primary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentinelTarget {
    /// The sentinels, `host:port`, asked in this order.
    pub sentinels: Vec<String>,
    /// The monitored primary's name (`sentinel monitor <name> …`).
    pub master: String,
    /// `user:password@` (or `:password@`) for the data nodes, as written; empty for none.
    pub auth: String,
    /// Database number on the data nodes.
    pub db: u32,
}

impl SentinelTarget {
    /// Parses `redis+sentinel://[auth@]host[:port][,host[:port]…]/master[/db]`.
    pub fn parse(url: &str) -> Result<SentinelTarget, String> {
        let usage =
            "expected redis+sentinel://[user:password@]host:port[,host:port…]/master-name[/db]";
        let rest = url
            .strip_prefix(SENTINEL_SCHEME)
            .ok_or_else(|| format!("{url}: {usage}"))?;
        let (hosts, path) = rest
            .split_once('/')
            .ok_or_else(|| format!("{url}: no master name; {usage}"))?;
        let (auth, hosts) = match hosts.rsplit_once('@') {
            Some((auth, hosts)) => (format!("{auth}@"), hosts),
            None => (String::new(), hosts),
        };
        let sentinels = hosts
            .split(',')
            .map(|h| {
                sentinel_address(h).ok_or_else(|| format!("{url}: bad sentinel {h:?}; {usage}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let (master, db) = match path.split_once('/') {
            Some((master, db)) => (
                master,
                db.parse()
                    .map_err(|_| format!("{url}: bad database number {db:?}; {usage}"))?,
            ),
            None => (path, 0),
        };
        let master_ok = !master.is_empty()
            && master
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
        if !master_ok {
            return Err(format!("{url}: bad master name {master:?}; {usage}"));
        }
        Ok(SentinelTarget {
            sentinels,
            master: master.to_string(),
            auth,
            db,
        })
    }

    /// The URL of a data node at `host:port`.
    fn node_url(&self, host: &str, port: i64) -> String {
        let host = if host.contains(':') {
            format!("[{host}]")
        } else {
            host.to_string()
        };
        format!("redis://{}{host}:{port}/{}", self.auth, self.db)
    }

    /// Asks the sentinels for the primary and checks it; the first good answer wins.
    async fn resolve(&self) -> RedisResult<Client> {
        let mut last_error = None;
        for sentinel in &self.sentinels {
            match self.ask(sentinel).await {
                Ok(client) => return Ok(client),
                Err(e) => {
                    tracing::debug!(sentinel = %sentinel, error = %e, "sentinel gave no usable primary");
                    last_error = Some(e);
                }
            }
        }
        Err(last_error.unwrap_or_else(|| no_primary("no sentinel configured")))
    }

    /// A connection to one sentinel.
    pub async fn connect_sentinel(&self, sentinel: &str) -> RedisResult<MultiplexedConnection> {
        Client::open(format!("redis://{sentinel}/"))?
            .get_multiplexed_async_connection_with_config(&ask_config())
            .await
    }

    /// What the sentinel behind `conn` names as the primary: `(host, port)`.
    pub async fn named_on(&self, conn: &mut MultiplexedConnection) -> RedisResult<(String, i64)> {
        let reply: Value = redis::cmd("SENTINEL")
            .arg("GET-MASTER-ADDR-BY-NAME")
            .arg(&self.master)
            .query_async(conn)
            .await?;
        match reply {
            Value::Array(parts) => match parts.as_slice() {
                [host, port] => Ok((text(host), text(port).parse::<i64>().unwrap_or(0))),
                _ => Err(no_primary("a malformed answer")),
            },
            _ => Err(no_primary(&format!("{} is not monitored", self.master))),
        }
    }

    /// What one sentinel names as the primary.
    async fn named_by(&self, sentinel: &str) -> RedisResult<(String, i64)> {
        let mut conn = self.connect_sentinel(sentinel).await?;
        self.named_on(&mut conn).await
    }

    /// One sentinel's answer, checked against the server it names.
    async fn ask(&self, sentinel: &str) -> RedisResult<Client> {
        let (host, port) = self.named_by(sentinel).await?;
        let client = Client::open(self.node_url(&host, port))?;
        let mut node = client
            .get_multiplexed_async_connection_with_config(&ask_config())
            .await?;
        let role: Value = redis::cmd("ROLE").query_async(&mut node).await?;
        match role {
            Value::Array(parts) if parts.first().is_some_and(|r| text(r) == "master") => Ok(client),
            _ => Err(no_primary(&format!("{host}:{port} is not a primary (yet)"))),
        }
    }
}

/// `host[:port]` with the sentinel default port.
fn sentinel_address(h: &str) -> Option<String> {
    let h = h.trim();
    if h.is_empty() {
        return None;
    }
    let (host, port) = match h.rsplit_once(':') {
        Some((host, port)) if !host.ends_with(':') => (host, port.parse::<u16>().ok()?),
        _ => (h, SENTINEL_PORT),
    };
    (!host.is_empty() && port > 0).then(|| format!("{host}:{port}"))
}

fn ask_config() -> AsyncConnectionConfig {
    AsyncConnectionConfig::new()
        .set_connection_timeout(Some(ASK_TIMEOUT))
        .set_response_timeout(Some(ASK_TIMEOUT))
}

fn no_primary(why: &str) -> RedisError {
    RedisError::from((
        redis::ErrorKind::Io,
        "Redis Sentinel names no usable primary",
        why.to_string(),
    ))
}

impl Target {
    /// Parses a `--redis` URL.
    pub fn parse(url: &str) -> Result<Target, String> {
        if url.starts_with(SENTINEL_SCHEME) {
            return SentinelTarget::parse(url).map(Target::Sentinel);
        }
        Client::open(url)
            .map(Target::Direct)
            .map_err(|e| format!("bad --redis URL {url}: {e}"))
    }

    /// True when the primary can move (Sentinel): failures then call for a new lookup.
    pub fn follows_failover(&self) -> bool {
        matches!(self, Target::Sentinel(_))
    }

    /// A client for the current primary (under Redis Cluster: the seed node, which
    /// answers `RC.INFO` and `CLUSTER SLOTS`; commands go through `backend`'s cluster
    /// connection).
    pub async fn resolve(&self) -> RedisResult<Client> {
        match self {
            Target::Direct(client) => Ok(client.clone()),
            Target::Sentinel(s) => s.resolve().await,
            Target::Cluster(c) => Ok(c.seed.clone()),
        }
    }

    /// The cluster this target reaches, if it is one.
    pub fn cluster(&self) -> Option<&ClusterTarget> {
        match self {
            Target::Cluster(c) => Some(c),
            _ => None,
        }
    }

    /// What the start banner says.
    pub fn describe(&self) -> String {
        match self {
            Target::Direct(client) => format!("redis {}", client.get_connection_info().addr()),
            Target::Sentinel(s) => format!(
                "redis primary {:?} via sentinels {}",
                s.master,
                s.sentinels.join(",")
            ),
            Target::Cluster(c) => {
                format!("redis cluster via {}", c.seed.get_connection_info().addr())
            }
        }
    }
}

/// Whether an error means "this server is not (or no longer) the primary, or cannot be
/// reached": the primary must be looked up again.
pub fn calls_for_lookup(err: &RedisError) -> bool {
    matches!(
        err.code(),
        Some("READONLY" | "NOREPLICAS" | "MASTERDOWN" | "UNBLOCKED" | "LOADING")
    ) || err.is_io_error()
        || err.is_connection_dropped()
        || err.is_connection_refusal()
        || err.is_timeout()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentinel_urls_parse() {
        let t =
            SentinelTarget::parse("redis+sentinel://10.0.0.1:26380,sentinel-b/mymaster").unwrap();
        assert_eq!(t.sentinels, ["10.0.0.1:26380", "sentinel-b:26379"]);
        assert_eq!(
            (t.master.as_str(), t.auth.as_str(), t.db),
            ("mymaster", "", 0)
        );
        assert_eq!(t.node_url("10.0.0.9", 6380), "redis://10.0.0.9:6380/0");

        let t = SentinelTarget::parse("redis+sentinel://app:s3cr@t@h1:1,h2:2/main.db-1/3").unwrap();
        assert_eq!(t.auth, "app:s3cr@t@");
        assert_eq!((t.master.as_str(), t.db), ("main.db-1", 3));
        assert_eq!(t.node_url("::1", 7000), "redis://app:s3cr@t@[::1]:7000/3");
    }

    #[test]
    fn bad_sentinel_urls_say_what_is_wrong() {
        for (url, why) in [
            ("redis+sentinel://h1:26379", "no master name"),
            ("redis+sentinel://h1:26379/", "bad master name"),
            ("redis+sentinel://h1:x/m", "bad sentinel"),
            ("redis+sentinel://h1,,h2/m", "bad sentinel"),
            ("redis+sentinel://h1/m/x", "bad database number"),
            ("redis+sentinel://h1/m m", "bad master name"),
        ] {
            let err = SentinelTarget::parse(url).unwrap_err();
            assert!(err.contains(why), "{url}: {err}");
        }
        assert!(Target::parse("redis+sentinel://h/m")
            .unwrap()
            .follows_failover());
        assert!(!Target::parse("redis://127.0.0.1:6379/")
            .unwrap()
            .follows_failover());
        assert!(Target::parse("nope://x").is_err());
    }
}
