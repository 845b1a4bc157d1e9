//! The load-balancer configurations in `deploy/` (issue 7), tested with the real Debian
//! `nginx` and `haproxy` in front of three edges on one Redis.
//!
//! Each balancer runs as a child of the test (foreground, one process, killed on drop)
//! on a free loopback port, with a configuration generated in a temporary directory
//! from the committed files: nginx includes `deploy/nginx/roomcast-upgrade-map.conf`
//! and `deploy/nginx/roomcast-locations.conf` as they are, and takes its upstream
//! block from `deploy/nginx/roomcast.conf` with only the server addresses replaced;
//! HAProxy runs `deploy/haproxy/roomcast.cfg` with only its `bind` and `server`
//! addresses replaced. So what is tested is what is deployed.
//!
//! What each balancer must do (two scenarios, each run through both):
//! - spread WebSocket clients over the edges (no sticky sessions), pass the upgrade,
//!   the Origin header (an origin outside the edges' allow-list still gets 403) and
//!   the probes through;
//! - carry messages between clients that landed on different edges;
//! - during a SIGTERM drain of one edge: show its clients the edge's 1012 close, send
//!   every new connection (made while that edge is still draining) and every
//!   reconnect to the other edges, where delivery goes on;
//! - retry an upgrade that an edge refuses with 503 (draining or full) on another
//!   edge, which is why both configurations retry 503 and not only connect errors.
//!
//! The balancers are required, never skipped: without them the test fails and says
//! to run `apt-get install nginx haproxy` (scripts/test.sh installs them).

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use roomcast_tests::edge::{join, request, Edge};
use roomcast_tests::ws::{self, Connect, WsClient};
use roomcast_tests::{free_port, Redis};
use serde_json::json;

/// Bound on every single wait for a frame, a close or a reply.
const T: Duration = Duration::from_secs(5);

/// The one Origin the edges allow: it must reach them through the balancer unchanged.
const ORIGIN: &str = "http://app.example";

/// Number of edges behind each balancer.
const EDGES: usize = 3;

/// The repository root (`deploy/` lives there).
fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .expect("repository root")
}

/// Which balancer.
#[derive(Clone, Copy, Debug)]
enum Kind {
    Nginx,
    Haproxy,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Nginx => "nginx",
            Kind::Haproxy => "haproxy",
        }
    }

    /// The binary: `ROOMCAST_NGINX` / `ROOMCAST_HAPROXY`, else Debian's `/usr/sbin`
    /// path, else the PATH. Missing is a failure with the install command, not a skip:
    /// the deployed configurations would otherwise go untested without anyone noticing.
    fn binary(self) -> PathBuf {
        let var = match self {
            Kind::Nginx => "ROOMCAST_NGINX",
            Kind::Haproxy => "ROOMCAST_HAPROXY",
        };
        let name = self.name();
        let candidates: Vec<PathBuf> = match std::env::var_os(var) {
            Some(path) => vec![PathBuf::from(path)],
            None => std::iter::once(Path::new("/usr/sbin").join(name))
                .chain(
                    std::env::var_os("PATH")
                        .map(|p| {
                            std::env::split_paths(&p)
                                .map(|d| d.join(name))
                                .collect::<Vec<_>>()
                        })
                        .unwrap_or_default(),
                )
                .collect(),
        };
        candidates
            .into_iter()
            .find(|p| p.is_file())
            .unwrap_or_else(|| {
                panic!(
                    "{name} is missing ({var} if set, else /usr/sbin/{name} or PATH): the \
                     load-balancer test needs the real Debian packages. Install them with \
                     `apt-get install nginx haproxy` (scripts/test.sh does this)"
                )
            })
    }
}

/// A running balancer: one foreground process in its own temporary directory
/// (configuration, pid, logs and temp files all inside, so it runs as any user).
struct Balancer {
    kind: Kind,
    child: Option<Child>,
    /// Where clients connect.
    addr: SocketAddr,
    /// Holds the configuration and logs; removed on drop.
    dir: tempfile::TempDir,
}

