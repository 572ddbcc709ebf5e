//! `dynamcp bench-load`: a bounded load test against a running service, from this process's own
//! tokio client: N connections, each sending requests back to back for a fixed time. Prints
//! requests per second, latency percentiles and every non-2xx or failed request. Run the service
//! with `DYNAMCP_RATE_LIMIT_PER_SEC=0`, or the limiter (correctly) answers 429.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::json;

use super::{QUERIES, row, stats};
use crate::config::{LoadArgs, LoadScenario};

pub async fn run(args: LoadArgs) -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let connections = args.connections.max(1);
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(connections)
        .timeout(Duration::from_secs(60))
        .build()
        .context("could not build the HTTP client")?;
    let base = args.url.trim_end_matches('/').to_owned();
    let health = client.get(format!("{base}/health")).send().await.context("the service does not answer")?;
    anyhow::ensure!(health.status().is_success(), "the service is not healthy: {}", health.status());
    for scenario in &args.scenarios {
        // Warm up: connections open, caches filled, as a running service would have them.
        drive(
            &client,
            &base,
            *scenario,
            connections,
            Duration::from_secs(2),
            args.key.as_deref(),
            args.unique_queries,
        )
        .await;
        let started = Instant::now();
        let results = drive(
            &client,
            &base,
            *scenario,
            connections,
            args.duration(),
            args.key.as_deref(),
            args.unique_queries,
        )
        .await;
        let elapsed = started.elapsed();
        let ok: Vec<Duration> = results.iter().filter(|r| r.1).map(|r| r.0).collect();
        let failed = results.len() - ok.len();
        println!(
            "\n-- {scenario:?}: {connections} connections, {:.1} s --\n{} requests, {:.0} req/s, {failed} errors",
            elapsed.as_secs_f64(),
            results.len(),
            results.len() as f64 / elapsed.as_secs_f64(),
        );
        if !ok.is_empty() {
            row("latency of successful requests", &stats(ok));
        }
    }
    Ok(())
}

static UNIQUE: AtomicU64 = AtomicU64::new(0);

/// Runs `connections` loops for `duration`; each result is (latency, success).
async fn drive(
    client: &reqwest::Client,
    base: &str,
    scenario: LoadScenario,
    connections: usize,
    duration: Duration,
    key: Option<&str>,
    unique: bool,
) -> Vec<(Duration, bool)> {
    let until = Instant::now() + duration;
    let key: Option<Arc<str>> = key.map(Arc::from);
    let tasks = (0..connections).map(|c| {
        let (client, base, key) = (client.clone(), base.to_owned(), key.clone());
        tokio::spawn(async move {
            let mut results = Vec::new();
            let mut i = c;
            while Instant::now() < until {
                let query = QUERIES[i % QUERIES.len()];
                // A number never sent before (across warm-up and measurement) when asked to.
                let query = if unique {
                    format!("{query} {}", UNIQUE.fetch_add(1, Ordering::Relaxed))
                } else {
                    query.to_owned()
                };
                let request = match scenario {
                    LoadScenario::Search => client
                        .post(format!("{base}/api/servers/search"))
                        .json(&json!({"query": query, "limit": 5})),
                    LoadScenario::Chat => {
                        client.post(format!("{base}/api/chat")).json(&json!({"message": query}))
                    }
                };
                let request = match &key {
                    Some(key) => request.bearer_auth(key),
                    None => request,
                };
                let sent = Instant::now();
                let ok = match request.send().await {
                    Ok(resp) => {
                        let status = resp.status();
                        resp.bytes().await.is_ok() && status.is_success()
                    }
                    Err(_) => false,
                };
                results.push((sent.elapsed(), ok));
                i += connections;
            }
            results
        })
    });
    futures::future::join_all(tasks).await.into_iter().filter_map(Result::ok).flatten().collect()
}
