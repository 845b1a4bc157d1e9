//! The module's argument parsers (`roomcast_common::command`, which every `RC.*` command
//! runs on its argv before touching Redis) on arbitrary argv.
//!
//! Input: `[layout][argv…]`, arguments separated by 0xFF; `layout` picks 1, 16 or 1024
//! partitions. Parsing must never panic (a panic in the module aborts Redis); an
//! accepted command must hold only checked values; an error must make a printable
//! one-line reply.

#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use roomcast_common::command::{
    self, error_line, ArgError, Command, MAX_BATCH, MAX_HISTORY_COUNT, MAX_LEASE_MS,
    MAX_META_BYTES, MAX_READ_BLOCK_MS, MAX_READ_COUNT, MAX_REASON_BYTES, MAX_THROTTLE_ARG,
};
use roomcast_common::json;
use roomcast_common::names::{check_id, check_name};
use roomcast_common::partition::{Partitioner, Resolved};

fn layouts() -> &'static [Partitioner] {
    static LAYOUTS: OnceLock<Vec<Partitioner>> = OnceLock::new();
    LAYOUTS.get_or_init(|| {
        [1, 16, 1024]
            .into_iter()
            .filter_map(|n| Partitioner::new(n).ok())
            .collect()
    })
}

fn name_ok(p: &Partitioner, r: &Resolved<'_>) {
    assert!(
        check_name(r.name.as_bytes()).is_ok(),
        "bad name {:?}",
        r.name
    );
    assert_eq!(r.partition, p.partition_of(r.name.as_bytes()));
    assert!(r.partition < p.count());
}

fn id_ok(id: &str) {
    assert!(check_id(id.as_bytes()).is_ok(), "bad id {id:?}");
}

fn check(p: &Partitioner, command: &Command<'_>) {
    match command {
        Command::NodeLease(c) => {
            assert!(c.partition < p.count());
            id_ok(c.node);
            assert!((1..=MAX_LEASE_MS).contains(&c.ttl_ms));
        }
        Command::NodeLeaseAll(c) => {
            id_ok(c.node);
            assert!((1..=MAX_LEASE_MS).contains(&c.ttl_ms));
        }
        Command::NodeDown(c) => {
            assert!(c.partition < p.count());
            id_ok(c.node);
        }
        Command::Probe(c) => {
            assert!(c.partition < p.count());
            id_ok(c.node);
            let token = std::str::from_utf8(c.token)
                .ok()
                .and_then(|t| t.parse::<i64>().ok());
            assert!(
                token.is_some_and(|t| t >= 0),
                "bad probe token {:?}",
                c.token
            );
        }
        Command::Connect(c) => {
            name_ok(p, &c.user);
            id_ok(c.node);
            id_ok(c.conn);
            if let Some(meta) = c.meta {
                assert!(meta.len() <= MAX_META_BYTES && json::is_valid(meta.as_bytes()));
            }
        }
        Command::Disconnect(c) => {
            name_ok(p, &c.user);
            id_ok(c.node);
            id_ok(c.conn);
        }
        Command::Conns(r) | Command::Members(r) | Command::Presence(r) => name_ok(p, r),
        Command::Join(c) => {
            name_ok(p, &c.room);
            name_ok(p, &c.user);
            id_ok(c.node);
            id_ok(c.conn);
        }
        Command::Leave(c) => {
            name_ok(p, &c.room);
            id_ok(c.node);
            id_ok(c.conn);
        }
        Command::Publish(c) => {
            name_ok(p, &c.room);
            if let Some(from) = &c.from {
                name_ok(p, from);
            }
            if let Some(conn) = c.conn {
                id_ok(conn);
            }
        }
        Command::PublishBatch(b) => {
            assert!(b.partition < p.count());
            assert!((1..=MAX_BATCH).contains(&b.messages.len()));
            for message in b.messages.iter().flatten() {
                check(p, &Command::Publish(message.clone()));
            }
        }
        Command::Send(c) => {
            name_ok(p, &c.user);
            if let Some(from) = &c.from {
                name_ok(p, from);
            }
        }
        Command::Kick(c) => {
            name_ok(p, &c.user);
            assert!(c.reason.len() <= MAX_REASON_BYTES);
            assert!(!c.reason.chars().any(char::is_control));
        }
        Command::Throttle(c) => {
            name_ok(p, &c.key);
            assert!((0..=MAX_THROTTLE_ARG).contains(&c.quantity));
        }
        Command::History(c) => {
            name_ok(p, &c.room);
            assert!((1..=MAX_HISTORY_COUNT).contains(&c.count));
        }
        Command::Read(c) => {
            assert!(c.partition < p.count());
            id_ok(c.node);
            assert!((1..=MAX_READ_COUNT).contains(&c.count));
            assert!(c
                .block
                .is_none_or(|ms| (0..=MAX_READ_BLOCK_MS).contains(&ms)));
            assert!(!c.streams.is_empty() && c.streams.len() <= p.count() as usize);
            for (k, (part, _)) in c.streams.iter().enumerate() {
                assert!(*part < p.count());
                assert!(
                    c.streams[..k].iter().all(|(seen, _)| seen != part),
                    "named twice"
                );
            }
        }
        Command::Info => {}
    }
}

fuzz_target!(|input: &[u8]| {
    let Some((&layout, rest)) = input.split_first() else {
        return;
    };
    let layouts = layouts();
    let Some(p) = layouts.get(usize::from(layout) % layouts.len().max(1)) else {
        return;
    };
    let argv: Vec<&[u8]> = rest.split(|&b| b == 0xff).collect();
    match command::parse(p, &argv) {
        Ok(parsed) => check(p, &parsed),
        Err(ArgError::Arity) => {}
        Err(e @ (ArgError::Invalid(_) | ArgError::Coded(..))) => {
            let message = e.to_string();
            assert!(!message.is_empty());
            let line = error_line(e.code(), &message);
            assert!(line.bytes().all(|b| (0x20..0x7f).contains(&b)), "{line:?}");
        }
    }
});
