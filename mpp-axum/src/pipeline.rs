//! The request pipeline shared by payment layers: issue challenges for a route's offers, and
//! check a credential (binding, route pinning, expiry, body digest) before the method
//! verifies and settles it.

use crate::config::MppConfig;
use crate::pricing::Offer;
use mpp_core::accept_payment::{ACCEPT_PAYMENT, AcceptPayment};
use mpp_core::binding::BindingSlots;
use mpp_core::digest::verify_body_digest;
use mpp_core::expiry::{format_timestamp, parse_timestamp};
use mpp_core::method::HttpRequestInfo;
use mpp_core::{
    Challenge, Credential, EncodedJson, MethodError, ProblemType, Verified, VerifyContext,
};
use serde_json::{Map, Value};
use std::sync::Arc;
use time::OffsetDateTime;

/// The `opaque` key that binds a challenge to one route (the key mppx uses).
pub(crate) const SCOPE_KEY: &str = "_mppx_scope";

/// Why a credential was not accepted.
#[derive(Debug)]
pub(crate) enum Refusal {
    /// The payer's fault: a problem answered with fresh challenges.
    Problem(ProblemType, String),
    /// Infrastructure down: 503.
    Unavailable(String),
    /// The server's configuration: 500.
    Misconfigured(String),
}

impl From<MethodError> for Refusal {
    fn from(e: MethodError) -> Self {
        match e {
            MethodError::Rejected { problem, detail } => Self::Problem(problem, detail),
            MethodError::Unavailable(detail) => Self::Unavailable(detail),
            MethodError::Config(detail) => Self::Misconfigured(detail),
        }
    }
}

/// One request on a paid route.
pub(crate) struct RouteRequest<'a> {
    pub(crate) config: &'a Arc<MppConfig>,
    pub(crate) offers: &'a [Offer],
    pub(crate) realm: String,
    pub(crate) scope: EncodedJson,
    /// The digest of the buffered body, when the route binds bodies.
    pub(crate) body: Option<&'a [u8]>,
    pub(crate) accept: Option<AcceptPayment>,
    pub(crate) now: OffsetDateTime,
}

impl<'a> RouteRequest<'a> {
    pub(crate) fn new(
        config: &'a Arc<MppConfig>,
        offers: &'a [Offer],
        parts: &http::request::Parts,
        body: Option<&'a [u8]>,
    ) -> Self {
        let realm = config.realm.clone().unwrap_or_else(|| request_host(parts));
        let scope = route_scope(parts);
        let accept = parts
            .headers
            .get(ACCEPT_PAYMENT)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        Self {
            config,
            offers,
            realm,
            scope,
            body,
            accept,
            now: config.clock.now(),
        }
    }

    /// Fresh challenges for every offer, in the client's `Accept-Payment` order.
    pub(crate) fn challenges(&self) -> Vec<Challenge> {
        let order: Vec<usize> = match &self.accept {
            Some(accept) => accept.rank(
                self.offers
                    .iter()
                    .map(|o| (o.method.name(), o.intent.as_ref())),
            ),
            None => (0..self.offers.len()).collect(),
        };
        let expires = format_timestamp(self.now + self.config.challenge_ttl);
        let digest = self.body.map(mpp_core::digest::body_digest);
        order
            .into_iter()
            .filter_map(|i| self.offers.get(i))
            .map(|offer| {
                let mut builder = Challenge::builder_encoded(
                    self.realm.as_str(),
                    offer.method.name(),
                    offer.intent.as_ref(),
                    offer.request.clone(),
                )
                .expires(expires.as_str())
                .opaque(self.scope.clone());
                if let Some(d) = &digest {
                    builder = builder.digest(d.as_str());
                }
                if let Some(d) = &offer.description {
                    builder = builder.description(d.as_ref());
                }
                builder.sign(&self.config.secret)
            })
            .collect()
    }

    /// Checks the credential against this route, then lets its method verify and settle it.
    pub(crate) async fn verify(
        &self,
        credential: &Credential,
        http: HttpRequestInfo<'_>,
    ) -> Result<Verified, Refusal> {
        let echo = &credential.challenge;
        let invalid = |detail: &str| Refusal::Problem(ProblemType::InvalidChallenge, detail.into());

        let candidates: Vec<&Offer> = self
            .offers
            .iter()
            .filter(|o| o.method.name() == echo.method && *o.intent == *echo.intent)
            .collect();
        if candidates.is_empty() {
            return Err(invalid(
                "the credential answers a method or intent this route does not offer",
            ));
        }

        if !self.binding_holds(credential) {
            return Err(invalid(
                "the challenge was not issued by this server, or was altered",
            ));
        }

        let Some(offer) = candidates.into_iter().find(|o| {
            o.method
                .matches_offer(o.request.value(), echo.request.value())
        }) else {
            return Err(invalid(
                "the challenge does not match this route's payment terms",
            ));
        };
        let echoed_scope = echo.opaque.as_ref().map(EncodedJson::value);
        if echoed_scope != Some(self.scope.value()) {
            return Err(invalid("the challenge was issued for another route"));
        }

        let Some(expires) = echo.expires.as_deref() else {
            return Err(invalid("the challenge has no expiry"));
        };
        let Ok(expires) = parse_timestamp(expires) else {
            return Err(invalid("the challenge expiry is not an RFC 3339 timestamp"));
        };
        if self.now >= expires {
            return Err(Refusal::Problem(
                ProblemType::PaymentExpired,
                "the challenge has expired".into(),
            ));
        }

        if let Some(body) = self.body {
            let matches = echo
                .digest
                .as_deref()
                .is_some_and(|d| verify_body_digest(d, body));
            if !matches {
                return Err(invalid(
                    "the request body does not match the challenge's digest",
                ));
            }
        }

        let ctx = VerifyContext {
            credential,
            request: echo.request.value(),
            realm: &self.realm,
            expires,
            now: self.now,
            http,
        };
        Ok(offer.method.verify(ctx).await?)
    }

