//! roomcast-edge: thin, fast WebSocket servers that terminate client sockets, forward
//! each client action to the roomcast module as one command, and fan out what the module
//! routes into their inbox streams.
//!
//! # Layout
//!
//! The modules are layers: each uses only those below it (`scripts/check_layers.py`
//! checks that no two import each other, directly or through others). A client's
//! message travels down the first column; what the module routes to this node comes up
//! the second, and meets it in the fan-out.
//!
//! - [`app`]: the process — flags in, one thread per worker, the accept loop, drain.
//! - [`http`]: routes; the `/ws` upgrade with authentication and Origin checks.
//! - [`session`]: one connection — lifecycle, heartbeat, client operations.
//! - [`inbox`]: the inbox readers (live pushes on the node's channel, or on its
//!   partitions' shard channels under Redis Cluster; `XRANGE` to recover) and their
//!   liveness probe.
//! - [`node`]: the node's leases, and following a Sentinel failover.
//! - [`fanout`]: an inbox entry → one frame → its local recipients; the
//!   `--bench-floor` rooms.
//! - [`context`]: one worker's handles and its local index of connections and rooms
//!   (with the holds and floors of joins in flight).
//! - [`backend`]: Redis — the command connection, the typed module client, where Redis
//!   is, the cluster map, reading streams, what errors mean.
//! - [`ws`]: WebSocket frames in and out, message assembly, close codes, the outbox.
//! - [`protocol`]: client JSON in (typed [`protocol::Request`]s), server JSON out.
//! - [`auth`]: HS256 tokens and room allow-lists.
//! - [`config`]: command line flags (with environment equivalents).
//! - [`metrics`]: per-worker counters and the Prometheus rendering.
//!
//! `docs/ARCHITECTURE.md` follows a message through these files.

pub mod app;
pub mod auth;
pub mod backend;
pub mod config;
pub mod context;
pub mod fanout;
pub mod http;
pub mod inbox;
pub mod metrics;
pub mod node;
pub mod protocol;
pub mod session;
pub mod ws;
