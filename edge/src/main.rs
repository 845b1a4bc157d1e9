//! The `roomcast-edge` binary: flags in, the edge run until a signal (see
//! [`roomcast_edge::app`]), or a token printed (`roomcast-edge token …`).

use clap::Parser;
use roomcast_edge::config::{Command, Config};
use roomcast_edge::{app, auth};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Asks the kernel for no transparent huge pages in this process (and the embedded
/// `redis-server` it may start, which recommends the same). With them the allocator's
/// heap grows in 2 MiB steps: an edge of mostly idle connections held about 7 MB more
/// from the start and 0.1–0.5 KB more per connection (`benches/idle_user.sh`). A kernel
/// without the setting changes nothing.
fn no_transparent_huge_pages() {
    // SAFETY: PR_SET_THP_DISABLE takes plain integers and touches no memory of ours.
    unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
}

fn main() {
    no_transparent_huge_pages();
    let config = Config::parse();
    if let Some(Command::Token {
        secret,
        sub,
        ttl,
        rooms,
    }) = &config.command
    {
        let exp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
            + ttl;
        let mut claims = serde_json::json!({ "sub": sub, "exp": exp });
        if !rooms.is_empty() {
            claims["rooms"] = serde_json::json!(rooms);
        }
        println!("{}", auth::sign(secret.as_bytes(), &claims));
        return;
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    if let Err(e) = config.validate() {
        eprintln!("roomcast-edge: {e}");
        std::process::exit(2);
    }
    match app::run(config) {
        Ok(()) => std::process::exit(0),
        Err(e) => {
            eprintln!("roomcast-edge: {e}");
            std::process::exit(1);
        }
    }
}
