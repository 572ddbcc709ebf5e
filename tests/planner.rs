//! The master agent over HTTP, on a small real catalog (lexical search, no model), on both
//! backends: plans, exact credential requests, all-or-nothing credential turns, refinement,
//! files, agent creation and config export, and no credential value ever echoed.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{Db, TestServer, error_body};
use serde_json::{Value, json};
use uuid::Uuid;

on_both_backends!(
    a_request_asks_for_exactly_the_missing_credentials,
    credentials_complete_the_plan_and_create_an_agent,
    bad_credential_turns_store_nothing,
    a_request_without_credentials_succeeds_at_once,
    refinement_swaps_a_server,
    an_alternative_is_picked_by_number_or_by_id,
    files_are_requested_and_accepted,
);

const REQUEST: &str = "check my Gmail for invoices and put them in a Google Sheet";

fn keys(body: &Value) -> Vec<(String, String)> {
    body["required_credentials"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (c["mcp_server"].as_str().unwrap().to_owned(), c["credential_key"].as_str().unwrap().to_owned())
        })
        .collect()
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter().map(|(a, b)| ((*a).to_owned(), (*b).to_owned())).collect()
}

async fn a_request_asks_for_exactly_the_missing_credentials(db: Db) {
    let server = TestServer::start_with_fixture_catalog(db).await;
    let (status, body) = server.post("/api/chat", json!({ "message": REQUEST })).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "pending_credentials");
    assert_eq!(body["agent_created"], false);
    assert_eq!(body["agent_id"], Value::Null);
    assert_eq!(body["required_files"], json!([]));
    // Both servers, every required key, and nothing else (MCP_TRANSPORT is a setting, not a secret).
    assert_eq!(
        keys(&body),
        pairs(&[
            ("gmail-mcp-2", "GAS_ENDPOINT"),
            ("gmail-mcp-2", "VALID_API_KEY"),
            ("google-sheets-mcp-5", "GOOGLE_ACCESS_TOKEN"),
            ("google-sheets-mcp-5", "GOOGLE_CLIENT_ID"),
            ("google-sheets-mcp-5", "GOOGLE_CLIENT_SECRET"),
        ])
    );
    for item in body["required_credentials"].as_array().unwrap() {
        let fields: Vec<&str> = item.as_object().unwrap().keys().map(String::as_str).collect();
        // The design's four fields, and `kind` (which design clients ignore).
        assert_eq!(fields, ["credential_key", "description", "instructions", "kind", "mcp_server"]);
        let steps = item["instructions"].as_str().unwrap();
        assert!(steps.starts_with("1. ") && steps.contains("\n2. "), "{steps}");
        assert!(steps.contains("Format:"), "{steps}");
    }
    let token = &body["required_credentials"][2];
    // An access token's steps produce an access token, and say how long it lasts.
    let steps = token["instructions"].as_str().unwrap();
    assert!(steps.contains("https://developers.google.com/oauthplayground/"), "{token}");
    assert!(steps.contains("auth/spreadsheets") && steps.contains("one hour"), "{token}");
    let reply = body["reply"].as_str().unwrap();
    assert!(
        reply.contains("Gmail MCP (gmail-mcp-2)")
            && reply.contains("google-sheets-mcp (google-sheets-mcp-5)"),
        "{reply}"
    );
    assert!(reply.contains("Workflow:"), "{reply}");

    // The session shows what is pending, and the plan.
    let (_, session) = server.get(&format!("/api/sessions/{}", body["session_id"].as_str().unwrap())).await;
    assert_eq!(session["status"], "pending_credentials");
    assert_eq!(session["required_credentials"], body["required_credentials"]);
    assert_eq!(session["context"]["plan"]["needs"].as_array().unwrap().len(), 2);
    server.stop().await;
}

