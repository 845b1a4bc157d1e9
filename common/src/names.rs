//! What a valid name is.
//!
//! Rooms, users and throttle keys are *names*: 1 to [`MAX_NAME_BYTES`] bytes of UTF-8
//! without control characters (they travel in JSON frames, logs and key names).
//! Nodes and connections are *ids*: 1 to [`MAX_ID_BYTES`] bytes of `[A-Za-z0-9_.-]`, so
//! that `:` and space can separate them from other values stored next to them.

use std::fmt;

/// Longest room, user or throttle-key name, in bytes.
pub const MAX_NAME_BYTES: usize = 256;
/// Longest node or connection id, in bytes.
pub const MAX_ID_BYTES: usize = 64;

/// Why a name or id was refused; `Display` gives the message sent back to the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NameError {
    /// Zero bytes long.
    Empty,
    /// Longer than the limit (the limit is carried).
    TooLong(usize),
    /// Not valid UTF-8.
    NotUtf8,
    /// Contains a control character (names) or a byte outside `[A-Za-z0-9_.-]` (ids).
    BadCharacter,
    /// `{tag}name` where the tag is not the partition tag of `name` (expected tag carried).
    WrongTag(String),
    /// `{…` without a closing brace.
    UnclosedTag,
}

impl fmt::Display for NameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NameError::Empty => write!(f, "is empty"),
            NameError::TooLong(max) => write!(f, "is longer than {max} bytes"),
            NameError::NotUtf8 => write!(f, "is not valid UTF-8"),
            NameError::BadCharacter => write!(f, "contains a character that is not allowed"),
            NameError::WrongTag(expected) => {
                write!(
                    f,
                    "carries the wrong partition tag (expected {{{expected}}})"
                )
            }
            NameError::UnclosedTag => write!(f, "starts with '{{' but has no closing '}}'"),
        }
    }
}

impl std::error::Error for NameError {}

/// Checks a plain room / user / key name (without any `{tag}` prefix).
pub fn check_name(name: &[u8]) -> Result<&str, NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.len() > MAX_NAME_BYTES {
        return Err(NameError::TooLong(MAX_NAME_BYTES));
    }
    let text = std::str::from_utf8(name).map_err(|_| NameError::NotUtf8)?;
    if text.chars().any(char::is_control) {
        return Err(NameError::BadCharacter);
    }
    Ok(text)
}

/// Checks a node or connection id.
pub fn check_id(id: &[u8]) -> Result<&str, NameError> {
    if id.is_empty() {
        return Err(NameError::Empty);
    }
    if id.len() > MAX_ID_BYTES {
        return Err(NameError::TooLong(MAX_ID_BYTES));
    }
    if !id
        .iter()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
    {
        return Err(NameError::BadCharacter);
    }
    // Only ASCII bytes passed the check above, so this cannot fail.
    std::str::from_utf8(id).map_err(|_| NameError::NotUtf8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_accept_unicode_and_refuse_controls() {
        assert_eq!(check_name(b"lobby"), Ok("lobby"));
        assert_eq!(check_name("salon é 💬".as_bytes()), Ok("salon é 💬"));
        assert_eq!(check_name(b""), Err(NameError::Empty));
        assert_eq!(check_name(b"a\nb"), Err(NameError::BadCharacter));
        assert_eq!(check_name(b"a\0b"), Err(NameError::BadCharacter));
        assert_eq!(check_name(&[0xff, 0xfe]), Err(NameError::NotUtf8));
        assert_eq!(check_name(&[b'a'; 257]), Err(NameError::TooLong(256)));
        assert!(check_name(&[b'a'; 256]).is_ok());
    }

    #[test]
    fn ids_are_a_small_safe_alphabet() {
        assert_eq!(check_id(b"edge-1.w0_a"), Ok("edge-1.w0_a"));
        assert_eq!(check_id(b"a:b"), Err(NameError::BadCharacter));
        assert_eq!(check_id(b"a b"), Err(NameError::BadCharacter));
        assert_eq!(check_id(b""), Err(NameError::Empty));
        assert_eq!(check_id(&[b'x'; 65]), Err(NameError::TooLong(64)));
    }
}
