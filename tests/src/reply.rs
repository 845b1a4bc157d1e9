//! Helpers to read Redis replies in assertions.

use redis::{RedisError, RedisResult, Value};

/// `code detail` of an error reply (`"LIMITED retry_after_ms=12"`).
pub fn error_text(err: &RedisError) -> String {
    match (err.code(), err.detail()) {
        (Some(code), Some(detail)) => format!("{code} {detail}"),
        (Some(code), None) => code.to_string(),
        _ => err.to_string(),
    }
}

/// The error text of a command (`args`, for the failure message) that must fail with an
/// error containing `needle`.
pub fn expect_error(result: RedisResult<Value>, args: &[&str], needle: &str) -> String {
    match result {
        Ok(v) => panic!("{args:?} should fail with {needle:?}, got {v:?}"),
        Err(e) => {
            let text = error_text(&e);
            assert!(
                text.contains(needle),
                "{args:?}: expected an error containing {needle:?}, got {text:?}"
            );
            text
        }
    }
}

/// An integer reply.
pub fn int(v: &Value) -> i64 {
    match v {
        Value::Int(n) => *n,
        other => panic!("expected an integer, got {other:?}"),
    }
}

/// A bulk or simple string reply, as text.
pub fn text(v: &Value) -> String {
    match v {
        Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        Value::SimpleString(s) => s.clone(),
        Value::Okay => "OK".to_string(),
        other => panic!("expected a string, got {other:?}"),
    }
}

/// An array reply's elements.
pub fn array(v: &Value) -> &[Value] {
    match v {
        Value::Array(items) => items,
        other => panic!("expected an array, got {other:?}"),
    }
}

/// An array of strings.
pub fn strings(v: &Value) -> Vec<String> {
    array(v).iter().map(text).collect()
}

/// An array of integers.
pub fn ints(v: &Value) -> Vec<i64> {
    array(v).iter().map(int).collect()
}

/// The first two integers of an `RC.PUBLISH` / `RC.SEND` / `RC.KICK` reply:
/// `(connections, nodes)`.
pub fn counts(v: &Value) -> (i64, i64) {
    let items = array(v);
    (int(&items[0]), int(&items[1]))
}
