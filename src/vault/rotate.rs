//! Key rotation in step with running services, and `vault rewrap`.
//!
//! Two rules keep every credential readable by every running service at every moment:
//! 1. a credential is re-wrapped under a key only once every live lease reports that key readable;
//! 2. a key leaves the keyring only through prune, when no credential names it and no live lease
//!    seals with it.
//!
//! Rotation of a file keyring, each step durable before the next:
//! 1. the writing key is kept in `vault.keys/`, and the new key is added there: readable, not
//!    writing; wait until every live service reports it (each reloads its files every heartbeat);
//! 2. `vault.key` is replaced by the new key; wait until every live service seals with it;
//! 3. every credential under another key is re-wrapped, row by row, each update applied only if
//!    the row still has the wrap that was read (a value re-sealed meanwhile is left as it is).
//!
//! A crash anywhere leaves a keyring that opens every row: at worst an unused key in
//! `vault.keys/`, or rows still under the previous key, which stays kept. `vault rewrap` finishes
//! step 3; `vault prune` (`status.rs`) removes kept keys that nothing uses any more.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use chrono::Utc;
use uuid::Uuid;

use super::keyring::{self, KeyringSource};
use super::{MasterKey, Vault, VaultError};
use crate::store::{Lease, Store};

/// How rotation waits and batches.
#[derive(Debug, Clone)]
pub struct RotateSettings {
    /// The longest wait for running services to follow one step.
    pub wait: Duration,
    /// How often the leases are read while waiting.
    pub poll: Duration,
    /// Credentials re-wrapped per transaction.
    pub batch: u32,
}

impl Default for RotateSettings {
    fn default() -> Self {
        Self { wait: Duration::from_secs(120), poll: Duration::from_millis(200), batch: 500 }
    }
}

/// What a rotation did.
#[derive(Debug, Clone)]
pub struct RotateReport {
    /// The key that wrote before.
    pub previous: String,
    /// The key that writes now.
    pub writing: String,
    pub rewrapped: u64,
    /// Live services that followed every step.
    pub services: usize,
    /// Where the writing key and the kept previous key are.
    pub key_file: std::path::PathBuf,
    pub kept_file: std::path::PathBuf,
    /// Services that had not switched to the new writing key when the wait ended (their rows
    /// stay under the previous key, still kept; `vault rewrap` moves them later).
    pub lagging: Vec<String>,
}

