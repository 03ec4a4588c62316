//! `Idempotency-Key` on paid routes: the same key and credential get the stored response and
//! the handler does not run again; another credential under the key is refused (422); a
//! request that took no money is forgotten, so its retry runs again. Money is counted by the
//! in-process test method's ledger; the shared-store case runs on SQLite.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use axum::Router;
use axum::body::Body;
use axum::routing::{get, post};
use http::{Method as HttpMethod, Request, StatusCode};
use http_body_util::BodyExt;
use mpp_axum::{Mpp, charge};
use mpp_core::idempotency::IdempotencyStore;
use mpp_core::testing::TestMethod;
use mpp_core::{Challenge, Credential, Method};
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tower::ServiceExt;

const SECRET: &str = "idempotency-key-secret-0123456789ab";

struct App {
    router: Router,
    method: Arc<TestMethod>,
    calls: Arc<AtomicUsize>,
}

fn app_with(mpp: Mpp, method: Arc<TestMethod>) -> App {
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = |status: StatusCode| {
        let calls = calls.clone();
        move || {
            let calls = calls.clone();
            async move {
                // Each run has a side effect the key must not repeat, and a distinct answer.
                let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
                (status, [("x-run", n.to_string())], format!("order #{n}"))
            }
        }
    };
    let router = Router::new()
        .route(
            "/order",
            post(counted(StatusCode::CREATED)).layer(charge("0.01")),
        )
        .route(
            "/failing",
            post(counted(StatusCode::INTERNAL_SERVER_ERROR)).layer(charge("0.01")),
        )
        .route(
            "/stream",
            get(|| async {
                let chunks = futures_util::stream::iter(
                    ["a", "b"].map(|c| Ok::<_, std::io::Error>(bytes::Bytes::from(c))),
                );
                Body::from_stream(chunks)
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

fn app() -> App {
    let method = Arc::new(TestMethod::new("test"));
    let mpp = Mpp::new(SECRET)
        .unwrap()
        .method_arc(method.clone() as Arc<dyn Method>);
    app_with(mpp, method)
}

struct Reply {
    status: StatusCode,
    headers: http::HeaderMap,
    body: String,
}

async fn send(
    app: &App,
    method: HttpMethod,
    uri: &str,
    authorization: Option<&str>,
    key: Option<&str>,
) -> Reply {
    let mut b = Request::builder()
        .method(method)
        .uri(uri)
        .header("host", "api.example.com");
    if let Some(a) = authorization {
        b = b.header("authorization", a);
    }
    if let Some(k) = key {
        b = b.header("idempotency-key", k);
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

async fn paid(app: &App, method: HttpMethod, uri: &str, payload: Value) -> String {
    let reply = send(app, method, uri, None, None).await;
    assert_eq!(reply.status, StatusCode::PAYMENT_REQUIRED, "{}", reply.body);
    let lines = reply
        .headers
        .get_all("www-authenticate")
        .iter()
        .map(|v| v.to_str().unwrap());
    let challenge = Challenge::parse_all_lines(lines).unwrap().remove(0);
    Credential::new(challenge, payload).to_authorization()
}

#[tokio::test]
async fn a_repeat_gets_the_stored_response_and_the_handler_does_not_run_again() {
    let app = app();
    let credential = paid(&app, HttpMethod::POST, "/order", json!({"pay": "i1"})).await;
    let first = send(
        &app,
        HttpMethod::POST,
        "/order",
        Some(&credential),
        Some("k1"),
    )
    .await;
    assert_eq!(first.status, StatusCode::CREATED);
    assert_eq!(first.body, "order #1");
    let receipt = first.headers["payment-receipt"].clone();
    for _ in 0..3 {
        let again = send(
            &app,
            HttpMethod::POST,
            "/order",
            Some(&credential),
            Some("k1"),
        )
        .await;
        assert_eq!(again.status, StatusCode::CREATED);
        assert_eq!(again.body, "order #1", "the stored response");
        assert_eq!(again.headers["x-run"], "1");
        assert_eq!(again.headers["payment-receipt"], receipt);
    }
    assert_eq!(app.calls.load(Ordering::SeqCst), 1, "side effects ran once");
    assert_eq!(app.method.charges(), 1, "charged once");
    // Without the key, the used credential is refused as before.
    let without = send(&app, HttpMethod::POST, "/order", Some(&credential), None).await;
    assert_eq!(without.status, StatusCode::PAYMENT_REQUIRED);
    assert_eq!(app.method.charges(), 1);
}

#[tokio::test]
async fn the_key_with_another_credential_is_refused() {
    let app = app();
    let first = paid(&app, HttpMethod::POST, "/order", json!({"pay": "i2"})).await;
    let reply = send(&app, HttpMethod::POST, "/order", Some(&first), Some("k2")).await;
    assert_eq!(reply.status, StatusCode::CREATED);
    let other = paid(&app, HttpMethod::POST, "/order", json!({"pay": "i3"})).await;
    let reply = send(&app, HttpMethod::POST, "/order", Some(&other), Some("k2")).await;
    assert_eq!(
        reply.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        reply.body
    );
    assert!(
        reply.body.contains("another payment credential"),
        "{}",
        reply.body
    );
    assert_eq!(app.method.charges(), 1);
    assert_eq!(app.calls.load(Ordering::SeqCst), 1);
    // The same key on another route is another record.
    let elsewhere = paid(&app, HttpMethod::POST, "/failing", json!({"pay": "i4"})).await;
    let reply = send(
        &app,
        HttpMethod::POST,
        "/failing",
        Some(&elsewhere),
        Some("k2"),
    )
    .await;
    assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
}

#[tokio::test]
async fn a_request_that_took_no_money_is_forgotten_and_runs_again() {
    let app = app();
    let credential = paid(&app, HttpMethod::POST, "/failing", json!({"pay": "i5"})).await;
    for run in 1..=2 {
        let reply = send(
            &app,
            HttpMethod::POST,
            "/failing",
            Some(&credential),
            Some("k5"),
        )
        .await;
        assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(reply.body, format!("order #{run}"), "not a stored answer");
        // The record is forgotten in the background when the request ends unpaid.
        tokio::task::yield_now().await;
    }
    assert_eq!(app.method.charges(), 0);
}

#[tokio::test]
async fn a_streamed_response_is_served_once_and_not_kept() {
    let app = app();
    let credential = paid(&app, HttpMethod::GET, "/stream", json!({"pay": "i6"})).await;
    let reply = send(
        &app,
        HttpMethod::GET,
        "/stream",
        Some(&credential),
        Some("k6"),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body, "ab");
    assert!(reply.headers.contains_key("payment-receipt"));
    // Not kept: the repeat is the used credential's refusal, never a second charge.
    tokio::task::yield_now().await;
    let again = send(
        &app,
        HttpMethod::GET,
        "/stream",
        Some(&credential),
        Some("k6"),
    )
    .await;
    assert_eq!(again.status, StatusCode::PAYMENT_REQUIRED);
    assert_eq!(app.method.charges(), 1);
}

#[tokio::test]
async fn an_oversized_key_is_a_bad_request() {
    let app = app();
    let credential = paid(&app, HttpMethod::POST, "/order", json!({"pay": "i7"})).await;
    let key = "k".repeat(256);
    let reply = send(
        &app,
        HttpMethod::POST,
        "/order",
        Some(&credential),
        Some(&key),
    )
    .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(app.method.charges(), 0);
}

/// Two instances sharing one SQLite file: a repeat that lands on the other instance gets
/// the stored response too.
#[tokio::test]
async fn a_shared_store_answers_repeats_on_every_instance() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let method = Arc::new(TestMethod::new("test"));
    let instance = |store: mpp_tempo::store::SqliteStore| {
        let mpp = Mpp::new(SECRET)
            .unwrap()
            .method_arc(method.clone() as Arc<dyn Method>)
            .idempotency_store(store);
        app_with(mpp, method.clone())
    };
    let a = instance(mpp_tempo::store::SqliteStore::open(&path).await.unwrap());
    let b = instance(mpp_tempo::store::SqliteStore::open(&path).await.unwrap());
    let credential = paid(&a, HttpMethod::POST, "/order", json!({"pay": "i8"})).await;
    let first = send(
        &a,
        HttpMethod::POST,
        "/order",
        Some(&credential),
        Some("k8"),
    )
    .await;
    assert_eq!(first.status, StatusCode::CREATED);
    let again = send(
        &b,
        HttpMethod::POST,
        "/order",
        Some(&credential),
        Some("k8"),
    )
    .await;
    assert_eq!(again.status, StatusCode::CREATED, "{}", again.body);
    assert_eq!(again.body, first.body);
    assert_eq!(
        again.headers["payment-receipt"],
        first.headers["payment-receipt"]
    );
    assert_eq!(
        a.calls.load(Ordering::SeqCst) + b.calls.load(Ordering::SeqCst),
        1
    );
    assert_eq!(method.charges(), 1);
}

/// The store's own contract, on SQLite: begin, in flight, complete, replay, abandon.
#[tokio::test]
async fn sqlite_idempotency_records_move_atomically() {
    use mpp_core::idempotency::{Begin, StoredResponse};
    use time::{Duration, OffsetDateTime};
    let store = mpp_tempo::store::SqliteStore::in_memory().await.unwrap();
    let until = OffsetDateTime::now_utc() + Duration::minutes(5);
    assert_eq!(
        store.begin("k", "c", "o1", until).await.unwrap(),
        Begin::Started
    );
    assert_eq!(
        store.begin("k", "c", "o2", until).await.unwrap(),
        Begin::InFlight
    );
    assert_eq!(
        store.begin("k", "other", "o2", until).await.unwrap(),
        Begin::OtherCredential
    );
    assert!(!store.abandon("k", "o2").await.unwrap(), "not o2's");
    let response = StoredResponse {
        status: 201,
        headers: vec![("x-a".into(), b"1".to_vec())],
        body: b"done".to_vec(),
    };
    assert!(store.complete("k", "o1", &response, until).await.unwrap());
    assert!(
        !store.complete("k", "o1", &response, until).await.unwrap(),
        "once"
    );
    assert!(
        !store.abandon("k", "o1").await.unwrap(),
        "a served record stays"
    );
    assert_eq!(
        store.begin("k", "c", "o3", until).await.unwrap(),
        Begin::Replay(response)
    );
    // Abandoned: the key starts afresh.
    assert_eq!(
        store.begin("j", "c", "o1", until).await.unwrap(),
        Begin::Started
    );
    assert!(store.abandon("j", "o1").await.unwrap());
    assert_eq!(
        store.begin("j", "c", "o2", until).await.unwrap(),
        Begin::Started
    );
    // An expired record is taken over.
    let past = OffsetDateTime::now_utc() - Duration::seconds(1);
    assert_eq!(
        store.begin("e", "c", "o1", past).await.unwrap(),
        Begin::Started
    );
    assert_eq!(
        store.begin("e", "d", "o2", until).await.unwrap(),
        Begin::Started
    );
}
