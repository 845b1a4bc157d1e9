//! A loopback TCP proxy that can silently stop forwarding a connection.
//!
//! Silent starvation — a connection that stays open while nothing reaches it any more
//! (a detached or demoted server that keeps the socket, a network path that drops
//! packets without a reset) — cannot be produced with a real server alone. The proxy
//! forwards every connection to `upstream` and remembers the ones whose client sent a
//! given command (`XREAD`, say); [`Proxy::freeze`] then blackholes those: both
//! directions are read and dropped, the sockets stay open, no error reaches anyone.

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

/// What the accept loop and the forwarding threads share.
#[derive(Default)]
struct State {
    /// Connections whose client sent the marker, by connection number.
    marked: Mutex<HashSet<u64>>,
    /// Connections that no longer forward anything.
    frozen: Mutex<HashSet<u64>>,
    /// Set on drop: every thread ends.
    stop: AtomicBool,
}

/// One proxy, stopped on drop.
pub struct Proxy {
    /// Where clients connect.
    pub addr: SocketAddr,
    /// Shared with the threads.
    state: Arc<State>,
}

impl Proxy {
    /// Starts forwarding a free loopback port to `upstream`, marking connections whose
    /// client sends `marker`.
    pub fn start(upstream: SocketAddr, marker: &'static [u8]) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("proxy address");
        let state = Arc::new(State::default());
        let shared = state.clone();
        thread::spawn(move || {
            let next = AtomicU64::new(0);
            while !shared.stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((client, _)) => {
                        let Ok(server) = TcpStream::connect(upstream) else {
                            continue;
                        };
                        let id = next.fetch_add(1, Ordering::Relaxed);
                        let _ = client.set_nonblocking(false);
                        pipe(id, &client, &server, Some(marker), shared.clone());
                        pipe(id, &server, &client, None, shared.clone());
                    }
                    Err(_) => thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Proxy { addr, state }
    }

    /// Blackholes every connection marked so far; returns how many.
    pub fn freeze(&self) -> usize {
        let marked = self.state.marked.lock().expect("marked").clone();
        let mut frozen = self.state.frozen.lock().expect("frozen");
        frozen.extend(marked.iter().copied());
        marked.len()
    }

    /// How many connections were marked.
    pub fn marked(&self) -> usize {
        self.state.marked.lock().expect("marked").len()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::Relaxed);
    }
}

/// Forwards `from` → `to` on a thread until either side closes or the proxy stops,
/// marking the connection when `marker` passes, dropping bytes while it is frozen.
fn pipe(
    id: u64,
    from: &TcpStream,
    to: &TcpStream,
    marker: Option<&'static [u8]>,
    state: Arc<State>,
) {
    let (Ok(mut from), Ok(mut to)) = (from.try_clone(), to.try_clone()) else {
        return;
    };
    thread::spawn(move || {
        let _ = from.set_read_timeout(Some(Duration::from_millis(50)));
        let mut buf = vec![0u8; 64 * 1024];
        while !state.stop.load(Ordering::Relaxed) {
            let n = match from.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    continue
                }
                Err(_) => break,
            };
            let data = &buf[..n];
            if let Some(marker) = marker {
                if data
                    .windows(marker.len())
                    .any(|w| w.eq_ignore_ascii_case(marker))
                {
                    state.marked.lock().expect("marked").insert(id);
                }
            }
            if state.frozen.lock().expect("frozen").contains(&id) {
                continue;
            }
            if to.write_all(data).is_err() {
                break;
            }
        }
        let _ = to.shutdown(Shutdown::Both);
        let _ = from.shutdown(Shutdown::Both);
    });
}
