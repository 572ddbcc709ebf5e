//! What a model is sent, in tokens, against an Anthropic fake that counts each request's tokens
//! and its prompt-cache use as Anthropic documents it (`fake_llm::Cache`: tools, system and
//! messages as blocks; a `cache_control` block ends a prefix written to the cache; later requests
//! read the longest prefix written before; 4 characters a token). Two budgets: the Gmail → Sheets
//! planning turn over the whole default catalog, and an agent run's rounds over a server with 60
//! tools. `--no-capture` prints the figures BENCHMARKS.md reports.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::print_stdout)]

mod common;

use common::fake_llm::{self, Step, start_counting_fake, text_turn, tool_turn};
use common::{Db, TestServer};
use dynamcp::llm::Provider;
use serde_json::{Value, json};

const ANTHROPIC: Provider = Provider::Anthropic;

/// Per request: (input tokens in all, read from the cache), counted again from the requests in
/// order, as the fake counted them when they came.
fn usage(fake: &fake_llm::Fake) -> Vec<(u64, u64)> {
    let mut replay = fake_llm::Cache::default();
    fake.seen
        .lock()
        .unwrap()
        .iter()
        .map(|(_, body)| {
            let (input, read, written) = replay.account(body);
            (input + read + written, read)
        })
        .collect()
}

/// The first runnable id of each search result in the request's last message.
fn first_ids(body: &Value) -> Vec<String> {
    let last = body["messages"].as_array().unwrap().last().unwrap();
    last["content"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["type"] == "tool_result")
        .filter_map(|b| {
            let found: Value = serde_json::from_str(b["content"].as_str()?).ok()?;
            let first = found["results"].as_array()?.iter().find(|r| r["runnable"] == true)?;
            Some(first["id"].as_str()?.to_owned())
        })
        .collect()
}

fn report(what: &str, rounds: &[(u64, u64)]) -> (u64, f64) {
    let total: u64 = rounds.iter().map(|r| r.0).sum();
    let later: u64 = rounds.iter().skip(1).map(|r| r.0).sum();
    let read: u64 = rounds.iter().skip(1).map(|r| r.1).sum();
    let share = if later == 0 { 0.0 } else { read as f64 / later as f64 };
    println!(
        "{what}: per round (input, read from cache) {rounds:?}; total input {total}; from round 2 on {:.0}% read from cache",
        share * 100.0
    );
    (total, share)
}

