//! `RC.READ`: a blocking read over a node's inboxes in several partitions, with
//! `XREAD`'s reply shape.
//!
//! Under Redis Cluster every (node, partition) pair has its own inbox stream
//! (`{tag}:inbox:node`), one slot per partition, and Redis refuses an `XREAD` over
//! keys of different slots (`CROSSSLOT`) even when one node serves all of them. An
//! edge therefore reads all its inboxes on a shard with one `RC.READ` per shard: the
//! command is routed by its first argument like every other command, and reads each
//! named partition's inbox with an inner `XRANGE` through `RM_Call`, which refuses keys
//! of slots this node does not serve (the reply then tells the edge to refresh its
//! view of the cluster).
//!
//! ```text
//! RC.READ partition node [COUNT n] [BLOCK ms] STREAMS p1 [p2 …] id1 [id2 …]
//! ```
//!
//! The reply is `XREAD`'s: `[[inbox-key, [[id, [field, value, …]], …]], …]` with one
//! element per partition that has entries after its id (in the order given; a map
//! `inbox-key → entries` for a RESP3 client, as `XREAD` answers it), or a null array
//! when there are none (at once without `BLOCK`, after the timeout with it). When
//! nothing is there and `BLOCK` is given, the client blocks on the inbox keys
//! (`RM_BlockClientOnKeys`); any write to one of them (`XADD`, `RM_StreamAdd`) runs the
//! read again, and the client stays blocked while it still finds nothing.

use std::ops::Deref;
use std::os::raw::{c_int, c_void};

use redis_module::raw::{self, RedisModuleCtx, RedisModuleString};
use redis_module::{
    CallOptions, CallOptionsBuilder, CallReply, CallResult, Context, ContextFlags, RedisError,
    RedisResult, RedisString, RedisValue,
};
use roomcast_common::command::{arity, at, id, int, partition, rest, ArgError};
use roomcast_common::partition::Partitioner;
use roomcast_common::stream_id::StreamId;

use crate::args::{check, coded, err};
use crate::inbox;
use crate::state::{layout, Layout};

/// Most entries `RC.READ` returns per stream.
pub const MAX_COUNT: i64 = 10_000;
/// Entries per stream when `COUNT` is not given.
pub const DEFAULT_COUNT: i64 = 256;
/// Longest `BLOCK` timeout: one day (`BLOCK 0` blocks without a timeout).
pub const MAX_BLOCK_MS: i64 = 86_400_000;

/// `RC.READ`'s arguments, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Read<'a> {
    /// The routing partition (`argv[1]`).
    pub partition: u32,
    /// The edge node whose inboxes are read.
    pub node: &'a str,
    /// At most this many entries per stream (1 to [`MAX_COUNT`], default [`DEFAULT_COUNT`]).
    pub count: i64,
    /// `None`: never block; `Some(0)`: block until data; `Some(ms)`: block up to `ms`.
    pub block: Option<i64>,
    /// Partitions to read and, for each, the id after which entries are returned.
    pub streams: Vec<(u32, StreamId)>,
}

fn invalid(message: impl Into<String>) -> ArgError {
    ArgError::Invalid(message.into())
}

/// Parses `RC.READ partition node [COUNT n] [BLOCK ms] STREAMS p1 … pk id1 … idk`.
///
/// Keywords are case-insensitive; `COUNT` and `BLOCK` may come in any order, once each.
/// Every partition argument (the routing one and those after `STREAMS`) is a room or
/// user name, plain or tagged, or a bare `{tag}`. Errors name the bad argument.
pub fn parse<'a, A: Deref<Target = [u8]>>(
    p: &Partitioner,
    argv: &'a [A],
) -> Result<Read<'a>, ArgError> {
    // RC.READ partition node STREAMS p id: at least 6.
    arity(argv, 6, usize::MAX)?;
    let routing = partition(p, at(argv, 1)?)?;
    let node = id(at(argv, 2)?, "node")?;

    let mut count = None;
    let mut block = None;
    let mut words = rest(argv, 3).iter();
    let streams_args = loop {
        let Some(word) = words.next() else {
            return Err(invalid(
                "STREAMS is missing: RC.READ partition node [COUNT n] [BLOCK ms] \
                 STREAMS p1 [p2 ...] id1 [id2 ...]",
            ));
        };
        let word: &[u8] = word;
        if word.eq_ignore_ascii_case(b"STREAMS") {
            break words.as_slice();
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
    };
    let count = match count {
        Some(c) => int(c, "COUNT", 1, MAX_COUNT)?,
        None => DEFAULT_COUNT,
    };
    let block = block
        .map(|b| int(b, "BLOCK", 0, MAX_BLOCK_MS))
        .transpose()?;

    if streams_args.is_empty() {
        return Err(invalid("STREAMS needs at least one partition and its id"));
    }
    if streams_args.len() % 2 != 0 {
        return Err(invalid(format!(
            "STREAMS needs one id per partition: got {} arguments after STREAMS, an odd count",
            streams_args.len()
        )));
    }
    let k = streams_args.len() / 2;
    if k > p.count() as usize {
        return Err(invalid(format!(
            "STREAMS names {k} partitions, but there are only {}",
            p.count()
        )));
    }
    let (names, ids) = streams_args.split_at(k);
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
    Ok(Read {
        partition: routing,
        node,
        count,
        block,
        streams,
    })
}

