//! Containment on the HTTP face, each attack replayed against the real service: DNS rebinding
//! (a foreign `Host`) on every route, cross-site requests from browser pages (a foreign `Origin`,
//! `Origin: null`, `Sec-Fetch-Site`, a plain HTML form, and a real attacker page in headless
//! Chromium), keys that fail closed when the last one is revoked, and `/mcp` sessions bound to
//! the tenant that opened them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;
use std::time::Duration;

use common::{Db, TestServer, error_body};
use dynamcp::access::{Tenant, create_key};
use reqwest::Method;
use serde_json::{Value, json};
use sqlx::Connection;

const REBIND_HOST: &str = "rebind.attacker.example:8000";
const EVIL: &str = "http://evil.example";

/// The whole refusal of a request for a host the service does not have.
fn host_refused(host: &str) -> Value {
    error_body(
        "host_not_allowed",
        &format!(
            "this service does not answer to the host {host} (a guard against DNS rebinding); if it is \
             this service's public name, add it to DYNAMCP_ALLOWED_HOSTS"
        ),
    )
}

/// The whole refusal of a browser request from another origin.
fn origin_refused(origin: &str) -> Value {
    error_body(
        "cross_origin_refused",
        &format!(
            "cross-origin request refused: a page from {origin} may not send it; only this service's \
             own pages and the origins in DYNAMCP_CORS_ORIGINS may"
        ),
    )
}

fn mcp_session_not_found() -> Value {
    error_body(
        "mcp_session_not_found",
        "MCP session not found: it ended, or it was opened with another API key; send `initialize` to start a new one",
    )
}

/// How many sessions the store holds (SQLite; there is no route that lists sessions).
async fn stored_sessions(server: &TestServer) -> i64 {
    let url = format!("sqlite://{}?mode=ro", server.data_dir().join("dynamcp.db").display());
    let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
    let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM sessions").fetch_one(&mut conn).await.unwrap();
    conn.close().await.unwrap();
    n
}

/// How many agents the (open) service lists.
async fn listed_agents(server: &TestServer) -> u64 {
    let (status, body) = server.get("/api/agents").await;
    assert_eq!(status, 200, "{body}");
    body["total"].as_u64().unwrap()
}

/// A request to `path` with extra `headers`.
fn request(
    server: &TestServer,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
) -> reqwest::RequestBuilder {
    let mut req = server.http.request(method, server.url(path));
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    req
}

/// The origin a browser gives the service's own pages (`http://127.0.0.1:<port>`).
fn own_origin(server: &TestServer) -> String {
    server.base.clone()
}

fn chat_body() -> Value {
    json!({"message": "what time is it in Tokyo"})
}

const MCP_INITIALIZE: &str = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"http-guard-test","version":"0"}}}"#;

/// A streamable-HTTP MCP request, as an MCP client sends it.
fn mcp(
    server: &TestServer,
    method: Method,
    body: Option<&str>,
    key: Option<&str>,
    session: Option<&str>,
) -> reqwest::RequestBuilder {
    let mut req = server
        .http
        .request(method, server.url("/mcp"))
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2025-06-18");
    if let Some(body) = body {
        req = req.header("content-type", "application/json").body(body.to_owned());
    }
    if let Some(key) = key {
        req = req.header("authorization", format!("Bearer {key}"));
    }
    if let Some(session) = session {
        req = req.header("mcp-session-id", session);
    }
    req
}

/// Opens an MCP session (initialize, then the initialized notification); returns its id.
async fn open_mcp_session(server: &TestServer, key: Option<&str>) -> String {
    let resp = mcp(server, Method::POST, Some(MCP_INITIALIZE), key, None).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let session = resp.headers()["mcp-session-id"].to_str().unwrap().to_owned();
    assert!(resp.text().await.unwrap().contains("serverInfo"));
    let initialized = r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#;
    let resp = mcp(server, Method::POST, Some(initialized), key, Some(&session)).send().await.unwrap();
    assert_eq!(resp.status(), 202, "{}", resp.text().await.unwrap());
    session
}