#[tokio::test]
async fn a_gmail_to_sheets_planning_turn_stays_within_its_token_budget() {
    let ids = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let (seen_ids, chosen) = (ids.clone(), ids.clone());
    let (fake, url) = start_counting_fake(vec![
        Step::Reply(tool_turn(
            ANTHROPIC,
            &[
                ("c1", "search_mcp_servers", json!({"query": "read Gmail messages to find invoices"})),
                ("c2", "search_mcp_servers", json!({"query": "append rows to a Google Sheet"})),
            ],
        )),
        Step::With(Box::new(move |body| {
            let found = first_ids(body);
            assert_eq!(found.len(), 2, "{found:?}");
            *seen_ids.lock().unwrap() = found.clone();
            tool_turn(
                ANTHROPIC,
                &[
                    ("c3", "get_credential_requirements", json!({"id": found[0]})),
                    ("c4", "get_credential_requirements", json!({"id": found[1]})),
                ],
            )
        })),
        Step::With(Box::new(move |_| {
            let ids = chosen.lock().unwrap().clone();
            tool_turn(
                ANTHROPIC,
                &[(
                    "c5",
                    "create_agent",
                    json!({"needs": [
                    {"need": "find invoices in Gmail", "server_id": ids[0], "why": "reads Gmail"},
                    {"need": "extract the invoice data", "by_model": true},
                    {"need": "append them to a Google Sheet", "server_id": ids[1], "why": "writes Sheets"}
                ], "workflow": []}),
                )],
            )
        })),
    ])
    .await;
    let (mut args, dir) = common::test_args(Db::Sqlite).await;
    common::with_default_catalog(&mut args);
    fake_llm::configure(&mut args, ANTHROPIC, &url, 30, 0);
    let server = TestServer::start_with(args, dir).await;
    let (status, body) = server
        .post("/api/chat", json!({"message": "Check my Gmail for invoices and put them in a Google Sheet"}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(!body["reply"].as_str().unwrap().contains("offline planner"), "{body}");
    let rounds = usage(&fake);
    assert_eq!(rounds.len(), 3);
    let (total, share) = report("Gmail → Sheets planning turn", &rounds);
    assert!(total <= 12_000, "the planning turn sent {total} input tokens");
    // The first round's prompt (tools, system, the request and the offline planner's candidates)
    // passes the 1,024-token minimum: every later round reads what came before from the cache.
    assert!(share >= 0.6, "from round 2 on, {:.0}% was read from the cache", share * 100.0);
    server.stop().await;
}

/// The rounds of a run over the 60-tool server, offering at most `max_tools` definitions a round.
async fn run_rounds(max_tools: u64) -> Vec<(u64, u64)> {
    let (fake, url) = start_counting_fake(vec![
        Step::Reply(tool_turn(ANTHROPIC, &[("c1", "wide-server__task_01", json!({"text": "a"}))])),
        Step::Reply(tool_turn(ANTHROPIC, &[("c2", "wide-server__task_02", json!({"text": "b"}))])),
        Step::Reply(tool_turn(ANTHROPIC, &[("c3", "wide-server__append_row", json!({"text": "c"}))])),
        Step::Reply(text_turn(ANTHROPIC, "Done.")),
    ])
    .await;
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/wide_server.py");
    let record = json!({
        "id": "wide-server", "name": "Wide", "description": "A server with many tools.", "tools": [],
        "credentials": [], "launch": [{"kind": "command", "transport": "stdio", "command": "python3", "args": [script]}]
    });
    let (mut args, dir) = common::test_args(Db::Sqlite).await;
    common::import_default_records(&args, &[], &[record]).await;
    args.runtime.runtimes = vec!["python3".to_owned()];
    args.runtime.run_max_tools = max_tools;
    fake_llm::configure(&mut args, ANTHROPIC, &url, 30, 0);
    let server = TestServer::start_with(args, dir).await;
    let plan = json!({"plan": {"request": "do tasks 1 and 2, then add a row", "needs": [
        {"need": "do the tasks and add a row", "server": {"id": "wide-server", "tools": ["task_01", "task_02", "append_row"]}}
    ]}});
    let (agent, _) = common::store_agent(&server, &["wide-server"], "Do the tasks.", plan).await;
    let (status, body) = server.run_agent(agent, "do tasks 1 and 2, then add a row").await;
    assert_eq!((status, body["status"].as_str()), (200, Some("completed")), "{body}");
    let rounds = usage(&fake);
    assert_eq!(rounds.len(), 4);
    // The run's own usage adds up what the provider reported.
    let total: u64 = rounds.iter().map(|r| r.0).sum();
    assert_eq!(body["usage"]["input_tokens"], total);
    server.stop().await;
    rounds
}

/// Side by side in one run: 20 tool definitions a round (the default) and all 60 (the previous
/// behaviour, `DYNAMCP_RUN_MAX_TOOLS=500`).
#[tokio::test]
async fn an_agent_runs_rounds_read_mostly_from_the_cache() {
    let bounded = run_rounds(20).await;
    let all = run_rounds(500).await;
    let (bounded_total, share) = report("agent run over 60 tools, 20 offered", &bounded);
    let (all_total, _) = report("agent run over 60 tools, all offered", &all);
    assert!(share >= 0.6, "from round 2 on, {:.0}% was read from the cache", share * 100.0);
    assert!(bounded_total < all_total, "{bounded_total} ≥ {all_total}");
}
