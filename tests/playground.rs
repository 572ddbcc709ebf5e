//! The web playground in a real browser: Debian's headless Chromium, driven by Playwright (PyPI),
//! plays the Gmail → Google Sheets flow against a running service, then runs a credential-free
//! agent (the real PyPI `mcp-server-time`) with a fake model that speaks the OpenAI wire protocol,
//! and watches the events stream in. Screenshots of each step go to `target/tmp/screenshots`, or
//! to `docs/screenshots` with `DYNAMCP_UPDATE_SCREENSHOTS=1`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::{Path, PathBuf};

use common::{Db, TestServer};
use dynamcp::config::PlannerChoice;
use dynamcp::llm::Provider;
use dynamcp::vault::Secret;
use serde_json::Value;

const RECORDS: &[&str] = &["time-mcp-server", "gmail-mcp-2", "google-sheets-mcp-5", "everything-mcp-server"];

fn screenshot_dir() -> PathBuf {
    if std::env::var_os("DYNAMCP_UPDATE_SCREENSHOTS").is_some() {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/screenshots")
    } else {
        Path::new(env!("CARGO_TARGET_TMPDIR")).join("screenshots")
    }
}

#[tokio::test]
async fn a_browser_plays_gmail_to_sheets_then_runs_a_time_agent_with_streamed_events() {
    let (_fake, model_url) = common::fake_model().await;
    let (mut args, dir) = common::test_args(Db::Sqlite).await;
    common::import_default_records(&args, RECORDS, &[]).await;
    args.runtime.runtimes = ["npx", "uvx"].map(str::to_owned).to_vec();
    // Agents run with the (fake) model; the deterministic offline planner plans.
    args.llm.llm_provider = Provider::Openai;
    args.llm.llm_base_url = Some(model_url);
    args.llm.llm_model = Some("fake-model".into());
    args.llm.openai_api_key = Some(Secret::new("sk-test"));
    args.llm.planner = PlannerChoice::Offline;
    let server = TestServer::start_with(args, dir).await;
    // The same page on a service with no model says so before Run is clicked.
    let bare = TestServer::start_with_fixture_catalog(Db::Sqlite).await;

    // API clients still get the design's JSON at `/`, byte for byte; browsers get the page.
    for accept in [None, Some("*/*"), Some("application/json"), Some("application/json, text/html")] {
        let mut request = server.http.get(server.url("/"));
        if let Some(accept) = accept {
            request = request.header("accept", accept);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.headers()["content-type"], "application/json", "{accept:?}");
        assert_eq!(
            response.text().await.unwrap(),
            r#"{"message":"Dynamic MCP Agent API","version":"1.0.0"}"#
        );
    }
    let page = server.http.get(server.url("/")).header("accept", "text/html,*/*;q=0.8").send().await.unwrap();
    assert_eq!(page.headers()["content-type"], "text/html; charset=utf-8");
    let csp = page.headers()["content-security-policy"].to_str().unwrap().to_owned();
    assert!(csp.starts_with("default-src 'none'; script-src 'sha256-"), "{csp}");
    assert!(!csp.contains("unsafe-inline"), "{csp}");

    let shots = screenshot_dir();
    let (base, shots_arg, bare_base) = (server.base.clone(), shots.display().to_string(), bare.base.clone());
    let out = tokio::task::spawn_blocking(move || {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/playground_flow.py");
        let output = std::process::Command::new("python3")
            .arg(script)
            .arg(&base)
            .arg(&shots_arg)
            .arg(&bare_base)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(
            output.status.success(),
            "the browser flow failed:\n{}\n{stdout}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_str::<Value>(stdout.trim()).unwrap()
    })
    .await
    .unwrap();

    assert_eq!(out["title"], "dynamcp playground");
    // 2. Both servers as cards: name, why chosen, tools, and a link to the full record.
    let cards = out["cards"].as_array().unwrap();
    for id in ["gmail-mcp-2", "google-sheets-mcp-5"] {
        let card =
            cards.iter().find(|c| c["id"] == id).unwrap_or_else(|| panic!("no card for {id}: {cards:?}"));
        assert_eq!(card["link"], format!("/api/servers/{id}"));
        let text = card["text"].as_str().unwrap();
        assert!(text.contains("Why chosen") && text.contains("Tools"), "{text}");
    }
    let record: Value = serde_json::from_str(out["record_shown"].as_str().unwrap()).unwrap();
    assert_eq!(record["id"], "gmail-mcp-2");
    assert!(record["launch"].is_array() && record["credentials"].is_array(), "{record}");
    // 3. A password field per required credential, labelled, with its instructions beside it.
    let fields = out["fields"].as_array().unwrap();
    let names: Vec<&str> = fields.iter().map(|f| f["name"].as_str().unwrap()).collect();
    assert!(names.contains(&"gmail-mcp-2/VALID_API_KEY"), "{names:?}");
    assert!(names.contains(&"google-sheets-mcp-5/GOOGLE_ACCESS_TOKEN"), "{names:?}");
    for field in fields {
        assert_eq!(field["type"], "password");
        let key = field["name"].as_str().unwrap().split('/').nth(1).unwrap();
        assert!(field["label"].as_str().unwrap().contains(key), "{field}");
        assert!(field["help"].as_str().unwrap().contains("1. "), "instructions beside {key}");
    }
    // 4. The agent is created; the fields are emptied; the values never come back to the page.
    let agent = out["agent_created"].as_str().unwrap().strip_prefix("Agent created: ").unwrap().to_owned();
    assert!(out["values_left"].as_array().unwrap().iter().all(|v| v == ""), "{}", out["values_left"]);
    assert!(out["saved"].as_str().unwrap().contains("VALID_API_KEY ✓ saved"));
    let html = out["html"].as_str().unwrap();
    for field in &names {
        let canary = format!("canary-{}", field.split('/').nth(1).unwrap());
        assert!(!html.contains(&canary), "{canary} is on the page");
        assert!(!out["config"].as_str().unwrap().contains(&canary), "{canary} in the exported config");
        assert!(!out["session_storage"].as_str().unwrap().contains(&canary));
    }
    let config: Value = serde_json::from_str(out["config"].as_str().unwrap()).unwrap();
    assert!(config["mcpServers"]["gmail-mcp-2"].is_object(), "{config}");
    // The values reached the vault, sealed, for the session the page drove.
    let (status, view) = server.get(&format!("/api/agents/{agent}")).await;
    assert_eq!(status, 200);
    let sealed =
        server.store.credentials(view["session_id"].as_str().unwrap().parse().unwrap()).await.unwrap();
    let sealed: Vec<String> = sealed.iter().map(|c| format!("{}/{}", c.server, c.key)).collect();
    for field in &names {
        assert!(sealed.contains(&(*field).to_owned()), "{field} not stored: {sealed:?}");
    }

    // 5. The time agent: selected for the run, events streamed live, the answer shown.
    let time_agent = out["time_agent"].as_str().unwrap().strip_prefix("Agent created: ").unwrap();
    assert_ne!(time_agent, agent);
    assert_eq!(out["selected_agent"], time_agent);
    let events: Vec<&str> =
        out["events"].as_array().unwrap().iter().map(|e| e[0].as_str().unwrap()).collect();
    assert_eq!(
        events,
        ["server_starting", "server_ready", "llm_message", "tool_call", "tool_result", "llm_message", "done"]
    );
    assert!(out["answer"].as_str().unwrap().starts_with("In Tokyo it is 20"), "{}", out["answer"]);
    assert!(out["run_status"].as_str().unwrap().starts_with("Status: completed"), "{}", out["run_status"]);

    // 6. The agent's page: the server started, its tool called from a form built from its schema
    // (no model involved), the workflow shown, the export copied and offered for each client.
    assert!(
        out["server_status"].as_str().unwrap().starts_with("time-mcp-server — ready"),
        "{}",
        out["server_status"]
    );
    assert!(
        out["tool_result"].as_str().unwrap().contains("\"timezone\": \"Asia/Tokyo\""),
        "{}",
        out["tool_result"]
    );
    assert!(out["workflow"].as_str().unwrap().contains("What time is it in Tokyo?"), "{}", out["workflow"]);
    let copied: Value = serde_json::from_str(out["clipboard"].as_str().unwrap()).unwrap();
    assert!(copied["mcpServers"]["time-mcp-server"].is_object(), "{copied}");
    assert!(out["fast_agent"].as_str().unwrap().contains("time-mcp-server"), "{}", out["fast_agent"]);
    assert!(!out["needs_model_shown"].as_bool().unwrap(), "a model is configured here");
    // 7. The filter keeps the time agent only; once deleted, it is gone from the API too, and the
    // other agent stays.
    assert_eq!(out["filtered"], serde_json::json!([time_agent]));
    assert_eq!(out["deleted"], time_agent);
    assert_eq!(out["left"], serde_json::json!([agent]));
    assert_eq!(server.get(&format!("/api/agents/{time_agent}")).await.0, 404);
    // Without a model, the page says so and Run is disabled before any click.
    assert!(
        out["no_model_notice"].as_str().unwrap().contains("OPENAI_API_KEY"),
        "{}",
        out["no_model_notice"]
    );
    assert_eq!(out["no_model_run_disabled"], true);
    // A conversation deleted from the page is gone with its agent.
    assert_eq!(out["bare_after"], serde_json::json!({"messages": 0, "agents": 0, "delete_hidden": true}));
    let (bare_session, bare_agent) =
        (out["bare_session"].as_str().unwrap(), out["bare_agent"].as_str().unwrap());
    assert_eq!(bare.get(&format!("/api/sessions/{bare_session}")).await.0, 404);
    assert_eq!(bare.get(&format!("/api/agents/{bare_agent}")).await.0, 404);
    // A favicon of the page's own: no request for /favicon.ico (which would answer 404).
    let requested: Vec<&str> =
        out["requested"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    assert!(!requested.iter().any(|u| u.contains("favicon")), "{requested:?}");

    // Accessibility: every control is labelled, all text meets WCAG AA contrast in both colour
    // schemes (the flow itself was driven by labels and the keyboard); nothing failed in the console.
    assert_eq!(out["unlabeled"], serde_json::json!([]), "controls without a label");
    assert_eq!(out["low_contrast"], serde_json::json!([]), "text under WCAG AA contrast");
    assert_eq!(out["low_contrast_dark"], serde_json::json!([]), "text under WCAG AA contrast (dark scheme)");
    let console: Vec<&str> = out["console"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    assert!(
        !console.iter().any(|m| m.contains("Content Security Policy") || m.contains("Uncaught")),
        "{console:?}"
    );
    for step in ["1-request", "2-servers", "3-credentials", "4-agent-created", "5-run", "6-agent"] {
        let png = std::fs::read(shots.join(format!("{step}.png"))).unwrap();
        assert!(png.starts_with(b"\x89PNG") && png.len() > 10_000, "{step}.png");
    }
    server.stop().await;
    bare.stop().await;
}
