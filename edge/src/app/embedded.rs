//! The embedded default: with no `--redis`, the edge runs its own `redis-server` (from
//! PATH) on a free loopback port with `libroomcast.so` loaded, and stops it on exit.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::backend::module;

/// A running embedded redis-server; killed on drop.
pub struct Embedded {
    /// The process.
    child: Child,
    /// `redis://127.0.0.1:PORT/`.
    pub url: String,
    /// Its data directory (removed on drop).
    dir: PathBuf,
}

/// Finds `libroomcast.so`: the flag, next to this binary, or `target/release`.
fn module_path(flag: Option<&str>) -> Result<PathBuf, String> {
    if let Some(path) = flag {
        // redis-server resolves the path from its own working directory.
        return std::fs::canonicalize(path).map_err(|e| format!("--module {path}: {e}"));
    }
    let mut candidates = Vec::new();
    if let Ok(exe) = std::env::current_exe() {
        if let Some(dir) = exe.parent() {
            candidates.push(dir.join("libroomcast.so"));
        }
    }
    candidates.push(PathBuf::from("target/release/libroomcast.so"));
    candidates.into_iter().find(|p| p.exists()).ok_or_else(|| {
        "libroomcast.so not found: build it with `cargo build --release -p roomcast-module` \
             or pass --module PATH"
            .to_string()
    })
}

impl Embedded {
    /// Starts redis-server with the module and waits until it answers.
    pub fn start(module: Option<&str>, module_args: &str) -> Result<Self, String> {
        let module = module_path(module)?;
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("no free port: {e}"))?
            .port();
        let dir = std::env::temp_dir().join(format!("roomcast-edge-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let mut cmd = Command::new("redis-server");
        cmd.args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
        ])
        .arg("--dir")
        .arg(&dir)
        .arg("--logfile")
        .arg(dir.join("redis.log"))
        .arg("--loadmodule")
        .arg(&module)
        .args(module_args.split_whitespace())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        let child = cmd.spawn().map_err(|e| {
            format!("cannot run redis-server ({e}): install it (apt-get install redis-server) or pass --redis URL")
        })?;
        let mut embedded = Embedded {
            child,
            url: format!("redis://127.0.0.1:{port}/"),
            dir,
        };
        embedded.wait_ready(&module)?;
        Ok(embedded)
    }

    fn wait_ready(&mut self, module: &Path) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        let client = redis::Client::open(self.url.as_str()).map_err(|e| e.to_string())?;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                let log = std::fs::read_to_string(self.dir.join("redis.log")).unwrap_or_default();
                return Err(format!(
                    "redis-server with {} exited ({status}):\n{log}",
                    module.display()
                ));
            }
            if let Ok(mut conn) = client.get_connection_with_timeout(Duration::from_millis(200)) {
                if module::info_command()
                    .query::<redis::Value>(&mut conn)
                    .is_ok()
                {
                    return Ok(());
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err("the embedded redis-server did not become ready in 10 s".into())
    }
}

impl Drop for Embedded {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
