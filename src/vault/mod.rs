//! Credential handling: the [`Secret`] wrapper every value travels in (no `Debug`, `Display` or log
//! line can print one), and envelope encryption of stored values.
//!
//! Each credential gets its own random data key; the value is sealed with AES-256-GCM under that
//! key, and the data key is sealed (wrapped) under a master key, whose id the row records. Both use
//! random 96-bit nonces and carry the credential's `(session, server, key, kind)` as associated
//! data, so a row copied onto another credential does not open.
//!
//! The master keys form a keyring (`keyring.rs`): one writes, older ones still open what they
//! wrapped. Rotation (`rotate.rs`) re-wraps data keys only, in step with every running service,
//! which holds a lease on the store (`lease.rs`) saying which keys it can open; `status.rs` shows
//! the keyring and prunes it. This module never touches HTTP or the configuration.

mod key;
mod keyring;
pub mod lease;
mod rotate;
mod secret;
mod status;

use std::sync::{Arc, PoisonError, RwLock};

use aes_gcm::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use chrono::Utc;
use uuid::Uuid;
use zeroize::Zeroizing;

pub use key::{KEY_FILE, KeySource, MasterKey};
pub use keyring::{KEYS_DIR, KeyringSource, kept_key_path, keys_dir};
pub use lease::ServiceLease;
pub use rotate::{RotateReport, RotateSettings, rewrap_all, rotate};
pub use secret::{Secret, SecretBytes};
pub use status::{KeyStatus, LeaseStatus, PruneReport, VaultStatus, prune, status};

use crate::store::{CredentialStore, Rewrapped, SealedCredential, SecretKind, StoreError};
use keyring::Keyring;

#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    #[error("ENCRYPTION_KEY must be 32 bytes, written as base64 or as 64 hex digits")]
    BadKey,
    #[error("every key in ENCRYPTION_KEY_PREVIOUS must be 32 bytes, written as base64 or as 64 hex digits")]
    BadPreviousKey,
    #[error(
        "ENCRYPTION_KEY_PREVIOUS is set but ENCRYPTION_KEY is not: the environment's keyring needs its writing key"
    )]
    PreviousWithoutKey,
    #[error(
        "the vault key file {path} is missing but stored credentials need it; restore it or set \
         ENCRYPTION_KEY to the key that sealed them"
    )]
    MissingKey { path: String },
    #[error("cannot use the vault key file {path}: {reason}")]
    KeyFile { path: String, reason: String },
    #[error(
        "the master key (id {current}) is not the one that sealed {count} stored credential(s) \
         (key id {stored}){older}; restore that key: as ENCRYPTION_KEY or in ENCRYPTION_KEY_PREVIOUS, \
         or as the file vault.keys/{stored}.key in the data dir"
    )]
    WrongKey { current: String, stored: String, count: i64, older: String },
    /// Another service on this database seals with a key this one cannot open, or cannot open
    /// this one's: they would each store credentials the other cannot read.
    #[error(
        "this service's vault key (id {mine}) is not the one the other services on this database \
         use ({why}); every service on one database needs the same key: set ENCRYPTION_KEY to the \
         key the running services use (or, on one machine, give them the same data dir); nothing \
         was stored"
    )]
    NotTheDatabasesKey { mine: String, why: String },
    #[error("a stored credential ({server}/{key}) does not decrypt: wrong key or tampered row")]
    Undecryptable { server: String, key: String },
    #[error(
        "a stored credential ({server}/{key}) was sealed with master key id {id}, which this keyring \
         does not hold"
    )]
    NotInKeyring { server: String, key: String, id: String },
    #[error("another vault command holds {path}; wait for it to finish")]
    Busy { path: String },
    #[error("{0}")]
    Coordination(String),
    #[error("encryption failed")]
    Seal,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What a sealed value is bound to.
#[derive(Debug, Clone, Copy)]
pub struct Binding<'a> {
    pub session_id: Uuid,
    pub server: &'a str,
    pub key: &'a str,
    pub kind: SecretKind,
}

impl Binding<'_> {
    /// Associated data: unambiguous (JSON-encoded), and distinct for the value and its data key.
    fn aad(&self, part: &str) -> Vec<u8> {
        serde_json::to_vec(&[
            "dynamcp-vault-v1",
            part,
            &self.session_id.to_string(),
            self.server,
            self.key,
            self.kind.as_str(),
        ])
        .unwrap_or_default()
    }
}

