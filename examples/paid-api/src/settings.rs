//! The environment the paid API reads, with defaults that work against a local node.
//!
//! `PORT` (3000), `TEMPO_RPC_URL` (http://127.0.0.1:8545), `MPP_SECRET_KEY` (at least 32
//! bytes; a development default is used, with a warning, when unset), `MPP_RECIPIENT` (dev
//! account 1 of the local node), `DATABASE_URL` (`sqlite://mpp-demo.db`; `postgres://...`
//! for a Postgres shared by several instances), `MPP_FEE_PAYER_KEY` (optional: a key that pays
//! the gas of pull payments, so payers need no fee token).

use anyhow::Context as _;
use mpp_tempo::store::{PgStore, ReplayStore, SqliteStore};
use mpp_tempo::{SponsorPolicy, Tempo};
use std::sync::Arc;

/// Used only when `MPP_SECRET_KEY` is unset, so the demo runs with no setup.
const DEV_SECRET: &str = "mpp-demo-secret-do-not-use-in-production";
/// Dev account 1 of `anvil --network tempo`.
const DEV_RECIPIENT: &str = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8";

pub(crate) struct Settings {
    pub(crate) port: u16,
    pub(crate) secret: String,
    rpc_url: String,
    recipient: String,
    database_url: String,
    fee_payer_key: Option<String>,
}

impl Settings {
    pub(crate) fn from_env() -> anyhow::Result<Self> {
        let env =
            |name: &str, default: &str| std::env::var(name).unwrap_or_else(|_| default.to_owned());
        let secret = std::env::var("MPP_SECRET_KEY").unwrap_or_else(|_| {
            tracing::warn!(
                "MPP_SECRET_KEY is unset: using the demo secret (never do this in production)"
            );
            DEV_SECRET.to_owned()
        });
        Ok(Self {
            port: env("PORT", "3000").parse().context("PORT")?,
            secret,
            rpc_url: env("TEMPO_RPC_URL", "http://127.0.0.1:8545"),
            recipient: env("MPP_RECIPIENT", DEV_RECIPIENT),
            database_url: env("DATABASE_URL", "sqlite://mpp-demo.db"),
            fee_payer_key: std::env::var("MPP_FEE_PAYER_KEY").ok(),
        })
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
        let recipient = self.recipient.parse().context("MPP_RECIPIENT")?;
        let mut tempo = Tempo::builder()
            .rpc_url(&self.rpc_url)
            .recipient(recipient)
            .store(self.store().await?);
        if let Some(key) = &self.fee_payer_key {
            let sponsor = key
                .trim()
                .trim_start_matches("0x")
                .parse::<alloy::signers::local::PrivateKeySigner>()
                .context("MPP_FEE_PAYER_KEY")?;
            tracing::info!(fee_payer = %sponsor.address(), "sponsoring the gas of pull payments");
            tempo = tempo.fee_payer(sponsor, SponsorPolicy::default());
        }
        tempo
            .build()
            .await
            .with_context(|| format!("connecting to the Tempo node at {}", self.rpc_url))
    }
}
