//! RFC 9457 problem details with the `https://paymentauth.org/problems/` types.
//!
//! ```
//! use mpp_core::problem::{Problem, ProblemType};
//!
//! let p = Problem::new(ProblemType::PaymentExpired, "The challenge expired.").with_challenge_id("abc");
//! assert_eq!(p.status, 402);
//! let json = serde_json::to_value(&p).unwrap();
//! assert_eq!(json["type"], "https://paymentauth.org/problems/payment-expired");
//! assert_eq!(json["challengeId"], "abc");
//! ```

use serde::{Deserialize, Serialize};

/// Base URI of every problem type.
pub const PROBLEM_BASE_URI: &str = "https://paymentauth.org/problems/";

/// The media type of a problem body.
pub const PROBLEM_CONTENT_TYPE: &str = "application/problem+json";

/// The problem types of the Payment scheme (core, charge and session).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ProblemType {
    /// No credential was sent.
    PaymentRequired,
    /// The credential could not be decoded.
    MalformedCredential,
    /// The challenge id is not ours, was tampered with, belongs to another route, or lacks a
    /// valid `expires`.
    InvalidChallenge,
    /// The challenge is past its `expires`.
    PaymentExpired,
    /// The payload does not match the method's schema.
    InvalidPayload,
    /// The proof or transaction does not satisfy the request.
    VerificationFailed,
    /// The amount paid is too low.
    PaymentInsufficient,
    /// An extra step is needed (e.g. 3-D Secure).
    PaymentActionRequired,
    /// The method is not accepted here (400).
    MethodUnsupported,
    /// The request is malformed (400).
    BadRequest,
    /// An internal payment error (500, draft -01).
    InternalPaymentError,
    /// Session: voucher headroom is below the cost.
    SessionInsufficientBalance,
    /// Session: the voucher signature is invalid.
    SessionInvalidSignature,
    /// Session: the signer is not authorized for the channel.
    SessionSignerMismatch,
    /// Session: the voucher exceeds the deposit.
    SessionAmountExceedsDeposit,
    /// Session: the voucher increment is below the minimum.
    SessionDeltaTooSmall,
    /// Session: unknown or expired challenge on a top-up.
    SessionChallengeNotFound,
    /// Session: no such funded channel (410).
    SessionChannelNotFound,
    /// Session: the channel is closed or closing (410).
    SessionChannelFinalized,
    /// A problem type a payment method defines for itself (see [`CustomProblem`]).
    Custom(&'static CustomProblem),
}

/// A problem type defined by a payment method, declared once as a `static`:
///
/// ```
/// use mpp_core::problem::{CustomProblem, Problem, ProblemType};
///
/// static INVOICE_EXPIRED: CustomProblem = CustomProblem {
///     uri: "https://example.com/problems/invoice-expired",
///     title: "Invoice Expired",
///     status: 402,
/// };
/// let problem = Problem::new(ProblemType::Custom(&INVOICE_EXPIRED), "pay a fresh invoice");
/// assert_eq!(problem.type_uri, INVOICE_EXPIRED.uri);
/// assert!(ProblemType::Custom(&INVOICE_EXPIRED).carries_challenge());
/// ```
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct CustomProblem {
    /// The full type URI.
    pub uri: &'static str,
    /// A short human-readable title.
    pub title: &'static str,
    /// The HTTP status (402 and 410 carry fresh challenges).
    pub status: u16,
}

impl ProblemType {
    /// Every problem type of the Payment scheme, in declaration order.
    pub const ALL: [ProblemType; 19] = [
        Self::PaymentRequired,
        Self::MalformedCredential,
        Self::InvalidChallenge,
        Self::PaymentExpired,
        Self::InvalidPayload,
        Self::VerificationFailed,
        Self::PaymentInsufficient,
        Self::PaymentActionRequired,
        Self::MethodUnsupported,
        Self::BadRequest,
        Self::InternalPaymentError,
        Self::SessionInsufficientBalance,
        Self::SessionInvalidSignature,
        Self::SessionSignerMismatch,
        Self::SessionAmountExceedsDeposit,
        Self::SessionDeltaTooSmall,
        Self::SessionChallengeNotFound,
        Self::SessionChannelNotFound,
        Self::SessionChannelFinalized,
    ];