/// The vault: seals credentials under the keyring's writing key, opens them with whichever key
/// wrapped them. A file keyring is reloaded while the service runs ([`Vault::reload`]); keys are
/// only ever added in memory, never forgotten.
pub struct Vault {
    source: Option<KeyringSource>,
    ring: RwLock<Keyring>,
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vault").field("writing", &self.key_id()).field("keys", &self.key_ids()).finish()
    }
}

impl Vault {
    /// A vault over one key, in memory only.
    pub fn new(master: MasterKey) -> Self {
        Self::with_keys(master, [])
    }

    /// A vault that writes with `writing` and also opens what `older` wrapped, in memory only.
    pub fn with_keys(writing: MasterKey, older: impl IntoIterator<Item = MasterKey>) -> Self {
        let mut ring = Keyring::new(writing);
        for key in older {
            ring.add(key);
        }
        Self { source: None, ring: RwLock::new(ring) }
    }

    fn ring(&self) -> std::sync::RwLockReadGuard<'_, Keyring> {
        self.ring.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// The writing key's id.
    pub fn key_id(&self) -> String {
        self.ring().writing.id().to_owned()
    }

    /// Every key id this vault can open, sorted.
    pub fn key_ids(&self) -> Vec<String> {
        self.ring().keys.keys().cloned().collect()
    }

    pub fn has_key(&self, id: &str) -> bool {
        self.ring().keys.contains_key(id)
    }

