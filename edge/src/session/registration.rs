//! A connection's registration: in the module (`RC.CONNECT`, needing the node's lease)
//! and the local index when it opens, and out of both when it closes.

use std::collections::HashSet;
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::backend::errors::classify;
use crate::context::local::Conn;
use crate::context::Mode;
use crate::metrics::WorkerMetrics;
use crate::protocol;
use crate::session::conn::Session;
use crate::session::failures::refused_registration;
use crate::session::rooms::Rooms;

impl Session {
    /// Registers the connection in the module (not on the floor), then the local index
    /// and the welcome. False when refused (the close is queued).
    pub async fn register(&self) -> bool {
        let ctx = &self.ctx;
        let rooms = Rooms::of(ctx);
        if let Err(e) = rooms.connect(&self.identity.user, &self.conn_id).await {
            tracing::warn!(error = %e, "RC.CONNECT refused");
            let (code, reason) = refused_registration(&classify(&e));
            self.out.close(code, reason);
            return false;
        }
        ctx.local.borrow_mut().add_conn(
            self.seq,
            Conn {
                id: self.conn_id.clone(),
                user: Rc::from(self.identity.user.as_str()),
                rooms: HashSet::new(),
                out: self.out.clone(),
                expires: self.identity.expires_at.map(|exp| {
                    let now = SystemTime::now()
                        .duration_since(UNIX_EPOCH)
                        .unwrap_or_default();
                    Instant::now() + Duration::from_secs(exp).saturating_sub(now)
                }),
            },
        );
        WorkerMetrics::inc(&self.metrics().connections_opened);
        if ctx.mode() != Mode::Echo {
            let heartbeat = ctx.config().ping_interval_ms;
            self.send(128, |o| {
                protocol::welcome(o, &self.conn_id, &self.identity.user, ctx.node(), heartbeat)
            });
        }
        true
    }

    /// Leaves every room and removes the connection from presence (unless the whole
    /// node is being removed with `RC.NODE.DOWN`, or there is no module).
    pub async fn unregister(&self) {
        let ctx = &self.ctx;
        let conn = ctx.local.borrow_mut().remove_conn(self.seq);
        WorkerMetrics::inc(&self.metrics().connections_closed);
        let Some(conn) = conn else { return };
        if ctx.is_draining() {
            return;
        }
        let rooms = conn.rooms.iter().map(String::as_str);
        if let Err(e) = Rooms::of(ctx).disconnect(&conn.user, &conn.id, rooms).await {
            // The lease sweep removes what we could not.
            tracing::debug!(error = %e, "could not unregister a closed connection");
        }
    }
}
