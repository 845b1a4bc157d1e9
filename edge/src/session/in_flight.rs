//! A connection's publishes in flight: sent on before the previous one is answered,
//! answered in the order they came.
//!
//! A session that waited for each publish's reply before reading the next request
//! would publish at most once per round trip — once per paced batch window when its
//! worker batches (`backend::publisher`) — however fast its client sends. So a publish
//! that passes its checks is queued into the worker's next batch at once and waits
//! here, up to [`MAX_IN_FLIGHT`] per connection, while the session reads on. The
//! worker's queue keeps their order, and the session answers them in it: every other
//! request waits until the publishes before it are answered, so a client sees its
//! answers in the order of its requests.
//!
//! Each entry holds the answer it owes ([`Owed`]): a close requested meanwhile (a
//! kick, a ban) sends these answers before the close frame.

use std::collections::VecDeque;

use crate::backend::publisher::{Published, Ticket};
use crate::ws::outbox::Owed;

/// Most publishes of one connection in flight at once; the session reads no further
/// request until the oldest is answered.
pub const MAX_IN_FLIGHT: usize = 32;

/// One publish in flight.
struct Entry {
    /// The request's `id` (raw JSON), echoed in its answer.
    id: Option<Box<[u8]>>,
    /// Its reply, to come.
    reply: Ticket,
    /// The answer owed to the client.
    owed: Owed,
}

/// A connection's publishes in flight, oldest first.
#[derive(Default)]
pub struct InFlight {
    entries: VecDeque<Entry>,
}

/// A publish's reply, ready to be answered: its request id, the reply, and the answer
/// owed (dropped once the answer is queued).
pub struct Answer {
    pub id: Option<Box<[u8]>>,
    pub reply: Published,
    pub owed: Owed,
}

impl InFlight {
    /// Adds a publish sent on, whose answer is owed.
    pub fn push(&mut self, id: Option<&[u8]>, reply: Ticket, owed: Owed) {
        let id = id.map(Box::from);
        self.entries.push_back(Entry { id, reply, owed });
    }

    /// No publish in flight.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// As many in flight as a connection may have: answer the oldest before reading on.
    pub fn is_full(&self) -> bool {
        self.entries.len() >= MAX_IN_FLIGHT
    }

    /// The oldest publish's reply, once it comes; `None` at once when none is in
    /// flight. Cancel-safe: the entry leaves the queue only with its reply.
    pub async fn next(&mut self) -> Option<Answer> {
        let front = self.entries.front_mut()?;
        let reply = (&mut front.reply).await;
        let Entry { id, owed, .. } = self.entries.pop_front()?;
        Some(Answer { id, reply, owed })
    }
}
