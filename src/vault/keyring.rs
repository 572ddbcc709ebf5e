//! The keyring: every master key the vault can open credentials with, and the one key it seals new
//! ones with. Each stored credential names the key id that wraps its data key, so a row opens with
//! any keyring that holds that key.
//!
//! Keys come from one of two places, never both:
//! - the environment: `ENCRYPTION_KEY` writes, `ENCRYPTION_KEY_PREVIOUS` (comma-separated) only
//!   reads. Fixed for the life of a process.
//! - files in the data dir, reloaded while the service runs:
//!   - `vault.key`: the writing key (generated on first start when nothing is stored yet);
//!   - `vault.keys/<id>.key`: every other key still kept: a new key that a rotation has made
//!     readable before it writes, the previous keys until `dynamcp vault prune` removes them.
//!     Rotation copies the writing key here before `vault.key` changes, so a key leaves the data
//!     dir only through prune, which first checks that no credential still uses it.
//!
//! Every file is written whole (temp file, fsync, rename, directory fsync) with mode 0600, in a
//! directory of mode 0700. Commands that change the files hold `vault.keys/.lock`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{KEY_FILE, KeySource, MasterKey, Secret, VaultError};

/// The directory of kept keys inside the data dir.
pub const KEYS_DIR: &str = "vault.keys";
const LOCK_FILE: &str = ".lock";

/// Where a keyring's keys come from.
#[derive(Clone)]
pub enum KeyringSource {
    /// `ENCRYPTION_KEY` (writes) and `ENCRYPTION_KEY_PREVIOUS` (reads).
    Env { writing: Secret, previous: Option<Secret> },
    /// `vault.key` and `vault.keys/` in this data dir.
    Dir(PathBuf),
}

impl std::fmt::Debug for KeyringSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeyringSource::Env { .. } => f.write_str("KeyringSource::Env([redacted])"),
            KeyringSource::Dir(dir) => write!(f, "KeyringSource::Dir({})", dir.display()),
        }
    }
}

impl KeyringSource {
    /// The environment's keys when `ENCRYPTION_KEY` is set, else the data dir's key files.
    pub fn new(
        env_key: Option<&Secret>,
        env_previous: Option<&Secret>,
        data_dir: &Path,
    ) -> Result<Self, VaultError> {
        let previous = env_previous.filter(|p| !p.is_blank()).cloned();
        match env_key.filter(|k| !k.is_blank()) {
            Some(writing) => Ok(KeyringSource::Env { writing: writing.clone(), previous }),
            None if previous.is_some() => Err(VaultError::PreviousWithoutKey),
            None => Ok(KeyringSource::Dir(data_dir.to_owned())),
        }
    }

    /// `env` or `file`, as the service's lease records it.
    pub fn kind(&self) -> &'static str {
        match self {
            KeyringSource::Env { .. } => "env",
            KeyringSource::Dir(_) => "file",
        }
    }

    /// The data dir, for a file keyring.
    pub fn dir(&self) -> Option<&Path> {
        match self {
            KeyringSource::Env { .. } => None,
            KeyringSource::Dir(dir) => Some(dir),
        }
    }

    /// Loads every key. A file keyring without `vault.key` gets a new one if `may_generate`
    /// (nothing is stored yet), else fails: a lost key is never silently replaced.
    pub(super) fn load(&self, may_generate: bool) -> Result<(Keyring, KeySource), VaultError> {
        match self {
            KeyringSource::Env { writing, previous } => {
                let mut ring = Keyring::new(MasterKey::parse(writing)?);
                for text in previous.iter().flat_map(|p| p.expose().split(',')) {
                    let text = Secret::new(text.trim());
                    if !text.is_blank() {
                        ring.add(MasterKey::parse(&text).map_err(|_| VaultError::BadPreviousKey)?);
                    }
                }
                Ok((ring, KeySource::Env))
            }
            KeyringSource::Dir(dir) => {
                let (writing, source) = MasterKey::load(None, dir, may_generate)?;
                let mut ring = Keyring::new(writing);
                for (_, key) in kept_keys(dir)? {
                    ring.add(key);
                }
                Ok((ring, source))
            }
        }
    }
}

