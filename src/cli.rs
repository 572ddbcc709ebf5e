//! The subcommands other than `serve`: catalog import, search and eval. Glue between the command
//! line and the domain modules; prints for humans (or JSON) and returns `anyhow` errors.
#![allow(clippy::print_stdout, reason = "a CLI prints its results")]

use std::collections::HashSet;
use std::sync::Arc;

use anyhow::Context;
use serde_json::json;

use crate::catalog::TextKind;
use crate::catalog::{self, Catalog, CatalogError, SearchConfig};
use crate::config::{
    DoctorArgs, EvalArgs, ImportArgs, PackArgs, RuntimeArgs, SearchArgs, StoreArgs, VerifyArgs,
};
use crate::progress::Progress;
use crate::runtime::Runtime;
use crate::store::{self, Store};

async fn open(args: &StoreArgs) -> anyhow::Result<(Arc<dyn Store>, Catalog)> {
    eprintln!("{}", where_from(args));
    let store = store::open(&args.settings()).await.context("could not open the store")?;
    let catalog =
        crate::state::open_catalog(store.clone(), args).await.context("could not load the catalog")?;
    Ok((store, catalog))
}

/// One line saying which data and which model a command uses (both may come from defaults that
/// depend on the directory it runs in).
fn where_from(args: &StoreArgs) -> String {
    let data = match &args.database_url {
        Some(url) if url.starts_with("postgres") => "data: PostgreSQL (DATABASE_URL)".to_owned(),
        _ => format!("data: {}", args.data_dir.display()),
    };
    let model = if args.no_model || args.embeddings != crate::config::EmbeddingSource::Local {
        String::new()
    } else if args.model_dir.join("config.json").is_file() {
        format!("; model: {}", args.model_dir.display())
    } else {
        format!(
            "; no model at {}: lexical search only (scripts/setup.sh --service fetches it; DYNAMCP_MODEL_DIR points at it)",
            args.model_dir.display()
        )
    };
    format!("dynamcp: {data}{model}")
}

/// The store, catalog and a runtime (no language model), as `serve` opens them.
async fn open_runtime(
    store_args: &StoreArgs,
    runtime: &RuntimeArgs,
) -> anyhow::Result<(Arc<dyn Store>, Arc<Catalog>, Arc<Runtime>)> {
    let (store, catalog) = open(store_args).await?;
    let catalog = Arc::new(catalog);
    let vault = vault_on(store.as_ref(), store_args).await?;
    let runtime = Runtime::new(
        catalog.clone(),
        store.clone(),
        Arc::new(vault),
        None,
        runtime.settings(&store_args.data_dir),
    );
    Ok((store, catalog, runtime))
}

/// `dynamcp catalog verify --ids A,B | --top N`: each server installed and started once here,
/// one after another, with no time budget but the runtime's own start timeouts.
pub async fn verify(args: VerifyArgs) -> anyhow::Result<()> {
    let (store, catalog, runtime) = open_runtime(&args.store, &args.runtime).await?;
    if let Some(why) =
        runtime.sandbox_status().sandbox().is_none().then(|| runtime.sandbox_status().describe())
    {
        anyhow::bail!("servers are verified only inside the sandbox, and there is none here: {why}");
    }
    let index = catalog.index();
    let records: Vec<catalog::ServerRecord> = match args.top {
        Some(n) => {
            let mut all: Vec<&catalog::ServerRecord> =
                (0..index.len() as u32).map(|d| index.record(d)).filter(|r| r.runnable()).collect();
            all.sort_by_key(|r| std::cmp::Reverse(r.monthly_use()));
            all.into_iter().take(n).cloned().collect()
        }
        None => args
            .ids
            .iter()
            .map(|id| index.get(id).cloned().with_context(|| format!("{id:?} is not in the catalog")))
            .collect::<anyhow::Result<_>>()?,
    };
    let mut started = 0;
    for record in &records {
        let v = runtime.verify_with(record, std::time::Duration::from_secs(3600), !args.again).await;
        started += usize::from(v.verdict == catalog::verified::Verdict::Started);
        if args.json {
            println!("{}", serde_json::to_string(&v)?);
        } else {
            println!("{:<40} {:<18} {:>7} ms  {}", record.id, v.verdict.as_str(), v.ms, v.summary());
        }
    }
    if !args.json {
        println!("{started} of {} started with no credentials", records.len());
    }
    runtime.shutdown().await;
    store.close().await;
    Ok(())
}

