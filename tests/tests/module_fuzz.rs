//! Random argv against the loaded module (RELIABILITY.md row 15): Redis never aborts
//! (`run_id` unchanged) and every failure is a proper error reply.
//!
//! By default 100,000 commands (pipelined, a few seconds). The long run fires as many
//! as `ROOMCAST_FUZZ_ARGV` says, with another seed from `ROOMCAST_FUZZ_SEED`:
//!
//! ```sh
//! ROOMCAST_FUZZ_ARGV=1000000 cargo test -p roomcast-tests --test module_fuzz -- --nocapture
//! ```

use std::collections::BTreeSet;
use std::time::Instant;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use roomcast_common::codes::Code;
use roomcast_tests::reply::error_text;
use roomcast_tests::roomcast::module_commands;
use roomcast_tests::Redis;

/// Every command the module registers (checked against `COMMAND LIST` below).
const COMMANDS: &[&str] = &[
    "RC.NODE.LEASE",
    "RC.NODE.DOWN",
    "RC.CONNECT",
    "RC.DISCONNECT",
    "RC.CONNS",
    "RC.JOIN",
    "RC.LEAVE",
    "RC.MEMBERS",
    "RC.PRESENCE",
    "RC.PUBLISH",
    "RC.PUBLISHM",
    "RC.SEND",
    "RC.KICK",
    "RC.THROTTLE",
    "RC.HISTORY",
    "RC.READ",
    "RC.PROBE",
    "RC.INFO",
];

/// Whether an error reply starts with a code the module may answer with: `ERR`,
/// Redis's `WRONGTYPE`, or one of the module's own (`roomcast_common::codes`), followed
/// by its message.
fn known_code(text: &str) -> bool {
    let Some((code, message)) = text.split_once(' ') else {
        return false;
    };
    !message.is_empty() && (["ERR", "WRONGTYPE"].contains(&code) || Code::parse(code).is_some())
}

/// Commands fired by default; `ROOMCAST_FUZZ_ARGV` overrides.
const DEFAULT_ARGV: usize = 100_000;
/// Commands per pipeline.
const BATCH: usize = 2_000;
/// Most arguments after the command name.
const MAX_ARITY: usize = 12;

fn pick<'a>(rng: &mut StdRng, items: &[&'a str]) -> &'a str {
    items[rng.random_range(0..items.len())]
}

/// Any argument at all: empty, binary, invalid UTF-8, huge or odd integers, odd names.
fn random_arg(rng: &mut StdRng) -> Vec<u8> {
    match rng.random_range(0..16) {
        0 => Vec::new(),
        1 => (0..rng.random_range(1..40)).map(|_| rng.random()).collect(),
        2 => pick(
            rng,
            &[
                "lobby",
                "ann",
                "n1",
                "c1",
                "{6.43}lobby",
                "{0.13}",
                "{",
                "{}",
                "{x}y",
                "{999.999}x",
                "}",
                "lob by",
                "a:b",
            ],
        )
        .into(),
        3 => pick(
            rng,
            &[
                "FROM", "CONN", "META", "REASON", "SINCE", "COUNT", "from", "meta", "since",
                "count", "$",
            ],
        )
        .into(),
        4 => pick(
            rng,
            &[
                "0",
                "-1",
                "1",
                "60000",
                "86400001",
                "9223372036854775807",
                "-9223372036854775808",
                "9223372036854775808",
                "18446744073709551616",
                "99999999999999999999",
                "1e3",
                "1e400",
                "0x10",
                "+5",
                " 5",
                "5 ",
                "-0",
                "nan",
                "inf",
                "1099511627776",
            ],
        )
        .into(),
        5 => vec![b'a'; rng.random_range(250..300)],
        6 => pick(
            rng,
            &["{\"a\":1}", "[1,2", "null", "\"x\"", "{}", "[]", "{\"a\":"],
        )
        .into(),
        7 => vec![0u8, b'\r', b'\n', 0xff],
        // Invalid UTF-8: stray continuation, overlong, surrogate, truncated sequence.
        8 => pick_bytes(
            rng,
            &[
                &[0xc3, 0x28],
                &[0xc0, 0xaf],
                &[0xed, 0xa0, 0x80],
                &[0xe2, 0x82],
                &[0xf4, 0x90, 0x80, 0x80],
                &[b'r', 0xff, b'm'],
            ],
        ),
        // Offsets, valid and not.
        9 => pick(
            rng,
            &[
                "1:1",
                "0:0",
                "abc:1",
                "1:-1",
                "1:",
                ":1",
                "18446744073709551616:1",
                "1:18446744073709551616",
                "1:2:3",
            ],
        )
        .into(),
        // Now and then a payload around max-payload-bytes (64 KiB).
        10 if rng.random_range(0..40) == 0 => vec![b'x'; rng.random_range(65_000..66_000)],
        11 => "z\u{e9}\u{1f600}".into(),
        _ => format!("n{}", rng.random_range(0..4)).into_bytes(),
    }
}