    /// The suffix after [`PROBLEM_BASE_URI`], e.g. `payment-expired` (the whole URI for a
    /// [`CustomProblem`]).
    pub const fn code(self) -> &'static str {
        match self {
            Self::Custom(custom) => custom.uri,
            Self::PaymentRequired => "payment-required",
            Self::MalformedCredential => "malformed-credential",
            Self::InvalidChallenge => "invalid-challenge",
            Self::PaymentExpired => "payment-expired",
            Self::InvalidPayload => "invalid-payload",
            Self::VerificationFailed => "verification-failed",
            Self::PaymentInsufficient => "payment-insufficient",
            Self::PaymentActionRequired => "payment-action-required",
            Self::MethodUnsupported => "method-unsupported",
            Self::BadRequest => "bad-request",
            Self::InternalPaymentError => "internal-payment-error",
            Self::SessionInsufficientBalance => "session/insufficient-balance",
            Self::SessionInvalidSignature => "session/invalid-signature",
            Self::SessionSignerMismatch => "session/signer-mismatch",
            Self::SessionAmountExceedsDeposit => "session/amount-exceeds-deposit",
            Self::SessionDeltaTooSmall => "session/delta-too-small",
            Self::SessionChallengeNotFound => "session/challenge-not-found",
            Self::SessionChannelNotFound => "session/channel-not-found",
            Self::SessionChannelFinalized => "session/channel-finalized",
        }
    }

    /// The HTTP status that goes with this problem.
    pub const fn status(self) -> u16 {
        match self {
            Self::MethodUnsupported | Self::BadRequest => 400,
            Self::InternalPaymentError => 500,
            Self::SessionChannelNotFound | Self::SessionChannelFinalized => 410,
            Self::Custom(custom) => custom.status,
            _ => 402,
        }
    }

    /// A short human-readable title.
    pub const fn title(self) -> &'static str {
        match self {
            Self::PaymentRequired => "Payment Required",
            Self::MalformedCredential => "Malformed Credential",
            Self::InvalidChallenge => "Invalid Challenge",
            Self::PaymentExpired => "Payment Expired",
            Self::InvalidPayload => "Invalid Payload",
            Self::VerificationFailed => "Verification Failed",
            Self::PaymentInsufficient => "Payment Insufficient",
            Self::PaymentActionRequired => "Payment Action Required",
            Self::MethodUnsupported => "Method Unsupported",
            Self::BadRequest => "Bad Request",
            Self::InternalPaymentError => "Internal Payment Error",
            Self::SessionInsufficientBalance => "Insufficient Balance",
            Self::SessionInvalidSignature => "Invalid Signature",
            Self::SessionSignerMismatch => "Signer Mismatch",
            Self::SessionAmountExceedsDeposit => "Amount Exceeds Deposit",
            Self::SessionDeltaTooSmall => "Delta Too Small",
            Self::SessionChallengeNotFound => "Challenge Not Found",
            Self::SessionChannelNotFound => "Channel Not Found",
            Self::SessionChannelFinalized => "Channel Finalized",
            Self::Custom(custom) => custom.title,
        }
    }

    /// The full type URI.
    pub fn uri(self) -> String {
        match self {
            Self::Custom(custom) => custom.uri.to_owned(),
            _ => format!("{PROBLEM_BASE_URI}{}", self.code()),
        }
    }

    /// Looks a type of the Payment scheme up by its URI (or bare code).
    pub fn from_uri(uri: &str) -> Option<Self> {
        let code = uri.strip_prefix(PROBLEM_BASE_URI).unwrap_or(uri);
        Self::ALL.into_iter().find(|t| t.code() == code)
    }

    /// Whether the response should carry a fresh challenge (every 402, and 410 as mppx does).
    pub const fn carries_challenge(self) -> bool {
        matches!(self.status(), 402 | 410)
    }
}

/// An RFC 9457 problem body, as both SDKs send it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    /// The type URI.
    #[serde(rename = "type")]
    pub type_uri: String,
    /// Short human-readable summary.
    pub title: String,
    /// HTTP status code.
    pub status: u16,
    /// What went wrong, for a human.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// The id of the fresh challenge sent with this response.
    #[serde(
        rename = "challengeId",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub challenge_id: Option<String>,
    /// An optional hint on how to fix the request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

impl Problem {
    /// A problem of `kind` with a detail message.
    pub fn new(kind: ProblemType, detail: impl Into<String>) -> Self {
        Self {
            type_uri: kind.uri(),
            title: kind.title().to_owned(),
            status: kind.status(),
            detail: Some(detail.into()),
            challenge_id: None,
            hint: None,
        }
    }

    /// Sets the id of the fresh challenge that accompanies this problem.
    pub fn with_challenge_id(mut self, id: impl Into<String>) -> Self {
        self.challenge_id = Some(id.into());
        self
    }

    /// Sets a hint.
    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// The problem type, when it is one of ours.
    pub fn kind(&self) -> Option<ProblemType> {
        ProblemType::from_uri(&self.type_uri)
    }

    /// The JSON body.
    pub fn to_json(&self) -> String {
        // A struct of strings and integers always serializes.
        serde_json::to_string(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_and_round_trip() {
        for kind in ProblemType::ALL {
            assert_eq!(ProblemType::from_uri(&kind.uri()), Some(kind));
            assert!(matches!(kind.status(), 400 | 402 | 410 | 500));
        }
        assert_eq!(ProblemType::SessionChannelNotFound.status(), 410);
        assert_eq!(ProblemType::MethodUnsupported.status(), 400);
        assert_eq!(ProblemType::from_uri("urn:other"), None);
    }
}
