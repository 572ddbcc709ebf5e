//! `dynamcp bench`: search and embedding speed, printed side by side in one run. A benchmark,
//! not a test: numbers vary with the machine, so nothing here asserts a time.
#![allow(clippy::print_stdout, reason = "a benchmark prints its numbers")]

pub mod load;
pub mod runtime;

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::catalog::dense::{DenseIndex, Quantized};
use crate::catalog::{DenseBackend, QueryText, SearchConfig, SearchIndex, ServerRecord, TextKind};
use crate::config::BenchArgs;
use crate::store::{self, Scan};

/// Queries in users' words, separate from the eval set's, so the numbers are not tuned to it.
pub(crate) const QUERIES: &[&str] = &[
    "check my gmail for invoices and put them in a google sheet",
    "what time is it in tokyo",
    "post a message to our slack channel when a deploy fails",
    "search the web for recent news about rust",
    "query my postgres database for last week's signups",
    "create a jira ticket for the login bug",
    "summarize a youtube video",
    "read and write files in a local folder",
    "send a telegram message to my phone",
    "find flights from berlin to lisbon next friday",
    "track my spending in a spreadsheet",
    "scrape product prices from a website",
    "manage kubernetes pods",
    "translate a document into spanish",
    "remember facts about my projects between chats",
    "open a pull request on github",
];

struct Stats {
    p50: Duration,
    p99: Duration,
    mean: Duration,
}

fn stats(mut samples: Vec<Duration>) -> Stats {
    samples.sort_unstable();
    let at = |q: f64| samples[((samples.len() as f64 - 1.0) * q).round() as usize];
    let mean = samples.iter().sum::<Duration>() / samples.len().max(1) as u32;
    Stats { p50: at(0.5), p99: at(0.99), mean }
}

fn time<T>(rounds: usize, mut f: impl FnMut(usize) -> T) -> Stats {
    let mut samples = Vec::with_capacity(rounds);
    for i in 0..rounds {
        let start = Instant::now();
        std::hint::black_box(f(i));
        samples.push(start.elapsed());
    }
    stats(samples)
}

fn row(name: &str, s: &Stats) {
    println!(
        "{name:<58} p50 {:>9.3} ms   p99 {:>9.3} ms   mean {:>9.3} ms",
        s.p50.as_secs_f64() * 1e3,
        s.p99.as_secs_f64() * 1e3,
        s.mean.as_secs_f64() * 1e3
    );
}

