//! Argument parsing shared by every command: each helper turns one raw argument into a
//! checked value or an `-ERR` naming the argument and what is wrong with it.

use redis_module::{RedisError, RedisString};
use roomcast_common::names::check_id;
use roomcast_common::partition::Resolved;

use crate::state::Layout;

/// An `-ERR …` reply.
pub fn err(message: impl std::fmt::Display) -> RedisError {
    coded("ERR", message)
}

/// An error reply with its own code (`LIMITED`, `BANNED`, `TOOMANY`, `WRONGTYPE`).
///
/// Error replies are single RESP lines and redis-module passes them through as bytes
/// of `char`s truncated to `u8`, so anything outside printable ASCII (names may be
/// Unicode) is written as `\u{…}` escapes, keeping the reply valid and readable.
pub fn coded(code: &str, message: impl std::fmt::Display) -> RedisError {
    let text = format!("{code} {message}");
    let mut ascii = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_ascii() && !c.is_ascii_control() {
            ascii.push(c);
        } else {
            ascii.extend(c.escape_unicode());
        }
    }
    RedisError::String(ascii)
}

/// Checks the exact number of arguments (command name included), or a range.
pub fn arity(args: &[RedisString], min: usize, max: usize) -> Result<(), RedisError> {
    if args.len() < min || args.len() > max {
        return Err(RedisError::WrongArity);
    }
    Ok(())
}

/// The argument at `index` (arity must have been checked).
pub fn at(args: &[RedisString], index: usize) -> Result<&RedisString, RedisError> {
    args.get(index).ok_or(RedisError::WrongArity)
}

/// A room, user or key name, plain or `{tag}`-prefixed, resolved to its partition.
pub fn name<'a>(
    layout: &Layout,
    arg: &'a RedisString,
    what: &str,
) -> Result<Resolved<'a>, RedisError> {
    layout
        .partitioner
        .resolve(arg.as_slice())
        .map_err(|e| err(format!("invalid {what} name: {e}")))
}

/// A partition argument: a room or user name, or a partition tag in braces.
pub fn partition(layout: &Layout, arg: &RedisString) -> Result<u32, RedisError> {
    layout
        .partitioner
        .resolve_partition(arg.as_slice())
        .map_err(|e| err(format!("invalid partition: {e}")))
}

/// A node or connection id.
pub fn id<'a>(arg: &'a RedisString, what: &str) -> Result<&'a str, RedisError> {
    check_id(arg.as_slice()).map_err(|e| err(format!("invalid {what} id: {e}")))
}

/// An integer within `[min, max]`.
pub fn int(arg: &RedisString, what: &str, min: i64, max: i64) -> Result<i64, RedisError> {
    let value = std::str::from_utf8(arg.as_slice())
        .ok()
        .and_then(|s| s.parse::<i64>().ok())
        .ok_or_else(|| err(format!("{what} must be an integer")))?;
    if value < min || value > max {
        return Err(err(format!("{what} must be between {min} and {max}")));
    }
    Ok(value)
}

/// Optional `KEYWORD value` pairs after the fixed arguments.
///
/// `allowed` lists the keywords (upper case; matched case-insensitively). Unknown,
/// repeated or value-less keywords are errors. Returns one slot per allowed keyword.
pub fn options<'a, const N: usize>(
    rest: &'a [RedisString],
    allowed: [&str; N],
) -> Result<[Option<&'a RedisString>; N], RedisError> {
    let mut found: [Option<&RedisString>; N] = [None; N];
    let mut iter = rest.iter();
    while let Some(keyword) = iter.next() {
        let word = keyword.as_slice();
        let slot = allowed
            .iter()
            .position(|k| k.as_bytes().eq_ignore_ascii_case(word))
            .ok_or_else(|| {
                err(format!(
                    "unknown option '{}' (expected one of {})",
                    String::from_utf8_lossy(word),
                    allowed.join(", ")
                ))
            })?;
        let keyword = allowed.get(slot).copied().unwrap_or_default();
        let value = iter
            .next()
            .ok_or_else(|| err(format!("option {keyword} needs a value")))?;
        let entry = found
            .get_mut(slot)
            .ok_or_else(|| err("option index out of range"))?;
        if entry.is_some() {
            return Err(err(format!("option {keyword} given twice")));
        }
        *entry = Some(value);
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_replies_stay_printable_ascii() {
        let text = match coded("TOOMANY", "user zoë\r\nhas 3") {
            RedisError::String(text) => text,
            other => format!("{other:?}"),
        };
        assert_eq!(text, "TOOMANY user zo\\u{eb}\\u{d}\\u{a}has 3");
        assert!(text.bytes().all(|b| (0x20..0x7f).contains(&b)));
    }
}
