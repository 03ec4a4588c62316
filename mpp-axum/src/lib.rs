//! # mpp-axum
//!
//! Get paid on any axum route over the Machine Payments Protocol: `.layer(charge("0.01"))`.
//!
//! A request without payment gets `402 Payment Required` with one `WWW-Authenticate: Payment`
//! challenge per configured method and an `application/problem+json` body. The client pays and
//! retries with `Authorization: Payment <credential>`; the layer checks the challenge binding,
//! the route, the expiry and (optionally) the body digest, lets the method verify and settle,
//! runs the handler and adds `Payment-Receipt`. Failures get a fresh challenge and a problem
//! whose `type` says why; an unreachable node or database gets `503`, never a free pass.
//!
//! ```
//! use axum::{Router, routing::get};
//! use mpp_axum::{Mpp, PaymentReceipt};
//! # use mpp_core::testing::TestMethod as Tempo;
//!
//! async fn fortune(paid: PaymentReceipt) -> String {
//!     format!("Fortune favours the bold (tx {})", paid.reference())
//! }
//!
//! # fn main() -> Result<(), mpp_axum::ConfigError> {
//! # let tempo = Tempo::new("tempo");
//! let mpp = Mpp::new("an-hmac-secret-of-at-least-32-bytes")?.method(tempo);
//! let app: Router = Router::new()
//!     .route("/fortune", get(fortune).layer(mpp.charge("0.01")?))
//!     .route("/health", get(|| async { "ok" }))
//!     .layer(mpp.layer());
//! # Ok(()) }
//! ```
//!
//! `mpp-axum` knows nothing about any payment network: methods plug in through
//! [`mpp_core::Method`] (the Tempo method lives in `mpp-tempo`), and the payment logic itself
//! is [`mpp_core::gate`], which this crate adapts to HTTP (`gate.rs`: realm, scope,
//! `Accept-Payment`, body digest, `Authorization`).

mod body;
mod charge;
mod config;
pub mod cors;
mod future;
mod gate;
pub mod headers;
mod pricing;
mod receipt;
mod response;

pub use body::PaymentBody;
pub use charge::{Charge, ChargeLayer, charge, charge_with, try_charge};
pub use config::{ConfigError, Mpp, MppLayer, MppService};
pub use future::ResponseFuture;
pub use pricing::{PriceError, PriceFn};
pub use receipt::{MissingPaymentLayer, PaymentReceipt};
