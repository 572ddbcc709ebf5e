//! Signing in to a hosted MCP server that takes no key but signs its users in through the
//! browser (OAuth 2.1 with PKCE, as Linear's, Atlassian's and Sentry's hosted servers do). The
//! peer is `tests/fixtures/oauth_server.py`: the official Python MCP SDK's authorization server
//! and bearer-token guard in front of a streamable-HTTP MCP endpoint; it approves every
//! authorization request for the user `ada`, which is the one step a person does in a real
//! browser. The test plays the browser: it follows each redirect by hand.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::{Db, TestServer};
use serde_json::{Value, json};

const SERVER: &str = "acme-tracker";

/// The peer on a free loopback port, with access tokens lasting `token_secs`.
async fn peer(token_secs: u32) -> (tokio::process::Child, String) {
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/oauth_server.py");
    let child = tokio::process::Command::new("python3")
        .arg(script)
        .args(["--port", &port.to_string(), "--token-seconds", &token_secs.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
        assert!(tokio::time::Instant::now() < deadline, "the peer did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    (child, format!("http://127.0.0.1:{port}/mcp"))
}

/// The hosted server as a catalog lists it: a URL and no credential.
fn hosted_record(url: &str) -> Value {
    json!({
        "id": SERVER, "name": "Acme Tracker",
        "description": "Acme Tracker's hosted MCP server: issues, projects and comments of your Acme Tracker workspace",
        "tools": [{"name": "list_issues", "description": "List the issues of an Acme Tracker project"}],
        "credentials": [],
        "launch": [{"kind": "remote", "transport": "streamable-http", "url": url}]
    })
}

/// The service with the hosted server in its catalog; `verify`: each chosen server is checked
/// before anything is asked.
async fn service(url: &str, verify: bool) -> TestServer {
    let (mut args, dir) = common::test_args(Db::Sqlite).await;
    args.verify_servers = verify;
    args.verify_budget_secs = 60;
    common::import_records(&args, vec![hosted_record(url)]).await;
    args.runtime.runtimes = vec!["remote".to_owned()];
    args.runtime.remote_allow_hosts = vec!["127.0.0.1".to_owned()];
    TestServer::start_with(args, dir).await
}

/// A browser that does not follow redirects (the test follows each one itself).
fn browser() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap()
}

fn location(response: &reqwest::Response) -> String {
    response.headers()["location"].to_str().unwrap().to_owned()
}

/// The access token stored, sealed, for the hosted server of `session`.
async fn access_token(server: &TestServer, session: uuid::Uuid) -> String {
    let sealed = server.store.credentials(session).await.unwrap();
    let grant = sealed.iter().find(|c| c.server == SERVER && c.key == "#oauth").expect("a grant");
    let value: Value = serde_json::from_slice(server.vault.open_sealed(grant).unwrap().expose()).unwrap();
    value["access_token"].as_str().unwrap().to_owned()
}

async fn whoami(server: &TestServer, agent: &str) -> (u16, Value) {
    server
        .post(
            &format!("/api/agents/{agent}/tools/call"),
            json!({"server": SERVER, "tool": "whoami", "arguments": {}}),
        )
        .await
}

#[tokio::test]
async fn an_agent_signs_in_to_a_hosted_server_through_the_browser_and_its_calls_carry_the_token() {
    // Tokens lasting 30 s are within the refresh margin: the first start refreshes at once.
    let (mut peer, url) = peer(30).await;
    let server = service(&url, true).await;

    // The chat creates the agent and gives the link (the server takes no key, so nothing is asked).
    let (status, chat) =
        server.post("/api/chat", json!({"message": "list the open issues of my Acme Tracker project"})).await;
    assert_eq!(status, 200, "{chat}");
    // Checked before anything was asked: it answered that it wants a sign-in, so it was kept.
    let checked = server.store.verifications(SERVER).await.unwrap();
    assert_eq!(checked.len(), 1, "{checked:?}");
    assert_eq!(checked[0]["verdict"], "needs_credentials", "{checked:?}");
    assert!(checked[0]["detail"].as_str().unwrap().contains("signs its users in"), "{checked:?}");
    assert_eq!(
        (chat["status"].as_str(), chat["agent_created"].as_bool()),
        (Some("success"), Some(true)),
        "{chat}"
    );
    assert_eq!(chat["required_credentials"], json!([]), "{chat}");
    let agent = chat["agent_id"].as_str().unwrap().to_owned();
    let offered = chat["sign_in"].as_array().unwrap();
    assert_eq!(offered.len(), 1, "{chat}");
    assert_eq!(offered[0]["mcp_server"], SERVER);
    assert!(chat["reply"].as_str().unwrap().contains("Sign in through your browser"), "{chat}");

    // Not signed in yet: the call says what to do.
    let (status, body) = whoami(&server, &agent).await;
    assert_eq!((status, body["error"]["code"].as_str()), (409, Some("sign_in_needed")), "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("/sign-in"), "{body}");

    // A new link (replacing the chat's), opened in the browser.
    let (status, link) =
        server.post(&format!("/api/agents/{agent}/servers/{SERVER}/sign-in"), json!({})).await;
    assert_eq!(status, 200, "{link}");
    let start = link["url"].as_str().unwrap();
    assert!(start.starts_with(&server.url("/api/sign-in?state=")), "{link}");
    let chat_link = offered[0]["url"].as_str().unwrap().split_once("?state=").unwrap().1.to_owned();
    let (status, body) = server.get(&format!("/api/sign-in?state={chat_link}")).await;
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("invalid_sign_in_link")), "{body}");

    let browser = browser();
    let to_authorize = browser.get(start).send().await.unwrap();
    assert_eq!(to_authorize.status().as_u16(), 303);
    let authorize = location(&to_authorize);
    let authorize_url = reqwest::Url::parse(&authorize).unwrap();
    let query: std::collections::HashMap<String, String> = authorize_url.query_pairs().into_owned().collect();
    assert!(authorize.starts_with(&url.replace("/mcp", "/authorize")), "{authorize}");
    assert_eq!(query["code_challenge_method"], "S256");
    assert_eq!(query["resource"], url);
    assert_eq!(query["redirect_uri"], server.url("/api/sign-in/callback"));

    // The server's sign-in page approves and sends the browser back.
    let approved = browser.get(&authorize).send().await.unwrap();
    assert_eq!(approved.status().as_u16(), 302);
    let callback = location(&approved);
    assert!(callback.starts_with(&server.url("/api/sign-in/callback?")), "{callback}");
    let done = browser.get(&callback).send().await.unwrap();
    assert_eq!(done.status().as_u16(), 200);
    assert!(done.text().await.unwrap().contains("Signed in to <b>acme-tracker</b>"));

    // A replayed answer finishes nothing.
    let (status, body) = server.json(server.http.get(&callback)).await;
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("invalid_sign_in_link")), "{body}");

    // The agent's calls now carry the token of the signed-in user, refreshed first: it ends
    // within the refresh margin.
    let session: uuid::Uuid = chat["session_id"].as_str().unwrap().parse().unwrap();
    let granted = access_token(&server, session).await;
    let (status, body) = whoami(&server, &agent).await;
    assert_ne!(access_token(&server, session).await, granted, "the token was refreshed and stored again");
    assert_eq!(status, 200, "{body}");
    let text = body["result"]["content"][0]["text"].as_str().unwrap();
    assert!(text.starts_with("user=ada client="), "{body}");
    // The session's page shows no token.
    let (_, page) = server.get(&format!("/api/sessions/{session}")).await;
    assert!(!page.to_string().contains(&granted), "{page}");

    server.stop().await;
    let _ = peer.kill().await;
}

