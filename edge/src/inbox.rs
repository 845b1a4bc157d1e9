//! The inbox readers: what the module routes to this node, read from its inbox streams
//! and handed to the fan-out.
//!
//! # Layout
//!
//! - this file: [`run`] (the reader for the deployment: a subscriber to the node's
//!   channel on a standalone server, to its partitions' shard channels under Redis
//!   Cluster).
//! - [`standalone`]: live pushes of the node's inbox entries over a subscribed
//!   connection, with the inbox stream read (`XRANGE`) on start, reconnect and gaps.
//! - [`cluster`]: under Redis Cluster, live pushes on each partition's shard channel,
//!   subscribed afresh when the slot map changes.
//! - [`pushed`]: what both share — a push delivered, dropped as a duplicate, or a gap
//!   filled from the stream first.
//! - [`delivery`]: entries to the fan-out, and read positions lined up with a new
//!   server's streams.
//! - [`liveness`]: the probe that proves the readers still receive what is routed.
//!
//! Readers have their own connections and keep the last id delivered per stream (never
//! `$`), so nothing is skipped or delivered twice; on errors they reconnect with backoff
//! and go on from there.

pub mod cluster;
pub mod delivery;
pub mod liveness;
pub mod pushed;
pub mod standalone;

use std::rc::Rc;

use crate::context::Context;
use crate::inbox::liveness::Liveness;

/// Runs until aborted: one subscriber over the node's inbox on a standalone server, one
/// over its partitions' shard channels under Redis Cluster.
pub async fn run(ctx: Rc<Context>, liveness: Rc<Liveness>) {
    if ctx.shared().cluster {
        cluster::run(&ctx, &liveness).await
    } else {
        standalone::run(&ctx, &liveness).await
    }
}