/// `dynamcp catalog import [--replace] FILE...`. Each file is one transaction; exits non-zero if
/// any file had nothing valid (that file changed nothing).
pub async fn import(args: ImportArgs) -> anyhow::Result<()> {
    let store = store::open(&args.store.settings()).await.context("could not open the store")?;
    let embedder = crate::state::load_embedder(&args.store).await;
    // Nothing is searched here: no index is built.
    let catalog = Catalog::open_unloaded(store.clone(), embedder, args.store.dense_backend)
        .context("could not load the catalog")?;
    let mut failed = 0;
    let mut keep = HashSet::new();
    for path in &args.files {
        let progress = Progress::new(format!("importing {}", path.display()));
        match catalog.import_file(path, &|d, t| progress.update(d, t)).await {
            Ok(report) => {
                println!(
                    "{}: {} — {} servers ({} new, {} updated, {} unchanged), {} credential instructions, {} invalid",
                    report.path,
                    report.format,
                    report.servers,
                    report.inserted,
                    report.updated,
                    report.unchanged,
                    report.instructions,
                    report.issues.len()
                );
                for issue in &report.issues {
                    println!("  {}[{}]: {}", report.path, issue.index, issue.reason);
                }
                keep.extend(report.ids);
            }
            Err(CatalogError::NothingValid { path, issues }) => {
                failed += 1;
                eprintln!("{path}: no valid entry; nothing was imported from it");
                for issue in issues.iter().take(50) {
                    eprintln!("  {path}[{}]: {}", issue.index, issue.reason);
                }
            }
            Err(e) => {
                failed += 1;
                eprintln!("error: {e}");
            }
        }
    }
    if args.replace {
        if failed == 0 {
            let removed = catalog.retain(&keep).await?;
            println!("--replace: removed {removed} servers that are in none of the files");
        } else {
            println!("--replace: skipped, because {failed} file(s) failed");
        }
    }
    // Services on this store see the import and load it themselves; what would cost each of
    // them time, embedding the new texts, is done once here.
    let progress = Progress::new("embedding new catalog texts");
    let ids: Vec<String> = keep.into_iter().collect();
    catalog.embed_new(&ids, &|d, t| progress.update(d, t)).await?;
    store.close().await;
    if failed > 0 {
        anyhow::bail!("{failed} of {} file(s) imported nothing", args.files.len());
    }
    Ok(())
}

/// `dynamcp search "query"`.
pub async fn search(args: SearchArgs) -> anyhow::Result<()> {
    let (store, catalog) = open(&args.store).await?;
    let index = catalog.index();
    let found = catalog.search(&args.query, usize::from(args.limit), SearchConfig::default()).await?;
    if args.json {
        let results: Vec<_> = found
            .hits
            .iter()
            .map(|h| {
                let r = index.record(h.doc);
                json!({"id": r.id, "name": r.name, "score": h.score, "need": found.needs[h.need],
                       "matched_tools": h.matched_tools, "runnable": r.runnable()})
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&json!({"needs": found.needs, "results": results}))?);
    } else {
        if found.needs.len() > 1 {
            println!("needs: {}", found.needs.join(" | "));
        }
        for (i, h) in found.hits.iter().enumerate() {
            let r = index.record(h.doc);
            let runnable = if r.runnable() { "runnable" } else { "catalog only" };
            println!("{:>2}. {} ({}) — {runnable}, score {:.4}", i + 1, r.name, r.id, h.score);
            if !h.matched_tools.is_empty() {
                println!("    tools: {}", h.matched_tools.join(", "));
            }
        }
    }
    store.close().await;
    Ok(())
}

