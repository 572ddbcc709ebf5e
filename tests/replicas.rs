//! Several dynamcp services on one database (replicas behind a load balancer): what one does,
//! the others see without a restart. Two services in this process share a SQLite file or a
//! PostgreSQL database (with one ENCRYPTION_KEY, as the README asks), each with its own HTTP
//! listener, lease, catalog index and runtime.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::{Db, TestServer};
use dynamcp::vault::MasterKey;

on_both_backends!(an_import_and_a_deletion_reach_every_replica, caps_hold_across_services);

/// On PostgreSQL a caller's rate budget is the database's: requests spread over two replicas
/// spend one budget (on SQLite each service counts its own).
#[tokio::test]
async fn postgres_replicas_share_one_rate_budget() {
    let (mut args, dir) = common::test_args(Db::Postgres).await;
    args.store.encryption_key = Some(MasterKey::generate().to_base64());
    args.rate_limit_per_sec = 1;
    args.rate_limit_burst = 4;
    let mut second_args = args.clone();
    let second_dir = tempfile::tempdir().unwrap();
    second_args.store.data_dir = second_dir.path().to_owned();
    let a = TestServer::start_with(args, dir).await;
    let b = TestServer::start_with(second_args, second_dir).await;
    let mut statuses = Vec::new();
    for i in 0..10 {
        let server = if i % 2 == 0 { &a } else { &b };
        statuses.push(server.get("/api/agents").await.0);
    }
    let passed = statuses.iter().filter(|s| **s == 200).count();
    // A burst of 4 between the two, plus at most what one second a request refills meanwhile.
    assert!((4..=6).contains(&passed), "{statuses:?}");
    assert!(statuses.iter().all(|s| *s == 200 || *s == 429), "{statuses:?}");
    a.stop().await;
    b.stop().await;
}

