//! Pays an MPP-protected URL with a Tempo key and prints what happened.
//!
//! ```text
//! TEMPO_RPC_URL=http://127.0.0.1:8545 cargo run -p mpp-examples --bin pay -- http://127.0.0.1:3000/fortune
//! ```
//!
//! Environment: `TEMPO_RPC_URL` (http://127.0.0.1:8545), `PAYER_KEY` (dev account 0 of the
//! local node).

use anyhow::Context as _;
use mpp_examples::{pay_url, signer_from_hex};
use mpp_tempo::client::TempoPayer;

/// Dev account 0 of `anvil --network tempo` (public test key).
const DEV_PAYER_KEY: &str = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "http://127.0.0.1:3000/fortune".into());
    let rpc_url = std::env::var("TEMPO_RPC_URL").unwrap_or_else(|_| "http://127.0.0.1:8545".into());
    let key = std::env::var("PAYER_KEY").unwrap_or_else(|_| DEV_PAYER_KEY.into());
    let payer = TempoPayer::new(signer_from_hex(&key)?, &rpc_url).context("payer")?;
    println!("payer {} pays {url}", payer.address());

    let started = std::time::Instant::now();
    let paid = pay_url(&reqwest::Client::new(), &url, &payer).await?;
    let c = &paid.challenge;
    println!(
        "402 challenge: id={} realm={} method={} intent={} amount={} expires={}",
        c.id,
        c.realm,
        c.method,
        c.intent,
        c.request.value()["amount"],
        c.expires.as_deref().unwrap_or("-")
    );
    println!("paid retry -> {} in {:?}", paid.status, started.elapsed());
    match &paid.receipt {
        Some(r) => println!(
            "Payment-Receipt: status={} method={} reference(tx)={} timestamp={}",
            r.status, r.method, r.reference, r.timestamp
        ),
        None => println!("no Payment-Receipt"),
    }
    println!("body: {}", paid.body);
    anyhow::ensure!(
        paid.status.is_success() && paid.receipt.is_some(),
        "payment did not go through"
    );
    Ok(())
}
