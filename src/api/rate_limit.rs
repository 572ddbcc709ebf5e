//! Per-caller rate limits: a tenant's requests share one budget (whatever key they use); without
//! keys, each client IP has its own. A generic cell-rate algorithm: `per_sec` sustained, `burst`
//! at once; over it, 429 with `Retry-After` and the usual error body.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;

use super::auth::Caller;
use super::error::error_response;
use crate::state::AppState;

/// The limiter's state: per key, the theoretical arrival time of its next request.
pub struct RateLimiter {
    interval: Duration,
    tolerance: Duration,
    next: Mutex<HashMap<String, Instant>>,
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
        })
    }

    /// `Err(wait)` when `key` is over its budget.
    pub fn check(&self, key: &str) -> Result<(), Duration> {
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

/// Applies the limit to `/api/` and `/mcp` requests (after [`super::auth::authenticate`] named the caller).
pub async fn limit(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if state.rate_limiter.is_none() || !super::auth::is_guarded(request.uri().path()) {
        return next.run(request).await;
    }
    let tenant = request.extensions().get::<Caller>().map(|c| c.0.as_str().to_owned()).unwrap_or_default();
    let key = if tenant.is_empty() { ip_key(&request) } else { format!("tenant:{tenant}") };
    match over_limit(&state, &key) {
        Some(limited) => limited,
        None => next.run(request).await,
    }
}

/// The budget key of the request's client IP.
pub fn ip_key(request: &Request) -> String {
    let ip = request.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip().to_string());
    format!("ip:{}", ip.unwrap_or_default())
}

/// Counts one request against `key`'s budget: the 429 to answer when it is over, else `None`.
pub fn over_limit(state: &AppState, key: &str) -> Option<Response> {
    let wait = state.rate_limiter.as_deref()?.check(key).err()?;
    metrics::counter!("dynamcp_rate_limited_total").increment(1);
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    let mut response = error_response(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
        format!("too many requests: try again in {secs} s"),
    );
    if let Ok(value) = HeaderValue::from_str(&secs.to_string()) {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    Some(response)
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
