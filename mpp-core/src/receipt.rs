//! The `Payment-Receipt` a server returns on success.
//!
//! ```
//! use mpp_core::Receipt;
//!
//! let receipt = Receipt::success("tempo", "0x1234", "2025-01-21T12:00:00.000Z");
//! let header = receipt.to_header_value();
//! assert_eq!(header, "eyJtZXRob2QiOiJ0ZW1wbyIsInJlZmVyZW5jZSI6IjB4MTIzNCIsInN0YXR1cyI6InN1Y2Nlc3MiLCJ0aW1lc3RhbXAiOiIyMDI1LTAxLTIxVDEyOjAwOjAwLjAwMFoifQ");
//! assert_eq!(Receipt::from_header_value(&header).unwrap(), receipt);
//! ```

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The `Payment-Receipt` header name.
pub const PAYMENT_RECEIPT: &str = "payment-receipt";

/// Why a receipt could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReceiptError {
    /// Not base64url JSON.
    #[error("receipt is not base64url JSON")]
    Encoding,
    /// JSON, but not a receipt the SDK clients would accept.
    #[error("invalid receipt: {0}")]
    Invalid(&'static str),
}

/// A payment receipt. Method-specific fields (session totals, `challengeId`...) go in `extra`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Receipt {
    /// Payment method id.
    pub method: String,
    /// Method reference: tx hash, challenge id (zero-amount proof), or channel id (session).
    pub reference: String,
    /// Always `success`: failures never produce a receipt.
    pub status: String,
    /// RFC 3339 timestamp.
    pub timestamp: String,
    /// Echo of the request's `externalId`.
    #[serde(
        rename = "externalId",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub external_id: Option<String>,
    /// Further method-specific fields.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Receipt {
    /// A success receipt.
    pub fn success(
        method: impl Into<String>,
        reference: impl Into<String>,
        timestamp: impl Into<String>,
    ) -> Self {
        Self {
            method: method.into(),
            reference: reference.into(),
            status: "success".into(),
            timestamp: timestamp.into(),
            external_id: None,
            extra: Map::new(),
        }
    }

    /// Adds a method-specific field.
    pub fn with_extra(mut self, key: impl Into<String>, value: impl Into<Value>) -> Self {
        self.extra.insert(key.into(), value.into());
        self
    }

    /// The JSON text of the receipt.
    pub fn to_json(&self) -> String {
        // Strings and a JSON map always serialize.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// `base64url(JSON)`: the `Payment-Receipt` value.
    pub fn to_header_value(&self) -> String {
        crate::base64url::encode(self.to_json())
    }

    /// Decodes and checks a `Payment-Receipt` value as the mppx client does.
    pub fn from_header_value(value: &str) -> Result<Self, ReceiptError> {
        let bytes = crate::base64url::decode(value.trim()).map_err(|_| ReceiptError::Encoding)?;
        let receipt: Receipt =
            serde_json::from_slice(&bytes).map_err(|_| ReceiptError::Encoding)?;
        if receipt.status != "success" {
            return Err(ReceiptError::Invalid("status is not success"));
        }
        if crate::expiry::parse_timestamp(&receipt.timestamp).is_err() {
            return Err(ReceiptError::Invalid("timestamp is not RFC 3339"));
        }
        Ok(receipt)
    }
}
