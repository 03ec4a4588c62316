//! Our client (`mpp-reqwest` with `mpp-tempo`'s payer) pays a server built with the official
//! TypeScript SDK (`mppx` 0.11.0), on a real local Tempo node, in pull and push modes.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use mpp_core::{Challenge, Receipt};
use mpp_e2e_tests::path_usd_balance;
use mpp_reqwest::PaymentClient;
use mpp_tempo::client::{TempoPayer, TxOptions};
use mpp_tempo::testing::{AnvilNode, DEV_ACCOUNTS, mppx_interop_dir};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

/// mppx-server.mjs's default recipient (dev account 2).
const MPPX_RECIPIENT: &str = "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC";

fn signer(account: usize) -> alloy::signers::local::PrivateKeySigner {
    DEV_ACCOUNTS[account]
        .private_key
        .trim_start_matches("0x")
        .parse()
        .unwrap()
}

struct MppxServer {
    child: Child,
    url: String,
}

impl Drop for MppxServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_mppx_server(rpc_url: &str) -> Option<MppxServer> {
    let interop = mppx_interop_dir()?;
    let mut child = Command::new("node")
        .arg(interop.join("mppx-server.mjs"))
        .env("TEMPO_RPC_URL", rpc_url)
        .stdout(Stdio::piped())
        .spawn()
        .expect("node (Node.js 20+) is required for the mppx interop tests");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let base = line
        .trim()
        .strip_prefix("listening ")
        .unwrap_or_else(|| panic!("mppx server said {line:?}"));
    Some(MppxServer {
        url: format!("{base}/paid"),
        child,
    })
}

#[tokio::test]
async fn our_client_pays_an_mppx_server_in_pull_mode() {
    let Some(node) = AnvilNode::start() else {
        return;
    };
    let Some(server) = start_mppx_server(&node.rpc_url()) else {
        return;
    };
    let payer = TempoPayer::new(signer(0), &node.rpc_url()).unwrap();
    let before = path_usd_balance(&node.rpc_url(), MPPX_RECIPIENT).await;
    let paid = PaymentClient::new(reqwest::Client::new(), payer)
        .get(&server.url)
        .await
        .unwrap();
    assert_eq!(paid.response.status(), 200);
    let receipt = paid
        .payment
        .and_then(|p| p.receipt)
        .expect("mppx sends a receipt");
    assert_eq!(
        (receipt.status.as_str(), receipt.method.as_str()),
        ("success", "tempo")
    );
    assert_eq!(
        path_usd_balance(&node.rpc_url(), MPPX_RECIPIENT).await,
        before + 10_000
    );
}

#[tokio::test]
async fn our_client_pays_an_mppx_server_in_push_mode() {
    let Some(node) = AnvilNode::start() else {
        return;
    };
    let Some(server) = start_mppx_server(&node.rpc_url()) else {
        return;
    };
    let payer = TempoPayer::new(signer(1), &node.rpc_url()).unwrap();
    let http = reqwest::Client::new();
    let first = http.get(&server.url).send().await.unwrap();
    assert_eq!(first.status(), 402);
    let header = first.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_owned();
    let challenge = Challenge::parse_all(&header).unwrap().remove(0);
    let pushed = payer.push(&challenge, &TxOptions::default()).await.unwrap();
    assert_eq!(pushed.payload["type"], "hash");
    let authorization = pushed
        .clone()
        .into_credential(&challenge)
        .to_authorization();
    let paid = http
        .get(&server.url)
        .header("authorization", authorization)
        .send()
        .await
        .unwrap();
    assert_eq!(paid.status(), 200);
    let receipt =
        Receipt::from_header_value(paid.headers()["payment-receipt"].to_str().unwrap()).unwrap();
    assert_eq!(receipt.reference, format!("{:#x}", pushed.tx_hash.unwrap()));
}
