//! Fan-out: one inbox entry → one encoded frame → every local recipient's outbox (a
//! `batch` entry: each of the entries it packs, in order).
//!
//! # Layout
//!
//! - this file: [`fan_out`] (an entry to its local recipients) and [`push`] (one frame
//!   to one outbox, counted).
//! - [`floor`]: `--bench-floor`'s in-process rooms, delivered through [`fan_out`].
//!
//! Each entry is encoded into a frame once; the same bytes are queued to every local
//! recipient. Room frames go through the local index (`context::local`), which holds
//! them for joins in flight and skips what a join's replay covered.

pub mod floor;

use bytes::Bytes;
use roomcast_common::batch;
use roomcast_common::entry::{Entry, Kind};

use crate::context::Context;
use crate::metrics::WorkerMetrics;
use crate::protocol;
use crate::ws::frame::{self, close};
use crate::ws::outbox::{Outbox, Pushed};

/// Delivers one entry to its local recipients.
pub fn fan_out(ctx: &Context, e: &Entry<'_>) {
    let Some(kind) = e.kind else { return };
    match kind {
        Kind::Message => {
            let frame = frame::text_with(e.data.len() + e.room.len() + 64, |out| {
                protocol::message(out, e.room, e.from, e.data, e.offset)
            });
            send_to_room(ctx, e.room, ctx.seq_of(e.skip), e.offset, &frame);
        }
        Kind::Join | Kind::Leave => {
            let frame = frame::text_with(64 + e.room.len() + e.user.len(), |out| {
                protocol::presence_event(out, kind == Kind::Join, e.room, e.user)
            });
            send_to_room(ctx, e.room, ctx.seq_of(e.skip), "", &frame);
        }
        Kind::Direct => {
            let frame = frame::text_with(e.data.len() + 48, |out| {
                protocol::direct(out, e.from, e.data)
            });
            let local = ctx.local.borrow();
            let Some(seqs) = local.users.get(e.user) else {
                return;
            };
            for seq in seqs {
                if let Some(conn) = local.conns.get(seq) {
                    push(ctx, &conn.out, frame.clone());
                }
            }
        }
        // Read back by the inbox liveness probe; nothing to deliver.
        Kind::Probe => {}
        // One `RC.PUBLISHM`'s messages for this node: each as if it were its own entry
        // (batches do not nest: `batch::entries` skips a packed batch).
        Kind::Batch => {
            for packed in batch::entries(e.data) {
                fan_out(ctx, &packed);
            }
        }
        Kind::Kick => {
            let reason = if e.reason.is_empty() {
                "kicked"
            } else {
                e.reason
            };
            let local = ctx.local.borrow();
            let targets: Vec<u64> = if e.conn.is_empty() {
                local.users.get(e.user).cloned().unwrap_or_default()
            } else {
                ctx.seq_of(e.conn).into_iter().collect()
            };
            for seq in targets {
                if let Some(conn) = local.conns.get(&seq) {
                    conn.out.close(close::POLICY, reason);
                }
            }
        }
    }
}

/// Queues a room frame to every local member except `skip` (see
/// `context::local::Local::send_to_room`).
fn send_to_room(ctx: &Context, room: &str, skip: Option<u64>, offset: &str, frame: &Bytes) {
    ctx.local
        .borrow_mut()
        .send_to_room(room, skip, offset, frame, |out, frame| {
            push(ctx, out, frame)
        });
}

/// Queues one frame to one connection, counting it as a delivery.
pub fn push(ctx: &Context, out: &Outbox, frame: Bytes) {
    let m = &ctx.metrics;
    let len = frame.len() as u64;
    match out.push(frame, ctx.round()) {
        Pushed::Queued => {
            WorkerMetrics::inc(&m.deliveries);
            WorkerMetrics::inc(&m.messages_out);
            WorkerMetrics::add(&m.bytes_out, len);
        }
        Pushed::Dropped => WorkerMetrics::inc(&m.dropped),
        Pushed::SlowConsumer => {
            WorkerMetrics::inc(&m.dropped);
            WorkerMetrics::inc(&m.slow_consumer_closes);
        }
    }
}
