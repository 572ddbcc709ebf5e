//! Who is asking: tenants and their API keys. A key is `dmcp_` + 43 characters of base64url (256
//! random bits); only its SHA-256 is stored. Every session (and through it every agent,
//! credential, file and run) belongs to one tenant; another tenant's ids answer "not found".
//! With no key ever created, and on a loopback address (or with `--insecure-no-auth`), the
//! service runs open, as the tenant [`Tenant::open`]. Keys fail closed: once the store has had a
//! key, revoking the last one locks the service (every request needs a key) instead of opening it.

pub mod host;
pub mod limit;

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use base64::Engine;
use sha2::{Digest, Sha256};

use crate::catalog::record::hex;
use uuid::Uuid;

use crate::store::{Agent, Session, Store, StoreError};
use crate::vault::Secret;

#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    #[error("this service needs an API key: send `Authorization: Bearer <key>`")]
    MissingKey,
    #[error("the API key is not valid (unknown, revoked or malformed)")]
    BadKey,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// How long the answer to "which mode is the service in?" is reused. A key created or revoked
/// with the CLI while the service runs is enforced within this time.
const MODE_CHECK_TTL: Duration = Duration::from_secs(2);

/// What a request without a valid key gets, decided by the keys in the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// No key was ever created and keyless serving is allowed (a loopback address, or
    /// `--insecure-no-auth`): every request is the open tenant's.
    Open,
    /// At least one key is active: every request needs one.
    Keys,
    /// Keys were created and every one is revoked: every request needs a key, and none is valid
    /// until a new one is created. Revoking the last key never opens the service.
    Revoked,
    /// No key was ever created, but keyless serving is not allowed (a non-loopback address
    /// without `--insecure-no-auth`): `serve` refuses to start in this mode.
    Unconfigured,
}

/// Decides who a request is for.
pub struct Access {
    store: Arc<dyn Store>,
    /// Whether having never had a key means open (a loopback address, or `--insecure-no-auth`).
    keyless_allowed: bool,
    /// Set once the store is seen with a key: keys are never deleted, only revoked, so it stays.
    had_keys: AtomicBool,
    mode_checked: std::sync::Mutex<Option<(Instant, Mode)>>,
}

impl Access {
    /// `keyless_allowed`: whether a store that never had a key means an open service (true on
    /// a loopback address or with `--insecure-no-auth`).
    pub fn new(store: Arc<dyn Store>, keyless_allowed: bool) -> Self {
        Self {
            store,
            keyless_allowed,
            had_keys: AtomicBool::new(false),
            mode_checked: std::sync::Mutex::new(None),
        }
    }

    /// The service's mode now (cached for [`MODE_CHECK_TTL`]).
    pub async fn mode(&self) -> Result<Mode, StoreError> {
        if let Ok(cached) = self.mode_checked.lock()
            && let Some((at, mode)) = *cached
            && at.elapsed() < MODE_CHECK_TTL
        {
            return Ok(mode);
        }
        let mode = if self.store.active_api_keys().await? > 0 {
            self.had_keys.store(true, Ordering::Relaxed);
            Mode::Keys
        } else if self.had_keys.load(Ordering::Relaxed) || self.store.created_api_keys().await? > 0 {
            self.had_keys.store(true, Ordering::Relaxed);
            Mode::Revoked
        } else if self.keyless_allowed {
            Mode::Open
        } else {
            Mode::Unconfigured
        };
        if let Ok(mut cached) = self.mode_checked.lock() {
            *cached = Some((Instant::now(), mode));
        }
        Ok(mode)
    }

    /// Whether every request is the open tenant's (no key ever, keyless serving allowed).
    pub async fn is_open(&self) -> Result<bool, StoreError> {
        Ok(self.mode().await? == Mode::Open)
    }

    /// The tenant of a request that sent `bearer` (the `Authorization: Bearer` token, if any).
    /// Only [`Mode::Open`] lets a request through without a valid key.
    pub async fn authenticate(&self, bearer: Option<&str>) -> Result<Tenant, AccessError> {
        // A request that brings a key while the service looks open may be the first one after a
        // key was created: ask the store again rather than act on a cached "open".
        if bearer.is_some()
            && let Ok(mut cached) = self.mode_checked.lock()
            && matches!(*cached, Some((_, Mode::Open)))
        {
            *cached = None;
        }
        if self.is_open().await? {
            return Ok(Tenant::open());
        }
        let key = bearer.map(str::trim).ok_or(AccessError::MissingKey)?;
        if !looks_like_key(key) {
            return Err(AccessError::BadKey);
        }
        match self.store.api_key_tenant(&key_hash(key)).await? {
            Some(tenant) => Ok(Tenant::from_stored(tenant)),
            None => Err(AccessError::BadKey),
        }
    }
}

/// Session `id` if `tenant` owns it: another tenant's session is `None`, exactly like a missing one.
pub async fn owned_session(
    store: &dyn Store,
    tenant: &Tenant,
    id: Uuid,
) -> Result<Option<Session>, StoreError> {
    Ok(store.get_session(id).await?.filter(|s| tenant.owns(&s.tenant)))
}

