//! Command line and environment configuration of the edge.

use std::net::SocketAddr;

use clap::Parser;

/// roomcast-edge: WebSocket edge servers for roomcast, one worker per core.
///
/// With no --redis URL it starts its own redis-server (from PATH) on a free loopback
/// port with libroomcast.so loaded, and stops it on exit.
#[derive(Debug, Clone, Parser)]
#[command(name = "roomcast-edge", version, about, long_about = None)]
pub struct Config {
    /// Optional subcommand (`token`); without one, the edge runs.
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Address to listen on (WebSocket at /ws, plus /metrics, /healthz, /readyz).
    #[arg(long, env = "ROOMCAST_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Redis URL: redis://host:port/ for one server, or
    /// redis+sentinel://[user:password@]host:port[,host:port…]/master-name[/db] to follow
    /// the primary Redis Sentinel names. Without it, an embedded redis-server is started.
    #[arg(long, env = "ROOMCAST_REDIS")]
    pub redis: Option<String>,

    /// Node id of this edge; workers use `<id>-w<N>`. Default: generated.
    #[arg(long, env = "ROOMCAST_NODE_ID")]
    pub node_id: Option<String>,

    /// Lease TTL in milliseconds; leases are renewed every third of it.
    #[arg(long, env = "ROOMCAST_LEASE_MS", default_value_t = 3000)]
    pub lease_ms: u64,

    /// HS256 secret for client tokens (`?token=`). Required unless --allow-anonymous.
    #[arg(long, env = "ROOMCAST_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,

    /// Accept anonymous connections (`/ws?user=NAME`). For local development only.
    #[arg(long, env = "ROOMCAST_ALLOW_ANONYMOUS")]
    pub allow_anonymous: bool,

    /// Serve the demo chat page at /demo (index.html, demo.js, demo.css and the
    /// roomcast.js client, embedded in the binary). Off: those paths are 404.
    #[arg(long, env = "ROOMCAST_DEMO")]
    pub demo: bool,

