//! Removing a node from a partition: `RC.NODE.DOWN` and the lease sweep, in bounded
//! slices.
//!
//! A node may hold tens of thousands of connections and memberships in a partition, and
//! removing each one costs several writes plus leave events to the other nodes of its
//! rooms: far too long for one atomic step on Redis's single thread. So removal has two
//! phases:
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
//! removed, with its leave event, when that id joins the room again
//! ([`crate::room_membership::join`]).

use std::time::{Duration, Instant};

use redis_module::{Context, RedisError};
use roomcast_common::keys::{pair, split_pair, PartitionKeys};

use crate::connections::split_conn_value;
use crate::leases::{holds_any_lease, holds_lease};
use crate::room_membership::remove_membership;
use crate::{inbox, ops, sweep_memory};

/// Main-thread time one removal slice may use (a sweep tick, or an `RC.NODE.DOWN`).
pub const SLICE: Duration = Duration::from_micros(500);

/// Set members a drain step reads at once (`SRANDMEMBER key BATCH`: O(BATCH)).
const BATCH: usize = 16;

/// What removing a node from a partition removes.
pub struct Removed {
    /// User connections dropped from presence.
    pub connections: i64,
    /// Room memberships dropped (each may send a leave event).
    pub memberships: i64,
}

/// Removes `node` from the partition (`RC.NODE.DOWN`): [`start_removal`], then one
/// [`drain`] slice of at most [`SLICE`]; the sweep timer finishes what a large node has
/// left within milliseconds. Returns what the node held there.
pub fn remove_node(ctx: &Context, keys: &PartitionKeys, node: &str) -> Result<Removed, RedisError> {
    let budget = Budget::new(SLICE);
    let removed = start_removal(ctx, keys, node)?;
    drain(ctx, keys, node, &budget)?;
    Ok(removed)
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
    let memberships = move_set(ctx, &keys.node_rooms(node), &keys.drain_rooms(node))?;
    let connections = move_set(ctx, &keys.node_users(node), &keys.drain_users(node))?;
    ops::write(ctx, "HDEL", &[keys.nodes().as_bytes(), node.as_bytes()])?;
    if memberships + connections > 0 {
        ops::write(ctx, "SADD", &[keys.draining().as_bytes(), node.as_bytes()])?;
        sweep_memory::removal_started(keys.prefix());
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
    let key = keys.draining();
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
    let rooms_key = keys.drain_rooms(node);
    let users_key = keys.drain_users(node);
    for (key, memberships) in [(&rooms_key, true), (&users_key, false)] {
        loop {
            let batch = ops::srandmember(ctx, key, BATCH)?;
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
    ops::write(ctx, "SREM", &[keys.draining().as_bytes(), node.as_bytes()])?;
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
        if !ops::sismember(ctx, &keys.node_rooms(node), &text)? {
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
        if !ops::sismember(ctx, &keys.node_users(node), &text)? {
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
        holds_lease(ctx, keys, node)?
    };
    if !leased {
        let inbox_key = inbox::key_for(keys, node)?;
        ops::write(ctx, "DEL", &[inbox_key.as_bytes()])?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
