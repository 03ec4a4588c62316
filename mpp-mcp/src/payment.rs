//! [`ToolPayment`]: what a paid tool can learn about the payment that admitted its call.

use mpp_core::Receipt;
use mpp_core::gate::Admitted;

/// The payment of the current tool call, in the request context's extensions, so a paid tool
/// can see who paid and how much with rmcp's `Extension` extractor:
///
/// ```
/// use mpp_mcp::ToolPayment;
/// use rmcp::handler::server::common::Extension;
///
/// fn search(Extension(paid): Extension<ToolPayment>) -> String {
///     format!("paid by {:?} with {}", paid.payer, paid.receipt.reference)
/// }
/// ```
///
/// Only paid tools get one: on a free tool the extractor fails (`-32602`).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ToolPayment {
    /// The receipt the result will carry (in `_meta["org.paymentauth/receipt"]`).
    pub receipt: Receipt,
    /// Who paid, when the method knows (a DID or an address).
    pub payer: Option<String>,
    /// Base units charged, when the method knows.
    pub amount: Option<u128>,
    /// The decimals of the currency `amount` is in, when known.
    pub decimals: Option<u8>,
    /// The id of the challenge that was paid.
    pub challenge_id: String,
    /// The method that was paid (`tempo`...).
    pub method: String,
    /// The intent that was paid (`charge`...).
    pub intent: String,
}

impl From<&Admitted> for ToolPayment {
    fn from(admitted: &Admitted) -> Self {
        let verified = &admitted.verified;
        let echo = &admitted.credential.challenge;
        Self {
            receipt: verified.receipt.clone(),
            payer: verified.payer.clone(),
            amount: verified.amount,
            decimals: verified.decimals,
            challenge_id: echo.id.clone(),
            method: echo.method.clone(),
            intent: echo.intent.clone(),
        }
    }
}
