//! dynamcp: turns a plain-language request into a working AI agent built from MCP servers.
//!
//! # Layout
//! Modules in layers: each imports only modules listed below it, and the faces (the first four)
//! know nothing of each other. `tests/layout.rs` reads this list and the sources' `crate::`
//! paths and fails on any import that breaks it.
//! - [`api`] (face): HTTP (axum) and nothing else: one file per resource, the one error shape,
//!   OpenAPI, the web playground at `/`, the `/mcp` transport (serving whatever MCP server
//!   [`run`] hands it, each session bound to its tenant), and the Host and Origin guard in front
//!   of every route.
//! - [`mcp`] (face): dynamcp's own tools for MCP clients (rmcp), over stdio (`dynamcp mcp`) or
//!   `/mcp`; no credential ever passes through them.
//! - [`cli`] (face): the other subcommands (import, search, eval, keys, vault, doctor).
//! - [`bench`] (face): the benchmark subcommands; they measure the engines directly.
//! - [`ops`]: the operations the faces call (search, plan, chat, create, run, call a tool, and
//!   the sessions and agents around them), knowing neither HTTP nor MCP, with one error type.
//! - [`state`]: [`state::AppState`], where configuration becomes open engines.
//! - [`config`]: the `clap` command line and environment; parsing, and building each engine's
//!   own plain settings (the default data and model directories look at the file system to find
//!   an earlier `./data` or the model).
//! - [`planner`]: the master agent; from a chat turn to a plan (offline, or an LLM's tool loop),
//!   the server an expert would choose per step, each checked to start here before anything is
//!   asked (through the [`planner::Verifier`] edge, the runtime in service), the missing
//!   credentials with instructions, and an agent with its `mcpServers` config.
//! - [`runtime`]: runs agents: installs their MCP servers' packages into a pinned store and starts
//!   them from catalog launch specs only, each in a bubblewrap sandbox (explicit env, process
//!   groups, timeouts, idle stop, tool definitions pinned), verifies servers once with no
//!   credentials, and runs the LLM tool loop that streams run events.
//! - [`access`]: who may ask: tenants and their API keys (generation, hashing), the host names
//!   the service answers to, and rate budgets; every session belongs to one tenant.
//! - [`catalog`]: MCP server records, import from every common format, hybrid search, and what is
//!   known of each server starting here ([`catalog::verified`]).
//! - [`llm`]: language-model providers (Anthropic, OpenAI-compatible) behind one trait.
//! - [`vault`]: credential values: the redacting [`vault::Secret`] type, envelope encryption
//!   (AES-256-GCM data keys wrapped by a keyring of master keys), key rotation in step with the
//!   running services, and each service's lease on the store.
//! - [`store`]: persistence behind one trait; SQLite (default) and PostgreSQL + pgvector.
//! - [`progress`]: progress lines for long CLI steps.
//!
//! `main.rs` only parses the command line, sets up tracing and dispatches to [`run`] (`serve`),
//! [`mcp::run`] or [`cli`]; [`run`] is where the HTTP face is given the MCP face's server.

pub mod access;
pub mod api;
pub mod bench;
pub mod catalog;
pub mod cli;
pub mod config;
pub mod llm;
pub mod mcp;
pub mod ops;
pub mod planner;
pub mod progress;
pub mod runtime;
pub mod state;
pub mod store;
pub mod vault;

use std::future::Future;

use anyhow::Context;
use tokio::net::TcpListener;

use crate::config::ServeArgs;
use crate::state::AppState;

/// Files and folders dynamcp creates from now on are its own user's alone (umask 077): the
/// database, the vault key, agents' homes and credential files, the package store.
pub fn private_files() {
    use nix::sys::stat::{Mode, umask};
    umask(Mode::from_bits_truncate(0o077));
}

/// `dynamcp serve`: builds the state, binds the configured address and serves until `shutdown`.
pub async fn run(args: ServeArgs, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
    let state = AppState::build(&args).await?;
    announce_access(&args, &state).await?;
    let listener =
        TcpListener::bind(args.addr).await.with_context(|| format!("could not listen on {}", args.addr))?;
    if let Some(addr) = args.metrics_addr {
        let metrics = TcpListener::bind(addr)
            .await
            .with_context(|| format!("could not listen for metrics on {addr}"))?;
        tracing::info!(addr = %metrics.local_addr()?, "Prometheus metrics at /metrics");
        tokio::spawn(serve_metrics(metrics));
    }
    let local = listener.local_addr()?;
    let shown = if local.ip().is_unspecified() {
        std::net::SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), local.port())
    } else {
        local
    };
    tracing::info!(
        addr = %local,
        database = %state.store.backend(),
        playground = %format!("http://{shown}/"),
        docs = %format!("http://{shown}/docs"),
        "dynamcp listening: the playground at http://{shown}/, the API docs at http://{shown}/docs"
    );
    serve(listener, state, shutdown, args.shutdown_grace()).await
}

