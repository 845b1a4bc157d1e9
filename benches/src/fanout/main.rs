//! `roomcast-fanout`: an end-to-end load generator for roomcast edges.
//!
//! - `fanout`: K rooms of M receiving members spread round-robin over the edges, plus
//!   one publisher per room (on the first edge). Publishers send on a fixed schedule
//!   (open loop); each message carries its scheduled send time and a per-room sequence
//!   number, so receivers measure latency from the schedule (no coordinated omission)
//!   and count loss, duplicates and reordering per (room, receiver).
//! - `idle`: opens N connections over the edges and several source addresses, holds them,
//!   and reports the connect rate and the RSS growth of the watched processes.
//! - `churn`: a steady population of room members, replaced at a fixed rate (close =
//!   leave, then connect + join); joins/leaves per second and CPU per join/leave.
//! - `fanout --slow-pct P`: P % of the receivers never read (slow consumers).
//!
//! `--protocol socketio` makes both speak Engine.IO v4 / Socket.IO v4 instead of
//! roomcast's JSON protocol, against `benches/socketio/server.js` (the R2 reference):
//! the same rooms, schedule, stamps and checks, only the framing differs.
//!
//! Both take `--watch NAME=PID` (repeatable) to read those processes' CPU time and RSS
//! from /proc at the edges of the measured window, print a progress line on stderr every
//! second and write a JSON result (`--out`). One tokio `current_thread` runtime: the
//! generator uses one core, which the caller may pin.

// The `json!` results are large.
#![recursion_limit = "256"]

mod churn;
mod fanout;
mod idle;
mod procfs;
mod socketio;
mod ws;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::procfs::Watch;
use crate::ws::Ws;

#[derive(Parser)]
#[command(version, about = "End-to-end load generator for roomcast edges")]
struct Cli {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand)]
enum Mode {
    /// Rooms of M members fed by open-loop publishers; latency, loss, CPU per delivery.
    Fanout(FanoutArgs),
    /// Idle connections: connect rate and memory per connection.
    Idle(IdleArgs),
    /// Churn: a steady population where connections close (leaving their room) and are
    /// replaced (connect + join) at a fixed rate; joins/leaves per second and CPU per
    /// join/leave.
    Churn(ChurnArgs),
}

/// The wire protocol the generator speaks.
#[derive(Clone, Copy, PartialEq, Eq, Debug, ValueEnum)]
pub enum Protocol {
    /// roomcast's JSON protocol on `ws://HOST:PORT/ws?user=NAME`.
    Roomcast,
    /// Engine.IO v4 / Socket.IO v4 on `ws://HOST:PORT/socket.io/?EIO=4&transport=websocket&user=NAME`
    /// (`benches/socketio/server.js`).
    Socketio,
}

impl Protocol {
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Roomcast => "roomcast",
            Protocol::Socketio => "socketio",
        }
    }

    /// Connects as `user` and waits until the server is ready for requests (roomcast:
    /// `welcome`; Socket.IO: the Engine.IO open packet, then the namespace connect).
    pub async fn open(self, addr: SocketAddr, src: Option<IpAddr>, user: &str) -> Result<Ws> {
        match self {
            Protocol::Roomcast => {
                let mut c = ws::connect(addr, src, user).await?;
                ws::welcome(&mut c).await.context("welcome")?;
                Ok(c)
            }
            Protocol::Socketio => socketio::connect(addr, src, user).await,
        }
    }

    /// Joins `room` with request id `id` and waits for the ack.
    pub async fn join(self, c: &mut Ws, room: &str, id: u64) -> Result<()> {
        match self {
            Protocol::Roomcast => ws::join(c, room, id).await,
            Protocol::Socketio => socketio::join(c, room, id).await,
        }
    }
}

/// Options shared by both modes.
#[derive(Args, Clone)]
pub struct Common {
    /// Edge addresses (HOST:PORT), comma-separated; connections go round-robin.
    #[arg(long, value_delimiter = ',', required = true)]
    pub edges: Vec<SocketAddr>,
    /// Wire protocol: roomcast's edge, or Socket.IO v4 (the R2 reference server).
    #[arg(long, value_enum, default_value_t = Protocol::Roomcast)]
    pub protocol: Protocol,
    /// Process to read CPU time and RSS of, as NAME=PID (repeatable). Names starting
    /// with `edge` count as edges, `redis` as Redis, in the derived figures.
    #[arg(long, value_parser = procfs::parse_watch)]
    pub watch: Vec<Watch>,
    /// Write the result as JSON to this file.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Free-form label copied into the result.
    #[arg(long, default_value = "")]
    pub label: String,
    /// Bind client sockets to this many source addresses 127.0.0.2, 127.0.0.3, ...
    /// (0: let the kernel pick).
    #[arg(long, default_value_t = 0)]
    pub src_ips: u8,
    /// Connection handshakes in flight at once.
    #[arg(long, default_value_t = 128)]
    pub concurrency: usize,
}

