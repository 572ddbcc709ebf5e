//! Credential handling: the [`Secret`] wrapper every value travels in (no `Debug`, `Display` or log
//! line can print one), and envelope encryption of stored values.
//!
//! Each credential gets its own random data key; the value is sealed with AES-256-GCM under that
//! key, and the data key is sealed (wrapped) under the master key. Both use random 96-bit nonces
//! and carry the credential's `(session, server, key, kind)` as associated data, so a row copied
//! onto another credential does not open. Rotation re-wraps data keys only.

mod key;
mod secret;

use aes_gcm::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use chrono::Utc;
use uuid::Uuid;
use zeroize::Zeroizing;

pub use key::{KEY_FILE, KeySource, MasterKey};
pub use secret::{Secret, SecretBytes};

use crate::store::{CredentialStore, Rewrapped, SealedCredential, SecretKind, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    #[error("ENCRYPTION_KEY must be 32 bytes, written as base64 or as 64 hex digits")]
    BadKey,
    #[error(
        "the vault key file {path} is missing but stored credentials need it; restore it or set \
         ENCRYPTION_KEY to the key that sealed them"
    )]
    MissingKey { path: String },
    #[error("cannot use the vault key file {path}: {reason}")]
    KeyFile { path: String, reason: String },
    #[error(
        "the master key (id {current}) is not the one that sealed {count} stored credential(s) \
         (key id {stored}); set ENCRYPTION_KEY to that key, or run `dynamcp vault rotate` with it"
    )]
    WrongKey { current: String, stored: String, count: i64 },
    #[error("a stored credential ({server}/{key}) does not decrypt: wrong key or tampered row")]
    Undecryptable { server: String, key: String },
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

/// The vault: seals and opens credentials under the master key.
pub struct Vault {
    master: MasterKey,
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vault").field("master", &self.master).finish()
    }
}

impl Vault {
    pub fn new(master: MasterKey) -> Self {
        Self { master }
    }

    pub fn key_id(&self) -> &str {
        self.master.id()
    }

    /// Opens the vault for a store: loads the master key (`ENCRYPTION_KEY`, or the data dir's key
    /// file, generated when nothing is stored yet) and checks that it is the key the stored
    /// credentials were sealed with, so a wrong key fails here and never yields garbage.
    pub async fn open(
        store: &dyn CredentialStore,
        env_key: Option<&Secret>,
        data_dir: &std::path::Path,
    ) -> Result<Self, VaultError> {
        let ids = store.master_key_ids().await?;
        let (master, source) = MasterKey::load(env_key, data_dir, ids.is_empty())?;
        if let KeySource::Generated(path) = &source {
            tracing::warn!(
                path = %path.display(),
                "ENCRYPTION_KEY is not set: generated a vault key file (mode 0600). Back it up: \
                 credentials stored under it cannot be read without it. Set ENCRYPTION_KEY in production."
            );
        }
        if let Some((stored, count)) = ids.into_iter().find(|(id, _)| id != master.id()) {
            return Err(VaultError::WrongKey { current: master.id().to_owned(), stored, count });
        }
        let vault = Self { master };
        // One real decryption proves the key, not only its id.
        if let Some(c) = store.any_credential().await? {
            vault.open_sealed(&c)?;
        }
        Ok(vault)
    }

    /// Seals `value` for `binding` under a fresh data key.
    pub fn seal(&self, binding: Binding<'_>, value: &[u8]) -> Result<SealedCredential, VaultError> {
        metrics::counter!("dynamcp_vault_operations_total", "op" => "seal").increment(1);
        let data_key = Zeroizing::new(Aes256Gcm::generate_key(&mut OsRng).to_vec());
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        let ciphertext = Aes256Gcm::new_from_slice(&data_key)
            .map_err(|_| VaultError::Seal)?
            .encrypt(&nonce, Payload { msg: value, aad: &binding.aad("value") })
            .map_err(|_| VaultError::Seal)?;
        let (wrapped_key, key_nonce) = self.wrap(binding, &data_key)?;
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
            master_key_id: self.master.id().to_owned(),
            updated_at: Utc::now(),
        })
    }

    fn wrap(&self, binding: Binding<'_>, data_key: &[u8]) -> Result<(Vec<u8>, Vec<u8>), VaultError> {
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        let wrapped = self
            .master
            .cipher()
            .encrypt(&nonce, Payload { msg: data_key, aad: &binding.aad("data-key") })
            .map_err(|_| VaultError::Seal)?;
        Ok((wrapped, nonce.to_vec()))
    }

    fn unwrap_key(&self, c: &SealedCredential) -> Result<Zeroizing<Vec<u8>>, VaultError> {
        let undecryptable = || VaultError::Undecryptable { server: c.server.clone(), key: c.key.clone() };
        if c.key_nonce.len() != 12 || c.nonce.len() != 12 {
            return Err(undecryptable());
        }
        let binding = binding_of(c);
        self.master
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

    /// Re-wraps `c`'s data key under `next` (the value's ciphertext is untouched).
    pub fn rewrap(&self, c: &SealedCredential, next: &Vault) -> Result<Rewrapped, VaultError> {
        let data_key = self.unwrap_key(c)?;
        let (wrapped_key, key_nonce) = next.wrap(binding_of(c), &data_key)?;
        Ok(Rewrapped { id: c.id, wrapped_key, key_nonce, master_key_id: next.key_id().to_owned() })
    }
}

/// A stored 96-bit nonce (its length is checked before use).
fn nonce(bytes: &[u8]) -> Nonce<aes_gcm::aead::consts::U12> {
    let array: [u8; 12] = bytes.try_into().unwrap_or_default();
    array.into()
}

fn binding_of(c: &SealedCredential) -> Binding<'_> {
    Binding { session_id: c.session_id, server: &c.server, key: &c.key, kind: c.kind }
}

/// `dynamcp vault rotate`: re-wraps every data key under `next`, in one transaction.
pub async fn rotate(store: &dyn CredentialStore, current: &Vault, next: &Vault) -> Result<usize, VaultError> {
    let all = store.all_credentials().await?;
    let rewrapped: Vec<Rewrapped> = all.iter().map(|c| current.rewrap(c, next)).collect::<Result<_, _>>()?;
    store.rewrap_credentials(&rewrapped).await?;
    Ok(rewrapped.len())
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
        // Rotation: the new key opens the re-wrapped row, the ciphertext is unchanged.
        let r = vault.rewrap(&a, &stranger).unwrap();
        let rotated = SealedCredential {
            wrapped_key: r.wrapped_key,
            key_nonce: r.key_nonce,
            master_key_id: r.master_key_id,
            ..a.clone()
        };
        assert_eq!(stranger.open_sealed(&rotated).unwrap().expose(), b"sk-canary");
        assert!(vault.open_sealed(&rotated).is_err());
        assert!(!format!("{a:?}").contains("ciphertext"));
    }
}
