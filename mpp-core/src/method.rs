//! The [`Method`] trait: how HTTP layers talk to a payment method (Tempo, Stripe, Lightning,
//! your own), without knowing anything method-specific.
//!
//! The [payment gate](crate::gate) asks the method for the **terms** of an offer (the
//! `request` object of a challenge), issues and checks the challenge itself (HMAC, route
//! pinning, scope, expiry, body digest), and hands a credential that passed those checks to
//! [`Method::verify`]. The method verifies and settles, then says what to do: serve the
//! handler, or answer by itself (session management requests).
//!
//! ```
//! use mpp_core::method::{Method, PriceTerms, Verified, VerifyContext, MethodError};
//! use mpp_core::{BoxFuture, DecimalAmount, Receipt, expiry::format_timestamp};
//! use serde_json::{Value, json};
//!
//! /// A toy method: the payload must be `{"paid": true}`.
//! struct Honor;
//!
//! impl Method for Honor {
//!     fn name(&self) -> &str { "honor" }
//!     fn supports_intent(&self, intent: &str) -> bool { intent == "charge" }
//!     fn request(&self, terms: &PriceTerms) -> Result<Value, MethodError> {
//!         let amount = terms.amount.to_base_units(2).map_err(MethodError::config)?;
//!         Ok(json!({"amount": amount.to_string(), "currency": "usd"}))
//!     }
//!     fn verify<'a>(&'a self, ctx: VerifyContext<'a>) -> BoxFuture<'a, Result<Verified, MethodError>> {
//!         Box::pin(async move {
//!             if ctx.credential.payload["paid"] != true {
//!                 return Err(MethodError::verification_failed("not paid"));
//!             }
//!             let receipt = Receipt::success("honor", &ctx.credential.challenge.id, format_timestamp(ctx.now));
//!             Ok(Verified::serve(receipt))
//!         })
//!     }
//! }
//!
//! let terms = PriceTerms::charge("0.25".parse::<DecimalAmount>().unwrap());
//! assert_eq!(Honor.request(&terms).unwrap()["amount"], "25");
//! ```

use crate::BoxFuture;
use crate::amount::{AmountError, DecimalAmount};
use crate::credential::Credential;
use crate::encoded_json::EncodedJson;
use crate::metering::Metering;
use crate::problem::ProblemType;
use crate::receipt::Receipt;
use serde_json::{Map, Value};
use std::sync::Arc;
use time::OffsetDateTime;

/// What a route charges, as declared by the application (before any method turns it into
/// method terms).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PriceTerms {
    /// `charge`, `session`, or another intent.
    pub intent: String,
    /// The price in display units (e.g. dollars). For `session` it is the price per unit.
    pub amount: DecimalAmount,
    /// What one unit is (`session`: e.g. `token`, `request`).
    pub unit_type: Option<String>,
    /// A human description of the price or resource.
    pub description: Option<String>,
    /// A merchant reference bound into the request.
    pub external_id: Option<String>,
    /// A currency override (method-defined, e.g. a token address); `None` = method default.
    pub currency: Option<String>,
}

impl PriceTerms {
    /// A one-time charge of `amount`.
    pub fn charge(amount: DecimalAmount) -> Self {
        Self {
            intent: "charge".into(),
            amount,
            unit_type: None,
            description: None,
            external_id: None,
            currency: None,
        }
    }

    /// Pay-as-you-go at `amount` per unit.
    pub fn session(amount: DecimalAmount) -> Self {
        Self {
            intent: "session".into(),
            ..Self::charge(amount)
        }
    }
}

