//! Random argv against the loaded module: Redis never aborts (`run_id` unchanged) and
//! every failure is a proper error reply.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use roomcast_tests::reply::error_text;
use roomcast_tests::Redis;

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
    "RC.SEND",
    "RC.KICK",
    "RC.THROTTLE",
    "RC.INFO",
];

/// Error codes the module may answer with.
const CODES: &[&str] = &["ERR", "WRONGTYPE", "LIMITED", "BANNED", "TOOMANY"];

fn random_arg(rng: &mut StdRng) -> Vec<u8> {
    match rng.random_range(0..12) {
        0 => Vec::new(),
        1 => (0..rng.random_range(1..40)).map(|_| rng.random()).collect(),
        2 => [
            "lobby",
            "ann",
            "n1",
            "c1",
            "{6.43}lobby",
            "{0.13}",
            "{",
            "{}",
            "{x}y",
        ][rng.random_range(0..9)]
        .into(),
        3 => ["FROM", "CONN", "META", "REASON", "from", "meta"][rng.random_range(0..6)].into(),
        4 => [
            "0",
            "-1",
            "1",
            "60000",
            "9223372036854775807",
            "-9223372036854775808",
            "1e3",
            "99999999999999999999",
        ][rng.random_range(0..8)]
        .into(),
        5 => vec![b'a'; rng.random_range(250..300)],
        6 => ["{\"a\":1}", "[1,2", "null", "\"x\""][rng.random_range(0..4)].into(),
        7 => vec![0u8, b'\r', b'\n', 0xff],
        _ => format!("n{}", rng.random_range(0..4)).into_bytes(),
    }
}

#[test]
fn random_arguments_never_crash_redis() {
    let redis = Redis::start(&["publish-rate", "1000", "ban-after", "5", "ban-ms", "100"]);
    let run_id = redis.run_id();
    let mut c = redis.conn();
    for name in ["lobby", "ann", "{0.13}", "n1"] {
        for node in ["n0", "n1", "n2"] {
            redis
                .cmd(&mut c, &["RC.NODE.LEASE", name, node, "60000"])
                .unwrap();
        }
    }
    let mut rng = StdRng::seed_from_u64(0x5eed_0fc0_ffee);
    let (mut ok, mut failed) = (0u32, 0u32);
    for _batch in 0..40 {
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        for _ in 0..500 {
            let name = COMMANDS[rng.random_range(0..COMMANDS.len())];
            let cmd = pipe.cmd(name);
            for _ in 0..rng.random_range(0..9) {
                cmd.arg(random_arg(&mut rng));
            }
        }
        let replies: Vec<redis::RedisResult<redis::Value>> = pipe.query(&mut c).unwrap();
        for reply in replies {
            match reply {
                Ok(_) => ok += 1,
                Err(e) => {
                    failed += 1;
                    let text = error_text(&e);
                    assert!(
                        CODES.iter().any(|code| text.starts_with(code)),
                        "unexpected error reply {text:?}"
                    );
                }
            }
        }
    }
    assert_eq!(redis.run_id(), run_id, "Redis restarted:\n{}", redis.log());
    assert!(ok > 0 && failed > 0, "ok {ok}, failed {failed}");
    assert!(redis.cmd(&mut c, &["PING"]).is_ok());
}
