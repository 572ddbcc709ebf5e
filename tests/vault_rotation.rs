//! Rotating the vault's master key while the real service runs and keeps storing credentials:
//! nothing acknowledged is lost, the running service opens every credential throughout, and after
//! a restart every credential still decrypts to what was sent. With the data dir's key files (one
//! `dynamcp vault rotate`), and with keys from the environment (refused while the running service
//! cannot read the new key; then a restart with the new key and `dynamcp vault rewrap`). On both
//! backends.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::Db;
use dynamcp::vault::{KeyringSource, MasterKey, Secret, Vault, kept_key_path};
use serde_json::{Value, json};

on_both_backends!(
    file_keys_rotate_under_load_and_nothing_is_lost,
    env_keys_rotate_through_a_restart,
    services_on_one_database_share_one_key
);

use common::Running;

/// The environment every command of a test shares: the data dir, the database, no catalog import
/// and no model (the fixture catalog is imported up front), a one-second lease heartbeat, no
/// rate limit.
fn base_env(data_dir: &Path, database_url: &Option<String>) -> Vec<(String, String)> {
    let mut env = vec![
        ("DYNAMCP_DATA_DIR".to_owned(), data_dir.display().to_string()),
        ("DYNAMCP_DEFAULT_CATALOG".to_owned(), "false".to_owned()),
        ("DYNAMCP_NO_MODEL".to_owned(), "true".to_owned()),
        ("DYNAMCP_ADDR".to_owned(), "127.0.0.1:0".to_owned()),
        ("DYNAMCP_LEASE_HEARTBEAT_SECS".to_owned(), "1".to_owned()),
        // The writers and the reader are one client, far faster than a person.
        ("DYNAMCP_RATE_LIMIT_PER_SEC".to_owned(), "0".to_owned()),
    ];
    if let Some(url) = database_url {
        env.push(("DATABASE_URL".to_owned(), url.clone()));
    }
    env
}

fn with(env: &[(String, String)], extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut env = env.to_vec();
    env.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
    env
}