// ------------------------------------------------------------------------------------
// The command.

/// One stream to read: its partition, key, and the id entries must follow.
struct Stream {
    partition: u32,
    key: String,
    after: StreamId,
}

/// A read's result: the index in the request and the `XRANGE` reply, non-empty.
type Found = Vec<(usize, CallReply<'static>)>;

/// `RC.READ partition node [COUNT n] [BLOCK ms] STREAMS p1 … id1 …` → `XREAD`'s reply.
pub fn read(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    let layout = layout()?;
    let (request, streams) = prepare(layout, &args)?;
    let found = read_all(ctx, layout, &streams, request.count)?;
    if !found.is_empty() {
        reply_found(ctx, &streams, found)?;
        return Ok(RedisValue::NoReply);
    }
    let Some(timeout_ms) = request.block else {
        reply_null_array(ctx);
        return Ok(RedisValue::NoReply);
    };
    // Never block inside MULTI/EXEC, a script, or a client that may not block (another
    // module's RM_Call): Redis would answer an error instead; reply as on a timeout.
    let flags = ctx.get_flags();
    if flags.intersects(ContextFlags::MULTI | ContextFlags::LUA | ContextFlags::DENY_BLOCKING) {
        reply_null_array(ctx);
        return Ok(RedisValue::NoReply);
    }
    block_on(ctx, &streams, timeout_ms)?;
    // The reply comes from `on_ready` or `on_timeout`.
    Ok(RedisValue::NoReply)
}

/// Parses, checks the routing, and builds the streams to read.
fn prepare<'a>(
    layout: &Layout,
    args: &'a [RedisString],
) -> Result<(Read<'a>, Vec<Stream>), RedisError> {
    let request = check(parse(&layout.partitioner, args))?;
    layout.routed(args, request.partition)?;
    let mut streams: Vec<Stream> = Vec::with_capacity(request.streams.len());
    for (part, after) in &request.streams {
        let key = inbox::key_for(layout.keys(*part)?, request.node)?;
        if let Some(first) = streams.iter().find(|s| s.key == key) {
            // A standalone server keeps one inbox per node for every partition.
            return Err(err(format!(
                "partitions {{{}}} and {{{}}} share the inbox {key} on this server \
                 (standalone: one inbox per node for all partitions): name one of them",
                layout.partitioner.tag(first.partition),
                layout.partitioner.tag(*part)
            )));
        }
        streams.push(Stream {
            partition: *part,
            key,
            after: *after,
        });
    }
    Ok((request, streams))
}

/// `XRANGE` reads through `RM_Call`: errors come back as replies, never replicated.
fn read_options() -> CallOptions {
    CallOptionsBuilder::new().errors_as_replies().build()
}

/// Reads every stream; the non-empty results in request order.
fn read_all(
    ctx: &Context,
    layout: &Layout,
    streams: &[Stream],
    count: i64,
) -> Result<Found, RedisError> {
    let options = read_options();
    let count = count.to_string();
    let mut found = Vec::new();
    for (index, stream) in streams.iter().enumerate() {
        if let Some(entries) = read_one(ctx, layout, &options, stream, &count)? {
            found.push((index, entries));
        }
    }
    Ok(found)
}

