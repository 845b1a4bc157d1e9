//! GCRA — the generic cell rate algorithm — behind `RC.THROTTLE` and the publish policy.
//!
//! The whole state of a limiter is one number, the *theoretical arrival time* (TAT):
//! the moment at which the limiter would be empty again. A request of `quantity` cells
//! pushes the TAT forward by `quantity × emission_interval`; it is allowed when the new
//! TAT is no further than `delay_variation_tolerance = emission_interval × (burst + 1)`
//! ahead of now. This is the algorithm of redis-cell's `CL.THROTTLE`, and the replies
//! are compatible with it; time is in microseconds and comes from the [`TatStore`], so
//! the math is tested here without Redis and the module supplies Redis time.

/// Where a limiter's TAT lives and what time it is there.
pub trait TatStore {
    /// Current time in microseconds.
    fn now_us(&self) -> i64;
    /// The stored TAT, if any (absent means "never used or expired").
    fn tat_us(&self) -> Option<i64>;
    /// Stores a new TAT; the state may be forgotten once `tat_us` has passed.
    fn set_tat_us(&mut self, tat_us: i64);
}

/// A store held in memory with a clock driven by hand: for tests and benchmarks of the
/// math (the module's store reads Redis time and a string key instead).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Memory {
    /// Current time, µs.
    pub now: i64,
    /// Stored TAT, µs.
    pub tat: Option<i64>,
}

impl TatStore for Memory {
    fn now_us(&self) -> i64 {
        self.now
    }
    fn tat_us(&self) -> Option<i64> {
        self.tat
    }
    fn set_tat_us(&mut self, tat_us: i64) {
        self.tat = Some(tat_us);
    }
}

/// A rate: `burst + 1` cells at once, then one cell per `emission_interval_us`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    /// Time between two cells at the sustained rate, in microseconds (≥ 1).
    emission_interval_us: i64,
    /// Extra cells allowed in a burst (≥ 0).
    max_burst: i64,
}

/// The outcome of one request, with everything `CL.THROTTLE` replies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// The request was refused.
    pub limited: bool,
    /// Total cells of the quota (`max_burst + 1`).
    pub limit: i64,
    /// Cells still available right now.
    pub remaining: i64,
    /// When limited: microseconds until the same request would be allowed; `None` when
    /// allowed, or when the request can never fit the quota.
    pub retry_after_us: Option<i64>,
    /// Microseconds until the limiter is full again.
    pub reset_after_us: i64,
}

const MICROS_PER_SECOND: i64 = 1_000_000;

impl Quota {
    /// `count` cells per `period_s` seconds, plus `max_burst` extra cells at once.
    pub fn per_period(max_burst: i64, count: i64, period_s: i64) -> Result<Self, String> {
        if max_burst < 0 {
            return Err("max_burst must be 0 or more".into());
        }
        if count <= 0 {
            return Err("count must be 1 or more".into());
        }
        if period_s <= 0 {
            return Err("period must be 1 second or more".into());
        }
        let period_us = period_s
            .checked_mul(MICROS_PER_SECOND)
            .ok_or_else(|| "period is too long".to_string())?;
        let emission_interval_us = period_us / count;
        if emission_interval_us == 0 {
            return Err("rate is too high: at most one cell per microsecond".into());
        }
        Ok(Self {
            emission_interval_us,
            max_burst,
        })
    }

    /// `rate` cells per second with `burst` extra cells (the publish policy).
    pub fn per_second(rate: i64, burst: i64) -> Result<Self, String> {
        Self::per_period(burst, rate, 1)
    }

    /// Total cells (`max_burst + 1`).
    pub fn limit(&self) -> i64 {
        self.max_burst.saturating_add(1)
    }

    /// How far ahead of now the TAT may run.
    fn delay_variation_tolerance(&self) -> i64 {
        self.emission_interval_us.saturating_mul(self.limit())
    }
}

/// Asks for `quantity` cells (0 only inspects). Updates the store when allowed.
pub fn throttle(store: &mut impl TatStore, quota: &Quota, quantity: i64) -> Decision {
    let now = store.now_us();
    let tolerance = quota.delay_variation_tolerance();
    let interval = quota.emission_interval_us;
    let increment = interval.saturating_mul(quantity.max(0));
    let tat = store.tat_us().map_or(now, |tat| tat.max(now));
    let new_tat = tat.saturating_add(increment);
    let allow_at = new_tat.saturating_sub(tolerance);

    let (limited, ttl, retry_after_us) = if allow_at > now {
        let retry = (increment <= tolerance).then_some(allow_at - now);
        (true, tat - now, retry)
    } else {
        store.set_tat_us(new_tat);
        (false, new_tat - now, None)
    };

    let next = tolerance - ttl;
    let remaining = if next > -interval { next / interval } else { 0 };
    Decision {
        limited,
        limit: quota.limit(),
        remaining: remaining.max(0),
        retry_after_us,
        reset_after_us: ttl,
    }
}

