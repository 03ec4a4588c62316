//! Edges of `Idempotency-Key` on paid routes (what `mpp-axum/src/idempotency.rs` and the
//! README promise): a repeat while the first request is still being served gets `409` and
//! runs nothing; a paid body of known size up to `MAX_STORED_BODY` (1 MiB) is kept for
//! repeats, a larger one is served once and not kept, so its repeat is refused as used (a
//! `402`, never a second charge and never a stored copy). Money is counted by the in-process
//! test method's ledger.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use axum::Router;
use axum::body::Body;
use axum::routing::{get, post};
use http::{Method as HttpMethod, Request, StatusCode};
use http_body_util::BodyExt;
use mpp_axum::{MAX_STORED_BODY, Mpp, charge};
use mpp_core::testing::TestMethod;
use mpp_core::{Challenge, Credential, Method, ProblemType};
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::{Notify, Semaphore};
use tower::ServiceExt;

const SECRET: &str = "idempotency-edges-secret-0123456789ab";
const LIMIT: usize = MAX_STORED_BODY as usize;

struct App {
    router: Router,
    method: Arc<TestMethod>,
    /// Handler runs per route.
    slow_runs: Arc<AtomicUsize>,
    big_runs: Arc<AtomicUsize>,
    /// `/slow` signals when it has started, and waits for a permit to answer.
    started: Arc<Notify>,
    release: Arc<Semaphore>,
    /// `/flaky` answers 500 while set, 201 after.
    failing: Arc<AtomicBool>,
}

fn app() -> App {
    let method = Arc::new(TestMethod::new("test"));
    let mpp = Mpp::new(SECRET)
        .unwrap()
        .method_arc(method.clone() as Arc<dyn Method>);
    let slow_runs = Arc::new(AtomicUsize::new(0));
    let big_runs = Arc::new(AtomicUsize::new(0));
    let started = Arc::new(Notify::new());
    let release = Arc::new(Semaphore::new(0));
    let slow = {
        let (runs, started, release) = (slow_runs.clone(), started.clone(), release.clone());
        move || {
            let (runs, started, release) = (runs.clone(), started.clone(), release.clone());
            async move {
                let n = runs.fetch_add(1, Ordering::SeqCst) + 1;
                started.notify_one();
                release.acquire().await.unwrap().forget();
                (StatusCode::CREATED, format!("order #{n}"))
            }
        }
    };
    // `/big/{size}`: a body of `size` bytes (its size known up front), each run's bytes
    // distinct, so a stored copy is told from a new run.
    let big = {
        let runs = big_runs.clone();
        move |axum::extract::Path(size): axum::extract::Path<usize>| {
            let runs = runs.clone();
            async move {
                let n = runs.fetch_add(1, Ordering::SeqCst) + 1;
                let byte = b'a' + u8::try_from(n % 26).unwrap();
                vec![byte; size]
            }
        }
    };
    let failing = Arc::new(AtomicBool::new(true));
    let flaky = {
        let failing = failing.clone();
        move || {
            let failing = failing.clone();
            async move {
                if failing.load(Ordering::SeqCst) {
                    (StatusCode::INTERNAL_SERVER_ERROR, "failed")
                } else {
                    (StatusCode::CREATED, "done")
                }
            }
        }
    };
    let router = Router::new()
        .route("/slow", post(slow).layer(charge("0.01")))
        .route("/flaky", post(flaky).layer(charge("0.01")))
        .route("/big/{size}", get(big).layer(charge("0.01")))
        .layer(mpp.layer());
    App {
        router,
        method,
        slow_runs,
        big_runs,
        started,
        release,
        failing,
    }
}

struct Reply {
    status: StatusCode,
    headers: http::HeaderMap,
    body: bytes::Bytes,
}

