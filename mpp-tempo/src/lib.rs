//! The Tempo payment method for MPP.

pub mod chain;
pub mod charge;
#[cfg(feature = "client")]
pub mod client;
pub mod store;
mod tempo;
#[cfg(feature = "testing")]
pub mod testing;

pub use charge::{ChargeError, TempoChargeRequest};
pub use tempo::{ChargeKind, ChargeReceipt, Tempo, TempoBuilder};
