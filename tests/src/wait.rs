//! Waiting for something a test does not control (a server, an edge, a sweep, a
//! failover): poll it at a fixed pace until it holds or a time limit passes.
//!
//! Every wait in the suite is bounded: [`poll`] and [`until_eq`] return the last value
//! they saw when time runs out, [`until`] says whether the condition held, [`within`]
//! fails the test.

use std::thread::sleep;
use std::time::{Duration, Instant};

/// Calls `probe` every `every` until `done` accepts its value or `timeout` has passed
/// (`probe` runs at least once); returns the last value.
pub fn poll<V>(
    timeout: Duration,
    every: Duration,
    mut probe: impl FnMut() -> V,
    done: impl Fn(&V) -> bool,
) -> V {
    let deadline = Instant::now() + timeout;
    loop {
        let got = probe();
        if done(&got) || Instant::now() >= deadline {
            return got;
        }
        sleep(every);
    }
}

/// Polls `probe` every `every` until it is true; false if `timeout` passes first.
pub fn until(timeout: Duration, every: Duration, probe: impl FnMut() -> bool) -> bool {
    poll(timeout, every, probe, |done| *done)
}

/// Polls `probe` every `every` until it returns `want` or `timeout` passes; returns the
/// last value (for an assertion that shows what was there instead).
pub fn until_eq<V: PartialEq>(
    timeout: Duration,
    every: Duration,
    want: &V,
    probe: impl FnMut() -> V,
) -> V {
    poll(timeout, every, probe, |got| got == want)
}

/// Polls `probe` every `every` until it is true and returns the time that took; fails
/// the test when `timeout` passes first.
pub fn within(timeout: Duration, every: Duration, probe: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    assert!(until(timeout, every, probe), "not done within {timeout:?}");
    started.elapsed()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn polls_until_done_or_out_of_time() {
        let mut calls = 0;
        let got = poll(
            Duration::from_secs(5),
            Duration::ZERO,
            || {
                calls += 1;
                calls
            },
            |n| *n == 3,
        );
        assert_eq!((got, calls), (3, 3));
        // Out of time: the last value, after at least one probe.
        assert_eq!(poll(Duration::ZERO, Duration::ZERO, || 7, |_| false), 7);
        assert!(!until(
            Duration::from_millis(30),
            Duration::from_millis(5),
            || false
        ));
        assert!(within(Duration::from_secs(5), Duration::ZERO, || true) < Duration::from_secs(5));
    }

    #[test]
    #[should_panic(expected = "not done within")]
    fn within_fails_the_test_when_time_runs_out() {
        within(Duration::from_millis(20), Duration::from_millis(5), || {
            false
        });
    }
}
