//! What `dynamcp vault status` shows (the keyring, credentials per key, the services holding the
//! store) and `dynamcp vault prune`, which removes kept keys that nothing needs any more.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use chrono::Utc;
use serde::Serialize;

use super::keyring::{self, KeyringSource};
use super::rotate::live_leases;
use super::{Vault, VaultError};
use crate::store::Store;

/// One key in `vault status`.
#[derive(Debug, Clone, Serialize)]
pub struct KeyStatus {
    pub id: String,
    /// Seals new credentials.
    pub writing: bool,
    /// Held by the keyring (false: credentials name a key nobody has given this command).
    pub in_keyring: bool,
    /// Stored credentials whose data key it wraps.
    pub credentials: i64,
    /// Its file, for a file keyring.
    pub file: Option<String>,
}

/// One lease in `vault status`: the stored row, and whether it is live now.
#[derive(Debug, Clone, Serialize)]
pub struct LeaseStatus {
    #[serde(flatten)]
    pub lease: crate::store::Lease,
    pub live: bool,
}

/// `dynamcp vault status`.
#[derive(Debug, Clone, Serialize)]
pub struct VaultStatus {
    /// `file` or `env`.
    pub source: &'static str,
    pub data_dir: Option<String>,
    /// Why the keyring could not be loaded, if it could not.
    pub keyring_error: Option<String>,
    pub writing_key_id: Option<String>,
    pub keys: Vec<KeyStatus>,
    pub services: Vec<LeaseStatus>,
}

/// The keyring, how many credentials each key wraps (keys missing from the keyring included) and
/// the services holding the store. Works with a broken keyring too, to show what is missing.
pub async fn status(store: &dyn Store, source: &KeyringSource) -> Result<VaultStatus, VaultError> {
    let counts: BTreeMap<String, i64> = store.master_key_ids().await?.into_iter().collect();
    let (ring, keyring_error) = match source.load(false) {
        Ok((ring, _)) => (Some(ring), None),
        Err(VaultError::MissingKey { .. }) if counts.is_empty() => {
            (None, Some("no key yet: the service generates vault.key when it first starts".to_owned()))
        }
        Err(e) => (None, Some(e.to_string())),
    };
    let mut files: BTreeMap<String, String> = BTreeMap::new();
    if let Some(dir) = source.dir() {
        for (path, key) in keyring::kept_keys(dir).unwrap_or_default() {
            files.insert(key.id().to_owned(), path.display().to_string());
        }
    }
    let writing = ring.as_ref().map(|r| r.writing.id().to_owned());
    if let (Some(dir), Some(id)) = (source.dir(), &writing) {
        files.insert(id.clone(), dir.join(super::KEY_FILE).display().to_string());
    }
    let mut ids: Vec<String> = counts.keys().cloned().collect();
    ids.extend(ring.iter().flat_map(|r| r.keys.keys().cloned()));
    ids.sort_unstable();
    ids.dedup();
    let keys = ids
        .into_iter()
        .map(|id| KeyStatus {
            writing: writing.as_deref() == Some(id.as_str()),
            in_keyring: ring.as_ref().is_some_and(|r| r.keys.contains_key(&id)),
            credentials: counts.get(&id).copied().unwrap_or(0),
            file: files.get(&id).cloned(),
            id,
        })
        .collect();
    let now = Utc::now();
    let services = store
        .leases()
        .await?
        .into_iter()
        .map(|lease| LeaseStatus { live: lease.is_live(now), lease })
        .collect();
    Ok(VaultStatus {
        source: source.kind(),
        data_dir: source.dir().map(|d| d.display().to_string()),
        keyring_error,
        writing_key_id: writing,
        keys,
        services,
    })
}

/// What `vault prune` did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PruneReport {
    /// Key files removed.
    pub removed: Vec<String>,
    /// Keys kept, and why.
    pub kept: Vec<(String, String)>,
    /// Keys of an environment keyring that nothing uses: they may leave ENCRYPTION_KEY_PREVIOUS.
    pub unused_previous: Vec<String>,
}

