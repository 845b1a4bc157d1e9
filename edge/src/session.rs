//! One client connection: registration, the read loop (frames → operations → module
//! commands), liveness, and cleanup.
//!
//! Frames are read with [`FrameReader`] (a small, growable buffer; control frames handled here),
//! while everything the server sends goes through the connection's [`Outbox`]: one
//! writer, one write per batch. Whole-message size is counted across fragments (close
//! 1009), unmasked client frames are refused (close 1002), and every client operation
//! becomes exactly one module command (none under `--bench-floor`: see [`crate::floor`]).

use std::cell::{Cell, RefCell};
use std::collections::HashSet;
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use fastwebsockets::upgrade::UpgradeFut;
use redis::Value;
use roomcast_common::names::check_name;
use roomcast_common::offset::Offset;

use crate::auth::room_allowed;
use crate::backend::{classify, Failure};
use crate::capacity::Slot;
use crate::floor;
use crate::frame::{self, close};
use crate::lease;
use crate::local::Conn;
use crate::metrics::WorkerMetrics;
use crate::outbox::{Outbox, Pushed};
use crate::protocol::{self, ClientMessage, ErrorCode};
use crate::ratelimit::Bucket;
use crate::worker::Worker;
use crate::wsread::{self, FrameReader, ReadError};

/// Who the client is, as established at the handshake.
pub struct Identity {
    /// User id (token `sub`, or the anonymous `?user=`).
    pub user: String,
    /// Room patterns from the token (`None`: every room).
    pub rooms: Option<Vec<String>>,
    /// Token expiry, Unix seconds (`None` for anonymous connections).
    pub expires_at: Option<u64>,
}

/// What a connection's liveness timer waits for next.
#[derive(Clone, Copy)]
enum Due {
    /// Sending the next server ping.
    Ping,
    /// The answer to the ping sent at these instants (std, to compare with
    /// `last_seen`; tokio, to schedule the next ping).
    Answer(Instant, tokio::time::Instant),
}

/// State of one connection while it is open.
struct Session {
    /// The worker it lives on.
    worker: Rc<Worker>,
    /// Local sequence number.
    seq: u64,
    /// Connection id registered in the module.
    conn_id: Rc<str>,
    /// Authenticated identity.
    identity: Identity,
    /// Outgoing queue.
    out: Rc<Outbox>,
    /// Local rate limit.
    bucket: RefCell<Bucket>,
    /// When the last frame arrived (liveness).
    last_seen: Cell<Instant>,
    /// The TCP stream ended or failed before any close frame: logged as 1006.
    vanished: Cell<bool>,
}

