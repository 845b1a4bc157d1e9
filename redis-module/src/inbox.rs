//! Appending entries to node inbox streams — the publish hot path.
//!
//! Entries are added with the low-level stream API (`RM_StreamAdd`), which skips the
//! command table, argument parsing and reply building of an `XADD` through `RM_Call`.
//! That API does not propagate, so each append is followed by `RM_Replicate` of an
//! `XADD` carrying the concrete id the primary generated (and, when the approximate
//! trim removed entries, `MAXLEN =` the exact length kept), so replicas and the AOF
//! hold exactly the primary's entries.
//!
//! Every inbox append is also pushed, in the same command, to the node's live channel
//! next to the inbox (see [`crate::live`]): the edge delivers from the push and reads
//! the stream only to recover. On a standalone server that is a plain channel; under
//! Redis Cluster, where each partition has its own inbox, it is the partition's shard
//! channel (`SSUBSCRIBE`), which lives in the partition's slot like its keys. The push
//! is not replicated (replicas have no edge subscribers; they get the `XADD`).

use std::os::raw::c_int;

use redis_module::raw::{self, KeyType, RedisModuleStreamID};
use redis_module::{Context, RedisError, RedisString};
use roomcast_common::entry::{self, Kind};
use roomcast_common::keys::PartitionKeys;
use roomcast_common::push;
use roomcast_common::stream_id::StreamId;

use crate::args::{coded, err};
use crate::config;
use crate::live::{self, Scope};
use crate::ops::{self, RawKey};
use crate::state::{layout, ROUTED};

/// Whether nodes have one inbox for all partitions (a standalone server) rather than one
/// per partition (Redis Cluster, where a command may only touch its own slot). A blocked
/// `XREAD` costs Redis roughly in proportion to the keys it waits on, so on a single
/// server an edge waits on one key instead of one per partition.
pub fn shared() -> bool {
    layout().map_or(true, |l| !l.cluster)
}

/// The inbox stream `node` reads the entries of partition `keys` from: partition 0's
/// inbox key when inboxes are [`shared`], else the partition's own.
pub fn key_for(keys: &PartitionKeys, node: &str) -> Result<String, RedisError> {
    if shared() {
        Ok(layout()?.keys(0)?.inbox(node))
    } else {
        Ok(keys.inbox(node))
    }
}

/// One inbox entry, encoded once as Redis strings and appended to any number of inboxes.
pub struct Entry {
    /// Field/value pairs, starting with `kind`.
    fields: Vec<RedisString>,
    /// The same pairs packed for a live push ([`push::pack_fields`]), once for every
    /// inbox the entry goes to; empty where nothing is pushed (Redis Cluster, history).
    packed: Vec<u8>,
}

impl Entry {
    /// An entry of `kind`; `values` must match [`Kind::fields`] in order.
    /// The layout is [`entry::encode`]'s, the one the edge's decoder is tested against.
    pub fn new(ctx: &Context, kind: Kind, values: &[&[u8]]) -> Result<Self, RedisError> {
        let flat = entry::encode(kind, values)
            .ok_or_else(|| err("internal: inbox entry has the wrong number of fields"))?;
        let mut fields = Vec::with_capacity(2 + 2 * values.len());
        let mut packed =
            Vec::with_capacity(16 + values.iter().map(|v| v.len() + 12).sum::<usize>());
        for bytes in flat {
            push::pack_fields([bytes], &mut packed);
            fields.push(RedisString::create_from_slice(ctx.get_raw(), bytes));
        }
        Ok(Self { fields, packed })
    }

    /// An entry with arbitrary field/value pairs (room history entries).
    pub fn from_pairs(ctx: &Context, pairs: &[(&str, &[u8])]) -> Self {
        let mut fields = Vec::with_capacity(2 * pairs.len());
        for (name, value) in pairs {
            fields.push(ops::string(ctx, *name));
            fields.push(RedisString::create_from_slice(ctx.get_raw(), value));
        }
        Self {
            fields,
            packed: Vec::new(),
        }
    }

    /// Routes the entry, which carries `messages` messages (more than one for a
    /// [`Kind::Batch`]), to `node`: appends it to the node's inbox for partition `keys`
    /// (see [`Entry::write_inbox`]) and counts the messages as routed.
    pub fn route_to(
        &self,
        ctx: &Context,
        keys: &PartitionKeys,
        node: &str,
        messages: u64,
    ) -> Result<(), RedisError> {
        self.write_inbox(ctx, keys, node)?;
        ROUTED.add(messages);
        Ok(())
    }

    /// Appends the entry to `node`'s inbox stream for partition `keys` ([`key_for`]),
    /// trimmed to the configured cap, replicates the append and pushes it to the node's
    /// live channel next to that inbox with the inbox's previous entry id (a shard
    /// channel under Redis Cluster).
    pub fn write_inbox(
        &self,
        ctx: &Context,
        keys: &PartitionKeys,
        node: &str,
    ) -> Result<(), RedisError> {
        let maxlen = config::get(&config::INBOX_MAXLEN);
        // The inbox and its live channel: partition 0's on a standalone server, the
        // partition's own (and a shard channel) under Redis Cluster.
        let (keys, scope) = if shared() {
            (layout()?.keys(0)?, Scope::Server)
        } else {
            (keys, Scope::Shard)
        };
        let (id, prev) = self.append_reading_prev(ctx, &keys.inbox(node), maxlen)?;
        live::publish(ctx, scope, &keys.live(node), id, prev, &self.packed)
    }

