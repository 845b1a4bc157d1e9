//! Argument parsing of every module command, as pure functions over byte strings.
//!
//! The module hands each command's argv to a parser here (a `RedisString` derefs to its
//! bytes) and acts on the checked values it gets back; an error carries the exact text
//! the module replies after `ERR ` (or after its own code, see [`ArgError::Coded`]). Nothing here touches Redis, so every parser is
//! property-tested and fuzzed (`fuzz/`) on its own: whatever a client sends, parsing
//! ends in a value or an [`ArgError`] and never panics (a panic in the module aborts
//! Redis). Checks that need the server — the payload cap from the configuration, node
//! leases, rate limits — stay in the module and run after these, in the same order as
//! before they moved here.

use std::fmt;
use std::ops::Deref;

use crate::codes::Code;
use crate::gcra::Quota;
use crate::json;
use crate::names::check_id;
use crate::offset::Offset;
use crate::partition::{Partitioner, Resolved};
use crate::stream_id::StreamId;

/// Longest lease `RC.NODE.LEASE` accepts: one day.
pub const MAX_LEASE_MS: i64 = 86_400_000;
/// Largest `META` document `RC.CONNECT` accepts, in bytes.
pub const MAX_META_BYTES: usize = 4096;
/// Longest `REASON` of `RC.KICK`: a WebSocket close reason holds at most 123 bytes.
pub const MAX_REASON_BYTES: usize = 123;
/// The reason `RC.KICK` sends when none is given.
pub const DEFAULT_REASON: &str = "kicked";
/// Largest value `RC.THROTTLE` accepts for any numeric argument.
pub const MAX_THROTTLE_ARG: i64 = 1 << 40;
/// Most entries one `RC.HISTORY` call returns.
pub const MAX_HISTORY_COUNT: i64 = 10_000;
/// Entries `RC.HISTORY` returns when `COUNT` is not given.
pub const DEFAULT_HISTORY_COUNT: i64 = 100;
/// Most entries `RC.READ` returns per stream.
pub const MAX_READ_COUNT: i64 = 10_000;
/// Entries per stream `RC.READ` returns when `COUNT` is not given.
pub const DEFAULT_READ_COUNT: i64 = 256;
/// Longest `BLOCK` timeout of `RC.READ`: one day (`BLOCK 0` blocks without a timeout).
pub const MAX_READ_BLOCK_MS: i64 = 86_400_000;

/// Every command [`parse`] knows, in upper case.
pub const COMMANDS: &[&str] = &[
    "RC.NODE.LEASE",
    "RC.NODE.DOWN",
    "RC.CONNECT",
    "RC.DISCONNECT",
    "RC.CONNS",
    "RC.JOIN",
    "RC.LEAVE",
    "RC.MEMBERS",
    "RC.PRESENCE",
    "RC.PUBLISH",
    "RC.PUBLISHM",
    "RC.SEND",
    "RC.KICK",
    "RC.THROTTLE",
    "RC.HISTORY",
    "RC.READ",
    "RC.PROBE",
    "RC.INFO",
];

/// Why a command's arguments were refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArgError {
    /// Too few or too many arguments (the module answers Redis's own arity error).
    Arity,
    /// An invalid argument; the message names it and says what is wrong.
    Invalid(String),
    /// A refusal a caller acts on (a payload over the cap: [`Code::TooLarge`]): the
    /// module answers it with that code instead of `ERR`, and the same message.
    Coded(Code, String),
}

impl ArgError {
    /// The code the module answers with: `ERR` for an invalid argument (and for an
    /// arity error, which Redis words itself), else the refusal's own.
    pub fn code(&self) -> &'static str {
        match self {
            ArgError::Arity | ArgError::Invalid(_) => "ERR",
            ArgError::Coded(code, _) => code.as_str(),
        }
    }
}

impl fmt::Display for ArgError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ArgError::Arity => f.write_str("wrong number of arguments"),
            ArgError::Invalid(message) | ArgError::Coded(_, message) => f.write_str(message),
        }
    }
}

impl std::error::Error for ArgError {}

fn invalid(message: impl Into<String>) -> ArgError {
    ArgError::Invalid(message.into())
}

/// The text of an error reply: `CODE message`.
///
/// Error replies are single RESP lines and redis-module passes them through as bytes
/// of `char`s truncated to `u8`, so anything outside printable ASCII (names may be
/// Unicode) is written as `\u{…}` escapes, keeping the reply valid and readable.
pub fn error_line(code: &str, message: impl fmt::Display) -> String {
    let text = format!("{code} {message}");
    let mut ascii = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_ascii() && !c.is_ascii_control() {
            ascii.push(c);
        } else {
            ascii.extend(c.escape_unicode());
        }
    }
    ascii
}

// ------------------------------------------------------------------------------------
// One argument at a time.

/// Checks the number of arguments (command name included) is within `[min, max]`.
pub fn arity<A>(argv: &[A], min: usize, max: usize) -> Result<(), ArgError> {
    if argv.len() < min || argv.len() > max {
        return Err(ArgError::Arity);
    }
    Ok(())
}

/// The argument at `index`.
pub fn at<A: Deref<Target = [u8]>>(argv: &[A], index: usize) -> Result<&[u8], ArgError> {
    argv.get(index).map(|a| &**a).ok_or(ArgError::Arity)
}

/// The arguments from `index` on (none when there are fewer).
pub fn rest<A>(argv: &[A], index: usize) -> &[A] {
    argv.get(index..).unwrap_or_default()
}

/// A room, user or key name, plain or `{tag}`-prefixed, resolved to its partition.
pub fn name<'a>(p: &Partitioner, arg: &'a [u8], what: &str) -> Result<Resolved<'a>, ArgError> {
    p.resolve(arg)
        .map_err(|e| invalid(format!("invalid {what} name: {e}")))
}

/// A partition argument: a room or user name, or a partition tag in braces.
pub fn partition(p: &Partitioner, arg: &[u8]) -> Result<u32, ArgError> {
    p.resolve_partition(arg)
        .map_err(|e| invalid(format!("invalid partition: {e}")))
}

/// A node or connection id.
pub fn id<'a>(arg: &'a [u8], what: &str) -> Result<&'a str, ArgError> {
    check_id(arg).map_err(|e| invalid(format!("invalid {what} id: {e}")))
}

/// A decimal integer within `[min, max]`.
pub fn int(arg: &[u8], what: &str, min: i64, max: i64) -> Result<i64, ArgError> {
    let value = std::str::from_utf8(arg)
        .ok()
        .and_then(|s| s.parse::<i64>().ok())
        .ok_or_else(|| invalid(format!("{what} must be an integer")))?;
    if value < min || value > max {
        return Err(invalid(format!("{what} must be between {min} and {max}")));
    }
    Ok(value)
}

/// Optional `KEYWORD value` pairs after the fixed arguments.
///
/// `allowed` lists the keywords (upper case; matched case-insensitively). Unknown,
/// repeated or value-less keywords are errors. Returns one slot per allowed keyword.
pub fn options<'a, A: Deref<Target = [u8]>, const N: usize>(
    rest: &'a [A],
    allowed: [&str; N],
) -> Result<[Option<&'a [u8]>; N], ArgError> {
    let mut found: [Option<&[u8]>; N] = [None; N];
    let mut iter = rest.iter();
    while let Some(keyword) = iter.next() {
        let word: &[u8] = keyword;
        let slot = allowed
            .iter()
            .position(|k| k.as_bytes().eq_ignore_ascii_case(word))
            .ok_or_else(|| {
                invalid(format!(
                    "unknown option '{}' (expected one of {})",
                    String::from_utf8_lossy(word),
                    allowed.join(", ")
                ))
            })?;
        let keyword = allowed.get(slot).copied().unwrap_or_default();
        let value = iter
            .next()
            .ok_or_else(|| invalid(format!("option {keyword} needs a value")))?;
        let entry = found
            .get_mut(slot)
            .ok_or_else(|| invalid("option index out of range"))?;
        if entry.is_some() {
            return Err(invalid(format!("option {keyword} given twice")));
        }
        *entry = Some(&**value);
    }
    Ok(found)
}

/// A history offset (`SINCE`), as `RC.PUBLISH` returns it.
pub fn offset(arg: &[u8]) -> Result<Offset, ArgError> {
    std::str::from_utf8(arg)
        .ok()
        .and_then(Offset::parse)
        .ok_or_else(|| invalid("SINCE must be an offset <epoch>:<seq> as RC.PUBLISH returns it"))
}

/// A connection's `META` document: one JSON value, returned without surrounding space.
pub fn meta(arg: &[u8]) -> Result<&str, ArgError> {
    if arg.len() > MAX_META_BYTES {
        return Err(invalid(format!(
            "META is larger than {MAX_META_BYTES} bytes"
        )));
    }
    if !json::is_valid(arg) {
        return Err(invalid("META must be a valid JSON document"));
    }
    let text = std::str::from_utf8(arg).map_err(|_| invalid("META must be UTF-8"))?;
    Ok(text.trim())
}

