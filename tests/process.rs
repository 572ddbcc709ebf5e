//! Tests of the real `dynamcp` binary as a process: it starts, answers, shuts down cleanly on
//! SIGTERM, and keeps every acknowledged write across `kill -9`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

mod common;

struct Running {
    child: Child,
    base: String,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `dynamcp serve` on an ephemeral port with JSON logs and returns once it listens.
#[allow(clippy::zombie_processes, reason = "Running's Drop kills and reaps the child")]
fn start(data_dir: &Path, extra_env: &[(&str, &str)]) -> Running {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_dynamcp"));
    cmd.arg("serve")
        .env_clear()
        .env("DYNAMCP_ADDR", "127.0.0.1:0")
        .env("DYNAMCP_DATA_DIR", data_dir)
        .env("DYNAMCP_LOG_FORMAT", "json")
        .env("DYNAMCP_LOG", "info")
        .current_dir(data_dir)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, v) in extra_env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn dynamcp");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let line = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())).unwrap_or_else(|_| {
            let _ = child.kill();
            panic!("dynamcp did not report its address in time")
        });
        let Ok(event) = serde_json::from_str::<Value>(&line) else { continue };
        if let Some(addr) = event["fields"]["addr"].as_str() {
            let base = format!("http://{addr}");
            std::thread::spawn(move || for _ in rx {});
            return Running { child, base };
        }
    }
}

fn wait_exit(child: &mut Child, within: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

#[tokio::test]
async fn sigterm_shuts_down_gracefully() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = start(dir.path(), &[]);
    let body: Value =
        common::http_client().get(format!("{}/", server.base)).send().await.unwrap().json().await.unwrap();
    assert_eq!(body, json!({"message": "Dynamic MCP Agent API", "version": "1.0.0"}));

    let pid = server.child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let status = wait_exit(&mut server.child, Duration::from_secs(15)).expect("no exit after SIGTERM");
    assert!(status.success(), "exit status {status}");
}

#[tokio::test]
async fn acknowledged_writes_survive_kill_9_on_sqlite() {
    acknowledged_writes_survive_kill_9(None).await;
}

#[tokio::test]
async fn acknowledged_writes_survive_kill_9_on_postgres() {
    acknowledged_writes_survive_kill_9(Some(common::fresh_postgres_database().await)).await;
}

async fn acknowledged_writes_survive_kill_9(database_url: Option<String>) {
    let dir = tempfile::tempdir().unwrap();
    let env: Vec<(&str, &str)> = database_url.iter().map(|url| ("DATABASE_URL", url.as_str())).collect();
    let mut server = start(dir.path(), &env);
    let http = common::http_client();
    let mut acknowledged = Vec::new();
    for i in 0..40 {
        let resp = http
            .post(format!("{}/api/chat", server.base))
            .json(&json!({"message": format!("request number {i}")}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let body: Value = resp.json().await.unwrap();
        acknowledged.push((body["session_id"].as_str().unwrap().to_owned(), format!("request number {i}")));
    }
    server.child.kill().unwrap(); // SIGKILL: no shutdown hooks, no checkpoint.
    server.child.wait().unwrap();

    let server = start(dir.path(), &env);
    for (id, message) in &acknowledged {
        let resp = http.get(format!("{}/api/sessions/{id}", server.base)).send().await.unwrap();
        assert_eq!(resp.status(), 200, "session {id} lost");
        let session: Value = resp.json().await.unwrap();
        assert_eq!(session["messages"][0]["message"], message.as_str());
        assert_eq!(session["messages"][1]["role"], "assistant");
    }
}

#[test]
fn a_bad_database_url_fails_fast_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_dynamcp"))
        .args(["serve", "--addr", "127.0.0.1:0", "--database-url", "mysql://x@y/z"])
        .env_clear()
        .env("DYNAMCP_DATA_DIR", dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("unsupported database URL scheme"), "{stderr}");
}
