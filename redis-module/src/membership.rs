//! Presence and room membership: the state changes behind `RC.CONNECT`,
//! `RC.DISCONNECT`, `RC.JOIN`, `RC.LEAVE`, `RC.NODE.DOWN` and the lease sweep.
//!
//! Every function here works inside one partition, so it stays atomic on one shard.
//! Join and leave events go out once per *user*: when the user's first connection
//! enters a room and when its last one leaves.
//!
//! # Removing a node in bounded slices
//!
//! A node may hold tens of thousands of connections and memberships in a partition, and
//! removing each one costs several writes plus leave events to the other nodes of its
//! rooms: far too long for one atomic step on Redis's single thread. So removal (the
//! lease sweep, `RC.NODE.DOWN`) has two phases:
//!
//! 1. [`start_removal`], O(1): the lease goes, the node's indexes `{T}:node:N:rooms` and
//!    `{T}:node:N:users` become its *drain sets* (`…:drain`), the node is listed in
//!    `{T}:draining`, and its inbox is deleted when it holds no lease any more. From
//!    then on the node is unknown: `RC.NODE.LEASE` answers `1` (new) and whatever the
//!    node registers again is indexed afresh.
//! 2. [`drain`]: removes the drained memberships (with their leave events) and
//!    connections one by one until a [`Budget`] of main-thread time is spent, and
//!    resumes on the next call. The sweep timer runs such slices 1 ms apart (clients
//!    are served in between) until every drain set is empty.
//!
//! An entry is live while its `conn:name` pair is in the node's live index, and left
//! over while the pair waits in a drain set. A node that comes back registers its
//! connections again: `RC.CONNECT` and `RC.JOIN` put the pair back into the live index,
//! which takes the entry over (no leave and no join event), and the drain skips pairs
//! it finds live. A left-over membership of the same connection id for another user is
//! removed, with its leave event, when that id joins the room again.

use std::time::{Duration, Instant};

use redis_module::{CallOptionsBuilder, CallReply, CallResult, Context, RedisError};
use roomcast_common::entry::Kind;
use roomcast_common::keys::{pair, split_pair, PartitionKeys};

use crate::args::err;
use crate::inbox::{self, Entry};
use crate::ops;

