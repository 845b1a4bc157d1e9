//! A worker's local index: its connections, and which of them are in which room or
//! belong to which user. The module holds the same facts for the whole deployment; this
//! copy lets fan-out find local recipients without asking Redis.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::rc::Rc;
use std::time::Instant;

use bytes::Bytes;
use roomcast_common::offset::Offset;

use crate::context::cut::after_cut;
use crate::ws::frame::close;
use crate::ws::outbox::Outbox;

/// One local connection.
pub struct Conn {
    /// Connection id as registered in the module (`<node>.<seq>`).
    pub id: Rc<str>,
    /// The authenticated user.
    pub user: Rc<str>,
    /// Rooms joined.
    pub rooms: HashSet<String>,
    /// Outgoing queue.
    pub out: Rc<Outbox>,
    /// When its token expires (`None`: never).
    pub expires: Option<Instant>,
}

/// The index.
#[derive(Default)]
pub struct Local {
    /// Connections by sequence number.
    pub conns: HashMap<u64, Conn>,
    /// Room → sequence numbers of local members.
    pub rooms: HashMap<String, Vec<u64>>,
    /// User → sequence numbers of its local connections.
    pub users: HashMap<String, Vec<u64>>,
    /// Joins waiting for the module's reply: room → connection → room frames that
    /// arrived meanwhile, with their offsets (empty for presence events). They are
    /// sent after the join's replay and ack, so the client sees replay → ack → live.
    pub joining: HashMap<String, HashMap<u64, Vec<(String, Bytes)>>>,
    /// Recent joins: room → connection → the join's cut. Messages at or before it were
    /// replayed (or predate the join) and may still be in flight to this worker through
    /// other members' routing; they are skipped until a later message passes the cut
    /// (a room's messages reach a node in order). Keyed by room first so that fan-out
    /// looks a room up once per message, without allocating.
    pub floors: HashMap<String, HashMap<u64, Offset>>,
    /// Connections whose token expires, by expiry (see [`Local::expire`]).
    pub expiries: BTreeSet<(Instant, u64)>,
}

/// Removes `seq` from a room → connection map, dropping the room when it empties.
fn remove_nested<V>(map: &mut HashMap<String, HashMap<u64, V>>, room: &str, seq: u64) -> Option<V> {
    let inner = map.get_mut(room)?;
    let value = inner.remove(&seq);
    if inner.is_empty() {
        map.remove(room);
    }
    value
}

fn remove_seq(map: &mut HashMap<String, Vec<u64>>, key: &str, seq: u64) {
    if let Some(list) = map.get_mut(key) {
        list.retain(|s| *s != seq);
        if list.is_empty() {
            map.remove(key);
        }
    }
}

impl Local {
    /// Adds a connection.
    pub fn add_conn(&mut self, seq: u64, conn: Conn) {
        self.users
            .entry(conn.user.to_string())
            .or_default()
            .push(seq);
        if let Some(at) = conn.expires {
            self.expiries.insert((at, seq));
        }
        self.conns.insert(seq, conn);
    }

    /// Closes (1008) every connection whose token expired by `now`. The inbox reader
    /// calls it before each batch it delivers: a connection's own expiry timer may fire
    /// a little late, and nothing published after the expiry may reach it meanwhile.
    pub fn expire(&mut self, now: Instant) {
        while let Some(&(at, seq)) = self.expiries.first() {
            if at > now {
                break;
            }
            self.expiries.pop_first();
            if let Some(conn) = self.conns.get(&seq) {
                conn.out.close(close::POLICY, "token expired");
            }
        }
    }

    /// Removes a connection and its memberships; returns it.
    pub fn remove_conn(&mut self, seq: u64) -> Option<Conn> {
        let conn = self.conns.remove(&seq)?;
        if let Some(at) = conn.expires {
            self.expiries.remove(&(at, seq));
        }
        for room in &conn.rooms {
            remove_seq(&mut self.rooms, room, seq);
            remove_nested(&mut self.joining, room, seq);
            remove_nested(&mut self.floors, room, seq);
        }
        remove_seq(&mut self.users, &conn.user, seq);
        Some(conn)
    }

