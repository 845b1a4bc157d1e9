//! A Redis Cluster on loopback with the roomcast module loaded on every node.
//!
//! [`Cluster::start`] runs `masters × (1 + replicas_per_master)` `redis-server`
//! processes in cluster mode (each in its own temporary directory, on a free loopback
//! port whose cluster-bus port, +10000, is free too), joins them with
//! `redis-cli --cluster create … --cluster-replicas N --cluster-yes`, and waits until
//! every node says `cluster_state:ok`, every node sees the same slot map, and every
//! replica's link to its master is up. Dropping the [`Cluster`] kills every process.
//!
//! Every wait is bounded. Clusters of one test process start one at a time (a global
//! lock held by each [`Cluster`]): six processes each, gossiping on a small machine,
//! make timing assertions (lease sweeps, failovers) unreliable when several run at once.
//!
//! Node indexes are never used: nodes are named by their port, since `redis-cli` and
//! failovers decide which node is a master.

use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::thread::sleep;
use std::time::{Duration, Instant};

use redis::{Connection, Value};
use roomcast_common::partition::Partitioner;

use crate::{free_port, info_value, module_path, wait};

/// Cluster tests of one process run one at a time.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// How long cluster creation and convergence may take before the harness gives up.
const CONVERGE: Duration = Duration::from_secs(30);

/// One slot range of the cluster's slot map (`CLUSTER SLOTS`), by port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotRange {
    /// First slot.
    pub start: u16,
    /// Last slot (inclusive).
    pub end: u16,
    /// Port of the master serving the range.
    pub master: u16,
    /// Ports of its replicas, sorted.
    pub replicas: Vec<u16>,
}

/// Port of the master serving `slot` in the slot map `map`.
pub fn master_of(map: &[SlotRange], slot: u16) -> u16 {
    map.iter()
        .find(|r| (r.start..=r.end).contains(&slot))
        .map(|r| r.master)
        .unwrap_or_else(|| panic!("no master serves slot {slot}"))
}

/// One `redis-server` process of the cluster.
struct Node {
    port: u16,
    child: Option<Child>,
    dir: PathBuf,
    _tmp: tempfile::TempDir,
}

impl Node {
    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("redis.log")).unwrap_or_default()
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A running Redis Cluster (killed on drop).
pub struct Cluster {
    nodes: Vec<Node>,
    /// Masters asked for at start.
    masters: usize,
    /// Working directory of the harness itself (redis-cli's output).
    work: tempfile::TempDir,
    /// How long starting and settling took (not counting the wait for the lock).
    startup: Duration,
    /// Held for the cluster's lifetime; released after the processes are killed.
    _turn: MutexGuard<'static, ()>,
}

