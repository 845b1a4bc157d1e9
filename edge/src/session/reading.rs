//! The session's read side: frames → messages → requests.
//!
//! Frames are read with [`FrameReader`] and assembled with [`Assembler`]; every
//! complete message is echoed back (`--echo`) or parsed into a [`Request`], rate
//! limited, and handed to its operation (see `session::ops`).

use std::time::Instant;

use crate::context::Mode;
use crate::metrics::WorkerMetrics;
use crate::protocol::{self, ClientMessage, ErrorCode, Request};
use crate::session::conn::Session;
use crate::ws::frame;
use crate::ws::message::{read_error_close, Assembler, Step};
use crate::ws::read::FrameReader;

impl Session {
    /// Reads frames until the peer closes, the protocol is broken, or the socket fails;
    /// once a close is under way, keeps reading (and discarding) until EOF, so that the
    /// socket is not dropped with unread data — which would make the kernel send a reset
    /// and the peer lose our close frame and final replies.
    pub async fn read_loop<S: tokio::io::AsyncRead + Unpin>(&self, reader: &mut FrameReader<S>) {
        self.read_frames(reader).await;
        if self.out.is_closing() {
            // Bounded by the supervisor's grace period after our close frame.
            reader.discard_until_eof().await;
        }
    }

    /// The read loop proper: returns when the connection starts closing.
    async fn read_frames<S: tokio::io::AsyncRead + Unpin>(&self, reader: &mut FrameReader<S>) {
        let config = self.ctx.config();
        let max = config.max_message_bytes;
        let mut messages = Assembler::new(max, config.max_fragments);
        loop {
            let frame = match reader.next(max).await {
                Ok(frame) => frame,
                Err(e) => {
                    if let Some((code, reason)) = read_error_close(e) {
                        self.out.close(code, reason);
                    }
                    return;
                }
            };
            self.last_seen.set(Instant::now());
            match messages.push(frame) {
                // Boxed: an operation's future (a module command in flight) is several
                // KiB, and inlined it would make every idle connection's read task that
                // big; boxed, only a connection with a request in flight pays for it.
                Step::Message { text, payload } => Box::pin(self.on_message(text, &payload)).await,
                Step::Nothing => {}
                Step::Ping(payload) => self.push_raw(frame::encode(frame::OP_PONG, &payload)),
                Step::Close(code, reason) => {
                    self.out.close(code, reason);
                    return;
                }
            }
            if self.out.is_closing() {
                return;
            }
        }
    }

    /// One complete client message.
    async fn on_message(&self, text: bool, payload: &[u8]) {
        WorkerMetrics::inc(&self.metrics().messages_in);
        if self.ctx.mode() == Mode::Echo {
            let opcode = if text {
                frame::OP_TEXT
            } else {
                frame::OP_BINARY
            };
            self.push_raw(frame::encode(opcode, payload));
            return;
        }
        if !text {
            self.send_error(None, ErrorCode::BadRequest, "send JSON text frames", None);
            return;
        }
        let msg: ClientMessage = match serde_json::from_slice(payload) {
            Ok(msg) => msg,
            Err(e) => {
                let message = format!("malformed message: {e}");
                self.send_error(None, ErrorCode::BadRequest, &message, None);
                return;
            }
        };
        let id = msg.id();
        let request = msg.request();
        if !matches!(request, Request::Ping) {
            if let Err(retry) = self.bucket.borrow_mut().take(Instant::now()) {
                WorkerMetrics::inc(&self.metrics().rate_limited);
                self.send_error(id, ErrorCode::RateLimited, "slow down", Some(retry));
                return;
            }
        }
        match request {
            Request::Ping => self.send(32, |o| protocol::pong(o, id)),
            Request::Join { room, since } => self.join(id, room, since).await,
            Request::Leave { room } => self.leave(id, room).await,
            Request::Publish { room, data } => self.publish(id, room, data).await,
            Request::Send { user, data } => self.direct(id, user, data).await,
            Request::Presence { room } => self.presence(id, room).await,
            Request::History { room, since, limit } => self.history(id, room, since, limit).await,
            Request::Unknown(op) => {
                let message = format!("unknown op {:?}", op.chars().take(32).collect::<String>());
                self.send_error(id, ErrorCode::BadRequest, &message, None);
            }
        }
    }
}
