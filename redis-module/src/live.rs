//! The live push of inbox entries: the channel publish that accompanies every inbox
//! append (see [`crate::inbox::Entry::write_inbox`]), and the inbox's previous entry id
//! it carries. A standalone server publishes to a plain channel; under Redis Cluster
//! to a shard channel in the inbox's slot (`RM_PublishMessageShard`), which reaches the
//! edges subscribed with `SSUBSCRIBE` on that shard and is not broadcast to the rest of
//! the cluster.
//!
//! The payload is [`roomcast_common::push`]'s: the entry's id, the inbox's previous
//! entry id and the entry's fields as the stream holds them. The edge delivers from the
//! push; a push whose previous id is not the last id it delivered tells it that it
//! missed one, and it reads the gap from the stream.
//!
//! The previous id is read from the stream itself, right before the append (one reverse
//! stream iterator step, `RM_StreamIteratorStart` / `NextID`): it is always the stream's
//! truth, whatever happened to it — a failover, a `FLUSHALL`, a restart, an inbox
//! emptied by `RC.NODE.DOWN`, an append made outside the module — with no in-memory
//! state to keep in step with the dataset.
//!
//! The publish goes through `RM_PublishMessage` (no `RM_Call`). It is not replicated
//! or written to the AOF: replicas and a reloaded server get the `XADD`, and only the
//! primary has edge subscribers.

use std::os::raw::{c_int, c_long};

use redis_module::raw::{self, RedisModuleStreamID};
use redis_module::{Context, RedisError, RedisString};
use roomcast_common::push;
use roomcast_common::stream_id::StreamId;

use crate::args::err;
use crate::ops::{self, RawKey};

/// Where a push goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// A channel of the server (a standalone server: `SUBSCRIBE`).
    Server,
    /// A shard channel (Redis Cluster: `SSUBSCRIBE`), in the slot of its name's tag.
    Shard,
}

/// Publishes the push of entry `id` (fields `packed`, see [`push::pack_fields`]),
/// whose inbox's previous entry is `prev`, to `channel`.
pub fn publish(
    ctx: &Context,
    scope: Scope,
    channel: &str,
    id: StreamId,
    prev: StreamId,
    packed: &[u8],
) -> Result<(), RedisError> {
    // SAFETY: function pointers are set by Redis at module load and never change.
    let publish = match scope {
        Scope::Server => unsafe { raw::RedisModule_PublishMessage },
        Scope::Shard => unsafe { raw::RedisModule_PublishMessageShard },
    }
    .ok_or_else(|| err("internal: this Redis cannot publish to (shard) channels"))?;
    let payload = push::encode(id, prev, packed);
    let channel = ops::string(ctx, channel);
    let message = RedisString::create_from_slice(ctx.get_raw(), &payload);
    // SAFETY: ctx, channel and message are live for the call; Redis copies what it keeps.
    // The reply (how many subscribers received it) does not matter: an edge that is not
    // subscribed reads the entry from its inbox when it (re)subscribes.
    unsafe { publish(ctx.get_raw(), channel.inner, message.inner) };
    Ok(())
}

/// The id of the last entry of the stream open in `key` (`0-0` when it has none).
pub fn last_id(key: &RawKey) -> Result<StreamId, RedisError> {
    let missing = || err("internal: the stream iterator API is not available in this Redis");
    // SAFETY: function pointers are set by Redis at module load and never change.
    let (start, next, stop) = unsafe {
        (
            raw::RedisModule_StreamIteratorStart.ok_or_else(missing)?,
            raw::RedisModule_StreamIteratorNextID.ok_or_else(missing)?,
            raw::RedisModule_StreamIteratorStop.ok_or_else(missing)?,
        )
    };
    let reverse = raw::REDISMODULE_STREAM_ITERATOR_REVERSE as c_int;
    // SAFETY: the key is open and holds a stream; NULL bounds mean the whole stream.
    let started = unsafe {
        start(
            key.as_ptr(),
            reverse,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
        )
    };
    if started != raw::REDISMODULE_OK as c_int {
        return Err(err("internal: cannot iterate an inbox stream"));
    }
    let mut id = RedisModuleStreamID { ms: 0, seq: 0 };
    let mut fields: c_long = 0;
    // SAFETY: the iterator was started on this key above; it is stopped right after.
    let found = unsafe { next(key.as_ptr(), &mut id, &mut fields) } == raw::REDISMODULE_OK as c_int;
    // SAFETY: as above.
    unsafe { stop(key.as_ptr()) };
    Ok(if found {
        StreamId {
            ms: id.ms,
            seq: id.seq,
        }
    } else {
        StreamId::default()
    })
}