async fn credentials_complete_the_plan_and_create_an_agent(db: Db) {
    let server = TestServer::start_with_fixture_catalog(db).await;
    let canary = format!("canary-{}", Uuid::new_v4());
    let (_, first) = server.post("/api/chat", json!({ "message": REQUEST })).await;
    let sid = first["session_id"].clone();

    // Partial: Gmail's keys, addressed by the server's name in another case.
    let (status, second) = server
        .post(
            "/api/chat",
            json!({"message": "here are the gmail ones", "session_id": sid,
                   "credentials": {"GMAIL MCP": {"GAS_ENDPOINT": "https://script.google.com/macros/s/x/exec", "VALID_API_KEY": canary}}}),
        )
        .await;
    assert_eq!(status, 200, "{second}");
    assert_eq!(second["status"], "pending_credentials");
    assert_eq!(
        keys(&second),
        pairs(&[
            ("google-sheets-mcp-5", "GOOGLE_ACCESS_TOKEN"),
            ("google-sheets-mcp-5", "GOOGLE_CLIENT_ID"),
            ("google-sheets-mcp-5", "GOOGLE_CLIENT_SECRET"),
        ])
    );
    let (_, session) = server.get(&format!("/api/sessions/{}", sid.as_str().unwrap())).await;
    assert_eq!(session["collected_credentials"], json!({"gmail-mcp-2": ["GAS_ENDPOINT", "VALID_API_KEY"]}));

    // The rest: success, and an agent whose config references both servers.
    let (status, third) = server
        .post(
            "/api/chat",
            json!({"message": "and the sheets ones", "session_id": sid,
                   "credentials": {"google-sheets-mcp-5": {"GOOGLE_ACCESS_TOKEN": format!("{canary}-t"),
                                   "google_client_id": "id.apps.googleusercontent.com", "GOOGLE_CLIENT_SECRET": format!("{canary}-s")}}}),
        )
        .await;
    assert_eq!(status, 200, "{third}");
    assert_eq!(third["status"], "success");
    assert_eq!(third["agent_created"], true);
    assert_eq!(third["required_credentials"], json!([]));
    let agent_id = third["agent_id"].as_str().unwrap().to_owned();

    let (status, agent) = server.get(&format!("/api/agents/{agent_id}")).await;
    assert_eq!(status, 200);
    assert_eq!(
        agent["mcp_config"],
        json!({"mcpServers": {
            "gmail-mcp-2": {"command": "npx", "args": ["-y", "@kazuph/mcp-gmail-gas"], "env": {
                "GAS_ENDPOINT": "${vault:gmail-mcp-2/GAS_ENDPOINT}", "VALID_API_KEY": "${vault:gmail-mcp-2/VALID_API_KEY}"}},
            "google-sheets-mcp-5": {"command": "npx", "args": ["-y", "google-sheets-mcp"], "env": {
                "GOOGLE_ACCESS_TOKEN": "${vault:google-sheets-mcp-5/GOOGLE_ACCESS_TOKEN}",
                "GOOGLE_CLIENT_ID": "${vault:google-sheets-mcp-5/GOOGLE_CLIENT_ID}",
                "GOOGLE_CLIENT_SECRET": "${vault:google-sheets-mcp-5/GOOGLE_CLIENT_SECRET}"}}
        }})
    );
    assert!(agent["workflow"].as_str().unwrap().starts_with(REQUEST));

    // A later turn in the same session keeps the agent and says so.
    let (_, again) = server.post("/api/chat", json!({"message": "thanks!", "session_id": sid})).await;
    assert_eq!((again["status"].clone(), again["agent_id"].clone()), (json!("success"), json!(agent_id)));
    assert_eq!(server.get("/api/agents").await.1["total"], 1);

    // Export: placeholders by default, values only when asked.
    let (status, claude) = server.get(&format!("/api/agents/{agent_id}/config?format=claude")).await;
    assert_eq!(status, 200);
    assert_eq!(claude["mcpServers"]["gmail-mcp-2"]["env"]["VALID_API_KEY"], "REPLACE_WITH_VALID_API_KEY");
    assert!(!claude.to_string().contains(&canary));
    let (_, with) =
        server.get(&format!("/api/agents/{agent_id}/config?format=cursor&include_secrets=true")).await;
    assert_eq!(with["mcpServers"]["gmail-mcp-2"]["env"]["VALID_API_KEY"], canary.as_str());
    let yaml = server
        .http
        .get(server.url(&format!("/api/agents/{agent_id}/config?format=fast-agent")))
        .send()
        .await
        .unwrap();
    assert_eq!(yaml.headers()["content-type"], "application/yaml");
    let yaml = yaml.text().await.unwrap();
    assert!(yaml.contains("mcp:\n  servers:\n    \"gmail-mcp-2\":\n      command: \"npx\""), "{yaml}");
    let (status, body) = server.get(&format!("/api/agents/{agent_id}/config?format=vscode")).await;
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("invalid_query")));

    // No response so far carried a value (besides the explicit export), and the conversation is kept.
    for body in [&first, &second, &third, &again, &agent] {
        assert!(!body.to_string().contains(&canary), "{body}");
    }
    let (_, session) = server.get(&format!("/api/sessions/{}", sid.as_str().unwrap())).await;
    assert!(!session.to_string().contains(&canary));
    let roles: Vec<&str> =
        session["messages"].as_array().unwrap().iter().map(|m| m["role"].as_str().unwrap()).collect();
    assert_eq!(roles, ["user", "assistant", "user", "assistant", "user", "assistant", "user", "assistant"]);
    server.stop().await;
}