fn pick_bytes(rng: &mut StdRng, items: &[&[u8]]) -> Vec<u8> {
    items[rng.random_range(0..items.len())].to_vec()
}

/// A plausible argument for a slot, mutated one time in five.
fn slot(rng: &mut StdRng, kind: &str) -> Vec<u8> {
    if rng.random_range(0..5) == 0 {
        return random_arg(rng);
    }
    match kind {
        "room" => pick(rng, &["lobby", "r1", "r2", "{6.43}lobby"]).into(),
        "user" => format!("u{}", rng.random_range(0..6)).into_bytes(),
        "node" => format!("n{}", rng.random_range(0..4)).into_bytes(),
        "conn" => format!("c{}", rng.random_range(0..8)).into_bytes(),
        "ttl" => pick(rng, &["1", "50", "60000", "86400000"]).into(),
        "data" => pick(rng, &["{\"t\":1}", "hi", ""]).into(),
        "json" => pick(rng, &["{\"app\":\"web\"}", "[1]", "1"]).into(),
        "int" => rng.random_range(0..100).to_string().into_bytes(),
        "offset" => format!("{}:{}", rng.random_range(0..3), rng.random_range(0..5)).into_bytes(),
        _ => random_arg(rng),
    }
}

/// A structured argv for `name`: the right slots, optional keywords, sometimes mutated.
fn structured(rng: &mut StdRng, name: &str) -> Vec<Vec<u8>> {
    let (fixed, options): (&[&str], &[(&str, &str)]) = match name {
        // Both forms: one partition, or every partition (no partition argument).
        "RC.NODE.LEASE" if rng.random_bool(0.3) => (&["node", "ttl"], &[]),
        "RC.NODE.LEASE" => (&["room", "node", "ttl"], &[]),
        "RC.NODE.DOWN" => (&["room", "node"], &[]),
        "RC.CONNECT" => (&["user", "node", "conn"], &[("META", "json")]),
        "RC.DISCONNECT" => (&["user", "node", "conn"], &[]),
        "RC.CONNS" | "RC.KICK" => (&["user"], &[("REASON", "data")]),
        "RC.JOIN" => (&["room", "node", "conn", "user"], &[("SINCE", "offset")]),
        "RC.LEAVE" => (&["room", "node", "conn"], &[]),
        "RC.MEMBERS" | "RC.PRESENCE" => (&["room"], &[]),
        "RC.PUBLISH" => (&["room", "data"], &[("FROM", "user"), ("CONN", "conn")]),
        // The partition, then the count and its groups (added below).
        "RC.PUBLISHM" => (&["room"], &[]),
        "RC.SEND" => (&["user", "data"], &[("FROM", "user")]),
        "RC.THROTTLE" => (&["user", "int", "int", "int", "int"], &[]),
        "RC.HISTORY" => (&["room"], &[("SINCE", "offset"), ("COUNT", "int")]),
        // Never BLOCK: a read that blocks would hold up the rest of the pipeline.
        "RC.READ" => (&["room", "node"], &[("COUNT", "int"), ("STREAMS", "room")]),
        _ => (&[], &[]),
    };
    let mut argv: Vec<Vec<u8>> = fixed.iter().map(|kind| slot(rng, kind)).collect();
    for (keyword, kind) in options {
        if rng.random_bool(0.4) {
            argv.push(keyword.as_bytes().to_vec());
            argv.push(slot(rng, kind));
        }
    }
    if name == "RC.PUBLISHM" {
        let count = rng.random_range(1..=2usize);
        argv.push(count.to_string().into_bytes());
        for _ in 0..count {
            argv.push(slot(rng, "room"));
            argv.push(slot(rng, "data"));
            for kind in ["user", "conn"] {
                argv.push(if rng.random_bool(0.5) {
                    slot(rng, kind)
                } else {
                    Vec::new()
                });
            }
        }
    }
    if name == "RC.READ" && argv.iter().any(|a| a == b"STREAMS") {
        argv.push(if rng.random_bool(0.5) {
            b"0-0".to_vec()
        } else {
            slot(rng, "int")
        });
    }
    // Sometimes one argument too many or too few.
    match rng.random_range(0..10) {
        0 => argv.push(random_arg(rng)),
        1 => {
            argv.pop();
        }
        _ => {}
    }
    argv.truncate(MAX_ARITY);
    argv
}

