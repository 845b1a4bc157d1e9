//! The roomcast Redis module (`libroomcast.so`, module name `roomcast`).
//!
//! It is the single source of truth of a roomcast deployment. Inside Redis, atomically,
//! it owns presence (which connections a user has, on which edge node), room
//! membership, per-sender rate limits and node leases, and it *routes*: a message
//! published to a room is appended once to the inbox stream of every edge node that
//! has a member of the room, and nowhere else.
//!
//! Every command's first argument is its routing key (a room, a user, or a partition),
//! so each command touches exactly one partition — one Redis Cluster slot — and stays
//! atomic there. The one exception is `RC.READ`, which only reads: the inboxes of several
//! partitions of one shard, refusing any partition that shard does not serve. Writes
//! reach replicas and the AOF as their effects: plain `HSET`, `SADD`, `SET … PXAT`, and
//! `XADD` with the concrete ids the primary generated.
//!
//! Module code must never panic (a panic aborts Redis): `unwrap`, `expect`, `panic!`
//! and unchecked indexing are denied by clippy for this crate.
//!
//! # Layout
//!
//! From the bottom up (each module uses only those above it in this list, and
//! [`commands`] and [`sweep`] sit on top):
//!
//! - [`config`]: policies as native module configs (`roomcast.*`).
//! - [`state`]: the partition layout fixed at load, and activity counters.
//! - [`sweep_memory`]: what the sweep and the gauges remember between ticks (the
//!   earliest lease expiry per partition, pending removals), and the events that make
//!   it forget.
//! - [`args`]: error replies (`ERR`, and the module's codes: `NOLEASE`, `TOOLARGE`, …)
//!   and the bridge from the argument parsers to them.
//! - [`ops`]: replicated writes and low-level reads of plain Redis values.
//! - [`gauges`]: nodes, connections and rooms counted over the dataset, and the last
//!   count for `INFO roomcast`.
//! - [`era`]: which primary run writes room positions; a new one starts new epochs.
//! - [`inbox`]: the publish hot path: low-level `XADD` into node inboxes + replication.
//! - [`live`]: on a standalone server, the push of every inbox append to the node's
//!   live channel (`RM_PublishMessage`), with the inbox's previous entry id.
//! - [`history`]: room history: offsets, retained messages, replay for gapless joins.
//! - [`leases`]: taking and renewing leases (low-level, replicated as `HSET` with the
//!   absolute expiry), and whether a node holds one (`NOLEASE` when it must and does not).
//! - [`connections`]: presence: a user's connections and the nodes holding them.
//! - [`room_membership`]: joins and leaves (with their events) and a room's nodes.
//! - [`node_removal`]: removing a node's connections and memberships in bounded slices.
//! - [`sender`]: the publish policy (GCRA rate, strikes, bans, kicks).
//! - [`sweep`]: the timer that removes nodes whose lease expired and refreshes gauges.
//! - [`commands`]: one file per group of `RC.*` commands ([`commands::read`]: `RC.READ`,
//!   the blocking read over a node's inboxes in several partitions, for edges under
//!   Redis Cluster).
//!
//! Pure logic (partitions, names, key layout, inbox entry fields, GCRA, JSON checks)
//! lives in the `roomcast-common` crate, shared with the edge.

pub mod args;
pub mod commands;
pub mod config;
pub mod connections;
pub mod era;
pub mod gauges;
pub mod history;
pub mod inbox;
pub mod leases;
pub mod live;
pub mod node_removal;
pub mod ops;
pub mod room_membership;
pub mod sender;
pub mod state;
pub mod sweep;
pub mod sweep_memory;

use redis_module::configuration::ConfigurationFlags;
use redis_module::{
    redis_module, Context, ContextFlags, InfoContext, RedisResult, RedisString, Status,
};
use roomcast_common::partition::MAX_PARTITIONS;

use commands::{info, kick, node, presence, probe, publish, publish_batch, read, rooms, throttle};
use config::defaults;

/// Builds the partition layout and starts the sweep timer once configs are loaded.
fn init(ctx: &Context, _args: &[RedisString]) -> Status {
    let cluster = ctx.get_flags().contains(ContextFlags::CLUSTER);
    match state::init_layout(config::get(&config::PARTITIONS), cluster) {
        Ok(()) => {
            sweep::start(ctx);
            Status::Ok
        }
        Err(e) => {
            ctx.log_warning(&format!("roomcast: {e}"));
            Status::Err
        }
    }
}

