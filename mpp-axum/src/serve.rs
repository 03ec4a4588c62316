//! What every paid layer does with a request once built: admit it through the gate, run the
//! inner service, and take the payment only when it answered with success (or answer by
//! itself, for session management requests).

use crate::body::PaymentBody;
use crate::gate::{BoxError, Held, Paid, PaidRoute};
use crate::idempotency::{Idempotent, MAX_STORED_BODY};
use crate::meter::Meter;
use crate::receipt::PaymentReceipt;
use crate::response::{attach_receipt, plain_problem, refusal_response};
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body::Body;
use http_body_util::{BodyExt as _, Full};
use mpp_core::gate::Refusal;
use mpp_core::method::Disposition;
use std::sync::Arc;
use tower_service::Service;

/// Admits `req` on `route`, then serves it through `inner` (see the module docs).
pub(crate) async fn serve<S, ReqBody, ResBody>(
    mut inner: S,
    route: Arc<PaidRoute>,
    req: Request<ReqBody>,
) -> Result<Response<PaymentBody<ResBody>>, S::Error>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ReqBody: Body + From<Bytes>,
    ReqBody::Error: Into<BoxError>,
    ResBody: Body<Data = Bytes>,
    ResBody::Error: Into<BoxError>,
{
    let Paid {
        mut parts,
        body,
        admitted,
        mut held,
        idempotent,
    } = match route.admit(req).await {
        Ok(paid) => paid,
        Err(response) => return Ok(response.map(PaymentBody::layer)),
    };
    let receipt = admitted.verified.receipt.clone();
    match admitted.verified.disposition {
        Disposition::Serve => {
            if route.settle_first {
                held = match take(held).await {
                    Ok(held) => held,
                    Err(refusal) => return Ok(refusal.map(PaymentBody::layer)),
                };
            }
            if let Some(metering) = admitted.verified.metering.clone() {
                parts.extensions.insert(Meter::new(metering, route.meter));
            }
            parts.extensions.insert(PaymentReceipt::from(admitted));
            let mut response = match inner.call(Request::from_parts(parts, body)).await {
                Ok(response) => response,
                Err(e) => {
                    finish(held, false).await;
                    return Err(e);
                }
            };
            if !response.status().is_success() {
                // No money for a failure (a 405 from the method router's fallback, a 404,
                // a handler error): a held payment is released; one settled first stays
                // redeemable by the same credential.
                tracing::info!(status = %response.status(), reference = %receipt.reference, "paid request not answered with success; no receipt");
                finish(held, false).await;
                // Forgotten before the answer goes out, so a retry with the key runs again.
                if let Some(idempotent) = idempotent {
                    idempotent.abandon().await;
                }
                return Ok(response.map(PaymentBody::inner));
            }
            if let Some(idempotent) = idempotent {
                if keepable(&response) {
                    return Ok(serve_idempotent(response, held, &receipt, idempotent).await);
                }
                // Served as it comes, once: a repeat is refused as used, never charged twice.
                idempotent.abandon().await;
            }
            // On failure the answer is withheld: content is never handed over unpaid.
            let held = match take(held).await {
                Ok(held) => held,
                Err(refusal) => return Ok(refusal.map(PaymentBody::layer)),
            };
            finish(held, true).await;
            attach_receipt(response.headers_mut(), &receipt);
            Ok(response.map(PaymentBody::inner))
        }
        // The method answered the request itself (e.g. a session top-up).
        Disposition::Respond(status) => {
            let held = match take(held).await {
                Ok(held) => held,
                Err(refusal) => return Ok(refusal.map(PaymentBody::layer)),
            };
            finish(held, true).await;
            let mut response = Response::new(Full::new(Bytes::new()));
            *response.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::NO_CONTENT);
            attach_receipt(response.headers_mut(), &receipt);
            Ok(response.map(PaymentBody::layer))
        }
        other => {
            // A disposition from a newer method this layer cannot honour: never serve.
            tracing::error!(disposition = ?other, "payment method asked for an unknown disposition");
            finish(held, false).await;
            Ok(refusal_response(&Refusal::misconfigured()).map(PaymentBody::layer))
        }
    }
}

/// Whether a response can be kept for `Idempotency-Key` repeats: its size is known up front
/// and small enough.
fn keepable<B: Body>(response: &Response<B>) -> bool {
    response
        .body()
        .size_hint()
        .exact()
        .is_some_and(|size| size <= MAX_STORED_BODY)
}

/// A [`keepable`] 2xx answer to a request with an `Idempotency-Key`: its body is read before
/// the money is taken, then the paid response is stored for repeats and sent.
async fn serve_idempotent<ResBody>(
    response: Response<ResBody>,
    held: Option<Held>,
    receipt: &mpp_core::Receipt,
    idempotent: Idempotent,
) -> Response<PaymentBody<ResBody>>
where
    ResBody: Body<Data = Bytes>,
    ResBody::Error: Into<BoxError>,
{
    let (mut head, body) = response.into_parts();
    // The body's own error type need not be `Send`: only its text outlives the read.
    let collected: Result<Bytes, String> = body
        .collect()
        .await
        .map(|c| c.to_bytes())
        .map_err(|e| Into::<BoxError>::into(e).to_string());
    let bytes = match collected {
        Ok(bytes) => bytes,
        Err(e) => {
            tracing::warn!(reason = %e, "paid response body failed before it was sent; nothing charged");
            finish(held, false).await;
            idempotent.abandon().await;
            return plain_problem(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Internal Server Error",
                "The response failed before it was sent; nothing was charged.",
            )
            .map(PaymentBody::layer);
        }
    };
    let held = match take(held).await {
        Ok(held) => held,
        Err(refusal) => {
            idempotent.abandon().await;
            return refusal.map(PaymentBody::layer);
        }
    };
    finish(held, true).await;
    attach_receipt(&mut head.headers, receipt);
    idempotent
        .complete(head.status, &head.headers, &bytes)
        .await;
    Response::from_parts(head, PaymentBody::layer(Full::new(bytes)))
}

/// Takes a held payment's money (once; nothing to do without one). On failure the payment is
/// ended unserved and the refusal to send instead is returned.
async fn take(mut held: Option<Held>) -> Result<Option<Held>, Response<Full<Bytes>>> {
    if let Some(pending) = &mut held
        && let Err(refusal) = pending.settle().await
    {
        finish(held, false).await;
        return Err(refusal);
    }
    Ok(held)
}

/// Ends a held payment, if there is one.
async fn finish(held: Option<Held>, served: bool) {
    if let Some(held) = held {
        held.finish(served).await;
    }
}
