//! The `Session` middleware: pay-as-you-go over a payment channel. The client opens a
//! channel once, then pays each request (or each streamed unit) with an off-chain voucher.
//!
//! ```
//! use axum::{Router, routing::get, response::IntoResponse};
//! use futures_util::stream;
//! use mpp_axum::{Meter, Mpp, PaymentReceipt};
//! # use mpp_core::testing::TestMethod;
//!
//! async fn ping(paid: PaymentReceipt) -> String {
//!     format!("pong ({})", paid.reference())
//! }
//!
//! async fn tokens(meter: Meter) -> impl IntoResponse {
//!     meter.sse(stream::iter(["one", "token", "per", "item"]))
//! }
//!
//! # fn main() -> Result<(), mpp_axum::ConfigError> {
//! # let mpp = Mpp::new("an-hmac-secret-of-at-least-32-bytes")?.method(TestMethod::new("tempo").intents(&["session"]));
//! let app: Router = Router::new()
//!     // 0.001 per request (`unitType` "request").
//!     .route("/ping", get(ping).layer(mpp.session("0.001")?))
//!     // 0.0001 per streamed token.
//!     .route("/tokens", get(tokens).layer(mpp.session("0.0001")?.unit("token")))
//!     .layer(mpp.layer());
//! # Ok(()) }
//! ```
//!
//! What the layer does with each request (the contract of the official clients):
//!
//! - a **content** request (any method but `HEAD`, and a `POST` only with a body) carrying
//!   an `open` or a `voucher`: the credential is applied, one unit is held in the channel,
//!   the handler runs, and the unit is taken only when it answers `2xx` (the receipt then
//!   goes out with it; a `404` or a handler error takes nothing). A [`Meter`](crate::Meter)
//!   in the handler bills more units (a metered SSE stream);
//! - a **management** request (a `topUp` or `close` anywhere; an `open` or `voucher` on a
//!   bare `POST` or a `HEAD`, as clients send mid-stream vouchers): applied and answered
//!   `204` with `Payment-Receipt`; the handler never runs. It may answer a challenge issued
//!   for another HTTP method of the same URL (a voucher `POST`ed to a `GET` stream), query
//!   string included;
//! - a voucher, top-up or close for an open channel is accepted on a genuine challenge that
//!   has expired, so streams outlive the challenge lifetime;
//! - refusals are problem+json with a fresh challenge; `410` for an unknown or closed channel.
//!
//! Put the layer on the method router with `.layer(..)`, not `.route_layer(..)`: the
//! voucher `POST`s to a `GET` route must reach it (they never reach the handler).

use crate::body::PaymentBody;
use crate::config::{ConfigError, Mpp};
use crate::future::ResponseFuture;
use crate::gate::{BoxError, CredentialHeader, PaidRoute, request_path};
use crate::pricing::{Price, PriceError, PriceOptions};
use crate::serve::serve;
use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use mpp_core::PriceTerms;
use mpp_core::discovery::PaymentInfo;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tower_layer::Layer;
use tower_service::Service;
use tracing::Instrument as _;

/// Pay-as-you-go at `price` per unit (a decimal in the currency's display unit, e.g.
/// dollars), for each configured method that serves the `session` intent. A unit is a
/// request unless [`SessionLayer::unit`] says otherwise. The literal is checked now; whether
/// the methods can offer it, on first use (use [`Mpp::session`] to check everything at
/// start-up).
///
/// # Panics
///
/// If `price` is not a non-negative decimal literal (see [`crate::charge()`]). Use
/// [`try_session`] for prices read from configuration.
pub fn session(price: &str) -> SessionLayer {
    match try_session(price) {
        Ok(layer) => layer,
        #[allow(clippy::panic)]
        Err(e) => panic!("session({price:?}): {e}"),
    }
}

/// Like [`session`], returning an error for an invalid price literal.
pub fn try_session(price: &str) -> Result<SessionLayer, ConfigError> {
    Ok(SessionLayer::new(Price::fixed("session", price)?))
}

/// A session whose per-unit price is computed from each request (see
/// [`crate::charge_with`]); the function returns [`PriceTerms::session`] terms.
pub fn session_with<F>(price: F) -> SessionLayer
where
    F: Fn(&http::request::Parts) -> Result<PriceTerms, PriceError> + Send + Sync + 'static,
{
    SessionLayer::new(Price::Dynamic {
        intent: "session",
        f: Arc::new(price),
        options: PriceOptions::default(),
    })
}

impl Mpp {
    /// A [`session`] bound to this configuration and checked now: a price no method can
    /// offer as a session is an error here, at start-up. See the
    /// [module docs](mod@crate::session) for an example.
    pub fn session(&self, price: &str) -> Result<SessionLayer, ConfigError> {
        try_session(price)?.bind(self)
    }

    /// A [`session_with`] bound to this configuration and checked now with a probe price.
    pub fn session_with<F>(&self, price: F) -> Result<SessionLayer, ConfigError>
    where
        F: Fn(&http::request::Parts) -> Result<PriceTerms, PriceError> + Send + Sync + 'static,
    {
        session_with(price).bind(self)
    }
}