/// `dynamcp eval FILE [--ablation | --plans [--misses]]`.
pub async fn eval(args: EvalArgs) -> anyhow::Result<()> {
    if args.plans {
        return eval_plans(args).await;
    }
    let queries = catalog::eval::load(&args.file)?;
    let (store, catalog) = open(&args.store).await?;
    let index = catalog.index();
    let mut full = SearchConfig::default();
    if let Some(w) = &args.weights {
        let v: Vec<f32> = w
            .split(',')
            .map(|x| x.trim().parse())
            .collect::<Result<_, _>>()
            .context("--weights takes five numbers")?;
        anyhow::ensure!(v.len() == 5, "--weights takes five numbers: lexical,dense,tools,whole,named");
        full.weights =
            catalog::search::Weights { lexical: v[0], dense: v[1], tools: v[2], whole: v[3], named: v[4] };
    }
    const DEFAULT: &str = "hybrid + tools + decomposition + intents (default)";
    let mut configs = vec![(DEFAULT, full)];
    if args.ablation {
        let off = SearchConfig {
            lexical: false,
            dense: false,
            tools: false,
            decompose: false,
            intents: false,
            named: false,
            ..full
        };
        configs = vec![
            ("BM25 only", SearchConfig { lexical: true, ..off }),
            ("dense only", SearchConfig { dense: true, ..off }),
            ("hybrid", SearchConfig { lexical: true, dense: true, ..off }),
            ("hybrid + tools", SearchConfig { lexical: true, dense: true, tools: true, ..off }),
            ("hybrid + tools + decomposition", SearchConfig { intents: false, ..full }),
            (DEFAULT, full),
            ("default + named services ranked on their own", SearchConfig { named: true, ..full }),
            ("default without priors", SearchConfig { priors: false, ..full }),
        ];
    }
    println!("{} queries from {}; catalog of {} servers", queries.len(), args.file.display(), index.len());
    println!("{:<60} {:>6} {:>6} {:>6} {:>6}", "configuration", "R@1", "R@5", "R@10", "MRR");
    let mut last = None;
    for (name, config) in configs {
        let mut found = Vec::with_capacity(queries.len());
        for q in &queries {
            found.push(catalog.search(&q.query, 10, config).await?);
        }
        let r = catalog::eval::evaluate(&index, &queries, &found);
        println!(
            "{name:<60} {:>6.3} {:>6.3} {:>6.3} {:>6.3}",
            r.recall_at_1, r.recall_at_5, r.recall_at_10, r.mrr
        );
        if config == full {
            last = Some(r);
        }
    }
    if let Some(r) = last {
        if r.unknown_ids > 0 {
            println!("warning: {} labelled ids are not in the catalog", r.unknown_ids);
        }
        println!("\nmisses of the default configuration (needs not in the top 5): {}", r.misses.len());
        for m in &r.misses {
            let rank = m.rank.map_or("not in top 10".to_owned(), |r| format!("rank {r}"));
            println!("  {} [{}] {rank}: {}\n      got: {}", m.query_id, m.need, m.query, m.got.join(", "));
        }
    }
    store.close().await;
    Ok(())
}