const TOOLS_LIST: &str = r#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#;

/// Status and JSON body (or the raw text, as a JSON string, when the body is not JSON).
async fn answer(req: reqwest::RequestBuilder) -> (u16, Value) {
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

#[tokio::test]
async fn a_rebinding_host_is_refused_on_every_route_and_changes_nothing() {
    let server = TestServer::start_with_fixture_catalog(Db::Sqlite).await;
    let routes: [(Method, &str, Option<Value>); 12] = [
        (Method::GET, "/", None),
        (Method::GET, "/health", None),
        (Method::POST, "/api/sessions/create", None),
        (Method::POST, "/api/chat", Some(chat_body())),
        (Method::GET, "/api/agents", None),
        (Method::POST, "/api/servers/search", Some(json!({"query": "time"}))),
        (Method::GET, "/docs/", None),
        (Method::GET, "/openapi.json", None),
        (Method::POST, "/mcp", None),
        (Method::GET, "/mcp", None),
        (Method::OPTIONS, "/api/chat", None),
        (Method::GET, "/nowhere", None),
    ];
    for (method, path, body) in &routes {
        let mut req =
            request(&server, method.clone(), path, &[("host", REBIND_HOST), ("accept", "text/html")]);
        if let Some(body) = body {
            req = req.json(body);
        }
        if *path == "/mcp" && *method == Method::POST {
            req = req.header("content-type", "application/json").body(MCP_INITIALIZE);
        }
        let (status, body) = server.json(req).await;
        assert_eq!((status, body), (403, host_refused(REBIND_HOST)), "{method} {path}");
    }
    // The same page, same-origin to itself, sends what the browser would for its own name.
    let (status, body) = server
        .json(request(
            &server,
            Method::POST,
            "/api/sessions/create",
            &[("host", REBIND_HOST), ("origin", "http://rebind.attacker.example:8000")],
        ))
        .await;
    assert_eq!((status, body), (403, host_refused(REBIND_HOST)));
    for host in ["localhost.attacker.example", "127.0.0.1.nip.io:8000", "10.0.0.1:8000"] {
        let (status, body) =
            server.json(request(&server, Method::GET, "/api/agents", &[("host", host)])).await;
        assert_eq!((status, body), (403, host_refused(host)), "{host}");
    }
    assert_eq!(stored_sessions(&server).await, 0, "no session was opened");
    assert_eq!(listed_agents(&server).await, 0, "no agent was created");
    server.stop().await;
}

#[tokio::test]
async fn loopback_hosts_and_a_configured_public_host_are_answered() {
    let (mut args, dir) = common::test_args(Db::Sqlite).await;
    args.allowed_hosts = vec!["dynamcp.example.com".to_owned(), "other.example:8443".to_owned()];
    let server = TestServer::start_with(args, dir).await;
    let port = server.base.rsplit(':').next().unwrap().to_owned();
    for host in [
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        "localhost".to_owned(),
        "127.3.4.5:9".to_owned(),
        format!("[::1]:{port}"),
        "dynamcp.example.com".to_owned(),
        "DYNAMCP.example.com:443".to_owned(),
        "other.example:8443".to_owned(),
    ] {
        for path in ["/", "/health", "/openapi.json", "/api/agents"] {
            let (status, body) = server.json(request(&server, Method::GET, path, &[("host", &host)])).await;
            assert_eq!(status, 200, "{host} {path}: {body}");
        }
    }
    // A page served under the public name posts to itself (behind a TLS proxy: https).
    let (status, body) = server
        .json(request(
            &server,
            Method::POST,
            "/api/sessions/create",
            &[("host", "dynamcp.example.com"), ("origin", "https://dynamcp.example.com")],
        ))
        .await;
    assert_eq!(status, 200, "{body}");
    // A port the entry does not name is another host.
    let (status, body) =
        server.json(request(&server, Method::GET, "/api/agents", &[("host", "other.example:8444")])).await;
    assert_eq!((status, body), (403, host_refused("other.example:8444")));
    server.stop().await;
}

#[tokio::test]
async fn cross_site_browser_requests_are_refused_and_create_nothing() {
    let server = TestServer::start_with_fixture_catalog(Db::Sqlite).await;
    let port = server.base.rsplit(':').next().unwrap().to_owned();
    let other_local_port = "http://127.0.0.1:1".to_owned();
    let localhost_alias = format!("http://localhost:{port}");

    // A foreign Origin on every state-changing route: refused before anything runs.
    for origin in [EVIL, other_local_port.as_str(), localhost_alias.as_str(), "https://127.0.0.1"] {
        let (status, body) =
            server.json(request(&server, Method::POST, "/api/sessions/create", &[("origin", origin)])).await;
        assert_eq!((status, body), (403, origin_refused(origin)), "{origin}");
        let (status, body) = server
            .json(request(&server, Method::POST, "/api/chat", &[("origin", origin)]).json(&chat_body()))
            .await;
        assert_eq!((status, body), (403, origin_refused(origin)), "{origin}");
    }
    // The classic CSRF: a plain HTML form, posted from another site.
    let (status, body) = server
        .json(
            request(
                &server,
                Method::POST,
                "/api/sessions/create",
                &[
                    ("origin", EVIL),
                    ("content-type", "application/x-www-form-urlencoded"),
                    ("sec-fetch-site", "cross-site"),
                    ("sec-fetch-mode", "navigate"),
                ],
            )
            .body("message=what+time+is+it"),
        )
        .await;
    assert_eq!((status, body), (403, origin_refused(EVIL)));
    // An opaque origin (sandboxed frame, local file), and a browser request with no Origin that
    // the browser marks cross-site or same-site (another port on this machine).
    let opaque = error_body(
        "cross_origin_refused",
        "cross-origin request refused: a page with an opaque origin (`Origin: null`: a sandboxed frame \
         or a local file) or an unreadable `Origin` may not send it",
    );
    let (status, body) =
        server.json(request(&server, Method::POST, "/api/sessions/create", &[("origin", "null")])).await;
    assert_eq!((status, body), (403, opaque));
    for site in ["cross-site", "same-site"] {
        let (status, body) = server
            .json(request(&server, Method::POST, "/api/sessions/create", &[("sec-fetch-site", site)]))
            .await;
        let expected = error_body(
            "cross_origin_refused",
            &format!(
                "cross-origin request refused: the browser marked it `Sec-Fetch-Site: {site}`; only this \
                 service's own pages may send it"
            ),
        );
        assert_eq!((status, body), (403, expected), "{site}");
    }
    assert_eq!(stored_sessions(&server).await, 0, "nothing was created");
    assert_eq!(listed_agents(&server).await, 0, "no chat turn ran");

    // The service's own pages, and clients that are not browsers, go through.
    let own = own_origin(&server);
    let (status, created) = server
        .json(request(
            &server,
            Method::POST,
            "/api/sessions/create",
            &[("origin", &own), ("sec-fetch-site", "same-origin")],
        ))
        .await;
    assert_eq!(status, 200, "{created}");
    let (status, body) = server
        .json(request(&server, Method::POST, "/api/chat", &[("origin", &own)]).json(&chat_body()))
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = server.json(request(&server, Method::POST, "/api/sessions/create", &[])).await;
    assert_eq!(status, 200, "curl");
    assert_eq!(stored_sessions(&server).await, 3);
    assert_eq!(listed_agents(&server).await, 1);

    // Deleting is changing: a foreign page cannot delete what it found out about.
    let id = created["id"].as_str().unwrap();
    let (status, body) = server
        .json(request(&server, Method::DELETE, &format!("/api/sessions/{id}"), &[("origin", EVIL)]))
        .await;
    assert_eq!((status, body), (403, origin_refused(EVIL)));
    assert_eq!(server.get(&format!("/api/sessions/{id}")).await.0, 200, "still there");
    // Reading is CORS's business: a foreign page's GET is answered, without CORS headers, so its
    // page cannot read it.
    let resp = request(&server, Method::GET, "/api/agents", &[("origin", EVIL)]).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers().get("access-control-allow-origin").is_none());
    server.stop().await;
}

