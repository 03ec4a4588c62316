//! The official Rust SDK (`mpp` 0.18.2 from crates.io) pays our server, on a real local
//! Tempo node.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use mpp::client::{Fetch as _, TempoProvider};
use mpp_core::Receipt;
use mpp_e2e_tests::{RECIPIENT, path_usd_balance, start_paid_api};
use mpp_tempo::testing::{AnvilNode, DEV_ACCOUNTS};
use std::time::Instant;

#[tokio::test]
async fn the_mpp_crate_pays_our_charge() {
    let Some(node) = AnvilNode::start() else {
        return;
    };
    let api = start_paid_api(&node.rpc_url()).await;
    let signer: alloy::signers::local::PrivateKeySigner = DEV_ACCOUNTS[6]
        .private_key
        .trim_start_matches("0x")
        .parse()
        .unwrap();
    let provider = TempoProvider::new(signer, node.rpc_url()).unwrap();

    let before = path_usd_balance(&node.rpc_url(), RECIPIENT).await;
    let started = Instant::now();
    let response = reqwest::Client::new()
        .get(format!("{}/fortune", api.base))
        // The mpp client pays automatically only when the request opts in.
        .header("accept-payment", "tempo/charge")
        .send_with_payment(&provider)
        .await
        .unwrap();
    eprintln!("mpp crate payment: {:?}", started.elapsed());
    let status = response.status();
    if status != 200 {
        let headers = format!("{:?}", response.headers());
        panic!("{status} {headers} {}", response.text().await.unwrap());
    }
    let receipt =
        Receipt::from_header_value(response.headers()["payment-receipt"].to_str().unwrap())
            .unwrap();
    assert_eq!(receipt.method, "tempo");
    assert_eq!(response.headers()["cache-control"], "private");
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["tx"], receipt.reference.as_str());
    assert_eq!(
        path_usd_balance(&node.rpc_url(), RECIPIENT).await,
        before + 10_000
    );
}
