//! The `Charge` middleware: a one-time payment per request, verified and held before the
//! inner service runs and taken only when it answers with success (charge on success;
//! [`ChargeLayer::settle_first`] takes it before).
//!
//! A layer on a method router (`get(h).layer(charge(..))`) also wraps axum's `405` fallback:
//! such a request is challenged, but paying it takes no money, since the `405` is not a
//! success. `route_layer` answers it with a plain `405` and no challenge instead.
//!
//! Every option works on every form: [`charge`], [`charge_with`] (a price computed per
//! request), [`Mpp::charge`] and [`Mpp::charge_with`] (bound to a configuration and checked
//! at start-up).

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
use tower_layer::Layer;
use tower_service::Service;
use tracing::Instrument as _;

/// A one-time charge of `price` (a decimal in the currency's display unit, e.g. dollars) on
/// every request, for each configured method that serves the `charge` intent. The literal is
/// checked now; whether the methods can offer it, on first use (use [`Mpp::charge`] to check
/// everything at start-up).
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

/// Like [`charge`], returning an error for an invalid price literal.
pub fn try_charge(price: &str) -> Result<ChargeLayer, ConfigError> {
    Ok(ChargeLayer::new(Price::fixed("charge", price)?))
}

/// A charge whose price is computed from each request (e.g. from a query parameter). Options
/// set on the layer fill what the returned terms leave unset.
///
/// The price function sees the request's head. A [`PriceError`] it returns is answered with
/// `400` and its text; so is an amount no configured method can express (e.g. more decimals
/// than the currency has, from a client-chosen quantity): the client chose it. Everything
/// else about the terms is the server's to get right, and [`Mpp::charge_with`] checks it at
/// start-up.
///
/// Compute amounts with [`DecimalAmount`](crate::DecimalAmount) arithmetic, which is exact:
///
/// ```
/// use axum::{Router, extract::Query, routing::get};
/// use mpp_axum::{DecimalAmount, Mpp, PaymentReceipt, PriceError, PriceTerms};
/// # use mpp_core::testing::TestMethod;
///
/// #[derive(serde::Deserialize)]
/// struct Size {
///     kb: u64,
/// }
///
/// /// 0.001 per kilobyte asked for.
/// fn price_by_size(parts: &http::request::Parts) -> Result<PriceTerms, PriceError> {
///     let Query(size) = Query::<Size>::try_from_uri(&parts.uri).map_err(PriceError::new)?;
///     let per_kb = DecimalAmount::from_base_units(1, 3);
///     let amount = per_kb
///         .checked_mul(size.kb)
///         .ok_or_else(|| PriceError::new("`kb` is too large"))?;
///     Ok(PriceTerms::charge(amount))
/// }
///
/// async fn blob(paid: PaymentReceipt) -> String {
///     format!("paid {}", paid.amount_display().unwrap_or_default())
/// }
///
/// # fn main() -> Result<(), mpp_axum::ConfigError> {
/// # let mpp = Mpp::new("0123456789abcdef0123456789abcdef")?.method(TestMethod::new("test"));
/// let app: Router = Router::new()
///     .route("/blob", get(blob).layer(mpp.charge_with(price_by_size)?.description("A blob")));
/// # Ok(()) }
/// ```
pub fn charge_with<F>(price: F) -> ChargeLayer
where
    F: Fn(&http::request::Parts) -> Result<PriceTerms, PriceError> + Send + Sync + 'static,
{
    ChargeLayer::new(Price::Dynamic {
        intent: "charge",
        f: Arc::new(price),
        options: PriceOptions::default(),
    })
}

impl Mpp {
    /// A [`charge`] bound to this configuration and checked now: a price a method cannot
    /// express is an error here, at start-up. Options set afterwards are checked as they are
    /// set (see [`ChargeLayer`]).
    ///
    /// ```
    /// use axum::{Router, routing::get};
    /// use mpp_axum::{Mpp, PaymentReceipt};
    /// use mpp_core::testing::TestMethod;
    ///
    /// async fn fortune(paid: PaymentReceipt) -> String {
    ///     format!("A fortune, paid with {}", paid.reference())
    /// }
    ///
    /// # fn main() -> Result<(), mpp_axum::ConfigError> {
    /// let mpp = Mpp::new("0123456789abcdef0123456789abcdef")?.method(TestMethod::new("test"));
    /// let app: Router = Router::new()
    ///     // Checked now: a price the methods cannot offer is an error here, not a 500 later.
    ///     .route("/fortune", get(fortune).layer(mpp.charge("0.01")?.description("One fortune")))
    ///     // The short form: the literal is checked now, the rest on first use.
    ///     .route("/quote", get(|| async { "paid" }).layer(mpp_axum::charge("0.001")))
    ///     .layer(mpp.layer());
    /// # Ok(()) }
    /// ```
    pub fn charge(&self, price: &str) -> Result<ChargeLayer, ConfigError> {
        try_charge(price)?.bind(self)
    }

    /// A [`charge_with`] bound to this configuration and checked now with a probe price of 1
    /// (methods, intent, currency, description): terms the methods cannot offer are an error
    /// here. Each request's amount is checked when it is computed (`400` if no method can
    /// express it). See [`charge_with`] for an example.
    pub fn charge_with<F>(&self, price: F) -> Result<ChargeLayer, ConfigError>
    where
        F: Fn(&http::request::Parts) -> Result<PriceTerms, PriceError> + Send + Sync + 'static,
    {
        charge_with(price).bind(self)
    }
}

