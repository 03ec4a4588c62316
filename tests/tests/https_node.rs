//! The README's app, end to end, against an `https://` node: the method and the payer both
//! reach a real local Tempo node through a TLS proxy with a private CA (added in code), the
//! paying client pays over loopback HTTP, and the tokens move.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use axum::Router;
use axum::routing::get;
use mpp_axum::{Mpp, PaymentReceipt};
use mpp_e2e_tests::{RECIPIENT, path_usd_balance};
use mpp_reqwest::PaymentClient;
use mpp_tempo::client::TempoPayer;
use mpp_tempo::store::SqliteStore;
use mpp_tempo::testing::{AnvilNode, DEV_ACCOUNTS, TlsProxy};
use mpp_tempo::{ChainClient, DEFAULT_RPC_TIMEOUT, Tempo};
use std::sync::Arc;

#[tokio::test]
async fn the_readme_app_is_paid_through_an_https_node() {
    let Some(node) = AnvilNode::start() else {
        return;
    };
    let proxy = TlsProxy::start(node.port()).await.unwrap();
    let db = tempfile::tempdir().unwrap();

    // The README's server, with the node behind https and its CA added in code.
    let tempo = Tempo::builder()
        .rpc_url(proxy.url())
        .root_certificate(proxy.ca_pem())
        .recipient(RECIPIENT)
        .store(Arc::new(
            SqliteStore::open(db.path().join("mpp.db")).await.unwrap(),
        ))
        .build()
        .await
        .unwrap();
    let mpp = Mpp::new("https-e2e-secret-0123456789abcdef-xyz")
        .unwrap()
        .method(tempo);
    let fortune = |paid: PaymentReceipt| async move {
        format!(
            "{} paid by {}",
            paid.amount_display().unwrap_or_default(),
            paid.payer_address().unwrap_or("?")
        )
    };
    let app = Router::new().route(
        "/fortune",
        get(fortune).route_layer(mpp.charge("0.01").unwrap().description("One fortune")),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    // The payer signs against the same https node.
    let chain = ChainClient::with_root_certificates(
        &proxy.url(),
        DEFAULT_RPC_TIMEOUT,
        &[proxy.ca_pem().as_bytes()],
    )
    .unwrap();
    let account = &DEV_ACCOUNTS[6];
    let signer = account
        .private_key
        .trim_start_matches("0x")
        .parse()
        .unwrap();
    let client = PaymentClient::new(
        reqwest::Client::new(),
        TempoPayer::with_chain(signer, chain),
    );

    let before = path_usd_balance(&node.rpc_url(), RECIPIENT).await;
    let paid = client.get(&format!("{base}/fortune")).await.unwrap();
    assert_eq!(paid.response.status(), 200);
    assert!(paid.payment.and_then(|p| p.receipt).is_some());
    let body = paid.response.text().await.unwrap();
    assert!(
        body.eq_ignore_ascii_case(&format!("0.01 paid by {}", account.address)),
        "{body}"
    );
    assert_eq!(
        path_usd_balance(&node.rpc_url(), RECIPIENT).await,
        before + 10_000
    );
}
