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
    server_of(RECORDS).await
}

async fn server_of(records: &[&str]) -> TestServer {
    let (args, dir) = common::test_args(Db::Sqlite).await;
    common::import_default_records(&args, records, &[]).await;
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

/// The ids of the servers a session's plan has chosen, in step order.
async fn planned_ids(server: &TestServer, session: &str) -> Vec<String> {
    server.planned_servers(session).await.iter().map(|s| s["id"].as_str().unwrap().to_owned()).collect()
}

/// "also read the totals from my Excel workbook" in session `sid`: the reply says the step was
/// added, with the Excel server.
async fn also_excel(server: &TestServer, sid: &str) -> Value {
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
    added
}

/// The Slack server's first turn: its bot token and team id asked (each with its kind), the
/// channel list optional, and the team id's steps those of the id, not the app's.
fn slack_asks_its_token_and_team(first: &Value) {
    assert_eq!(
        asked(first),
        [
            ("slack-mcp-server".to_owned(), "SLACK_BOT_TOKEN".to_owned(), "secret".to_owned()),
            ("slack-mcp-server".to_owned(), "SLACK_TEAM_ID".to_owned(), "setting".to_owned())
        ],
        "{first}"
    );
    assert_eq!(listed(first, "optional"), ["SLACK_CHANNEL_IDS"], "{first}");
    let team = instructions_of(first, "SLACK_TEAM_ID");
    // Where the workspace id is shown (dynamcp's own steps, or the server's README's link to
    // Slack's help page on finding it), never the app-creation steps of the token.
    let shows_the_id =
        team.contains("app.slack.com/client") || team.contains("find-your-workspace-or-org-id");
    assert!(shows_the_id && !team.contains("Create New App"), "{team}");
}

#[tokio::test]
async fn settings_with_defaults_are_filled_and_shown_never_asked() {
    let server = server().await;
    let (status, body) =
        server.post("/api/chat", json!({"message": "read the totals from my Excel workbook"})).await;
    assert_eq!(status, 200, "{body}");
    let chosen = planned_ids(&server, body["session_id"].as_str().unwrap()).await;
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
    slack_asks_its_token_and_team(&first);

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

    // "also …" adds to the plan rather than replacing it.
    let added = also_excel(&server, &sid).await;
    assert_eq!(planned_ids(&server, &sid).await, ["slack-mcp-server", "excel-mcp-server-4"]);
    assert_eq!(added["status"], "pending_credentials", "Slack's token is still missing: {added}");

    // A step that names nothing in the plan changes nothing, and the reply says so.
    let (_, none) =
        server.post("/api/chat", json!({"message": "drop the Discord step", "session_id": sid})).await;
    assert!(none["reply"].as_str().unwrap().starts_with("No step matches \"discord\""), "{none}");
    assert_eq!(planned_ids(&server, &sid).await, ["slack-mcp-server", "excel-mcp-server-4"]);

    // Dropping the Slack step leaves only Excel, which needs nothing: the agent is created.
    let (_, dropped) =
        server.post("/api/chat", json!({"message": "drop the Slack step", "session_id": sid})).await;
    let reply = dropped["reply"].as_str().unwrap();
    assert!(reply.starts_with("Dropped step 1 (\"post a message to Slack\" → slack-mcp-server)."), "{reply}");
    assert_eq!(planned_ids(&server, &sid).await, ["excel-mcp-server-4"]);
    assert_eq!(dropped["required_credentials"], json!([]), "{dropped}");
    assert_eq!(dropped["status"], "success", "{dropped}");
    server.stop().await;
}

#[tokio::test]
async fn another_product_instead_is_planned_for_the_same_task() {
    // Outlook mail is read by the Microsoft 365 server (published, widely used), not by the
    // Outlook *calendar* server whose name says Outlook (its package was never published).
    let server =
        server_of(&["gmail-mcp-2", "outlook-calendar-mcp", "ms-365-mcp-server", "excel-mcp-server-4"]).await;
    let (_, first) = server.post("/api/chat", json!({"message": "Check my Gmail for invoices"})).await;
    let sid = first["session_id"].as_str().unwrap().to_owned();
    assert_eq!(planned_ids(&server, &sid).await, ["gmail-mcp-2"], "{first}");
    let (_, switched) =
        server.post("/api/chat", json!({"message": "use Outlook instead of Gmail", "session_id": sid})).await;
    let reply = switched["reply"].as_str().unwrap();
    assert!(reply.starts_with("Switched from gmail to outlook."), "{reply}");
    assert!(reply.contains("\"Check my Outlook for invoices\" → MS 365 MCP Server"), "{reply}");
    assert_eq!(planned_ids(&server, &sid).await, ["ms-365-mcp-server"]);
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
    let servers = planned_ids(&server, body["session_id"].as_str().unwrap()).await;
    assert_eq!(servers, ["excel-mcp-server-4", "slack-mcp-server"], "{body}");
    let reply = body["reply"].as_str().unwrap();
    assert!(reply.contains("I read your request as 2 steps"), "{reply}");
    assert!(!reply.contains(&background), "the request is not echoed whole as a step");
    server.stop().await;
}

/// The same conversation with the LLM planner (a scripted fake speaking each provider's wire
/// protocol): whatever the model proposes, the same rules decide what is asked, filled, listed
/// as optional, acknowledged, kept and changed; the model asks through `ask_user` (or in plain
/// words) and can only choose servers it was shown that start here.
mod with_the_llm_planner {
    use super::*;
    use common::fake_llm::{self, Step, start_fake, text_turn, tool_results, tool_turn};
    use dynamcp::llm::Provider;

    /// The conversation's records plus one the catalog has no launch spec for.
    const NOT_LAUNCHABLE: &str = "us-weather-by-zip-code";

    async fn server(provider: Provider, script: Vec<Step>) -> (fake_llm::Fake, TestServer) {
        let (fake, url) = start_fake(script).await;
        let (mut args, dir) = common::test_args(Db::Sqlite).await;
        let mut ids = RECORDS.to_vec();
        ids.push(NOT_LAUNCHABLE);
        common::import_default_records(&args, &ids, &[]).await;
        fake_llm::configure(&mut args, provider, &url, 10, 0);
        (fake, TestServer::start_with(args, dir).await)
    }

    fn search(provider: Provider, id: &str, query: &str) -> Step {
        Step::Reply(tool_turn(provider, &[(id, "search_mcp_servers", json!({ "query": query }))]))
    }

    fn create(provider: Provider, id: &str, needs: Value) -> Step {
        Step::Reply(tool_turn(provider, &[(id, "create_agent", json!({"needs": needs, "workflow": []}))]))
    }

    async fn the_same_rules_hold_whatever_the_model_proposes(provider: Provider) {
        let slack = json!([{"need": "post the weekly summary to Slack", "server_id": "slack-mcp-server", "why": "posts to Slack channels"}]);
        let excel = json!([{"need": "read the totals from my Excel workbook", "server_id": "excel-mcp-server-4", "why": "reads Excel workbooks"}]);
        let (fake, server) = server(
            provider,
            vec![
                search(provider, "c1", "post messages to Slack"),
                create(provider, "c2", slack),
                search(provider, "c3", "read an Excel workbook"),
                create(provider, "c4", excel),
            ],
        )
        .await;
        let (status, first) = server
            .post("/api/chat", json!({"message": "every Friday post the weekly summary to Slack"}))
            .await;
        assert_eq!(status, 200, "{first}");
        let sid = first["session_id"].as_str().unwrap().to_owned();
        slack_asks_its_token_and_team(&first);
        let reply = first["reply"].as_str().unwrap();
        assert!(reply.contains("You want this to run every Friday"), "{reply}");

        // A credential turn asks the model nothing: it is acknowledged and the plan kept.
        let token = format!("xoxb-{}", uuid::Uuid::new_v4().simple());
        let (_, second) = server
            .post(
                "/api/chat",
                json!({"message": "here is the token", "session_id": sid,
                       "credentials": {"slack-mcp-server": {"SLACK_BOT_TOKEN": token}}}),
            )
            .await;
        let reply = second["reply"].as_str().unwrap();
        assert!(
            reply.starts_with("Received and stored encrypted: SLACK_BOT_TOKEN (slack-mcp-server)."),
            "{reply}"
        );
        assert!(reply.contains("The plan is unchanged"), "{reply}");
        assert!(!second.to_string().contains(&token), "the value is never echoed");

        // "also …" asks the model for the addition only; the settings with defaults are filled.
        let added = also_excel(&server, &sid).await;
        let defaults = listed(&added, "defaults");
        assert!(defaults.contains(&"CACHE_MAX_AGE".to_owned()), "{added}");
        assert!(
            !asked(&added).iter().any(|(server, _, _)| server == "excel-mcp-server-4"),
            "nothing of Excel's is asked: {added}"
        );

        // Dropping the Slack step leaves Excel, which needs nothing: the agent is created.
        let (_, dropped) =
            server.post("/api/chat", json!({"message": "drop the Slack step", "session_id": sid})).await;
        assert_eq!(dropped["status"], "success", "{dropped}");
        let servers = planned_ids(&server, &sid).await;
        assert_eq!(servers, ["excel-mcp-server-4"]);
        // Four model calls in all: two per planned request, none for the other turns.
        assert_eq!(fake.seen.lock().unwrap().len(), 4);
        server.stop().await;
    }

    async fn the_model_asks_when_unsure_and_the_user_picks(provider: Provider) {
        let (fake, server) = server(
            provider,
            vec![
                Step::Reply(tool_turn(
                    provider,
                    &[
                        ("c1", "search_mcp_servers", json!({"query": "post messages to Slack"})),
                        ("c2", "search_mcp_servers", json!({"query": "Excel workbook"})),
                    ],
                )),
                Step::Reply(tool_turn(
                    provider,
                    &[("c3", "ask_user", json!({"question": "Where do you keep your work: Slack or an Excel workbook?", "options": ["slack-mcp-server", "excel-mcp-server-4"]}))],
                )),
                Step::Reply(text_turn(provider, "I could not tell what you want automated. Which app or task do you mean?")),
            ],
        )
        .await;
        let (status, body) = server.post("/api/chat", json!({"message": "help me be more productive"})).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            (body["agent_created"].as_bool(), body["status"].as_str()),
            (Some(false), Some("pending_credentials")),
            "{body}"
        );
        let reply = body["reply"].as_str().unwrap();
        assert!(reply.contains("Where do you keep your work: Slack or an Excel workbook?"), "{reply}");
        assert!(reply.contains("[1] Slack") && reply.contains("[2] "), "{reply}");
        let sid = body["session_id"].as_str().unwrap();
        assert!(server.planned_servers(sid).await.is_empty());

        // The user answers with a number: the second option is planned, asking the model nothing.
        let (_, picked) = server.post("/api/chat", json!({"message": "2", "session_id": sid})).await;
        assert_eq!(picked["status"], "success", "{picked}");
        let servers = planned_ids(&server, sid).await;
        assert_eq!(servers, ["excel-mcp-server-4"]);

        // A model that answers in words is asking too: its question reaches the user, no agent.
        let (_, words) = server.post("/api/chat", json!({"message": "purple monkey dishwasher"})).await;
        assert_eq!(words["agent_created"], false, "{words}");
        let reply = words["reply"].as_str().unwrap();
        assert!(reply.contains("the planner asks: I could not tell what you want automated."), "{reply}");
        assert!(!reply.contains("offline planner"), "{reply}");
        assert_eq!(fake.seen.lock().unwrap().len(), 3);
        server.stop().await;
    }

    async fn the_model_cannot_choose_a_server_it_was_not_shown_or_that_cannot_start(provider: Provider) {
        let weather = json!([{"need": "weather for a US zip code", "server_id": NOT_LAUNCHABLE}]);
        let (fake, server) = server(
            provider,
            vec![
                create(provider, "c1", weather.clone()),
                search(provider, "c2", "weather by zip code"),
                create(provider, "c3", weather),
                Step::Reply(tool_turn(
                    provider,
                    &[("c4", "ask_user", json!({"question": "No server here can fetch the weather. Shall I plan something else?"}))],
                )),
            ],
        )
        .await;
        let (status, body) =
            server.post("/api/chat", json!({"message": "tell me the weather for zip code 10001"})).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["agent_created"], false, "{body}");
        assert!(body["reply"].as_str().unwrap().contains("No server here can fetch the weather"), "{body}");

        let seen = fake.seen.lock().unwrap().clone();
        assert_eq!(seen.len(), 4);
        let unseen = tool_results(provider, &seen[1].1);
        assert!(
            unseen[0].1 && unseen[0].0.contains("was not among the servers you were shown"),
            "{unseen:?}"
        );
        let results = tool_results(provider, &seen[3].1);
        assert!(results[1].0.contains(&format!("\"id\":\"{NOT_LAUNCHABLE}\"")), "{results:?}");
        assert!(results[1].0.contains("\"runnable\":false"), "{results:?}");
        assert!(results[2].1 && results[2].0.contains("cannot be started here"), "{results:?}");
        server.stop().await;
    }

    for_both_providers!(
        the_same_rules_hold_whatever_the_model_proposes,
        the_model_asks_when_unsure_and_the_user_picks,
        the_model_cannot_choose_a_server_it_was_not_shown_or_that_cannot_start,
    );
}
