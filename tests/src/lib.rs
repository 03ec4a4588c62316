//! Support code for the end-to-end tests: a paid API served in-process on loopback (the
//! `paid-api` example's `GET /fortune`, written again here so the tests stand apart from the
//! examples), backed by a real local Tempo node and a SQLite file.

// Test support: a failed setup step is a failed test.
#![allow(clippy::expect_used)]

use axum::Router;
use axum::routing::get;
use mpp_axum::{Mpp, PaymentReceipt};
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

/// Serves `GET /fortune` at 0.01 pathUSD (answering `{"tx": <receipt reference>}`) and a free
/// `GET /health`, against `rpc_url`.
pub async fn start_paid_api(rpc_url: &str) -> TestApi {
    let db = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open(db.path().join("replay.db"))
        .await
        .expect("sqlite store");
    let tempo = Tempo::builder()
        .rpc_url(rpc_url)
        .recipient(RECIPIENT.parse().expect("address"))
        .store(Arc::new(store))
        .build()
        .await
        .expect("tempo method");
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
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    TestApi { base, _db: db }
}

/// The pathUSD balance of `owner`, in base units.
pub async fn path_usd_balance(rpc_url: &str, owner: &str) -> u128 {
    let owner = owner.parse().expect("address");
    mpp_tempo::testing::token_balance(rpc_url, mpp_tempo::testing::tokens::PATH_USD, owner)
        .await
        .expect("balance")
        .to::<u128>()
}
