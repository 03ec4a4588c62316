//! The `Charge` middleware: a one-time payment per request, verified before the inner service
//! runs.
//!
//! ```
//! use axum::{Router, routing::get};
//! use mpp_axum::{Mpp, PaymentReceipt, charge};
//! # use mpp_core::{BoxFuture, Method, MethodError, PriceTerms, Verified, VerifyContext};
//! # struct Tempo;
//! # impl Method for Tempo {
//! #     fn name(&self) -> &str { "tempo" }
//! #     fn supports_intent(&self, i: &str) -> bool { i == "charge" }
//! #     fn request(&self, t: &PriceTerms) -> Result<serde_json::Value, MethodError> {
//! #         Ok(serde_json::json!({"amount": t.amount.to_base_units(6)?.to_string()}))
//! #     }
//! #     fn verify<'a>(&'a self, _: VerifyContext<'a>) -> BoxFuture<'a, Result<Verified, MethodError>> {
//! #         Box::pin(async { Err(MethodError::verification_failed("example")) })
//! #     }
//! # }
//!
//! async fn fortune(paid: PaymentReceipt) -> String {
//!     format!("A fortune, paid with {}", paid.reference())
//! }
//!
//! let mpp = Mpp::new("0123456789abcdef0123456789abcdef").unwrap().method(Tempo);
//! let app: Router = Router::new()
//!     .route("/fortune", get(fortune).layer(charge("0.01")))
//!     .layer(mpp.layer());
//! ```

use crate::config::{ConfigError, Mpp};
use crate::pipeline::{Refusal, RouteRequest, is_content_request};
use crate::pricing::{OfferError, PriceError, Pricing};
use crate::receipt::PaymentReceipt;
use crate::response::{
    attach_receipt, misconfigured, plain_problem, problem_response, unavailable,
};
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body::Body;
use http_body_util::{BodyExt, Either, Full, Limited};
use mpp_core::credential::CredentialError;
use mpp_core::method::{Disposition, HttpRequestInfo};
use mpp_core::{BoxFuture, Credential, DecimalAmount, PriceTerms, Problem, ProblemType};
use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};
use tower_layer::Layer;
use tower_service::Service;
use tracing::Instrument as _;

/// The response body of a payment layer: the inner service's body, or one the layer wrote.
pub type PaymentBody<B> = Either<B, Full<Bytes>>;

/// A one-time charge of `price` (a decimal in the currency's display unit, e.g. dollars) on
/// every request, for each configured method that serves the `charge` intent.
///
/// # Panics
///
/// If `price` is not a non-negative decimal literal: a programming error that should stop the
/// server at start-up, like an invalid route path. Use [`try_charge`] for prices read from
/// configuration.
pub fn charge(price: &str) -> ChargeLayer {
    match try_charge(price) {
        Ok(layer) => layer,
        #[allow(clippy::panic)]
        Err(e) => panic!("charge({price:?}): {e}"),
    }
}

/// Like [`charge`], returning an error for an invalid price.
pub fn try_charge(price: &str) -> Result<ChargeLayer, ConfigError> {
    let amount: DecimalAmount = price
        .parse()
        .map_err(|e: mpp_core::amount::AmountError| ConfigError::Price(e.to_string()))?;
    Ok(ChargeLayer::from_terms(PriceTerms::charge(amount)))
}

/// A charge whose price is computed from each request (e.g. from a query parameter). A
/// refusal is answered with `400`.
pub fn charge_with<F>(price: F) -> ChargeLayer
where
    F: Fn(&http::request::Parts) -> Result<PriceTerms, PriceError> + Send + Sync + 'static,
{
    ChargeLayer {
        terms: None,
        pricing: Pricing::Dynamic(Arc::new(price)),
        mpp: None,
        body_limit: None,
    }
}

impl Mpp {
    /// A [`charge`] bound to this configuration: the price is converted by every method now,
    /// so a price a method cannot express fails here, at start-up.
    pub fn charge(&self, price: &str) -> Result<ChargeLayer, ConfigError> {
        let mut layer = try_charge(price)?;
        layer.pricing.prime(&self.inner)?;
        layer.mpp = Some(self.clone());
        Ok(layer)
    }
}

/// Layer that applies [`Charge`]; see [`charge`].
#[derive(Clone)]
pub struct ChargeLayer {
    terms: Option<PriceTerms>,
    pricing: Pricing,
    mpp: Option<Mpp>,
    body_limit: Option<usize>,
}

