//! The client protocol: parsing client messages and encoding server messages.
//!
//! Client → edge: `{"op": …, "id"?: …, "room"?: …, "user"?: …, "data"?: …}`. `data` and
//! `id` are kept as raw JSON (`RawValue`): the edge never re-serializes payloads, it
//! splices the bytes into the frames it builds. Server messages are written by hand
//! into one buffer per frame.

use serde::Deserialize;
use serde_json::value::RawValue;

/// One client message, borrowing from the frame it came in.
#[derive(Debug, Deserialize)]
pub struct ClientMessage<'a> {
    /// The operation.
    #[serde(borrow)]
    pub op: std::borrow::Cow<'a, str>,
    /// Optional request id echoed in the `ack` / `error` (any JSON value).
    #[serde(borrow, default)]
    pub id: Option<&'a RawValue>,
    /// Room, for join/leave/publish/presence/history.
    #[serde(borrow, default)]
    pub room: Option<std::borrow::Cow<'a, str>>,
    /// Target user, for send.
    #[serde(borrow, default)]
    pub user: Option<std::borrow::Cow<'a, str>>,
    /// Payload, for publish/send.
    #[serde(borrow, default)]
    pub data: Option<&'a RawValue>,
    /// Last offset the client has seen, for join (recovery) and history.
    #[serde(borrow, default)]
    pub since: Option<std::borrow::Cow<'a, str>>,
    /// Most messages a history request returns.
    #[serde(default)]
    pub limit: Option<u32>,
}

/// Error codes of `{"op":"error"}` messages. (`unauthorized` never travels in band:
/// a connection without valid credentials is refused with HTTP 401 before the upgrade,
/// and one whose token expires is closed with 1008.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// Malformed or unknown message.
    BadRequest,
    /// Not allowed by the token's room patterns.
    Forbidden,
    /// The operation needs membership of the room.
    NotMember,
    /// Over a rate limit (carries `retry_after_ms`).
    RateLimited,
    /// Payload too large.
    TooLarge,
    /// Redis is unreachable right now.
    Unavailable,
    /// Anything else.
    Internal,
}

impl ErrorCode {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::NotMember => "not_member",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Internal => "internal",
        }
    }
}

