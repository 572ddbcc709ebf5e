//! The design's example end to end, offline, on the default catalog (9,465 servers) with the local
//! model: a Gmail → Google Sheets request asks for both servers' credentials with instructions, a
//! partial turn leaves the rest, the last turn creates an agent whose config references both
//! servers; and no credential value appears in any response, in the logs, or in the database file.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::print_stdout)]

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};

use common::{Db, TestServer};
use serde_json::{Value, json};

/// Everything the service logs during the test, at debug level.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn servers_of(body: &Value) -> Vec<String> {
    let mut out: Vec<String> = body["required_credentials"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["mcp_server"].as_str().unwrap().to_owned())
        .collect();
    out.dedup();
    out
}

/// A credential turn for every required key of `server`, each value carrying the canary.
fn values_for(body: &Value, server: &str, canary: &str) -> Value {
    let mut keys = serde_json::Map::new();
    for c in body["required_credentials"].as_array().unwrap() {
        if c["mcp_server"] == server {
            let key = c["credential_key"].as_str().unwrap();
            keys.insert(key.to_owned(), json!(format!("{canary}-{key}")));
        }
    }
    json!({ server: keys })
}

fn show(turn: &str, request: &Value, response: &Value) {
    println!("--- {turn}\n> {}\n< {}\n", request, serde_json::to_string_pretty(response).unwrap());
}

#[tokio::test]
async fn gmail_to_sheets_from_request_to_agent_without_leaking_a_value() {
    let logs = Captured::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("debug"))
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let (mut args, dir) = common::test_args(Db::Sqlite).await;
    common::with_default_catalog(&mut args);
    let server = TestServer::start_with(args, dir).await;
    let canary = format!("canary{}", uuid::Uuid::new_v4().simple());
    let mut responses = Vec::new();

    // 1. The request: pending, with both services' credentials and real instructions.
    let request = json!({"message": "Create an agent that monitors my Gmail for invoices, extracts the data, and saves it to a Google Sheet"});
    let (status, first) = server.post("/api/chat", request.clone()).await;
    show("turn 1", &request, &first);
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["status"], "pending_credentials");
    let sid = first["session_id"].clone();
    // The plan's servers: a Gmail one and a Google Sheets one (by name, id, or tools).
    let planned: Vec<(String, String)> = server
        .planned_servers(sid.as_str().unwrap())
        .await
        .iter()
        .map(|s| {
            (
                s["id"].as_str().unwrap().to_owned(),
                s.values().map(Value::to_string).collect::<String>().to_lowercase(),
            )
        })
        .collect();
    let gmail = planned.iter().find(|(_, text)| text.contains("gmail")).expect("a Gmail server").0.clone();
    let sheets =
        planned.iter().find(|(_, text)| text.contains("sheet")).expect("a Google Sheets server").0.clone();
    assert_ne!(gmail, sheets, "{first}");
    for item in first["required_credentials"].as_array().unwrap() {
        let steps = item["instructions"].as_str().unwrap();
        assert!(steps.starts_with("1. ") && steps.contains("Format:"), "{item}");
    }
    let sheets_steps: Vec<&str> = first["required_credentials"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["mcp_server"] == sheets.as_str())
        .map(|c| c["instructions"].as_str().unwrap())
        .collect();
    assert!(sheets_steps.iter().any(|s| s.contains("console.cloud.google.com")), "{sheets_steps:?}");
    responses.push(first.clone());

    // 2. A partial turn: every server's credentials but the Sheets server's. The rest is still
    // asked for.
    let mut second = first.clone();
    for other in servers_of(&first).into_iter().filter(|s| *s != sheets) {
        let request = json!({"message": "Here are my credentials", "session_id": sid, "credentials": values_for(&second, &other, &canary)});
        let (status, body) = server.post("/api/chat", request.clone()).await;
        show(
            "turn 2",
            &json!({"message": request["message"], "session_id": sid, "credentials": "[values withheld]"}),
            &body,
        );
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["status"], "pending_credentials");
        responses.push(body.clone());
        second = body;
    }
    assert_eq!(servers_of(&second), vec![sheets.clone()]);

    // 3. The last turn: success, and an agent whose config references both servers.
    let request = json!({"message": "And the Google Sheets ones", "session_id": sid, "credentials": values_for(&second, &sheets, &canary)});
    let (status, third) = server.post("/api/chat", request.clone()).await;
    show(
        "turn 3",
        &json!({"message": request["message"], "session_id": sid, "credentials": "[values withheld]"}),
        &third,
    );
    assert_eq!(status, 200, "{third}");
    assert_eq!(third["status"], "success");
    assert_eq!(third["agent_created"], true);
    let agent_id = third["agent_id"].as_str().unwrap().to_owned();
    responses.push(third.clone());
    let (_, agent) = server.get(&format!("/api/agents/{agent_id}")).await;
    let config = &agent["mcp_config"]["mcpServers"];
    assert!(config.get(&gmail).is_some() && config.get(&sheets).is_some(), "{agent}");
    for (name, entry) in config.as_object().unwrap() {
        for value in entry["env"].as_object().unwrap().values() {
            assert!(value.as_str().unwrap().starts_with(&format!("${{vault:{name}/")), "{entry}");
        }
    }
    responses.push(agent.clone());
    let (_, session) = server.get(&format!("/api/sessions/{}", sid.as_str().unwrap())).await;
    responses.push(session);
    let (_, claude) = server.get(&format!("/api/agents/{agent_id}/config?format=claude")).await;
    responses.push(claude);
    let dir = server.stop().await;

    // 4. The canary is nowhere: responses, logs, database bytes.
    for body in &responses {
        assert!(!body.to_string().contains(&canary), "a response leaked a value: {body}");
    }
    let logged = String::from_utf8_lossy(&logs.0.lock().unwrap()).into_owned();
    assert!(logged.contains("agent created"), "the logs were not captured");
    assert!(!logged.contains(&canary), "the logs leaked a value");
    let mut db_files = 0;
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let path = entry.unwrap().path();
        if path.file_name().unwrap().to_string_lossy().starts_with("dynamcp.db") {
            db_files += 1;
            let bytes = std::fs::read(&path).unwrap();
            assert!(
                !bytes.windows(canary.len()).any(|w| w == canary.as_bytes()),
                "{} holds a value",
                path.display()
            );
        }
    }
    assert!(db_files >= 1);
}