    /// Where the keys come from: `env`, `file`, or `memory`.
    pub fn source_kind(&self) -> &'static str {
        self.source.as_ref().map_or("memory", KeyringSource::kind)
    }

    pub fn source(&self) -> Option<&KeyringSource> {
        self.source.as_ref()
    }

    /// Opens the vault for a store: loads the keyring (generating `vault.key` when nothing is
    /// stored and no key is configured) and checks that it holds every key the stored credentials
    /// name, proving each with one real decryption, so a wrong key fails here and never yields
    /// garbage.
    pub async fn open(store: &dyn CredentialStore, source: KeyringSource) -> Result<Self, VaultError> {
        let stored = store.master_key_ids().await?;
        let (ring, from) = source.load(stored.is_empty())?;
        if let KeySource::Generated(path) = &from {
            tracing::warn!(
                path = %path.display(),
                "ENCRYPTION_KEY is not set: generated a vault key file (mode 0600). Back it up: \
                 credentials stored under it cannot be read without it. Set ENCRYPTION_KEY in production."
            );
        }
        if let Some((id, count)) = stored.iter().find(|(id, _)| !ring.keys.contains_key(id)) {
            let older: Vec<&str> =
                ring.keys.keys().map(String::as_str).filter(|k| *k != ring.writing.id()).collect();
            return Err(VaultError::WrongKey {
                current: ring.writing.id().to_owned(),
                stored: id.clone(),
                count: *count,
                older: if older.is_empty() {
                    String::new()
                } else {
                    format!(", nor is any older key of the keyring (ids {})", older.join(", "))
                },
            });
        }
        let vault = Self { source: Some(source), ring: RwLock::new(ring) };
        // One real decryption per key in use proves the key, not only its id.
        for (id, _) in &stored {
            if let Some(c) = store.credential_sealed_by(id).await? {
                vault.open_sealed(&c)?;
            }
        }
        Ok(vault)
    }

    /// Re-reads a file keyring: `vault.key` becomes the writing key, and keys new on disk become
    /// readable; keys already in memory stay. Returns whether anything changed. Environment and
    /// in-memory keyrings do not change.
    pub fn reload(&self) -> Result<bool, VaultError> {
        let Some(source @ KeyringSource::Dir(_)) = &self.source else { return Ok(false) };
        let (fresh, _) = source.load(false)?;
        let mut ring = self.ring.write().unwrap_or_else(PoisonError::into_inner);
        let changed = fresh.writing.id() != ring.writing.id()
            || fresh.keys.keys().any(|id| !ring.keys.contains_key(id));
        if changed {
            tracing::info!(writing = fresh.writing.id(), "reloaded the vault keyring");
            *ring = ring.merged(fresh);
        }
        Ok(changed)
    }

    /// Adds a readable key in memory (the command line, rotating to a key from the environment).
    pub fn add_key(&self, key: MasterKey) {
        self.ring.write().unwrap_or_else(PoisonError::into_inner).add(key);
    }

    /// The key that wrapped `c`'s data key; a file keyring is re-read once if it lacks it (a
    /// rotation may have added the key since the last reload).
    fn key_for(&self, c: &SealedCredential) -> Result<Arc<MasterKey>, VaultError> {
        if let Some(key) = self.ring().keys.get(&c.master_key_id) {
            return Ok(key.clone());
        }
        if let Err(e) = self.reload() {
            tracing::warn!(error = %e, "could not reload the vault keyring");
        }
        self.ring().keys.get(&c.master_key_id).cloned().ok_or_else(|| VaultError::NotInKeyring {
            server: c.server.clone(),
            key: c.key.clone(),
            id: c.master_key_id.clone(),
        })
    }

    /// Seals `value` for `binding` under a fresh data key, wrapped by the writing key.
    pub fn seal(&self, binding: Binding<'_>, value: &[u8]) -> Result<SealedCredential, VaultError> {
        metrics::counter!("dynamcp_vault_operations_total", "op" => "seal").increment(1);
        let data_key = Zeroizing::new(Aes256Gcm::generate_key(&mut OsRng).to_vec());
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        let ciphertext = Aes256Gcm::new_from_slice(&data_key)
            .map_err(|_| VaultError::Seal)?
            .encrypt(&nonce, Payload { msg: value, aad: &binding.aad("value") })
            .map_err(|_| VaultError::Seal)?;
        let writing = self.ring().writing.clone();
        let (wrapped_key, key_nonce) = wrap(&writing, binding, &data_key)?;
        Ok(SealedCredential {
            id: Uuid::new_v4(),
            session_id: binding.session_id,
            server: binding.server.to_owned(),
            key: binding.key.to_owned(),
            kind: binding.kind,
            ciphertext,
            nonce: nonce.to_vec(),
            wrapped_key,
            key_nonce,
            master_key_id: writing.id().to_owned(),
            updated_at: Utc::now(),
        })
    }

    fn unwrap_key(&self, c: &SealedCredential) -> Result<Zeroizing<Vec<u8>>, VaultError> {
        let undecryptable = || VaultError::Undecryptable { server: c.server.clone(), key: c.key.clone() };
        if c.key_nonce.len() != 12 || c.nonce.len() != 12 {
            return Err(undecryptable());
        }
        let master = self.key_for(c)?;
        let binding = binding_of(c);
        master
            .cipher()
            .decrypt(&nonce(&c.key_nonce), Payload { msg: &c.wrapped_key, aad: &binding.aad("data-key") })
            .map(Zeroizing::new)
            .map_err(|_| undecryptable())
    }

    /// The value in clear. Call only to hand it to a server being launched (or an explicit export).
    pub fn open_sealed(&self, c: &SealedCredential) -> Result<SecretBytes, VaultError> {
        metrics::counter!("dynamcp_vault_operations_total", "op" => "open").increment(1);
        let data_key = self.unwrap_key(c)?;
        let cipher = Aes256Gcm::new_from_slice(&data_key)
            .map_err(|_| VaultError::Undecryptable { server: c.server.clone(), key: c.key.clone() })?;
        cipher
            .decrypt(&nonce(&c.nonce), Payload { msg: &c.ciphertext, aad: &binding_of(c).aad("value") })
            .map(SecretBytes::new)
            .map_err(|_| VaultError::Undecryptable { server: c.server.clone(), key: c.key.clone() })
    }

    /// Re-wraps `c`'s data key under the keyring's key `target` (the value's ciphertext is
    /// untouched). The result replaces the row only while it still has the wrap read here.
    pub fn rewrap(&self, c: &SealedCredential, target: &str) -> Result<Rewrapped, VaultError> {
        let data_key = self.unwrap_key(c)?;
        let next = self.ring().keys.get(target).cloned().ok_or_else(|| VaultError::NotInKeyring {
            server: c.server.clone(),
            key: c.key.clone(),
            id: target.to_owned(),
        })?;
        let (wrapped_key, key_nonce) = wrap(&next, binding_of(c), &data_key)?;
        Ok(Rewrapped {
            id: c.id,
            previous_key_nonce: c.key_nonce.clone(),
            wrapped_key,
            key_nonce,
            master_key_id: target.to_owned(),
        })
    }
}

/// Wraps a data key under `master`.
fn wrap(master: &MasterKey, binding: Binding<'_>, data_key: &[u8]) -> Result<(Vec<u8>, Vec<u8>), VaultError> {
    let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
    let wrapped = master
        .cipher()
        .encrypt(&nonce, Payload { msg: data_key, aad: &binding.aad("data-key") })
        .map_err(|_| VaultError::Seal)?;
    Ok((wrapped, nonce.to_vec()))
}

