//! Why a session credential was refused: one error enum, with the `session/*` problem types
//! of core.md §10 and the statuses mppx answers with (sdk-behaviour.md §1.2).
//!
//! Two families, as for charges: **payer faults** (402, 400 or 410, each with a fresh
//! challenge) and **infrastructure faults** (503; never success, and the payer may retry).

use mpp_core::{MethodError, Problem, ProblemType};

use super::terms::TermsError;

/// A session verification failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    /// The `payload` does not have the shape of its `action` (`invalid-payload`, 402).
    #[error("invalid payload: {0}")]
    InvalidPayload(String),
    /// The echoed `request` is not valid session terms (`verification-failed`, 402).
    #[error("invalid session request: {0}")]
    InvalidRequest(String),
    /// The credential does not satisfy the terms or the channel: a descriptor that does not
    /// hash to the channel id, a voucher below the highest accepted one or at most the
    /// settled amount, a `source` that may not spend (`verification-failed`, 402).
    #[error("verification failed: {0}")]
    VerificationFailed(String),
    /// The voucher signature is malformed, not canonical, high-s, or does not recover to the
    /// channel's signer (`session/invalid-signature`, 402).
    #[error("invalid voucher signature: {0}")]
    InvalidSignature(String),
    /// The signature is valid but its signer may not sign for this channel
    /// (`session/signer-mismatch`, 402).
    #[error("signer not authorized for this channel: {0}")]
    SignerMismatch(String),
    /// The voucher's cumulative amount is above the channel deposit
    /// (`session/amount-exceeds-deposit`, 402).
    #[error("voucher amount {amount} exceeds the deposit {deposit}")]
    AmountExceedsDeposit {
        /// The voucher's cumulative amount.
        amount: u128,
        /// The channel's deposit.
        deposit: u128,
    },
    /// The voucher raises the accepted amount by less than `minVoucherDelta`
    /// (`session/delta-too-small`, 402).
    #[error("voucher delta {delta} below the minimum {min}")]
    DeltaTooSmall {
        /// The increase over the highest accepted voucher.
        delta: u128,
        /// `methodDetails.minVoucherDelta`.
        min: u128,
    },
    /// The accepted vouchers do not cover what was asked (`session/insufficient-balance`,
    /// 402).
    #[error("insufficient balance: requested {requested}, available {available}")]
    InsufficientBalance {
        /// What the request costs.
        requested: u128,
        /// Accepted but unspent.
        available: u128,
    },
    /// No such (funded) channel (`session/channel-not-found`, 410).
    #[error("channel not found: {0}")]
    ChannelNotFound(String),
    /// The channel is closed, closing, or has a pending close request
    /// (`session/channel-finalized`, 410).
    #[error("channel closed: {0}")]
    ChannelFinalized(String),
    /// A malformed request, e.g. a sponsored transaction that breaks the fee-payer policy
    /// (`bad-request`, 400, as mppx answers it).
    #[error("bad request: {0}")]
    BadRequest(String),
    /// The node or the channel store could not be reached, or timed out (503).
    #[error("session infrastructure unavailable: {0}")]
    Unavailable(String),
    /// A transaction was sent and its outcome is not known yet (503).
    #[error("session transaction outcome not known yet: {0}")]
    Pending(String),
    /// The server's own limits defer this request (fee sponsorship spent for the period, or
    /// another sponsored transaction of the payer in flight): 503 with `Retry-After`;
    /// nothing was charged. `detail` is written for the payer.
    #[error("{detail}")]
    Deferred {
        /// What the payer is told.
        detail: String,
        /// Seconds after which a retry can succeed.
        retry_after: u32,
    },
    /// The server's own configuration is unusable (500, logged).
    #[error("session method misconfigured: {0}")]
    Config(String),
}

