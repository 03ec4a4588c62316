//! The MCP / JSON-RPC binding: challenges and credentials as JSON objects in `error.data` and
//! `_meta` instead of HTTP headers.
//!
//! ```
//! use mpp_core::{Challenge, mcp::McpChallenge};
//! use serde_json::json;
//!
//! let challenge = Challenge::builder("api.example.com", "tempo", "charge", json!({"amount": "1"}))
//!     .unwrap()
//!     .with_id("abc");
//! let mcp = McpChallenge::from(&challenge);
//! assert_eq!(serde_json::to_value(&mcp).unwrap()["request"]["amount"], "1");
//! ```

use crate::challenge::Challenge;
use crate::credential::{Credential, CredentialError};
use crate::encoded_json::EncodedJson;
use crate::problem::Problem;
use crate::receipt::Receipt;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// JSON-RPC error code: payment required.
pub const PAYMENT_REQUIRED_CODE: i64 = -32042;
/// JSON-RPC error code: payment verification failed.
pub const VERIFICATION_FAILED_CODE: i64 = -32043;
/// JSON-RPC error code for a malformed credential (Invalid params).
pub const MALFORMED_CREDENTIAL_CODE: i64 = -32602;
/// JSON-RPC error code for an internal payment error.
pub const INTERNAL_ERROR_CODE: i64 = -32603;
/// `_meta` key of a credential.
pub const META_CREDENTIAL: &str = "org.paymentauth/credential";
/// `_meta` key of a receipt.
pub const META_RECEIPT: &str = "org.paymentauth/receipt";
/// `_meta` key of a payment-required payload inside a tool result (SDK extension).
pub const META_PAYMENT_REQUIRED: &str = "org.paymentauth/payment-required";

/// A challenge as MCP carries it: `request` is a JSON object, `opaque` stays a string.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct McpChallenge {
    /// The HTTP HMAC id (computed over `base64url(JCS(request))`).
    pub id: String,
    /// Realm.
    pub realm: String,
    /// Method id.
    pub method: String,
    /// Intent.
    pub intent: String,
    /// The request object.
    pub request: Map<String, Value>,
    /// Expiry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<String>,
    /// Description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Digest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// Opaque, as its base64url string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub opaque: Option<String>,
}

impl From<&Challenge> for McpChallenge {
    fn from(c: &Challenge) -> Self {
        Self {
            id: c.id.clone(),
            realm: c.realm.clone(),
            method: c.method.clone(),
            intent: c.intent.clone(),
            request: c.request.value().clone(),
            expires: c.expires.clone(),
            description: c.description.clone(),
            digest: c.digest.clone(),
            opaque: c.opaque.as_ref().map(|o| o.wire().to_owned()),
        }
    }
}

/// Failure details for `-32043`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct McpFailure {
    /// Machine-readable reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Human detail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// `error.data` of a `-32042`/`-32043` JSON-RPC error.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PaymentRequiredData {
    /// 402.
    pub http_status: u16,
    /// Alternatives; the client pays exactly one.
    pub challenges: Vec<McpChallenge>,
    /// RFC 9457 problem.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<Problem>,
    /// Failure details (verification failures).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<McpFailure>,
}

/// Reads a credential from a JSON-RPC message: `params._meta` (MCP) or the root `_meta`
/// (generic JSON-RPC). `Ok(None)` when there is none. `challenge.request` may be an object
/// (converted to `base64url(JCS)`) or a string.
pub fn credential_from_message(message: &Value) -> Result<Option<Credential>, CredentialError> {
    let found = message
        .get("params")
        .and_then(|p| p.get("_meta"))
        .and_then(|m| m.get(META_CREDENTIAL))
        .or_else(|| message.get("_meta").and_then(|m| m.get(META_CREDENTIAL)));
    let Some(found) = found else {
        return Ok(None);
    };
    let mut value = found.clone();
    // Rebuild a missing `opaque` from the decoded `meta` map mppx also sends.
    if let Some(challenge) = value.get_mut("challenge").and_then(Value::as_object_mut)
        && !challenge.contains_key("opaque")
        && let Some(meta) = challenge.get("meta").cloned()
    {
        let opaque =
            EncodedJson::from_value(meta).map_err(|_| CredentialError::Malformed("opaque"))?;
        challenge.insert("opaque".into(), opaque.wire().into());
    }
    Credential::from_json(value).map(Some)
}

/// The receipt object MCP puts in `_meta` (with the required `challengeId`).
pub fn receipt_meta(receipt: &Receipt, challenge_id: &str) -> Value {
    let mut value = serde_json::to_value(receipt).unwrap_or(Value::Null);
    if let Some(obj) = value.as_object_mut() {
        obj.insert("challengeId".into(), challenge_id.into());
    }
    value
}
