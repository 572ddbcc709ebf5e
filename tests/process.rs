//! Tests of the real `dynamcp` binary as a process: it starts, answers, shuts down cleanly on
//! SIGTERM, and keeps every acknowledged write (sessions, credentials, agents) across a `kill -9`
//! in the middle of a stream of writes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

mod common;

use common::{Running, writes};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

/// Starts `dynamcp serve` on an ephemeral port with JSON logs and returns once it listens.
fn start(data_dir: &Path, extra_env: &[(&str, &str)]) -> Running {
    let mut cmd = common::clean_command();
    cmd.arg("serve")
        .env("DYNAMCP_ADDR", "127.0.0.1:0")
        .env("DYNAMCP_DATA_DIR", data_dir)
        .current_dir(data_dir);
    for (k, v) in extra_env {
        cmd.env(k, v);
    }
    common::spawn_serve(cmd)
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
    let status =
        common::wait_exit(&mut server.child, Duration::from_secs(15)).expect("no exit after SIGTERM");
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
    let acked = Arc::new(std::sync::Mutex::new(Vec::new()));
    let never = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..4)
        .map(|tag| tokio::spawn(writes::write_until(server.base.clone(), tag, acked.clone(), never.clone())))
        .collect();
    // Kill in the middle of the stream of writes, once some credentials and agents are in.
    let deadline = Instant::now() + Duration::from_secs(60);
    while acked.lock().unwrap().iter().filter(|a| a.agent.is_some()).count() < 8 {
        assert!(Instant::now() < deadline, "the writers made no progress");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.child.kill().unwrap(); // SIGKILL: no shutdown hooks, no checkpoint.
    server.child.wait().unwrap();
    for writer in writers {
        writer.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();

    let server = start(dir.path(), &env);
    writes::assert_kept(&server.base, &acked).await;
    assert!(acked.iter().filter(|a| a.agent.is_some()).count() >= 8);
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

/// What an operator reads when the log goes to a file: plain text (no colour codes), the
/// playground's and the docs' URLs, and no noise on a normal second start (no empty progress line,
/// no slow-statement warning).
#[test]
fn the_start_log_is_plain_and_names_the_urls() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let start_and_read = || {
        let mut cmd = common::clean_command();
        cmd.arg("serve")
            .env("DYNAMCP_ADDR", "127.0.0.1:0")
            .env("DYNAMCP_DATA_DIR", dir.path())
            .env("DYNAMCP_LOG_FORMAT", "text")
            .current_dir(dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        let mut lines = Vec::new();
        for line in BufReader::new(child.stderr.take().unwrap()).lines() {
            let line = line.unwrap();
            let done = line.contains("dynamcp listening");
            lines.push(line);
            if done {
                break;
            }
        }
        let _ = child.kill();
        let _ = child.wait();
        lines.join("\n")
    };
    let first = start_and_read();
    assert!(first.contains("dynamcp listening"), "{first}");
    let log = start_and_read();
    assert!(!log.contains('\u{1b}'), "colour codes in a log that is not a terminal:\n{log}");
    let listening = log.lines().find(|l| l.contains("dynamcp listening")).unwrap();
    assert!(
        listening.contains("playground at http://127.0.0.1:") && listening.contains("/docs"),
        "{listening}"
    );
    assert!(!log.contains("total=0"), "a progress line for nothing:\n{log}");
    assert!(!log.contains("slow statement"), "{log}");
    assert!(!log.contains("embedding the catalog"), "nothing was embedded on the second start:\n{log}");
}

/// `dynamcp doctor` from any directory: the data dir defaults to the user's data directory, and
/// what must be fixed (here a port in use and a missing model) is named with what to do, with a
/// non-zero exit.
#[test]
fn doctor_names_what_to_fix() {
    let home = tempfile::tempdir().unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let out = common::clean_command()
        .arg("doctor")
        .env("HOME", home.path())
        .env("DYNAMCP_ADDR", busy.local_addr().unwrap().to_string())
        .env("DYNAMCP_MODEL_DIR", home.path().join("no-model"))
        .current_dir(elsewhere.path())
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{report}");
    let data = home.path().join(".local/share/dynamcp");
    assert!(report.contains(&format!("ok    data            {} (writable)", data.display())), "{report}");
    assert!(data.join("dynamcp.db").is_file(), "the database is in the user's data directory");
    assert!(!elsewhere.path().join("data").exists(), "nothing is created in the working directory");
    let line = |what: &str| report.lines().find(|l| l.contains(what)).unwrap_or_default().to_owned();
    assert!(line("port").starts_with("FIX") && line("port").contains("DYNAMCP_ADDR"), "{report}");
    assert!(line("model").starts_with("FIX") && line("model").contains("scripts/setup.sh"), "{report}");
    let fixes = report.lines().filter(|l| l.starts_with("FIX")).count();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&format!("{fixes} things to fix")), "{stderr}");
}
