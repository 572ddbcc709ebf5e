//! The store suite, run against both real backends: SQLite and PostgreSQL 15 + pgvector.
#![allow(clippy::unwrap_used)]

mod common;

use common::{Db, fresh_store};
use dynamcp::store::{Agent, NewAgent, NewMessage, Page, Role, Session, SessionState, StoreError, TurnWrite};
use serde_json::json;
use uuid::Uuid;

on_both_backends!(
    sessions_round_trip,
    session_state_updates,
    messages_keep_order_roles_and_metadata,
    messages_for_a_missing_session_are_rejected_whole,
    agents_round_trip_and_paginate,
    deleting_a_session_cascades,
    deleting_an_agent_keeps_its_messages,
    migrations_are_idempotent,
    a_turn_is_written_whole_or_not_at_all,
);

async fn sessions_round_trip(db: Db) {
    let (store, _dir) = fresh_store(db).await;
    let created = store.create_session("").await.unwrap();
    assert_eq!(created.status, "active");
    assert_eq!(store.get_session(created.id).await.unwrap(), Some(created.clone()));
    assert_eq!(store.get_session(Uuid::new_v4()).await.unwrap(), None);
    assert!(store.delete_session(created.id).await.unwrap());
    assert!(!store.delete_session(created.id).await.unwrap());
    assert_eq!(store.get_session(created.id).await.unwrap(), None);
}

async fn session_state_updates(db: Db) {
    let (store, _dir) = fresh_store(db).await;
    let session = store.create_session("").await.unwrap();
    let state = SessionState {
        status: "pending_credentials".into(),
        context: json!({"needs": ["email", "spreadsheet"]}),
        required_credentials: json!([{"mcp_server": "gmail", "credential_key": "GMAIL_TOKEN"}]),
    };
    let update =
        |id| TurnWrite { new_session: None, session_id: id, agent: None, state: &state, messages: &[] };
    assert!(store.save_turn(&update(session.id)).await.unwrap());
    let read = store.get_session(session.id).await.unwrap().unwrap();
    assert_eq!(
        (read.status.as_str(), &read.context, &read.required_credentials),
        ("pending_credentials", &state.context, &state.required_credentials)
    );
    assert!(read.updated_at >= session.updated_at);
    assert_eq!(read.created_at, session.created_at);
    assert!(!store.save_turn(&update(Uuid::new_v4())).await.unwrap());
}

async fn messages_keep_order_roles_and_metadata(db: Db) {
    let (store, _dir) = fresh_store(db).await;
    let session = store.create_session("").await.unwrap();
    let mut system = NewMessage::new(Role::System, "you are the master agent");
    system.metadata = json!({"k": [1, 2]});
    let first =
        store.append_messages(session.id, &[system, NewMessage::new(Role::User, "héllo ✓")]).await.unwrap();
    let second = store.append_messages(session.id, &[NewMessage::new(Role::Assistant, "hi")]).await.unwrap();
    let all = store.messages(session.id).await.unwrap();
    assert_eq!(all, [first, second].concat());
    let turns: Vec<(Role, &str)> = all.iter().map(|m| (m.role, m.message.as_str())).collect();
    assert_eq!(
        turns,
        vec![(Role::System, "you are the master agent"), (Role::User, "héllo ✓"), (Role::Assistant, "hi")]
    );
    assert_eq!(all[0].metadata, json!({"k": [1, 2]}));
    assert!(store.messages(Uuid::new_v4()).await.unwrap().is_empty());
}

async fn messages_for_a_missing_session_are_rejected_whole(db: Db) {
    let (store, _dir) = fresh_store(db).await;
    let session = store.create_session("").await.unwrap();
    // The second message names an agent that does not exist: the whole batch must fail.
    let mut bad = NewMessage::new(Role::Assistant, "b");
    bad.agent_id = Some(Uuid::new_v4());
    let err = store.append_messages(session.id, &[NewMessage::new(Role::User, "a"), bad]).await.unwrap_err();
    assert!(matches!(err, StoreError::MissingParent(_)), "{err:?}");
    assert!(store.messages(session.id).await.unwrap().is_empty(), "half a batch was written");

    let err = store.append_messages(Uuid::new_v4(), &[NewMessage::new(Role::User, "x")]).await.unwrap_err();
    assert!(matches!(err, StoreError::MissingParent(_)), "{err:?}");
}

