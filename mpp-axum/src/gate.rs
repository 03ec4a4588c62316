//! The HTTP adapter of the payment gate ([`mpp_core::gate`]): what the gate needs from an
//! HTTP request (realm, scope, `Accept-Payment`, body digest, the credential from
//! `Authorization` or `Payment-Authorization`), and the refusal rendered as a response.
//! Every paid layer (`Charge`, `Session`) admits requests through [`PaidRoute::admit`].

use crate::config::{ConfigError, Mpp};
use crate::headers::{ACCEPT_PAYMENT, PAYMENT_AUTHORIZATION};
use crate::idempotency::{self, IDEMPOTENCY_KEY, Idempotent};
use crate::meter::MeterConfig;
use crate::pricing::{Price, PriceFailure};
use crate::response::{plain_problem, refusal_response};
use bytes::Bytes;
use http::request::Parts;
use http::{Extensions, HeaderName, Request, Response, StatusCode, Uri};
use http_body::Body;
use http_body_util::{BodyExt, Full, Limited};
use mpp_core::accept_payment::AcceptPayment;
use mpp_core::credential::CredentialError;
use mpp_core::discovery::PaymentInfo;
use mpp_core::gate::{Admitted, Offers, Refusal, RequestContext};
use mpp_core::method::Settlement;
use mpp_core::{Credential, EncodedJson};
use serde_json::{Map, Value};
use std::borrow::Cow;
use std::sync::{Arc, OnceLock};

/// The `opaque` key that binds a challenge to one route (the key mppx uses).
pub(crate) const SCOPE_KEY: &str = "_mppx_scope";

/// The longest request target bound into a scope as written. A longer one (a long query
/// string) is bound by its SHA-256 digest instead, so every challenge stays a small header
/// however long the URL is.
pub(crate) const MAX_SCOPE_TARGET: usize = 512;

pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The request header a paid route reads the `Payment` credential from.
///
/// ```
/// use axum::{Router, routing::get};
/// use mpp_axum::{CredentialHeader, Mpp};
/// # use mpp_core::testing::TestMethod;
///
/// # fn main() -> Result<(), mpp_axum::ConfigError> {
/// # let mpp = Mpp::new("0123456789abcdef0123456789abcdef")?.method(TestMethod::new("test"));
/// // `Authorization: Bearer ...` stays the API's own; the payment comes in
/// // `Payment-Authorization`, and the 402 challenges say so.
/// let report = mpp
///     .charge("0.05")?
///     .credential_header(CredentialHeader::PaymentAuthorization);
/// let app: Router = Router::new().route("/report", get(|| async { "paid" }).layer(report));
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CredentialHeader {
    /// `Authorization: Payment <credential>`: the scheme's default.
    #[default]
    Authorization,
    /// `Payment-Authorization: Payment <credential>` (draft -01): for routes whose
    /// `Authorization` carries the application's own scheme (e.g. `Bearer`). Challenges carry
    /// `header="Payment-Authorization"` (bound into their id), and a credential is read from
    /// that header only: whatever `Authorization` holds is left to the application.
    PaymentAuthorization,
}

impl CredentialHeader {
    /// The header's name.
    pub fn name(self) -> HeaderName {
        match self {
            Self::Authorization => http::header::AUTHORIZATION,
            Self::PaymentAuthorization => PAYMENT_AUTHORIZATION,
        }
    }

    /// The challenges' `header` parameter: none for the default.
    fn challenge_parameter(self) -> Option<&'static str> {
        match self {
            Self::Authorization => None,
            Self::PaymentAuthorization => Some(mpp_core::credential::PAYMENT_AUTHORIZATION),
        }
    }
}

