//! # mpp-axum
//!
//! Get paid on any axum route over the Machine Payments Protocol: `.layer(mpp.charge("0.01")?)`.
//!
//! A request without payment gets `402 Payment Required` with one `WWW-Authenticate: Payment`
//! challenge per configured method and an `application/problem+json` body. The client pays and
//! retries with `Authorization: Payment <credential>`; the layer checks the challenge binding,
//! the route, the expiry and (optionally) the body digest, lets the method verify and settle,
//! runs the handler and adds `Payment-Receipt`. Failures get a fresh challenge and a problem
//! whose `type` says why; an unreachable node or database gets `503`, never a free pass.
//!
//! ```no_run
//! use axum::{Router, routing::get};
//! use mpp_axum::{Mpp, PaymentReceipt};
//! use mpp_tempo::{Tempo, TempoChain};
//!
//! async fn fortune(paid: PaymentReceipt) -> String {
//!     format!("Fortune favours the bold (tx {})", paid.reference())
//! }
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let tempo = Tempo::builder()
//!     .chain(TempoChain::Moderato)
//!     .recipient("0x70997970C51812dc3A010C7d01b50e0d17dc79C8")
//!     .build() // connects to the node; replay keys in ./mpp-tempo.db
//!     .await?;
//! let mpp = Mpp::from_env()?.method(tempo); // MPP_SECRET_KEY
//! let app: Router = Router::new()
//!     // Checked now: a price the methods cannot offer is an error at start-up.
//!     .route("/fortune", get(fortune).route_layer(mpp.charge("0.01")?))
//!     .route("/health", get(|| async { "ok" }))
//!     .layer(mpp.layer());
//! # let _ = app; Ok(()) }
//! ```
//!
//! The examples below use `mpp_core::testing::TestMethod`, an in-process method, so that
//! they run without a node.
//!
//! ## `route_layer`, not `layer`, on a method router
//!
//! `get(h).route_layer(charge)` charges for `GET` only: any other method gets axum's plain
//! `405`. With `get(h).layer(charge)`, the layer also wraps axum's method-not-allowed
//! fallback, so a `POST` is challenged; paying it takes no money (a payment is taken only
//! when the answer is `2xx`: charge on success), but the client was asked to sign one for a
//! `405`. Likewise `Router::route_layer` charges for every route of a router and leaves
//! unknown paths a plain `404`, where `Router::layer` would challenge the `404`.
//!
//! ## A price computed per request
//!
//! [`Mpp::charge_with`] takes a function of the request's head. Amounts are
//! [`DecimalAmount`]s with exact arithmetic; an amount no method can express (a client asked
//! for more decimals than the currency has) is the client's error, answered with `400`.
//!
//! ```
//! use axum::{Router, routing::get};
//! use mpp_axum::{DecimalAmount, Mpp, PriceError, PriceTerms};
//! # use mpp_core::testing::TestMethod;
//!
//! /// 0.002 per item, for `?items=N`.
//! fn per_item(parts: &http::request::Parts) -> Result<PriceTerms, PriceError> {
//!     let items: u64 = parts
//!         .uri
//!         .query()
//!         .and_then(|q| q.strip_prefix("items="))
//!         .and_then(|n| n.parse().ok())
//!         .ok_or_else(|| PriceError::new("query `items=<count>` is required"))?;
//!     let amount = DecimalAmount::from_base_units(2, 3)
//!         .checked_mul(items)
//!         .ok_or_else(|| PriceError::new("too many items"))?;
//!     Ok(PriceTerms::charge(amount))
//! }
//!
//! # fn main() -> Result<(), mpp_axum::ConfigError> {
//! # let mpp = Mpp::new("an-hmac-secret-of-at-least-32-bytes")?.method(TestMethod::new("tempo"));
//! let app: Router = Router::new()
//!     .route("/items", get(|| async { "items" }).route_layer(mpp.charge_with(per_item)?));
//! # Ok(()) }
//! ```
//!
//! ## Under `nest`, and beside the application's own `Authorization`
//!
//! A challenge is bound to the method and the target the client sent (`GET /v1/report?q=1`),
//! also under [`Router::nest`](https://docs.rs/axum/0.8/axum/struct.Router.html#method.nest),
//! which strips the prefix before the route sees the request: with the default
//! `original-uri` feature the layer reads the `OriginalUri` axum's router records. A
//! challenge paid for `/report` is refused at `/v1/report`. Targets over 512 bytes are bound
//! by their SHA-256 digest, so a challenge stays a small header.
//!
//! A route whose `Authorization` carries the application's own scheme (a `Bearer` token)
//! takes the payment in `Payment-Authorization` instead
//! ([`CredentialHeader::PaymentAuthorization`]); its challenges say so, and clients that
//! implement draft -01 (`mpp-reqwest`, the `mpp` crate's `ChargeClient`) send it there.
//!
//! ```
//! use axum::{Router, routing::get};
//! use mpp_axum::{CredentialHeader, Mpp, PaymentReceipt};
//! # use mpp_core::testing::TestMethod;
//!
//! async fn report(paid: PaymentReceipt) -> String {
//!     format!("paid {:?}", paid.amount_display())
//! }
//!
//! # fn main() -> Result<(), mpp_axum::ConfigError> {
//! # let mpp = Mpp::new("an-hmac-secret-of-at-least-32-bytes")?.method(TestMethod::new("tempo"));
//! let v1 = Router::new().route(
//!     "/report",
//!     get(report).route_layer(
//!         mpp.charge("0.05")?
//!             .description("One report")
//!             .credential_header(CredentialHeader::PaymentAuthorization),
//!     ),
//! );
//! // The application's own `Bearer` check can wrap `v1` too: it owns `Authorization`.
//! let app: Router = Router::new().nest("/v1", v1).layer(mpp.layer());
//! # Ok(()) }
//! ```
//!
//! ## Discovery: `/openapi.json` and `/llms.txt`
//!
//! With the `openapi` feature, the `discovery` module serves an OpenAPI 3.1 document whose
//! paid operations carry `x-payment-info` (built on utoipa and utoipa-axum, so handlers
//! annotated with `#[utoipa::path]` keep their schemas) and a plain-text `/llms.txt` for
//! agents, both read from the same `charge`/`session` layers that issue the 402s.
//! [`ChargeLayer::payment_info`] and [`SessionLayer::payment_info`] give one route's offers
//! without the feature.
//!
//! ## Cargo features
//!
//! - `original-uri` (default): bind challenges to the full target under `nest`.
//! - `sse` (default): `Meter::sse`, per-unit billing of an SSE stream.
//! - `openapi`: the `discovery` module.
//!
//! `mpp-axum` knows nothing about any payment network: methods plug in through
//! [`mpp_core::Method`] (the Tempo method lives in `mpp-tempo`), and the payment logic itself
//! is [`mpp_core::gate`], which this crate adapts to HTTP (`gate.rs`: realm, scope,
//! `Accept-Payment`, body digest, the credential header).

#[macro_use]
mod macros;

mod body;
mod charge;
mod config;
pub mod cors;
#[cfg(feature = "openapi")]
pub mod discovery;
mod future;
mod gate;
pub mod headers;
mod idempotency;
pub mod meter;
mod pricing;
mod receipt;
mod response;
mod serve;
pub mod session;

pub use body::PaymentBody;
pub use charge::{Charge, ChargeLayer, charge, charge_with, try_charge};
pub use config::{ConfigError, Mpp, MppLayer, MppService};
pub use future::ResponseFuture;
pub use gate::CredentialHeader;
pub use idempotency::{IDEMPOTENCY_KEY, MAX_STORED_BODY};
pub use meter::Meter;
#[cfg(feature = "sse")]
pub use meter::{MeteredEvent, MeteredStream};
pub use pricing::{PriceError, PriceFn};
pub use receipt::{MissingPaymentLayer, PaymentReceipt};
pub use session::{Session, SessionLayer, session, session_with, try_session};

// What a price function needs, so an application needs no direct `mpp-core` dependency.
pub use mpp_core::amount::AmountError;
pub use mpp_core::{DecimalAmount, PriceTerms};
