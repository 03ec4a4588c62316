//! Charge on success: a payment is verified and held before the handler and taken only when
//! the handler answers 2xx; a non-2xx answer (a 405 from axum's method router, a handler
//! error, a panic) takes no money. Settling first (`settle_first`) takes it before the
//! handler, and then a failed request leaves the payment redeemable by the same credential.
//! Money is counted by the in-process test method's ledger.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use axum::Router;
use axum::body::Body;
use axum::routing::get;
use http::{Method as HttpMethod, Request, StatusCode};
use http_body_util::BodyExt;
use mpp_axum::{Mpp, charge};
use mpp_core::testing::TestMethod;
use mpp_core::{Challenge, Credential, Method, ProblemType};
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tower::ServiceExt;

const SECRET: &str = "charge-on-success-secret-0123456789";

struct App {
    router: Router,
    method: Arc<TestMethod>,
    calls: Arc<AtomicUsize>,
}

fn app() -> App {
    let method = Arc::new(TestMethod::new("test"));
    let mpp = Mpp::new(SECRET)
        .unwrap()
        .method_arc(method.clone() as Arc<dyn Method>);
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = |status: StatusCode| {
        let calls = calls.clone();
        move || {
            let calls = calls.clone();
            async move {
                calls.fetch_add(1, Ordering::SeqCst);
                (status, "answer")
            }
        }
    };
    let router = Router::new()
        // The idiom the issue is about: a layer on the method router also wraps its 405.
        .route(
            "/fortune",
            get(counted(StatusCode::OK)).layer(charge("0.01")),
        )
        .route(
            "/guarded",
            get(counted(StatusCode::OK)).route_layer(charge("0.01")),
        )
        .route(
            "/failing",
            get(counted(StatusCode::INTERNAL_SERVER_ERROR)).layer(charge("0.01")),
        )
        .route(
            "/failing-first",
            get(counted(StatusCode::INTERNAL_SERVER_ERROR)).layer(charge("0.01").settle_first()),
        )
        .route(
            "/first",
            get(counted(StatusCode::OK)).layer(charge("0.01").settle_first()),
        )
        .route(
            "/panics",
            get(|| async {
                if true {
                    panic!("the handler fails hard");
                }
                "never"
            })
            .layer(charge("0.01")),
        )
        .layer(mpp.layer());
    App {
        router,
        method,
        calls,
    }
}

struct Reply {
    status: StatusCode,
    headers: http::HeaderMap,
    body: String,
}

impl Reply {
    fn problem_type(&self) -> String {
        let problem: Value = serde_json::from_str(&self.body).unwrap();
        problem["type"].as_str().unwrap().to_owned()
    }
    fn challenge(&self) -> Challenge {
        let lines = self
            .headers
            .get_all("www-authenticate")
            .iter()
            .map(|v| v.to_str().unwrap());
        Challenge::parse_all_lines(lines).unwrap().remove(0)
    }
}

