//! Persistent state: payment claims (replay keys with the state of each payment).
//!
//! Every backend implements [`ReplayStore`] with the same semantics: a claim is an atomic
//! insert-if-absent, so of any number of concurrent claims of one key, across processes that
//! share the database, exactly one succeeds; and a claim moves between [`ClaimState`]s only by
//! conditional updates, never read-modify-write in the process.
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

/// Where a claimed payment stands. Every change is one conditional update from a known
/// state, so two requests (or two instances) never both move the same payment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ClaimState {
    /// Verified and held by one request; nothing was sent to the chain yet.
    Held,
    /// Sent to the chain with an unknown outcome: it may still be mined until its deadline.
    Pending,
    /// Paid, and no 2xx answer was handed out for it yet: the same credential may be served.
    Settled,
    /// Paid, and one request is serving it right now.
    Serving,
    /// Paid and served: used for good.
    Served,
}

impl ClaimState {
    /// The state's name in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Held => "held",
            Self::Pending => "pending",
            Self::Settled => "settled",
            Self::Serving => "serving",
            Self::Served => "served",
        }
    }

    /// Parses a database value.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "held" => Self::Held,
            "pending" => Self::Pending,
            "settled" => Self::Settled,
            "serving" => Self::Serving,
            "served" => Self::Served,
            _ => return None,
        })
    }
}

/// A new claim: who holds it, in which state, until when.
#[derive(Debug, Clone, Copy)]
pub struct NewClaim<'a> {
    /// The payment's key (a transaction hash, a proof's challenge).
    pub key: &'a str,
    /// Who the claim belongs to: the fingerprint of the credential that made it, so the same
    /// credential coming back is recognized and anyone else is refused.
    pub owner: &'a str,
    /// The state it starts in.
    pub state: ClaimState,
    /// When the row is free again (it no longer protects anything after this).
    pub expires_at: OffsetDateTime,
    /// For a transaction: its `validBefore` (unix seconds), after which it cannot be mined.
    pub valid_before: Option<u64>,
}

/// A claim found in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimRecord {
    /// The payment's key.
    pub key: String,
    /// The credential fingerprint that holds it.
    pub owner: String,
    /// Where the payment stands.
    pub state: ClaimState,
    /// The transaction's `validBefore` (unix seconds), when it has one.
    pub valid_before: Option<u64>,
}

/// The result of [`ReplayStore::claim`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The key was free and is now held by this caller.
    Claimed,
    /// A live claim exists: this one (the caller compares its owner and state).
    Existing(ClaimRecord),
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

/// A sponsored fee counted against the fee payer's budgets: `amount` is added to the spend of
/// every scope in the window that starts at `window_start`, for all scopes or none.
#[derive(Debug, Clone, Copy)]
pub struct FeeSpend<'a> {
    /// Each scope (`"total"`, `"sender:0x…"`) with its cap for the window.
    pub scopes: &'a [(&'a str, u64)],
    /// Unix seconds.
    pub window_start: i64,
    /// When the window ends (its rows are purged after).
    pub window_end: OffsetDateTime,
    /// Fee-token base units.
    pub amount: u64,
}

/// Single-use payment keys (transaction hashes, proofs) with the state of each payment,
/// claimed and moved atomically.
///
/// Every operation is one atomic statement in the database: of concurrent claims of one key
/// exactly one wins, and a move from one state to another happens only from the state the
/// caller names, only for the owner that holds it. The same store counts the fee payer's
/// sponsored spend ([`ReplayStore::spend`]).
pub trait ReplayStore: Send + Sync + 'static {
    /// Atomically claims `claim.key` unless a live (unexpired) claim holds it, which is then
    /// returned as [`Claim::Existing`].
    fn claim<'a>(&'a self, claim: NewClaim<'a>) -> BoxFuture<'a, Result<Claim, StoreError>>;

    /// Moves `key`, held by `owner`, from `from` to `to`, now to expire at `expires_at`.
    /// `false` when the claim is not (or no longer) in `from` for that owner.
    fn advance<'a>(
        &'a self,
        key: &'a str,
        owner: &'a str,
        from: ClaimState,
        to: ClaimState,
        expires_at: OffsetDateTime,
    ) -> BoxFuture<'a, Result<bool, StoreError>>;

    /// Deletes `key` if `owner` holds it in state `from` (a payment that did not happen).
    /// `false` when it is not in that state.
    fn release<'a>(
        &'a self,
        key: &'a str,
        owner: &'a str,
        from: ClaimState,
    ) -> BoxFuture<'a, Result<bool, StoreError>>;

    /// Up to `limit` live claims in state `state`, those with the earliest `validBefore`
    /// first (the background resolver reads the pending ones).
    fn in_state<'a>(
        &'a self,
        state: ClaimState,
        limit: u32,
    ) -> BoxFuture<'a, Result<Vec<ClaimRecord>, StoreError>>;

    /// Adds `spend.amount` to the spend of each of its scopes in its window, unless that
    /// would pass any scope's cap: all scopes or none, atomically. `false` when refused.
    fn spend<'a>(&'a self, spend: FeeSpend<'a>) -> BoxFuture<'a, Result<bool, StoreError>>;

    /// Gives `amount` of an earlier `spend` back to each of its scopes (never below zero).
    fn refund<'a>(
        &'a self,
        spend: FeeSpend<'a>,
        amount: u64,
    ) -> BoxFuture<'a, Result<(), StoreError>>;

    /// Deletes expired claims and ended spend windows; returns how many rows.
    fn purge_expired(&self) -> BoxFuture<'_, Result<u64, StoreError>>;
}