/// The keys in memory: the writing one and every readable one (the writing one included).
#[derive(Clone)]
pub(super) struct Keyring {
    pub writing: Arc<MasterKey>,
    pub keys: BTreeMap<String, Arc<MasterKey>>,
}

impl Keyring {
    pub fn new(writing: MasterKey) -> Self {
        let writing = Arc::new(writing);
        let keys = BTreeMap::from([(writing.id().to_owned(), writing.clone())]);
        Self { writing, keys }
    }

    pub fn add(&mut self, key: MasterKey) {
        self.keys.entry(key.id().to_owned()).or_insert_with(|| Arc::new(key));
    }

    /// `newer`'s writing key, and every key either holds: a running vault never forgets a key.
    pub fn merged(&self, newer: Keyring) -> Keyring {
        let mut keys = self.keys.clone();
        for (id, key) in newer.keys {
            keys.entry(id).or_insert(key);
        }
        Keyring { writing: newer.writing, keys }
    }
}

/// `<data dir>/vault.keys`.
pub fn keys_dir(data_dir: &Path) -> PathBuf {
    data_dir.join(KEYS_DIR)
}

/// `<data dir>/vault.keys/<id>.key`.
pub fn kept_key_path(data_dir: &Path, id: &str) -> PathBuf {
    keys_dir(data_dir).join(format!("{id}.key"))
}

/// The keys in `vault.keys/`, by file. A file that vanishes while being read (a concurrent prune)
/// is skipped; one that does not parse is an error.
pub(super) fn kept_keys(data_dir: &Path) -> Result<Vec<(PathBuf, MasterKey)>, VaultError> {
    let dir = keys_dir(data_dir);
    let fail = |path: &Path, e: std::io::Error| VaultError::KeyFile {
        path: path.display().to_string(),
        reason: e.to_string(),
    };
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(fail(&dir, e)),
    };
    let mut keys = Vec::new();
    for entry in entries {
        let path = entry.map_err(|e| fail(&dir, e))?.path();
        if path.extension().is_none_or(|ext| ext != "key") {
            continue;
        }
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(fail(&path, e)),
        };
        let key = MasterKey::parse(&Secret::new(text)).map_err(|_| VaultError::KeyFile {
            path: path.display().to_string(),
            reason: "not a key (32 bytes as base64 or hex)".to_owned(),
        })?;
        keys.push((path, key));
    }
    keys.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(keys)
}

/// Keeps `key` in `vault.keys/<id>.key` (written durably; left alone if already there).
pub(super) fn keep_key(data_dir: &Path, key: &MasterKey) -> Result<PathBuf, VaultError> {
    let path = kept_key_path(data_dir, key.id());
    if let Ok(text) = std::fs::read_to_string(&path)
        && MasterKey::parse(&Secret::new(text)).is_ok_and(|k| k.id() == key.id())
    {
        return Ok(path);
    }
    create_private_dir(&keys_dir(data_dir))?;
    key.write_file(&path)?;
    Ok(path)
}

/// Makes `key` the writing key: replaces `vault.key` whole. Callers keep it in `vault.keys/` first.
pub(super) fn set_writing_key(data_dir: &Path, key: &MasterKey) -> Result<PathBuf, VaultError> {
    let path = data_dir.join(KEY_FILE);
    key.write_file(&path)?;
    Ok(path)
}

/// Removes `vault.keys/<id>.key` durably.
pub(super) fn remove_kept_key(data_dir: &Path, id: &str) -> Result<(), VaultError> {
    let path = kept_key_path(data_dir, id);
    std::fs::remove_file(&path)
        .map_err(|e| VaultError::KeyFile { path: path.display().to_string(), reason: e.to_string() })?;
    super::key::sync_dir(&keys_dir(data_dir))
}

/// Holds `vault.keys/.lock` (released when the file is dropped): one key-changing command at a
/// time per data dir, so a prune never removes a key a rotation has just added.
pub(super) fn lock(data_dir: &Path) -> Result<std::fs::File, VaultError> {
    let dir = keys_dir(data_dir);
    create_private_dir(&dir)?;
    let path = dir.join(LOCK_FILE);
    let fail =
        |e: std::io::Error| VaultError::KeyFile { path: path.display().to_string(), reason: e.to_string() };
    let file =
        std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(&path).map_err(fail)?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(VaultError::Busy { path: path.display().to_string() }),
        Err(std::fs::TryLockError::Error(e)) => Err(fail(e)),
    }
}

