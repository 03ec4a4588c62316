//! Support code for the end-to-end tests: a paid API served in-process on loopback (the
//! `paid-api` example's `GET /fortune`, written again here so the tests stand apart from the
//! examples), backed by a real local Tempo node and a SQLite file.

// Test support: a failed setup step is a failed test.
#![allow(clippy::expect_used, clippy::panic)]

use axum::Router;
use axum::routing::get;
use mpp_axum::{Mpp, PaymentReceipt};
use mpp_core::Receipt;
use mpp_tempo::Tempo;
use mpp_tempo::store::SqliteStore;
use std::sync::Arc;

/// The recipient of the test API's charges (dev account 5).
pub const RECIPIENT: &str = "0x9965507D1a55bcC2695C58ba16FB37d819B0A4dc";

/// A running paid API; stops with the test runtime.
pub struct TestApi {
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    _db: tempfile::TempDir,
}

/// The Tempo method against `rpc_url`, paying [`RECIPIENT`], with its replay keys in a SQLite
/// file of a fresh temporary directory (kept by the returned [`TestApi`]).
async fn tempo_method(rpc_url: &str) -> (Tempo, tempfile::TempDir) {
    let db = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open(db.path().join("replay.db"))
        .await
        .expect("sqlite store");
    let tempo = Tempo::builder()
        .rpc_url(rpc_url)
        .recipient(RECIPIENT)
        .store(Arc::new(store))
        .build()
        .await
        .expect("tempo method");
    (tempo, db)
}

/// Serves `app` on a free loopback port for the rest of the test runtime.
async fn serve(app: Router, db: tempfile::TempDir) -> TestApi {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    TestApi { base, _db: db }
}

/// Serves `GET /fortune` at 0.01 pathUSD (answering `{"tx": <receipt reference>}`) and a free
/// `GET /health`, against `rpc_url`.
pub async fn start_paid_api(rpc_url: &str) -> TestApi {
    let (tempo, db) = tempo_method(rpc_url).await;
    let mpp = Mpp::new("e2e-interop-secret-0123456789abcdef")
        .expect("secret")
        .method(tempo);
    let app = Router::new()
        .route(
            "/fortune",
            get(|paid: PaymentReceipt| async move {
                axum::Json(serde_json::json!({"tx": paid.reference()}))
            })
            .layer(
                mpp.charge("0.01")
                    .expect("price")
                    .description("One fortune"),
            ),
        )
        .route("/health", get(|| async { "ok" }))
        .layer(mpp.layer());
    serve(app, db).await
}

/// Checks that `response` is a paid 200 from one of these APIs (a Tempo `Payment-Receipt`,
/// `Cache-Control: private`, a body naming the receipt's transaction) and returns the receipt
/// and the body.
pub async fn paid_response(response: reqwest::Response) -> (Receipt, serde_json::Value) {
    let status = response.status();
    if status != 200 {
        let headers = format!("{:?}", response.headers());
        panic!(
            "{status} {headers} {}",
            response.text().await.unwrap_or_default()
        );
    }
    let receipt = response
        .headers()
        .get("payment-receipt")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| Receipt::from_header_value(v).ok())
        .expect("a Payment-Receipt");
    assert_eq!(receipt.method, "tempo");
    assert_eq!(response.headers()["cache-control"], "private");
    let body: serde_json::Value = response.json().await.expect("a JSON body");
    assert_eq!(body["tx"], receipt.reference.as_str());
    (receipt, body)
}

/// The pathUSD balance of `owner`, in base units.
pub async fn path_usd_balance(rpc_url: &str, owner: &str) -> u128 {
    let owner = owner.parse().expect("address");
    mpp_tempo::testing::token_balance(rpc_url, mpp_tempo::testing::tokens::PATH_USD, owner)
        .await
        .expect("balance")
        .to::<u128>()
}

/// The Bearer token [`start_bearer_paid_api`] requires.
pub const BEARER_TOKEN: &str = "e2e-bearer-token";

/// Serves `GET /report` at 0.01 pathUSD behind the API's own `Authorization: Bearer
/// <BEARER_TOKEN>` check (401 without it), with the payment taken in `Payment-Authorization`
/// (answering `{"tx": <receipt reference>, "payer": <address>}`), against `rpc_url`.
pub async fn start_bearer_paid_api(rpc_url: &str) -> TestApi {
    use axum::http::StatusCode;
    use axum::response::IntoResponse;

    async fn require_bearer(
        req: axum::extract::Request,
        next: axum::middleware::Next,
    ) -> axum::response::Response {
        let expected = format!("Bearer {BEARER_TOKEN}");
        let authorized = req
            .headers()
            .get(axum::http::header::AUTHORIZATION)
            .is_some_and(|v| v.as_bytes() == expected.as_bytes());
        if authorized {
            next.run(req).await
        } else {
            StatusCode::UNAUTHORIZED.into_response()
        }
    }

    let (tempo, db) = tempo_method(rpc_url).await;
    let mpp = Mpp::new("e2e-bearer-secret-0123456789abcdef")
        .expect("secret")
        .method(tempo);
    let app = Router::new().route(
        "/report",
        get(|paid: PaymentReceipt| async move {
            axum::Json(serde_json::json!({
                "tx": paid.reference(),
                "payer": paid.payer_address(),
            }))
        })
        .route_layer(
            mpp.charge("0.01")
                .expect("price")
                .description("One report")
                .credential_header(mpp_axum::CredentialHeader::PaymentAuthorization),
        )
        // Outside the payment: a request without the token never reaches it.
        .route_layer(axum::middleware::from_fn(require_bearer)),
    );
    serve(app, db).await
}

/// The README's code, compiled as a doctest so the first thing a newcomer copies builds.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;
