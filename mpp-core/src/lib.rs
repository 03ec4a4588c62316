//! # mpp-core
//!
//! The Machine Payments Protocol (the IETF `Payment` HTTP authentication scheme) as plain
//! data: challenges, credentials, receipts, their header codecs, the HMAC challenge binding,
//! amounts, problem details, the [`Method`] trait every payment method implements, the
//! [`Payer`] trait every paying client implements, and the transport-neutral payment
//! [`gate`] that HTTP layers and MCP bindings drive.
//! No I/O, no runtime: the `mpp-axum` layers and the `mpp-tempo` method build on it.
//!
//! A server issues a challenge, a client answers it, the server checks the echo:
//!
//! ```
//! use mpp_core::{Challenge, ChallengeSecret, Credential, Receipt, expiry};
//! use serde_json::json;
//! use time::macros::datetime;
//!
//! let secret = ChallengeSecret::new("0123456789abcdef0123456789abcdef").unwrap();
//! let now = datetime!(2025-01-06 12:00:00 UTC);
//!
//! // Server: 402 with `WWW-Authenticate: Payment ...`.
//! let challenge = Challenge::builder("api.example.com", "tempo", "charge",
//!         json!({"amount": "10000", "currency": "0x20c0000000000000000000000000000000000000"}))
//!     .unwrap()
//!     .expires(expiry::format_timestamp(now + expiry::DEFAULT_CHALLENGE_TTL))
//!     .sign(&secret);
//! let www_authenticate = challenge.to_header_value().unwrap();
//!
//! // Client: parse, pay, send `Authorization: Payment ...`.
//! let offered = &Challenge::parse_all(&www_authenticate).unwrap()[0];
//! let authorization = Credential::new(offered.clone(), json!({"type": "hash", "hash": "0xab"}))
//!     .to_authorization();
//!
//! // Server: decode, check the binding under its own realm, then verify the payment.
//! let credential = Credential::from_authorization(&authorization).unwrap();
//! let echo = &credential.challenge;
//! assert!(secret.verify(&echo.id, &echo.binding_slots_for_realm("api.example.com"), now));
//! let receipt = Receipt::success("tempo", "0xab", expiry::format_timestamp(now));
//! assert!(!receipt.to_header_value().is_empty());
//! ```

use std::future::Future;
use std::pin::Pin;

pub mod accept_payment;
pub mod amount;
pub mod base64url;
pub mod binding;
pub mod challenge;
pub mod credential;
pub mod did;
pub mod digest;
pub mod discovery;
pub mod encoded_json;
pub mod expiry;
pub mod gate;
pub mod idempotency;
pub mod jcs;
pub mod mcp;
pub mod metering;
pub mod method;
pub mod payer;
pub mod problem;
pub mod receipt;
#[cfg(feature = "testing")]
pub mod testing;
pub mod www_authenticate;

pub use amount::DecimalAmount;
pub use binding::ChallengeSecret;
pub use challenge::Challenge;
pub use credential::Credential;
pub use encoded_json::EncodedJson;
pub use gate::PaymentGate;
pub use method::{Method, MethodError, PriceTerms, Verified, VerifyContext};
pub use payer::Payer;
pub use problem::{Problem, ProblemType};
pub use receipt::Receipt;

/// A boxed, `Send` future: how object-safe traits in this workspace return async results
/// without choosing a runtime.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The `Payment` authentication scheme name.
pub const SCHEME: &str = "Payment";