#[tokio::test]
async fn mcp_refuses_foreign_origins_on_every_method() {
    let server = TestServer::start(Db::Sqlite).await;
    for method in [Method::GET, Method::POST, Method::DELETE, Method::OPTIONS] {
        let body = (method == Method::POST).then_some(MCP_INITIALIZE);
        let (status, answer) =
            answer(mcp(&server, method.clone(), body, None, None).header("origin", EVIL)).await;
        assert_eq!((status, answer), (403, origin_refused(EVIL)), "{method}");
    }
    let (status, body) =
        answer(mcp(&server, Method::GET, None, None, None).header("sec-fetch-site", "cross-site")).await;
    assert_eq!(status, 403, "{body}");
    // Its own pages and MCP clients (no Origin) open sessions.
    let resp = mcp(&server, Method::POST, Some(MCP_INITIALIZE), None, None)
        .header("origin", own_origin(&server))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    open_mcp_session(&server, None).await;
    server.stop().await;
}

#[tokio::test]
async fn configured_cors_origins_keep_working_and_only_they() {
    let (mut args, dir) = common::test_args(Db::Sqlite).await;
    args.cors_origins = vec!["https://app.example".to_owned()];
    let server = TestServer::start_with(args, dir).await;
    for path in ["/api/sessions/create", "/mcp"] {
        let resp = request(
            &server,
            Method::OPTIONS,
            path,
            &[("origin", "https://app.example"), ("access-control-request-method", "POST")],
        )
        .send()
        .await
        .unwrap();
        assert_eq!(resp.status(), 200, "{path}");
        assert_eq!(resp.headers()["access-control-allow-origin"], "https://app.example", "{path}");
    }
    let resp = request(&server, Method::POST, "/api/sessions/create", &[("origin", "https://app.example")])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["access-control-allow-origin"], "https://app.example");
    let resp = mcp(&server, Method::POST, Some(MCP_INITIALIZE), None, None)
        .header("origin", "https://app.example")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    // Any other origin: refused, preflight to /mcp included.
    let (status, body) =
        server.json(request(&server, Method::POST, "/api/sessions/create", &[("origin", EVIL)])).await;
    assert_eq!((status, body), (403, origin_refused(EVIL)));
    let (status, body) = answer(request(
        &server,
        Method::OPTIONS,
        "/mcp",
        &[("origin", EVIL), ("access-control-request-method", "POST")],
    ))
    .await;
    assert_eq!((status, body), (403, origin_refused(EVIL)));
    assert_eq!(stored_sessions(&server).await, 1);
    server.stop().await;
}

