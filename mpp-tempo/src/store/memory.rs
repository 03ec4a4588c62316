//! [`MemoryStore`]: replay keys in process memory, for layer tests and examples.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use mpp_core::BoxFuture;
use time::OffsetDateTime;

use super::{Claim, ReplayStore, StoreError, now_unix_ms, unix_ms_ceil};

/// How many claims may pass between two sweeps of expired keys.
const PURGE_EVERY: usize = 1024;

/// An in-process [`ReplayStore`].
///
/// Claims are atomic within this process (one mutex); clones share the same keys. Nothing is
/// persisted and nothing is shared with other processes, so use [`super::SqliteStore`] or
/// [`super::PgStore`] for anything that takes real money.
#[derive(Debug, Clone, Default)]
pub struct MemoryStore {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Key → expiry in unix milliseconds.
    keys: HashMap<String, i64>,
    claims_since_purge: usize,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Drops every expired key and returns how many were dropped.
    pub fn purge_expired(&self) -> usize {
        let mut inner = self.lock();
        let now = now_unix_ms();
        let before = inner.keys.len();
        inner.keys.retain(|_, expires_at| *expires_at > now);
        inner.claims_since_purge = 0;
        before - inner.keys.len()
    }

    /// The number of keys currently held (not expired).
    pub fn live_keys(&self) -> usize {
        let now = now_unix_ms();
        self.lock().keys.values().filter(|e| **e > now).count()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Every critical section leaves the map consistent, so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn claim_now(&self, key: &str, expires_at: OffsetDateTime) -> Claim {
        let expires_at = unix_ms_ceil(expires_at);
        let now = now_unix_ms();
        let mut inner = self.lock();
        inner.claims_since_purge += 1;
        if inner.claims_since_purge >= PURGE_EVERY {
            inner.keys.retain(|_, e| *e > now);
            inner.claims_since_purge = 0;
        }
        match inner.keys.get_mut(key) {
            Some(existing) if *existing > now => Claim::AlreadyClaimed,
            Some(existing) => {
                *existing = expires_at;
                Claim::Claimed
            }
            None => {
                inner.keys.insert(key.to_owned(), expires_at);
                Claim::Claimed
            }
        }
    }
}

impl ReplayStore for MemoryStore {
    fn claim<'a>(
        &'a self,
        key: &'a str,
        expires_at: OffsetDateTime,
    ) -> BoxFuture<'a, Result<Claim, StoreError>> {
        Box::pin(async move {
            let claim = self.claim_now(key, expires_at);
            tracing::debug!(key, ?claim, "memory replay claim");
            Ok(claim)
        })
    }

    fn release<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            self.lock().keys.remove(key);
            Ok(())
        })
    }
}
