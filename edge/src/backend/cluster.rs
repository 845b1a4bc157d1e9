//! Redis Cluster: where each partition lives, and connections to single shards.
//!
//! Every key of a partition carries the partition's hash tag, so a partition lives in
//! one slot and on one shard. Module commands go through the cluster connection of
//! [`crate::backend::Backend`], which routes each by its first argument (the partition-tagged room, user
//! or partition) and follows `MOVED`/`ASK` and failovers by itself. The inbox reader
//! subscribes to each partition's shard channel through cluster connections too
//! (`backend::shard_subscriber`), and reads the slot map itself (`CLUSTER SLOTS`) to
//! notice a failover and subscribe afresh — see `inbox::cluster`.

use std::collections::BTreeMap;

use redis::aio::MultiplexedConnection;
use redis::{Client, ConnectionAddr, ConnectionInfo, RedisError, RedisResult, Value};
use roomcast_common::crc16::key_slot;
use roomcast_common::partition::Partitioner;

use crate::backend::resp::{int, text};

/// A Redis Cluster reached through any one of its nodes.
#[derive(Debug, Clone)]
pub struct ClusterTarget {
    /// The node named by `--redis`: its address seeds the topology, and its
    /// credentials and TLS settings are used for every node.
    pub seed: Client,
}

/// The partitions one shard's primary serves.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Shard {
    /// The primary's host, as the cluster announces it.
    pub host: String,
    /// The primary's port.
    pub port: u16,
    /// The partitions whose slot this primary serves, ascending.
    pub partitions: Vec<u32>,
}

