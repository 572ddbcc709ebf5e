//! Shared application state, built once at start-up: this is where configuration turns into open
//! resources (the store, the master agent).

use std::sync::Arc;

use crate::config::ServeArgs;
use crate::planner::MasterAgent;
use crate::store::{self, Store, StoreError};

/// Everything a request handler may use. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub master: Arc<MasterAgent>,
    pub limits: Limits,
}

/// Request limits the router enforces.
#[derive(Debug, Clone)]
pub struct Limits {
    pub body_bytes: usize,
    pub request_timeout: std::time::Duration,
    pub cors_origins: Vec<String>,
}

impl AppState {
    /// Opens the store (applying migrations) and wires the domain services.
    pub async fn build(args: &ServeArgs) -> Result<Self, StoreError> {
        let store = store::open(&args.store).await?;
        Ok(Self::from_store(store, args))
    }

    /// Wires the services around an already-open store.
    pub fn from_store(store: Arc<dyn Store>, args: &ServeArgs) -> Self {
        Self {
            master: Arc::new(MasterAgent::new(store.clone())),
            store,
            limits: Limits {
                body_bytes: args.body_limit_bytes,
                request_timeout: args.request_timeout(),
                cors_origins: args.cors_origins.iter().filter(|o| !o.trim().is_empty()).cloned().collect(),
            },
        }
    }
}
