//! The event contract of `benches/socketio/server.js`, on namespace `/`:
//!
//! - handshake query `?user=NAME` (the socket id when absent or empty);
//! - `join`, ROOM, ack → join ROOM; ack `{ok: true}`;
//! - `publish`, `{room, data}`, ack → emit `message`, `{room, from: USER, data}` to every
//!   OTHER member of the room, on every server (the adapter carries it), then ack
//!   `{ok: true}`; not a member → ack `{ok: false, error: "not_member"}`, nothing sent;
//! - anything malformed → ack `{ok: false, error: "bad_request"}`.
//!
//! Handlers are generic over the adapter, so `--adapter none` and `--adapter redis` run
//! the same code.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use serde::Serialize;
use serde_json::Value;
use socketioxide::adapter::Adapter;
use socketioxide::extract::{AckSender, SocketRef, TryData};
use socketioxide::{BroadcastError, SocketError};

use crate::metrics::{bump, STATS};

/// The body of an ack.
#[derive(Serialize, Debug, PartialEq, Eq)]
pub struct Ack {
    ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'static str>,
}

impl Ack {
    pub const OK: Ack = Ack {
        ok: true,
        error: None,
    };

    fn error(code: &'static str) -> Ack {
        Ack {
            ok: false,
            error: Some(code),
        }
    }
}

/// What a member receives.
#[derive(Serialize)]
struct Message<'a> {
    room: &'a str,
    from: &'a str,
    data: &'a Value,
}

/// The connect handler of namespace `/`: counts the connection and registers the
/// socket's event handlers.
///
/// socketioxide queues the connect confirmation and then spawns this handler; on the
/// process's single `current_thread` runtime that task runs before the read task can
/// see any event the client sends in reply, so the handlers are in place in time.
pub async fn on_connect<A: Adapter>(socket: SocketRef<A>) {
    let query = socket.req_parts().uri.query().unwrap_or("");
    let user: Arc<str> = match user_of(query) {
        Some(u) => u.into(),
        None => socket.id.to_string().into(),
    };
    STATS.connections.fetch_add(1, Ordering::Relaxed);
    bump(&STATS.connects_total);
    socket.on_disconnect(async || {
        STATS.connections.fetch_sub(1, Ordering::Relaxed);
        bump(&STATS.disconnects_total);
    });
    socket.on("join", on_join::<A>);
    socket.on(
        "publish",
        async move |s: SocketRef<A>, TryData(msg): TryData<Value>, ack: AckSender<A>| {
            on_publish(s, msg.ok(), ack, &user).await;
        },
    );
}

async fn on_join<A: Adapter>(s: SocketRef<A>, TryData(room): TryData<Value>, ack: AckSender<A>) {
    let reply = match room.ok().as_ref().and_then(Value::as_str) {
        Some(room) if !room.is_empty() => {
            s.join(room.to_string());
            bump(&STATS.joins_total);
            Ack::OK
        }
        _ => {
            bump(&STATS.bad_requests_total);
            Ack::error("bad_request")
        }
    };
    let _ = ack.send(&reply);
}

async fn on_publish<A: Adapter>(
    s: SocketRef<A>,
    msg: Option<Value>,
    ack: AckSender<A>,
    user: &str,
) {
    let Some((room, data)) = msg.as_ref().and_then(publish_fields) else {
        bump(&STATS.bad_requests_total);
        let _ = ack.send(&Ack::error("bad_request"));
        return;
    };
    if !s.rooms().iter().any(|r| r == room) {
        bump(&STATS.publish_rejected_total);
        let _ = ack.send(&Ack::error("not_member"));
        return;
    }
    let body = Message {
        room,
        from: user,
        data,
    };
    // `to` excludes the sender itself; the redis adapter publishes the broadcast to
    // every server before delivering it to this server's members.
    match s.to(room.to_string()).emit("message", &body).await {
        Ok(()) => {}
        // Local members whose send buffer was full (socketioxide drops the packet for
        // them) or that were closing: not a Redis error.
        Err(BroadcastError::Socket(errors)) => {
            let full = errors
                .iter()
                .filter(|e| matches!(e, SocketError::InternalChannelFull))
                .count();
            STATS
                .send_buffer_full_total
                .fetch_add(full as u64, Ordering::Relaxed);
        }
        Err(e) => {
            bump(&STATS.redis_errors_total);
            eprintln!("socketioxide: broadcast to {room}: {e}");
        }
    }
    bump(&STATS.publishes_total);
    let _ = ack.send(&Ack::OK);
}

/// `room` and `data` of a publish request: `room` a non-empty string, `data` present
/// (any JSON value, `null` included, as `server.js` accepts it).
pub fn publish_fields(msg: &Value) -> Option<(&str, &Value)> {
    let room = msg.get("room")?.as_str().filter(|r| !r.is_empty())?;
    Some((room, msg.get("data")?))
}

/// The `user` parameter of a handshake query string, percent-decoded (`+` is a space),
/// as Node's query parser reads it; `None` when absent or empty.
pub fn user_of(query: &str) -> Option<String> {
    let raw = query
        .split('&')
        .find_map(|kv| kv.strip_prefix("user="))
        .filter(|v| !v.is_empty())?;
    Some(percent_decode(raw))
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        let escaped = match (c, b.get(i + 1..i + 3)) {
            (b'%', Some(&[h, l])) => hex(h).zip(hex(l)).map(|(h, l)| h * 16 + l),
            _ => None,
        };
        match escaped {
            Some(v) => {
                out.push(v);
                i += 3;
            }
            None => {
                out.push(if c == b'+' { b' ' } else { c });
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(c: u8) -> Option<u8> {
    (c as char).to_digit(16).map(|d| d as u8)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_the_user_from_the_query() {
        assert_eq!(
            user_of("EIO=4&transport=websocket&user=u17").as_deref(),
            Some("u17")
        );
        assert_eq!(user_of("user=a%20b+c%2").as_deref(), Some("a b c%2"));
        assert_eq!(user_of("EIO=4&user=").as_deref(), None);
        assert_eq!(user_of("EIO=4").as_deref(), None);
        assert_eq!(user_of("").as_deref(), None);
    }

    #[test]
    fn validates_publish_requests() {
        let m = json!({"room": "r1", "data": {"s": 1}});
        assert_eq!(publish_fields(&m), Some(("r1", &json!({"s": 1}))));
        assert_eq!(
            publish_fields(&json!({"room": "r1", "data": null})),
            Some(("r1", &Value::Null))
        );
        assert_eq!(publish_fields(&json!({"room": "r1"})), None);
        assert_eq!(publish_fields(&json!({"room": "", "data": 1})), None);
        assert_eq!(publish_fields(&json!({"room": 5, "data": 1})), None);
        assert_eq!(publish_fields(&json!("r1")), None);
    }

    #[test]
    fn acks_serialize_like_the_reference() {
        assert_eq!(serde_json::to_string(&Ack::OK).unwrap(), r#"{"ok":true}"#);
        assert_eq!(
            serde_json::to_string(&Ack::error("not_member")).unwrap(),
            r#"{"ok":false,"error":"not_member"}"#
        );
    }
}
