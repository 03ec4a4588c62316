//! Why a Tempo charge was refused or could not be verified.
//!
//! Two families, kept apart on purpose: **payer faults** (the credential is wrong, used, or
//! the transfer does not pay the terms; answered 402 with a fresh challenge) and
//! **infrastructure faults** (node or database down, timeouts; answered 503, never success,
//! and the payer may retry).

use mpp_core::{MethodError, ProblemType};

use crate::chain::ChainError;
use crate::store::StoreError;

/// What the payer is told when the payment went through but could not be recorded
/// ([`ChargeError::PaidNotRecorded`]): unlike the other 503s, something *was* charged.
pub(crate) const PAID_NOT_RECORDED_DETAIL: &str = "Your payment went through, but the server could not \
     record it just now. Send the same credential again shortly to be served; it will not be \
     charged again.";

/// Seconds after which a payment that could not be recorded is worth presenting again.
const PAID_NOT_RECORDED_RETRY_AFTER: u32 = 2;

/// The payer's text for a transaction the node refused (at admission, when it was sent):
/// it is not in the pool. The node's own message is logged, never sent (it is the node's
/// wording, and may say more about the node than the payer should read).
pub(crate) const NODE_REFUSED_DETAIL: &str =
    "the node refused the transaction; nothing was charged";

/// The payer's text for a transaction whose simulation failed (it would revert or is
/// invalid); the node's message is logged.
pub(crate) const WOULD_FAIL_DETAIL: &str =
    "the transaction would fail on chain (the node's simulation rejected it); nothing was charged";

/// A charge verification failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ChargeError {
    /// The `payload` JSON does not match the schema of its `type` (`invalid-payload`).
    #[error("invalid payload: {0}")]
    InvalidPayload(String),
    /// The echoed request is not a valid Tempo charge request (`verification-failed`).
    #[error("invalid charge request: {0}")]
    InvalidRequest(String),
    /// The payment does not satisfy the terms (`verification-failed`).
    #[error("verification failed: {0}")]
    VerificationFailed(String),
    /// The transaction, hash or proof was already used (`verification-failed`).
    #[error("already used: {0}")]
    Replayed(String),
    /// The request names a chain other than the one the node serves (`verification-failed`).
    #[error("chain id mismatch: the request says {requested}, the node serves {node}")]
    ChainMismatch {
        /// `methodDetails.chainId`.
        requested: u64,
        /// `eth_chainId` of the configured node.
        node: u64,
    },
    /// The RPC node could not be reached or answered with a transport error (503).
    #[error("tempo node unavailable: {0}")]
    NodeUnavailable(String),
    /// An RPC call (a read or a simulation) did not finish in time (503). A broadcast whose
    /// outcome is unknown is [`ChargeError::Pending`] instead.
    #[error("tempo node timed out: {0}")]
    Timeout(String),
    /// The payment was sent and its outcome is not known yet, because the node stopped
    /// answering (503): the claim stays pending, and the same credential sent again (or the
    /// background resolver) settles it once, when it is mined.
    #[error("payment outcome not known yet: {0}")]
    Pending(String),
    /// The payment was mined and pays the terms, but the store could not record it (503 with
    /// `Retry-After`): the money was taken, and the same credential sent again is served
    /// without a second charge. The text is the cause, for the log; the payer is told, in
    /// fixed words, that the payment went through and to send the same credential again.
    #[error("paid, but the payment could not be recorded yet: {0}")]
    PaidNotRecorded(String),
    /// The server's own limits defer the payment (sponsored fees spent for the period,
    /// another sponsored payment of the same account settling): 503 with `Retry-After`;
    /// nothing was charged. `detail` is written for the payer.
    #[error("payment deferred: {detail}")]
    Deferred {
        /// What the payer is told.
        detail: String,
        /// Seconds after which a retry can succeed.
        retry_after: u32,
    },
    /// The fee payer cannot pay for a sponsored transaction (its fee-token balance is short):
    /// the operator's fault, 503 and logged, never the payer's 402.
    #[error("fee payer cannot pay: {0}")]
    FeePayer(String),
    /// The replay store failed (503).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The server's own configuration is unusable (e.g. a fee-payer key the node rejects).
    #[error("tempo method misconfigured: {0}")]
    Config(String),
}

impl ChargeError {
    /// True for faults of the payer (402 + fresh challenge); false for infrastructure faults.
    pub fn is_payer_fault(&self) -> bool {
        matches!(
            self,
            Self::InvalidPayload(_)
                | Self::InvalidRequest(_)
                | Self::VerificationFailed(_)
                | Self::Replayed(_)
                | Self::ChainMismatch { .. }
        )
    }