/// 0–12 arguments of anything.
fn random_argv(rng: &mut StdRng) -> Vec<Vec<u8>> {
    (0..rng.random_range(0..=MAX_ARITY))
        .map(|_| random_arg(rng))
        .collect()
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(default)
}

#[test]
fn random_arguments_never_crash_redis() {
    let total = env_number("ROOMCAST_FUZZ_ARGV", DEFAULT_ARGV as u64) as usize;
    let seed = env_number("ROOMCAST_FUZZ_SEED", 0x5eed_0fc0_ffee);
    let redis = Redis::start(&[
        "publish-rate",
        "1000",
        "ban-after",
        "5",
        "ban-ms",
        "100",
        "history-len",
        "20",
        "max-conns-per-user",
        "4",
    ]);
    let run_id = redis.run_id();
    let mut c = redis.conn();

    // The fuzzer covers every command the module registers.
    let registered: BTreeSet<String> = module_commands(&mut c).into_iter().collect();
    let fuzzed: BTreeSet<String> = COMMANDS.iter().map(|c| c.to_lowercase()).collect();
    let missing: Vec<_> = registered.difference(&fuzzed).collect();
    assert!(
        missing.is_empty(),
        "commands the fuzzer misses: {missing:?}"
    );

    for name in ["lobby", "ann", "{0.13}", "n1", "u0", "u3", "r1", "r2"] {
        for node in ["n0", "n1", "n2"] {
            redis
                .cmd(&mut c, &["RC.NODE.LEASE", name, node, "60000"])
                .unwrap();
        }
    }
    let mut rng = StdRng::seed_from_u64(seed);
    let started = Instant::now();
    let (mut ok, mut failed, mut sent) = (0usize, 0usize, 0usize);
    let mut per_command = vec![0usize; COMMANDS.len()];
    while sent < total {
        let n = BATCH.min(total - sent);
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        for _ in 0..n {
            let which = rng.random_range(0..COMMANDS.len());
            per_command[which] += 1;
            let name = COMMANDS[which];
            let argv = if rng.random_bool(0.5) {
                structured(&mut rng, name)
            } else {
                random_argv(&mut rng)
            };
            let cmd = pipe.cmd(name);
            for arg in argv {
                cmd.arg(arg);
            }
        }
        let replies: Vec<redis::RedisResult<redis::Value>> = pipe
            .query(&mut c)
            .unwrap_or_else(|e| panic!("pipeline failed ({e}):\n{}", redis.log()));
        assert_eq!(replies.len(), n, "a reply is missing");
        for reply in replies {
            match reply {
                Ok(_) => ok += 1,
                Err(e) => {
                    failed += 1;
                    let text = error_text(&e);
                    assert!(known_code(&text), "unexpected error reply {text:?}");
                }
            }
        }
        sent += n;
    }
    assert_eq!(redis.run_id(), run_id, "Redis restarted:\n{}", redis.log());
    assert!(redis.cmd(&mut c, &["PING"]).is_ok());
    println!(
        "row 15: {sent} random argv (arity 0-{MAX_ARITY}, seed {seed:#x}) over {} commands \
         in {:.1} s: {ok} ok, {failed} error replies (100% with a known code), \
         run_id unchanged; per command {:?}",
        COMMANDS.len(),
        started.elapsed().as_secs_f64(),
        COMMANDS.iter().zip(&per_command).collect::<Vec<_>>()
    );
    assert!(
        sent >= total && ok > 0 && failed > 0,
        "ok {ok}, failed {failed}"
    );
}
