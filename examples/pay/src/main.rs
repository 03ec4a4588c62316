//! Pays an MPP-protected URL with a Tempo key and prints what happened.
//!
//! Run with `scripts/demo.sh` (which also starts a node and a paid API), or:
//!
//! ```text
//! TEMPO_RPC_URL=http://127.0.0.1:8545 cargo run -p mpp-example-pay -- http://127.0.0.1:3000/fortune
//! ```
//!
//! Environment: `TEMPO_RPC_URL` (http://127.0.0.1:8545), `PAYER_KEY` (dev account 0 of the
//! local node).

use anyhow::Context as _;
use mpp_reqwest::PaymentClient;
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
    let signer = key
        .trim()
        .trim_start_matches("0x")
        .parse()
        .context("PAYER_KEY")?;
    let payer = TempoPayer::new(signer, &rpc_url).context("payer")?;
    println!("payer {} pays {url}", payer.address());

    let client = PaymentClient::new(reqwest::Client::new(), payer);
    let started = std::time::Instant::now();
    let paid = client.get(&url).await?;
    let status = paid.response.status();
    let Some(payment) = paid.payment else {
        anyhow::bail!("{url} did not ask for payment (status {status})");
    };
    let c = &payment.challenge;
    println!(
        "402 challenge: id={} realm={} method={} intent={} amount={} expires={}",
        c.id,
        c.realm,
        c.method,
        c.intent,
        c.request.value()["amount"],
        c.expires.as_deref().unwrap_or("-")
    );
    println!("paid retry -> {status} in {:?}", started.elapsed());
    match &payment.receipt {
        Some(r) => println!(
            "Payment-Receipt: status={} method={} reference(tx)={} timestamp={}",
            r.status, r.method, r.reference, r.timestamp
        ),
        None => println!("no Payment-Receipt"),
    }
    println!("body: {}", paid.response.text().await?);
    anyhow::ensure!(
        status.is_success() && payment.receipt.is_some(),
        "payment did not go through"
    );
    Ok(())
}
