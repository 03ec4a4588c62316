//! Discovery (feature `openapi`): `GET /openapi.json` with each paid operation's price in
//! `x-payment-info`, and `GET /llms.txt` for agents, generated from the same layers that
//! issue the 402s. The price is written once.
//!
//! ```
//! use axum::{Router, routing::get};
//! use mpp_axum::discovery::{self, PaidRouter};
//! use mpp_axum::{Mpp, PaymentReceipt};
//! # use mpp_core::testing::TestMethod;
//!
//! async fn fortune(paid: PaymentReceipt) -> String {
//!     format!("Fortune favours the bold (tx {})", paid.reference())
//! }
//!
//! # fn main() -> Result<(), mpp_axum::ConfigError> {
//! # let mpp = Mpp::new("an-hmac-secret-of-at-least-32-bytes")?.method(TestMethod::new("tempo"));
//! let app: Router = PaidRouter::new(&mpp)
//!     // Served behind the charge, and documented from it: one declaration.
//!     .paid(discovery::get("/fortune", fortune), mpp.charge("0.01")?.description("One fortune"))?
//!     .categories(["data"])
//!     .into_router() // + GET /openapi.json and GET /llms.txt, free
//!     .route("/health", get(|| async { "ok" }));
//! # Ok(()) }
//! ```
//!
//! The operation of `/fortune` then reads as below: one offer per method and intent, with
//! exactly the terms its 402 challenges carry (`amount` in base units; `null` for a price
//! computed per request, [`charge_with`](crate::charge_with)), `unitType` for a session's
//! per-unit price, and a `402` response. The root carries `x-service-info`. The official
//! validator (`mppx discover validate`) passes such a document with no warning, provided a
//! paid `POST`, `PUT` or `PATCH` declares its request body ([`Endpoint::operation`], or
//! `request_body` in `#[utoipa::path]`).
//!
//! ```json
//! "/fortune": {"get": {
//!   "responses": {"200": {"description": "Successful response"},
//!                 "402": {"description": "Payment Required", "headers": {"WWW-Authenticate": …}}},
//!   "x-payment-info": {"offers": [{"intent": "charge", "method": "tempo", "amount": "10000",
//!     "currency": "0x20c0000000000000000000000000000000000000", "description": "One fortune"}]}}}
//! ```
//!
//! ## Handlers annotated with utoipa
//!
//! An axum `Router` cannot be inspected, so the routes are recorded as they are declared:
//! with [`get`], [`post`]… ([`Endpoint`]) for plain handlers, or with utoipa-axum's
//! `routes!` for handlers annotated with `#[utoipa::path]`, whose parameters, bodies and
//! response schemas stay in the document. Start from an existing `OpenApiRouter` with
//! [`PaidRouter::with_router`].
//!
//! ```
//! use axum::Json;
//! use mpp_axum::discovery::PaidRouter;
//! use mpp_axum::discovery::utoipa_axum::{router::OpenApiRouter, routes};
//! use mpp_axum::Mpp;
//! # use mpp_core::testing::TestMethod;
//! # use mpp_axum::discovery::utoipa;
//!
//! #[derive(serde::Serialize, utoipa::ToSchema)]
//! struct Report {
//!     rows: u32,
//! }
//!
//! /// A report, priced per request.
//! #[utoipa::path(get, path = "/report", responses((status = 200, body = Report)))]
//! async fn report() -> Json<Report> {
//!     Json(Report { rows: 3 })
//! }
//!
//! # fn main() -> Result<(), mpp_axum::ConfigError> {
//! # let mpp = Mpp::new("an-hmac-secret-of-at-least-32-bytes")?.method(TestMethod::new("tempo"));
//! let (router, discovery) = PaidRouter::with_router(&mpp, OpenApiRouter::default())
//!     .title("Reports")
//!     .paid(routes!(report), mpp.charge("0.05")?)?
//!     .split();
//! let get = &discovery.document()["paths"]["/report"]["get"];
//! assert_eq!(get["x-payment-info"]["offers"][0]["amount"], "50000");
//! assert_eq!(
//!     get["responses"]["200"]["content"]["application/json"]["schema"]["$ref"],
//!     "#/components/schemas/Report"
//! );
//! let app: axum::Router = router.merge(discovery.router());
//! # Ok(()) }
//! ```
//!
//! Only routes declared here are documented: routes added to the axum `Router` afterwards
//! (a health check, an MCP endpoint at `/mcp`) are served but carry no payment info.
//! Discovery is advisory: clients pay the 402 challenge, never the document.

mod document;
mod endpoint;
mod llms;
mod router;

pub use document::Discovery;
pub use endpoint::{Endpoint, delete, get, patch, post, put};
pub use router::{LLMS_PATH, OPENAPI_PATH, PaidLayer, PaidRouter};

pub use mpp_core::discovery::{PaymentInfo, PaymentOffer, ServiceDocs, ServiceInfo};
/// The utoipa this module is built on (the version `routes!` and `#[utoipa::path]` must use).
pub use utoipa;
/// The utoipa-axum this module is built on (`OpenApiRouter`, `routes!`).
pub use utoipa_axum;
