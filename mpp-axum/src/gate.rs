//! The HTTP adapter of the payment gate ([`mpp_core::gate`]): what the gate needs from an
//! HTTP request (realm, scope, `Accept-Payment`, body digest, the `Authorization`
//! credential), and the refusal rendered as a response. Every paid layer (`Charge`, and the
//! `Session` layer to come) admits requests through [`PaidRoute::admit`].

use crate::config::Mpp;
use crate::headers::ACCEPT_PAYMENT;
use crate::pricing::{Price, PriceFailure};
use crate::response::{plain_problem, refusal_response};
use bytes::Bytes;
use http::request::Parts;
use http::{Request, Response, StatusCode};
use http_body::Body;
use http_body_util::{BodyExt, Full, Limited};
use mpp_core::accept_payment::AcceptPayment;
use mpp_core::credential::CredentialError;
use mpp_core::gate::{Admitted, Refusal, RequestContext};
use mpp_core::{Credential, EncodedJson};
use serde_json::{Map, Value};
use std::borrow::Cow;
use std::sync::{Arc, OnceLock};

/// The `opaque` key that binds a challenge to one route (the key mppx uses).
pub(crate) const SCOPE_KEY: &str = "_mppx_scope";

pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What every paid layer holds: the price, the body binding, the configuration (when bound
/// at start-up), and the route's encoded scope, computed once.
#[derive(Debug, Clone)]
pub(crate) struct PaidRoute {
    pub(crate) price: Price,
    pub(crate) body_limit: Option<usize>,
    pub(crate) mpp: Option<Mpp>,
    scope: Arc<OnceLock<RouteScope>>,
}

/// A request that was admitted: its parts and body to hand on, and what was paid.
pub(crate) struct Paid<B> {
    pub(crate) parts: Parts,
    pub(crate) body: B,
    pub(crate) admitted: Admitted,
}

impl PaidRoute {
    pub(crate) fn new(price: Price) -> Self {
        Self {
            price,
            body_limit: None,
            mpp: None,
            scope: Arc::new(OnceLock::new()),
        }
    }

    /// Admits `req` through the gate: `Ok` with what was paid, or the response to send
    /// instead (a refusal, or an HTTP error before payment could be considered).
    pub(crate) async fn admit<B>(&self, req: Request<B>) -> Result<Paid<B>, Response<Full<Bytes>>>
    where
        B: Body + From<Bytes>,
        B::Error: Into<BoxError>,
    {
        let Some(mpp) = self
            .mpp
            .as_ref()
            .or_else(|| req.extensions().get::<Mpp>())
            .cloned()
        else {
            tracing::error!(
                "paid route without configuration: add `.layer(mpp.layer())` around the router"
            );
            return Err(refusal_response(&Refusal::misconfigured()));
        };
        let (parts, body) = req.into_parts();
        let offers = match self.price.offers(&mpp, &parts) {
            Ok(offers) => offers,
            Err(PriceFailure::Request(e)) => {
                tracing::debug!(reason = %e, "price refused for this request");
                return Err(plain_problem(StatusCode::BAD_REQUEST, "Bad Request", &e.0));
            }
            Err(PriceFailure::Config(e)) => {
                tracing::error!(error = %e, "route price cannot be offered");
                return Err(refusal_response(&Refusal::misconfigured()));
            }
        };
        let (body, buffered) = match self.body_limit {
            None => (body, None),
            Some(limit) => {
                let bytes = buffer(body, limit).await?;
                (B::from(bytes.clone()), Some(bytes))
            }
        };

        let gate = mpp.gate();
        let realm = match gate.configured_realm() {
            Some(realm) => Cow::Borrowed(realm),
            None => request_host(&parts),
        };
        let scope = self.scope(&parts);
        let accept = accept_payment(&parts);
        let mut cx = RequestContext::new(&realm, gate.now())
            .scope(&scope)
            .accept(accept.as_ref());
        if let Some(bytes) = &buffered {
            cx = cx.body(bytes);
        }
        match gate.admit(&offers, credential(&parts), &cx).await {
            Ok(admitted) => Ok(Paid {
                parts,
                body,
                admitted,
            }),
            Err(refusal) => Err(refusal_response(&refusal)),
        }
    }

    /// `{"_mppx_scope": "GET /path?query"}`, cached for the route's first target: a route
    /// without parameters or query encodes it once.
    fn scope(&self, parts: &Parts) -> EncodedJson {
        let target = parts
            .uri
            .path_and_query()
            .map_or_else(|| parts.uri.path(), |pq| pq.as_str());
        if let Some(cached) = self.scope.get()
            && cached.matches(&parts.method, target)
        {
            return cached.encoded.clone();
        }
        let encoded = route_scope(&parts.method, target);
        let _ = self.scope.set(RouteScope {
            method: parts.method.clone(),
            target: target.into(),
            encoded: encoded.clone(),
        });
        encoded
    }
}

#[derive(Debug)]
struct RouteScope {
    method: http::Method,
    target: Box<str>,
    encoded: EncodedJson,
}

impl RouteScope {
    fn matches(&self, method: &http::Method, target: &str) -> bool {
        self.method == *method && *self.target == *target
    }
}

fn route_scope(method: &http::Method, target: &str) -> EncodedJson {
    let mut map = Map::new();
    map.insert(
        SCOPE_KEY.into(),
        Value::String(format!("{method} {target}")),
    );
    // A map with one string entry always canonicalizes.
    EncodedJson::from_map(map).unwrap_or_else(|_| unreachable!("a string map encodes"))
}

/// Buffers a body the route binds to its challenges: 413 over `limit`, 400 if unreadable.
async fn buffer<B>(body: B, limit: usize) -> Result<Bytes, Response<Full<Bytes>>>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) => {
            let too_large = e
                .downcast_ref::<http_body_util::LengthLimitError>()
                .is_some();
            let (status, title) = if too_large {
                (StatusCode::PAYLOAD_TOO_LARGE, "Payload Too Large")
            } else {
                (StatusCode::BAD_REQUEST, "Bad Request")
            };
            Err(plain_problem(
                status,
                title,
                "The request body could not be read.",
            ))
        }
    }
}

