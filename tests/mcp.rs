//! dynamcp as an MCP server, driven by real MCP clients: the official Python SDK (PyPI `mcp`) over
//! stdio (`dynamcp mcp`, the built binary) and over streamable HTTP (`/mcp` of a running service,
//! with API keys and tenants), and the MCP Inspector CLI (npm `@modelcontextprotocol/inspector`)
//! over both transports. The catalog holds records copied verbatim from the default catalog; the
//! agent's time server is the real PyPI `mcp-server-time`, started through `uvx`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{Db, TestServer};
use dynamcp::access::{Tenant, create_key};
use dynamcp::config::{PlannerChoice, ServeArgs};
use dynamcp::llm::Provider;
use dynamcp::vault::Secret;
use serde_json::{Value, json};

const RECORDS: &[&str] = &["time-mcp-server", "gmail-mcp-2", "google-sheets-mcp-5", "everything-mcp-server"];
const TOOLS: [&str; 7] = [
    "search_servers",
    "get_server",
    "plan_workflow",
    "create_agent",
    "list_agents",
    "run_agent",
    "call_agent_tool",
];
/// The Inspector release the tests drive (fetched once into the shared npm cache).
const INSPECTOR: &str = "@modelcontextprotocol/inspector@2.12.0";

fn package_cache() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("mcp-package-cache")
}

async fn args_with_records() -> (ServeArgs, tempfile::TempDir) {
    let (mut args, dir) = common::test_args(Db::Sqlite).await;
    common::import_default_records(&args, RECORDS, &[]).await;
    args.runtime.runtimes = ["npx", "uvx"].map(str::to_owned).to_vec();
    (args, dir)
}

/// The environment `dynamcp mcp` reads its settings from (the same variables as `serve`).
fn dynamcp_env(data_dir: &Path) -> Vec<(String, String)> {
    [
        ("DYNAMCP_DATA_DIR", data_dir.display().to_string()),
        ("DYNAMCP_NO_MODEL", "true".to_owned()),
        ("DYNAMCP_DEFAULT_CATALOG", "false".to_owned()),
        ("DYNAMCP_RUNTIMES", "npx,uvx".to_owned()),
        (
            "DYNAMCP_PACKAGE_DIR",
            Path::new(env!("CARGO_TARGET_TMPDIR")).join("mcp-package-store").display().to_string(),
        ),
        ("DYNAMCP_LOG", "warn".to_owned()),
        // The Gmail → Sheets records here name unpublished packages (tests/verify.rs covers
        // what verification does with those); this file tests the MCP face.
        ("DYNAMCP_VERIFY_SERVERS", "false".to_owned()),
    ]
    .map(|(k, v)| (k.to_owned(), v))
    .to_vec()
}

/// Runs `tests/fixtures/mcp_client.py` and parses what it printed.
fn python_client(args: &[&str], env: &[(String, String)]) -> Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/mcp_client.py");
    let output = Command::new("python3")
        .arg(script)
        .args(args)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .output()
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "the Python MCP client failed:\n{stderr}\n{stdout}");
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("bad JSON ({e}): {stdout}\n{stderr}"))
}

fn structured<'a>(out: &'a Value, step: &str) -> &'a Value {
    assert_eq!(out[step]["isError"], false, "{step}: {}", out[step]);
    &out[step]["structured"]
}

fn error_code<'a>(out: &'a Value, step: &str) -> &'a str {
    assert_eq!(out[step]["isError"], true, "{step}: {}", out[step]);
    out[step]["structured"]["error"]["code"].as_str().unwrap_or_else(|| panic!("{step}: {}", out[step]))
}

