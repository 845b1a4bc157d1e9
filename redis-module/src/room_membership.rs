//! Room membership: the state changes behind `RC.JOIN` and `RC.LEAVE`, and which nodes
//! hold a room's members (the routing table `RC.PUBLISH` reads).
//!
//! Every function here works inside one partition, so it stays atomic on one shard.
//! Join and leave events go out once per *user*: when the user's first connection
//! enters a room and when its last one leaves.
//!
//! A membership whose node was removed waits in the node's drain set until
//! [`crate::node_removal`] removes it. When the connection joins again meanwhile, the
//! join takes the membership over (no leave and no join event); when the same
//! connection id joins for another user, the left-over membership is removed first,
//! with its leave event.

use redis_module::{Context, RedisError};
use roomcast_common::entry::Kind;
use roomcast_common::keys::{pair, split_pair, PartitionKeys};

use crate::args::err;
use crate::inbox::Entry;
use crate::ops;

/// The nodes with members in a room and how many connections each holds there.
pub fn room_nodes(
    ctx: &Context,
    keys: &PartitionKeys,
    room: &str,
) -> Result<Vec<(String, i64)>, RedisError> {
    Ok(ops::hgetall(ctx, &keys.room_nodes(room))?
        .into_iter()
        .map(|(node, count)| {
            let count = count.parse::<i64>().unwrap_or(0);
            (node, count)
        })
        .filter(|(_, count)| *count > 0)
        .collect())
}

/// Writes `entry` into the inbox of every node that has members in `room`.
fn tell_room(
    ctx: &Context,
    keys: &PartitionKeys,
    room: &str,
    entry: &Entry,
) -> Result<(), RedisError> {
    for (node, _) in room_nodes(ctx, keys, room)? {
        entry.route_to(ctx, keys, &node, 1)?;
    }
    Ok(())
}

/// Adds connection `conn` of `user` on `node` to `room`. Returns false when it was
/// already a member (nothing changes); true when it joined, or took over the same
/// membership left over from before its node was removed (no join event then: the
/// room never saw it leave).
pub fn join(
    ctx: &Context,
    keys: &PartitionKeys,
    room: &str,
    node: &str,
    conn: &str,
    user: &str,
) -> Result<bool, RedisError> {
    let conns_key = keys.room_conns(room);
    let value = pair(node, user);
    let member = pair(conn, room);
    if let Some(existing) = ops::hget(ctx, &conns_key, conn)? {
        if existing == value {
            // Already a member, or left over from before the node was removed (the pair
            // waits in its drain set): indexing it as live takes it over.
            let adopted = ops::write(
                ctx,
                "SADD",
                &[keys.node_rooms(node).as_bytes(), member.as_bytes()],
            )?;
            return Ok(adopted == 1);
        }
        match split_pair(&existing) {
            Some((owner, old_user)) if !ops::sismember(ctx, &keys.node_rooms(owner), &member)? => {
                // Left over from a removed node and not drained yet: remove it now.
                remove_membership(
                    ctx,
                    keys,
                    room,
                    (owner, conn, old_user),
                    &keys.drain_rooms(owner),
                )?;
            }
            _ => {
                return Err(err(format!(
                    "connection {conn} is already in room {room} for another node or user"
                )))
            }
        }
    }
    ops::write(
        ctx,
        "HSET",
        &[conns_key.as_bytes(), conn.as_bytes(), value.as_bytes()],
    )?;
    let user_conns = ops::write(
        ctx,
        "HINCRBY",
        &[keys.room_users(room).as_bytes(), user.as_bytes(), b"1"],
    )?;
    ops::write(
        ctx,
        "HINCRBY",
        &[keys.room_nodes(room).as_bytes(), node.as_bytes(), b"1"],
    )?;
    ops::write(
        ctx,
        "SADD",
        &[keys.node_rooms(node).as_bytes(), member.as_bytes()],
    )?;
    ops::write(ctx, "SADD", &[keys.rooms().as_bytes(), room.as_bytes()])?;
    if user_conns == 1 {
        let event = Entry::new(
            ctx,
            Kind::Join,
            &[room.as_bytes(), user.as_bytes(), conn.as_bytes()],
        )?;
        tell_room(ctx, keys, room, &event)?;
    }
    Ok(true)
}

/// Removes connection `conn` of `node` from `room`. Returns false when it was not a
/// member. `node` must be the node the connection joined from.
pub fn leave(
    ctx: &Context,
    keys: &PartitionKeys,
    room: &str,
    node: &str,
    conn: &str,
) -> Result<bool, RedisError> {
    let conns_key = keys.room_conns(room);
    let Some(existing) = ops::hget(ctx, &conns_key, conn)? else {
        return Ok(false);
    };
    let Some((owner, user)) = split_pair(&existing) else {
        return Err(err(format!("corrupt membership of {conn} in room {room}")));
    };
    if owner != node {
        return Err(err(format!(
            "connection {conn} of room {room} belongs to node {owner}, not {node}"
        )));
    }
    remove_membership(ctx, keys, room, (node, conn, user), &keys.node_rooms(node))?;
    Ok(true)
}

/// Removes the membership of `conn` (of `user`, on `node`), which `room` must hold, and
/// its pair from the index set `index` (the node's live index, or its drain set); sends
/// a leave event to the room's nodes when it was the user's last connection there.
pub fn remove_membership(
    ctx: &Context,
    keys: &PartitionKeys,
    room: &str,
    (node, conn, user): (&str, &str, &str),
    index: &str,
) -> Result<(), RedisError> {
    let conns_key = keys.room_conns(room);
    ops::write(ctx, "HDEL", &[conns_key.as_bytes(), conn.as_bytes()])?;
    let user_left = decrement(ctx, &keys.room_users(room), user)?;
    decrement(ctx, &keys.room_nodes(room), node)?;
    ops::write(
        ctx,
        "SREM",
        &[index.as_bytes(), pair(conn, room).as_bytes()],
    )?;
    if ops::count(ctx, &conns_key)? == 0 {
        ops::write(ctx, "SREM", &[keys.rooms().as_bytes(), room.as_bytes()])?;
    }
    if user_left {
        let event = Entry::new(ctx, Kind::Leave, &[room.as_bytes(), user.as_bytes()])?;
        tell_room(ctx, keys, room, &event)?;
    }
    Ok(())
}

/// Decrements a hash counter and deletes the field at zero. Returns true at zero.
fn decrement(ctx: &Context, key: &str, field: &str) -> Result<bool, RedisError> {
    let left = ops::write(ctx, "HINCRBY", &[key.as_bytes(), field.as_bytes(), b"-1"])?;
    if left <= 0 {
        ops::write(ctx, "HDEL", &[key.as_bytes(), field.as_bytes()])?;
        return Ok(true);
    }
    Ok(false)
}