/// `XRANGE key <after+1> + COUNT n`: `None` when there is nothing after `after`.
fn read_one(
    ctx: &Context,
    layout: &Layout,
    options: &CallOptions,
    stream: &Stream,
    count: &str,
) -> Result<Option<CallReply<'static>>, RedisError> {
    let Some(start) = stream.after.next() else {
        return Ok(None);
    };
    let start = start.to_string();
    let args: [&[u8]; 5] = [
        stream.key.as_bytes(),
        start.as_bytes(),
        b"+",
        b"COUNT",
        count.as_bytes(),
    ];
    let reply: CallResult<'static> = ctx.call_ext("XRANGE", options, &args[..]);
    match reply {
        Ok(CallReply::Array(entries)) if entries.len() == 0 => Ok(None),
        Ok(entries @ CallReply::Array(_)) => Ok(Some(entries)),
        Ok(CallReply::Null(_)) => Ok(None),
        // RM_Call gave no reply at all (it refused the call without saying why).
        Ok(CallReply::Unknown) => Err(refused(layout, stream, "")),
        Ok(other) => Err(err(format!(
            "internal: XRANGE {} gave an unexpected reply {other:?}",
            stream.key
        ))),
        Err(e) => Err(refused(
            layout,
            stream,
            &e.to_utf8_string().unwrap_or_default(),
        )),
    }
}

/// The error reply for a refused `XRANGE`.
///
/// Under Redis Cluster `RM_Call` refuses a key whose slot this node does not serve
/// (`Attempted to access a non local key in a cluster node`): the edge's view of the
/// cluster is stale, and the reply says so.
fn refused(layout: &Layout, stream: &Stream, message: &str) -> RedisError {
    let tag = layout.partitioner.tag(stream.partition);
    if layout.cluster && (message.is_empty() || message.contains("non local key")) {
        return err(format!(
            "partition {{{tag}}} is not served by this shard; refresh the cluster topology"
        ));
    }
    if message.starts_with("WRONGTYPE") {
        return coded(
            "WRONGTYPE",
            format!(
                "inbox key {} holds something other than a stream",
                stream.key
            ),
        );
    }
    let message = message.strip_prefix("ERR ").unwrap_or(message);
    err(format!("XRANGE {} failed: {message}", stream.key))
}

/// Replies `[[key, entries], …]` for the streams that have entries (`{key: entries, …}`
/// to a RESP3 client), exactly as `XREAD` does.
fn reply_found(ctx: &Context, streams: &[Stream], found: Found) -> Result<(), RedisError> {
    // SAFETY: function pointers are set by Redis at module load and never change.
    let with_call_reply = unsafe { raw::RedisModule_ReplyWithCallReply }
        .ok_or_else(|| err("internal: RM_ReplyWithCallReply is not available"))?;
    let items: Vec<(&str, *mut raw::RedisModuleCallReply)> = found
        .iter()
        .filter_map(|(index, entries)| {
            let key = streams.get(*index)?.key.as_str();
            Some((key, entries.get_raw()?))
        })
        .collect();
    // XREAD answers RESP3 clients with a map key → entries, RESP2 clients with pairs.
    let resp3 = ctx.get_flags().contains(ContextFlags::FLAGS_RESP3);
    let len = items.len() as std::os::raw::c_long;
    if resp3 {
        raw::reply_with_map(ctx.get_raw(), len);
    } else {
        raw::reply_with_array(ctx.get_raw(), len);
    }
    for (key, entries) in items {
        if !resp3 {
            raw::reply_with_array(ctx.get_raw(), 2);
        }
        raw::reply_with_string_buffer(ctx.get_raw(), key.as_ptr().cast(), key.len());
        // SAFETY: the call reply is alive (`found` owns it until this function returns);
        // it is a RESP2 array of stream entries, which RESP2 and RESP3 clients read alike.
        let status = unsafe { with_call_reply(ctx.get_raw(), entries) };
        if status != raw::REDISMODULE_OK as c_int {
            // Cannot happen (Redis refuses only a RESP3 reply to a RESP2 client); keep
            // the reply well formed all the same.
            raw::reply_with_array(ctx.get_raw(), 0);
        }
    }
    drop(found);
    Ok(())
}

