//! The challenge a server sends in `WWW-Authenticate: Payment ...`.
//!
//! ```
//! use mpp_core::{Challenge, ChallengeSecret};
//! use serde_json::json;
//!
//! let secret = ChallengeSecret::new("an-example-secret-of-32-bytes-or-more").unwrap();
//! let challenge = Challenge::builder("api.example.com", "tempo", "charge", json!({"amount": "10000"}))
//!     .unwrap()
//!     .expires("2025-01-06T12:05:00.000Z")
//!     .description("A fortune")
//!     .sign(&secret);
//! let header = challenge.to_header_value().unwrap();
//! assert!(header.starts_with("Payment id=\""));
//! let parsed = Challenge::parse_all(&header).unwrap();
//! assert_eq!(parsed, vec![challenge]);
//! ```

use crate::binding::{BindingSlots, ChallengeSecret};
use crate::encoded_json::{EncodedJson, EncodedJsonError};
use serde_json::Value;

/// A `Payment` challenge. String fields hold the exact wire values.
#[derive(Debug, Clone, PartialEq)]
pub struct Challenge {
    /// The HMAC binding (see [`crate::binding`]).
    pub id: String,
    /// Protection space (SDKs use the host name).
    pub realm: String,
    /// Payment method id, lowercase (e.g. `tempo`).
    pub method: String,
    /// Intent (e.g. `charge`, `session`).
    pub intent: String,
    /// The payment terms, `base64url(JCS(object))`.
    pub request: EncodedJson,
    /// RFC 3339 expiry, verbatim.
    pub expires: Option<String>,
    /// Body digest, verbatim.
    pub digest: Option<String>,
    /// Display text; not bound by the id.
    pub description: Option<String>,
    /// Server correlation data, `base64url(JCS(string map))`.
    pub opaque: Option<EncodedJson>,
    /// Draft -01: the request header the credential must travel in.
    pub header: Option<String>,
}

impl Challenge {
    /// Starts a challenge; the id is computed by [`ChallengeBuilder::sign`].
    pub fn builder(
        realm: impl Into<String>,
        method: impl Into<String>,
        intent: impl Into<String>,
        request: Value,
    ) -> Result<ChallengeBuilder, EncodedJsonError> {
        Ok(Self::builder_encoded(
            realm,
            method,
            intent,
            EncodedJson::from_value(request)?,
        ))
    }

    /// Starts a challenge from an already encoded request (e.g. cached per route).
    pub fn builder_encoded(
        realm: impl Into<String>,
        method: impl Into<String>,
        intent: impl Into<String>,
        request: EncodedJson,
    ) -> ChallengeBuilder {
        ChallengeBuilder(Challenge {
            id: String::new(),
            realm: realm.into(),
            method: method.into(),
            intent: intent.into(),
            request,
            expires: None,
            digest: None,
            description: None,
            opaque: None,
            header: None,
        })
    }

    /// The slots the id binds.
    pub fn binding_slots(&self) -> BindingSlots<'_> {
        BindingSlots {
            realm: &self.realm,
            method: &self.method,
            intent: &self.intent,
            request: self.request.wire(),
            expires: self.expires.as_deref(),
            digest: self.digest.as_deref(),
            opaque: self.opaque.as_ref().map(EncodedJson::wire),
            header: self.header.as_deref(),
        }
    }

    /// The slots with the realm given by the verifier: servers check an echoed challenge
    /// under their own realm, never the echoed one.
    pub fn binding_slots_for_realm<'a>(&'a self, realm: &'a str) -> BindingSlots<'a> {
        BindingSlots {
            realm,
            ..self.binding_slots()
        }
    }
}

/// Builds a [`Challenge`]; see [`Challenge::builder`].
#[derive(Debug, Clone)]
pub struct ChallengeBuilder(Challenge);

impl ChallengeBuilder {
    /// Sets `expires` (use [`crate::expiry::format_timestamp`]).
    pub fn expires(mut self, expires: impl Into<String>) -> Self {
        self.0.expires = Some(expires.into());
        self
    }

    /// Sets the body digest.
    pub fn digest(mut self, digest: impl Into<String>) -> Self {
        self.0.digest = Some(digest.into());
        self
    }

    /// Sets the description.
    pub fn description(mut self, description: impl Into<String>) -> Self {
        self.0.description = Some(description.into());
        self
    }

    /// Sets `opaque`.
    pub fn opaque(mut self, opaque: EncodedJson) -> Self {
        self.0.opaque = Some(opaque);
        self
    }

    /// Sets the draft -01 `header` parameter.
    pub fn header(mut self, header: impl Into<String>) -> Self {
        self.0.header = Some(header.into());
        self
    }

    /// Computes the id with `secret` and returns the challenge.
    pub fn sign(mut self, secret: &ChallengeSecret) -> Challenge {
        self.0.id = secret.challenge_id(&self.0.binding_slots());
        self.0
    }

    /// Returns the challenge with a given id (for clients and tests).
    pub fn with_id(mut self, id: impl Into<String>) -> Challenge {
        self.0.id = id.into();
        self.0
    }
}
