//! Rate budgets: a generic cell-rate algorithm per key (a tenant, or a client IP when the
//! service has no keys): `per_sec` sustained, `burst` at once. In this process, or shared through
//! the database by every replica on it ([`RateLimiter::shared`], on PostgreSQL).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::store::Store;

/// The limiter's state: per key, the theoretical arrival time of its next request.
pub struct RateLimiter {
    interval: Duration,
    tolerance: Duration,
    next: Mutex<HashMap<String, Instant>>,
    /// Where the shared budgets live; `None`: this process's own (`next`).
    shared: Option<Arc<dyn Store>>,
}

/// `d` in whole microseconds, as the shared budgets count time.
fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

/// Entries are pruned when the map grows past this, so spoofed keys cannot grow it forever.
const PRUNE_AT: usize = 10_000;

impl RateLimiter {
    /// `None` when `per_sec` is 0 (no limit).
    pub fn new(per_sec: u32, burst: u32) -> Option<Self> {
        if per_sec == 0 {
            return None;
        }
        let interval = Duration::from_secs_f64(1.0 / f64::from(per_sec));
        Some(Self {
            interval,
            tolerance: interval * burst.max(1).saturating_sub(1),
            next: Mutex::new(HashMap::new()),
            shared: None,
        })
    }

    /// Keeps the budgets in `store`, shared by every service on it: a tenant's budget holds
    /// however many replicas its requests reach.
    pub fn shared(mut self, store: Arc<dyn Store>) -> Self {
        self.shared = Some(store);
        self
    }

    /// Counts one request against `key`: `Err(wait)` when it is over its budget. Shared budgets
    /// that cannot be reached (the database does not answer) fall back to this process's own.
    pub async fn take(&self, key: &str) -> Result<(), Duration> {
        let Some(store) = &self.shared else { return self.check(key) };
        let now = micros(SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default());
        match store.take_budget(key, now, micros(self.interval), micros(self.tolerance)).await {
            Ok(None) => Ok(()),
            Ok(Some(wait)) => Err(Duration::from_micros(u64::try_from(wait).unwrap_or(1))),
            Err(e) => {
                tracing::debug!(error = %e, "shared rate budgets unavailable: counting in this process");
                self.check(key)
            }
        }
    }

    /// Forgets the shared budgets that are full again.
    pub async fn prune(&self) {
        let Some(store) = &self.shared else { return };
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        if let Err(e) = store.prune_budgets(micros(now)).await {
            tracing::debug!(error = %e, "could not prune the shared rate budgets");
        }
    }

    /// This process's own budgets: `Err(wait)` when `key` is over.
    fn check(&self, key: &str) -> Result<(), Duration> {
        let now = Instant::now();
        let Ok(mut next) = self.next.lock() else { return Ok(()) };
        if next.len() > PRUNE_AT {
            next.retain(|_, at| *at > now);
        }
        let at = next.get(key).copied().unwrap_or(now).max(now);
        let ahead = at - now;
        if ahead > self.tolerance {
            return Err(ahead - self.tolerance);
        }
        next.insert(key.to_owned(), at + self.interval);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_the_sustained_rate() {
        let limiter = RateLimiter::new(10, 3).unwrap();
        for _ in 0..3 {
            assert_eq!(limiter.check("a"), Ok(()));
        }
        let wait = limiter.check("a").unwrap_err();
        assert!(wait > Duration::ZERO && wait <= Duration::from_millis(100), "{wait:?}");
        assert_eq!(limiter.check("b"), Ok(()), "keys have their own budgets");
        std::thread::sleep(Duration::from_millis(110));
        assert_eq!(limiter.check("a"), Ok(()));
        assert!(RateLimiter::new(0, 5).is_none());
    }
}
