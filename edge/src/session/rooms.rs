//! What a session's room operations run on: the module in Redis, or the in-process
//! floor (`--bench-floor`; `--echo` never gets this far). One type instead of a branch
//! per operation; the session's code is the same for both.

use redis::RedisError;

use crate::backend::publisher::Ticket;
use crate::backend::replies::{History, JoinReply};
use crate::context::Context;
use crate::fanout::floor;
use crate::node::lease::leased;

/// The rooms of one worker.
#[derive(Clone, Copy)]
pub enum Rooms<'a> {
    /// The module: every operation is one module command.
    Module(&'a Context),
    /// The floor: rooms local to the worker, no history, no module limits.
    Floor(&'a Context),
}

impl<'a> Rooms<'a> {
    /// The rooms of worker `ctx`, as its mode says.
    pub fn of(ctx: &'a Context) -> Self {
        if ctx.mode().has_redis() {
            Rooms::Module(ctx)
        } else {
            Rooms::Floor(ctx)
        }
    }

    /// Registers connection `conn` of `user` (needs the node's lease).
    pub async fn connect(self, user: &str, conn: &str) -> Result<(), RedisError> {
        match self {
            Rooms::Module(ctx) => leased(ctx, || ctx.module.connect(user, conn)).await,
            Rooms::Floor(_) => Ok(()),
        }
    }

    /// Removes a closed connection from its rooms and from presence.
    pub async fn disconnect<'r>(
        self,
        user: &str,
        conn: &str,
        rooms: impl IntoIterator<Item = &'r str>,
    ) -> Result<(), RedisError> {
        match self {
            Rooms::Module(ctx) => ctx.module.unregister(user, conn, rooms).await,
            Rooms::Floor(_) => Ok(()),
        }
    }

    /// Joins `room`, replaying what was missed since `since` (needs the node's lease).
    /// The floor has no history: no cut, nothing replayed, nothing recovered.
    pub async fn join(
        self,
        room: &str,
        conn: &str,
        user: &str,
        since: Option<&str>,
    ) -> Result<JoinReply, RedisError> {
        match self {
            Rooms::Module(ctx) => leased(ctx, || ctx.module.join(room, conn, user, since)).await,
            Rooms::Floor(_) => Ok(JoinReply::default()),
        }
    }

    /// Leaves `room`.
    pub async fn leave(self, room: &str, conn: &str) -> Result<(), RedisError> {
        match self {
            Rooms::Module(ctx) => ctx.module.leave(room, conn).await,
            Rooms::Floor(_) => Ok(()),
        }
    }

    /// Publishes `data` to `room` as `from` from connection `conn` (which does not get
    /// it back): the message's offset, if the room keeps history.
    pub async fn publish(
        self,
        room: &str,
        data: &[u8],
        from: &str,
        conn: &str,
    ) -> Result<Option<String>, RedisError> {
        match self {
            Rooms::Module(ctx) => ctx.module.publish(room, data, from, conn).await,
            Rooms::Floor(ctx) => {
                floor::publish(ctx, room, from, conn, data);
                Ok(None)
            }
        }
    }

    /// The same publish queued now, its reply to come with the [`Ticket`], where the
    /// worker batches publishes; `None` where it does not (the floor, batching off),
    /// and then [`Rooms::publish`] runs it.
    pub fn queue_publish(self, room: &str, data: &[u8], from: &str, conn: &str) -> Option<Ticket> {
        match self {
            Rooms::Module(ctx) => ctx.module.queue_publish(room, data, from, conn),
            Rooms::Floor(_) => None,
        }
    }

    /// Sends `data` from `from` to every connection of `user`.
    pub async fn send(self, user: &str, data: &[u8], from: &str) -> Result<(), RedisError> {
        match self {
            Rooms::Module(ctx) => ctx.module.send(user, data, from).await,
            Rooms::Floor(ctx) => {
                floor::direct(ctx, user, from, data);
                Ok(())
            }
        }
    }

    /// The users in `room`.
    pub async fn presence(self, room: &str) -> Result<Vec<String>, RedisError> {
        match self {
            Rooms::Module(ctx) => ctx.module.presence(room).await,
            Rooms::Floor(ctx) => Ok(floor::presence(ctx, room)),
        }
    }

    /// A page of `room`'s history; `Err(reason)` where there is none (the floor).
    pub fn history(
        self,
        room: &'a str,
        since: Option<&'a str>,
        count: u32,
    ) -> Result<impl std::future::Future<Output = Result<History, RedisError>> + 'a, &'static str>
    {
        match self {
            Rooms::Module(ctx) => Ok(ctx.module.history(room, since, count)),
            Rooms::Floor(_) => Err(floor::NOT_AVAILABLE),
        }
    }
}
