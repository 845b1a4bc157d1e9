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
//! The arguments are parsed by `roomcast_common::command::read` (pure, property-tested
//! and fuzzed with the other commands' parsers). The reply is `XREAD`'s:
//! `[[inbox-key, [[id, [field, value, …]], …]], …]` with one element per partition
//! that has entries after its id (in the order given; a map
//! `inbox-key → entries` for a RESP3 client, as `XREAD` answers it), or a null array
//! when there are none (at once without `BLOCK`, after the timeout with it). When
//! nothing is there and `BLOCK` is given, the client blocks on the inbox keys
//! (`RM_BlockClientOnKeys`); any write to one of them (`XADD`, `RM_StreamAdd`) runs the
//! read again, and the client stays blocked while it still finds nothing.

use std::os::raw::{c_int, c_void};

use redis_module::raw::{self, RedisModuleCtx, RedisModuleString};
use redis_module::{
    CallOptions, CallOptionsBuilder, CallReply, CallResult, Context, ContextFlags, RedisError,
    RedisResult, RedisString, RedisValue,
};
use roomcast_common::codes::Code;
use roomcast_common::command::{self, Read};
use roomcast_common::stream_id::StreamId;

use crate::args::{check, code_error, coded, err};
use crate::inbox;
use crate::ops;
use crate::state::{layout, Layout};

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
    let request = check(command::read(&layout.partitioner, args))?;
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
/// cluster is stale, and the reply says so with `NOTSERVED`.
fn refused(layout: &Layout, stream: &Stream, message: &str) -> RedisError {
    let tag = layout.partitioner.tag(stream.partition);
    if layout.cluster && (message.is_empty() || message.contains("non local key")) {
        return code_error(
            Code::NotServed,
            format!(
                "partition {{{tag}}} is not served by this shard; refresh the cluster topology"
            ),
        );
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
        .map(|s| ops::string(ctx, s.key.as_str()))
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
