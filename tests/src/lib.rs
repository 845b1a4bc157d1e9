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
//! - [`module_path()`]: where the module under test is; [`redis_url`] and [`run`]: a
//!   loopback server's URL, and one command given as words on any connection.
//! - [`reply`]: small helpers to read replies and errors.
//! - [`ws`]: a blocking WebSocket test client (and plain HTTP GET) for the edge.
//! - [`sentinel`]: Redis Sentinel processes for failover tests.
//! - [`cluster`]: a Redis Cluster (masters and replicas) with the module on every node.
//! - [`proxy`]: a TCP proxy that can silently stop forwarding a connection.
//! - [`edge`]: real `roomcast-edge` processes.
//! - [`roomcast`]: roomcast-specific helpers (keys, inboxes, `RC.INFO`).
//! - [`offsets`]: history offsets and the gap checker of the failover tests.
//! - [`traffic`]: steady subscribers and a steady publisher, for the failover tests.
//! - [`exactly_once`]: receivers that record what they got, and the exactly-once,
//!   in-order check of the push-delivery fault tests.
//! - [`wait`]: bounded polling until a condition holds.
//! - [`procs`]: this test's child processes, through `/proc`.
//! - [`serial`]: one test at a time, for the tests that load the machine.

pub mod cluster;
pub mod edge;
pub mod exactly_once;
pub mod offsets;
pub mod procs;
pub mod proxy;
pub mod reply;
pub mod roomcast;
pub mod sentinel;
pub mod traffic;
pub mod wait;
pub mod ws;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard};
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

/// One `name:value` line of an `INFO`-style text (`INFO`, `CLUSTER INFO`), trimmed;
/// `""` when absent.
pub fn info_value(info: &str, name: &str) -> String {
    let prefix = format!("{name}:");
    info.lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// Runs the calling test alone among the tests of its file (one test binary, one
/// process): for tests that load both cores, run several servers or measure times.
/// Hold the guard for the whole test; a test that failed holding it does not stop the
/// others.
pub fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// `redis://127.0.0.1:<port>/`: a loopback server's URL.
pub fn redis_url(port: u16) -> String {
    format!("redis://127.0.0.1:{port}/")
}

/// Runs one command, given as its words, on `conn` (`PING` when `args` is empty).
pub fn run(conn: &mut Connection, args: &[&str]) -> redis::RedisResult<Value> {
    let mut cmd = redis::cmd(args.first().copied().unwrap_or("PING"));
    for a in args.iter().skip(1) {
        cmd.arg(*a);
    }
    cmd.query(conn)
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
    /// Environment variables of the process (e.g. [`shifted_clock`]'s), kept for restarts.
    env: Vec<(String, String)>,
}

/// The environment that runs a process with its wall clock shifted by `offset_ms`
/// (`5_000`, `60_000`, negative for the past): `LD_PRELOAD` of `clockshift.c` (built
/// with `cc` on first use, into `target/clockshift/`) and `ROOMCAST_CLOCK_SHIFT_MS`.
/// Only wall-clock time (what Redis and the module read as "now") moves; monotonic
/// clocks do not.
///
/// Why not libfaketime (the Debian package `faketime`): Debian's redis-server is linked
/// with jemalloc, which calls `clock_gettime()` while libfaketime initialises; libfaketime
/// detects the recursion and gives up, and redis-server never starts (libfaketime issue
/// #130). The shim has no initialisation and never allocates, so it works there.
///
/// Panics when the shim cannot be built: clock tests must fail loudly, never skip.
pub fn shifted_clock(offset_ms: i64) -> Vec<(String, String)> {
    vec![
        ("LD_PRELOAD".to_string(), clock_shim().display().to_string()),
        ("ROOMCAST_CLOCK_SHIFT_MS".to_string(), offset_ms.to_string()),
    ]
}

/// Builds `clockshift.c` once per process (atomically, so parallel test processes may
/// race) and returns the library's path.
fn clock_shim() -> &'static Path {
    static SHIM: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    SHIM.get_or_init(|| {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/clockshift");
        std::fs::create_dir_all(&dir).expect("create target/clockshift");
        let source = dir.join(format!("clockshift-{}.c", std::process::id()));
        std::fs::write(&source, include_str!("clockshift.c")).expect("write clockshift.c");
        let built = dir.join(format!("libclockshift-{}.so", std::process::id()));
        let status = Command::new("cc")
            .args(["-shared", "-fPIC", "-O2", "-Wall", "-Werror", "-o"])
            .arg(&built)
            .arg(&source)
            .status()
            .unwrap_or_else(|e| panic!("cannot run cc to build the clock shim (install gcc): {e}"));
        assert!(status.success(), "cc failed to build {}", source.display());
        let lib = dir.join("libclockshift.so");
        std::fs::rename(&built, &lib).expect("install libclockshift.so");
        let _ = std::fs::remove_file(&source);
        lib
    })
}

