//! One master key: 32 bytes from `ENCRYPTION_KEY` (base64 or hex), or, when that is unset, from a
//! key file in the data dir that is generated once with mode 0600. The keyring (`keyring.rs`)
//! holds several of them.

use std::io::Write;
use std::path::{Path, PathBuf};

use aes_gcm::aead::{KeyInit, OsRng, rand_core::RngCore};
use base64::Engine;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::{Secret, VaultError};

/// The key file's name inside the data dir.
pub const KEY_FILE: &str = "vault.key";

/// A 32-byte master key and its public id (a hash prefix that names it without revealing it).
pub struct MasterKey {
    bytes: Zeroizing<[u8; 32]>,
    id: String,
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MasterKey({})", self.id)
    }
}

/// Where the master key came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    Env,
    /// An existing key file.
    File(PathBuf),
    /// A key file generated just now.
    Generated(PathBuf),
}

impl MasterKey {
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        let digest = Sha256::new().chain_update(b"dynamcp master key id\0").chain_update(bytes).finalize();
        let id = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
        Self { bytes: Zeroizing::new(bytes), id }
    }

    /// A fresh random key.
    pub fn generate() -> Self {
        let mut bytes = [0u8; 32];
        OsRng.fill_bytes(&mut bytes);
        Self::from_bytes(bytes)
    }

    /// Parses 32 bytes written as base64 (standard or URL-safe, padded or not) or as 64 hex digits.
    pub fn parse(text: &Secret) -> Result<Self, VaultError> {
        let text = text.expose().trim();
        let decoded: Option<Vec<u8>> = if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
            (0..32).map(|i| u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()).collect()
        } else {
            [
                &base64::engine::general_purpose::STANDARD,
                &base64::engine::general_purpose::STANDARD_NO_PAD,
                &base64::engine::general_purpose::URL_SAFE,
                &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            ]
            .iter()
            .find_map(|engine| engine.decode(text).ok())
        };
        let decoded = Zeroizing::new(decoded.ok_or(VaultError::BadKey)?);
        let bytes: [u8; 32] = decoded.as_slice().try_into().map_err(|_| VaultError::BadKey)?;
        Ok(Self::from_bytes(bytes))
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// The key in base64, to hand to the operator once (`vault rotate`).
    pub fn to_base64(&self) -> Secret {
        Secret::new(base64::engine::general_purpose::STANDARD.encode(*self.bytes))
    }

    pub(super) fn cipher(&self) -> aes_gcm::Aes256Gcm {
        aes_gcm::Aes256Gcm::new((&*self.bytes).into())
    }

    /// The key from `ENCRYPTION_KEY` when set; else the data dir's key file; else, if `may_generate`,
    /// a new key file (mode 0600).
    pub fn load(
        env: Option<&Secret>,
        data_dir: &Path,
        may_generate: bool,
    ) -> Result<(Self, KeySource), VaultError> {
        if let Some(text) = env.filter(|t| !t.is_blank()) {
            return Ok((Self::parse(text)?, KeySource::Env));
        }
        let path = data_dir.join(KEY_FILE);
        match std::fs::read_to_string(&path) {
            Ok(text) => Ok((Self::parse(&Secret::new(text))?, KeySource::File(path))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if !may_generate {
                    return Err(VaultError::MissingKey { path: path.display().to_string() });
                }
                let key = Self::generate();
                key.write_file(&path)?;
                Ok((key, KeySource::Generated(path)))
            }
            Err(e) => Err(VaultError::KeyFile { path: path.display().to_string(), reason: e.to_string() }),
        }
    }

    /// Writes the key to `path` with mode 0600, atomically and durably (a temp file, synced, renamed
    /// over it, then the directory synced).
    pub fn write_file(&self, path: &Path) -> Result<(), VaultError> {
        let fail = |e: std::io::Error| VaultError::KeyFile {
            path: path.display().to_string(),
            reason: e.to_string(),
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(fail)?;
        }
        let tmp = path.with_extension("key.tmp");
        let _ = std::fs::remove_file(&tmp);
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(&tmp).map_err(fail)?;
        file.write_all(self.to_base64().expose().as_bytes()).map_err(fail)?;
        file.write_all(b"\n").map_err(fail)?;
        file.sync_all().map_err(fail)?;
        std::fs::rename(&tmp, path).map_err(fail)?;
        match path.parent() {
            Some(dir) => sync_dir(dir),
            None => Ok(()),
        }
    }
}

/// Makes a rename or removal in `dir` durable.
pub(super) fn sync_dir(dir: &Path) -> Result<(), VaultError> {
    let dir = if dir.as_os_str().is_empty() { Path::new(".") } else { dir };
    #[cfg(unix)]
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| VaultError::KeyFile { path: dir.display().to_string(), reason: e.to_string() })?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_base64_and_hex_and_rejects_other_lengths() {
        let key = MasterKey::generate();
        let b64 = key.to_base64();
        assert_eq!(MasterKey::parse(&b64).unwrap().id(), key.id());
        let hex: String = key.bytes.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(MasterKey::parse(&Secret::new(hex)).unwrap().id(), key.id());
        assert!(matches!(MasterKey::parse(&Secret::new("c2hvcnQ=")), Err(VaultError::BadKey)));
        assert!(matches!(MasterKey::parse(&Secret::new("not a key at all!")), Err(VaultError::BadKey)));
        assert_eq!(format!("{key:?}"), format!("MasterKey({})", key.id()));
    }

    #[test]
    fn a_generated_key_file_is_private_and_reloads() {
        let dir = tempfile::tempdir().unwrap();
        let (key, source) = MasterKey::load(None, dir.path(), true).unwrap();
        assert!(matches!(source, KeySource::Generated(_)));
        let path = dir.path().join(KEY_FILE);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
        let (again, source) = MasterKey::load(None, dir.path(), true).unwrap();
        assert_eq!(source, KeySource::File(path));
        assert_eq!(again.id(), key.id());
        let other = tempfile::tempdir().unwrap();
        assert!(matches!(MasterKey::load(None, other.path(), false), Err(VaultError::MissingKey { .. })));
    }
}
