//! Dense search inside PostgreSQL through pgvector ranks like the in-process index on the same
//! data: the default catalog (9,465 servers, ~20k tools) and the real local model.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::HashSet;

use common::Db;
use dynamcp::catalog::{Catalog, DenseBackend, SearchConfig, TextKind};
use dynamcp::store::Scan;

const QUERIES: &[&str] = &[
    "what time is it in Tokyo",
    "read my gmail inbox",
    "append rows to a google sheet",
    "post a message to a slack channel",
    "query a postgres database",
    "create an issue on github",
    "search the web",
    "manage kubernetes deployments",
    "send an sms",
    "convert a pdf to text",
];

fn ids(catalog: &Catalog, docs: impl IntoIterator<Item = u32>) -> Vec<String> {
    let index = catalog.index();
    docs.into_iter().map(|d| index.record(d).id.clone()).collect()
}

#[tokio::test]
async fn pgvector_ranks_like_the_in_process_index() {
    let (mut args, _dir) = common::test_args(Db::Postgres).await;
    common::with_default_catalog(&mut args);
    args.store.dense_backend = DenseBackend::Pgvector;
    let store = dynamcp::store::open(&args.store.settings()).await.unwrap();
    let pg = dynamcp::state::open_catalog(store.clone(), &args.store).await.unwrap();
    assert_eq!(pg.dense_backend(), DenseBackend::Pgvector);
    let embedder = pg.embedder().cloned().expect("the model is fetched by scripts/setup.sh");
    let local = Catalog::open(store.clone(), Some(embedder.clone()), DenseBackend::InProcess).await.unwrap();
    assert_eq!(local.dense_backend(), DenseBackend::InProcess);

    let db = store.vectors().expect("PostgreSQL has pgvector");
    let texts: Vec<String> = QUERIES.iter().map(|q| (*q).to_owned()).collect();
    let vectors = embedder.embed(texts, TextKind::Query).await.unwrap();
    let dense = local.index().dense().cloned().unwrap();
    let (mut hnsw_found, mut wanted) = (0, 0);
    for (query, v) in QUERIES.iter().zip(&vectors) {
        // Exact pgvector (f32) and the in-process index (int8, sign-bit shortlist) agree on the
        // nearest servers: the same first hit, and nine of the top ten.
        let exact: Vec<String> =
            db.nearest_servers(v, 10, Scan::Exact).await.unwrap().into_iter().map(|(id, _)| id).collect();
        let ours = ids(&local, dense.search_servers(v, 10).into_iter().map(|(d, _)| d));
        assert_eq!(exact[0], ours[0], "{query}: {exact:?} vs {ours:?}");
        let shared = exact.iter().filter(|id| ours.contains(id)).count();
        assert!(shared >= 9, "{query}: only {shared}/10 shared: {exact:?} vs {ours:?}");

        let exact_tools = db.nearest_tools(v, 10, Scan::Exact).await.unwrap();
        let ours_tools = dense.search_tools(v, 10);
        let ours_first = (ids(&local, [ours_tools[0].0]).remove(0), ours_tools[0].2);
        assert_eq!((exact_tools[0].0.clone(), exact_tools[0].1), ours_first, "{query}");

        // HNSW finds nearly what the exact scan finds.
        let hnsw: HashSet<String> =
            db.nearest_servers(v, 10, Scan::Hnsw).await.unwrap().into_iter().map(|(id, _)| id).collect();
        hnsw_found += exact.iter().filter(|id| hnsw.contains(*id)).count();
        wanted += exact.len();
    }
    let recall = hnsw_found as f64 / wanted as f64;
    assert!(recall >= 0.9, "HNSW recall@10 against the exact scan: {recall}");

    // End to end, the hybrid search answers the same through either dense path.
    for query in ["find invoices in my Gmail and add them to a Google Sheet", "what time is it in Tokyo"] {
        let a = pg.search(query, 5, SearchConfig::default()).await.unwrap();
        let b = local.search(query, 5, SearchConfig::default()).await.unwrap();
        let a_ids = ids(&pg, a.hits.iter().map(|h| h.doc));
        let b_ids = ids(&local, b.hits.iter().map(|h| h.doc));
        assert_eq!(a_ids[0], b_ids[0], "{query}");
        let shared = a_ids.iter().filter(|id| b_ids.contains(id)).count();
        assert!(shared >= 4, "{query}: {a_ids:?} vs {b_ids:?}");
    }

    // A second start finds the vectors already in place (same model, same texts): no rewrite.
    let url = args.store.database_url.clone().unwrap();
    let synced_at = || async {
        let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&url).await.unwrap();
        let (at,): (chrono::DateTime<chrono::Utc>,) =
            sqlx::query_as("SELECT updated_at FROM vector_sync").fetch_one(&mut conn).await.unwrap();
        at
    };
    let before = synced_at().await;
    let reopened =
        Catalog::open(store.clone(), Some(embedder.clone()), DenseBackend::Pgvector).await.unwrap();
    assert_eq!(reopened.dense_backend(), DenseBackend::Pgvector);
    assert_eq!(synced_at().await, before);

    // An import that adds one server: its vectors are written in place, the HNSW indexes stay
    // (searches on other replicas go on meanwhile; a rebuild would hold them for seconds).
    let index_oids = || async {
        let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&url).await.unwrap();
        let rows: Vec<(String, sqlx::postgres::types::Oid)> = sqlx::query_as(
            "SELECT relname::text, oid FROM pg_class WHERE relname IN \
             ('mcp_server_cache_embedding_idx', 'mcp_tool_embeddings_embedding_idx') ORDER BY relname",
        )
        .fetch_all(&mut conn)
        .await
        .unwrap();
        rows
    };
    let oids = index_oids().await;
    assert_eq!(oids.len(), 2, "{oids:?}");
    common::import_records(
        &args,
        vec![serde_json::json!({
            "id": "paperclip-counter", "name": "Paperclip Counter",
            "description": "Counts the paperclips in a warehouse, shelf by shelf",
            "tools": [{"name": "count_paperclips", "description": "How many paperclips a shelf holds"}],
            "credentials": [], "launch": []
        })],
    )
    .await;
    assert!(reopened.catch_up().await.unwrap());
    assert_ne!(synced_at().await, before, "the vectors were brought up to date");
    assert_eq!(index_oids().await, oids, "the indexes were dropped and built again");
    let v =
        embedder.embed(vec!["count paperclips on warehouse shelves".into()], TextKind::Query).await.unwrap();
    for scan in [Scan::Exact, Scan::Hnsw] {
        assert_eq!(db.nearest_servers(&v[0], 1, scan).await.unwrap()[0].0, "paperclip-counter");
        assert_eq!(db.nearest_tools(&v[0], 1, scan).await.unwrap()[0].0, "paperclip-counter");
    }
    store.close().await;
}
