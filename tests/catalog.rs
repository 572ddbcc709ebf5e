//! Catalog import through the real `dynamcp catalog import` binary, every format, malformed
//! files included; and the catalog HTTP endpoints with whole-body assertions.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::{Db, TestServer, error_body};
use serde_json::{Value, json};

fn dynamcp(data_dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dynamcp"))
        .args(args)
        .env_clear()
        .env("DYNAMCP_DATA_DIR", data_dir)
        .env("DYNAMCP_DEFAULT_CATALOG", "false")
        .env("DYNAMCP_NO_MODEL", "true")
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn write(dir: &Path, name: &str, value: &Value) -> String {
    let path = dir.join(name);
    std::fs::write(&path, serde_json::to_vec_pretty(value).unwrap()).unwrap();
    path.display().to_string()
}

fn search_ids(data_dir: &Path, query: &str) -> Vec<String> {
    let out = dynamcp(data_dir, &["search", "--json", "--limit", "10", query]);
    assert!(out.status.success(), "{}", text(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v["results"].as_array().unwrap().iter().map(|r| r["id"].as_str().unwrap().to_owned()).collect()
}

fn design_servers() -> Value {
    json!({"servers": [
        {"name": "Gmail", "description": "Read, search and send Gmail messages",
         "tools": ["search_emails", {"name": "send_email", "description": "Send an email", "inputSchema": {"type": "object"}}]},
        {"name": "Google Sheets", "description": "Read and write Google Sheets spreadsheets", "tools": ["append_row"]},
        {"description": "an entry without a name"}
    ]})
}

#[test]
fn every_format_imports_and_bad_entries_are_reported_by_file_and_index() {
    let data = tempfile::tempdir().unwrap();
    let files = tempfile::tempdir().unwrap();
    let servers = write(files.path(), "servers.json", &design_servers());
    let credinfo = write(
        files.path(),
        "credinfo.json",
        &json!({"credential_instructions": {
            "gmail": {"GMAIL_OAUTH_TOKEN": {"description": "OAuth token", "steps": ["Create an OAuth client", "Run the consent flow"], "required": true, "secret": true}},
            "google-sheets": {"GOOGLE_SERVICE_ACCOUNT_JSON": {"description": "Service account key file", "steps": ["Create a service account"], "required": true, "secret": true}}
        }}),
    );
    let registry = write(
        files.path(),
        "server.json",
        &json!({
            "name": "io.github.acme/weather", "description": "Weather forecasts for any city",
            "packages": [{"registryType": "npm", "identifier": "@acme/weather", "version": "1.0.0",
                          "environmentVariables": [{"name": "WEATHER_KEY", "isRequired": true, "isSecret": true}]}]
        }),
    );
    let merged = write(
        files.path(),
        "catalog.json",
        &json!({"schema_version": 1, "servers": [
            {"id": "time-server", "name": "Time", "description": "Current time and timezone conversion",
             "launch": [{"kind": "pypi", "transport": "stdio", "package": "mcp-server-time", "command": "uvx", "args": ["mcp-server-time"], "verified": true}],
             "tools": [{"name": "get_current_time", "description": "Current time in a timezone"}]}
        ]}),
    );
    let out = dynamcp(data.path(), &["catalog", "import", &servers, &credinfo, &registry, &merged]);
    let log = text(&out);
    assert!(out.status.success(), "{log}");
    assert!(log.contains("servers.json (design) — 2 servers (2 new, 0 updated, 0 unchanged), 0 credential instructions, 1 invalid"), "{log}");
    assert!(log.contains(&format!("{servers}[2]: missing `name`")), "{log}");
    assert!(
        log.contains(
            "credinfo.json (design) — 0 servers (0 new, 0 updated, 0 unchanged), 2 credential instructions"
        ),
        "{log}"
    );
    assert!(log.contains("MCP registry server.json — 1 servers (1 new"), "{log}");
    assert!(log.contains("dynamcp merged catalog — 1 servers (1 new"), "{log}");

    // Re-importing unchanged files changes nothing.
    let again = dynamcp(data.path(), &["catalog", "import", &servers, &merged]);
    assert!(text(&again).contains("2 servers (0 new, 0 updated, 2 unchanged)"), "{}", text(&again));

    assert_eq!(search_ids(data.path(), "send an email")[0], "gmail");
    assert_eq!(search_ids(data.path(), "what time is it in Tokyo")[0], "time-server");
    assert_eq!(search_ids(data.path(), "weather forecast")[0], "io.github.acme-weather");
}

#[test]
fn a_file_with_nothing_valid_fails_and_changes_nothing() {
    let data = tempfile::tempdir().unwrap();
    let files = tempfile::tempdir().unwrap();
    let good = write(files.path(), "servers.json", &design_servers());
    assert!(dynamcp(data.path(), &["catalog", "import", &good]).status.success());

    let bad = write(files.path(), "bad.json", &json!({"servers": [{"description": "x"}, 42]}));
    let not_json = files.path().join("broken.json");
    std::fs::write(&not_json, b"{\"servers\": [").unwrap();
    let unknown = write(files.path(), "unknown.json", &json!({"hello": "world"}));
    let missing = files.path().join("missing.json").display().to_string();
    for (file, expect) in [
        (bad.clone(), format!("{bad}: no valid entry; nothing was imported from it")),
        (not_json.display().to_string(), "is not valid JSON".to_owned()),
        (unknown.clone(), format!("{unknown}: unrecognised format")),
        (missing.clone(), format!("could not read {missing}")),
    ] {
        let out = dynamcp(data.path(), &["catalog", "import", "--replace", &file]);
        assert!(!out.status.success(), "{file}");
        assert!(text(&out).contains(&expect), "{}", text(&out));
        assert!(text(&out).contains("--replace: skipped"), "{}", text(&out));
    }
    // The earlier import is untouched.
    assert_eq!(search_ids(data.path(), "gmail")[0], "gmail");
}

#[test]
fn replace_removes_servers_that_are_in_no_given_file() {
    let data = tempfile::tempdir().unwrap();
    let files = tempfile::tempdir().unwrap();
    let both = write(files.path(), "both.json", &design_servers());
    let one = write(
        files.path(),
        "one.json",
        &json!({"servers": [{"name": "Gmail", "description": "Read, search and send Gmail messages"}]}),
    );
    assert!(dynamcp(data.path(), &["catalog", "import", &both]).status.success());
    let out = dynamcp(data.path(), &["catalog", "import", "--replace", &one]);
    assert!(text(&out).contains("--replace: removed 1 servers"), "{}", text(&out));
    assert_eq!(search_ids(data.path(), "spreadsheets gmail"), vec!["gmail"]);
}

async fn server_with(servers: Value) -> TestServer {
    let (args, dir) = common::test_args(Db::Sqlite).await;
    let file = dir.path().join("servers.json");
    std::fs::write(&file, serde_json::to_vec(&servers).unwrap()).unwrap();
    let out = dynamcp(dir.path(), &["catalog", "import", &file.display().to_string()]);
    assert!(out.status.success(), "{}", text(&out));
    TestServer::start_with(args, dir).await
}

#[tokio::test]
async fn search_endpoint_answers_the_documented_shape() {
    let server = server_with(json!({"schema_version": 1, "servers": [
        {"id": "gmail-mcp", "name": "Gmail", "description": "Read and send Gmail messages",
         "launch": [{"kind": "npm", "transport": "stdio", "package": "gmail-mcp", "command": "npx", "args": ["-y", "gmail-mcp"]}],
         "tools": [{"name": "send_email", "description": "Send an email"}, {"name": "list_labels", "description": "Labels"}],
         "credentials": [{"name": "GMAIL_TOKEN", "description": "OAuth token", "required": true, "secret": true}]},
        {"id": "sheets", "name": "Google Sheets", "description": "Spreadsheets"}
    ]})).await;
    let (status, body) =
        server.post("/api/servers/search", json!({"query": "send an email with gmail", "limit": 1})).await;
    assert_eq!(status, 200);
    let score = body["results"][0]["score"].clone();
    assert!(score.as_f64().unwrap() > 0.0);
    assert_eq!(
        body,
        json!({"results": [{
            "id": "gmail-mcp", "name": "Gmail", "description": "Read and send Gmail messages", "score": score,
            "matched_tools": ["send_email"],
            "credentials": [{"key": "GMAIL_TOKEN", "required": true, "secret": true}],
            "runnable": true
        }]})
    );
    for (body, message) in [
        (json!({"query": "x", "limit": 0}), "limit must be between 1 and 50"),
        (json!({"query": "x", "limit": 51}), "limit must be between 1 and 50"),
        (json!({"query": "  "}), "query must not be empty"),
    ] {
        assert_eq!(
            server.post("/api/servers/search", body).await,
            (422, error_body("invalid_request", message))
        );
    }
    let (status, body) = server.post("/api/servers/search", json!({"limit": 3})).await;
    assert_eq!((status, body["error"]["code"].as_str()), (422, Some("invalid_request")));
    server.stop().await;
}

#[tokio::test]
async fn server_detail_and_browse() {
    let server = server_with(design_servers()).await;
    let (status, body) = server.get("/api/servers/gmail").await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        json!({
            "id": "gmail", "name": "Gmail", "description": "Read, search and send Gmail messages",
            "categories": [],
            "tools": [
                {"name": "search_emails", "description": ""},
                {"name": "send_email", "description": "Send an email", "input_schema": {"type": "object"}}
            ],
            "launch": [], "credentials": [], "popularity": 0, "origin": "design_servers", "runnable": false
        })
    );
    assert_eq!(
        server.get("/api/servers/nope").await,
        (404, error_body("server_not_found", "server `nope` is not in the catalog"))
    );
    let (status, list) = server.get("/api/servers?limit=1&offset=1").await;
    assert_eq!(status, 200);
    assert_eq!(
        list,
        json!({"servers": [{"id": "google-sheets", "name": "Google Sheets",
                             "description": "Read and write Google Sheets spreadsheets", "runnable": false, "tools": 1}],
               "total": 2, "limit": 1, "offset": 1})
    );
    let (_, filtered) = server.get("/api/servers?q=spreadsheet").await;
    assert_eq!(filtered["total"], 1);
    assert_eq!(filtered["servers"][0]["id"], "google-sheets");
    assert_eq!(
        server.get("/api/servers?limit=500").await,
        (400, error_body("invalid_query", "limit must be between 1 and 100"))
    );
    server.stop().await;
}

/// Results are cached per index: a repeated search is answered the same, and an import (which
/// replaces the index) is seen by the very next search.
#[tokio::test]
async fn a_repeated_search_is_stable_and_an_import_is_seen_at_once() {
    let (store, dir) = common::fresh_store(Db::Sqlite).await;
    let catalog = dynamcp::catalog::Catalog::open(store, None, dynamcp::catalog::DenseBackend::InProcess)
        .await
        .unwrap();
    let first = write(
        dir.path(),
        "first.json",
        &json!({"servers": [{"name": "Gmail", "description": "Read and send Gmail messages"}]}),
    );
    catalog.import_file(Path::new(&first), &|_, _| {}).await.unwrap();
    catalog.reload().await.unwrap();
    let ids =
        |found: Vec<dynamcp::catalog::SearchResult>| found.into_iter().map(|r| r.id).collect::<Vec<_>>();
    let query = "write rows to a google spreadsheet";
    let before = ids(catalog.search_results(query, 5).await.unwrap());
    assert_eq!(ids(catalog.search_results(query, 5).await.unwrap()), before, "a repeat answers the same");
    assert!(!before.contains(&"google-sheets".to_owned()));

    let second = write(
        dir.path(),
        "second.json",
        &json!({"servers": [{"name": "Google Sheets", "description": "Write rows to a Google spreadsheet"}]}),
    );
    catalog.import_file(Path::new(&second), &|_, _| {}).await.unwrap();
    catalog.reload().await.unwrap();
    assert_eq!(ids(catalog.search_results(query, 5).await.unwrap())[0], "google-sheets");
}

/// A store that counts the catalog records and cached vectors a reload reads.
struct Counting {
    inner: std::sync::Arc<dyn dynamcp::store::Store>,
    /// Records read, whole-catalog reads included.
    records: std::sync::atomic::AtomicUsize,
    /// Cached vectors read, whole-cache reads included.
    vectors: std::sync::atomic::AtomicUsize,
}

impl Counting {
    fn take(&self) -> (usize, usize) {
        use std::sync::atomic::Ordering::SeqCst;
        (self.records.swap(0, SeqCst), self.vectors.swap(0, SeqCst))
    }

    fn add(counter: &std::sync::atomic::AtomicUsize, n: usize) {
        counter.fetch_add(n, std::sync::atomic::Ordering::SeqCst);
    }
}

type StoreResult<T> = Result<T, dynamcp::store::StoreError>;

#[async_trait::async_trait]
impl dynamcp::store::CatalogStore for Counting {
    async fn catalog_count(&self) -> StoreResult<u64> {
        self.inner.catalog_count().await
    }
    async fn catalog_version(&self) -> StoreResult<u64> {
        self.inner.catalog_version().await
    }
    async fn upsert_catalog(
        &self,
        servers: &[dynamcp::store::CatalogRow],
        instructions: &[dynamcp::store::InstructionRow],
    ) -> StoreResult<dynamcp::store::UpsertCounts> {
        self.inner.upsert_catalog(servers, instructions).await
    }
    async fn retain_catalog(&self, keep: &std::collections::HashSet<String>) -> StoreResult<u64> {
        self.inner.retain_catalog(keep).await
    }
    async fn catalog_record_texts(&self) -> StoreResult<Vec<(String, String)>> {
        let rows = self.inner.catalog_record_texts().await?;
        Self::add(&self.records, rows.len());
        Ok(rows)
    }
    async fn catalog_hashes(&self) -> StoreResult<Vec<(String, String)>> {
        self.inner.catalog_hashes().await
    }
    async fn catalog_record_texts_of(&self, ids: &[String]) -> StoreResult<Vec<(String, String)>> {
        let rows = self.inner.catalog_record_texts_of(ids).await?;
        Self::add(&self.records, rows.len());
        Ok(rows)
    }
    async fn catalog_record(&self, id: &str) -> StoreResult<Option<Value>> {
        self.inner.catalog_record(id).await
    }
    async fn credential_instructions(&self) -> StoreResult<Vec<dynamcp::store::InstructionRow>> {
        self.inner.credential_instructions().await
    }
    async fn embeddings(&self, model: &str) -> StoreResult<std::collections::HashMap<String, Vec<u8>>> {
        let rows = self.inner.embeddings(model).await?;
        Self::add(&self.vectors, rows.len());
        Ok(rows)
    }
    async fn embeddings_of(
        &self,
        model: &str,
        hashes: &[String],
    ) -> StoreResult<std::collections::HashMap<String, Vec<u8>>> {
        let rows = self.inner.embeddings_of(model, hashes).await?;
        Self::add(&self.vectors, rows.len());
        Ok(rows)
    }
    async fn put_embeddings(&self, model: &str, items: &[(String, Vec<u8>)]) -> StoreResult<()> {
        self.inner.put_embeddings(model, items).await
    }
    async fn put_verification(&self, row: &dynamcp::store::VerificationRow) -> StoreResult<()> {
        self.inner.put_verification(row).await
    }
    async fn verifications(&self, server: &str) -> StoreResult<Vec<Value>> {
        self.inner.verifications(server).await
    }
    fn vectors(&self) -> Option<&dyn dynamcp::store::VectorSearch> {
        self.inner.vectors()
    }
}

/// `got` holds what `want` holds: the same records in the same order, the same vectors, and the
/// same answers to searches.
async fn assert_same_catalog(got: &dynamcp::catalog::Catalog, want: &dynamcp::catalog::Catalog, when: &str) {
    let (g, w) = (got.index(), want.index());
    assert_eq!(g.len(), w.len(), "{when}");
    for doc in 0..w.len() as u32 {
        assert_eq!(
            serde_json::to_value(g.record(doc)).unwrap(),
            serde_json::to_value(w.record(doc)).unwrap(),
            "{when}: record {doc}"
        );
    }
    let (gd, wd) = (g.dense().unwrap(), w.dense().unwrap());
    assert_eq!(gd.hashes, wd.hashes, "{when}");
    assert_eq!(gd.tool_owner, wd.tool_owner, "{when}");
    for (gs, ws) in [(&gd.servers, &wd.servers), (&gd.tools, &wd.tools)] {
        assert_eq!(gs.len(), ws.len(), "{when}");
        for i in 0..ws.len() {
            assert_eq!(gs.get(i), ws.get(i), "{when}: vector {i}");
        }
    }
    for query in ["search my gmail for invoices", "append a row to a spreadsheet", "count paperclips"] {
        let (a, b) =
            (got.search_results(query, 5).await.unwrap(), want.search_results(query, 5).await.unwrap());
        let pairs = |r: Vec<dynamcp::catalog::SearchResult>| {
            r.into_iter().map(|r| (r.id, r.score.to_bits())).collect::<Vec<_>>()
        };
        assert_eq!(pairs(a), pairs(b), "{when}: {query}");
    }
}

/// After an import, a reload reads only the records and vectors that changed, and builds exactly
/// what a fresh load of the same store builds; changed credential instructions make it read all.
async fn a_reload_reads_only_what_changed(db: Db) {
    use dynamcp::catalog::{Catalog, DenseBackend};
    let (mut args, dir) = common::test_args(db).await;
    common::import_fixture_catalog(&args).await;
    common::with_default_catalog(&mut args);
    args.store.default_catalog = false;
    let embedder = dynamcp::state::load_embedder(&args.store).await.expect("the local model");
    let inner = dynamcp::store::open(&args.store.settings()).await.unwrap();
    let counting = std::sync::Arc::new(Counting {
        inner: inner.clone(),
        records: Default::default(),
        vectors: Default::default(),
    });
    let catalog = Catalog::open(counting.clone(), Some(embedder.clone()), DenseBackend::Auto).await.unwrap();
    let servers = catalog.index().len();
    assert_eq!(counting.take().0, servers, "the first load reads every record");
    let fresh = || Catalog::open(inner.clone(), Some(embedder.clone()), DenseBackend::Auto);

    // One new server and one changed one (`gmail-mcp-2` gets another description).
    let mut changed: Value = serde_json::to_value(catalog.index().get("gmail-mcp-2").unwrap()).unwrap();
    changed["description"] = json!("Reads Gmail through Apps Script, invoices included");
    let probe = json!({"id": "replica-probe", "name": "Replica Probe",
        "description": "Counts paperclips in a warehouse", "tools": ["count_paperclips"]});
    let file = write(dir.path(), "change.json", &json!({"schema_version": 1, "servers": [changed, probe]}));
    let report = catalog.import_file(Path::new(&file), &|_, _| {}).await.unwrap();
    // `catalog import` embeds the new texts once: the probe's and its tool's, and gmail's own
    // (its tools' texts did not change).
    assert_eq!(catalog.embed_new(&report.ids, &|_, _| {}).await.unwrap(), 3);
    assert_eq!(catalog.embed_new(&report.ids, &|_, _| {}).await.unwrap(), 0, "now cached");
    counting.take();
    catalog.reload().await.unwrap();
    let (records, vectors) = counting.take();
    assert_eq!(records, 2, "only the new and the changed record are read");
    // Their server texts and the new tool's are new; the changed server's tools are not.
    assert!(vectors <= 3, "{vectors} vectors read");
    assert_eq!(catalog.index().len(), servers + 1);
    assert_same_catalog(&catalog, &fresh().await.unwrap(), "after an import").await;
    // PostgreSQL's vectors follow, written from the vectors the reload read.
    let nearest_in_database = || async {
        let db = inner.vectors()?;
        let v = embedder
            .embed(vec!["counts paperclips in a warehouse".to_owned()], dynamcp::catalog::TextKind::Query)
            .await
            .unwrap();
        Some(db.nearest_servers(&v[0], 1, dynamcp::store::Scan::Exact).await.unwrap()[0].0.clone())
    };
    if db == Db::Postgres {
        assert_eq!(nearest_in_database().await.as_deref(), Some("replica-probe"));
    }

    // A server removed: nothing to read.
    let index = catalog.index();
    let ids: std::collections::HashSet<String> = (0..index.len() as u32)
        .map(|d| index.record(d).id.clone())
        .filter(|id| id != "replica-probe")
        .collect();
    assert_eq!(catalog.retain(&ids).await.unwrap(), 1);
    catalog.reload().await.unwrap();
    assert_eq!(counting.take(), (0, 0), "a removal reads no record or vector");
    assert_eq!(catalog.index().len(), servers);
    assert_same_catalog(&catalog, &fresh().await.unwrap(), "after a removal").await;
    if db == Db::Postgres {
        assert_ne!(nearest_in_database().await.as_deref(), Some("replica-probe"));
    }

    // New credential instructions apply to every record: the whole catalog is read again.
    let credinfo = write(
        dir.path(),
        "credinfo.json",
        &json!({"credential_instructions": {"gmail-mcp-2": {"GMAIL_PROBE_TOKEN":
            {"description": "A probe token", "steps": ["Make one"], "required": true, "secret": true}}}}),
    );
    catalog.import_file(Path::new(&credinfo), &|_, _| {}).await.unwrap();
    catalog.reload().await.unwrap();
    assert_eq!(counting.take().0, servers, "changed instructions read every record");
    let gmail = catalog.index().get("gmail-mcp-2").unwrap().clone();
    assert!(gmail.credentials.iter().any(|c| c.name == "GMAIL_PROBE_TOKEN"), "{:?}", gmail.credentials);
    assert_same_catalog(&catalog, &fresh().await.unwrap(), "after new instructions").await;
    inner.close().await;
}

#[tokio::test]
async fn a_reload_reads_only_what_changed_sqlite() {
    a_reload_reads_only_what_changed(Db::Sqlite).await;
}

#[tokio::test]
async fn a_reload_reads_only_what_changed_postgres() {
    a_reload_reads_only_what_changed(Db::Postgres).await;
}