impl Redis {
    /// A fresh server with the module loaded with `module_args` (`name value` pairs).
    pub fn start(module_args: &[&str]) -> Redis {
        Self::start_with(module_args, &[])
    }

    /// A fresh server with extra `redis-server` arguments (`--appendonly yes`, …).
    pub fn start_with(module_args: &[&str], server_args: &[&str]) -> Redis {
        Self::start_env(module_args, server_args, Vec::new())
    }

    /// A fresh server whose process gets the environment variables `env` (e.g.
    /// [`shifted_clock`]'s).
    pub fn start_env(
        module_args: &[&str],
        server_args: &[&str],
        env: Vec<(String, String)>,
    ) -> Redis {
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
            env,
        };
        redis.spawn_on_free_port();
        redis
    }

    /// A replica of `primary`, with the same module arguments.
    pub fn replica_of(primary: &Redis, module_args: &[&str]) -> Redis {
        Self::replica_of_env(primary, module_args, Vec::new())
    }

    /// A replica of `primary` whose process gets the environment variables `env`.
    pub fn replica_of_env(
        primary: &Redis,
        module_args: &[&str],
        env: Vec<(String, String)>,
    ) -> Redis {
        let port = primary.port.to_string();
        let replica = Self::start_env(module_args, &["--replicaof", "127.0.0.1", &port], env);
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
            .envs(self.env.iter().map(|(k, v)| (k, v)))
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
        redis::Client::open(self.url())?.get_connection_with_timeout(Duration::from_secs(5))
    }

    /// The server's URL (`redis://127.0.0.1:<port>/`).
    pub fn url(&self) -> String {
        redis_url(self.port)
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

    /// Like [`Redis::restart_with`], with the process environment replaced by `env`
    /// (e.g. restart with a [`shifted_clock`]).
    pub fn restart_env(&mut self, extra: &[&str], env: Vec<(String, String)>) {
        self.env = env;
        self.restart_with(extra);
    }

    /// The server's process id (also the id of its main thread).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
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

    /// One field of `INFO section` (`""` when absent).
    pub fn info_field(&self, section: &str, field: &str) -> String {
        let info: String = redis::cmd("INFO")
            .arg(section)
            .query(&mut self.conn())
            .expect("INFO");
        info_value(&info, field)
    }

    /// Runs many commands as one stream over a fresh connection, for bulk loads: the
    /// commands are written by one thread while the replies are read, and only errors
    /// are kept (one entry per command: `None` for success, `Some(error line)`).
    /// Much faster than a client pipeline in a debug build.
    pub fn bulk(&self, cmds: &[Vec<String>]) -> Vec<Option<String>> {
        use std::io::{BufReader, BufWriter, Write};
        let stream = std::net::TcpStream::connect(("127.0.0.1", self.port)).expect("connect");
        let mut writer = BufWriter::with_capacity(1 << 16, stream.try_clone().expect("clone"));
        let mut reader = BufReader::with_capacity(1 << 16, stream);
        std::thread::scope(|scope| {
            scope.spawn(move || {
                for argv in cmds {
                    write!(writer, "*{}\r\n", argv.len()).expect("write");
                    for arg in argv {
                        write!(writer, "${}\r\n", arg.len()).expect("write");
                        writer.write_all(arg.as_bytes()).expect("write");
                        writer.write_all(b"\r\n").expect("write");
                    }
                }
                writer.flush().expect("flush");
            });
            let mut line = Vec::with_capacity(256);
            cmds.iter()
                .map(|_| skip_reply(&mut reader, &mut line))
                .collect()
        })
    }

    /// Runs one command and returns the raw reply (errors as `Err`).
    pub fn cmd(&self, conn: &mut Connection, args: &[&str]) -> redis::RedisResult<Value> {
        run(conn, args)
    }
}

/// Reads one RESP reply; `Some(message)` when it is an error.
fn skip_reply(reader: &mut impl std::io::BufRead, line: &mut Vec<u8>) -> Option<String> {
    line.clear();
    reader.read_until(b'\n', line).expect("read a reply");
    let (kind, rest) = line.split_first().expect("an empty reply");
    let number = || {
        let digits = rest.strip_suffix(b"\r\n").unwrap_or(rest);
        std::str::from_utf8(digits)
            .ok()
            .and_then(|d| d.parse::<i64>().ok())
            .expect("a length")
    };
    match kind {
        b'-' => Some(String::from_utf8_lossy(rest).trim_end().to_string()),
        b'$' => {
            let len = number();
            if len >= 0 {
                let mut body = vec![0; len as usize + 2];
                reader.read_exact(&mut body).expect("bulk body");
            }
            None
        }
        b'*' => {
            let mut error = None;
            for _ in 0..number().max(0) {
                let inner = skip_reply(reader, line);
                error = error.or(inner);
            }
            error
        }
        _ => None,
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}