#[tokio::test]
async fn a_sign_in_is_refused_when_forged_declined_for_a_server_the_agent_lacks_or_to_another_tenant() {
    let (mut peer, url) = peer(3600).await;
    let server = service(&url, false).await;
    let (_, chat) =
        server.post("/api/chat", json!({"message": "list the open issues of my Acme Tracker project"})).await;
    let agent = chat["agent_id"].as_str().unwrap().to_owned();
    let session = chat["session_id"].as_str().unwrap().replace('-', "");

    let forged = format!("{session}.{SERVER}.{}", "A".repeat(43));
    for state in [forged.as_str(), "nonsense", ""] {
        let (status, body) = server.get(&format!("/api/sign-in?state={state}")).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (400, Some("invalid_sign_in_link")),
            "{state}: {body}"
        );
    }
    let (status, body) = server.get("/api/sign-in/callback?error=access_denied&state=x").await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("access_denied"), "{body}");
    let (status, body) = server.get("/api/sign-in/callback").await;
    assert_eq!(status, 400, "{body}");

    // A server the agent does not have is not found.
    let (status, body) =
        server.post(&format!("/api/agents/{agent}/servers/time-mcp-server/sign-in"), json!({})).await;
    assert_eq!((status, body["error"]["code"].as_str()), (404, Some("server_not_in_agent")), "{body}");

    // Another tenant cannot open a sign-in for this agent: to it, the agent does not exist.
    let intruder = dynamcp::access::Tenant::parse("intruder").unwrap();
    let (_, key) = dynamcp::access::create_key(server.store.as_ref(), &intruder, "").await.unwrap();
    // The service notices a key created while it runs within a couple of seconds.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let offer = server
        .http
        .post(server.url(&format!("/api/agents/{agent}/servers/{SERVER}/sign-in")))
        .header("authorization", format!("Bearer {}", key.expose()))
        .json(&json!({}));
    let (status, body) = server.json(offer).await;
    assert_eq!((status, body["error"]["code"].as_str()), (404, Some("agent_not_found")), "{body}");

    server.stop().await;
    let _ = peer.kill().await;
}
