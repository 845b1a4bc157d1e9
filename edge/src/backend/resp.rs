//! Reading RESP reply values: strings, integers and their absence.

use redis::Value;

/// A reply string (or integer) as text; anything else reads as empty.
pub fn text(v: &Value) -> String {
    match v {
        Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        Value::SimpleString(s) => s.clone(),
        Value::VerbatimString { text, .. } => text.clone(),
        Value::Int(n) => n.to_string(),
        _ => String::new(),
    }
}

/// The bytes of a string reply (empty for anything else).
pub fn bytes(v: &Value) -> &[u8] {
    match v {
        Value::BulkString(b) => b,
        Value::SimpleString(s) => s.as_bytes(),
        _ => &[],
    }
}

/// The bytes of a bulk string reply (empty for anything else).
pub fn bulk_bytes(v: &Value) -> &[u8] {
    match v {
        Value::BulkString(b) => b,
        _ => &[],
    }
}

/// A bulk string reply as text (`None` for anything else).
pub fn bulk_text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        _ => None,
    }
}

/// An integer reply, or a string reply that reads as one.
pub fn int(v: &Value) -> Option<i64> {
    text(v).parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_read_as_text_bytes_and_integers() {
        let bulk = Value::BulkString(b"12".to_vec());
        let simple = Value::SimpleString("ok".into());
        assert_eq!(
            (text(&bulk), text(&simple), text(&Value::Int(-3))),
            ("12".into(), "ok".into(), "-3".into())
        );
        assert_eq!(text(&Value::Nil), "");
        assert_eq!(
            (bytes(&simple), bulk_bytes(&simple)),
            (&b"ok"[..], &b""[..])
        );
        assert_eq!(bulk_text(&bulk).as_deref(), Some("12"));
        assert_eq!(bulk_text(&simple), None);
        assert_eq!(
            (int(&bulk), int(&Value::Int(7)), int(&simple)),
            (Some(12), Some(7), None)
        );
    }
}
