//! Discovery types: the `x-payment-info` and `x-service-info` OpenAPI extensions that tell
//! agents what an endpoint costs before they call it.
//!
//! ```
//! use mpp_core::discovery::{PaymentInfo, PaymentOffer};
//!
//! let info = PaymentInfo::new(vec![PaymentOffer::new("charge", "tempo", Some(10_000))
//!     .with_currency("0x20c0000000000000000000000000000000000000")]);
//! let json = serde_json::to_value(&info).unwrap();
//! assert_eq!(json["offers"][0]["amount"], "10000");
//! // Clients accept the flat single-offer form too, and fields beyond the draft's.
//! let flat = serde_json::json!({"intent": "charge", "method": "tempo", "amount": null,
//!                               "recipient": "0x742d35Cc6634C0532925a3b844Bc9e7595f8fE00"});
//! let read = PaymentInfo::from_json(&flat).unwrap();
//! assert_eq!(read.offers[0].amount, None);
//! assert!(read.offers[0].extra.contains_key("recipient"));
//! ```
//!
//! Discovery is advisory: the 402 challenge is what a client pays. A server builds its offers
//! from the very [`Offer`]s its challenges carry ([`PaymentOffer::from_offer`]), so the two
//! cannot drift.

use crate::gate::Offer;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The operation extension key.
pub const X_PAYMENT_INFO: &str = "x-payment-info";
/// The root extension key.
pub const X_SERVICE_INFO: &str = "x-service-info";

/// One way to pay for an operation.
///
/// Writers emit the draft's fields (`intent`, `method`, `amount`, `currency`, `description`)
/// and `unitType` for a per-unit price; readers also keep whatever else a document carries
/// (mppx adds `recipient`, `suggestedDeposit`...) in [`PaymentOffer::extra`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentOffer {
    /// `charge` or `session`.
    pub intent: String,
    /// Payment method id.
    pub method: String,
    /// Base units as a decimal string (per unit for sessions), or `null` for dynamic pricing.
    pub amount: Option<String>,
    /// Token address or ISO 4217 code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
    /// A human note on the price.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// What one unit of a per-unit price is (`request`, `token`...), as the challenge says.
    #[serde(default, rename = "unitType", skip_serializing_if = "Option::is_none")]
    pub unit_type: Option<String>,
    /// Fields beyond the ones above, as read (never needed to pay: the challenge has them).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl PaymentOffer {
    /// An offer; `amount` in base units, `None` when the price is computed per request.
    pub fn new(intent: impl Into<String>, method: impl Into<String>, amount: Option<u128>) -> Self {
        Self {
            intent: intent.into(),
            method: method.into(),
            amount: amount.map(|a| a.to_string()),
            currency: None,
            description: None,
            unit_type: None,
            extra: Map::new(),
        }
    }

    /// The terms challenges carry for `offer`: its intent, method and description, and from
    /// its request the base-unit `amount` and `currency` (read at the top level, else in
    /// `methodDetails`, as mppx reads them) and `unitType`. An amount that is not a base-unit
    /// integer is left out (`null`), never guessed.
    ///
    /// ```
    /// # #[cfg(feature = "testing")] {
    /// use mpp_core::discovery::PaymentOffer;
    /// use mpp_core::gate::PaymentGate;
    /// use mpp_core::testing::TestMethod;
    /// use mpp_core::{DecimalAmount, PriceTerms};
    ///
    /// let gate = PaymentGate::new("an-hmac-secret-of-at-least-32-bytes").unwrap()
    ///     .method(TestMethod::new("tempo"));
    /// let offers = gate.offers(&PriceTerms::charge("0.01".parse().unwrap())).unwrap();
    /// let offer = PaymentOffer::from_offer(&offers[0]);
    /// assert_eq!((offer.intent.as_str(), offer.amount.as_deref()), ("charge", Some("10000")));
    /// # }
    /// ```
    pub fn from_offer(offer: &Offer) -> Self {
        let request = offer.request().value();
        let details = request.get("methodDetails").and_then(Value::as_object);
        let term = |name: &str| {
            request
                .get(name)
                .or_else(|| details.and_then(|d| d.get(name)))
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        Self {
            intent: offer.intent().to_owned(),
            method: offer.method_name().to_owned(),
            amount: term("amount").filter(|a| is_base_units(a)),
            currency: term("currency"),
            description: offer.description().map(str::to_owned),
            unit_type: request
                .get("unitType")
                .and_then(Value::as_str)
                .map(str::to_owned),
            extra: Map::new(),
        }
    }

    /// The same offer with its amount left to each request (`null`): a price computed per
    /// request.
    pub fn without_amount(mut self) -> Self {
        self.amount = None;
        self
    }

    /// Sets the currency.
    pub fn with_currency(mut self, currency: impl Into<String>) -> Self {
        self.currency = Some(currency.into());
        self
    }

    /// Sets the description.
    pub fn with_description(mut self, description: impl Into<String>) -> Self {
        self.description = Some(description.into());
        self
    }
}

/// `^(0|[1-9][0-9]*)$`: the draft's (and mppx's) form of a base-unit amount.
fn is_base_units(amount: &str) -> bool {
    match amount.as_bytes() {
        [b'0'] => true,
        [b'1'..=b'9', rest @ ..] => rest.iter().all(u8::is_ascii_digit),
        _ => false,
    }
}

