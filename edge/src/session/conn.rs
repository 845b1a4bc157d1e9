//! One connection's state while it is open, and what every part of the session uses
//! to answer the client.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Instant;

use crate::context::Context;
use crate::fanout;
use crate::metrics::WorkerMetrics;
use crate::protocol::{self, ErrorCode};
use crate::session::ratelimit::Bucket;
use crate::ws::frame::{self, close};
use crate::ws::outbox::{Outbox, Pushed};

/// Who the client is, as established at the handshake.
pub struct Identity {
    /// User id (token `sub`, or the anonymous `?user=`).
    pub user: String,
    /// Room patterns from the token (`None`: every room).
    pub rooms: Option<Vec<String>>,
    /// Token expiry, Unix seconds (`None` for anonymous connections).
    pub expires_at: Option<u64>,
}

/// State of one connection while it is open.
pub struct Session {
    /// The worker it lives on.
    pub ctx: Rc<Context>,
    /// Local sequence number.
    pub seq: u64,
    /// Connection id registered in the module.
    pub conn_id: Rc<str>,
    /// Authenticated identity.
    pub identity: Identity,
    /// Outgoing queue.
    pub out: Rc<Outbox>,
    /// Local rate limit.
    pub bucket: RefCell<Bucket>,
    /// When the last frame arrived (liveness).
    pub last_seen: Cell<Instant>,
    /// The TCP stream ended or failed before any close frame: logged as 1006.
    pub vanished: Cell<bool>,
}

impl Session {
    /// A new connection of `identity` on worker `ctx`, sending through `out`.
    pub fn new(ctx: Rc<Context>, identity: Identity, out: Rc<Outbox>) -> Self {
        let (seq, conn_id) = ctx.next_conn();
        Self {
            bucket: RefCell::new(Bucket::new(ctx.config().conn_rate, Instant::now())),
            ctx,
            seq,
            conn_id: Rc::from(conn_id.as_str()),
            identity,
            out,
            last_seen: Cell::new(Instant::now()),
            vanished: Cell::new(false),
        }
    }

    /// This worker's metrics.
    pub fn metrics(&self) -> &WorkerMetrics {
        &self.ctx.metrics
    }

    /// Queues an answer (a text frame built by `write`): queued even while a close
    /// waits for the answers owed (see `ws::outbox`).
    pub fn send(&self, estimate: usize, write: impl FnOnce(&mut Vec<u8>)) {
        let frame = frame::text_with(estimate, write);
        let len = frame.len() as u64;
        match self.out.push_answer(frame, self.ctx.round()) {
            Pushed::Queued => {
                WorkerMetrics::inc(&self.metrics().messages_out);
                WorkerMetrics::add(&self.metrics().bytes_out, len);
            }
            Pushed::Dropped => WorkerMetrics::inc(&self.metrics().dropped),
            Pushed::SlowConsumer => {
                WorkerMetrics::inc(&self.metrics().dropped);
                WorkerMetrics::inc(&self.metrics().slow_consumer_closes);
            }
        }
    }

    /// Queues a control frame (ping, pong) or an echo, uncounted.
    pub fn push_raw(&self, frame: bytes::Bytes) {
        let _ = self.out.push(frame, self.ctx.round());
    }

    /// Queues an already-encoded frame, counting it as a delivery.
    pub fn push_counted(&self, frame: bytes::Bytes) {
        fanout::push(&self.ctx, &self.out, frame);
    }

    /// Sends an `error` answering request `id`.
    pub fn send_error(
        &self,
        id: Option<&[u8]>,
        code: ErrorCode,
        message: &str,
        retry: Option<u64>,
    ) {
        self.send(96 + message.len(), |o| {
            protocol::error(o, id, code, message, retry)
        });
    }

    /// Sends the `ack` of request `id`, with `extra` fields (raw JSON values).
    pub fn ack(&self, id: Option<&[u8]>, extra: &[(&str, &[u8])]) {
        let estimate = 64 + extra.iter().map(|(_, v)| v.len()).sum::<usize>();
        self.send(estimate, |o| protocol::ack(o, id, extra));
    }

    /// One structured event per closed connection: who, and the close code and reason
    /// (ours, or the peer's echoed back). Never a token or a payload.
    pub fn log_close(&self) {
        let (code, reason) = match self.out.close_status() {
            Some(_) if self.vanished.get() => (close::ABNORMAL, "connection lost".to_string()),
            Some(status) => status,
            None => (close::ABNORMAL, String::new()),
        };
        tracing::info!(
            conn = %self.conn_id,
            user = %self.identity.user,
            code,
            reason = %reason,
            "connection closed"
        );
    }
}
