//! Test harness for real `roomcast-edge` processes.
//!
//! Each [`Edge`] runs `target/release/roomcast-edge` (override with `ROOMCAST_EDGE`)
//! against a test's own [`crate::Redis`], listening on a free loopback port, and is
//! killed on drop. Its stderr (the structured log) is kept for assertions.

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::ws::{self, Connect, WsClient};
use crate::Redis;

/// The HS256 secret every test edge is started with.
pub const SECRET: &str = "roomcast-test-secret";
/// The lease of a test edge ([`base_args`]): short, so that sweeps come fast.
pub const LEASE_MS: u64 = 1000;
/// Flags of an edge whose clients connect anonymously and are never slowed down by the
/// edge's own per-connection rate limit (the failover tests publish steadily).
pub const ANONYMOUS_UNLIMITED: &[&str] = &["--allow-anonymous", "--conn-rate", "100000"];

/// The edge binary under test.
pub fn edge_binary() -> PathBuf {
    if let Ok(path) = std::env::var("ROOMCAST_EDGE") {
        return PathBuf::from(path);
    }
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release/roomcast-edge");
    assert!(
        path.exists(),
        "{} is missing: build it with `cargo build --release -p roomcast-edge` \
         (scripts/test.sh does this)",
        path.display()
    );
    path
}

/// One edge process.
pub struct Edge {
    /// The process (killed on drop).
    child: Option<Child>,
    /// Address it listens on.
    pub addr: SocketAddr,
    /// Its node id base (`--node-id`); worker 0 is `<node>-w0`.
    pub node: String,
    /// The line it printed when it started listening.
    pub banner: String,
    /// Everything it wrote to stderr so far.
    log: Arc<Mutex<String>>,
}

impl Edge {
    /// Starts an edge on `redis` with one worker, a 1 s lease, the test secret and
    /// anonymous connections allowed; `extra` flags are appended (later flags win).
    pub fn start(redis: &Redis, node: &str, extra: &[&str]) -> Edge {
        let mut args = vec!["--allow-anonymous"];
        args.extend_from_slice(extra);
        Self::start_token_only(redis, node, &args)
    }

    /// Like [`Edge::start`] but without `--allow-anonymous`: clients need a token.
    pub fn start_token_only(redis: &Redis, node: &str, extra: &[&str]) -> Edge {
        Self::start_on(&redis.url(), node, LEASE_MS, extra)
    }

    /// Starts an edge on the Redis at `url` (a server, a cluster node, or
    /// `redis+sentinel://…`) with the harness's flags ([`base_args`]), a `lease_ms`
    /// lease instead of their [`LEASE_MS`], then `extra` flags (later flags win).
    pub fn start_on(url: &str, node: &str, lease_ms: u64, extra: &[&str]) -> Edge {
        let mut args = base_args(url, node);
        if let Some(i) = args.iter().position(|a| a == "--lease-ms") {
            args[i + 1] = lease_ms.to_string();
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        Self::spawn(&args, node)
    }

    /// The value of an unlabelled sample in the edge's `/metrics` (panics if missing).
    pub fn metric(&self, name: &str) -> f64 {
        let (status, body) = ws::http_get(self.addr, "/metrics").expect("GET /metrics");
        assert_eq!(status, 200, "{body}");
        metric_value(&body, name).unwrap_or_else(|| panic!("metric {name} missing from:\n{body}"))
    }

    /// Starts an edge with exactly `args`.
    pub fn spawn(args: &[&str], node: &str) -> Edge {
        let mut child = Command::new(edge_binary())
            .args(args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run roomcast-edge");
        let log = match child.stderr.take() {
            Some(stderr) => collect_lines(stderr),
            None => Arc::new(Mutex::new(String::new())),
        };
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 0) {
                if line.contains("listening on http://") {
                    let _ = tx.send(line.trim().to_string());
                }
                line.clear();
            }
            let mut rest = String::new();
            let _ = reader.read_to_string(&mut rest);
        });
        let mut edge = Edge {
            child: Some(child),
            addr: "127.0.0.1:1".parse().expect("addr"),
            node: node.to_string(),
            banner: String::new(),
            log,
        };
        match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(banner) => {
                let addr = banner
                    .split("listening on http://")
                    .nth(1)
                    .and_then(|rest| rest.split_whitespace().next())
                    .unwrap_or_default();
                edge.addr = addr.parse().expect("listen address");
                edge.banner = banner;
            }
            Err(_) => panic!("roomcast-edge did not start:\n{}", edge.log()),
        }
        edge.wait_ready();
        edge
    }

    fn wait_ready(&self) {
        if ws::await_ok(self.addr, "/readyz", Duration::from_secs(20)) {
            return;
        }
        panic!("roomcast-edge never became ready:\n{}", self.log());
    }

    /// Node id of worker 0.
    pub fn node0(&self) -> String {
        format!("{}-w0", self.node)
    }

    /// The edge's log so far.
    pub fn log(&self) -> String {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// An anonymous connection as `user`; returns the client and its welcome.
    pub fn connect(&self, user: &str) -> (WsClient, serde_json::Value) {
        let path = format!("/ws?user={user}");
        let mut client = ws::connect(self.addr, &path, &[])
            .expect("connect")
            .unwrap_open();
        let welcome = client
            .recv_json(Duration::from_secs(5))
            .expect("welcome message");
        assert_eq!(welcome["op"], "welcome", "{welcome}");
        (client, welcome)
    }

    /// A connection with a query string and headers, as the server answered it.
    pub fn try_connect(&self, path: &str, headers: &[(&str, &str)]) -> Connect {
        ws::connect(self.addr, path, headers).expect("connect")
    }

    /// Sends a signal to the process (`TERM`, `KILL`, `STOP`, `CONT`).
    pub fn signal(&self, name: &str) {
        if let Some(child) = &self.child {
            let status = Command::new("kill")
                .arg(format!("-{name}"))
                .arg(child.id().to_string())
                .status()
                .expect("kill");
            assert!(status.success());
        }
    }

    /// Waits for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        let child = self.child.as_mut()?;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Kills the process at once (SIGKILL).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Edge {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Collects what a process writes to `stream` (its stderr: the structured log), line by
/// line on a thread of its own, into the returned text.
pub fn collect_lines(stream: impl Read + Send + 'static) -> Arc<Mutex<String>> {
    let log = Arc::new(Mutex::new(String::new()));
    let collected = log.clone();
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        while reader.read_line(&mut line).is_ok_and(|n| n > 0) {
            if let Ok(mut log) = collected.lock() {
                log.push_str(&line);
            }
            line.clear();
        }
    });
    log
}

