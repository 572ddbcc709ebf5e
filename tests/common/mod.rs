//! Shared helpers for the end-to-end tests: a real server on an ephemeral port over a fresh
//! database (a temp SQLite file, or a new database on the private PostgreSQL that
//! `scripts/test.sh` starts), and a real HTTP client.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod fake_llm;
pub mod writes;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use dynamcp::config::ServeArgs;
use dynamcp::state::AppState;
use dynamcp::store::{self, Store};
use serde_json::{Value, json};
use sqlx::Connection;
use tempfile::TempDir;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Which database a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Db {
    Sqlite,
    Postgres,
}

/// The whole default catalog and the local embedding model, as `serve` runs by default (the
/// model is fetched by `scripts/setup.sh`).
pub fn with_default_catalog(args: &mut ServeArgs) {
    args.store.default_catalog = true;
    args.store.no_model = false;
    args.store.model_dir =
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/all-MiniLM-L6-v2");
}

/// Server settings for a test: defaults, a fresh temp data dir, a fresh database of the kind asked.
pub async fn test_args(db: Db) -> (ServeArgs, TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut args = ServeArgs::for_data_dir(dir.path());
    // MCP servers' installed packages are shared by every test (and kept between runs).
    args.runtime.package_dir =
        Some(std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("mcp-package-store"));
    if db == Db::Postgres {
        args.store.database_url = Some(fresh_postgres_database().await);
    }
    (args, dir)
}

/// Creates an empty database on the test PostgreSQL and returns its URL.
pub async fn fresh_postgres_database() -> String {
    let admin = std::env::var("DYNAMCP_TEST_PG_URL").expect(
        "PostgreSQL tests need DYNAMCP_TEST_PG_URL: run scripts/test.sh, which starts a private \
         PostgreSQL 15 + pgvector and sets it",
    );
    let name = format!("dynamcp_test_{}", uuid::Uuid::new_v4().simple());
    let mut conn = sqlx::PgConnection::connect(&admin).await.expect("connect to the test PostgreSQL");
    // The name is ours: a fixed prefix and a UUID.
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}"))).execute(&mut conn).await.unwrap();
    conn.close().await.unwrap();
    let (base, _) = admin.rsplit_once('/').expect("DYNAMCP_TEST_PG_URL ends with /<database>");
    format!("{base}/{name}")
}

/// Opens a fresh store directly, for store-level tests.
pub async fn fresh_store(db: Db) -> (Arc<dyn Store>, TempDir) {
    let (args, dir) = test_args(db).await;
    (store::open(&args.store.settings()).await.unwrap(), dir)
}

/// A running dynamcp on 127.0.0.1:<ephemeral>.
pub struct TestServer {
    pub base: String,
    pub http: reqwest::Client,
    pub store: Arc<dyn Store>,
    pub runtime: Arc<dynamcp::runtime::Runtime>,
    pub vault: Arc<dynamcp::vault::Vault>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
    dir: TempDir,
}

impl TestServer {
    pub async fn start(db: Db) -> Self {
        let (args, dir) = test_args(db).await;
        Self::start_with(args, dir).await
    }

    /// A server over a small real catalog (six servers copied from the default catalog, see
    /// `tests/fixtures/`), lexical search only: fast and deterministic.
    pub async fn start_with_fixture_catalog(db: Db) -> Self {
        let (args, dir) = test_args(db).await;
        import_fixture_catalog(&args).await;
        Self::start_with(args, dir).await
    }

    pub async fn start_with(args: ServeArgs, dir: TempDir) -> Self {
        let state = AppState::build(&args).await.unwrap();
        let store = state.store.clone();
        let runtime = state.runtime.clone();
        let vault = state.vault.clone();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(dynamcp::serve(
            listener,
            state,
            async move {
                let _ = stopped.await;
            },
            Duration::from_secs(5),
        ));
        Self { base, http: http_client(), store, runtime, vault, stop: Some(stop), task: Some(task), dir }
    }

    /// The server's data dir (every MCP server it starts lives under it).
    pub fn data_dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// Sends a request and returns the status and the body parsed as JSON.
    pub async fn json(&self, req: reqwest::RequestBuilder) -> (u16, serde_json::Value) {
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let ctype = resp.headers().get("content-type").map(|v| v.to_str().unwrap().to_owned());
        let text = resp.text().await.unwrap();
        if text.is_empty() {
            return (status, serde_json::Value::Null);
        }
        assert_eq!(ctype.as_deref(), Some("application/json"), "non-JSON body for {status}: {text}");
        (status, serde_json::from_str(&text).unwrap_or_else(|e| panic!("bad JSON ({e}): {text}")))
    }