/// Appends `s` as a JSON string literal.
pub fn push_json_str(out: &mut Vec<u8>, s: &str) {
    // Serializing a &str into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

/// Appends `"key":` then a JSON string.
fn field_str(out: &mut Vec<u8>, key: &str, value: &str) {
    out.push(b',');
    push_json_str(out, key);
    out.push(b':');
    push_json_str(out, value);
}

/// Appends `"key":` then raw JSON.
fn field_raw(out: &mut Vec<u8>, key: &str, raw: &[u8]) {
    out.push(b',');
    push_json_str(out, key);
    out.push(b':');
    out.extend_from_slice(raw);
}

/// Appends `"key":` then a payload: spliced as is when it is JSON (always, for what
/// clients publish), else — a backend published plain bytes — as a JSON string.
fn field_payload(out: &mut Vec<u8>, key: &str, data: &[u8]) {
    if roomcast_common::json::is_valid(data) {
        field_raw(out, key, data);
    } else {
        field_str(out, key, &String::from_utf8_lossy(data));
    }
}

/// `{"op":"welcome","conn":C,"user":U,"node":N,"heartbeat_ms":H}`
pub fn welcome(out: &mut Vec<u8>, conn: &str, user: &str, node: &str, heartbeat_ms: u64) {
    out.extend_from_slice(br#"{"op":"welcome""#);
    field_str(out, "conn", conn);
    field_str(out, "user", user);
    field_str(out, "node", node);
    field_raw(out, "heartbeat_ms", heartbeat_ms.to_string().as_bytes());
    out.push(b'}');
}

/// `{"op":"message","room":R,"from":U,"data":D,"offset":O}` (`from` null when the
/// message came from a backend; `offset` null while history is off).
pub fn message(out: &mut Vec<u8>, room: &str, from: &str, data: &[u8], offset: &str) {
    out.extend_from_slice(br#"{"op":"message""#);
    field_str(out, "room", room);
    if from.is_empty() {
        field_raw(out, "from", b"null");
    } else {
        field_str(out, "from", from);
    }
    field_payload(out, "data", data);
    if offset.is_empty() {
        field_raw(out, "offset", b"null");
    } else {
        field_str(out, "offset", offset);
    }
    out.push(b'}');
}

/// `{"op":"direct","from":U,"data":D}`
pub fn direct(out: &mut Vec<u8>, from: &str, data: &[u8]) {
    out.extend_from_slice(br#"{"op":"direct""#);
    if from.is_empty() {
        field_raw(out, "from", b"null");
    } else {
        field_str(out, "from", from);
    }
    field_payload(out, "data", data);
    out.push(b'}');
}

/// `{"op":"joined"|"left","room":R,"user":U}`
pub fn presence_event(out: &mut Vec<u8>, joined: bool, room: &str, user: &str) {
    out.extend_from_slice(if joined {
        br#"{"op":"joined""#
    } else {
        br#"{"op":"left""#
    });
    field_str(out, "room", room);
    field_str(out, "user", user);
    out.push(b'}');
}

/// `{"op":"ack","id":I, …extra}` — `extra` is a list of (key, raw JSON) pairs.
pub fn ack(out: &mut Vec<u8>, id: Option<&[u8]>, extra: &[(&str, &[u8])]) {
    out.extend_from_slice(br#"{"op":"ack""#);
    if let Some(id) = id {
        field_raw(out, "id", id);
    }
    for (key, raw) in extra {
        field_raw(out, key, raw);
    }
    out.push(b'}');
}

/// `{"op":"error","id":I,"code":C,"message":M[,"retry_after_ms":N]}`
pub fn error(
    out: &mut Vec<u8>,
    id: Option<&[u8]>,
    code: ErrorCode,
    message: &str,
    retry_after_ms: Option<u64>,
) {
    out.extend_from_slice(br#"{"op":"error""#);
    if let Some(id) = id {
        field_raw(out, "id", id);
    }
    field_str(out, "code", code.as_str());
    field_str(out, "message", message);
    if let Some(ms) = retry_after_ms {
        field_raw(out, "retry_after_ms", ms.to_string().as_bytes());
    }
    out.push(b'}');
}

/// `{"op":"pong"}` (an `id` is echoed when given).
pub fn pong(out: &mut Vec<u8>, id: Option<&[u8]>) {
    out.extend_from_slice(br#"{"op":"pong""#);
    if let Some(id) = id {
        field_raw(out, "id", id);
    }
    out.push(b'}');
}

/// A JSON array of strings.
pub fn string_array(out: &mut Vec<u8>, items: &[String]) {
    out.push(b'[');
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        push_json_str(out, item);
    }
    out.push(b']');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(build: impl FnOnce(&mut Vec<u8>)) -> serde_json::Value {
        let mut out = Vec::new();
        build(&mut out);
        serde_json::from_slice(&out).expect("valid JSON")
    }

    #[test]
    fn client_messages_keep_raw_payloads() {
        let m: ClientMessage =
            serde_json::from_str(r#"{"op":"publish","room":"a","data":{"x":[1, 2]},"id":7}"#)
                .unwrap();
        assert_eq!(m.op, "publish");
        assert_eq!(m.data.unwrap().get(), r#"{"x":[1, 2]}"#);
        assert_eq!(m.id.unwrap().get(), "7");
        assert!(serde_json::from_str::<ClientMessage>(r#"{"room":"a"}"#).is_err());
    }

    #[test]
    fn server_messages_are_valid_json_with_escaping() {
        let v = json(|o| message(o, "r\"oom", "", br#"{"a":1}"#, ""));
        assert_eq!(v["room"], "r\"oom");
        assert!(v["from"].is_null());
        assert_eq!(v["data"]["a"], 1);
        let v = json(|o| error(o, Some(b"\"x\""), ErrorCode::RateLimited, "slow", Some(20)));
        assert_eq!(v["code"], "rate_limited");
        assert_eq!(v["retry_after_ms"], 20);
        assert_eq!(v["id"], "x");
        let v = json(|o| message(o, "r", "u", b"plain text", "e:1"));
        assert_eq!(v["data"], "plain text");
        assert_eq!(v["offset"], "e:1");
        let v = json(|o| direct(o, "u", b"\xff"));
        assert_eq!(v["data"], "\u{fffd}");
        let v = json(|o| welcome(o, "n.1", "ann", "n", 25000));
        assert_eq!(v["heartbeat_ms"], 25000);
        let v = json(|o| ack(o, None, &[("users", br#"["a"]"#)]));
        assert_eq!(v["users"][0], "a");
        let v = json(|o| presence_event(o, false, "r", "u"));
        assert_eq!(v["op"], "left");
        let mut arr = Vec::new();
        string_array(&mut arr, &["a".into(), "b\n".into()]);
        assert_eq!(arr, br#"["a","b\n"]"#);
    }
}
