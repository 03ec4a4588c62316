//! The official Rust SDK (`mpp` 0.18.2 from crates.io) pays our server, on a real local
//! Tempo node.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use mpp::client::{Fetch as _, TempoProvider};
use mpp_e2e_tests::{RECIPIENT, paid_response, path_usd_balance, start_paid_api};
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
    paid_response(response).await;
    assert_eq!(
        path_usd_balance(&node.rpc_url(), RECIPIENT).await,
        before + 10_000
    );
}
