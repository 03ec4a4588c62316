//! The official TypeScript SDK's legacy session client (`mppx` 0.11.0
//! `tempo.sessionLegacy`, from npm) pays the `paid-api` binary's sessions on a real local
//! Tempo node, with the canonical v1 `TempoStreamChannel` escrow.
//!
//! What it proves, in one channel's life (`tools/devnet/interop/mppx-session-legacy.mjs`
//! drives the client and reports every HTTP exchange it made):
//! - the open on `GET /ping` (the client's approve + open transaction, broadcast by the
//!   server) is answered `200` with a session receipt carrying the open's `txHash`; three more
//!   pings, each a `402` then a voucher, move `spent` by 1000 and `units` by one, and every
//!   receipt passes the client's own receipt checks (it throws on any it rejects);
//! - `GET /tokens?n=40` streams all 40 words: the voucher the request carried pays the first
//!   token, and the client signs only what each `payment-need-voucher` asks for, so every
//!   later token needs a voucher `POST`ed mid-stream to the stream's URL (query string
//!   included, `Accept: text/event-stream`), each answered `204`; the final
//!   `payment-receipt` event shows `spent` grown by exactly 40 × 100;
//! - the close (`POST` to the stream's URL, at `max(spent, accepted)`) is answered `204` with
//!   the close transaction in its receipt, and the payee's pathUSD balance grows by what was
//!   consumed (the payee's server key pays its fees in AlphaUSD).
//!
//! Skips (with a message) when the node binary, Node.js or mppx are missing, unless `CI` is
//! set. Run: `cargo test -p mpp-example-paid-api --test mppx_session`

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use alloy::primitives::Address;
use alloy::signers::local::PrivateKeySigner;
use mpp_tempo::testing::{
    AnvilNode, DEV_ACCOUNTS, INSTALL_HINT, mppx_interop_dir, stream_channel, token_balance, tokens,
};
use serde_json::Value;
use std::process::Command;
use std::time::Instant;
use support::{RECIPIENT, start_paid_api};

/// `session("0.001")` and `session("0.0001")` at 6 decimals.
const PING_PRICE: u128 = 1_000;
const TOKEN_PRICE: u128 = 100;
/// The open and three more.
const PINGS: u128 = 4;
/// 4 × 1000 + 40 × 100 = 8000, within the suggested deposit (10000): the legacy client
/// never tops up.
const TOKENS: u128 = 40;
/// The escrow's deployer, the payer; the payee is `RECIPIENT` (dev account 3), whose key
/// the server holds.
const DEPLOYER: usize = 0;
const PAYER: usize = 4;
const PAYEE: usize = 3;

/// Whether `node` runs; like the other prerequisites, a missing one fails under `CI` and
/// skips (with a message) otherwise.
fn node_available() -> bool {
    if Command::new("node").arg("--version").output().is_ok() {
        return true;
    }
    let message = format!(
        "Node.js 20+ (`node`) is not on PATH; install it, then the interop peers with \
         `{INSTALL_HINT}` from the workspace root"
    );
    if std::env::var_os("CI").is_some() {
        panic!("{message}");
    }
    eprintln!("skipping interop test: {message}");
    false
}

async fn path_usd(rpc_url: &str, owner: Address) -> u128 {
    token_balance(rpc_url, tokens::PATH_USD, owner)
        .await
        .unwrap()
        .to::<u128>()
}

fn amount(value: &Value) -> u128 {
    value
        .as_str()
        .unwrap_or_else(|| panic!("not a decimal string: {value}"))
        .parse()
        .unwrap()
}

/// The fields the legacy client's `deserializeSessionReceipt` requires (it throws on a
/// receipt without them), and the channel they name.
fn assert_session_receipt(receipt: &Value, channel_id: &str) {
    assert_eq!(receipt["method"], "tempo", "{receipt}");
    assert_eq!(receipt["intent"], "session", "{receipt}");
    assert_eq!(receipt["status"], "success", "{receipt}");
    for field in ["timestamp", "reference", "challengeId", "channelId"] {
        assert!(receipt[field].is_string(), "{field} in {receipt}");
    }
    assert_eq!(receipt["channelId"], channel_id, "{receipt}");
    assert_eq!(receipt["reference"], channel_id, "{receipt}");
    assert!(receipt["units"].is_u64(), "{receipt}");
    assert!(amount(&receipt["spent"]) <= amount(&receipt["acceptedCumulative"]));
    if let Some(tx) = receipt.get("txHash") {
        assert_tx_hash(tx);
    }
}