/// A kick's `REASON`: UTF-8 text that fits a WebSocket close reason.
pub fn reason(arg: &[u8]) -> Result<&str, ArgError> {
    let text = std::str::from_utf8(arg).map_err(|_| invalid("REASON must be UTF-8"))?;
    if text.len() > MAX_REASON_BYTES || text.chars().any(char::is_control) {
        return Err(invalid(format!(
            "REASON must be at most {MAX_REASON_BYTES} bytes without control characters"
        )));
    }
    Ok(text)
}

/// Refuses a payload over `max` bytes (the `max-payload-bytes` policy) with
/// [`Code::TooLarge`].
pub fn payload(data: &[u8], max: i64) -> Result<(), ArgError> {
    if data.len() as u64 > max.max(0) as u64 {
        return Err(ArgError::Coded(
            Code::TooLarge,
            format!(
                "payload too large: {} bytes, max-payload-bytes is {max}",
                data.len()
            ),
        ));
    }
    Ok(())
}

// ------------------------------------------------------------------------------------
// Whole commands. Each parser checks the arity, then the arguments in order, so the
// first bad argument is the one reported.

/// `RC.NODE.LEASE partition node ttl_ms`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeLease<'a> {
    /// The partition.
    pub partition: u32,
    /// The node id.
    pub node: &'a str,
    /// Lease time to live, 1 ms to [`MAX_LEASE_MS`].
    pub ttl_ms: i64,
}

/// Parses `RC.NODE.LEASE`.
pub fn node_lease<'a, A: Deref<Target = [u8]>>(
    p: &Partitioner,
    argv: &'a [A],
) -> Result<NodeLease<'a>, ArgError> {
    arity(argv, 4, 4)?;
    let partition = partition(p, at(argv, 1)?)?;
    let node = id(at(argv, 2)?, "node")?;
    let ttl_ms = int(at(argv, 3)?, "ttl_ms", 1, MAX_LEASE_MS)?;
    Ok(NodeLease {
        partition,
        node,
        ttl_ms,
    })
}

/// `RC.NODE.LEASE node ttl_ms`: the lease in every partition at once, for a standalone
/// server (under Redis Cluster each partition's lease goes to its own shard).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeLeaseAll<'a> {
    /// The node id.
    pub node: &'a str,
    /// Lease time to live, 1 ms to [`MAX_LEASE_MS`].
    pub ttl_ms: i64,
}

/// Parses the partition-less form of `RC.NODE.LEASE` (`node ttl_ms`).
pub fn node_lease_all<'a, A: Deref<Target = [u8]>>(
    argv: &'a [A],
) -> Result<NodeLeaseAll<'a>, ArgError> {
    arity(argv, 3, 3)?;
    let node = id(at(argv, 1)?, "node")?;
    let ttl_ms = int(at(argv, 2)?, "ttl_ms", 1, MAX_LEASE_MS)?;
    Ok(NodeLeaseAll { node, ttl_ms })
}

/// Either form of `RC.NODE.LEASE`, told apart by arity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lease<'a> {
    /// `partition node ttl_ms`: one partition.
    One(NodeLease<'a>),
    /// `node ttl_ms`: every partition.
    All(NodeLeaseAll<'a>),
}

/// Parses `RC.NODE.LEASE` in either form: three arguments name a partition, two do not.
pub fn node_lease_any<'a, A: Deref<Target = [u8]>>(
    p: &Partitioner,
    argv: &'a [A],
) -> Result<Lease<'a>, ArgError> {
    if argv.len() == 3 {
        node_lease_all(argv).map(Lease::All)
    } else {
        node_lease(p, argv).map(Lease::One)
    }
}

/// `RC.NODE.DOWN partition node`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeDown<'a> {
    /// The partition.
    pub partition: u32,
    /// The node id.
    pub node: &'a str,
}

/// Parses `RC.NODE.DOWN`.
pub fn node_down<'a, A: Deref<Target = [u8]>>(
    p: &Partitioner,
    argv: &'a [A],
) -> Result<NodeDown<'a>, ArgError> {
    arity(argv, 3, 3)?;
    let partition = partition(p, at(argv, 1)?)?;
    let node = id(at(argv, 2)?, "node")?;
    Ok(NodeDown { partition, node })
}

/// `RC.CONNECT user node conn [META json]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connect<'a> {
    /// The user.
    pub user: Resolved<'a>,
    /// The node holding the connection.
    pub node: &'a str,
    /// The connection id.
    pub conn: &'a str,
    /// The `META` document, trimmed.
    pub meta: Option<&'a str>,
}

/// Parses `RC.CONNECT`.
pub fn connect<'a, A: Deref<Target = [u8]>>(
    p: &Partitioner,
    argv: &'a [A],
) -> Result<Connect<'a>, ArgError> {
    arity(argv, 4, 6)?;
    let user = name(p, at(argv, 1)?, "user")?;
    let node = id(at(argv, 2)?, "node")?;
    let conn = id(at(argv, 3)?, "connection")?;
    let [meta_arg] = options(rest(argv, 4), ["META"])?;
    let meta = meta_arg.map(meta).transpose()?;
    Ok(Connect {
        user,
        node,
        conn,
        meta,
    })
}

/// `RC.DISCONNECT user node conn`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disconnect<'a> {
    /// The user.
    pub user: Resolved<'a>,
    /// The node holding the connection.
    pub node: &'a str,
    /// The connection id.
    pub conn: &'a str,
}

/// Parses `RC.DISCONNECT`.
pub fn disconnect<'a, A: Deref<Target = [u8]>>(
    p: &Partitioner,
    argv: &'a [A],
) -> Result<Disconnect<'a>, ArgError> {
    arity(argv, 4, 4)?;
    let user = name(p, at(argv, 1)?, "user")?;
    let node = id(at(argv, 2)?, "node")?;
    let conn = id(at(argv, 3)?, "connection")?;
    Ok(Disconnect { user, node, conn })
}

/// Parses `RC.CONNS user`.
pub fn conns<'a, A: Deref<Target = [u8]>>(
    p: &Partitioner,
    argv: &'a [A],
) -> Result<Resolved<'a>, ArgError> {
    arity(argv, 2, 2)?;
    name(p, at(argv, 1)?, "user")
}

/// What a join asks to recover (`SINCE`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Since {
    /// `SINCE $`: only the room's current position.
    Now,
    /// `SINCE offset`: the messages after it.
    After(Offset),
}

/// `RC.JOIN room node conn user [SINCE offset|$]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Join<'a> {
    /// The room.
    pub room: Resolved<'a>,
    /// The node holding the connection.
    pub node: &'a str,
    /// The connection id.
    pub conn: &'a str,
    /// The connection's user.
    pub user: Resolved<'a>,
    /// What to recover, if asked.
    pub since: Option<Since>,
}

/// Parses `RC.JOIN`.
pub fn join<'a, A: Deref<Target = [u8]>>(
    p: &Partitioner,
    argv: &'a [A],
) -> Result<Join<'a>, ArgError> {
    arity(argv, 5, 7)?;
    let room = name(p, at(argv, 1)?, "room")?;
    let node = id(at(argv, 2)?, "node")?;
    let conn = id(at(argv, 3)?, "connection")?;
    let user = name(p, at(argv, 4)?, "user")?;
    let [since] = options(rest(argv, 5), ["SINCE"])?;
    let since = match since {
        Some(b"$") => Some(Since::Now),
        Some(arg) => Some(Since::After(offset(arg)?)),
        None => None,
    };
    Ok(Join {
        room,
        node,
        conn,
        user,
        since,
    })
}

/// `RC.LEAVE room node conn`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leave<'a> {
    /// The room.
    pub room: Resolved<'a>,
    /// The node holding the connection.
    pub node: &'a str,
    /// The connection id.
    pub conn: &'a str,
}

/// Parses `RC.LEAVE`.
pub fn leave<'a, A: Deref<Target = [u8]>>(
    p: &Partitioner,
    argv: &'a [A],
) -> Result<Leave<'a>, ArgError> {
    arity(argv, 4, 4)?;
    let room = name(p, at(argv, 1)?, "room")?;
    let node = id(at(argv, 2)?, "node")?;
    let conn = id(at(argv, 3)?, "connection")?;
    Ok(Leave { room, node, conn })
}

/// Parses `RC.MEMBERS room` and `RC.PRESENCE room`.
pub fn room<'a, A: Deref<Target = [u8]>>(
    p: &Partitioner,
    argv: &'a [A],
) -> Result<Resolved<'a>, ArgError> {
    arity(argv, 2, 2)?;
    name(p, at(argv, 1)?, "room")
}

/// `RC.PUBLISH room data [FROM user] [CONN conn]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish<'a> {
    /// The room.
    pub room: Resolved<'a>,
    /// The payload (its size is checked against the policy by the module).
    pub data: &'a [u8],
    /// The sending user.
    pub from: Option<Resolved<'a>>,
    /// The sending connection (not delivered to).
    pub conn: Option<&'a str>,
}

/// Parses `RC.PUBLISH`.
pub fn publish<'a, A: Deref<Target = [u8]>>(
    p: &Partitioner,
    argv: &'a [A],
) -> Result<Publish<'a>, ArgError> {
    arity(argv, 3, 7)?;
    let room = name(p, at(argv, 1)?, "room")?;
    let data = at(argv, 2)?;
    let [from, conn] = options(rest(argv, 3), ["FROM", "CONN"])?;
    let from = from.map(|f| name(p, f, "sender")).transpose()?;
    let conn = conn.map(|c| id(c, "connection")).transpose()?;
    Ok(Publish {
        room,
        data,
        from,
        conn,
    })
}

