//! `RC.INFO` and the `INFO roomcast` section: what the dataset holds and what this
//! server has done.

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;

use redis_module::{Context, InfoContext, RedisError, RedisResult, RedisString, RedisValue};
use roomcast_common::command;

use crate::args::check;
use crate::ops;
use crate::state::{self, layout, GAUGES};

/// Gauges read from the dataset.
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

/// Refreshes the gauges shown by `INFO roomcast` (called by the module timer).
pub fn refresh_gauges(ctx: &Context) {
    if let Ok(c) = census(ctx) {
        GAUGES.nodes.store(c.nodes, Ordering::Relaxed);
        GAUGES.connections.store(c.connections, Ordering::Relaxed);
        GAUGES.rooms.store(c.rooms, Ordering::Relaxed);
    }
}

/// Counters of this server since it started: `(name, value)`.
fn counters() -> [(&'static str, u64); 6] {
    [
        ("published", state::PUBLISHED.get()),
        ("sent", state::SENT.get()),
        ("routed", state::ROUTED.get()),
        ("limited", state::LIMITED.get()),
        ("banned", state::BANNED.get()),
        ("swept_nodes", state::SWEPT_NODES.get()),
    ]
}

fn int(n: u64) -> RedisValue {
    RedisValue::Integer(i64::try_from(n).unwrap_or(i64::MAX))
}

/// `RC.INFO` → a flat `[name, value, …]` array: `partitions`, `tags` (the partition
/// tags, index = partition), `inbox` (`shared`: one inbox stream per node, partition 0's
/// `{tag}:inbox:<node>`; `per-partition` under Redis Cluster), live gauges `nodes`, `connections`, `rooms`, then this
/// server's counters `published`, `sent`, `routed`, `limited`, `banned`, `swept_nodes`.
pub fn info(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    check(command::info(&args))?;
    let layout = layout()?;
    let census = census(ctx)?;
    let mut out = vec![
        RedisValue::SimpleStringStatic("partitions"),
        RedisValue::Integer(i64::from(layout.partitioner.count())),
        RedisValue::SimpleStringStatic("tags"),
        RedisValue::Array(
            layout
                .partitioner
                .tags()
                .iter()
                .map(|t| RedisValue::BulkString(t.clone()))
                .collect(),
        ),
        RedisValue::SimpleStringStatic("inbox"),
        RedisValue::SimpleStringStatic(if crate::inbox::shared() {
            "shared"
        } else {
            "per-partition"
        }),
        RedisValue::SimpleStringStatic("nodes"),
        int(census.nodes),
        RedisValue::SimpleStringStatic("connections"),
        int(census.connections),
        RedisValue::SimpleStringStatic("rooms"),
        int(census.rooms),
    ];
    for (name, value) in counters() {
        out.push(RedisValue::SimpleStringStatic(name));
        out.push(int(value));
    }
    Ok(RedisValue::Array(out))
}

/// The `INFO roomcast` section. Gauges are the timer's last census (≤ 1 s old): an
/// INFO callback cannot open keys. Redis prefixes each field with `roomcast_`.
pub fn info_section(ctx: &InfoContext, _for_crash_report: bool) {
    if let Err(e) = build_info_section(ctx) {
        redis_module::logging::log_warning(format!("roomcast: INFO section failed: {e}"));
    }
}

fn build_info_section(ctx: &InfoContext) -> RedisResult<()> {
    let partitions = layout().map_or(0, |l| l.partitioner.count());
    // An empty section name makes Redis name the section after the module.
    let mut section = ctx
        .builder()
        .add_section("")
        .field("partitions", i64::from(partitions))?;
    for (name, gauge) in [
        ("nodes", &GAUGES.nodes),
        ("connections", &GAUGES.connections),
        ("rooms", &GAUGES.rooms),
    ] {
        section = section.field(name, gauge.load(Ordering::Relaxed))?;
    }
    for (name, value) in counters() {
        section = section.field(name, value)?;
    }
    section.build_section()?.build_info()?;
    Ok(())
}