/// `dynamcp eval FILE --plans`: the offline planner's choices against labelled steps, choosing
/// among the launch kinds this machine runs (npm, PyPI, docker, remote), as `serve` would.
async fn eval_plans(args: EvalArgs) -> anyhow::Result<()> {
    use crate::planner::{ChoiceSettings, OfflinePlanner, Planner, eval};
    let cases = eval::load(&args.file)?;
    let (store, catalog, runtime) = if args.verify {
        let (store, catalog, runtime) = open_runtime(&args.store, &args.runtime).await?;
        (store, catalog, Some(runtime))
    } else {
        let (store, catalog) = open(&args.store).await?;
        (store, Arc::new(catalog), None)
    };
    let defaults = crate::config::RuntimeArgs::default();
    let launcher = crate::runtime::launch::Launcher::new(
        &defaults.runtimes,
        std::env::var_os("PATH"),
        &[],
        |_| None,
        std::env::temp_dir(),
    );
    let runnable = launcher.kinds();
    let catalog_size = catalog.index().len();
    print_requirements(&cases, &catalog, args.misses);
    if let Some(path) = &args.requirements_out {
        write_requirements(&cases, &catalog, path)?;
    }
    let mut rules = vec![("choice step (default)", false)];
    if args.baseline {
        rules.push(("relevance only (before the choice step)", true));
    }
    for (name, relevance_only) in rules {
        let settings =
            ChoiceSettings { runnable: runnable.clone(), relevance_only, ..ChoiceSettings::default() };
        let planner = OfflinePlanner::new(catalog.clone(), settings);
        let started = std::time::Instant::now();
        let mut plans = Vec::with_capacity(cases.len());
        for case in &cases {
            plans.push(planner.plan(&case.request, &[]).await?);
        }
        let elapsed = started.elapsed();
        if let Some(runtime) = &runtime {
            let verifier: Arc<dyn crate::planner::Verifier> = Arc::new(runtime.clone());
            let index = catalog.index();
            for plan in &mut plans {
                let wait = std::time::Duration::from_secs(3600);
                crate::planner::verify::verify_plan(plan, &index, verifier.as_ref(), wait).await;
            }
        }
        let r = {
            let index = catalog.index();
            eval::score(&cases, &plans, |id| index.get(id).and_then(|s| s.launch_key()))
        };
        if let (Some(path), false) = (&args.plans_out, relevance_only) {
            let mut out = String::new();
            for (case, plan) in cases.iter().zip(&plans) {
                out.push_str(&serde_json::to_string(&serde_json::json!({"id": case.id, "plan": plan}))?);
                out.push('\n');
            }
            std::fs::write(path, out).with_context(|| format!("could not write {}", path.display()))?;
        }
        println!(
            "{name}: {} requests ({} steps, {} with an expert, {} that no server should serve) from {}; catalog of {catalog_size} servers; runnable here: {runnable:?}",
            r.requests,
            r.steps,
            r.expert_steps,
            r.nonsense,
            args.file.display(),
        );
        println!("  precision {:.3} (of {} chosen servers)", r.precision, r.chosen);
        println!("  coverage  {:.3} (steps with an acceptable server chosen)", r.coverage);
        if r.expert_steps > 0 {
            println!(
                "  expert    {:.3} (steps whose expert's server was chosen; {:.3} its very record, not another that launches the same package)",
                r.expert, r.expert_record
            );
        }
        if r.nonsense > 0 {
            println!("  refused   {:.3} (requests no server should serve, with nothing chosen)", r.refused);
        }
        if runtime.is_some() {
            print_starts(&plans);
        }
        println!(
            "  planning: {:.1} ms a request",
            elapsed.as_secs_f64() * 1000.0 / cases.len().max(1) as f64
        );
        if args.misses && !relevance_only {
            print_plan_misses(&r, &cases, &plans);
        }
    }
    store.close().await;
    Ok(())
}

/// What dynamcp asks of each labelled expert's server against what it needs (the plan set's
/// `starts_with`), whatever server the plan chose.
fn print_requirements(cases: &[crate::planner::eval::PlanCase], catalog: &Catalog, misses: bool) {
    let index = catalog.index();
    let r = crate::planner::eval::score_requirements(cases, |id| index.get(id).cloned());
    if r.steps == 0 {
        return;
    }
    let share = |n: usize| n as f64 / r.steps as f64;
    println!(
        "requirements of the experts' servers ({} labelled steps whose expert is in the catalog):",
        r.steps
    );
    println!("  exact     {:.3} (asked set equals needed set, variables and files)", share(r.exact));
    println!(
        "  before requirement kinds: exact {:.3}, {} asked that have a default or are optional",
        share(r.before_exact),
        r.before_defaults_asked
    );
    println!(
        "  {} needed not asked, {} asked not needed, {} asked that have a default or are optional",
        r.missing, r.extra, r.defaults_asked
    );
    println!(
        "  {} needed paths filled with a place in the server's sandbox; {} steps also need a login or a file no variable carries",
        r.paths_filled, r.other_needs
    );
    if misses {
        for m in &r.misses {
            println!("  - {} {}: missing {:?}, extra {:?}", m.case, m.server, m.missing, m.extra);
        }
    }
}

/// Every value dynamcp asks of each labelled expert's server, with what the user is shown.
fn write_requirements(
    cases: &[crate::planner::eval::PlanCase],
    catalog: &Catalog,
    path: &std::path::Path,
) -> anyhow::Result<()> {
    use crate::catalog::requirements::classify;
    use crate::planner::instructions;
    let index = catalog.index();
    let mut out = String::new();
    for case in cases {
        for record in case.steps.iter().filter_map(|s| s.expert.as_deref()).filter_map(|id| index.get(id)) {
            for spec in record.credentials.iter().filter(|c| instructions::is_asked(c, record)) {
                let line = json!({
                    "case": case.id, "server": record.id, "server_name": record.name,
                    "repository": record.repository, "key": spec.name, "kind": classify(spec).kind_label(),
                    "description": instructions::description(spec, record),
                    "instructions": instructions::instructions(spec, record),
                });
                out.push_str(&serde_json::to_string(&line)?);
                out.push('\n');
            }
        }
    }
    std::fs::write(path, out).with_context(|| format!("could not write {}", path.display()))
}

