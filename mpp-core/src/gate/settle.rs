//! Taking the money of a payment the method verified and holds (charge on success): the
//! transport calls [`PaymentGate::settle`] once the service has answered with success (or
//! before the service, when the route settles first), and always ends with
//! [`Settlement::finish`].

use super::{Offer, PaymentGate, Refusal, RequestContext};
use crate::credential::Credential;
use crate::method::Settlement;

impl PaymentGate {
    /// Settles a held payment (`settlement`, taken from [`crate::Verified::settlement`]) of
    /// `credential`. A failure is a [`Refusal`] like an admission's: a payer fault is a 402
    /// with fresh challenges for `offers`, an infrastructure fault a 503. Each outcome is
    /// logged here, once.
    pub async fn settle(
        &self,
        offers: &[Offer],
        settlement: &mut Settlement,
        credential: &Credential,
        cx: &RequestContext<'_>,
    ) -> Result<(), Refusal> {
        let echo = &credential.challenge;
        match settlement.settle().await {
            Ok(()) => {
                tracing::info!(method = %echo.method, "payment settled");
                Ok(())
            }
            Err(error) => Err(self
                .method_refusal(offers, cx, &echo.method, &echo.id, &error)
                .await),
        }
    }
}