    pub async fn get(&self, path: &str) -> (u16, serde_json::Value) {
        self.json(self.http.get(self.url(path))).await
    }

    /// The servers a session's current plan chose, one per step that has one, in step order.
    pub async fn planned_servers(&self, session: &str) -> Vec<serde_json::Map<String, Value>> {
        let (status, body) = self.get(&format!("/api/sessions/{session}")).await;
        assert_eq!(status, 200, "{body}");
        body["context"]["plan"]["needs"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|n| n["server"].as_object().cloned())
            .collect()
    }

    /// Runs agent `agent` on `input` and waits for the whole run as one JSON answer.
    pub async fn run_agent(&self, agent: uuid::Uuid, input: &str) -> (u16, serde_json::Value) {
        self.json(
            self.http
                .post(self.url(&format!("/api/agents/{agent}/run")))
                .header("accept", "application/json")
                .json(&serde_json::json!({ "input": input })),
        )
        .await
    }

    pub async fn post(&self, path: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
        self.json(self.http.post(self.url(path)).json(&body)).await
    }

    pub async fn delete(&self, path: &str) -> (u16, serde_json::Value) {
        self.json(self.http.delete(self.url(path))).await
    }

    /// Stops the server gracefully and waits for it.
    /// Stops the server and waits for it; returns its data dir (deleted when dropped).
    pub async fn stop(mut self) -> TempDir {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap().unwrap();
        }
        self.dir
    }
}

/// An HTTP client for tests (TLS through ring, as the service itself uses).
pub fn http_client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

/// Imports `tests/fixtures/planner-catalog.json` into the store `args` name.
pub async fn import_fixture_catalog(args: &ServeArgs) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/planner-catalog.json");
    import_catalog_file(args, &path).await;
}

/// Imports the catalog file at `path` into `args`' store, as `dynamcp catalog import` does.
#[allow(dead_code, reason = "not every test binary imports a catalog")]
pub async fn import_catalog_file(args: &ServeArgs, path: &std::path::Path) {
    let store = store::open(&args.store.settings()).await.unwrap();
    let catalog =
        dynamcp::catalog::Catalog::open(store.clone(), None, dynamcp::catalog::DenseBackend::InProcess)
            .await
            .unwrap();
    catalog.import_file(path, &|_, _| {}).await.unwrap();
    store.close().await;
}

/// Imports `servers` (records in the merged catalog's schema) into `args`' store.
#[allow(dead_code, reason = "not every test binary imports records")]
pub async fn import_records(args: &ServeArgs, servers: Vec<serde_json::Value>) {
    let file = args.store.data_dir.join("records.json");
    std::fs::create_dir_all(&args.store.data_dir).unwrap();
    std::fs::write(&file, serde_json::json!({"schema_version": 1, "servers": servers}).to_string()).unwrap();
    import_catalog_file(args, &file).await;
}

