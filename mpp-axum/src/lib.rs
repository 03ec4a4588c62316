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
//! use mpp_axum::{Mpp, PaymentReceipt, charge};
//! # use mpp_core::{BoxFuture, Method, MethodError, PriceTerms, Verified, VerifyContext};
//! # struct Tempo;
//! # impl Method for Tempo {
//! #     fn name(&self) -> &str { "tempo" }
//! #     fn supports_intent(&self, i: &str) -> bool { i == "charge" }
//! #     fn request(&self, t: &PriceTerms) -> Result<serde_json::Value, MethodError> {
//! #         Ok(serde_json::json!({"amount": t.amount.to_base_units(6)?.to_string()}))
//! #     }
//! #     fn verify<'a>(&'a self, _: VerifyContext<'a>) -> BoxFuture<'a, Result<Verified, MethodError>> {
//! #         Box::pin(async { Err(MethodError::verification_failed("example")) })
//! #     }
//! # }
//!
//! async fn fortune(paid: PaymentReceipt) -> String {
//!     format!("Fortune favours the bold (tx {})", paid.reference())
//! }
//!
//! let mpp = Mpp::new("an-hmac-secret-of-at-least-32-bytes").unwrap().method(Tempo);
//! let app: Router = Router::new()
//!     .route("/fortune", get(fortune).layer(charge("0.01")))
//!     .route("/health", get(|| async { "ok" }))
//!     .layer(mpp.layer());
//! ```
//!
//! `mpp-axum` knows nothing about any payment network: methods plug in through
//! [`mpp_core::Method`] (the Tempo method lives in `mpp-tempo`).

pub mod charge;
pub mod config;
pub mod cors;
mod pipeline;
mod pricing;
pub mod receipt;
pub mod response;

pub use charge::{Charge, ChargeLayer, PaymentBody, charge, charge_with, try_charge};
pub use config::{ConfigError, Mpp, MppLayer, MppService};
pub use pricing::{PriceError, PriceFn};
pub use receipt::PaymentReceipt;
pub use response::PAYMENT_RECEIPT;
