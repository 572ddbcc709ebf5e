//! `dynamcp bench-runtime`: time from a request to all of an agent's servers ready, through the
//! supervisor with each server in its bubblewrap sandbox and, side by side in the same rounds,
//! without the sandbox (same installed packages, same entry points); against two floors: the
//! installed entry points started by a bare rmcp client, and the plain catalog commands
//! (`npx`/`uvx`, with their own warm cache). `--cold` adds one start of each supervisor kind
//! from its own empty package store (every package downloaded and installed).

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
    let store = store::open(&args.store.settings()).await.context("could not open the store")?;
    let vault = Arc::new(Vault::open(store.as_ref(), crate::state::keyring_source(&args.store)?).await?);
    let catalog = Arc::new(crate::state::open_catalog(store.clone(), &args.store).await?);
    let records: Vec<ServerRecord> = args
        .servers
        .iter()
        .map(|id| catalog.index().get(id).cloned().with_context(|| format!("{id} is not in the catalog")))
        .collect::<anyhow::Result<_>>()?;
    let together = agent(store.as_ref(), &args.servers).await?;
    let settings = args.runtime.settings(&args.store.data_dir);
    let npx_cache = args.store.data_dir.join("runtime/bench-npx-cache");
    println!("servers: {}", args.servers.join(", "));
    println!("package store (warm rounds): {}", settings.packages.display());

    if args.cold {
        let scratch = std::env::temp_dir().join(format!("dynamcp-bench-{}", Uuid::new_v4().simple()));
        println!("\n-- cold: one start each, every package installed into an empty store --");
        for (label, unsandboxed) in [("supervisor, sandboxed", false), ("supervisor, unsandboxed", true)] {
            let store_dir = scratch.join(if unsandboxed { "plain" } else { "sandboxed" });
            let runtime = runtime_with(&catalog, &store, &vault, &settings, unsandboxed, Some(&store_dir));
            let agent = agent(store_ref(&store), &args.servers).await?;
            let started = Instant::now();
            ready(&runtime, agent).await?;
            let elapsed = started.elapsed();
            runtime.shutdown().await;
            println!("{label:<58} {:>9.0} ms", elapsed.as_secs_f64() * 1e3);
        }
        let _ = std::fs::remove_dir_all(&scratch);
    }

    let sandboxed = runtime_with(&catalog, &store, &vault, &settings, false, None);
    let plain = runtime_with(&catalog, &store, &vault, &settings, true, None);
    if sandboxed.sandbox_status().sandbox().is_none() {
        anyhow::bail!("{}: nothing to compare", sandboxed.sandbox_status().describe());
    }
    // One start of each to install every package and fill the npx/uvx cache before timing.
    ready(&sandboxed, together).await?;
    sandboxed.stop_agent(together).await;
    let entries = installed_entries(&settings, &records)?;
    plain_commands(&records, &npx_cache).await?;
    let (mut jailed, mut open, mut bare, mut npx) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for round in 0..args.rounds.max(1) {
        // Alternate the order so neither kind always runs on a freshly idle machine.
        let legs: [u8; 4] = if round % 2 == 0 { [0, 1, 2, 3] } else { [3, 2, 1, 0] };
        for leg in legs {
            match leg {
                0 | 1 => {
                    let runtime = if leg == 0 { &sandboxed } else { &plain };
                    let started = Instant::now();
                    ready(runtime, together).await?;
                    let elapsed = started.elapsed();
                    runtime.stop_agent(together).await;
                    if leg == 0 { jailed.push(elapsed) } else { open.push(elapsed) }
                }
                2 => bare.push(bare_entries(&entries).await?),
                _ => npx.push(plain_commands(&records, &npx_cache).await?),
            }
        }
    }
    sandboxed.shutdown().await;
    plain.shutdown().await;
    let (jailed, open, bare, npx) = (stats(jailed), stats(open), stats(bare), stats(npx));
    println!(
        "\n-- warm: {} rounds, packages installed, servers started concurrently by the supervisor --",
        args.rounds.max(1)
    );
    row("installed entry points, bare client, one after another", &bare);
    row("plain catalog commands (npx/uvx, warm cache), one after another", &npx);
    row("supervisor, unsandboxed", &open);
    row("supervisor, every server in its sandbox", &jailed);
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "the sandbox's cost on an agent's start: {:+.0} ms p50 ({:+.1}%)",
        ms(jailed.p50) - ms(open.p50),
        (ms(jailed.p50) / ms(open.p50) - 1.0) * 100.0,
    );
    store.close().await;
    Ok(())
}