fn assert_tools_listed(out: &Value) {
    let tools = out["tools"].as_array().unwrap();
    let names: Vec<&str> = tools.iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(names.len(), TOOLS.len(), "{names:?}");
    for name in TOOLS {
        let tool = tools.iter().find(|t| t["name"] == name).unwrap_or_else(|| panic!("{name} missing"));
        assert_eq!(tool["inputSchema"]["type"], "object", "{name}");
        assert_eq!(tool["outputSchema"]["type"], "object", "{name}: results are structured");
        assert!(!tool["description"].as_str().unwrap().is_empty(), "{name}");
        // No tool can take a credential: every input schema is closed, and none names one.
        assert_eq!(tool["inputSchema"]["additionalProperties"], false, "{name}");
        let properties =
            tool["inputSchema"]["properties"].as_object().map(|p| p.keys().cloned().collect::<Vec<_>>());
        assert!(
            !properties.unwrap_or_default().iter().any(|p| p.contains("credential") || p.contains("secret")),
            "{name} takes no credential"
        );
    }
    let search = tools.iter().find(|t| t["name"] == "search_servers").unwrap();
    assert_eq!(search["inputSchema"]["required"], json!(["query"]));
}

#[tokio::test]
async fn python_sdk_over_stdio_searches_plans_creates_and_calls_an_agent_tool() {
    let (_args, dir) = args_with_records().await;
    let env = dynamcp_env(dir.path());
    let out = tokio::task::spawn_blocking(move || {
        python_client(&["stdio", env!("CARGO_BIN_EXE_dynamcp"), "mcp"], &env)
    })
    .await
    .unwrap();

    assert_eq!(out["server"], "dynamcp");
    assert!(out["instructions"].as_str().unwrap().contains("never send credentials"));
    assert_tools_listed(&out);

    let results = structured(&out, "search")["results"].as_array().unwrap();
    assert_eq!(results[0]["id"], "time-mcp-server", "{results:?}");
    assert_eq!(results[0]["runnable"], true);
    assert!(results[0]["matched_tools"].as_array().unwrap().iter().any(|t| t == "get_current_time"));
    assert_eq!(error_code(&out, "search_bad_limit"), "invalid_request");

    let server = structured(&out, "get_server");
    assert_eq!(server["runnable"], true);
    assert_eq!(server["server"]["id"], "time-mcp-server");
    assert!(server["server"]["tools"].as_array().unwrap().iter().any(|t| t["name"] == "get_current_time"));
    assert_eq!(error_code(&out, "get_missing"), "server_not_found");

    // The Gmail → Sheets plan: both servers, and what they need, without writing anything.
    let plan = structured(&out, "plan");
    let chosen: Vec<&str> =
        plan["needs"].as_array().unwrap().iter().filter_map(|n| n["server"]["id"].as_str()).collect();
    assert!(chosen.contains(&"gmail-mcp-2") && chosen.contains(&"google-sheets-mcp-5"), "{plan}");
    let needed: Vec<(&str, &str)> = plan["required_credentials"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["mcp_server"].as_str().unwrap(), c["key"].as_str().unwrap()))
        .collect();
    assert!(needed.contains(&("gmail-mcp-2", "VALID_API_KEY")), "{needed:?}");
    assert!(needed.contains(&("google-sheets-mcp-5", "GOOGLE_ACCESS_TOKEN")), "{needed:?}");
    assert!(plan["required_credentials"][0]["instructions"].as_str().unwrap().contains("1."));

    // Creating it: pending, with where the user enters the credentials (never through MCP).
    let pending = structured(&out, "create_pending");
    assert_eq!(pending["status"], "pending_credentials");
    assert_eq!(pending["agent_created"], false);
    let session = pending["session_id"].as_str().unwrap();
    let entry = &pending["credentials_entry"];
    assert_eq!(entry["playground_url"], format!("http://127.0.0.1:8000/?session={session}"));
    assert_eq!(entry["http_route"], "http://127.0.0.1:8000/api/chat");
    assert_eq!(entry["files_route"], format!("http://127.0.0.1:8000/api/sessions/{session}/files"));
    // A credential sent as an argument is refused by the schema, and goes nowhere.
    let refused = &out["create_with_credentials"];
    let refusal = refused["protocolError"].as_str().or(refused["text"][0].as_str()).unwrap_or_default();
    assert!(refusal.contains("credentials"), "{refused}");
    assert!(!refused.to_string().contains("canary-through-mcp"), "the refusal does not echo the value");
    let resumed = structured(&out, "resume_pending");
    assert_eq!(
        (resumed["status"].as_str(), resumed["session_id"].as_str()),
        (Some("pending_credentials"), Some(session))
    );

    // A credential-free workflow becomes an agent at once; its real tool answers.
    let created = structured(&out, "create_time");
    assert_eq!(
        (created["status"].as_str(), created["agent_created"].as_bool()),
        (Some("success"), Some(true))
    );
    assert!(created["credentials_entry"].is_null());
    let agent = created["agent_id"].as_str().unwrap();
    let listed = structured(&out, "list");
    assert_eq!(listed["total"], 1);
    assert_eq!(listed["agents"][0]["id"], agent);
    assert_eq!(listed["agents"][0]["servers"], json!(["time-mcp-server"]));
    let called = structured(&out, "call_tool");
    assert_eq!(called["is_error"], false);
    let text = called["result"]["content"][0]["text"].as_str().unwrap();
    let time: Value = serde_json::from_str(text).unwrap();
    assert_eq!(time["timezone"], "Asia/Tokyo", "{time}");
    assert_eq!(error_code(&out, "call_bad_args"), "invalid_arguments");
    // No model is configured: the run says so, in the API's error shape.
    assert_eq!(error_code(&out, "run"), "llm_not_configured");

    // The store behind the stdio server: the agent is there, and the refused credential is not.
    let db = std::fs::read(dir.path().join("dynamcp.db")).unwrap_or_default();
    assert!(!String::from_utf8_lossy(&db).contains("canary-through-mcp"));
}

