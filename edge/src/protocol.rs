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
    /// Payload, for publish/send: JSON the inbox reader will splice back as is (see
    /// `relayable`).
    #[serde(borrow, default, deserialize_with = "relayable")]
    pub data: Option<&'a RawValue>,
    /// Last offset the client has seen, for join (recovery) and history.
    #[serde(borrow, default)]
    pub since: Option<std::borrow::Cow<'a, str>>,
    /// Most messages a history request returns.
    #[serde(default)]
    pub limit: Option<u32>,
}

/// A client message by operation, with the fields that operation reads.
#[derive(Debug, Clone, Copy)]
pub enum Request<'m> {
    /// `{"op":"ping"}`: answered with a `pong`.
    Ping,
    /// `{"op":"join","room":R,"since"?:O}`.
    Join {
        /// The room.
        room: Option<&'m str>,
        /// The last offset the client has seen.
        since: Option<&'m str>,
    },
    /// `{"op":"leave","room":R}`.
    Leave {
        /// The room.
        room: Option<&'m str>,
    },
    /// `{"op":"publish","room":R,"data":D}`.
    Publish {
        /// The room.
        room: Option<&'m str>,
        /// The payload.
        data: Option<&'m RawValue>,
    },
    /// `{"op":"send","user":U,"data":D}`: a direct message.
    Send {
        /// The receiving user.
        user: Option<&'m str>,
        /// The payload.
        data: Option<&'m RawValue>,
    },
    /// `{"op":"presence","room":R}`.
    Presence {
        /// The room.
        room: Option<&'m str>,
    },
    /// `{"op":"history","room":R,"since"?:O,"limit"?:N}`.
    History {
        /// The room.
        room: Option<&'m str>,
        /// Where the page starts (after this offset).
        since: Option<&'m str>,
        /// Most messages in the page.
        limit: Option<u32>,
    },
    /// Any other `op`.
    Unknown(&'m str),
}

impl ClientMessage<'_> {
    /// The request id's raw JSON, echoed in the `ack` or `error`.
    pub fn id(&self) -> Option<&[u8]> {
        self.id.map(|raw| raw.get().as_bytes())
    }

    /// The request this message makes.
    pub fn request(&self) -> Request<'_> {
        let room = self.room.as_deref();
        let since = self.since.as_deref();
        match self.op.as_ref() {
            "ping" => Request::Ping,
            "join" => Request::Join { room, since },
            "leave" => Request::Leave { room },
            "publish" => Request::Publish {
                room,
                data: self.data,
            },
            "send" => Request::Send {
                user: self.user.as_deref(),
                data: self.data,
            },
            "presence" => Request::Presence { room },
            "history" => Request::History {
                room,
                since,
                limit: self.limit,
            },
            other => Request::Unknown(other),
        }
    }
}

