//! The Tempo `charge` intent: request terms, credential payloads and their verification
//! (charge.md). The entry point is [`crate::Tempo::verify_charge`]; the modules here hold the
//! pure parts so they can be tested and reused (e.g. by the client).

pub mod envelope;
mod error;
pub mod hash;
pub mod memo;
pub mod payload;
pub mod proof;
pub mod request;
pub(crate) mod serde_hex;
pub mod sponsor;
pub mod transaction;
pub mod transfers;

pub use error::ChargeError;
pub use memo::{attribution_memo, is_bound_to_challenge};
pub use payload::ChargePayload;
pub use request::{
    ChargeMode, ExpectedTransfer, MethodDetails, RequestError, Split, TempoChargeRequest,
};
pub use sponsor::{Sponsor, SponsorPolicy};