/// What every paid layer holds: the price, the body binding, the configuration (when bound
/// at start-up), and the route's encoded scope, computed once.
#[derive(Debug, Clone)]
pub(crate) struct PaidRoute {
    pub(crate) price: Price,
    pub(crate) body_limit: Option<usize>,
    pub(crate) mpp: Option<Mpp>,
    /// The route's own choice; `None` follows the configuration's.
    pub(crate) credential_header: Option<CredentialHeader>,
    /// Settle a held payment before the inner service runs, not after its success.
    pub(crate) settle_first: bool,
    /// A session route: management requests (see [`is_management`]) are told apart from
    /// content, and may answer a challenge issued for another HTTP method of the target.
    pub(crate) session: bool,
    /// How metered responses of a session route are billed.
    pub(crate) meter: MeterConfig,
    scope: Arc<OnceLock<RouteScope>>,
}

/// A request that was admitted: its parts and body to hand on, what was paid, and the
/// payment the method still holds (charge on success), if any.
pub(crate) struct Paid<B> {
    pub(crate) parts: Parts,
    pub(crate) body: B,
    pub(crate) admitted: Admitted,
    pub(crate) held: Option<Held>,
    /// The `Idempotency-Key` record of this request, when it carries one.
    pub(crate) idempotent: Option<Idempotent>,
}

/// A payment the method verified and holds until [`Held::settle`]: with what a refusal at
/// that point needs (fresh challenges bound to this request), owned, since the request
/// itself has gone to the handler by then.
pub(crate) struct Held {
    settlement: Settlement,
    credential: Credential,
    mpp: Mpp,
    offers: Offers,
    realm: String,
    scope: EncodedJson,
    accept: Option<AcceptPayment>,
    body: Option<Bytes>,
    credential_header: Option<&'static str>,
    settled: bool,
}

impl Held {
    /// Takes the money (once; later calls do nothing): `Err` is the refusal to send instead
    /// of the handler's answer.
    pub(crate) async fn settle(&mut self) -> Result<(), Response<Full<Bytes>>> {
        if self.settled {
            return Ok(());
        }
        let gate = self.mpp.gate();
        let mut cx = RequestContext::new(&self.realm, gate.now())
            .scope(&self.scope)
            .accept(self.accept.as_ref());
        if let Some(name) = self.credential_header {
            cx = cx.credential_header(name);
        }
        if let Some(bytes) = &self.body {
            cx = cx.body(bytes);
        }
        gate.settle(&self.offers, &mut self.settlement, &self.credential, &cx)
            .await
            .map_err(|refusal| refusal_response(&refusal))?;
        self.settled = true;
        Ok(())
    }

    /// Ends the request; `served`: a 2xx answer for this payment is going out.
    pub(crate) async fn finish(self, served: bool) {
        self.settlement.finish(served).await;
    }
}

impl PaidRoute {
    pub(crate) fn new(price: Price) -> Self {
        Self {
            price,
            body_limit: None,
            mpp: None,
            credential_header: None,
            settle_first: false,
            session: false,
            meter: MeterConfig::default(),
            scope: Arc::new(OnceLock::new()),
        }
    }

