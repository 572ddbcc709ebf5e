//! dynamcp: turns a plain-language request into a working AI agent built from MCP servers.
//!
//! # Layout
//! Modules follow the data flow of a request; dependencies point one way, down this list.
//! - [`access`]: tenants and their API keys (generation, hashing); every session belongs to one.
//! - [`config`]: the `clap` command line and environment; parsing only, no I/O.
//! - [`state`]: [`state::AppState`], where configuration becomes open resources.
//! - [`api`]: HTTP (axum) and nothing else: one file per resource, the one error shape, OpenAPI,
//!   the web playground at `/`, and the MCP endpoint `/mcp`.
//! - [`mcp`]: dynamcp's own tools for MCP clients (rmcp), over stdio or `/mcp`; no credential
//!   ever passes through them.
//! - [`planner`]: the master agent; from a chat turn to a plan (offline, or an LLM's tool loop),
//!   the missing credentials with instructions, and an agent with its `mcpServers` config.
//! - [`catalog`]: MCP server records, import from every common format, hybrid search.
//! - [`llm`]: language-model providers (Anthropic, OpenAI-compatible) behind one trait.
//! - [`store`]: persistence behind one trait; SQLite (default) and PostgreSQL + pgvector.
//! - [`runtime`]: runs agents: starts their MCP servers from catalog launch specs only (explicit
//!   env, process groups, timeouts, idle stop), and the LLM tool loop that streams run events.
//! - [`vault`]: credential values: the redacting [`vault::Secret`] type and envelope encryption
//!   (AES-256-GCM data keys wrapped by the master key).
//! - [`cli`]: the non-serving subcommands (import, search, eval); [`progress`] reports on them.
//!
//! `main.rs` only parses the command line, sets up tracing and dispatches to [`run`] or [`cli`].

pub mod access;
pub mod api;
pub mod bench;
pub mod catalog;
pub mod cli;
pub mod config;
pub mod llm;
pub mod mcp;
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

/// `dynamcp serve`: builds the state, binds the configured address and serves until `shutdown`.
pub async fn run(args: ServeArgs, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
    let state = AppState::build(&args).await?;
    if state.access.is_open().await? {
        if !args.addr.ip().is_loopback() && !args.insecure_no_auth {
            anyhow::bail!(
                "refusing to serve {} without API keys: anyone who can reach it could use every session \
                 and credential. Create a key with `dynamcp keys create --tenant NAME`, bind a loopback \
                 address, or pass --insecure-no-auth on a trusted network",
                args.addr
            );
        }
        tracing::warn!(
            "no API keys: the service is open to anyone who can reach it (create one with `dynamcp keys create`)"
        );
    }
    let listener =
        TcpListener::bind(args.addr).await.with_context(|| format!("could not listen on {}", args.addr))?;
    if let Some(addr) = args.metrics_addr {
        let metrics = TcpListener::bind(addr)
            .await
            .with_context(|| format!("could not listen for metrics on {addr}"))?;
        tracing::info!(addr = %metrics.local_addr()?, "Prometheus metrics at /metrics");
        tokio::spawn(serve_metrics(metrics));
    }
    tracing::info!(
        addr = %listener.local_addr()?,
        database = %state.store.backend(),
        "dynamcp listening; API docs at /docs"
    );
    serve(listener, state, shutdown, args.shutdown_grace()).await
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
    let app = api::router(state);
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

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "could not listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut sig) => {
                sig.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "could not listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}
