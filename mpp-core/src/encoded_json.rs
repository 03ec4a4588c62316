//! A JSON object together with the exact base64url string it travels as.
//!
//! The `request` and `opaque` challenge parameters are `base64url(JCS(object))`. The wire
//! string is what the HMAC binds and what clients echo, so it is kept verbatim and never
//! re-serialized.
//!
//! ```
//! use mpp_core::EncodedJson;
//! use serde_json::json;
//!
//! let req = EncodedJson::from_value(json!({"amount": "1000000"})).unwrap();
//! assert_eq!(req.wire(), "eyJhbW91bnQiOiIxMDAwMDAwIn0");
//! let echoed = EncodedJson::from_wire("eyJhbW91bnQiOiIxMDAwMDAwIn0").unwrap();
//! assert_eq!(echoed.value()["amount"], "1000000");
//! assert!(EncodedJson::from_wire("W10").is_err()); // `[]` is not an object
//! ```

use serde_json::{Map, Value};
use std::sync::Arc;

/// Why a base64url JSON parameter was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodedJsonError {
    /// Not base64url.
    #[error("not base64url")]
    Base64,
    /// Not UTF-8 JSON.
    #[error("not JSON")]
    Json,
    /// JSON, but not an object.
    #[error("not a JSON object")]
    NotObject,
    /// Cannot be canonicalized.
    #[error("cannot be canonicalized: {0}")]
    Jcs(#[from] crate::jcs::JcsError),
}

/// A JSON object and its base64url wire string. Cloning is cheap (shared), so a route can
/// encode its terms once and reuse them in every challenge.
#[derive(Debug, Clone, PartialEq)]
pub struct EncodedJson {
    wire: Arc<str>,
    value: Arc<Map<String, Value>>,
}

impl EncodedJson {
    /// Encodes an object as `base64url(JCS(value))`.
    pub fn from_value(value: Value) -> Result<Self, EncodedJsonError> {
        let Value::Object(map) = value else {
            return Err(EncodedJsonError::NotObject);
        };
        Self::from_map(map)
    }

    /// Encodes a map as `base64url(JCS(map))`.
    pub fn from_map(map: Map<String, Value>) -> Result<Self, EncodedJsonError> {
        let value = Value::Object(map);
        let wire = crate::jcs::encode_b64(&value)?;
        let Value::Object(map) = value else {
            return Err(EncodedJsonError::NotObject);
        };
        Ok(Self {
            wire: wire.into(),
            value: Arc::new(map),
        })
    }

    /// Decodes a wire string (leniently, as the SDKs do), keeping it verbatim.
    pub fn from_wire(wire: &str) -> Result<Self, EncodedJsonError> {
        let bytes = crate::base64url::decode(wire).map_err(|_| EncodedJsonError::Base64)?;
        match serde_json::from_slice::<Value>(&bytes) {
            Ok(Value::Object(map)) => Ok(Self {
                wire: wire.into(),
                value: Arc::new(map),
            }),
            Ok(_) => Err(EncodedJsonError::NotObject),
            Err(_) => Err(EncodedJsonError::Json),
        }
    }

    /// The exact base64url string.
    pub fn wire(&self) -> &str {
        &self.wire
    }

    /// The decoded object.
    pub fn value(&self) -> &Map<String, Value> {
        &self.value
    }

    /// The same object re-encoded canonically, if that differs from the wire string
    /// (mppx verifies ids over the canonical form; see core.md §4.3).
    pub fn canonical_wire(&self) -> Result<String, EncodedJsonError> {
        Ok(crate::jcs::encode_b64(&Value::Object(
            self.value.as_ref().clone(),
        ))?)
    }
}