/// Layer that applies [`Session`]; see [`session()`] for the forms and the
/// [module docs](mod@crate::session) for an example.
///
/// # Panics
///
/// Like [`ChargeLayer`](crate::ChargeLayer): applying a bound layer whose later options the
/// methods cannot offer panics at start-up, with the reason.
#[derive(Debug, Clone)]
#[must_use]
pub struct SessionLayer {
    route: PaidRoute,
    invalid: Option<Arc<str>>,
}

impl SessionLayer {
    fn new(price: Price) -> Self {
        let mut route = PaidRoute::new(price);
        route.session = true;
        Self {
            route,
            invalid: None,
        }
    }

    fn bind(mut self, mpp: &Mpp) -> Result<Self, ConfigError> {
        self.route.price.check(mpp)?;
        self.route.mpp = Some(mpp.clone());
        Ok(self)
    }

    /// Binds a layer not yet bound (one made by [`session()`]) to `mpp`; a bound one keeps its
    /// own configuration.
    #[cfg_attr(not(feature = "openapi"), allow(dead_code))]
    pub(crate) fn bind_if_unbound(self, mpp: &Mpp) -> Result<Self, ConfigError> {
        if self.route.mpp.is_some() {
            Ok(self)
        } else {
            self.bind(mpp)
        }
    }

    fn with_options(mut self, f: impl FnOnce(&mut PriceOptions)) -> Self {
        self.route.price = self.route.price.with_options(f);
        if let Some(mpp) = &self.route.mpp {
            self.invalid = self
                .route
                .price
                .check(mpp)
                .err()
                .map(|e| e.to_string().into());
        }
        self
    }

    /// What one unit is (`unitType`: `"token"`, `"byte"`...); default `"request"`.
    pub fn unit(self, unit_type: impl Into<String>) -> Self {
        let unit_type = unit_type.into();
        self.with_options(|o| o.unit_type = Some(unit_type))
    }

    /// A human description, sent in the challenge's `description`.
    pub fn description(self, description: impl Into<String>) -> Self {
        let description = description.into();
        self.with_options(|o| o.description = Some(description))
    }

    /// A currency other than the methods' default (method-defined, e.g. a token address).
    pub fn currency(self, currency: impl Into<String>) -> Self {
        let currency = currency.into();
        self.with_options(|o| o.currency = Some(currency))
    }

    /// Where this route reads the credential (see [`crate::ChargeLayer::credential_header`]).
    pub fn credential_header(mut self, header: CredentialHeader) -> Self {
        self.route.credential_header = Some(header);
        self
    }

    /// How long a metered stream waits for a voucher after asking for one before it ends
    /// with its receipt (default 30 s).
    pub fn voucher_wait(mut self, wait: Duration) -> Self {
        self.route.meter.voucher_wait = wait;
        self
    }

    /// How often an idle metered stream sends a keep-alive comment (default 15 s).
    pub fn keep_alive(mut self, interval: Duration) -> Self {
        self.route.meter.keep_alive = interval;
        self
    }

    /// The most units a metered stream reserves at once (default 4096). Larger blocks mean
    /// fewer store writes for fast streams; the headroom they hold is unavailable to the
    /// channel's other requests until used or released.
    pub fn max_block(mut self, units: u64) -> Self {
        self.route.meter.max_block = units.max(1);
        self
    }

    /// The fixed terms of this layer (`None` for a price computed per request).
    pub fn terms(&self) -> Option<&PriceTerms> {
        self.route.price.terms()
    }

    /// What discovery documents for this route: the offers its 402 challenges carry under
    /// `mpp` (a layer made by [`Mpp::session`] uses its own configuration, as its 402 does),
    /// one per method and intent, read from those very offers: the price is written once.
    /// A price computed per request has `amount: null`. The `discovery` module (feature
    /// `openapi`) builds the whole document from these.
    pub fn payment_info(&self, mpp: &Mpp) -> Result<PaymentInfo, ConfigError> {
        self.route.payment_info(mpp)
    }
}

impl<S> Layer<S> for SessionLayer {
    type Service = Session<S>;

    fn layer(&self, inner: S) -> Self::Service {
        if let Some(reason) = &self.invalid {
            #[allow(clippy::panic)]
            {
                panic!("session layer cannot be offered: {reason}");
            }
        }
        Session {
            inner,
            route: Arc::new(self.route.clone()),
        }
    }
}

/// Middleware that serves a route pay-as-you-go over payment channels: `402` until a
/// session credential comes; management credentials answered `204`; content charged one
/// unit on success, and more through [`Meter`](crate::Meter). See the
/// [module docs](mod@crate::session).
#[derive(Debug, Clone)]
pub struct Session<S> {
    inner: S,
    route: Arc<PaidRoute>,
}

impl<S> Session<S> {
    inner_service_accessors!();
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for Session<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ReqBody: Body + From<Bytes> + Send + 'static,
    ReqBody::Data: Send,
    ReqBody::Error: Into<BoxError>,
    ResBody: Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
{
    type Response = Response<PaymentBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<ResBody, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        let route = self.route.clone();
        let path = request_path(req.uri(), req.extensions());
        let span = tracing::debug_span!("mpp.session", method = %req.method(), path = %path);
        ResponseFuture {
            inner: Box::pin(serve(inner, route, req).instrument(span)),
        }
    }
}