/// The flags every test edge runs with: Redis `url`, a free port, one worker, a
/// [`LEASE_MS`] lease, the test secret and node id `node`.
pub fn base_args(url: &str, node: &str) -> Vec<String> {
    let lease_ms = LEASE_MS.to_string();
    [
        "--redis",
        url,
        "--listen",
        "127.0.0.1:0",
        "--workers",
        "1",
        "--lease-ms",
        &lease_ms,
        "--jwt-secret",
        SECRET,
        "--node-id",
        node,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// The value of an unlabelled sample `name` in a Prometheus text body.
pub fn metric_value(body: &str, name: &str) -> Option<f64> {
    body.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (key, value) = l.split_once(' ')?;
        (key == name).then(|| value.trim().parse::<f64>().ok())?
    })
}

/// A text message padded to exactly `len` bytes: `{"op":"ping","id":ID,"pad":"xx…"}`.
pub fn padded_ping(id: u64, len: usize) -> Vec<u8> {
    let head = format!(r#"{{"op":"ping","id":{id},"pad":""#);
    let tail = r#""}"#;
    let text = format!("{head}{}{tail}", "x".repeat(len - head.len() - tail.len()));
    assert_eq!(text.len(), len);
    text.into_bytes()
}

/// Reads `message` frames until `count` arrived, at most `within`: the `data.seq` of
/// each, in arrival order (other frames are skipped), or what went wrong after how many.
pub fn read_seqs(client: &mut WsClient, count: u64, within: Duration) -> Result<Vec<u64>, String> {
    let deadline = Instant::now() + within;
    let mut seqs = Vec::with_capacity(count as usize);
    while (seqs.len() as u64) < count {
        let left = deadline.saturating_duration_since(Instant::now());
        match client.recv_json(left) {
            Ok(v) if v["op"] == "message" => {
                seqs.push(v["data"]["seq"].as_u64().ok_or(format!("no seq: {v}"))?)
            }
            Ok(_) => {}
            Err(e) => return Err(format!("after {} messages: {e}", seqs.len())),
        }
    }
    Ok(seqs)
}

/// Joins `room` and asserts the ack.
pub fn join(client: &mut WsClient, room: &str, id: u64) {
    let reply = request(client, serde_json::json!({"op":"join","room":room}), id);
    assert_eq!(reply["op"], "ack", "join {room}: {reply}");
}

/// Joins `room` (with `since` when given) and reads up to the join's answer: the
/// replayed messages and the ack (live messages after the ack are left for the caller),
/// or the error the join was answered with, or why nothing came for 5 s.
pub fn join_since(
    client: &mut WsClient,
    room: &str,
    since: Option<&str>,
    id: u64,
) -> Result<(Vec<serde_json::Value>, serde_json::Value), String> {
    let mut msg = serde_json::json!({"op":"join","room":room,"id":id});
    if let Some(since) = since {
        msg["since"] = serde_json::json!(since);
    }
    client
        .send_json(&msg)
        .map_err(|e| format!("send join {room}: {e}"))?;
    let mut replay = Vec::new();
    loop {
        let m = client
            .recv_json(Duration::from_secs(5))
            .map_err(|e| format!("join {room}: {e}"))?;
        match m["op"].as_str() {
            Some("message") => replay.push(m),
            Some("ack") if m["id"] == serde_json::json!(id) => return Ok((replay, m)),
            Some("error") if m["id"] == serde_json::json!(id) => {
                return Err(format!("join {room}: {m}"))
            }
            _ => {}
        }
    }
}

/// A signed client token for `sub`, valid `ttl_s` seconds, optionally limited to rooms.
pub fn token(sub: &str, ttl_s: i64, rooms: Option<&[&str]>) -> String {
    let mut args = vec![
        "token".to_string(),
        "--secret".into(),
        SECRET.into(),
        "--sub".into(),
        sub.into(),
        "--ttl".into(),
        ttl_s.max(0).to_string(),
    ];
    for room in rooms.unwrap_or_default() {
        args.push("--room".into());
        args.push(room.to_string());
    }
    let out = Command::new(edge_binary())
        .args(&args)
        .output()
        .expect("token");
    assert!(
        out.status.success(),
        "token: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Sends `{"op":…}` with an id and waits for the matching ack or error.
pub fn request(client: &mut WsClient, mut msg: serde_json::Value, id: u64) -> serde_json::Value {
    msg["id"] = serde_json::json!(id);
    client.send_json(&msg).expect("send");
    client
        .recv_json_where(Duration::from_secs(5), |m| m["id"] == serde_json::json!(id))
        .expect("reply")
}
