//! The credential a client sends in `Authorization: Payment <base64url JSON>`.
//!
//! ```
//! use mpp_core::{Challenge, Credential};
//! use serde_json::json;
//!
//! let challenge = Challenge::builder("api.example.com", "tempo", "charge", json!({"amount": "1"}))
//!     .unwrap()
//!     .with_id("abc");
//! let credential = Credential::new(challenge.clone(), json!({"type": "hash", "hash": "0x12"}))
//!     .with_source("did:pkh:eip155:1:0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266");
//! let header = credential.to_authorization();
//! let parsed = Credential::from_authorization(&format!("Bearer x, {header}")).unwrap();
//! assert_eq!(parsed, credential);
//! ```

use crate::challenge::Challenge;
use crate::encoded_json::EncodedJson;
use serde_json::{Map, Value};

/// `Payment-Authorization`: the request header (draft -01) that carries the credential when a
/// challenge names it in its `header` parameter, so `Authorization` stays free for the
/// application's own scheme (e.g. `Bearer`). Its value has the form of `Authorization`'s.
pub const PAYMENT_AUTHORIZATION: &str = "Payment-Authorization";

/// The largest credential token accepted (both SDKs reject tokens over 16 KiB).
pub const MAX_CREDENTIAL_LEN: usize = 16 * 1024;

/// Why an `Authorization` value yielded no credential.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialError {
    /// No `Payment` entry in the header: the request is simply unpaid.
    #[error("no Payment credential")]
    Missing,
    /// A `Payment` entry that cannot be decoded (problem `malformed-credential`).
    #[error("malformed credential: {0}")]
    Malformed(&'static str),
}

impl Challenge {
    /// Reads the challenge a client echoes in a credential. `request` and `opaque` keep the
    /// client's strings; objects (old mppx clients sent `opaque` as one) are converted to
    /// `base64url(JCS)`. `description` and unknown fields are tolerated.
    fn from_echo_json(value: &Value) -> Result<Self, CredentialError> {
        use CredentialError::Malformed;
        let Value::Object(obj) = value else {
            return Err(Malformed("challenge is not an object"));
        };
        let required = |name: &'static str| -> Result<String, CredentialError> {
            match obj.get(name) {
                Some(Value::String(s)) if !s.is_empty() || name == "realm" => Ok(s.clone()),
                _ => Err(Malformed(name)),
            }
        };
        let optional = |name: &'static str| -> Result<Option<String>, CredentialError> {
            match obj.get(name) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.clone())),
                Some(_) => Err(Malformed(name)),
            }
        };
        let json_param = |name: &'static str| -> Result<Option<EncodedJson>, CredentialError> {
            match obj.get(name) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => EncodedJson::from_wire(s)
                    .map(Some)
                    .map_err(|_| Malformed(name)),
                Some(v @ Value::Object(_)) => EncodedJson::from_value(v.clone())
                    .map(Some)
                    .map_err(|_| Malformed(name)),
                Some(_) => Err(Malformed(name)),
            }
        };
        Ok(Self {
            id: required("id")?,
            realm: required("realm")?,
            method: required("method")?,
            intent: required("intent")?,
            request: json_param("request")?.ok_or(Malformed("request"))?,
            expires: optional("expires")?,
            digest: optional("digest")?,
            description: optional("description")?,
            opaque: json_param("opaque")?,
            header: optional("header")?,
        })
    }

    /// The echo as a JSON object (`request`/`opaque` as their wire strings).
    fn to_echo_json(&self) -> Value {
        let mut obj = Map::new();
        obj.insert("id".into(), self.id.clone().into());
        obj.insert("realm".into(), self.realm.clone().into());
        obj.insert("method".into(), self.method.clone().into());
        obj.insert("intent".into(), self.intent.clone().into());
        obj.insert("request".into(), self.request.wire().into());
        let optional = [
            ("expires", self.expires.as_deref()),
            ("digest", self.digest.as_deref()),
            ("description", self.description.as_deref()),
            ("opaque", self.opaque.as_ref().map(EncodedJson::wire)),
            ("header", self.header.as_deref()),
        ];
        for (name, value) in optional {
            if let Some(v) = value {
                obj.insert(name.into(), v.into());
            }
        }
        Value::Object(obj)
    }
}

/// A decoded `Payment` credential.
#[derive(Debug, Clone, PartialEq)]
pub struct Credential {
    /// The echoed challenge (what the client sent back; not trusted until its id verifies).
    pub challenge: Challenge,
    /// Optional payer DID (`did:pkh:eip155:<chainId>:<address>`).
    pub source: Option<String>,
    /// The method-specific payload.
    pub payload: Value,
}

impl Credential {
    /// A credential answering `challenge` with `payload`.
    pub fn new(challenge: Challenge, payload: Value) -> Self {
        Self {
            challenge,
            source: None,
            payload,
        }
    }

    /// Sets the payer DID.
    pub fn with_source(mut self, source: impl Into<String>) -> Self {
        self.source = Some(source.into());
        self
    }

    /// Finds and decodes the `Payment` credential in an `Authorization` value: split on `,`,
    /// take the first entry that starts with `Payment ` (case-insensitively), as the SDK
    /// servers do. Other schemes are ignored.
    pub fn from_authorization(value: &str) -> Result<Self, CredentialError> {
        let token = value
            .split(',')
            .map(str::trim)
            .find_map(|entry| {
                let head = entry.get(..8)?;
                head.eq_ignore_ascii_case("payment ")
                    .then(|| entry[8..].trim())
            })
            .ok_or(CredentialError::Missing)?;
        Self::from_token(token)
    }

    /// Decodes the base64url token that follows `Payment `.
    pub fn from_token(token: &str) -> Result<Self, CredentialError> {
        use CredentialError::Malformed;
        if token.len() > MAX_CREDENTIAL_LEN {
            return Err(Malformed("credential too large"));
        }
        let bytes = crate::base64url::decode(token).map_err(|_| Malformed("not base64url"))?;
        let value: Value = serde_json::from_slice(&bytes).map_err(|_| Malformed("not JSON"))?;
        Self::from_json(value)
    }

    /// Builds a credential from its JSON object (the HTTP token's content, or MCP `_meta`).
    pub fn from_json(value: Value) -> Result<Self, CredentialError> {
        use CredentialError::Malformed;
        let Value::Object(mut obj) = value else {
            return Err(Malformed("not a JSON object"));
        };
        let challenge =
            Challenge::from_echo_json(obj.get("challenge").ok_or(Malformed("challenge"))?)?;
        let source = match obj.remove("source") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s),
            Some(_) => return Err(Malformed("source")),
        };
        let payload = obj.remove("payload").unwrap_or(Value::Null);
        Ok(Self {
            challenge,
            source,
            payload,
        })
    }

    /// The JSON object of the credential.
    pub fn to_json(&self) -> Value {
        let mut obj = Map::new();
        obj.insert("challenge".into(), self.challenge.to_echo_json());
        if let Some(source) = &self.source {
            obj.insert("source".into(), source.clone().into());
        }
        obj.insert("payload".into(), self.payload.clone());
        Value::Object(obj)
    }

    /// The base64url token.
    pub fn to_token(&self) -> String {
        crate::base64url::encode(self.to_json().to_string())
    }

    /// The full `Authorization` value: `Payment <token>`.
    pub fn to_authorization(&self) -> String {
        format!("Payment {}", self.to_token())
    }
}