impl<T: ReplayStore + ?Sized> ReplayStore for Arc<T> {
    fn claim<'a>(&'a self, claim: NewClaim<'a>) -> BoxFuture<'a, Result<Claim, StoreError>> {
        (**self).claim(claim)
    }

    fn advance<'a>(
        &'a self,
        key: &'a str,
        owner: &'a str,
        from: ClaimState,
        to: ClaimState,
        expires_at: OffsetDateTime,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        (**self).advance(key, owner, from, to, expires_at)
    }

    fn release<'a>(
        &'a self,
        key: &'a str,
        owner: &'a str,
        from: ClaimState,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        (**self).release(key, owner, from)
    }

    fn in_state<'a>(
        &'a self,
        state: ClaimState,
        limit: u32,
    ) -> BoxFuture<'a, Result<Vec<ClaimRecord>, StoreError>> {
        (**self).in_state(state, limit)
    }

    fn spend<'a>(&'a self, spend: FeeSpend<'a>) -> BoxFuture<'a, Result<bool, StoreError>> {
        (**self).spend(spend)
    }

    fn refund<'a>(
        &'a self,
        spend: FeeSpend<'a>,
        amount: u64,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        (**self).refund(spend, amount)
    }

    fn purge_expired(&self) -> BoxFuture<'_, Result<u64, StoreError>> {
        (**self).purge_expired()
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

/// An `idempotent_responses` row: credential, status (none while in flight), headers, body.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) type StoredRow = (String, Option<i32>, Option<Vec<u8>>, Option<Vec<u8>>);

/// What a live `idempotent_responses` row means to a request paid with `credential`.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) fn stored_begin(
    credential: &str,
    (stored_credential, status, headers, body): StoredRow,
) -> Result<mpp_core::idempotency::Begin, StoreError> {
    use mpp_core::idempotency::{Begin, StoredResponse};
    if stored_credential != credential {
        return Ok(Begin::OtherCredential);
    }
    let Some(status) = status else {
        return Ok(Begin::InFlight);
    };
    let status = u16::try_from(status)
        .map_err(|_| StoreError::new(format!("stored response status {status}")))?;
    let headers = StoredResponse::decode_headers(headers.as_deref().unwrap_or_default())
        .ok_or_else(|| StoreError::new("stored response headers are corrupt"))?;
    Ok(Begin::Replay(StoredResponse {
        status,
        headers,
        body: body.unwrap_or_default(),
    }))
}

#[cfg(any(feature = "sqlite", feature = "postgres"))]
/// Maps the row count of a conditional statement on one key: 1 = done, 0 = the condition
/// did not hold. Anything else is impossible with a primary key; fail closed.
pub(crate) fn one_row(rows: u64, what: &str) -> Result<bool, StoreError> {
    match rows {
        1 => Ok(true),
        0 => Ok(false),
        n => Err(StoreError::new(format!(
            "{what} touched {n} rows; refusing to trust it"
        ))),
    }
}

#[cfg(any(feature = "sqlite", feature = "postgres"))]
/// A claim row read back, its state checked (an unknown state fails closed).
pub(crate) fn record(
    key: String,
    owner: String,
    state: &str,
    valid_before: Option<i64>,
) -> Result<ClaimRecord, StoreError> {
    let state = ClaimState::parse(state)
        .ok_or_else(|| StoreError::new(format!("unknown claim state `{state}`")))?;
    Ok(ClaimRecord {
        key,
        owner,
        state,
        valid_before: valid_before.and_then(|v| u64::try_from(v).ok()),
    })
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