async fn bad_credential_turns_store_nothing(db: Db) {
    let server = TestServer::start_with_fixture_catalog(db).await;
    let (_, first) = server.post("/api/chat", json!({ "message": REQUEST })).await;
    let sid = first["session_id"].clone();
    let id: Uuid = sid.as_str().unwrap().parse().unwrap();
    let canary = format!("canary-{}", Uuid::new_v4());
    let cases = [
        (
            json!({"gmail-mcp-2": {"VALID_API_KEY": canary}, "dropbox": {"TOKEN": canary}}),
            error_body(
                "unknown_credential_server",
                "`dropbox` is not a server of this session's plan; expected one of: gmail-mcp-2, google-sheets-mcp-5. Nothing was stored",
            ),
        ),
        (
            json!({"gmail-mcp-2": {"VALID_API_KEY": canary, "PASSWORD": canary}}),
            error_body(
                "unknown_credential_key",
                "`gmail-mcp-2` has no credential `PASSWORD`; expected one of: GAS_ENDPOINT, VALID_API_KEY. Nothing was stored",
            ),
        ),
        (
            json!({"gmail-mcp-2": {"VALID_API_KEY": canary, "GAS_ENDPOINT": "  "}}),
            error_body(
                "empty_credential",
                "the value of `gmail-mcp-2`/`GAS_ENDPOINT` is empty. Nothing was stored",
            ),
        ),
    ];
    for (credentials, expected) in cases {
        let (status, body) = server
            .post("/api/chat", json!({"message": "here", "session_id": sid, "credentials": credentials}))
            .await;
        assert_eq!((status, body), (422, expected));
    }
    assert!(server.store.credentials(id).await.unwrap().is_empty());
    assert_eq!(server.store.messages(id).await.unwrap().len(), 2);
    // Credentials with no plan in the session are refused too.
    let (status, body) =
        server.post("/api/chat", json!({"message": "x", "credentials": {"gmail-mcp-2": {"A": "b"}}})).await;
    assert_eq!((status, body["error"]["code"].as_str()), (422, Some("unexpected_credentials")));
    server.stop().await;
}

