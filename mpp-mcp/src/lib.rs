//! # mpp-mcp
//!
//! Paid MCP tools over the Machine Payments Protocol, on [`rmcp`] (the official MCP Rust
//! SDK): the JSON-RPC binding of MPP, driven by the same transport-neutral
//! [`PaymentGate`](mpp_core::PaymentGate) as the HTTP layers of `mpp-axum`, so a credential is
//! verified, and protected against replay, by the same methods and stores on both.
//!
//! Wrap any rmcp server in [`PaidTools`] and price a tool in one line:
//!
//! ```
//! use mpp_core::PaymentGate;
//! # use mpp_core::testing::TestMethod;
//! use mpp_mcp::PaidTools;
//! use rmcp::handler::server::router::tool::ToolRouter;
//! use rmcp::model::{ServerCapabilities, ServerConfig};
//! use rmcp::{ServerHandler, tool, tool_handler, tool_router};
//!
//! #[derive(Clone)]
//! struct Search {
//!     tool_router: ToolRouter<Self>,
//! }
//!
//! #[tool_router]
//! impl Search {
//!     #[tool(description = "Searches the index (0.01 a call)")]
//!     fn search(&self) -> String {
//!         "three results".into()
//!     }
//!
//!     #[tool(description = "Says whether the index is up (free)")]
//!     fn status(&self) -> String {
//!         "up".into()
//!     }
//! }
//!
//! #[tool_handler(router = self.tool_router)]
//! impl ServerHandler for Search {
//!     fn get_info(&self) -> ServerConfig {
//!         ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
//!     }
//! }
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let tempo = TestMethod::new("tempo");
//! // The realm is configured: MCP requests carry no host (stdio has none at all).
//! let gate = PaymentGate::new("an-hmac-secret-of-at-least-32-bytes")?
//!     .realm("api.example.com")
//!     .method(tempo);
//! let server = PaidTools::new(Search { tool_router: Search::tool_router() }, gate)?
//!     .charge("search", "0.01")?; // `status` stays free
//!
//! // Served like any rmcp server: `server.serve(rmcp::transport::stdio()).await?`, or over
//! // streamable HTTP with `server.into_streamable_http_service(..)` (feature `http`).
//! let payment = &server.get_info().capabilities.experimental.unwrap_or_default()["payment"];
//! assert_eq!(payment["methods"]["tempo"]["intents"][0], "charge");
//! # Ok(()) }
//! ```
//!
//! ## The exchange
//!
//! 1. A `tools/call` of a priced tool without a credential gets JSON-RPC error `-32042`
//!    (`Payment Required`) with `data: {httpStatus: 402, challenges: [...], problem}`; each
//!    challenge's `request` is a JSON object, its id the same HMAC as over HTTP.
//! 2. The client pays one challenge and calls again with the credential in
//!    `params._meta["org.paymentauth/credential"]`.
//! 3. The tool runs once; its result carries the receipt in
//!    `result._meta["org.paymentauth/receipt"]`, and the tool itself can read the payment
//!    ([`ToolPayment`]). A tool that fails takes no money (charge on success).
//!
//! ## Refusals
//!
//! | refusal | code |
//! |---|---|
//! | no credential | `-32042` with fresh challenges |
//! | a credential that does not decode, or whose payload is not the method's | `-32602` |
//! | tampered, expired, for another tool, replayed, or not paying | `-32043`, with fresh challenges when paying again can help, and `failure: {reason, detail}` |
//! | payment node or database down, misconfiguration | `-32603` (`httpStatus` 503 or 500) |
//!
//! ## Paying
//!
//! With feature `client`, [`client::PaymentClient`] wraps a running rmcp client: a tool call
//! answered with `-32042` is paid through any [`Payer`](mpp_core::Payer) (e.g. mpp-tempo's
//! `TempoPayer`) and retried once with the credential.

mod call;
mod capabilities;
#[cfg(feature = "client")]
pub mod client;
mod error;
mod handler;
#[cfg(feature = "http")]
mod http;
mod meta;
mod payment;
mod refusal;
mod server;

pub use error::ConfigError;
pub use payment::ToolPayment;
pub use server::PaidTools;