    /// The problem type for payer faults; `None` for infrastructure faults (503).
    pub fn problem(&self) -> Option<ProblemType> {
        match self {
            Self::InvalidPayload(_) => Some(ProblemType::InvalidPayload),
            Self::InvalidRequest(_)
            | Self::VerificationFailed(_)
            | Self::Replayed(_)
            | Self::ChainMismatch { .. } => Some(ProblemType::VerificationFailed),
            Self::NodeUnavailable(_)
            | Self::Timeout(_)
            | Self::Pending(_)
            | Self::PaidNotRecorded(_)
            | Self::Deferred { .. }
            | Self::FeePayer(_)
            | Self::Store(_)
            | Self::Config(_) => None,
        }
    }

    pub(crate) fn failed(detail: impl Into<String>) -> Self {
        Self::VerificationFailed(detail.into())
    }

    /// The payment of claim `key` was taken (mined and paying), and the store failed while
    /// recording it: logged here with its cause, answered with an honest 503.
    pub(crate) fn paid_not_recorded(key: &str, e: &StoreError) -> Self {
        tracing::warn!(
            key,
            reason = %e,
            "payment taken but not recorded; the same credential will be served when it comes back"
        );
        Self::PaidNotRecorded(format!("{key}: {e}"))
    }

    /// A refusal by the node (`reason`, its own message) as the payer's fault with the fixed
    /// `detail`: the node's text goes to the log, not into the 402.
    pub(crate) fn node_refused(detail: &'static str, reason: &str) -> Self {
        tracing::info!(
            reason,
            detail,
            "the tempo node refused a payment transaction"
        );
        Self::failed(detail)
    }
}

impl From<ChainError> for ChargeError {
    /// A refusal becomes a payer fault (the payer supplied the transaction); callers that know
    /// more (a simulation, a broadcast) say so in their own message instead.
    fn from(e: ChainError) -> Self {
        match e {
            ChainError::Unavailable(detail) => Self::NodeUnavailable(detail),
            ChainError::Timeout(detail) => Self::Timeout(detail),
            ChainError::Config(detail) => Self::Config(detail),
            ChainError::Uncertain(detail) => Self::Pending(detail),
            ChainError::Refused(reason) => Self::node_refused(NODE_REFUSED_DETAIL, &reason),
        }
    }
}

impl From<ChargeError> for MethodError {
    fn from(e: ChargeError) -> Self {
        match (e.problem(), &e) {
            (Some(problem), _) => MethodError::rejected(problem, e.to_string()),
            (None, ChargeError::Pending(_)) => MethodError::pending(e),
            // Paid: the payer hears so, not the generic "nothing was charged" of a 503.
            (None, ChargeError::PaidNotRecorded(_)) => {
                MethodError::throttled(PAID_NOT_RECORDED_DETAIL, PAID_NOT_RECORDED_RETRY_AFTER)
            }
            (
                None,
                ChargeError::Deferred {
                    detail,
                    retry_after,
                },
            ) => MethodError::throttled(detail.clone(), *retry_after),
            // A configuration fault found at run time is the operator's: 500, logged.
            (None, ChargeError::Config(_)) => MethodError::config(e),
            (None, _) => MethodError::unavailable(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_faults_never_become_the_payers_402() {
        // A configuration fault found at run time: 500.
        assert!(matches!(
            MethodError::from(ChargeError::Config("bad key".into())),
            MethodError::Config(_)
        ));
        // The fee payer's fault: 503.
        let fee_payer = ChargeError::FeePayer("no fee token".into());
        assert!(!fee_payer.is_payer_fault());
        assert!(matches!(
            MethodError::from(fee_payer),
            MethodError::Unavailable(_)
        ));
        // The server's own limits: 503 with the payer's text and its Retry-After.
        let deferred = ChargeError::Deferred {
            detail: "later".into(),
            retry_after: 42,
        };
        assert_eq!(
            MethodError::from(deferred),
            MethodError::throttled("later", 42)
        );
        assert!(matches!(
            MethodError::from(ChargeError::Pending("sent".into())),
            MethodError::Pending(_)
        ));
        // Paid but not recorded: 503 with Retry-After, and a text that says it was paid.
        let paid = ChargeError::PaidNotRecorded("db down".into());
        assert!(!paid.is_payer_fault());
        assert_eq!(
            MethodError::from(paid),
            MethodError::throttled(PAID_NOT_RECORDED_DETAIL, PAID_NOT_RECORDED_RETRY_AFTER)
        );
        assert!(!PAID_NOT_RECORDED_DETAIL.contains("nothing was charged"));
    }

    #[test]
    fn a_node_refusal_does_not_carry_the_nodes_text() {
        let secret = "execution reverted: 0xdeadbeef at http://node.internal/?key=s3cr3t";
        let e = ChargeError::from(ChainError::Refused(secret.into()));
        assert!(e.is_payer_fault());
        let MethodError::Rejected { detail, .. } = MethodError::from(e) else {
            panic!("a refusal is the payer's 402");
        };
        assert!(
            !detail.contains("deadbeef") && !detail.contains("s3cr3t"),
            "{detail}"
        );
        assert!(detail.contains(NODE_REFUSED_DETAIL), "{detail}");
    }
}
