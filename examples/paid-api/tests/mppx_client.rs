//! The official TypeScript SDK (`mppx` 0.11.0, from npm) pays the `paid-api` binary on a real
//! local Tempo node, in pull, push and sponsored-pull modes.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use alloy::primitives::Address;
use mpp_tempo::testing::{AnvilNode, DEV_ACCOUNTS, mppx_interop_dir, token_balance, tokens};
use serde_json::Value;
use std::process::Command;
use std::time::Instant;
use support::{RECIPIENT, start_paid_api};

/// Runs `tools/devnet/interop/mppx-pay.mjs`; `None` (with a message) when mppx is not
/// installed outside CI.
fn mppx_pay(rpc_url: &str, url: &str, mode: &str, payer_key: &str) -> Option<Value> {
    let interop = mppx_interop_dir()?;
    let started = Instant::now();
    let output = Command::new("node")
        .arg(interop.join("mppx-pay.mjs"))
        .args([url, mode])
        .env("TEMPO_RPC_URL", rpc_url)
        .env("PAYER_KEY", payer_key)
        .output()
        .expect("node (Node.js 20+) is required for the mppx interop tests");
    eprintln!(
        "mppx {mode}: {:?} (node start-up included)",
        started.elapsed()
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "mppx {mode} failed: {stdout} {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Some(serde_json::from_str(stdout.trim()).unwrap())
}

async fn balance(rpc_url: &str, owner: Address) -> u128 {
    token_balance(rpc_url, tokens::PATH_USD, owner)
        .await
        .unwrap()
        .to::<u128>()
}

async fn pays(mode: &str, sponsored: bool, payer: usize) {
    let Some(node) = AnvilNode::start() else {
        return;
    };
    let db = tempfile::tempdir().unwrap();
    let database_url = format!("sqlite://{}", db.path().join("mppx.db").display());
    let sponsor_key = DEV_ACCOUNTS[9].private_key;
    let extra: Vec<(&str, &str)> = if sponsored {
        vec![("MPP_FEE_PAYER_KEY", sponsor_key)]
    } else {
        vec![]
    };
    let api = start_paid_api(&node.rpc_url(), &database_url, &extra).await;
    let url = format!("{}/fortune", api.base);
    let before = balance(&node.rpc_url(), RECIPIENT.parse().unwrap()).await;
    let payer_before = balance(&node.rpc_url(), DEV_ACCOUNTS[payer].address).await;

    let Some(result) = mppx_pay(&node.rpc_url(), &url, mode, DEV_ACCOUNTS[payer].private_key)
    else {
        return;
    };
    assert_eq!(result["status"], 200, "{result}");
    let receipt = &result["receipt"];
    assert_eq!(receipt["status"], "success");
    assert_eq!(receipt["method"], "tempo");
    let body: Value = serde_json::from_str(result["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["tx"], receipt["reference"]);
    assert_eq!(
        balance(&node.rpc_url(), RECIPIENT.parse().unwrap()).await,
        before + 10_000
    );
    let spent = payer_before - balance(&node.rpc_url(), DEV_ACCOUNTS[payer].address).await;
    if sponsored {
        // The payer paid the price and not a unit of fee (their fee token is pathUSD).
        assert_eq!(spent, 10_000);
    } else {
        assert!(spent >= 10_000);
    }
}

#[tokio::test]
async fn mppx_pays_in_pull_mode() {
    pays("pull", false, 6).await;
}

#[tokio::test]
async fn mppx_pays_in_push_mode() {
    pays("push", false, 7).await;
}

#[tokio::test]
async fn mppx_pays_with_our_fee_payer() {
    pays("pull", true, 8).await;
}
