//! Caches for repeated searches: query vectors (embedding a query costs milliseconds, a lookup
//! microseconds) and whole results. Bounded; when full, the oldest half is dropped.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use super::embed::{EmbedError, Embedder, TextKind};

/// A bounded map from strings: values by key, and keys in insertion order (oldest first).
pub struct Bounded<V> {
    capacity: usize,
    inner: Mutex<(HashMap<String, V>, VecDeque<String>)>,
}

impl<V: Clone> Bounded<V> {
    pub fn new(capacity: usize) -> Self {
        Self { capacity: capacity.max(2), inner: Mutex::new((HashMap::new(), VecDeque::new())) }
    }

    pub fn get(&self, key: &str) -> Option<V> {
        self.lock().0.get(key).cloned()
    }

    pub fn insert(&self, key: String, value: V) {
        let mut guard = self.lock();
        if guard.0.len() >= self.capacity {
            let drop = guard.1.len() / 2;
            for old in guard.1.drain(..drop).collect::<Vec<_>>() {
                guard.0.remove(&old);
            }
        }
        if guard.0.insert(key.clone(), value).is_none() {
            guard.1.push_back(key);
        }
    }

    pub fn clear(&self) {
        let mut guard = self.lock();
        guard.0.clear();
        guard.1.clear();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (HashMap<String, V>, VecDeque<String>)> {
        match self.inner.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }
}

pub struct QueryCache {
    vectors: Bounded<Arc<Vec<f32>>>,
}

impl QueryCache {
    pub fn new(capacity: usize) -> Self {
        Self { vectors: Bounded::new(capacity) }
    }

    /// Vectors for `texts`, in order, embedding only the ones not cached (in one call).
    pub async fn embed(
        &self,
        embedder: &dyn Embedder,
        texts: Vec<String>,
    ) -> Result<Vec<Vec<f32>>, EmbedError> {
        let key = |t: &str| format!("{}\u{0}{t}", embedder.id());
        let mut out: Vec<Option<Arc<Vec<f32>>>> = texts.iter().map(|t| self.vectors.get(&key(t))).collect();
        let missing: Vec<String> =
            texts.iter().zip(&out).filter(|(_, v)| v.is_none()).map(|(t, _)| t.clone()).collect();
        if !missing.is_empty() {
            let vectors = embedder.embed(missing.clone(), TextKind::Query).await?;
            let mut fresh = missing.iter().zip(vectors).map(|(t, v)| (t.clone(), Arc::new(v)));
            for slot in out.iter_mut().filter(|v| v.is_none()) {
                if let Some((text, vector)) = fresh.next() {
                    self.vectors.insert(key(&text), vector.clone());
                    *slot = Some(vector);
                }
            }
        }
        Ok(out.into_iter().map(|v| v.map(|v| v.as_ref().clone()).unwrap_or_default()).collect())
    }
}