/// A loopback port that is free and whose cluster-bus port (+10000) is free too.
fn cluster_port() -> u16 {
    for _ in 0..200 {
        let port = free_port();
        if port > 55535 {
            continue;
        }
        if TcpListener::bind(("127.0.0.1", port + 10000)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port pair (port, port + 10000) for a cluster node");
}

/// Whether `program` can be run at all.
fn installed(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// A connection to the node on `port` with bounded timeouts.
fn try_conn(port: u16) -> redis::RedisResult<Connection> {
    let conn = redis::Client::open(format!("redis://127.0.0.1:{port}/"))?
        .get_connection_with_timeout(Duration::from_secs(2))?;
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    conn.set_write_timeout(Some(Duration::from_secs(10)))?;
    Ok(conn)
}

fn as_int(v: &Value) -> Option<i64> {
    match v {
        Value::Int(n) => Some(*n),
        Value::BulkString(b) => std::str::from_utf8(b).ok()?.parse().ok(),
        Value::SimpleString(s) => s.parse().ok(),
        _ => None,
    }
}

/// Parses `CLUSTER SLOTS` into ranges sorted by first slot.
fn parse_slots(reply: &Value) -> Option<Vec<SlotRange>> {
    let Value::Array(ranges) = reply else {
        return None;
    };
    let port_of = |node: &Value| -> Option<u16> {
        let Value::Array(parts) = node else {
            return None;
        };
        as_int(parts.get(1)?).and_then(|p| u16::try_from(p).ok())
    };
    let mut out = Vec::with_capacity(ranges.len());
    for range in ranges {
        let Value::Array(parts) = range else {
            return None;
        };
        let start = u16::try_from(as_int(parts.first()?)?).ok()?;
        let end = u16::try_from(as_int(parts.get(1)?)?).ok()?;
        let master = port_of(parts.get(2)?)?;
        let mut replicas = parts
            .iter()
            .skip(3)
            .map(port_of)
            .collect::<Option<Vec<u16>>>()?;
        replicas.sort_unstable();
        out.push(SlotRange {
            start,
            end,
            master,
            replicas,
        });
    }
    out.sort_by_key(|r| r.start);
    Some(out)
}

impl Cluster {
    /// Starts `masters` masters with `replicas_per_master` replicas each, the module
    /// loaded on every node with `module_args` (`name value` pairs), and waits until the
    /// cluster is up and agreed everywhere. Panics (with the nodes' logs) otherwise.
    pub fn start(masters: usize, replicas_per_master: usize, module_args: &[&str]) -> Cluster {
        assert!(
            masters >= 3,
            "redis-cli --cluster create needs at least 3 masters"
        );
        assert!(
            installed("redis-server") && installed("redis-cli"),
            "redis-server and redis-cli are needed for the cluster tests: install them \
             (apt-get install redis-server, which brings redis-tools' redis-cli)"
        );
        let turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
        let module = module_path();
        let began = Instant::now();
        let mut cluster = Cluster {
            nodes: Vec::new(),
            masters,
            work: tempfile::tempdir().expect("temporary directory"),
            startup: Duration::ZERO,
            _turn: turn,
        };
        for _ in 0..masters * (1 + replicas_per_master) {
            let node = Self::spawn_node(&module, module_args);
            cluster.nodes.push(node);
        }
        cluster.create(replicas_per_master);
        if let Err(why) = cluster.wait_converged(CONVERGE, replicas_per_master) {
            panic!(
                "the cluster did not come up within {CONVERGE:?}: {why}\n{}",
                cluster.logs()
            );
        }
        cluster.startup = began.elapsed();
        cluster
    }

    /// How long [`Cluster::start`] took to start, create and settle the cluster (not
    /// counting the wait for other tests' clusters).
    pub fn startup_time(&self) -> Duration {
        self.startup
    }

    /// Starts one cluster node on a free port (retrying on a port race).
    fn spawn_node(module: &Path, module_args: &[&str]) -> Node {
        let tmp = tempfile::tempdir().expect("temporary directory");
        let dir = tmp.path().to_path_buf();
        let mut last_log = String::new();
        for _ in 0..5 {
            let port = cluster_port();
            let mut child = Command::new("redis-server")
                .args(["--port", &port.to_string()])
                .args(["--bind", "127.0.0.1"])
                .arg("--dir")
                .arg(&dir)
                .arg("--logfile")
                .arg(dir.join("redis.log"))
                .args(["--save", ""])
                .args(["--appendonly", "no"])
                // Replicas sync at once (the default waits 5 s for more replicas).
                .args(["--repl-diskless-sync-delay", "0"])
                // `CLUSTER SLOTS` (7.0) lists a replica only once its replication offset
                // is not 0; an idle master moves the offset only when it pings its
                // replicas (every 10 s by default).
                .args(["--repl-ping-replica-period", "1"])
                .args(["--enable-debug-command", "yes"])
                .args(["--cluster-enabled", "yes"])
                .args(["--cluster-config-file", "nodes.conf"])
                .args(["--cluster-node-timeout", "2000"])
                .arg("--loadmodule")
                .arg(module)
                .args(module_args)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("cannot run redis-server: install it (apt-get install redis-server)");
            let deadline = Instant::now() + Duration::from_secs(10);
            let mut up = false;
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                if let Ok(mut conn) = try_conn(port) {
                    if redis::cmd("PING").query::<String>(&mut conn).is_ok() {
                        up = true;
                        break;
                    }
                }
                sleep(Duration::from_millis(20));
            }
            if up {
                return Node {
                    port,
                    child: Some(child),
                    dir,
                    _tmp: tmp,
                };
            }
            let _ = child.kill();
            let _ = child.wait();
            last_log = std::fs::read_to_string(dir.join("redis.log")).unwrap_or_default();
            // A fresh nodes.conf for the next try.
            let _ = std::fs::remove_file(dir.join("nodes.conf"));
        }
        panic!("a cluster node did not start (5 tries); its last log:\n{last_log}");
    }

    /// `redis-cli --cluster create` over every node, bounded in time.
    fn create(&self, replicas_per_master: usize) {
        let out_path = self.work.path().join("redis-cli.out");
        let out = File::create(&out_path).expect("redis-cli output file");
        let err = out.try_clone().expect("redis-cli output file");
        let mut cli = Command::new("redis-cli");
        cli.arg("--cluster").arg("create");
        for node in &self.nodes {
            cli.arg(format!("127.0.0.1:{}", node.port));
        }
        cli.args(["--cluster-replicas", &replicas_per_master.to_string()])
            .arg("--cluster-yes")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        let mut child = cli
            .spawn()
            .expect("cannot run redis-cli: install it (apt-get install redis-tools)");
        let deadline = Instant::now() + CONVERGE;
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break Some(status),
                Ok(None) if Instant::now() < deadline => sleep(Duration::from_millis(50)),
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    break None;
                }
            }
        };
        let output = std::fs::read_to_string(&out_path).unwrap_or_default();
        match status {
            Some(s) if s.success() => {}
            Some(s) => panic!(
                "redis-cli --cluster create failed ({s}):\n{output}\n{}",
                self.logs()
            ),
            None => panic!(
                "redis-cli --cluster create did not finish within {CONVERGE:?}:\n{output}\n{}",
                self.logs()
            ),
        }
    }

    /// Waits until the cluster is settled: every live node says `cluster_state:ok` and
    /// knows every node, all live nodes report the same slot map covering all 16384
    /// slots with the expected masters and replicas each, and every replica's link is up.
    fn wait_converged(&self, timeout: Duration, replicas_per_master: usize) -> Result<(), String> {
        let total = self.nodes.len();
        let masters = self.masters;
        self.wait_until(timeout, |cluster| {
            let map = cluster.agreed_slot_map()?;
            for port in cluster.alive_ports() {
                let known = info_value(&cluster.cluster_info(port)?, "cluster_known_nodes");
                if known != total.to_string() {
                    return Err(format!("node {port} knows {known} of {total} nodes"));
                }
            }
            let mut owners: Vec<u16> = map.iter().map(|r| r.master).collect();
            owners.sort_unstable();
            owners.dedup();
            if owners.len() != masters {
                return Err(format!("{} masters own slots, not {masters}", owners.len()));
            }
            if let Some(r) = map.iter().find(|r| r.replicas.len() != replicas_per_master) {
                return Err(format!("range {r:?} lacks replicas"));
            }
            cluster.replica_links_up(&map)
        })
    }

    /// Waits (at most `timeout`) until every live node says `cluster_state:ok` and all
    /// of them report the same slot map covering every slot. After a node is killed the
    /// map still lists it until a failover happens: pass a `settled` check for that.
    pub fn wait_ok(
        &self,
        timeout: Duration,
        settled: impl Fn(&[SlotRange]) -> Result<(), String>,
    ) -> Result<Vec<SlotRange>, String> {
        let mut map = Vec::new();
        self.wait_until(timeout, |cluster| {
            let agreed = cluster.agreed_slot_map()?;
            settled(&agreed)?;
            cluster.replica_links_up(&agreed)?;
            map = agreed;
            Ok(())
        })?;
        Ok(map)
    }

    /// Polls `check` every 50 ms until it passes or `timeout` runs out (then its last
    /// complaint is the error).
    fn wait_until(
        &self,
        timeout: Duration,
        mut check: impl FnMut(&Cluster) -> Result<(), String>,
    ) -> Result<(), String> {
        wait::poll(
            timeout,
            Duration::from_millis(50),
            || check(self),
            Result::is_ok,
        )
    }

    /// The slot map every live node agrees on, once every one of them says
    /// `cluster_state:ok` and the map covers all 16384 slots.
    fn agreed_slot_map(&self) -> Result<Vec<SlotRange>, String> {
        let mut agreed: Option<(u16, Vec<SlotRange>)> = None;
        for port in self.alive_ports() {
            let state = info_value(&self.cluster_info(port)?, "cluster_state");
            if state != "ok" {
                return Err(format!("node {port} says cluster_state:{state}"));
            }
            let map = self.slot_map(port)?;
            let covered: u32 = map
                .iter()
                .map(|r| u32::from(r.end) - u32::from(r.start) + 1)
                .sum();
            if covered != 16384 {
                return Err(format!("node {port} maps {covered} of 16384 slots"));
            }
            if let Some((first, seen)) = &agreed {
                if *seen != map {
                    return Err(format!(
                        "nodes {first} and {port} disagree on slots: {seen:?} vs {map:?}"
                    ));
                }
            } else {
                agreed = Some((port, map));
            }
        }
        agreed
            .map(|(_, map)| map)
            .ok_or_else(|| "no live node".to_string())
    }

    /// Every live replica listed in `map` has its replication link up.
    fn replica_links_up(&self, map: &[SlotRange]) -> Result<(), String> {
        let alive = self.alive_ports();
        for replica in map.iter().flat_map(|r| r.replicas.iter()) {
            if !alive.contains(replica) {
                continue;
            }
            let info = self.query_text(*replica, &["INFO", "replication"])?;
            let link = info_value(&info, "master_link_status");
            if link != "up" {
                return Err(format!("replica {replica}: master_link_status:{link}"));
            }
        }
        Ok(())
    }

    fn query_text(&self, port: u16, args: &[&str]) -> Result<String, String> {
        let mut conn = try_conn(port).map_err(|e| format!("node {port}: {e}"))?;
        let mut cmd = redis::cmd(args[0]);
        for a in &args[1..] {
            cmd.arg(*a);
        }
        cmd.query(&mut conn)
            .map_err(|e| format!("node {port}: {args:?}: {e}"))
    }

    /// `CLUSTER INFO` of a node.
    pub fn cluster_info(&self, port: u16) -> Result<String, String> {
        self.query_text(port, &["CLUSTER", "INFO"])
    }

    /// The slot map as the node on `port` sees it (`CLUSTER SLOTS`).
    pub fn slot_map(&self, port: u16) -> Result<Vec<SlotRange>, String> {
        let mut conn = try_conn(port).map_err(|e| format!("node {port}: {e}"))?;
        let reply: Value = redis::cmd("CLUSTER")
            .arg("SLOTS")
            .query(&mut conn)
            .map_err(|e| format!("node {port}: CLUSTER SLOTS: {e}"))?;
        parse_slots(&reply).ok_or_else(|| format!("node {port}: odd CLUSTER SLOTS {reply:?}"))
    }

    /// The slot map, as the first live node sees it.
    pub fn slots(&self) -> Vec<SlotRange> {
        let port = self.alive_ports()[0];
        self.slot_map(port).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Ports of every node started (dead ones included), in start order.
    pub fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(|n| n.port).collect()
    }

    /// Ports of the nodes still running.
    pub fn alive_ports(&self) -> Vec<u16> {
        self.nodes
            .iter()
            .filter(|n| n.child.is_some())
            .map(|n| n.port)
            .collect()
    }

    /// Ports of the masters serving slots, in slot order.
    pub fn masters(&self) -> Vec<u16> {
        let mut out: Vec<u16> = Vec::new();
        for range in self.slots() {
            if !out.contains(&range.master) {
                out.push(range.master);
            }
        }
        out
    }

    /// Ports of the replicas of `master` (sorted).
    pub fn replicas_of(&self, master: u16) -> Vec<u16> {
        self.slots()
            .into_iter()
            .find(|r| r.master == master)
            .map(|r| r.replicas)
            .unwrap_or_default()
    }

    /// Port of the master serving `slot`.
    pub fn owner_of_slot(&self, slot: u16) -> u16 {
        master_of(&self.slots(), slot)
    }

    /// `CLUSTER KEYSLOT key`, asked of a live node.
    pub fn key_slot(&self, key: &str) -> u16 {
        let mut conn = self.conn(self.alive_ports()[0]);
        let slot: i64 = redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(key)
            .query(&mut conn)
            .expect("CLUSTER KEYSLOT");
        u16::try_from(slot).expect("a slot")
    }

    /// One name per master, `prefix0`, `prefix1`, … picked so that their partitions
    /// (of `partitions`) live on the masters, in the order of [`Cluster::masters`].
    pub fn one_name_per_master(&self, partitions: &Partitioner, prefix: &str) -> Vec<String> {
        self.masters()
            .into_iter()
            .map(|master| {
                (0..10_000)
                    .map(|i| format!("{prefix}{i}"))
                    .find(|name| self.owner_of_key(&partitions.tagged(name)) == master)
                    .unwrap_or_else(|| panic!("no {prefix}* name on master {master}"))
            })
            .collect()
    }

    /// Port of the master serving `key`'s slot.
    pub fn owner_of_key(&self, key: &str) -> u16 {
        self.owner_of_slot(self.key_slot(key))
    }

    /// A plain (non-cluster) connection to the node on `port`: redirections come back
    /// as `MOVED` errors for the caller to see.
    pub fn conn(&self, port: u16) -> Connection {
        try_conn(port).unwrap_or_else(|e| panic!("connect to cluster node {port}: {e}"))
    }

    /// Kills the node on `port` with SIGKILL (no shutdown, no failover handshake).
    pub fn kill_node(&mut self, port: u16) {
        let node = self
            .nodes
            .iter_mut()
            .find(|n| n.port == port)
            .unwrap_or_else(|| panic!("no cluster node on port {port}"));
        node.kill();
    }

    /// The log of the node on `port`.
    pub fn log(&self, port: u16) -> String {
        self.nodes
            .iter()
            .find(|n| n.port == port)
            .map(Node::log)
            .unwrap_or_default()
    }

    /// The last 30 lines of every node's log, for failure messages.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for node in &self.nodes {
            let log = node.log();
            let lines: Vec<&str> = log.lines().collect();
            let tail = &lines[lines.len().saturating_sub(30)..];
            out.push_str(&format!(
                "---- node {} ({}) ----\n{}\n",
                node.port,
                if node.child.is_some() {
                    "running"
                } else {
                    "killed"
                },
                tail.join("\n")
            ));
        }
        out
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            node.kill();
        }
    }
}