async fn a_request_without_credentials_succeeds_at_once(db: Db) {
    let server = TestServer::start_with_fixture_catalog(db).await;
    let (status, body) = server.post("/api/chat", json!({"message": "what time is it in Tokyo"})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "success");
    assert_eq!(body["required_credentials"], json!([]));
    assert_eq!(body["agent_created"], true);
    let (_, agent) = server.get(&format!("/api/agents/{}", body["agent_id"].as_str().unwrap())).await;
    assert_eq!(
        agent["mcp_config"],
        json!({"mcpServers": {"time-mcp-server": {"command": "uvx", "args": ["mcp-server-time"], "env": {}}}})
    );
    // Asking for another agent in the same session creates a second one.
    let sid = body["session_id"].clone();
    let (_, more) = server
        .post("/api/chat", json!({"message": "also tell me the current time in Lisbon", "session_id": sid}))
        .await;
    assert_eq!(more["status"], "success");
    assert_eq!(more["agent_created"], true);
    assert_ne!(more["agent_id"], body["agent_id"]);
    server.stop().await;
}

async fn refinement_swaps_a_server(db: Db) {
    let server = TestServer::start_with_fixture_catalog(db).await;
    let (_, first) =
        server.post("/api/chat", json!({"message": "monitor my Gmail and send Slack notifications"})).await;
    let servers: Vec<String> = keys(&first).into_iter().map(|(s, _)| s).collect();
    assert!(
        servers.contains(&"gmail-mcp-2".to_owned()) && servers.contains(&"slack-mcp-server".to_owned()),
        "{first}"
    );
    let (status, second) = server
        .post(
            "/api/chat",
            json!({"message": "use Outlook instead of Gmail", "session_id": first["session_id"]}),
        )
        .await;
    assert_eq!(status, 200, "{second}");
    let servers: Vec<String> = keys(&second).into_iter().map(|(s, _)| s).collect();
    assert!(servers.contains(&"outlook-meetings-scheduler-mcp-server".to_owned()), "{second}");
    assert!(servers.contains(&"slack-mcp-server".to_owned()), "{second}");
    assert!(!servers.contains(&"gmail-mcp-2".to_owned()), "{second}");
    assert!(second["reply"].as_str().unwrap().starts_with("Switched from gmail to outlook."), "{second}");
    server.stop().await;
}

async fn an_alternative_is_picked_by_number_or_by_id(db: Db) {
    let server = TestServer::start_with_fixture_catalog(db).await;
    let (_, first) = server.post("/api/chat", json!({"message": "What time is it in Tokyo?"})).await;
    let sid = first["session_id"].clone();
    let reply = first["reply"].as_str().unwrap();
    // The published reference server wins over a package name no registry confirms, which is
    // offered as the alternative, with the reason.
    assert!(reply.contains("→ Time MCP Server (time-mcp-server)"), "{reply}");
    let line = reply
        .lines()
        .find(|l| {
            l.contains(
                "or Time MCP Local (time-mcp-local): its package time-mcp-local is not confirmed published",
            )
        })
        .unwrap_or_else(|| panic!("{reply}"));
    let number = line.trim().trim_start_matches('[').split(']').next().unwrap().to_owned();
    let (status, picked) = server.post("/api/chat", json!({"message": number, "session_id": sid})).await;
    assert_eq!(status, 200, "{picked}");
    assert!(
        picked["reply"]
            .as_str()
            .unwrap()
            .starts_with("Step 1 now uses Time MCP Local (time-mcp-local), as you asked."),
        "{picked}"
    );
    let (_, agent) = server.get(&format!("/api/agents/{}", picked["agent_id"].as_str().unwrap())).await;
    assert_eq!(
        agent["mcp_config"]["mcpServers"].as_object().unwrap().keys().collect::<Vec<_>>(),
        ["time-mcp-local"]
    );
    // And back by id, as the design's users say it.
    let (_, back) =
        server.post("/api/chat", json!({"message": "use time-mcp-server instead", "session_id": sid})).await;
    assert!(
        back["reply"].as_str().unwrap().starts_with("Step 1 now uses Time MCP Server (time-mcp-server)"),
        "{back}"
    );
    let (_, agent) = server.get(&format!("/api/agents/{}", back["agent_id"].as_str().unwrap())).await;
    assert_eq!(
        agent["mcp_config"]["mcpServers"].as_object().unwrap().keys().collect::<Vec<_>>(),
        ["time-mcp-server"]
    );
    // A number no alternative has is not a pick: the plan stands.
    let (status, kept) = server.post("/api/chat", json!({"message": "7", "session_id": sid})).await;
    assert_eq!(status, 200, "{kept}");
    assert_eq!(kept["agent_id"], back["agent_id"]);
    server.stop().await;
}

