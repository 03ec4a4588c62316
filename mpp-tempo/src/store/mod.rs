//! Persistent state: replay keys (and, later, payment-channel rows).
//!
//! Every backend implements [`ReplayStore`] with the same semantics: a claim is an atomic
//! insert-if-absent, so of any number of concurrent claims of one key, across processes that
//! share the database, exactly one succeeds.

use mpp_core::BoxFuture;
use time::OffsetDateTime;

/// The result of [`ReplayStore::claim`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// The key was free and is now held by this caller.
    Claimed,
    /// The key was already claimed (and has not expired).
    AlreadyClaimed,
}

/// A database fault. Callers map it to "service unavailable" (503), never to success.
#[derive(Debug, thiserror::Error)]
#[error("replay store unavailable: {0}")]
pub struct StoreError(#[source] pub Box<dyn std::error::Error + Send + Sync>);

/// Single-use keys (tx hashes, proof ids), claimed atomically.
pub trait ReplayStore: Send + Sync + 'static {
    /// Atomically claims `key` until `expires_at`. An expired claim counts as free.
    fn claim<'a>(
        &'a self,
        key: &'a str,
        expires_at: OffsetDateTime,
    ) -> BoxFuture<'a, Result<Claim, StoreError>>;

    /// Releases a claim this caller holds (used only when the payment was never attempted,
    /// e.g. the broadcast did not happen because the node was unreachable).
    fn release<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), StoreError>>;
}
