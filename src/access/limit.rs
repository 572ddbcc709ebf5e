//! Limits on what callers may start.
//!
//! - Rate budgets: a generic cell-rate algorithm per key (a tenant, or a client IP when the
//!   service has no keys): `per_sec` sustained, `burst` at once.
//! - Caps: at most so many of one kind of work at once (agent runs, chat turns being planned).
//!
//! Both count in this process, or through the database for every replica on it
//! ([`RateLimiter::shared`], [`Cap::shared`]: on PostgreSQL).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use uuid::Uuid;

use crate::store::{Slot, Store};

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

/// At most `max` pieces of one kind of work at once: in this process always, and with
/// [`Cap::shared`] across every service on the database too (each replica's own processes stay
/// bounded by its semaphore; the database bounds them all together).
pub struct Cap {
    kind: &'static str,
    max: usize,
    local: Arc<Semaphore>,
    shared: Option<SharedCap>,
}

struct SharedCap {
    store: Arc<dyn Store>,
    /// This service's lease: its slots count while the lease is live.
    holder: Uuid,
    /// How long a slot counts if it is never given back (the work's own time limit).
    hold_for: Duration,
}

/// One piece of capped work under way; dropping it gives the slot back.
pub struct CapSlot {
    _permit: OwnedSemaphorePermit,
    shared: Option<(Arc<dyn Store>, Uuid)>,
}

impl Drop for CapSlot {
    fn drop(&mut self) {
        let Some((store, id)) = self.shared.take() else { return };
        // A slot not given back (no runtime to do it on) expires with its time limit.
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                if let Err(e) = store.release_slot(id).await {
                    tracing::debug!(error = %e, "could not give a shared slot back; it expires by itself");
                }
            });
        }
    }
}

/// The longest pause between two looks for a free shared slot.
const SLOT_POLL_MAX: Duration = Duration::from_millis(250);

impl Cap {
    /// `max` at once (at least one), counted in this process.
    pub fn new(kind: &'static str, max: usize) -> Self {
        let max = max.max(1);
        Self { kind, max, local: Arc::new(Semaphore::new(max)), shared: None }
    }

    /// Counts the slots in `store` too, as `holder` (this service's lease), for every service on
    /// it; a slot never given back stops counting after `hold_for` or when the lease lapses.
    pub fn shared(mut self, store: Arc<dyn Store>, holder: Uuid, hold_for: Duration) -> Self {
        self.shared = Some(SharedCap { store, holder, hold_for });
        self
    }

    /// `max` at once of `kind`, shared through `store` as `holder` when given (see
    /// [`Self::shared`]), else in this process. A slot counts for at most `hold_for` plus a
    /// minute: the work's own time limit, with room to give the slot back.
    pub fn for_service(
        kind: &'static str,
        max: usize,
        shared: Option<(Arc<dyn Store>, Uuid)>,
        hold_for: Duration,
    ) -> Self {
        let cap = Self::new(kind, max);
        match shared {
            Some((store, holder)) => cap.shared(store, holder, hold_for + Duration::from_secs(60)),
            None => cap,
        }
    }

    pub fn max(&self) -> usize {
        self.max
    }

    /// A slot now for work on `subject` (an agent id, or empty), or `None` when all are taken.
    pub async fn try_take(&self, subject: &str) -> Option<CapSlot> {
        let permit = self.local.clone().try_acquire_owned().ok()?;
        self.take_shared(permit, subject).await
    }

    /// A slot, waiting for one (the caller's own time limit bounds the wait). Fails only if the
    /// local semaphore was closed, which nothing does.
    pub async fn take(&self, subject: &str) -> Result<CapSlot, tokio::sync::AcquireError> {
        let mut pause = Duration::from_millis(10);
        loop {
            let permit = self.local.clone().acquire_owned().await?;
            if let Some(slot) = self.take_shared(permit, subject).await {
                return Ok(slot);
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(SLOT_POLL_MAX);
        }
    }

    /// Adds the shared slot to a local `permit`: `None` when the database's are all taken. A
    /// database that does not answer leaves the local count in charge.
    async fn take_shared(&self, permit: OwnedSemaphorePermit, subject: &str) -> Option<CapSlot> {
        let Some(shared) = &self.shared else { return Some(CapSlot { _permit: permit, shared: None }) };
        let slot = Slot {
            id: Uuid::new_v4(),
            kind: self.kind.to_owned(),
            holder: shared.holder,
            subject: subject.to_owned(),
            expires_at: chrono::Utc::now()
                + chrono::Duration::from_std(shared.hold_for).unwrap_or_else(|_| chrono::Duration::hours(1)),
        };
        let cap = u32::try_from(self.max).unwrap_or(u32::MAX);
        match shared.store.take_slot(&slot, cap).await {
            Ok(true) => Some(CapSlot { _permit: permit, shared: Some((shared.store.clone(), slot.id)) }),
            Ok(false) => None,
            Err(e) => {
                tracing::debug!(error = %e, kind = self.kind, "shared slots unavailable: counting in this process");
                Some(CapSlot { _permit: permit, shared: None })
            }
        }
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