#[tokio::test]
async fn a_cors_wildcard_does_not_let_other_sites_drive_an_open_service() {
    let (mut args, dir) = common::test_args(Db::Sqlite).await;
    args.cors_origins = vec!["*".to_owned()];
    let server = TestServer::start_with(args, dir).await;
    let (status, body) =
        server.json(request(&server, Method::POST, "/api/sessions/create", &[("origin", EVIL)])).await;
    assert_eq!((status, body), (403, origin_refused(EVIL)), "open: refused");
    // With keys, a page needs one to do anything: the wildcard applies.
    let (_, key) = create_key(server.store.as_ref(), &Tenant::parse("acme").unwrap(), "").await.unwrap();
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let auth = format!("Bearer {}", key.expose());
    let (status, body) = server
        .json(request(
            &server,
            Method::POST,
            "/api/sessions/create",
            &[("origin", EVIL), ("authorization", &auth)],
        ))
        .await;
    assert_eq!(status, 200, "{body}");
    server.stop().await;
}

on_both_backends!(revoking_the_last_key_locks_the_service_instead_of_opening_it);

async fn revoking_the_last_key_locks_the_service_instead_of_opening_it(db: Db) {
    let (args, dir) = common::test_args(db).await;
    common::import_fixture_catalog(&args).await;
    let server = TestServer::start_with(args.clone(), dir).await;
    let (record, key) = create_key(server.store.as_ref(), &Tenant::parse("acme").unwrap(), "").await.unwrap();
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let auth = format!("Bearer {}", key.expose());
    let (status, _) = server
        .json(request(&server, Method::POST, "/api/sessions/create", &[("authorization", &auth)]))
        .await;
    assert_eq!(status, 200);
    assert!(server.store.revoke_api_key(record.id).await.unwrap());
    // Within the service's two-second mode cache, the last key's revocation is enforced.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_locked(&server, &auth).await;
    if db == Db::Sqlite {
        assert_eq!(stored_sessions(&server).await, 1, "only the one made with the key");
    }

    // After a restart, too: the revoked row is remembered.
    let dir = server.stop().await;
    let server = TestServer::start_with(args.clone(), dir).await;
    assert_locked(&server, &auth).await;
    let dir = server.stop().await;
    // `serve` starts (and says it is locked) rather than refusing or opening.
    dynamcp::run(args, async {}).await.unwrap();
    drop(dir);
}