/// Set members a drain step reads at once (`SRANDMEMBER key BATCH`: O(BATCH)).
const BATCH: usize = 16;

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
        entry.append_to(ctx, &inbox::key_for(keys, &node)?)?;
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
            Some((owner, old_user)) if !is_member(ctx, &keys.node_rooms(owner), &member)? => {
                // Left over from a removed node and not drained yet: remove it now.
                remove_membership(
                    ctx,
                    keys,
                    room,
                    (owner, conn, old_user),
                    &drain_rooms(keys, owner),
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
/// its pair from the index set `index`; sends a leave event to the room's nodes when it
/// was the user's last connection there.
fn remove_membership(
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
        entry.append_to(ctx, &inbox::key_for(keys, node)?)?;
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

/// What removing a node from a partition removes.
pub struct Removed {
    /// User connections dropped from presence.
    pub connections: i64,
    /// Room memberships dropped (each may send a leave event).
    pub memberships: i64,
}

/// Removes `node` from the partition (`RC.NODE.DOWN`): [`start_removal`], then one
/// [`drain`] slice of at most [`crate::sweep::SLICE`]; the sweep timer finishes what a
/// large node has left within milliseconds. Returns what the node held there.
pub fn remove_node(ctx: &Context, keys: &PartitionKeys, node: &str) -> Result<Removed, RedisError> {
    let budget = Budget::new(crate::sweep::SLICE);
    let removed = start_removal(ctx, keys, node)?;
    drain(ctx, keys, node, &budget)?;
    Ok(removed)
}

/// Drain set of a node's memberships (see [`PartitionKeys::drain_rooms`]).
pub fn drain_rooms(keys: &PartitionKeys, node: &str) -> String {
    keys.drain_rooms(node)
}

/// Drain set of a node's connections (see [`PartitionKeys::drain_users`]).
pub fn drain_users(keys: &PartitionKeys, node: &str) -> String {
    keys.drain_users(node)
}

/// Set of the nodes whose removal is not finished (see [`PartitionKeys::draining`]).
pub fn draining(keys: &PartitionKeys) -> String {
    keys.draining()
}

/// Main-thread time one removal slice may use. Every step checks it after its work, so
/// a slice always makes progress.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    deadline: Instant,
}

impl Budget {
    /// A budget of `slice` from now (at most an hour).
    pub fn new(slice: Duration) -> Self {
        let now = Instant::now();
        let slice = slice.min(Duration::from_secs(3600));
        Self {
            deadline: now.checked_add(slice).unwrap_or(now),
        }
    }

    /// Whether the slice is used up.
    pub fn spent(&self) -> bool {
        Instant::now() >= self.deadline
    }
}

/// Starts removing `node` from the partition, in O(1): deletes its lease, turns its
/// indexes into drain sets (merged with any drain still pending), lists it as draining
/// and deletes its inbox when it holds no lease any more. [`drain`] does the rest.
/// Returns what the node's indexes held.
pub fn start_removal(
    ctx: &Context,
    keys: &PartitionKeys,
    node: &str,
) -> Result<Removed, RedisError> {
    let memberships = move_set(ctx, &keys.node_rooms(node), &drain_rooms(keys, node))?;
    let connections = move_set(ctx, &keys.node_users(node), &drain_users(keys, node))?;
    ops::write(ctx, "HDEL", &[keys.nodes().as_bytes(), node.as_bytes()])?;
    if memberships + connections > 0 {
        ops::write(ctx, "SADD", &[draining(keys).as_bytes(), node.as_bytes()])?;
    }
    delete_inbox_if_unleased(ctx, keys, node)?;
    Ok(Removed {
        connections: i64::try_from(connections).unwrap_or(i64::MAX),
        memberships: i64::try_from(memberships).unwrap_or(i64::MAX),
    })
}

/// Moves every member of set `from` into set `to` (`RENAME`, O(1), when `to` is empty);
/// returns how many `from` held.
fn move_set(ctx: &Context, from: &str, to: &str) -> Result<u64, RedisError> {
    let moved = ops::count(ctx, from)?;
    if moved == 0 {
        return Ok(0);
    }
    if ops::count(ctx, to)? == 0 {
        ops::write(ctx, "RENAME", &[from.as_bytes(), to.as_bytes()])?;
    } else {
        ops::write(
            ctx,
            "SUNIONSTORE",
            &[to.as_bytes(), to.as_bytes(), from.as_bytes()],
        )?;
        ops::write(ctx, "DEL", &[from.as_bytes()])?;
    }
    Ok(moved)
}

/// The nodes whose removal from the partition is pending.
pub fn draining_nodes(ctx: &Context, keys: &PartitionKeys) -> Result<Vec<String>, RedisError> {
    let key = draining(keys);
    if ops::count(ctx, &key)? == 0 {
        return Ok(Vec::new());
    }
    ops::smembers(ctx, &key)
}

/// Continues removing `node` from the partition until `budget` is spent: its left-over
/// memberships first (with leave events to the remaining members' nodes), then its
/// connections. Returns true when the removal is finished: the node is no longer
/// draining and its inbox is gone unless it holds a lease again.
pub fn drain(
    ctx: &Context,
    keys: &PartitionKeys,
    node: &str,
    budget: &Budget,
) -> Result<bool, RedisError> {
    let rooms_key = drain_rooms(keys, node);
    let users_key = drain_users(keys, node);
    for (key, memberships) in [(&rooms_key, true), (&users_key, false)] {
        loop {
            let batch = sample(ctx, key, BATCH)?;
            if batch.is_empty() {
                break;
            }
            for member in batch {
                if memberships {
                    drain_membership(ctx, keys, node, &member, key)?;
                } else {
                    drain_connection(ctx, keys, node, &member, key)?;
                }
                if budget.spent() {
                    return Ok(false);
                }
            }
        }
    }
    ops::write(ctx, "SREM", &[draining(keys).as_bytes(), node.as_bytes()])?;
    delete_inbox_if_unleased(ctx, keys, node)?;
    Ok(true)
}

/// Removes one left-over membership (`conn:room`) of `node` and drops it from the drain
/// set `key` — unless the node registered it again (the pair is live).
fn drain_membership(
    ctx: &Context,
    keys: &PartitionKeys,
    node: &str,
    member: &[u8],
    key: &str,
) -> Result<(), RedisError> {
    if let Some((conn, room)) = std::str::from_utf8(member).ok().and_then(split_pair) {
        let text = pair(conn, room);
        if !is_member(ctx, &keys.node_rooms(node), &text)? {
            if let Some(existing) = ops::hget(ctx, &keys.room_conns(room), conn)? {
                if let Some((owner, user)) = split_pair(&existing) {
                    if owner == node {
                        return remove_membership(ctx, keys, room, (node, conn, user), key);
                    }
                }
            }
        }
    }
    ops::write(ctx, "SREM", &[key.as_bytes(), member])?;
    Ok(())
}

/// Removes one left-over connection (`conn:user`) of `node` from presence and drops it
/// from the drain set `key` — unless the node registered it again (the pair is live).
fn drain_connection(
    ctx: &Context,
    keys: &PartitionKeys,
    node: &str,
    member: &[u8],
    key: &str,
) -> Result<(), RedisError> {
    if let Some((conn, user)) = std::str::from_utf8(member).ok().and_then(split_pair) {
        let text = pair(conn, user);
        if !is_member(ctx, &keys.node_users(node), &text)? {
            let conns_key = keys.user_conns(user);
            if let Some(existing) = ops::hget(ctx, &conns_key, conn)? {
                if split_conn_value(&existing).0 == node {
                    ops::write(ctx, "HDEL", &[conns_key.as_bytes(), conn.as_bytes()])?;
                }
            }
        }
    }
    ops::write(ctx, "SREM", &[key.as_bytes(), member])?;
    Ok(())
}

/// Deletes the inbox `node` reads this partition from, unless the node still holds a
/// lease that the inbox serves (in this partition; for a shared inbox, in any).
fn delete_inbox_if_unleased(
    ctx: &Context,
    keys: &PartitionKeys,
    node: &str,
) -> Result<(), RedisError> {
    let leased = if inbox::shared() {
        holds_any_lease(ctx, node)?
    } else {
        ops::hget(ctx, &keys.nodes(), node)?.is_some()
    };
    if !leased {
        let inbox_key = inbox::key_for(keys, node)?;
        ops::write(ctx, "DEL", &[inbox_key.as_bytes()])?;
    }
    Ok(())
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

/// Options of the reads below: no replication, errors as values.
fn read_options() -> redis_module::CallOptions {
    CallOptionsBuilder::new().errors_as_replies().build()
}

/// `SISMEMBER key member` (false for a missing key, without a call).
fn is_member(ctx: &Context, key: &str, member: &str) -> Result<bool, RedisError> {
    if ops::count(ctx, key)? == 0 {
        return Ok(false);
    }
    let reply: CallResult = ctx.call_ext(
        "SISMEMBER",
        &read_options(),
        &[key.as_bytes(), member.as_bytes()],
    );
    match reply {
        Ok(CallReply::I64(n)) => Ok(n.to_i64() == 1),
        Ok(_) => Ok(false),
        Err(e) => Err(err(format!(
            "SISMEMBER failed: {}",
            e.to_utf8_string().unwrap_or_default()
        ))),
    }
}

/// Up to `count` distinct members of a set (`SRANDMEMBER key count`: O(count)).
fn sample(ctx: &Context, key: &str, count: usize) -> Result<Vec<Vec<u8>>, RedisError> {
    if ops::count(ctx, key)? == 0 {
        return Ok(Vec::new());
    }
    let count = count.to_string();
    let reply: CallResult = ctx.call_ext(
        "SRANDMEMBER",
        &read_options(),
        &[key.as_bytes(), count.as_bytes()],
    );
    match reply {
        Ok(CallReply::Array(items)) => Ok(items
            .iter()
            .filter_map(|item| match item {
                Ok(CallReply::String(s)) => Some(s.as_bytes().to_vec()),
                _ => None,
            })
            .collect()),
        Ok(_) => Ok(Vec::new()),
        Err(e) => Err(err(format!(
            "SRANDMEMBER failed: {}",
            e.to_utf8_string().unwrap_or_default()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drain_keys_sit_next_to_the_node_indexes() {
        let keys = PartitionKeys::new("3.17");
        assert_eq!(drain_rooms(&keys, "n1"), "{3.17}:node:n1:rooms:drain");
        assert_eq!(drain_users(&keys, "n1"), "{3.17}:node:n1:users:drain");
        assert_eq!(draining(&keys), "{3.17}:draining");
    }

    #[test]
    fn a_budget_runs_out_after_its_slice() {
        assert!(Budget::new(Duration::ZERO).spent());
        // Long enough that no preemption of this thread can spend it before the check.
        assert!(!Budget::new(Duration::from_secs(600)).spent());
        let budget = Budget::new(Duration::from_millis(1));
        std::thread::sleep(Duration::from_millis(5));
        assert!(budget.spent());
        // A slice too long for the clock is capped, not turned into nothing.
        assert!(!Budget::new(Duration::MAX).spent());
    }
}
