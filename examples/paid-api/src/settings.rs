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
//! - Sessions (`GET /ping`, `GET /tokens`) when `MPP_ESCROW` names a v1 `TempoStreamChannel`
//!   escrow on the node: `MPP_PAYEE_KEY` (required then) is the server's key that settles and
//!   closes channels (on a v1 escrow only the payee may, so the recipient defaults to its
//!   address) and pays its fees in `MPP_PAYEE_FEE_TOKEN` (pathUSD); channel state lives in
//!   `DATABASE_URL` beside the replay keys.

use anyhow::Context as _;
use mpp_axum::Mpp;
use mpp_tempo::session::store::ChannelStore;
use mpp_tempo::session::{SessionConfig, SettlerConfig, SettlerHandle, TempoSessions};
use mpp_tempo::store::{PgStore, ReplayStore, SqliteStore};
use mpp_tempo::{Address, PATH_USD, PrivateKeySigner, SponsorPolicy, Tempo, parse_address};
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
    escrow: Option<String>,
    payee_key: Option<String>,
    payee_fee_token: String,
}

/// The two stores `DATABASE_URL` names: replay keys and channel state, one database.
struct Stores {
    replay: Arc<dyn ReplayStore>,
    channels: Arc<dyn ChannelStore>,
}

/// Sessions served, and the background settler that must live as long as the server.
pub(crate) struct Sessions {
    pub(crate) sessions: TempoSessions,
    pub(crate) _settler: SettlerHandle,
}

fn parse_key(name: &str, key: &str) -> anyhow::Result<PrivateKeySigner> {
    key.trim()
        .trim_start_matches("0x")
        .parse::<PrivateKeySigner>()
        .with_context(|| format!("{name}: expected a 32-byte hex private key"))
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
            escrow: std::env::var("MPP_ESCROW").ok().filter(|e| !e.is_empty()),
            payee_key: std::env::var("MPP_PAYEE_KEY")
                .ok()
                .filter(|k| !k.is_empty()),
            payee_fee_token: env("MPP_PAYEE_FEE_TOKEN", &format!("{PATH_USD:#x}")),
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

    /// The stores `DATABASE_URL` names.
    async fn stores(&self) -> anyhow::Result<Stores> {
        let url = &self.database_url;
        Ok(if url.starts_with("postgres") {
            let store = Arc::new(
                PgStore::connect(url)
                    .await
                    .context("DATABASE_URL (postgres)")?,
            );
            Stores {
                replay: store.clone(),
                channels: store,
            }
        } else {
            let path = url
                .trim_start_matches("sqlite://")
                .trim_start_matches("sqlite:");
            let store = Arc::new(
                SqliteStore::open(path)
                    .await
                    .context("DATABASE_URL (sqlite)")?,
            );
            Stores {
                replay: store.clone(),
                channels: store,
            }
        })
    }

    /// The payee's key, when sessions are configured.
    fn payee(&self) -> anyhow::Result<Option<PrivateKeySigner>> {
        match (&self.escrow, &self.payee_key) {
            (None, _) => Ok(None),
            (Some(_), None) => anyhow::bail!(
                "MPP_ESCROW is set: MPP_PAYEE_KEY must name the payee's key, which settles and \
                 closes channels"
            ),
            (Some(_), Some(key)) => parse_key("MPP_PAYEE_KEY", key).map(Some),
        }
    }

    /// The Tempo method connected to the node, and the sessions when `MPP_ESCROW` is set.
    pub(crate) async fn tempo(&self) -> anyhow::Result<(Tempo, Option<Sessions>)> {
        let stores = self.stores().await?;
        let payee = self.payee()?;
        // On a v1 escrow only the payee settles: it is the recipient unless one is named.
        let recipient = match (&payee, std::env::var("MPP_RECIPIENT")) {
            (Some(payee), Err(_)) => format!("{:#x}", payee.address()),
            _ => self.recipient.clone(),
        };
        let mut tempo = Tempo::builder()
            .rpc_url(&self.rpc_url)
            .recipient(&recipient)
            .store(stores.replay);
        if let Some(key) = &self.fee_payer_key {
            let sponsor = parse_key("MPP_FEE_PAYER_KEY", key)?;
            tracing::info!(fee_payer = %sponsor.address(), "sponsoring the gas of pull payments");
            tempo = tempo.fee_payer(sponsor, SponsorPolicy::default());
        }
        let tempo = tempo
            .build()
            .await
            .context("MPP_RECIPIENT / TEMPO_RPC_URL")?;
        let (Some(escrow), Some(payee)) = (&self.escrow, payee) else {
            return Ok((tempo, None));
        };
        let escrow: Address = parse_address(escrow).context("MPP_ESCROW")?;
        let fee_token = parse_address(&self.payee_fee_token).context("MPP_PAYEE_FEE_TOKEN")?;
        let sessions = SessionConfig::v1(escrow)
            .server_key(payee, fee_token)
            .channel_store(stores.channels)
            // 0.01 in a 6-decimal token: a hundred pings, or a 100-token stream.
            .suggested_deposit(10_000)
            .build(&tempo)
            .await
            .context("sessions (MPP_ESCROW / MPP_PAYEE_KEY)")?;
        let settler = sessions.spawn_settler(SettlerConfig::default());
        tracing::info!(%escrow, "serving sessions: GET /ping, GET /tokens");
        Ok((
            tempo,
            Some(Sessions {
                sessions,
                _settler: settler,
            }),
        ))
    }
}
