//! The Tempo payment method for MPP.

pub mod store;
