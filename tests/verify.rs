//! Agents that start: a chat turn installs and starts each chosen server once (sandboxed, with no
//! credentials) before asking for anything, replaces one that does not start, keeps one that
//! needs its credentials to start, pins the version that started, and stores each check.
//!
//! Real packages throughout: PyPI `mcp-server-time` (the reference time server), npm
//! `@modelcontextprotocol/server-brave-search` (exits at start without `BRAVE_API_KEY`), npm
//! `mcp-time-server`, a name the catalog's launch spec guesses and that was never published (404),
//! and for the design's example the npm packages of the Gmail and Google Sheets servers chosen.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{Db, TestServer};
use dynamcp::config::ServeArgs;
use serde_json::{Value, json};

/// Records exactly as the shipped default catalog has them.
const RECORDS: &[&str] = &["time-mcp-server", "mcp-time-server", "brave-search-mcp-server"];

async fn start(tune: impl FnOnce(&mut ServeArgs)) -> TestServer {
    start_with(RECORDS, tune).await
}

async fn start_with(records: &[&str], tune: impl FnOnce(&mut ServeArgs)) -> TestServer {
    let (mut args, dir) = common::test_args(Db::Sqlite).await;
    common::import_default_records(&args, records, &[]).await;
    args.runtime.runtimes = ["npx", "uvx"].map(str::to_owned).to_vec();
    args.verify_servers = true;
    // Cold installs on a fresh machine take a while: no turn gives up on them here.
    args.request_timeout_secs = 600;
    args.verify_budget_secs = 300;
    tune(&mut args);
    TestServer::start_with(args, dir).await
}

fn result_text(body: &Value) -> String {
    body["result"]["content"].as_array().unwrap().iter().filter_map(|c| c["text"].as_str()).collect()
}

