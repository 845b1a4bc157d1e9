//! Redis Sentinel processes for failover tests.
//!
//! [`Sentinels::start`] runs `redis-server <conf> --sentinel` processes on free loopback
//! ports, each with its own config file in a temporary directory (Sentinel rewrites
//! it), all monitoring one primary; they are killed on drop.

use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use redis::Value;

use crate::{free_port, wait};

/// A group of sentinels monitoring one primary.
pub struct Sentinels {
    /// The processes (killed on drop).
    children: Vec<Child>,
    /// Their ports.
    pub ports: Vec<u16>,
    /// The monitored primary's name.
    pub master: String,
    /// Keeps config files and logs alive.
    dir: tempfile::TempDir,
}

impl Sentinels {
    /// Starts `count` sentinels monitoring the primary on `primary_port` as `master`,
    /// with a quorum of a majority, `down_after_ms` of silence before the primary is
    /// considered down and a 10 s failover timeout.
    pub fn start(count: usize, master: &str, primary_port: u16, down_after_ms: u64) -> Sentinels {
        let dir = tempfile::tempdir().expect("temporary directory");
        let quorum = count / 2 + 1;
        let mut sentinels = Sentinels {
            children: Vec::new(),
            ports: Vec::new(),
            master: master.to_string(),
            dir,
        };
        for i in 0..count {
            let port = free_port();
            let conf = sentinels.dir.path().join(format!("sentinel-{i}.conf"));
            let log = sentinels.dir.path().join(format!("sentinel-{i}.log"));
            std::fs::write(
                &conf,
                format!(
                    "port {port}\nbind 127.0.0.1\ndir {dir}\nlogfile {log}\n\
                     sentinel monitor {master} 127.0.0.1 {primary_port} {quorum}\n\
                     sentinel down-after-milliseconds {master} {down_after_ms}\n\
                     sentinel failover-timeout {master} 10000\n\
                     sentinel parallel-syncs {master} 1\n",
                    dir = sentinels.dir.path().display(),
                    log = log.display(),
                ),
            )
            .expect("write sentinel config");
            let child = Command::new("redis-server")
                .arg(&conf)
                .arg("--sentinel")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("cannot run redis-server --sentinel: install redis-server");
            sentinels.children.push(child);
            sentinels.ports.push(port);
        }
        // Every sentinel answers and has found the others (needed for a quorum).
        let deadline = Instant::now() + Duration::from_secs(20);
        for port in sentinels.ports.clone() {
            loop {
                let known = sentinels.ask(port, &["SENTINEL", "SENTINELS", master]);
                if let Ok(Value::Array(others)) = known {
                    if others.len() + 1 >= count {
                        break;
                    }
                }
                assert!(
                    Instant::now() < deadline,
                    "sentinel on {port} never saw the others:\n{}",
                    sentinels.logs()
                );
                sleep(Duration::from_millis(100));
            }
        }
        sentinels
    }

    /// The edge's `--redis` URL for this group.
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self
            .ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        format!("redis+sentinel://{}/{}", hosts.join(","), self.master)
    }

    /// Runs one command on the sentinel at `port`.
    pub fn ask(&self, port: u16, args: &[&str]) -> redis::RedisResult<Value> {
        let client = redis::Client::open(format!("redis://127.0.0.1:{port}/"))?;
        let mut conn = client.get_connection_with_timeout(Duration::from_secs(2))?;
        conn.set_read_timeout(Some(Duration::from_secs(2)))?;
        let mut cmd = redis::cmd(args[0]);
        for a in &args[1..] {
            cmd.arg(*a);
        }
        cmd.query(&mut conn)
    }

    /// The primary's port as the sentinel at `port` names it.
    fn primary_of(&self, port: u16) -> Option<u16> {
        match self.ask(port, &["SENTINEL", "GET-MASTER-ADDR-BY-NAME", &self.master]) {
            Ok(Value::Array(parts)) => match parts.get(1) {
                Some(Value::BulkString(p)) => std::str::from_utf8(p).ok()?.parse().ok(),
                _ => None,
            },
            _ => None,
        }
    }

    /// Waits until every sentinel names a primary other than `old_port`; returns it.
    pub fn wait_for_new_primary(&self, old_port: u16, timeout: Duration) -> u16 {
        // The primary every sentinel names, when they agree on one other than the old.
        let agreed = |answers: &[Option<u16>]| match answers.first() {
            Some(Some(new)) if *new != old_port && answers.iter().all(|a| *a == Some(*new)) => {
                Some(*new)
            }
            _ => None,
        };
        let answers = wait::poll(
            timeout,
            Duration::from_millis(50),
            || -> Vec<Option<u16>> { self.ports.iter().map(|&p| self.primary_of(p)).collect() },
            |answers| agreed(answers).is_some(),
        );
        agreed(&answers).unwrap_or_else(|| {
            panic!(
                "no failover within {timeout:?}: {answers:?}\n{}",
                self.logs()
            )
        })
    }

    /// Every sentinel's log (for failure messages).
    pub fn logs(&self) -> String {
        (0..self.ports.len())
            .map(|i| {
                let path = self.dir.path().join(format!("sentinel-{i}.log"));
                std::fs::read_to_string(path).unwrap_or_default()
            })
            .collect::<Vec<_>>()
            .join("\n----\n")
    }
}

impl Drop for Sentinels {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
