//! End-to-end HTTP tests: the real server on an ephemeral port, a real client, both backends.
//! Bodies are asserted whole, errors included.
#![allow(clippy::unwrap_used)]

mod common;

use common::{Db, TestServer, error_body};
use dynamcp::store::{NewAgent, Role};
use serde_json::{Value, json};
use uuid::Uuid;

on_both_backends!(
    root_answers_the_design_identity,
    health_reports_the_backend,
    session_creation_returns_an_id,
    chat_returns_a_session_id_and_records_the_turn,
    chat_continues_an_existing_session,
    chat_with_unknown_session_is_404,
    chat_rejects_credentials_and_stores_nothing,
    chat_rejects_bad_input_in_the_error_shape,
    session_delete_cascades_to_agents,
    agents_are_listed_newest_first_with_pagination,
    agent_get_and_delete,
    path_ids_must_be_uuids,
);

/// These servers start with an empty catalog (no default import, no model): every plan is empty.
const NO_SERVER_FOUND: &str = dynamcp::planner::NO_SERVER_FOUND;

/// The reply to a one-step `request` with an empty catalog: why, per step.
fn nothing_found(request: &str) -> String {
    format!("{NO_SERVER_FOUND}\n- \"{request}\": nothing in the catalog matches it.")
}

async fn root_answers_the_design_identity(db: Db) {
    let server = TestServer::start(db).await;
    let resp = server.http.get(server.url("/")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/json");
    assert_eq!(resp.text().await.unwrap(), r#"{"message":"Dynamic MCP Agent API","version":"1.0.0"}"#);
    server.stop().await;
}

async fn health_reports_the_backend(db: Db) {
    let server = TestServer::start(db).await;
    let expected = match db {
        Db::Sqlite => "sqlite",
        Db::Postgres => "postgres",
    };
    let (status, health) = server.get("/health").await;
    assert_eq!(status, 200, "{health}");
    let replica = health["replica"].as_str().unwrap_or_default().to_owned();
    assert!(!replica.is_empty(), "the replica's lease id: {health}");
    assert_eq!(
        health,
        json!({
            "status": "ok", "database": expected, "sandbox": "ready", "llm": "none",
            "replica": replica, "build": env!("CARGO_PKG_VERSION"),
            "catalog": {"version": 0, "loaded": 0, "servers": 0},
            "vault_key": server.vault.key_id(),
        })
    );
    // With the store closed, health says so instead of pretending.
    server.store.close().await;
    assert_eq!(
        server.get("/health").await,
        (503, error_body("unavailable", "the service is temporarily unavailable"))
    );
    server.stop().await;
}

async fn session_creation_returns_an_id(db: Db) {
    let server = TestServer::start(db).await;
    let (status, created) = server.post("/api/sessions/create", json!({})).await;
    assert_eq!(status, 200);
    let id: Uuid = created["id"].as_str().unwrap().parse().unwrap();
    assert_eq!(created, json!({"id": id, "status": "active", "created_at": created["created_at"]}));

    let (status, session) = server.get(&format!("/api/sessions/{id}")).await;
    assert_eq!(status, 200);
    assert_eq!(
        session,
        json!({
            "id": id,
            "status": "active",
            "created_at": created["created_at"],
            "updated_at": created["created_at"],
            "context": {},
            "required_credentials": [],
            "collected_credentials": {},
            "messages": [],
        })
    );
    // Creating needs no body at all.
    let resp = server.http.post(server.url("/api/sessions/create")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    server.stop().await;
}

fn chat_reply(session_id: &Value, request: &str) -> Value {
    json!({
        "reply": nothing_found(request),
        "session_id": session_id,
        "required_credentials": [],
        "required_files": [],
        "status": "pending_credentials",
        "agent_created": false,
        "agent_id": null,
    })
}

async fn chat_returns_a_session_id_and_records_the_turn(db: Db) {
    let server = TestServer::start(db).await;
    let (status, body) = server.post("/api/chat", json!({"message": "check my Gmail for invoices"})).await;
    assert_eq!(status, 200);
    let session_id = body["session_id"].clone();
    let id: Uuid = session_id.as_str().unwrap().parse().unwrap();
    assert_eq!(body, chat_reply(&session_id, "check my Gmail for invoices"));

    let messages = server.store.messages(id).await.unwrap();
    let turns: Vec<(Role, &str)> = messages.iter().map(|m| (m.role, m.message.as_str())).collect();
    let nothing = nothing_found("check my Gmail for invoices");
    assert_eq!(turns, vec![(Role::User, "check my Gmail for invoices"), (Role::Assistant, nothing.as_str())]);

    let (_, session) = server.get(&format!("/api/sessions/{id}")).await;
    let history: Vec<(&str, &str)> = session["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["role"].as_str().unwrap(), m["message"].as_str().unwrap()))
        .collect();
    assert_eq!(history, vec![("user", "check my Gmail for invoices"), ("assistant", nothing.as_str())]);
    server.stop().await;
}

async fn chat_continues_an_existing_session(db: Db) {
    let server = TestServer::start(db).await;
    let (_, created) = server.post("/api/sessions/create", json!({})).await;
    let id = created["id"].clone();
    for text in ["first", "second"] {
        let (status, body) = server.post("/api/chat", json!({"message": text, "session_id": id})).await;
        // "second" asks for nothing new: the plan for "first" stands, with its reason.
        assert_eq!((status, body), (200, chat_reply(&id, "first")));
    }
    let messages = server.store.messages(id.as_str().unwrap().parse().unwrap()).await.unwrap();
    let users: Vec<&str> =
        messages.iter().filter(|m| m.role == Role::User).map(|m| m.message.as_str()).collect();
    assert_eq!(users, vec!["first", "second"]);
    assert_eq!(messages.len(), 4);
    server.stop().await;
}

async fn chat_with_unknown_session_is_404(db: Db) {
    let server = TestServer::start(db).await;
    let missing = Uuid::new_v4();
    assert_eq!(
        server.post("/api/chat", json!({"message": "hi", "session_id": missing})).await,
        (404, error_body("session_not_found", &format!("session {missing} not found")))
    );
    server.stop().await;
}

async fn chat_rejects_credentials_and_stores_nothing(db: Db) {
    let server = TestServer::start(db).await;
    let (_, created) = server.post("/api/sessions/create", json!({})).await;
    let id = created["id"].clone();
    let canary = format!("sk-canary-{}", Uuid::new_v4());
    let resp = server
        .http
        .post(server.url("/api/chat"))
        .json(
            &json!({"message": "here", "session_id": id, "credentials": {"gmail": {"GMAIL_TOKEN": canary}}}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 422);
    let text = resp.text().await.unwrap();
    assert!(!text.contains(&canary), "a credential value was echoed: {text}");
    assert_eq!(
        serde_json::from_str::<Value>(&text).unwrap(),
        error_body(
            "unexpected_credentials",
            "this session has no plan yet, so it expects no credentials or files (got some for `gmail`); \
             describe the workflow first. Nothing was stored"
        )
    );
    // A credential of the wrong type must not be echoed by the type error either.
    let (status, body) =
        server.post("/api/chat", json!({"message": "here", "credentials": {"gmail": canary}})).await;
    assert_eq!(status, 422);
    assert!(!body.to_string().contains(&canary), "{body}");
    assert_eq!(body["error"]["code"], "invalid_request");

    let (status, _) = server
        .post("/api/chat", json!({"message": "x", "session_id": id, "files": [{"name": "sa.json", "content_base64": "e30="}]}))
        .await;
    assert_eq!(status, 422);
    // Nothing from the rejected turns was recorded.
    assert!(server.store.messages(id.as_str().unwrap().parse().unwrap()).await.unwrap().is_empty());
    server.stop().await;
}

async fn chat_rejects_bad_input_in_the_error_shape(db: Db) {
    let server = TestServer::start(db).await;
    let chat = server.url("/api/chat");
    let raw =
        |body: &'static str| server.http.post(&chat).header("content-type", "application/json").body(body);

    let (status, body) = server.json(raw("{\"message\": ")).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["code"], "invalid_json");

    let (status, body) = server.json(raw("{\"message\": 42}")).await;
    assert_eq!(status, 422);
    assert_eq!(
        body,
        error_body(
            "invalid_request",
            "message: invalid type: integer `42`, expected a string at line 1 column 14"
        )
    );

    let (status, body) = server.json(raw("{}")).await;
    assert_eq!(
        (status, body),
        (422, error_body("invalid_request", "missing field `message` at line 1 column 2"))
    );

    let (status, body) = server.json(raw("")).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["code"], "invalid_json");

    let (status, body) = server.json(server.http.post(&chat).body("message=hi")).await;
    assert_eq!(
        (status, body),
        (
            415,
            error_body(
                "unsupported_media_type",
                "request body must be JSON with `Content-Type: application/json`"
            )
        )
    );

    let (status, body) = server.post("/api/chat", json!({"message": "   "})).await;
    assert_eq!((status, body), (422, error_body("empty_message", "`message` must not be empty")));

    let (status, body) = server.post("/api/chat", json!({"message": "hi", "session_id": "nope"})).await;
    assert_eq!(status, 422);
    assert_eq!(body["error"]["code"], "invalid_request");

    let huge = "x".repeat(3 * 1024 * 1024);
    let (status, body) = server.post("/api/chat", json!({ "message": huge })).await;
    assert_eq!(
        (status, body),
        (413, error_body("payload_too_large", "request body is larger than the configured limit"))
    );

    let (status, body) = server.get("/api/chat").await;
    assert_eq!((status, body), (405, error_body("method_not_allowed", "method not allowed on this route")));

    let (status, body) = server.get("/api/nothing/here").await;
    assert_eq!((status, body), (404, error_body("not_found", "no route for GET /api/nothing/here")));
    server.stop().await;
}

async fn session_delete_cascades_to_agents(db: Db) {
    let server = TestServer::start(db).await;
    let (_, chat) = server.post("/api/chat", json!({"message": "hello"})).await;
    let session_id: Uuid = chat["session_id"].as_str().unwrap().parse().unwrap();
    let agent = server.store.create_agent(&new_agent(session_id, "a")).await.unwrap();

    let (status, body) = server.delete(&format!("/api/sessions/{session_id}")).await;
    assert_eq!((status, body), (204, Value::Null));
    assert_eq!(
        server.get(&format!("/api/sessions/{session_id}")).await,
        (404, error_body("session_not_found", &format!("session {session_id} not found")))
    );
    assert_eq!(
        server.get(&format!("/api/agents/{}", agent.id)).await,
        (404, error_body("agent_not_found", &format!("agent {} not found", agent.id)))
    );
    assert!(server.store.messages(session_id).await.unwrap().is_empty());
    assert_eq!(
        server.delete(&format!("/api/sessions/{session_id}")).await,
        (404, error_body("session_not_found", &format!("session {session_id} not found")))
    );
    server.stop().await;
}

fn new_agent(session_id: Uuid, name: &str) -> NewAgent {
    NewAgent {
        tenant: String::new(),
        session_id,
        name: name.to_owned(),
        mcp_config: json!({"mcpServers": {"time": {"command": "uvx", "args": ["mcp-server-time"], "env": {}}}}),
        workflow: "tell the time".to_owned(),
        model: Some("offline".to_owned()),
        metadata: json!({"servers": ["time"]}),
    }
}

async fn agents_are_listed_newest_first_with_pagination(db: Db) {
    let server = TestServer::start(db).await;
    let session = server.store.create_session("").await.unwrap();
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(server.store.create_agent(&new_agent(session.id, &format!("agent-{i}"))).await.unwrap().id);
    }
    let (status, page) = server.get("/api/agents?limit=2&offset=1").await;
    assert_eq!(status, 200);
    assert_eq!(page["total"], 5);
    assert_eq!((page["limit"].clone(), page["offset"].clone()), (json!(2), json!(1)));
    let names: Vec<&str> =
        page["agents"].as_array().unwrap().iter().map(|a| a["name"].as_str().unwrap()).collect();
    assert_eq!(names, vec!["agent-3", "agent-2"]);

    let (_, all) = server.get("/api/agents").await;
    assert_eq!(all["limit"], 20);
    assert_eq!(all["agents"].as_array().unwrap().len(), 5);

    for bad in ["/api/agents?limit=0", "/api/agents?limit=101"] {
        assert_eq!(
            server.get(bad).await,
            (400, error_body("invalid_query", "limit must be between 1 and 100"))
        );
    }
    let (status, body) = server.get("/api/agents?offset=-1").await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["code"], "invalid_query");
    server.stop().await;
}

async fn agent_get_and_delete(db: Db) {
    let server = TestServer::start(db).await;
    let session = server.store.create_session("").await.unwrap();
    let agent = server.store.create_agent(&new_agent(session.id, "timekeeper")).await.unwrap();
    let (status, body) = server.get(&format!("/api/agents/{}", agent.id)).await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        json!({
            "id": agent.id,
            "session_id": session.id,
            "name": "timekeeper",
            "mcp_config": {"mcpServers": {"time": {"command": "uvx", "args": ["mcp-server-time"], "env": {}}}},
            "workflow": "tell the time",
            "model": "offline",
            "status": "created",
            "metadata": {"servers": ["time"]},
            "created_at": body["created_at"],
            "updated_at": body["created_at"],
        })
    );
    assert_eq!(server.delete(&format!("/api/agents/{}", agent.id)).await, (204, Value::Null));
    assert_eq!(
        server.delete(&format!("/api/agents/{}", agent.id)).await,
        (404, error_body("agent_not_found", &format!("agent {} not found", agent.id)))
    );
    // The session outlives its agent.
    assert!(server.store.get_session(session.id).await.unwrap().is_some());
    server.stop().await;
}

