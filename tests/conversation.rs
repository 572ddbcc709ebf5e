//! The master agent converses like an expert, on real records of the default catalog (lexical
//! search, offline planner): it asks exactly what only the user has, fills settings that have
//! defaults, gives steps that produce each value, acknowledges what a turn sent, keeps a
//! schedule and says when a request is not in English.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{Db, TestServer};
use serde_json::{Value, json};

/// Real records whose variables the examples came from.
const RECORDS: &[&str] = &["excel-mcp-server-4", "gmail-mcp-2", "slack-mcp-server", "zotero-mcp-server"];

async fn server() -> TestServer {
    let (args, dir) = common::test_args(Db::Sqlite).await;
    common::import_default_records(&args, RECORDS, &[]).await;
    TestServer::start_with(args, dir).await
}

fn asked(body: &Value) -> Vec<(String, String, String)> {
    body["required_credentials"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["mcp_server"].as_str().unwrap().to_owned(),
                c["credential_key"].as_str().unwrap().to_owned(),
                c["kind"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn listed(body: &Value, field: &str) -> Vec<String> {
    body[field].as_array().into_iter().flatten().map(|d| d["key"].as_str().unwrap().to_owned()).collect()
}

fn instructions_of<'a>(body: &'a Value, key: &str) -> &'a str {
    body["required_credentials"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["credential_key"] == key)
        .and_then(|c| c["instructions"].as_str())
        .unwrap_or_else(|| panic!("{key} is not asked: {body}"))
}

#[tokio::test]
async fn settings_with_defaults_are_filled_and_shown_never_asked() {
    let server = server().await;
    let (status, body) =
        server.post("/api/chat", json!({"message": "read the totals from my Excel workbook"})).await;
    assert_eq!(status, 200, "{body}");
    let chosen: Vec<String> = server
        .planned_servers(body["session_id"].as_str().unwrap())
        .await
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(chosen, ["excel-mcp-server-4"], "{body}");
    // Its five variables are a log folder and four numbers with README values: none is asked,
    // none is an upload, and the agent is created at once.
    assert_eq!(asked(&body), [], "{body}");
    assert_eq!(body["required_files"], json!([]));
    assert_eq!(body["status"], "success", "{body}");
    let mut filled = listed(&body, "defaults");
    filled.sort();
    assert_eq!(
        filled,
        ["CACHE_CLEANUP_INTERVAL", "CACHE_MAX_AGE", "LOG_CLEANUP_INTERVAL", "LOG_PATH", "LOG_RETENTION_DAYS"]
    );
    let reply = body["reply"].as_str().unwrap();
    assert!(reply.contains("CACHE_MAX_AGE=1 (its documented default)"), "{reply}");
    assert!(reply.contains("LOG_PATH=/home/agent/log_path (a folder of its own in its sandbox)"), "{reply}");
    // The exported config carries the defaults, so another client gets the same values.
    let id = body["agent_id"].as_str().unwrap();
    let (_, config) = server.get(&format!("/api/agents/{id}/config?format=cursor")).await;
    let env = &config["mcpServers"]["excel-mcp-server-4"]["env"];
    assert_eq!(env["CACHE_MAX_AGE"], "1", "{config}");
    assert_eq!(env["LOG_RETENTION_DAYS"], "7", "{config}");
    server.stop().await;
}

#[tokio::test]
async fn each_value_gets_steps_that_produce_it() {
    let server = server().await;
    let (_, body) = server
        .post("/api/chat", json!({"message": "send an email through my Gmail Apps Script deployment"}))
        .await;
    assert_eq!(
        asked(&body),
        [
            ("gmail-mcp-2".to_owned(), "GAS_ENDPOINT".to_owned(), "setting".to_owned()),
            ("gmail-mcp-2".to_owned(), "VALID_API_KEY".to_owned(), "secret".to_owned())
        ],
        "{body}"
    );
    // The web app's address comes from deploying the Apps Script, not from an OAuth client.
    let endpoint = instructions_of(&body, "GAS_ENDPOINT");
    assert!(endpoint.contains("Deploy → New deployment") && endpoint.contains("/exec"), "{endpoint}");
    assert!(!endpoint.contains("OAuth"), "{endpoint}");
    // The shared key is made up by the user.
    let key = instructions_of(&body, "VALID_API_KEY");
    assert!(key.contains("random string") && !key.contains("console.cloud.google.com"), "{key}");

    let (_, zotero) =
        server.post("/api/chat", json!({"message": "search my Zotero library for papers"})).await;
    let keys: Vec<String> = asked(&zotero).into_iter().map(|(_, k, _)| k).collect();
    assert!(!keys.contains(&"ZOTERO_LOCAL".to_owned()), "a true/false switch is not asked: {zotero}");
    server.stop().await;
}

#[tokio::test]
async fn a_credential_turn_is_acknowledged_and_only_what_is_missing_is_asked() {
    let server = server().await;
    let (_, first) = server.post("/api/chat", json!({"message": "post a message to Slack"})).await;
    let sid = first["session_id"].as_str().unwrap().to_owned();
    assert_eq!(
        asked(&first),
        [
            ("slack-mcp-server".to_owned(), "SLACK_BOT_TOKEN".to_owned(), "secret".to_owned()),
            ("slack-mcp-server".to_owned(), "SLACK_TEAM_ID".to_owned(), "setting".to_owned())
        ],
        "{first}"
    );
    assert_eq!(listed(&first, "optional"), ["SLACK_CHANNEL_IDS"], "{first}");
    let team = instructions_of(&first, "SLACK_TEAM_ID");
    assert!(team.contains("app.slack.com/client") && !team.contains("Create New App"), "{team}");

    let token = format!("xoxb-{}", uuid::Uuid::new_v4().simple());
    let (status, second) = server
        .post(
            "/api/chat",
            json!({"message": "here is the token", "session_id": sid,
                   "credentials": {"slack-mcp-server": {"SLACK_BOT_TOKEN": token}}}),
        )
        .await;
    assert_eq!(status, 200, "{second}");
    let reply = second["reply"].as_str().unwrap();
    assert!(
        reply.starts_with("Received and stored encrypted: SLACK_BOT_TOKEN (slack-mcp-server)."),
        "{reply}"
    );
    assert!(reply.contains("The plan is unchanged") && !reply.contains("Workflow:"), "{reply}");
    assert!(!second.to_string().contains(&token), "the value is never echoed");
    assert_eq!(
        asked(&second),
        [("slack-mcp-server".to_owned(), "SLACK_TEAM_ID".to_owned(), "setting".to_owned())]
    );

    let (_, third) = server
        .post(
            "/api/chat",
            json!({"message": "", "session_id": sid,
                   "credentials": {"slack-mcp-server": {"SLACK_TEAM_ID": "T0123ABCD"}}}),
        )
        .await;
    assert_eq!(third["status"], "success", "{third}");
    let id = third["agent_id"].as_str().unwrap();
    let (_, config) = server.get(&format!("/api/agents/{id}/config?format=cursor")).await;
    let env = config["mcpServers"]["slack-mcp-server"]["env"].as_object().unwrap();
    let mut names: Vec<&str> = env.keys().map(String::as_str).collect();
    names.sort_unstable();
    assert_eq!(names, ["SLACK_BOT_TOKEN", "SLACK_TEAM_ID"], "the optional channel list is not set: {config}");
    server.stop().await;
}

#[tokio::test]
async fn schedules_are_kept_and_other_languages_are_said() {
    let server = server().await;
    let (_, body) =
        server.post("/api/chat", json!({"message": "every Friday post the weekly summary to Slack"})).await;
    let reply = body["reply"].as_str().unwrap();
    assert!(reply.contains("You want this to run every Friday"), "{reply}");
    assert!(reply.contains("does not schedule runs") && reply.contains("/run"), "{reply}");
    let (_, session) = server.get(&format!("/api/sessions/{}", body["session_id"].as_str().unwrap())).await;
    assert_eq!(session["context"]["plan"]["schedule"], "every Friday", "{session}");

    let (_, french) = server
        .post("/api/chat", json!({"message": "Envoie un message sur Slack pour mon équipe chaque matin"}))
        .await;
    let reply = french["reply"].as_str().unwrap();
    assert!(reply.starts_with("Your request seems to be in French."), "{reply}");
    server.stop().await;
}

#[tokio::test]
async fn steps_are_added_and_dropped_and_the_reply_says_what_changed() {
    let server = server().await;
    let (_, first) = server.post("/api/chat", json!({"message": "post a message to Slack"})).await;
    let sid = first["session_id"].as_str().unwrap().to_owned();
    let ids = |servers: Vec<serde_json::Map<String, Value>>| -> Vec<String> {
        servers.iter().map(|s| s["id"].as_str().unwrap().to_owned()).collect()
    };

    // "also …" adds to the plan rather than replacing it.
    let (_, added) = server
        .post(
            "/api/chat",
            json!({"message": "also read the totals from my Excel workbook", "session_id": sid}),
        )
        .await;
    let reply = added["reply"].as_str().unwrap();
    assert!(
        reply.starts_with(
            "Added to the plan: \"read the totals from my Excel workbook\" → excel-mcp-server-4."
        ),
        "{reply}"
    );
    assert_eq!(ids(server.planned_servers(&sid).await), ["slack-mcp-server", "excel-mcp-server-4"]);
    assert_eq!(added["status"], "pending_credentials", "Slack's token is still missing: {added}");

    // A step that names nothing in the plan changes nothing, and the reply says so.
    let (_, none) =
        server.post("/api/chat", json!({"message": "drop the Discord step", "session_id": sid})).await;
    assert!(none["reply"].as_str().unwrap().starts_with("No step matches \"discord\""), "{none}");
    assert_eq!(ids(server.planned_servers(&sid).await), ["slack-mcp-server", "excel-mcp-server-4"]);

    // Dropping the Slack step leaves only Excel, which needs nothing: the agent is created.
    let (_, dropped) =
        server.post("/api/chat", json!({"message": "drop the Slack step", "session_id": sid})).await;
    let reply = dropped["reply"].as_str().unwrap();
    assert!(reply.starts_with("Dropped step 1 (\"post a message to Slack\" → slack-mcp-server)."), "{reply}");
    assert_eq!(ids(server.planned_servers(&sid).await), ["excel-mcp-server-4"]);
    assert_eq!(dropped["required_credentials"], json!([]), "{dropped}");
    assert_eq!(dropped["status"], "success", "{dropped}");
    server.stop().await;
}

#[tokio::test]
async fn a_vague_request_gets_a_question_not_an_agent() {
    let server = server().await;
    for message in ["help me be more productive", "purple monkey dishwasher"] {
        let (status, body) = server.post("/api/chat", json!({ "message": message })).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            (body["agent_created"].as_bool(), body["status"].as_str()),
            (Some(false), Some("pending_credentials")),
            "{body}"
        );
        let reply = body["reply"].as_str().unwrap();
        assert!(
            reply.contains("which of these do you mean")
                || reply.contains("names no service or task I can match")
                || reply.contains("could not find an MCP server"),
            "{reply}"
        );
        let session = body["session_id"].as_str().unwrap();
        assert!(server.planned_servers(session).await.is_empty(), "nothing is chosen for {message:?}");
    }
    server.stop().await;
}

#[tokio::test]
async fn a_long_request_written_as_a_list_is_planned_item_by_item() {
    let server = server().await;
    let background = "Every Monday our finance team spends an hour copying numbers around, and I would like an agent to take that over. ".repeat(6);
    let message = format!(
        "{background}\nHere is what it should do:\n1. Read the totals from my Excel workbook.\n2. Post them to Slack.\n"
    );
    let (_, body) = server.post("/api/chat", json!({ "message": message })).await;
    let servers: Vec<String> = server
        .planned_servers(body["session_id"].as_str().unwrap())
        .await
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(servers, ["excel-mcp-server-4", "slack-mcp-server"], "{body}");
    let reply = body["reply"].as_str().unwrap();
    assert!(reply.contains("I read your request as 2 steps"), "{reply}");
    assert!(!reply.contains(&background), "the request is not echoed whole as a step");
    server.stop().await;
}
