//! [`PaidRouter`]: records each paid route once, with the layer that prices it, and serves
//! and documents it from that one declaration.

use super::document::{Discovery, PaidOperation};
use crate::config::{ConfigError, Mpp};
use crate::{ChargeLayer, SessionLayer};
use axum::Router;
use axum::routing::MethodRouter;
use mpp_core::DecimalAmount;
use mpp_core::discovery::{PaymentInfo, ServiceDocs, ServiceInfo, X_PAYMENT_INFO};
use serde_json::Value;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::path::{Operation, PathItem};
use utoipa::openapi::{Response, ResponseBuilder};
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouter};

/// Where the document is served.
pub const OPENAPI_PATH: &str = "/openapi.json";
/// Where the agents' summary is served.
pub const LLMS_PATH: &str = "/llms.txt";

/// The layer that prices a documented route, and so the one source of what its
/// `x-payment-info` says: [`PaidRouter::paid`] takes a [`ChargeLayer`] or a [`SessionLayer`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum PaidLayer {
    /// A one-time charge per request; applied with `route_layer`, so other HTTP methods get
    /// a plain `405`, never a challenge.
    Charge(ChargeLayer),
    /// Pay-as-you-go over a payment channel; applied with `layer`, so the voucher `POST`s a
    /// stream needs reach it at the route's URL.
    Session(SessionLayer),
}

impl From<ChargeLayer> for PaidLayer {
    fn from(layer: ChargeLayer) -> Self {
        Self::Charge(layer)
    }
}

impl From<SessionLayer> for PaidLayer {
    fn from(layer: SessionLayer) -> Self {
        Self::Session(layer)
    }
}

impl PaidLayer {
    /// The offers this layer's 402 carries under `mpp` (see [`ChargeLayer::payment_info`]).
    pub fn payment_info(&self, mpp: &Mpp) -> Result<PaymentInfo, ConfigError> {
        match self {
            Self::Charge(layer) => layer.payment_info(mpp),
            Self::Session(layer) => layer.payment_info(mpp),
        }
    }

    /// A layer not yet bound to a configuration is bound to `mpp` (and checked now), so the
    /// route serves with the configuration it is documented with.
    fn bound_to(self, mpp: &Mpp) -> Result<Self, ConfigError> {
        Ok(match self {
            Self::Charge(layer) => Self::Charge(layer.bind_if_unbound(mpp)?),
            Self::Session(layer) => Self::Session(layer.bind_if_unbound(mpp)?),
        })
    }

    /// The price as declared, in the currency's display unit (`None`: computed per request).
    fn price(&self) -> Option<DecimalAmount> {
        match self {
            Self::Charge(layer) => layer.terms().map(|t| t.amount),
            Self::Session(layer) => layer.terms().map(|t| t.amount),
        }
    }

    fn apply<S>(self, router: MethodRouter<S>) -> MethodRouter<S>
    where
        S: Clone + Send + Sync + 'static,
    {
        match self {
            Self::Charge(layer) => router.route_layer(layer),
            Self::Session(layer) => router.layer(layer),
        }
    }
}

/// An [`OpenApiRouter`] that also records what each paid route costs: routes are declared once
/// with the layer that prices them ([`PaidRouter::paid`]), and [`PaidRouter::into_router`]
/// serves them together with `GET /openapi.json` and `GET /llms.txt` built from those same
/// layers. See the [module docs](super) for an example.
///
/// Free routes can be documented too ([`PaidRouter::routes`]); routes added to the axum
/// `Router` afterwards (a health check, `/mcp`) are served but not documented.
#[must_use]
pub struct PaidRouter<S = ()> {
    mpp: Mpp,
    router: OpenApiRouter<S>,
    paid: Vec<PaidOperation>,
    service: ServiceInfo,
}