/// Layer that applies [`Charge`]; see [`charge()`] for the forms and [`Mpp::charge`] for an example.
///
/// # Panics
///
/// Applying ([`Layer::layer`]) a layer bound with [`Mpp::charge`] whose later options the
/// methods cannot offer (e.g. a `.currency(..)` that is not a token) panics, at start-up,
/// with the reason: such a route could only ever answer 500.
#[derive(Debug, Clone)]
#[must_use]
pub struct ChargeLayer {
    route: PaidRoute,
    /// Why a bound layer's options cannot be offered (reported when the layer is applied).
    invalid: Option<Arc<str>>,
}

impl ChargeLayer {
    fn new(price: Price) -> Self {
        Self {
            route: PaidRoute::new(price),
            invalid: None,
        }
    }

    /// Binds the layer to `mpp` and checks its price against `mpp`'s methods.
    fn bind(mut self, mpp: &Mpp) -> Result<Self, ConfigError> {
        self.route.price.check(mpp)?;
        self.route.mpp = Some(mpp.clone());
        Ok(self)
    }

    /// Binds a layer not yet bound (one made by [`charge()`]) to `mpp`; a bound one keeps its
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

    /// A human description, sent in the challenge's `description`.
    pub fn description(self, description: impl Into<String>) -> Self {
        let description = description.into();
        self.with_options(|o| o.description = Some(description))
    }

    /// A merchant reference bound into the request (receipts echo it).
    pub fn external_id(self, external_id: impl Into<String>) -> Self {
        let external_id = external_id.into();
        self.with_options(|o| o.external_id = Some(external_id))
    }

    /// A currency other than the methods' default (method-defined, e.g. a token address).
    pub fn currency(self, currency: impl Into<String>) -> Self {
        let currency = currency.into();
        self.with_options(|o| o.currency = Some(currency))
    }

    /// Binds each challenge to the request body (the `digest` parameter), so a credential
    /// cannot be replayed with another body. Bodies over `limit` bytes get `413`.
    pub fn bind_body(mut self, limit: usize) -> Self {
        self.route.body_limit = Some(limit);
        self
    }

    /// Where this route reads the credential; default: the configuration's
    /// ([`Mpp::credential_header`]), itself `Authorization` by default. With
    /// [`CredentialHeader::PaymentAuthorization`] the route's `Authorization` stays the
    /// application's (e.g. a `Bearer` token checked by an outer layer).
    pub fn credential_header(mut self, header: CredentialHeader) -> Self {
        self.route.credential_header = Some(header);
        self
    }

    /// Takes the money before the handler runs instead of after it has answered with
    /// success: for handlers with side effects that must not run unpaid (sending an email,
    /// starting a job). The default, charge on success, verifies and holds the payment before
    /// the handler and settles it only for a 2xx answer, so a failed request (a 404, a 405
    /// from the method router, a handler error) takes no money. Settled first, a payment
    /// whose handler then fails stays redeemable: the same credential, sent again within the
    /// challenge's lifetime, is served without a second charge.
    pub fn settle_first(mut self) -> Self {
        self.route.settle_first = true;
        self
    }

    /// The fixed terms of this layer (`None` for a price computed per request).
    pub fn terms(&self) -> Option<&PriceTerms> {
        self.route.price.terms()
    }

    /// What discovery documents for this route: the offers its 402 challenges carry under
    /// `mpp` (a layer made by [`Mpp::charge`] uses its own configuration, as its 402 does),
    /// one per method and intent, read from those very offers: the price is written once.
    /// A price computed per request has `amount: null`. The `discovery` module (feature
    /// `openapi`) builds the whole document from these.
    ///
    /// ```
    /// use mpp_axum::Mpp;
    /// # use mpp_core::testing::TestMethod;
    ///
    /// # fn main() -> Result<(), mpp_axum::ConfigError> {
    /// let mpp = Mpp::new("0123456789abcdef0123456789abcdef")?.method(TestMethod::new("tempo"));
    /// let info = mpp.charge("0.01")?.description("One fortune").payment_info(&mpp)?;
    /// let offer = &info.offers[0];
    /// assert_eq!((offer.intent.as_str(), offer.method.as_str()), ("charge", "tempo"));
    /// assert_eq!(offer.amount.as_deref(), Some("10000")); // base units, as the 402 says
    /// # Ok(()) }
    /// ```
    pub fn payment_info(&self, mpp: &Mpp) -> Result<PaymentInfo, ConfigError> {
        self.route.payment_info(mpp)
    }
}

impl<S> Layer<S> for ChargeLayer {
    type Service = Charge<S>;

    fn layer(&self, inner: S) -> Self::Service {
        if let Some(reason) = &self.invalid {
            #[allow(clippy::panic)]
            {
                panic!("charge layer cannot be offered: {reason}");
            }
        }
        Charge {
            inner,
            route: Arc::new(self.route.clone()),
        }
    }
}

/// Middleware that answers `402 Payment Required` until a valid credential comes, then runs
/// the inner service and, when it answers `2xx`, takes the payment and adds
/// `Payment-Receipt`. The inner service never runs unverified, and its answer is never handed
/// over unpaid: if taking the payment fails, the refusal replaces it. See [`Mpp::charge`] for
/// an example.
#[derive(Debug, Clone)]
pub struct Charge<S> {
    inner: S,
    /// One shared allocation: a request clones one `Arc`, not the route's parts.
    route: Arc<PaidRoute>,
}

impl<S> Charge<S> {
    inner_service_accessors!();
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for Charge<S>
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
        // Take the service that was driven to readiness; leave a clone for the next call
        // (the same swap as tower-http's `AsyncRequireAuthorization`).
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        let route = self.route.clone();
        // The path the client sent, also under `nest`.
        let path = request_path(req.uri(), req.extensions());
        let span = tracing::debug_span!("mpp.charge", method = %req.method(), path = %path);
        ResponseFuture {
            inner: Box::pin(serve(inner, route, req).instrument(span)),
        }
    }
}