    /// What discovery documents for this route: its price's offers under its own
    /// configuration when bound, else under `mpp` (the precedence [`PaidRoute::admit`] uses).
    pub(crate) fn payment_info(&self, mpp: &Mpp) -> Result<PaymentInfo, ConfigError> {
        self.price.payment_info(self.mpp.as_ref().unwrap_or(mpp))
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
            // The client chose the amount (a price computed from the request), so this is
            // its error, not the server's: a 400, and no error log for anyone to fill.
            Err(PriceFailure::Amount(e)) => {
                tracing::debug!(reason = %e, "computed price cannot be offered");
                let detail = format!("The price of this request cannot be paid: {e}.");
                return Err(plain_problem(
                    StatusCode::BAD_REQUEST,
                    "Bad Request",
                    &detail,
                ));
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
        let accept = accept_payment(&parts);
        let header = self
            .credential_header
            .unwrap_or_else(|| mpp.default_credential_header());
        let credential = credential(&parts, header);
        let management = self.session && is_management(&parts, &body);
        // A session credential on a management request answers the challenge of the stream
        // or page it pays for (a voucher POSTed to a `GET` stream's URL): the HTTP method is
        // not part of its scope, the target is.
        let scope = match &credential {
            Some(Ok(c)) if management => self.management_scope(&parts, c),
            _ => None,
        }
        .unwrap_or_else(|| self.scope(&parts));
        let mut cx = RequestContext::new(&realm, gate.now())
            .scope(&scope)
            .accept(accept.as_ref())
            .content(!management);
        if let Some(name) = header.challenge_parameter() {
            cx = cx.credential_header(name);
        }
        if let Some(bytes) = &buffered {
            cx = cx.body(bytes);
        }
        // Most requests carry no Idempotency-Key: one header lookup, nothing else.
        let idempotent = if parts.headers.contains_key(IDEMPOTENCY_KEY) {
            let payment = parts
                .headers
                .get_all(header.name())
                .iter()
                .find(|v| is_payment_scheme(v.as_bytes()));
            idempotency::begin(
                mpp.idempotency_store_ref(),
                &parts,
                request_path(&parts.uri, &parts.extensions),
                payment,
                gate.max_lifetime(),
            )
            .await?
        } else {
            None
        };
        match gate.admit(&offers, credential, &cx).await {
            Ok(mut admitted) => {
                let held = admitted.verified.settlement.take().map(|settlement| Held {
                    settlement,
                    credential: admitted.credential.clone(),
                    mpp: mpp.clone(),
                    offers: offers.clone(),
                    realm: realm.into_owned(),
                    scope,
                    accept,
                    body: buffered,
                    credential_header: header.challenge_parameter(),
                    settled: false,
                });
                Ok(Paid {
                    parts,
                    body,
                    admitted,
                    held,
                    idempotent,
                })
            }
            Err(refusal) => {
                // Nothing was taken: the key is free again before the client reads the
                // refusal (left to `Drop`, a retry paying again could find it still held).
                if let Some(idempotent) = idempotent {
                    idempotent.abandon().await;
                }
                Err(refusal_response(&refusal))
            }
        }
    }

    /// The echoed scope of `credential` when it names this request's target under any HTTP
    /// method (`None` otherwise: the request's own scope applies).
    fn management_scope(&self, parts: &Parts, credential: &Credential) -> Option<EncodedJson> {
        let echoed = credential.challenge.opaque.as_ref()?;
        let (_, target) = echoed.value().get(SCOPE_KEY)?.as_str()?.split_once(' ')?;
        let ours = request_target(&parts.uri, &parts.extensions);
        (target == bound_target(ours).as_ref()).then(|| echoed.clone())
    }

    /// `{"_mppx_scope": "GET /path?query"}` for the target the client sent (before any
    /// `nest` stripped a prefix), cached for the route's first target: a route without
    /// parameters or query encodes it once.
    fn scope(&self, parts: &Parts) -> EncodedJson {
        let target = request_target(&parts.uri, &parts.extensions);
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

/// The target the client sent: axum's `OriginalUri` when a router recorded it (`nest`
/// strips the prefix from the URI the route sees), the request's URI otherwise.
pub(crate) fn request_target<'a>(uri: &'a Uri, extensions: &'a Extensions) -> &'a str {
    #[cfg(feature = "original-uri")]
    let uri = extensions
        .get::<axum::extract::OriginalUri>()
        .map_or(uri, |original| &original.0);
    #[cfg(not(feature = "original-uri"))]
    let _ = extensions;
    uri.path_and_query()
        .map_or_else(|| uri.path(), |pq| pq.as_str())
}

/// The path part of [`request_target`], for logs.
pub(crate) fn request_path<'a>(uri: &'a Uri, extensions: &'a Extensions) -> &'a str {
    let target = request_target(uri, extensions);
    target.split_once('?').map_or(target, |(path, _)| path)
}

/// Whether a session request only carries a credential to the server, asking for no content:
/// a `HEAD`, or a `POST` without a body (how every client sends mid-stream vouchers, top-ups
/// and closes, to the stream's URL with its query). A `POST` with a body is content, and so
/// is every other method.
pub(crate) fn is_management<B: Body>(parts: &Parts, body: &B) -> bool {
    match parts.method {
        http::Method::HEAD => true,
        http::Method::POST => {
            let declared_empty = parts
                .headers
                .get(http::header::CONTENT_LENGTH)
                .is_some_and(|v| v.as_bytes() == b"0");
            let chunked = parts.headers.contains_key(http::header::TRANSFER_ENCODING);
            !chunked && (declared_empty || body.size_hint().exact() == Some(0))
        }
        _ => false,
    }
}

/// The target as a scope binds it: written out, or its digest when over the limit.
fn bound_target(target: &str) -> Cow<'_, str> {
    // A target is never written as `sha-256=...` (it starts with `/` or is `*`), so a
    // digest cannot stand for another target written out.
    if target.len() > MAX_SCOPE_TARGET {
        Cow::Owned(mpp_core::digest::body_digest(target.as_bytes()))
    } else {
        Cow::Borrowed(target)
    }
}

fn route_scope(method: &http::Method, target: &str) -> EncodedJson {
    let bound = bound_target(target);
    let mut map = Map::new();
    map.insert(SCOPE_KEY.into(), Value::String(format!("{method} {bound}")));
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
            let (status, title, detail) = if too_large {
                (
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "Payload Too Large",
                    format!("The request body is over the limit of {limit} bytes."),
                )
            } else {
                (
                    StatusCode::BAD_REQUEST,
                    "Bad Request",
                    "The request body could not be read.".to_owned(),
                )
            };
            Err(plain_problem(status, title, &detail))
        }
    }
}

