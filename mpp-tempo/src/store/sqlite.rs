//! [`SqliteStore`]: the embedded default, one SQLite file in WAL mode.
//!
//! Several handles (pools) or processes may open the same file: a claim is one
//! `INSERT ... ON CONFLICT DO UPDATE ... WHERE` statement, which SQLite runs under its
//! database write lock, and concurrent writers wait for that lock up to the busy timeout.
//!
//! Queries are unchecked `sqlx::query` calls with binds, not `query!` macros: this crate talks
//! to two database kinds, so the macros would need a live database of each kind or a
//! hand-merged `.sqlx` offline cache at build time, for a handful of one-line statements. The
//! integration tests (`tests/store.rs`) run every statement against real SQLite and Postgres.

use std::path::Path;
use std::str::FromStr;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use mpp_core::BoxFuture;
use mpp_core::idempotency::{Begin, IdempotencyError, IdempotencyStore, StoredResponse};
use sqlx::Connection as _;
use sqlx::migrate::Migrator;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};
use time::OffsetDateTime;

use crate::session::store::ChannelWriter;

use super::{
    Claim, ClaimRecord, ClaimState, DEFAULT_OPERATION_TIMEOUT, FeeSpend, NewClaim, ReplayStore,
    StoreError, StoredRow, now_unix_ms, one_row, record, stored_begin, unix_ms_ceil, with_deadline,
    with_own_table,
};

/// The SQLite schema (`mpp-tempo/migrations/sqlite`), tracked in
/// [`MIGRATIONS_TABLE`](super::MIGRATIONS_TABLE) and run by [`SqliteStore::migrate`].
pub static MIGRATOR: LazyLock<Migrator> =
    LazyLock::new(|| with_own_table(sqlx::migrate!("./migrations/sqlite")));

/// How long a statement waits for another connection's write lock before failing.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Connections per pool opened by [`SqliteStore::open`]. SQLite serializes writers anyway.
const MAX_CONNECTIONS: u32 = 4;

const CLAIM_SQL: &str = "INSERT INTO replay_keys (key, expires_at, state, owner, valid_before) \
     VALUES (?1, ?2, ?3, ?4, ?5) \
     ON CONFLICT (key) DO UPDATE SET expires_at = excluded.expires_at, state = excluded.state, \
     owner = excluded.owner, valid_before = excluded.valid_before \
     WHERE replay_keys.expires_at <= ?6";
const READ_SQL: &str = "SELECT owner, state, valid_before FROM replay_keys \
     WHERE key = ?1 AND expires_at > ?2";
const ADVANCE_SQL: &str = "UPDATE replay_keys SET state = ?4, expires_at = ?5 \
     WHERE key = ?1 AND owner = ?2 AND state = ?3";
const RELEASE_SQL: &str = "DELETE FROM replay_keys WHERE key = ?1 AND owner = ?2 AND state = ?3";
const IN_STATE_SQL: &str = "SELECT key, owner, state, valid_before FROM replay_keys \
     WHERE state = ?1 AND expires_at > ?2 ORDER BY valid_before LIMIT ?3";
const PURGE_SQL: &str = "DELETE FROM replay_keys WHERE expires_at <= ?1";
const SPEND_SQL: &str = "INSERT INTO sponsor_spend (scope, window_start, spent, expires_at) \
     VALUES (?1, ?2, ?3, ?4) ON CONFLICT (scope, window_start) \
     DO UPDATE SET spent = sponsor_spend.spent + excluded.spent \
     WHERE sponsor_spend.spent + excluded.spent <= ?5";
const REFUND_SQL: &str = "UPDATE sponsor_spend SET spent = MAX(spent - ?3, 0) \
     WHERE scope = ?1 AND window_start = ?2";
const PURGE_SPEND_SQL: &str = "DELETE FROM sponsor_spend WHERE expires_at <= ?1";
const BEGIN_SQL: &str = "INSERT INTO idempotent_responses (key, credential, owner, expires_at) \
     VALUES (?1, ?2, ?3, ?4) ON CONFLICT (key) DO UPDATE \
     SET credential = excluded.credential, owner = excluded.owner, status = NULL, \
     headers = NULL, body = NULL, expires_at = excluded.expires_at \
     WHERE idempotent_responses.expires_at <= ?5";
const READ_RESPONSE_SQL: &str = "SELECT credential, status, headers, body FROM idempotent_responses \
     WHERE key = ?1 AND expires_at > ?2";
const COMPLETE_SQL: &str = "UPDATE idempotent_responses SET status = ?3, headers = ?4, body = ?5, \
     expires_at = ?6 WHERE key = ?1 AND owner = ?2 AND status IS NULL";
const ABANDON_SQL: &str =
    "DELETE FROM idempotent_responses WHERE key = ?1 AND owner = ?2 AND status IS NULL";