fn assert_tx_hash(tx: &Value) {
    let tx = tx.as_str().expect("txHash is a string");
    assert!(
        tx.len() == 66 && tx.starts_with("0x") && tx[2..].bytes().all(|b| b.is_ascii_hexdigit()),
        "not a 32-byte hex hash: {tx}"
    );
}

#[tokio::test]
async fn mppx_legacy_session_client_pays_pings_a_stream_and_closes() {
    let Some(node) = AnvilNode::start() else {
        return;
    };
    let Some(interop) = mppx_interop_dir() else {
        return;
    };
    if !node_available() {
        return;
    }
    let rpc = node.rpc_url();
    let started = Instant::now();
    let deployer: PrivateKeySigner = DEV_ACCOUNTS[DEPLOYER].private_key.parse().unwrap();
    let escrow = stream_channel::deploy(&rpc, &deployer).await.unwrap();
    let escrow = format!("{escrow:#x}");
    let db = tempfile::tempdir().unwrap();
    let database_url = format!("sqlite://{}", db.path().join("sessions.db").display());
    let payee_fee_token = format!("{:#x}", tokens::ALPHA_USD);
    assert_eq!(
        DEV_ACCOUNTS[PAYEE].address,
        RECIPIENT.parse::<Address>().unwrap()
    );
    let api = start_paid_api(
        &rpc,
        &database_url,
        &[
            ("MPP_ESCROW", &escrow),
            ("MPP_PAYEE_KEY", DEV_ACCOUNTS[PAYEE].private_key),
            // Not the channel token: the payee's pathUSD moves only by what channels pay.
            ("MPP_PAYEE_FEE_TOKEN", &payee_fee_token),
        ],
    )
    .await;
    eprintln!("node, escrow and paid-api: {:?}", started.elapsed());
    let payee_before = path_usd(&rpc, DEV_ACCOUNTS[PAYEE].address).await;

    let started = Instant::now();
    let output = Command::new("node")
        .arg(interop.join("mppx-session-legacy.mjs"))
        .arg(format!("{}/ping", api.base))
        .arg(format!("{}/tokens?n={TOKENS}", api.base))
        .arg(PINGS.to_string())
        .env("TEMPO_RPC_URL", &rpc)
        .env("ESCROW", &escrow)
        .env("PAYER_KEY", DEV_ACCOUNTS[PAYER].private_key)
        .output()
        .expect("run node");
    eprintln!(
        "mppx legacy session (node start-up included): {:?}",
        started.elapsed()
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the mppx legacy session failed: {stdout} {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let result: Value = serde_json::from_str(stdout.trim()).unwrap();
    let channel_id = result["channelId"].as_str().expect("a channel id");

    // The open, then paid pings: spent and units move by one request each.
    let requests = result["requests"].as_array().unwrap();
    assert_eq!(requests.len() as u128, PINGS);
    for (i, request) in requests.iter().enumerate() {
        let n = i as u128 + 1;
        assert_eq!(request["status"], 200, "{request}");
        let receipt = &request["receipt"];
        assert_session_receipt(receipt, channel_id);
        assert_eq!(amount(&receipt["spent"]), n * PING_PRICE, "{receipt}");
        assert_eq!(amount(&receipt["acceptedCumulative"]), n * PING_PRICE);
        assert_eq!(receipt["units"], n as u64);
        // Only the open carries a transaction.
        assert_eq!(receipt.get("txHash").is_some(), i == 0, "{receipt}");
        let body: Value = serde_json::from_str(request["body"].as_str().unwrap()).unwrap();
        assert_eq!(body["pong"], true);
        assert_eq!(body["channel"], channel_id);
    }

    // The stream: every word, in order, then the final receipt.
    let stream = &result["stream"];
    let messages: Vec<&str> = stream["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_str().unwrap())
        .collect();
    assert_eq!(messages.len() as u128, TOKENS, "{stream}");
    assert_eq!(&messages[..4], ["Machine", "payments", "flow", "one"]);
    let consumed = PINGS * PING_PRICE + TOKENS * TOKEN_PRICE;
    let final_receipt = &stream["finalReceipt"];
    assert_session_receipt(final_receipt, channel_id);
    assert_eq!(amount(&final_receipt["spent"]), consumed, "{final_receipt}");
    assert_eq!(amount(&final_receipt["acceptedCumulative"]), consumed);
    assert_eq!(final_receipt["units"], (PINGS + TOKENS) as u64);

    // What went over the wire: the stream's own request paid its first token; each later
    // token took a `payment-need-voucher` event and a voucher POST to the stream's URL,
    // answered 204 with a receipt.
    let exchanges = result["exchanges"].as_array().unwrap();
    let stream_url = format!("{}/tokens?n={TOKENS}", api.base);
    let vouchers: Vec<&Value> = exchanges
        .iter()
        .filter(|e| e["method"] == "POST" && e["action"] == "voucher")
        .collect();
    assert!(!vouchers.is_empty(), "no mid-stream voucher was needed");
    assert_eq!(vouchers.len() as u128, TOKENS - 1);
    let need_voucher = result["sseEvents"]["payment-need-voucher"]
        .as_u64()
        .unwrap();
    assert_eq!(need_voucher, vouchers.len() as u64);
    assert_eq!(result["sseEvents"]["message"], TOKENS as u64);
    assert_eq!(result["sseEvents"]["payment-receipt"], 1);
    let mut last = PINGS * PING_PRICE + TOKEN_PRICE;
    for voucher in &vouchers {
        assert_eq!(voucher["url"], stream_url.as_str(), "{voucher}");
        assert_eq!(voucher["accept"], "text/event-stream", "{voucher}");
        assert_eq!(voucher["status"], 204, "{voucher}");
        assert_session_receipt(&voucher["receipt"], channel_id);
        let cumulative = amount(&voucher["cumulativeAmount"]);
        assert_eq!(cumulative, last + TOKEN_PRICE, "one token per voucher");
        assert_eq!(
            amount(&voucher["receipt"]["acceptedCumulative"]),
            cumulative
        );
        last = cumulative;
    }
    assert_eq!(last, consumed);
    let slowest = vouchers
        .iter()
        .map(|v| v["ms"].as_u64().unwrap())
        .max()
        .unwrap();
    eprintln!(
        "stream of {TOKENS} tokens: {} ms, {} vouchers (slowest answer {slowest} ms)",
        stream["ms"],
        vouchers.len()
    );

    // The close: 204, its transaction in the receipt, the payee paid what was consumed.
    let close = exchanges.last().unwrap();
    assert_eq!(close["method"], "POST", "{close}");
    assert_eq!(close["action"], "close", "{close}");
    assert_eq!(close["url"], stream_url.as_str());
    assert_eq!(close["status"], 204, "{close}");
    assert_eq!(amount(&close["cumulativeAmount"]), consumed);
    let close_receipt = &result["close"]["receipt"];
    assert_session_receipt(close_receipt, channel_id);
    assert_tx_hash(&close_receipt["txHash"]);
    assert_ne!(close_receipt["txHash"], requests[0]["receipt"]["txHash"]);
    let spent = amount(&close_receipt["spent"]);
    assert_eq!(spent, consumed, "{close_receipt}");
    let paid = path_usd(&rpc, DEV_ACCOUNTS[PAYEE].address).await - payee_before;
    eprintln!("consumed {consumed}, spent {spent}, the escrow paid the payee {paid}");
    // A v1 close pays the close voucher (max(spent, accepted)): at most one increment more.
    assert!(
        (spent..=spent + TOKEN_PRICE).contains(&paid),
        "paid {paid}, spent {spent}"
    );
    assert_eq!(paid, spent);
}