/// A shared cap (at most so many runs, or turns being planned, at once; shared on PostgreSQL,
/// where replicas run, and working the same on SQLite) is the database's: slots taken through
/// any service count against it, concurrent takers never overshoot, a slot given back frees one,
/// and a service whose lease lapses (it died) loses its.
async fn caps_hold_across_services(db: Db) {
    use dynamcp::access::limit::Cap;
    use dynamcp::vault::ServiceLease;
    let (store, _dir) = common::fresh_store(db).await;
    let heartbeat = Duration::from_secs(60);
    let lease_a = ServiceLease::acquire(store.clone(), "env", heartbeat).await.unwrap();
    let lease_b = ServiceLease::acquire(store.clone(), "env", heartbeat).await.unwrap();
    let hour = Duration::from_secs(3600);
    let cap = |holder| Cap::new("run", 5).shared(store.clone(), holder, hour);
    let (a, b) = (cap(lease_a.holder().await), cap(lease_b.holder().await));

    // Twenty takers at once, half through each replica: exactly five get a slot.
    let tries = (0..20).map(|i| if i % 2 == 0 { a.try_take("agent") } else { b.try_take("agent") });
    let mut slots: Vec<_> = futures::future::join_all(tries).await.into_iter().flatten().collect();
    assert_eq!(slots.len(), 5);
    assert!(a.try_take("").await.is_none() && b.try_take("").await.is_none());

    // A slot given back is free for the other replica (it is given back in the background).
    drop(slots.pop());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(slot) = b.try_take("").await {
            slots.push(slot);
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the slot given back never became free");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(a.try_take("").await.is_none());

    // b dies: its lease lapses (here: its row goes), and its slots (one at least) no longer count.
    assert_eq!(slots.len(), 5);
    lease_b.release().await;
    assert!(a.try_take("").await.is_some(), "b's slots still counted after its lease ended");

    // A slot that expires (its work's time limit passed) stops counting too.
    // (A slot forgotten is never given back; each try goes through its own replica's cap.)
    let holder_a = lease_a.holder().await;
    let short = || Cap::new("plan", 1).shared(store.clone(), holder_a, Duration::ZERO);
    std::mem::forget(short().try_take("").await.expect("a free plan slot"));
    assert!(short().try_take("").await.is_some(), "an expired slot still counted");
    lease_a.release().await;
}

/// Agent runs are capped across replicas: with one run allowed at once, a run in progress on one
/// replica makes the other answer 429 `too_many_runs`, and once it ends the other runs.
#[tokio::test]
async fn postgres_replicas_share_the_run_cap() {
    use common::fake_llm::{Step, start_fake, text_turn};
    use dynamcp::llm::Provider;
    let provider = Provider::Anthropic;
    let (fake, url) = start_fake(vec![
        Step::After(Duration::from_secs(3), text_turn(provider, "first done")),
        Step::Reply(text_turn(provider, "second done")),
    ])
    .await;
    let (mut args, dir) = common::test_args(Db::Postgres).await;
    args.store.encryption_key = Some(MasterKey::generate().to_base64());
    args.runtime.max_concurrent_runs = 1;
    common::fake_llm::configure(&mut args, provider, &url, 30, 0);
    let mut second_args = args.clone();
    let second_dir = tempfile::tempdir().unwrap();
    second_args.store.data_dir = second_dir.path().to_owned();
    let a = TestServer::start_with(args, dir).await;
    let b = TestServer::start_with(second_args, second_dir).await;
    let (agent, _) = common::store_agent(&a, &[], "Answer.", serde_json::json!({})).await;

    let first = tokio::spawn({
        let a_url = a.url(&format!("/api/agents/{agent}/run"));
        async move {
            let response = common::http_client()
                .post(a_url)
                .header("accept", "application/json")
                .json(&serde_json::json!({"input": "first"}))
                .send()
                .await
                .unwrap();
            (response.status().as_u16(), response.json::<serde_json::Value>().await.unwrap())
        }
    });
    eventually("the first run reaching the model", || async { !fake.seen.lock().unwrap().is_empty() }).await;
    let (status, body) = b.run_agent(agent, "second").await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"]["code"], "too_many_runs", "{body}");
    let (status, body) = first.await.unwrap();
    assert_eq!(status, 200, "{body}");
    // The slot is given back in the background as the run ends.
    eventually("the second replica running once the first run ended", || async {
        let (status, body) = b.run_agent(agent, "second").await;
        assert!(status == 200 || status == 429, "{status} {body}");
        status == 200
    })
    .await;
    a.stop().await;
    b.stop().await;
}

/// Three services started at once on an empty PostgreSQL database: one imports the default catalog
/// (the catalog's version moves once), the others load what it committed.
#[tokio::test]
async fn postgres_replicas_started_together_import_the_default_catalog_once() {
    let (mut args, _dir) = common::test_args(Db::Postgres).await;
    args.store.encryption_key = Some(MasterKey::generate().to_base64());
    args.store.default_catalog = true;
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let replicas = futures::future::join_all(dirs.into_iter().map(|dir| {
        let mut args = args.clone();
        args.store.data_dir = dir.path().to_owned();
        TestServer::start_with(args, dir)
    }))
    .await;
    for replica in &replicas {
        eventually("every replica searching the default catalog", || async {
            let (_, health) = replica.get("/health").await;
            health["catalog"]["servers"].as_u64().unwrap_or(0) > 9000
        })
        .await;
    }
    let (_, health) = replicas[0].get("/health").await;
    assert_eq!(health["catalog"]["version"], 1, "one import changed the catalog: {health}");
    for replica in replicas {
        replica.stop().await;
    }
}

/// Three real `dynamcp serve` processes on one private PostgreSQL database with one
/// `ENCRYPTION_KEY`, as behind a load balancer: started at once on the empty database, one
/// imports the default catalog; an agent planned through one runs its server on another and
/// deleting it through the third stops that server; a fourth with another key refuses to start
/// while the others go on; and after a `kill -9` of one under a stream of writes to all three,
/// every write any of them acknowledged is there, credentials decrypting to what was sent.
#[tokio::test]
async fn three_serve_processes_on_one_postgres() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};

    use common::{Running, writes};

    let database = common::fresh_postgres_database().await;
    let key = MasterKey::generate().to_base64().expose().to_owned();
    let packages = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("mcp-package-store");
    let dirs: Vec<tempfile::TempDir> = (0..4).map(|_| tempfile::tempdir().unwrap()).collect();
    let command = |dir: &std::path::Path, key: &str| {
        let mut cmd = common::clean_command();
        cmd.arg("serve")
            .env("DYNAMCP_ADDR", "127.0.0.1:0")
            .env("DYNAMCP_DATA_DIR", dir)
            .env("DATABASE_URL", &database)
            .env("ENCRYPTION_KEY", key)
            .env("DYNAMCP_PACKAGE_DIR", &packages)
            .current_dir(dir);
        cmd
    };
    // Started at once: each waits on its own thread until its service listens.
    let mut replicas: Vec<Running> = std::thread::scope(|s| {
        let starting: Vec<_> =
            dirs[..3].iter().map(|d| s.spawn(|| common::spawn_serve(command(d.path(), &key)))).collect();
        starting.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let http = common::http_client();
    let health = async |r: &Running| -> serde_json::Value {
        http.get(format!("{}/health", r.base)).send().await.unwrap().json().await.unwrap()
    };
    for replica in &replicas {
        eventually("every replica searching the default catalog", || async {
            health(replica).await["catalog"]["servers"].as_u64().unwrap_or(0) > 9000
        })
        .await;
    }
    let first = health(&replicas[0]).await;
    assert_eq!(first["catalog"]["version"], 1, "one import changed the catalog: {first}");

    // Planned through the first replica, run by the second, deleted through the third.
    let (base0, base1, base2) =
        (replicas[0].base.clone(), replicas[1].base.clone(), replicas[2].base.clone());
    let chat = serde_json::json!({"message": "what time is it in Tokyo?"});
    let planned: serde_json::Value =
        http.post(format!("{base0}/api/chat")).json(&chat).send().await.unwrap().json().await.unwrap();
    assert_eq!(planned["agent_created"], true, "{planned}");
    let agent = planned["agent_id"].as_str().unwrap().to_owned();
    let response = http.get(format!("{base1}/api/agents/{agent}/tools")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let tools: serde_json::Value = response.json().await.unwrap();
    assert_eq!(tools["servers"][0]["status"], "ready", "{tools}");
    let marker = dirs[1].path().to_str().unwrap().to_owned();
    let replica1 = replicas[1].child.id();
    let servers_of_1 = || common::processes_with(&marker).into_iter().filter(|p| p.0 != replica1).count();
    assert!(servers_of_1() > 0, "no server process under the second replica");
    let response = http.delete(format!("{base2}/api/agents/{agent}")).send().await.unwrap();
    assert_eq!(response.status(), 204);
    eventually("the second replica stopping the deleted agent's server", || async { servers_of_1() == 0 })
        .await;

    // Another key: refused before it stores anything, and the others go on.
    let mut odd = command(dirs[3].path(), MasterKey::generate().to_base64().expose())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let Some(status) = common::wait_exit(&mut odd, Duration::from_secs(60)) else {
        odd.kill().unwrap();
        panic!("a replica with another key started");
    };
    let mut refusal = String::new();
    std::io::Read::read_to_string(&mut odd.stderr.take().unwrap(), &mut refusal).unwrap();
    assert!(!status.success(), "{refusal}");
    assert!(refusal.contains("ENCRYPTION_KEY"), "{refusal}");
    for replica in &replicas {
        assert_eq!(health(replica).await["status"], "ok");
    }

    // kill -9 of the first replica in a stream of writes to all three (two writers each).
    let acked = Arc::new(Mutex::new(Vec::<writes::Acked>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = [&base0, &base0, &base1, &base1, &base2, &base2]
        .into_iter()
        .enumerate()
        .map(|(tag, base)| tokio::spawn(writes::write_until(base.clone(), tag, acked.clone(), stop.clone())))
        .collect();
    let agents = |acked: &Mutex<Vec<writes::Acked>>| {
        acked.lock().unwrap().iter().filter(|a| a.agent.is_some()).count()
    };
    eventually("writes acknowledged", || async { agents(&acked) >= 12 }).await;
    let mut killed = replicas.remove(0);
    killed.child.kill().unwrap(); // SIGKILL: no shutdown hooks.
    killed.child.wait().unwrap();
    let before = agents(&acked);
    eventually("the other replicas acknowledging more writes", || async { agents(&acked) >= before + 6 })
        .await;
    stop.store(true, Ordering::Relaxed);
    for writer in writers {
        writer.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.iter().any(|a| a.message.contains("(writer 0,")),
        "the killed replica acknowledged nothing"
    );
    writes::assert_kept(&base1, &acked).await;
    for replica in replicas {
        replica.stop();
    }
}

/// Polls `check` every 100 ms until it holds, for at most 60 s (a correctness bound, not a
/// speed one: BENCHMARKS.md has the times).
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "{what} did not happen within 60 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn an_import_and_a_deletion_reach_every_replica(db: Db) {
    let (mut args, dir) = common::test_args(db).await;
    common::import_default_records(&args, &["time-mcp-server"], &[]).await;
    args.runtime.runtimes = ["npx", "uvx"].map(str::to_owned).to_vec();
    args.store.encryption_key = Some(MasterKey::generate().to_base64());
    // PostgreSQL announces each change as it commits, so there its replicas never need to poll
    // within this test; SQLite's poll every second.
    args.sync_secs = if db == Db::Postgres { 3600 } else { 1 };
    let mut second_args = args.clone();
    let second_dir = tempfile::tempdir().unwrap();
    if db == Db::Postgres {
        // Another machine: its own data dir, the same database and key.
        second_args.store.data_dir = second_dir.path().to_owned();
    }
    let a = TestServer::start_with(args.clone(), dir).await;
    let b = TestServer::start_with(second_args, second_dir).await;

    // Both report themselves as replicas of one database, in step.
    let (_, ha) = a.get("/health").await;
    let (_, hb) = b.get("/health").await;
    assert_eq!((ha["status"].as_str(), hb["status"].as_str()), (Some("ok"), Some("ok")), "{ha}\n{hb}");
    assert_ne!(ha["replica"], hb["replica"]);
    assert!(ha["replica"].is_string(), "{ha}");
    assert_eq!(ha["vault_key"], hb["vault_key"]);
    assert_eq!(ha["catalog"], hb["catalog"]);
    assert_eq!(ha["catalog"]["servers"], 1, "{ha}");

    // A catalog import (as `dynamcp catalog import` does it, by another process) becomes
    // searchable on both, without a restart.
    assert_eq!(a.get("/api/servers/everything-mcp-server").await.0, 404);
    common::import_default_records(&args, &["everything-mcp-server"], &[]).await;
    for server in [&a, &b] {
        eventually("the import reaching a replica", || async {
            server.get("/api/servers/everything-mcp-server").await.0 == 200
        })
        .await;
        let (_, health) = server.get("/health").await;
        assert_eq!(health["catalog"]["servers"], 2, "{health}");
        assert_eq!(health["catalog"]["loaded"], health["catalog"]["version"], "{health}");
    }

    // An agent's server runs on b; the agent is deleted through a: b stops it.
    let (agent, _) =
        common::store_agent(&a, &["time-mcp-server"], "Tell the time.", serde_json::json!({})).await;
    let (status, body) = b.get(&format!("/api/agents/{agent}/tools")).await;
    assert_eq!(status, 200, "{body}");
    let running = b.runtime.running().await;
    assert_eq!(running.len(), 1, "{running:?}");
    let pid = running[0].pid.unwrap();
    let (status, body) = a.delete(&format!("/api/agents/{agent}")).await;
    assert_eq!(status, 204, "{body}");
    // The deletion is counted in the database, where b looks for it; deleting nothing is not.
    assert_eq!(a.store.counter(dynamcp::store::AGENT_DELETIONS_FACT).await.unwrap(), 1);
    assert_eq!(a.delete(&format!("/api/agents/{agent}")).await.0, 404);
    assert_eq!(a.store.counter(dynamcp::store::AGENT_DELETIONS_FACT).await.unwrap(), 1);
    eventually("b stopping a server of an agent deleted through a", || async {
        b.runtime.running().await.is_empty()
    })
    .await;
    eventually("the deleted agent's server process ending", || async {
        !std::path::Path::new(&format!("/proc/{pid}")).exists()
    })
    .await;
    assert_eq!(b.get(&format!("/api/agents/{agent}")).await.0, 404);
    a.stop().await;
    b.stop().await;
}