const PURGE_RESPONSES_SQL: &str = "DELETE FROM idempotent_responses WHERE expires_at <= ?1";

/// A [`ReplayStore`] in one SQLite database file.
///
/// Cloning is cheap and shares the connection pool.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    timeout: Duration,
    /// Where this handle's channel operations queue (see `session::store`).
    channel_writer: Arc<ChannelWriter>,
}

impl SqliteStore {
    /// Opens (creating if missing) the database file at `path`, in WAL mode with
    /// `synchronous = FULL` and a [`BUSY_TIMEOUT`], and brings its schema up to date.
    pub async fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::new()
            .filename(path.as_ref())
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // FULL: a claim survives power loss once `claim` has returned, which is what a
            // replay guard promises; NORMAL could lose the last commits.
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true);
        let in_path = |e: StoreError| {
            StoreError::new(format!(
                "SQLite database `{}`: {}",
                path.as_ref().display(),
                e.0
            ))
        };
        // Switching a fresh file to WAL takes an exclusive lock that the busy timeout does
        // not cover: two processes opening it at once can get SQLITE_BUSY; retry that.
        const ATTEMPTS: u32 = 5;
        let mut attempt = 1;
        let pool = loop {
            match SqlitePoolOptions::new()
                .max_connections(MAX_CONNECTIONS)
                .acquire_timeout(DEFAULT_OPERATION_TIMEOUT)
                .connect_with(options.clone())
                .await
            {
                Ok(pool) => break pool,
                Err(sqlx::Error::Database(e))
                    if attempt < ATTEMPTS && e.code().as_deref() == Some("5") =>
                {
                    tracing::debug!(error = %e, attempt, "SQLite busy while opening; retrying");
                    tokio::time::sleep(Duration::from_millis(50 * u64::from(attempt))).await;
                    attempt += 1;
                }
                Err(e) => return Err(in_path(e.into())),
            }
        };
        tracing::debug!(path = %path.as_ref().display(), "opened SQLite replay store");
        Self::from_pool(pool).await.map_err(in_path)
    }

    /// A private in-memory database (for tests). It lives as long as this store and its
    /// clones, and is not shared with any other store.
    pub async fn in_memory() -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::from_str("sqlite::memory:")?;
        // One connection that never closes: each `:memory:` connection is its own database.
        let pool = SqlitePoolOptions::new()
            .min_connections(1)
            .max_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .acquire_timeout(DEFAULT_OPERATION_TIMEOUT)
            .connect_with(options)
            .await?;
        Self::from_pool(pool).await
    }

    /// Wraps an existing pool and brings its schema up to date.
    ///
    /// Configure the pool's connections with a busy timeout (as [`SqliteStore::open`] does),
    /// or concurrent claims fail with "database is locked" instead of waiting.
    pub async fn from_pool(pool: SqlitePool) -> Result<Self, StoreError> {
        let store = Self::new_unmigrated(pool);
        store.migrate().await?;
        Ok(store)
    }

    /// Wraps an existing pool without touching the schema (when migrations are run
    /// elsewhere; see [`SqliteStore::migrate`]).
    pub fn new_unmigrated(pool: SqlitePool) -> Self {
        Self {
            pool,
            timeout: DEFAULT_OPERATION_TIMEOUT,
            channel_writer: Arc::default(),
        }
    }

    /// Brings the schema up to date ([`MIGRATOR`]), retrying a few times: SQLite migrations
    /// take no lock, so two processes opening a fresh file at once can collide; the loser's
    /// retry then finds them applied.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        const ATTEMPTS: u32 = 5;
        let mut attempt = 1;
        loop {
            match MIGRATOR.run(&self.pool).await {
                Ok(()) => return Ok(()),
                Err(error) if attempt < ATTEMPTS => {
                    tracing::debug!(%error, attempt, "SQLite migration failed; retrying");
                    tokio::time::sleep(Duration::from_millis(50 * u64::from(attempt))).await;
                    attempt += 1;
                }
                Err(error) => return Err(error.into()),
            }
        }
    }

    /// Sets how long one operation may take before it fails with a [`StoreError`]
    /// (default [`DEFAULT_OPERATION_TIMEOUT`]).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// How long one operation may take ([`Self::with_timeout`]).
    pub(crate) fn operation_timeout(&self) -> Duration {
        self.timeout
    }

    /// The writer that runs this handle's channel operations.
    pub(crate) fn channel_writer(&self) -> &ChannelWriter {
        &self.channel_writer
    }

    /// The underlying pool (for inspection in tests and maintenance).
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// Closes the pool; later operations fail with a [`StoreError`].
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

