//! `dynamcp bench-runtime`: time from a request to all of an agent's servers ready, through the
//! supervisor (concurrently, as a run starts them, and one after another), against the floor:
//! the same servers started with their plain catalog commands, one after another, by a bare
//! rmcp client with the parent's environment. Warm rounds share one package cache; `--cold`
//! adds one start of each kind from its own empty cache (every package downloaded).

use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use rmcp::ServiceExt;
use rmcp::transport::TokioChildProcess;
use serde_json::json;
use uuid::Uuid;

use super::{row, stats};
use crate::access::Tenant;
use crate::catalog::{Catalog, LaunchKind, ServerRecord};
use crate::config::RuntimeBenchArgs;
use crate::runtime::{Runtime, RuntimeSettings};
use crate::store::{self, NewAgent, Store};
use crate::vault::Vault;

pub async fn run(args: RuntimeBenchArgs) -> anyhow::Result<()> {
    let store = store::open(&args.store).await.context("could not open the store")?;
    let vault = Arc::new(
        Vault::open(store.as_ref(), args.store.encryption_key.as_ref(), &args.store.data_dir).await?,
    );
    let catalog = Arc::new(crate::state::open_catalog(store.clone(), &args.store).await?);
    let records: Vec<ServerRecord> = args
        .servers
        .iter()
        .map(|id| catalog.index().get(id).cloned().with_context(|| format!("{id} is not in the catalog")))
        .collect::<anyhow::Result<_>>()?;
    let together = agent(store.as_ref(), &args.servers).await?;
    let alone: Vec<Uuid> = futures::future::try_join_all(
        args.servers.iter().map(|s| agent(store.as_ref(), std::slice::from_ref(s))),
    )
    .await?;
    let settings = args.runtime.settings(&args.store.data_dir);
    println!("servers: {}", args.servers.join(", "));
    println!("package cache (warm rounds): {}", settings.cache.display());

    if args.cold {
        let scratch = std::env::temp_dir().join(format!("dynamcp-bench-{}", Uuid::new_v4().simple()));
        let plain = plain_sequential(&records, &scratch.join("plain"), false).await?;
        let runtime = runtime_with(&catalog, &store, &vault, &settings, Some(&scratch.join("supervisor")));
        let started = Instant::now();
        ready(&runtime, together).await?;
        let supervised = started.elapsed();
        runtime.shutdown().await;
        let _ = std::fs::remove_dir_all(&scratch);
        println!("\n-- cold: one start each, every package downloaded into an empty cache --");
        println!("{:<58} {:>9.0} ms", "plain commands, one after another (floor)", plain.as_secs_f64() * 1e3);
        println!(
            "{:<58} {:>9.0} ms",
            "supervisor, concurrently (a run's start)",
            supervised.as_secs_f64() * 1e3
        );
    }

    let runtime = runtime_with(&catalog, &store, &vault, &settings, None);
    // One start of each to fill the shared cache before anything is timed.
    plain_sequential(&records, &settings.cache, false).await?;
    ready(&runtime, together).await?;
    runtime.stop_agent(together).await;
    let (mut plain, mut offline, mut concurrent, mut sequential) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for round in 0..args.rounds.max(1) {
        // Alternate the order so neither kind always runs on a freshly idle machine.
        let legs: [u8; 4] = if round % 2 == 0 { [0, 1, 2, 3] } else { [3, 2, 1, 0] };
        for leg in legs {
            match leg {
                0 => plain.push(plain_sequential(&records, &settings.cache, false).await?),
                3 => offline.push(plain_sequential(&records, &settings.cache, true).await?),
                1 => {
                    let started = Instant::now();
                    ready(&runtime, together).await?;
                    concurrent.push(started.elapsed());
                    runtime.stop_agent(together).await;
                }
                _ => {
                    let started = Instant::now();
                    for id in &alone {
                        ready(&runtime, *id).await?;
                    }
                    sequential.push(started.elapsed());
                    for id in &alone {
                        runtime.stop_agent(*id).await;
                    }
                }
            }
        }
    }
    runtime.shutdown().await;
    let (plain, offline, concurrent, sequential) =
        (stats(plain), stats(offline), stats(concurrent), stats(sequential));
    println!("\n-- warm: {} rounds, packages cached --", args.rounds.max(1));
    row("plain commands, one after another (floor)", &plain);
    row("plain commands + cache-only flags, one after another", &offline);
    row("supervisor, one after another", &sequential);
    row("supervisor, concurrently (a run's start)", &concurrent);
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "supervisor vs the same commands with the same flags, same order: {:+.0} ms p50 ({:+.1}%) = the supervisor's own overhead",
        ms(sequential.p50) - ms(offline.p50),
        (ms(sequential.p50) / ms(offline.p50) - 1.0) * 100.0,
    );
    println!(
        "a run's start vs the floor: {:.2}x faster ({:.0} ms vs {:.0} ms p50)",
        ms(plain.p50) / ms(concurrent.p50),
        ms(concurrent.p50),
        ms(plain.p50),
    );
    store.close().await;
    Ok(())
}