/// Runs a connection from the finished upgrade to its cleanup. `slot` is its place
/// under the connection cap, given back when this returns.
pub async fn run(worker: Rc<Worker>, upgrade: UpgradeFut, identity: Identity, slot: Slot) {
    let _slot = slot;
    let ws = match upgrade.await {
        Ok(ws) => ws,
        Err(e) => {
            tracing::debug!(error = %e, "upgrade failed");
            return;
        }
    };
    let config = &worker.shared.config;
    let (read_half, write_half) = tokio::io::split(ws.into_inner());
    let mut reader = FrameReader::new(read_half);

    let out = Rc::new(Outbox::new(config.send_queue_bytes));
    let writer = tokio::task::spawn_local({
        let out = out.clone();
        async move { out.run_writer(write_half).await }
    });
    let (seq, conn_id) = worker.next_conn();
    let session = Rc::new(Session {
        bucket: RefCell::new(Bucket::new(config.conn_rate, Instant::now())),
        worker: worker.clone(),
        seq,
        conn_id: Rc::from(conn_id.as_str()),
        identity,
        out: out.clone(),
        last_seen: Cell::new(Instant::now()),
        vanished: Cell::new(false),
    });

    if !session.register().await {
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
    session.unregister().await;
}

impl Session {
    fn metrics(&self) -> &WorkerMetrics {
        &self.worker.metrics
    }

    /// Queues a text frame built by `write`.
    fn send(&self, estimate: usize, write: impl FnOnce(&mut Vec<u8>)) {
        let frame = frame::text_with(estimate, write);
        let len = frame.len() as u64;
        match self.out.push(frame, self.worker.round.get()) {
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

    /// One structured event per closed connection: who, and the close code and reason
    /// (ours, or the peer's echoed back). Never a token or a payload.
    fn log_close(&self) {
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

    fn send_error(&self, id: Option<&[u8]>, code: ErrorCode, message: &str, retry: Option<u64>) {
        self.send(96 + message.len(), |o| {
            protocol::error(o, id, code, message, retry)
        });
    }

    /// `RC.CONNECT` (not under `--bench-floor`), then the local index and the welcome.
    /// False when refused.
    async fn register(&self) -> bool {
        let w = &self.worker;
        if !w.floor() {
            let mut cmd = redis::cmd("RC.CONNECT");
            cmd.arg(&*w.routed_name(&self.identity.user))
                .arg(&w.node)
                .arg(&*self.conn_id);
            if let Err(e) = lease::run_leased(w, &cmd).await {
                tracing::warn!(error = %e, "RC.CONNECT refused");
                let (code, reason) = match classify(&e) {
                    Failure::Refused(ErrorCode::Forbidden, _) => {
                        (close::POLICY, "too many connections")
                    }
                    Failure::Unavailable => (close::INTERNAL, "unavailable: retry later"),
                    _ => (close::INTERNAL, "cannot register the connection"),
                };
                self.out.close(code, reason);
                return false;
            }
        }
        w.local.borrow_mut().add_conn(
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
        if !w.echo() {
            let heartbeat = w.shared.config.ping_interval_ms;
            self.send(128, |o| {
                protocol::welcome(o, &self.conn_id, &self.identity.user, &w.node, heartbeat)
            });
        }
        true
    }

    /// Server pings, dead-peer detection, token expiry; returns when the connection is
    /// over (read loop ended, or the writer finished after a close).
    async fn supervise(&self, mut read_task: tokio::task::JoinHandle<()>) {
        let config = &self.worker.shared.config;
        let ping_every = Duration::from_millis(config.ping_interval_ms.max(100));
        let answer_within = Duration::from_millis(config.ping_timeout_ms.max(100));
        let expires = self.identity.expires_at.map(|exp| {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default();
            tokio::time::Instant::now() + Duration::from_secs(exp).saturating_sub(now)
        });
        // One timer per connection (idle connections are most of them, and each timer
        // costs memory): it fires for the next ping, for the answer a ping is waiting
        // for, or at token expiry, whichever comes first.
        let mut due = Due::Ping;
        let mut peer_silent = false;
        let first = tokio::time::Instant::now() + ping_every;
        let timer = tokio::time::sleep_until(expires.map_or(first, |at| at.min(first)));
        tokio::pin!(timer);
        loop {
            tokio::select! {
                _ = &mut read_task => {
                    // The peer closed or broke the protocol; let the writer finish.
                    if !self.out.is_closing() {
                        // No close frame came: the stream ended or failed (1006).
                        self.vanished.set(true);
                        self.out.close(close::NORMAL, "");
                    }
                    let _ = tokio::time::timeout(Duration::from_secs(1), self.out.finished()).await;
                    return;
                }
                _ = self.out.finished() => {
                    // We sent a close: give the peer a moment to answer, then drop (at
                    // once if the writer gave up on a peer that stopped reading, or the
                    // peer is silent: it answered no ping, so it will not answer this).
                    if !self.out.abandoned() && !peer_silent {
                        let _ = tokio::time::timeout(Duration::from_secs(1), &mut read_task).await;
                    }
                    read_task.abort();
                    return;
                }
                _ = &mut timer => {
                    let now = tokio::time::Instant::now();
                    let next = if expires.is_some_and(|at| now >= at) {
                        self.out.close(close::POLICY, "token expired");
                        None
                    } else {
                        match due {
                            // Any frame since the ping answers it (a pong, or traffic).
                            Due::Answer(sent, sent_at) if self.last_seen.get() < sent => {
                                if now >= sent_at + answer_within {
                                    self.out.close(close::POLICY, "ping timeout");
                                    peer_silent = true;
                                    None
                                } else {
                                    // An interval shorter than the timeout went by
                                    // unanswered: the deadline stands.
                                    Some(sent_at + answer_within)
                                }
                            }
                            Due::Answer(_, sent_at) if now < sent_at + ping_every => {
                                due = Due::Ping;
                                Some(sent_at + ping_every)
                            }
                            // A ping is due: the first, or the one after an answer.
                            _ => {
                                let ping = frame::encode(frame::OP_PING, b"");
                                let _ = self.out.push(ping, self.worker.round.get());
                                due = Due::Answer(Instant::now(), now);
                                Some(now + ping_every.min(answer_within))
                            }
                        }
                    };
                    match next {
                        // Closing: nothing is due any more; the arms above end the loop.
                        None => timer.as_mut().reset(now + Duration::from_secs(86_400)),
                        Some(at) => timer.as_mut().reset(expires.map_or(at, |e| e.min(at))),
                    }
                }
            }
        }
    }

    /// Leaves every room and removes the connection from presence (unless the whole
    /// node is being removed with `RC.NODE.DOWN`, or there is no module: `--bench-floor`).
    async fn unregister(&self) {
        let w = &self.worker;
        let conn = w.local.borrow_mut().remove_conn(self.seq);
        WorkerMetrics::inc(&self.metrics().connections_closed);
        let Some(conn) = conn else { return };
        if w.draining.get() || w.floor() {
            return;
        }
        let mut cmds = Vec::with_capacity(conn.rooms.len() + 1);
        for room in &conn.rooms {
            let mut cmd = redis::cmd("RC.LEAVE");
            cmd.arg(&*w.routed_name(room)).arg(&w.node).arg(&*conn.id);
            cmds.push(cmd);
        }
        let mut cmd = redis::cmd("RC.DISCONNECT");
        cmd.arg(&*w.routed_name(&conn.user))
            .arg(&w.node)
            .arg(&*conn.id);
        cmds.push(cmd);
        if let Err(e) = w.backend.run_batch(cmds).await {
            // The lease sweep removes what we could not.
            tracing::debug!(error = %e, "could not unregister a closed connection");
        }
    }

    /// Reads frames until the peer closes, the protocol is broken, or the socket fails;
    /// once a close is under way, keeps reading (and discarding) until EOF, so that the
    /// socket is not dropped with unread data — which would make the kernel send a reset
    /// and the peer lose our close frame and final replies.
    async fn read_loop<S: tokio::io::AsyncRead + Unpin>(&self, reader: &mut FrameReader<S>) {
        self.read_frames(reader).await;
        if self.out.is_closing() {
            // Bounded by the supervisor's grace period after our close frame.
            reader.discard_until_eof().await;
        }
    }

    /// The read loop proper: returns when the connection starts closing.
    async fn read_frames<S: tokio::io::AsyncRead + Unpin>(&self, reader: &mut FrameReader<S>) {
        let max = self.worker.shared.config.max_message_bytes;
        let max_fragments = self.worker.shared.config.max_fragments;
        // A fragmented message being assembled: (is_text, bytes so far, frames so far).
        let mut partial: Option<(bool, Vec<u8>, usize)> = None;
        loop {
            let frame = match reader.next(max).await {
                Ok(frame) => frame,
                Err(e) => {
                    self.on_read_error(e);
                    return;
                }
            };
            self.last_seen.set(Instant::now());
            match frame.opcode {
                wsread::OP_CLOSE => {
                    self.answer_close(&frame.payload);
                    return;
                }
                wsread::OP_PING => {
                    let pong = frame::encode(frame::OP_PONG, &frame.payload);
                    let _ = self.out.push(pong, self.worker.round.get());
                }
                wsread::OP_PONG => {}
                wsread::OP_TEXT | wsread::OP_BINARY => {
                    if partial.is_some() {
                        self.out
                            .close(close::PROTOCOL, "expected a continuation frame");
                        return;
                    }
                    let text = frame.opcode == wsread::OP_TEXT;
                    if frame.fin {
                        self.on_message(text, &frame.payload).await;
                    } else {
                        partial = Some((text, frame.payload, 1));
                    }
                }
                _ => {
                    // Continuation (the reader lets no other opcode through).
                    let Some((text, mut bytes, fragments)) = partial.take() else {
                        self.out
                            .close(close::PROTOCOL, "unexpected continuation frame");
                        return;
                    };
                    if bytes.len() + frame.payload.len() > max {
                        self.out.close(close::TOO_BIG, "message too big");
                        return;
                    }
                    if fragments >= max_fragments {
                        self.out.close(close::POLICY, "too many fragments");
                        return;
                    }
                    bytes.extend_from_slice(&frame.payload);
                    if frame.fin {
                        if text && std::str::from_utf8(&bytes).is_err() {
                            self.out.close(close::INVALID_DATA, "text is not UTF-8");
                            return;
                        }
                        self.on_message(text, &bytes).await;
                    } else {
                        partial = Some((text, bytes, fragments + 1));
                    }
                }
            }
            if self.out.is_closing() {
                return;
            }
        }
    }

    fn on_read_error(&self, e: ReadError) {
        match e {
            ReadError::Closed => {}
            ReadError::TooBig => self.out.close(close::TOO_BIG, "message too big"),
            ReadError::NotUtf8 => self.out.close(close::INVALID_DATA, "text is not UTF-8"),
            ReadError::Protocol(reason) => self.out.close(close::PROTOCOL, reason),
        }
    }

    /// Answers a close frame: echo a valid code, 1002 for an invalid one.
    fn answer_close(&self, payload: &[u8]) {
        match payload {
            [] => self.out.close(close::NORMAL, ""),
            [_] => self.out.close(close::PROTOCOL, "invalid close frame"),
            [hi, lo, reason @ ..] => {
                let code = u16::from_be_bytes([*hi, *lo]);
                let valid_code = matches!(code, 1000..=1003 | 1007..=1011 | 3000..=4999);
                if !valid_code {
                    self.out.close(close::PROTOCOL, "invalid close code");
                } else if std::str::from_utf8(reason).is_err() {
                    self.out
                        .close(close::INVALID_DATA, "close reason is not UTF-8");
                } else {
                    self.out.close(code, "");
                }
            }
        }
    }

    /// One complete client message.
    async fn on_message(&self, text: bool, payload: &[u8]) {
        WorkerMetrics::inc(&self.metrics().messages_in);
        if self.worker.echo() {
            let opcode = if text {
                frame::OP_TEXT
            } else {
                frame::OP_BINARY
            };
            let _ = self
                .out
                .push(frame::encode(opcode, payload), self.worker.round.get());
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
        let id = msg.id.map(|raw| raw.get().as_bytes());
        if msg.op != "ping" {
            if let Err(retry) = self.bucket.borrow_mut().take(Instant::now()) {
                WorkerMetrics::inc(&self.metrics().rate_limited);
                self.send_error(id, ErrorCode::RateLimited, "slow down", Some(retry));
                return;
            }
        }
        match msg.op.as_ref() {
            "ping" => self.send(32, |o| protocol::pong(o, id)),
            "join" => {
                self.join(id, msg.room.as_deref(), msg.since.as_deref())
                    .await
            }
            "leave" => self.leave(id, msg.room.as_deref()).await,
            "publish" => self.publish(id, msg.room.as_deref(), msg.data).await,
            "send" => self.direct(id, msg.user.as_deref(), msg.data).await,
            "presence" => self.presence(id, msg.room.as_deref()).await,
            "history" => {
                let (room, since) = (msg.room.as_deref(), msg.since.as_deref());
                self.history(id, room, since, msg.limit).await
            }
            other => {
                let message = format!(
                    "unknown op {:?}",
                    other.chars().take(32).collect::<String>()
                );
                self.send_error(id, ErrorCode::BadRequest, &message, None);
            }
        }
    }

    /// Checks a room name from the client; sends the error and returns None if bad.
    /// A partition-tagged name (`{tag}room`) is accepted and reduced to the plain name,
    /// which is how the module stores rooms and names them in inbox entries.
    fn room<'a>(&self, id: Option<&[u8]>, room: Option<&'a str>) -> Option<&'a str> {
        let Some(room) = room else {
            self.send_error(id, ErrorCode::BadRequest, "missing \"room\"", None);
            return None;
        };
        match self.worker.shared.layout.resolve(room.as_bytes()) {
            Ok(resolved) => Some(resolved.name),
            Err(e) => {
                self.send_error(id, ErrorCode::BadRequest, &format!("room name {e}"), None);
                None
            }
        }
    }

    /// Reports a failed module command to the client.
    fn fail(&self, id: Option<&[u8]>, err: &redis::RedisError) {
        match classify(err) {
            Failure::Limited(ms) => {
                WorkerMetrics::inc(&self.metrics().rate_limited);
                self.send_error(id, ErrorCode::RateLimited, "publishing too fast", Some(ms));
            }
            Failure::Banned(_) => {
                WorkerMetrics::inc(&self.metrics().rate_limited);
                self.out.close(close::POLICY, "banned: publishing too fast");
            }
            Failure::Refused(code, message) => self.send_error(id, code, &message, None),
            Failure::Unavailable => self.send_error(
                id,
                ErrorCode::Unavailable,
                "the message service is unavailable; retry",
                None,
            ),
        }
    }

    fn ack(&self, id: Option<&[u8]>, extra: &[(&str, &[u8])]) {
        let estimate = 64 + extra.iter().map(|(_, v)| v.len()).sum::<usize>();
        self.send(estimate, |o| protocol::ack(o, id, extra));
    }

    /// Joins a room. The module replays what the client missed since `since` (if given)
    /// atomically with the join; room frames that reach this worker before the reply are
    /// held and sent after the replay and the ack, minus any the replay already covered,
    /// so the client sees every message once and in order.
    async fn join(&self, id: Option<&[u8]>, room: Option<&str>, since: Option<&str>) {
        let Some(room) = self.room(id, room) else {
            return;
        };
        if !room_allowed(self.identity.rooms.as_deref(), room) {
            self.send_error(id, ErrorCode::Forbidden, "this room is not allowed", None);
            return;
        }
        if since.is_some_and(|s| Offset::parse(s).is_none()) {
            let message = "\"since\" must be an offset as received in \"offset\"";
            return self.send_error(id, ErrorCode::BadRequest, message, None);
        }
        let w = &self.worker;
        let max_rooms = w.shared.config.max_rooms_per_conn;
        {
            let mut local = w.local.borrow_mut();
            if local.is_member(self.seq, room) {
                drop(local);
                return self.ack(id, &[]);
            }
            if local.room_count(self.seq) >= max_rooms {
                drop(local);
                let message = format!("at most {max_rooms} rooms per connection");
                return self.send_error(id, ErrorCode::BadRequest, &message, None);
            }
            // Indexed before the command so that no message routed after the join is
            // missed; held until the reply so that none overtakes the replay.
            local.join(self.seq, room);
            if w.floor() {
                drop(local);
                // No module, so no position and nothing to replay.
                let mut extra: Vec<(&str, &[u8])> = vec![("offset", b"null")];
                if since.is_some() {
                    extra.push(("recovered", b"false"));
                }
                return self.ack(id, &extra);
            }
            local.hold(self.seq, room);
        }
        let mut cmd = redis::cmd("RC.JOIN");
        cmd.arg(&*w.routed_name(room))
            .arg(&w.node)
            .arg(&*self.conn_id)
            .arg(&self.identity.user)
            .arg("SINCE")
            .arg(since.unwrap_or("$"));
        let reply = match lease::run_leased(w, &cmd).await {
            Ok(Value::Array(reply)) => reply,
            Ok(_) => Vec::new(),
            Err(e) => {
                w.local.borrow_mut().leave(self.seq, room);
                return self.fail(id, &e);
            }
        };
        let recovered = matches!(reply.get(1), Some(Value::Int(1)));
        let cut = reply.get(2).and_then(bulk_text);
        let mut replayed = 0u64;
        if let Some(Value::Array(entries)) = reply.get(3) {
            for entry in entries {
                if let Some(frame) = history_frame(room, entry) {
                    replayed += 1;
                    self.push_counted(frame);
                }
            }
        }
        let offset = json_offset(cut.as_deref());
        let mut extra: Vec<(&str, &[u8])> = vec![("offset", &offset)];
        if since.is_some() {
            extra.push(("recovered", if recovered { b"true" } else { b"false" }));
        }
        self.ack(id, &extra);
        let cut = cut.as_deref().and_then(Offset::parse);
        let held = w.local.borrow_mut().release(self.seq, room, cut.clone());
        for (offset, frame) in held {
            if after_cut(&offset, cut.as_ref()) {
                self.push_counted(frame);
            }
        }
        tracing::debug!(room, replayed, recovered, "joined");
    }

    /// Queues an already-encoded frame, counting it.
    fn push_counted(&self, frame: bytes::Bytes) {
        crate::reader::push(&self.worker, &self.out, frame);
    }

    /// `{"op":"history","room":R,"since"?:O,"limit"?:N}` → ack with `messages`, `offset`
    /// (the room's position) and `complete` (the messages continue `since` without a
    /// gap and reach the position; page on with the last offset when false and no gap).
    async fn history(
        &self,
        id: Option<&[u8]>,
        room: Option<&str>,
        since: Option<&str>,
        limit: Option<u32>,
    ) {
        let Some(room) = self.room(id, room) else {
            return;
        };
        if !room_allowed(self.identity.rooms.as_deref(), room) {
            return self.send_error(id, ErrorCode::Forbidden, "this room is not allowed", None);
        }
        if since.is_some_and(|s| Offset::parse(s).is_none()) {
            let message = "\"since\" must be an offset as received in \"offset\"";
            return self.send_error(id, ErrorCode::BadRequest, message, None);
        }
        if self.worker.floor() {
            return self.send_error(id, ErrorCode::BadRequest, floor::NOT_AVAILABLE, None);
        }
        let mut cmd = redis::cmd("RC.HISTORY");
        cmd.arg(&*self.worker.routed_name(room));
        if let Some(since) = since {
            cmd.arg("SINCE").arg(since);
        }
        cmd.arg("COUNT").arg(limit.unwrap_or(100).clamp(1, 1000));
        let reply = match self.worker.backend.run(&cmd).await {
            Ok(Value::Array(reply)) => reply,
            Ok(_) => Vec::new(),
            Err(e) => return self.fail(id, &e),
        };
        let cut = reply.first().and_then(bulk_text);
        let recovered = matches!(reply.get(1), Some(Value::Int(1)));
        let mut messages = vec![b'['];
        let mut last: Option<String> = None;
        if let Some(Value::Array(entries)) = reply.get(2) {
            for entry in entries {
                let Value::Array(parts) = entry else { continue };
                let (Some(offset), Some(from), Some(data)) = (
                    parts.first().and_then(bulk_text),
                    parts.get(1),
                    parts.get(2),
                ) else {
                    continue;
                };
                if messages.len() > 1 {
                    messages.push(b',');
                }
                let from = bulk_text(from).unwrap_or_default();
                protocol::message(&mut messages, room, &from, bulk_bytes(data), &offset);
                last = Some(offset);
            }
        }
        messages.push(b']');
        let complete = recovered && (last.is_none() || last == cut);
        let offset = json_offset(cut.as_deref());
        let complete: &[u8] = if complete { b"true" } else { b"false" };
        self.ack(
            id,
            &[
                ("messages", &messages),
                ("offset", &offset),
                ("complete", complete),
            ],
        );
    }

    async fn leave(&self, id: Option<&[u8]>, room: Option<&str>) {
        let Some(room) = self.room(id, room) else {
            return;
        };
        let w = &self.worker;
        if !w.local.borrow_mut().leave(self.seq, room) {
            return self.send_error(id, ErrorCode::NotMember, "not in this room", None);
        }
        if w.floor() {
            return self.ack(id, &[]);
        }
        let mut cmd = redis::cmd("RC.LEAVE");
        cmd.arg(&*w.routed_name(room))
            .arg(&w.node)
            .arg(&*self.conn_id);
        match w.backend.run(&cmd).await {
            Ok(_) => self.ack(id, &[]),
            Err(e) => self.fail(id, &e),
        }
    }

    async fn publish(
        &self,
        id: Option<&[u8]>,
        room: Option<&str>,
        data: Option<&serde_json::value::RawValue>,
    ) {
        let Some(room) = self.room(id, room) else {
            return;
        };
        let Some(data) = data else {
            return self.send_error(id, ErrorCode::BadRequest, "missing \"data\"", None);
        };
        let w = &self.worker;
        if !w.local.borrow().is_member(self.seq, room) {
            return self.send_error(id, ErrorCode::NotMember, "join the room first", None);
        }
        if w.floor() {
            let data = data.get().as_bytes();
            floor::publish(w, room, &self.identity.user, &self.conn_id, data);
            return self.ack(id, &[("offset", b"null")]);
        }
        let mut cmd = redis::cmd("RC.PUBLISH");
        cmd.arg(&*self.worker.routed_name(room))
            .arg(data.get().as_bytes())
            .arg("FROM")
            .arg(&self.identity.user)
            .arg("CONN")
            .arg(&*self.conn_id);
        match w.backend.run(&cmd).await {
            Ok(Value::Array(reply)) => {
                let offset = json_offset(reply.get(2).and_then(bulk_text).as_deref());
                self.ack(id, &[("offset", &offset)]);
            }
            Ok(_) => self.ack(id, &[("offset", b"null")]),
            Err(e) => self.fail(id, &e),
        }
    }

    async fn direct(
        &self,
        id: Option<&[u8]>,
        user: Option<&str>,
        data: Option<&serde_json::value::RawValue>,
    ) {
        let Some(user) = user else {
            return self.send_error(id, ErrorCode::BadRequest, "missing \"user\"", None);
        };
        if let Err(e) = check_name(user.as_bytes()) {
            return self.send_error(id, ErrorCode::BadRequest, &format!("user name {e}"), None);
        }
        let Some(data) = data else {
            return self.send_error(id, ErrorCode::BadRequest, "missing \"data\"", None);
        };
        if self.worker.floor() {
            floor::direct(
                &self.worker,
                user,
                &self.identity.user,
                data.get().as_bytes(),
            );
            return self.ack(id, &[]);
        }
        let mut cmd = redis::cmd("RC.SEND");
        cmd.arg(&*self.worker.routed_name(user))
            .arg(data.get().as_bytes())
            .arg("FROM")
            .arg(&self.identity.user);
        match self.worker.backend.run(&cmd).await {
            Ok(_) => self.ack(id, &[]),
            Err(e) => self.fail(id, &e),
        }
    }

    async fn presence(&self, id: Option<&[u8]>, room: Option<&str>) {
        let Some(room) = self.room(id, room) else {
            return;
        };
        if !room_allowed(self.identity.rooms.as_deref(), room) {
            return self.send_error(id, ErrorCode::Forbidden, "this room is not allowed", None);
        }
        if self.worker.floor() {
            let mut list = Vec::new();
            protocol::string_array(&mut list, &floor::presence(&self.worker, room));
            return self.ack(id, &[("users", &list)]);
        }
        let mut cmd = redis::cmd("RC.PRESENCE");
        cmd.arg(&*self.worker.routed_name(room));
        match self.worker.backend.run(&cmd).await {
            Ok(Value::Array(users)) => {
                let users: Vec<String> = users
                    .iter()
                    .filter_map(|u| match u {
                        Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
                        _ => None,
                    })
                    .collect();
                let mut list = Vec::new();
                protocol::string_array(&mut list, &users);
                self.ack(id, &[("users", &list)]);
            }
            Ok(_) => self.ack(id, &[("users", b"[]")]),
            Err(e) => self.fail(id, &e),
        }
    }
}

/// The bytes of a bulk string reply (empty for anything else).
fn bulk_bytes(v: &Value) -> &[u8] {
    match v {
        Value::BulkString(b) => b,
        _ => &[],
    }
}

/// A bulk string reply as text.
fn bulk_text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        _ => None,
    }
}

/// An offset as JSON: a string, or `null`.
fn json_offset(offset: Option<&str>) -> Vec<u8> {
    match offset {
        Some(o) => {
            let mut out = Vec::with_capacity(o.len() + 2);
            protocol::push_json_str(&mut out, o);
            out
        }
        None => b"null".to_vec(),
    }
}

/// A `message` frame from one `[offset, from, data]` history entry.
fn history_frame(room: &str, entry: &Value) -> Option<bytes::Bytes> {
    let Value::Array(parts) = entry else {
        return None;
    };
    let offset = parts.first().and_then(bulk_text)?;
    let from = parts.get(1).and_then(bulk_text).unwrap_or_default();
    let data = bulk_bytes(parts.get(2)?);
    Some(frame::text_with(data.len() + room.len() + 64, |out| {
        protocol::message(out, room, &from, data, &offset)
    }))
}

/// Whether a frame held during a join comes after the join's cut: presence events
/// (no offset) always do; messages do unless the replay or the past already covers them.
fn after_cut(offset: &str, cut: Option<&Offset>) -> bool {
    if offset.is_empty() {
        return true;
    }
    match (Offset::parse(offset), cut) {
        (Some(o), Some(cut)) => o.epoch != cut.epoch || o.seq > cut.seq,
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_frames_after_the_cut_are_kept() {
        let cut = Offset::parse("ab:10");
        assert!(after_cut("", cut.as_ref()));
        assert!(after_cut("ab:11", cut.as_ref()));
        assert!(!after_cut("ab:10", cut.as_ref()));
        assert!(!after_cut("ab:3", cut.as_ref()));
        assert!(after_cut("cd:1", cut.as_ref()));
        assert!(after_cut("ab:1", None));
    }
}