/// Everything a method needs to verify a credential. The [payment gate](crate::gate) has
/// already checked the HMAC binding, the route pinning, the scope, the expiry and the body
/// digest.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct VerifyContext<'a> {
    /// The decoded credential.
    pub credential: &'a Credential,
    /// The decoded echoed request (the terms this credential pays; pinned to the route).
    pub request: &'a Map<String, Value>,
    /// The server's realm (use it, not the echoed one).
    pub realm: &'a str,
    /// The challenge expiry.
    pub expires: OffsetDateTime,
    /// The current time, from the server's one configured clock. Methods read time from
    /// here, never from the system clock, so a test clock moves every check at once.
    pub now: OffsetDateTime,
    /// The longest lifetime the gate accepts for a challenge: every challenge it admits was
    /// issued at or after `expires - max_lifetime`, and is refused once `now` passes
    /// `expires`. A method uses it to bound how long a single-use key must be remembered.
    pub max_lifetime: std::time::Duration,
    /// Whether the request asks for content (default) rather than only carrying a credential
    /// to the server (a session voucher, top-up or close on a bare `POST`, a `HEAD`). A
    /// session method charges the route's price on a content request and answers a
    /// management one by itself ([`Disposition::Respond`]). The transport decides.
    pub content: bool,
}

impl<'a> VerifyContext<'a> {
    /// A context for `credential` (its echoed request is the terms), checked under `realm`
    /// at `now`.
    pub fn new(
        credential: &'a Credential,
        realm: &'a str,
        expires: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Self {
        Self {
            credential,
            request: credential.challenge.request.value(),
            realm,
            expires,
            now,
            max_lifetime: crate::expiry::DEFAULT_CHALLENGE_TTL + crate::expiry::DEFAULT_CLOCK_SKEW,
            content: true,
        }
    }

    /// Sets [`VerifyContext::content`].
    pub fn with_content(mut self, content: bool) -> Self {
        self.content = content;
        self
    }

    /// Sets [`VerifyContext::max_lifetime`] (the gate sets its own).
    pub fn with_max_lifetime(mut self, max_lifetime: std::time::Duration) -> Self {
        self.max_lifetime = max_lifetime;
        self
    }
}

/// What a method may do to one challenge before it is issued (see
/// [`Method::prepare_challenge`]).
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct PrepareContext<'a> {
    /// The route's terms for this method, as returned by [`Method::request`].
    pub offered: &'a EncodedJson,
    /// The intent of the offer.
    pub intent: &'a str,
    /// The realm the challenge is issued under.
    pub realm: &'a str,
    /// The expiry the gate will give the challenge.
    pub expires: OffsetDateTime,
    /// The current time, from the server's clock.
    pub now: OffsetDateTime,
}

/// The per-challenge terms a method prepared (see [`Method::prepare_challenge`]).
#[derive(Debug, Clone, PartialEq)]
pub struct PreparedChallenge {
    /// The `request` of this one challenge (e.g. with a fresh invoice).
    pub request: EncodedJson,
    /// An earlier expiry, when what was prepared lives shorter than the challenge would.
    pub expires: Option<OffsetDateTime>,
}

/// What to do after a successful verification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Disposition {
    /// Call the handler; its response carries the receipt.
    Serve,
    /// Do not call the handler; answer with this status (e.g. `204`) and the receipt.
    Respond(u16),
}

/// A verified payment: settled already, or held by the method until the service has
/// answered (see [`Settle`]).
#[derive(Debug)]
#[non_exhaustive]
pub struct Verified {
    /// The receipt for the `Payment-Receipt` header.
    pub receipt: Receipt,
    /// Who paid, when known (a DID or address).
    pub payer: Option<String>,
    /// Base units charged by this request, when known.
    pub amount: Option<u128>,
    /// The decimals of the currency `amount` is in, when known, so an application can show
    /// the amount in currency units ("0.01") without knowing the method.
    pub decimals: Option<u8>,
    /// Serve the handler or answer directly.
    pub disposition: Disposition,
    /// The money-taking half, when the method verified and holds the payment but takes the
    /// money only when asked ([`Verified::settle_later`]); `None` when it is settled already.
    pub settlement: Option<Settlement>,
    /// How the response bills more units (a session's metered stream), when the method
    /// offers it.
    pub metering: Option<Arc<dyn Metering>>,
}

