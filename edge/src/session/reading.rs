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
use crate::session::in_flight::{Answer, InFlight};
use crate::ws::frame;
use crate::ws::message::{read_error_close, Assembler, Step};
use crate::ws::read::{Frame, FrameReader, ReadError};

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

    /// The read loop proper: returns when the connection starts closing, once every
    /// publish it sent on is answered.
    async fn read_frames<S: tokio::io::AsyncRead + Unpin>(&self, reader: &mut FrameReader<S>) {
        let config = self.ctx.config();
        let max = config.max_message_bytes;
        let mut messages = Assembler::new(max, config.max_fragments);
        let mut in_flight = InFlight::default();
        loop {
            // An idle connection waits for its next frame alone; one with publishes in
            // flight also for their replies (boxed: that wait is bigger, and only such a
            // connection should pay for it, not every idle one's read task).
            let read = if in_flight.is_empty() {
                reader.next(max).await
            } else {
                match Box::pin(frame_or_answer(reader, max, &mut in_flight)).await {
                    Next::Frame(read) => read,
                    Next::Answer(answer) => {
                        if let Some(answer) = answer {
                            self.answer(answer);
                        }
                        if self.out.is_closing() {
                            break;
                        }
                        continue;
                    }
                }
            };
            let frame = match read {
                Ok(frame) => frame,
                Err(e) => {
                    if let Some((code, reason)) = read_error_close(e) {
                        self.out.close(code, reason);
                    }
                    break;
                }
            };
            self.last_seen.set(Instant::now());
            match messages.push(frame) {
                // Boxed: an operation's future (a module command in flight) is several
                // KiB, and inlined it would make every idle connection's read task that
                // big; boxed, only a connection with a request in flight pays for it.
                Step::Message { text, payload } => {
                    Box::pin(self.on_message(text, &payload, &mut in_flight)).await;
                }
                Step::Nothing => {}
                Step::Ping(payload) => self.push_raw(frame::encode(frame::OP_PONG, &payload)),
                Step::Close(code, reason) => {
                    self.out.close(code, reason);
                    break;
                }
            }
            if self.out.is_closing() {
                break;
            }
        }
        // Closing or not, every publish sent on gets its answer (a close waits for them).
        if !in_flight.is_empty() {
            Box::pin(self.settle(&mut in_flight)).await;
        }
    }

    /// Answers every publish in flight, oldest first.
    async fn settle(&self, in_flight: &mut InFlight) {
        while let Some(answer) = in_flight.next().await {
            self.answer(answer);
        }
    }

    /// Answers a publish whose reply came; the answer owed is then settled.
    fn answer(&self, answer: Answer) {
        let Answer { id, reply, owed } = answer;
        self.answer_publish(id.as_deref(), reply);
        drop(owed);
    }

    /// One complete client message. A publish that passes its checks joins the
    /// connection's publishes in flight; any other request is handled once those
    /// before it are answered, so answers keep the order of the requests.
    async fn on_message(&self, text: bool, payload: &[u8], in_flight: &mut InFlight) {
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
        // Owed from here on: a close requested meanwhile sends this answer first.
        let owed = self.out.owe_answer();
        let msg = match parse(text, payload) {
            Ok(msg) => msg,
            Err(message) => {
                self.settle(in_flight).await;
                self.send_error(None, ErrorCode::BadRequest, &message, None);
                return;
            }
        };
        let id = msg.id();
        let request = msg.request();
        if !matches!(request, Request::Ping) {
            let taken = self.bucket.borrow_mut().take(Instant::now());
            if let Err(retry) = taken {
                self.settle(in_flight).await;
                WorkerMetrics::inc(&self.metrics().rate_limited);
                self.send_error(id, ErrorCode::RateLimited, "slow down", Some(retry));
                return;
            }
        }
        if let Request::Publish { room, data } = request {
            if let Some(reply) = self.queue_publish(room, data) {
                in_flight.push(id, reply, owed);
                return;
            }
        }
        self.settle(in_flight).await;
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
        drop(owed);
    }
}

/// The next frame or the reply of the oldest publish in flight, whichever comes first;
/// the reply alone once the connection has as many in flight as it may (it reads on
/// when the oldest is answered). `FrameReader::next` is cancel-safe: a frame half read
/// when a reply wins stays buffered.
async fn frame_or_answer<S: tokio::io::AsyncRead + Unpin>(
    reader: &mut FrameReader<S>,
    max: usize,
    in_flight: &mut InFlight,
) -> Next {
    if in_flight.is_full() {
        return Next::Answer(in_flight.next().await);
    }
    tokio::select! {
        biased;
        answer = in_flight.next() => Next::Answer(answer),
        frame = reader.next(max) => Next::Frame(frame),
    }
}

/// What the read loop got next: a reply for the oldest publish in flight, or a frame.
enum Next {
    Answer(Option<Answer>),
    Frame(Result<Frame, ReadError>),
}

/// A client message from a complete WebSocket message, or why it is not one.
fn parse(text: bool, payload: &[u8]) -> Result<ClientMessage<'_>, String> {
    if !text {
        return Err("send JSON text frames".to_string());
    }
    serde_json::from_slice(payload).map_err(|e| format!("malformed message: {e}"))
}
