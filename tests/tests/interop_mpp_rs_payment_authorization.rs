//! The official Rust SDK (`mpp` 0.18.2 from crates.io) pays a route of ours whose
//! `Authorization` is the API's own (`Bearer`), with the credential in `Payment-Authorization`
//! (draft -01), on a real local Tempo node.
//!
//! In `mpp` 0.18.2 only `mpp::client::ChargeClient` answers such challenges: it owns its
//! reqwest client and turns redirects off, so the credential cannot follow a redirect. The
//! `send_with_payment` extension on a caller's reqwest client refuses them
//! (`HttpError::UnsafeCredentialHeader`) before paying; that is checked here too.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use mpp::client::{ChargeClient, Fetch as _, HttpError, TempoProvider};
use mpp_core::Challenge;
use mpp_e2e_tests::{
    BEARER_TOKEN, RECIPIENT, paid_response, path_usd_balance, start_bearer_paid_api,
};
use mpp_tempo::testing::{AnvilNode, DEV_ACCOUNTS};

const PAYER: usize = 7;

fn provider(node: &AnvilNode) -> TempoProvider {
    let signer: alloy::signers::local::PrivateKeySigner = DEV_ACCOUNTS[PAYER]
        .private_key
        .trim_start_matches("0x")
        .parse()
        .unwrap();
    TempoProvider::new(signer, node.rpc_url()).unwrap()
}

#[tokio::test]
async fn the_mpp_charge_client_pays_in_payment_authorization_beside_a_bearer_token() {
    let Some(node) = AnvilNode::start() else {
        return;
    };
    let api = start_bearer_paid_api(&node.rpc_url()).await;
    let url = format!("{}/report", api.base);
    let provider = provider(&node);
    let client = ChargeClient::new(reqwest::Client::builder()).unwrap();

    // Without the API's own token: its 401, and no payment is asked for.
    let response = reqwest::get(&url).await.unwrap();
    assert_eq!(response.status(), 401);
    assert!(response.headers().get("www-authenticate").is_none());

    // With it: a 402 whose challenge names `Payment-Authorization`.
    let response = reqwest::Client::new()
        .get(&url)
        .bearer_auth(BEARER_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 402);
    let www_authenticate = response.headers()["www-authenticate"].to_str().unwrap();
    let challenge = Challenge::parse_all(www_authenticate).unwrap().remove(0);
    assert_eq!(challenge.header.as_deref(), Some("Payment-Authorization"));

    // The charge client pays and sends the credential beside the Bearer token.
    let before = path_usd_balance(&node.rpc_url(), RECIPIENT).await;
    let response = client
        .send_with_payment(
            client
                .request(reqwest::Method::GET, &url)
                .bearer_auth(BEARER_TOKEN)
                // The mpp client pays automatically only when the request opts in.
                .header("accept-payment", "tempo/charge"),
            &provider,
        )
        .await
        .unwrap();
    let (_, body) = paid_response(response).await;
    let payer: alloy::primitives::Address = body["payer"].as_str().unwrap().parse().unwrap();
    assert_eq!(payer, DEV_ACCOUNTS[PAYER].address);
    assert_eq!(
        path_usd_balance(&node.rpc_url(), RECIPIENT).await,
        before + 10_000
    );
}

#[tokio::test]
async fn the_mpp_fetch_extension_refuses_payment_authorization_before_paying() {
    let Some(node) = AnvilNode::start() else {
        return;
    };
    let api = start_bearer_paid_api(&node.rpc_url()).await;
    let before = path_usd_balance(&node.rpc_url(), RECIPIENT).await;
    let result = reqwest::Client::new()
        .get(format!("{}/report", api.base))
        .bearer_auth(BEARER_TOKEN)
        .header("accept-payment", "tempo/charge")
        .send_with_payment(&provider(&node))
        .await;
    assert!(
        matches!(result, Err(HttpError::UnsafeCredentialHeader)),
        "{result:?}"
    );
    assert_eq!(path_usd_balance(&node.rpc_url(), RECIPIENT).await, before);
}
