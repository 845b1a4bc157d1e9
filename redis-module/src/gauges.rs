//! Gauges: what the dataset holds (nodes, connections, rooms), counted over every
//! partition.
//!
//! `RC.INFO` counts them when asked; the `INFO roomcast` section cannot (an INFO
//! callback may not open keys), so the module timer ([`crate::sweep`]) takes a census
//! with [`refresh`], at most once a second and only when a keyspace event said the
//! dataset changed ([`crate::sweep_memory`]), and the section shows the last one
//! ([`last`]).

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};

use redis_module::{Context, RedisError};

use crate::ops;
use crate::state::layout;

/// Gauges read from the dataset.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Census {
    /// Distinct nodes holding a lease in at least one partition.
    pub nodes: u64,
    /// Registered connections.
    pub connections: u64,
    /// Rooms with members.
    pub rooms: u64,
}

/// Counts nodes, connections and rooms over every partition: O(partitions × nodes).
pub fn census(ctx: &Context) -> Result<Census, RedisError> {
    let layout = layout()?;
    let mut nodes = BTreeSet::new();
    let mut connections = 0;
    let mut rooms = 0;
    for keys in &layout.keys {
        for (node, _) in ops::hgetall(ctx, &keys.nodes())? {
            connections += ops::count(ctx, &keys.node_users(&node))?;
            nodes.insert(node);
        }
        rooms += ops::count(ctx, &keys.rooms())?;
    }
    Ok(Census {
        nodes: nodes.len() as u64,
        connections,
        rooms,
    })
}

/// The last census, as atomics: written by the timer, read by the INFO callback.
struct LastCensus {
    nodes: AtomicU64,
    connections: AtomicU64,
    rooms: AtomicU64,
}

static LAST: LastCensus = LastCensus {
    nodes: AtomicU64::new(0),
    connections: AtomicU64::new(0),
    rooms: AtomicU64::new(0),
};

/// Takes a census and keeps it for [`last`] (called by the module timer when the
/// dataset changed); false when it failed, keeping the previous one.
pub fn refresh(ctx: &Context) -> bool {
    let Ok(c) = census(ctx) else { return false };
    LAST.nodes.store(c.nodes, Ordering::Relaxed);
    LAST.connections.store(c.connections, Ordering::Relaxed);
    LAST.rooms.store(c.rooms, Ordering::Relaxed);
    true
}

/// The last census the timer took (all zero before the first).
pub fn last() -> Census {
    Census {
        nodes: LAST.nodes.load(Ordering::Relaxed),
        connections: LAST.connections.load(Ordering::Relaxed),
        rooms: LAST.rooms.load(Ordering::Relaxed),
    }
}