fn rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let rounds = args.rounds.max(10);
    let store = store::open(&args.store.settings()).await.context("could not open the store")?;
    let started = Instant::now();
    let catalog = crate::state::open_catalog(store.clone(), &args.store).await?;
    println!(
        "catalog ready in {:.2} s (load, index build, vectors from cache)",
        started.elapsed().as_secs_f64()
    );
    let index = catalog.index();
    let embedder = catalog.embedder().cloned().context("the benchmark needs the embedding model")?;
    println!(
        "catalog: {} servers, {} tool vectors; model {} on {}; RSS {:.0} MiB",
        index.len(),
        index.dense().map_or(0, |d| d.tools.len()),
        embedder.id(),
        embedder.engine(),
        rss_mib().unwrap_or(0.0)
    );
    let texts: Vec<String> = QUERIES.iter().map(|q| (*q).to_owned()).collect();
    let vectors = embedder.embed(texts.clone(), TextKind::Query).await?;
    let config = SearchConfig { decompose: false, ..SearchConfig::default() };
    let query = |i: usize| QueryText {
        text: QUERIES[i % QUERIES.len()],
        vector: Some(&vectors[i % QUERIES.len()]),
        hits: None,
    };
    println!("\n-- index part at {} servers (query vectors precomputed) --", index.len());
    row(
        "BM25 only",
        &time(rounds, |i| {
            index.search(
                QueryText { vector: None, ..query(i) },
                &[],
                10,
                SearchConfig { dense: false, tools: false, ..config },
            )
        }),
    );
    row(
        "dense servers + tools, exact int8 scan of every vector",
        &time(rounds, |i| {
            index.dense().map(|d| {
                let v = &vectors[i % QUERIES.len()];
                d.servers.scores(v).len() + d.tools.scores(v).len()
            })
        }),
    );
    row(
        "dense servers + tools, sign-bit shortlist + int8 rescoring",
        &time(rounds, |i| {
            let d = index.dense().map(|d| {
                (
                    d.search_servers(&vectors[i % QUERIES.len()], 100),
                    d.search_tools(&vectors[i % QUERIES.len()], 100),
                )
            });
            d.map(|(a, b)| a.len() + b.len())
        }),
    );
    row(
        "hybrid: BM25 + dense + tools, fused (index part)",
        &time(rounds, |i| index.search(query(i), &[], 10, config)),
    );
    println!("\n-- end to end (query embedding included, no query cache) --");
    row(
        "embed one query",
        &time(rounds.min(200), |i| {
            embedder.embed_blocking(&texts[i % texts.len()..=i % texts.len()], TextKind::Query)
        }),
    );
    row(
        "embed + hybrid search",
        &time(rounds.min(200), |i| {
            let v = embedder
                .embed_blocking(&texts[i % texts.len()..=i % texts.len()], TextKind::Query)
                .unwrap_or_default();
            let q = QueryText {
                text: QUERIES[i % QUERIES.len()],
                vector: v.first().map(Vec::as_slice),
                hits: None,
            };
            index.search(q, &[], 10, config).hits.len()
        }),
    );

    if let Some(db) = store.vectors().filter(|_| catalog.dense_backend() == DenseBackend::Pgvector) {
        println!("\n-- pgvector in PostgreSQL, the same vectors (one query per round trip) --");
        let rounds = rounds.min(200);
        for (name, scan) in [("exact scan", Scan::Exact), ("HNSW", Scan::Hnsw)] {
            let mut servers = Vec::with_capacity(rounds);
            let mut tools = Vec::with_capacity(rounds);
            for i in 0..rounds {
                let v = &vectors[i % QUERIES.len()];
                let start = Instant::now();
                db.nearest_servers(v, 100, scan).await?;
                servers.push(start.elapsed());
                let start = Instant::now();
                db.nearest_tools(v, 300, scan).await?;
                tools.push(start.elapsed());
            }
            row(&format!("pgvector {name}: 100 nearest servers"), &stats(servers));
            row(&format!("pgvector {name}: 300 nearest tools"), &stats(tools));
        }
        let (mut found, mut wanted) = (0usize, 0usize);
        for v in &vectors {
            let exact = db.nearest_servers(v, 10, Scan::Exact).await?;
            let hnsw = db.nearest_servers(v, 10, Scan::Hnsw).await?;
            found += exact.iter().filter(|(id, _)| hnsw.iter().any(|(h, _)| h == id)).count();
            wanted += exact.len();
        }
        println!("HNSW recall@10 against the exact scan: {:.3}", found as f64 / wanted.max(1) as f64);
        let mut e2e = Vec::with_capacity(rounds);
        for i in 0..rounds {
            let start = Instant::now();
            // A fresh query text each round so the query-vector cache does not answer.
            catalog.search(&format!("{} {i}", QUERIES[i % QUERIES.len()]), 10, config).await?;
            e2e.push(start.elapsed());
        }
        row("embed + hybrid search with pgvector HNSW (end to end)", &stats(e2e));
    }

    println!("\n-- synthetic catalog of {} servers --", args.synthetic);
    let big = synthetic(&index, args.synthetic);
    row(
        &format!("hybrid index part at {} servers", big.len()),
        &time(rounds.min(300), |i| big.search(query(i), &[], 10, config)),
    );
    row(
        &format!("BM25 only at {} servers", big.len()),
        &time(rounds.min(300), |i| {
            big.search(
                QueryText { vector: None, ..query(i) },
                &[],
                10,
                SearchConfig { dense: false, tools: false, ..config },
            )
        }),
    );
    println!("RSS with both indexes: {:.0} MiB", rss_mib().unwrap_or(0.0));

    println!("\n-- embedding throughput (catalog texts, as at import) --");
    let (server_texts, tool_texts) = index.embedding_texts();
    let sample: Vec<String> =
        server_texts.iter().take(256).chain(tool_texts.iter().map(|(_, t)| t).take(256)).cloned().collect();
    let start = Instant::now();
    embedder.embed(sample.clone(), TextKind::Document).await?;
    let secs = start.elapsed().as_secs_f64();
    let total = server_texts.len() + tool_texts.len();
    println!(
        "{} texts in {:.2} s = {:.0} texts/s; the whole catalog ({} texts) would take ~{:.0} s",
        sample.len(),
        secs,
        sample.len() as f64 / secs,
        total,
        total as f64 * secs / sample.len() as f64
    );
    store.close().await;
    Ok(())
}

/// A catalog of `n` servers made by repeating the real one with renamed ids and slightly moved
/// vectors, so the index and scan sizes are real and the rankings non-trivial.
fn synthetic(index: &SearchIndex, n: usize) -> Arc<SearchIndex> {
    let real = index.len().max(1);
    let mut servers: Vec<ServerRecord> = Vec::with_capacity(n);
    for i in 0..n {
        let mut r = index.record((i % real) as u32).clone();
        r.id = format!("{}~{i}", r.id);
        r.repository = None;
        servers.push(r);
    }
    let mut big = SearchIndex::build(servers);
    if let Some(d) = index.dense() {
        let dims = d.dims();
        let mut dense = DenseIndex {
            servers: Quantized::new(dims),
            tools: Quantized::new(dims),
            ..DenseIndex::default()
        };
        // SearchIndex::build sorts by id; map each synthetic doc back to its source record.
        let source: std::collections::HashMap<&str, u32> =
            (0..real).map(|i| (index.record(i as u32).id.as_str(), i as u32)).collect();
        let mut tools_of: Vec<Vec<usize>> = vec![Vec::new(); real];
        for (t, (doc, _)) in d.tool_owner.iter().enumerate() {
            tools_of[*doc as usize].push(t);
        }
        for doc in 0..big.len() {
            let id = &big.record(doc as u32).id;
            let (orig, copy) = id.rsplit_once('~').unwrap_or((id, "0"));
            let src = source.get(orig).copied().unwrap_or(0);
            let jitter = copy.parse::<usize>().unwrap_or(0);
            dense.servers.push(&nudge(&d.servers.get(src as usize), jitter));
            for &t in &tools_of[src as usize] {
                dense.tools.push(&nudge(&d.tools.get(t), jitter));
                dense.tool_owner.push((doc as u32, d.tool_owner[t].1));
            }
        }
        big.attach_dense(dense);
    }
    Arc::new(big)
}

fn nudge(v: &[f32], seed: usize) -> Vec<f32> {
    let out: Vec<f32> = v
        .iter()
        .enumerate()
        .map(|(i, x)| x + 0.01 * (((i * 31 + seed * 17) % 13) as f32 - 6.0) / 6.0)
        .collect();
    let n = out.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-9);
    out.iter().map(|x| x / n).collect()
}
