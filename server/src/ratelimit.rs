//! Per-caller rate limits: a token bucket per client certificate (or per IP address for
//! callers without one), so one misbehaving client cannot starve the others. The buckets are
//! `governor`'s keyed GCRA limiter, which is a token bucket kept as one timestamp per caller.

use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter as Gcra};

/// Token buckets keyed by caller; `None` when limiting is off.
#[derive(Debug)]
pub struct RateLimiter {
    buckets: Option<Gcra<String, DefaultKeyedStateStore<String>, DefaultClock>>,
}

/// Past this many callers, those whose bucket is full again (indistinguishable from a new
/// caller's) are forgotten, bounding the map.
const FORGET_ABOVE: usize = 100_000;

/// The slowest refill we represent: one token per century. A positive rate below that is
/// treated as this one (it already refuses every request after the burst for a lifetime).
const LONGEST_PERIOD: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

impl RateLimiter {
    /// `per_second` sustained requests with bursts of `burst`. A zero rate disables limiting.
    pub fn new(per_second: f64, burst: u32) -> Self {
        let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
        let quota = if per_second > 0.0 {
            // A rate too high for a nanosecond period is no limit at all.
            let period = Duration::try_from_secs_f64(per_second.recip()).unwrap_or(LONGEST_PERIOD);
            Quota::with_period(period.min(LONGEST_PERIOD))
        } else {
            None
        };
        Self {
            buckets: quota.map(|q| Gcra::keyed(q.allow_burst(burst))),
        }
    }

    /// Takes one token for `key`; `Err(seconds)` says how long until one is available.
    pub fn check(&self, key: &str) -> Result<(), u64> {
        let Some(buckets) = &self.buckets else {
            return Ok(());
        };
        if buckets.len() > FORGET_ABOVE {
            buckets.retain_recent();
        }
        buckets.check_key(&key.to_owned()).map_err(|not_until| {
            let wait = not_until.wait_time_from(buckets.clock().now());
            wait.as_secs_f64().ceil().max(1.0) as u64
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bursts_then_refuses_per_key() {
        let rl = RateLimiter::new(1.0, 3);
        for _ in 0..3 {
            assert!(rl.check("a").is_ok());
        }
        assert_eq!(rl.check("a"), Err(1));
        assert!(rl.check("b").is_ok());
        assert!(RateLimiter::new(0.0, 1).check("a").is_ok());
    }

    #[test]
    fn fractional_rates_say_how_long_to_wait() {
        let rl = RateLimiter::new(0.25, 1);
        assert!(rl.check("a").is_ok());
        assert_eq!(rl.check("a"), Err(4));
        // Absurd rates neither panic nor wrap around.
        assert!(RateLimiter::new(1e-300, 1).check("a").is_ok());
        assert!(RateLimiter::new(1e-300, 1).check("a").is_ok());
        let fast = RateLimiter::new(1e300, 1);
        for _ in 0..1000 {
            assert!(fast.check("a").is_ok());
        }
    }

    #[test]
    fn callers_with_full_buckets_are_forgotten_past_the_bound() {
        let rl = RateLimiter::new(1e6, 1);
        for i in 0..=FORGET_ABOVE {
            assert!(rl.check(&i.to_string()).is_ok());
        }
        let buckets = rl.buckets.as_ref().unwrap();
        assert_eq!(buckets.len(), FORGET_ABOVE + 1);
        std::thread::sleep(Duration::from_millis(5));
        assert!(rl.check("new").is_ok());
        assert!(buckets.len() <= 2, "{}", buckets.len());
    }
}
