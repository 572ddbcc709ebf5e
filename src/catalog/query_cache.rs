//! Query vectors for repeated searches: embedding a query costs milliseconds, a lookup
//! microseconds. Bounded; when full, the oldest half is dropped.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use super::embed::{EmbedError, Embedder, TextKind};

/// Vectors by key, and keys in insertion order (oldest first).
type Entries = (HashMap<String, Arc<Vec<f32>>>, VecDeque<String>);

pub struct QueryCache {
    capacity: usize,
    inner: Mutex<Entries>,
}

impl QueryCache {
    pub fn new(capacity: usize) -> Self {
        Self { capacity: capacity.max(2), inner: Mutex::new((HashMap::new(), VecDeque::new())) }
    }

    /// Vectors for `texts`, in order, embedding only the ones not cached (in one call).
    pub async fn embed(
        &self,
        embedder: &dyn Embedder,
        texts: Vec<String>,
    ) -> Result<Vec<Vec<f32>>, EmbedError> {
        let key = |t: &str| format!("{}\u{0}{t}", embedder.id());
        let mut out: Vec<Option<Arc<Vec<f32>>>> = {
            let guard = self.lock();
            texts.iter().map(|t| guard.0.get(&key(t)).cloned()).collect()
        };
        let missing: Vec<String> =
            texts.iter().zip(&out).filter(|(_, v)| v.is_none()).map(|(t, _)| t.clone()).collect();
        if !missing.is_empty() {
            let vectors = embedder.embed(missing.clone(), TextKind::Query).await?;
            let mut guard = self.lock();
            let mut fresh = missing.iter().zip(vectors).map(|(t, v)| (t.clone(), Arc::new(v)));
            for slot in out.iter_mut().filter(|v| v.is_none()) {
                if let Some((text, vector)) = fresh.next() {
                    if guard.0.len() >= self.capacity {
                        let drop = guard.1.len() / 2;
                        for old in guard.1.drain(..drop).collect::<Vec<_>>() {
                            guard.0.remove(&old);
                        }
                    }
                    let k = key(&text);
                    if guard.0.insert(k.clone(), vector.clone()).is_none() {
                        guard.1.push_back(k);
                    }
                    *slot = Some(vector);
                }
            }
        }
        Ok(out.into_iter().map(|v| v.map(|v| v.as_ref().clone()).unwrap_or_default()).collect())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        match self.inner.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }
}