impl ReplayStore for SqliteStore {
    fn claim<'a>(&'a self, claim: NewClaim<'a>) -> BoxFuture<'a, Result<Claim, StoreError>> {
        Box::pin(with_deadline(self.timeout, "SQLite claim", async move {
            let valid_before = claim
                .valid_before
                .map(|v| i64::try_from(v).unwrap_or(i64::MAX));
            let mut conn = self.pool.acquire().await?;
            if let Some(found) = try_claim(&mut conn, &claim, valid_before).await? {
                return Ok(found);
            }
            // The live row it lost to was released before it could be read. Again, as one
            // transaction: the insert locks the row it loses to until that row has been read.
            let mut tx = conn.begin().await?;
            let found = try_claim(&mut tx, &claim, valid_before).await?;
            tx.commit().await?;
            found.ok_or_else(|| StoreError::new("replay claim changed inside a transaction"))
        }))
    }

    fn advance<'a>(
        &'a self,
        key: &'a str,
        owner: &'a str,
        from: ClaimState,
        to: ClaimState,
        expires_at: OffsetDateTime,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(with_deadline(self.timeout, "SQLite advance", async move {
            let done = sqlx::query(ADVANCE_SQL)
                .bind(key)
                .bind(owner)
                .bind(from.as_str())
                .bind(to.as_str())
                .bind(unix_ms_ceil(expires_at))
                .execute(&self.pool)
                .await?;
            let moved = one_row(done.rows_affected(), "replay advance")?;
            tracing::debug!(key, ?from, ?to, moved, "SQLite replay advance");
            Ok(moved)
        }))
    }

    fn release<'a>(
        &'a self,
        key: &'a str,
        owner: &'a str,
        from: ClaimState,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(with_deadline(self.timeout, "SQLite release", async move {
            let done = sqlx::query(RELEASE_SQL)
                .bind(key)
                .bind(owner)
                .bind(from.as_str())
                .execute(&self.pool)
                .await?;
            let released = one_row(done.rows_affected(), "replay release")?;
            tracing::debug!(key, ?from, released, "SQLite replay release");
            Ok(released)
        }))
    }

    fn in_state<'a>(
        &'a self,
        state: ClaimState,
        limit: u32,
    ) -> BoxFuture<'a, Result<Vec<ClaimRecord>, StoreError>> {
        Box::pin(with_deadline(self.timeout, "SQLite scan", async move {
            let rows: Vec<(String, String, String, Option<i64>)> = sqlx::query_as(IN_STATE_SQL)
                .bind(state.as_str())
                .bind(now_unix_ms())
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await?;
            rows.into_iter()
                .map(|(key, owner, state, valid_before)| record(key, owner, &state, valid_before))
                .collect()
        }))
    }

    fn spend<'a>(&'a self, spend: FeeSpend<'a>) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(with_deadline(self.timeout, "SQLite spend", async move {
            let amount = i64::try_from(spend.amount).unwrap_or(i64::MAX);
            // One transaction: a scope over its cap undoes the others.
            let mut tx = self.pool.begin().await?;
            for &(scope, cap) in spend.scopes {
                let cap = i64::try_from(cap).unwrap_or(i64::MAX);
                // The insert of a window's first spend has no condition: checked here.
                let done = if amount > cap {
                    0
                } else {
                    sqlx::query(SPEND_SQL)
                        .bind(scope)
                        .bind(spend.window_start)
                        .bind(amount)
                        .bind(unix_ms_ceil(spend.window_end))
                        .bind(cap)
                        .execute(&mut *tx)
                        .await?
                        .rows_affected()
                };
                if !one_row(done, "sponsor spend")? {
                    tx.rollback().await?;
                    tracing::debug!(scope, amount, "SQLite sponsor spend refused");
                    return Ok(false);
                }
            }
            tx.commit().await?;
            Ok(true)
        }))
    }

    fn refund<'a>(
        &'a self,
        spend: FeeSpend<'a>,
        amount: u64,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(with_deadline(self.timeout, "SQLite refund", async move {
            let amount = i64::try_from(amount).unwrap_or(i64::MAX);
            let mut tx = self.pool.begin().await?;
            for &(scope, _) in spend.scopes {
                sqlx::query(REFUND_SQL)
                    .bind(scope)
                    .bind(spend.window_start)
                    .bind(amount)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
            Ok(())
        }))
    }

    fn purge_expired(&self) -> BoxFuture<'_, Result<u64, StoreError>> {
        Box::pin(with_deadline(self.timeout, "SQLite purge", async {
            let now = now_unix_ms();
            let mut purged = 0;
            for sql in [PURGE_SQL, PURGE_SPEND_SQL, PURGE_RESPONSES_SQL] {
                purged += sqlx::query(sql)
                    .bind(now)
                    .execute(&self.pool)
                    .await?
                    .rows_affected();
            }
            Ok(purged)
        }))
    }
}

