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
use crate::receipt::Receipt;

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

/// A [`Payer`] of the `session` intent (payment channels): besides answering challenges
/// ([`Payer::pay`] opens a channel, then signs one voucher per request), it answers the
/// `payment-need-voucher` events of a metered stream, closes the channel, and keeps track of
/// the receipts the server sends. Transport-independent: an HTTP client POSTs the
/// credentials it returns to the stream's URL; any other transport sends them its own way.
///
/// The receipts and events are server data: implementations check them and answer with a
/// [`PayError`], never a panic.
pub trait SessionPayer: Payer {
    /// Answers a `payment-need-voucher` event (`event` is the event's `data`, JSON) of a
    /// stream admitted with `challenge`: the credentials to send, in order (a top-up first
    /// when the deposit cannot cover the voucher, then the voucher). Each is answered by the
    /// server on its own (`204` with a receipt).
    fn need_voucher<'a>(
        &'a self,
        challenge: &'a Challenge,
        event: &'a str,
    ) -> BoxFuture<'a, Result<Vec<Credential>, PayError>>;

    /// A `close` credential for the channel `challenge` pays into, for what the receipts
    /// seen so far say was accepted or spent.
    fn close<'a>(&'a self, challenge: &'a Challenge)
    -> BoxFuture<'a, Result<Credential, PayError>>;

    /// Records a receipt the server sent for a payment of `challenge` (a `Payment-Receipt`
    /// header, a `payment-receipt` event). An error means the receipt is one the payer must
    /// not trust (e.g. it claims more was accepted than was ever signed).
    fn record_receipt(&self, challenge: &Challenge, receipt: &Receipt) -> Result<(), PayError> {
        let _ = (challenge, receipt);
        Ok(())
    }

    /// The server refused a credential answering `challenge` with `status` (e.g. `410`: the
    /// channel is unknown or closed), so the payer can drop what it no longer has.
    fn refused(&self, challenge: &Challenge, status: u16) {
        let _ = (challenge, status);
    }
}
