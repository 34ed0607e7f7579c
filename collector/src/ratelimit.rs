//! Rate limits per tenant and per credential: token buckets for ingest bytes per second
//! and query requests per second. Over a limit, the client is told when to retry
//! (gRPC `RESOURCE_EXHAUSTED` with RetryInfo, HTTP `429` with `Retry-After`), as for any
//! other overload; other tenants are unaffected.

use std::collections::HashMap;
use std::sync::{Mutex, RwLock};
use std::time::Duration;

use tokio::time::Instant;

use crate::auth::Principal;

/// The shortest retry delay handed out: retrying sooner only burns requests.
const MIN_RETRY: Duration = Duration::from_millis(100);

/// Configured rates; 0 means unlimited.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Rates {
    /// Ingest bytes (decoded request size) per second, per tenant.
    pub ingest_bytes_per_tenant: u64,
    /// Ingest bytes per second, per API key.
    pub ingest_bytes_per_key: u64,
    /// Query requests per second, per tenant.
    pub queries_per_tenant: u64,
    /// Query requests per second, per API key.
    pub queries_per_key: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Kind {
    Ingest,
    Query,
}

/// A bucket holding up to one second of its rate. A request passes when the bucket holds
/// its amount; one bigger than a second's worth passes when the bucket is full and takes
/// it into debt, which delays the next ones (so a large batch is never refused forever).
#[derive(Debug)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

impl Bucket {
    fn refill(&mut self, rate: f64, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate).min(rate);
        self.last = now;
    }

    /// How long until the bucket can take `amount`, if it cannot now.
    fn wait(&self, rate: f64, amount: f64) -> Option<Duration> {
        let need = amount.min(rate);
        (self.tokens < need)
            .then(|| Duration::from_secs_f64((need - self.tokens) / rate).max(MIN_RETRY))
    }
}

/// Every bucket, keyed by what it limits.
#[derive(Debug, Default)]
pub struct RateLimiter {
    /// Replaced on configuration reload; buckets keep their fill.
    rates: RwLock<Rates>,
    buckets: Mutex<HashMap<(Kind, bool, String), Bucket>>,
}

impl RateLimiter {
    /// Limits with the given rates.
    pub fn new(rates: Rates) -> Self {
        RateLimiter {
            rates: RwLock::new(rates),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Changes the rates (a configuration reload); from the next request on.
    pub fn set_rates(&self, rates: Rates) {
        *self.rates.write().unwrap_or_else(|e| e.into_inner()) = rates;
    }

    fn rates(&self) -> Rates {
        *self.rates.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes `bytes` of ingest for the principal, or says how long to wait.
    pub fn ingest(&self, principal: &Principal, bytes: u64) -> Result<(), Duration> {
        let rates = self.rates();
        self.take(
            Kind::Ingest,
            principal,
            bytes as f64,
            rates.ingest_bytes_per_tenant,
            rates.ingest_bytes_per_key,
        )
    }

    /// Takes one query for the principal, or says how long to wait.
    pub fn query(&self, principal: &Principal) -> Result<(), Duration> {
        let rates = self.rates();
        self.take(
            Kind::Query,
            principal,
            1.0,
            rates.queries_per_tenant,
            rates.queries_per_key,
        )
    }

    fn take(
        &self,
        kind: Kind,
        principal: &Principal,
        amount: f64,
        tenant_rate: u64,
        key_rate: u64,
    ) -> Result<(), Duration> {
        let mut limits = Vec::with_capacity(2);
        if tenant_rate > 0 {
            limits.push(((kind, false, principal.tenant.clone()), tenant_rate as f64));
        }
        if let Some(key) = principal.key_id.as_ref().filter(|_| key_rate > 0) {
            limits.push(((kind, true, key.clone()), key_rate as f64));
        }
        if limits.is_empty() {
            return Ok(());
        }
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        // Both buckets must have room before either is charged.
        let mut wait = None;
        for (id, rate) in &limits {
            let bucket = buckets.entry(id.clone()).or_insert(Bucket {
                tokens: *rate,
                last: now,
            });
            bucket.refill(*rate, now);
            if let Some(w) = bucket.wait(*rate, amount) {
                wait = Some(wait.map_or(w, |x: Duration| x.max(w)));
            }
        }
        if let Some(w) = wait {
            return Err(w);
        }
        for (id, _) in &limits {
            if let Some(bucket) = buckets.get_mut(id) {
                bucket.tokens -= amount;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal(tenant: &str, key: &str) -> Principal {
        Principal {
            tenant: tenant.into(),
            scopes: vec![],
            key_id: Some(key.into()),
            user: None,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn tenants_are_limited_separately_and_buckets_refill() {
        let limiter = RateLimiter::new(Rates {
            ingest_bytes_per_tenant: 1000,
            ..Rates::default()
        });
        let a = principal("a", "ka");
        let b = principal("b", "kb");
        assert!(limiter.ingest(&a, 600).is_ok());
        let wait = limiter.ingest(&a, 600).unwrap_err();
        assert_eq!(
            wait,
            Duration::from_millis(200),
            "200 bytes short at 1000/s"
        );
        assert!(
            limiter.ingest(&b, 900).is_ok(),
            "another tenant is not affected"
        );
        tokio::time::advance(wait).await;
        assert!(
            limiter.ingest(&a, 600).is_ok(),
            "refilled after the advertised wait"
        );
        assert!(limiter.ingest(&a, 1).is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_larger_than_the_rate_passes_once_then_waits() {
        let limiter = RateLimiter::new(Rates {
            ingest_bytes_per_tenant: 100,
            ..Rates::default()
        });
        let a = principal("a", "ka");
        assert!(limiter.ingest(&a, 10_000).is_ok());
        let wait = limiter.ingest(&a, 1).unwrap_err();
        assert!(
            wait >= Duration::from_secs(99),
            "debt of 9,900 bytes at 100/s: {wait:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn per_key_limits_and_unlimited_defaults() {
        let limiter = RateLimiter::new(Rates {
            queries_per_key: 2,
            ..Rates::default()
        });
        let k1 = principal("a", "k1");
        let k2 = principal("a", "k2");
        assert!(limiter.query(&k1).is_ok());
        assert!(limiter.query(&k1).is_ok());
        assert!(limiter.query(&k1).is_err());
        assert!(
            limiter.query(&k2).is_ok(),
            "the other key of the same tenant has its own bucket"
        );
        assert!(
            limiter.ingest(&k1, u64::MAX / 2).is_ok(),
            "ingest is unlimited here"
        );
        let open = RateLimiter::new(Rates::default());
        for _ in 0..1000 {
            assert!(open.query(&k1).is_ok());
        }
    }
}
