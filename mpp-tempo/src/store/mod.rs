//! Persistent state: replay keys.
//!
//! Every backend implements [`ReplayStore`] with the same semantics: a claim is an atomic
//! insert-if-absent, so of any number of concurrent claims of one key, across processes that
//! share the database, exactly one succeeds.
//!
//! Backends:
//! - [`SqliteStore`]: the embedded default (one file, WAL), shared safely by several handles
//!   or processes on the same file;
//! - [`PgStore`]: the scale-out store, one database shared by many API instances;
//! - [`MemoryStore`]: in-process only, for layer tests and examples without a database.
//!
//! Both SQL backends run the same schema as sqlx migrations embedded from
//! `mpp-tempo/migrations/{sqlite,postgres}` when they are opened, and track them in their own
//! table, [`MIGRATIONS_TABLE`], not sqlx's default `_sqlx_migrations`: an application that
//! runs its own `sqlx::migrate!()` on the same database keeps its own history, and neither
//! migrator sees the other's versions as unknown.
//!
//! Expiry times are stored as unix milliseconds, rounded **up**, so a claim never ends earlier
//! than asked. A key whose expiry is at or before "now" (the claiming process's clock) is free.

use std::sync::Arc;
use std::time::Duration;

use mpp_core::BoxFuture;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
use sqlx::migrate::Migrator;
use time::OffsetDateTime;

pub mod memory;
#[cfg(feature = "postgres")]
pub mod postgres;
#[cfg(feature = "sqlite")]
pub mod sqlite;

pub use memory::MemoryStore;
#[cfg(feature = "postgres")]
pub use postgres::PgStore;
#[cfg(feature = "sqlite")]
pub use sqlite::SqliteStore;

/// The table both SQL stores track their migrations in (instead of `_sqlx_migrations`).
pub const MIGRATIONS_TABLE: &str = "_mpp_tempo_migrations";

/// `migrator` tracked in [`MIGRATIONS_TABLE`].
#[cfg(any(feature = "sqlite", feature = "postgres"))]
fn with_own_table(mut migrator: Migrator) -> Migrator {
    migrator.dangerous_set_table_name(MIGRATIONS_TABLE);
    migrator
}

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

impl StoreError {
    /// Wraps any error (or message) as a store fault.
    pub fn new(error: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self(error.into())
    }
}

#[cfg(any(feature = "sqlite", feature = "postgres"))]
impl From<sqlx::Error> for StoreError {
    fn from(error: sqlx::Error) -> Self {
        Self(Box::new(error))
    }
}

#[cfg(any(feature = "sqlite", feature = "postgres"))]
impl From<sqlx::migrate::MigrateError> for StoreError {
    fn from(error: sqlx::migrate::MigrateError) -> Self {
        Self(Box::new(error))
    }
}

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

impl<T: ReplayStore + ?Sized> ReplayStore for Arc<T> {
    fn claim<'a>(
        &'a self,
        key: &'a str,
        expires_at: OffsetDateTime,
    ) -> BoxFuture<'a, Result<Claim, StoreError>> {
        (**self).claim(key, expires_at)
    }

    fn release<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        (**self).release(key)
    }
}

/// How long one store operation (acquiring a connection included) may take before it fails
/// with a [`StoreError`], unless the store is configured otherwise.
pub const DEFAULT_OPERATION_TIMEOUT: Duration = Duration::from_secs(10);

/// `t` as unix milliseconds, rounded up (saturating at the `i64` range).
pub(crate) fn unix_ms_ceil(t: OffsetDateTime) -> i64 {
    let nanos = t.unix_timestamp_nanos();
    let ms = nanos.div_euclid(1_000_000) + i128::from(nanos.rem_euclid(1_000_000) != 0);
    i64::try_from(ms).unwrap_or(if ms < 0 { i64::MIN } else { i64::MAX })
}

/// The current time as unix milliseconds, rounded down.
pub(crate) fn now_unix_ms() -> i64 {
    let nanos = OffsetDateTime::now_utc().unix_timestamp_nanos();
    i64::try_from(nanos.div_euclid(1_000_000)).unwrap_or(i64::MAX)
}

#[cfg(any(feature = "sqlite", feature = "postgres"))]
/// Maps the row count of the claim upsert: 1 = inserted or took over an expired row,
/// 0 = a live claim exists. Anything else is impossible with a primary key; fail closed.
pub(crate) fn claim_from_rows(rows: u64) -> Result<Claim, StoreError> {
    match rows {
        1 => Ok(Claim::Claimed),
        0 => Ok(Claim::AlreadyClaimed),
        n => Err(StoreError::new(format!(
            "replay claim touched {n} rows; refusing to treat it as a claim"
        ))),
    }
}

#[cfg(any(feature = "sqlite", feature = "postgres"))]
/// Runs a store operation with a deadline; running out of time is a [`StoreError`].
pub(crate) async fn with_deadline<T>(
    timeout: Duration,
    op: &'static str,
    fut: impl Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    match tokio::time::timeout(timeout, fut).await {
        Ok(result) => result,
        Err(_) => Err(StoreError::new(format!(
            "{op} did not finish within {} ms",
            timeout.as_millis()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn expiry_rounds_up_to_the_millisecond() {
        assert_eq!(unix_ms_ceil(datetime!(1970-01-01 0:00:01 UTC)), 1_000);
        assert_eq!(
            unix_ms_ceil(datetime!(1970-01-01 0:00:01.000_000_001 UTC)),
            1_001
        );
        assert_eq!(unix_ms_ceil(datetime!(1970-01-01 0:00:01.999 UTC)), 1_999);
        assert_eq!(unix_ms_ceil(datetime!(1969-12-31 23:59:59.9995 UTC)), 0);
        assert_eq!(unix_ms_ceil(datetime!(1969-12-31 23:59:59 UTC)), -1_000);
    }
}