fn runtime_with(
    catalog: &Arc<Catalog>,
    store: &Arc<dyn Store>,
    vault: &Arc<Vault>,
    settings: &RuntimeSettings,
    cache: Option<&Path>,
) -> Arc<Runtime> {
    let mut settings = settings.clone();
    if let Some(cache) = cache {
        settings.cache = cache.to_path_buf();
    }
    Runtime::new(catalog.clone(), store.clone(), vault.clone(), None, settings)
}

async fn agent(store: &dyn Store, servers: &[String]) -> anyhow::Result<Uuid> {
    let session = store.create_session("").await?;
    let config: serde_json::Map<String, serde_json::Value> =
        servers.iter().map(|s| (s.clone(), json!({}))).collect();
    let agent = store
        .create_agent(&NewAgent {
            tenant: String::new(),
            session_id: session.id,
            name: "runtime benchmark".into(),
            mcp_config: json!({ "mcpServers": config }),
            workflow: String::new(),
            model: None,
            metadata: json!({}),
        })
        .await?;
    Ok(agent.id)
}

/// Starts every server of `agent` (listing its tools); fails if one does not start.
async fn ready(runtime: &Runtime, agent: Uuid) -> anyhow::Result<()> {
    for server in runtime.tools(&Tenant::open(), agent).await? {
        if let Some(error) = server.error {
            anyhow::bail!("{}: {error}", server.server);
        }
    }
    Ok(())
}

/// The floor: each server's plain catalog command, started and asked for its tools, one after
/// another, by a bare rmcp client with this process's environment and the given package cache
/// (`offline`: with the cache-only settings the supervisor uses for a cached package).
async fn plain_sequential(records: &[ServerRecord], cache: &Path, offline: bool) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let mut clients = Vec::with_capacity(records.len());
    for record in records {
        let launch = record
            .launch
            .iter()
            .find(|l| l.is_runnable() && l.kind != LaunchKind::Remote)
            .with_context(|| format!("{} has no stdio launch spec", record.id))?;
        let mut command = tokio::process::Command::new(launch.command.as_deref().unwrap_or_default());
        command
            .args(&launch.args)
            .env("npm_config_cache", cache.join("npm"))
            .env("UV_CACHE_DIR", cache.join("uv"))
            .env("UV_TOOL_DIR", cache.join("uv-tools"));
        if offline {
            command.env("npm_config_prefer_offline", "true").env("UV_OFFLINE", "1");
        }
        let (transport, _) = TokioChildProcess::builder(command).stderr(Stdio::null()).spawn()?;
        let client = ().serve(transport).await.with_context(|| format!("{} did not start", record.id))?;
        client.peer().list_all_tools().await?;
        clients.push(client);
    }
    let elapsed = started.elapsed();
    for client in clients {
        client.cancel().await?;
    }
    Ok(elapsed)
}