/// How many chosen servers start here, after verification replaced those that did not.
fn print_starts(plans: &[crate::planner::Plan]) {
    use crate::catalog::verified::Verdict;
    let chosen: Vec<_> =
        plans.iter().flat_map(|p| p.needs.iter().filter_map(|n| n.server.as_ref())).collect();
    let count =
        |verdict| chosen.iter().filter(|s| s.start.as_ref().map(|v| v.verdict) == Some(verdict)).count();
    let (started, credentials, unchecked) =
        (count(Verdict::Started), count(Verdict::NeedsCredentials), count(Verdict::Unchecked));
    let replaced: usize = plans.iter().flat_map(|p| &p.needs).map(|n| n.did_not_start.len()).sum();
    let emptied = plans
        .iter()
        .flat_map(|p| &p.needs)
        .filter(|n| n.server.is_none() && !n.did_not_start.is_empty())
        .count();
    println!(
        "  starts here {:.3} ({started} started, {credentials} need their credentials to start, {unchecked} not checked, of {} chosen; {replaced} replaced; {emptied} steps left without a server)",
        (started + credentials) as f64 / chosen.len().max(1) as f64,
        chosen.len()
    );
}

fn print_plan_misses(
    r: &crate::planner::eval::PlanReport,
    cases: &[crate::planner::eval::PlanCase],
    plans: &[crate::planner::Plan],
) {
    println!("\nchosen servers no step accepts: {}", r.wrong.len());
    for m in &r.wrong {
        println!("  {}: {} — chose {}", m.case, m.request, m.chosen.join(", "));
        if let Some(plan) = cases.iter().position(|c| c.id == m.case).map(|i| &plans[i]) {
            for n in &plan.needs {
                let server = n.server.as_ref().map_or("-", |s| s.id.as_str());
                println!("      [{}] → {server}", n.need);
            }
        }
    }
    println!("\nsteps without an acceptable server: {}", r.uncovered.len());
    for m in &r.uncovered {
        println!("  {} [{}]: {} — chose {}", m.case, m.step, m.request, m.chosen.join(", "));
    }
}

/// `dynamcp catalog pack-embeddings`: the reproducible source of the shipped embedding pack.
/// Vectors already in the data dir's cache for this exact model are reused; the shipped pack
/// itself never is.
pub async fn pack_embeddings(args: PackArgs) -> anyhow::Result<()> {
    let store = store::open(&args.store.settings()).await.context("could not open the store")?;
    let embedder = crate::state::load_embedder(&args.store)
        .await
        .context("the pack needs the embedding model (scripts/setup.sh --service fetches it)")?;
    let (_, parsed) = catalog::import::read_bytes("default catalog", catalog::DEFAULT_CATALOG)?;
    let index = catalog::SearchIndex::build(parsed.servers);
    let (servers, tools) = index.embedding_texts();
    let texts: Vec<&str> = servers.iter().chain(tools.iter().map(|(_, t)| t)).map(String::as_str).collect();
    let progress = Progress::new("embedding the default catalog");
    let (hashes, cached) =
        catalog::cached_vectors(store.as_ref(), embedder.as_ref(), &texts, false, &|d, t| {
            progress.update(d, t)
        })
        .await?;
    let entries: Vec<(String, Vec<f32>)> =
        hashes.iter().filter_map(|h| cached.get(h).map(|b| (h.clone(), catalog::from_bytes(b)))).collect();
    let probe_texts: Vec<String> = servers.iter().take(8).cloned().collect();
    let probe_vectors = embedder.embed(probe_texts.clone(), TextKind::Document).await?;
    let probes: Vec<(String, Vec<f32>)> = probe_texts.into_iter().zip(probe_vectors).collect();
    let bytes = catalog::pack::encode(embedder.id(), embedder.dims(), &probes, &entries)?;
    std::fs::write(&args.out, &bytes).with_context(|| format!("could not write {}", args.out.display()))?;
    println!(
        "wrote {} ({} vectors, {} bytes) for model {}",
        args.out.display(),
        entries.len(),
        bytes.len(),
        embedder.id()
    );
    store.close().await;
    Ok(())
}