impl Balancer {
    /// Starts `kind` in front of `edges` on a free loopback port (retrying with another
    /// port if that one was taken in the meantime), once it accepts connections.
    fn start(kind: Kind, edges: &[SocketAddr]) -> Balancer {
        let binary = kind.binary();
        let mut last_log = String::new();
        for _ in 0..3 {
            let dir = tempfile::Builder::new()
                .prefix(&format!("roomcast-{}-", kind.name()))
                .tempdir()
                .expect("temporary directory");
            let port = free_port();
            let args = match kind {
                Kind::Nginx => nginx_setup(dir.path(), port, edges),
                Kind::Haproxy => haproxy_setup(dir.path(), port, edges),
            };
            let log = File::create(dir.path().join("stderr.log")).expect("log file");
            let child = Command::new(&binary)
                .args(&args)
                .current_dir(dir.path())
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("log file"))
                .stderr(log)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot run {}: {e}", binary.display()));
            let mut lb = Balancer {
                kind,
                child: Some(child),
                addr: SocketAddr::from(([127, 0, 0, 1], port)),
                dir,
            };
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if lb.exited() {
                    break;
                }
                if TcpStream::connect_timeout(&lb.addr, Duration::from_millis(200)).is_ok() {
                    return lb;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            last_log = lb.log();
            if !last_log.contains("in use") {
                panic!(
                    "{} did not start listening on {}:\n{last_log}",
                    kind.name(),
                    lb.addr
                );
            }
        }
        panic!("{} found no free port:\n{last_log}", kind.name());
    }

    /// Whether the process has exited.
    fn exited(&mut self) -> bool {
        self.child
            .as_mut()
            .is_none_or(|c| !matches!(c.try_wait(), Ok(None)))
    }