fn create_private_dir(dir: &Path) -> Result<(), VaultError> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder
        .create(dir)
        .map_err(|e| VaultError::KeyFile { path: dir.display().to_string(), reason: e.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_keyrings_read_previous_keys_and_write_with_the_first() {
        let (a, b, c) = (MasterKey::generate(), MasterKey::generate(), MasterKey::generate());
        let previous = Secret::new(format!(" {}, {} ,", b.to_base64().expose(), c.to_base64().expose()));
        let dir = tempfile::tempdir().unwrap();
        let source = KeyringSource::new(Some(&a.to_base64()), Some(&previous), dir.path()).unwrap();
        assert_eq!(source.kind(), "env");
        let (ring, from) = source.load(false).unwrap();
        assert_eq!(from, KeySource::Env);
        assert_eq!(ring.writing.id(), a.id());
        let mut ids = vec![a.id(), b.id(), c.id()];
        ids.sort_unstable();
        assert_eq!(ring.keys.keys().map(String::as_str).collect::<Vec<_>>(), ids);
        // A malformed previous key is refused without echoing it; previous keys need a writing one.
        let bad = KeyringSource::new(Some(&a.to_base64()), Some(&Secret::new("nope")), dir.path()).unwrap();
        assert!(matches!(bad.load(false), Err(VaultError::BadPreviousKey)));
        assert!(matches!(
            KeyringSource::new(None, Some(&previous), dir.path()),
            Err(VaultError::PreviousWithoutKey)
        ));
        assert!(format!("{source:?}").contains("redacted"));
    }

    #[test]
    fn file_keyrings_write_with_vault_key_and_read_kept_keys() {
        let dir = tempfile::tempdir().unwrap();
        let source = KeyringSource::new(None, None, dir.path()).unwrap();
        let (first, from) = source.load(true).unwrap();
        assert!(matches!(from, KeySource::Generated(_)));
        let next = MasterKey::generate();
        let kept = keep_key(dir.path(), &next).unwrap();
        assert_eq!(keep_key(dir.path(), &next).unwrap(), kept, "keeping a kept key again changes nothing");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&kept).unwrap().permissions().mode() & 0o777, 0o600);
            let mode = std::fs::metadata(keys_dir(dir.path())).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o700);
        }
        let (ring, _) = source.load(false).unwrap();
        assert_eq!(ring.writing.id(), first.writing.id());
        assert!(ring.keys.contains_key(next.id()) && ring.keys.len() == 2);

        // The switch: the old key is kept, then vault.key names the new one.
        keep_key(dir.path(), &first.writing).unwrap();
        set_writing_key(dir.path(), &next).unwrap();
        let (ring, _) = source.load(false).unwrap();
        assert_eq!(ring.writing.id(), next.id());
        assert_eq!(ring.keys.len(), 2);

        // A merged (running) keyring keeps a key whose file was pruned.
        remove_kept_key(dir.path(), first.writing.id()).unwrap();
        let (reloaded, _) = source.load(false).unwrap();
        assert_eq!(reloaded.keys.len(), 1);
        let merged = ring.merged(reloaded);
        assert_eq!(merged.writing.id(), next.id());
        assert!(merged.keys.contains_key(first.writing.id()));

        // Stray files are ignored; a corrupt kept key is an error that names the file only.
        std::fs::write(keys_dir(dir.path()).join("notes.txt"), "hello").unwrap();
        assert_eq!(source.load(false).unwrap().0.keys.len(), 1);
        std::fs::write(keys_dir(dir.path()).join("broken.key"), "hello").unwrap();
        let err = source.load(false).err().unwrap().to_string();
        assert!(err.contains("broken.key") && err.contains("not a key"), "{err}");
    }

    #[test]
    fn one_key_changing_command_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let held = lock(dir.path()).unwrap();
        assert!(matches!(lock(dir.path()), Err(VaultError::Busy { .. })));
        drop(held);
        lock(dir.path()).unwrap();
    }
}
