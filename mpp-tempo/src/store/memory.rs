//! [`MemoryStore`]: payment claims in process memory, for layer tests and examples.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use mpp_core::BoxFuture;
use time::OffsetDateTime;

use super::{
    Claim, ClaimRecord, ClaimState, FeeSpend, NewClaim, ReplayStore, StoreError, now_unix_ms,
    unix_ms_ceil,
};

/// How many claims may pass between two sweeps of expired keys.
const PURGE_EVERY: usize = 1024;

/// The default bound on live claims held in memory ([`MemoryStore::with_capacity`]).
pub const DEFAULT_CAPACITY: usize = 100_000;

/// An in-process [`ReplayStore`].
///
/// Claims are atomic within this process (one mutex); clones share the same keys. Memory is
/// bounded: expired claims are swept as claims come in, and when `capacity` live claims are
/// held a new claim fails as a store fault (503) rather than evicting a live one, which would
/// reopen it to replay. Nothing is persisted and nothing is shared with other processes, so
/// use [`super::SqliteStore`] or [`super::PgStore`] for anything that takes real money.
#[derive(Debug, Clone)]
pub struct MemoryStore {
    inner: Arc<Mutex<Inner>>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::with_capacity(DEFAULT_CAPACITY)
    }
}

#[derive(Debug)]
struct Row {
    owner: String,
    state: ClaimState,
    valid_before: Option<u64>,
    /// Unix milliseconds.
    expires_at: i64,
}

#[derive(Debug)]
struct Inner {
    keys: HashMap<String, Row>,
    /// Sponsored spend per (scope, window start): amount, and the window's end (unix ms).
    spent: HashMap<(String, i64), (u64, i64)>,
    capacity: usize,
    claims_since_purge: usize,
}

impl Inner {
    fn sweep(&mut self, now: i64) -> usize {
        let before = self.keys.len() + self.spent.len();
        self.keys.retain(|_, row| row.expires_at > now);
        self.spent.retain(|_, (_, ends)| *ends > now);
        self.claims_since_purge = 0;
        before - self.keys.len() - self.spent.len()
    }

    fn live(&self, key: &str, now: i64) -> Option<&Row> {
        self.keys.get(key).filter(|row| row.expires_at > now)
    }
}

impl MemoryStore {
    /// An empty store holding at most [`DEFAULT_CAPACITY`] live claims.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty store holding at most `capacity` live claims.
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            inner: Arc::new(Mutex::new(Inner {
                keys: HashMap::new(),
                spent: HashMap::new(),
                capacity,
                claims_since_purge: 0,
            })),
        }
    }

    /// The number of keys currently held (not expired).
    pub fn live_keys(&self) -> usize {
        let now = now_unix_ms();
        self.lock()
            .keys
            .values()
            .filter(|row| row.expires_at > now)
            .count()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Every critical section leaves the map consistent, so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn claim_now(&self, claim: NewClaim<'_>) -> Result<Claim, StoreError> {
        let now = now_unix_ms();
        let mut inner = self.lock();
        inner.claims_since_purge += 1;
        if inner.claims_since_purge >= PURGE_EVERY {
            inner.sweep(now);
        }
        if let Some(row) = inner.live(claim.key, now) {
            return Ok(Claim::Existing(ClaimRecord {
                key: claim.key.to_owned(),
                owner: row.owner.clone(),
                state: row.state,
                valid_before: row.valid_before,
            }));
        }
        if inner.keys.len() >= inner.capacity && inner.sweep(now) == 0 {
            return Err(StoreError::new(format!(
                "the memory store holds its capacity of {} live claims",
                inner.capacity
            )));
        }
        inner.keys.insert(
            claim.key.to_owned(),
            Row {
                owner: claim.owner.to_owned(),
                state: claim.state,
                valid_before: claim.valid_before,
                expires_at: unix_ms_ceil(claim.expires_at),
            },
        );
        Ok(Claim::Claimed)
    }
}

impl ReplayStore for MemoryStore {
    fn claim<'a>(&'a self, claim: NewClaim<'a>) -> BoxFuture<'a, Result<Claim, StoreError>> {
        Box::pin(async move {
            let result = self.claim_now(claim);
            tracing::debug!(key = claim.key, ?result, "memory replay claim");
            result
        })
    }

    fn advance<'a>(
        &'a self,
        key: &'a str,
        owner: &'a str,
        from: ClaimState,
        to: ClaimState,
        expires_at: OffsetDateTime,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(async move {
            let mut inner = self.lock();
            Ok(match inner.keys.get_mut(key) {
                Some(row) if row.owner == owner && row.state == from => {
                    row.state = to;
                    row.expires_at = unix_ms_ceil(expires_at);
                    true
                }
                _ => false,
            })
        })
    }

    fn release<'a>(
        &'a self,
        key: &'a str,
        owner: &'a str,
        from: ClaimState,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(async move {
            let mut inner = self.lock();
            let held = inner
                .keys
                .get(key)
                .is_some_and(|row| row.owner == owner && row.state == from);
            if held {
                inner.keys.remove(key);
            }
            Ok(held)
        })
    }

    fn in_state<'a>(
        &'a self,
        state: ClaimState,
        limit: u32,
    ) -> BoxFuture<'a, Result<Vec<ClaimRecord>, StoreError>> {
        Box::pin(async move {
            let now = now_unix_ms();
            let inner = self.lock();
            let mut found: Vec<ClaimRecord> = inner
                .keys
                .iter()
                .filter(|(_, row)| row.state == state && row.expires_at > now)
                .map(|(key, row)| ClaimRecord {
                    key: key.clone(),
                    owner: row.owner.clone(),
                    state: row.state,
                    valid_before: row.valid_before,
                })
                .collect();
            found.sort_by_key(|r| r.valid_before);
            found.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
            Ok(found)
        })
    }

    fn spend<'a>(&'a self, spend: FeeSpend<'a>) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(async move {
            let mut inner = self.lock();
            let fits = spend.scopes.iter().all(|&(scope, cap)| {
                let spent = inner
                    .spent
                    .get(&(scope.to_owned(), spend.window_start))
                    .map_or(0, |(spent, _)| *spent);
                spent.checked_add(spend.amount).is_some_and(|s| s <= cap)
            });
            if fits {
                let ends = unix_ms_ceil(spend.window_end);
                for &(scope, _) in spend.scopes {
                    let entry = inner
                        .spent
                        .entry((scope.to_owned(), spend.window_start))
                        .or_insert((0, ends));
                    entry.0 += spend.amount;
                }
            }
            Ok(fits)
        })
    }

    fn refund<'a>(
        &'a self,
        spend: FeeSpend<'a>,
        amount: u64,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let mut inner = self.lock();
            for &(scope, _) in spend.scopes {
                if let Some(entry) = inner.spent.get_mut(&(scope.to_owned(), spend.window_start)) {
                    entry.0 = entry.0.saturating_sub(amount);
                }
            }
            Ok(())
        })
    }

    fn purge_expired(&self) -> BoxFuture<'_, Result<u64, StoreError>> {
        Box::pin(async move {
            let purged = self.lock().sweep(now_unix_ms());
            Ok(u64::try_from(purged).unwrap_or(u64::MAX))
        })
    }
}