    /// Everything the balancer logged (stderr, error and access logs).
    fn log(&self) -> String {
        ["stderr.log", "error.log", "access.log"]
            .iter()
            .filter_map(|f| fs::read_to_string(self.dir.path().join(f)).ok())
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// GET `path` through the balancer: status and body.
    fn get(&self, path: &str) -> (u16, String) {
        ws::http_get(self.addr, path)
            .unwrap_or_else(|e| panic!("GET {path} through {}: {e}", self.kind.name()))
    }

    /// Waits until `/readyz` through the balancer answers 200.
    fn wait_ready(&self) {
        if ws::await_ok(self.addr, "/readyz", Duration::from_secs(10)) {
            return;
        }
        panic!(
            "/readyz through {} never answered 200:\n{}",
            self.kind.name(),
            self.log()
        );
    }

    /// An anonymous WebSocket connection as `user` through the balancer, with the
    /// allowed Origin; returns the client and the node of the edge it landed on.
    fn connect(&self, user: &str) -> (WsClient, String) {
        let path = format!("/ws?user={user}");
        let mut client = match ws::connect(self.addr, &path, &[("Origin", ORIGIN)]) {
            Ok(Connect::Open(client)) => client,
            Ok(Connect::Refused { status, body }) => panic!(
                "{} refused {user}'s upgrade: HTTP {status}: {body}\n{}",
                self.kind.name(),
                self.log()
            ),
            Err(e) => panic!("{user} through {}: {e}\n{}", self.kind.name(), self.log()),
        };
        let welcome = client.recv_json(T).expect("welcome");
        assert_eq!(welcome["op"], "welcome", "{welcome}");
        let node = welcome["node"].as_str().expect("welcome node").to_string();
        (client, node)
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        // One process (nginx without a master, HAProxy in the foreground without
        // master-worker mode), so SIGKILL leaves nothing behind.
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `lines` (a committed configuration block) with its `server` lines replaced by one
/// line per test edge, formatted by `server_line` from the edge's index, its address
/// and the committed parameters (the words from `params_at` on, taken from the first
/// `server` line: `max_fails=…`, …). Every other line is kept as it is, so the test
/// runs the committed balancing and failure settings.
fn with_servers(
    lines: &[&str],
    params_at: usize,
    edges: &[SocketAddr],
    server_line: impl Fn(usize, SocketAddr, &str) -> String,
) -> Vec<String> {
    let mut out = Vec::new();
    let mut replaced = false;
    for line in lines {
        let words: Vec<&str> = line.split_whitespace().collect();
        if words.first() != Some(&"server") {
            out.push(line.to_string());
            continue;
        }
        if !replaced {
            let params = words.get(params_at..).unwrap_or_default().join(" ");
            let params = params.trim_end_matches(';').trim().to_string();
            for (i, addr) in edges.iter().enumerate() {
                out.push(server_line(i, *addr, &params));
            }
            replaced = true;
        }
    }
    assert!(
        replaced,
        "no server line in the committed block:\n{lines:#?}"
    );
    out
}

/// Writes the nginx configuration for a test into `dir` and returns nginx's arguments.
///
/// The map and locations snippets are included from `deploy/nginx/` unchanged; the
/// upstream block is `deploy/nginx/roomcast.conf`'s with the test edges as servers.
/// What is test-only: the main context (foreground, no master, paths in `dir`) and the
/// `listen` address.
fn nginx_setup(dir: &Path, port: u16, edges: &[SocketAddr]) -> Vec<String> {
    let deploy = repo().join("deploy/nginx");
    let site =
        fs::read_to_string(deploy.join("roomcast.conf")).expect("deploy/nginx/roomcast.conf");
    let body: Vec<&str> = site
        .lines()
        .skip_while(|l| l.trim() != "upstream roomcast_edges {")
        .skip(1)
        .take_while(|l| l.trim() != "}")
        .collect();
    assert!(
        !body.is_empty(),
        "no `upstream roomcast_edges {{` block in deploy/nginx/roomcast.conf"
    );
    let upstream = with_servers(&body, 2, edges, |_, addr, params| {
        format!("        server {addr} {params};")
    })
    .join("\n");
    let d = dir.display();
    let snippet = |name: &str| deploy.join(name).display().to_string();
    let conf = format!(
        "# Generated by tests/tests/lb_balancers.rs.
daemon off;
master_process off;
pid {d}/nginx.pid;
error_log {d}/error.log info;
events {{ worker_connections 1024; }}
http {{
    log_format roomcast '$remote_addr \"$request\" $status upstream=$upstream_addr \
$upstream_status';
    access_log {d}/access.log roomcast;
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    include {map};
    upstream roomcast_edges {{
{upstream}
    }}
    server {{
        listen 127.0.0.1:{port};
        include {locations};
    }}
}}
",
        map = snippet("roomcast-upgrade-map.conf"),
        locations = snippet("roomcast-locations.conf"),
    );
    let path = dir.join("nginx.conf");
    fs::write(&path, conf).expect("write nginx.conf");
    vec![
        "-p".into(),
        d.to_string(),
        "-e".into(),
        format!("{d}/error.log"),
        "-c".into(),
        path.display().to_string(),
    ]
}

/// Writes the HAProxy configuration for a test into `dir` and returns HAProxy's
/// arguments: a test-only global section (log to stderr) and `deploy/haproxy/
/// roomcast.cfg` with its `bind` address and `server` lines replaced.
fn haproxy_setup(dir: &Path, port: u16, edges: &[SocketAddr]) -> Vec<String> {
    let cfg = fs::read_to_string(repo().join("deploy/haproxy/roomcast.cfg"))
        .expect("deploy/haproxy/roomcast.cfg");
    let lines: Vec<&str> = cfg.lines().collect();
    let mut binds = 0;
    let lines: Vec<String> = with_servers(&lines, 3, edges, |i, addr, params| {
        format!("    server edge{} {addr} {params}", i + 1)
    })
    .into_iter()
    .map(|line| {
        if line.trim_start().starts_with("bind ") {
            binds += 1;
            format!("    bind 127.0.0.1:{port}")
        } else {
            line
        }
    })
    .collect();
    assert_eq!(
        binds, 1,
        "deploy/haproxy/roomcast.cfg: expected one bind line"
    );
    let global = "# Generated by tests/tests/lb_balancers.rs.\nglobal\n    log stderr format raw local0 info\n";
    fs::write(dir.join("global.cfg"), global).expect("write global.cfg");
    fs::write(dir.join("roomcast.cfg"), lines.join("\n") + "\n").expect("write roomcast.cfg");
    let d = dir.display();
    vec![
        "-db".into(),
        "-f".into(),
        format!("{d}/global.cfg"),
        "-f".into(),
        format!("{d}/roomcast.cfg"),
    ]
}

/// Every client publishes once to `room`; every other client must get it (they sit on
/// different edges, so this is cross-edge delivery through the balancer).
fn all_to_all(clients: &mut [(String, WsClient, String)], room: &str, round: u64) {
    for i in 0..clients.len() {
        let tag = json!({"round": round, "from": i});
        let (user, client, _) = &mut clients[i];
        let ack = request(
            client,
            json!({"op":"publish","room":room,"data":tag}),
            1000 * round + i as u64,
        );
        assert_eq!(ack["op"], "ack", "{user} publish: {ack}");
        let user = user.clone();
        for (j, (other, client, node)) in clients.iter_mut().enumerate() {
            if j == i {
                continue;
            }
            let m = client
                .recv_json_where(T, |m| m["op"] == "message" && m["data"] == tag)
                .unwrap_or_else(|e| panic!("{other} on {node} missed {user}'s {tag}: {e}"));
            assert_eq!(m["from"], user.as_str(), "{m}");
        }
    }
}

/// The scenario, through one balancer: spread, cross-edge delivery, a drain.
fn balancer_scenario(kind: Kind) {
    let started = Instant::now();
    let redis = Redis::start(&[]);
    let mut edges: Vec<Edge> = (0..EDGES)
        .map(|i| {
            Edge::start(
                &redis,
                &format!("{}-{i}", kind.name()),
                &["--allowed-origin", ORIGIN],
            )
        })
        .collect();
    let addrs: Vec<SocketAddr> = edges.iter().map(|e| e.addr).collect();
    let lb = Balancer::start(kind, &addrs);
    lb.wait_ready();
    let name = kind.name();

    // Probes and routing.
    assert_eq!(lb.get("/healthz"), (200, "ok\n".to_string()), "{name}");
    let (status, body) = lb.get("/metrics");
    assert_eq!(status, 200, "{name} /metrics from loopback: {body}");
    assert!(body.contains("connections_open"), "{name}: {body}");
    assert_eq!(lb.get("/nothing").0, 404, "{name}: unknown paths");
    // Origin reaches the edge unchanged: another origin is refused by the edge.
    match ws::connect(
        lb.addr,
        "/ws?user=eve",
        &[("Origin", "http://evil.example")],
    ) {
        Ok(Connect::Refused { status, .. }) => assert_eq!(status, 403, "{name}"),
        Ok(Connect::Open(_)) => panic!("{name}: a foreign Origin was upgraded"),
        Err(e) => panic!("{name}: {e}"),
    }

    // Six clients held open: least connections puts two on each edge, never sticky.
    let mut clients: Vec<(String, WsClient, String)> = (0..6)
        .map(|i| {
            let user = format!("u{i}");
            let (client, node) = lb.connect(&user);
            (user, client, node)
        })
        .collect();
    let mut per_node: BTreeMap<String, usize> = BTreeMap::new();
    for (_, _, node) in &clients {
        *per_node.entry(node.clone()).or_default() += 1;
    }
    let all_nodes: BTreeSet<String> = edges.iter().map(Edge::node0).collect();
    assert_eq!(
        per_node.keys().cloned().collect::<BTreeSet<_>>(),
        all_nodes,
        "{name} must spread clients over every edge: {per_node:?}"
    );
    for (i, (_, client, _)) in clients.iter_mut().enumerate() {
        join(client, "lobby", 100 + i as u64);
    }
    all_to_all(&mut clients, "lobby", 1);

    // Drain the edge of client 0.
    let victim_node = clients[0].2.clone();
    let victim = edges
        .iter()
        .position(|e| e.node0() == victim_node)
        .expect("victim edge");
    // A client connected to that edge directly that never answers a close: the drain
    // waits for it (up to the edge's 1 s close grace), which holds the drain open long
    // enough to connect during it. (Clients behind the balancer do not hold it: the
    // balancer closes both sides as soon as the edge half-closes after its 1012.)
    let (_lingerer, _) = edges[victim].connect("lingerer");
    let drain_started = Instant::now();
    edges[victim].signal("TERM");
    // The drain starts by closing the listening socket: from then on the balancer's
    // connects to the edge are refused. (Before that, in the few microseconds between
    // the signal and the worker noticing it, the edge still accepts as usual.)
    let deadline = Instant::now() + T;
    while TcpStream::connect_timeout(&edges[victim].addr, Duration::from_millis(200)).is_ok() {
        assert!(
            Instant::now() < deadline,
            "{name}: the drained edge still accepts"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    // New connections while the edge drains (still running, listener closed): none
    // may land on it.
    let mut newcomers = Vec::new();
    for i in 0..4 {
        let (client, node) = lb.connect(&format!("n{i}"));
        assert_ne!(
            node,
            victim_node,
            "{name} sent a new connection to the draining edge\n{}",
            lb.log()
        );
        newcomers.push(client);
    }
    let newcomers_ms = drain_started.elapsed().as_millis();
    assert!(
        edges[victim].wait_exit(Duration::ZERO).is_none(),
        "{name}: the drained edge exited before the new connections were made \
         ({newcomers_ms} ms): the test no longer covers connections during a drain"
    );
    // Its clients see the edge's 1012 through the proxy and reconnect through it.
    let (moved, mut survivors): (Vec<_>, Vec<_>) =
        clients.into_iter().partition(|(_, _, n)| *n == victim_node);
    assert!(!moved.is_empty());
    for (user, mut client, _) in moved {
        let (code, reason) = client
            .expect_close(T)
            .unwrap_or_else(|e| panic!("{name}: {user} got no close frame: {e}"));
        assert_eq!(code, Some(1012), "{name}: {user}: {reason}");
        drop(client);
        let (mut client, node) = lb.connect(&user);
        assert_ne!(
            node, victim_node,
            "{name}: {user} reconnected to the drained edge"
        );
        assert!(all_nodes.contains(&node), "{node}");
        join(&mut client, "lobby", 200);
        survivors.push((user, client, node));
    }
    let status = edges[victim]
        .wait_exit(Duration::from_secs(10))
        .expect("the drained edge exits");
    assert!(status.success(), "{name}: drained edge: {status}");
    let drain_ms = drain_started.elapsed().as_millis();

    // Delivery goes on across the remaining edges, also for the reconnected clients.
    let nodes_after: BTreeSet<&str> = survivors.iter().map(|(_, _, n)| n.as_str()).collect();
    assert_eq!(nodes_after.len(), EDGES - 1, "{name}: {nodes_after:?}");
    all_to_all(&mut survivors, "lobby", 2);
    // And a connection made after the edge is gone lands on a live one.
    let (_late, node) = lb.connect("late");
    assert_ne!(node, victim_node, "{name}");
    assert_eq!(
        lb.get("/readyz").0,
        200,
        "{name}: the other edges are ready"
    );

    println!(
        "{name}: clients per node {per_node:?}; 4 connections during the drain in \
         {newcomers_ms} ms; drained edge gone after {drain_ms} ms; whole scenario {} ms",
        started.elapsed().as_millis()
    );
}

/// An edge that answers an upgrade with 503 (what a draining edge says to a request
/// already on an accepted socket, and what a full edge says) is passed over: the
/// balancer retries the upgrade on another edge. Made deterministic with a full edge
/// (`--max-conns 1`, its one slot taken by a direct client) that least-connections
/// keeps choosing, since no balanced connection stays on it.
fn retry_scenario(kind: Kind) {
    let name = kind.name();
    let redis = Redis::start(&[]);
    let full = Edge::start(
        &redis,
        &format!("{name}-full"),
        &["--allowed-origin", ORIGIN, "--max-conns", "1"],
    );
    let open = Edge::start(
        &redis,
        &format!("{name}-open"),
        &["--allowed-origin", ORIGIN],
    );
    let (_slot, _) = full.connect("holder");
    let lb = Balancer::start(kind, &[full.addr, open.addr]);
    lb.wait_ready();
    let clients: Vec<WsClient> = (0..3)
        .map(|i| {
            let (client, node) = lb.connect(&format!("r{i}"));
            assert_eq!(node, open.node0(), "{name}: r{i} landed on the full edge?");
            client
        })
        .collect();
    let refused = full.metric("roomcast_edge_connections_refused_total");
    assert!(
        refused >= 1.0,
        "{name} never tried the full edge, so the 503 retry went untested:\n{}",
        lb.log()
    );
    println!(
        "{name}: {} upgrades all on the open edge; the full edge answered 503 {refused} \
         times and each was retried",
        clients.len()
    );
}

#[test]
fn nginx_spreads_clients_and_moves_them_off_a_draining_edge() {
    balancer_scenario(Kind::Nginx);
}

#[test]
fn haproxy_spreads_clients_and_moves_them_off_a_draining_edge() {
    balancer_scenario(Kind::Haproxy);
}

#[test]
fn nginx_retries_an_upgrade_refused_with_503_on_another_edge() {
    retry_scenario(Kind::Nginx);
}

#[test]
fn haproxy_retries_an_upgrade_refused_with_503_on_another_edge() {
    retry_scenario(Kind::Haproxy);
}
