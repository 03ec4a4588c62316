//! # mpp-tempo
//!
//! The Tempo payment method for MPP: stablecoin charges on a Tempo chain, verified on a real
//! node, with replay protection in SQLite or Postgres.
//!
//! Build a [`Tempo`] once and hand it to the payment gate (`mpp_axum::Mpp::method`, or
//! [`mpp_core::PaymentGate::method`] directly):
//!
//! ```no_run
//! use std::sync::Arc;
//! use mpp_core::PaymentGate;
//! use mpp_tempo::Tempo;
//! use mpp_tempo::store::SqliteStore;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let store = SqliteStore::open("mpp.db").await?;           // creates and migrates the file
//! let tempo = Tempo::builder()
//!     .rpc_url("http://127.0.0.1:8545")                    // or .chain(TempoChain::Moderato)
//!     .recipient("0x742d35Cc6634C0532925a3b844Bc9e7595f8fE00")
//!     .store(Arc::new(store))                               // default: SQLite `mpp-tempo.db`
//!     .build()                                              // reads the node's chain id
//!     .await?;
//! let gate = PaymentGate::new("an-hmac-secret-of-at-least-32-bytes")?.method(tempo);
//! # let _ = gate;
//! # Ok(()) }
//! ```
//!
//! What it holds:
//!
//! - [`Tempo`] and [`TempoBuilder`]: the method. It serves the `charge` intent: pull
//!   credentials (signed `0x76` transactions, or `0x78` envelopes it co-signs as fee payer),
//!   push credentials (transaction hashes) and zero-amount proofs.
//! - [`charge`]: the charge intent's terms, payloads and offline checks.
//! - [`store`]: where replay keys are claimed ([`store::SqliteStore`], [`store::PgStore`],
//!   [`store::MemoryStore`]). The SQL stores run their own migrations, tracked in their own
//!   table ([`store::MIGRATIONS_TABLE`]), so they share a database with the application's.
//! - [`session`]: the `session` intent (payment channels): terms, channel ids, EIP-712
//!   vouchers, credential payloads and receipts for v1 and v2, and the channel state
//!   ([`session::store::ChannelStore`] on memory, SQLite or Postgres). Its on-chain half
//!   (open, top-up, settle and close transactions) is not wired into [`Tempo`] yet.
//! - [`ChainClient`]: JSON-RPC access to the node, below the intents, with its own
//!   [`ChainError`].
//! - `client` (feature `client`): [`client::TempoPayer`], an [`mpp_core::Payer`] that pays
//!   Tempo challenges, and `session::TempoSessionPayer`, which pays sessions (opens a
//!   channel, then pays with vouchers).
//! - `testing` (feature `testing`): a local `anvil --network tempo` node for tests.
//!
//! Features: `sqlite` and `postgres` (both default) gate [`store::SqliteStore`] and
//! [`store::PgStore`] with their sqlx backends; `client`; `testing`. TLS (https nodes,
//! Postgres `sslmode=require`/`verify-full`) is always on, on rustls with the aws-lc provider,
//! trusting the system roots (`SSL_CERT_FILE` works) plus any root certificate added in code.
//!
//! The alloy types a configuration names are re-exported: [`Address`], [`B256`],
//! [`PrivateKeySigner`].

mod address;
mod chain;
mod chains;
mod challenge;
pub mod charge;
#[cfg(feature = "client")]
pub mod client;
mod hex;
mod method;
pub mod session;
pub mod store;
#[cfg(feature = "testing")]
pub mod testing;
mod tokens;

pub use address::{AddressError, IntoAddress, parse_address};
pub use alloy::primitives::{Address, B256};
pub use alloy::signers::local::PrivateKeySigner;
pub use chain::{ChainClient, ChainError, DEFAULT_BROADCAST_TIMEOUT, DEFAULT_RPC_TIMEOUT};
pub use chains::TempoChain;
pub use challenge::{ChallengeView, ChallengeViewError};
pub use charge::{
    ChargeContext, ChargeError, ChargeKind, ChargeMode, SettledCharge, SponsorBudget,
    SponsorPolicy, TempoChargeRequest,
};
pub use method::{DEFAULT_MAINTENANCE_INTERVAL, DEFAULT_STORE_PATH, Tempo, TempoBuilder};
pub use tokens::{PATH_USD, USDC_E};

/// The method id in challenges.
pub(crate) const METHOD_NAME: &str = "tempo";
/// The one intent served so far.
pub(crate) const CHARGE_INTENT: &str = "charge";