    /// Allowed Origin header value (repeatable), compared byte for byte (no wildcard,
    /// no suffix match). Empty: any origin. Requests without an Origin header
    /// (non-browser clients) are accepted unless --require-origin is given.
    #[arg(
        long = "allowed-origin",
        env = "ROOMCAST_ALLOWED_ORIGINS",
        value_delimiter = ','
    )]
    pub allowed_origins: Vec<String>,

    /// Refuse upgrade requests without an Origin header (403): for deployments whose
    /// only clients are browsers, so a script cannot connect without one.
    #[arg(long, env = "ROOMCAST_REQUIRE_ORIGIN")]
    pub require_origin: bool,

    /// Most WebSocket connections this process holds at once, all workers together;
    /// upgrade requests past it get 503. 0 = derived from the open-file limit
    /// (`RLIMIT_NOFILE` minus a reserve for Redis connections and accepts in flight).
    #[arg(long, env = "ROOMCAST_MAX_CONNS", default_value_t = 0)]
    pub max_conns: usize,

    /// Worker count: a number, or `auto` for one per core.
    #[arg(long, env = "ROOMCAST_WORKERS", default_value = "auto")]
    pub workers: String,

    /// Largest client message in bytes, counted across fragments (bigger: close 1009).
    #[arg(long, env = "ROOMCAST_MAX_MESSAGE_BYTES", default_value_t = 65536)]
    pub max_message_bytes: usize,

    /// Most frames one client message may be split into (more: close 1008), so that a
    /// stream of empty continuation frames cannot keep a message open forever.
    #[arg(long, env = "ROOMCAST_MAX_FRAGMENTS", default_value_t = 128)]
    pub max_fragments: usize,

    /// Most rooms one connection may be in at once.
    #[arg(long, env = "ROOMCAST_MAX_ROOMS_PER_CONN", default_value_t = 100)]
    pub max_rooms_per_conn: usize,

    /// Bytes a connection may have queued for sending before it is closed as a slow
    /// consumer (1008).
    #[arg(long, env = "ROOMCAST_SEND_QUEUE_BYTES", default_value_t = 1 << 20)]
    pub send_queue_bytes: usize,

    /// Milliseconds between server pings.
    #[arg(long, env = "ROOMCAST_PING_INTERVAL_MS", default_value_t = 25_000)]
    pub ping_interval_ms: u64,

    /// Milliseconds a peer has to send any frame (a pong, or anything else) after a
    /// server ping before it is closed as dead (1008 "ping timeout"). A dead peer is
    /// therefore reaped within ping interval + ping timeout.
    #[arg(long, env = "ROOMCAST_PING_TIMEOUT_MS", default_value_t = 10_000)]
    pub ping_timeout_ms: u64,

    /// Client messages per second each connection may send (local limit in front of
    /// the module; bursts of twice that are allowed). 0 = no local limit.
    #[arg(long, env = "ROOMCAST_CONN_RATE", default_value_t = 50)]
    pub conn_rate: u32,

    /// Most client publishes a worker sends in one `RC.PUBLISHM`. A worker keeps one
    /// batch in flight and sends what queued meanwhile as the next one. 1 = no
    /// batching: every publish is its own `RC.PUBLISH`.
    #[arg(long, env = "ROOMCAST_PUBLISH_BATCH_MAX", default_value_t = 256,
          value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub publish_batch_max: u32,

    /// Pacing of publish batches, in microseconds: after a batch of several publishes,
    /// a worker sends the next no sooner than this after it — larger batches and less
    /// Redis CPU under load, for up to this much more latency; while its worker paces, a
    /// connection publishes about once per this time. After a batch of one the next goes
    /// at once. 0 = no pacing: what queued while a batch was in flight goes as soon as
    /// the reply arrives.
    #[arg(long, env = "ROOMCAST_PUBLISH_BATCH_DELAY_US", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(0..=100_000))]
    pub publish_batch_delay_us: u64,

    /// Milliseconds a client has to finish the HTTP upgrade request (slowloris guard).
    #[arg(long, env = "ROOMCAST_HANDSHAKE_TIMEOUT_MS", default_value_t = 5_000)]
    pub handshake_timeout_ms: u64,

    /// Milliseconds a SIGTERM drain may take before the process exits anyway.
    #[arg(long, env = "ROOMCAST_DRAIN_MS", default_value_t = 5_000)]
    pub drain_ms: u64,

    /// Module arguments for the embedded redis-server (e.g. "publish-rate 20").
    #[arg(long, env = "ROOMCAST_EMBEDDED_MODULE_ARGS", default_value = "")]
    pub embedded_module_args: String,

    /// Path of libroomcast.so for the embedded redis-server. Default: next to this
    /// binary, then target/release.
    #[arg(long, env = "ROOMCAST_MODULE")]
    pub module: Option<String>,

    /// Benchmark reference only: no Redis; rooms are local to each worker.
    ///
    /// The same edge (upgrade, read loop, parsing, outbox, one write per batch), with
    /// no redis-server, leases or inbox reader: join/leave change only the worker's
    /// index, publish encodes the message once and fans it out to the room's members on
    /// the same worker (acks and messages carry "offset":null), send reaches the user's
    /// connections on the same worker, presence lists them, history is refused; no
    /// joined/left events. Not a way to run roomcast.
    #[arg(long, env = "ROOMCAST_BENCH_FLOOR", conflicts_with = "redis")]
    pub bench_floor: bool,

    /// Conformance testing only (Autobahn|Testsuite): no Redis, no welcome frame, no
    /// module commands; every complete client message, text or binary, is echoed back
    /// as one frame with its opcode. Everything before that is the production path:
    /// the upgrade, the frame reader, fragment assembly, the size and fragment limits,
    /// UTF-8 checks, close handling and the outbox. Not a way to run roomcast.
    #[arg(long, env = "ROOMCAST_ECHO", conflicts_with_all = ["redis", "bench_floor"])]
    pub echo: bool,
}

