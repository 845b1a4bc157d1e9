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

    /// Redis URL (redis://host:port/). Without it, an embedded redis-server is started.
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

    /// Allowed Origin header value (repeatable). Empty: any origin. Requests without an
    /// Origin header (non-browser clients) are always accepted.
    #[arg(
        long = "allowed-origin",
        env = "ROOMCAST_ALLOWED_ORIGINS",
        value_delimiter = ','
    )]
    pub allowed_origins: Vec<String>,

    /// Worker count: a number, or `auto` for one per core.
    #[arg(long, env = "ROOMCAST_WORKERS", default_value = "auto")]
    pub workers: String,

    /// Largest client message in bytes, counted across fragments (bigger: close 1009).
    #[arg(long, env = "ROOMCAST_MAX_MESSAGE_BYTES", default_value_t = 65536)]
    pub max_message_bytes: usize,

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

    /// Milliseconds of silence (no frame at all) after which a peer is closed as dead.
    #[arg(long, env = "ROOMCAST_PING_TIMEOUT_MS", default_value_t = 60_000)]
    pub ping_timeout_ms: u64,

    /// Client messages per second each connection may send (local limit in front of
    /// the module; bursts of twice that are allowed). 0 = no local limit.
    #[arg(long, env = "ROOMCAST_CONN_RATE", default_value_t = 50)]
    pub conn_rate: u32,

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

    /// Checks values that clap cannot.
    pub fn validate(&self) -> Result<(), String> {
        self.worker_count()?;
        if self.jwt_secret.is_none() && !self.allow_anonymous {
            return Err("give --jwt-secret (or --allow-anonymous for local development)".into());
        }
        if self.lease_ms < 300 {
            return Err("--lease-ms must be at least 300".into());
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