#[tokio::test]
async fn a_plan_is_verified_pinned_and_a_server_that_does_not_start_is_replaced() {
    let server = start(|_| {}).await;

    // 1. The reference time server is chosen, installed, started and listed before the answer.
    let (status, body) = server.post("/api/chat", json!({"message": "What time is it in Tokyo?"})).await;
    assert_eq!(status, 200, "{body}");
    let reply = body["reply"].as_str().unwrap();
    assert!(reply.contains("time-mcp-server"), "{reply}");
    assert!(reply.contains("Checked: started here with 2 tools (pypi mcp-server-time "), "{reply}");
    assert_eq!(body["status"], "success", "{body}");
    let session = body["session_id"].as_str().unwrap().to_owned();
    let agent_id: uuid::Uuid = body["agent_id"].as_str().unwrap().parse().unwrap();

    // The check is stored, with the live tools and the version that started.
    let stored = server.store.verifications("time-mcp-server").await.unwrap();
    assert_eq!(stored.len(), 1, "{stored:?}");
    assert_eq!(stored[0]["verdict"], "started");
    assert_eq!(stored[0]["tools"], json!(["get_current_time", "convert_time"]));
    let version = stored[0]["version"].as_str().unwrap().to_owned();
    let checked_at = stored[0]["checked_at"].clone();

    // The agent is pinned to that version before it ever runs, and its tool call answers with
    // Tokyo's real time.
    let agent = server.store.get_agent(agent_id).await.unwrap().unwrap();
    assert_eq!(
        agent.metadata["pins"]["time-mcp-server"],
        json!({"ecosystem": "pypi", "name": "mcp-server-time", "version": version})
    );
    let (status, body) = server
        .post(
            &format!("/api/agents/{agent_id}/tools/call"),
            json!({"server": "time-mcp-server", "tool": "get_current_time", "arguments": {"timezone": "Asia/Tokyo"}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let answer: Value = serde_json::from_str(&result_text(&body)).unwrap();
    assert_eq!(answer["timezone"], "Asia/Tokyo", "{answer}");
    let at = chrono::DateTime::parse_from_rfc3339(answer["datetime"].as_str().unwrap()).unwrap();
    assert_eq!(at.offset().local_minus_utc(), 9 * 3600, "{answer}");

    // 2. The user picks the unpublished package: npm's 404 is found before anything is asked, the
    // step goes back to the server that starts, and the reply says why.
    let (status, body) = server
        .post("/api/chat", json!({"message": "use mcp-time-server instead", "session_id": session}))
        .await;
    assert_eq!(status, 200, "{body}");
    let reply = body["reply"].as_str().unwrap();
    assert!(reply.contains("mcp-time-server") && reply.contains("does not start here"), "{reply}");
    assert!(reply.contains("404"), "npm's own answer is shown: {reply}");
    assert!(
        reply.starts_with("You asked for ")
            && reply.contains("(mcp-time-server) in step 1, but it does not start here (its package is not published (the registry answers 404)), so step 1 uses ")
            && reply.contains("(time-mcp-server)"),
        "the reply does not claim the pick was made: {reply}"
    );
    assert_eq!(body["status"], "success", "{body}");
    let failed = server.store.verifications("mcp-time-server").await.unwrap();
    assert_eq!(failed[0]["verdict"], "failed", "{failed:?}");

    // 3. Asked again, nothing is installed or started again: the stored checks answer.
    let (status, body) = server.post("/api/chat", json!({"message": "What time is it in Tokyo?"})).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["reply"].as_str().unwrap().contains("Checked: started here"), "{body}");
    let again = server.store.verifications("time-mcp-server").await.unwrap();
    assert_eq!((again.len(), &again[0]["checked_at"]), (1, &checked_at), "the stored check answered");
    server.stop().await;
}

#[tokio::test]
async fn a_server_that_needs_its_credentials_to_start_is_kept_and_its_key_asked() {
    let server = start(|_| {}).await;
    let (status, body) =
        server.post("/api/chat", json!({"message": "search the web with Brave for rust news"})).await;
    assert_eq!(status, 200, "{body}");
    let reply = body["reply"].as_str().unwrap();
    assert!(reply.contains("brave-search-mcp-server"), "{reply}");
    assert!(!reply.contains("does not start here"), "not a failure: {reply}");
    assert!(reply.contains("Checked: installed (npm @modelcontextprotocol/server-brave-search "), "{reply}");
    assert_eq!(body["status"], "pending_credentials");
    let keys: Vec<&str> = body["required_credentials"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["credential_key"].as_str())
        .collect();
    assert_eq!(keys, ["BRAVE_API_KEY"]);
    let stored = server.store.verifications("brave-search-mcp-server").await.unwrap();
    assert_eq!(stored[0]["verdict"], "needs_credentials", "{stored:?}");
    server.stop().await;
}

#[tokio::test]
async fn the_design_example_gets_the_expert_s_servers_and_both_start_here() {
    // The whole default catalog and the model, as `serve` runs: the choice among every Gmail and
    // Google Sheets server, then a real install and start of the two chosen.
    let (mut args, dir) = common::test_args(Db::Sqlite).await;
    common::with_default_catalog(&mut args);
    args.runtime.runtimes = ["npx", "uvx"].map(str::to_owned).to_vec();
    args.verify_servers = true;
    args.request_timeout_secs = 600;
    args.verify_budget_secs = 300;
    let server = TestServer::start_with(args, dir).await;
    let (status, body) = server
        .post(
            "/api/chat",
            json!({"message": "Check my Gmail for invoices and extract the data into a Google Sheet"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let reply = body["reply"].as_str().unwrap();
    let session = body["session_id"].as_str().unwrap();
    let chosen: Vec<(String, String)> = server
        .planned_servers(session)
        .await
        .iter()
        .map(|s| {
            (s["id"].as_str().unwrap().to_owned(), s["start"]["verdict"].as_str().unwrap_or("").to_owned())
        })
        .collect();
    // The most used Gmail server (not a PyPI one of unknown use) and the most used server that
    // writes Google Sheets (never an Excel one); the Gmail server stops for its OAuth keys
    // file, the Drive/Sheets one starts and lists its tools.
    assert_eq!(
        chosen,
        [
            ("gmail-autoauth-mcp-server".to_owned(), "needs_credentials".to_owned()),
            ("google-drive-mcp".to_owned(), "started".to_owned())
        ],
        "{reply}"
    );
    assert!(reply.contains("the most used of"), "the reason is given: {reply}");
    assert!(!reply.contains("does not start here"), "{reply}");
    assert_eq!(body["status"], "pending_credentials", "{body}");
    server.stop().await;
}

#[tokio::test]
async fn no_agent_is_created_for_a_step_no_server_here_can_do() {
    // The catalog's only CoinCap server names an npm package that was never published; the time
    // step's server starts and needs nothing, so before this rule an agent was created at once.
    let server = start_with(&["time-mcp-server", "coincap-mcp"], |_| {}).await;
    let request = "What time is it in Tokyo and what is the bitcoin price on CoinCap?";
    let (status, body) = server.post("/api/chat", json!({ "message": request })).await;
    assert_eq!(status, 200, "{body}");
    let reply = body["reply"].as_str().unwrap();
    assert!(reply.contains("Checked: started here with 2 tools"), "{reply}");
    assert!(reply.contains("none of the servers that fit starts here (tried coincap-mcp)"), "{reply}");
    assert!(reply.contains("I have not created the agent: step 2 needs a server"), "{reply}");
    assert_eq!(
        (body["status"].as_str(), body["agent_created"].as_bool(), body["agent_id"].as_str()),
        (Some("pending_credentials"), Some(false), None),
        "{body}"
    );
    let page = dynamcp::store::Page { limit: 10, offset: 0 };
    assert_eq!(server.store.list_agents("", page).await.unwrap().1, 0);
    server.stop().await;
}

#[tokio::test]
async fn verification_off_plans_without_starting_anything() {
    let server = start(|args| args.verify_servers = false).await;
    let (status, body) = server.post("/api/chat", json!({"message": "What time is it in Tokyo?"})).await;
    assert_eq!(status, 200, "{body}");
    assert!(!body["reply"].as_str().unwrap().contains("Checked:"), "{body}");
    assert!(server.store.verifications("time-mcp-server").await.unwrap().is_empty());
    server.stop().await;
}

#[tokio::test]
async fn catalog_verify_checks_servers_in_bulk_and_keeps_the_results() {
    let (args, dir) = common::test_args(Db::Sqlite).await;
    common::import_default_records(&args, RECORDS, &[]).await;
    let verify = |extra: &[&str]| {
        let mut cmd = common::clean_command();
        cmd.args(["catalog", "verify", "--ids", "time-mcp-server,mcp-time-server", "--json"])
            .args(extra)
            .env("DYNAMCP_DATA_DIR", dir.path())
            .env("DYNAMCP_DEFAULT_CATALOG", "false")
            .env("DYNAMCP_NO_MODEL", "true")
            .env("DYNAMCP_RUNTIMES", "npx,uvx")
            .env("DYNAMCP_PACKAGE_DIR", args.runtime.package_dir.as_ref().unwrap())
            // The machine's trust settings, which installers need behind a TLS-inspecting proxy.
            .envs(
                std::env::vars()
                    .filter(|(k, _)| k == "HOME" || k.starts_with("SSL_") || k.starts_with("NODE_EXTRA")),
            );
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let lines: Vec<Value> =
            String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        lines
    };
    let first = verify(&[]);
    let verdicts: Vec<(&str, &str)> =
        first.iter().map(|v| (v["server"].as_str().unwrap(), v["verdict"].as_str().unwrap())).collect();
    assert_eq!(verdicts, [("time-mcp-server", "started"), ("mcp-time-server", "failed")]);
    assert!(first[1]["detail"].as_str().unwrap().contains("404"), "{}", first[1]);
    // Run again: the stored results answer (same check time); --again checks anew.
    let second = verify(&[]);
    assert_eq!(second[0]["checked_at"], first[0]["checked_at"]);
    let third = verify(&["--again"]);
    assert_ne!(third[0]["checked_at"], first[0]["checked_at"]);
    assert_eq!(third[0]["verdict"], "started");
}
