//! `devnet-escrow`: deploys the v1 session escrow (`TempoStreamChannel`) on a local Tempo
//! node and prints its address, for `MPP_ESCROW`. Local nodes have no escrow of their own.
//!
//! The bytecode is the canonical one the official `mpp` crate ships as a test fixture, read
//! from cargo's registry (`cargo fetch` brings it; `MPP_ESCROW_FIXTURE` names another copy);
//! this project never carries it.
//!
//! ```text
//! cargo run -p mpp-example-devnet-escrow -- http://127.0.0.1:8545
//! ```

use anyhow::{Context as _, anyhow};
use mpp_tempo::PrivateKeySigner;
use mpp_tempo::testing::{DEV_ACCOUNTS, stream_channel};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let rpc_url = std::env::args()
        .nth(1)
        .or_else(|| std::env::var("TEMPO_RPC_URL").ok())
        .unwrap_or_else(|| "http://127.0.0.1:8545".to_owned());
    // Dev account 0 deploys: any funded key would do, the escrow has no owner.
    let deployer: PrivateKeySigner = DEV_ACCOUNTS[0]
        .private_key
        .parse()
        .context("dev account 0's key")?;
    let escrow = stream_channel::deploy(&rpc_url, &deployer)
        .await
        .map_err(|e| anyhow!("deploying the escrow on {rpc_url}: {e}"))?;
    println!("{escrow:#x}");
    Ok(())
}