impl IdempotencyStore for SqliteStore {
    fn begin<'a>(
        &'a self,
        key: &'a str,
        credential: &'a str,
        owner: &'a str,
        expires_at: OffsetDateTime,
    ) -> BoxFuture<'a, Result<Begin, IdempotencyError>> {
        Box::pin(async move {
            with_deadline(self.timeout, "SQLite idempotency begin", async move {
                let mut conn = self.pool.acquire().await?;
                if let Some(found) =
                    try_begin(&mut conn, key, credential, owner, expires_at).await?
                {
                    return Ok(found);
                }
                // Expired between the two statements: again, as one transaction.
                let mut tx = conn.begin().await?;
                let found = try_begin(&mut tx, key, credential, owner, expires_at).await?;
                tx.commit().await?;
                found.ok_or_else(|| {
                    StoreError::new("idempotency record changed inside a transaction")
                })
            })
            .await
            .map_err(IdempotencyError::new)
        })
    }

    fn complete<'a>(
        &'a self,
        key: &'a str,
        owner: &'a str,
        response: &'a StoredResponse,
        expires_at: OffsetDateTime,
    ) -> BoxFuture<'a, Result<bool, IdempotencyError>> {
        Box::pin(async move {
            with_deadline(self.timeout, "SQLite idempotency complete", async move {
                let done = sqlx::query(COMPLETE_SQL)
                    .bind(key)
                    .bind(owner)
                    .bind(i32::from(response.status))
                    .bind(response.encode_headers())
                    .bind(response.body.as_slice())
                    .bind(unix_ms_ceil(expires_at))
                    .execute(&self.pool)
                    .await?;
                one_row(done.rows_affected(), "idempotency complete")
            })
            .await
            .map_err(IdempotencyError::new)
        })
    }

    fn abandon<'a>(
        &'a self,
        key: &'a str,
        owner: &'a str,
    ) -> BoxFuture<'a, Result<bool, IdempotencyError>> {
        Box::pin(async move {
            with_deadline(self.timeout, "SQLite idempotency abandon", async move {
                let done = sqlx::query(ABANDON_SQL)
                    .bind(key)
                    .bind(owner)
                    .execute(&self.pool)
                    .await?;
                one_row(done.rows_affected(), "idempotency abandon")
            })
            .await
            .map_err(IdempotencyError::new)
        })
    }
}

/// One claim: insert (or take over an expired row), else read the live row it lost to.
/// `None` when that row was gone before it could be read, which cannot happen inside a
/// transaction: the losing insert holds its lock.
async fn try_claim(
    conn: &mut SqliteConnection,
    claim: &NewClaim<'_>,
    valid_before: Option<i64>,
) -> Result<Option<Claim>, StoreError> {
    let now = now_unix_ms();
    let done = sqlx::query(CLAIM_SQL)
        .bind(claim.key)
        .bind(unix_ms_ceil(claim.expires_at))
        .bind(claim.state.as_str())
        .bind(claim.owner)
        .bind(valid_before)
        .bind(now)
        .execute(&mut *conn)
        .await?;
    // 1: inserted, or took over an expired row; 0: a live claim exists.
    if one_row(done.rows_affected(), "replay claim")? {
        tracing::debug!(key = claim.key, "SQLite replay claim");
        return Ok(Some(Claim::Claimed));
    }
    let row: Option<(String, String, Option<i64>)> = sqlx::query_as(READ_SQL)
        .bind(claim.key)
        .bind(now)
        .fetch_optional(&mut *conn)
        .await?;
    let Some((owner, state, valid_before)) = row else {
        return Ok(None);
    };
    let existing = record(claim.key.to_owned(), owner, &state, valid_before)?;
    tracing::debug!(key = claim.key, state = ?existing.state, "SQLite replay claim exists");
    Ok(Some(Claim::Existing(existing)))
}

/// One idempotency begin, shaped like [`try_claim`].
async fn try_begin(
    conn: &mut SqliteConnection,
    key: &str,
    credential: &str,
    owner: &str,
    expires_at: OffsetDateTime,
) -> Result<Option<Begin>, StoreError> {
    let now = now_unix_ms();
    let done = sqlx::query(BEGIN_SQL)
        .bind(key)
        .bind(credential)
        .bind(owner)
        .bind(unix_ms_ceil(expires_at))
        .bind(now)
        .execute(&mut *conn)
        .await?;
    if one_row(done.rows_affected(), "idempotency begin")? {
        return Ok(Some(Begin::Started));
    }
    let row: Option<StoredRow> = sqlx::query_as(READ_RESPONSE_SQL)
        .bind(key)
        .bind(now)
        .fetch_optional(&mut *conn)
        .await?;
    row.map(|row| stored_begin(credential, row)).transpose()
}