impl Verified {
    /// A payment after which the handler runs.
    pub fn serve(receipt: Receipt) -> Self {
        Self {
            receipt,
            payer: None,
            amount: None,
            decimals: None,
            disposition: Disposition::Serve,
            settlement: None,
            metering: None,
        }
    }

    /// A payment the method answers itself (e.g. a session top-up: `204`).
    pub fn respond(status: u16, receipt: Receipt) -> Self {
        Self {
            disposition: Disposition::Respond(status),
            ..Self::serve(receipt)
        }
    }

    /// Sets the payer.
    pub fn with_payer(mut self, payer: impl Into<String>) -> Self {
        self.payer = Some(payer.into());
        self
    }

    /// Sets the amount charged.
    pub fn with_amount(mut self, amount: u128) -> Self {
        self.amount = Some(amount);
        self
    }

    /// Sets the decimals of the currency the amount is in (e.g. 6 for pathUSD).
    pub fn with_decimals(mut self, decimals: u8) -> Self {
        self.decimals = Some(decimals);
        self
    }

    /// The payment is verified and held, and `settle` takes the money: the transport calls it
    /// when the service has answered with success (or before the service, when the route asks
    /// to settle first), so a failed request takes no money.
    pub fn settle_later(mut self, settle: impl Settle) -> Self {
        self.settlement = Some(Settlement(Box::new(settle)));
        self
    }

    /// Lets the response bill more units (see [`Metering`]).
    pub fn with_metering(mut self, metering: Arc<dyn Metering>) -> Self {
        self.metering = Some(metering);
        self
    }
}

/// The money-taking half of a payment a method has verified and holds (charge on success).
///
/// The payment gate calls [`settle`](Settle::settle) at most once, then
/// [`finish`](Settle::finish) exactly once, also when `settle` failed or was never called.
/// An implementation that is dropped without `finish` (a handler that panicked, a client that
/// hung up) must not keep the payment held for longer than it protects anything: release it
/// in `Drop` (e.g. by spawning the release), or let the hold expire on its own.
pub trait Settle: Send + 'static {
    /// Takes the money (broadcasts the transaction, consumes the proof). Idempotent in
    /// effect: the payment it holds is taken once, however the outcome is learned.
    fn settle(&mut self) -> BoxFuture<'_, Result<(), MethodError>>;

    /// Ends the request: `served` is true when a success answer was handed out for this
    /// payment (the credential is then used for good). Otherwise a payment that was not
    /// taken is released, and one that was taken stays redeemable by the same credential.
    fn finish(self: Box<Self>, served: bool) -> BoxFuture<'static, ()>;
}

/// A held payment (see [`Settle`]), carried by [`Verified::settlement`].
pub struct Settlement(Box<dyn Settle>);

impl Settlement {
    /// Takes the money; see [`Settle::settle`].
    pub async fn settle(&mut self) -> Result<(), MethodError> {
        self.0.settle().await
    }

    /// Ends the request; see [`Settle::finish`].
    pub async fn finish(self, served: bool) {
        self.0.finish(served).await;
    }
}

impl std::fmt::Debug for Settlement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Settlement { .. }")
    }
}

/// Why a method refused or could not verify a payment.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MethodError {
    /// The payer's fault: answered with this problem (402/400/410) and a fresh challenge.
    #[error("{problem:?}: {detail}")]
    Rejected {
        /// The problem type.
        problem: ProblemType,
        /// What was wrong, for the payer.
        detail: String,
    },
    /// Infrastructure fault (node or database down, timeout): answered with 503; nothing is
    /// charged and the payer may retry. The text is logged, never sent to the client (it
    /// may name a node URL or a database).
    #[error("payment infrastructure unavailable: {0}")]
    Unavailable(String),
    /// The payment was sent (e.g. a transaction broadcast) and its outcome is not known yet,
    /// because the infrastructure stopped answering: 503. The same credential sent again is
    /// served once the payment is confirmed, and charged no more than once. The text is
    /// logged, never sent to the client.
    #[error("payment outcome not known yet: {0}")]
    Pending(String),
    /// The server will not take this payment now, by its own limits (e.g. fee sponsorship
    /// spent for the period): 503 with `Retry-After`; nothing is charged. Unlike the other
    /// 503s, `detail` is written for the payer and sent as it is.
    #[error("payment deferred: {detail}")]
    Throttled {
        /// What the payer is told (no internal detail).
        detail: String,
        /// Seconds after which a retry can succeed.
        retry_after: u32,
    },
    /// The server's own configuration cannot produce these terms (e.g. a price with more
    /// decimals than the currency). Reported when routes are built.
    #[error("payment configuration error: {0}")]
    Config(String),
}