/// The most messages one `RC.PUBLISHM` carries.
pub const MAX_BATCH: usize = 1024;

/// `RC.PUBLISHM partition count room data from conn [room data from conn …]`: `count`
/// publishes in one command (one reply each, in order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishBatch<'a> {
    /// The partition the command is routed by (under Redis Cluster every room must be
    /// in it; on a standalone server rooms may be in any partition).
    pub partition: u32,
    /// Each message as parsed, or why it is refused (a refused message does not stop
    /// the others).
    pub messages: Vec<Result<Publish<'a>, ArgError>>,
}

/// Parses `RC.PUBLISHM`. The whole command is refused only when its shape is wrong (the
/// partition, the count, or a number of arguments that is not `count` × 4); a bad room
/// or sender name refuses that message alone. An empty `from` or `conn` means none.
pub fn publish_batch<'a, A: Deref<Target = [u8]>>(
    p: &Partitioner,
    argv: &'a [A],
) -> Result<PublishBatch<'a>, ArgError> {
    if argv.len() < 7 {
        return Err(ArgError::Arity);
    }
    let partition = partition(p, at(argv, 1)?)?;
    let count = int(at(argv, 2)?, "count", 1, MAX_BATCH as i64)? as usize;
    let groups = rest(argv, 3);
    if groups.len() != count * 4 {
        return Err(invalid(format!(
            "count is {count}, so {} arguments (room data from conn, per message) must \
             follow it, not {}",
            count * 4,
            groups.len()
        )));
    }
    let messages = groups
        .chunks_exact(4)
        .map(|group| match group {
            [room, data, from, conn] => batch_message(p, room, data, from, conn),
            _ => Err(ArgError::Arity),
        })
        .collect();
    Ok(PublishBatch {
        partition,
        messages,
    })
}

/// One message of `RC.PUBLISHM` (empty `from` / `conn`: none).
fn batch_message<'a>(
    p: &Partitioner,
    room: &'a [u8],
    data: &'a [u8],
    from: &'a [u8],
    conn: &'a [u8],
) -> Result<Publish<'a>, ArgError> {
    Ok(Publish {
        room: name(p, room, "room")?,
        data,
        from: (!from.is_empty())
            .then(|| name(p, from, "sender"))
            .transpose()?,
        conn: (!conn.is_empty())
            .then(|| id(conn, "connection"))
            .transpose()?,
    })
}

/// `RC.SEND user data [FROM user]`: a direct message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Direct<'a> {
    /// The recipient.
    pub user: Resolved<'a>,
    /// The payload (its size is checked against the policy by the module).
    pub data: &'a [u8],
    /// The sending user.
    pub from: Option<Resolved<'a>>,
}

/// Parses `RC.SEND`.
pub fn send<'a, A: Deref<Target = [u8]>>(
    p: &Partitioner,
    argv: &'a [A],
) -> Result<Direct<'a>, ArgError> {
    arity(argv, 3, 5)?;
    let user = name(p, at(argv, 1)?, "user")?;
    let data = at(argv, 2)?;
    let [from] = options(rest(argv, 3), ["FROM"])?;
    let from = from.map(|f| name(p, f, "sender")).transpose()?;
    Ok(Direct { user, data, from })
}

/// `RC.KICK user [REASON text]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kick<'a> {
    /// The user whose connections are closed.
    pub user: Resolved<'a>,
    /// The close reason ([`DEFAULT_REASON`] when none is given).
    pub reason: &'a str,
}

/// Parses `RC.KICK`.
pub fn kick<'a, A: Deref<Target = [u8]>>(
    p: &Partitioner,
    argv: &'a [A],
) -> Result<Kick<'a>, ArgError> {
    arity(argv, 2, 4)?;
    let user = name(p, at(argv, 1)?, "user")?;
    let [given] = options(rest(argv, 2), ["REASON"])?;
    let reason = match given {
        Some(text) => reason(text)?,
        None => DEFAULT_REASON,
    };
    Ok(Kick { user, reason })
}

/// `RC.THROTTLE key max_burst count period [quantity]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Throttle<'a> {
    /// The throttle key.
    pub key: Resolved<'a>,
    /// `count` per `period` seconds plus `max_burst`.
    pub quota: Quota,
    /// Cells this request takes (default 1).
    pub quantity: i64,
}

/// Parses `RC.THROTTLE`.
pub fn throttle<'a, A: Deref<Target = [u8]>>(
    p: &Partitioner,
    argv: &'a [A],
) -> Result<Throttle<'a>, ArgError> {
    arity(argv, 5, 6)?;
    let key = name(p, at(argv, 1)?, "key")?;
    let max_burst = int(at(argv, 2)?, "max_burst", 0, MAX_THROTTLE_ARG)?;
    let count = int(at(argv, 3)?, "count", 1, MAX_THROTTLE_ARG)?;
    let period = int(at(argv, 4)?, "period", 1, MAX_THROTTLE_ARG)?;
    let quantity = match argv.get(5) {
        Some(q) => int(q, "quantity", 0, MAX_THROTTLE_ARG)?,
        None => 1,
    };
    let quota = Quota::per_period(max_burst, count, period).map_err(ArgError::Invalid)?;
    Ok(Throttle {
        key,
        quota,
        quantity,
    })
}

/// `RC.HISTORY room [SINCE offset] [COUNT n]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct History<'a> {
    /// The room.
    pub room: Resolved<'a>,
    /// Messages after this offset; the newest when absent.
    pub since: Option<Offset>,
    /// At most this many, 1 to [`MAX_HISTORY_COUNT`] (default [`DEFAULT_HISTORY_COUNT`]).
    pub count: i64,
}

/// Parses `RC.HISTORY`.
pub fn history<'a, A: Deref<Target = [u8]>>(
    p: &Partitioner,
    argv: &'a [A],
) -> Result<History<'a>, ArgError> {
    arity(argv, 2, 6)?;
    let room = name(p, at(argv, 1)?, "room")?;
    let [since, count] = options(rest(argv, 2), ["SINCE", "COUNT"])?;
    let since = since.map(offset).transpose()?;
    let count = match count {
        Some(c) => int(c, "COUNT", 1, MAX_HISTORY_COUNT)?,
        None => DEFAULT_HISTORY_COUNT,
    };
    Ok(History { room, since, count })
}

/// `RC.PROBE partition node token`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe<'a> {
    /// The partition whose inbox of the node receives the probe.
    pub partition: u32,
    /// The node id.
    pub node: &'a str,
    /// The probe's number (a non-negative integer, kept as written).
    pub token: &'a [u8],
}

/// Parses `RC.PROBE`.
pub fn probe<'a, A: Deref<Target = [u8]>>(
    p: &Partitioner,
    argv: &'a [A],
) -> Result<Probe<'a>, ArgError> {
    arity(argv, 4, 4)?;
    let partition = partition(p, at(argv, 1)?)?;
    let node = id(at(argv, 2)?, "node")?;
    let token = at(argv, 3)?;
    int(token, "token", 0, i64::MAX)?;
    Ok(Probe {
        partition,
        node,
        token,
    })
}

/// Parses `RC.INFO` (no arguments).
pub fn info<A>(argv: &[A]) -> Result<(), ArgError> {
    arity(argv, 1, 1)
}

/// `RC.READ partition node [COUNT n] [BLOCK ms] STREAMS p1 [p2 …] id1 [id2 …]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Read<'a> {
    /// The routing partition (`argv[1]`).
    pub partition: u32,
    /// The edge node whose inboxes are read.
    pub node: &'a str,
    /// At most this many entries per stream, 1 to [`MAX_READ_COUNT`] (default
    /// [`DEFAULT_READ_COUNT`]).
    pub count: i64,
    /// `None`: never block; `Some(0)`: block until data; `Some(ms)`: block up to `ms`.
    pub block: Option<i64>,
    /// Partitions to read, each once, and for each the id after which entries are
    /// returned.
    pub streams: Vec<(u32, StreamId)>,
}

/// Parses `RC.READ`.
///
/// Keywords are case-insensitive; `COUNT` and `BLOCK` may come in any order, once each,
/// before `STREAMS`, which takes the rest: `k` partitions then `k` ids. Every partition
/// argument (the routing one and those after `STREAMS`) is a room or user name, plain or
/// tagged, or a bare `{tag}`; ids are `<ms>-<seq>` or `<ms>` ([`StreamId::parse`]).
pub fn read<'a, A: Deref<Target = [u8]>>(
    p: &Partitioner,
    argv: &'a [A],
) -> Result<Read<'a>, ArgError> {
    // RC.READ partition node STREAMS p id: at least 6.
    arity(argv, 6, usize::MAX)?;
    let routing = partition(p, at(argv, 1)?)?;
    let node = id(at(argv, 2)?, "node")?;
    let (count, block, streams_args) = read_options(rest(argv, 3))?;
    let count = match count {
        Some(c) => int(c, "COUNT", 1, MAX_READ_COUNT)?,
        None => DEFAULT_READ_COUNT,
    };
    let block = block
        .map(|b| int(b, "BLOCK", 0, MAX_READ_BLOCK_MS))
        .transpose()?;
    Ok(Read {
        partition: routing,
        node,
        count,
        block,
        streams: read_streams(p, streams_args)?,
    })
}