/// The value of `x-payment-info` (multi-offer form, which is what we emit).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentInfo {
    /// The alternatives.
    pub offers: Vec<PaymentOffer>,
}

/// An `x-payment-info` value in neither accepted form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid x-payment-info: {0}")]
pub struct PaymentInfoError(String);

impl PaymentInfo {
    /// Wraps offers.
    pub fn new(offers: Vec<PaymentOffer>) -> Self {
        Self { offers }
    }

    /// Reads either form: `{"offers": [...]}` or a flat single offer. Fields beyond the
    /// draft's are tolerated (mppx writes several); mixing `offers` with flat offer fields,
    /// or an empty `offers`, is refused, as mppx's validator does.
    pub fn from_json(value: &Value) -> Result<Self, PaymentInfoError> {
        let invalid = |e: serde_json::Error| PaymentInfoError(e.to_string());
        let Some(object) = value.as_object() else {
            return Err(PaymentInfoError("not a JSON object".into()));
        };
        if !object.contains_key("offers") {
            let offer = serde_json::from_value(value.clone()).map_err(invalid)?;
            return Ok(Self::new(vec![offer]));
        }
        const FLAT: [&str; 5] = ["amount", "currency", "description", "intent", "method"];
        if FLAT.iter().any(|field| object.contains_key(*field)) {
            return Err(PaymentInfoError(
                "cannot mix offers with flat payment info fields".into(),
            ));
        }
        let info: Self = serde_json::from_value(value.clone()).map_err(invalid)?;
        if info.offers.is_empty() {
            return Err(PaymentInfoError("offers is empty".into()));
        }
        Ok(info)
    }
}

/// Links to the service's documentation: absolute URLs, or paths from the origin's root
/// (`/llms.txt`, which mppx accepts and emits).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceDocs {
    /// Home page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub homepage: Option<String>,
    /// An `llms.txt`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub llms: Option<String>,
    /// API reference.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_reference: Option<String>,
}

/// The value of `x-service-info`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceInfo {
    /// Up to 5 lowercase categories (e.g. `compute`, `search`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub categories: Vec<String>,
    /// Documentation links.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docs: Option<ServiceDocs>,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use serde_json::json;

    /// A document mppx 0.11.0 generated (`tests/vectors/mppx-discovery.json`).
    fn mppx_document() -> Value {
        let vector: Value =
            serde_json::from_str(include_str!("../tests/vectors/mppx-discovery.json")).unwrap();
        vector["document"].clone()
    }

    #[test]
    fn reads_what_mppx_generates() {
        let doc = mppx_document();
        let charge =
            PaymentInfo::from_json(&doc["paths"]["/charge"]["get"][X_PAYMENT_INFO]).unwrap();
        let offer = &charge.offers[0];
        assert_eq!(
            (offer.intent.as_str(), offer.method.as_str()),
            ("charge", "tempo")
        );
        assert_eq!(offer.amount.as_deref(), Some("10000"));
        assert_eq!(offer.description.as_deref(), Some("one call"));
        assert_eq!(
            offer.extra["recipient"],
            "0x742d35Cc6634C0532925a3b844Bc9e7595f8fE00"
        );

        let session =
            PaymentInfo::from_json(&doc["paths"]["/chat"]["post"][X_PAYMENT_INFO]).unwrap();
        let offer = &session.offers[0];
        assert_eq!(offer.intent, "session");
        assert_eq!(offer.amount.as_deref(), Some("25"));
        assert_eq!(offer.unit_type.as_deref(), Some("token"));

        let service: ServiceInfo = serde_json::from_value(doc[X_SERVICE_INFO].clone()).unwrap();
        assert_eq!(service.categories, ["compute"]);
        assert_eq!(service.docs.unwrap().llms.as_deref(), Some("/llms.txt"));
    }

    #[test]
    fn what_we_write_reads_back_and_keeps_only_the_fields_set() {
        let mut offer = PaymentOffer::new("session", "tempo", Some(25)).with_currency("0x20c0");
        offer.unit_type = Some("token".into());
        let json = serde_json::to_value(PaymentInfo::new(vec![offer.clone()])).unwrap();
        assert_eq!(
            json,
            json!({"offers": [{"intent": "session", "method": "tempo", "amount": "25",
                               "currency": "0x20c0", "unitType": "token"}]})
        );
        assert_eq!(PaymentInfo::from_json(&json).unwrap().offers, [offer]);
    }

    #[test]
    fn mixed_or_empty_offers_are_refused() {
        let mixed = json!({"offers": [{"intent": "charge", "method": "tempo", "amount": "1"}],
                           "amount": "1"});
        assert!(PaymentInfo::from_json(&mixed).is_err());
        assert!(PaymentInfo::from_json(&json!({"offers": []})).is_err());
        assert!(PaymentInfo::from_json(&json!("charge")).is_err());
    }

    #[test]
    fn base_units_are_digits_without_leading_zeros() {
        for good in ["0", "1", "10000"] {
            assert!(is_base_units(good), "{good}");
        }
        for bad in ["", "01", "0.01", "-1", "1e3", " 1"] {
            assert!(!is_base_units(bad), "{bad}");
        }
    }
}