/// The `Payment` credential of `Authorization`, if any: `None` when no field holds one, the
/// first `Payment` entry otherwise (decoded or not).
fn credential(parts: &Parts) -> Option<Result<Credential, CredentialError>> {
    parts
        .headers
        .get_all(http::header::AUTHORIZATION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| match Credential::from_authorization(v) {
            Err(CredentialError::Missing) => None,
            other => Some(other),
        })
}

fn accept_payment(parts: &Parts) -> Option<AcceptPayment> {
    parts
        .headers
        .get(ACCEPT_PAYMENT)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

/// The realm when none is configured: the request's host name, without the port, lowercase
/// (borrowed from the request when it already is).
fn request_host(parts: &Parts) -> Cow<'_, str> {
    let host = parts
        .headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| parts.uri.host())
        .unwrap_or("localhost");
    let without_port = if host.starts_with('[') {
        host.split_inclusive(']').next().unwrap_or(host)
    } else {
        host.rsplit_once(':').map_or(host, |(h, _)| h)
    };
    if without_port.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(without_port.to_ascii_lowercase())
    } else {
        Cow::Borrowed(without_port)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(req: http::Request<()>) -> Parts {
        req.into_parts().0
    }

    #[test]
    fn realm_is_the_host_name() {
        let p = parts(
            http::Request::get("/x")
                .header("host", "API.example.com:8443")
                .body(())
                .unwrap_or_default(),
        );
        assert_eq!(request_host(&p), "api.example.com");
        let p = parts(
            http::Request::get("/x")
                .header("host", "[::1]:3000")
                .body(())
                .unwrap_or_default(),
        );
        assert_eq!(request_host(&p), "[::1]");
    }

    #[test]
    fn scope_binds_method_path_and_query() {
        let route = PaidRoute::new(Price::fixed("charge", "1").unwrap_or_else(|_| unreachable!()));
        let req = |m: &str, uri: &str| {
            parts(
                http::Request::builder()
                    .method(m)
                    .uri(uri)
                    .body(())
                    .unwrap_or_default(),
            )
        };
        let a = route.scope(&req("GET", "/quote?x=1"));
        let b = route.scope(&req("GET", "/quote?x=2"));
        let c = route.scope(&req("POST", "/quote?x=1"));
        assert_eq!(a.value()[SCOPE_KEY], "GET /quote?x=1");
        assert_ne!(a, b);
        assert_ne!(a, c);
        // The cached first target is reused, and still exact.
        assert_eq!(route.scope(&req("GET", "/quote?x=1")), a);
        assert_eq!(b.value()[SCOPE_KEY], "GET /quote?x=2");
    }
}