#[tokio::test]
async fn python_sdk_over_http_acts_for_the_key_s_tenant_only_and_runs_its_agent() {
    let (mut args, dir) = args_with_records().await;
    // Agents run with a fake model speaking the OpenAI wire protocol; the offline planner plans.
    let (_fake, model_url) = common::fake_model().await;
    args.llm.llm_provider = Provider::Openai;
    args.llm.llm_base_url = Some(model_url);
    args.llm.llm_model = Some("fake-model".into());
    args.llm.openai_api_key = Some(Secret::new("sk-test"));
    args.llm.planner = PlannerChoice::Offline;
    let store = dynamcp::store::open(&args.store.settings()).await.unwrap();
    let tenant = |name: &str| Tenant::parse(name).unwrap();
    let (_, key_a) = create_key(store.as_ref(), &tenant("tenant-a"), "test").await.unwrap();
    let (_, key_b) = create_key(store.as_ref(), &tenant("tenant-b"), "test").await.unwrap();
    store.close().await;
    let server = TestServer::start_with(args, dir).await;
    let url = server.url("/mcp");

    // Without a key: 401 in the API's error shape, before any MCP handling.
    let response = server
        .http
        .post(&url)
        .header("accept", "application/json, text/event-stream")
        .json(&json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(response.headers()["www-authenticate"], "Bearer");
    assert_eq!(response.json::<Value>().await.unwrap()["error"]["code"], "unauthorized");

    let (a_url, a_key) = (url.clone(), key_a.expose().to_owned());
    let a = tokio::task::spawn_blocking(move || {
        python_client(&["http", &a_url, &a_key], &[("MCP_FLOW".to_owned(), "tenant:".to_owned())])
    })
    .await
    .unwrap();
    assert_tools_listed(&a);
    let agent_a = structured(&a, "create_time")["agent_id"].as_str().unwrap().to_owned();
    assert_eq!(structured(&a, "list")["total"], 1);
    // The run: the model called the real time server through the agent, and answered.
    let run = structured(&a, "run");
    assert_eq!(run["status"], "completed", "{run}");
    assert!(run["answer"].as_str().unwrap().starts_with("In Tokyo it is 20"), "{run}");
    let events: Vec<&str> =
        run["events"].as_array().unwrap().iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        events,
        ["server_starting", "server_ready", "llm_message", "tool_call", "tool_result", "llm_message", "done"]
    );

    let flow = format!("tenant:{agent_a}");
    let (b_url, b_key) = (url.clone(), key_b.expose().to_owned());
    let b = tokio::task::spawn_blocking(move || {
        python_client(&["http", &b_url, &b_key], &[("MCP_FLOW".to_owned(), flow)])
    })
    .await
    .unwrap();
    // Tenant b sees only its own agent; a's agent id is "not found", as over HTTP.
    let listed = structured(&b, "list");
    assert_eq!(listed["total"], 1);
    assert_ne!(listed["agents"][0]["id"], agent_a);
    assert_eq!(error_code(&b, "other_agent"), "agent_not_found");
    assert_eq!(structured(&b, "run")["status"], "completed");
    server.stop().await;
}

