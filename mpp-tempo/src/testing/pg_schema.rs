//! A Postgres schema of a test's own, so that tests sharing one database never see each
//! other's rows (settlers and purges scan every channel of their store).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use sqlx::AssertSqlSafe;
use sqlx::postgres::{PgConnectOptions, PgPool};

use crate::store::{PgStore, StoreError};

/// A fresh schema in the database at a URL, dropped by [`PgSchema::drop`]. Stores opened on
/// it ([`PgSchema::store`]) run their migrations there.
#[derive(Debug)]
pub struct PgSchema {
    admin: PgPool,
    options: PgConnectOptions,
    name: String,
}

impl PgSchema {
    /// Creates a schema named `<prefix>_<unique suffix>` in the database at `url`.
    pub async fn create(url: &str, prefix: &str) -> Result<Self, String> {
        static N: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let name = format!(
            "{prefix}_{}_{nanos}_{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let admin = PgPool::connect(url)
            .await
            .map_err(|e| format!("connect to {url}: {e}"))?;
        sqlx::query(AssertSqlSafe(format!("CREATE SCHEMA {name}")))
            .execute(&admin)
            .await
            .map_err(|e| format!("create schema {name}: {e}"))?;
        let options = url
            .parse::<PgConnectOptions>()
            .map_err(|e| format!("{url}: {e}"))?
            .options([("search_path", name.as_str())]);
        Ok(Self {
            admin,
            options,
            name,
        })
    }

    /// Connect options whose `search_path` is this schema.
    pub fn options(&self) -> PgConnectOptions {
        self.options.clone()
    }

    /// A new store (its own pool) on this schema.
    pub async fn store(&self) -> Result<PgStore, StoreError> {
        PgStore::connect_with(self.options()).await
    }

    /// A pool of the database the schema was made in (for reading settings, say).
    pub fn admin(&self) -> &PgPool {
        &self.admin
    }

    /// Drops the schema and everything in it (best effort).
    pub async fn drop(self) {
        let _ = sqlx::query(AssertSqlSafe(format!("DROP SCHEMA {} CASCADE", self.name)))
            .execute(&self.admin)
            .await;
    }
}