impl MethodError {
    /// A rejection with `problem`.
    pub fn rejected(problem: ProblemType, detail: impl Into<String>) -> Self {
        Self::Rejected {
            problem,
            detail: detail.into(),
        }
    }

    /// `verification-failed`.
    pub fn verification_failed(detail: impl Into<String>) -> Self {
        Self::rejected(ProblemType::VerificationFailed, detail)
    }

    /// `invalid-payload`.
    pub fn invalid_payload(detail: impl Into<String>) -> Self {
        Self::rejected(ProblemType::InvalidPayload, detail)
    }

    /// An infrastructure fault.
    pub fn unavailable(detail: impl std::fmt::Display) -> Self {
        Self::Unavailable(detail.to_string())
    }

    /// A payment sent whose outcome is not known yet.
    pub fn pending(detail: impl std::fmt::Display) -> Self {
        Self::Pending(detail.to_string())
    }

    /// A payment the server's own limits defer for `retry_after` seconds.
    pub fn throttled(detail: impl Into<String>, retry_after: u32) -> Self {
        Self::Throttled {
            detail: detail.into(),
            retry_after,
        }
    }

    /// A configuration error (from an [`AmountError`] or anything displayable).
    pub fn config(detail: impl std::fmt::Display) -> Self {
        Self::Config(detail.to_string())
    }
}

impl From<AmountError> for MethodError {
    fn from(e: AmountError) -> Self {
        Self::config(e)
    }
}

/// A payment method.
///
/// Object-safe, so one server can hold several (`Arc<dyn Method>`). Implementations must not
/// panic on any credential content, and must map infrastructure faults to
/// [`MethodError::Unavailable`], never to success.
pub trait Method: Send + Sync + 'static {
    /// The method id in challenges (`tempo`, `stripe`...): lowercase.
    fn name(&self) -> &str;

    /// Whether this method serves `intent`.
    fn supports_intent(&self, intent: &str) -> bool;

    /// The `request` object of a challenge for these terms: amount in base units (a decimal
    /// string), currency, recipient, method details. Called once per route when the layer is
    /// built (static prices) or per request (dynamic prices); must be deterministic.
    fn request(&self, terms: &PriceTerms) -> Result<Value, MethodError>;

    /// Whether an echoed request pays for the route's current `offered` request ("route
    /// pinning"). The HMAC already proves the server issued the echo; this stops a challenge
    /// from a cheaper route being spent here. The default compares the fields both SDKs pin.
    fn matches_offer(&self, offered: &Map<String, Value>, echoed: &Map<String, Value>) -> bool {
        default_offer_match(offered, echoed)
    }

    /// Per-challenge preparation, for methods whose challenges are not fixed per route: a
    /// Lightning method creates an invoice for every 402 (I/O, and it may cap `expires`), a
    /// Stripe method binds a fresh `externalId`. `None` (the default) keeps the fast path:
    /// the route's terms, encoded once, go into every challenge unchanged.
    ///
    /// A prepared request must still pass [`Method::matches_offer`] against the route's
    /// terms when it comes back.
    fn prepare_challenge<'a>(
        &'a self,
        ctx: PrepareContext<'a>,
    ) -> Option<BoxFuture<'a, Result<PreparedChallenge, MethodError>>> {
        let _ = ctx;
        None
    }

    /// Whether a genuine (HMAC-checked, pinned) credential may still be accepted after its
    /// challenge expired. Sessions accept a voucher, top-up or close for an open channel on
    /// an expired challenge, so streams outlive the challenge lifetime. Default: never.
    fn accepts_expired(&self, credential: &Credential) -> bool {
        let _ = credential;
        false
    }

    /// Verifies and settles a credential for an echoed request that passed the gate's checks.
    fn verify<'a>(&'a self, ctx: VerifyContext<'a>)
    -> BoxFuture<'a, Result<Verified, MethodError>>;
}