async fn path_ids_must_be_uuids(db: Db) {
    let server = TestServer::start(db).await;
    for (method, path) in [
        ("GET", "/api/sessions/not-a-uuid"),
        ("DELETE", "/api/sessions/123"),
        ("GET", "/api/agents/xyz"),
        ("DELETE", "/api/agents/xyz"),
    ] {
        let req = server.http.request(method.parse().unwrap(), server.url(path));
        assert_eq!(
            server.json(req).await,
            (400, error_body("invalid_id", "the id in the path must be a UUID")),
            "{method} {path}"
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn openapi_and_swagger_ui_are_served() {
    let server = TestServer::start(Db::Sqlite).await;
    let (status, doc) = server.get("/openapi.json").await;
    assert_eq!(status, 200);
    assert_eq!(doc["info"]["title"], "dynamcp");
    let mut paths: Vec<&str> = doc["paths"].as_object().unwrap().keys().map(String::as_str).collect();
    paths.sort_unstable();
    assert_eq!(
        paths,
        vec![
            "/",
            "/api/agents",
            "/api/agents/{id}",
            "/api/agents/{id}/config",
            "/api/agents/{id}/run",
            "/api/agents/{id}/servers/{server}/sign-in",
            "/api/agents/{id}/tools",
            "/api/agents/{id}/tools/allow",
            "/api/agents/{id}/tools/approve",
            "/api/agents/{id}/tools/call",
            "/api/chat",
            "/api/servers",
            "/api/servers/search",
            "/api/servers/{id}",
            "/api/sessions/create",
            "/api/sessions/{id}",
            "/api/sessions/{id}/files",
            "/api/sign-in",
            "/api/sign-in/callback",
            "/health"
        ]
    );
    let chat_schema = &doc["components"]["schemas"]["ChatResponse"]["properties"];
    // The design's fields, and three it does not have (filled-in defaults, optional settings and
    // sign-in links, sent only when there are some, which the design's clients ignore).
    let mut fields: Vec<&str> = chat_schema
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .filter(|f| !["defaults", "optional", "sign_in"].contains(f))
        .collect();
    assert!(["defaults", "optional", "sign_in"].iter().all(|f| chat_schema[f].is_object()), "{chat_schema}");
    fields.sort_unstable();
    assert_eq!(
        fields,
        vec![
            "agent_created",
            "agent_id",
            "reply",
            "required_credentials",
            "required_files",
            "session_id",
            "status"
        ]
    );

    let resp = server.http.get(server.url("/docs/")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.text().await.unwrap().contains("swagger-ui"));
    server.stop().await;
}

#[tokio::test]
async fn cors_is_off_by_default_and_configurable() {
    let server = TestServer::start(Db::Sqlite).await;
    let resp = server.http.get(server.url("/")).header("origin", "https://app.example").send().await.unwrap();
    assert!(resp.headers().get("access-control-allow-origin").is_none());
    server.stop().await;

    let (mut args, dir) = common::test_args(Db::Sqlite).await;
    args.cors_origins = vec!["https://app.example".to_owned()];
    let server = TestServer::start_with(args, dir).await;
    let resp = server
        .http
        .request(reqwest::Method::OPTIONS, server.url("/api/chat"))
        .header("origin", "https://app.example")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["access-control-allow-origin"], "https://app.example");
    let other =
        server.http.get(server.url("/")).header("origin", "https://evil.example").send().await.unwrap();
    assert!(other.headers().get("access-control-allow-origin").is_none());
    server.stop().await;
}

#[tokio::test]
async fn request_ids_are_kept_or_made_and_echoed() {
    let server = TestServer::start(Db::Sqlite).await;
    let resp = server.http.get(server.url("/")).header("x-request-id", "client-42").send().await.unwrap();
    assert_eq!(resp.headers()["x-request-id"], "client-42");
    let resp = server.http.get(server.url("/nowhere")).send().await.unwrap();
    assert_eq!(resp.status(), 404);
    let made = resp.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert!(Uuid::parse_str(&made).is_ok(), "a new UUID: {made}");
    // An unusable one (too long) is replaced, never echoed into logs or responses.
    let long = "x".repeat(300);
    let resp = server.http.get(server.url("/")).header("x-request-id", &long).send().await.unwrap();
    assert!(Uuid::parse_str(resp.headers()["x-request-id"].to_str().unwrap()).is_ok());
    server.stop().await;
}

#[tokio::test]
async fn prometheus_metrics_count_requests_by_route_and_status_on_their_own_listener() {
    let server = TestServer::start(Db::Sqlite).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let metrics_url = format!("http://{}/metrics", listener.local_addr().unwrap());
    tokio::spawn(dynamcp::serve_metrics(listener));
    for _ in 0..3 {
        server.get("/").await;
    }
    let session = Uuid::new_v4();
    let (status, _) = server.get(&format!("/api/sessions/{session}")).await;
    assert_eq!(status, 404);
    let (status, _) = server.post("/api/servers/search", json!({"query": "calendar", "limit": 3})).await;
    assert_eq!(status, 200);

    let resp = server.http.get(&metrics_url).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let text = resp.text().await.unwrap();
    for line in [
        r#"dynamcp_http_requests_total{method="GET",route="/",status="200"} 3"#,
        r#"dynamcp_http_requests_total{method="GET",route="/api/sessions/{id}",status="404"} 1"#,
        r#"dynamcp_http_requests_total{method="POST",route="/api/servers/search",status="200"} 1"#,
        "dynamcp_search_duration_seconds_count 1",
    ] {
        assert!(text.lines().any(|l| l == line), "missing {line:?} in:\n{text}");
    }
    assert!(
        text.contains(
            "dynamcp_http_request_duration_seconds_bucket{method=\"GET\",route=\"/\",le=\"0.001\"}"
        ),
        "{text}"
    );
    // The API itself has no /metrics.
    let (status, _) = server.get("/metrics").await;
    assert_eq!(status, 404);
    server.stop().await;
}