/// Accepts a `data` value only if it is JSON by `roomcast_common::json`, the check the
/// inbox reader makes before splicing a payload into the frames it delivers. serde_json
/// accepts values nested up to 128 levels, that scanner 64: a payload nested deeper than
/// 64 would be published and then delivered as a JSON *string* of its text, not as the
/// value the client sent. It is refused here instead (`bad_request`).
fn relayable<'de: 'a, 'a, D>(deserializer: D) -> Result<Option<&'a RawValue>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    let data = Option::<&'a RawValue>::deserialize(deserializer)?;
    if let Some(raw) = data {
        if !roomcast_common::json::is_valid(raw.get().as_bytes()) {
            return Err(serde::de::Error::custom(format_args!(
                "\"data\" must be JSON nested at most {} levels deep",
                roomcast_common::json::MAX_DEPTH
            )));
        }
    }
    Ok(data)
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

    #[test]
    fn messages_read_as_typed_requests() {
        let parse = |json: &'static str| serde_json::from_str::<ClientMessage>(json).unwrap();
        let m = parse(r#"{"op":"join","id":7,"room":"lobby","since":"ab:3"}"#);
        assert_eq!(m.id(), Some(&b"7"[..]));
        let Request::Join { room, since } = m.request() else {
            panic!("{:?}", m.request());
        };
        assert_eq!((room, since), (Some("lobby"), Some("ab:3")));
        let m = parse(r#"{"op":"publish","room":"r","data":{"a":1}}"#);
        assert!(
            matches!(m.request(), Request::Publish { room: Some("r"), data: Some(d) } if d.get() == r#"{"a":1}"#)
        );
        let m = parse(r#"{"op":"send","user":"bob","data":1}"#);
        assert!(matches!(
            m.request(),
            Request::Send {
                user: Some("bob"),
                data: Some(_)
            }
        ));
        let m = parse(r#"{"op":"history","room":"r","limit":5}"#);
        let want = (Some("r"), None, Some(5));
        assert!(
            matches!(m.request(), Request::History { room, since, limit } if (room, since, limit) == want)
        );
        assert!(matches!(parse(r#"{"op":"ping"}"#).request(), Request::Ping));
        assert!(matches!(
            parse(r#"{"op":"leave"}"#).request(),
            Request::Leave { room: None }
        ));
        assert!(matches!(
            parse(r#"{"op":"presence","room":"r"}"#).request(),
            Request::Presence { room: Some("r") }
        ));
        assert!(matches!(
            parse(r#"{"op":"Join"}"#).request(),
            Request::Unknown("Join")
        ));
        assert_eq!(parse(r#"{"op":"ping"}"#).id(), None);
    }

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

/// Property tests of the client-message decoder and the server-message encoders
/// (`fuzz/` runs the same decoder under libFuzzer).
#[cfg(test)]
mod props {
    use proptest::collection::vec;
    use proptest::prelude::*;
    use serde::de::IgnoredAny;
    use serde_json::{Map, Value};

    use super::*;

    /// Arbitrary JSON values, a few levels deep, floats included.
    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            any::<String>().prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                vec(inner.clone(), 0..6).prop_map(Value::Array),
                vec((any::<String>(), inner), 0..6)
                    .prop_map(|kv| Value::Object(kv.into_iter().collect())),
            ]
        })
    }

    /// Objects with the protocol's keys holding values of any type (and other keys).
    fn message_like() -> impl Strategy<Value = Value> {
        let key = prop_oneof![
            Just("op".to_string()),
            Just("id".to_string()),
            Just("room".to_string()),
            Just("user".to_string()),
            Just("data".to_string()),
            Just("since".to_string()),
            Just("limit".to_string()),
            any::<String>(),
        ];
        let value = prop_oneof![
            3 => prop_oneof![
                Just("publish"), Just("join"), Just("ping"), Just("history"), Just("")
            ]
            .prop_map(Value::from),
            1 => (0u64..=u64::from(u32::MAX) + 2).prop_map(Value::from),
            3 => json_value(),
        ];
        vec((key, value), 0..8).prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>()))
    }

    /// Byte strings built from JSON tokens (valid, broken and hostile), so that many of
    /// them get deep into the decoder.
    fn json_tokens() -> impl Strategy<Value = Vec<u8>> {
        const TOKENS: &[&[u8]] = &[
            b"{",
            b"}",
            b"[",
            b"]",
            b":",
            b",",
            b" ",
            br#""op""#,
            br#""id""#,
            br#""room""#,
            br#""data""#,
            br#""limit""#,
            br#""since""#,
            br#""publish""#,
            br#""r\u00e9\n""#,
            br#""\ud800""#,
            b"\"\xff\"",
            b"1",
            b"-0.5e300",
            b"1e999",
            b"4294967296",
            b"null",
            b"true",
            b"\"",
            b"\\",
        ];
        let token = proptest::sample::select(TOKENS.to_vec());
        vec(token, 0..48).prop_map(|tokens| tokens.concat())
    }

    /// Whether `serde_json` reads `v` (serialized) as a [`ClientMessage`].
    fn decodes(v: &Value) -> bool {
        let Value::Object(m) = v else { return false };
        let text = |k: &str| matches!(m.get(k), None | Some(Value::Null | Value::String(_)));
        let limit = match m.get("limit") {
            None | Some(Value::Null) => true,
            Some(Value::Number(n)) => n.as_u64().is_some_and(|n| n <= u64::from(u32::MAX)),
            Some(_) => false,
        };
        let data = m.get("data").is_none_or(|d| {
            roomcast_common::json::is_valid(&serde_json::to_vec(d).unwrap_or_default())
        });
        matches!(m.get("op"), Some(Value::String(_)))
            && text("room")
            && text("user")
            && text("since")
            && limit
            && data
    }

    /// What every decoded message guarantees to the session.
    fn check_decoded(m: &ClientMessage<'_>) {
        if let Some(data) = m.data {
            // The reader splices exactly these bytes into the frames it delivers.
            assert!(roomcast_common::json::is_valid(data.get().as_bytes()));
        }
        if let Some(id) = m.id {
            // Echoed raw in acks and errors: the frame must stay JSON.
            let mut out = Vec::new();
            error(
                &mut out,
                Some(id.get().as_bytes()),
                ErrorCode::BadRequest,
                "x",
                None,
            );
            assert!(serde_json::from_slice::<IgnoredAny>(&out).is_ok());
        }
    }

    /// `"key":value` pairs joined into an object, with some whitespace.
    fn object(pairs: &[(String, String)], space: bool) -> String {
        let sep = if space { " , " } else { "," };
        let body: Vec<String> = pairs
            .iter()
            .map(|(k, v)| format!("{}:{v}", serde_json::to_string(k).unwrap_or_default()))
            .collect();
        format!("{{{}}}", body.join(sep))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1024))]

        /// Arbitrary bytes never panic the decoder; what it accepts is safe to relay.
        #[test]
        fn arbitrary_bytes_decode_or_fail_cleanly(bytes in vec(any::<u8>(), 0..256)) {
            if let Ok(m) = serde_json::from_slice::<ClientMessage>(&bytes) {
                check_decoded(&m);
            }
        }

        /// Token soup (mostly near-JSON) never panics the decoder either.
        #[test]
        fn json_token_soup_decodes_or_fails_cleanly(bytes in json_tokens()) {
            if let Ok(m) = serde_json::from_slice::<ClientMessage>(&bytes) {
                check_decoded(&m);
            }
        }

        /// Any JSON value decodes exactly when its fields have the protocol's types.
        #[test]
        fn json_values_decode_when_their_fields_have_the_right_types(
            v in prop_oneof![1 => json_value(), 3 => message_like()]
        ) {
            let bytes = serde_json::to_vec(&v).unwrap_or_default();
            let decoded = serde_json::from_slice::<ClientMessage>(&bytes);
            // (serde's derive also reads a struct from an array of its fields in order,
            // so `["ping"]` is a ping; the oracle covers the object form only.)
            if !v.is_array() {
                prop_assert_eq!(
                    decoded.is_ok(),
                    decodes(&v),
                    "{}",
                    String::from_utf8_lossy(&bytes)
                );
            }
            if let (Ok(m), Value::Object(o)) = (decoded, &v) {
                check_decoded(&m);
                prop_assert_eq!(Some(m.op.as_ref()), o.get("op").and_then(Value::as_str));
                prop_assert_eq!(m.room.as_deref(), o.get("room").and_then(Value::as_str));
                prop_assert_eq!(m.user.as_deref(), o.get("user").and_then(Value::as_str));
                prop_assert_eq!(m.since.as_deref(), o.get("since").and_then(Value::as_str));
                prop_assert_eq!(m.limit.map(u64::from), o.get("limit").and_then(Value::as_u64));
            }
        }

        /// Valid messages, keys in any order, round-trip every field; `id` and `data`
        /// come back as the very bytes that were sent.
        #[test]
        fn valid_messages_round_trip(
            op in prop_oneof![
                Just("join".to_string()), Just("leave".to_string()),
                Just("publish".to_string()), Just("send".to_string()),
                Just("presence".to_string()), Just("history".to_string()),
                Just("ping".to_string()), any::<String>(),
            ],
            id in proptest::option::of(json_value().prop_filter("not null", |v| !v.is_null())),
            room in proptest::option::of(any::<String>()),
            user in proptest::option::of(any::<String>()),
            since in proptest::option::of(any::<String>()),
            data in proptest::option::of(json_value().prop_filter("not null", |v| !v.is_null())),
            limit in proptest::option::of(any::<u32>()),
            order in Just((0..7).collect::<Vec<usize>>()).prop_shuffle(),
            space in any::<bool>(),
        ) {
            let enc = |v: &Value| serde_json::to_string(v).unwrap_or_default();
            let id_text = id.as_ref().map(enc);
            let data_text = data.as_ref().map(enc);
            let fields: [(&str, Option<String>); 7] = [
                ("op", Some(enc(&Value::from(op.clone())))),
                ("id", id_text.clone()),
                ("room", room.as_ref().map(|r| enc(&Value::from(r.clone())))),
                ("user", user.as_ref().map(|u| enc(&Value::from(u.clone())))),
                ("since", since.as_ref().map(|s| enc(&Value::from(s.clone())))),
                ("data", data_text.clone()),
                ("limit", limit.map(|l| l.to_string())),
            ];
            let pairs: Vec<(String, String)> = order
                .iter()
                .filter_map(|&i| {
                    let (k, v) = fields.get(i)?;
                    Some((k.to_string(), v.clone()?))
                })
                .collect();
            let text = object(&pairs, space);
            let m: ClientMessage = match serde_json::from_str(&text) {
                Ok(m) => m,
                Err(e) => return Err(TestCaseError::fail(format!("{e}: {text}"))),
            };
            check_decoded(&m);
            prop_assert_eq!(m.op.as_ref(), op.as_str());
            prop_assert_eq!(m.room.as_deref(), room.as_deref());
            prop_assert_eq!(m.user.as_deref(), user.as_deref());
            prop_assert_eq!(m.since.as_deref(), since.as_deref());
            prop_assert_eq!(m.limit, limit);
            prop_assert_eq!(m.id.map(|r| r.get().to_string()), id_text);
            prop_assert_eq!(m.data.map(|r| r.get().to_string()), data_text);
        }

        /// Server messages are JSON for any names and payload bytes: names round-trip,
        /// JSON payloads are spliced unchanged, other bytes arrive as (lossy) strings.
        #[test]
        fn server_messages_are_json_for_any_input(
            room in any::<String>(),
            from in any::<String>(),
            offset in any::<String>(),
            data in prop_oneof![
                vec(any::<u8>(), 0..64),
                json_value().prop_map(|v| serde_json::to_vec(&v).unwrap_or_default()),
                json_value().prop_map(|v| {
                    serde_json::to_vec_pretty(&v).unwrap_or_default()
                }),
            ],
        ) {
            #[derive(serde::Deserialize)]
            struct Out<'a> {
                op: String,
                room: Option<String>,
                from: Option<String>,
                offset: Option<String>,
                #[serde(borrow)]
                data: &'a RawValue,
            }
            let mut out = Vec::new();
            message(&mut out, &room, &from, &data, &offset);
            let m: Out = match serde_json::from_slice(&out) {
                Ok(m) => m,
                Err(e) => {
                    let text = String::from_utf8_lossy(&out).into_owned();
                    return Err(TestCaseError::fail(format!("{e}: {text}")));
                }
            };
            prop_assert_eq!(m.op, "message");
            prop_assert_eq!(m.room.as_deref(), Some(room.as_str()));
            prop_assert_eq!(m.from, (!from.is_empty()).then_some(from));
            prop_assert_eq!(m.offset, (!offset.is_empty()).then_some(offset));
            if roomcast_common::json::is_valid(&data) {
                prop_assert_eq!(m.data.get().as_bytes(), data.trim_ascii());
            } else {
                let text: String = serde_json::from_str(m.data.get())
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert_eq!(text, String::from_utf8_lossy(&data));
            }
        }
    }

    /// The bug the properties above found: `data` nested 65 to 127 levels deep was
    /// accepted by serde_json, published, then delivered as a JSON string of its text,
    /// because the reader's splice check (`roomcast_common::json`) stops at 64.
    #[test]
    fn data_nested_past_the_relay_limit_is_refused() {
        let max = roomcast_common::json::MAX_DEPTH;
        for depth in [1, max, max + 1, 100, 127, 200] {
            let data = "[".repeat(depth) + &"]".repeat(depth);
            let text = format!(r#"{{"op":"publish","room":"r","data":{data}}}"#);
            let decoded = serde_json::from_str::<ClientMessage>(&text);
            if depth <= max {
                let m = decoded.unwrap();
                assert_eq!(m.data.unwrap().get(), data);
                let mut out = Vec::new();
                message(&mut out, "r", "u", data.as_bytes(), "");
                let delivered: Value = serde_json::from_slice(&out).unwrap();
                assert!(delivered["data"].is_array(), "depth {depth}");
            } else {
                let e = decoded.err().map(|e| e.to_string()).unwrap_or_default();
                assert!(e.contains("nested at most 64 levels"), "depth {depth}: {e}");
            }
        }
        // Without data, or with data null, nothing changes.
        let m: ClientMessage = serde_json::from_str(r#"{"op":"publish","data":null}"#).unwrap();
        assert!(m.data.is_none());
    }
}
