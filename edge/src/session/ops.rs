//! The client operations: `join`, `leave`, `publish`, `send`, `presence`, `history`.
//! Each checks the request, runs on the worker's [`Rooms`] (one module command, or the
//! floor) and answers with an `ack` or an `error`.

use roomcast_common::names::check_name;
use roomcast_common::offset::Offset;
use serde_json::value::RawValue;

use crate::auth::room_allowed;
use crate::backend::publisher::{Published, Ticket};
use crate::backend::replies::Stored;
use crate::protocol::{self, ErrorCode};
use crate::session::conn::Session;
use crate::session::rooms::Rooms;
use crate::ws::frame;

impl Session {
    /// The rooms this session's operations run on.
    fn rooms(&self) -> Rooms<'_> {
        Rooms::of(&self.ctx)
    }

    /// Checks a room name from the client; sends the error and returns None if bad.
    /// A partition-tagged name (`{tag}room`) is accepted and reduced to the plain name,
    /// which is how the module stores rooms and names them in inbox entries.
    fn room<'a>(&self, id: Option<&[u8]>, room: Option<&'a str>) -> Option<&'a str> {
        match self.resolve_room(room) {
            Ok(room) => Some(room),
            Err(message) => {
                self.send_error(id, ErrorCode::BadRequest, &message, None);
                None
            }
        }
    }

    /// The plain name of a room name from the client, or why it is refused.
    fn resolve_room<'a>(&self, room: Option<&'a str>) -> Result<&'a str, String> {
        let room = room.ok_or_else(|| "missing \"room\"".to_string())?;
        match self.ctx.layout().resolve(room.as_bytes()) {
            Ok(resolved) => Ok(resolved.name),
            Err(e) => Err(format!("room name {e}")),
        }
    }

    /// The room and payload of a publish, or the error that refuses it: a bad room name,
    /// no `data`, or a room this connection has not joined.
    fn publish_args<'a>(
        &self,
        room: Option<&'a str>,
        data: Option<&'a RawValue>,
    ) -> Result<(&'a str, &'a [u8]), (ErrorCode, String)> {
        let room = self
            .resolve_room(room)
            .map_err(|message| (ErrorCode::BadRequest, message))?;
        let data = data.ok_or_else(|| (ErrorCode::BadRequest, "missing \"data\"".to_string()))?;
        if !self.ctx.local.borrow().is_member(self.seq, room) {
            return Err((ErrorCode::NotMember, "join the room first".to_string()));
        }
        Ok((room, data.get().as_bytes()))
    }

    /// Checks that the token allows `room` and that `since` is an offset; sends the
    /// error and returns false if not.
    fn may_read(&self, id: Option<&[u8]>, room: &str, since: Option<&str>) -> bool {
        if !room_allowed(self.identity.rooms.as_deref(), room) {
            self.send_error(id, ErrorCode::Forbidden, "this room is not allowed", None);
            return false;
        }
        if since.is_some_and(|s| Offset::parse(s).is_none()) {
            let message = "\"since\" must be an offset as received in \"offset\"";
            self.send_error(id, ErrorCode::BadRequest, message, None);
            return false;
        }
        true
    }

    /// Joins a room. The module replays what the client missed since `since` (if given)
    /// atomically with the join; room frames that reach this worker before the reply are
    /// held and sent after the replay and the ack, minus any the replay already covered
    /// (see `context::cut`), so the client sees every message once and in order.
    pub async fn join(&self, id: Option<&[u8]>, room: Option<&str>, since: Option<&str>) {
        let Some(room) = self.room(id, room) else {
            return;
        };
        if !self.may_read(id, room, since) {
            return;
        }
        let max_rooms = self.ctx.config().max_rooms_per_conn;
        {
            let mut local = self.ctx.local.borrow_mut();
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
            local.hold(self.seq, room);
        }
        let user = &self.identity.user;
        let reply = match self.rooms().join(room, &self.conn_id, user, since).await {
            Ok(reply) => reply,
            Err(e) => {
                self.ctx.local.borrow_mut().leave(self.seq, room);
                return self.fail(id, &e);
            }
        };
        let replayed = reply.replay.len();
        for message in &reply.replay {
            self.push_counted(message_frame(room, message));
        }
        let offset = json_offset(reply.cut.as_deref());
        let mut extra: Vec<(&str, &[u8])> = vec![("offset", &offset)];
        if since.is_some() {
            let recovered: &[u8] = if reply.recovered { b"true" } else { b"false" };
            extra.push(("recovered", recovered));
        }
        self.ack(id, &extra);
        let cut = reply.cut.as_deref().and_then(Offset::parse);
        let held = self.ctx.local.borrow_mut().release(self.seq, room, cut);
        for frame in held {
            self.push_counted(frame);
        }
        tracing::debug!(room, replayed, recovered = reply.recovered, "joined");
    }

    /// `{"op":"history","room":R,"since"?:O,"limit"?:N}` → ack with `messages`, `offset`
    /// (the room's position) and `complete` (the messages continue `since` without a
    /// gap and reach the position; page on with the last offset when false and no gap).
    pub async fn history(
        &self,
        id: Option<&[u8]>,
        room: Option<&str>,
        since: Option<&str>,
        limit: Option<u32>,
    ) {
        let Some(room) = self.room(id, room) else {
            return;
        };
        if !self.may_read(id, room, since) {
            return;
        }
        let count = limit.unwrap_or(100).clamp(1, 1000);
        let page = match self.rooms().history(room, since, count) {
            Ok(page) => page,
            Err(reason) => return self.send_error(id, ErrorCode::BadRequest, reason, None),
        };
        let history = match page.await {
            Ok(history) => history,
            Err(e) => return self.fail(id, &e),
        };
        let mut messages = vec![b'['];
        for (i, m) in history.messages.iter().enumerate() {
            if i > 0 {
                messages.push(b',');
            }
            protocol::message(&mut messages, room, &m.from, &m.data, &m.offset);
        }
        messages.push(b']');
        let last = history.messages.last().map(|m| &m.offset);
        let complete = history.recovered && (last.is_none() || last == history.cut.as_ref());
        let offset = json_offset(history.cut.as_deref());
        let complete: &[u8] = if complete { b"true" } else { b"false" };
        let extra: [(&str, &[u8]); 3] = [
            ("messages", &messages),
            ("offset", &offset),
            ("complete", complete),
        ];
        self.ack(id, &extra);
    }

    pub async fn leave(&self, id: Option<&[u8]>, room: Option<&str>) {
        let Some(room) = self.room(id, room) else {
            return;
        };
        if !self.ctx.local.borrow_mut().leave(self.seq, room) {
            return self.send_error(id, ErrorCode::NotMember, "not in this room", None);
        }
        match self.rooms().leave(room, &self.conn_id).await {
            Ok(()) => self.ack(id, &[]),
            Err(e) => self.fail(id, &e),
        }
    }

    /// `{"op":"publish","room":R,"data":D}` → ack with `offset`, or the error. A publish
    /// that passes these checks where the worker batches never comes here: it is
    /// queued at once ([`Session::queue_publish`]) and answered in order later.
    pub async fn publish(&self, id: Option<&[u8]>, room: Option<&str>, data: Option<&RawValue>) {
        let (room, data) = match self.publish_args(room, data) {
            Ok(args) => args,
            Err((code, message)) => return self.send_error(id, code, &message, None),
        };
        let from = &self.identity.user;
        let reply = self.rooms().publish(room, data, from, &self.conn_id).await;
        self.answer_publish(id, reply);
    }

    /// Queues a publish that passes `publish`'s checks into the worker's next batch
    /// without waiting for its reply; `None` (nothing sent) where a check fails —
    /// `publish` then answers the error — or the worker does not batch.
    pub fn queue_publish(&self, room: Option<&str>, data: Option<&RawValue>) -> Option<Ticket> {
        let (room, data) = self.publish_args(room, data).ok()?;
        let from = &self.identity.user;
        self.rooms().queue_publish(room, data, from, &self.conn_id)
    }

    /// Answers a publish with its reply: the ack with the message's offset, or the
    /// failure.
    pub fn answer_publish(&self, id: Option<&[u8]>, reply: Published) {
        match reply {
            Ok(offset) => self.ack(id, &[("offset", &json_offset(offset.as_deref()))]),
            Err(e) => self.fail(id, &e),
        }
    }

    pub async fn direct(&self, id: Option<&[u8]>, user: Option<&str>, data: Option<&RawValue>) {
        let Some(user) = user else {
            return self.send_error(id, ErrorCode::BadRequest, "missing \"user\"", None);
        };
        if let Err(e) = check_name(user.as_bytes()) {
            return self.send_error(id, ErrorCode::BadRequest, &format!("user name {e}"), None);
        }
        let Some(data) = data else {
            return self.send_error(id, ErrorCode::BadRequest, "missing \"data\"", None);
        };
        let data = data.get().as_bytes();
        match self.rooms().send(user, data, &self.identity.user).await {
            Ok(()) => self.ack(id, &[]),
            Err(e) => self.fail(id, &e),
        }
    }

    pub async fn presence(&self, id: Option<&[u8]>, room: Option<&str>) {
        let Some(room) = self.room(id, room) else {
            return;
        };
        if !room_allowed(self.identity.rooms.as_deref(), room) {
            return self.send_error(id, ErrorCode::Forbidden, "this room is not allowed", None);
        }
        match self.rooms().presence(room).await {
            Ok(users) => {
                let mut list = Vec::new();
                protocol::string_array(&mut list, &users);
                self.ack(id, &[("users", &list)]);
            }
            Err(e) => self.fail(id, &e),
        }
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

/// A `message` frame of one stored (replayed) message of `room`.
fn message_frame(room: &str, m: &Stored) -> bytes::Bytes {
    frame::text_with(m.data.len() + room.len() + 64, |out| {
        protocol::message(out, room, &m.from, &m.data, &m.offset)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_are_json_strings_or_null() {
        assert_eq!(json_offset(Some("ab:1")), b"\"ab:1\"");
        assert_eq!(json_offset(None), b"null");
    }
}