/// Imports the records `ids` exactly as the shipped default catalog (`catalog/mcp_catalog.json.gz`)
/// has them, plus `extra` records, into the store `args` name (lexical search only).
pub async fn import_default_records(args: &ServeArgs, ids: &[&str], extra: &[serde_json::Value]) {
    use std::io::Read;
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("catalog/mcp_catalog.json.gz");
    let mut text = String::new();
    flate2::read::GzDecoder::new(std::fs::File::open(&path).unwrap()).read_to_string(&mut text).unwrap();
    let all: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut servers: Vec<serde_json::Value> = all["servers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| ids.contains(&s["id"].as_str().unwrap_or_default()))
        .cloned()
        .collect();
    assert_eq!(servers.len(), ids.len(), "every id is in the default catalog");
    servers.extend(extra.iter().cloned());
    import_records(args, servers).await;
}

/// The standard error body: the code and message, and the message again as FastAPI's `detail`.
pub fn error_body(code: &str, message: &str) -> serde_json::Value {
    serde_json::json!({ "error": { "code": code, "message": message }, "detail": message })
}

/// Runs each listed `async fn name(provider: Provider)` as two tests, one per LLM wire protocol
/// (Anthropic Messages, OpenAI Chat Completions), against [`fake_llm`].
#[macro_export]
macro_rules! for_both_providers {
    ($($name:ident),* $(,)?) => {
        mod anthropic {
            $( #[tokio::test] async fn $name() { super::$name(dynamcp::llm::Provider::Anthropic).await } )*
        }
        mod openai {
            $( #[tokio::test] async fn $name() { super::$name(dynamcp::llm::Provider::Openai).await } )*
        }
    };
}

/// Runs each listed `async fn name(db: Db)` as two tests, one per backend.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $( #[tokio::test] async fn $name() { super::$name($crate::common::Db::Sqlite).await } )*
        }
        mod postgres {
            $( #[tokio::test] async fn $name() { super::$name($crate::common::Db::Postgres).await } )*
        }
    };
}

/// A fake OpenAI-compatible model: asks for Tokyo's time, then answers with what the tool said.
#[derive(Clone, Default)]
pub struct FakeModel {
    pub seen: Arc<Mutex<Vec<Value>>>,
}

async fn complete(
    axum::extract::State(fake): axum::extract::State<FakeModel>,
    axum::Json(body): axum::Json<Value>,
) -> axum::Json<Value> {
    fake.seen.lock().unwrap().push(body.clone());
    let last = body["messages"].as_array().unwrap().last().unwrap().clone();
    let message = if last["role"] == "tool" {
        let said: Value = serde_json::from_str(last["content"].as_str().unwrap()).unwrap_or(Value::Null);
        json!({"role": "assistant", "content": format!("In Tokyo it is {}.", said["datetime"].as_str().unwrap_or("unknown"))})
    } else {
        json!({"role": "assistant", "content": "Let me check the clock.", "tool_calls": [{
            "id": "call_1", "type": "function",
            "function": {"name": "time-mcp-server__get_current_time", "arguments": "{\"timezone\":\"Asia/Tokyo\"}"}
        }]})
    };
    axum::Json(json!({
        "id": "chatcmpl-1", "object": "chat.completion", "model": "fake-model",
        "choices": [{"index": 0, "finish_reason": "stop", "message": message}],
        "usage": {"prompt_tokens": 50, "completion_tokens": 10, "total_tokens": 60}
    }))
}

pub async fn fake_model() -> (FakeModel, String) {
    let fake = FakeModel::default();
    let app = axum::Router::new()
        .route("/v1/chat/completions", axum::routing::post(complete))
        .with_state(fake.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (fake, url)
}

/// Every process a test's service started, found by `marker` (the test's data dir) in its
/// environment or command line, with everything those started: a sandboxed server sees no host
/// path, but its sandbox's command line binds one. Each as (pid, environ with `\n` between
/// variables, command line). The test process itself is left out.
#[allow(dead_code)]
pub fn processes_with(marker: &str) -> Vec<(u32, String, String)> {
    let mut all = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(environ) = std::fs::read(entry.path().join("environ")) else { continue };
        let environ = String::from_utf8_lossy(&environ).replace('\0', "\n");
        let cmdline =
            String::from_utf8_lossy(&std::fs::read(entry.path().join("cmdline")).unwrap_or_default())
                .replace('\0', " ");
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        // `pid (comm) state ppid …`; comm may hold spaces, so read after its closing parenthesis.
        let ppid = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse().ok());
        let marked = environ.contains(marker) || cmdline.contains(marker);
        all.push((pid, ppid.unwrap_or(0u32), marked, environ, cmdline));
    }
    let mut found: std::collections::BTreeSet<u32> = all.iter().filter(|p| p.2).map(|p| p.0).collect();
    loop {
        let before = found.len();
        for (pid, ppid, ..) in &all {
            if found.contains(ppid) {
                found.insert(*pid);
            }
        }
        if found.len() == before {
            break;
        }
    }
    let me = std::process::id();
    all.into_iter().filter(|p| found.contains(&p.0) && p.0 != me).map(|p| (p.0, p.3, p.4)).collect()
}

