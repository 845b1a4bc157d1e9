//! A cheap local token bucket per connection, in front of the module: floods are
//! refused on the edge before they cost a Redis round trip.

use std::time::Instant;

/// Token bucket: `rate` tokens per second, holding at most `burst`.
pub struct Bucket {
    /// Tokens per second (0: unlimited).
    rate: f64,
    /// Capacity.
    burst: f64,
    /// Tokens available at `at`.
    tokens: f64,
    /// When `tokens` was computed.
    at: Instant,
}

impl Bucket {
    /// A full bucket of `rate`/s with bursts of twice that.
    pub fn new(rate: u32, now: Instant) -> Self {
        let rate = f64::from(rate);
        Self {
            rate,
            burst: (rate * 2.0).max(1.0),
            tokens: (rate * 2.0).max(1.0),
            at: now,
        }
    }

    /// Takes one token; on refusal returns the milliseconds until one is available.
    pub fn take(&mut self, now: Instant) -> Result<(), u64> {
        if self.rate <= 0.0 {
            return Ok(());
        }
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err((((1.0 - self.tokens) / self.rate) * 1000.0).ceil() as u64)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn bursts_then_refuses_then_refills() {
        let t0 = Instant::now();
        let mut b = Bucket::new(10, t0);
        for _ in 0..20 {
            assert!(b.take(t0).is_ok());
        }
        let wait = b.take(t0).unwrap_err();
        assert!(wait > 0 && wait <= 100, "{wait}");
        assert!(b.take(t0 + Duration::from_millis(100)).is_ok());
        let mut free = Bucket::new(0, t0);
        for _ in 0..1000 {
            assert!(free.take(t0).is_ok());
        }
    }
}