impl SessionError {
    /// The problem type for payer faults; `None` for infrastructure and configuration faults.
    pub fn problem(&self) -> Option<ProblemType> {
        Some(match self {
            Self::InvalidPayload(_) => ProblemType::InvalidPayload,
            Self::InvalidRequest(_) | Self::VerificationFailed(_) => {
                ProblemType::VerificationFailed
            }
            Self::InvalidSignature(_) => ProblemType::SessionInvalidSignature,
            Self::SignerMismatch(_) => ProblemType::SessionSignerMismatch,
            Self::AmountExceedsDeposit { .. } => ProblemType::SessionAmountExceedsDeposit,
            Self::DeltaTooSmall { .. } => ProblemType::SessionDeltaTooSmall,
            Self::InsufficientBalance { .. } => ProblemType::SessionInsufficientBalance,
            Self::ChannelNotFound(_) => ProblemType::SessionChannelNotFound,
            Self::ChannelFinalized(_) => ProblemType::SessionChannelFinalized,
            Self::BadRequest(_) => ProblemType::BadRequest,
            Self::Unavailable(_) | Self::Pending(_) | Self::Deferred { .. } | Self::Config(_) => {
                return None;
            }
        })
    }

    /// True for faults of the payer (answered with a problem and a fresh challenge).
    pub fn is_payer_fault(&self) -> bool {
        self.problem().is_some()
    }

    /// The HTTP status of the answer: the problem's (402, 400 or 410), 503 for infrastructure
    /// faults, 500 for configuration faults.
    pub fn status(&self) -> u16 {
        match (self.problem(), self) {
            (Some(problem), _) => problem.status(),
            (None, Self::Config(_)) => 500,
            (None, _) => 503,
        }
    }

    /// The problem body for payer faults (`type`, `title`, `status`, `detail`); the caller
    /// adds the id of the fresh challenge it sends along ([`Problem::with_challenge_id`]).
    /// `None` for infrastructure and configuration faults, whose text stays in the log.
    pub fn to_problem(&self) -> Option<Problem> {
        self.problem()
            .map(|problem| Problem::new(problem, self.to_string()))
    }

    pub(crate) fn payload(detail: impl Into<String>) -> Self {
        Self::InvalidPayload(detail.into())
    }

    pub(crate) fn failed(detail: impl Into<String>) -> Self {
        Self::VerificationFailed(detail.into())
    }

    pub(crate) fn signature(detail: impl Into<String>) -> Self {
        Self::InvalidSignature(detail.into())
    }
}

impl From<TermsError> for SessionError {
    /// Terms that do not parse or validate: `verification-failed`, as for charges.
    fn from(e: TermsError) -> Self {
        Self::InvalidRequest(e.to_string())
    }
}

impl From<SessionError> for MethodError {
    fn from(e: SessionError) -> Self {
        match (e.problem(), &e) {
            (Some(problem), _) => MethodError::rejected(problem, e.to_string()),
            (None, SessionError::Pending(_)) => MethodError::pending(e),
            (
                None,
                SessionError::Deferred {
                    detail,
                    retry_after,
                },
            ) => MethodError::throttled(detail.clone(), *retry_after),
            (None, SessionError::Config(_)) => MethodError::config(e),
            (None, _) => MethodError::unavailable(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_follow_the_problem_table() {
        let gone = SessionError::ChannelNotFound("x".into());
        assert_eq!(gone.status(), 410);
        assert_eq!(
            gone.problem().map(ProblemType::code),
            Some("session/channel-not-found")
        );
        assert_eq!(SessionError::ChannelFinalized("x".into()).status(), 410);
        assert_eq!(SessionError::BadRequest("x".into()).status(), 400);
        assert_eq!(
            SessionError::DeltaTooSmall { delta: 1, min: 2 }.status(),
            402
        );
        assert_eq!(SessionError::Unavailable("x".into()).status(), 503);
        assert_eq!(SessionError::Config("x".into()).status(), 500);
        let problem = gone.to_problem().unwrap();
        assert_eq!(
            problem.type_uri,
            "https://paymentauth.org/problems/session/channel-not-found"
        );
        assert_eq!(problem.status, 410);
        assert_eq!(problem.detail.as_deref(), Some("channel not found: x"));
        assert_eq!(SessionError::Unavailable("db".into()).to_problem(), None);
        assert!(matches!(
            MethodError::from(SessionError::Pending("x".into())),
            MethodError::Pending(_)
        ));
        assert!(matches!(
            MethodError::from(SessionError::InvalidSignature("x".into())),
            MethodError::Rejected {
                problem: ProblemType::SessionInvalidSignature,
                ..
            }
        ));
    }
}