/// `RC.READ`'s `[COUNT n] [BLOCK ms] STREAMS …`: the two option values, unchecked, and
/// the arguments after `STREAMS`.
type ReadOptions<'a, A> = (Option<&'a [u8]>, Option<&'a [u8]>, &'a [A]);

/// Splits `RC.READ`'s options from its `STREAMS` arguments.
fn read_options<A: Deref<Target = [u8]>>(args: &[A]) -> Result<ReadOptions<'_, A>, ArgError> {
    let mut count = None;
    let mut block = None;
    let mut words = args.iter();
    loop {
        let Some(word) = words.next() else {
            return Err(invalid(
                "STREAMS is missing: RC.READ partition node [COUNT n] [BLOCK ms] \
                 STREAMS p1 [p2 ...] id1 [id2 ...]",
            ));
        };
        let word: &[u8] = word;
        if word.eq_ignore_ascii_case(b"STREAMS") {
            return Ok((count, block, words.as_slice()));
        }
        let (name, slot) = if word.eq_ignore_ascii_case(b"COUNT") {
            ("COUNT", &mut count)
        } else if word.eq_ignore_ascii_case(b"BLOCK") {
            ("BLOCK", &mut block)
        } else {
            return Err(invalid(format!(
                "unknown option '{}' (expected COUNT, BLOCK or STREAMS)",
                String::from_utf8_lossy(word)
            )));
        };
        let value: &[u8] = words
            .next()
            .ok_or_else(|| invalid(format!("option {name} needs a value")))?;
        if slot.is_some() {
            return Err(invalid(format!("option {name} given twice")));
        }
        *slot = Some(value);
    }
}

/// `RC.READ`'s `p1 … pk id1 … idk`: each partition once, with its id.
fn read_streams<A: Deref<Target = [u8]>>(
    p: &Partitioner,
    args: &[A],
) -> Result<Vec<(u32, StreamId)>, ArgError> {
    if args.is_empty() {
        return Err(invalid("STREAMS needs at least one partition and its id"));
    }
    if !args.len().is_multiple_of(2) {
        return Err(invalid(format!(
            "STREAMS needs one id per partition: got {} arguments after STREAMS, an odd count",
            args.len()
        )));
    }
    let k = args.len() / 2;
    if k > p.count() as usize {
        return Err(invalid(format!(
            "STREAMS names {k} partitions, but there are only {}",
            p.count()
        )));
    }
    let (names, ids) = args.split_at(k);
    let mut streams: Vec<(u32, StreamId)> = Vec::with_capacity(k);
    for (name, stream_id) in names.iter().zip(ids) {
        let name: &[u8] = name;
        let part = p.resolve_partition(name).map_err(|e| {
            invalid(format!(
                "invalid partition '{}' in STREAMS: {e}",
                String::from_utf8_lossy(name)
            ))
        })?;
        let tag = p.tag(part);
        if streams.iter().any(|(seen, _)| *seen == part) {
            return Err(invalid(format!(
                "partition {{{tag}}} is named twice in STREAMS"
            )));
        }
        let stream_id: &[u8] = stream_id;
        let parsed = StreamId::parse(stream_id).ok_or_else(|| {
            invalid(format!(
                "invalid stream id '{}' for partition {{{tag}}}: expected <ms>-<seq> or <ms> \
                 (0 reads from the start; $, +, - and > are not supported)",
                String::from_utf8_lossy(stream_id)
            ))
        })?;
        streams.push((part, parsed));
    }
    Ok(streams)
}