/// A `dynamcp serve` child process and its base URL; killed and reaped when dropped.
pub struct Running {
    pub child: std::process::Child,
    pub base: String,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Running {
    /// SIGTERM, and waits (up to 30 s) for a clean exit.
    pub fn stop(mut self) {
        let pid = self.child.id().to_string();
        assert!(std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
        let status = wait_exit(&mut self.child, Duration::from_secs(30)).expect("no exit after SIGTERM");
        assert!(status.success(), "exit status {status}");
    }
}

/// `child`'s exit status once it exits, or `None` if it is still running after `within`.
pub fn wait_exit(child: &mut std::process::Child, within: Duration) -> Option<std::process::ExitStatus> {
    let deadline = std::time::Instant::now() + within;
    while std::time::Instant::now() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

/// A `dynamcp` command with an empty environment but for `PATH`: the service sees only what the
/// test sets, and plans can still choose servers whose runtimes (npx, uvx) are installed.
#[allow(dead_code, reason = "not every test binary spawns the service")]
pub fn clean_command() -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_dynamcp"));
    cmd.env_clear().env("PATH", std::env::var_os("PATH").unwrap_or_default());
    // Durability tests plan offline; installing and starting the chosen servers is tested apart.
    cmd.env("DYNAMCP_VERIFY_SERVERS", "false");
    cmd
}

/// The credentials that answer every `required_credentials` item of a chat response, each value
/// made by `value(key)`, as `{"<mcp_server>": {"KEY": value}}`, and what was sent as
/// `(server, key, value)`.
#[allow(dead_code, reason = "not every test binary sends credentials")]
pub fn answer_credentials(
    body: &Value,
    value: impl Fn(&str) -> String,
) -> (Value, Vec<(String, String, String)>) {
    let mut credentials = serde_json::Map::new();
    let mut sent = Vec::new();
    for item in body["required_credentials"].as_array().unwrap() {
        let (server, key) = (item["mcp_server"].as_str().unwrap(), item["credential_key"].as_str().unwrap());
        let value = value(key);
        credentials.entry(server.to_owned()).or_insert_with(|| json!({}))[key] = json!(value);
        sent.push((server.to_owned(), key.to_owned(), value));
    }
    (Value::Object(credentials), sent)
}

/// Spawns `cmd` (a `dynamcp serve` with its environment set) with JSON logs on stderr and
/// returns once it reports the address it listens on; what it logged before is in the panic
/// message if it never does.
#[allow(clippy::zombie_processes, reason = "Running's Drop kills and reaps the child")]
pub fn spawn_serve(mut cmd: std::process::Command) -> Running {
    use std::io::{BufRead, BufReader};
    cmd.env("DYNAMCP_LOG_FORMAT", "json").env("DYNAMCP_LOG", "info");
    cmd.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().expect("spawn dynamcp");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut seen = Vec::new();
    loop {
        let Ok(line) = rx.recv_timeout(deadline.saturating_duration_since(std::time::Instant::now())) else {
            let _ = child.kill();
            panic!("dynamcp did not report its address in time:\n{}", seen.join("\n"));
        };
        seen.push(line.clone());
        let Ok(event) = serde_json::from_str::<Value>(&line) else { continue };
        if let Some(addr) = event["fields"]["addr"].as_str() {
            let base = format!("http://{addr}");
            std::thread::spawn(move || for _ in rx {});
            return Running { child, base };
        }
    }
}

/// `event: name\ndata: json` blocks of an SSE body.
pub fn sse_events(body: &str) -> Vec<(String, serde_json::Value)> {
    body.split("\n\n")
        .filter_map(|block| {
            let name = block.lines().find_map(|l| l.strip_prefix("event: "))?;
            let data = block.lines().find_map(|l| l.strip_prefix("data: "))?;
            Some((name.to_owned(), serde_json::from_str(data).unwrap()))
        })
        .collect()
}

/// An agent of the open tenant over `servers`, stored as the planner stores one (the runtime reads
/// only the server ids from `mcp_config`; what it launches comes from the catalog), with
/// `workflow` and `metadata` (e.g. the plan, whose matched tools a run offers first). Returns the
/// agent's and its session's ids.
pub async fn store_agent(
    server: &TestServer,
    servers: &[&str],
    workflow: &str,
    metadata: serde_json::Value,
) -> (uuid::Uuid, uuid::Uuid) {
    let session = server.store.create_session("").await.unwrap();
    let config: serde_json::Map<String, serde_json::Value> = servers
        .iter()
        .map(|s| (s.to_string(), serde_json::json!({"command": "ignored", "args": ["ignored"]})))
        .collect();
    let agent = server
        .store
        .create_agent(&dynamcp::store::NewAgent {
            tenant: String::new(),
            session_id: session.id,
            name: "test agent".into(),
            mcp_config: serde_json::json!({ "mcpServers": config }),
            workflow: workflow.into(),
            model: None,
            metadata,
        })
        .await
        .unwrap();
    (agent.id, session.id)
}