    /// Adds a membership; false when already a member or the connection is unknown.
    pub fn join(&mut self, seq: u64, room: &str) -> bool {
        let Some(conn) = self.conns.get_mut(&seq) else {
            return false;
        };
        if !conn.rooms.insert(room.to_string()) {
            return false;
        }
        self.rooms.entry(room.to_string()).or_default().push(seq);
        true
    }

    /// Removes a membership; false when it was not a member.
    pub fn leave(&mut self, seq: u64, room: &str) -> bool {
        let Some(conn) = self.conns.get_mut(&seq) else {
            return false;
        };
        if !conn.rooms.remove(room) {
            return false;
        }
        remove_seq(&mut self.rooms, room, seq);
        remove_nested(&mut self.joining, room, seq);
        remove_nested(&mut self.floors, room, seq);
        true
    }

    /// Starts holding room frames for connection `seq` while its join is in flight.
    pub fn hold(&mut self, seq: u64, room: &str) {
        self.joining
            .entry(room.to_string())
            .or_default()
            .insert(seq, Vec::new());
    }

    /// Ends the hold: returns the held frames that come after the join's cut (see
    /// [`after_cut`]; all of them without a cut), and records the cut as the floor.
    pub fn release(&mut self, seq: u64, room: &str, cut: Option<Offset>) -> Vec<Bytes> {
        let held = remove_nested(&mut self.joining, room, seq).unwrap_or_default();
        let Some(cut) = cut else {
            return held.into_iter().map(|(_, frame)| frame).collect();
        };
        let after: Vec<Bytes> = held
            .into_iter()
            .filter(|(offset, _)| after_cut(Offset::parse(offset).as_ref(), &cut))
            .map(|(_, frame)| frame)
            .collect();
        self.floors
            .entry(room.to_string())
            .or_default()
            .insert(seq, cut);
        after
    }

    /// Hands a room frame (with its offset; empty for presence events) to `push` for
    /// every local member except `skip`. Members whose join is in flight get it held
    /// (see [`Local::hold`]); members with a floor get only messages past it (see
    /// [`after_cut`]); the first message past a floor removes it.
    pub fn send_to_room(
        &mut self,
        room: &str,
        skip: Option<u64>,
        offset: &str,
        frame: &Bytes,
        mut push: impl FnMut(&Outbox, Bytes),
    ) {
        let Some(seqs) = self.rooms.get(room) else {
            return;
        };
        let mut held = self.joining.get_mut(room);
        let mut floors = self.floors.get_mut(room);
        // Parsed only while some recent join in this room still has a floor.
        let parsed = floors.as_ref().and_then(|_| Offset::parse(offset));
        for seq in seqs {
            if Some(*seq) == skip {
                continue;
            }
            if let Some(frames) = held.as_mut().and_then(|h| h.get_mut(seq)) {
                frames.push((offset.to_string(), frame.clone()));
                continue;
            }
            if let (Some(message), Some(floors)) = (&parsed, floors.as_mut()) {
                if let Some(floor) = floors.get(seq) {
                    if !after_cut(Some(message), floor) {
                        continue;
                    }
                    floors.remove(seq);
                }
            }
            if let Some(conn) = self.conns.get(seq) {
                push(&conn.out, frame.clone());
            }
        }
        if floors.is_some_and(|f| f.is_empty()) {
            self.floors.remove(room);
        }
    }

    /// Whether connection `seq` is in `room`.
    pub fn is_member(&self, seq: u64, room: &str) -> bool {
        self.conns.get(&seq).is_some_and(|c| c.rooms.contains(room))
    }

