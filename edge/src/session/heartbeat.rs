//! A connection's liveness: server pings, dead-peer detection and token expiry, on one
//! timer per connection.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::session::conn::Session;
use crate::ws::frame::{self, close};

/// What a connection's liveness timer waits for next.
#[derive(Clone, Copy)]
enum Due {
    /// Sending the next server ping.
    Ping,
    /// The answer to the ping sent at these instants (std, to compare with
    /// `last_seen`; tokio, to schedule the next ping).
    Answer(Instant, tokio::time::Instant),
}

impl Session {
    /// Server pings, dead-peer detection, token expiry; returns when the connection is
    /// over (read loop ended, or the writer finished after a close).
    pub async fn supervise(&self, mut read_task: tokio::task::JoinHandle<()>) {
        let config = self.ctx.config();
        let ping_every = Duration::from_millis(config.ping_interval_ms.max(100));
        let answer_within = Duration::from_millis(config.ping_timeout_ms.max(100));
        let expires = self.identity.expires_at.map(|exp| {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default();
            tokio::time::Instant::now() + Duration::from_secs(exp).saturating_sub(now)
        });
        // One timer per connection (idle connections are most of them, and each timer
        // costs memory): it fires for the next ping, for the answer a ping is waiting
        // for, or at token expiry, whichever comes first.
        let mut due = Due::Ping;
        let mut peer_silent = false;
        let first = tokio::time::Instant::now() + ping_every;
        let timer = tokio::time::sleep_until(expires.map_or(first, |at| at.min(first)));
        tokio::pin!(timer);
        loop {
            tokio::select! {
                _ = &mut read_task => {
                    // The peer closed or broke the protocol; let the writer finish.
                    if !self.out.is_closing() {
                        // No close frame came: the stream ended or failed (1006).
                        self.vanished.set(true);
                        self.out.close(close::NORMAL, "");
                    }
                    let _ = tokio::time::timeout(Duration::from_secs(1), self.out.finished()).await;
                    return;
                }
                _ = self.out.finished() => {
                    // We sent a close: give the peer a moment to answer, then drop (at
                    // once if the writer gave up on a peer that stopped reading, or the
                    // peer is silent: it answered no ping, so it will not answer this).
                    if !self.out.abandoned() && !peer_silent {
                        let _ = tokio::time::timeout(Duration::from_secs(1), &mut read_task).await;
                    }
                    read_task.abort();
                    return;
                }
                _ = &mut timer => {
                    let now = tokio::time::Instant::now();
                    let next = if expires.is_some_and(|at| now >= at) {
                        self.out.close(close::POLICY, "token expired");
                        None
                    } else {
                        match due {
                            // Any frame since the ping answers it (a pong, or traffic).
                            Due::Answer(sent, sent_at) if self.last_seen.get() < sent => {
                                if now >= sent_at + answer_within {
                                    self.out.close(close::POLICY, "ping timeout");
                                    peer_silent = true;
                                    None
                                } else {
                                    // An interval shorter than the timeout went by
                                    // unanswered: the deadline stands.
                                    Some(sent_at + answer_within)
                                }
                            }
                            Due::Answer(_, sent_at) if now < sent_at + ping_every => {
                                due = Due::Ping;
                                Some(sent_at + ping_every)
                            }
                            // A ping is due: the first, or the one after an answer.
                            _ => {
                                self.push_raw(frame::encode(frame::OP_PING, b""));
                                due = Due::Answer(Instant::now(), now);
                                Some(now + ping_every.min(answer_within))
                            }
                        }
                    };
                    match next {
                        // Closing: nothing is due any more; the arms above end the loop.
                        None => timer.as_mut().reset(now + Duration::from_secs(86_400)),
                        Some(at) => timer.as_mut().reset(expires.map_or(at, |e| e.min(at))),
                    }
                }
            }
        }
    }
}
