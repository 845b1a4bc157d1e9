//! Room history: offsets, retained messages, and the replay behind gapless joins.
//!
//! With `history-len` > 0 every room message gets an offset `<epoch>:<seq>` and is kept
//! in the room's history stream (ids `0-<seq>`, trimmed to about `history-len`). The
//! position (`epoch seq`) lives in its own key; both expire together after
//! `history-ttl-ms` without a message. When the position is missing — Redis restarted
//! without data, `FLUSHALL`, expiry — the next message starts a new epoch, so an offset
//! from before the loss can never be taken for one after it.
//!
//! A join with `SINCE offset` replays, atomically with the membership change, exactly
//! the messages after the offset up to the *cut* (the position at the join); every later
//! message is routed live to the joining node. The client thus sees each message once,
//! in order — or learns that recovery is impossible (`recovered` = 0).

use redis_module::raw::RedisModuleStreamID;
use redis_module::{Context, RedisError, RedisResult, RedisString, RedisValue};
use roomcast_common::command::{self, History};
use roomcast_common::keys::PartitionKeys;
use roomcast_common::offset::{Offset, Position};

use crate::args::{check, err};
use crate::inbox::Entry;
use crate::state::layout;
use crate::{config, era, ops};

/// One retained message.
pub struct Retained {
    /// Its offset.
    pub offset: Offset,
    /// Sender (empty for backend publishes).
    pub from: Vec<u8>,
    /// Payload.
    pub data: Vec<u8>,
}

/// Messages after a given offset.
pub struct Replay {
    /// The entries form a gapless continuation of the requested offset.
    pub recovered: bool,
    /// The room's position now (none when it has no history).
    pub cut: Option<Offset>,
    /// The messages, oldest first.
    pub entries: Vec<Retained>,
}

/// Whether history is on.
pub fn enabled() -> bool {
    config::get(&config::HISTORY_LEN) > 0
}

/// The room's stored position (last offset and the era that wrote it), if it has history.
fn position(
    ctx: &Context,
    keys: &PartitionKeys,
    room: &str,
) -> Result<Option<Position>, RedisError> {
    let Some(bytes) = ops::get_string(ctx, &keys.room_seq(room))? else {
        return Ok(None);
    };
    Ok(Position::parse(&String::from_utf8_lossy(&bytes)))
}

/// The room's current position, if it has history.
pub fn current(
    ctx: &Context,
    keys: &PartitionKeys,
    room: &str,
) -> Result<Option<Offset>, RedisError> {
    Ok(position(ctx, keys, room)?.map(|p| p.offset))
}

/// Records one message of `room`: assigns its offset and keeps it. Returns the offset.
///
/// The count goes on only within the era that wrote the room's position; otherwise
/// (first message, history lost, or another primary wrote it — see [`era`]) the message
/// starts a new epoch.
pub fn record(
    ctx: &Context,
    keys: &PartitionKeys,
    room: &str,
    from: &[u8],
    data: &[u8],
) -> Result<Offset, RedisError> {
    let now = ops::now_ms();
    let hist_key = keys.room_hist(room);
    let era = era::current();
    let next = match position(ctx, keys, room)? {
        Some(position) if position.era == era => position.offset.next(),
        stale => {
            // A new epoch: whatever an older epoch left behind is not this history.
            ops::delete(ctx, &hist_key)?;
            let mut epoch_ms = u64::try_from(now).unwrap_or(0);
            let mut epoch = Offset::epoch_from_millis(epoch_ms);
            // Another server's clock may have named the old epoch the same.
            if stale.is_some_and(|p| p.offset.epoch == epoch) {
                epoch_ms = epoch_ms.saturating_add(1);
                epoch = Offset::epoch_from_millis(epoch_ms);
            }
            Offset { epoch, seq: 1 }
        }
    };
    let seq_key = keys.room_seq(room);
    let value = Position {
        offset: next.clone(),
        era,
    }
    .encode();
    let ttl = config::get(&config::HISTORY_TTL_MS);
    let expires = (ttl > 0).then(|| now.saturating_add(ttl));
    ops::set_string(ctx, &seq_key, value.as_bytes(), expires)?;
    let id = RedisModuleStreamID {
        ms: 0,
        seq: next.seq,
    };
    Entry::from_pairs(ctx, &[("from", from), ("data", data)]).append(
        ctx,
        &hist_key,
        Some(id),
        config::get(&config::HISTORY_LEN),
    )?;
    if let Some(at) = expires {
        ops::expire_at(ctx, &hist_key, at)?;
    }
    Ok(next)
}

