//! Per-caller rate limits: a token bucket per client certificate (or per IP address for
//! callers without one), so one misbehaving client cannot starve the others.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

/// Token buckets keyed by caller.
#[derive(Debug)]
pub struct RateLimiter {
    per_second: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

/// Callers idle this long are forgotten, bounding the map.
const FORGET_AFTER_S: f64 = 600.0;

impl RateLimiter {
    /// `per_second` sustained requests with bursts of `burst`. A zero rate disables limiting.
    pub fn new(per_second: f64, burst: u32) -> Self {
        Self {
            per_second,
            burst: f64::from(burst.max(1)),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token for `key`; `Err(seconds)` says how long until one is available.
    pub fn check(&self, key: &str) -> Result<(), u64> {
        if self.per_second <= 0.0 {
            return Ok(());
        }
        let now = Instant::now();
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if buckets.len() > 100_000 {
            buckets.retain(|_, (_, t)| now.duration_since(*t).as_secs_f64() < FORGET_AFTER_S);
        }
        let (tokens, last) = buckets.entry(key.to_owned()).or_insert((self.burst, now));
        let refill = now.duration_since(*last).as_secs_f64() * self.per_second;
        *tokens = (*tokens + refill).min(self.burst);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            let wait = (1.0 - *tokens) / self.per_second;
            Err(wait.ceil().max(1.0) as u64)
        }
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
}
