//! [`ConfigError`]: why a paid server cannot be built. Reported at start-up, never per call.

use mpp_core::amount::AmountError;
use mpp_core::gate::OfferError;

/// Why [`PaidTools`](crate::PaidTools) refused its configuration.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The gate has no realm. HTTP takes one from each request's `Host`; MCP messages carry
    /// none (stdio has no host at all), so the realm must be configured.
    #[error(
        "no realm configured: MCP requests carry no host, so set one with `PaymentGate::realm`"
    )]
    NoRealm,
    /// A price that is not a plain decimal amount (e.g. `"0.01"`).
    #[error("the price of tool `{tool}`: {source}")]
    Amount {
        /// The tool.
        tool: String,
        /// Why the amount does not parse.
        #[source]
        source: AmountError,
    },
    /// No configured method can offer the tool's terms.
    #[error("tool `{tool}` cannot be offered: {source}")]
    Offer {
        /// The tool.
        tool: String,
        /// Why the gate cannot offer the terms.
        #[source]
        source: OfferError,
    },
}
