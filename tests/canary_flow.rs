//! The secret canary through the whole flow, on SQLite and on PostgreSQL: the real `dynamcp serve`
//! binary (debug logs captured from its output) plans a request, receives a unique canary as a
//! credential through chat, creates the agent, and runs it. The (fake, OpenAI wire) model asks the
//! credential's own server, the real npm `@modelcontextprotocol/server-everything`, to print its
//! environment, and the real PyPI time server for the time. The canary must never appear in the
//! logs, any HTTP response (the SSE run included), what the model was sent, the database (every
//! file of the data dir, or a `pg_dump`), any `/proc/*/cmdline`, or the environment of a server
//! that is not its own, while its own server does get it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::Db;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};

/// server-everything as the default catalog launches it, declaring one secret credential.
fn echo_record() -> Value {
    json!({
        "id": "echo-vault", "name": "Echo Vault",
        "description": "Echo messages back and print the environment it runs with.",
        "tools": [{"name": "echo", "description": "Echo a message back"}],
        "credentials": [{"name": "ECHO_VAULT_TOKEN", "required": true, "secret": true}],
        "launch": [{"kind": "npm", "transport": "stdio", "command": "npx",
            "args": ["-y", "@modelcontextprotocol/server-everything"]}]
    })
}

/// The fake model: first asks for the echo server's environment tool and Tokyo's time, then
/// answers with what the tools said. Keeps every request it was sent.
#[derive(Clone, Default)]
struct Model {
    seen: Arc<Mutex<Vec<String>>>,
}

async fn complete(
    axum::extract::State(model): axum::extract::State<Model>,
    body: String,
) -> axum::Json<Value> {
    model.seen.lock().unwrap().push(body.clone());
    let body: Value = serde_json::from_str(&body).unwrap();
    let tools: Vec<String> = body["tools"]
        .as_array()
        .map(|t| t.iter().filter_map(|t| t["function"]["name"].as_str().map(str::to_owned)).collect())
        .unwrap_or_default();
    let answered = body["messages"].as_array().unwrap().iter().any(|m| m["role"] == "tool");
    let message = if answered {
        let said: Vec<String> = body["messages"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["role"] == "tool")
            .map(|m| m["content"].as_str().unwrap_or_default().to_owned())
            .collect();
        json!({"role": "assistant", "content": format!("The tools said: {}", said.join(" | "))})
    } else {
        let env_tool =
            tools.iter().find(|t| t.starts_with("echo-vault__") && t.to_lowercase().contains("env"));
        let mut calls = vec![json!({"id": "call_time", "type": "function",
            "function": {"name": "time-mcp-server__get_current_time", "arguments": "{\"timezone\":\"Asia/Tokyo\"}"}})];
        if let Some(env_tool) = env_tool {
            calls.push(json!({"id": "call_env", "type": "function", "function": {"name": env_tool, "arguments": "{}"}}));
        }
        json!({"role": "assistant", "content": "Checking.", "tool_calls": calls})
    };
    axum::Json(json!({
        "id": "chatcmpl-1", "object": "chat.completion", "model": "fake-model",
        "choices": [{"index": 0, "finish_reason": "stop", "message": message}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}
    }))
}

/// Every (pid, environ, cmdline) of a process whose environment names `marker`.
fn every_file_under(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            every_file_under(&path, out);
        } else {
            out.push(path);
        }
    }
}

