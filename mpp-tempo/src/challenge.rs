//! [`ChallengeView`]: the parts of a challenge a Tempo payment is bound to, the same for the
//! server that verifies and the client that pays.
//!
//! Its id and realm go into the attribution memo and the zero-amount proof; its expiry caps a
//! transaction's `validBefore`.
//!
//! ```
//! use mpp_core::Challenge;
//! use mpp_tempo::ChallengeView;
//! use serde_json::json;
//!
//! let challenge = Challenge::builder("api.example.com", "tempo", "charge", json!({"amount": "1"}))
//!     .unwrap()
//!     .expires("2025-01-06T12:05:00.000Z")
//!     .with_id("challenge-123");
//! let view = ChallengeView::from_challenge(&challenge).unwrap();
//! assert_eq!((view.id, view.realm), ("challenge-123", "api.example.com"));
//! assert_eq!(view.expires.unix_timestamp(), 1_736_165_100);
//! ```

use mpp_core::expiry::{TimestampError, parse_timestamp};
use mpp_core::{Challenge, VerifyContext};
use time::OffsetDateTime;

/// The challenge a payment answers: its id, the realm that issued it, and when it expires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChallengeView<'a> {
    /// The challenge id (the HMAC binding).
    pub id: &'a str,
    /// The realm that issued it (the attribution memo's server id).
    pub realm: &'a str,
    /// When it expires.
    pub expires: OffsetDateTime,
}

/// Why a challenge cannot be viewed as a Tempo challenge.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ChallengeViewError {
    /// The challenge has no `expires` (a payment's `validBefore` needs one).
    #[error("the challenge has no `expires`")]
    MissingExpiry,
    /// `expires` is not an RFC 3339 timestamp.
    #[error(transparent)]
    InvalidExpiry(#[from] TimestampError),
}

impl<'a> ChallengeView<'a> {
    /// A view of challenge `id` of `realm`, expiring at `expires`.
    pub fn new(id: &'a str, realm: &'a str, expires: OffsetDateTime) -> Self {
        Self { id, realm, expires }
    }

    /// The server's view: the echoed challenge id, under the server's own realm (not the
    /// echoed one) and the expiry the gate checked.
    pub fn from_verify_context(ctx: &VerifyContext<'a>) -> Self {
        Self::new(&ctx.credential.challenge.id, ctx.realm, ctx.expires)
    }

    /// The client's view of a challenge it received.
    pub fn from_challenge(challenge: &'a Challenge) -> Result<Self, ChallengeViewError> {
        let expires = challenge
            .expires
            .as_deref()
            .ok_or(ChallengeViewError::MissingExpiry)?;
        Ok(Self::new(
            &challenge.id,
            &challenge.realm,
            parse_timestamp(expires)?,
        ))
    }
}
