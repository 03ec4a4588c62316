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
//! // Clients accept the flat single-offer form too.
//! let flat = serde_json::json!({"intent": "charge", "method": "tempo", "amount": null});
//! assert_eq!(PaymentInfo::from_json(&flat).unwrap().offers[0].amount, None);
//! ```

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The operation extension key.
pub const X_PAYMENT_INFO: &str = "x-payment-info";
/// The root extension key.
pub const X_SERVICE_INFO: &str = "x-service-info";

/// One way to pay for an operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
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
        }
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

/// The value of `x-payment-info` (multi-offer form, which is what we emit).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
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

    /// Reads either form: `{"offers": [...]}` or a flat single offer.
    pub fn from_json(value: &Value) -> Result<Self, PaymentInfoError> {
        if value.get("offers").is_some() {
            serde_json::from_value(value.clone()).map_err(|e| PaymentInfoError(e.to_string()))
        } else {
            let offer: PaymentOffer = serde_json::from_value(value.clone())
                .map_err(|e| PaymentInfoError(e.to_string()))?;
            Ok(Self::new(vec![offer]))
        }
    }
}

/// Links to the service's documentation.
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
