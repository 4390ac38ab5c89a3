//! Per-caller rate limiting: a token bucket per (tenant, subject), shared by every door a
//! command can come through (HTTP and NATS), so a caller has one budget.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

/// Refill rate and burst of each caller's bucket.
#[derive(Clone, Copy, Debug)]
pub struct RateLimit {
    /// Requests per second sustained.
    pub per_second: f64,
    /// Requests allowed in a burst.
    pub burst: f64,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

/// Token buckets keyed by caller.
#[derive(Debug)]
pub struct RateLimiter {
    limit: RateLimit,
    buckets: Mutex<HashMap<String, Bucket>>,
}

/// Most callers tracked before idle buckets are swept.
const MAX_BUCKETS: usize = 100_000;

impl RateLimiter {
    /// A limiter with the given rate; a non-positive rate disables limiting.
    pub fn new(limit: RateLimit) -> Self {
        Self {
            limit,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token for the caller; on refusal returns the seconds until one is available.
    pub fn check_principal(&self, principal: &crate::Principal) -> Result<(), u64> {
        if self.limit.per_second <= 0.0 {
            return Ok(());
        }
        self.check(&format!("{}\u{0}{}", principal.tenant, principal.subject))
    }

    /// What a refused caller is told, over HTTP and NATS alike.
    pub fn refusal(principal: &crate::Principal, wait: u64) -> String {
        format!(
            "too many requests for {}; retry after {wait} s or ask an operator to raise the limit",
            principal.subject
        )
    }

    /// Takes one token for `key`; on refusal returns the seconds until one is available.
    pub fn check(&self, key: &str) -> Result<(), u64> {
        if self.limit.per_second <= 0.0 {
            return Ok(());
        }
        let now = Instant::now();
        let mut buckets = self
            .buckets
            .lock()
            .expect("rate limiter lock is never poisoned");
        if buckets.len() >= MAX_BUCKETS {
            let full = self.limit.burst;
            let rate = self.limit.per_second;
            buckets.retain(|_, b| {
                b.tokens + now.duration_since(b.updated).as_secs_f64() * rate < full
            });
        }
        let bucket = buckets.entry(key.to_string()).or_insert(Bucket {
            tokens: self.limit.burst,
            updated: now,
        });
        let elapsed = now.duration_since(bucket.updated).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.limit.per_second).min(self.limit.burst);
        bucket.updated = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            let wait = (1.0 - bucket.tokens) / self.limit.per_second;
            Err(wait.ceil() as u64)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_is_allowed_then_refused_with_a_wait() {
        let limiter = RateLimiter::new(RateLimit {
            per_second: 0.5,
            burst: 3.0,
        });
        for _ in 0..3 {
            assert!(limiter.check("a").is_ok());
        }
        let wait = limiter
            .check("a")
            .expect_err("fourth request in a burst of three");
        assert!(wait >= 1);
        assert!(limiter.check("b").is_ok(), "buckets are per caller");
    }

    #[test]
    fn zero_rate_disables_limiting() {
        let limiter = RateLimiter::new(RateLimit {
            per_second: 0.0,
            burst: 0.0,
        });
        for _ in 0..1000 {
            assert!(limiter.check("a").is_ok());
        }
    }
}