    /// Appends the entry to stream `key` — with the given id, or a generated one — trims
    /// it to about `maxlen` entries (0: no trim), and replicates the append. Returns the
    /// new entry's id.
    pub fn append(
        &self,
        ctx: &Context,
        key: &str,
        id: Option<RedisModuleStreamID>,
        maxlen: i64,
    ) -> Result<StreamId, RedisError> {
        self.append_with(ctx, key, id, maxlen, false)
            .map(|(id, _)| id)
    }

    /// [`Entry::append`] with a generated id, also returning the id of the stream's
    /// entry before the new one (`0-0`: none), for the live push.
    fn append_reading_prev(
        &self,
        ctx: &Context,
        key: &str,
        maxlen: i64,
    ) -> Result<(StreamId, StreamId), RedisError> {
        self.append_with(ctx, key, None, maxlen, true)
    }

    /// Appends, trims and replicates; reads the previous id when `read_prev`.
    fn append_with(
        &self,
        ctx: &Context,
        key: &str,
        id: Option<RedisModuleStreamID>,
        maxlen: i64,
        read_prev: bool,
    ) -> Result<(StreamId, StreamId), RedisError> {
        let key_name = ops::string(ctx, key);
        let added = raw_append(ctx, &key_name, &self.fields, id, maxlen, read_prev)?;
        let kept_after_trim = added.kept;
        let new_id = StreamId {
            ms: added.id.ms,
            seq: added.id.seq,
        };
        let mut text = [0u8; StreamId::MAX_TEXT];
        let id = ops::string(ctx, new_id.write_to(&mut text));

        let mut args: Vec<&RedisString> = Vec::with_capacity(4 + self.fields.len());
        args.push(&key_name);
        let maxlen_word;
        let eq;
        let kept;
        if let Some(length) = kept_after_trim {
            maxlen_word = ops::string(ctx, "MAXLEN");
            eq = ops::string(ctx, "=");
            kept = ops::string(ctx, length.to_string());
            args.extend([&maxlen_word, &eq, &kept]);
        }
        args.push(&id);
        args.extend(self.fields.iter());
        ctx.replicate("XADD", args.as_slice());
        Ok((new_id, added.prev))
    }
}

/// What [`raw_append`] did.
struct Appended {
    /// The new entry's id.
    id: RedisModuleStreamID,
    /// The id of the stream's last entry before the append (`0-0`: none).
    prev: StreamId,
    /// The stream's length after trimming, when entries were trimmed.
    kept: Option<usize>,
}

/// `XADD key <id|*> fields…` through `RM_StreamAdd`, then an approximate trim to
/// `maxlen`; with `read_prev`, reads the stream's last id first (see [`live::last_id`];
/// else the previous id reads as `0-0`).
fn raw_append(
    ctx: &Context,
    key_name: &RedisString,
    fields: &[RedisString],
    given_id: Option<RedisModuleStreamID>,
    maxlen: i64,
    read_prev: bool,
) -> Result<Appended, RedisError> {
    let missing = || err("internal: the stream API is not available in this Redis");
    // SAFETY: function pointers are set by Redis at module load and never change.
    let (add, trim) = unsafe {
        (
            raw::RedisModule_StreamAdd.ok_or_else(missing)?,
            raw::RedisModule_StreamTrimByLength.ok_or_else(missing)?,
        )
    };
    let key = RawKey::open(ctx, key_name, true)?;
    let kind = key.key_type();
    if kind != KeyType::Empty && kind != KeyType::Stream {
        return Err(coded(
            "WRONGTYPE",
            "an inbox key holds something other than a stream",
        ));
    }

    let prev = if read_prev && kind == KeyType::Stream {
        live::last_id(&key)?
    } else {
        StreamId::default()
    };

    let mut argv: Vec<*mut raw::RedisModuleString> = fields.iter().map(|f| f.inner).collect();
    let mut id = given_id.unwrap_or(RedisModuleStreamID { ms: 0, seq: 0 });
    let flags = if given_id.is_some() {
        0
    } else {
        raw::REDISMODULE_STREAM_ADD_AUTOID as c_int
    };
    let pairs = (argv.len() / 2) as i64;
    // SAFETY: argv holds `pairs` field/value pairs of live strings; id is written by Redis.
    let status = unsafe { add(key.as_ptr(), flags, &mut id, argv.as_mut_ptr(), pairs) };
    if status != raw::REDISMODULE_OK as c_int {
        return Err(err(format!(
            "cannot append to stream {}",
            String::from_utf8_lossy(key_name.as_slice())
        )));
    }

    let len = key.value_length();
    let mut kept = None;
    if maxlen > 0 && len > maxlen as usize {
        let approx = raw::REDISMODULE_STREAM_TRIM_APPROX as c_int;
        // SAFETY: as above.
        let trimmed = unsafe { trim(key.as_ptr(), approx, maxlen) };
        if trimmed > 0 {
            kept = Some(key.value_length());
        }
    }
    Ok(Appended { id, prev, kept })
}