/// `dynamcp vault prune [--key-id ID]`: removes kept key files (never the writing key) that no
/// credential uses and no live service seals with. After removing a file it checks again, and
/// puts the key back if a credential sealed with it appeared meanwhile. An environment keyring is
/// only reported on: its variables are the operator's to change.
pub async fn prune(store: &dyn Store, vault: &Vault, only: Option<&str>) -> Result<PruneReport, VaultError> {
    let mut report = PruneReport::default();
    let dir = vault.source().and_then(KeyringSource::dir).map(Path::to_owned);
    // Held from before anything is read, so no rotation adds a key this prune has not seen.
    let _lock = dir.as_deref().map(keyring::lock).transpose()?;
    vault.reload()?;
    let counts: BTreeMap<String, i64> = store.master_key_ids().await?.into_iter().collect();
    let writing = vault.key_id();
    if only == Some(writing.as_str()) {
        return Err(VaultError::Coordination(format!(
            "key {writing} seals new credentials; rotate to another key before pruning it"
        )));
    }
    let Some(dir) = dir else {
        for id in vault.key_ids().into_iter().filter(|id| *id != writing && only.is_none_or(|o| o == id)) {
            match counts.get(&id).copied().unwrap_or(0) {
                0 => report.unused_previous.push(id),
                n => report.kept.push((id, format!("{n} credential(s) still use it"))),
            }
        }
        return Ok(report);
    };
    let kept = keyring::kept_keys(&dir)?;
    if let Some(id) = only
        && !kept.iter().any(|(_, k)| k.id() == id)
    {
        return Err(VaultError::Coordination(format!(
            "there is no kept key {id} in {}",
            keyring::keys_dir(&dir).display()
        )));
    }
    let live = live_leases(store).await?;
    let recorded = store.fact(super::lease::WRITING_KEY_FACT).await?;
    for (path, key) in kept {
        let id = key.id().to_owned();
        if id == writing || only.is_some_and(|o| o != id) {
            continue;
        }
        let used = counts.get(&id).copied().unwrap_or(0);
        if used > 0 {
            let why = format!("{used} credential(s) still use it; `dynamcp vault rewrap` moves them");
            report.kept.push((id, why));
        } else if let Some(l) = live.iter().find(|l| l.writing_key_id == id) {
            report.kept.push((id, format!("service {} still seals with it", l.describe())));
        } else if recorded.as_deref() == Some(id.as_str()) {
            report.kept.push((
                id,
                "the database records it as its key; `dynamcp vault rotate` moves that".to_owned(),
            ));
        } else {
            keyring::remove_kept_key(&dir, &id)?;
            if store.credential_sealed_by(&id).await?.is_some() {
                key.write_file(&path)?;
                report.kept.push((id, "a credential sealed with it appeared meanwhile".to_owned()));
            } else {
                report.removed.push(id);
            }
        }
    }
    Ok(report)
}

/// The text `dynamcp vault status` prints.
impl fmt::Display for VaultStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.data_dir {
            Some(dir) => {
                writeln!(f, "keyring: key files in {dir} (vault.key writes; vault.keys/ keeps the others)")?
            }
            None => writeln!(f, "keyring: ENCRYPTION_KEY writes; ENCRYPTION_KEY_PREVIOUS keeps the others")?,
        }
        if let Some(e) = &self.keyring_error {
            writeln!(f, "  the keyring does not load: {e}")?;
        }
        for k in &self.keys {
            let role = match (k.in_keyring, k.writing) {
                (false, _) => "MISSING",
                (true, true) => "writes",
                (true, false) => "reads",
            };
            let file = k.file.as_deref().map(|p| format!("  {p}")).unwrap_or_default();
            writeln!(f, "  key {}  {role:<7} {:>6} credential(s){file}", k.id, k.credentials)?;
        }
        if self.keys.iter().any(|k| !k.in_keyring && k.credentials > 0) {
            writeln!(f, "  credentials under a MISSING key cannot be opened until that key is restored")?;
        }
        writeln!(f, "services holding the store: {}", self.services.iter().filter(|s| s.live).count())?;
        for LeaseStatus { lease: s, live } in &self.services {
            writeln!(
                f,
                "  {} pid {} on {} ({} keys): writes {}, reads {}; {} {}",
                s.holder,
                s.pid,
                s.host,
                s.key_source,
                if s.writing_key_id.is_empty() { "-" } else { &s.writing_key_id },
                s.readable_key_ids.join(" "),
                if *live { "lease until" } else { "lease expired at" },
                s.expires_at.to_rfc3339()
            )?;
        }
        Ok(())
    }
}

/// The text `dynamcp vault prune` prints.
impl fmt::Display for PruneReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for id in &self.removed {
            writeln!(f, "removed key {id}")?;
        }
        for (id, why) in &self.kept {
            writeln!(f, "kept key {id}: {why}")?;
        }
        for id in &self.unused_previous {
            writeln!(f, "no credential uses key {id}: it may leave ENCRYPTION_KEY_PREVIOUS")?;
        }
        if self.removed.is_empty() && self.kept.is_empty() && self.unused_previous.is_empty() {
            writeln!(f, "nothing to prune: the keyring holds only the writing key")?;
        }
        Ok(())
    }
}