impl Common {
    /// The source address of the `i`th connection.
    pub fn src(&self, i: usize) -> Option<IpAddr> {
        (self.src_ips > 0).then(|| {
            IpAddr::V4(Ipv4Addr::new(
                127,
                0,
                0,
                2 + (i % usize::from(self.src_ips)) as u8,
            ))
        })
    }
}

#[derive(Args)]
pub struct FanoutArgs {
    #[command(flatten)]
    pub common: Common,
    /// Rooms (K); each has its own publisher.
    #[arg(long, default_value_t = 10)]
    pub rooms: usize,
    /// Receiving members per room (M), not counting the publisher.
    #[arg(long, default_value_t = 10)]
    pub members: usize,
    /// Publishes per second per room (offered deliveries/s = K × M × rate).
    #[arg(long, default_value_t = 100.0)]
    pub rate: f64,
    /// Measured seconds (after the warm-up).
    #[arg(long, default_value_t = 15.0)]
    pub seconds: f64,
    /// Warm-up seconds: published and checked for loss, but not in the latency or rate figures.
    #[arg(long, default_value_t = 3.0)]
    pub warmup: f64,
    /// Seconds to keep reading after the last publish before counting losses.
    #[arg(long, default_value_t = 2.0)]
    pub drain: f64,
    /// Size of the `data` JSON value of each message, in bytes.
    #[arg(long, default_value_t = 100)]
    pub payload_bytes: usize,
    /// Prefix of room and user names (use a fresh one per run against long-lived edges).
    #[arg(long, default_value = "fo")]
    pub prefix: String,
    /// Percentage of receivers that never read (slow consumers), spread evenly over
    /// the rooms; they are left out of the loss and latency figures. 0: none.
    #[arg(long, default_value_t = 0.0)]
    pub slow_pct: f64,
}

#[derive(Args)]
pub struct ChurnArgs {
    #[command(flatten)]
    pub common: Common,
    /// Steady population: connections, each a member of one room.
    #[arg(long, default_value_t = 2000)]
    pub conns: usize,
    /// Rooms the population is spread over (connection i joins room i mod rooms).
    #[arg(long, default_value_t = 200)]
    pub rooms: usize,
    /// Churn cycles per second: each closes one connection (its rooms are left) and
    /// opens a fresh one in its place that joins the same room.
    #[arg(long, default_value_t = 100.0)]
    pub rate: f64,
    /// Measured seconds (after the warm-up).
    #[arg(long, default_value_t = 10.0)]
    pub seconds: f64,
    /// Warm-up seconds of churn before the measured window.
    #[arg(long, default_value_t = 2.0)]
    pub warmup: f64,
    /// Most cycles in flight at once; a cycle due while this many are still
    /// connecting is skipped (and counted).
    #[arg(long, default_value_t = 512)]
    pub max_in_flight: usize,
    /// Prefix of room and user names.
    #[arg(long, default_value = "ch")]
    pub prefix: String,
}

#[derive(Args)]
pub struct IdleArgs {
    #[command(flatten)]
    pub common: Common,
    /// Connections to open (at most ~19,900 per process: the open-file limit).
    #[arg(long, default_value_t = 10_000)]
    pub conns: usize,
    /// Seconds to hold them once all are open.
    #[arg(long, default_value_t = 10.0)]
    pub hold: f64,
    /// Seconds to wait after the last connection before the "after" reading.
    #[arg(long, default_value_t = 1.0)]
    pub settle: f64,
    /// Prefix of user names.
    #[arg(long, default_value = "idle")]
    pub prefix: String,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    let (result, out) = match cli.mode {
        Mode::Fanout(a) => {
            let out = a.common.out.clone();
            (local.block_on(&rt, fanout::run(a))?, out)
        }
        Mode::Idle(a) => {
            let out = a.common.out.clone();
            (local.block_on(&rt, idle::run(a))?, out)
        }
        Mode::Churn(a) => {
            let out = a.common.out.clone();
            (local.block_on(&rt, churn::run(a))?, out)
        }
    };
    let text = serde_json::to_string_pretty(&result)?;
    if let Some(path) = out {
        std::fs::write(&path, &text).with_context(|| format!("write {}", path.display()))?;
    } else {
        println!("{text}");
    }
    // Connections are dropped with the runtime; the edges see them close after the
    // measured window.
    drop(local);
    drop(rt);
    Ok(())
}
