//! What a failed command means, by the module's error code (`roomcast_common::codes`)
//! or the Redis condition behind it, never by the text after the code.
//!
//! This is the backend's own classification: the session turns it into client error
//! codes and close codes, the lease keeper acts on [`Failure::NoLease`], and the Cluster
//! inbox readers regroup on [`Failure::NotServed`].

use redis::RedisError;
use roomcast_common::codes::Code;

/// How a module command failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// `LIMITED retry_after_ms=N`: the sender is over its publish rate.
    Limited(u64),
    /// `BANNED retry_after_ms=N`: the sender is banned; its connection must be closed.
    Banned(u64),
    /// `TOOMANY …`: the user holds as many connections as allowed (the detail).
    TooMany(String),
    /// `NOLEASE …`: the node holds no lease in the partition (the detail).
    NoLease(String),
    /// `TOOLARGE …`: the payload is over the module's cap (the detail).
    TooLarge(String),
    /// `NOTSERVED …`: the partition is not served by this shard (the detail).
    NotServed(String),
    /// `ERR …`: the command's arguments were refused (the detail).
    Invalid(String),
    /// Any other error reply (the detail).
    Other(String),
    /// Redis could not be reached, or is not (yet, any more) a writable primary.
    Unavailable,
}

/// Parses `retry_after_ms=N` out of an error detail.
fn retry_after(detail: &str) -> u64 {
    detail
        .split_whitespace()
        .find_map(|w| w.strip_prefix("retry_after_ms="))
        .and_then(|n| n.parse().ok())
        .unwrap_or(1000)
}

/// The error of a command attempted without Redis (`--bench-floor`, `--echo`).
pub fn no_redis() -> RedisError {
    RedisError::from((redis::ErrorKind::Client, "no Redis in --bench-floor mode"))
}

/// Classifies an error from a module command.
pub fn classify(err: &RedisError) -> Failure {
    let detail = err.detail().unwrap_or_default().to_string();
    let Some(code) = err.code() else {
        return Failure::Unavailable;
    };
    match Code::parse(code) {
        Some(Code::Limited) => return Failure::Limited(retry_after(&detail)),
        Some(Code::Banned) => return Failure::Banned(retry_after(&detail)),
        Some(Code::TooMany) => return Failure::TooMany(detail),
        Some(Code::NoLease) => return Failure::NoLease(detail),
        Some(Code::TooLarge) => return Failure::TooLarge(detail),
        Some(Code::NotServed) => return Failure::NotServed(detail),
        None => {}
    }
    match code {
        // The server is not (or no longer, or not yet) a writable primary; or a Redis
        // Cluster is failing over or moving the slot (`CLUSTERDOWN`, `TRYAGAIN`; `MOVED`
        // and `ASK` only when redirections ran out).
        "READONLY" | "NOREPLICAS" | "MASTERDOWN" | "LOADING" | "UNBLOCKED" | "CLUSTERDOWN"
        | "TRYAGAIN" | "MOVED" | "ASK" => Failure::Unavailable,
        "ERR" => Failure::Invalid(detail),
        _ => Failure::Other(detail),
    }
}

/// Whether a command refused with this error was not executed, so sending it to the
/// new primary cannot apply it twice.
pub fn not_executed(err: &RedisError) -> bool {
    matches!(err.code(), Some("READONLY" | "NOREPLICAS"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(code: &str, detail: &str) -> RedisError {
        redis::make_extension_error(code.to_string(), Some(detail.into()))
    }

    #[test]
    fn retry_times_are_parsed() {
        assert_eq!(retry_after("retry_after_ms=250"), 250);
        assert_eq!(retry_after("garbage"), 1000);
    }

    #[test]
    fn a_server_that_is_not_the_primary_means_unavailable() {
        for code in [
            "READONLY",
            "NOREPLICAS",
            "MASTERDOWN",
            "LOADING",
            "UNBLOCKED",
            "CLUSTERDOWN",
            "TRYAGAIN",
        ] {
            let err = error(code, "now");
            assert_eq!(classify(&err), Failure::Unavailable, "{code}");
            assert_eq!(
                not_executed(&err),
                code == "READONLY" || code == "NOREPLICAS"
            );
        }
        let err = error("ERR", "bad");
        assert_eq!(classify(&err), Failure::Invalid("bad".into()));
    }

    #[test]
    fn module_codes_are_classified_by_code_not_text() {
        let cases = [
            ("LIMITED", "retry_after_ms=40", Failure::Limited(40)),
            ("BANNED", "retry_after_ms=9000", Failure::Banned(9000)),
            ("TOOMANY", "at most 2", Failure::TooMany("at most 2".into())),
            ("NOLEASE", "node n1", Failure::NoLease("node n1".into())),
            (
                "TOOLARGE",
                "payload too large: 9 > 8",
                Failure::TooLarge("payload too large: 9 > 8".into()),
            ),
            (
                "NOTSERVED",
                "partition {a}",
                Failure::NotServed("partition {a}".into()),
            ),
            (
                "WRONGTYPE",
                "payload too large",
                Failure::Other("payload too large".into()),
            ),
            (
                "ERR",
                "holds no lease",
                Failure::Invalid("holds no lease".into()),
            ),
        ];
        for (code, detail, want) in cases {
            assert_eq!(classify(&error(code, detail)), want, "{code}");
        }
        let io = RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
        assert_eq!(classify(&io), Failure::Unavailable);
    }
}
