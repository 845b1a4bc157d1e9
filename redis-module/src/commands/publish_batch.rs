//! `RC.PUBLISHM`: many publishes in one command, one inbox entry and one push per node.
//!
//! An edge coalesces its clients' publishes and sends them as one `RC.PUBLISHM`, so
//! Redis reads, runs and answers one command per batch instead of one per message. Each
//! message is checked, rate-limited, recorded in its room's history and addressed
//! exactly as `RC.PUBLISH` does it ([`publish::address`]), in order, and gets its own
//! reply or error. What the batch saves is the per-node work: every node it reaches gets
//! one inbox append (one `XADD` replicated) and, on a standalone server, one live push
//! carrying all of that node's messages — a [`Kind::Batch`] entry
//! ([`roomcast_common::batch`]) when there are several, the plain `msg` entry when there
//! is one.

use std::collections::HashMap;

use redis_module::{raw, Context, RedisError, RedisResult, RedisString, RedisValue};
use roomcast_common::batch;
use roomcast_common::command::{self, Publish, PublishBatch};
use roomcast_common::entry::{self, Kind};
use roomcast_common::keys::PartitionKeys;
use roomcast_common::push;

use crate::args::{check, err, refusal};
use crate::commands::publish::{self, message_values};
use crate::inbox::Entry;
use crate::state::{layout, Layout, PUBLISHED};

/// A message of the batch that was addressed: its reply, and what its entry is built
/// from.
struct Routed<'a> {
    message: Publish<'a>,
    addressed: publish::Addressed,
    offset_text: String,
}

/// `RC.PUBLISHM partition count room data from conn [room data from conn …]` → one
/// reply per message, in order: `[connections, nodes, offset]` as `RC.PUBLISH` answers,
/// or that message's error (`TOOLARGE`, `LIMITED`, `BANNED`, `ERR` for a bad name).
///
/// An empty `from` or `conn` means none. On a standalone server the rooms may be in any
/// partition (`partition` only routes the command); under Redis Cluster each room must
/// be in `partition`, so the command stays in one slot.
pub fn publish_batch(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    let layout = layout()?;
    let PublishBatch {
        partition,
        messages,
    } = check(command::publish_batch(&layout.partitioner, &args))?;
    let command_keys = layout.routed(&args, partition)?;

    let mut outcomes: Vec<Result<Routed<'_>, RedisError>> = Vec::with_capacity(messages.len());
    for message in messages {
        outcomes.push(
            message
                .map_err(refusal)
                .and_then(|m| route_one(ctx, layout, partition, m)),
        );
    }
    write_inboxes(ctx, command_keys, &outcomes)?;

    let routed = outcomes.iter().filter(|o| o.is_ok()).count();
    PUBLISHED.add(routed as u64);
    reply(ctx, outcomes);
    Ok(RedisValue::NoReply)
}

/// Checks, records and addresses one message (see [`publish::address`]).
fn route_one<'a>(
    ctx: &Context,
    layout: &Layout,
    partition: u32,
    message: Publish<'a>,
) -> Result<Routed<'a>, RedisError> {
    if layout.cluster && message.room.partition != partition {
        return Err(err(format!(
            "room '{}' is not in the command's partition {{{}}}: under Redis Cluster one \
             RC.PUBLISHM carries the rooms of one partition",
            message.room.name,
            layout.partitioner.tag(partition)
        )));
    }
    let keys = layout.keys(message.room.partition)?;
    let addressed = publish::address(ctx, keys, &message)?;
    let offset_text = addressed.offset_text();
    Ok(Routed {
        message,
        addressed,
        offset_text,
    })
}

/// Appends to every node reached its messages, in batch order, as one entry: the
/// message's own entry when the node gets one, a [`Kind::Batch`] when it gets several.
/// Nodes that get the same messages share one built entry.
fn write_inboxes(
    ctx: &Context,
    keys: &PartitionKeys,
    outcomes: &[Result<Routed<'_>, RedisError>],
) -> Result<(), RedisError> {
    let mut order: Vec<&str> = Vec::new();
    let mut per_node: HashMap<&str, Vec<usize>> = HashMap::new();
    for (index, outcome) in outcomes.iter().enumerate() {
        let Ok(routed) = outcome else { continue };
        for node in &routed.addressed.nodes {
            per_node
                .entry(node.as_str())
                .or_insert_with(|| {
                    order.push(node.as_str());
                    Vec::new()
                })
                .push(index);
        }
    }
    let mut built: Vec<(&[usize], Entry)> = Vec::new();
    for node in order {
        let Some(indices) = per_node.get(node) else {
            continue;
        };
        let position = match built.iter().position(|(i, _)| *i == indices.as_slice()) {
            Some(position) => position,
            None => {
                built.push((indices, entry_for(ctx, outcomes, indices)?));
                built.len() - 1
            }
        };
        if let Some((_, entry)) = built.get(position) {
            entry.route_to(ctx, keys, node, indices.len() as u64)?;
        }
    }
    Ok(())
}

/// The inbox entry of messages `indices` of the batch. The messages are packed here, for
/// a batch entry only, once per distinct set of messages.
fn entry_for(
    ctx: &Context,
    outcomes: &[Result<Routed<'_>, RedisError>],
    indices: &[usize],
) -> Result<Entry, RedisError> {
    let routed = || {
        indices
            .iter()
            .filter_map(|i| outcomes.get(*i)?.as_ref().ok())
    };
    if let [_] = indices {
        if let Some(only) = routed().next() {
            let values = message_values(&only.message, &only.offset_text);
            return Entry::new(ctx, Kind::Message, &values);
        }
    }
    let mut data = Vec::new();
    let mut packed = Vec::new();
    for r in routed() {
        let values = message_values(&r.message, &r.offset_text);
        let fields = entry::encode(Kind::Message, &values)
            .ok_or_else(|| err("internal: message entry has the wrong fields"))?;
        packed.clear();
        push::pack_fields(fields, &mut packed);
        batch::put_entry(&packed, &mut data);
    }
    Entry::new(ctx, Kind::Batch, &[&data])
}

/// Replies with one element per message: its reply or its error.
fn reply(ctx: &Context, outcomes: Vec<Result<Routed<'_>, RedisError>>) {
    // SAFETY: ctx is the command's live context; exactly `len` elements follow.
    raw::reply_with_array(ctx.get_raw(), outcomes.len() as _);
    for outcome in outcomes {
        ctx.reply(outcome.map(|routed| routed.addressed.reply()));
    }
}
