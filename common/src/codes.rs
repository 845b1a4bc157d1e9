//! The module's machine-readable error codes: the first word of an error reply for
//! every condition a caller (the edge, or any backend) acts on, so no caller has to
//! match on the human-readable text after it.
//!
//! Argument errors stay plain `ERR …` (the caller sent something wrong and can only
//! report it); the conditions below each call for a different reaction.

use std::fmt;

/// A coded condition of a module command's error reply (`-CODE detail`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Code {
    /// `LIMITED retry_after_ms=N`: the sender is over its publish rate; retry later.
    Limited,
    /// `BANNED retry_after_ms=N`: the sender kept publishing while limited and is
    /// banned; its connections are to be closed.
    Banned,
    /// `TOOMANY …`: the user holds `max-conns-per-user` connections already.
    TooMany,
    /// `NOLEASE …`: the node holds no lease in the partition (Redis lost the node's
    /// state, or it never registered): renew the lease and re-register, then retry.
    NoLease,
    /// `TOOLARGE …`: the payload is over `max-payload-bytes`.
    TooLarge,
    /// `NOTSERVED …`: under Redis Cluster, the partition is not served by this shard
    /// (the slot moved): refresh the cluster topology.
    NotServed,
}

impl Code {
    /// Every code, for tables and tests.
    pub const ALL: [Code; 6] = [
        Code::Limited,
        Code::Banned,
        Code::TooMany,
        Code::NoLease,
        Code::TooLarge,
        Code::NotServed,
    ];

    /// The code as it starts an error reply.
    pub const fn as_str(self) -> &'static str {
        match self {
            Code::Limited => "LIMITED",
            Code::Banned => "BANNED",
            Code::TooMany => "TOOMANY",
            Code::NoLease => "NOLEASE",
            Code::TooLarge => "TOOLARGE",
            Code::NotServed => "NOTSERVED",
        }
    }

    /// The code an error reply starts with, if it is one of ours.
    pub fn parse(code: &str) -> Option<Code> {
        Code::ALL.into_iter().find(|c| c.as_str() == code)
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_parses_back_and_is_one_upper_case_word() {
        for code in Code::ALL {
            assert_eq!(Code::parse(code.as_str()), Some(code));
            assert!(code.as_str().bytes().all(|b| b.is_ascii_uppercase()));
        }
        assert_eq!(Code::parse("ERR"), None);
        assert_eq!(Code::parse("limited"), None);
    }
}
