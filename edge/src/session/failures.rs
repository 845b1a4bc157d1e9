//! What a failed module command means to the client: an `error` answer, or a close.
//!
//! The backend says what failed (`backend::errors::Failure`, by the module's error
//! code); this is the one place that turns it into client error codes and close codes.

use redis::RedisError;

use crate::backend::errors::{classify, Failure};
use crate::metrics::WorkerMetrics;
use crate::protocol::ErrorCode;
use crate::session::conn::Session;
use crate::ws::frame::close;

/// How the session answers a failed command.
#[derive(Debug, PartialEq, Eq)]
pub enum Answer {
    /// An `error` with this code, message and `retry_after_ms`.
    Error(ErrorCode, String, Option<u64>),
    /// Closing the connection with this code and reason.
    Close(u16, &'static str),
}

/// The answer to a failed client operation.
pub fn answer(failure: Failure) -> Answer {
    match failure {
        Failure::Limited(ms) => Answer::Error(
            ErrorCode::RateLimited,
            "publishing too fast".into(),
            Some(ms),
        ),
        Failure::Banned(_) => Answer::Close(close::POLICY, "banned: publishing too fast"),
        Failure::TooMany(message) => Answer::Error(ErrorCode::Forbidden, message, None),
        Failure::TooLarge(message) => Answer::Error(ErrorCode::TooLarge, message, None),
        Failure::Invalid(message) => Answer::Error(ErrorCode::BadRequest, message, None),
        Failure::NoLease(message) | Failure::NotServed(message) | Failure::Other(message) => {
            Answer::Error(ErrorCode::Internal, message, None)
        }
        Failure::Unavailable => Answer::Error(
            ErrorCode::Unavailable,
            "the message service is unavailable; retry".into(),
            None,
        ),
    }
}

/// The close of a connection whose registration (`RC.CONNECT`) failed.
pub fn refused_registration(failure: &Failure) -> (u16, &'static str) {
    match failure {
        Failure::TooMany(_) => (close::POLICY, "too many connections"),
        Failure::Unavailable => (close::INTERNAL, "unavailable: retry later"),
        _ => (close::INTERNAL, "cannot register the connection"),
    }
}

impl Session {
    /// Reports a failed module command to the client.
    pub fn fail(&self, id: Option<&[u8]>, err: &RedisError) {
        let failure = classify(err);
        if matches!(failure, Failure::Limited(_) | Failure::Banned(_)) {
            WorkerMetrics::inc(&self.metrics().rate_limited);
        }
        match answer(failure) {
            Answer::Error(code, message, retry) => self.send_error(id, code, &message, retry),
            Answer::Close(code, reason) => self.out.close(code, reason),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_failures_map_to_client_errors_and_closes() {
        let error = |code, message: &str, retry| Answer::Error(code, message.into(), retry);
        let cases = [
            (
                Failure::Limited(250),
                error(ErrorCode::RateLimited, "publishing too fast", Some(250)),
            ),
            (
                Failure::Banned(9),
                Answer::Close(1008, "banned: publishing too fast"),
            ),
            (
                Failure::TooMany("max 2".into()),
                error(ErrorCode::Forbidden, "max 2", None),
            ),
            (
                Failure::TooLarge("payload too large: 9".into()),
                error(ErrorCode::TooLarge, "payload too large: 9", None),
            ),
            (
                Failure::Invalid("bad".into()),
                error(ErrorCode::BadRequest, "bad", None),
            ),
            (
                Failure::NoLease("n".into()),
                error(ErrorCode::Internal, "n", None),
            ),
            (
                Failure::NotServed("p".into()),
                error(ErrorCode::Internal, "p", None),
            ),
            (
                Failure::Other("x".into()),
                error(ErrorCode::Internal, "x", None),
            ),
            (
                Failure::Unavailable,
                error(
                    ErrorCode::Unavailable,
                    "the message service is unavailable; retry",
                    None,
                ),
            ),
        ];
        for (failure, want) in cases {
            assert_eq!(answer(failure.clone()), want, "{failure:?}");
        }
        assert_eq!(
            refused_registration(&Failure::TooMany(String::new())),
            (1008, "too many connections")
        );
        assert_eq!(
            refused_registration(&Failure::Unavailable),
            (1011, "unavailable: retry later")
        );
        assert_eq!(
            refused_registration(&Failure::Invalid(String::new())),
            (1011, "cannot register the connection")
        );
    }
}
