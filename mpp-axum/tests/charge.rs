//! Layer tests for `charge`: every refusal gives the right status and problem type and never
//! calls the handler; a valid payment runs it once and returns the receipt. Payments go
//! through an in-process test method (the real Tempo method is tested in `mpp-tempo` and the
//! end-to-end tests).

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use axum::Router;
use axum::body::Body;
use axum::routing::{get, post};
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use mpp_axum::{Charge, Mpp, PaymentReceipt, charge, charge_with, try_charge};
use mpp_core::expiry::ManualClock;
use mpp_core::testing::TestMethod;
use mpp_core::{Challenge, Credential, PriceTerms, ProblemType, Receipt};
use serde_json::{Value, json};
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use time::macros::datetime;
use tower::ServiceExt;

const SECRET: &str = "layer-test-secret-0123456789abcdef";

struct App {
    router: Router,
    calls: Arc<AtomicUsize>,
    clock: Arc<ManualClock>,
}

#[derive(Clone)]
struct SharedClock(Arc<ManualClock>);
impl mpp_core::expiry::Clock for SharedClock {
    fn now(&self) -> time::OffsetDateTime {
        self.0.now()
    }
}

fn app_with(mpp: Mpp) -> App {
    let calls = Arc::new(AtomicUsize::new(0));
    let clock = Arc::new(ManualClock::new(datetime!(2026-01-01 12:00:00 UTC)));
    let mpp = mpp.clock(SharedClock(clock.clone()));
    let counter = calls.clone();
    let handler = move |paid: PaymentReceipt| {
        let counter = counter.clone();
        async move {
            counter.fetch_add(1, Ordering::SeqCst);
            format!(
                "paid {} by {:?} amount {:?}",
                paid.reference(),
                paid.payer,
                paid.amount
            )
        }
    };
    let counter = calls.clone();
    let failing = move || {
        let counter = counter.clone();
        async move {
            counter.fetch_add(1, Ordering::SeqCst);
            (StatusCode::INTERNAL_SERVER_ERROR, "boom")
        }
    };
    let counter = calls.clone();
    let echo_body = move |body: String| {
        let counter = counter.clone();
        async move {
            counter.fetch_add(1, Ordering::SeqCst);
            body
        }
    };
    let router = Router::new()
        .route("/fortune", get(handler.clone()).layer(charge("0.01")))
        .route("/cheap", get(handler.clone()).layer(charge("0.001")))
        .route("/failing", get(failing).layer(charge("0.01")))
        .route("/echo", post(echo_body).layer(charge("0.01").bind_body(64)))
        .route(
            "/dynamic",
            get(handler).layer(charge_with(|parts| {
                let n: u32 = parts
                    .uri
                    .query()
                    .and_then(|q| q.strip_prefix("n="))
                    .and_then(|n| n.parse().ok())
                    .ok_or_else(|| mpp_axum::PriceError("query `n` is required".into()))?;
                Ok(PriceTerms::charge(format!("0.00{n}").parse().unwrap()))
            })),
        )
        .route("/health", get(|| async { "ok" }))
        .layer(mpp.layer());
    App {
        router,
        calls,
        clock,
    }
}

fn app() -> App {
    app_with(Mpp::new(SECRET).unwrap().method(TestMethod::new("test")))
}

struct Reply {
    status: StatusCode,
    headers: http::HeaderMap,
    body: String,
}

impl Reply {
    fn problem(&self) -> Value {
        assert_eq!(self.headers["content-type"], "application/problem+json");
        serde_json::from_str(&self.body).unwrap()
    }
    fn problem_type(&self) -> String {
        self.problem()["type"].as_str().unwrap().to_owned()
    }
    fn challenges(&self) -> Vec<Challenge> {
        Challenge::parse_all_lines(
            self.headers
                .get_all("www-authenticate")
                .iter()
                .map(|v| v.to_str().unwrap()),
        )
        .unwrap()
    }
}

async fn send(app: &App, req: Request<Body>) -> Reply {
    send_router(&app.router, req).await
}

fn get_req(uri: &str, authorization: Option<&str>) -> Request<Body> {
    let mut b = Request::get(uri).header("host", "api.example.com");
    if let Some(a) = authorization {
        b = b.header("authorization", a);
    }
    b.body(Body::empty()).unwrap()
}

fn pay(challenge: &Challenge, payload: Value) -> String {
    Credential::new(challenge.clone(), payload).to_authorization()
}

fn problem_uri(kind: ProblemType) -> String {
    kind.uri()
}

async fn challenge_for(app: &App, uri: &str) -> Challenge {
    let reply = send(app, get_req(uri, None)).await;
    assert_eq!(reply.status, StatusCode::PAYMENT_REQUIRED);
    reply.challenges().remove(0)
}