async fn send(app: &App, method: HttpMethod, uri: &str, authorization: Option<&str>) -> Reply {
    let mut b = Request::builder()
        .method(method)
        .uri(uri)
        .header("host", "api.example.com");
    if let Some(a) = authorization {
        b = b.header("authorization", a);
    }
    let response = app
        .router
        .clone()
        .oneshot(b.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    Reply {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

/// A credential paying `uri`'s challenge (for `method`) with the test reference `reference`.
async fn paid(app: &App, method: HttpMethod, uri: &str, payload: Value) -> String {
    let reply = send(app, method, uri, None).await;
    assert_eq!(reply.status, StatusCode::PAYMENT_REQUIRED, "{}", reply.body);
    Credential::new(reply.challenge(), payload).to_authorization()
}

#[tokio::test]
async fn a_post_to_a_get_route_is_answered_405_and_takes_no_money() {
    let app = app();
    // The layer wraps the method router's fallback, so the POST is challenged; paying it
    // must not buy a 405.
    let credential = paid(&app, HttpMethod::POST, "/fortune", json!({"pay": "p405"})).await;
    let reply = send(&app, HttpMethod::POST, "/fortune", Some(&credential)).await;
    assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED);
    assert!(reply.headers.get("payment-receipt").is_none());
    assert_eq!(app.method.charges(), 0, "a 405 must take no money");
    assert!(!app.method.served("p405"));
}

#[tokio::test]
async fn route_layer_gives_a_plain_405_without_a_challenge() {
    let app = app();
    let reply = send(&app, HttpMethod::POST, "/guarded", None).await;
    assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED);
    assert!(reply.headers.get("www-authenticate").is_none());
    // GET is still charged.
    assert_eq!(
        send(&app, HttpMethod::GET, "/guarded", None).await.status,
        StatusCode::PAYMENT_REQUIRED
    );
}

#[tokio::test]
async fn a_failing_handler_takes_no_money_and_the_payment_stays_usable() {
    let app = app();
    let credential = paid(&app, HttpMethod::GET, "/failing", json!({"pay": "f1"})).await;
    let reply = send(&app, HttpMethod::GET, "/failing", Some(&credential)).await;
    assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(reply.headers.get("payment-receipt").is_none());
    assert_eq!(app.method.charges(), 0);
    // Held, then released: the same payment pays a request that succeeds, once.
    let credential = paid(&app, HttpMethod::GET, "/fortune", json!({"pay": "f1"})).await;
    let reply = send(&app, HttpMethod::GET, "/fortune", Some(&credential)).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(reply.headers.contains_key("payment-receipt"));
    assert_eq!(app.method.charges(), 1);
    let again = send(&app, HttpMethod::GET, "/fortune", Some(&credential)).await;
    assert_eq!(again.status, StatusCode::PAYMENT_REQUIRED);
    assert_eq!(app.method.charges(), 1);
}

#[tokio::test]
async fn settled_first_then_failed_is_served_again_without_a_second_charge() {
    let app = app();
    let credential = paid(
        &app,
        HttpMethod::GET,
        "/failing-first",
        json!({"pay": "s1"}),
    )
    .await;
    let reply = send(&app, HttpMethod::GET, "/failing-first", Some(&credential)).await;
    assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(reply.headers.get("payment-receipt").is_none());
    assert_eq!(app.method.charges(), 1, "settled before the handler");
    // The same credential again: served (the handler runs again), no second charge.
    let reply = send(&app, HttpMethod::GET, "/failing-first", Some(&credential)).await;
    assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(app.method.charges(), 1);
    assert_eq!(app.calls.load(Ordering::SeqCst), 2);
    assert!(!app.method.served("s1"));
}

#[tokio::test]
async fn settled_first_and_served_is_used_for_good() {
    let app = app();
    let credential = paid(&app, HttpMethod::GET, "/first", json!({"pay": "u1"})).await;
    let reply = send(&app, HttpMethod::GET, "/first", Some(&credential)).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(reply.headers.contains_key("payment-receipt"));
    assert!(app.method.served("u1"));
    let again = send(&app, HttpMethod::GET, "/first", Some(&credential)).await;
    assert_eq!(again.status, StatusCode::PAYMENT_REQUIRED);
    assert_eq!(again.problem_type(), ProblemType::VerificationFailed.uri());
    assert_eq!(app.method.charges(), 1);
}

#[tokio::test]
async fn a_settlement_that_fails_after_the_handler_withholds_the_answer() {
    let app = app();
    // A payer fault found when the money is taken: 402 with a fresh challenge; the
    // handler's answer is not handed over.
    let credential = paid(
        &app,
        HttpMethod::GET,
        "/fortune",
        json!({"pay": "x1", "settle": "the transaction reverted"}),
    )
    .await;
    let reply = send(&app, HttpMethod::GET, "/fortune", Some(&credential)).await;
    assert_eq!(reply.status, StatusCode::PAYMENT_REQUIRED);
    assert_eq!(reply.problem_type(), ProblemType::VerificationFailed.uri());
    assert!(reply.headers.contains_key("www-authenticate"));
    assert!(!reply.body.contains("answer"));
    assert!(reply.headers.get("payment-receipt").is_none());
    // An infrastructure fault then: 503 with Retry-After, still nothing handed over.
    let credential = paid(
        &app,
        HttpMethod::GET,
        "/fortune",
        json!({"pay": "x2", "settle": "down"}),
    )
    .await;
    let reply = send(&app, HttpMethod::GET, "/fortune", Some(&credential)).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(reply.headers.contains_key("retry-after"));
    assert!(!reply.body.contains("answer"));
    assert_eq!(app.method.charges(), 0);
}

#[tokio::test]
async fn a_panicking_handler_takes_no_money() {
    let app = app();
    let credential = paid(&app, HttpMethod::GET, "/panics", json!({"pay": "boom"})).await;
    let router = app.router.clone();
    let request = Request::get("/panics")
        .header("host", "api.example.com")
        .header("authorization", &credential)
        .body(Body::empty())
        .unwrap();
    let joined = tokio::spawn(async move { router.oneshot(request).await }).await;
    assert!(joined.is_err(), "the handler panicked");
    assert_eq!(app.method.charges(), 0);
    // Released when dropped: the payment pays a working route.
    let credential = paid(&app, HttpMethod::GET, "/fortune", json!({"pay": "boom"})).await;
    let reply = send(&app, HttpMethod::GET, "/fortune", Some(&credential)).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(app.method.charges(), 1);
}