/// Says which access mode the service starts in, or refuses to start a keyless service on an
/// address others can reach.
async fn announce_access(args: &ServeArgs, state: &AppState) -> anyhow::Result<()> {
    use crate::access::Mode;
    let mode = state.access.mode().await?;
    let names = state.limits.allowed_hosts.join(", ");
    let hosts = match (state.limits.loopback_only, names.is_empty(), mode) {
        (true, true, _) => "loopback names only".to_owned(),
        (_, false, _) => format!("loopback names and {names}"),
        (false, true, Mode::Open) => "loopback names and IP addresses (no DYNAMCP_ALLOWED_HOSTS)".to_owned(),
        (false, true, _) => "any (set DYNAMCP_ALLOWED_HOSTS to this service's public names)".to_owned(),
    };
    tracing::info!(
        %hosts,
        cors_origins = %state.limits.cors_origins.join(", "),
        "Host header checked; requests that change state (and every /mcp request) from browser pages \
         of origins other than this service's and the CORS origins answer 403"
    );
    match mode {
        Mode::Unconfigured => anyhow::bail!(
            "refusing to serve {} without API keys: anyone who can reach it could use every session \
             and credential. Create a key with `dynamcp keys create --tenant NAME`, bind a loopback \
             address, or pass --insecure-no-auth on a trusted network",
            args.addr
        ),
        Mode::Open if state.limits.loopback_only => tracing::warn!(
            "OPEN MODE: no API key was ever created, so every request acts as the one open tenant; \
             only this machine can connect (create a key with `dynamcp keys create`)"
        ),
        Mode::Open => tracing::warn!(
            addr = %args.addr,
            "OPEN MODE ON A NETWORK ADDRESS (--insecure-no-auth): anyone who can reach it acts as the \
             one open tenant, with every session and credential; create a key with `dynamcp keys create`"
        ),
        Mode::Keys => tracing::info!("API keys required on /api/ and /mcp (`Authorization: Bearer <key>`)"),
        Mode::Revoked => tracing::warn!(
            "LOCKED: every API key is revoked, so every /api/ and /mcp request answers 401 until a new \
             key is created with `dynamcp keys create` (revoking the last key never opens the service)"
        ),
    }
    if state.limits.cors_origins.iter().any(|o| o.trim() == "*") && mode == Mode::Open {
        tracing::warn!(
            "DYNAMCP_CORS_ORIGINS=* is ignored for requests that change state while the service runs \
             open: any web page could drive it; name the origins instead"
        );
    }
    Ok(())
}

/// Serves `state` on `listener` until `shutdown` resolves, then lets in-flight requests finish for
/// up to `grace` and closes the store. Tests pass `127.0.0.1:0` and a oneshot.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
    grace: std::time::Duration,
) -> anyhow::Result<()> {
    let store = state.store.clone();
    let runtime = state.runtime.clone();
    let stopping = state.stopping.clone();
    let lease = state.lease.clone();
    let app = api::router(state, mcp::DynamcpMcp::over_http);
    let (stopping_tx, stopping_rx) = tokio::sync::oneshot::channel::<()>();
    let app = app.into_make_service_with_connect_info::<std::net::SocketAddr>();
    let server = axum::serve(listener, app).with_graceful_shutdown(async move {
        shutdown.await;
        tracing::info!("shutting down: draining in-flight requests");
        stopping.cancel();
        let _ = stopping_tx.send(());
    });
    let drained = async {
        let _ = stopping_rx.await;
        tokio::time::sleep(grace).await;
    };
    tokio::select! {
        result = server => result.context("server error")?,
        () = drained => tracing::warn!(?grace, "in-flight requests did not finish in time; closing anyway"),
    }
    runtime.shutdown().await;
    // Only now: nothing seals or opens a credential any more.
    if let Some(lease) = lease {
        lease.release().await;
    }
    store.close().await;
    tracing::info!("stopped");
    Ok(())
}

/// Serves `GET /metrics` (Prometheus text format) on `listener` until the process ends.
pub async fn serve_metrics(listener: TcpListener) {
    if let Err(e) = axum::serve(listener, api::observe::metrics_router()).await {
        tracing::error!(error = %e, "the metrics listener stopped");
    }
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM. The handlers are installed when this is called (not
/// when the future is first polled), so a signal that arrives while the service starts (a
/// supervisor stopping it at once) still shuts it down cleanly, releasing its lease.
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    use tokio::signal::unix::{SignalKind, signal};
    let listen = |kind: SignalKind, name: &'static str| match signal(kind) {
        Ok(sig) => Some(sig),
        Err(e) => {
            tracing::error!(error = %e, signal = name, "could not listen for the signal");
            None
        }
    };
    let interrupt = listen(SignalKind::interrupt(), "SIGINT");
    let terminate = listen(SignalKind::terminate(), "SIGTERM");
    let received = |sig: Option<tokio::signal::unix::Signal>| async move {
        match sig {
            Some(mut sig) => {
                sig.recv().await;
            }
            None => std::future::pending::<()>().await,
        }
    };
    async move {
        tokio::select! {
            () = received(interrupt) => {},
            () = received(terminate) => {},
        }
    }
}