/// Rounds microseconds up to whole seconds (redis-cell reports seconds).
pub fn ceil_seconds(us: i64) -> i64 {
    ceil_div(us, MICROS_PER_SECOND)
}

/// Rounds microseconds up to whole milliseconds.
pub fn ceil_millis(us: i64) -> i64 {
    ceil_div(us, 1000)
}

fn ceil_div(value: i64, by: i64) -> i64 {
    let q = value / by;
    if value % by > 0 {
        q + 1
    } else {
        q
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fresh() -> Memory {
        Memory {
            now: 1_700_000_000_000_000,
            tat: None,
        }
    }

    #[test]
    fn fresh_key_matches_the_redis_cell_example() {
        // CL.THROTTLE user123 15 30 60 → 0 16 15 -1 2
        let quota = Quota::per_period(15, 30, 60).unwrap();
        let d = throttle(&mut fresh(), &quota, 1);
        assert!(!d.limited);
        assert_eq!(d.limit, 16);
        assert_eq!(d.remaining, 15);
        assert_eq!(d.retry_after_us, None);
        assert_eq!(ceil_seconds(d.reset_after_us), 2);
    }

    #[test]
    fn burst_is_used_up_then_requests_are_limited() {
        let quota = Quota::per_period(4, 1, 1).unwrap(); // 5 at once, then 1/s
        let mut store = fresh();
        for left in (0..5).rev() {
            let d = throttle(&mut store, &quota, 1);
            assert!(!d.limited);
            assert_eq!(d.remaining, left);
        }
        let d = throttle(&mut store, &quota, 1);
        assert!(d.limited);
        assert_eq!(d.remaining, 0);
        assert_eq!(d.retry_after_us, Some(1_000_000));
        // A limited request does not move the TAT.
        let before = store.tat;
        throttle(&mut store, &quota, 1);
        assert_eq!(store.tat, before);
    }

    #[test]
    fn the_sustained_rate_refills_over_time() {
        let quota = Quota::per_second(10, 0).unwrap(); // one per 100 ms
        let mut store = fresh();
        assert!(!throttle(&mut store, &quota, 1).limited);
        let d = throttle(&mut store, &quota, 1);
        assert!(d.limited);
        assert_eq!(d.retry_after_us, Some(100_000));
        store.now += 100_000;
        assert!(!throttle(&mut store, &quota, 1).limited);
    }

    #[test]
    fn an_old_tat_counts_as_empty() {
        let quota = Quota::per_period(15, 30, 60).unwrap();
        let mut store = fresh();
        store.tat = Some(store.now - 3_600_000_000);
        assert_eq!(throttle(&mut store, &quota, 1).remaining, 15);
    }

    #[test]
    fn requests_larger_than_the_quota_never_fit() {
        let quota = Quota::per_period(2, 1, 1).unwrap();
        let d = throttle(&mut fresh(), &quota, 10);
        assert!(d.limited);
        assert_eq!(d.retry_after_us, None);
    }

    #[test]
    fn quantity_zero_only_inspects() {
        let quota = Quota::per_period(3, 1, 1).unwrap();
        let mut store = fresh();
        let d = throttle(&mut store, &quota, 0);
        assert!(!d.limited);
        assert_eq!(d.remaining, 4);
    }

    #[test]
    fn bad_quotas_are_refused() {
        assert!(Quota::per_period(-1, 1, 1).is_err());
        assert!(Quota::per_period(0, 0, 1).is_err());
        assert!(Quota::per_period(0, 1, 0).is_err());
        assert!(Quota::per_period(0, 2_000_000, 1).is_err());
        assert!(Quota::per_period(0, 1, i64::MAX).is_err());
        // Huge bursts saturate instead of overflowing.
        // (Debug builds panic on overflow, so merely running this is the check.)
        let q = Quota::per_period(i64::MAX, 1, 1).unwrap();
        let d = throttle(&mut fresh(), &q, i64::MAX);
        assert_eq!(d.limit, i64::MAX);
    }

    #[test]
    fn rounding_goes_up() {
        assert_eq!(ceil_seconds(1), 1);
        assert_eq!(ceil_seconds(1_000_000), 1);
        assert_eq!(ceil_seconds(1_000_001), 2);
        assert_eq!(ceil_seconds(0), 0);
        assert_eq!(ceil_millis(1_500), 2);
        assert_eq!(ceil_seconds(-5), 0);
    }
}
