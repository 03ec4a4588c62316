//! Charge on success with the real Tempo method, on a local node, through axum on loopback:
//! a pull credential whose request the handler fails is never broadcast (no balance moves)
//! and the same credential then pays once when the handler succeeds; a paid `POST` to a `GET`
//! route buys only a `405`; a pushed hash whose request failed stays redeemable once.
//!
//! Each test skips (with a message) when the node binary is not installed, unless `CI` is set.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use mpp_axum::{Mpp, PaymentReceipt};
use mpp_core::{Challenge, Receipt};
use mpp_e2e_tests::{RECIPIENT, path_usd_balance};
use mpp_tempo::client::{PaymentCredential, TempoPayer, TxOptions};
use mpp_tempo::store::SqliteStore;
use mpp_tempo::testing::{AnvilNode, DEV_ACCOUNTS};
use mpp_tempo::{B256, ChainClient, Tempo};

const SECRET: &str = "e2e-charge-on-success-secret-0123456789";
/// 0.01 pathUSD.
const PRICE: u128 = 10_000;

/// An API on loopback whose one paid route, `GET /item` at 0.01, answers `status_when_failing`
/// while `failing` is set and `200 {"tx": <reference>}` after.
struct Api {
    node: AnvilNode,
    base: String,
    failing: Arc<AtomicBool>,
    runs: Arc<AtomicUsize>,
    http: reqwest::Client,
    _db: tempfile::TempDir,
}

impl Api {
    async fn start(status_when_failing: StatusCode) -> Option<Self> {
        let node = AnvilNode::start()?;
        let db = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(db.path().join("replay.db"))
            .await
            .unwrap();
        let tempo = Tempo::builder()
            .rpc_url(node.rpc_url())
            .recipient(RECIPIENT)
            .store(Arc::new(store))
            .build()
            .await
            .unwrap();
        let mpp = Mpp::new(SECRET).unwrap().method(tempo);
        let failing = Arc::new(AtomicBool::new(true));
        let runs = Arc::new(AtomicUsize::new(0));
        let handler = {
            let (failing, runs) = (failing.clone(), runs.clone());
            move |paid: PaymentReceipt| {
                let (failing, runs) = (failing.clone(), runs.clone());
                async move {
                    runs.fetch_add(1, Ordering::SeqCst);
                    if failing.load(Ordering::SeqCst) {
                        (
                            status_when_failing,
                            axum::Json(serde_json::json!({"tx": null})),
                        )
                    } else {
                        (
                            StatusCode::OK,
                            axum::Json(serde_json::json!({"tx": paid.reference()})),
                        )
                    }
                }
            }
        };
        let app = Router::new().route(
            "/item",
            get(handler).layer(mpp.charge("0.01").unwrap().description("One item")),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Some(Self {
            node,
            base,
            failing,
            runs,
            http: reqwest::Client::new(),
            _db: db,
        })
    }

    fn url(&self) -> String {
        format!("{}/item", self.base)
    }

    fn payer(&self, account: usize) -> TempoPayer {
        TempoPayer::new(
            DEV_ACCOUNTS[account].private_key.parse().unwrap(),
            &self.node.rpc_url(),
        )
        .unwrap()
    }

    /// The Tempo challenge of an unpaid `method` request to the route.
    async fn challenge(&self, method: reqwest::Method) -> Challenge {
        let response = self.http.request(method, self.url()).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::PAYMENT_REQUIRED);
        let lines = response
            .headers()
            .get_all("www-authenticate")
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect::<Vec<_>>();
        Challenge::parse_all_lines(lines.iter().map(String::as_str))
            .unwrap()
            .into_iter()
            .find(|c| c.method == "tempo" && c.intent == "charge")
            .expect("a tempo charge challenge")
    }

    async fn send(&self, method: reqwest::Method, authorization: &str) -> reqwest::Response {
        self.http
            .request(method, self.url())
            .header("authorization", authorization)
            .send()
            .await
            .unwrap()
    }

    async fn balances(&self, payer: usize) -> (u128, u128) {
        let rpc = self.node.rpc_url();
        (
            path_usd_balance(&rpc, &DEV_ACCOUNTS[payer].address.to_string()).await,
            path_usd_balance(&rpc, RECIPIENT).await,
        )
    }

    /// Whether the node knows a mined transaction `hash`.
    async fn mined(&self, hash: B256) -> bool {
        let chain = ChainClient::new(&self.node.rpc_url(), Duration::from_secs(5)).unwrap();
        chain.receipt(hash).await.unwrap().is_some()
    }
}

fn authorization(credential: PaymentCredential, challenge: &Challenge) -> String {
    credential.into_credential(challenge).to_authorization()
}

fn receipt_of(response: &reqwest::Response) -> Receipt {
    let value = response
        .headers()
        .get("payment-receipt")
        .expect("a Payment-Receipt")
        .to_str()
        .unwrap();
    Receipt::from_header_value(value).unwrap()
}

/// Waits a block or two: anything broadcast would be mined by then (1 s blocks).
async fn let_blocks_pass() {
    tokio::time::sleep(Duration::from_millis(2_500)).await;
}

