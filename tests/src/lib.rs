//! Test harness: real `redis-server` processes with the freshly built module.
//!
//! Every test starts its own server on a free loopback port in a temporary directory
//! and kills it on drop, so tests never depend on a server being up and never share
//! state. The module is `target/release/libroomcast.so` (override with
//! `ROOMCAST_MODULE`); the test command builds it first.
//!
//! # Layout
//!
//! - [`Redis`]: one server process (optionally a replica, with AOF, …) and helpers to
//!   talk to it.
//! - [`module_path`]: where the module under test is.
//! - [`reply`]: small helpers to read replies and errors.
//! - [`ws`]: a blocking WebSocket test client (and plain HTTP GET) for the edge.

pub mod edge;
pub mod reply;
pub mod roomcast;
pub mod ws;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use redis::{Connection, Value};

/// The module under test.
pub fn module_path() -> PathBuf {
    if let Ok(path) = std::env::var("ROOMCAST_MODULE") {
        return PathBuf::from(path);
    }
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release/libroomcast.so");
    assert!(
        path.exists(),
        "{} is missing: build it first with `cargo build --release -p roomcast-module` \
         (scripts/test.sh does this)",
        path.display()
    );
    path
}

/// A free TCP port on 127.0.0.1 (bound then released; callers retry on a race).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free loopback port")
}

/// One `redis-server` process with the roomcast module loaded.
pub struct Redis {
    /// The server process (killed on drop).
    child: Option<Child>,
    /// Loopback port it listens on.
    pub port: u16,
    /// Working directory (RDB / AOF files live here).
    dir: PathBuf,
    /// Keeps the temporary directory alive for as long as the server.
    _tmp: Option<tempfile::TempDir>,
    /// Extra `redis-server` arguments it was started with (for restarts).
    args: Vec<String>,
}

impl Redis {
    /// A fresh server with the module loaded with `module_args` (`name value` pairs).
    pub fn start(module_args: &[&str]) -> Redis {
        Self::start_with(module_args, &[])
    }

    /// A fresh server with extra `redis-server` arguments (`--appendonly yes`, …).
    pub fn start_with(module_args: &[&str], server_args: &[&str]) -> Redis {
        let tmp = tempfile::tempdir().expect("temporary directory");
        let dir = tmp.path().to_path_buf();
        let mut args = vec![
            "--loadmodule".to_string(),
            module_path().display().to_string(),
        ];
        args.extend(module_args.iter().map(|s| s.to_string()));
        args.extend(server_args.iter().map(|s| s.to_string()));
        let mut redis = Redis {
            child: None,
            port: 0,
            dir,
            _tmp: Some(tmp),
            args,
        };
        redis.spawn_on_free_port();
        redis
    }

    /// A replica of `primary`, with the same module arguments.
    pub fn replica_of(primary: &Redis, module_args: &[&str]) -> Redis {
        let port = primary.port.to_string();
        let replica = Self::start_with(module_args, &["--replicaof", "127.0.0.1", &port]);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let info: String = redis::cmd("INFO")
                .arg("replication")
                .query(&mut replica.conn())
                .unwrap_or_default();
            if info.contains("master_link_status:up") {
                break;
            }
            assert!(Instant::now() < deadline, "replica never synced: {info}");
            sleep(Duration::from_millis(50));
        }
        replica
    }

    fn spawn_on_free_port(&mut self) {
        for _ in 0..5 {
            self.port = free_port();
            if self.spawn() {
                return;
            }
        }
        panic!("redis-server did not start; see {}", self.dir.display());
    }

    /// Starts the process on `self.port`; true once it answers PING.
    fn spawn(&mut self) -> bool {
        let port = self.port.to_string();
        let dir = self.dir.display().to_string();
        let logfile = self.dir.join("redis.log").display().to_string();
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port,
                "--bind",
                "127.0.0.1",
                "--dir",
                &dir,
                "--logfile",
                &logfile,
                "--save",
                "",
                "--enable-debug-command",
                "yes",
            ])
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot run redis-server: install it (apt-get install redis-server)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(_)) = child.try_wait() {
                    return false;
                }
            }
            if let Ok(mut conn) = self.try_conn() {
                if redis::cmd("PING").query::<String>(&mut conn).is_ok() {
                    return true;
                }
            }
            sleep(Duration::from_millis(20));
        }
        false
    }

    fn try_conn(&self) -> redis::RedisResult<Connection> {
        redis::Client::open(format!("redis://127.0.0.1:{}/", self.port))?
            .get_connection_with_timeout(Duration::from_secs(5))
    }

    /// A new connection to the server.
    pub fn conn(&self) -> Connection {
        let conn = self.try_conn().expect("connect to redis-server");
        conn.set_read_timeout(Some(Duration::from_secs(30)))
            .expect("read timeout");
        conn
    }

    /// The server's log so far (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("redis.log")).unwrap_or_default()
    }

    /// Stops the server (SIGKILL) and starts it again on the same port and directory,
    /// with `extra` arguments added, so it reloads from its RDB/AOF files.
    pub fn restart_with(&mut self, extra: &[&str]) {
        self.kill();
        self.args.extend(extra.iter().map(|s| s.to_string()));
        for _ in 0..50 {
            if self.spawn() {
                return;
            }
            sleep(Duration::from_millis(100));
        }
        panic!("redis-server did not restart:\n{}", self.log());
    }

    /// Kills the server process.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// `INFO server`'s `run_id`: changes only if the process restarted (or crashed).
    pub fn run_id(&self) -> String {
        let info: String = redis::cmd("INFO")
            .arg("server")
            .query(&mut self.conn())
            .expect("INFO server");
        info.lines()
            .find_map(|l| l.strip_prefix("run_id:"))
            .unwrap_or_default()
            .trim()
            .to_string()
    }

    /// Runs one command and returns the raw reply (errors as `Err`).
    pub fn cmd(&self, conn: &mut Connection, args: &[&str]) -> redis::RedisResult<Value> {
        let mut cmd = redis::cmd(args.first().copied().unwrap_or("PING"));
        for a in args.iter().skip(1) {
            cmd.arg(*a);
        }
        cmd.query(conn)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}