/// Opens the store and the vault the way `serve` does, for the `vault` subcommands.
async fn open_vault(args: &StoreArgs) -> anyhow::Result<(Arc<dyn Store>, crate::vault::Vault)> {
    let store = store::open(&args.settings()).await.context("could not open the store")?;
    let vault = vault_on(store.as_ref(), args).await?;
    Ok((store, vault))
}

/// The vault over an open store, with the keys `serve` would use.
async fn vault_on(store: &dyn Store, args: &StoreArgs) -> anyhow::Result<crate::vault::Vault> {
    let source = crate::state::keyring_source(args)?;
    crate::vault::Vault::open(store, source).await.context("could not open the vault")
}

fn rotate_settings(args: &crate::config::RotateArgs) -> crate::vault::RotateSettings {
    crate::vault::RotateSettings {
        wait: std::time::Duration::from_secs(args.wait_secs),
        ..Default::default()
    }
}

/// `dynamcp vault rotate`: see [`crate::vault::rotate`] (key files) and
/// [`crate::vault::rewrap_all`] (`ENCRYPTION_KEY` with `NEW_ENCRYPTION_KEY`).
pub async fn vault_rotate(args: crate::config::RotateArgs) -> anyhow::Result<()> {
    use crate::vault::MasterKey;
    let (store, vault) = open_vault(&args.store).await?;
    let progress = |line: &str| eprintln!("{line}");
    let next = match crate::config::secret_from_env("NEW_ENCRYPTION_KEY") {
        Some(text) => Some(MasterKey::parse(&text).context("NEW_ENCRYPTION_KEY")?),
        None => None,
    };
    if vault.source_kind() == "file" {
        let next = next.unwrap_or_else(MasterKey::generate);
        let report =
            crate::vault::rotate(store.as_ref(), &vault, next, &rotate_settings(&args), &progress).await;
        store.close().await;
        let report = report?;
        println!(
            "re-wrapped {} credential(s); the new key (id {}) is in {}, followed by {} running service(s)",
            report.rewrapped,
            report.writing,
            report.key_file.display(),
            report.services
        );
        println!(
            "the previous key (id {}) stays in {}: backups made before now need it. Remove it with \
             `dynamcp vault prune` once they do not",
            report.previous,
            report.kept_file.display()
        );
        for service in &report.lagging {
            println!(
                "service {service} still sealed with the previous key; run `dynamcp vault rewrap` later"
            );
        }
        return Ok(());
    }
    let Some(next) = next else {
        store.close().await;
        anyhow::bail!(
            "ENCRYPTION_KEY is set, so the keys live in your configuration, which dynamcp does not change. \
             To rotate: generate a key (`openssl rand -base64 32`), restart the service with it as \
             ENCRYPTION_KEY and the current key in ENCRYPTION_KEY_PREVIOUS, then run `dynamcp vault rewrap` \
             with the same settings. With the service stopped, `dynamcp vault rotate` with the new key in \
             NEW_ENCRYPTION_KEY re-wraps everything at once"
        );
    };
    let (previous, next_id) = (vault.key_id(), next.id().to_owned());
    if next_id == previous {
        store.close().await;
        anyhow::bail!("the new key is the current key; nothing to rotate");
    }
    vault.add_key(next);
    let count =
        crate::vault::rewrap_all(store.as_ref(), &vault, &next_id, &rotate_settings(&args), &progress).await;
    store.close().await;
    println!(
        "re-wrapped {} credential(s) under NEW_ENCRYPTION_KEY (id {next_id}); set ENCRYPTION_KEY to it, \
         with the current key (id {previous}) in ENCRYPTION_KEY_PREVIOUS until backups no longer need it",
        count?
    );
    Ok(())
}

/// `dynamcp vault rewrap`: every credential under the writing key.
pub async fn vault_rewrap(args: crate::config::RotateArgs) -> anyhow::Result<()> {
    let (store, vault) = open_vault(&args.store).await?;
    let progress = |line: &str| eprintln!("{line}");
    let target = vault.key_id();
    let count =
        crate::vault::rewrap_all(store.as_ref(), &vault, &target, &rotate_settings(&args), &progress).await;
    store.close().await;
    println!("re-wrapped {} credential(s) under the writing key (id {target})", count?);
    Ok(())
}