/// Any command, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command<'a> {
    /// `RC.NODE.LEASE` of one partition
    NodeLease(NodeLease<'a>),
    /// `RC.NODE.LEASE` of every partition (no partition argument)
    NodeLeaseAll(NodeLeaseAll<'a>),
    /// `RC.NODE.DOWN`
    NodeDown(NodeDown<'a>),
    /// `RC.CONNECT`
    Connect(Connect<'a>),
    /// `RC.DISCONNECT`
    Disconnect(Disconnect<'a>),
    /// `RC.CONNS` (the user)
    Conns(Resolved<'a>),
    /// `RC.JOIN`
    Join(Join<'a>),
    /// `RC.LEAVE`
    Leave(Leave<'a>),
    /// `RC.MEMBERS` (the room)
    Members(Resolved<'a>),
    /// `RC.PRESENCE` (the room)
    Presence(Resolved<'a>),
    /// `RC.PUBLISH`
    Publish(Publish<'a>),
    /// `RC.PUBLISHM`
    PublishBatch(PublishBatch<'a>),
    /// `RC.SEND`
    Send(Direct<'a>),
    /// `RC.KICK`
    Kick(Kick<'a>),
    /// `RC.THROTTLE`
    Throttle(Throttle<'a>),
    /// `RC.HISTORY`
    History(History<'a>),
    /// `RC.READ`
    Read(Read<'a>),
    /// `RC.PROBE`
    Probe(Probe<'a>),
    /// `RC.INFO`
    Info,
}

/// Parses a whole command line, `argv[0]` being the command's name (any case), with the
/// parser the module runs for that command. Used by the tests and the fuzz targets.
pub fn parse<'a, A: Deref<Target = [u8]>>(
    p: &Partitioner,
    argv: &'a [A],
) -> Result<Command<'a>, ArgError> {
    let Some(command) = argv.first() else {
        return Err(ArgError::Arity);
    };
    let upper = command.to_ascii_uppercase();
    Ok(match upper.as_slice() {
        b"RC.NODE.LEASE" => match node_lease_any(p, argv)? {
            Lease::One(one) => Command::NodeLease(one),
            Lease::All(all) => Command::NodeLeaseAll(all),
        },
        b"RC.NODE.DOWN" => Command::NodeDown(node_down(p, argv)?),
        b"RC.CONNECT" => Command::Connect(connect(p, argv)?),
        b"RC.DISCONNECT" => Command::Disconnect(disconnect(p, argv)?),
        b"RC.CONNS" => Command::Conns(conns(p, argv)?),
        b"RC.JOIN" => Command::Join(join(p, argv)?),
        b"RC.LEAVE" => Command::Leave(leave(p, argv)?),
        b"RC.MEMBERS" => Command::Members(room(p, argv)?),
        b"RC.PRESENCE" => Command::Presence(room(p, argv)?),
        b"RC.PUBLISH" => Command::Publish(publish(p, argv)?),
        b"RC.PUBLISHM" => Command::PublishBatch(publish_batch(p, argv)?),
        b"RC.SEND" => Command::Send(send(p, argv)?),
        b"RC.KICK" => Command::Kick(kick(p, argv)?),
        b"RC.THROTTLE" => Command::Throttle(throttle(p, argv)?),
        b"RC.HISTORY" => Command::History(history(p, argv)?),
        b"RC.READ" => Command::Read(read(p, argv)?),
        b"RC.PROBE" => Command::Probe(probe(p, argv)?),
        b"RC.INFO" => {
            info(argv)?;
            Command::Info
        }
        _ => {
            return Err(invalid(format!(
                "unknown command '{}'",
                String::from_utf8_lossy(command)
            )))
        }
    })
}

#[cfg(test)]
mod tests {
    use std::sync::OnceLock;

    use proptest::collection::vec;
    use proptest::prelude::*;

    use super::*;
    use crate::names::check_name;

    /// Layouts of 1, 16 and 1024 partitions, built once.
    fn layouts() -> &'static [Partitioner; 3] {
        static LAYOUTS: OnceLock<[Partitioner; 3]> = OnceLock::new();
        LAYOUTS.get_or_init(|| {
            [1, 16, 1024].map(|n| Partitioner::new(n).expect("valid partition count"))
        })
    }

    fn p16() -> &'static Partitioner {
        &layouts()[1]
    }

    fn argv(words: &[&str]) -> Vec<Vec<u8>> {
        words.iter().map(|w| w.as_bytes().to_vec()).collect()
    }

    fn refused(words: &[&str]) -> ArgError {
        match parse(p16(), &argv(words)) {
            Err(e) => e,
            Ok(c) => panic!("{words:?} was accepted as {c:?}"),
        }
    }

    #[test]
    fn a_batch_refuses_its_shape_as_a_whole_and_a_message_alone() {
        let ok = argv(&[
            "RC.PUBLISHM",
            "lobby",
            "2",
            "lobby",
            "hi",
            "ann",
            "n1.1",
            "game",
            "x",
            "",
            "",
        ]);
        let Ok(Command::PublishBatch(batch)) = parse(p16(), &ok) else {
            panic!("refused");
        };
        assert_eq!(batch.partition, p16().partition_of(b"lobby"));
        assert_eq!(batch.messages.len(), 2);
        let first = batch.messages[0].as_ref().expect("first");
        assert_eq!((first.room.name, first.data), ("lobby", &b"hi"[..]));
        assert_eq!(first.from.as_ref().map(|f| f.name), Some("ann"));
        assert_eq!(first.conn, Some("n1.1"));
        let second = batch.messages[1].as_ref().expect("second");
        assert_eq!((second.from.is_none(), second.conn.is_none()), (true, true));

        let one_bad = argv(&[
            "RC.PUBLISHM",
            "lobby",
            "2",
            "",
            "x",
            "",
            "",
            "b",
            "y",
            "",
            "",
        ]);
        let Ok(Command::PublishBatch(batch)) = parse(p16(), &one_bad) else {
            panic!("refused");
        };
        assert!(batch.messages[0].is_err() && batch.messages[1].is_ok());

        assert_eq!(
            refused(&["RC.PUBLISHM", "lobby", "1", "a", "b", "c"]),
            ArgError::Arity
        );
        let short = refused(&["RC.PUBLISHM", "lobby", "2", "a", "b", "", ""]);
        assert_eq!(
            short.to_string(),
            "count is 2, so 8 arguments (room data from conn, per message) must follow it, not 4"
        );
        assert_eq!(
            refused(&["RC.PUBLISHM", "lobby", "0", "a", "b", "", ""]).to_string(),
            "count must be between 1 and 1024"
        );
    }

    /// The texts the end-to-end test `bad_arguments_get_useful_errors` checks (those
    /// that need no Redis), here in full.
    #[test]
    fn error_texts_are_the_modules() {
        let cases: &[(&[&str], &str)] = &[
            (&["RC.NODE.LEASE", "lobby", "n1", "soon"], "ttl_ms must be an integer"),
            (
                &["RC.NODE.LEASE", "lobby", "n1", "0"],
                "ttl_ms must be between 1 and 86400000",
            ),
            (
                &["RC.NODE.LEASE", "lobby", "n:1", "100"],
                "invalid node id: contains a character that is not allowed",
            ),
            (&["RC.NODE.LEASE", "", "n1", "100"], "invalid partition: is empty"),
            (
                &["RC.NODE.LEASE", "{nope}", "n1", "100"],
                "invalid partition: carries the wrong partition tag (expected {a tag listed by RC.INFO})",
            ),
            (&["RC.CONNECT", "", "n1", "c1"], "invalid user name: is empty"),
            (
                &["RC.CONNECT", "ann", "n1", "c 1"],
                "invalid connection id: contains a character that is not allowed",
            ),
            (
                &["RC.CONNECT", "ann", "n1", "c1", "META", "{nope"],
                "META must be a valid JSON document",
            ),
            (&["RC.CONNECT", "ann", "n1", "c1", "META"], "option META needs a value"),
            (
                &["RC.CONNECT", "ann", "n1", "c1", "COLOR", "red"],
                "unknown option 'COLOR' (expected one of META)",
            ),
            (
                &["RC.JOIN", "lob\nby", "n1", "c1", "ann"],
                "invalid room name: contains a character that is not allowed",
            ),
            (
                &["RC.JOIN", "{abc", "n1", "c1", "ann"],
                "invalid room name: starts with '{' but has no closing '}'",
            ),
            (
                &["RC.JOIN", "lobby", "n1", "c1", "ann", "SINCE", "x"],
                "SINCE must be an offset <epoch>:<seq> as RC.PUBLISH returns it",
            ),
            (&["RC.PUBLISH", "lobby", "x", "FROM"], "option FROM needs a value"),
            (
                &["RC.PUBLISH", "lobby", "x", "FROM", "a", "FROM", "b"],
                "option FROM given twice",
            ),
            (
                &["RC.PUBLISH", "lobby", "x", "CONN", "bad id!"],
                "invalid connection id: contains a character that is not allowed",
            ),
            (
                &["RC.SEND", "ann", "x", "CONN", "c1"],
                "unknown option 'CONN' (expected one of FROM)",
            ),
            (&["RC.KICK", "ann", "REASON"], "option REASON needs a value"),
            (
                &["RC.KICK", "ann", "REASON", "a\u{7}b"],
                "REASON must be at most 123 bytes without control characters",
            ),
            (
                &["RC.THROTTLE", "k", "-1", "30", "60"],
                "max_burst must be between 0 and 1099511627776",
            ),
            (&["RC.THROTTLE", "k", "15", "0", "60"], "count must be between"),
            (&["RC.THROTTLE", "k", "15", "30", "0"], "period must be between"),
            (&["RC.THROTTLE", "k", "15", "30", "6x0"], "period must be an integer"),
            (
                &["RC.THROTTLE", "k", "15", "30", "60", "-1"],
                "quantity must be between",
            ),
            (
                &["RC.THROTTLE", "k", "1", "99999999999", "1"],
                "rate is too high: at most one cell per microsecond",
            ),
            (&["RC.HISTORY", "lobby", "COUNT", "0"], "COUNT must be between 1 and 10000"),
            // Two arguments: the partition-less form, `node ttl_ms`.
            (&["RC.NODE.LEASE", "lobby", "n1"], "ttl_ms must be an integer"),
            (&["RC.NODE.LEASE", "n:1", "100"], "invalid node id"),
        ];
        for (words, text) in cases {
            let e = refused(words).to_string();
            assert!(
                e.starts_with(text),
                "{words:?}: {e:?} does not start with {text:?}"
            );
        }
        for words in [
            &["RC.NODE.LEASE", "lobby"][..],
            &["RC.NODE.LEASE", "lobby", "n1", "100", "x"],
            &["RC.NODE.DOWN", "lobby"],
            &["RC.JOIN", "lobby", "n1", "c1"],
            &["RC.LEAVE", "lobby", "n1"],
            &["RC.PUBLISH", "lobby"],
            &["RC.SEND", "ann"],
            &["RC.MEMBERS"],
            &["RC.PRESENCE", "a", "b"],
            &["RC.THROTTLE", "k", "15", "30"],
            &["RC.INFO", "extra"],
            &[],
        ] {
            assert_eq!(refused(words), ArgError::Arity, "{words:?}");
        }
        let long = "r".repeat(300);
        assert_eq!(
            refused(&["RC.MEMBERS", &long]).to_string(),
            "invalid room name: is longer than 256 bytes"
        );
        let junk = [b"RC.MEMBERS".to_vec(), vec![0xff, 0xfe]];
        assert_eq!(
            parse(p16(), &junk).map_err(|e| e.to_string()),
            Err("invalid room name: is not valid UTF-8".to_string())
        );
        assert_eq!(
            payload(b"01234567890", 10).map_err(|e| e.to_string()),
            Err("payload too large: 11 bytes, max-payload-bytes is 10".to_string())
        );
        assert_eq!(
            payload(b"01234567890", 10).map_err(|e| e.code()),
            Err("TOOLARGE")
        );
        assert_eq!(payload(b"0123456789", 10), Ok(()));
        assert_eq!(refused(&["RC.MEMBERS", ""]).code(), "ERR");
        assert_eq!(ArgError::Arity.code(), "ERR");
    }

    #[test]
    fn well_formed_commands_parse() {
        let p = p16();
        let lobby = p.resolve(b"lobby").unwrap();
        let ann = p.resolve(b"ann").unwrap();
        let words = argv(&["rc.join", "lobby", "n1", "c1", "ann", "since", "$"]);
        assert_eq!(
            parse(p, &words),
            Ok(Command::Join(Join {
                room: lobby,
                node: "n1",
                conn: "c1",
                user: ann,
                since: Some(Since::Now),
            }))
        );
        let words = argv(&["RC.KICK", "ann"]);
        assert_eq!(
            parse(p, &words),
            Ok(Command::Kick(Kick {
                user: ann,
                reason: "kicked"
            }))
        );
        let words = argv(&["RC.CONNECT", "ann", "n1", "c1", "META", " {\"a\":1} "]);
        let Ok(Command::Connect(c)) = parse(p, &words) else {
            panic!("RC.CONNECT refused")
        };
        assert_eq!(c.meta, Some("{\"a\":1}"));
        assert_eq!(parse(p, &argv(&["RC.INFO"])), Ok(Command::Info));
        let words = argv(&["RC.PROBE", &format!("{{{}}}", p.tag(0)), "n1", "42"]);
        let Ok(Command::Probe(c)) = parse(p, &words) else {
            panic!("RC.PROBE refused")
        };
        assert_eq!((c.partition, c.node, c.token), (0, "n1", &b"42"[..]));
        for bad in ["-1", "x", ""] {
            let words = argv(&["RC.PROBE", &format!("{{{}}}", p.tag(0)), "n1", bad]);
            assert!(parse(p, &words).is_err(), "token {bad:?} accepted");
        }
        assert!(matches!(
            parse(p, &argv(&["RC.NOPE"])),
            Err(ArgError::Invalid(_))
        ));
    }

    #[test]
    fn error_lines_escape_everything_but_printable_ascii() {
        assert_eq!(
            error_line("TOOMANY", "user zoë\r\nhas 3"),
            "TOOMANY user zo\\u{eb}\\u{d}\\u{a}has 3"
        );
    }

    // --------------------------------------------------------------------------------
    // RC.READ.

    fn bare(p: &Partitioner, part: u32) -> String {
        format!("{{{}}}", p.tag(part))
    }

    /// The message `RC.READ` is refused with (`<arity>` for an arity error).
    fn read_refused(words: &[&str]) -> String {
        match read(p16(), &argv(words)) {
            Err(ArgError::Arity) => "<arity>".to_string(),
            Err(e) => e.to_string(),
            Ok(r) => panic!("{words:?} was accepted as {r:?}"),
        }
    }

    #[test]
    fn a_full_read_parses() {
        let p = p16();
        let (a, b) = (bare(p, 3), bare(p, 9));
        let words = argv(&[
            "RC.READ", &a, "n1", "count", "10", "BLOCK", "0", "streams", &a, &b, "0", "5-1",
        ]);
        let want = Read {
            partition: 3,
            node: "n1",
            count: 10,
            block: Some(0),
            streams: vec![
                (3, StreamId { ms: 0, seq: 0 }),
                (9, StreamId { ms: 5, seq: 1 }),
            ],
        };
        assert_eq!(parse(p, &words), Ok(Command::Read(want)));
    }

    #[test]
    fn a_read_has_defaults_and_takes_any_partition_argument() {
        let p = p16();
        let tagged = p.tagged("lobby");
        let words = argv(&["RC.READ", "lobby", "n-1.x_2", "STREAMS", &tagged, "7"]);
        let r = read(p, &words).unwrap();
        let lobby = p.partition_of(b"lobby");
        assert_eq!(r.partition, lobby);
        assert_eq!(r.count, DEFAULT_READ_COUNT);
        assert_eq!(r.block, None);
        assert_eq!(r.streams, vec![(lobby, StreamId { ms: 7, seq: 0 })]);
        // Options in the other order.
        let words = argv(&[
            "RC.READ", "lobby", "n1", "BLOCK", "200", "COUNT", "1", "STREAMS", "ann", "0",
        ]);
        let r = read(p, &words).unwrap();
        assert_eq!((r.count, r.block), (1, Some(200)));
    }

    #[test]
    fn bad_read_arguments_say_what_is_wrong() {
        let p = p16();
        let a = bare(p, 1);
        let b = bare(p, 2);
        let cases: Vec<(Vec<&str>, &str)> = vec![
            (vec!["RC.READ", &a, "n1", "STREAMS", &a], "<arity>"),
            (
                vec!["RC.READ", "", "n1", "STREAMS", &a, "0"],
                "invalid partition: is empty",
            ),
            (
                vec!["RC.READ", &a, "n:1", "STREAMS", &a, "0"],
                "invalid node id: contains a character that is not allowed",
            ),
            (
                vec!["RC.READ", &a, "n1", "COUNT", "5", "BLOCK", "0"],
                "STREAMS is missing",
            ),
            (
                vec!["RC.READ", &a, "n1", "LIMIT", "5", "STREAMS", &a, "0"],
                "unknown option 'LIMIT' (expected COUNT, BLOCK or STREAMS)",
            ),
            (
                vec![
                    "RC.READ", &a, "n1", "COUNT", "1", "COUNT", "2", "STREAMS", &a, "0",
                ],
                "option COUNT given twice",
            ),
            (vec!["RC.READ", &a, "n1", "STREAMS", "COUNT"], "<arity>"),
            (
                vec!["RC.READ", &a, "n1", "BLOCK", "5", "COUNT"],
                "option COUNT needs a value",
            ),
            (
                vec!["RC.READ", &a, "n1", "COUNT", "0", "STREAMS", &a, "0"],
                "COUNT must be between 1 and 10000",
            ),
            (
                vec!["RC.READ", &a, "n1", "COUNT", "10001", "STREAMS", &a, "0"],
                "COUNT must be between 1 and 10000",
            ),
            (
                vec!["RC.READ", &a, "n1", "COUNT", "x", "STREAMS", &a, "0"],
                "COUNT must be an integer",
            ),
            (
                vec!["RC.READ", &a, "n1", "BLOCK", "-1", "STREAMS", &a, "0"],
                "BLOCK must be between 0 and 86400000",
            ),
            (
                vec!["RC.READ", &a, "n1", "COUNT", "3", "STREAMS"],
                "STREAMS needs at least one partition and its id",
            ),
            (
                vec!["RC.READ", &a, "n1", "STREAMS", &a, &b, "0"],
                "STREAMS needs one id per partition: got 3 arguments",
            ),
            (
                vec!["RC.READ", &a, "n1", "STREAMS", &a, &a, "0", "0"],
                "is named twice in STREAMS",
            ),
            (
                vec!["RC.READ", &a, "n1", "STREAMS", "{nope}", "0"],
                "invalid partition '{nope}' in STREAMS",
            ),
            (
                vec!["RC.READ", &a, "n1", "STREAMS", &a, "$"],
                "invalid stream id '$' for partition",
            ),
            (
                vec!["RC.READ", &a, "n1", "STREAMS", &a, "+"],
                "invalid stream id '+'",
            ),
            (
                vec!["RC.READ", &a, "n1", "STREAMS", &a, "1-x"],
                "expected <ms>-<seq> or <ms>",
            ),
        ];
        for (words, needle) in cases {
            let message = read_refused(&words);
            assert!(
                message.contains(needle),
                "{words:?}: {message:?} lacks {needle:?}"
            );
        }
    }

    #[test]
    fn a_read_refuses_the_same_partition_twice_whatever_its_spelling() {
        let p = p16();
        let lobby = p.partition_of(b"lobby");
        let tag = bare(p, lobby);
        let message = read_refused(&["RC.READ", &tag, "n1", "STREAMS", "lobby", &tag, "0", "0"]);
        assert!(message.contains("named twice"), "{message}");
    }

    #[test]
    fn a_read_refuses_more_streams_than_partitions() {
        let p = Partitioner::new(2).unwrap();
        let (a, b) = (bare(&p, 0), bare(&p, 1));
        let words = argv(&[
            "RC.READ", &a, "n1", "STREAMS", &a, &b, "lobby", "0", "0", "0",
        ]);
        assert_eq!(
            read(&p, &words),
            Err(ArgError::Invalid(
                "STREAMS names 3 partitions, but there are only 2".to_string()
            ))
        );
        // Every partition once is fine.
        let words = argv(&["RC.READ", &a, "n1", "STREAMS", &a, &b, "0", "0"]);
        assert_eq!(read(&p, &words).unwrap().streams.len(), 2);
    }

    #[test]
    fn arbitrary_read_argv_never_panics() {
        let p = p16();
        let pool: [&[u8]; 12] = [
            b"RC.READ",
            b"STREAMS",
            b"COUNT",
            b"BLOCK",
            b"0",
            b"5",
            b"{1.7}",
            b"lobby",
            b"",
            b"$",
            b"n1",
            &[0xff, 0x00],
        ];
        // A deterministic walk over short argument lists.
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..20_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let len = (state % 12) as usize;
            let argv: Vec<Vec<u8>> = (0..len)
                .map(|i| pool[((state >> (i * 4)) % pool.len() as u64) as usize].to_vec())
                .collect();
            let _ = read(p, &argv);
        }
    }

    // --------------------------------------------------------------------------------
    // Properties.

    /// Plain names: 1–16 characters, no control characters, not starting with `{`.
    fn plain_name() -> impl Strategy<Value = String> {
        "[^\\p{Cc}{][^\\p{Cc}]{0,15}"
    }

    /// A name as a client sends it: plain, or with its partition tag.
    fn sent_name(p: &'static Partitioner) -> impl Strategy<Value = (String, String)> {
        (plain_name(), any::<bool>()).prop_map(move |(name, tagged)| {
            let sent = if tagged {
                p.tagged(&name)
            } else {
                name.clone()
            };
            (name, sent)
        })
    }

    fn resolved<'a>(p: &Partitioner, name: &'a str) -> Resolved<'a> {
        Resolved {
            partition: p.partition_of(name.as_bytes()),
            name,
        }
    }

    fn id_text() -> impl Strategy<Value = String> {
        "[A-Za-z0-9_.-]{1,64}"
    }

    fn offset_text() -> impl Strategy<Value = String> {
        "[0-9a-z]{1,16}:[0-9]{1,19}"
    }

    /// `word` in random letter case.
    fn any_case(word: &'static str) -> impl Strategy<Value = String> {
        vec(any::<bool>(), word.len()).prop_map(move |upper| {
            word.chars()
                .zip(upper)
                .map(|(c, u)| {
                    if u {
                        c.to_ascii_uppercase()
                    } else {
                        c.to_ascii_lowercase()
                    }
                })
                .collect()
        })
    }

    /// One argument of a random argv: junk, and all the things commands look for.
    fn arg() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            4 => vec(any::<u8>(), 0..40),
            2 => prop::sample::select(vec![
                "FROM", "CONN", "META", "REASON", "SINCE", "COUNT", "from", "Since", "$",
                "STREAMS", "BLOCK", "streams",
            ])
            .prop_map(|w| w.as_bytes().to_vec()),
            1 => prop::sample::select(vec!["0-0", "5-1", "7", "1-", "-1", "+", ">"])
                .prop_map(|w| w.as_bytes().to_vec()),
            2 => prop::sample::select(vec![
                "0", "-1", "1", "+7", "60000", "86400000", "86400001", "1099511627776",
                "9223372036854775807", "-9223372036854775808", "9223372036854775808",
                "1e3", " 1", "",
            ])
            .prop_map(|w| w.as_bytes().to_vec()),
            2 => plain_name().prop_map(String::into_bytes),
            1 => plain_name().prop_map(|n| p16().tagged(&n).into_bytes()),
            1 => prop::sample::select(vec!["{", "{}", "{}x", "{0.13}", "{x}y", "{{}}", "}"])
                .prop_map(|w| w.as_bytes().to_vec()),
            1 => id_text().prop_map(String::into_bytes),
            1 => offset_text().prop_map(String::into_bytes),
            1 => (250usize..300).prop_map(|n| vec![b'a'; n]),
            1 => prop::sample::select(vec!["{\"a\":1}", "[1,2", "null", " \"x\" ", "[[[]]]"])
                .prop_map(|w| w.as_bytes().to_vec()),
            1 => Just(vec![0u8, b'\r', b'\n', 0xff]),
        ]
    }

    /// A command name: one of ours in any case, or anything.
    fn command_name() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            8 => prop::sample::select(COMMANDS.to_vec())
                .prop_flat_map(any_case)
                .prop_map(String::into_bytes),
            1 => vec(any::<u8>(), 0..12),
        ]
    }

    fn check_resolved(p: &Partitioner, r: &Resolved<'_>) {
        assert!(check_name(r.name.as_bytes()).is_ok());
        assert_eq!(r.partition, p.partition_of(r.name.as_bytes()));
        assert!(r.partition < p.count());
    }

    fn check_id_ok(id: &str) {
        assert!(check_id(id.as_bytes()).is_ok(), "{id:?}");
    }

    /// What every accepted command guarantees to the module.
    fn check_accepted(p: &Partitioner, command: &Command<'_>) {
        match command {
            Command::NodeLease(c) => {
                assert!(c.partition < p.count());
                check_id_ok(c.node);
                assert!((1..=MAX_LEASE_MS).contains(&c.ttl_ms));
            }
            Command::NodeLeaseAll(c) => {
                check_id_ok(c.node);
                assert!((1..=MAX_LEASE_MS).contains(&c.ttl_ms));
            }
            Command::NodeDown(c) => {
                assert!(c.partition < p.count());
                check_id_ok(c.node);
            }
            Command::Connect(c) => {
                check_resolved(p, &c.user);
                check_id_ok(c.node);
                check_id_ok(c.conn);
                if let Some(meta) = c.meta {
                    assert!(json::is_valid(meta.as_bytes()) && meta.len() <= MAX_META_BYTES);
                }
            }
            Command::Disconnect(c) => {
                check_resolved(p, &c.user);
                check_id_ok(c.node);
                check_id_ok(c.conn);
            }
            Command::Conns(r) | Command::Members(r) | Command::Presence(r) => check_resolved(p, r),
            Command::Join(c) => {
                check_resolved(p, &c.room);
                check_resolved(p, &c.user);
                check_id_ok(c.node);
                check_id_ok(c.conn);
            }
            Command::Leave(c) => {
                check_resolved(p, &c.room);
                check_id_ok(c.node);
                check_id_ok(c.conn);
            }
            Command::Publish(c) => {
                check_resolved(p, &c.room);
                if let Some(from) = &c.from {
                    check_resolved(p, from);
                }
                if let Some(conn) = c.conn {
                    check_id_ok(conn);
                }
            }
            Command::PublishBatch(b) => {
                assert!(b.partition < p.count());
                assert!((1..=MAX_BATCH).contains(&b.messages.len()));
                for message in b.messages.iter().flatten() {
                    check_accepted(p, &Command::Publish(message.clone()));
                }
            }
            Command::Send(c) => {
                check_resolved(p, &c.user);
                if let Some(from) = &c.from {
                    check_resolved(p, from);
                }
            }
            Command::Kick(c) => {
                check_resolved(p, &c.user);
                assert!(c.reason.len() <= MAX_REASON_BYTES);
                assert!(!c.reason.chars().any(char::is_control));
            }
            Command::Throttle(c) => {
                check_resolved(p, &c.key);
                assert!((0..=MAX_THROTTLE_ARG).contains(&c.quantity));
            }
            Command::History(c) => {
                check_resolved(p, &c.room);
                assert!((1..=MAX_HISTORY_COUNT).contains(&c.count));
            }
            Command::Read(c) => {
                assert!(c.partition < p.count());
                check_id_ok(c.node);
                assert!((1..=MAX_READ_COUNT).contains(&c.count));
                assert!(c
                    .block
                    .is_none_or(|ms| (0..=MAX_READ_BLOCK_MS).contains(&ms)));
                assert!(!c.streams.is_empty() && c.streams.len() <= p.count() as usize);
                for (i, (part, _)) in c.streams.iter().enumerate() {
                    assert!(*part < p.count());
                    assert!(c.streams.iter().skip(i + 1).all(|(other, _)| other != part));
                }
            }
            Command::Probe(c) => {
                assert!(c.partition < p.count());
                check_id_ok(c.node);
                assert!(std::str::from_utf8(c.token)
                    .is_ok_and(|t| t.parse::<i64>().is_ok_and(|n| n >= 0)));
            }
            Command::Info => {}
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4096))]

        /// Random argv (arity 0–13, binary, huge integers, broken tags, invalid UTF-8)
        /// for every command: a checked value or an error, never a panic; error replies
        /// stay printable ASCII.
        #[test]
        fn random_argv_parse_or_fail_cleanly(
            layout in 0usize..3,
            name in command_name(),
            args in vec(arg(), 0..13),
        ) {
            let p = &layouts()[layout];
            let mut argv = vec![name];
            argv.extend(args);
            match parse(p, &argv) {
                Ok(command) => check_accepted(p, &command),
                Err(ArgError::Arity) => {}
                Err(ArgError::Invalid(message)) => {
                    prop_assert!(!message.is_empty());
                    let line = error_line("ERR", &message);
                    prop_assert!(line.bytes().all(|b| (0x20..0x7f).contains(&b)), "{}", line);
                }
                // Parsing refuses with `ERR` only; codes come from the module's checks.
                Err(e @ ArgError::Coded(..)) => prop_assert!(false, "coded parse error {:?}", e),
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// `int` accepts exactly the decimal i64s within its range.
        #[test]
        fn int_accepts_exactly_the_integers_in_range(
            n in any::<i64>(),
            bounds in (any::<i64>(), any::<i64>()),
            junk in vec(any::<u8>(), 0..24),
        ) {
            let (min, max) = (bounds.0.min(bounds.1), bounds.0.max(bounds.1));
            let got = int(n.to_string().as_bytes(), "n", min, max);
            if (min..=max).contains(&n) {
                prop_assert_eq!(got, Ok(n));
            } else {
                prop_assert_eq!(
                    got.map_err(|e| e.to_string()),
                    Err(format!("n must be between {min} and {max}"))
                );
            }
            if let Ok(v) = int(&junk, "n", i64::MIN, i64::MAX) {
                let text = std::str::from_utf8(&junk).ok();
                prop_assert_eq!(text.and_then(|t| t.parse::<i64>().ok()), Some(v));
            }
        }

        /// Options come back in their slots whatever their order and letter case; a
        /// repeated keyword or a missing value is refused.
        #[test]
        fn options_fill_their_slots_in_any_order(
            from in proptest::option::of(vec(any::<u8>(), 0..8)),
            conn in proptest::option::of(vec(any::<u8>(), 0..8)),
            from_word in any_case("FROM"),
            conn_word in any_case("CONN"),
            swap in any::<bool>(),
        ) {
            let mut pairs = Vec::new();
            if let Some(v) = &from {
                pairs.push(vec![from_word.clone().into_bytes(), v.clone()]);
            }
            if let Some(v) = &conn {
                pairs.push(vec![conn_word.clone().into_bytes(), v.clone()]);
            }
            if swap {
                pairs.reverse();
            }
            let rest: Vec<Vec<u8>> = pairs.concat();
            let [f, c] = options(&rest, ["FROM", "CONN"]).unwrap();
            prop_assert_eq!(f, from.as_deref());
            prop_assert_eq!(c, conn.as_deref());

            let mut twice = rest.clone();
            twice.extend([from_word.clone().into_bytes(), b"x".to_vec()]);
            twice.extend([from_word.into_bytes(), b"y".to_vec()]);
            let e = options(&twice, ["FROM", "CONN"]).unwrap_err().to_string();
            prop_assert_eq!(e, "option FROM given twice");

            let mut dangling = rest;
            dangling.push(conn_word.into_bytes());
            let e = options(&dangling, ["FROM", "CONN"]).unwrap_err().to_string();
            prop_assert_eq!(e, "option CONN needs a value");
        }

        /// Error lines are printable ASCII and keep printable ASCII text as it is.
        #[test]
        fn error_lines_are_printable_ascii(message in any::<String>(), plain in "[ -~]{0,40}") {
            let line = error_line("ERR", &message);
            prop_assert!(line.bytes().all(|b| (0x20..0x7f).contains(&b)));
            prop_assert_eq!(error_line("ERR", &plain), format!("ERR {plain}"));
        }

        /// A valid `RC.PUBLISH` — names plain or tagged, options in any order and case,
        /// any payload bytes — parses to exactly what was sent.
        #[test]
        fn publish_round_trips(
            room in sent_name(p16()),
            data in vec(any::<u8>(), 0..64),
            from in proptest::option::of(sent_name(p16())),
            conn in proptest::option::of(id_text()),
            words in (any_case("FROM"), any_case("CONN")),
            swap in any::<bool>(),
        ) {
            let p = p16();
            let mut opts = Vec::new();
            if let Some((_, sent)) = &from {
                opts.push([words.0.clone(), sent.clone()]);
            }
            if let Some(conn) = &conn {
                opts.push([words.1.clone(), conn.clone()]);
            }
            if swap {
                opts.reverse();
            }
            let mut argv = vec![b"RC.PUBLISH".to_vec(), room.1.clone().into_bytes(), data.clone()];
            argv.extend(opts.concat().into_iter().map(String::into_bytes));
            let want = Publish {
                room: resolved(p, &room.0),
                data: &data,
                from: from.as_ref().map(|(name, _)| resolved(p, name)),
                conn: conn.as_deref(),
            };
            prop_assert_eq!(parse(p, &argv), Ok(Command::Publish(want)));
        }

        /// A valid `RC.JOIN`, with or without `SINCE`, parses to what was sent.
        #[test]
        fn join_round_trips(
            room in sent_name(p16()),
            node in id_text(),
            conn in id_text(),
            user in sent_name(p16()),
            since in proptest::option::of(proptest::option::of(offset_text())),
        ) {
            let p = p16();
            let mut argv = argv(&["RC.JOIN", &room.1, &node, &conn, &user.1]);
            let want_since = match &since {
                None => None,
                Some(None) => {
                    argv.extend([b"SINCE".to_vec(), b"$".to_vec()]);
                    Some(Since::Now)
                }
                Some(Some(offset)) => {
                    argv.extend([b"SINCE".to_vec(), offset.clone().into_bytes()]);
                    Offset::parse(offset).map(Since::After)
                }
            };
            let got = parse(p, &argv);
            if since.is_some() && want_since.is_none() {
                // Only a seq past u64 fails; the offset error is the one reported.
                prop_assert!(matches!(got, Err(ArgError::Invalid(m)) if m.starts_with("SINCE")));
            } else {
                let want = Join {
                    room: resolved(p, &room.0),
                    node: &node,
                    conn: &conn,
                    user: resolved(p, &user.0),
                    since: want_since,
                };
                prop_assert_eq!(got, Ok(Command::Join(want)));
            }
        }

        /// A valid `RC.READ` — partitions as names or tags, options in any order and
        /// case, ids with or without a sequence — parses to exactly what was sent.
        #[test]
        fn read_round_trips(
            routing in 0u32..16,
            node in id_text(),
            count in proptest::option::of(1i64..=MAX_READ_COUNT),
            block in proptest::option::of(0i64..=MAX_READ_BLOCK_MS),
            words in (any_case("COUNT"), any_case("BLOCK"), any_case("STREAMS")),
            swap in any::<bool>(),
            picked in proptest::sample::subsequence((0u32..16).collect::<Vec<_>>(), 1..=16),
            order in any::<u64>(),
            ids in vec((any::<u64>(), any::<u64>(), any::<bool>()), 16),
        ) {
            let p = p16();
            // The partitions in a shuffled order, each spelled as a tag.
            let mut parts = picked;
            let n = parts.len();
            parts.rotate_left((order as usize) % n);
            let streams: Vec<(u32, StreamId)> = parts
                .iter()
                .zip(&ids)
                .map(|(&part, &(ms, seq, bare_ms))| {
                    (part, StreamId { ms, seq: if bare_ms { 0 } else { seq } })
                })
                .collect();
            let mut sent = vec!["RC.READ".to_string(), bare(p, routing), node.clone()];
            let mut opts = Vec::new();
            if let Some(c) = count {
                opts.push([words.0.clone(), c.to_string()]);
            }
            if let Some(b) = block {
                opts.push([words.1.clone(), b.to_string()]);
            }
            if swap {
                opts.reverse();
            }
            sent.extend(opts.concat());
            sent.push(words.2.clone());
            sent.extend(streams.iter().map(|(part, _)| bare(p, *part)));
            sent.extend(streams.iter().zip(&ids).map(|((_, id), &(_, _, bare_ms))| {
                if bare_ms { id.ms.to_string() } else { id.to_string() }
            }));
            let argv: Vec<Vec<u8>> = sent.into_iter().map(String::into_bytes).collect();
            let want = Read {
                partition: routing,
                node: &node,
                count: count.unwrap_or(DEFAULT_READ_COUNT),
                block,
                streams,
            };
            prop_assert_eq!(parse(p, &argv), Ok(Command::Read(want)));
        }

        /// `RC.NODE.LEASE` takes a name or a bare partition tag, and any ttl in range.
        #[test]
        fn node_lease_round_trips(
            partition in 0u32..16,
            name in proptest::option::of(plain_name()),
            node in id_text(),
            ttl in 1i64..=MAX_LEASE_MS,
        ) {
            let p = p16();
            let (sent, want) = match &name {
                Some(name) => (name.clone(), p.partition_of(name.as_bytes())),
                None => (format!("{{{}}}", p.tag(partition)), partition),
            };
            let argv = argv(&["RC.NODE.LEASE", &sent, &node, &ttl.to_string()]);
            prop_assert_eq!(
                parse(p, &argv),
                Ok(Command::NodeLease(NodeLease { partition: want, node: &node, ttl_ms: ttl }))
            );
        }

        /// `RC.NODE.LEASE node ttl_ms` (no partition) takes any ttl in range, and only
        /// two arguments are read as that form.
        #[test]
        fn node_lease_all_round_trips(node in id_text(), ttl in 1i64..=MAX_LEASE_MS) {
            let p = p16();
            let argv = argv(&["RC.NODE.LEASE", &node, &ttl.to_string()]);
            prop_assert_eq!(
                parse(p, &argv),
                Ok(Command::NodeLeaseAll(NodeLeaseAll { node: &node, ttl_ms: ttl }))
            );
            let short = argv.get(..2).unwrap_or_default();
            prop_assert_eq!(parse(p, short), Err(ArgError::Arity));
        }

        /// `RC.THROTTLE` numbers in range parse to the quota `gcra` builds from them.
        #[test]
        fn throttle_round_trips(
            key in sent_name(p16()),
            burst in 0i64..=MAX_THROTTLE_ARG,
            count in 1i64..=MAX_THROTTLE_ARG,
            period in 1i64..=MAX_THROTTLE_ARG,
            quantity in proptest::option::of(0i64..=MAX_THROTTLE_ARG),
        ) {
            let p = p16();
            let mut words = vec![
                "RC.THROTTLE".to_string(), key.1.clone(), burst.to_string(),
                count.to_string(), period.to_string(),
            ];
            words.extend(quantity.map(|q| q.to_string()));
            let argv: Vec<Vec<u8>> = words.into_iter().map(String::into_bytes).collect();
            let got = parse(p, &argv);
            match Quota::per_period(burst, count, period) {
                Ok(quota) => prop_assert_eq!(got, Ok(Command::Throttle(Throttle {
                    key: resolved(p, &key.0),
                    quota,
                    quantity: quantity.unwrap_or(1),
                }))),
                Err(e) => prop_assert_eq!(got, Err(ArgError::Invalid(e))),
            }
        }

        /// `RC.CONNECT` keeps a valid META document (trimmed); `RC.KICK` its reason;
        /// `RC.HISTORY` its offset and count.
        #[test]
        fn connect_kick_and_history_round_trip(
            user in sent_name(p16()),
            meta in prop::sample::select(vec!["{}", " [1, {\"a\":null}] ", "\"x\"", "-0.5e3"]),
            reason in "[^\\p{Cc}]{0,30}",
            since in offset_text(),
            count in 1i64..=MAX_HISTORY_COUNT,
        ) {
            let p = p16();
            let connect_argv = argv(&["RC.CONNECT", &user.1, "n1", "c1", "meta", meta]);
            let Ok(Command::Connect(c)) = parse(p, &connect_argv) else {
                return Err(TestCaseError::fail("RC.CONNECT refused"));
            };
            prop_assert_eq!(c.user, resolved(p, &user.0));
            prop_assert_eq!(c.meta, Some(meta.trim()));

            let kick_argv = argv(&["RC.KICK", &user.1, "REASON", &reason]);
            let kicked = parse(p, &kick_argv);
            if reason.len() <= MAX_REASON_BYTES {
                let want = Kick { user: resolved(p, &user.0), reason: &reason };
                prop_assert_eq!(kicked, Ok(Command::Kick(want)));
            } else {
                prop_assert!(kicked.is_err());
            }

            let history_argv =
                argv(&["RC.HISTORY", &user.1, "COUNT", &count.to_string(), "SINCE", &since]);
            let got = parse(p, &history_argv);
            match Offset::parse(&since) {
                Some(offset) => prop_assert_eq!(got, Ok(Command::History(History {
                    room: resolved(p, &user.0),
                    since: Some(offset),
                    count,
                }))),
                None => prop_assert!(got.is_err()),
            }
        }
    }
}