/// Inside Redis every allocation goes through Redis's allocator (so `INFO memory` and
/// `maxmemory` see it); unit tests run outside Redis and use the system allocator.
#[cfg(not(test))]
type ModuleAllocator = redis_module::alloc::RedisAlloc;
#[cfg(not(test))]
const MODULE_ALLOCATOR: ModuleAllocator = redis_module::alloc::RedisAlloc;
#[cfg(test)]
type ModuleAllocator = std::alloc::System;
#[cfg(test)]
const MODULE_ALLOCATOR: ModuleAllocator = std::alloc::System;

fn info_section(ctx: &InfoContext, for_crash_report: bool) {
    info::info_section(ctx, for_crash_report);
}

/// `RC.INFO` needs no key; every other command routes by its first argument.
fn rc_info(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    info::info(ctx, args)
}

redis_module! {
    name: "roomcast",
    version: 1,
    allocator: (ModuleAllocator, MODULE_ALLOCATOR),
    data_types: [],
    init: init,
    info: info_section,
    commands: [
        ["rc.node.lease", node::lease, "write fast", 1, 1, 1, ""],
        ["rc.node.down", node::down, "write", 1, 1, 1, ""],
        ["rc.connect", presence::connect, "write deny-oom fast", 1, 1, 1, ""],
        ["rc.disconnect", presence::disconnect, "write fast", 1, 1, 1, ""],
        ["rc.conns", presence::conns, "readonly", 1, 1, 1, ""],
        ["rc.join", rooms::join, "write deny-oom", 1, 1, 1, ""],
        ["rc.leave", rooms::leave, "write", 1, 1, 1, ""],
        ["rc.members", rooms::members, "readonly", 1, 1, 1, ""],
        ["rc.presence", rooms::presence, "readonly", 1, 1, 1, ""],
        ["rc.publish", publish::publish, "write deny-oom", 1, 1, 1, ""],
        ["rc.publishm", publish_batch::publish_batch, "write deny-oom", 1, 1, 1, ""],
        ["rc.send", publish::send, "write deny-oom", 1, 1, 1, ""],
        ["rc.kick", kick::kick, "write deny-oom", 1, 1, 1, ""],
        ["rc.throttle", throttle::throttle, "write deny-oom fast", 1, 1, 1, ""],
        ["rc.history", history::history_command, "readonly", 1, 1, 1, ""],
        ["rc.read", read::read, "readonly", 1, 1, 1, ""],
        ["rc.probe", probe::probe, "write fast", 1, 1, 1, ""],
        ["rc.info", rc_info, "readonly", 0, 0, 0, ""],
    ],
    event_handlers: [
        [@HASH @SET @NEW: sweep_memory::on_keyspace_event],
    ],
    configurations: [
        i64: [
            ["partitions", &config::PARTITIONS, defaults::PARTITIONS, 1, MAX_PARTITIONS as i64, ConfigurationFlags::IMMUTABLE, None],
            ["publish-rate", &config::PUBLISH_RATE, defaults::PUBLISH_RATE, 0, 1_000_000, ConfigurationFlags::DEFAULT, None],
            ["publish-burst", &config::PUBLISH_BURST, defaults::PUBLISH_BURST, 0, 1_000_000, ConfigurationFlags::DEFAULT, None],
            ["ban-after", &config::BAN_AFTER, defaults::BAN_AFTER, 0, 1_000_000, ConfigurationFlags::DEFAULT, None],
            ["ban-ms", &config::BAN_MS, defaults::BAN_MS, 0, 31_536_000_000, ConfigurationFlags::DEFAULT, None],
            ["max-payload-bytes", &config::MAX_PAYLOAD_BYTES, defaults::MAX_PAYLOAD_BYTES, 1, 536_870_912, ConfigurationFlags::DEFAULT, None],
            ["max-conns-per-user", &config::MAX_CONNS_PER_USER, defaults::MAX_CONNS_PER_USER, 0, 1_000_000, ConfigurationFlags::DEFAULT, None],
            ["inbox-maxlen", &config::INBOX_MAXLEN, defaults::INBOX_MAXLEN, 16, 1_000_000_000, ConfigurationFlags::DEFAULT, None],
            ["history-len", &config::HISTORY_LEN, defaults::HISTORY_LEN, 0, 1_000_000, ConfigurationFlags::DEFAULT, None],
            ["history-ttl-ms", &config::HISTORY_TTL_MS, defaults::HISTORY_TTL_MS, 0, 31_536_000_000, ConfigurationFlags::DEFAULT, None],
        ],
        string: [],
        bool: [],
        enum: [],
        module_args_as_configuration: true,
    ]
}