fn command(args: &[&str], data_dir: &Path, env: &[(String, String)]) -> Command {
    let mut cmd = common::clean_command();
    cmd.args(args).current_dir(data_dir);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

/// Runs a `dynamcp` command to its end, off the async runtime.
async fn dynamcp(args: &[&str], data_dir: &Path, env: &[(String, String)]) -> Output {
    let mut cmd = command(args, data_dir, env);
    tokio::task::spawn_blocking(move || cmd.output().unwrap()).await.unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Starts `dynamcp serve` with JSON logs and returns once it listens.
fn start(data_dir: &Path, env: &[(String, String)]) -> Running {
    common::spawn_serve(command(&["serve"], data_dir, env))
}

/// One acknowledged credential turn: the session, its agent and the values sent (server, key, value).
#[derive(Debug, Clone)]
struct Acked {
    session: String,
    agent: String,
    sent: Vec<(String, String, String)>,
}

type Ledger = Arc<Mutex<Vec<Acked>>>;

/// Chats that need credentials, then sends them, until `stop`; records what was acknowledged.
/// A request that fails (the service going away) ends the writer.
async fn write_until(base: String, tag: usize, acked: Ledger, stop: Arc<AtomicBool>) {
    let http = common::http_client();
    let mut i = 0;
    while !stop.load(Ordering::Relaxed) {
        i += 1;
        let message = format!("post a message to our slack channel (writer {tag}, turn {i})");
        let Ok(resp) = http.post(format!("{base}/api/chat")).json(&json!({"message": message})).send().await
        else {
            return;
        };
        let Ok(body) = resp.json::<Value>().await else { return };
        let session = body["session_id"].as_str().unwrap().to_owned();
        let (credentials, sent) = common::answer_credentials(&body, |key| {
            format!("value-{tag}-{i}-{key}-{}", uuid::Uuid::new_v4().simple())
        });
        assert!(!sent.is_empty(), "the request needs credentials: {body}");
        let request = json!({"message": "here they are", "session_id": session, "credentials": credentials});
        let Ok(resp) = http.post(format!("{base}/api/chat")).json(&request).send().await else { return };
        if resp.status() != 200 {
            panic!("a credential turn failed: {} {}", resp.status(), resp.text().await.unwrap_or_default());
        }
        let Ok(body) = resp.json::<Value>().await else { return };
        let agent = body["agent_id"].as_str().unwrap_or_else(|| panic!("no agent: {body}")).to_owned();
        acked.lock().unwrap().push(Acked { session, agent, sent });
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Checks that the service opens every credential of `a` to what was sent.
async fn check(http: &reqwest::Client, base: &str, a: &Acked) -> Result<(), String> {
    let url = format!("{base}/api/agents/{}/config?format=cursor&include_secrets=true", a.agent);
    let resp = http.get(url).send().await.map_err(|e| e.to_string())?;
    let status = resp.status();
    let config: Value = resp.json().await.map_err(|e| e.to_string())?;
    if status != 200 {
        return Err(format!("agent {}: {status} {config}", a.agent));
    }
    for (server, key, value) in &a.sent {
        if config["mcpServers"][server]["env"][key] != value.as_str() {
            return Err(format!("agent {} {server}/{key}: {config}", a.agent));
        }
    }
    Ok(())
}

/// Reads acknowledged credentials back through the running service, newest and oldest in turn,
/// until `stop`; counts the reads and keeps every failure.
async fn read_until(
    base: String,
    acked: Ledger,
    stop: Arc<AtomicBool>,
    reads: Arc<AtomicUsize>,
) -> Vec<String> {
    let http = common::http_client();
    let mut failures = Vec::new();
    let mut n = 0usize;
    while !stop.load(Ordering::Relaxed) {
        let pick = {
            let acked = acked.lock().unwrap();
            if acked.is_empty() {
                None
            } else {
                n += 1;
                // Alternate the newest with a walk over the older ones.
                let i = if n.is_multiple_of(2) { acked.len() - 1 } else { (n / 2) % acked.len() };
                Some(acked[i].clone())
            }
        };
        match pick {
            Some(a) => {
                if let Err(e) = check(&http, &base, &a).await {
                    failures.push(e);
                }
                reads.fetch_add(1, Ordering::Relaxed);
            }
            None => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    failures
}

/// Writers and a reader running against one service.
struct Load {
    acked: Ledger,
    stop: Arc<AtomicBool>,
    reads: Arc<AtomicUsize>,
    writers: Vec<tokio::task::JoinHandle<()>>,
    reader: tokio::task::JoinHandle<Vec<String>>,
}

impl Load {
    fn start(base: &str, acked: Ledger) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let reads = Arc::new(AtomicUsize::new(0));
        let writers = (0..2)
            .map(|tag| tokio::spawn(write_until(base.to_owned(), tag, acked.clone(), stop.clone())))
            .collect();
        let reader = tokio::spawn(read_until(base.to_owned(), acked.clone(), stop.clone(), reads.clone()));
        Self { acked, stop, reads, writers, reader }
    }

    fn acked(&self) -> usize {
        self.acked.lock().unwrap().len()
    }

    /// Waits until `n` more turns are acknowledged.
    async fn wait_for_more(&self, n: usize) {
        let target = self.acked() + n;
        let deadline = Instant::now() + Duration::from_secs(120);
        while self.acked() < target {
            assert!(Instant::now() < deadline, "the writers made no progress");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops writers and reader; returns the reader's failures.
    async fn stop(self) -> Vec<String> {
        self.stop.store(true, Ordering::Relaxed);
        for w in self.writers {
            w.await.unwrap();
        }
        self.reader.await.unwrap()
    }
}

/// `dynamcp vault status --json`.
async fn status(data_dir: &Path, env: &[(String, String)]) -> Value {
    let out = dynamcp(&["vault", "status", "--json"], data_dir, env).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Credentials per key id, from a status.
fn counts(status: &Value) -> Vec<(String, i64)> {
    status["keys"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|k| k["credentials"].as_i64().unwrap() > 0)
        .map(|k| (k["id"].as_str().unwrap().to_owned(), k["credentials"].as_i64().unwrap()))
        .collect()
}

fn live_services(status: &Value) -> Vec<Value> {
    status["services"].as_array().unwrap().iter().filter(|s| s["live"] == true).cloned().collect()
}

/// After the service stopped: opens the store and the keyring directly and decrypts every
/// acknowledged credential.
async fn decrypt_all_directly(args: &dynamcp::config::ServeArgs, source: KeyringSource, acked: &[Acked]) {
    let store = dynamcp::store::open(&args.store.settings()).await.unwrap();
    let vault = Vault::open(store.as_ref(), source).await.unwrap();
    for a in acked {
        let rows = store.credentials(a.session.parse().unwrap()).await.unwrap();
        for (server, key, value) in &a.sent {
            let row = rows.iter().find(|c| &c.server == server && &c.key == key).unwrap();
            assert_eq!(vault.open_sealed(row).unwrap().expose(), value.as_bytes(), "{server}/{key}");
        }
    }
    store.close().await;
}

async fn file_keys_rotate_under_load_and_nothing_is_lost(db: Db) {
    let (args, dir) = common::test_args(db).await;
    common::import_fixture_catalog(&args).await;
    let env = base_env(dir.path(), &args.store.database_url);
    let server = start(dir.path(), &env);
    let acked: Ledger = Arc::default();
    let load = Load::start(&server.base, acked.clone());
    load.wait_for_more(10).await;

    let before = status(dir.path(), &env).await;
    let first = before["writing_key_id"].as_str().unwrap().to_owned();
    let services = live_services(&before);
    assert_eq!(services.len(), 1, "{before}");
    assert_eq!(services[0]["writing_key_id"], first.as_str());

    // Rotate from the command line while both writers and the reader keep going.
    let reads_before = load.reads.load(Ordering::Relaxed);
    let acked_before = load.acked();
    let out = dynamcp(&["vault", "rotate", "--wait-secs", "60"], dir.path(), &env).await;
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stderr}");
    // The running service followed each step (it loaded the new key before anything was re-wrapped
    // under it, then sealed with it).
    assert!(stdout.contains("followed by 1 running service(s)"), "{stdout}\n{stderr}");
    let next = stdout.split("the new key (id ").nth(1).unwrap()[..16].to_owned();
    assert_ne!(next, first);
    assert!(load.reads.load(Ordering::Relaxed) > reads_before, "the reader ran during the rotation");
    assert!(load.acked() > acked_before, "the writers ran during the rotation");
    load.wait_for_more(10).await;
    let failures = load.stop().await;
    assert!(failures.is_empty(), "the running service failed to open credentials: {failures:?}");

    // Every row is under the new key; the running service writes with it and still reads the old.
    let after = status(dir.path(), &env).await;
    let total = acked.lock().unwrap().iter().map(|a| a.sent.len() as i64).sum::<i64>();
    assert_eq!(counts(&after), vec![(next.clone(), total)], "{after}");
    eprintln!("{total} credential(s) re-wrapped or sealed under key {next}; none lost");
    let services = live_services(&after);
    assert_eq!(services[0]["writing_key_id"], next.as_str());
    let readable = services[0]["readable_key_ids"].as_array().unwrap();
    assert!(readable.contains(&json!(first)) && readable.contains(&json!(next)), "{after}");

    // The old key is removed only by an explicit prune, which checks that nothing uses it.
    let kept = kept_key_path(dir.path(), &first);
    assert!(kept.exists());
    let out = dynamcp(&["vault", "prune"], dir.path(), &env).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), format!("removed key {first}\n"));
    assert!(!kept.exists());

    // Restart: every acknowledged credential decrypts to what was sent.
    server.stop();
    assert!(live_services(&status(dir.path(), &env).await).is_empty(), "a clean stop releases the lease");
    let server = start(dir.path(), &env);
    let http = common::http_client();
    let acked = acked.lock().unwrap().clone();
    for a in &acked {
        check(&http, &server.base, a).await.unwrap();
    }
    server.stop();
    decrypt_all_directly(&args, KeyringSource::new(None, None, dir.path()).unwrap(), &acked).await;
}

async fn env_keys_rotate_through_a_restart(db: Db) {
    let (args, dir) = common::test_args(db).await;
    common::import_fixture_catalog(&args).await;
    let env = base_env(dir.path(), &args.store.database_url);
    let (k1, k2) = (MasterKey::generate(), MasterKey::generate());
    let (k1_text, k2_text) = (k1.to_base64(), k2.to_base64());
    let on_k1 = with(&env, &[("ENCRYPTION_KEY", k1_text.expose())]);
    let server = start(dir.path(), &on_k1);
    let acked: Ledger = Arc::default();
    let load = Load::start(&server.base, acked.clone());
    load.wait_for_more(5).await;

    // dynamcp cannot change the environment: rotate without a new key explains the way.
    let out = dynamcp(&["vault", "rotate"], dir.path(), &on_k1).await;
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("ENCRYPTION_KEY_PREVIOUS"), "{}", text(&out.stderr));
    // With a new key the running service cannot read: refused, naming it; nothing re-wrapped.
    let holder = live_services(&status(dir.path(), &on_k1).await)[0]["holder"].as_str().unwrap().to_owned();
    let out =
        dynamcp(&["vault", "rotate"], dir.path(), &with(&on_k1, &[("NEW_ENCRYPTION_KEY", k2_text.expose())]))
            .await;
    let stderr = text(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains(&holder) && stderr.contains("Nothing was re-wrapped"), "{stderr}");
    assert!(!stderr.contains(k1_text.expose()) && !stderr.contains(k2_text.expose()), "a key was printed");
    let st = status(dir.path(), &on_k1).await;
    assert_eq!(counts(&st).iter().map(|(id, _)| id.as_str()).collect::<Vec<_>>(), vec![k1.id()], "{st}");
    let failures = load.stop().await;
    assert!(failures.is_empty(), "{failures:?}");

    // The way through the environment: restart with the new key writing and the old one readable,
    // then re-wrap while the service runs and writes.
    server.stop();
    let previous_text = format!("{}, ", k1_text.expose());
    let on_k2 =
        with(&env, &[("ENCRYPTION_KEY", k2_text.expose()), ("ENCRYPTION_KEY_PREVIOUS", &previous_text)]);
    let server = start(dir.path(), &on_k2);
    let load = Load::start(&server.base, acked.clone());
    load.wait_for_more(5).await;
    let out = dynamcp(&["vault", "rewrap"], dir.path(), &on_k2).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains(&format!("under the writing key (id {})", k2.id())),
        "{}",
        text(&out.stdout)
    );
    load.wait_for_more(5).await;
    let failures = load.stop().await;
    assert!(failures.is_empty(), "{failures:?}");
    let st = status(dir.path(), &on_k2).await;
    let total = acked.lock().unwrap().iter().map(|a| a.sent.len() as i64).sum::<i64>();
    assert_eq!(counts(&st), vec![(k2.id().to_owned(), total)], "{st}");
    let out = dynamcp(&["vault", "prune"], dir.path(), &on_k2).await;
    assert_eq!(
        text(&out.stdout),
        format!("no credential uses key {}: it may leave ENCRYPTION_KEY_PREVIOUS\n", k1.id())
    );

    // The old key may go: a restart on the new key alone opens everything.
    server.stop();
    let only_k2 = with(&env, &[("ENCRYPTION_KEY", k2_text.expose())]);
    let server = start(dir.path(), &only_k2);
    let http = common::http_client();
    let acked = acked.lock().unwrap().clone();
    for a in &acked {
        check(&http, &server.base, a).await.unwrap();
    }
    server.stop();
    decrypt_all_directly(
        &args,
        KeyringSource::new(Some(&Secret::new(k2_text.expose())), None, dir.path()).unwrap(),
        &acked,
    )
    .await;
}

/// Replicas on one database: a service whose key differs from the running ones' (or from the key the
/// database records) refuses to start, before it stores anything, and says what to do; one with
/// the same key starts beside them. A new key becomes the database's only once every running
/// service reads it.
async fn services_on_one_database_share_one_key(db: Db) {
    let (args, dir) = common::test_args(db).await;
    let env = base_env(dir.path(), &args.store.database_url);
    let (k1, k2) = (MasterKey::generate(), MasterKey::generate());
    let (k1_text, k2_text) = (k1.to_base64(), k2.to_base64());
    let on_k1 = with(&env, &[("ENCRYPTION_KEY", k1_text.expose())]);
    let first = start(dir.path(), &on_k1);
    let second = start(dir.path(), &on_k1);

    let refused = |out: &Output, why: &str| {
        let stderr = text(&out.stderr);
        assert!(!out.status.success(), "a service with another key started");
        assert!(stderr.contains("is not the one the other services on this database use"), "{stderr}");
        assert!(stderr.contains(why), "{why} in {stderr}");
        assert!(stderr.contains("set ENCRYPTION_KEY"), "{stderr}");
        assert!(
            !stderr.contains(k1_text.expose()) && !stderr.contains(k2_text.expose()),
            "a key was printed"
        );
    };
    // Another key, or (in another data dir: another machine) a generated key file.
    let on_k2 = with(&env, &[("ENCRYPTION_KEY", k2_text.expose())]);
    let out = dynamcp(&["serve"], dir.path(), &on_k2).await;
    refused(&out, &format!("seals with key {}, which this keyring cannot open", k1.id()));
    let elsewhere = tempfile::tempdir().unwrap();
    let mut other_machine = base_env(elsewhere.path(), &args.store.database_url);
    if db == Db::Sqlite {
        // On SQLite, "the same database" means the same data dir: its vault.key is the key.
        other_machine = with(&env, &[("ENCRYPTION_KEY", MasterKey::generate().to_base64().expose())]);
    }
    let out = dynamcp(&["serve"], elsewhere.path(), &other_machine).await;
    refused(&out, "which this keyring cannot open");

    // With k2 readable beside k1 it may start, but k1 stays the database's key while services on
    // k1 alone run; once none does, the database's key becomes k2.
    let k2_reading_k1 =
        with(&env, &[("ENCRYPTION_KEY", k2_text.expose()), ("ENCRYPTION_KEY_PREVIOUS", k1_text.expose())]);
    let out = dynamcp(&["serve"], dir.path(), &k2_reading_k1).await;
    refused(&out, "cannot open this key yet");
    first.stop();
    second.stop();
    let rotated = start(dir.path(), &k2_reading_k1);
    rotated.stop();
    // Now k1 alone is the stale key.
    let out = dynamcp(&["serve"], dir.path(), &on_k1).await;
    refused(&out, &format!("the database's key is {}, recorded by the first service", k2.id()));
    let again = start(dir.path(), &on_k2);
    again.stop();
}