/// The request fields both SDKs compare when pinning a credential to a route.
pub const PINNED_FIELDS: [&str; 5] = ["amount", "currency", "recipient", "externalId", "unitType"];
/// The `methodDetails` fields both SDKs compare when pinning.
pub const PINNED_METHOD_DETAILS: [&str; 4] = ["chainId", "memo", "splits", "sessionProtocol"];

/// Compares the pinned fields of two requests; hex strings compare case-insensitively.
pub fn default_offer_match(offered: &Map<String, Value>, echoed: &Map<String, Value>) -> bool {
    let same = |a: Option<&Value>, b: Option<&Value>| json_eq_ignoring_hex_case(a, b);
    let details =
        |m: &Map<String, Value>| m.get("methodDetails").and_then(Value::as_object).cloned();
    let (od, ed) = (details(offered), details(echoed));
    PINNED_FIELDS
        .iter()
        .all(|f| same(offered.get(*f), echoed.get(*f)))
        && PINNED_METHOD_DETAILS.iter().all(|f| {
            same(
                od.as_ref().and_then(|m| m.get(*f)),
                ed.as_ref().and_then(|m| m.get(*f)),
            )
        })
}

fn json_eq_ignoring_hex_case(a: Option<&Value>, b: Option<&Value>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(Value::String(x)), Some(Value::String(y))) => {
            x == y || (x.starts_with("0x") && x.eq_ignore_ascii_case(y))
        }
        (Some(Value::Array(x)), Some(Value::Array(y))) => {
            x.len() == y.len()
                && x.iter()
                    .zip(y)
                    .all(|(p, q)| json_eq_ignoring_hex_case(Some(p), Some(q)))
        }
        (Some(Value::Object(x)), Some(Value::Object(y))) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| json_eq_ignoring_hex_case(Some(v), y.get(k)))
        }
        (Some(x), Some(y)) => x == y,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn pinning_compares_the_sdk_fields() {
        let offered = obj(
            json!({"amount": "10000", "currency": "0xAbC", "recipient": "0x11",
            "methodDetails": {"chainId": 1, "feePayer": true}}),
        );
        let same = obj(
            json!({"amount": "10000", "currency": "0xabc", "recipient": "0x11",
            "methodDetails": {"chainId": 1}}),
        );
        assert!(default_offer_match(&offered, &same));
        let cheaper = obj(
            json!({"amount": "1", "currency": "0xabc", "recipient": "0x11",
            "methodDetails": {"chainId": 1}}),
        );
        assert!(!default_offer_match(&offered, &cheaper));
        let other_chain = obj(
            json!({"amount": "10000", "currency": "0xabc", "recipient": "0x11",
            "methodDetails": {"chainId": 2}}),
        );
        assert!(!default_offer_match(&offered, &other_chain));
        let with_memo = obj(
            json!({"amount": "10000", "currency": "0xabc", "recipient": "0x11",
            "methodDetails": {"chainId": 1, "memo": "0x01"}}),
        );
        assert!(!default_offer_match(&offered, &with_memo));
        // Non-hex strings compare exactly.
        let a = obj(json!({"amount": "1", "unitType": "token"}));
        let b = obj(json!({"amount": "1", "unitType": "TOKEN"}));
        assert!(!default_offer_match(&a, &b));
    }
}