fn agent(session_id: Uuid, name: &str) -> NewAgent {
    NewAgent {
        tenant: String::new(),
        session_id,
        name: name.into(),
        mcp_config: json!({"mcpServers": {"memory": {"command": "npx", "args": ["-y", "@modelcontextprotocol/server-memory"]}}}),
        workflow: "remember things".into(),
        model: None,
        metadata: json!({}),
    }
}

async fn agents_round_trip_and_paginate(db: Db) {
    let (store, _dir) = fresh_store(db).await;
    let session = store.create_session("").await.unwrap();
    let mut created = Vec::new();
    for i in 0..7 {
        created.push(store.create_agent(&agent(session.id, &format!("a{i}"))).await.unwrap());
    }
    assert_eq!(store.get_agent(created[3].id).await.unwrap(), Some(created[3].clone()));
    let (page, total) = store.list_agents("", Page { limit: 3, offset: 0 }).await.unwrap();
    assert_eq!(total, 7);
    assert_eq!(page.iter().map(|a| a.name.as_str()).collect::<Vec<_>>(), ["a6", "a5", "a4"]);
    let (page, _) = store.list_agents("", Page { limit: 3, offset: 6 }).await.unwrap();
    assert_eq!(page.iter().map(|a| a.name.as_str()).collect::<Vec<_>>(), ["a0"]);
    let (page, total) = store.list_agents("", Page { limit: 3, offset: u64::MAX }).await.unwrap();
    assert!(page.is_empty());
    assert_eq!(total, 7);

    let err = store.create_agent(&agent(Uuid::new_v4(), "orphan")).await.unwrap_err();
    assert!(matches!(err, StoreError::MissingParent("session")), "{err:?}");
}

async fn deleting_a_session_cascades(db: Db) {
    let (store, _dir) = fresh_store(db).await;
    let keep = store.create_session("").await.unwrap();
    let doomed = store.create_session("").await.unwrap();
    let kept_agent = store.create_agent(&agent(keep.id, "keep")).await.unwrap();
    let doomed_agent = store.create_agent(&agent(doomed.id, "doomed")).await.unwrap();
    store.append_messages(doomed.id, &[NewMessage::new(Role::User, "bye")]).await.unwrap();
    store.append_messages(keep.id, &[NewMessage::new(Role::User, "stay")]).await.unwrap();

    assert!(store.delete_session(doomed.id).await.unwrap());
    assert_eq!(store.get_agent(doomed_agent.id).await.unwrap(), None);
    assert!(store.messages(doomed.id).await.unwrap().is_empty());
    assert_eq!(store.get_agent(kept_agent.id).await.unwrap(), Some(kept_agent));
    assert_eq!(store.messages(keep.id).await.unwrap().len(), 1);
}

async fn deleting_an_agent_keeps_its_messages(db: Db) {
    let (store, _dir) = fresh_store(db).await;
    let session = store.create_session("").await.unwrap();
    let a = store.create_agent(&agent(session.id, "runner")).await.unwrap();
    let mut run = NewMessage::new(Role::Assistant, "ran");
    run.agent_id = Some(a.id);
    store.append_messages(session.id, &[run]).await.unwrap();
    assert!(store.delete_agent(a.id).await.unwrap());
    let messages = store.messages(session.id).await.unwrap();
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].agent_id, None, "agent_id is cleared, the history stays");
}

async fn migrations_are_idempotent(db: Db) {
    let (args, _dir) = common::test_args(db).await;
    let first = dynamcp::store::open(&args.store.settings()).await.unwrap();
    let session = first.create_session("").await.unwrap();
    first.close().await;
    let second = dynamcp::store::open(&args.store.settings()).await.unwrap();
    assert_eq!(second.get_session(session.id).await.unwrap().map(|s| s.id), Some(session.id));
}