fn store_ref(store: &Arc<dyn Store>) -> &dyn Store {
    store.as_ref()
}

fn runtime_with(
    catalog: &Arc<Catalog>,
    store: &Arc<dyn Store>,
    vault: &Arc<Vault>,
    settings: &RuntimeSettings,
    unsandboxed: bool,
    packages: Option<&Path>,
) -> Arc<Runtime> {
    let mut settings = settings.clone();
    if let Some(packages) = packages {
        settings.packages = packages.to_path_buf();
    }
    settings.force_unsandboxed = unsandboxed;
    settings.allow_unsandboxed = unsandboxed;
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

/// Each record's installed entry point and arguments, from the package store.
fn installed_entries(
    settings: &RuntimeSettings,
    records: &[ServerRecord],
) -> anyhow::Result<Vec<(std::path::PathBuf, Vec<String>)>> {
    use crate::runtime::packages::{self, PackageStore};
    let store = PackageStore::new(settings.packages.clone(), Default::default(), Vec::new(), Vec::new());
    records
        .iter()
        .map(|record| {
            let launch = stdio_launch(record)?;
            let (package, args) = match launch.command.as_deref() {
                Some("npx") => packages::parse_npx(&launch.args),
                Some("uvx") => packages::parse_uvx(&launch.args),
                other => Err(format!("{other:?} is not a package runtime")),
            }
            .map_err(|e| anyhow::anyhow!("{}: {e}", record.id))?;
            let installed = store
                .installed(&package, package.version.as_deref())
                .with_context(|| format!("{} is not installed", record.id))?;
            Ok((installed.dir.join(&installed.entry), args))
        })
        .collect()
}

fn stdio_launch(record: &ServerRecord) -> anyhow::Result<&crate::catalog::LaunchOption> {
    record
        .launch
        .iter()
        .find(|l| l.is_runnable() && l.kind != LaunchKind::Remote)
        .with_context(|| format!("{} has no stdio launch spec", record.id))
}

/// The floor: the installed entry points started and asked for their tools, one after another,
/// by a bare rmcp client with this process's environment.
async fn bare_entries(entries: &[(std::path::PathBuf, Vec<String>)]) -> anyhow::Result<Duration> {
    let mut commands = Vec::new();
    for (program, args) in entries {
        let mut command = tokio::process::Command::new(program);
        command.args(args);
        commands.push(command);
    }
    time_clients(commands).await
}

/// The catalog's own commands (`npx -y …`, `uvx …`) with a warm cache of their own, one after
/// another: what a client without a package store pays.
async fn plain_commands(records: &[ServerRecord], cache: &Path) -> anyhow::Result<Duration> {
    let mut commands = Vec::new();
    for record in records {
        let launch = stdio_launch(record)?;
        let mut command = tokio::process::Command::new(launch.command.as_deref().unwrap_or_default());
        command
            .args(&launch.args)
            .env("npm_config_cache", cache.join("npm"))
            .env("npm_config_prefer_offline", "true")
            .env("UV_CACHE_DIR", cache.join("uv"))
            .env("UV_TOOL_DIR", cache.join("uv-tools"));
        commands.push(command);
    }
    time_clients(commands).await
}

async fn time_clients(commands: Vec<tokio::process::Command>) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let mut clients = Vec::with_capacity(commands.len());
    for command in commands {
        let (transport, _) = TokioChildProcess::builder(command).stderr(Stdio::null()).spawn()?;
        let client = ().serve(transport).await.context("a server did not start")?;
        client.peer().list_all_tools().await?;
        clients.push(client);
    }
    let elapsed = started.elapsed();
    for client in clients {
        client.cancel().await?;
    }
    Ok(elapsed)
}