impl<S> PaidRouter<S>
where
    S: Clone + Send + Sync + 'static,
{
    /// An empty router whose layers default to `mpp`. The document's title is the realm
    /// (when one is configured; else `API`) and its version `1.0.0`, as mppx does; its
    /// `x-service-info` links `/llms.txt`.
    pub fn new(mpp: &Mpp) -> Self {
        Self::with_router(mpp, OpenApiRouter::default())
    }

    /// Starts from a utoipa router: its routes, components and info are kept; an empty
    /// title or version gets [`PaidRouter::new`]'s default. Start from
    /// `OpenApiRouter::default()` or `OpenApiRouter::with_openapi(ApiDoc::openapi())`:
    /// `OpenApiRouter::new()` describes the `utoipa-axum` crate itself (its name, author and
    /// license).
    pub fn with_router(mpp: &Mpp, mut router: OpenApiRouter<S>) -> Self {
        let info = &mut router.get_openapi_mut().info;
        if info.title.is_empty() {
            info.title = mpp.gate().configured_realm().unwrap_or("API").to_owned();
        }
        if info.version.is_empty() {
            info.version = "1.0.0".to_owned();
        }
        Self {
            mpp: mpp.clone(),
            router,
            paid: Vec::new(),
            service: ServiceInfo {
                categories: Vec::new(),
                docs: Some(ServiceDocs {
                    llms: Some(LLMS_PATH.to_owned()),
                    ..ServiceDocs::default()
                }),
            },
        }
    }

    /// Serves `endpoints` behind `price` and documents them: each of their operations gets
    /// the `x-payment-info` the layer's 402 carries ([`ChargeLayer::payment_info`]) and a
    /// `402` response. `endpoints` is an [`Endpoint`](super::Endpoint) ([`get`](super::get)
    /// and friends) or utoipa-axum's `routes!(handler)` for handlers annotated with
    /// `#[utoipa::path]`, whose own schemas are kept.
    ///
    /// A layer made by [`charge`](crate::charge())/[`session`](crate::session()) is bound
    /// to this router's configuration here and checked now, as [`Mpp::charge`] does; one
    /// made by [`Mpp::charge`] keeps its own.
    pub fn paid(
        mut self,
        endpoints: impl Into<UtoipaMethodRouter<S>>,
        price: impl Into<PaidLayer>,
    ) -> Result<Self, ConfigError> {
        let (schemas, mut paths, method_router) = endpoints.into();
        let price = price.into().bound_to(&self.mpp)?;
        let info = price.payment_info(&self.mpp)?;
        let info_json = payment_info_json(&info);
        for (path, item) in paths.paths.iter_mut() {
            for (method, operation) in operations_mut(item) {
                operation
                    .extensions
                    .get_or_insert_with(Default::default)
                    .insert(X_PAYMENT_INFO.to_owned(), info_json.clone());
                operation
                    .responses
                    .responses
                    .entry("402".to_owned())
                    .or_insert_with(|| payment_required().into());
                self.paid.push(PaidOperation {
                    method,
                    path: route_path(path).to_owned(),
                    summary: operation.summary.clone(),
                    info: info.clone(),
                    price: price.price(),
                });
            }
        }
        self.router = self
            .router
            .routes((schemas, paths, price.apply(method_router)));
        Ok(self)
    }

    /// Serves and documents free `endpoints` (no `x-payment-info`).
    pub fn routes(mut self, endpoints: impl Into<UtoipaMethodRouter<S>>) -> Self {
        self.router = self.router.routes(endpoints.into());
        self
    }

    /// Adds `other`'s routes, documented and paid as they were declared there.
    pub fn merge(mut self, other: PaidRouter<S>) -> Self {
        self.router = self.router.merge(other.router);
        self.paid.extend(other.paid);
        self
    }

    /// Serves `other` under `prefix` (axum's `nest`), documented at the prefixed paths.
    pub fn nest(mut self, prefix: &str, other: PaidRouter<S>) -> Self {
        self.router = self.router.nest(prefix, other.router);
        self.paid
            .extend(other.paid.into_iter().map(|op| PaidOperation {
                path: nested_path(prefix, &op.path),
                ..op
            }));
        self
    }

    /// The document's title (`info.title`).
    pub fn title(mut self, title: impl Into<String>) -> Self {
        self.router.get_openapi_mut().info.title = title.into();
        self
    }

    /// The document's version (`info.version`).
    pub fn version(mut self, version: impl Into<String>) -> Self {
        self.router.get_openapi_mut().info.version = version.into();
        self
    }

    /// What the service is about, in `x-service-info` (lowercase, at most 5; suggested:
    /// communication, compute, data, developer-tools, media, search, social, storage,
    /// travel).
    pub fn categories<I>(mut self, categories: I) -> Self
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        self.service.categories = categories.into_iter().map(Into::into).collect();
        self
    }

    /// The documentation links in `x-service-info` (default: `llms` = `/llms.txt`). Absolute
    /// URLs, or paths from the origin's root.
    pub fn docs(mut self, docs: ServiceDocs) -> Self {
        self.service.docs = Some(docs);
        self
    }

    /// The routes, and the discovery documents made from them (generated here, once).
    pub fn split(self) -> (Router<S>, Discovery) {
        let (router, openapi) = self.router.split_for_parts();
        (router, Discovery::new(openapi, &self.service, self.paid))
    }

    /// The routes with `GET /openapi.json` and `GET /llms.txt` beside them (free: put them
    /// outside any payment layer, as here).
    pub fn into_router(self) -> Router<S> {
        let (router, discovery) = self.split();
        router.merge(discovery.router())
    }
}