/// The `Payment` credential in `header`, if any: `None` when no field holds one, the first
/// `Payment` entry otherwise (decoded or not). Only that header is read, so with
/// `Payment-Authorization` an `Authorization: Bearer ...` is the application's alone.
fn credential(
    parts: &Parts,
    header: CredentialHeader,
) -> Option<Result<Credential, CredentialError>> {
    parts
        .headers
        .get_all(header.name())
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| match Credential::from_authorization(v) {
            Err(CredentialError::Missing) => None,
            other => Some(other),
        })
}

/// A credential header value of the `Payment` scheme.
fn is_payment_scheme(value: &[u8]) -> bool {
    value.len() > 8 && value[..8].eq_ignore_ascii_case(b"payment ")
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

    #[test]
    fn a_target_over_the_limit_is_bound_by_its_digest() {
        let method = http::Method::GET;
        let at_limit = format!("/q?{}", "a".repeat(MAX_SCOPE_TARGET - 3));
        assert_eq!(
            route_scope(&method, &at_limit).value()[SCOPE_KEY],
            format!("GET {at_limit}")
        );
        let over = format!("{at_limit}a");
        let scope = route_scope(&method, &over);
        assert_eq!(
            scope.value()[SCOPE_KEY],
            format!("GET {}", mpp_core::digest::body_digest(over.as_bytes()))
        );
        assert!(scope.wire().len() < 128);
        assert_ne!(route_scope(&method, &format!("{over}b")), scope);
    }

    #[cfg(feature = "original-uri")]
    #[test]
    fn the_target_is_the_one_the_client_sent() {
        let mut p = parts(
            http::Request::get("/fortune?x=1")
                .body(())
                .unwrap_or_default(),
        );
        assert_eq!(request_target(&p.uri, &p.extensions), "/fortune?x=1");
        // What axum's router records before `nest` strips `/v1`.
        p.extensions.insert(axum::extract::OriginalUri(
            "/v1/fortune?x=1".parse().unwrap_or_default(),
        ));
        assert_eq!(request_target(&p.uri, &p.extensions), "/v1/fortune?x=1");
        assert_eq!(request_path(&p.uri, &p.extensions), "/v1/fortune");
    }
}
