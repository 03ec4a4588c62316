//! `pay-session`: pay-as-you-go against the paid API's session routes with a Tempo key, each
//! step printed: open a channel (the first `GET /ping`), three paid requests, a 20-token
//! stream that asks for vouchers mid-way (`GET /tokens?n=20`), and the close, settled on chain.
//!
//! Run with `scripts/demo.sh` (which starts a node, deploys the escrow and runs the paid API),
//! or against a running one:
//!
//! ```text
//! cargo run -p mpp-example-pay-session -- http://127.0.0.1:3000
//! ```
//!
//! `TEMPO_RPC_URL` (default `http://127.0.0.1:8545`) and `PAYER_KEY` (default dev account 0
//! of the local node) choose the node and the payer.

use anyhow::{Context as _, bail};
use futures_util::StreamExt as _;
use mpp_reqwest::SessionClient;
use mpp_tempo::session::TempoSessionPayer;

/// Dev account 0 of `anvil --network tempo` (a public test key: never hold real funds with it).
const DEV_PAYER_KEY: &str = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";
/// The most the payer locks in a channel: 0.02 of a 6-decimal token. The server suggests
/// 0.01, which covers four pings (0.001 each) and the 20-token stream (0.0001 each); the
/// vouchers still come one by one, as the stream asks for them.
const MAX_DEPOSIT: u128 = 20_000;
/// Gas for the open (approve + open: about 1.6M on a first open).
const OPEN_GAS: u64 = 2_000_000;
/// Gas for a top-up (about 0.3M).
const TOP_UP_GAS: u64 = 500_000;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let base = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "http://127.0.0.1:3000".to_owned());
    let base = base.trim_end_matches('/');
    let rpc_url =
        std::env::var("TEMPO_RPC_URL").unwrap_or_else(|_| "http://127.0.0.1:8545".to_owned());
    let key = std::env::var("PAYER_KEY").unwrap_or_else(|_| DEV_PAYER_KEY.to_owned());
    let signer = key
        .trim()
        .trim_start_matches("0x")
        .parse()
        .context("PAYER_KEY: expected a 32-byte hex private key")?;
    // A local node's escrow is not a network default: accept the one the server names. A
    // local node cannot estimate an approve + open batch (it estimates the last call alone),
    // so the channel transactions get fixed gas limits (fees are paid on gas used).
    let payer = TempoSessionPayer::new(signer, &rpc_url, MAX_DEPOSIT)?
        .allow_custom_escrow(true)
        .open_gas_limit(OPEN_GAS)
        .top_up_gas_limit(TOP_UP_GAS);
    println!(
        "payer {:#x}, deposits at most {MAX_DEPOSIT} base units",
        payer.address()
    );
    let client = SessionClient::new(reqwest::Client::new(), payer);

    let ping = format!("{base}/ping");
    for i in 1..=4 {
        let paid = client.get(&ping).await?;
        let status = paid.response.status();
        let receipt = paid.payment.and_then(|p| p.receipt);
        let Some(receipt) = receipt.filter(|_| status.is_success()) else {
            bail!("GET /ping answered {status} without a receipt");
        };
        let what = if i == 1 {
            "channel opened, first ping"
        } else {
            "paid ping"
        };
        println!(
            "{what}: {status}, spent {} of {} accepted, {} units{}",
            field(&receipt, "spent"),
            field(&receipt, "acceptedCumulative"),
            field(&receipt, "units"),
            receipt
                .extra
                .get("txHash")
                .map(|_| format!(", open tx {}", field(&receipt, "txHash")))
                .unwrap_or_default()
        );
    }

    let tokens = format!("{base}/tokens?n=20");
    println!("streaming {tokens}:");
    let mut stream = client.sse(&tokens);
    let mut words = 0;
    while let Some(word) = stream.next().await {
        print!("{} ", word?);
        words += 1;
    }
    println!();
    let Some(receipt) = stream.receipt() else {
        bail!("the stream ended without its payment-receipt event");
    };
    println!(
        "{words} tokens, {} vouchers sent mid-stream; final receipt: spent {}, {} units",
        stream.vouchers(),
        field(&receipt, "spent"),
        field(&receipt, "units")
    );
    if words != 20 {
        bail!("expected 20 tokens, got {words}");
    }

    let closed = client.close(&ping).await?;
    println!(
        "channel closed on chain: tx {}, the payee was paid {} base units",
        field(&closed, "txHash"),
        field(&closed, "spent")
    );
    Ok(())
}

/// A receipt field as text (strings without their quotes).
fn field(receipt: &mpp_core::Receipt, name: &str) -> String {
    match receipt.extra.get(name) {
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
        None => "-".to_owned(),
    }
}
