//! Support code for the end-to-end tests: the demo's paid API served in-process on loopback,
//! backed by a real local Tempo node and a SQLite file.

use mpp_axum::Mpp;
use mpp_tempo::Tempo;
use mpp_tempo::store::SqliteStore;
use serde_json::{Value, json};
use std::sync::Arc;

/// The recipient of the test API's charges (dev account 5).
pub const RECIPIENT: &str = "0x9965507D1a55bcC2695C58ba16FB37d819B0A4dc";
/// pathUSD.
pub const PATH_USD: &str = "0x20c0000000000000000000000000000000000000";

/// A running paid API; stops with the test runtime.
pub struct TestApi {
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    _db: tempfile::TempDir,
}

/// Serves the examples' paid API (`GET /fortune` at 0.01 pathUSD) against `rpc_url`.
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
    let app = mpp_examples::paid_api(&mpp).expect("router");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    TestApi { base, _db: db }
}

/// The pathUSD balance of `owner`, read with `eth_call`.
pub async fn path_usd_balance(rpc_url: &str, owner: &str) -> u128 {
    let data = format!(
        "0x70a08231{:0>64}",
        owner.trim_start_matches("0x").to_lowercase()
    );
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "eth_call",
        "params": [{"to": PATH_USD, "data": data}, "latest"]});
    let reply: Value = reqwest::Client::new()
        .post(rpc_url)
        .json(&body)
        .send()
        .await
        .expect("rpc")
        .json()
        .await
        .expect("rpc json");
    let hex = reply["result"].as_str().expect("eth_call result");
    u128::from_str_radix(hex.trim_start_matches("0x"), 16).expect("balance")
}