/// A null array (`*-1` in RESP2, `_` in RESP3), as `XREAD` answers when nothing came.
fn reply_null_array(ctx: &Context) {
    // SAFETY: function pointers are set by Redis at module load and never change.
    let Some(null_array) = (unsafe { raw::RedisModule_ReplyWithNullArray }) else {
        raw::reply_with_null(ctx.get_raw());
        return;
    };
    // SAFETY: the context is the command's (or the blocked client's callback's) and
    // valid for this call.
    unsafe { null_array(ctx.get_raw()) };
}

/// Blocks the client on the inbox keys, `timeout_ms` at most (0: no timeout).
fn block_on(ctx: &Context, streams: &[Stream], timeout_ms: i64) -> Result<(), RedisError> {
    // SAFETY: function pointers are set by Redis at module load and never change.
    let block = unsafe { raw::RedisModule_BlockClientOnKeys }
        .ok_or_else(|| err("internal: RM_BlockClientOnKeys is not available"))?;
    let names: Vec<RedisString> = streams
        .iter()
        .map(|s| ctx.create_string(s.key.as_str()))
        .collect();
    let mut keys: Vec<*mut RedisModuleString> = names.iter().map(|n| n.inner).collect();
    let numkeys = c_int::try_from(keys.len()).map_err(|_| err("too many streams"))?;
    // SAFETY: ctx is the running command's; `keys` holds `numkeys` live strings, which
    // Redis retains (blockForKeys takes its own references) before `names` drops. No
    // private data: the callbacks parse the client's argv again.
    let blocked = unsafe {
        block(
            ctx.get_raw(),
            Some(on_ready),
            Some(on_timeout),
            None,
            timeout_ms,
            keys.as_mut_ptr(),
            numkeys,
            std::ptr::null_mut::<c_void>(),
        )
    };
    if blocked.is_null() {
        return Err(err("internal: cannot block the client"));
    }
    Ok(())
}

/// Called by Redis, with the client's original argv, when one of the inbox keys was
/// written: reads again and replies, or stays blocked when there is still nothing.
extern "C" fn on_ready(
    ctx: *mut RedisModuleCtx,
    argv: *mut *mut RedisModuleString,
    argc: c_int,
) -> c_int {
    let context = Context::new(ctx);
    let args = redis_module::decode_args(ctx, argv, argc);
    match serve_ready(&context, &args) {
        Ok(true) => raw::REDISMODULE_OK as c_int,
        // Nothing yet (another reader's id, or an entry before ours): keep waiting.
        Ok(false) => raw::REDISMODULE_ERR as c_int,
        Err(e) => {
            context.reply(Err(e));
            raw::REDISMODULE_OK as c_int
        }
    }
}

/// The read of a woken client: true when it replied.
///
/// Only the stream that was written is read: the others had nothing when the client
/// blocked, and whatever reached them since is found by the reader's next call (which
/// reads every stream before blocking again). A shard's reader waits on several
/// partitions' inboxes, so this saves one `XRANGE` per other partition per wake-up.
fn serve_ready(ctx: &Context, args: &[RedisString]) -> Result<bool, RedisError> {
    let layout = layout()?;
    let (request, mut streams) = prepare(layout, args)?;
    if let Some(ready) = ready_key(ctx) {
        if streams.iter().any(|s| s.key.as_bytes() == ready.as_slice()) {
            streams.retain(|s| s.key.as_bytes() == ready.as_slice());
        }
    }
    let found = read_all(ctx, layout, &streams, request.count)?;
    if found.is_empty() {
        return Ok(false);
    }
    reply_found(ctx, &streams, found)?;
    Ok(true)
}

/// The key whose write woke the blocked client, if Redis says.
fn ready_key(ctx: &Context) -> Option<Vec<u8>> {
    // SAFETY: function pointers are set by Redis at module load and never change.
    let get = unsafe { raw::RedisModule_GetBlockedClientReadyKey }?;
    // SAFETY: called from the reply callback of a client blocked on keys, the only
    // place Redis defines it; the string belongs to Redis and is copied at once.
    let key = unsafe { get(ctx.get_raw()) };
    if key.is_null() {
        return None;
    }
    Some(RedisString::string_as_slice(key).to_vec())
}

