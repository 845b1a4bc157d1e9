//! One client connection, from the finished upgrade to its cleanup.
//!
//! # Layout
//!
//! - this file: [`run`], the connection's lifecycle.
//! - [`conn`]: the connection's state ([`Session`], [`Identity`]) and its answers to
//!   the client.
//! - [`registration`]: in and out of the module and the local index.
//! - [`reading`]: frames → messages → typed requests, the local rate limit.
//! - [`heartbeat`]: server pings, dead-peer detection and token expiry.
//! - [`ops`]: the client operations, each one module command (or the floor).
//! - [`in_flight`]: a connection's publishes sent on before the previous one's answer.
//! - [`rooms`]: what the operations run on: the module, or the in-process floor.
//! - [`failures`]: a failed module command → the client's error or close code.
//! - [`ratelimit`]: the local per-connection token bucket.
//!
//! Frames are read with a small, growable buffer (`ws::read`), while everything the
//! server sends goes through the connection's outbox (`ws::outbox`): one writer, one
//! write per batch.

pub mod conn;
pub mod failures;
pub mod heartbeat;
pub mod in_flight;
pub mod ops;
pub mod ratelimit;
pub mod reading;
pub mod registration;
pub mod rooms;

use std::rc::Rc;

use fastwebsockets::upgrade::UpgradeFut;

use crate::context::capacity::Slot;
use crate::context::Context;
pub use crate::session::conn::{Identity, Session};
use crate::ws::outbox::Outbox;
use crate::ws::read::FrameReader;

/// Runs a connection from the finished upgrade to its cleanup. `slot` is its place
/// under the connection cap, given back when this returns.
pub async fn run(ctx: Rc<Context>, upgrade: UpgradeFut, identity: Identity, slot: Slot) {
    let _slot = slot;
    let ws = match upgrade.await {
        Ok(ws) => ws,
        Err(e) => {
            tracing::debug!(error = %e, "upgrade failed");
            return;
        }
    };
    let (read_half, write_half) = tokio::io::split(ws.into_inner());
    let mut reader = FrameReader::new(read_half);

    let out = Rc::new(Outbox::new(ctx.config().send_queue_bytes));
    let writer = tokio::task::spawn_local({
        let out = out.clone();
        async move { out.run_writer(write_half).await }
    });
    let session = Rc::new(Session::new(ctx, identity, out.clone()));

    // Registration and cleanup are module commands whose futures are several KiB: boxed,
    // they do not widen this task, which every open connection holds while it is idle.
    if !Box::pin(session.register()).await {
        out.finished().await;
        let _ = writer.await;
        session.log_close();
        return;
    }
    let read_task = tokio::task::spawn_local({
        let session = session.clone();
        async move { session.read_loop(&mut reader).await }
    });
    session.supervise(read_task).await;
    let _ = writer.await;
    session.log_close();
    Box::pin(session.unregister()).await;
}