#[tokio::test]
async fn unpaid_request_gets_402_with_challenge_and_problem() {
    let app = app();
    let reply = send(&app, get_req("/fortune", None)).await;
    assert_eq!(reply.status, StatusCode::PAYMENT_REQUIRED);
    assert_eq!(reply.headers["cache-control"], "no-store");
    assert_eq!(
        reply.problem_type(),
        problem_uri(ProblemType::PaymentRequired)
    );
    let challenges = reply.challenges();
    assert_eq!(challenges.len(), 1);
    let c = &challenges[0];
    assert_eq!(
        (c.realm.as_str(), c.method.as_str(), c.intent.as_str()),
        ("api.example.com", "test", "charge")
    );
    assert_eq!(c.request.value()["amount"], "10000");
    assert_eq!(c.expires.as_deref(), Some("2026-01-01T12:05:00.000Z"));
    assert_eq!(reply.problem()["challengeId"], c.id.as_str());
    assert_eq!(app.calls.load(Ordering::SeqCst), 0);
    // A free route is untouched.
    assert_eq!(
        send(&app, get_req("/health", None)).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn paid_request_runs_the_handler_once_with_receipt() {
    let app = app();
    let challenge = challenge_for(&app, "/fortune").await;
    let reply = send(
        &app,
        get_req("/fortune", Some(&pay(&challenge, json!({"pay": "tx1"})))),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(
        reply.body,
        "paid tx1 by Some(\"did:test:payer\") amount Some(10000)"
    );
    assert_eq!(reply.headers["cache-control"], "private");
    let receipt =
        Receipt::from_header_value(reply.headers["payment-receipt"].to_str().unwrap()).unwrap();
    assert_eq!(
        (receipt.method.as_str(), receipt.reference.as_str()),
        ("test", "tx1")
    );
    assert_eq!(app.calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn every_refusal_has_its_problem_type_and_never_runs_the_handler() {
    let app = app();
    let challenge = challenge_for(&app, "/fortune").await;
    let mut tampered = challenge.clone();
    tampered.id = format!("{}x", &tampered.id[..tampered.id.len() - 1]);
    let cheap = challenge_for(&app, "/cheap").await;
    let mut other_secret = challenge.clone();
    other_secret.id = Challenge::builder_encoded(
        &challenge.realm,
        "test",
        "charge",
        challenge.request.clone(),
    )
    .expires(challenge.expires.clone().unwrap())
    .opaque(challenge.opaque.clone().unwrap())
    .sign(&mpp_core::ChallengeSecret::new("another-secret-0123456789abcdef-xyz").unwrap())
    .id;
    let cases: Vec<(&str, String, ProblemType, StatusCode)> = vec![
        (
            "garbage token",
            "Payment not-base64!!".into(),
            ProblemType::MalformedCredential,
            StatusCode::PAYMENT_REQUIRED,
        ),
        (
            "not JSON object",
            "Payment W10".into(),
            ProblemType::MalformedCredential,
            StatusCode::PAYMENT_REQUIRED,
        ),
        (
            "tampered id",
            pay(&tampered, json!({"pay": "a"})),
            ProblemType::InvalidChallenge,
            StatusCode::PAYMENT_REQUIRED,
        ),
        (
            "other server's secret",
            pay(&other_secret, json!({"pay": "b"})),
            ProblemType::InvalidChallenge,
            StatusCode::PAYMENT_REQUIRED,
        ),
        (
            "cheaper route's challenge",
            pay(&cheap, json!({"pay": "c"})),
            ProblemType::InvalidChallenge,
            StatusCode::PAYMENT_REQUIRED,
        ),
        (
            "method refuses",
            pay(&challenge, json!({"fail": "wrong amount"})),
            ProblemType::VerificationFailed,
            StatusCode::PAYMENT_REQUIRED,
        ),
        (
            "payload schema",
            pay(&challenge, json!({})),
            ProblemType::InvalidPayload,
            StatusCode::PAYMENT_REQUIRED,
        ),
    ];
    for (name, authorization, kind, status) in cases {
        let reply = send(&app, get_req("/fortune", Some(&authorization))).await;
        assert_eq!(reply.status, status, "{name}: {}", reply.body);
        assert_eq!(reply.problem_type(), problem_uri(kind), "{name}");
        // A fresh challenge comes with every 402, and the problem names it.
        let fresh = reply.challenges();
        assert_eq!(
            reply.problem()["challengeId"],
            fresh[0].id.as_str(),
            "{name}"
        );
        assert!(reply.headers.get("payment-receipt").is_none(), "{name}");
    }
    assert_eq!(app.calls.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_challenge_is_bound_to_its_route_and_query() {
    let app = app();
    let for_n1 = challenge_for(&app, "/dynamic?n=1").await;
    assert_eq!(for_n1.request.value()["amount"], "1000");
    // Same price, other query string: refused by the route scope.
    let for_x1 = challenge_for(&app, "/fortune?x=1").await;
    let reply = send(
        &app,
        get_req("/fortune?x=2", Some(&pay(&for_x1, json!({"pay": "q1"})))),
    )
    .await;
    assert_eq!(
        reply.problem_type(),
        problem_uri(ProblemType::InvalidChallenge)
    );
    assert!(
        reply.problem()["detail"]
            .as_str()
            .unwrap()
            .contains("another route")
    );
    // A price function that refuses the request: 400, no challenge.
    let reply = send(&app, get_req("/dynamic?m=1", None)).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    // Another price (pinning) on the same path: refused.
    let for_n2 = challenge_for(&app, "/dynamic?n=2").await;
    let reply = send(
        &app,
        get_req("/dynamic?n=1", Some(&pay(&for_n2, json!({"pay": "q2"})))),
    )
    .await;
    assert_eq!(
        reply.problem_type(),
        problem_uri(ProblemType::InvalidChallenge)
    );
    // Same price on another path: refused by the route scope.
    let fortune = challenge_for(&app, "/fortune").await;
    let reply = send(
        &app,
        get_req("/failing", Some(&pay(&fortune, json!({"pay": "q3"})))),
    )
    .await;
    assert_eq!(
        reply.problem_type(),
        problem_uri(ProblemType::InvalidChallenge)
    );
    assert_eq!(app.calls.load(Ordering::SeqCst), 0);
    // The right one works.
    let reply = send(
        &app,
        get_req("/dynamic?n=1", Some(&pay(&for_n1, json!({"pay": "q4"})))),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
}

#[tokio::test]
async fn expired_challenge_gets_payment_expired() {
    let app = app();
    let challenge = challenge_for(&app, "/fortune").await;
    app.clock.advance(Duration::from_secs(301));
    let reply = send(
        &app,
        get_req("/fortune", Some(&pay(&challenge, json!({"pay": "late"})))),
    )
    .await;
    assert_eq!(reply.status, StatusCode::PAYMENT_REQUIRED);
    assert_eq!(
        reply.problem_type(),
        problem_uri(ProblemType::PaymentExpired)
    );
    assert_eq!(
        reply.challenges()[0].expires.as_deref(),
        Some("2026-01-01T12:10:01.000Z")
    );
    assert_eq!(app.calls.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn challenge_without_expiry_is_invalid() {
    let app = app();
    let issued = challenge_for(&app, "/fortune").await;
    // Properly signed by this server, but without `expires`.
    let secret = mpp_core::ChallengeSecret::new(SECRET).unwrap();
    let no_expiry =
        Challenge::builder_encoded(&issued.realm, "test", "charge", issued.request.clone())
            .opaque(issued.opaque.clone().unwrap())
            .sign(&secret);
    let reply = send(
        &app,
        get_req("/fortune", Some(&pay(&no_expiry, json!({"pay": "x"})))),
    )
    .await;
    assert_eq!(
        reply.problem_type(),
        problem_uri(ProblemType::InvalidChallenge)
    );
    assert!(
        reply.problem()["detail"]
            .as_str()
            .unwrap()
            .contains("expiry")
    );
}

#[tokio::test]
async fn replayed_credential_is_refused() {
    let app = app();
    let challenge = challenge_for(&app, "/fortune").await;
    let authorization = pay(&challenge, json!({"pay": "once"}));
    assert_eq!(
        send(&app, get_req("/fortune", Some(&authorization)))
            .await
            .status,
        StatusCode::OK
    );
    let again = send(&app, get_req("/fortune", Some(&authorization))).await;
    assert_eq!(again.status, StatusCode::PAYMENT_REQUIRED);
    assert_eq!(
        again.problem_type(),
        problem_uri(ProblemType::VerificationFailed)
    );
    assert_eq!(app.calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn infrastructure_failure_is_503_and_not_served() {
    let app = app();
    let challenge = challenge_for(&app, "/fortune").await;
    let reply = send(
        &app,
        get_req("/fortune", Some(&pay(&challenge, json!({"down": true})))),
    )
    .await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(reply.headers["retry-after"], "1");
    let detail = reply.problem()["detail"].as_str().unwrap().to_owned();
    assert!(detail.contains("this request took no money"), "{detail}");
    // The method's internal cause is logged, never sent.
    assert!(!detail.contains("test node down"), "{detail}");
    assert_eq!(app.calls.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn body_is_bound_by_digest() {
    let app = app();
    let post = |body: &'static str, auth: Option<String>| {
        let mut b = Request::post("/echo")
            .header("host", "api.example.com")
            .header("content-type", "text/plain");
        if let Some(a) = auth {
            b = b.header("authorization", a);
        }
        b.body(Body::from(body)).unwrap()
    };
    let reply = send(&app, post("hello", None)).await;
    let challenge = reply.challenges().remove(0);
    assert_eq!(
        challenge.digest,
        Some(mpp_core::digest::body_digest(b"hello"))
    );
    let swapped = send(
        &app,
        post("HELLO", Some(pay(&challenge, json!({"pay": "d1"})))),
    )
    .await;
    assert_eq!(
        swapped.problem_type(),
        problem_uri(ProblemType::InvalidChallenge)
    );
    let ok = send(
        &app,
        post("hello", Some(pay(&challenge, json!({"pay": "d2"})))),
    )
    .await;
    assert_eq!((ok.status, ok.body.as_str()), (StatusCode::OK, "hello"));
    let too_big = send(
        &app,
        post(
            "0123456789012345678901234567890123456789012345678901234567890123456789",
            None,
        ),
    )
    .await;
    assert_eq!(too_big.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(app.calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn several_methods_one_line_each_ranked_by_accept_payment() {
    let app = app_with(
        Mpp::new(SECRET)
            .unwrap()
            .method(TestMethod::new("alpha"))
            .method(TestMethod::new("beta")),
    );
    let reply = send(&app, get_req("/fortune", None)).await;
    assert_eq!(reply.headers.get_all("www-authenticate").iter().count(), 2);
    let names: Vec<String> = reply.challenges().into_iter().map(|c| c.method).collect();
    assert_eq!(names, ["alpha", "beta"]);
    let mut req = get_req("/fortune", None);
    req.headers_mut().insert(
        "accept-payment",
        "beta/charge, alpha/*;q=0.5".parse().unwrap(),
    );
    let names: Vec<String> = send(&app, req)
        .await
        .challenges()
        .into_iter()
        .map(|c| c.method)
        .collect();
    assert_eq!(names, ["beta", "alpha"]);
    // Either offer pays.
    let challenges = send(&app, get_req("/fortune", None)).await.challenges();
    let reply = send(
        &app,
        get_req("/fortune", Some(&pay(&challenges[1], json!({"pay": "b1"})))),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        Receipt::from_header_value(reply.headers["payment-receipt"].to_str().unwrap())
            .unwrap()
            .method,
        "beta"
    );
}

#[tokio::test]
async fn management_disposition_answers_without_the_handler() {
    let app = app();
    let challenge = challenge_for(&app, "/fortune").await;
    let reply = send(
        &app,
        get_req(
            "/fortune",
            Some(&pay(&challenge, json!({"pay": "m1", "manage": true}))),
        ),
    )
    .await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    assert!(reply.headers.contains_key("payment-receipt"));
    assert_eq!(app.calls.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn no_receipt_on_an_error_response() {
    let app = app();
    let challenge = challenge_for(&app, "/failing").await;
    let reply = send(
        &app,
        get_req("/failing", Some(&pay(&challenge, json!({"pay": "f1"})))),
    )
    .await;
    assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(reply.headers.get("payment-receipt").is_none());
}

#[tokio::test]
async fn rotated_secret_still_verifies_old_challenges() {
    let old = app();
    let challenge = challenge_for(&old, "/fortune").await;
    let rotated = app_with(
        Mpp::new("the-new-secret-0123456789abcdef-0123")
            .unwrap()
            .previous_secret(SECRET)
            .unwrap()
            .method(TestMethod::new("test")),
    );
    let reply = send(
        &rotated,
        get_req("/fortune", Some(&pay(&challenge, json!({"pay": "r1"})))),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
}

#[tokio::test]
async fn missing_configuration_is_a_500_not_a_free_pass() {
    let router: Router =
        Router::new().route("/fortune", get(|| async { "free?" }).layer(charge("0.01")));
    let response = router.oneshot(get_req("/fortune", None)).await.unwrap();
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
}

#[test]
fn bad_price_literals_fail_at_start_up() {
    assert!(try_charge("abc").is_err());
    assert!(try_charge("-1").is_err());
    assert!(std::panic::catch_unwind(|| charge("1.2.3")).is_err());
    let mpp = Mpp::new(SECRET).unwrap().method(TestMethod::new("test"));
    // More decimals than the method's currency has.
    assert!(mpp.charge("0.0000001").is_err());
    assert!(mpp.charge("0.000001").is_ok());
    // No method serves the intent.
    assert!(Mpp::new(SECRET).unwrap().charge("1").is_err());
}

#[tokio::test]
async fn cors_exposes_the_payment_headers() {
    use tower_http::cors::{Any, CorsLayer};
    let app = app();
    let router = app
        .router
        .clone()
        .layer(mpp_axum::cors::with_payment_headers(
            CorsLayer::new().allow_origin(Any),
        ));
    let mut req = get_req("/fortune", None);
    req.headers_mut()
        .insert("origin", "https://app.example".parse().unwrap());
    let response = router.oneshot(req).await.unwrap();
    assert_eq!(response.status(), StatusCode::PAYMENT_REQUIRED);
    let exposed = response.headers()["access-control-expose-headers"]
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    assert!(
        exposed.contains("www-authenticate") && exposed.contains("payment-receipt"),
        "{exposed}"
    );
}

// `Infallible` is the error of every axum handler; the layer must fit there.
#[test]
fn the_layer_wraps_an_axum_route() {
    fn assert_service<T: tower::Service<Request<Body>, Error = Infallible>>() {}
    assert_service::<Charge<axum::routing::Route>>();
    let service = charge("0.01").layer_inner(tower::service_fn(|_: Request<Body>| async {
        Ok::<_, Infallible>(http::Response::new(Body::empty()))
    }));
    let _inner = service.get_ref();
    let _inner = service.into_inner();
}

/// Builds a `Charge` around a service (what `Router::layer` does).
trait LayerInner {
    fn layer_inner<S>(&self, inner: S) -> Charge<S>;
}

impl LayerInner for mpp_axum::ChargeLayer {
    fn layer_inner<S>(&self, inner: S) -> Charge<S> {
        tower::Layer::layer(self, inner)
    }
}

#[tokio::test]
async fn every_option_works_on_every_form() {
    let mpp = Mpp::new(SECRET).unwrap().method(TestMethod::new("test"));
    let dynamic = |_: &http::request::Parts| Ok(PriceTerms::charge("0.02".parse().unwrap()));
    let forms = [
        ("unbound", charge("0.02")),
        ("bound", mpp.charge("0.02").unwrap()),
        ("dynamic", charge_with(dynamic)),
        ("dynamic bound", mpp.charge_with(dynamic).unwrap()),
    ];
    for (name, layer) in forms {
        let layer = layer
            .description("Two cents")
            .external_id("order-7")
            .currency("0x20c0000000000000000000000000000000000001");
        let router = Router::new()
            .route("/x", get(|| async { "ok" }).layer(layer))
            .layer(mpp.layer());
        let reply = send_router(&router, get_req("/x", None)).await;
        let challenges = Challenge::parse_all_lines(
            reply
                .headers
                .get_all("www-authenticate")
                .iter()
                .map(|v| v.to_str().unwrap()),
        )
        .unwrap();
        let c = &challenges[0];
        assert_eq!(c.description.as_deref(), Some("Two cents"), "{name}");
        assert_eq!(c.request.value()["externalId"], "order-7", "{name}");
        assert_eq!(
            c.request.value()["currency"],
            "0x20c0000000000000000000000000000000000001",
            "{name}"
        );
        assert_eq!(c.request.value()["amount"], "20000", "{name}");
    }
}

#[test]
fn terms_a_method_cannot_offer_fail_at_start_up() {
    let mpp = Mpp::new(SECRET).unwrap().method(TestMethod::new("test"));
    // The test method's currencies are token addresses.
    assert!(
        mpp.charge_with(|_| Ok(PriceTerms::charge("1".parse().unwrap())))
            .unwrap()
            .currency("usd")
            .layer_inner_result()
            .is_err()
    );
    let bound = mpp.charge("0.01").unwrap().currency("usd");
    let applied = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        Router::<()>::new().route("/x", get(|| async { "ok" }).layer(bound))
    }));
    assert!(
        applied.is_err(),
        "a bound layer that cannot be offered must not start"
    );
    // A description that cannot travel in a header.
    let bound = mpp.charge("0.01").unwrap().description("two\nlines");
    assert!(bound.layer_inner_result().is_err());
    assert!(
        mpp.charge("0.01")
            .unwrap()
            .description("fine")
            .layer_inner_result()
            .is_ok()
    );
}

trait LayerInnerResult {
    fn layer_inner_result(self) -> std::thread::Result<()>;
}

impl LayerInnerResult for mpp_axum::ChargeLayer {
    fn layer_inner_result(self) -> std::thread::Result<()> {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
            let _ = tower::Layer::layer(&self, ());
        }))
    }
}

#[tokio::test]
async fn an_unbound_layer_that_cannot_be_offered_is_a_500_not_a_free_pass() {
    let mpp = Mpp::new(SECRET).unwrap().method(TestMethod::new("test"));
    let router = Router::new()
        .route(
            "/x",
            get(|| async { "free?" }).layer(charge("0.01").currency("usd")),
        )
        .layer(mpp.layer());
    let reply = send_router(&router, get_req("/x", None)).await;
    assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(!reply.body.contains("free?"));
}

async fn send_router(router: &Router, req: Request<Body>) -> Reply {
    let response = router.clone().oneshot(req).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    Reply {
        status,
        headers,
        body: String::from_utf8(body.to_vec()).unwrap(),
    }
}

/// `GET` with any headers.
fn get_with(uri: &str, headers: &[(&str, &str)]) -> Request<Body> {
    let mut b = Request::get(uri).header("host", "api.example.com");
    for (name, value) in headers {
        b = b.header(*name, *value);
    }
    b.body(Body::empty()).unwrap()
}

#[tokio::test]
async fn the_402_names_the_price() {
    let app = app();
    let reply = send(&app, get_req("/fortune", None)).await;
    assert_eq!(
        reply.problem()["detail"],
        "Payment is required: 0.01 (10000 base units)."
    );
    assert_eq!(reply.problem()["title"], "Payment Required");
}

#[tokio::test]
async fn a_client_chosen_amount_no_method_can_express_is_a_400() {
    let mpp = Mpp::new(SECRET).unwrap().method(TestMethod::new("test"));
    let by_amount = |parts: &http::request::Parts| {
        let amount = parts
            .uri
            .query()
            .and_then(|q| q.strip_prefix("amount="))
            .ok_or_else(|| mpp_axum::PriceError::new("query `amount` is required"))?;
        let amount: mpp_axum::DecimalAmount = amount.parse().map_err(mpp_axum::PriceError::new)?;
        Ok(mpp_axum::PriceTerms::charge(amount))
    };
    let router = Router::new()
        .route(
            "/bound",
            get(|| async { "paid" }).layer(mpp.charge_with(by_amount).unwrap()),
        )
        .route(
            "/unbound",
            get(|| async { "paid" }).layer(charge_with(by_amount)),
        )
        .layer(mpp.layer());
    for path in ["/bound", "/unbound"] {
        // More decimals than the currency has: the client's choice, so a 400.
        let reply = send_router(&router, get_req(&format!("{path}?amount=0.0000001"), None)).await;
        assert_eq!(
            reply.status,
            StatusCode::BAD_REQUEST,
            "{path}: {}",
            reply.body
        );
        let detail = reply.problem()["detail"].as_str().unwrap().to_owned();
        assert!(detail.contains("decimal places"), "{detail}");
        assert!(reply.headers.get("www-authenticate").is_none());
        // Too large for the currency's base units: a 400 too.
        let huge = "340282366920938463463374607431768211455";
        let reply = send_router(&router, get_req(&format!("{path}?amount={huge}"), None)).await;
        assert_eq!(
            reply.status,
            StatusCode::BAD_REQUEST,
            "{path}: {}",
            reply.body
        );
        // Not a number: the price function's own refusal.
        let reply = send_router(&router, get_req(&format!("{path}?amount=abc"), None)).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST);
        assert!(reply.problem()["detail"].as_str().unwrap().contains("abc"));
        // A price the methods can express: a 402 naming it.
        let reply = send_router(&router, get_req(&format!("{path}?amount=0.25"), None)).await;
        assert_eq!(reply.status, StatusCode::PAYMENT_REQUIRED);
        assert_eq!(
            reply.problem()["detail"],
            "Payment is required: 0.25 (250000 base units)."
        );
    }
    // Wrong options on a dynamic price are still the server's error, found at start-up.
    assert!(
        mpp.charge_with(by_amount)
            .unwrap()
            .currency("usd")
            .layer_inner_result()
            .is_err()
    );
}

/// A tiny stand-in for an application's own auth: `Authorization: Bearer secret` or 401.
async fn require_bearer(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let authorized = req
        .headers()
        .get("authorization")
        .is_some_and(|v| v == "Bearer secret");
    if authorized {
        next.run(req).await
    } else {
        StatusCode::UNAUTHORIZED.into_response()
    }
}

struct BearerApp {
    router: Router,
    calls: Arc<AtomicUsize>,
}

/// `/report`: Bearer auth outside, payment in `Payment-Authorization` inside. `/open`: the
/// same payment mode without Bearer auth.
fn bearer_app(mpp: &Mpp) -> BearerApp {
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let report = move |paid: PaymentReceipt| {
        let counter = counter.clone();
        async move {
            counter.fetch_add(1, Ordering::SeqCst);
            format!("report paid with {}", paid.reference())
        }
    };
    let paid = || {
        mpp.charge("0.05")
            .unwrap()
            .credential_header(mpp_axum::CredentialHeader::PaymentAuthorization)
    };
    let router = Router::new()
        .route(
            "/report",
            get(report.clone())
                .route_layer(paid())
                .route_layer(axum::middleware::from_fn(require_bearer)),
        )
        .route("/open", get(report).route_layer(paid()));
    BearerApp { router, calls }
}

#[tokio::test]
async fn payment_authorization_leaves_authorization_to_the_application() {
    let mpp = Mpp::new(SECRET).unwrap().method(TestMethod::new("test"));
    let app = bearer_app(&mpp);
    let send = |req| send_router(&app.router, req);

    // No Bearer: the application's 401, before any payment is asked for.
    let reply = send(get_with("/report", &[])).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert!(reply.headers.get("www-authenticate").is_none());

    // Bearer, no payment: 402, and the challenge names `Payment-Authorization`.
    let reply = send(get_with("/report", &[("authorization", "Bearer secret")])).await;
    assert_eq!(reply.status, StatusCode::PAYMENT_REQUIRED, "{}", reply.body);
    assert_eq!(
        reply.problem_type(),
        problem_uri(ProblemType::PaymentRequired)
    );
    let raw = reply.headers["www-authenticate"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(raw.contains(r#"header="Payment-Authorization""#), "{raw}");
    let challenge = reply.challenges().remove(0);
    assert_eq!(challenge.header.as_deref(), Some("Payment-Authorization"));

    // A paid request without the Bearer token is still the application's 401, and the
    // payment is not spent.
    let credential = pay(&challenge, json!({"pay": "pa1"}));
    let reply = send(get_with(
        "/report",
        &[("payment-authorization", &credential)],
    ))
    .await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);

    // Both: served, with the receipt.
    let reply = send(get_with(
        "/report",
        &[
            ("authorization", "Bearer secret"),
            ("payment-authorization", &credential),
        ],
    ))
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.body, "report paid with pa1");
    assert!(reply.headers.contains_key("payment-receipt"));
    assert_eq!(reply.headers["cache-control"], "private");
    assert_eq!(app.calls.load(Ordering::SeqCst), 1);

    // The credential is read from `Payment-Authorization` only: one in `Authorization` is
    // not a payment here, and a Bearer token is not a malformed credential.
    let open = send(get_with("/open", &[])).await.challenges().remove(0);
    let in_authorization = pay(&open, json!({"pay": "pa2"}));
    let reply = send(get_with("/open", &[("authorization", &in_authorization)])).await;
    assert_eq!(reply.status, StatusCode::PAYMENT_REQUIRED);
    assert_eq!(
        reply.problem_type(),
        problem_uri(ProblemType::PaymentRequired)
    );
    let reply = send(get_with("/open", &[("authorization", "Bearer secret")])).await;
    assert_eq!(
        reply.problem_type(),
        problem_uri(ProblemType::PaymentRequired)
    );
    assert_eq!(app.calls.load(Ordering::SeqCst), 1);
    let reply = send(get_with(
        "/open",
        &[("payment-authorization", &in_authorization)],
    ))
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);

    // A challenge of a route that reads `Authorization` does not pay here, even at the same
    // price and from the right header.
    let plain_mpp = Mpp::new(SECRET).unwrap().method(TestMethod::new("test"));
    let plain = Router::new().route(
        "/open",
        get(|| async { "plain" }).route_layer(plain_mpp.charge("0.05").unwrap()),
    );
    let plain_challenge = send_router(&plain, get_with("/open", &[]))
        .await
        .challenges()
        .remove(0);
    assert_eq!(plain_challenge.header, None);
    let reply = send(get_with(
        "/open",
        &[(
            "payment-authorization",
            &pay(&plain_challenge, json!({"pay": "pa3"})),
        )],
    ))
    .await;
    assert_eq!(
        reply.problem_type(),
        problem_uri(ProblemType::InvalidChallenge)
    );
}

#[tokio::test]
async fn the_configuration_can_move_every_route_to_payment_authorization() {
    let mpp = Mpp::new(SECRET)
        .unwrap()
        .method(TestMethod::new("test"))
        .credential_header(mpp_axum::CredentialHeader::PaymentAuthorization);
    let router = Router::new()
        .route("/unbound", get(|| async { "ok" }).layer(charge("0.01")))
        .route(
            "/bound",
            get(|| async { "ok" }).layer(mpp.charge("0.01").unwrap()),
        )
        .route(
            "/override",
            get(|| async { "ok" })
                .layer(charge("0.01").credential_header(mpp_axum::CredentialHeader::Authorization)),
        )
        .layer(mpp.layer());
    for (path, expected) in [
        ("/unbound", Some("Payment-Authorization")),
        ("/bound", Some("Payment-Authorization")),
        ("/override", None),
    ] {
        let reply = send_router(&router, get_with(path, &[])).await;
        let challenge = reply.challenges().remove(0);
        assert_eq!(challenge.header.as_deref(), expected, "{path}");
        let header = if expected.is_some() {
            "payment-authorization"
        } else {
            "authorization"
        };
        let reply = send_router(
            &router,
            get_with(path, &[(header, &pay(&challenge, json!({"pay": path})))]),
        )
        .await;
        assert_eq!(reply.status, StatusCode::OK, "{path}: {}", reply.body);
    }
}

// Without the feature the layer sees only the path `nest` left it.
#[cfg(feature = "original-uri")]
#[tokio::test]
async fn under_nest_a_challenge_is_bound_to_the_full_path() {
    let mpp = Mpp::new(SECRET).unwrap().method(TestMethod::new("test"));
    let handler = |paid: PaymentReceipt| async move { format!("paid {}", paid.reference()) };
    for bound in [false, true] {
        let layer = || {
            if bound {
                mpp.charge("0.01").unwrap()
            } else {
                charge("0.01")
            }
        };
        let v1 = Router::new().route("/fortune", get(handler).route_layer(layer()));
        let router = Router::new()
            .route("/fortune", get(handler).route_layer(layer()))
            .nest("/v1", v1)
            .layer(mpp.layer());
        let root = send_router(&router, get_with("/fortune", &[]))
            .await
            .challenges()
            .remove(0);
        let nested = send_router(&router, get_with("/v1/fortune", &[]))
            .await
            .challenges()
            .remove(0);
        assert_eq!(
            nested.opaque.as_ref().unwrap().value()["_mppx_scope"],
            "GET /v1/fortune",
            "bound: {bound}"
        );
        // Same handler, same price, other path: refused.
        let reply = send_router(
            &router,
            get_with(
                "/v1/fortune",
                &[(
                    "authorization",
                    &pay(&root, json!({"pay": format!("n1{bound}")})),
                )],
            ),
        )
        .await;
        assert_eq!(
            reply.problem_type(),
            problem_uri(ProblemType::InvalidChallenge),
            "bound: {bound}"
        );
        assert!(
            reply.problem()["detail"]
                .as_str()
                .unwrap()
                .contains("another route")
        );
        // Its own challenge pays.
        let reply = send_router(
            &router,
            get_with(
                "/v1/fortune",
                &[(
                    "authorization",
                    &pay(&nested, json!({"pay": format!("n2{bound}")})),
                )],
            ),
        )
        .await;
        assert_eq!(
            reply.status,
            StatusCode::OK,
            "bound: {bound}: {}",
            reply.body
        );
    }
}

#[tokio::test]
async fn a_long_query_is_bound_by_its_digest() {
    let app = app();
    let long = format!("/fortune?q={}", "a".repeat(4000));
    let other = format!("/fortune?q={}b", "a".repeat(3999));
    let reply = send(&app, get_req(&long, None)).await;
    let header_len = reply.headers["www-authenticate"].len();
    assert!(header_len < 1024, "{header_len}");
    let challenge = reply.challenges().remove(0);
    let scope = challenge.opaque.as_ref().unwrap().value()["_mppx_scope"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(scope.starts_with("GET sha-256="), "{scope}");
    // Another long query of the same length: another digest, refused.
    let reply = send(
        &app,
        get_req(&other, Some(&pay(&challenge, json!({"pay": "l1"})))),
    )
    .await;
    assert_eq!(
        reply.problem_type(),
        problem_uri(ProblemType::InvalidChallenge)
    );
    let reply = send(
        &app,
        get_req(&long, Some(&pay(&challenge, json!({"pay": "l2"})))),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
}

#[tokio::test]
async fn the_receipt_gives_the_payer_address_and_the_amount_in_currency_units() {
    let mpp = Mpp::new(SECRET).unwrap().method(TestMethod::new("test"));
    let router = Router::new()
        .route(
            "/fortune",
            get(|paid: PaymentReceipt| async move {
                let did = paid.payer_did().unwrap();
                format!(
                    "{} on {} paid {} ({:?} base units)",
                    paid.payer_address().unwrap(),
                    did.chain_id,
                    paid.amount_display().unwrap(),
                    paid.amount.unwrap(),
                )
            })
            .route_layer(mpp.charge("0.01").unwrap()),
        )
        .route(
            "/anonymous",
            get(|paid: PaymentReceipt| async move {
                format!("{:?} {:?}", paid.payer_address(), paid.payer_did())
            })
            .route_layer(mpp.charge("0.01").unwrap()),
        );
    let challenge = send_router(&router, get_with("/fortune", &[]))
        .await
        .challenges()
        .remove(0);
    let credential = Credential::new(challenge, json!({"pay": "r1"}))
        .with_source("did:pkh:eip155:31337:0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266");
    let reply = send_router(
        &router,
        get_with(
            "/fortune",
            &[("authorization", &credential.to_authorization())],
        ),
    )
    .await;
    assert_eq!(
        reply.body,
        "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266 on 31337 paid 0.01 (10000 base units)"
    );
    // A payer that is not a did:pkh has no address.
    let challenge = send_router(&router, get_with("/anonymous", &[]))
        .await
        .challenges()
        .remove(0);
    let reply = send_router(
        &router,
        get_with(
            "/anonymous",
            &[("authorization", &pay(&challenge, json!({"pay": "r2"})))],
        ),
    )
    .await;
    assert_eq!(reply.body, "None None");
}

#[tokio::test]
async fn a_receipt_without_a_payment_layer_is_a_500_problem() {
    let router: Router = Router::new().route(
        "/oops",
        get(|paid: PaymentReceipt| async move { paid.reference().to_owned() }),
    );
    let reply = send_router(&router, get_with("/oops", &[])).await;
    assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
    let problem = reply.problem();
    assert_eq!(problem["status"], 500);
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("payment layer")
    );
    // Optional on a free route: no error.
    let router: Router = Router::new().route(
        "/free",
        get(|paid: Option<PaymentReceipt>| async move { format!("{}", paid.is_some()) }),
    );
    assert_eq!(
        send_router(&router, get_with("/free", &[])).await.body,
        "false"
    );
}

#[tokio::test]
async fn a_body_over_the_limit_is_told_so() {
    let app = app();
    let reply = send(
        &app,
        Request::post("/echo")
            .header("host", "api.example.com")
            .body(Body::from("x".repeat(65)))
            .unwrap(),
    )
    .await;
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(
        reply.problem()["detail"],
        "The request body is over the limit of 64 bytes."
    );
}

#[tokio::test]
async fn route_layer_answers_other_methods_with_a_plain_405() {
    let mpp = Mpp::new(SECRET).unwrap().method(TestMethod::new("test"));
    let router = Router::new()
        .route(
            "/fortune",
            get(|| async { "paid" }).route_layer(mpp.charge("0.01").unwrap()),
        )
        .layer(mpp.layer());
    let post = Request::post("/fortune")
        .header("host", "api.example.com")
        .body(Body::empty())
        .unwrap();
    let reply = send_router(&router, post).await;
    assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED);
    assert!(reply.headers.get("www-authenticate").is_none());
    let reply = send_router(&router, get_with("/fortune", &[])).await;
    assert_eq!(reply.status, StatusCode::PAYMENT_REQUIRED);
}

#[tokio::test]
async fn cors_allows_payment_authorization() {
    use tower_http::cors::{Any, CorsLayer};
    let app = app();
    let router = app
        .router
        .clone()
        .layer(mpp_axum::cors::with_payment_headers(
            CorsLayer::new().allow_origin(Any),
        ));
    let preflight = Request::options("/fortune")
        .header("host", "api.example.com")
        .header("origin", "https://app.example")
        .header("access-control-request-method", "GET")
        .header("access-control-request-headers", "payment-authorization")
        .body(Body::empty())
        .unwrap();
    let response = router.oneshot(preflight).await.unwrap();
    let allowed = response.headers()["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    assert!(
        allowed.contains("payment-authorization") && allowed.contains("authorization"),
        "{allowed}"
    );
}

#[tokio::test]
async fn a_paid_response_is_private_and_never_public() {
    let mpp = Mpp::new(SECRET).unwrap().method(TestMethod::new("test"));
    let router = Router::new()
        .route(
            "/cached",
            get(|| async {
                (
                    [(
                        http::header::CACHE_CONTROL,
                        "public, max-age=60, s-maxage=120",
                    )],
                    "paid content",
                )
            })
            .route_layer(charge("0.01")),
        )
        .layer(mpp.layer());
    let reply = send_router(&router, get_req("/cached", None)).await;
    let challenge = reply.challenges().remove(0);
    let reply = send_router(
        &router,
        get_req("/cached", Some(&pay(&challenge, json!({"pay": "cc1"})))),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.headers["cache-control"], "max-age=60, private");
}

/// `issued`, signed again with `secret` and another `expires`.
fn resigned(issued: &Challenge, secret: &str, expires: &str) -> Challenge {
    Challenge::builder_encoded(&issued.realm, "test", "charge", issued.request.clone())
        .expires(expires)
        .opaque(issued.opaque.clone().unwrap())
        .sign(&mpp_core::ChallengeSecret::new(secret).unwrap())
}

#[tokio::test]
async fn a_challenge_expiring_beyond_the_maximum_lifetime_is_refused() {
    let app = app();
    let issued = challenge_for(&app, "/fortune").await;
    // The real secret, route and terms: only the expiry is one this server never issues.
    let forever = resigned(&issued, SECRET, "2099-01-01T00:00:00.000Z");
    let reply = send(
        &app,
        get_req("/fortune", Some(&pay(&forever, json!({"pay": "m1"})))),
    )
    .await;
    assert_eq!(reply.status, StatusCode::PAYMENT_REQUIRED);
    assert_eq!(
        reply.problem_type(),
        problem_uri(ProblemType::InvalidChallenge)
    );
    let fresh = reply.challenges();
    assert_eq!(fresh.len(), 1);
    assert_eq!(reply.problem()["challengeId"], fresh[0].id.as_str());
    assert_eq!(app.calls.load(Ordering::SeqCst), 0);

    // A shorter maximum than the TTL refuses even the server's own challenges.
    let capped = app_with(
        Mpp::new(SECRET)
            .unwrap()
            .method(TestMethod::new("test"))
            .max_challenge_lifetime(Duration::from_secs(60)),
    );
    let own = challenge_for(&capped, "/fortune").await;
    let reply = send(
        &capped,
        get_req("/fortune", Some(&pay(&own, json!({"pay": "m2"})))),
    )
    .await;
    assert_eq!(
        reply.problem_type(),
        problem_uri(ProblemType::InvalidChallenge)
    );
}

#[tokio::test]
async fn a_retired_previous_secret_is_refused_after_its_time() {
    const NEW: &str = "the-new-secret-0123456789abcdef-0123";
    let old = app();
    let rotated = app_with(
        Mpp::new(NEW)
            .unwrap()
            .previous_secret_until(SECRET, datetime!(2026-01-01 12:02:00 UTC))
            .unwrap()
            .method(TestMethod::new("test")),
    );
    // Before the retirement time, the old secret's challenges pay.
    let challenge = challenge_for(&old, "/fortune").await;
    let reply = send(
        &rotated,
        get_req("/fortune", Some(&pay(&challenge, json!({"pay": "s1"})))),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);

    // After it, they are refused although not expired yet.
    let challenge = challenge_for(&old, "/fortune").await;
    rotated.clock.advance(Duration::from_secs(121));
    let reply = send(
        &rotated,
        get_req("/fortune", Some(&pay(&challenge, json!({"pay": "s2"})))),
    )
    .await;
    assert_eq!(reply.status, StatusCode::PAYMENT_REQUIRED);
    assert_eq!(
        reply.problem_type(),
        problem_uri(ProblemType::InvalidChallenge)
    );
    // The new secret's own challenges still pay.
    let fresh = reply.challenges().remove(0);
    let reply = send(
        &rotated,
        get_req("/fortune", Some(&pay(&fresh, json!({"pay": "s3"})))),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(rotated.calls.load(Ordering::SeqCst), 2);
}