/// `npx @modelcontextprotocol/inspector --cli …`, with the shared npm cache; its JSON output (and
/// what it said on stderr).
fn inspector(args: &[&str], env: &[(String, String)]) -> (Value, String) {
    let output = Command::new("npx")
        .args(["-y", INSPECTOR, "--cli"])
        .args(args)
        .env("npm_config_cache", package_cache().join("npm"))
        .env("npm_config_update_notifier", "false")
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .output()
        .expect("npx runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "the Inspector CLI failed ({:?}):\n{stderr}\n{stdout}", output.status);
    let json =
        serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("bad JSON ({e}): {stdout}\n{stderr}"));
    (json, stderr.into_owned())
}

fn inspector_tool_names(listed: &Value) -> Vec<String> {
    let mut names: Vec<String> =
        listed["tools"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap().to_owned()).collect();
    names.sort();
    names
}

#[tokio::test]
async fn the_inspector_cli_lists_and_calls_tools_over_http_and_stdio() {
    let mut expected: Vec<String> = TOOLS.map(str::to_owned).to_vec();
    expected.sort();

    // Streamable HTTP, against the running service.
    let (args, dir) = args_with_records().await;
    let server = TestServer::start_with(args, dir).await;
    let url = server.url("/mcp");
    let (list_url, call_url) = (url.clone(), url.clone());
    let (listed, said) = tokio::task::spawn_blocking(move || {
        inspector(&[&list_url, "--transport", "http", "--method", "tools/list", "--strict"], &[])
    })
    .await
    .unwrap();
    assert_eq!(inspector_tool_names(&listed), expected);
    // `--strict` checks every schema for portability across clients and model providers.
    assert!(!said.contains("Warning") && !said.contains("Error"), "{said}");
    let (called, _) = tokio::task::spawn_blocking(move || {
        inspector(
            &[
                &call_url,
                "--transport",
                "http",
                "--method",
                "tools/call",
                "--tool-name",
                "search_servers",
                "--tool-arg",
                "query=what time is it in Tokyo",
                "--tool-arg",
                "limit=2",
            ],
            &[],
        )
    })
    .await
    .unwrap();
    assert_eq!(called["isError"], false, "{called}");
    let results = called["structuredContent"]["results"].as_array().unwrap();
    assert!((1..=2).contains(&results.len()), "{results:?}");
    assert_eq!(results[0]["id"], "time-mcp-server");
    server.stop().await;

    // stdio: the Inspector starts `dynamcp mcp` itself, settings through `-e`.
    let (_args, dir) = args_with_records().await;
    let mut cli: Vec<String> = Vec::new();
    for (key, value) in dynamcp_env(dir.path()) {
        cli.extend(["-e".to_owned(), format!("{key}={value}")]);
    }
    cli.extend(
        [env!("CARGO_BIN_EXE_dynamcp"), "mcp", "--method", "tools/call", "--tool-name", "plan_workflow"]
            .map(str::to_owned),
    );
    cli.extend(["--tool-arg".to_owned(), "request=what time is it in Tokyo".to_owned()]);
    let (planned, _) = tokio::task::spawn_blocking(move || {
        inspector(&cli.iter().map(String::as_str).collect::<Vec<_>>(), &[])
    })
    .await
    .unwrap();
    assert_eq!(planned["isError"], false, "{planned}");
    let needs = planned["structuredContent"]["needs"].as_array().unwrap();
    assert_eq!(needs[0]["server"]["id"], "time-mcp-server", "{planned}");
    assert_eq!(planned["structuredContent"]["required_credentials"], json!([]));
}