#[tokio::test]
async fn a_pull_for_a_failed_request_is_never_sent_and_the_credential_then_pays_once() {
    let Some(api) = Api::start(StatusCode::NOT_FOUND).await else {
        return;
    };
    let payer = 6;
    let challenge = api.challenge(reqwest::Method::GET).await;
    let credential = api
        .payer(payer)
        .pull(&challenge, &TxOptions::default())
        .await
        .unwrap();
    let tx = credential
        .tx_hash
        .expect("an unsponsored pull has its hash");
    let authorization = authorization(credential, &challenge);
    let before = api.balances(payer).await;

    // The handler answers 404: no money, no receipt, nothing on chain.
    let failed = api.send(reqwest::Method::GET, &authorization).await;
    assert_eq!(failed.status(), StatusCode::NOT_FOUND);
    assert!(failed.headers().get("payment-receipt").is_none());
    assert_eq!(api.runs.load(Ordering::SeqCst), 1, "the handler ran");
    let_blocks_pass().await;
    assert_eq!(api.balances(payer).await, before, "nothing was charged");
    assert!(!api.mined(tx).await, "the transaction was never broadcast");

    // The same credential once the handler succeeds: 200, charged once, by this transaction.
    api.failing.store(false, Ordering::SeqCst);
    let paid = api.send(reqwest::Method::GET, &authorization).await;
    assert_eq!(paid.status(), StatusCode::OK);
    let receipt = receipt_of(&paid);
    assert_eq!(receipt.method, "tempo");
    assert_eq!(receipt.reference, format!("{tx:#x}"));
    let body: serde_json::Value = paid.json().await.unwrap();
    assert_eq!(body["tx"], receipt.reference.as_str());
    assert!(api.mined(tx).await);
    let (payer_after, recipient_after) = api.balances(payer).await;
    assert_eq!(
        recipient_after,
        before.1 + PRICE,
        "the recipient got the price once"
    );
    assert!(payer_after <= before.0 - PRICE, "the payer paid the price");

    // Once more: used, refused, no second charge.
    let again = api.send(reqwest::Method::GET, &authorization).await;
    assert_eq!(again.status(), StatusCode::PAYMENT_REQUIRED);
    assert!(again.headers().contains_key("www-authenticate"));
    assert!(again.headers().get("payment-receipt").is_none());
    assert_eq!(api.balances(payer).await.1, before.1 + PRICE);
    assert_eq!(
        api.runs.load(Ordering::SeqCst),
        2,
        "the refusal never ran it"
    );
}

#[tokio::test]
async fn a_paid_post_to_the_get_route_is_a_405_and_moves_no_money() {
    let Some(api) = Api::start(StatusCode::NOT_FOUND).await else {
        return;
    };
    api.failing.store(false, Ordering::SeqCst);
    let payer = 7;
    // `.layer(..)` on the method router also wraps its 405 fallback, so the POST is
    // challenged; paying that challenge must not buy the 405.
    let challenge = api.challenge(reqwest::Method::POST).await;
    let credential = api
        .payer(payer)
        .pull(&challenge, &TxOptions::default())
        .await
        .unwrap();
    let tx = credential.tx_hash.unwrap();
    let authorization = authorization(credential, &challenge);
    let before = api.balances(payer).await;

    let response = api.send(reqwest::Method::POST, &authorization).await;
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert!(response.headers().get("payment-receipt").is_none());
    assert_eq!(api.runs.load(Ordering::SeqCst), 0);
    let_blocks_pass().await;
    assert_eq!(api.balances(payer).await, before, "a 405 takes no money");
    assert!(!api.mined(tx).await, "the transaction was never broadcast");
}

#[tokio::test]
async fn a_pushed_hash_for_a_failed_request_stays_redeemable_once() {
    let Some(api) = Api::start(StatusCode::INTERNAL_SERVER_ERROR).await else {
        return;
    };
    let payer = 8;
    let challenge = api.challenge(reqwest::Method::GET).await;
    let (_, recipient_before) = api.balances(payer).await;
    // The payer sends the transfer itself, then presents its hash.
    let credential = api
        .payer(payer)
        .push(&challenge, &TxOptions::default())
        .await
        .unwrap();
    let tx = credential.tx_hash.unwrap();
    assert_eq!(credential.payload["type"], "hash");
    let authorization = authorization(credential, &challenge);
    assert_eq!(
        api.balances(payer).await.1,
        recipient_before + PRICE,
        "the push paid on chain"
    );
    let paid_on_chain = api.balances(payer).await;

    let failed = api.send(reqwest::Method::GET, &authorization).await;
    assert_eq!(failed.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert!(failed.headers().get("payment-receipt").is_none());
    assert_eq!(api.balances(payer).await, paid_on_chain);

    // Still redeemable: the same credential is served once the handler succeeds.
    api.failing.store(false, Ordering::SeqCst);
    let served = api.send(reqwest::Method::GET, &authorization).await;
    assert_eq!(served.status(), StatusCode::OK);
    let receipt = receipt_of(&served);
    assert_eq!(receipt.reference, format!("{tx:#x}"));
    let body: serde_json::Value = served.json().await.unwrap();
    assert_eq!(body["tx"], receipt.reference.as_str());

    // And only once.
    let again = api.send(reqwest::Method::GET, &authorization).await;
    assert_eq!(again.status(), StatusCode::PAYMENT_REQUIRED);
    assert!(again.headers().get("payment-receipt").is_none());
    let problem: serde_json::Value = again.json().await.unwrap();
    assert_eq!(
        problem["type"],
        mpp_core::ProblemType::VerificationFailed.uri(),
        "{problem}"
    );
    assert_eq!(
        api.balances(payer).await,
        paid_on_chain,
        "never charged twice"
    );
    assert_eq!(api.runs.load(Ordering::SeqCst), 2);
}
