//! The demo chat page (`roomcast-edge --demo`): served only with the flag, with the right
//! content types; and end to end in a real browser — two headless Chromium pages on two
//! edges, live messages and presence, then one edge SIGKILLed: its page reconnects
//! through the other edge and shows what it missed exactly once (history replay).
//!
//! The browser part is `tests/browser/demo.mjs` (Node + playwright-core driving Debian's
//! `/usr/bin/chromium`). It needs `apt-get install -y chromium` and
//! `npm ci --prefix tests/browser`; `scripts/test.sh` installs both (scripts/deps.sh), and
//! this test fails loudly, saying so, when either is missing. Screenshots land in
//! `target/test-artifacts/demo/`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use roomcast_tests::edge::Edge;
use roomcast_tests::Redis;

/// Module arguments: room history on, so a reconnecting page gets what it missed.
const MODULE_ARGS: &[&str] = &["history-len", "1000"];

/// Bound on the whole browser run (the script has its own, shorter, watchdog).
const BROWSER_RUN: Duration = Duration::from_secs(60);

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// One GET over a fresh connection: status, headers (lower-case names), body.
fn get(addr: SocketAddr, path: &str) -> (u16, Vec<(String, String)>, String) {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nAccept: */*\r\n\r\n");
    stream.write_all(request.as_bytes()).expect("send request");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).expect("read response");
    let raw = String::from_utf8_lossy(&raw).to_string();
    let (head, body) = raw.split_once("\r\n\r\n").expect("response head");
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    (status, headers, body.to_string())
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> &'a str {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map_or("", |(_, v)| v.as_str())
}

#[test]
fn demo_page_is_served_only_with_the_flag() {
    let redis = Redis::start(&[]);
    let plain = Edge::start(&redis, "plain", &[]);
    for path in ["/demo", "/demo/", "/demo/demo.js", "/demo/roomcast.js"] {
        let (status, _, _) = get(plain.addr, path);
        assert_eq!(status, 404, "{path} without --demo");
    }

    let demo = Edge::start(&redis, "demo", &["--demo"]);
    let (status, headers, _) = get(demo.addr, "/demo?user=ann&edges=a:1");
    assert_eq!(status, 302, "/demo redirects to /demo/");
    assert_eq!(header(&headers, "location"), "/demo/?user=ann&edges=a:1");

    for (path, content_type, needle) in [
        ("/demo/", "text/html", "id=\"messages\""),
        ("/demo/index.html", "text/html", "id=\"presence\""),
        ("/demo/demo.js", "text/javascript", "from './roomcast.js'"),
        ("/demo/demo.css", "text/css", "#"),
        ("/demo/roomcast.js", "text/javascript", "Roomcast"),
    ] {
        let (status, headers, body) = get(demo.addr, path);
        assert_eq!(status, 200, "{path}");
        let got = header(&headers, "content-type");
        assert!(got.starts_with(content_type), "{path}: content-type {got}");
        assert!(body.contains(needle), "{path} lacks {needle:?}");
        assert_eq!(header(&headers, "x-content-type-options"), "nosniff");
    }
    let (status, _, _) = get(demo.addr, "/demo/nope.js");
    assert_eq!(status, 404);
    let (status, _, _) = get(demo.addr, "/demo/../Cargo.toml");
    assert_eq!(status, 404);
    // The rest of the edge is unchanged by the flag.
    let (status, _, _) = get(demo.addr, "/healthz");
    assert_eq!(status, 200);
}

/// Node, Chromium and playwright-core, or a panic that says how to install them.
fn browser_tools() -> PathBuf {
    let node = Command::new("node").arg("--version").output();
    assert!(
        node.is_ok_and(|o| o.status.success()),
        "the browser test needs Node.js: apt-get install -y nodejs npm \
         (scripts/test.sh installs it through scripts/deps.sh)"
    );
    let chromium =
        std::env::var("ROOMCAST_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".to_string());
    assert!(
        Path::new(&chromium).exists(),
        "the browser test needs Chromium at {chromium}: apt-get install -y chromium \
         (scripts/test.sh installs it through scripts/deps.sh; or set ROOMCAST_CHROMIUM)"
    );
    let browser = repo().join("tests/browser");
    assert!(
        browser
            .join("node_modules/playwright-core/package.json")
            .exists(),
        "the browser test needs playwright-core: npm ci --prefix tests/browser \
         (scripts/test.sh runs it through scripts/deps.sh)"
    );
    browser.join("demo.mjs")
}

#[test]
fn demo_page_survives_an_edge_kill_in_a_real_browser() {
    let script = browser_tools();
    let artifacts = repo().join("target/test-artifacts/demo");
    let _ = std::fs::remove_dir_all(&artifacts);
    std::fs::create_dir_all(&artifacts).expect("artifact dir");

    let redis = Redis::start(MODULE_ARGS);
    let edge_a = Edge::start(&redis, "demo-a", &["--demo"]);
    let edge_b = Edge::start(&redis, "demo-b", &["--demo"]);

    let mut node = Command::new("node")
        .arg(&script)
        .arg(edge_a.addr.to_string())
        .arg(edge_b.addr.to_string())
        .arg(&artifacts)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run node");
    let stderr = Arc::new(Mutex::new(String::new()));
    if let Some(pipe) = node.stderr.take() {
        let stderr = stderr.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                eprintln!("{line}");
                if let Ok(mut s) = stderr.lock() {
                    s.push_str(&line);
                    s.push('\n');
                }
            }
        });
    }
    let (tx, lines) = mpsc::channel();
    if let Some(pipe) = node.stdout.take() {
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
    }
    let report = |what: &str| {
        format!(
            "{what}\n--- demo.mjs ---\n{}\n--- edge A log ---\n{}\n--- edge B log ---\n{}",
            stderr.lock().map(|s| s.clone()).unwrap_or_default(),
            edge_a.log(),
            edge_b.log()
        )
    };

    let deadline = Instant::now() + BROWSER_RUN;
    let mut killed = false;
    let mut ok = false;
    while let Ok(line) = lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        match line.trim() {
            "READY_FOR_KILL" => {
                edge_a.signal("KILL");
                killed = true;
                let stdin = node.stdin.as_mut().expect("stdin");
                stdin.write_all(b"killed\n").expect("tell demo.mjs");
                stdin.flush().expect("flush");
            }
            "DEMO_OK" => ok = true,
            _ => {}
        }
    }
    // stdout closed (the script ended) or the deadline passed.
    let status = loop {
        match node.try_wait().expect("wait for node") {
            Some(status) => break Some(status),
            None if Instant::now() >= deadline => {
                let _ = node.kill();
                let _ = node.wait();
                break None;
            }
            None => std::thread::sleep(Duration::from_millis(50)),
        }
    };
    // Let the stderr reader drain.
    std::thread::sleep(Duration::from_millis(100));
    let Some(status) = status else {
        panic!("{}", report("demo.mjs did not finish within 60 s"));
    };
    assert!(
        status.success() && ok && killed,
        "{}",
        report(&format!(
            "the browser test failed ({status}, killed edge A: {killed}, DEMO_OK: {ok})"
        ))
    );
    for shot in [
        "a-before.png",
        "b-before.png",
        "a-reconnecting.png",
        "a-after.png",
        "b-after.png",
    ] {
        let path = artifacts.join(shot);
        let size = std::fs::metadata(&path).map_or(0, |m| m.len());
        assert!(
            size > 1000,
            "screenshot {} missing or empty",
            path.display()
        );
    }
}
