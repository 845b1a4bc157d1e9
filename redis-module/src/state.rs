//! Process-wide module state: the partition layout and the activity counters.
//!
//! The layout is fixed when the module loads (`partitions` is immutable). Counters are
//! this server's own since it started, like the `stats` section of `INFO`; gauges
//! (nodes, connections, rooms) are computed from the dataset itself ([`crate::gauges`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use redis_module::{RedisError, RedisString};
use roomcast_common::keys::PartitionKeys;
use roomcast_common::partition::Partitioner;

/// The partition layout and the key builders of every partition.
pub struct Layout {
    /// Names → partitions, and the partition tags.
    pub partitioner: Partitioner,
    /// `keys[p]` builds the key names of partition `p`.
    pub keys: Vec<PartitionKeys>,
    /// The server runs Redis Cluster (`cluster-enabled`, fixed for the process): read
    /// once at load rather than asking Redis for its context flags on every command.
    pub cluster: bool,
}

static LAYOUT: OnceLock<Layout> = OnceLock::new();

/// Builds the layout once, at module load.
pub fn init_layout(partitions: i64, cluster: bool) -> Result<(), String> {
    let count = u32::try_from(partitions).map_err(|_| "partitions is out of range".to_string())?;
    let partitioner = Partitioner::new(count)?;
    let keys = partitioner
        .tags()
        .iter()
        .map(|tag| PartitionKeys::new(tag))
        .collect();
    // A second load in the same process keeps the first layout, which is the same.
    let _ = LAYOUT.set(Layout {
        partitioner,
        keys,
        cluster,
    });
    Ok(())
}

/// The layout; an error only if the module was not initialised (cannot happen after load).
pub fn layout() -> Result<&'static Layout, RedisError> {
    LAYOUT
        .get()
        .ok_or(RedisError::Str("ERR roomcast is not initialised"))
}

impl Layout {
    /// Key builder of partition `p`.
    pub fn keys(&self, p: u32) -> Result<&PartitionKeys, RedisError> {
        self.keys
            .get(p as usize)
            .ok_or(RedisError::Str("ERR partition out of range"))
    }

    /// Key builder of partition `p` for a command whose routing key is `args[1]`.
    ///
    /// Under Redis Cluster the command runs where its first argument's slot lives; unless
    /// that is partition `p`'s slot, this server may not hold the partition, and the
    /// module's low-level reads would answer as if the room or user were empty. So a
    /// plain name whose slot differs from its partition's is refused there with the name
    /// to use instead (a standalone server holds every partition: no check).
    pub fn routed(&self, args: &[RedisString], p: u32) -> Result<&PartitionKeys, RedisError> {
        let keys = self.keys(p)?;
        if !self.cluster {
            return Ok(keys);
        }
        let first = args.get(1).map_or(&[][..], |a| a.as_slice());
        if self.partitioner.routes_to(first, p) {
            return Ok(keys);
        }
        let name = String::from_utf8_lossy(first);
        Err(RedisError::String(format!(
            "ERR under Redis Cluster address '{name}' by its partition-tagged name \
             '{{{}}}{name}' (or the partition tag), so that the command reaches the shard \
             holding its partition",
            self.partitioner.tag(p)
        )))
    }
}

/// A monotonically increasing activity counter.
pub struct Counter(AtomicU64);

impl Counter {
    const fn new() -> Self {
        Self(AtomicU64::new(0))
    }

    /// Adds `n`.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    /// Current value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Room messages accepted by `RC.PUBLISH`.
pub static PUBLISHED: Counter = Counter::new();
/// Direct messages accepted by `RC.SEND`.
pub static SENT: Counter = Counter::new();
/// Inbox entries written (one per message × node, plus events and kicks).
pub static ROUTED: Counter = Counter::new();
/// Publish / send attempts refused with `LIMITED`.
pub static LIMITED: Counter = Counter::new();
/// Bans imposed.
pub static BANNED: Counter = Counter::new();
/// Nodes removed by the lease sweep.
pub static SWEPT_NODES: Counter = Counter::new();