/// `dynamcp vault status [--json]`.
pub async fn vault_status(args: crate::config::VaultStatusArgs) -> anyhow::Result<()> {
    let store = store::open(&args.store.settings()).await.context("could not open the store")?;
    let source = crate::state::keyring_source(&args.store)?;
    let status = crate::vault::status(store.as_ref(), &source).await;
    store.close().await;
    let status = status?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&status)?);
    } else {
        print!("{status}");
    }
    Ok(())
}

/// `dynamcp vault prune [--key-id ID]`.
pub async fn vault_prune(args: crate::config::PruneArgs) -> anyhow::Result<()> {
    let (store, vault) = open_vault(&args.store).await?;
    let report = crate::vault::prune(store.as_ref(), &vault, args.key_id.as_deref()).await;
    store.close().await;
    print!("{}", report?);
    Ok(())
}

/// `dynamcp keys create|list|revoke`.
pub async fn keys(command: crate::config::KeysCommand) -> anyhow::Result<()> {
    use crate::config::KeysCommand;
    match command {
        KeysCommand::Create(args) => {
            let tenant = crate::access::Tenant::parse(&args.tenant).map_err(anyhow::Error::msg)?;
            let store = store::open(&args.store.settings()).await.context("could not open the store")?;
            let (record, key) = crate::access::create_key(store.as_ref(), &tenant, &args.label).await?;
            store.close().await;
            eprintln!("created key {} for tenant {tenant}; it is shown once, store it now:", record.id);
            println!("{}", key.expose());
        }
        KeysCommand::List(args) => {
            let store = store::open(&args.store.settings()).await.context("could not open the store")?;
            for k in store.list_api_keys().await? {
                let state = k
                    .revoked_at
                    .map_or_else(|| "active".to_owned(), |at| format!("revoked {}", at.to_rfc3339()));
                println!(
                    "{}  {:<24} {:<20} created {}  {state}",
                    k.id,
                    k.tenant,
                    k.label,
                    k.created_at.to_rfc3339()
                );
            }
            store.close().await;
        }
        KeysCommand::Revoke(args) => {
            let store = store::open(&args.store.settings()).await.context("could not open the store")?;
            let revoked = store.revoke_api_key(args.id).await?;
            let left = store.active_api_keys().await;
            store.close().await;
            if !revoked {
                anyhow::bail!("no active key with id {}", args.id);
            }
            eprintln!("revoked key {}", args.id);
            if matches!(left, Ok(0)) {
                eprintln!(
                    "that was the last active key: the service is locked (every /api/ and /mcp request \
                     answers 401) until you create one with `dynamcp keys create`"
                );
            }
        }
    }
    Ok(())
}

/// One line of `dynamcp doctor`: what was checked, whether it is fine, and what it found or what
/// to do.
struct Check {
    what: &'static str,
    state: CheckState,
    detail: String,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum CheckState {
    Ok,
    /// Works, with a limit worth knowing.
    Note,
    /// Must be fixed.
    Fix,
}

/// The version a program prints for `--version` (first line), or `None` when it does not run.
fn version_of(program: &str) -> Option<String> {
    let out = std::process::Command::new(program).arg("--version").output().ok()?;
    let text = if out.stdout.is_empty() { out.stderr } else { out.stdout };
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&text).lines().next().unwrap_or_default().trim().to_owned())
}

