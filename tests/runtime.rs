//! The agent runtime against real MCP servers, launched from the default catalog's own launch
//! specs: npm `@modelcontextprotocol/server-everything` and `server-memory` through `npx`, PyPI
//! `mcp-server-time` through `uvx`; `server-slack` without its token (exits at start); and a
//! script that never answers. The LLM loop talks to a local fake speaking the OpenAI wire
//! protocol. Every test ends with a process-table check: nothing started is left running.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use axum::Json;
use axum::routing::post;
use common::{Db, TestServer};
use dynamcp::config::ServeArgs;
use dynamcp::llm::Provider;
use dynamcp::vault::Secret;
use serde_json::{Value, json};
use uuid::Uuid;

const FROM_DEFAULT_CATALOG: &[&str] =
    &["everything-mcp-server", "memory-mcp-server", "time-mcp-server", "slack-mcp-server"];

/// A catalog record whose launch spec runs `tests/fixtures/silent_server.py` with `python3`.
fn silent_record() -> Value {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/silent_server.py");
    json!({
        "id": "silent-server", "name": "Silent Server", "description": "Starts, then never answers.",
        "tools": [], "credentials": [],
        "launch": [{"kind": "command", "transport": "stdio", "command": "python3", "args": [script]}]
    })
}

/// The default catalog's memory server, with its `MEMORY_FILE_PATH` declared as a setting.
fn memory_in_home() -> Value {
    json!({
        "id": "memory-in-home", "name": "Memory", "description": "The reference memory server.",
        "tools": [], "credentials": [{"name": "MEMORY_FILE_PATH", "kind": "env", "required": false}],
        "launch": [{"kind": "npm", "transport": "stdio", "command": "npx",
                    "args": ["-y", "@modelcontextprotocol/server-memory"]}]
    })
}

async fn start(tune: impl FnOnce(&mut ServeArgs)) -> TestServer {
    let (mut args, dir) = common::test_args(Db::Sqlite).await;
    common::import_default_records(&args, FROM_DEFAULT_CATALOG, &[silent_record(), memory_in_home()]).await;
    args.runtime.runtimes = ["npx", "uvx", "python3"].map(str::to_owned).to_vec();
    tune(&mut args);
    TestServer::start_with(args, dir).await
}

/// An agent over `servers`, stored as the planner stores one. The runtime reads only the server
/// ids from `mcp_config`; what it launches comes from the catalog.
async fn agent_with(server: &TestServer, servers: &[&str]) -> (Uuid, Uuid) {
    common::store_agent(server, servers, "Use the tools to answer.", json!({})).await
}

/// Every process the test's service started (see `common::processes_with`): pid and command line.
fn processes_with(marker: &str) -> Vec<(u32, String)> {
    common::processes_with(marker).into_iter().map(|(pid, _, cmdline)| (pid, cmdline)).collect()
}

/// Waits (up to `within`) until no process mentions `marker`; returns what is left.
async fn left_behind(marker: &str, within: Duration) -> Vec<(u32, String)> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let left = processes_with(marker);
        if left.is_empty() || tokio::time::Instant::now() > deadline {
            return left;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Stops the server and checks that no process it started is left.
async fn stop_leaving_nothing(server: TestServer) {
    let marker = server.data_dir().to_string_lossy().into_owned();
    server.stop().await;
    assert_eq!(left_behind(&marker, Duration::from_secs(10)).await, vec![]);
}

/// `get_current_time` for Tokyo through the agent's time server.
async fn tokyo_time(server: &TestServer, agent: impl std::fmt::Display) -> (u16, Value) {
    server
        .post(
            &format!("/api/agents/{agent}/tools/call"),
            json!({"server": "time-mcp-server", "tool": "get_current_time", "arguments": {"timezone": "Asia/Tokyo"}}),
        )
        .await
}

fn environ(pid: u32) -> Vec<(String, String)> {
    let raw = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
    String::from_utf8_lossy(&raw)
        .split('\0')
        .filter_map(|kv| kv.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())))
        .collect()
}