async fn whole_flow(db: Db) {
    // The canary: a unique word that must never show. The credential carries it on two lines of
    // a PEM-like block, beside a quote and a backslash, so it is caught however it is encoded
    // (JSON-escaped, line by line in stderr, decoded in a tool result).
    let canary = format!("canary{}", uuid::Uuid::new_v4().simple());
    let secret = format!(
        "-----BEGIN PRIVATE KEY-----\n{canary}\"quoted\\slash+/=\n{canary}-second-line-of-the-key\n-----END PRIVATE KEY-----\n"
    );
    let (args, dir) = common::test_args(db).await;
    common::import_default_records(&args, &["time-mcp-server"], &[echo_record()]).await;

    let model = Model::default();
    let app = axum::Router::new()
        .route("/v1/chat/completions", axum::routing::post(complete))
        .with_state(model.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let model_url = format!("http://{}/v1", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    // The real binary, configured only through its environment, logging everything at debug.
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_dynamcp"));
    command
        .args(["serve", "--addr", "127.0.0.1:0"])
        .env_clear()
        .envs(std::env::vars().filter(|(k, _)| {
            k == "PATH" || k == "HOME" || k.starts_with("SSL_") || k.starts_with("NODE_EXTRA")
        }))
        .env("DYNAMCP_DATA_DIR", dir.path())
        .env("DYNAMCP_NO_MODEL", "true")
        .env("DYNAMCP_DEFAULT_CATALOG", "false")
        .env("DYNAMCP_RUNTIMES", "npx,uvx")
        .env("DYNAMCP_PACKAGE_DIR", args.runtime.package_dir.clone().unwrap())
        .env("DYNAMCP_LLM_PROVIDER", "openai")
        .env("DYNAMCP_LLM_BASE_URL", &model_url)
        .env("DYNAMCP_LLM_MODEL", "fake-model")
        .env("OPENAI_API_KEY", "sk-test")
        .env("DYNAMCP_PLANNER", "offline")
        .env("DYNAMCP_VERIFY_SERVERS", "false")
        .env("DYNAMCP_LOG", "debug")
        .env("DYNAMCP_LOG_FORMAT", "json")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Some(url) = &args.store.database_url {
        command.env("DATABASE_URL", url);
    }
    let mut child = command.spawn().unwrap();
    let logs = Arc::new(Mutex::new(String::new()));
    let (addr_tx, addr_rx) = tokio::sync::oneshot::channel::<String>();
    let mut addr_tx = Some(addr_tx);
    let mut stderr = BufReader::new(child.stderr.take().unwrap()).lines();
    let stderr_logs = logs.clone();
    let stderr_task = tokio::spawn(async move {
        while let Ok(Some(line)) = stderr.next_line().await {
            if let Ok(record) = serde_json::from_str::<Value>(&line)
                && let Some(addr) = record["fields"]["addr"].as_str()
                && record["fields"]["message"].as_str().is_some_and(|m| m.starts_with("dynamcp listening"))
                && let Some(tx) = addr_tx.take()
            {
                let _ = tx.send(addr.to_owned());
            }
            stderr_logs.lock().unwrap().push_str(&line);
            stderr_logs.lock().unwrap().push('\n');
        }
    });
    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    let stdout_logs = logs.clone();
    let stdout_task = tokio::spawn(async move {
        while let Ok(Some(line)) = stdout.next_line().await {
            stdout_logs.lock().unwrap().push_str(&line);
        }
    });
    let addr = tokio::time::timeout(Duration::from_secs(60), addr_rx).await.unwrap().unwrap();
    let base = format!("http://{addr}");
    let http = common::http_client();
    let mut responses: Vec<String> = Vec::new();
    let mut send = async |request: reqwest::RequestBuilder| -> (u16, Value) {
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        responses.push(text.clone());
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    };

    // 1. Plan: both servers; the echo server's token is asked for.
    let (status, first) = send(http.post(format!("{base}/api/chat")).json(&json!({
        "message": "Echo my messages back and tell me the current time in Tokyo"
    })))
    .await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["status"], "pending_credentials", "{first}");
    assert_eq!(first["required_credentials"][0]["mcp_server"], "echo-vault", "{first}");
    let session = first["session_id"].as_str().unwrap().to_owned();

    // 2. The canary, as the credential: the agent is created.
    let (status, second) = send(http.post(format!("{base}/api/chat")).json(&json!({
        "message": "here it is", "session_id": session,
        "credentials": {"echo-vault": {"ECHO_VAULT_TOKEN": secret}}
    })))
    .await;
    assert_eq!(status, 200, "{second}");
    assert_eq!(second["agent_created"], true, "{second}");
    let agent = second["agent_id"].as_str().unwrap().to_owned();
    for path in [
        format!("/api/sessions/{session}"),
        format!("/api/agents/{agent}"),
        format!("/api/agents/{agent}/config?format=claude"),
        "/api/agents".to_owned(),
    ] {
        let (status, body) = send(http.get(format!("{base}{path}"))).await;
        assert_eq!(status, 200, "{path}: {body}");
    }

    // 3. The run, streamed: the model reads the echo server's environment and the time.
    let (status, run) = send(
        http.post(format!("{base}/api/agents/{agent}/run"))
            .header("accept", "text/event-stream")
            .json(&json!({"input": "What is in your environment, and what time is it in Tokyo?"})),
    )
    .await;
    assert_eq!(status, 200);
    let run = run.as_str().unwrap().to_owned();
    assert!(run.contains("event: done") && run.contains("\"status\":\"completed\""), "{run}");
    assert!(run.contains("ECHO_VAULT_TOKEN"), "the environment tool ran and was answered: {run}");
    assert!(run.contains("[redacted]"), "its value was blanked: {run}");

    // 4. While the servers still run: the canary is in its own server's environment only, and in
    // no command line anywhere.
    let marker = dir.path().display().to_string();
    let servers = common::processes_with(&marker);
    let own: Vec<_> = servers.iter().filter(|(_, environ, _)| environ.contains(&canary)).collect();
    assert!(!own.is_empty(), "the echo server got its credential");
    // Each is the echo server's sandbox (whose command line binds its own home) or inside it.
    let echo_sandbox: Vec<u32> =
        common::processes_with("/echo-vault/home /home/agent").into_iter().map(|(pid, ..)| pid).collect();
    for (pid, _, cmdline) in &own {
        assert!(echo_sandbox.contains(pid), "pid {pid} is not the credential's server: {cmdline}");
    }
    let time_servers =
        servers.iter().filter(|(_, _, cmdline)| cmdline.contains("/time-mcp-server/home")).count();
    assert!(time_servers > 0, "the time server ran");
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) {
            assert!(!String::from_utf8_lossy(&cmdline).contains(&canary), "in {:?}", entry.path());
        }
    }
    let (status, metrics) = send(http.get(format!("{base}/health"))).await;
    assert_eq!(status, 200, "{metrics}");

    // 5. Stop (SIGTERM) and read what it logged.
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id().unwrap() as i32), nix::sys::signal::SIGTERM)
        .unwrap();
    let exit = tokio::time::timeout(Duration::from_secs(60), child.wait()).await.unwrap().unwrap();
    assert!(exit.success(), "{exit:?}");
    stderr_task.await.unwrap();
    stdout_task.await.unwrap();
    let logged = logs.lock().unwrap().clone();
    assert!(logged.contains("agent created") && logged.contains("\"level\":\"DEBUG\""), "logs were captured");
    assert!(!logged.contains(&canary), "the logs leaked the canary");

    for (i, body) in responses.iter().enumerate() {
        assert!(!body.contains(&canary), "response {i} leaked the canary: {body}");
    }
    let seen = model.seen.lock().unwrap().join("\n");
    assert!(seen.contains("ECHO_VAULT_TOKEN"), "the model saw the tool result");
    assert!(!seen.contains(&canary), "the model was sent the canary");

    // 6. At rest: every file of the data dir (database, WAL, runtime dirs), or the PostgreSQL dump.
    let mut files = Vec::new();
    every_file_under(dir.path(), &mut files);
    assert!(!files.is_empty());
    for file in files {
        let bytes = std::fs::read(&file).unwrap_or_default();
        assert!(
            !bytes.windows(canary.len()).any(|w| w == canary.as_bytes()),
            "{} holds the canary",
            file.display()
        );
    }
    if let Some(url) = &args.store.database_url {
        let dump = tokio::process::Command::new("pg_dump").arg("--no-owner").arg(url).output().await.unwrap();
        assert!(dump.status.success(), "{}", String::from_utf8_lossy(&dump.stderr));
        let text = String::from_utf8_lossy(&dump.stdout);
        assert!(text.contains(&session) && text.contains("COPY public.credentials"), "the dump is whole");
        assert!(!text.contains(&canary), "pg_dump holds the canary");
    }
    // Nothing it started outlives it.
    assert_eq!(common::processes_with(&marker).len(), 0, "{:?}", common::processes_with(&marker));
}

on_both_backends!(whole_flow);