/// A stored 96-bit nonce (its length is checked before use).
fn nonce(bytes: &[u8]) -> Nonce<aes_gcm::aead::consts::U12> {
    let array: [u8; 12] = bytes.try_into().unwrap_or_default();
    array.into()
}

fn binding_of(c: &SealedCredential) -> Binding<'_> {
    Binding { session_id: c.session_id, server: &c.server, key: &c.key, kind: c.kind }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binding(session_id: Uuid, key: &str) -> Binding<'_> {
        Binding { session_id, server: "gmail", key, kind: SecretKind::Env }
    }

    #[test]
    fn seals_and_opens_and_binds_each_value_to_its_place() {
        let vault = Vault::new(MasterKey::generate());
        let session = Uuid::new_v4();
        let a = vault.seal(binding(session, "TOKEN"), b"sk-canary").unwrap();
        assert_eq!(vault.open_sealed(&a).unwrap().expose(), b"sk-canary");
        assert!(!a.ciphertext.windows(9).any(|w| w == b"sk-canary"));
        // Same value twice: different data keys and nonces, so different bytes.
        let again = vault.seal(binding(session, "TOKEN"), b"sk-canary").unwrap();
        assert_ne!(a.ciphertext, again.ciphertext);
        assert_ne!(a.wrapped_key, again.wrapped_key);
        // A row moved to another key, server or session does not open.
        let b = vault.seal(binding(session, "OTHER"), b"other").unwrap();
        let swapped = SealedCredential { key: "OTHER".into(), ..a.clone() };
        assert!(matches!(vault.open_sealed(&swapped), Err(VaultError::Undecryptable { .. })));
        let moved = SealedCredential { session_id: Uuid::new_v4(), ..a.clone() };
        assert!(vault.open_sealed(&moved).is_err());
        let spliced =
            SealedCredential { ciphertext: b.ciphertext.clone(), nonce: b.nonce.clone(), ..a.clone() };
        assert!(vault.open_sealed(&spliced).is_err());
        // Another master key opens nothing.
        let stranger = Vault::new(MasterKey::generate());
        assert!(stranger.open_sealed(&a).is_err());
        assert!(matches!(stranger.open_sealed(&a), Err(VaultError::NotInKeyring { .. })));
        assert!(!format!("{a:?}").contains("ciphertext"));
    }

    #[test]
    fn a_keyring_opens_what_each_of_its_keys_wrapped_and_seals_with_the_writing_key() {
        let (old, new) = (MasterKey::generate(), MasterKey::generate());
        let (old_id, new_id) = (old.id().to_owned(), new.id().to_owned());
        let before = Vault::new(MasterKey::parse(&old.to_base64()).unwrap());
        let session = Uuid::new_v4();
        let a = before.seal(binding(session, "TOKEN"), b"sk-canary").unwrap();
        assert_eq!(a.master_key_id, old_id);

        // The new key writes, the old one still reads.
        let ring = Vault::with_keys(new, [old]);
        assert_eq!(ring.key_id(), new_id);
        assert_eq!(ring.key_ids().len(), 2);
        assert_eq!(ring.open_sealed(&a).unwrap().expose(), b"sk-canary");
        let b = ring.seal(binding(session, "OTHER"), b"other").unwrap();
        assert_eq!(b.master_key_id, new_id);
        assert!(matches!(before.open_sealed(&b), Err(VaultError::NotInKeyring { .. })));

        // Re-wrapping: the data key moves under the new key, the ciphertext stays, and the result
        // names the wrap it replaces.
        let r = ring.rewrap(&a, &new_id).unwrap();
        assert_eq!(r.previous_key_nonce, a.key_nonce);
        let rotated = SealedCredential {
            wrapped_key: r.wrapped_key,
            key_nonce: r.key_nonce,
            master_key_id: r.master_key_id,
            ..a.clone()
        };
        assert_eq!(rotated.ciphertext, a.ciphertext);
        assert_eq!(
            Vault::new(MasterKey::parse(&ring_key(&ring, &new_id)).unwrap())
                .open_sealed(&rotated)
                .unwrap()
                .expose(),
            b"sk-canary"
        );
        // A row claiming a key id whose key did not wrap it does not open.
        let lying = SealedCredential { master_key_id: new_id.clone(), ..a.clone() };
        assert!(matches!(ring.open_sealed(&lying), Err(VaultError::Undecryptable { .. })));
        assert!(matches!(ring.rewrap(&a, "0000000000000000"), Err(VaultError::NotInKeyring { .. })));
    }

    fn ring_key(vault: &Vault, id: &str) -> Secret {
        vault.ring().keys[id].to_base64()
    }
}