impl std::fmt::Debug for ChargeLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChargeLayer")
            .field("terms", &self.terms)
            .field("body_limit", &self.body_limit)
            .finish_non_exhaustive()
    }
}

impl ChargeLayer {
    fn from_terms(terms: PriceTerms) -> Self {
        Self {
            pricing: Pricing::fixed(terms.clone()),
            terms: Some(terms),
            mpp: None,
            body_limit: None,
        }
    }

    fn with_terms(mut self, f: impl FnOnce(&mut PriceTerms)) -> Self {
        if let Some(terms) = &mut self.terms {
            f(terms);
            self.pricing = Pricing::fixed(terms.clone());
            if let Some(mpp) = &self.mpp
                && let Err(e) = self.pricing.prime(&mpp.inner)
            {
                tracing::error!(error = %e, "charge terms cannot be expressed by a method");
            }
        }
        self
    }

    /// A human description, sent in the challenge's `description`.
    pub fn description(self, description: impl Into<String>) -> Self {
        let description = description.into();
        self.with_terms(|t| t.description = Some(description))
    }

    /// A merchant reference bound into the request (receipts echo it).
    pub fn external_id(self, external_id: impl Into<String>) -> Self {
        let external_id = external_id.into();
        self.with_terms(|t| t.external_id = Some(external_id))
    }

    /// A currency other than the methods' default (method-defined, e.g. a token address).
    pub fn currency(self, currency: impl Into<String>) -> Self {
        let currency = currency.into();
        self.with_terms(|t| t.currency = Some(currency))
    }

    /// Binds each challenge to the request body (the `digest` parameter), so a credential
    /// cannot be replayed with another body. Bodies over `limit` bytes get `413`.
    pub fn bind_body(mut self, limit: usize) -> Self {
        self.body_limit = Some(limit);
        self
    }

    /// The fixed terms of this layer (`None` for [`charge_with`]); discovery reads them.
    pub fn terms(&self) -> Option<&PriceTerms> {
        self.terms.as_ref()
    }
}

impl<S> Layer<S> for ChargeLayer {
    type Service = Charge<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Charge {
            inner,
            pricing: self.pricing.clone(),
            mpp: self.mpp.clone(),
            body_limit: self.body_limit,
        }
    }
}

/// Middleware that answers `402 Payment Required` until a valid credential comes, then runs
/// the inner service and adds `Payment-Receipt`. The inner service never runs unpaid.
#[derive(Clone)]
pub struct Charge<S> {
    inner: S,
    pricing: Pricing,
    mpp: Option<Mpp>,
    body_limit: Option<usize>,
}

impl<S> std::fmt::Debug for Charge<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Charge")
            .field("body_limit", &self.body_limit)
            .finish_non_exhaustive()
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for Charge<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ReqBody: Body + From<Bytes> + Send + 'static,
    ReqBody::Data: Send,
    ReqBody::Error: Into<BoxError>,
    ResBody: Send + 'static,
{
    type Response = Response<PaymentBody<ResBody>>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        // Take the service that was driven to readiness; leave a clone for the next call.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        let pricing = self.pricing.clone();
        let mpp = self.mpp.clone();
        let body_limit = self.body_limit;
        let span =
            tracing::info_span!("mpp.charge", method = %req.method(), path = %req.uri().path());
        Box::pin(async move { handle(inner, pricing, mpp, body_limit, req).await }.instrument(span))
    }
}

fn layer_response<B>(response: Response<Full<Bytes>>) -> Response<PaymentBody<B>> {
    response.map(Either::Right)
}