async fn files_are_requested_and_accepted(db: Db) {
    let server = TestServer::start_with_fixture_catalog(db).await;
    let (_, first) = server
        .post("/api/chat", json!({"message": "show my site's search performance from Google Search Console"}))
        .await;
    assert_eq!(first["status"], "pending_credentials", "{first}");
    assert_eq!(first["required_credentials"], json!([]));
    let file = &first["required_files"][0];
    assert_eq!(
        (file["mcp_server"].as_str(), file["file_key"].as_str()),
        (Some("gsc-mcp-server"), Some("GOOGLE_APPLICATION_CREDENTIALS"))
    );
    assert!(file["instructions"].as_str().unwrap().contains("JSON"), "{file}");
    let sid = first["session_id"].as_str().unwrap().to_owned();

    // Multipart: an unknown part name stores nothing.
    let canary = format!("{{\"private_key\": \"canary-{}\"}}", Uuid::new_v4());
    let form = |name: &str| {
        reqwest::multipart::Form::new().part(
            name.to_owned(),
            reqwest::multipart::Part::bytes(canary.clone().into_bytes()).file_name("sa.json"),
        )
    };
    let url = server.url(&format!("/api/sessions/{sid}/files"));
    let (status, body) = server.json(server.http.post(&url).multipart(form("NOT_A_FILE"))).await;
    assert_eq!(status, 422);
    assert_eq!(body["error"]["code"], "unknown_file");
    assert!(server.store.credentials(sid.parse().unwrap()).await.unwrap().is_empty());
    let (status, body) = server.json(server.http.post(&url).json(&json!({}))).await;
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("invalid_form")));

    let (status, body) =
        server.json(server.http.post(&url).multipart(form("GOOGLE_APPLICATION_CREDENTIALS"))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "success");
    assert_eq!(body["agent_created"], true);
    assert!(!body.to_string().contains("canary"));
    let (_, agent) = server.get(&format!("/api/agents/{}", body["agent_id"].as_str().unwrap())).await;
    assert_eq!(
        agent["mcp_config"]["mcpServers"]["gsc-mcp-server"]["env"]["GOOGLE_APPLICATION_CREDENTIALS"],
        "${vault-file:gsc-mcp-server/GOOGLE_APPLICATION_CREDENTIALS}"
    );

    // Inline, in a chat turn, base64-encoded (here: a second session).
    let (_, other) = server
        .post("/api/chat", json!({"message": "show my site's search performance from Google Search Console"}))
        .await;
    let (status, body) = server
        .post("/api/chat", json!({"message": "here it is", "session_id": other["session_id"],
            "files": [{"name": "gsc-mcp-server/GOOGLE_APPLICATION_CREDENTIALS", "content_base64": "bm90IGpzb24="}]}))
        .await;
    assert_eq!((status, body["status"].as_str()), (200, Some("success")), "{body}");
    let (status, body) = server
        .post(
            "/api/chat",
            json!({"message": "again", "session_id": other["session_id"],
            "files": [{"name": "GOOGLE_APPLICATION_CREDENTIALS", "content_base64": "%%%"}]}),
        )
        .await;
    assert_eq!(
        (status, body),
        (
            422,
            error_body(
                "invalid_file",
                "the file `GOOGLE_APPLICATION_CREDENTIALS` is empty or not valid base64. Nothing was stored"
            )
        )
    );
    server.stop().await;
}
