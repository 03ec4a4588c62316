//! The [`Method`] trait: how HTTP layers talk to a payment method (Tempo, Stripe, Lightning,
//! your own), without knowing anything method-specific.
//!
//! A layer asks the method for the **terms** of an offer (the `request` object of a
//! challenge), issues and checks the challenge itself (HMAC, route pinning, expiry, body
//! digest), and hands a credential that passed those checks to [`Method::verify`]. The method
//! verifies and settles, then says what to do: serve the handler, or answer by itself (session
//! management requests), and possibly meter usage while the response is produced.
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
use crate::problem::ProblemType;
use crate::receipt::Receipt;
use serde_json::{Map, Value};
use std::sync::Arc;
use std::time::Duration;
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

/// How the HTTP request that carries a credential looks, for methods whose behaviour
/// depends on it (sessions answer management requests without the handler).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpRequestInfo<'a> {
    /// The HTTP method (`GET`, `POST`, `HEAD`...).
    pub method: &'a str,
    /// False for `HEAD`, and for a `POST` with no query and no body (a mid-stream voucher
    /// update), which sessions answer with `204` instead of calling the handler.
    pub is_content_request: bool,
}

/// Everything a method needs to verify a credential. The layer has already checked the HMAC,
/// the route pinning, the expiry and the body digest.
#[derive(Debug, Clone, Copy)]
pub struct VerifyContext<'a> {
    /// The decoded credential.
    pub credential: &'a Credential,
    /// The decoded echoed request (the terms this credential pays).
    pub request: &'a Map<String, Value>,
    /// The server's realm (use it, not the echoed one).
    pub realm: &'a str,
    /// The challenge expiry.
    pub expires: OffsetDateTime,
    /// The current time, from the server's clock.
    pub now: OffsetDateTime,
    /// The HTTP request.
    pub http: HttpRequestInfo<'a>,
}

/// What to do after a successful verification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// Call the handler; its response carries the receipt.
    Serve,
    /// Do not call the handler; answer with this status (e.g. `204`) and the receipt.
    Respond(u16),
}

/// A verified and settled payment.
#[derive(Clone)]
pub struct Verified {
    /// The receipt for the `Payment-Receipt` header.
    pub receipt: Receipt,
    /// Who paid, when known (a DID or address).
    pub payer: Option<String>,
    /// Base units charged by this request, when known.
    pub amount: Option<u128>,
    /// Serve the handler or answer directly.
    pub disposition: Disposition,
    /// Per-unit metering for streamed responses (sessions).
    pub meter: Option<Arc<dyn UsageMeter>>,
}

impl std::fmt::Debug for Verified {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verified")
            .field("receipt", &self.receipt)
            .field("payer", &self.payer)
            .field("amount", &self.amount)
            .field("disposition", &self.disposition)
            .field("meter", &self.meter.is_some())
            .finish()
    }
}

impl Verified {
    /// A payment after which the handler runs.
    pub fn serve(receipt: Receipt) -> Self {
        Self {
            receipt,
            payer: None,
            amount: None,
            disposition: Disposition::Serve,
            meter: None,
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

    /// Attaches a usage meter.
    pub fn with_meter(mut self, meter: Arc<dyn UsageMeter>) -> Self {
        self.meter = Some(meter);
        self
    }
}

/// Why a method refused or could not verify a payment.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
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
    /// charged and the payer may retry.
    #[error("payment infrastructure unavailable: {0}")]
    Unavailable(String),
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

    /// Verifies and settles a credential for an echoed request that passed the layer's checks.
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

/// The result of [`UsageMeter::charge`].
#[derive(Debug, Clone, PartialEq)]
pub enum MeterCharge {
    /// The unit was paid for and committed.
    Charged,
    /// Not enough headroom: send this `payment-need-voucher` event data, then wait.
    NeedVoucher(Value),
}

/// Per-unit billing of a streamed response (the session intent's SSE binding). The stream
/// charges each unit before sending it; when headroom runs out it tells the client once and
/// waits for a larger voucher.
pub trait UsageMeter: Send + Sync + 'static {
    /// Charges `cost` base units against paid headroom, atomically; never blocks waiting
    /// for the payer.
    fn charge(&self, cost: u128) -> BoxFuture<'_, Result<MeterCharge, MethodError>>;

    /// Waits up to `timeout` for more headroom (a voucher arrived). `Ok(false)` on timeout.
    fn wait_for_headroom(&self, timeout: Duration) -> BoxFuture<'_, Result<bool, MethodError>>;

    /// The receipt with the running totals, for the closing `payment-receipt` event.
    fn receipt(&self) -> BoxFuture<'_, Result<Receipt, MethodError>>;
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
