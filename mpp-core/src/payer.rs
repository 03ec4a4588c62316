//! [`Payer`]: the client side of a payment method, independent of the transport. An HTTP
//! client, an SSE client and an MCP client all answer a challenge the same way: hand it to a
//! payer, get a credential back.
//!
//! ```
//! use mpp_core::payer::{PayError, Payer};
//! use mpp_core::{BoxFuture, Challenge, Credential, EncodedJson};
//! use serde_json::json;
//!
//! /// Pays any `honor` challenge by promising to.
//! struct Promise;
//!
//! impl Payer for Promise {
//!     fn supports(&self, challenge: &Challenge) -> bool {
//!         challenge.method == "honor" && challenge.intent == "charge"
//!     }
//!     fn pay<'a>(&'a self, challenge: &'a Challenge) -> BoxFuture<'a, Result<Credential, PayError>> {
//!         Box::pin(async move { Ok(Credential::new(challenge.clone(), json!({"paid": true}))) })
//!     }
//! }
//!
//! let request = EncodedJson::from_value(json!({"amount": "1"})).unwrap();
//! let offered = [
//!     Challenge::builder_encoded("api", "card", "charge", request.clone()).with_id("a"),
//!     Challenge::builder_encoded("api", "honor", "charge", request).with_id("b"),
//! ];
//! assert_eq!(Promise.choose(&offered).map(|c| c.id.as_str()), Some("b"));
//! ```

use crate::BoxFuture;
use crate::challenge::Challenge;
use crate::credential::Credential;

/// Why a payer could not answer a challenge.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PayError(pub String);

impl PayError {
    /// An error with this message.
    pub fn new(message: impl std::fmt::Display) -> Self {
        Self(message.to_string())
    }
}

/// Answers payment challenges with credentials.
pub trait Payer: Send + Sync {
    /// Whether this payer can answer `challenge` (its method, intent and terms).
    fn supports(&self, challenge: &Challenge) -> bool;

    /// Pays `challenge`: the credential to send back (`Authorization: Payment ...`, or
    /// `_meta` over MCP).
    fn pay<'a>(&'a self, challenge: &'a Challenge) -> BoxFuture<'a, Result<Credential, PayError>>;

    /// The first of `challenges` (sent in the server's order of preference) this payer can
    /// answer.
    fn choose<'c>(&self, challenges: &'c [Challenge]) -> Option<&'c Challenge> {
        challenges.iter().find(|c| self.supports(c))
    }
}
