//! Error replies, and the bridge from the pure argument parsers to them.
//!
//! Every command's arguments are parsed by `roomcast_common::command` (pure functions
//! over the argument bytes, property-tested and fuzzed without Redis); [`check`] turns
//! its errors into the replies Redis sends. Conditions a caller acts on are answered
//! with one of the module's codes ([`Code`]: `NOLEASE`, `TOOLARGE`, `LIMITED`, …) by
//! [`code_error`], so no caller has to match on the text after the code.

use redis_module::RedisError;
use roomcast_common::codes::Code;
use roomcast_common::command::{error_line, ArgError};

/// An `-ERR …` reply.
pub fn err(message: impl std::fmt::Display) -> RedisError {
    coded("ERR", message)
}

/// An error reply with one of the module's machine-readable codes: `-CODE message`.
pub fn code_error(code: Code, message: impl std::fmt::Display) -> RedisError {
    coded(code.as_str(), message)
}

/// An error reply with any code (Redis's own `WRONGTYPE` as well as the module's), as
/// printable ASCII (see [`error_line`]).
pub fn coded(code: &str, message: impl std::fmt::Display) -> RedisError {
    RedisError::String(error_line(code, message))
}

/// A parse result as the module answers it: Redis's arity error, `-ERR message`, or
/// the refusal's own code (`-TOOLARGE message`).
pub fn check<T>(parsed: Result<T, ArgError>) -> Result<T, RedisError> {
    parsed.map_err(refusal)
}

/// A parser's refusal as the module answers it (see [`check`]).
pub fn refusal(e: ArgError) -> RedisError {
    match e {
        ArgError::Arity => RedisError::WrongArity,
        ArgError::Invalid(message) => err(message),
        ArgError::Coded(code, message) => code_error(code, message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(e: RedisError) -> String {
        match e {
            RedisError::String(text) => text,
            other => format!("{other:?}"),
        }
    }

    #[test]
    fn error_replies_stay_printable_ascii() {
        let text = text(code_error(Code::TooMany, "user zoë\r\nhas 3"));
        assert_eq!(text, "TOOMANY user zo\\u{eb}\\u{d}\\u{a}has 3");
        assert!(text.bytes().all(|b| (0x20..0x7f).contains(&b)));
    }

    #[test]
    fn parse_errors_become_replies() {
        assert!(matches!(
            check::<()>(Err(ArgError::Arity)),
            Err(RedisError::WrongArity)
        ));
        let e = check::<()>(Err(ArgError::Invalid("ttl_ms must be an integer".into())));
        assert_eq!(
            text(e.err().unwrap_or(RedisError::WrongArity)),
            "ERR ttl_ms must be an integer"
        );
        let e = check::<()>(roomcast_common::command::payload(b"01234567890", 10));
        assert_eq!(
            text(e.err().unwrap_or(RedisError::WrongArity)),
            "TOOLARGE payload too large: 11 bytes, max-payload-bytes is 10"
        );
        assert_eq!(check(Ok::<_, ArgError>(7)).ok(), Some(7));
    }
}