impl Reply {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

async fn send(
    router: Router,
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
    let response = router
        .oneshot(b.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    Reply {
        status,
        headers,
        body,
    }
}

async fn paid(app: &App, method: HttpMethod, uri: &str, payload: Value) -> String {
    let reply = send(app.router.clone(), method, uri, None, None).await;
    assert_eq!(
        reply.status,
        StatusCode::PAYMENT_REQUIRED,
        "{}",
        reply.text()
    );
    let lines = reply
        .headers
        .get_all("www-authenticate")
        .iter()
        .map(|v| v.to_str().unwrap());
    let challenge = Challenge::parse_all_lines(lines).unwrap().remove(0);
    Credential::new(challenge, payload).to_authorization()
}

#[tokio::test]
async fn a_repeat_while_the_first_is_running_is_a_409_and_runs_nothing() {
    let app = app();
    let credential = paid(&app, HttpMethod::POST, "/slow", json!({"pay": "e1"})).await;
    let first = tokio::spawn({
        let (router, credential) = (app.router.clone(), credential.clone());
        async move {
            send(
                router,
                HttpMethod::POST,
                "/slow",
                Some(&credential),
                Some("e1"),
            )
            .await
        }
    });
    // Wait until the first request is inside the handler (paid, not yet answered).
    tokio::time::timeout(Duration::from_secs(5), app.started.notified())
        .await
        .expect("the first request reached the handler");
    for _ in 0..2 {
        let repeat = send(
            app.router.clone(),
            HttpMethod::POST,
            "/slow",
            Some(&credential),
            Some("e1"),
        )
        .await;
        assert_eq!(repeat.status, StatusCode::CONFLICT, "{}", repeat.text());
        assert!(repeat.headers.get("payment-receipt").is_none());
        assert!(
            repeat.text().contains("still being served"),
            "{}",
            repeat.text()
        );
    }
    assert_eq!(
        app.slow_runs.load(Ordering::SeqCst),
        1,
        "the repeat ran nothing"
    );
    assert_eq!(app.method.charges(), 0, "nothing taken before the answer");

    // The first ends: served and charged once; a repeat now gets its stored answer.
    app.release.add_permits(1);
    let first = first.await.unwrap();
    assert_eq!(first.status, StatusCode::CREATED);
    assert_eq!(first.text(), "order #1");
    let receipt = first.headers["payment-receipt"].clone();
    let repeat = send(
        app.router.clone(),
        HttpMethod::POST,
        "/slow",
        Some(&credential),
        Some("e1"),
    )
    .await;
    assert_eq!(repeat.status, StatusCode::CREATED);
    assert_eq!(repeat.text(), "order #1");
    assert_eq!(repeat.headers["payment-receipt"], receipt);
    assert_eq!(app.slow_runs.load(Ordering::SeqCst), 1);
    assert_eq!(app.method.charges(), 1);
}

#[tokio::test]
async fn a_body_of_exactly_the_limit_is_kept_for_repeats() {
    let app = app();
    let uri = format!("/big/{LIMIT}");
    let credential = paid(&app, HttpMethod::GET, &uri, json!({"pay": "e2"})).await;
    let first = send(
        app.router.clone(),
        HttpMethod::GET,
        &uri,
        Some(&credential),
        Some("e2"),
    )
    .await;
    assert_eq!(first.status, StatusCode::OK);
    assert_eq!(first.body.len(), LIMIT);
    assert!(first.headers.contains_key("payment-receipt"));
    let again = send(
        app.router.clone(),
        HttpMethod::GET,
        &uri,
        Some(&credential),
        Some("e2"),
    )
    .await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.text());
    assert_eq!(again.body, first.body, "the stored copy");
    assert_eq!(
        again.headers["payment-receipt"],
        first.headers["payment-receipt"]
    );
    assert_eq!(app.big_runs.load(Ordering::SeqCst), 1);
    assert_eq!(app.method.charges(), 1);
}

#[tokio::test]
async fn a_body_over_the_limit_is_served_once_and_not_kept() {
    let app = app();
    let size = LIMIT + 1;
    let uri = format!("/big/{size}");
    let credential = paid(&app, HttpMethod::GET, &uri, json!({"pay": "e3"})).await;
    let first = send(
        app.router.clone(),
        HttpMethod::GET,
        &uri,
        Some(&credential),
        Some("e3"),
    )
    .await;
    assert_eq!(first.status, StatusCode::OK);
    assert_eq!(first.body.len(), size, "served whole");
    assert!(first.headers.contains_key("payment-receipt"));
    assert_eq!(app.method.charges(), 1);
    // Repeats back to back (nothing else gets to run in between): each is refused as used,
    // none is told the first is "still being served".
    for _ in 0..3 {
        let again = send(
            app.router.clone(),
            HttpMethod::GET,
            &uri,
            Some(&credential),
            Some("e3"),
        )
        .await;
        // Not a stored copy: the used credential's refusal.
        assert_eq!(again.status, StatusCode::PAYMENT_REQUIRED);
        assert!(again.headers.get("payment-receipt").is_none());
        assert!(again.headers.contains_key("www-authenticate"));
        let problem: Value = serde_json::from_slice(&again.body).unwrap();
        assert_eq!(problem["type"], ProblemType::VerificationFailed.uri());
        assert_ne!(again.body, first.body);
    }
    assert_eq!(
        app.big_runs.load(Ordering::SeqCst),
        1,
        "the handler ran once"
    );
    assert_eq!(app.method.charges(), 1, "never charged twice");
}

/// A refused payment under a key ends the request: the client paying again at once, with a
/// new credential under the same key, is served (not told the key belongs to another
/// credential, nor that the first request is still running).
#[tokio::test]
async fn a_refused_payment_frees_its_key_at_once() {
    let app = app();
    app.failing.store(false, Ordering::SeqCst);
    let refused = paid(
        &app,
        HttpMethod::POST,
        "/flaky",
        json!({"fail": "declined"}),
    )
    .await;
    let reply = send(
        app.router.clone(),
        HttpMethod::POST,
        "/flaky",
        Some(&refused),
        Some("e4"),
    )
    .await;
    assert_eq!(
        reply.status,
        StatusCode::PAYMENT_REQUIRED,
        "{}",
        reply.text()
    );
    let good = paid(&app, HttpMethod::POST, "/flaky", json!({"pay": "e4"})).await;
    let reply = send(
        app.router.clone(),
        HttpMethod::POST,
        "/flaky",
        Some(&good),
        Some("e4"),
    )
    .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text());
    assert_eq!(app.method.charges(), 1);
}

/// A paid request the handler failed took no money and is forgotten when its response is
/// sent: the same credential and key sent again at once runs again (not a 409).
#[tokio::test]
async fn a_failed_request_frees_its_key_at_once() {
    let app = app();
    let credential = paid(&app, HttpMethod::POST, "/flaky", json!({"pay": "e5"})).await;
    let reply = send(
        app.router.clone(),
        HttpMethod::POST,
        "/flaky",
        Some(&credential),
        Some("e5"),
    )
    .await;
    assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(app.method.charges(), 0);
    app.failing.store(false, Ordering::SeqCst);
    let reply = send(
        app.router.clone(),
        HttpMethod::POST,
        "/flaky",
        Some(&credential),
        Some("e5"),
    )
    .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text());
    assert_eq!(reply.text(), "done");
    assert!(reply.headers.contains_key("payment-receipt"));
    assert_eq!(app.method.charges(), 1);
}
