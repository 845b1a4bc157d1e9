//! `RC.PUBLISH` and `RC.SEND`: routing a message into the inbox of exactly the nodes
//! that hold a recipient — O(nodes), never O(members).

use redis_module::{Context, RedisError, RedisResult, RedisString, RedisValue};
use roomcast_common::command::{self, Direct, Publish};
use roomcast_common::entry::Kind;
use roomcast_common::keys::split_pair;

use crate::args::check;
use crate::inbox::Entry;
use crate::state::{layout, PUBLISHED, SENT};
use crate::{config, connections, history, ops, room_membership, sender};

/// Refuses payloads over `max-payload-bytes` (`TOOLARGE`).
fn check_payload(data: &[u8]) -> Result<(), RedisError> {
    check(command::payload(
        data,
        config::get(&config::MAX_PAYLOAD_BYTES),
    ))
}

/// `RC.PUBLISH room data [FROM user] [CONN conn]` → `[connections, nodes, offset]`.
///
/// `connections` counts the member connections the message is routed to (the sending
/// `CONN` excluded), `nodes` the inboxes written, `offset` the message's place in the
/// room's history (`<epoch>:<seq>`; nil while `history-len` is 0).
pub fn publish(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    let layout = layout()?;
    let Publish {
        room,
        data,
        from,
        conn,
    } = check(command::publish(&layout.partitioner, &args))?;
    check_payload(data)?;
    if let Some(from) = &from {
        sender::check(ctx, from.name, room.partition)?;
    }

    let keys = layout.routed(&args, room.partition)?;
    let nodes = room_membership::room_nodes(ctx, keys, room.name)?;
    let skip_node = match conn {
        Some(conn) => ops::hget(ctx, &keys.room_conns(room.name), conn)?
            .and_then(|v| split_pair(&v).map(|(node, _)| node.to_string())),
        None => None,
    };
    let from_name = from.map_or("", |f| f.name);
    let offset = if history::enabled() {
        Some(history::record(
            ctx,
            keys,
            room.name,
            from_name.as_bytes(),
            data,
        )?)
    } else {
        None
    };
    let offset_text = offset.as_ref().map(ToString::to_string).unwrap_or_default();
    let entry = Entry::new(
        ctx,
        Kind::Message,
        &[
            room.name.as_bytes(),
            from_name.as_bytes(),
            conn.unwrap_or("").as_bytes(),
            offset_text.as_bytes(),
            data,
        ],
    )?;

    let (mut connections, mut routed) = (0i64, 0i64);
    for (node, count) in &nodes {
        let recipients = if skip_node.as_deref() == Some(node.as_str()) {
            count - 1
        } else {
            *count
        };
        if recipients > 0 {
            entry.route_to(ctx, keys, node)?;
            connections += recipients;
            routed += 1;
        }
    }
    PUBLISHED.add(1);
    Ok(RedisValue::Array(vec![
        RedisValue::Integer(connections),
        RedisValue::Integer(routed),
        history::offset_value(offset.as_ref()),
    ]))
}

/// `RC.SEND user data [FROM user]` → `[connections, nodes]`: a direct message to every
/// connection of a user. `FROM` is subject to the same policy as `RC.PUBLISH`.
pub fn send(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    let layout = layout()?;
    let Direct { user, data, from } = check(command::send(&layout.partitioner, &args))?;
    check_payload(data)?;
    if let Some(from) = &from {
        sender::check(ctx, from.name, user.partition)?;
    }

    let keys = layout.routed(&args, user.partition)?;
    let from_name = from.map_or("", |f| f.name);
    let entry = Entry::new(
        ctx,
        Kind::Direct,
        &[user.name.as_bytes(), from_name.as_bytes(), data],
    )?;
    let (connections, nodes) = connections::tell_user(ctx, keys, user.name, &entry)?;
    SENT.add(1);
    Ok(RedisValue::Array(vec![
        RedisValue::Integer(connections as i64),
        RedisValue::Integer(nodes as i64),
    ]))
}