/// Rotates a file keyring to `next` (see the module doc), holding the data dir's key lock.
pub async fn rotate(
    store: &dyn Store,
    vault: &Vault,
    next: MasterKey,
    settings: &RotateSettings,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<RotateReport, VaultError> {
    let Some(dir) = vault.source().and_then(KeyringSource::dir).map(Path::to_owned) else {
        return Err(VaultError::Coordination(
            "only a keyring kept in the data dir can be rotated in place; with ENCRYPTION_KEY, set \
             NEW_ENCRYPTION_KEY"
                .to_owned(),
        ));
    };
    let _lock = keyring::lock(&dir)?;
    let now = Utc::now();
    if let Some(l) = store.leases().await?.iter().find(|l| l.is_live(now) && l.key_source == "env") {
        return Err(VaultError::Coordination(format!(
            "service {} takes its keys from ENCRYPTION_KEY, fixed when it started, so it could not open \
             credentials re-wrapped under a new key file. Stop it first, or rotate through its \
             environment (see `dynamcp vault rotate --help`). Nothing was changed.",
            l.describe()
        )));
    }
    vault.reload()?;
    let current = vault.ring().writing.clone();
    let previous = current.id().to_owned();
    let next_id = next.id().to_owned();
    if next_id == previous {
        return Err(VaultError::Coordination("the new key is the current key; nothing to rotate".to_owned()));
    }

    // Step 1: both keys kept; the new one readable everywhere before anything uses it.
    let kept_file = keyring::keep_key(&dir, &current)?;
    keyring::keep_key(&dir, &next)?;
    vault.add_key(next);
    progress(&format!("added key {next_id} to the keyring as readable"));
    let readable = |l: &Lease| l.readable_key_ids.contains(&next_id);
    let services = wait_for_services(store, settings, progress, &format!("load key {next_id}"), &readable)
        .await
        .map_err(|e| {
            VaultError::Coordination(format!(
                "{e}. Nothing was re-wrapped and the key that writes is unchanged; the new key waits, \
                 unused, in {} (`dynamcp vault prune` removes it)",
                keyring::kept_key_path(&dir, &next_id).display()
            ))
        })?;

    // Step 2: the new key writes.
    let next_key = vault.ring().keys.get(&next_id).cloned().ok_or_else(|| {
        VaultError::Coordination(format!("key {next_id} vanished from the keyring in memory"))
    })?;
    let key_file = keyring::set_writing_key(&dir, &next_key)?;
    vault.reload()?;
    // The database's key too: services starting from now on must open the new one.
    super::lease::record_writing_key(store, &next_id).await?;
    progress(&format!("key {next_id} now seals new credentials; the previous key {previous} stays readable"));
    let writing = |l: &Lease| l.writing_key_id == next_id;
    let lagging =
        match wait_for_services(store, settings, progress, &format!("seal with key {next_id}"), &writing)
            .await
        {
            Ok(_) => Vec::new(),
            Err(e) => {
                progress(&format!(
                    "{e}; continuing: what they seal stays under key {previous}, which is kept"
                ));
                live_leases(store).await?.iter().filter(|l| !writing(l)).map(Lease::describe).collect()
            }
        };

    // Step 3: every row under an older key moves to the new one. A value sealed just before a
    // service switched keys may commit after the first pass: a second pass, a moment later,
    // catches it (one later still stays under the previous key, kept, until `vault rewrap`).
    let mut rewrapped = rewrap_rows(store, vault, &next_id, settings).await?;
    tokio::time::sleep(settings.poll).await;
    rewrapped += rewrap_rows(store, vault, &next_id, settings).await?;
    Ok(RotateReport { previous, writing: next_id, rewrapped, services, key_file, kept_file, lagging })
}

/// Re-wraps every credential under `target` (a key of `vault`'s keyring) once every live service
/// can open it: `vault rewrap` (target: the writing key) and rotation through the environment
/// (target: `NEW_ENCRYPTION_KEY`). Returns how many rows changed.
pub async fn rewrap_all(
    store: &dyn Store,
    vault: &Vault,
    target: &str,
    settings: &RotateSettings,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<u64, VaultError> {
    let _lock = vault.source().and_then(KeyringSource::dir).map(keyring::lock).transpose()?;
    vault.reload()?;
    if !vault.has_key(target) {
        return Err(VaultError::Coordination(format!("key {target} is not in the keyring")));
    }
    let readable = |l: &Lease| l.readable_key_ids.iter().any(|id| id == target);
    wait_for_services(store, settings, progress, &format!("load key {target}"), &readable).await.map_err(
        |e| {
            VaultError::Coordination(format!(
                "{e}. Nothing was re-wrapped; every credential still opens with the key it had"
            ))
        },
    )?;
    let rewrapped = rewrap_rows(store, vault, target, settings).await?;
    // Every row is under `target` now: services starting from now on must open it.
    super::lease::record_writing_key(store, target).await?;
    Ok(rewrapped)
}

async fn rewrap_rows(
    store: &dyn Store,
    vault: &Vault,
    target: &str,
    settings: &RotateSettings,
) -> Result<u64, VaultError> {
    let mut total = 0;
    let mut idle = 0;
    loop {
        let batch = store.credentials_not_sealed_by(target, settings.batch).await?;
        if batch.is_empty() {
            return Ok(total);
        }
        let items = batch.iter().map(|c| vault.rewrap(c, target)).collect::<Result<Vec<_>, _>>()?;
        let changed = store.rewrap_credentials(&items).await?;
        total += changed;
        // Rows re-sealed between the read and the update are read again; a service still sealing
        // under an older key would keep this going, hence the bound.
        idle = if changed == 0 { idle + 1 } else { 0 };
        if idle > 50 {
            return Err(VaultError::Coordination(format!(
                "credentials keep being sealed under a key other than {target}; re-wrapped {total} so far. \
                 Check `dynamcp vault status` for a service sealing with an older key"
            )));
        }
        if changed == 0 {
            tokio::time::sleep(settings.poll).await;
        }
    }
}

pub(super) async fn live_leases(store: &dyn Store) -> Result<Vec<Lease>, VaultError> {
    let now = Utc::now();
    Ok(store.leases().await?.into_iter().filter(|l| l.is_live(now)).collect())
}

/// Waits until every live lease satisfies `ok`, returning how many are live. A lease that renews
/// twice after this wait first saw it without satisfying `ok` cannot: its second report comes from
/// a reload that began after the wait did (a lease from the environment cannot reload at all).
/// Counting renewals instead of comparing times keeps clocks out of it.
async fn wait_for_services(
    store: &dyn Store,
    settings: &RotateSettings,
    progress: &(dyn Fn(&str) + Sync),
    what: &str,
    ok: &(dyn Fn(&Lease) -> bool + Sync),
) -> Result<usize, VaultError> {
    let deadline = Instant::now() + settings.wait;
    let mut first_seen: HashMap<Uuid, i64> = HashMap::new();
    let mut announced = false;
    loop {
        let live = live_leases(store).await?;
        let mut waiting = Vec::new();
        for l in live.iter().filter(|l| !ok(l)) {
            let first = *first_seen.entry(l.holder).or_insert(l.renewals);
            let settled = if l.key_source == "env" { l.renewals > 0 } else { l.renewals >= first + 2 };
            if settled {
                return Err(VaultError::Coordination(cannot_follow(l, what)));
            }
            waiting.push(l.describe());
        }
        if waiting.is_empty() {
            return Ok(live.len());
        }
        if Instant::now() >= deadline {
            return Err(VaultError::Coordination(format!(
                "gave up after {} s waiting for {} to {what} (a service that stopped without releasing \
                 its lease counts until the lease expires)",
                settings.wait.as_secs(),
                waiting.join(", ")
            )));
        }
        if !announced {
            progress(&format!(
                "waiting for {} running service(s) to {what}: {}",
                waiting.len(),
                waiting.join(", ")
            ));
            announced = true;
        }
        tokio::time::sleep(settings.poll).await;
    }
}

fn cannot_follow(l: &Lease, what: &str) -> String {
    if l.key_source == "env" {
        format!(
            "service {} cannot {what}: it takes its keys from ENCRYPTION_KEY and ENCRYPTION_KEY_PREVIOUS, \
             fixed when it started. Restart it with that key in ENCRYPTION_KEY_PREVIOUS (or as \
             ENCRYPTION_KEY, the current key moving to ENCRYPTION_KEY_PREVIOUS), or stop it, and run \
             this again",
            l.describe()
        )
    } else {
        format!(
            "service {} cannot {what}: it reloaded its key files twice without finding it, so it does \
             not use this data dir's keyring. Stop it, or run this command with its data dir",
            l.describe()
        )
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::store::{SecretKind, SqliteStore};
    use crate::vault::{Binding, ServiceLease, prune, status};

    async fn sqlite(dir: &Path) -> Arc<dyn Store> {
        let url = format!("sqlite://{}", dir.join("test.db").display());
        Arc::new(SqliteStore::connect(&url, crate::store::SqliteSync::Normal, 4).await.unwrap())
    }

    async fn seal_some(store: &dyn Store, vault: &Vault, n: usize) -> Vec<(Uuid, String, String)> {
        let session = store.create_session("").await.unwrap();
        let mut sent = Vec::new();
        let mut items = Vec::new();
        for i in 0..n {
            let (key, value) = (format!("KEY_{i}"), format!("value-{i}"));
            let binding =
                Binding { session_id: session.id, server: "slack", key: &key, kind: SecretKind::Env };
            items.push(vault.seal(binding, value.as_bytes()).unwrap());
            sent.push((session.id, key, value));
        }
        store.put_credentials(session.id, &items).await.unwrap();
        sent
    }

    async fn assert_all_open(store: &dyn Store, vault: &Vault, sent: &[(Uuid, String, String)]) {
        for (session, key, value) in sent {
            let rows = store.credentials(*session).await.unwrap();
            let row = rows.iter().find(|c| &c.key == key).unwrap();
            assert_eq!(vault.open_sealed(row).unwrap().expose(), value.as_bytes(), "{key}");
        }
    }

    fn quiet(_: &str) {}

    fn fast() -> RotateSettings {
        RotateSettings { wait: Duration::from_secs(20), poll: Duration::from_millis(20), batch: 3 }
    }

    #[tokio::test]
    async fn rotation_keeps_the_old_key_until_prune_and_a_crash_midway_leaves_every_row_readable() {
        let dir = tempfile::tempdir().unwrap();
        let store = sqlite(dir.path()).await;
        let source = KeyringSource::new(None, None, dir.path()).unwrap();
        let vault = Vault::open(store.as_ref(), source.clone()).await.unwrap();
        let first = vault.key_id();
        let sent = seal_some(store.as_ref(), &vault, 7).await;

        // A crash after step 2 (new key writing, nothing re-wrapped): a fresh open reads every row.
        let next = MasterKey::generate();
        let next_id = next.id().to_owned();
        keyring::keep_key(dir.path(), &vault.ring().writing).unwrap();
        keyring::keep_key(dir.path(), &next).unwrap();
        keyring::set_writing_key(dir.path(), &next).unwrap();
        let reopened = Vault::open(store.as_ref(), source.clone()).await.unwrap();
        assert_eq!(reopened.key_id(), next_id);
        assert_all_open(store.as_ref(), &reopened, &sent).await;
        // The running vault picks the switch up on reload, still opening the old rows.
        assert!(vault.reload().unwrap());
        assert_eq!(vault.key_id(), next_id);
        let later = seal_some(store.as_ref(), &vault, 2).await;

        // `vault rewrap` finishes the job in batches.
        assert_eq!(rewrap_all(store.as_ref(), &reopened, &next_id, &fast(), &quiet).await.unwrap(), 7);
        let counts = store.master_key_ids().await.unwrap();
        assert_eq!(counts, vec![(next_id.clone(), 9)]);

        // Prune removes the old key now that nothing uses it; the writing key is never pruned.
        assert!(prune(store.as_ref(), &reopened, Some(&next_id)).await.is_err());
        let pruned = prune(store.as_ref(), &reopened, None).await.unwrap();
        assert_eq!(pruned.removed, vec![first.clone()]);
        let fresh = Vault::open(store.as_ref(), source.clone()).await.unwrap();
        assert!(!fresh.has_key(&first));
        assert_all_open(store.as_ref(), &fresh, &sent).await;
        assert_all_open(store.as_ref(), &fresh, &later).await;

        // A full rotation with nobody holding the store.
        let report = rotate(store.as_ref(), &fresh, MasterKey::generate(), &fast(), &quiet).await.unwrap();
        assert_eq!((report.previous.as_str(), report.rewrapped, report.services), (next_id.as_str(), 9, 0));
        let status = status(store.as_ref(), &source).await.unwrap();
        let summary: Vec<(bool, i64)> = status.keys.iter().map(|k| (k.writing, k.credentials)).collect();
        assert_eq!(summary.iter().filter(|(w, n)| *w && *n == 9).count(), 1, "{status:?}");
        assert!(
            status
                .keys
                .iter()
                .any(|k| k.id == next_id && !k.writing && k.credentials == 0 && k.file.is_some())
        );
        store.close().await;
    }

    #[tokio::test]
    async fn a_rewrap_never_overwrites_a_value_sealed_meanwhile() {
        let dir = tempfile::tempdir().unwrap();
        let store = sqlite(dir.path()).await;
        let (old, new) = (MasterKey::generate(), MasterKey::generate());
        let new_id = new.id().to_owned();
        let vault = Vault::with_keys(old, []);
        let sent = seal_some(store.as_ref(), &vault, 1).await;
        let row = store.credentials(sent[0].0).await.unwrap().remove(0);
        vault.add_key(new);
        let stale = vault.rewrap(&row, &new_id).unwrap();
        // The service replaces the value (a new data key) before the rewrap lands.
        let binding =
            Binding { session_id: row.session_id, server: "slack", key: &row.key, kind: SecretKind::Env };
        store.put_credentials(row.session_id, &[vault.seal(binding, b"replaced").unwrap()]).await.unwrap();
        assert_eq!(store.rewrap_credentials(&[stale]).await.unwrap(), 0);
        let now = store.credentials(row.session_id).await.unwrap().remove(0);
        assert_eq!(vault.open_sealed(&now).unwrap().expose(), b"replaced");
        store.close().await;
    }

    #[tokio::test]
    async fn rotation_waits_for_running_services_and_refuses_those_that_cannot_follow() {
        let dir = tempfile::tempdir().unwrap();
        let store = sqlite(dir.path()).await;
        let source = KeyringSource::new(None, None, dir.path()).unwrap();
        let service_vault = Arc::new(Vault::open(store.as_ref(), source.clone()).await.unwrap());
        let sent = seal_some(store.as_ref(), &service_vault, 4).await;
        let service = ServiceLease::acquire(store.clone(), "file", Duration::from_millis(50)).await.unwrap();
        service.renew(&service_vault).await.unwrap();
        service.start(service_vault.clone());

        // The command line's own vault over the same files: the service follows each step.
        let cli_vault = Vault::open(store.as_ref(), source.clone()).await.unwrap();
        let report =
            rotate(store.as_ref(), &cli_vault, MasterKey::generate(), &fast(), &quiet).await.unwrap();
        assert_eq!((report.services, report.rewrapped), (1, 4));
        assert!(report.lagging.is_empty());
        assert_eq!(service_vault.key_id(), report.writing);
        assert_all_open(store.as_ref(), &service_vault, &sent).await;

        // A service on the environment's keys cannot load a new key file: refused, nothing changed.
        let env_key = MasterKey::generate();
        let env_vault = Vault::with_keys(MasterKey::parse(&env_key.to_base64()).unwrap(), []);
        let env_service = ServiceLease::acquire(store.clone(), "env", Duration::from_secs(60)).await.unwrap();
        env_service.renew(&env_vault).await.unwrap();
        let before = std::fs::read_to_string(dir.path().join(crate::vault::KEY_FILE)).unwrap();
        let err =
            rotate(store.as_ref(), &cli_vault, MasterKey::generate(), &fast(), &quiet).await.unwrap_err();
        let holder = env_service.holder().await.to_string();
        assert!(err.to_string().contains(&holder) && err.to_string().contains("ENCRYPTION_KEY"), "{err}");
        assert_eq!(std::fs::read_to_string(dir.path().join(crate::vault::KEY_FILE)).unwrap(), before);
        // Nor may anything be re-wrapped under a key it does not report.
        let err =
            rewrap_all(store.as_ref(), &cli_vault, &cli_vault.key_id(), &fast(), &quiet).await.unwrap_err();
        assert!(err.to_string().contains("Nothing was re-wrapped"), "{err}");
        env_service.release().await;
        service.release().await;
        assert!(store.leases().await.unwrap().is_empty());
        store.close().await;
    }
}
