//! The environment the paid API reads, with defaults that work against a local node.
//!
//! - `MPP_SECRET_KEY` (required, at least 32 bytes, the same on every instance; make one with
//!   `openssl rand -base64 32`), unless `MPP_DEMO=1` says this is a local demo, which then uses
//!   a fixed demo secret.
//! - `MPP_REALM` (optional; default: each request's host name).
//! - `PORT` (3000), `TEMPO_RPC_URL` (http://127.0.0.1:8545; an `https://` node works too),
//!   `MPP_RECIPIENT` (dev account 1 of the local node).
//! - `DATABASE_URL` (`sqlite://mpp-demo.db`; `postgres://...` for a Postgres shared by several
//!   instances, with `?sslmode=require` or `verify-full` for TLS).
//! - `MPP_FEE_PAYER_KEY` (optional: a key that pays the gas of pull payments, so payers need
//!   no fee token).

use anyhow::Context as _;
use mpp_axum::Mpp;
use mpp_tempo::store::{PgStore, ReplayStore, SqliteStore};
use mpp_tempo::{PrivateKeySigner, SponsorPolicy, Tempo};
use std::sync::Arc;

/// Used only with `MPP_DEMO=1`, so the demo runs with no setup.
const DEMO_SECRET: &str = "mpp-demo-secret-do-not-use-in-production";
/// Dev account 1 of `anvil --network tempo`.
const DEV_RECIPIENT: &str = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8";

pub(crate) struct Settings {
    pub(crate) port: u16,
    rpc_url: String,
    recipient: String,
    database_url: String,
    fee_payer_key: Option<String>,
}

fn env(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

impl Settings {
    pub(crate) fn from_env() -> anyhow::Result<Self> {
        Ok(Self {
            port: env("PORT", "3000").parse().context("PORT")?,
            rpc_url: env("TEMPO_RPC_URL", "http://127.0.0.1:8545"),
            recipient: env("MPP_RECIPIENT", DEV_RECIPIENT),
            database_url: env("DATABASE_URL", "sqlite://mpp-demo.db"),
            fee_payer_key: std::env::var("MPP_FEE_PAYER_KEY").ok(),
        })
    }

    /// The payment configuration: from `MPP_SECRET_KEY` (and `MPP_REALM`), or the demo secret
    /// when `MPP_DEMO=1`.
    pub(crate) fn mpp(&self) -> anyhow::Result<Mpp> {
        if std::env::var("MPP_SECRET_KEY").is_err() && env("MPP_DEMO", "") == "1" {
            tracing::warn!("MPP_DEMO=1: using the demo secret (never do this in production)");
            return Ok(Mpp::new(DEMO_SECRET)?);
        }
        Mpp::from_env().context("set MPP_SECRET_KEY (or MPP_DEMO=1 for a local demo)")
    }

    /// The replay store `DATABASE_URL` names.
    async fn store(&self) -> anyhow::Result<Arc<dyn ReplayStore>> {
        let url = &self.database_url;
        Ok(if url.starts_with("postgres") {
            Arc::new(
                PgStore::connect(url)
                    .await
                    .context("DATABASE_URL (postgres)")?,
            )
        } else {
            let path = url
                .trim_start_matches("sqlite://")
                .trim_start_matches("sqlite:");
            Arc::new(
                SqliteStore::open(path)
                    .await
                    .context("DATABASE_URL (sqlite)")?,
            )
        })
    }

    /// The Tempo method, connected to the node.
    pub(crate) async fn tempo(&self) -> anyhow::Result<Tempo> {
        let mut tempo = Tempo::builder()
            .rpc_url(&self.rpc_url)
            .recipient(&self.recipient)
            .store(self.store().await?);
        if let Some(key) = &self.fee_payer_key {
            let sponsor = key
                .trim()
                .trim_start_matches("0x")
                .parse::<PrivateKeySigner>()
                .context("MPP_FEE_PAYER_KEY: expected a 32-byte hex private key")?;
            tracing::info!(fee_payer = %sponsor.address(), "sponsoring the gas of pull payments");
            tempo = tempo.fee_payer(sponsor, SponsorPolicy::default());
        }
        tempo.build().await.context("MPP_RECIPIENT / TEMPO_RPC_URL")
    }
}