async fn handle<S, ReqBody, ResBody>(
    mut inner: S,
    pricing: Pricing,
    mpp: Option<Mpp>,
    body_limit: Option<usize>,
    req: Request<ReqBody>,
) -> Result<Response<PaymentBody<ResBody>>, S::Error>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ReqBody: Body + From<Bytes>,
    ReqBody::Error: Into<BoxError>,
{
    let Some(mpp) = mpp.or_else(|| req.extensions().get::<Mpp>().cloned()) else {
        tracing::error!(
            "paid route without configuration: add `.layer(mpp.layer())` around the router"
        );
        return Ok(layer_response(misconfigured(
            "This route requires payment but the server has no payment configuration.",
        )));
    };
    let (mut parts, body) = req.into_parts();
    let offers = match pricing.offers(&mpp.inner, &parts) {
        Ok(offers) => offers,
        Err(OfferError::Price(e)) => {
            tracing::info!(reason = %e, "price could not be computed for this request");
            return Ok(layer_response(plain_problem(
                StatusCode::BAD_REQUEST,
                "Bad Request",
                &e.0,
            )));
        }
        Err(OfferError::Config(e)) => {
            tracing::error!(error = %e, "route price cannot be offered");
            return Ok(layer_response(misconfigured(
                "This route's price cannot be offered by the configured payment methods.",
            )));
        }
    };

    // Buffer the body only when the route binds it to the challenge.
    let (body, buffered) = match body_limit {
        None => (body, None),
        Some(limit) => match Limited::new(body, limit).collect().await {
            Ok(collected) => {
                let bytes = collected.to_bytes();
                (ReqBody::from(bytes.clone()), Some(bytes))
            }
            Err(e) => {
                let too_large = e
                    .downcast_ref::<http_body_util::LengthLimitError>()
                    .is_some();
                let (status, title) = if too_large {
                    (StatusCode::PAYLOAD_TOO_LARGE, "Payload Too Large")
                } else {
                    (StatusCode::BAD_REQUEST, "Bad Request")
                };
                return Ok(layer_response(plain_problem(
                    status,
                    title,
                    "The request body could not be read.",
                )));
            }
        },
    };

    let route = RouteRequest::new(&mpp.inner, &offers, &parts, buffered.as_deref());
    let refuse = |kind: ProblemType, detail: &str| {
        let challenges = route.challenges();
        let mut problem = Problem::new(kind, detail);
        if let Some(first) = challenges.first() {
            problem = problem.with_challenge_id(&first.id);
        }
        let shown: &[_] = if kind.carries_challenge() {
            &challenges
        } else {
            &[]
        };
        layer_response(problem_response(&problem, shown))
    };

    let authorization = parts
        .headers
        .get_all(http::header::AUTHORIZATION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| match Credential::from_authorization(v) {
            Err(CredentialError::Missing) => None,
            other => Some(other),
        });
    let credential = match authorization {
        None => {
            tracing::debug!("no credential: issuing challenges");
            return Ok(refuse(ProblemType::PaymentRequired, "Payment is required."));
        }
        Some(Err(e)) => {
            tracing::info!(reason = %e, "payment refused");
            return Ok(refuse(ProblemType::MalformedCredential, &e.to_string()));
        }
        Some(Ok(credential)) => credential,
    };

    let http_info = HttpRequestInfo {
        method: parts.method.as_str(),
        is_content_request: is_content_request(&parts),
    };
    let verified = match route.verify(&credential, http_info).await {
        Ok(verified) => verified,
        Err(Refusal::Problem(kind, detail)) => {
            tracing::info!(problem = kind.code(), reason = %detail, challenge_id = %credential.challenge.id, "payment refused");
            return Ok(refuse(kind, &detail));
        }
        Err(Refusal::Unavailable(detail)) => {
            tracing::warn!(reason = %detail, "payment infrastructure unavailable");
            return Ok(layer_response(unavailable(&detail)));
        }
        Err(Refusal::Misconfigured(detail)) => {
            tracing::error!(reason = %detail, "payment method misconfigured");
            return Ok(layer_response(misconfigured(
                "The payment method is misconfigured.",
            )));
        }
    };
    tracing::info!(
        method = %credential.challenge.method,
        reference = %verified.receipt.reference,
        amount = ?verified.amount,
        "payment settled"
    );

    match verified.disposition {
        Disposition::Respond(status) => {
            let mut response = Response::new(Full::new(Bytes::new()));
            *response.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::NO_CONTENT);
            attach_receipt(response.headers_mut(), &verified.receipt);
            Ok(layer_response(response))
        }
        Disposition::Serve => {
            let receipt = verified.receipt.clone();
            parts.extensions.insert(PaymentReceipt {
                receipt: verified.receipt,
                payer: verified.payer,
                amount: verified.amount,
                challenge_id: credential.challenge.id.clone(),
                method: credential.challenge.method.clone(),
                intent: credential.challenge.intent.clone(),
            });
            let mut response = inner.call(Request::from_parts(parts, body)).await?;
            if response.status().is_success() {
                attach_receipt(response.headers_mut(), &receipt);
            } else {
                // Settled but the handler failed: receipts only go on 2xx responses.
                tracing::warn!(status = %response.status(), reference = %receipt.reference, "paid request answered with an error");
            }
            Ok(response.map(Either::Left))
        }
    }
}

// `Infallible` is the error of every axum handler; make sure the layer fits there.
const _: fn() = || {
    fn assert_service<T: Service<Request<axum::body::Body>, Error = Infallible>>() {}
    assert_service::<Charge<axum::routing::Route>>();
};
