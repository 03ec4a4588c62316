//! The Tempo `charge` intent (charge.md): the request terms, the credential payloads, and
//! their verification.
//!
//! [`Tempo`](crate::Tempo) verifies charges through [`Tempo::verify_charge`](crate::Tempo::verify_charge)
//! (the [`Method`](mpp_core::Method) implementation calls it). The pure parts are public so
//! clients and tests can build and check payments offline: the request shape
//! ([`TempoChargeRequest`]), the attribution memo ([`attribution_memo`]), the zero-amount
//! proof ([`proof_digest`]), the fee-payer envelope ([`FeePayerEnvelope`]), pull-credential
//! decoding ([`decode_pull`], [`check_pull_calls`]) and the sponsor policy ([`Sponsor`]).

mod envelope;
mod error;
mod logs;
mod memo;
mod payload;
mod proof;
pub(crate) mod pull;
mod request;
pub(crate) mod settle;
pub(crate) mod sponsor;
mod transfers;
mod verify;

pub use envelope::{FEE_PAYER_ENVELOPE_TYPE, FeePayerEnvelope};
pub use error::ChargeError;
pub use memo::{MEMO_TAG, MEMO_VERSION, attribution_memo, is_bound_to_challenge};
pub use payload::ChargePayload;
pub use proof::{Proof, proof_digest, proof_domain, recover_proof_signer};
pub use pull::{DecodedPull, PullTransaction, check_pull_calls, decode_pull};
pub use request::{
    ChargeMode, ExpectedTransfer, MAX_SPLITS, MethodDetails, RequestError, Split,
    TempoChargeRequest,
};
pub use sponsor::{Sponsor, SponsorBudget, SponsorPolicy};
pub use verify::{ChargeContext, ChargeKind, MAX_PULL_VALIDITY, SettledCharge};

pub(crate) use settle::resolve_pending;
pub(crate) use verify::ChargeVerifier;
