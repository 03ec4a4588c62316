//! [`PgStore`]: the scale-out store, one Postgres database shared by many API instances.
//!
//! A claim is one `INSERT ... ON CONFLICT DO UPDATE ... WHERE` statement. Postgres makes it
//! atomic across connections: of concurrent inserts of one key exactly one inserts, and a
//! concurrent take-over of an expired row re-checks the `WHERE` against the winner's new
//! expiry, so it too has exactly one winner.
//!
//! Queries are unchecked `sqlx::query` calls with binds; see the note in
//! [`super::sqlite`] for why.

use std::sync::LazyLock;
use std::time::Duration;

use mpp_core::BoxFuture;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use time::OffsetDateTime;

use super::{
    Claim, DEFAULT_OPERATION_TIMEOUT, ReplayStore, StoreError, claim_from_rows, now_unix_ms,
    unix_ms_ceil, with_deadline, with_own_table,
};

/// The Postgres schema (`mpp-tempo/migrations/postgres`), tracked in
/// [`MIGRATIONS_TABLE`](super::MIGRATIONS_TABLE) and run by [`PgStore::migrate`].
///
/// sqlx serializes concurrent runs with an advisory lock, so many instances may start at once.
pub static MIGRATOR: LazyLock<Migrator> =
    LazyLock::new(|| with_own_table(sqlx::migrate!("./migrations/postgres")));

/// Connections per pool opened by [`PgStore::connect`].
const MAX_CONNECTIONS: u32 = 10;

/// How long [`PgStore::connect`]'s pool waits for a connection.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

const CLAIM_SQL: &str = "INSERT INTO replay_keys (key, expires_at) VALUES ($1, $2) \
     ON CONFLICT (key) DO UPDATE SET expires_at = EXCLUDED.expires_at \
     WHERE replay_keys.expires_at <= $3";
const RELEASE_SQL: &str = "DELETE FROM replay_keys WHERE key = $1";
const PURGE_SQL: &str = "DELETE FROM replay_keys WHERE expires_at <= $1";

/// A [`ReplayStore`] in a Postgres database.
///
/// Cloning is cheap and shares the connection pool.
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
    timeout: Duration,
}

impl PgStore {
    /// Connects to `url` (`postgres://user:pass@host:port/db`) and brings the schema up to
    /// date. Fails if the database cannot be reached; the error names the host, not the
    /// password.
    ///
    /// TLS follows the URL's `sslmode`, as with libpq: `require` encrypts without checking the
    /// certificate, `verify-ca` checks it against the roots, `verify-full` also checks the
    /// host name. The roots are the system's (`SSL_CERT_FILE` works) plus `sslrootcert=<path>`
    /// from the URL, or see [`PgStore::connect_with_root_certificate`].
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let options = parse_url(url)?;
        Self::connect_with(options).await
    }

    /// [`PgStore::connect`], also trusting the PEM certificate(s) `pem` (e.g. a managed
    /// database's CA bundle) for `sslmode=verify-ca` / `verify-full`.
    pub async fn connect_with_root_certificate(
        url: &str,
        pem: impl Into<Vec<u8>>,
    ) -> Result<Self, StoreError> {
        let options = parse_url(url)?.ssl_root_cert_from_pem(pem.into());
        Self::connect_with(options).await
    }

    /// Connects with sqlx's `options` (TLS mode, root certificate, client certificate, ...)
    /// and brings the schema up to date.
    pub async fn connect_with(options: PgConnectOptions) -> Result<Self, StoreError> {
        // Host, port and database name only: the options also hold the password.
        let target = format!(
            "{}:{}/{}",
            options.get_host(),
            options.get_port(),
            options.get_database().unwrap_or("")
        );
        let at_target = |e: StoreError| StoreError::new(format!("Postgres at {target}: {}", e.0));
        let pool = PgPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options)
            .await
            .map_err(|e| at_target(e.into()))?;
        Self::from_pool(pool).await.map_err(at_target)
    }

    /// Wraps an existing pool and brings the schema up to date.
    pub async fn from_pool(pool: PgPool) -> Result<Self, StoreError> {
        let store = Self::new_unmigrated(pool);
        store.migrate().await?;
        Ok(store)
    }

    /// Wraps an existing pool without touching the schema (for pools made with
    /// `connect_lazy`, or when migrations are run elsewhere; see [`PgStore::migrate`]).
    pub fn new_unmigrated(pool: PgPool) -> Self {
        Self {
            pool,
            timeout: DEFAULT_OPERATION_TIMEOUT,
        }
    }

    /// Brings the schema up to date ([`MIGRATOR`]).
    pub async fn migrate(&self) -> Result<(), StoreError> {
        with_deadline(self.timeout, "Postgres migration", async {
            MIGRATOR.run(&self.pool).await?;
            Ok(())
        })
        .await
    }

    /// Sets how long one operation may take before it fails with a [`StoreError`]
    /// (default [`DEFAULT_OPERATION_TIMEOUT`]). This also bounds a database that accepts
    /// connections but never answers.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The underlying pool (for inspection in tests and maintenance).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Deletes expired replay keys and returns how many were deleted. Call it now and then;
    /// expired keys are harmless but take space.
    pub async fn purge_expired(&self) -> Result<u64, StoreError> {
        with_deadline(self.timeout, "Postgres purge", async {
            let done = sqlx::query(PURGE_SQL)
                .bind(now_unix_ms())
                .execute(&self.pool)
                .await?;
            Ok(done.rows_affected())
        })
        .await
    }

    /// Closes the pool; later operations fail with a [`StoreError`].
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

impl ReplayStore for PgStore {
    fn claim<'a>(
        &'a self,
        key: &'a str,
        expires_at: OffsetDateTime,
    ) -> BoxFuture<'a, Result<Claim, StoreError>> {
        Box::pin(with_deadline(self.timeout, "Postgres claim", async move {
            let done = sqlx::query(CLAIM_SQL)
                .bind(key)
                .bind(unix_ms_ceil(expires_at))
                .bind(now_unix_ms())
                .execute(&self.pool)
                .await?;
            let claim = claim_from_rows(done.rows_affected())?;
            tracing::debug!(key, ?claim, "Postgres replay claim");
            Ok(claim)
        }))
    }

    fn release<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(with_deadline(
            self.timeout,
            "Postgres release",
            async move {
                sqlx::query(RELEASE_SQL)
                    .bind(key)
                    .execute(&self.pool)
                    .await?;
                tracing::debug!(key, "Postgres replay release");
                Ok(())
            },
        ))
    }
}

/// Parses a `postgres://` URL; the error shows neither the URL nor its password.
fn parse_url(url: &str) -> Result<PgConnectOptions, StoreError> {
    url.parse::<PgConnectOptions>().map_err(|e| {
        StoreError::new(format!(
            "the Postgres URL is not valid (expected postgres://user:password@host:port/database\
             [?sslmode=verify-full]): {e}"
        ))
    })
}