    /// The HMAC over the echo, under this server's realm; also over the canonical re-encoding
    /// of `request`/`opaque`, for clients that re-serialize them (mppx accepts those too).
    fn binding_holds(&self, credential: &Credential) -> bool {
        let echo = &credential.challenge;
        let secret = &self.config.secret;
        if secret.verify(&echo.id, &echo.binding_slots_for_realm(&self.realm)) {
            return true;
        }
        let Ok(request) = echo.request.canonical_wire() else {
            return false;
        };
        let opaque = match &echo.opaque {
            Some(o) => match o.canonical_wire() {
                Ok(w) => Some(w),
                Err(_) => return false,
            },
            None => None,
        };
        let slots = BindingSlots {
            request: &request,
            opaque: opaque.as_deref(),
            ..echo.binding_slots_for_realm(&self.realm)
        };
        secret.verify(&echo.id, &slots)
    }
}

/// The realm when none is configured: the request's host name, without the port.
fn request_host(parts: &http::request::Parts) -> String {
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
    without_port.to_ascii_lowercase()
}

/// `{"_mppx_scope": "GET /path?query"}`: binds a challenge to the route it was issued for.
fn route_scope(parts: &http::request::Parts) -> EncodedJson {
    let target = parts
        .uri
        .path_and_query()
        .map_or_else(|| parts.uri.path().to_owned(), |pq| pq.as_str().to_owned());
    let mut map = Map::new();
    map.insert(
        SCOPE_KEY.into(),
        Value::String(format!("{} {target}", parts.method)),
    );
    // A map with one string entry always canonicalizes.
    EncodedJson::from_map(map).unwrap_or_else(|_| unreachable!("string map encodes"))
}

/// Sessions answer non-content requests themselves: `HEAD`, or a `POST` with no query and no
/// body (how clients send a mid-stream voucher).
pub(crate) fn is_content_request(parts: &http::request::Parts) -> bool {
    if parts.method == http::Method::HEAD {
        return false;
    }
    if parts.method != http::Method::POST || parts.uri.query().is_some() {
        return true;
    }
    let h = &parts.headers;
    let has_length = h
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .is_some_and(|n| n > 0);
    has_length
        || h.contains_key(http::header::TRANSFER_ENCODING)
        || h.contains_key(http::header::CONTENT_TYPE)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(req: http::Request<()>) -> http::request::Parts {
        req.into_parts().0
    }

    #[test]
    fn realm_is_the_host_name() {
        let p = parts(
            http::Request::get("/x")
                .header("host", "API.example.com:8443")
                .body(())
                .unwrap(),
        );
        assert_eq!(request_host(&p), "api.example.com");
        let p = parts(
            http::Request::get("/x")
                .header("host", "[::1]:3000")
                .body(())
                .unwrap(),
        );
        assert_eq!(request_host(&p), "[::1]");
    }

    #[test]
    fn scope_binds_method_path_and_query() {
        let a = route_scope(&parts(http::Request::get("/quote?x=1").body(()).unwrap()));
        let b = route_scope(&parts(http::Request::get("/quote?x=2").body(()).unwrap()));
        let c = route_scope(&parts(http::Request::post("/quote?x=1").body(()).unwrap()));
        assert_eq!(a.value()[SCOPE_KEY], "GET /quote?x=1");
        assert_ne!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn voucher_posts_are_not_content() {
        let head = parts(http::Request::head("/s").body(()).unwrap());
        assert!(!is_content_request(&head));
        let empty_post = parts(http::Request::post("/s").body(()).unwrap());
        assert!(!is_content_request(&empty_post));
        let json_post = parts(
            http::Request::post("/s")
                .header("content-type", "application/json")
                .body(())
                .unwrap(),
        );
        assert!(is_content_request(&json_post));
        let get = parts(http::Request::get("/s").body(()).unwrap());
        assert!(is_content_request(&get));
    }
}
