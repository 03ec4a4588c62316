//! [`PaymentReceipt`]: what a handler behind a payment layer learns about the payment.

use axum_core::extract::{FromRequestParts, OptionalFromRequestParts};
use axum_core::response::{IntoResponse, Response};
use mpp_core::Receipt;
use mpp_core::gate::Admitted;

/// The verified payment of this request, inserted into the request extensions by the
/// payment layer before the handler runs. Use it as an axum extractor.
///
/// ```
/// use mpp_axum::PaymentReceipt;
///
/// async fn fortune(paid: PaymentReceipt) -> String {
///     format!("paid by {:?}, tx {}", paid.payer, paid.reference())
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
}

/// The handler asked for a [`PaymentReceipt`] but its route has no payment layer: a server
/// bug, answered with 500.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("this route is not behind a payment layer (add `.layer(charge(...))`)")]
pub struct MissingPaymentLayer;

impl IntoResponse for MissingPaymentLayer {
    fn into_response(self) -> Response {
        (http::StatusCode::INTERNAL_SERVER_ERROR, self.to_string()).into_response()
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