fn tool_names(servers: &Value, server: &str) -> Vec<String> {
    let entry = servers.as_array().unwrap().iter().find(|s| s["server"] == server).unwrap();
    assert_eq!(entry["status"], "ready", "{entry}");
    entry["tools"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap().to_owned()).collect()
}

/// The text of a `tools/call` answer.
fn result_text(body: &Value) -> String {
    body["result"]["content"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["text"].as_str())
        .collect::<Vec<_>>()
        .join("\n")
}

/// `mcp-server-time`'s answer for Tokyo, checked against the clock: a real time, not a canned one.
fn assert_tokyo_now(text: &str) {
    let answer: Value = serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"));
    assert_eq!(answer["timezone"], "Asia/Tokyo", "{answer}");
    let at = chrono::DateTime::parse_from_rfc3339(answer["datetime"].as_str().unwrap()).unwrap();
    assert_eq!(at.offset().local_minus_utc(), 9 * 3600, "{answer}");
    let skew = (chrono::Utc::now() - at.with_timezone(&chrono::Utc)).num_seconds().abs();
    assert!(skew < 300, "the server's time is {skew} s off: {answer}");
}

#[tokio::test]
async fn real_servers_start_from_catalog_specs_list_tools_and_answer_calls() {
    let server = start(|_| {}).await;
    let marker = server.data_dir().to_string_lossy().into_owned();
    let (agent, session) =
        agent_with(&server, &["everything-mcp-server", "memory-in-home", "time-mcp-server"]).await;
    // The memory server keeps its graph beside its own code unless told otherwise; its package is
    // read-only in the sandbox, so its setting points it into its own home (as a plain setting:
    // the default catalog's record takes it for a file credential).
    let binding = dynamcp::vault::Binding {
        session_id: session,
        server: "memory-in-home",
        key: "MEMORY_FILE_PATH",
        kind: dynamcp::store::SecretKind::Env,
    };
    let sealed = server.vault.seal(binding, b"/home/agent/memory.json").unwrap();
    server.store.put_credentials(session, &[sealed]).await.unwrap();

    let (status, body) = server.get(&format!("/api/agents/{agent}/tools")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["agent_id"], agent.to_string());
    assert!(tool_names(&body["servers"], "everything-mcp-server").contains(&"echo".to_owned()), "{body}");
    let memory = tool_names(&body["servers"], "memory-in-home");
    assert!(
        memory.contains(&"create_entities".to_owned()) && memory.contains(&"read_graph".to_owned()),
        "{memory:?}"
    );
    assert_eq!(tool_names(&body["servers"], "time-mcp-server"), ["get_current_time", "convert_time"]);
    let time_tool = &body["servers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["server"] == "time-mcp-server")
        .unwrap()["tools"][0];
    assert_eq!(time_tool["inputSchema"]["required"], json!(["timezone"]), "tools carry their input schemas");

    // Each server is one process group: its sandbox, running the installed entry point of the
    // catalog's package, with an env built from nothing: its own HOME (its folder under the data
    // dir, bound at /home/agent), none of this test process's variables.
    let running = server.runtime.running().await;
    assert_eq!(running.len(), 3, "{running:?}");
    for r in &running {
        let pid = r.pid.unwrap();
        let cmdline = std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap().replace('\0', " ");
        let expected = if r.server == "time-mcp-server" {
            "-- /opt/package/venv/bin/mcp-server-time"
        } else {
            "-- /opt/package/node_modules/.bin/mcp-server-"
        };
        assert!(cmdline.starts_with("/usr/bin/bwrap --unshare-user"), "{}: {cmdline}", r.server);
        assert!(cmdline.contains(expected), "{}: {cmdline}", r.server);
        let home = format!("{marker}/runtime/agents/{agent}/{}/home /home/agent", r.server);
        assert!(cmdline.contains(&home), "{}: {cmdline}", r.server);
        let env = environ(pid);
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        assert_eq!(get("HOME").as_deref(), Some("/home/agent"), "{env:?}");
        let leaked: Vec<&String> = env
            .iter()
            .map(|(k, _)| k)
            .filter(|k| k.starts_with("CARGO") || k.starts_with("NEXTEST"))
            .collect();
        assert!(leaked.is_empty(), "the test process's env leaked into {}: {leaked:?}", r.server);
        assert!(!get("PATH").unwrap().contains(".cargo"), "{:?}", get("PATH"));
    }

    let (status, body) = server
        .post(
            &format!("/api/agents/{agent}/tools/call"),
            json!({"server": "everything-mcp-server", "tool": "echo", "arguments": {"message": "hello runtime"}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["is_error"], false);
    assert!(result_text(&body).contains("hello runtime"), "{body}");

    let entity = format!("dynamcp-{}", Uuid::new_v4().simple());
    let (status, body) = server
        .post(
            &format!("/api/agents/{agent}/tools/call"),
            json!({"server": "memory-in-home", "tool": "create_entities", "arguments": {"entities": [
                {"name": entity, "entityType": "project", "observations": ["runs MCP servers"]}
            ]}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = server
        .post(
            &format!("/api/agents/{agent}/tools/call"),
            json!({"server": "memory-in-home", "tool": "read_graph"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(result_text(&body).contains(&entity), "the memory server keeps what it was told: {body}");
    let kept = server.data_dir().join(format!("runtime/agents/{agent}/memory-in-home/home/memory.json"));
    assert!(std::fs::read_to_string(&kept).unwrap().contains(&entity), "in its own home");

    let (status, body) = tokyo_time(&server, &agent).await;
    assert_eq!(status, 200, "{body}");
    assert_tokyo_now(&result_text(&body));

    // Bad calls: checked before they reach a server, each with the standard error body.
    let call_path = format!("/api/agents/{agent}/tools/call");
    let call = |body: Value| server.post(&call_path, body);
    let (status, body) =
        call(json!({"server": "time-mcp-server", "tool": "get_current_time", "arguments": {"timezone": 9}}))
            .await;
    assert_eq!(
        (status, body),
        (
            422,
            common::error_body(
                "invalid_arguments",
                "invalid arguments for time-mcp-server/get_current_time: arguments.timezone must be string (got number)",
            )
        )
    );
    let (status, body) = call(json!({"server": "time-mcp-server", "tool": "get_current_time"})).await;
    assert_eq!(
        (status, body["error"]["message"].as_str().unwrap()),
        (422, "invalid arguments for time-mcp-server/get_current_time: arguments.timezone is required")
    );
    let (status, body) = call(json!({"server": "time-mcp-server", "tool": "rm_rf"})).await;
    assert_eq!(
        (status, body),
        (
            404,
            common::error_body(
                "tool_not_found",
                "server \"time-mcp-server\" has no tool \"rm_rf\" (its tools: get_current_time, convert_time)",
            )
        )
    );
    let (status, body) = call(json!({"server": "slack-mcp-server", "tool": "x"})).await;
    assert_eq!(status, 404, "a catalog server the agent does not have is not launched: {body}");
    assert_eq!(body["error"]["code"], "server_not_in_agent");
    let (status, body) =
        call(json!({"server": "time-mcp-server", "tool": "get_current_time", "command": "sh"})).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (422, Some("invalid_request")),
        "unknown fields are refused"
    );
    let missing = Uuid::new_v4();
    let (status, body) = server.get(&format!("/api/agents/{missing}/tools")).await;
    assert_eq!(
        (status, body),
        (404, common::error_body("agent_not_found", &format!("agent {missing} not found")))
    );

    // Deleting the agent stops its servers; shutting down leaves nothing behind.
    let (status, _) = server.delete(&format!("/api/agents/{agent}")).await;
    assert_eq!(status, 204);
    assert!(server.runtime.running().await.is_empty());
    stop_leaving_nothing(server).await;
}

#[tokio::test]
async fn a_server_that_exits_at_start_fails_cleanly() {
    let server = start(|_| {}).await;
    let marker = server.data_dir().to_string_lossy().into_owned();
    let (agent, _) = agent_with(&server, &["slack-mcp-server", "time-mcp-server"]).await;

    let (status, body) = server.get(&format!("/api/agents/{agent}/tools")).await;
    assert_eq!(status, 200, "{body}");
    let slack =
        body["servers"].as_array().unwrap().iter().find(|s| s["server"] == "slack-mcp-server").unwrap();
    assert_eq!(slack["status"], "error");
    assert_eq!(slack["code"], "server_start_failed");
    let error = slack["error"].as_str().unwrap();
    assert!(error.contains("SLACK_BOT_TOKEN"), "the server's own words reach the user: {error}");
    // The other server is unaffected.
    assert_eq!(tool_names(&body["servers"], "time-mcp-server"), ["get_current_time", "convert_time"]);

    let (status, body) = server
        .post(
            &format!("/api/agents/{agent}/tools/call"),
            json!({"server": "slack-mcp-server", "tool": "slack_list_channels"}),
        )
        .await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["error"]["code"], "server_start_failed");

    let leftovers = processes_with(&marker);
    assert!(leftovers.iter().all(|(_, cmd)| !cmd.contains("server-slack")), "{leftovers:?}");
    stop_leaving_nothing(server).await;
}

#[tokio::test]
async fn a_server_that_never_answers_times_out_and_its_whole_group_is_stopped() {
    let server = start(|args| {
        args.runtime.server_first_start_secs = 2;
        args.runtime.server_start_secs = 2;
    })
    .await;
    let marker = server.data_dir().to_string_lossy().into_owned();
    let (agent, _) = agent_with(&server, &["silent-server"]).await;

    let started = std::time::Instant::now();
    let (status, body) = server.get(&format!("/api/agents/{agent}/tools")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["servers"],
        json!([{"server": "silent-server", "status": "error", "tools": [], "code": "server_start_timeout",
                "error": "server \"silent-server\" did not start within 2 s"}])
    );
    assert!(started.elapsed() < Duration::from_secs(20), "{:?}", started.elapsed());
    // The script and the `sleep 600` it spawned are both gone: the group was killed.
    assert_eq!(left_behind(&marker, Duration::from_secs(10)).await, vec![]);

    let (status, body) = server
        .post(
            &format!("/api/agents/{agent}/tools/call"),
            json!({"server": "silent-server", "tool": "anything"}),
        )
        .await;
    assert_eq!((status, body["error"]["code"].as_str()), (504, Some("server_start_timeout")));
    stop_leaving_nothing(server).await;
}

#[tokio::test]
async fn the_model_calls_a_real_tool_and_answers_streamed_stored_and_restarted_after_a_crash() {
    let (fake, url) = common::fake_model().await;
    let server = start(|args| {
        args.llm.llm_provider = Provider::Openai;
        args.llm.llm_base_url = Some(url.clone());
        args.llm.llm_model = Some("fake-model".into());
        args.llm.openai_api_key = Some(Secret::new("sk-test"));
    })
    .await;
    let (agent, session) = agent_with(&server, &["time-mcp-server"]).await;

    let response = server
        .http
        .post(server.url(&format!("/api/agents/{agent}/run")))
        .json(&json!({"input": "What time is it in Tokyo?"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let events = common::sse_events(&response.text().await.unwrap());
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        ["server_starting", "server_ready", "llm_message", "tool_call", "tool_result", "llm_message", "done"],
        "{events:?}"
    );
    assert_eq!(events[0].1["server"], "time-mcp-server");
    assert_eq!(events[1].1["tools"], 2);
    assert_eq!(
        events[3].1["arguments"],
        json!({"timezone": "[redacted]"}),
        "argument values never reach events"
    );
    assert_eq!(events[4].1["is_error"], false);
    assert_tokyo_now(events[4].1["content"].as_str().unwrap());
    let done = &events[6].1;
    assert_eq!(done["status"], "completed");
    assert!(done["answer"].as_str().unwrap().starts_with("In Tokyo it is 20"), "{done}");
    assert_eq!(
        done["usage"],
        json!({"input_tokens": 100, "output_tokens": 20, "cache_read_tokens": 0, "cache_write_tokens": 0})
    );
    assert_eq!(done["rounds"], 2);

    // The model saw the server's tools by qualified name, and the real result.
    let seen = fake.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2);
    let offered: Vec<&str> = seen[0]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["function"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(offered, ["time-mcp-server__get_current_time", "time-mcp-server__convert_time"]);
    assert_tokyo_now(seen[1]["messages"].as_array().unwrap().last().unwrap()["content"].as_str().unwrap());

    // The run is in the conversation: the input, then the answer with its events.
    let (_, body) = server.get(&format!("/api/sessions/{session}")).await;
    let messages = body["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 2, "{body}");
    assert_eq!(
        (messages[0]["role"].as_str(), messages[0]["message"].as_str()),
        (Some("user"), Some("What time is it in Tokyo?"))
    );
    assert_eq!(messages[1]["role"], "assistant");
    assert_eq!(messages[1]["message"], done["answer"]);
    assert_eq!(messages[1]["metadata"]["status"], "completed");
    assert_eq!(messages[1]["metadata"]["run_id"], done["run_id"]);
    assert_eq!(messages[1]["metadata"]["events"].as_array().unwrap().len(), 7);

    // Crash: kill the server's whole process group. The next run says so and starts it again.
    let before = server.runtime.running().await;
    let pid = before[0].pid.unwrap();
    nix_kill_group(pid);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !server.runtime.running().await.is_empty() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, body) = server.run_agent(agent, "And now?").await;
    assert_eq!(status, 200, "{body}");
    let names: Vec<&str> =
        body["events"].as_array().unwrap().iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            "error",
            "server_starting",
            "server_ready",
            "llm_message",
            "tool_call",
            "tool_result",
            "llm_message",
            "done"
        ],
        "{body}"
    );
    assert_eq!(body["events"][0]["code"], "server_crashed");
    assert_eq!(body["status"], "completed");
    let after = server.runtime.running().await;
    assert_ne!(after[0].pid, Some(pid), "a new process");

    stop_leaving_nothing(server).await;
}

fn nix_kill_group(pid: u32) {
    let status =
        std::process::Command::new("kill").args(["-KILL", "--", &format!("-{pid}")]).status().unwrap();
    assert!(status.success());
}

#[tokio::test]
async fn without_a_model_runs_are_refused_but_tools_work() {
    let server = start(|_| {}).await;
    let (agent, _) = agent_with(&server, &["time-mcp-server"]).await;
    let (status, body) =
        server.post(&format!("/api/agents/{agent}/run"), json!({"input": "What time is it?"})).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "llm_not_configured");
    assert!(body["error"]["message"].as_str().unwrap().contains("the tools endpoints work without one"));
    let (status, body) = server.post(&format!("/api/agents/{agent}/run"), json!({"input": "  "})).await;
    assert_eq!((status, body["error"]["code"].as_str()), (422, Some("empty_input")));
    let (status, body) = server.post(&format!("/api/agents/{agent}/run"), json!({"prompt": "x"})).await;
    assert_eq!(status, 422, "{body}");
    let (status, body) = server
        .post(
            &format!("/api/agents/{agent}/tools/call"),
            json!({"server": "time-mcp-server", "tool": "convert_time",
                   "arguments": {"source_timezone": "Europe/Paris", "time": "12:00", "target_timezone": "Asia/Tokyo"}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(result_text(&body).contains("\"Asia/Tokyo\""), "{body}");
    server.stop().await;
}

/// The end-to-end flow, offline: chat → agent → a real tool call through the runtime.
#[tokio::test]
async fn chat_to_a_time_agent_to_the_real_time_in_tokyo() {
    let server = TestServer::start_with_fixture_catalog(Db::Sqlite).await;
    let (status, body) = server.post("/api/chat", json!({"message": "what time is it in Tokyo"})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "success");
    assert_eq!(body["agent_created"], true);
    let agent = body["agent_id"].as_str().unwrap().to_owned();
    let (status, body) = tokyo_time(&server, &agent).await;
    assert_eq!(status, 200, "{body}");
    assert_tokyo_now(&result_text(&body));
    stop_leaving_nothing(server).await;
}

#[tokio::test]
async fn idle_servers_stop_and_the_process_cap_stops_the_idlest_to_make_room() {
    let server = start(|args| {
        args.runtime.server_idle_secs = 1;
        args.runtime.max_servers = 1;
    })
    .await;
    let marker = server.data_dir().to_string_lossy().into_owned();
    let (first, _) = agent_with(&server, &["time-mcp-server"]).await;
    let (second, _) = agent_with(&server, &["everything-mcp-server"]).await;

    let (status, body) = server.get(&format!("/api/agents/{first}/tools")).await;
    assert_eq!(status, 200, "{body}");
    let running = server.runtime.running().await;
    assert_eq!(
        running.iter().map(|r| (r.agent, r.server.as_str())).collect::<Vec<_>>(),
        [(first, "time-mcp-server")]
    );
    let first_pid = running[0].pid.unwrap();

    // One process slot: the second agent's server takes the idle one's place.
    let (status, body) = server.get(&format!("/api/agents/{second}/tools")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["servers"][0]["status"], "ready", "{body}");
    let running = server.runtime.running().await;
    assert_eq!(
        running.iter().map(|r| (r.agent, r.server.as_str())).collect::<Vec<_>>(),
        [(second, "everything-mcp-server")]
    );
    assert!(
        !std::path::Path::new(&format!("/proc/{first_pid}")).exists(),
        "the evicted server's process is gone"
    );

    // Unused for a second: stopped, process group and all.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !server.runtime.running().await.is_empty() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(server.runtime.running().await.is_empty());
    assert_eq!(left_behind(&marker, Duration::from_secs(10)).await, vec![]);
    // And it starts again when needed.
    let (status, body) = server
        .post(&format!("/api/agents/{first}/tools/call"), json!({"server": "time-mcp-server", "tool": "get_current_time", "arguments": {"timezone": "Asia/Tokyo"}}))
        .await;
    assert_eq!(status, 200, "{body}");
    stop_leaving_nothing(server).await;
}

/// A fake model that never answers in time: the run is waiting on it when the client leaves.
async fn slow_model() -> String {
    let app = axum::Router::new().route(
        "/v1/chat/completions",
        post(|| async {
            tokio::time::sleep(Duration::from_secs(60)).await;
            Json(json!({}))
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

#[tokio::test]
async fn a_client_that_disconnects_cancels_its_run_and_the_run_is_stored_as_cancelled() {
    let url = slow_model().await;
    let server = start(|args| {
        args.llm.llm_provider = Provider::Openai;
        args.llm.llm_base_url = Some(url.clone());
        args.llm.openai_api_key = Some(Secret::new("sk-test"));
        args.llm.llm_timeout_secs = 120;
    })
    .await;
    let (agent, session) = agent_with(&server, &["time-mcp-server"]).await;
    let mut response = server
        .http
        .post(server.url(&format!("/api/agents/{agent}/run")))
        .json(&json!({"input": "What time is it in Tokyo?"}))
        .send()
        .await
        .unwrap();
    let mut seen = String::new();
    while !seen.contains("event: server_ready") {
        let chunk =
            tokio::time::timeout(Duration::from_secs(60), response.chunk()).await.unwrap().unwrap().unwrap();
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    drop(response);

    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let stored = loop {
        let (_, body) = server.get(&format!("/api/sessions/{session}")).await;
        let messages = body["messages"].as_array().unwrap().clone();
        if messages.len() == 2 || tokio::time::Instant::now() > deadline {
            break messages;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(stored.len(), 2, "{stored:?}");
    assert_eq!(stored[1]["metadata"]["status"], "cancelled");
    assert_eq!(stored[1]["message"], "The run was cancelled: the client disconnected.");
    let events: Vec<&str> = stored[1]["metadata"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(events, ["server_starting", "server_ready", "done"]);
    server.stop().await;
}

#[tokio::test]
async fn a_remote_server_over_streamable_http() {
    // The peer: server-everything in its streamable-HTTP mode, started by the test itself.
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    let cache = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("npx-cache/npm");
    let mut peer = tokio::process::Command::new("npx")
        .args(["-y", "@modelcontextprotocol/server-everything", "streamableHttp"])
        .env("PORT", port.to_string())
        .env("npm_config_cache", &cache)
        .process_group(0)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}/mcp");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
        assert!(tokio::time::Instant::now() < deadline, "the peer did not start");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let record = json!({
        "id": "everything-remote", "name": "Everything (remote)", "description": "server-everything over HTTP",
        "tools": [], "credentials": [],
        "launch": [{"kind": "remote", "transport": "streamable-http", "url": url}]
    });
    // A loopback URL is refused unless the operator allowed that host (SSRF guard).
    let echo_over_http = |allowed: Vec<String>| {
        let record = record.clone();
        async move {
            let (mut args, dir) = common::test_args(Db::Sqlite).await;
            common::import_default_records(&args, &[], &[record]).await;
            args.runtime.runtimes = vec!["remote".to_owned()];
            args.runtime.remote_allow_hosts = allowed;
            let server = TestServer::start_with(args, dir).await;
            let (agent, _) = agent_with(&server, &["everything-remote"]).await;
            let answer = server
                .post(
                    &format!("/api/agents/{agent}/tools/call"),
                    json!({"server": "everything-remote", "tool": "echo", "arguments": {"message": "over http"}}),
                )
                .await;
            server.stop().await;
            answer
        }
    };
    let (status, body) = echo_over_http(Vec::new()).await;
    assert_eq!((status, body["error"]["code"].as_str()), (422, Some("remote_address_refused")), "{body}");
    let (status, body) = echo_over_http(vec!["127.0.0.1".to_owned()]).await;
    assert_eq!(status, 200, "{body}");
    assert!(result_text(&body).contains("over http"), "{body}");
    if let Some(pid) = peer.id() {
        nix_kill_group(pid);
    }
    let _ = peer.wait().await;
}

#[tokio::test]
async fn each_server_gets_only_its_own_credentials_and_never_shows_them() {
    // server-everything as the default catalog has it, declaring one credential.
    let mut with_token = silent_record();
    with_token["id"] = json!("everything-with-token");
    with_token["launch"] = json!([{"kind": "npm", "transport": "stdio", "command": "npx",
        "args": ["-y", "@modelcontextprotocol/server-everything"]}]);
    with_token["credentials"] = json!([{"name": "EVERYTHING_TOKEN", "required": true, "secret": true}]);
    let (mut args, dir) = common::test_args(Db::Sqlite).await;
    common::import_default_records(&args, &["time-mcp-server"], &[with_token]).await;
    args.runtime.runtimes = vec!["npx".into(), "uvx".into()];
    let server = TestServer::start_with(args, dir).await;
    let (agent, session) = agent_with(&server, &["everything-with-token", "time-mcp-server"]).await;
    let canary = format!("canary-{}", Uuid::new_v4().simple());
    let binding = dynamcp::vault::Binding {
        session_id: session,
        server: "everything-with-token",
        key: "EVERYTHING_TOKEN",
        kind: dynamcp::store::SecretKind::Env,
    };
    let sealed = server.vault.seal(binding, canary.as_bytes()).unwrap();
    server.store.put_credentials(session, &[sealed]).await.unwrap();

    let (status, body) = server.get(&format!("/api/agents/{agent}/tools")).await;
    assert_eq!(status, 200, "{body}");
    for r in server.runtime.running().await {
        let env = environ(r.pid.unwrap());
        let token = env.iter().find(|(k, _)| k == "EVERYTHING_TOKEN").map(|(_, v)| v.as_str());
        let expected = (r.server == "everything-with-token").then_some(canary.as_str());
        assert_eq!(token, expected, "{}", r.server);
        let anywhere = env.iter().any(|(_, v)| v.contains(&canary));
        assert_eq!(anywhere, expected.is_some(), "{}", r.server);
        let cmdline = std::fs::read_to_string(format!("/proc/{}/cmdline", r.pid.unwrap())).unwrap();
        assert!(!cmdline.contains(&canary));
    }

    // A tool that echoes the credential back: the answer has it blanked out.
    let (status, body) = server
        .post(
            &format!("/api/agents/{agent}/tools/call"),
            json!({"server": "everything-with-token", "tool": "echo", "arguments": {"message": format!("token is {canary}")}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(result_text(&body), "Echo: token is [redacted]");
    server.stop().await;
}
