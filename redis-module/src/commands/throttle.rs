//! `RC.THROTTLE`: a GCRA rate limiter, reply-compatible with redis-cell's `CL.THROTTLE`,
//! on Redis time, with TTLs rounded up and its effect replicated as `SET … PXAT`.

use redis_module::{Context, RedisResult, RedisString, RedisValue};
use roomcast_common::command::{self, Throttle};
use roomcast_common::gcra::{self, ceil_millis, ceil_seconds, TatStore};

use crate::args::check;
use crate::ops;
use crate::state::layout;

/// A throttle key's TAT in Redis.
struct KeyStore {
    /// Redis time, µs.
    now_us: i64,
    /// Stored TAT, if any.
    tat_us: Option<i64>,
    /// New TAT to store, set when the request is allowed.
    written: Option<i64>,
}

impl TatStore for KeyStore {
    fn now_us(&self) -> i64 {
        self.now_us
    }
    fn tat_us(&self) -> Option<i64> {
        self.tat_us
    }
    fn set_tat_us(&mut self, tat_us: i64) {
        self.written = Some(tat_us);
    }
}

/// `RC.THROTTLE key max_burst count period [quantity]` →
/// `[limited, limit, remaining, retry_after_s, reset_after_s]` (seconds rounded up;
/// `retry_after_s` is -1 when allowed).
pub fn throttle(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    let layout = layout()?;
    let Throttle {
        key,
        quota,
        quantity,
    } = check(command::throttle(&layout.partitioner, &args))?;

    let name = layout.routed(&args, key.partition)?.throttle(key.name);
    let tat_us = ops::get_string(ctx, &name)?
        .and_then(|b| std::str::from_utf8(&b).ok()?.parse::<i64>().ok());
    let now_ms = ops::now_ms();
    let mut store = KeyStore {
        now_us: now_ms.saturating_mul(1000),
        tat_us,
        written: None,
    };
    let decision = gcra::throttle(&mut store, &quota, quantity);
    if let Some(tat) = store.written {
        let expire_at = ceil_millis(tat).max(now_ms + 1);
        ops::set_string(ctx, &name, tat.to_string().as_bytes(), Some(expire_at))?;
    }
    Ok(RedisValue::Array(vec![
        RedisValue::Integer(i64::from(decision.limited)),
        RedisValue::Integer(decision.limit),
        RedisValue::Integer(decision.remaining),
        RedisValue::Integer(decision.retry_after_us.map_or(-1, ceil_seconds)),
        RedisValue::Integer(ceil_seconds(decision.reset_after_us)),
    ]))
}
