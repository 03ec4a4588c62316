//! [`PaymentReceipt`]: what a handler behind a payment layer learns about the payment.

use crate::response::plain_problem;
use axum_core::extract::{FromRequestParts, OptionalFromRequestParts};
use axum_core::response::{IntoResponse, Response};
use mpp_core::Receipt;
use mpp_core::amount::format_base_units;
use mpp_core::did::PkhDid;
use mpp_core::gate::Admitted;

/// The verified payment of this request, inserted into the request extensions by the
/// payment layer before the handler runs. Use it as an axum extractor (or as
/// `Option<PaymentReceipt>` on a route that may be free).
///
/// ```
/// use mpp_axum::PaymentReceipt;
///
/// async fn fortune(paid: PaymentReceipt) -> String {
///     format!(
///         "{} paid {} (tx {})",
///         paid.payer_address().unwrap_or("someone"),
///         paid.amount_display().unwrap_or_default(),
///         paid.reference(),
///     )
/// }
/// ```
#[derive(Debug, Clone)]
pub struct PaymentReceipt {
    /// The receipt sent back in `Payment-Receipt`.
    pub receipt: Receipt,
    /// Who paid, when the method knows (a DID or address).
    pub payer: Option<String>,
    /// Base units charged for this request, when the method reports it.
    pub amount: Option<u128>,
    /// The decimals of the currency `amount` is in, when the method reports them.
    pub decimals: Option<u8>,
    /// The id of the challenge that was paid.
    pub challenge_id: String,
    /// The payment method id.
    pub method: String,
    /// The intent.
    pub intent: String,
}

impl From<Admitted> for PaymentReceipt {
    fn from(admitted: Admitted) -> Self {
        let verified = admitted.verified;
        let challenge = admitted.credential.challenge;
        Self {
            receipt: verified.receipt,
            payer: verified.payer,
            amount: verified.amount,
            decimals: verified.decimals,
            challenge_id: challenge.id,
            method: challenge.method,
            intent: challenge.intent,
        }
    }
}

impl PaymentReceipt {
    /// The method reference: tx hash (charge), challenge id (zero-amount proof), channel id.
    pub fn reference(&self) -> &str {
        &self.receipt.reference
    }

    /// The payer as a `did:pkh:eip155` identifier (chain id and address), when the method
    /// reported one.
    pub fn payer_did(&self) -> Option<PkhDid> {
        self.payer.as_deref()?.parse().ok()
    }

    /// The payer's account address (`0x` and 40 hex digits, as the payer wrote it), when
    /// the payer is a `did:pkh:eip155:<chain>:<address>` identifier.
    pub fn payer_address(&self) -> Option<&str> {
        let payer = self.payer.as_deref()?;
        payer.parse::<PkhDid>().ok()?;
        // A valid identifier ends with its 42-character address.
        payer.get(payer.len().saturating_sub(42)..)
    }

    /// The amount in currency units ("0.01" for 10000 base units at 6 decimals), when the
    /// method reported both the amount and its currency's decimals.
    pub fn amount_display(&self) -> Option<String> {
        Some(format_base_units(self.amount?, self.decimals?))
    }
}

/// The handler asked for a [`PaymentReceipt`] but its route has no payment layer: a server
/// bug, answered with a 500 problem.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("this route is not behind a payment layer (add `.layer(charge(...))`)")]
pub struct MissingPaymentLayer;

impl IntoResponse for MissingPaymentLayer {
    fn into_response(self) -> Response {
        tracing::error!("{self}");
        plain_problem(
            http::StatusCode::INTERNAL_SERVER_ERROR,
            "Payment Misconfigured",
            "This route reads a payment but is not behind a payment layer.",
        )
        .into_response()
    }
}

impl<S: Send + Sync> FromRequestParts<S> for PaymentReceipt {
    type Rejection = MissingPaymentLayer;

    async fn from_request_parts(
        parts: &mut http::request::Parts,
        _state: &S,
    ) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<PaymentReceipt>()
            .cloned()
            .ok_or(MissingPaymentLayer)
    }
}

impl<S: Send + Sync> OptionalFromRequestParts<S> for PaymentReceipt {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut http::request::Parts,
        _state: &S,
    ) -> Result<Option<Self>, Self::Rejection> {
        Ok(parts.extensions.get::<PaymentReceipt>().cloned())
    }
}
