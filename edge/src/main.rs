//! roomcast-edge: the WebSocket edge server.
//!
//! Placeholder until the edge lands: it exists so the workspace layout and artifact
//! name (`target/release/roomcast-edge`) are fixed, and it says so instead of
//! pretending to serve.

fn main() {
    eprintln!(
        "roomcast-edge {}: the WebSocket edge is not built yet; \
         use scripts/run.sh to run Redis with the roomcast module",
        env!("CARGO_PKG_VERSION")
    );
    std::process::exit(2);
}