async fn assert_locked(server: &TestServer, revoked: &str) {
    let missing =
        error_body("unauthorized", "this service needs an API key: send `Authorization: Bearer <key>`");
    let bad = error_body("unauthorized", "the API key is not valid (unknown, revoked or malformed)");
    for (method, path, body) in [
        (Method::POST, "/api/sessions/create", None),
        (Method::POST, "/api/chat", Some(chat_body())),
        (Method::GET, "/api/agents", None),
        (Method::POST, "/api/servers/search", Some(json!({"query": "time"}))),
    ] {
        let mut req = request(server, method.clone(), path, &[]);
        if let Some(body) = &body {
            req = req.json(body);
        }
        assert_eq!(server.json(req).await, (401, missing.clone()), "{method} {path}");
        let mut req = request(server, method.clone(), path, &[("authorization", revoked)]);
        if let Some(body) = &body {
            req = req.json(body);
        }
        assert_eq!(server.json(req).await, (401, bad.clone()), "{method} {path} with the revoked key");
    }
    let key = revoked.strip_prefix("Bearer ").unwrap();
    for key in [None, Some(key)] {
        let (status, body) = answer(mcp(server, Method::POST, Some(MCP_INITIALIZE), key, None)).await;
        assert_eq!((status, &body["error"]["code"]), (401, &json!("unauthorized")), "/mcp: {body}");
    }
    // The identity and health stay public.
    assert_eq!(server.get("/").await.0, 200);
    assert_eq!(server.get("/health").await.0, 200);
}

