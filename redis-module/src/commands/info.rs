//! `RC.INFO` and the `INFO roomcast` section: what the dataset holds and what this
//! server has done.

use redis_module::{Context, InfoContext, RedisResult, RedisString, RedisValue};
use roomcast_common::command;

use crate::args::check;
use crate::gauges::{self, census};
use crate::state::{self, layout};
use crate::sweep;

/// Counters of this server since it started: `(name, value)`.
fn counters() -> [(&'static str, u64); 7] {
    [
        ("published", state::PUBLISHED.get()),
        ("sent", state::SENT.get()),
        ("routed", state::ROUTED.get()),
        ("limited", state::LIMITED.get()),
        ("banned", state::BANNED.get()),
        ("swept_nodes", state::SWEPT_NODES.get()),
        ("sweep_ticks", sweep::ticks()),
    ]
}

fn int(n: u64) -> RedisValue {
    RedisValue::Integer(i64::try_from(n).unwrap_or(i64::MAX))
}

/// `RC.INFO` → a flat `[name, value, …]` array: `partitions`, `tags` (the partition
/// tags, index = partition), `inbox` (`shared`: one inbox stream per node, partition 0's
/// `{tag}:inbox:<node>`; `per-partition` under Redis Cluster), live gauges `nodes`, `connections`, `rooms`, then this
/// server's counters `published`, `sent`, `routed`, `limited`, `banned`, `swept_nodes`,
/// `sweep_ticks` (how often the sweep's timer woke Redis).
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
    let last = gauges::last();
    for (name, gauge) in [
        ("nodes", last.nodes),
        ("connections", last.connections),
        ("rooms", last.rooms),
    ] {
        section = section.field(name, gauge)?;
    }
    for (name, value) in counters() {
        section = section.field(name, value)?;
    }
    section.build_section()?.build_info()?;
    Ok(())
}