    /// Number of rooms connection `seq` is in.
    pub fn room_count(&self, seq: u64) -> usize {
        self.conns.get(&seq).map_or(0, |c| c.rooms.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(user: &str) -> Conn {
        Conn {
            id: Rc::from("n.1"),
            user: Rc::from(user),
            rooms: HashSet::new(),
            out: Rc::new(Outbox::new(1024)),
            expires: None,
        }
    }

    #[test]
    fn expired_connections_are_closed_before_delivery() {
        let mut local = Local::default();
        let now = Instant::now();
        let mut soon = conn("ann");
        soon.expires = Some(now + std::time::Duration::from_secs(1));
        let mut gone = conn("bob");
        gone.expires = Some(now);
        local.add_conn(1, soon);
        local.add_conn(2, gone);
        local.add_conn(3, conn("cat"));
        local.expire(now);
        assert!(!local.conns[&1].out.is_closing());
        assert!(local.conns[&2].out.is_closing());
        assert!(!local.conns[&3].out.is_closing());
        local.remove_conn(1);
        assert!(local.expiries.is_empty());
    }

    #[test]
    fn index_tracks_rooms_and_users() {
        let mut local = Local::default();
        local.add_conn(1, conn("ann"));
        local.add_conn(2, conn("ann"));
        assert!(local.join(1, "lobby"));
        assert!(!local.join(1, "lobby"));
        assert!(local.join(2, "lobby"));
        assert_eq!(local.rooms["lobby"], [1, 2]);
        assert!(local.leave(1, "lobby"));
        assert!(!local.is_member(1, "lobby"));
        assert_eq!(local.users["ann"], [1, 2]);
        local.remove_conn(2);
        assert!(!local.rooms.contains_key("lobby"));
        assert_eq!(local.users["ann"], [1]);
        local.remove_conn(1);
        assert!(local.users.is_empty());
    }

    /// The connections (by their outbox) a room frame is pushed to, with the frame.
    fn send(local: &mut Local, offset: &str, frame: &'static str) -> Vec<(u64, String)> {
        let outs: Vec<(u64, *const Outbox)> = local
            .conns
            .iter()
            .map(|(seq, c)| (*seq, Rc::as_ptr(&c.out)))
            .collect();
        let mut got = Vec::new();
        let frame = Bytes::from_static(frame.as_bytes());
        local.send_to_room("lobby", None, offset, &frame, |out, f| {
            let seq = outs
                .iter()
                .find(|(_, o)| std::ptr::eq(*o, out))
                .map(|(s, _)| *s);
            got.push((seq.unwrap_or(0), String::from_utf8_lossy(&f).into_owned()));
        });
        got.sort();
        got
    }

    #[test]
    fn a_join_holds_room_frames_and_skips_what_its_replay_covered() {
        let mut local = Local::default();
        local.add_conn(1, conn("ann"));
        local.add_conn(2, conn("bob"));
        local.join(1, "lobby");
        local.join(2, "lobby");
        local.hold(2, "lobby");
        assert_eq!(send(&mut local, "ab:5", "m5"), [(1, "m5".into())]);
        assert_eq!(send(&mut local, "", "joined"), [(1, "joined".into())]);
        assert_eq!(send(&mut local, "ab:6", "m6"), [(1, "m6".into())]);
        // The replay reached ab:5: of what was held, ab:5 is dropped.
        let released = local.release(2, "lobby", Offset::parse("ab:5"));
        assert_eq!(released, [Bytes::from("joined"), Bytes::from("m6")]);
        // Still in flight through other routes: ab:4 was covered, ab:7 was not.
        assert_eq!(send(&mut local, "ab:4", "m4"), [(1, "m4".into())]);
        assert!(local.floors.contains_key("lobby"));
        let both = [(1, "m7".to_string()), (2, "m7".to_string())];
        assert_eq!(send(&mut local, "ab:7", "m7"), both);
        assert!(
            !local.floors.contains_key("lobby"),
            "the floor is gone once passed"
        );
        // Without a cut everything held is released.
        local.hold(1, "lobby");
        send(&mut local, "ab:8", "m8");
        assert_eq!(local.release(1, "lobby", None), [Bytes::from("m8")]);
    }
}