/// The first `major.minor` in `text`.
fn major_minor(text: &str) -> Option<(u32, u32)> {
    let start = text.find(|c: char| c.is_ascii_digit())?;
    let mut parts = text[start..].split(|c: char| !c.is_ascii_digit());
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

/// `dynamcp doctor`: checks the setup `serve` needs and says what to fix.
pub async fn doctor(args: DoctorArgs) -> anyhow::Result<()> {
    use CheckState::{Fix, Note, Ok as Fine};
    let mut checks = Vec::new();
    let mut check = |what, state, detail: String| checks.push(Check { what, state, detail });

    let data = &args.store.data_dir;
    let probe = data.join(".doctor-probe");
    let writable = std::fs::create_dir_all(data)
        .and_then(|()| std::fs::write(&probe, b"ok"))
        .and_then(|()| std::fs::remove_file(&probe));
    match writable {
        Ok(()) => check("data", Fine, format!("{} (writable)", data.display())),
        Err(e) => {
            check("data", Fix, format!("{} is not writable ({e}): set DYNAMCP_DATA_DIR", data.display()))
        }
    }
    match store::open(&args.store.settings()).await {
        Ok(store) => {
            let state = store.ping().await;
            match state {
                Ok(()) => check("database", Fine, store.backend().to_string()),
                Err(e) => check("database", Fix, format!("{} does not answer: {e}", store.backend())),
            }
            store.close().await;
        }
        Err(e) => check("database", Fix, format!("could not open it: {e}")),
    }
    match (args.store.no_model, crate::catalog::embed::LocalEmbedder::id_of(&args.store.model_dir)) {
        (true, _) => check("model", Note, "off (DYNAMCP_NO_MODEL): lexical search only".to_owned()),
        (false, Ok(_)) => check("model", Fine, args.store.model_dir.display().to_string()),
        (false, Err(_)) => {
            let looked: Vec<String> =
                crate::config::model_dir_candidates().iter().map(|p| p.display().to_string()).collect();
            check(
                "model",
                Fix,
                format!(
                    "no embedding model at {} (looked in {}): search is lexical only. Run scripts/setup.sh --service from a checkout, or set DYNAMCP_MODEL_DIR",
                    args.store.model_dir.display(),
                    looked.join(", ")
                ),
            )
        }
    }
    let wants = |r: &str| args.runtime.runtimes.iter().any(|x| x == r);
    if wants("npx") {
        match (version_of("node"), version_of("npx")) {
            (Some(node), Some(_)) if major_minor(&node).is_some_and(|(major, _)| major >= 18) => {
                check("npm servers", Fine, format!("node {node}, npx"))
            }
            (Some(node), Some(_)) => check(
                "npm servers",
                Fix,
                format!("node {node} is too old: most MCP servers need 18 or newer"),
            ),
            _ => check(
                "npm servers",
                Fix,
                "node and npx are not installed: install Node.js 18+ (npm servers need them)".to_owned(),
            ),
        }
    }
    if wants("uvx") {
        match (version_of("uvx"), version_of("python3")) {
            (Some(uv), Some(py)) if major_minor(&py).is_some_and(|v| v >= (3, 10)) => {
                check("PyPI servers", Fine, format!("{uv}, {py}"))
            }
            (Some(_), Some(py)) => {
                check("PyPI servers", Fix, format!("{py} is too old: MCP's SDK needs Python 3.10 or newer"))
            }
            (None, _) => {
                check("PyPI servers", Fix, "uvx is not installed: `python3 -m pip install uv`".to_owned())
            }
            (_, None) => check("PyPI servers", Fix, "python3 is not installed".to_owned()),
        }
    }
    if wants("docker") {
        match version_of("docker") {
            Some(v) => check("docker servers", Fine, v),
            None => check(
                "docker servers",
                Note,
                "docker is not installed: servers launched as images are skipped".to_owned(),
            ),
        }
    }
    let sandbox = crate::runtime::sandbox::Sandbox::detect(
        &args.runtime.sandbox_program,
        std::env::var_os("PATH").as_ref(),
    );
    match sandbox.sandbox() {
        Some(_) => check("sandbox", Fine, sandbox.describe()),
        None => check("sandbox", Fix, format!("{}: no MCP server starts without it", sandbox.describe())),
    }
    match tokio::net::TcpListener::bind(args.addr).await {
        Ok(_) => check("port", Fine, format!("{} is free", args.addr)),
        Err(e) => check(
            "port",
            Fix,
            format!("cannot listen on {} ({e}): stop what uses it, or set DYNAMCP_ADDR", args.addr),
        ),
    }
    let key = ["ANTHROPIC_API_KEY", "OPENAI_API_KEY"]
        .into_iter()
        .find(|k| std::env::var_os(k).is_some_and(|v| !v.is_empty()));
    match key {
        Some(k) => check("language model", Fine, format!("{k} is set")),
        None => check(
            "language model",
            Note,
            "no key: plans come from the offline planner; runs need ANTHROPIC_API_KEY or OPENAI_API_KEY"
                .to_owned(),
        ),
    }

    let mut fixes = 0;
    for c in &checks {
        let tag = match c.state {
            Fine => "ok  ",
            Note => "note",
            Fix => {
                fixes += 1;
                "FIX "
            }
        };
        println!("{tag}  {:<15} {}", c.what, c.detail);
    }
    if fixes > 0 {
        anyhow::bail!("{fixes} thing{} to fix", if fixes == 1 { "" } else { "s" });
    }
    Ok(())
}
