//! API keys and tenant isolation, on both backends: without keys the service is open; with keys
//! every `/api/` route needs one, and another tenant's sessions and agents answer 404 on every
//! route, exactly as missing ones do.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{Db, TestServer, error_body};
use dynamcp::access::{Tenant, create_key};
use serde_json::{Value, json};
use uuid::Uuid;

on_both_backends!(open_without_keys_then_every_api_route_needs_one, tenants_never_see_each_other,);

async fn open_without_keys_then_every_api_route_needs_one(db: Db) {
    let server = TestServer::start_with_fixture_catalog(db).await;
    let (status, _) = server.post("/api/sessions/create", json!({})).await;
    assert_eq!(status, 200, "no keys: open");

    let (_, key) = create_key(server.store.as_ref(), &Tenant::parse("acme").unwrap(), "ci").await.unwrap();
    // The service notices a key created while it runs within a couple of seconds.
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;

    let unauthorized = |message: &str| error_body("unauthorized", message);
    let resp = server.http.post(server.url("/api/sessions/create")).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(resp.headers()["www-authenticate"], "Bearer");
    assert_eq!(
        resp.json::<Value>().await.unwrap(),
        unauthorized("this service needs an API key: send `Authorization: Bearer <key>`")
    );
    for bad in
        ["Bearer nope", "Bearer dmcp_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "Basic Zm9vOmJhcg=="]
    {
        let (status, body) =
            server.json(server.http.get(server.url("/api/agents")).header("authorization", bad)).await;
        assert_eq!(status, 401, "{bad}");
        assert_eq!(body["error"]["code"], "unauthorized");
    }
    let (status, body) = server.post("/api/servers/search", json!({"query": "time"})).await;
    assert_eq!((status, body["error"]["code"].as_str()), (401, Some("unauthorized")), "the catalog too");

    // The identity, health and docs stay public.
    for path in ["/", "/health", "/openapi.json"] {
        let (status, _) = server.get(path).await;
        assert_eq!(status, 200, "{path}");
    }

    let auth = format!("Bearer {}", key.expose());
    let (status, body) = server
        .json(server.http.post(server.url("/api/sessions/create")).header("authorization", &auth))
        .await;
    assert_eq!(status, 200, "{body}");

    // Revoked: refused from then on.
    let id = server.store.list_api_keys().await.unwrap()[0].id;
    assert!(server.store.revoke_api_key(id).await.unwrap());
    let (status, _) =
        server.json(server.http.get(server.url("/api/agents")).header("authorization", &auth)).await;
    assert_eq!(status, 401);
    server.stop().await;
}

/// Sends `body` (or nothing) with `key`, returns status and JSON.
async fn call(server: &TestServer, key: &str, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut req = server
        .http
        .request(method.parse().unwrap(), server.url(path))
        .header("authorization", format!("Bearer {key}"));
    if let Some(body) = body {
        req = req.json(&body);
    }
    server.json(req).await
}

async fn tenants_never_see_each_other(db: Db) {
    let server = TestServer::start_with_fixture_catalog(db).await;
    let (_, a) = create_key(server.store.as_ref(), &Tenant::parse("tenant-a").unwrap(), "").await.unwrap();
    let (_, b) = create_key(server.store.as_ref(), &Tenant::parse("tenant-b").unwrap(), "").await.unwrap();
    let (a, b) = (a.expose().to_owned(), b.expose().to_owned());

    // Tenant A: a session whose chat created an agent (the time server needs no credential).
    let (status, body) =
        call(&server, &a, "POST", "/api/chat", Some(json!({"message": "what time is it in Tokyo"}))).await;
    assert_eq!(status, 200, "{body}");
    let session = body["session_id"].as_str().unwrap().to_owned();
    let agent = body["agent_id"].as_str().unwrap().to_owned();
    assert_eq!(call(&server, &a, "GET", &format!("/api/agents/{agent}"), None).await.0, 200);

    // Tenant B sees none of it: every route answers exactly as for an id that does not exist.
    let no_session = error_body("session_not_found", &format!("session {session} not found"));
    let no_agent = error_body("agent_not_found", &format!("agent {agent} not found"));
    let checks: Vec<(&str, String, Option<Value>, &Value)> = vec![
        ("GET", format!("/api/sessions/{session}"), None, &no_session),
        ("DELETE", format!("/api/sessions/{session}"), None, &no_session),
        (
            "POST",
            "/api/chat".to_owned(),
            Some(json!({"message": "hello", "session_id": session})),
            &no_session,
        ),
        ("GET", format!("/api/agents/{agent}"), None, &no_agent),
        ("DELETE", format!("/api/agents/{agent}"), None, &no_agent),
        ("GET", format!("/api/agents/{agent}/config?format=cursor&include_secrets=true"), None, &no_agent),
        ("GET", format!("/api/agents/{agent}/tools"), None, &no_agent),
        (
            "POST",
            format!("/api/agents/{agent}/tools/call"),
            Some(
                json!({"server": "time-mcp-server", "tool": "get_current_time", "arguments": {"timezone": "UTC"}}),
            ),
            &no_agent,
        ),
        ("POST", format!("/api/agents/{agent}/run"), Some(json!({"input": "time?"})), &no_agent),
        ("POST", format!("/api/agents/{agent}/tools/approve"), None, &no_agent),
        (
            "POST",
            format!("/api/agents/{agent}/tools/allow"),
            Some(json!({"server": "time-mcp-server", "tool": "get_current_time"})),
            &no_agent,
        ),
    ];
    for (method, path, body, expected) in checks {
        let (status, answer) = call(&server, &b, method, &path, body).await;
        assert_eq!((status, &answer), (404, expected), "{method} {path}");
    }
    let resp = server
        .http
        .post(server.url(&format!("/api/sessions/{session}/files")))
        .header("authorization", format!("Bearer {b}"))
        .multipart(
            reqwest::multipart::Form::new().part("KEY", reqwest::multipart::Part::bytes(b"x".to_vec())),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    let (status, body) = call(&server, &b, "GET", "/api/agents", None).await;
    assert_eq!((status, &body["agents"], &body["total"]), (200, &json!([]), &json!(0)));

    // B's own work is B's; A still has exactly its own.
    let (status, body) =
        call(&server, &b, "POST", "/api/chat", Some(json!({"message": "what time is it in Tokyo"}))).await;
    assert_eq!(status, 200, "{body}");
    let (_, listed) = call(&server, &a, "GET", "/api/agents", None).await;
    assert_eq!(listed["total"], 1);
    assert_eq!(listed["agents"][0]["id"], agent.as_str());
    // Nothing B tried touched A's session.
    let (status, body) = call(&server, &a, "GET", &format!("/api/sessions/{session}"), None).await;
    assert_eq!(status, 200);
    assert_eq!(body["messages"].as_array().unwrap().len(), 2, "{body}");
    let missing = Uuid::new_v4();
    let (status, body) = call(&server, &a, "GET", &format!("/api/sessions/{missing}"), None).await;
    assert_eq!(
        (status, body),
        (404, error_body("session_not_found", &format!("session {missing} not found")))
    );
    server.stop().await;
}

#[tokio::test]
async fn a_public_address_without_keys_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let mut args = dynamcp::config::ServeArgs::for_data_dir(dir.path());
    args.addr = "0.0.0.0:0".parse().unwrap();
    let err = dynamcp::run(args.clone(), async {}).await.unwrap_err().to_string();
    assert!(err.contains("refusing to serve 0.0.0.0:0 without API keys"), "{err}");
    assert!(err.contains("dynamcp keys create"), "{err}");
    // Explicitly allowed: it starts (and stops at once, as its shutdown signal is already done).
    args.insecure_no_auth = true;
    dynamcp::run(args, async {}).await.unwrap();
}

#[tokio::test]
async fn rate_limits_per_ip_when_open_and_per_tenant_with_keys() {
    let (mut args, dir) = common::test_args(Db::Sqlite).await;
    args.rate_limit_per_sec = 1;
    args.rate_limit_burst = 2;
    let server = TestServer::start_with(args, dir).await;
    assert_eq!(server.get("/api/agents").await.0, 200);
    assert_eq!(server.get("/api/agents").await.0, 200);
    let resp = server.http.get(server.url("/api/agents")).send().await.unwrap();
    assert_eq!(resp.status(), 429);
    assert_eq!(resp.headers()["retry-after"], "1");
    assert_eq!(
        resp.json::<Value>().await.unwrap(),
        error_body("rate_limited", "too many requests: try again in 1 s")
    );
    // Only the API is limited.
    assert_eq!(server.get("/health").await.0, 200);

    // With keys, each tenant has its own budget, whatever IP it comes from.
    let (_, a) = create_key(server.store.as_ref(), &Tenant::parse("a").unwrap(), "").await.unwrap();
    let (_, b) = create_key(server.store.as_ref(), &Tenant::parse("b").unwrap(), "").await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    for _ in 0..2 {
        assert_eq!(call(&server, a.expose(), "GET", "/api/agents", None).await.0, 200);
    }
    assert_eq!(call(&server, a.expose(), "GET", "/api/agents", None).await.0, 429);
    assert_eq!(call(&server, b.expose(), "GET", "/api/agents", None).await.0, 200);

    // Failed attempts count against the client's IP: guessing keys is throttled too.
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    let guess = "dmcp_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    let statuses: Vec<u16> = statuses_of(&server, guess, 4).await;
    assert_eq!(statuses, [401, 401, 429, 429]);
    server.stop().await;
}

async fn statuses_of(server: &TestServer, key: &str, n: usize) -> Vec<u16> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(call(server, key, "GET", "/api/agents", None).await.0);
    }
    out
}