#[tokio::test]
async fn a_network_address_never_runs_open_unless_explicitly_allowed() {
    // Embedded without `run`'s start-up refusal: still no open service.
    let (mut args, dir) = common::test_args(Db::Sqlite).await;
    args.addr = "0.0.0.0:0".parse().unwrap();
    let server = TestServer::start_with(args, dir).await;
    let (status, body) = server.json(request(&server, Method::POST, "/api/sessions/create", &[])).await;
    assert_eq!((status, &body["error"]["code"]), (401, &json!("unauthorized")), "{body}");
    assert_eq!(answer(mcp(&server, Method::POST, Some(MCP_INITIALIZE), None, None)).await.0, 401);
    server.stop().await;

    // `--insecure-no-auth`: open, but by IP address only (a rebinding page uses a name) and
    // never to other sites' pages; and keys still fail closed once created and revoked.
    let (mut args, dir) = common::test_args(Db::Sqlite).await;
    args.addr = "0.0.0.0:0".parse().unwrap();
    args.insecure_no_auth = true;
    let server = TestServer::start_with(args, dir).await;
    let (status, body) = server
        .json(request(&server, Method::POST, "/api/sessions/create", &[("host", "192.0.2.10:8000")]))
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) =
        server.json(request(&server, Method::POST, "/api/sessions/create", &[("host", REBIND_HOST)])).await;
    assert_eq!((status, body), (403, host_refused(REBIND_HOST)));
    let (status, body) = server
        .json(request(
            &server,
            Method::POST,
            "/api/sessions/create",
            &[("host", "192.0.2.10:8000"), ("origin", EVIL)],
        ))
        .await;
    assert_eq!((status, body), (403, origin_refused(EVIL)));
    let (record, _) = create_key(server.store.as_ref(), &Tenant::parse("acme").unwrap(), "").await.unwrap();
    tokio::time::sleep(Duration::from_millis(2100)).await;
    // With keys, any name reaches the key check (no names configured).
    let (status, _) = server
        .json(request(&server, Method::POST, "/api/sessions/create", &[("host", "dynamcp.example.com")]))
        .await;
    assert_eq!(status, 401);
    server.store.revoke_api_key(record.id).await.unwrap();
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let (status, _) = server.json(request(&server, Method::POST, "/api/sessions/create", &[])).await;
    assert_eq!(status, 401, "locked, not open again");
    server.stop().await;

    // Names configured on a network address: only those (and loopback names) are answered.
    let (mut args, dir) = common::test_args(Db::Sqlite).await;
    args.addr = "0.0.0.0:0".parse().unwrap();
    args.allowed_hosts = vec!["dynamcp.example.com".to_owned()];
    let server = TestServer::start_with(args, dir).await;
    let (_, key) = create_key(server.store.as_ref(), &Tenant::parse("acme").unwrap(), "").await.unwrap();
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let auth = format!("Bearer {}", key.expose());
    for (host, expected) in
        [("dynamcp.example.com", 200), ("127.0.0.1:8000", 200), ("192.0.2.10", 403), (REBIND_HOST, 403)]
    {
        let (status, body) = server
            .json(request(
                &server,
                Method::POST,
                "/api/sessions/create",
                &[("host", host), ("authorization", &auth)],
            ))
            .await;
        assert_eq!(status, expected, "{host}: {body}");
    }
    server.stop().await;
}

#[tokio::test]
async fn an_mcp_session_answers_only_the_tenant_that_opened_it() {
    let server = TestServer::start(Db::Sqlite).await;
    let (_, a) = create_key(server.store.as_ref(), &Tenant::parse("tenant-a").unwrap(), "").await.unwrap();
    let (_, b) = create_key(server.store.as_ref(), &Tenant::parse("tenant-b").unwrap(), "").await.unwrap();
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let (a, b) = (a.expose().to_owned(), b.expose().to_owned());
    let session = open_mcp_session(&server, Some(&a)).await;

    // Tenant B, holding A's session id, gets exactly what an unknown id gets, on every method.
    let unknown = "00000000-0000-4000-8000-000000000000";
    for (method, body) in [(Method::POST, Some(TOOLS_LIST)), (Method::GET, None), (Method::DELETE, None)] {
        let (status, answer_b) = answer(mcp(&server, method.clone(), body, Some(&b), Some(&session))).await;
        assert_eq!((status, answer_b), (404, mcp_session_not_found()), "{method} with B's key");
        let (status, answer_unknown) =
            answer(mcp(&server, method.clone(), body, Some(&b), Some(unknown))).await;
        assert_eq!((status, answer_unknown), (404, mcp_session_not_found()), "{method} unknown id");
    }
    // A's session is untouched and still A's.
    let (status, listed) =
        answer(mcp(&server, Method::POST, Some(TOOLS_LIST), Some(&a), Some(&session))).await;
    assert_eq!(status, 200);
    assert!(listed.as_str().unwrap().contains("search_servers"), "{listed}");
    // B opens its own, which A cannot use either.
    let b_session = open_mcp_session(&server, Some(&b)).await;
    let (status, body) =
        answer(mcp(&server, Method::POST, Some(TOOLS_LIST), Some(&a), Some(&b_session))).await;
    assert_eq!((status, body), (404, mcp_session_not_found()));
    // A ends its session: from then on it is unknown to everyone.
    let (status, _) = answer(mcp(&server, Method::DELETE, None, Some(&a), Some(&session))).await;
    assert_eq!(status, 202);
    let (status, body) = answer(mcp(&server, Method::POST, Some(TOOLS_LIST), Some(&a), Some(&session))).await;
    assert_eq!((status, body), (404, mcp_session_not_found()));
    server.stop().await;
}

