//! Inbox stream entries: the one format the module writes and the edge reads.
//!
//! Every entry is a flat list of field/value pairs. The first field is always
//! [`KIND`]; the other fields depend on the kind:
//!
//! | kind | fields (in this order) | edge delivers |
//! |---|---|---|
//! | `msg` | `room`, `from`, `skip`, `offset`, `data` | `message` to local members of `room`, except connection `skip` |
//! | `direct` | `user`, `from`, `data` | `direct` to every local connection of `user` |
//! | `join` | `room`, `user`, `skip` | `joined` to local members of `room`, except `skip` |
//! | `leave` | `room`, `user` | `left` to local members of `room` |
//! | `kick` | `user`, `conn`, `reason` | closes (1008, `reason`) `conn`, or every local connection of `user` when `conn` is empty |
//!
//! Empty values mean "absent" (`from` of a backend publish, `skip` with no sender
//! connection, `offset` while history is off). `data` holds the payload bytes exactly
//! as published: the edge splices them into its frame without re-serializing.

/// Field holding the entry kind.
pub const KIND: &str = "kind";
/// Field: room name (plain, without tag).
pub const ROOM: &str = "room";
/// Field: the user a direct message, presence event or kick is about.
pub const USER: &str = "user";
/// Field: the sending user (empty for backend publishes).
pub const FROM: &str = "from";
/// Field: connection that must not receive the entry (the publisher's own).
pub const SKIP: &str = "skip";
/// Field: room history offset (empty while history is off).
pub const OFFSET: &str = "offset";
/// Field: payload bytes.
pub const DATA: &str = "data";
/// Field: the one connection a kick closes (empty: all of the user's connections).
pub const CONN: &str = "conn";
/// Field: human-readable reason of a kick (sent as the close reason).
pub const REASON: &str = "reason";

/// The kinds of inbox entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A room message.
    Message,
    /// A direct message to one user.
    Direct,
    /// A user's first connection joined a room.
    Join,
    /// A user's last connection left a room.
    Leave,
    /// Close connections of a user.
    Kick,
}

impl Kind {
    /// The value stored in the [`KIND`] field.
    pub const fn as_str(self) -> &'static str {
        match self {
            Kind::Message => "msg",
            Kind::Direct => "direct",
            Kind::Join => "join",
            Kind::Leave => "leave",
            Kind::Kick => "kick",
        }
    }

    /// Parses the value of a [`KIND`] field.
    pub fn parse(value: &[u8]) -> Option<Kind> {
        match value {
            b"msg" => Some(Kind::Message),
            b"direct" => Some(Kind::Direct),
            b"join" => Some(Kind::Join),
            b"leave" => Some(Kind::Leave),
            b"kick" => Some(Kind::Kick),
            _ => None,
        }
    }

    /// The fields that follow [`KIND`] for this kind, in order.
    pub const fn fields(self) -> &'static [&'static str] {
        match self {
            Kind::Message => &[ROOM, FROM, SKIP, OFFSET, DATA],
            Kind::Direct => &[USER, FROM, DATA],
            Kind::Join => &[ROOM, USER, SKIP],
            Kind::Leave => &[ROOM, USER],
            Kind::Kick => &[USER, CONN, REASON],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip() {
        for kind in [
            Kind::Message,
            Kind::Direct,
            Kind::Join,
            Kind::Leave,
            Kind::Kick,
        ] {
            assert_eq!(Kind::parse(kind.as_str().as_bytes()), Some(kind));
            assert!(!kind.fields().contains(&KIND));
        }
        assert_eq!(Kind::parse(b"nope"), None);
    }

    #[test]
    fn messages_end_with_the_payload() {
        assert_eq!(Kind::Message.fields().last(), Some(&DATA));
        assert_eq!(Kind::Direct.fields().last(), Some(&DATA));
    }
}
