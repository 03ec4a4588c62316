//! End to end against the `paid-api` binary itself, on a real local Tempo node: our client
//! pays and the tokens move on chain; a replayed credential is refused; two `paid-api`
//! instances sharing one Postgres accept a credential exactly once; a stopped node gives 503
//! and never serves.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use mpp_core::{Challenge, Payer, ProblemType, Receipt};
use mpp_reqwest::PaymentClient;
use mpp_tempo::client::TempoPayer;
use mpp_tempo::testing::{AnvilNode, DEV_ACCOUNTS, token_balance, tokens};
use serde_json::Value;
use std::time::Instant;
use support::{RECIPIENT, start_paid_api};

/// `paid-api` on a fresh SQLite file (kept until the returned directory drops).
async fn start_with_sqlite(rpc_url: &str) -> (support::PaidApi, tempfile::TempDir) {
    let db = tempfile::tempdir().unwrap();
    let database_url = format!("sqlite://{}", db.path().join("e2e.db").display());
    (start_paid_api(rpc_url, &database_url, &[]).await, db)
}

async fn balance(rpc_url: &str, owner: &str) -> u128 {
    let owner = owner.parse().unwrap();
    token_balance(rpc_url, tokens::PATH_USD, owner)
        .await
        .unwrap()
        .to::<u128>()
}

fn payer(rpc_url: &str, account: usize) -> TempoPayer {
    let key = DEV_ACCOUNTS[account].private_key.trim_start_matches("0x");
    TempoPayer::new(key.parse().unwrap(), rpc_url).unwrap()
}

/// A paid `Authorization` value for a fresh challenge of `url` (not yet sent).
async fn credential_for(url: &str, payer: &TempoPayer) -> String {
    let reply = reqwest::get(url).await.unwrap();
    assert_eq!(reply.status(), 402);
    let header = reply.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_owned();
    let challenge = Challenge::parse_all(&header).unwrap().remove(0);
    payer.pay(&challenge).await.unwrap().to_authorization()
}

async fn problem_type(response: reqwest::Response) -> String {
    let body: Value = response.json().await.unwrap();
    body["type"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn our_client_pays_paid_api_and_tokens_move() {
    let Some(node) = AnvilNode::start() else {
        return;
    };
    let (api, _db) = start_with_sqlite(&node.rpc_url()).await;
    let url = format!("{}/fortune", api.base);

    let before = balance(&node.rpc_url(), RECIPIENT).await;
    let started = Instant::now();
    let client = PaymentClient::new(reqwest::Client::new(), payer(&node.rpc_url(), 0));
    let paid = client.get(&url).await.unwrap();
    eprintln!("one pull payment through paid-api: {:?}", started.elapsed());
    let status = paid.response.status();
    let receipt = paid
        .payment
        .and_then(|p| p.receipt)
        .expect("Payment-Receipt");
    let body = paid.response.text().await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (receipt.status.as_str(), receipt.method.as_str()),
        ("success", "tempo")
    );
    assert!(receipt.reference.starts_with("0x") && receipt.reference.len() == 66);
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["tx"], receipt.reference.as_str());
    assert_eq!(balance(&node.rpc_url(), RECIPIENT).await, before + 10_000);
}

#[tokio::test]
async fn a_replayed_credential_is_refused_and_not_charged_twice() {
    let Some(node) = AnvilNode::start() else {
        return;
    };
    let (api, _db) = start_with_sqlite(&node.rpc_url()).await;
    let url = format!("{}/fortune", api.base);
    let authorization = credential_for(&url, &payer(&node.rpc_url(), 1)).await;
    let http = reqwest::Client::new();
    let first = http
        .get(&url)
        .header("authorization", &authorization)
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), 200);
    let receipt =
        Receipt::from_header_value(first.headers()["payment-receipt"].to_str().unwrap()).unwrap();
    let after_first = balance(&node.rpc_url(), RECIPIENT).await;
    let second = http
        .get(&url)
        .header("authorization", &authorization)
        .send()
        .await
        .unwrap();
    assert_eq!(second.status(), 402);
    assert!(second.headers().contains_key("www-authenticate"));
    assert_eq!(
        problem_type(second).await,
        ProblemType::VerificationFailed.uri()
    );
    assert_eq!(
        balance(&node.rpc_url(), RECIPIENT).await,
        after_first,
        "no second transfer ({})",
        receipt.reference
    );
}

#[tokio::test]
async fn two_instances_sharing_postgres_accept_a_credential_once() {
    let Some(node) = AnvilNode::start() else {
        return;
    };
    let Ok(database_url) = std::env::var("MPP_TEST_DATABASE_URL") else {
        let hint = "MPP_TEST_DATABASE_URL is not set: run scripts/test.sh (it starts PostgreSQL)";
        if std::env::var_os("CI").is_some() {
            panic!("{hint}");
        }
        eprintln!("skipping: {hint}");
        return;
    };
    let a = start_paid_api(&node.rpc_url(), &database_url, &[]).await;
    let b = start_paid_api(&node.rpc_url(), &database_url, &[]).await;
    // The challenge comes from instance A; both share the secret, so B recognizes it too.
    let authorization =
        credential_for(&format!("{}/fortune", a.base), &payer(&node.rpc_url(), 2)).await;
    let before = balance(&node.rpc_url(), RECIPIENT).await;
    let http = reqwest::Client::new();
    let mut attempts = Vec::new();
    for i in 0..20 {
        let base = if i % 2 == 0 { &a.base } else { &b.base };
        let request = http
            .get(format!("{base}/fortune"))
            .header("authorization", &authorization);
        attempts.push(tokio::spawn(async move {
            request.send().await.unwrap().status().as_u16()
        }));
    }
    let mut statuses = Vec::new();
    for attempt in attempts {
        statuses.push(attempt.await.unwrap());
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        1,
        "{statuses:?}"
    );
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 402),
        "{statuses:?}"
    );
    assert_eq!(balance(&node.rpc_url(), RECIPIENT).await, before + 10_000);
}

#[tokio::test]
async fn a_stopped_node_gives_503_and_never_serves() {
    let Some(mut node) = AnvilNode::start() else {
        return;
    };
    let (api, _db) = start_with_sqlite(&node.rpc_url()).await;
    let url = format!("{}/fortune", api.base);
    let authorization = credential_for(&url, &payer(&node.rpc_url(), 4)).await;
    node.stop();
    let reply = reqwest::Client::new()
        .get(&url)
        .header("authorization", &authorization)
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 503);
    assert!(reply.headers().get("payment-receipt").is_none());
    let body: Value = reply.json().await.unwrap();
    assert!(body.get("fortune").is_none());
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("this request took no money")
    );
}

#[test]
fn without_a_secret_paid_api_refuses_to_start_and_says_how_to_make_one() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_paid-api"))
        .env_remove("MPP_SECRET_KEY")
        .env_remove("MPP_DEMO")
        .env("PORT", "0")
        .env("TEMPO_RPC_URL", "http://127.0.0.1:1")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("MPP_SECRET_KEY is not set"), "{stderr}");
    assert!(stderr.contains("openssl rand -base64 32"), "{stderr}");
}