#[tokio::test]
async fn an_open_service_s_mcp_session_is_not_usable_with_a_key_created_later() {
    let server = TestServer::start(Db::Sqlite).await;
    let session = open_mcp_session(&server, None).await;
    let (_, key) = create_key(server.store.as_ref(), &Tenant::parse("acme").unwrap(), "").await.unwrap();
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let (status, body) =
        answer(mcp(&server, Method::POST, Some(TOOLS_LIST), Some(key.expose()), Some(&session))).await;
    assert_eq!((status, body), (404, mcp_session_not_found()));
    server.stop().await;
}

/// A real attacker page in headless Chromium, on another loopback port (same site, another
/// origin), tries `fetch` and an HTML form against the service: the browser sends them, the
/// service refuses every one and stores nothing; the service's own page, as a control, works.
#[tokio::test]
async fn a_page_of_another_origin_in_chromium_creates_nothing() {
    let server = TestServer::start_with_fixture_catalog(Db::Sqlite).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let metrics_url = format!("http://{}/metrics", listener.local_addr().unwrap());
    tokio::spawn(dynamcp::serve_metrics(listener));
    let base = server.base.clone();
    let out = tokio::task::spawn_blocking(move || {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/cross_origin_attack.py");
        let output = std::process::Command::new("python3").arg(script).arg(&base).output().unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(
            output.status.success(),
            "the browser attack script failed:\n{}\n{stdout}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_str::<Value>(stdout.trim()).unwrap()
    })
    .await
    .unwrap();
    let attacker = out["attacker"].as_str().unwrap();
    // Every request the attacker's page made was sent, and (where the browser shows the answer at
    // all) was refused. (Playwright reports the `Origin` Chromium adds only for the form.)
    let seen = out["seen"].as_array().unwrap();
    assert_eq!(seen.len(), 4, "three fetches and a form: {seen:?}");
    for r in seen {
        assert_eq!(r[0], "POST", "{r}");
        assert!(r[2] == 403 || r[2].is_string(), "refused, or failed in the browser: {r}");
        assert!(r[3].is_null() || r[3] == attacker, "{r}");
    }
    assert_eq!(seen[3][3], attacker, "the form says where it comes from: {seen:?}");
    // The service's own count: every one of them answered 403, the control 201.
    let metrics = server.http.get(&metrics_url).send().await.unwrap().text().await.unwrap();
    for line in [
        r#"dynamcp_http_requests_total{method="POST",route="/api/sessions/create",status="403"} 3"#,
        r#"dynamcp_http_requests_total{method="POST",route="/api/chat",status="403"} 1"#,
        r#"dynamcp_http_requests_total{method="POST",route="/api/sessions/create",status="200"} 1"#,
    ] {
        assert!(metrics.lines().any(|l| l == line), "missing {line:?} in:\n{metrics}");
    }
    // The page itself learns nothing: opaque answers, or a CORS failure.
    let fetches = out["fetches"].as_array().unwrap();
    assert_eq!(fetches[0], json!(["no-cors create", "opaque", 0]));
    assert_eq!(fetches[1][1], "error", "{fetches:?}");
    assert_eq!(fetches[2], json!(["no-cors chat", "opaque", 0]));
    let form: Value = serde_json::from_str(out["form_frame"].as_str().unwrap()).unwrap();
    assert_eq!(form, origin_refused(attacker));
    // The control: the same request from the service's own page.
    assert_eq!(out["own_origin"][0], 200, "{}", out["own_origin"]);
    assert_eq!(stored_sessions(&server).await, 1, "only the service's own page opened a session");
    assert_eq!(listed_agents(&server).await, 0);
    server.stop().await;
}