/// The design's `match_mcp_servers` on pgvector: the threshold filters and the order is by cosine
/// similarity.
#[tokio::test]
async fn postgres_match_mcp_servers_ranks_by_cosine_similarity() {
    use sqlx::Connection;
    let url = common::fresh_postgres_database().await;
    let dir = tempfile::tempdir().unwrap();
    let mut args = dynamcp::config::ServeArgs::for_data_dir(dir.path());
    args.store.database_url = Some(url.clone());
    dynamcp::store::open(&args.store.settings()).await.unwrap().close().await;

    let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
    let unit = |axis: usize, tilt: f32| {
        let mut v = vec![0.0f32; 384];
        v[axis] = 1.0;
        v[(axis + 1) % 384] = tilt;
        format!("[{}]", v.iter().map(f32::to_string).collect::<Vec<_>>().join(","))
    };
    for (id, vector) in [("exact", unit(0, 0.0)), ("near", unit(0, 0.5)), ("far", unit(7, 0.0))] {
        sqlx::query(
            "INSERT INTO mcp_server_cache (id, server_name, description, embedding, created_at, updated_at) \
             VALUES ($1, $1, 'd', $2::vector, now(), now())",
        )
        .bind(id)
        .bind(vector)
        .execute(&mut conn)
        .await
        .unwrap();
    }
    let rows: Vec<(String, f64)> =
        sqlx::query_as("SELECT id, similarity FROM match_mcp_servers($1::vector, 0.5, 10)")
            .bind(unit(0, 0.0))
            .fetch_all(&mut conn)
            .await
            .unwrap();
    let ids: Vec<&str> = rows.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(ids, ["exact", "near"], "{rows:?}");
    assert!((rows[0].1 - 1.0).abs() < 1e-6);
    assert!((rows[1].1 - 1.0 / 1.25f64.sqrt()).abs() < 1e-4, "{rows:?}");
}

/// `save_turn`: a new session, its agent, its state and its messages in one transaction; for a
/// session that is gone, nothing at all.
async fn a_turn_is_written_whole_or_not_at_all(db: Db) {
    let (store, _dir) = fresh_store(db).await;
    let session = Session::new("acme");
    let agent = Agent::new(&NewAgent {
        tenant: "acme".into(),
        session_id: session.id,
        name: "turn agent".into(),
        mcp_config: json!({"mcpServers": {}}),
        workflow: "w".into(),
        model: None,
        metadata: json!({}),
    });
    let state = SessionState {
        status: "success".into(),
        context: json!({"agent_id": agent.id}),
        required_credentials: json!([]),
    };
    let mut reply = NewMessage::new(Role::Assistant, "created");
    reply.agent_id = Some(agent.id);
    let messages = [NewMessage::new(Role::User, "do it"), reply];
    let turn = TurnWrite {
        new_session: Some(&session),
        session_id: session.id,
        agent: Some(&agent),
        state: &state,
        messages: &messages,
    };
    assert!(store.save_turn(&turn).await.unwrap());
    let stored = store.get_session(session.id).await.unwrap().unwrap();
    assert_eq!((stored.tenant.as_str(), stored.status.as_str()), ("acme", "success"));
    assert_eq!(stored.context, json!({"agent_id": agent.id}));
    assert_eq!(store.get_agent(agent.id).await.unwrap().unwrap(), agent);
    let said: Vec<(Role, String, Option<Uuid>)> = store
        .messages(session.id)
        .await
        .unwrap()
        .into_iter()
        .map(|m| (m.role, m.message, m.agent_id))
        .collect();
    assert_eq!(
        said,
        [(Role::User, "do it".into(), None), (Role::Assistant, "created".into(), Some(agent.id))]
    );

    // An existing session that is gone: false, and the agent and messages are not written.
    let ghost = Uuid::new_v4();
    let orphan = Agent::new(&NewAgent {
        tenant: "acme".into(),
        session_id: ghost,
        name: "orphan".into(),
        mcp_config: json!({}),
        workflow: "w".into(),
        model: None,
        metadata: json!({}),
    });
    let turn =
        TurnWrite { new_session: None, session_id: ghost, agent: None, state: &state, messages: &messages };
    assert!(!store.save_turn(&turn).await.unwrap());
    assert!(store.messages(ghost).await.unwrap().is_empty());
    let turn = TurnWrite {
        new_session: None,
        session_id: ghost,
        agent: Some(&orphan),
        state: &state,
        messages: &[],
    };
    assert!(matches!(store.save_turn(&turn).await, Err(StoreError::MissingParent(_))));
    assert!(store.get_agent(orphan.id).await.unwrap().is_none());
}