impl Shard {
    /// `host:port`, for logs.
    pub fn address(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

impl ClusterTarget {
    /// A cluster client seeded with this node; commands through it are routed by their
    /// first argument.
    pub fn client(&self) -> RedisResult<redis::cluster::ClusterClient> {
        self.builder(vec![self.seed.get_connection_info().clone()])
            .build()
    }

    /// A cluster client seeded with the primaries of `shards` (a slot map read through
    /// a live connection) as well as this node, which may be the one that is down.
    pub fn client_via(&self, shards: &[Shard]) -> RedisResult<redis::cluster::ClusterClient> {
        self.seeded(shards).build()
    }

    /// [`ClusterTarget::client_via`] speaking RESP3, handing what the servers push
    /// (shard channel messages, disconnections) to `pushes`.
    pub fn push_client_via(
        &self,
        shards: &[Shard],
        pushes: impl redis::aio::AsyncPushSender,
    ) -> RedisResult<redis::cluster::ClusterClient> {
        self.seeded(shards)
            .use_protocol(redis::ProtocolVersion::RESP3)
            .push_sender(pushes)
            .build()
    }

    fn seeded(&self, shards: &[Shard]) -> redis::cluster::ClusterClientBuilder {
        let mut seeds: Vec<ConnectionInfo> =
            shards.iter().map(|s| self.node(&s.host, s.port)).collect();
        seeds.push(self.seed.get_connection_info().clone());
        self.builder(seeds)
    }

    /// The connection settings of the cluster node at `host:port`: the seed's
    /// credentials and TLS settings at another address.
    fn node(&self, host: &str, port: u16) -> ConnectionInfo {
        let seed = self.seed.get_connection_info().clone();
        let addr = match seed.addr() {
            ConnectionAddr::TcpTls {
                insecure,
                tls_params,
                ..
            } => ConnectionAddr::TcpTls {
                host: host.to_string(),
                port,
                insecure: *insecure,
                tls_params: tls_params.clone(),
            },
            _ => ConnectionAddr::Tcp(host.to_string(), port),
        };
        seed.set_addr(addr)
    }

    fn builder(&self, seeds: Vec<ConnectionInfo>) -> redis::cluster::ClusterClientBuilder {
        redis::cluster::ClusterClientBuilder::new(seeds)
            .connection_timeout(std::time::Duration::from_secs(2))
            .response_timeout(std::time::Duration::from_secs(5))
            .overall_response_timeout(Some(std::time::Duration::from_secs(6)))
            .retries(4)
            .min_retry_wait(50)
            .max_retry_wait(1000)
    }
}

/// Whether the server behind `conn` is a Redis Cluster node (`INFO cluster`).
pub async fn cluster_enabled(conn: &mut MultiplexedConnection) -> RedisResult<bool> {
    let info: String = redis::cmd("INFO").arg("cluster").query_async(conn).await?;
    Ok(info.contains("cluster_enabled:1"))
}

fn topology_error(why: String) -> RedisError {
    RedisError::from((
        redis::ErrorKind::Io,
        "cannot use the Redis Cluster slot map",
        why,
    ))
}

/// Groups the partitions of `layout` by the primary serving each one's slot, from a
/// `CLUSTER SLOTS` reply (`[[start, end, [host, port, id, …], replicas…], …]`). Fails
/// when a partition's slot is served by no primary (the cluster is down or still
/// forming) or a primary has no usable address.
pub fn shards(layout: &Partitioner, slots_reply: &Value) -> RedisResult<Vec<Shard>> {
    let Value::Array(ranges) = slots_reply else {
        return Err(topology_error("CLUSTER SLOTS did not answer a list".into()));
    };
    // (start, end, host, port) of every range.
    let mut served = Vec::with_capacity(ranges.len());
    for range in ranges {
        let Value::Array(parts) = range else { continue };
        let (Some(start), Some(end), Some(Value::Array(primary))) = (
            parts.first().and_then(int),
            parts.get(1).and_then(int),
            parts.get(2),
        ) else {
            continue;
        };
        let host = primary.first().map(text).unwrap_or_default();
        let port = primary
            .get(1)
            .and_then(int)
            .and_then(|p| u16::try_from(p).ok())
            .unwrap_or(0);
        served.push((start, end, host, port));
    }
    let mut by_primary: BTreeMap<(String, u16), Vec<u32>> = BTreeMap::new();
    for p in 0..layout.count() {
        let tag = format!("{{{}}}", layout.tag(p));
        let slot = i64::from(key_slot(tag.as_bytes()));
        let Some((_, _, host, port)) = served.iter().find(|(s, e, _, _)| (*s..=*e).contains(&slot))
        else {
            return Err(topology_error(format!(
                "slot {slot} (partition {tag}) is served by no primary"
            )));
        };
        if host.is_empty() || host == "?" || *port == 0 {
            return Err(topology_error(format!(
                "the primary serving slot {slot} announces no address"
            )));
        }
        by_primary.entry((host.clone(), *port)).or_default().push(p);
    }
    Ok(by_primary
        .into_iter()
        .map(|((host, port), partitions)| Shard {
            host,
            port,
            partitions,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(host: &str, port: i64) -> Value {
        Value::Array(vec![
            Value::BulkString(host.as_bytes().to_vec()),
            Value::Int(port),
            Value::BulkString(b"id".to_vec()),
        ])
    }

    fn range(start: i64, end: i64, host: &str, port: i64) -> Value {
        Value::Array(vec![
            Value::Int(start),
            Value::Int(end),
            node(host, port),
            node("127.0.0.1", port + 100),
        ])
    }

    #[test]
    fn partitions_are_grouped_by_the_primary_of_their_slot() {
        let layout = Partitioner::new(16).unwrap();
        // Partition tags spread over equal slot ranges: 16 partitions on 3 even shards
        // give 6 + 5 + 5 (the boundaries fall inside partitions 5 and 10).
        let reply = Value::Array(vec![
            range(10923, 16383, "127.0.0.1", 7002),
            range(0, 5460, "127.0.0.1", 7000),
            range(5461, 10922, "127.0.0.1", 7001),
        ]);
        let shards = shards(&layout, &reply).unwrap();
        assert_eq!(shards.len(), 3);
        let all: Vec<u32> = shards.iter().flat_map(|s| s.partitions.clone()).collect();
        let mut sorted = all.clone();
        sorted.sort_unstable();
        assert_eq!(
            sorted,
            (0..16).collect::<Vec<_>>(),
            "each partition exactly once"
        );
        for shard in &shards {
            for p in &shard.partitions {
                let slot = key_slot(format!("{{{}}}", layout.tag(*p)).as_bytes());
                let expected = match slot {
                    0..=5460 => 7000,
                    5461..=10922 => 7001,
                    _ => 7002,
                };
                assert_eq!(shard.port, expected, "partition {p} slot {slot}");
            }
        }
        assert_eq!(shards[0].address(), "127.0.0.1:7000");
    }

    #[test]
    fn a_slot_without_a_primary_is_an_error() {
        let layout = Partitioner::new(4).unwrap();
        let reply = Value::Array(vec![range(0, 8191, "127.0.0.1", 7000)]);
        let err = shards(&layout, &reply).unwrap_err();
        assert!(err.to_string().contains("served by no primary"), "{err}");
        let reply = Value::Array(vec![range(0, 16383, "?", 7000)]);
        assert!(shards(&layout, &reply).is_err());
        assert!(shards(&layout, &Value::Nil).is_err());
    }

    #[test]
    fn other_nodes_are_reached_with_the_seed_credentials() {
        let target = ClusterTarget {
            seed: Client::open("redis://app:secret@10.0.0.1:7000/").unwrap(),
        };
        let info = target.node("10.0.0.2", 7001);
        assert_eq!(info.addr().to_string(), "10.0.0.2:7001");
        assert_eq!(info.redis_settings().password(), Some("secret"));
        assert_eq!(info.redis_settings().username(), Some("app"));
    }
}
