//! Presence and room membership: the state changes behind `RC.CONNECT`,
//! `RC.DISCONNECT`, `RC.JOIN`, `RC.LEAVE`, `RC.NODE.DOWN` and the lease sweep.
//!
//! Every function here works inside one partition, so it stays atomic on one shard.
//! Join and leave events go out once per *user*: when the user's first connection
//! enters a room and when its last one leaves.

use redis_module::{Context, RedisError};
use roomcast_common::entry::Kind;
use roomcast_common::keys::{pair, split_pair, PartitionKeys};

use crate::args::err;
use crate::inbox::{self, Entry};
use crate::ops;

/// Fails unless `node` holds a lease in the partition: connections of a node without a
/// lease could never be swept if the node died.
pub fn require_lease(ctx: &Context, keys: &PartitionKeys, node: &str) -> Result<(), RedisError> {
    if ops::hget(ctx, &keys.nodes(), node)?.is_none() {
        return Err(err(format!(
            "node {node} holds no lease in partition {}; call RC.NODE.LEASE first",
            keys.prefix()
        )));
    }
    Ok(())
}

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
        entry.append_to(ctx, &inbox::key_for(ctx, keys, &node)?)?;
    }
    Ok(())
}

/// Adds connection `conn` of `user` on `node` to `room`. Returns false when it was
/// already a member (nothing changes).
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
    if let Some(existing) = ops::hget(ctx, &conns_key, conn)? {
        if existing == value {
            return Ok(false);
        }
        return Err(err(format!(
            "connection {conn} is already in room {room} for another node or user"
        )));
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
        &[
            keys.node_rooms(node).as_bytes(),
            pair(conn, room).as_bytes(),
        ],
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
    ops::write(ctx, "HDEL", &[conns_key.as_bytes(), conn.as_bytes()])?;
    let users_key = keys.room_users(room);
    let user_left = decrement(ctx, &users_key, user)?;
    decrement(ctx, &keys.room_nodes(room), node)?;
    ops::write(
        ctx,
        "SREM",
        &[
            keys.node_rooms(node).as_bytes(),
            pair(conn, room).as_bytes(),
        ],
    )?;
    if ops::count(ctx, &conns_key)? == 0 {
        ops::write(ctx, "SREM", &[keys.rooms().as_bytes(), room.as_bytes()])?;
    }
    if user_left {
        let event = Entry::new(ctx, Kind::Leave, &[room.as_bytes(), user.as_bytes()])?;
        tell_room(ctx, keys, room, &event)?;
    }
    Ok(true)
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

/// Stored value of a user's connection: `node`, or `node meta-json`.
pub fn conn_value(node: &str, meta: Option<&str>) -> String {
    match meta {
        Some(meta) => format!("{node} {meta}"),
        None => node.to_string(),
    }
}

/// Splits a stored connection value into node and metadata.
pub fn split_conn_value(value: &str) -> (&str, Option<&str>) {
    match value.split_once(' ') {
        Some((node, meta)) => (node, Some(meta)),
        None => (value, None),
    }
}

/// The connections of a user: `(conn, node, meta)`.
pub fn user_conns(
    ctx: &Context,
    keys: &PartitionKeys,
    user: &str,
) -> Result<Vec<(String, String, Option<String>)>, RedisError> {
    Ok(ops::hgetall(ctx, &keys.user_conns(user))?
        .into_iter()
        .map(|(conn, value)| {
            let (node, meta) = split_conn_value(&value);
            (conn.clone(), node.to_string(), meta.map(str::to_string))
        })
        .collect())
}

/// The distinct nodes holding connections of `user`, sorted, and the number of its
/// connections.
pub fn user_nodes(
    ctx: &Context,
    keys: &PartitionKeys,
    user: &str,
) -> Result<(usize, Vec<String>), RedisError> {
    let conns = user_conns(ctx, keys, user)?;
    let count = conns.len();
    let mut nodes: Vec<String> = conns.into_iter().map(|(_, node, _)| node).collect();
    nodes.sort_unstable();
    nodes.dedup();
    Ok((count, nodes))
}

/// Writes `entry` into the inbox of every node holding a connection of `user`; returns
/// `(connections, nodes)`.
pub fn tell_user(
    ctx: &Context,
    keys: &PartitionKeys,
    user: &str,
    entry: &Entry,
) -> Result<(usize, usize), RedisError> {
    let (connections, nodes) = user_nodes(ctx, keys, user)?;
    for node in &nodes {
        entry.append_to(ctx, &inbox::key_for(ctx, keys, node)?)?;
    }
    Ok((connections, nodes.len()))
}

/// Removes connection `conn` (on `node`) from a user's presence. Returns false when
/// it was not registered.
pub fn disconnect(
    ctx: &Context,
    keys: &PartitionKeys,
    user: &str,
    node: &str,
    conn: &str,
) -> Result<bool, RedisError> {
    let conns_key = keys.user_conns(user);
    let Some(existing) = ops::hget(ctx, &conns_key, conn)? else {
        return Ok(false);
    };
    let (owner, _) = split_conn_value(&existing);
    if owner != node {
        return Err(err(format!(
            "connection {conn} of user {user} belongs to node {owner}, not {node}"
        )));
    }
    ops::write(ctx, "HDEL", &[conns_key.as_bytes(), conn.as_bytes()])?;
    ops::write(
        ctx,
        "SREM",
        &[
            keys.node_users(node).as_bytes(),
            pair(conn, user).as_bytes(),
        ],
    )?;
    Ok(true)
}

/// What removing a node from a partition removed.
pub struct Removed {
    /// User connections dropped from presence.
    pub connections: i64,
    /// Room memberships dropped (each may have sent a leave event).
    pub memberships: i64,
}

/// Removes everything `node` holds in the partition — memberships (with leave events
/// to the remaining members' nodes), connections, its inbox and its lease.
pub fn remove_node(ctx: &Context, keys: &PartitionKeys, node: &str) -> Result<Removed, RedisError> {
    let mut removed = Removed {
        connections: 0,
        memberships: 0,
    };
    for member in ops::smembers(ctx, &keys.node_rooms(node))? {
        if let Some((conn, room)) = split_pair(&member) {
            if leave(ctx, keys, room, node, conn)? {
                removed.memberships += 1;
            }
        }
    }
    for member in ops::smembers(ctx, &keys.node_users(node))? {
        if let Some((conn, user)) = split_pair(&member) {
            if disconnect(ctx, keys, user, node, conn)? {
                removed.connections += 1;
            }
        }
    }
    ops::write(
        ctx,
        "DEL",
        &[
            keys.node_rooms(node).as_bytes(),
            keys.node_users(node).as_bytes(),
        ],
    )?;
    ops::write(ctx, "HDEL", &[keys.nodes().as_bytes(), node.as_bytes()])?;
    // A shared inbox still serves the node's other partitions while it holds a lease in
    // any of them.
    let inbox_key = inbox::key_for(ctx, keys, node)?;
    if !inbox::shared(ctx) || !holds_any_lease(ctx, node)? {
        ops::write(ctx, "DEL", &[inbox_key.as_bytes()])?;
    }
    Ok(removed)
}

/// Whether `node` holds a lease in any partition.
fn holds_any_lease(ctx: &Context, node: &str) -> Result<bool, RedisError> {
    for keys in &crate::state::layout()?.keys {
        if ops::hget(ctx, &keys.nodes(), node)?.is_some() {
            return Ok(true);
        }
    }
    Ok(false)
}