/// Called by Redis when `BLOCK ms` ran out: a null array, like `XREAD`.
extern "C" fn on_timeout(
    ctx: *mut RedisModuleCtx,
    _argv: *mut *mut RedisModuleString,
    _argc: c_int,
) -> c_int {
    reply_null_array(&Context::new(ctx));
    raw::REDISMODULE_OK as c_int
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]
mod tests {
    use super::*;

    fn p16() -> Partitioner {
        Partitioner::new(16).unwrap()
    }

    fn to_argv(words: &[&str]) -> Vec<Vec<u8>> {
        words.iter().map(|w| w.as_bytes().to_vec()).collect()
    }

    fn bare(p: &Partitioner, part: u32) -> String {
        format!("{{{}}}", p.tag(part))
    }

    fn refused(words: &[&str]) -> String {
        let p = p16();
        let argv = to_argv(words);
        match parse(&p, &argv) {
            Err(ArgError::Invalid(message)) => message,
            Err(ArgError::Arity) => "<arity>".to_string(),
            Ok(r) => panic!("{words:?} was accepted as {r:?}"),
        }
    }

    #[test]
    fn a_full_read_parses() {
        let p = p16();
        let (a, b) = (bare(&p, 3), bare(&p, 9));
        let words = [
            "RC.READ", &a, "n1", "count", "10", "BLOCK", "0", "streams", &a, &b, "0", "5-1",
        ];
        let argv = to_argv(&words);
        let r = parse(&p, &argv).unwrap();
        assert_eq!(r.partition, 3);
        assert_eq!(r.node, "n1");
        assert_eq!(r.count, 10);
        assert_eq!(r.block, Some(0));
        assert_eq!(
            r.streams,
            vec![
                (3, StreamId { ms: 0, seq: 0 }),
                (9, StreamId { ms: 5, seq: 1 })
            ]
        );
    }

    #[test]
    fn defaults_and_any_partition_argument() {
        let p = p16();
        let tagged = p.tagged("lobby");
        let words = ["RC.READ", "lobby", "n-1.x_2", "STREAMS", &tagged, "7"];
        let argv = to_argv(&words);
        let r = parse(&p, &argv).unwrap();
        let lobby = p.partition_of(b"lobby");
        assert_eq!(r.partition, lobby);
        assert_eq!(r.count, DEFAULT_COUNT);
        assert_eq!(r.block, None);
        assert_eq!(r.streams, vec![(lobby, StreamId { ms: 7, seq: 0 })]);
        // Options in the other order.
        let words = [
            "RC.READ", "lobby", "n1", "BLOCK", "200", "COUNT", "1", "STREAMS", "ann", "0",
        ];
        let argv = to_argv(&words);
        let r = parse(&p, &argv).unwrap();
        assert_eq!((r.count, r.block), (1, Some(200)));
    }

    #[test]
    fn bad_arguments_say_what_is_wrong() {
        let p = p16();
        let a = bare(&p, 1);
        let b = bare(&p, 2);
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
            let message = refused(&words);
            assert!(
                message.contains(needle),
                "{words:?}: {message:?} lacks {needle:?}"
            );
        }
    }

    #[test]
    fn the_same_partition_twice_is_refused_whatever_its_spelling() {
        let p = p16();
        let lobby = p.partition_of(b"lobby");
        let tag = bare(&p, lobby);
        let words = ["RC.READ", &tag, "n1", "STREAMS", "lobby", &tag, "0", "0"];
        let message = refused(&words);
        assert!(message.contains("named twice"), "{message}");
    }

    #[test]
    fn more_streams_than_partitions_are_refused() {
        let p = Partitioner::new(2).unwrap();
        let (a, b) = (bare(&p, 0), bare(&p, 1));
        let words = [
            "RC.READ", &a, "n1", "STREAMS", &a, &b, "lobby", "0", "0", "0",
        ];
        let argv = to_argv(&words);
        match parse(&p, &argv) {
            Err(ArgError::Invalid(m)) => {
                assert_eq!(m, "STREAMS names 3 partitions, but there are only 2")
            }
            other => panic!("{other:?}"),
        }
        // Every partition once is fine.
        let words = ["RC.READ", &a, "n1", "STREAMS", &a, &b, "0", "0"];
        let argv = to_argv(&words);
        assert_eq!(parse(&p, &argv).unwrap().streams.len(), 2);
    }

    #[test]
    fn arbitrary_argv_never_panics() {
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
            let _ = parse(&p, &argv);
        }
    }
}
