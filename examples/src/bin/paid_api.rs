//! A paid API: `GET /fortune` costs 0.01 pathUSD on Tempo; `GET /health` is free.
//!
//! ```text
//! TEMPO_RPC_URL=http://127.0.0.1:8545 cargo run -p mpp-examples --bin paid-api
//! ```
//!
//! Environment: `PORT` (3000), `TEMPO_RPC_URL` (http://127.0.0.1:8545), `MPP_SECRET_KEY`
//! (at least 32 bytes; a development default is used, with a warning, when unset),
//! `MPP_RECIPIENT` (dev account 1 of the local node), `DATABASE_URL` (`sqlite://mpp-demo.db`;
//! `postgres://...` for a shared Postgres), `MPP_FEE_PAYER_KEY` (optional: a key that pays the
//! gas of pull payments, so payers need no fee token).

use anyhow::Context as _;
use mpp_axum::Mpp;
use mpp_tempo::Tempo;
use mpp_tempo::charge::SponsorPolicy;
use mpp_tempo::store::{PgStore, ReplayStore, SqliteStore};
use std::sync::Arc;

/// Used only when `MPP_SECRET_KEY` is unset, so the demo runs with no setup.
const DEV_SECRET: &str = "mpp-demo-secret-do-not-use-in-production";
/// Dev account 1 of `anvil --network tempo`.
const DEV_RECIPIENT: &str = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,mpp_axum=debug".into()),
        )
        .init();
    let env =
        |name: &str, default: &str| std::env::var(name).unwrap_or_else(|_| default.to_owned());
    let port: u16 = env("PORT", "3000").parse().context("PORT")?;
    let rpc_url = env("TEMPO_RPC_URL", "http://127.0.0.1:8545");
    let secret = std::env::var("MPP_SECRET_KEY").unwrap_or_else(|_| {
        tracing::warn!(
            "MPP_SECRET_KEY is unset: using the demo secret (never do this in production)"
        );
        DEV_SECRET.to_owned()
    });
    let recipient = env("MPP_RECIPIENT", DEV_RECIPIENT)
        .parse()
        .context("MPP_RECIPIENT")?;
    let database_url = env("DATABASE_URL", "sqlite://mpp-demo.db");

    let store: Arc<dyn ReplayStore> = if database_url.starts_with("postgres") {
        Arc::new(
            PgStore::connect(&database_url)
                .await
                .context("DATABASE_URL (postgres)")?,
        )
    } else {
        let path = database_url
            .trim_start_matches("sqlite://")
            .trim_start_matches("sqlite:");
        Arc::new(
            SqliteStore::open(path)
                .await
                .context("DATABASE_URL (sqlite)")?,
        )
    };
    let mut tempo = Tempo::builder()
        .rpc_url(&rpc_url)
        .recipient(recipient)
        .store(store);
    if let Ok(key) = std::env::var("MPP_FEE_PAYER_KEY") {
        let sponsor = mpp_examples::signer_from_hex(&key).context("MPP_FEE_PAYER_KEY")?;
        tracing::info!(fee_payer = %sponsor.address(), "sponsoring the gas of pull payments");
        tempo = tempo.fee_payer(sponsor, SponsorPolicy::default());
    }
    let tempo = tempo
        .build()
        .await
        .with_context(|| format!("connecting to the Tempo node at {rpc_url}"))?;
    tracing::info!(chain_id = tempo.chain_id(), recipient = %tempo.recipient(), "tempo method ready");

    let mpp = Mpp::new(secret)?.method(tempo);
    let app = mpp_examples::paid_api(&mpp)?;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .context("bind")?;
    tracing::info!("paid-api listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}