/// Reads retained entries with seq in `[from, to]`, oldest first; newest first when
/// `reverse`, at most `limit`.
fn read(
    ctx: &Context,
    keys: &PartitionKeys,
    room: &str,
    epoch: &str,
    (from, to): (u64, u64),
    reverse: bool,
    limit: usize,
) -> Result<Vec<Retained>, RedisError> {
    let key = ctx.open_key(&ops::string(ctx, keys.room_hist(room)));
    if key.is_null() {
        return Ok(Vec::new());
    }
    let start = RedisModuleStreamID { ms: 0, seq: from };
    let end = RedisModuleStreamID { ms: 0, seq: to };
    let iter = key
        .get_stream_range_iterator(Some(start), Some(end), false, reverse)
        .map_err(|e| err(format!("cannot read the history of room {room}: {e}")))?;
    Ok(iter
        .take(limit)
        .map(|record| {
            let mut entry = Retained {
                offset: Offset {
                    epoch: epoch.to_string(),
                    seq: record.id.seq,
                },
                from: Vec::new(),
                data: Vec::new(),
            };
            for (name, value) in &record.fields {
                match name.as_slice() {
                    b"from" => entry.from = value.as_slice().to_vec(),
                    b"data" => entry.data = value.as_slice().to_vec(),
                    _ => {}
                }
            }
            entry
        })
        .collect())
}

/// The messages after `since`, at most `limit` of them.
pub fn after(
    ctx: &Context,
    keys: &PartitionKeys,
    room: &str,
    since: &Offset,
    limit: usize,
) -> Result<Replay, RedisError> {
    let cut = current(ctx, keys, room)?;
    let Some(now) = cut.clone() else {
        return Ok(Replay {
            recovered: false,
            cut,
            entries: Vec::new(),
        });
    };
    if since.epoch != now.epoch || since.seq > now.seq {
        return Ok(Replay {
            recovered: false,
            cut,
            entries: Vec::new(),
        });
    }
    if since.seq == now.seq {
        return Ok(Replay {
            recovered: true,
            cut,
            entries: Vec::new(),
        });
    }
    let first = since.seq + 1;
    let entries = read(ctx, keys, room, &now.epoch, (first, now.seq), false, limit)?;
    // Trimmed past `since`: the missed messages are no longer all there.
    let recovered = entries.first().is_some_and(|e| e.offset.seq == first);
    Ok(Replay {
        recovered,
        cut,
        entries: if recovered { entries } else { Vec::new() },
    })
}

/// The newest `limit` messages, oldest first.
fn latest(
    ctx: &Context,
    keys: &PartitionKeys,
    room: &str,
    cut: &Offset,
    limit: usize,
) -> Result<Vec<Retained>, RedisError> {
    let mut entries = read(ctx, keys, room, &cut.epoch, (1, cut.seq), true, limit)?;
    entries.reverse();
    Ok(entries)
}

/// Encodes entries as `[[offset, from, data], …]`.
pub fn entries_value(entries: Vec<Retained>) -> RedisValue {
    RedisValue::Array(
        entries
            .into_iter()
            .map(|e| {
                RedisValue::Array(vec![
                    RedisValue::BulkString(e.offset.to_string()),
                    RedisValue::StringBuffer(e.from),
                    RedisValue::StringBuffer(e.data),
                ])
            })
            .collect(),
    )
}

/// An offset as a reply: bulk string, or nil.
pub fn offset_value(offset: Option<&Offset>) -> RedisValue {
    offset.map_or(RedisValue::Null, |o| RedisValue::BulkString(o.to_string()))
}

/// `RC.HISTORY room [SINCE offset] [COUNT n]` → `[cut, recovered, [[offset, from, data], …]]`.
///
/// With `SINCE`: the messages after it (at most `COUNT`); `recovered` is 0 when they no
/// longer continue it (epoch changed or trimmed) — the entries are then the oldest
/// retained ones. Without `SINCE`: the newest `COUNT` messages. Page forward with `SINCE`
/// set to the last offset returned until it equals `cut`.
pub fn history_command(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    let layout = layout()?;
    let History { room, since, count } = check(command::history(&layout.partitioner, &args))?;
    let count = count as usize;
    let keys = layout.routed(&args, room.partition)?;
    let (cut, recovered, entries) = match &since {
        Some(since) => {
            let replay = after(ctx, keys, room.name, since, count)?;
            if replay.recovered || replay.cut.is_none() {
                (replay.cut, replay.recovered, replay.entries)
            } else {
                let cut = replay.cut.clone();
                let oldest = match &cut {
                    Some(c) => read(ctx, keys, room.name, &c.epoch, (1, c.seq), false, count)?,
                    None => Vec::new(),
                };
                (cut, false, oldest)
            }
        }
        None => {
            let cut = current(ctx, keys, room.name)?;
            let entries = match &cut {
                Some(c) => latest(ctx, keys, room.name, c, count)?,
                None => Vec::new(),
            };
            (cut, true, entries)
        }
    };
    Ok(RedisValue::Array(vec![
        offset_value(cut.as_ref()),
        RedisValue::Integer(i64::from(recovered)),
        entries_value(entries),
    ]))
}