/// Subcommands.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum Command {
    /// Print an HS256 client token (for development and tests).
    Token {
        /// Secret shared with the edges (--jwt-secret).
        #[arg(long, env = "ROOMCAST_JWT_SECRET", hide_env_values = true)]
        secret: String,
        /// User id (`sub`).
        #[arg(long)]
        sub: String,
        /// Seconds until the token expires.
        #[arg(long, default_value_t = 3600)]
        ttl: u64,
        /// Room patterns the token allows (repeatable; `*` matches anything).
        #[arg(long = "room")]
        rooms: Vec<String>,
    },
}

impl Config {
    /// Number of workers to run.
    pub fn worker_count(&self) -> Result<usize, String> {
        if self.workers == "auto" {
            return Ok(std::thread::available_parallelism().map_or(1, |n| n.get()));
        }
        match self.workers.parse::<usize>() {
            Ok(n) if (1..=256).contains(&n) => Ok(n),
            _ => Err(format!(
                "--workers must be `auto` or a number from 1 to 256, got {:?}",
                self.workers
            )),
        }
    }

    /// The connection cap: `--max-conns`, or derived from the open-file limit.
    pub fn connection_cap(&self) -> usize {
        if self.max_conns > 0 {
            return self.max_conns;
        }
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes into the struct we pass and reads nothing else.
        let ok = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0;
        let files = if ok { limit.rlim_cur as usize } else { 1024 };
        cap_for_open_files(files)
    }

    /// Checks values that clap cannot.
    pub fn validate(&self) -> Result<(), String> {
        self.worker_count()?;
        if self.jwt_secret.is_none() && !self.allow_anonymous {
            return Err("give --jwt-secret (or --allow-anonymous for local development)".into());
        }
        if self.lease_ms < 300 {
            return Err("--lease-ms must be at least 300".into());
        }
        if self.max_fragments == 0 {
            return Err("--max-fragments must be at least 1".into());
        }
        if self.max_message_bytes < 64 {
            return Err("--max-message-bytes must be at least 64".into());
        }
        if let Some(node) = &self.node_id {
            if node.len() > 40 || roomcast_common::names::check_id(node.as_bytes()).is_err() {
                return Err("--node-id must be 1-40 characters of [A-Za-z0-9_.-]".into());
            }
        }
        Ok(())
    }
}

/// Open files kept out of the connection cap: listeners, Redis connections, the
/// embedded redis-server's pipes, and sockets accepted but not yet refused.
const RESERVED_FILES: usize = 256;

/// The connection cap for an open-file limit of `files`: what is left after the
/// reserve, and never less than a small working minimum.
fn cap_for_open_files(files: usize) -> usize {
    files.saturating_sub(RESERVED_FILES).max(64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_connection_cap_leaves_a_reserve_of_files() {
        assert_eq!(cap_for_open_files(20_000), 20_000 - RESERVED_FILES);
        assert_eq!(cap_for_open_files(1024), 1024 - RESERVED_FILES);
        assert_eq!(cap_for_open_files(100), 64);
        let explicit = Config::parse_from(["roomcast-edge", "--max-conns", "7"]);
        assert_eq!(explicit.connection_cap(), 7);
        let derived = Config::parse_from(["roomcast-edge"]);
        assert!(derived.connection_cap() >= 64);
    }

    #[test]
    fn echo_excludes_a_redis_url_and_the_floor() {
        assert!(Config::parse_from(["roomcast-edge", "--echo"]).echo);
        assert!(
            Config::try_parse_from(["roomcast-edge", "--echo", "--redis", "redis://x"]).is_err()
        );
        assert!(Config::try_parse_from(["roomcast-edge", "--echo", "--bench-floor"]).is_err());
    }
}