/// Each operation of `item`, with its HTTP method.
fn operations_mut(item: &mut PathItem) -> impl Iterator<Item = (&'static str, &mut Operation)> {
    [
        ("GET", &mut item.get),
        ("PUT", &mut item.put),
        ("POST", &mut item.post),
        ("DELETE", &mut item.delete),
        ("OPTIONS", &mut item.options),
        ("HEAD", &mut item.head),
        ("PATCH", &mut item.patch),
        ("TRACE", &mut item.trace),
    ]
    .into_iter()
    .filter_map(|(method, operation)| Some((method, operation.as_mut()?)))
}

/// The path axum serves for `path` (utoipa-axum routes `""` at `/`).
fn route_path(path: &str) -> &str {
    if path.is_empty() { "/" } else { path }
}

/// `path` under `prefix`, as axum's `nest` (and utoipa-axum's) composes them.
fn nested_path(prefix: &str, path: &str) -> String {
    let path = route_path(path);
    if prefix.ends_with('/') {
        format!("{prefix}{}", path.trim_start_matches('/'))
    } else if path == "/" {
        prefix.to_owned()
    } else {
        format!("{prefix}{path}")
    }
}

fn payment_info_json(info: &PaymentInfo) -> Value {
    // Strings, options and a string-keyed map: serializing cannot fail.
    serde_json::to_value(info).unwrap_or(Value::Null)
}

/// The `402` of a paid operation: what it carries and how to answer it.
fn payment_required() -> Response {
    let challenge = HeaderBuilder::new()
        .description(Some(
            "One `Payment` challenge per offer; pay one and retry with \
             `Authorization: Payment <credential>`.",
        ))
        .build();
    ResponseBuilder::new()
        .description("Payment Required")
        .header("WWW-Authenticate", challenge)
        .build()
}

#[cfg(test)]
mod tests {
    use super::nested_path;

    #[test]
    fn nested_paths_compose_as_axum_does() {
        assert_eq!(nested_path("/v1", "/fortune"), "/v1/fortune");
        assert_eq!(nested_path("/v1/", "/fortune"), "/v1/fortune");
        assert_eq!(nested_path("/v1", "/"), "/v1");
        assert_eq!(nested_path("/v1", ""), "/v1");
    }
}
