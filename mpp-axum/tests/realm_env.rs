//! `MPP_REALM`, read by [`Mpp::from_env`] (through [`Mpp::from_vars`], given the variables
//! here so the process environment is left alone): with it set, a challenge issued by one
//! instance under one `Host` verifies on another instance reached under another `Host` (the
//! realm is stable across instances and proxies); without it (unset or empty), the realm is
//! each request's host, so the same credential under another `Host` is refused.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use axum::Router;
use axum::body::Body;
use axum::routing::get;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use mpp_axum::Mpp;
use mpp_core::testing::TestMethod;
use mpp_core::{Challenge, Credential, Method, ProblemType};
use serde_json::{Value, json};
use std::sync::Arc;
use tower::ServiceExt;

const SECRET: &str = "realm-env-secret-0123456789abcdef0123";
const REALM: &str = "payments.example.com";
/// One instance: `GET /fortune` at 0.01, configured from `MPP_SECRET_KEY` and, when given,
/// `MPP_REALM`; all instances share one payment method (as they share one store in
/// production).
fn instance(method: &Arc<TestMethod>, realm: Option<&str>) -> Router {
    let mpp = Mpp::from_vars(|name| match name {
        "MPP_SECRET_KEY" => Some(SECRET.to_owned()),
        "MPP_REALM" => realm.map(str::to_owned),
        _ => None,
    })
    .unwrap()
    .method_arc(method.clone() as Arc<dyn Method>);
    Router::new()
        .route(
            "/fortune",
            get(|| async { "a fortune" }).layer(mpp.charge("0.01").unwrap()),
        )
        .layer(mpp.layer())
}

struct Reply {
    status: StatusCode,
    headers: http::HeaderMap,
    body: String,
}

async fn get_fortune(app: &Router, host: &str, authorization: Option<&str>) -> Reply {
    let mut b = Request::builder().uri("/fortune").header("host", host);
    if let Some(a) = authorization {
        b = b.header("authorization", a);
    }
    let response = app
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

/// The challenge `app` issues to an unpaid request under `host`.
async fn challenge(app: &Router, host: &str) -> Challenge {
    let reply = get_fortune(app, host, None).await;
    assert_eq!(reply.status, StatusCode::PAYMENT_REQUIRED, "{}", reply.body);
    let lines = reply
        .headers
        .get_all("www-authenticate")
        .iter()
        .map(|v| v.to_str().unwrap());
    Challenge::parse_all_lines(lines).unwrap().remove(0)
}

fn pay(challenge: Challenge, reference: &str) -> String {
    Credential::new(challenge, json!({"pay": reference})).to_authorization()
}

#[tokio::test]
async fn with_mpp_realm_a_challenge_verifies_under_another_host() {
    let method = Arc::new(TestMethod::new("test"));
    let (a, b) = (
        instance(&method, Some(REALM)),
        instance(&method, Some(REALM)),
    );

    let issued = challenge(&a, "instance-a.internal:8080").await;
    assert_eq!(issued.realm, REALM, "the configured realm, not the host");
    // Both instances issue the same realm whatever the host.
    assert_eq!(challenge(&b, "api.example.com").await.realm, REALM);

    // Paid on the other instance, under another Host: served.
    let credential = pay(issued, "r1");
    let served = get_fortune(&b, "instance-b.internal:9090", Some(&credential)).await;
    assert_eq!(served.status, StatusCode::OK, "{}", served.body);
    assert_eq!(served.body, "a fortune");
    assert!(served.headers.contains_key("payment-receipt"));
    assert_eq!(method.charges(), 1);
}

/// Without `MPP_REALM` (`None`) or with it empty.
async fn the_host_is_the_realm(realm: Option<&str>) {
    let method = Arc::new(TestMethod::new("test"));
    let (a, b) = (instance(&method, realm), instance(&method, realm));

    let issued = challenge(&a, "instance-a.example.com").await;
    assert_eq!(issued.realm, "instance-a.example.com", "the request's host");
    assert_eq!(
        challenge(&b, "instance-b.example.com").await.realm,
        "instance-b.example.com"
    );

    // Under another Host the realm differs: refused, nothing served or taken.
    let credential = pay(issued, "r2");
    let refused = get_fortune(&b, "instance-b.example.com", Some(&credential)).await;
    assert_eq!(
        refused.status,
        StatusCode::PAYMENT_REQUIRED,
        "{}",
        refused.body
    );
    assert!(refused.headers.get("payment-receipt").is_none());
    let problem: Value = serde_json::from_str(&refused.body).unwrap();
    assert_eq!(
        problem["type"],
        ProblemType::InvalidChallenge.uri(),
        "{problem}"
    );
    assert_eq!(method.charges(), 0);

    // Under the host it was issued for, the other instance serves it.
    let served = get_fortune(&b, "instance-a.example.com", Some(&credential)).await;
    assert_eq!(served.status, StatusCode::OK, "{}", served.body);
    assert_eq!(method.charges(), 1);
}

#[tokio::test]
async fn without_mpp_realm_the_host_is_the_realm() {
    the_host_is_the_realm(None).await;
}

#[tokio::test]
async fn an_empty_mpp_realm_counts_as_unset() {
    the_host_is_the_realm(Some("")).await;
}