/// Agent `id` if `tenant` owns it: another tenant's agent is `None`, exactly like a missing one.
pub async fn owned_agent(store: &dyn Store, tenant: &Tenant, id: Uuid) -> Result<Option<Agent>, StoreError> {
    Ok(store.get_agent(id).await?.filter(|a| tenant.owns(&a.tenant)))
}

/// Creates a key for `tenant`; the returned secret is the only copy of the key.
pub async fn create_key(
    store: &dyn Store,
    tenant: &Tenant,
    label: &str,
) -> Result<(crate::store::ApiKey, Secret), StoreError> {
    let key = generate_key();
    let record = store.create_api_key(tenant.as_str(), &key_hash(key.expose()), label).await?;
    Ok((record, key))
}

const KEY_PREFIX: &str = "dmcp_";

/// A tenant name: 1–64 characters of letters, digits, `.`, `_` and `-`; `""` is the open service.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Tenant(String);

/// The tenant a request acts for, as the HTTP face's key check attaches it to the request (where
/// the MCP face's `/mcp` tools read it too).
#[derive(Debug, Clone)]
pub struct Caller(pub Tenant);

impl Tenant {
    /// The tenant of a service without API keys.
    pub fn open() -> Self {
        Self(String::new())
    }

    pub fn parse(name: &str) -> Result<Self, String> {
        let valid = !name.is_empty()
            && name.len() <= 64
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if valid {
            Ok(Self(name.to_owned()))
        } else {
            Err(format!("{name:?} is not a tenant name: use 1-64 letters, digits, '.', '_' or '-'"))
        }
    }

    /// From the store (already validated when its key was created).
    pub fn from_stored(name: String) -> Self {
        Self(name)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether a row stored with `tenant` is this tenant's.
    pub fn owns(&self, tenant: &str) -> bool {
        self.0 == tenant
    }
}

impl fmt::Display for Tenant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() { f.write_str("(open)") } else { f.write_str(&self.0) }
    }
}

/// A new random API key, to be shown once.
pub fn generate_key() -> Secret {
    use aes_gcm::aead::rand_core::RngCore;
    let mut bytes = [0u8; 32];
    aes_gcm::aead::OsRng.fill_bytes(&mut bytes);
    let key = Secret::new(format!(
        "{KEY_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    ));
    zeroize::Zeroize::zeroize(&mut bytes);
    key
}

/// What the store keeps of a key: its SHA-256, hex.
pub fn key_hash(key: &str) -> String {
    hex(&Sha256::digest(key.trim().as_bytes()))
}

/// Whether `text` has the shape of one of our keys (cheap check before any lookup).
pub fn looks_like_key(text: &str) -> bool {
    text.len() == KEY_PREFIX.len() + 43
        && text.starts_with(KEY_PREFIX)
        && text[KEY_PREFIX.len()..].bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_random_well_formed_and_hashed() {
        let a = generate_key();
        let b = generate_key();
        assert_ne!(a.expose(), b.expose());
        assert!(looks_like_key(a.expose()), "{}", a.expose());
        assert!(!looks_like_key("dmcp_short") && !looks_like_key(&format!("sk_{}", &a.expose()[3..])));
        assert_eq!(key_hash(a.expose()).len(), 64);
        assert_ne!(key_hash(a.expose()), key_hash(b.expose()));
        assert_eq!(format!("{a:?}"), "[redacted]");
    }

    #[test]
    fn tenant_names() {
        assert!(Tenant::parse("acme-corp.eu_1").is_ok());
        for bad in ["", "has space", "x/y", &"a".repeat(65)] {
            assert!(Tenant::parse(bad).is_err(), "{bad}");
        }
        assert!(Tenant::open().owns(""));
        assert!(!Tenant::parse("a").unwrap().owns(""));
        assert_eq!(Tenant::open().to_string(), "(open)");
    }

    /// Regression: revoking the last key used to open the service to everyone.
    #[tokio::test]
    async fn keys_fail_closed_once_the_store_has_had_one() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let store =
            crate::store::open(&crate::config::ServeArgs::for_data_dir(dir.path()).store.settings()).await?;
        // A fresh Access per step: each caches its answer for a couple of seconds.
        let mode = |keyless_allowed| {
            let store = store.clone();
            async move { Access::new(store, keyless_allowed).mode().await }
        };
        assert_eq!(mode(true).await?, Mode::Open);
        assert_eq!(mode(false).await?, Mode::Unconfigured, "a network address without keys");
        let (record, key) =
            create_key(store.as_ref(), &Tenant::parse("acme").map_err(anyhow::Error::msg)?, "").await?;
        assert_eq!(mode(true).await?, Mode::Keys);
        assert!(store.revoke_api_key(record.id).await?);
        for keyless_allowed in [true, false] {
            assert_eq!(mode(keyless_allowed).await?, Mode::Revoked);
            let access = Access::new(store.clone(), keyless_allowed);
            assert!(matches!(access.authenticate(None).await, Err(AccessError::MissingKey)));
            assert!(matches!(access.authenticate(Some(key.expose())).await, Err(AccessError::BadKey)));
        }
        store.close().await;
        Ok(())
    }
}
