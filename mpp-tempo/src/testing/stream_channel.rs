//! The v1 session escrow (`TempoStreamChannel`) on a local node (devnet.md §4.1): the
//! canonical creation code, its deployment, and small helpers to send the transactions a
//! session test needs (the payer's `requestClose`/`withdraw`, the payee's `settle`/`close`)
//! and to move the node's clock past the close grace period.
//!
//! The creation code is the one both SDKs deploy in their own tests. It ships in the `mpp`
//! 0.18.2 crate (a dev-dependency, so `cargo fetch` puts it into the registry cache) and is
//! read from there at test time: it is never copied into this repository.
//!
//! ```no_run
//! # async fn demo() -> Result<(), String> {
//! use alloy::sol_types::SolCall;
//! use mpp_tempo::PrivateKeySigner;
//! use mpp_tempo::session::abi::v1::ITempoStreamChannel;
//! use mpp_tempo::testing::{AnvilNode, DEV_ACCOUNTS, stream_channel};
//!
//! let Some(node) = AnvilNode::start() else { return Ok(()) };
//! let deployer: PrivateKeySigner = DEV_ACCOUNTS[0].private_key.parse().map_err(|e| format!("{e}"))?;
//! let escrow = stream_channel::deploy(&node.rpc_url(), &deployer).await?;
//! // ... open a channel: `session::client::open_calls` in a `stream_channel::expiring_tx` ...
//! # let channel_id = Default::default();
//! let request_close = ITempoStreamChannel::requestCloseCall { channelId: channel_id };
//! let call = stream_channel::call(escrow, request_close.abi_encode());
//! let receipt = stream_channel::send_calls(&node.rpc_url(), &deployer, vec![call], 500_000).await?;
//! # let _ = receipt;
//! # Ok(()) }
//! ```

use std::num::NonZeroU64;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use alloy::consensus::BlockHeader;
use alloy::eips::BlockNumberOrTag;
use alloy::eips::eip2718::Encodable2718;
use alloy::network::ReceiptResponse;
use alloy::primitives::{Address, Bytes, TxKind, U256};
use alloy::providers::Provider;
use alloy::signers::SignerSync;
use alloy::signers::local::PrivateKeySigner;
use serde_json::Value;
use tempo_alloy::rpc::TempoTransactionReceipt;
use tempo_primitives::transaction::{
    Call, PrimitiveSignature, TEMPO_EXPIRING_NONCE_KEY, TempoSignature, TempoTransaction,
};

use crate::chain::ChainClient;

/// The env var naming the creation-code file directly (overrides the lookup).
pub const FIXTURE_ENV: &str = "MPP_ESCROW_FIXTURE";

/// The `mpp` crate version whose tests ship the creation code.
pub const FIXTURE_CRATE_VERSION: &str = "0.18.2";

/// Where the creation code sits inside the `mpp` crate.
pub const FIXTURE_PATH_IN_CRATE: &str = "tests/fixtures/TempoStreamChannel.hex";

/// The gas limit of the deployment. The deployment uses about 16M gas on T4 (TIP-1000 state
/// creation gas, devnet.md §3.3.5) and anvil cannot estimate it reliably; it is lowered to the
/// block gas limit when that is smaller.
pub const DEPLOY_GAS_LIMIT: u64 = 25_000_000;

/// How long a transaction built here stays valid: `validBefore` = the node's latest block
/// time plus this (a node refuses more than 30 s).
pub const TX_VALIDITY: Duration = Duration::from_secs(25);

/// How long a send waits for the receipt. anvil drops invalid transactions silently
/// (devnet.md §3.3.4), so every wait is bounded.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(15);

/// The timeout of one plain RPC call.
const RPC_TIMEOUT: Duration = Duration::from_secs(5);

/// The floor of `maxFeePerGas` (1 gwei, as the SDKs use).
const MIN_FEE_PER_GAS: u128 = 1_000_000_000;

/// The file holding the escrow's creation code (hex): `$MPP_ESCROW_FIXTURE` if set, else
/// `tests/fixtures/TempoStreamChannel.hex` of the `mpp` 0.18.2 package as `cargo metadata`
/// locates it, else the same file under `$CARGO_HOME/registry/src/*/mpp-0.18.2/` (default
/// `~/.cargo`). The error says how to get it.
pub fn fixture_path() -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os(FIXTURE_ENV) {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(format!(
                "{FIXTURE_ENV}={} is not a file (unset it to find the file in the cargo registry)",
                path.display()
            ))
        };
    }
    let mut looked = Vec::new();
    match from_cargo_metadata() {
        Ok(path) if path.is_file() => return Ok(path),
        Ok(path) => looked.push(path.display().to_string()),
        Err(e) => looked.push(format!("cargo metadata: {e}")),
    }
    match from_registry_glob() {
        Ok(path) => Ok(path),
        Err(e) => {
            looked.push(e);
            Err(format!(
                "the TempoStreamChannel creation code of the `mpp` {FIXTURE_CRATE_VERSION} crate \
                 was not found ({}). Run `cargo fetch` in the workspace (`mpp` is a \
                 dev-dependency of mpp-tempo), or point {FIXTURE_ENV} at the \
                 `{FIXTURE_PATH_IN_CRATE}` file",
                looked.join("; ")
            ))
        }
    }
}

/// The `mpp` package directory from `cargo metadata` (offline: nothing is downloaded).
/// Found once per process; bounded by [`METADATA_TIMEOUT`] (cargo may wait for the package
/// cache lock while another build holds it).
fn from_cargo_metadata() -> Result<PathBuf, String> {
    static FOUND: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    FOUND.get_or_init(run_cargo_metadata).clone()
}

/// How long `cargo metadata` may take before the registry is searched directly.
const METADATA_TIMEOUT: Duration = Duration::from_secs(30);

fn run_cargo_metadata() -> Result<PathBuf, String> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut child = std::process::Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--offline"])
        .current_dir(super::workspace_root())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|e| format!("could not run it: {e}"))?;
    let mut stdout = child.stdout.take().ok_or("no stdout pipe")?;
    // The output is large: read it while waiting, or cargo blocks on a full pipe.
    let reader = std::thread::spawn(move || {
        let mut out = Vec::new();
        std::io::Read::read_to_end(&mut stdout, &mut out).map(|_| out)
    });
    let started = std::time::Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if started.elapsed() < METADATA_TIMEOUT => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("no answer within {METADATA_TIMEOUT:?}"));
            }
            Err(e) => {
                let _ = child.kill();
                return Err(format!("could not wait for it: {e}"));
            }
        }
    };
    if !status.success() {
        return Err(format!("it failed ({status})"));
    }
    let stdout = reader
        .join()
        .map_err(|_| "its output reader panicked".to_owned())?
        .map_err(|e| format!("could not read its output: {e}"))?;
    let metadata: Value =
        serde_json::from_slice(&stdout).map_err(|e| format!("unreadable output: {e}"))?;
    let packages = metadata
        .get("packages")
        .and_then(Value::as_array)
        .ok_or("no `packages` in its output")?;
    let manifest = packages
        .iter()
        .filter(|p| p.get("name").and_then(Value::as_str) == Some("mpp"))
        .find(|p| p.get("version").and_then(Value::as_str) == Some(FIXTURE_CRATE_VERSION))
        .and_then(|p| p.get("manifest_path").and_then(Value::as_str))
        .ok_or_else(|| format!("no `mpp` {FIXTURE_CRATE_VERSION} package in the workspace"))?;
    let dir = Path::new(manifest)
        .parent()
        .ok_or("the `mpp` manifest path has no parent")?;
    Ok(dir.join(FIXTURE_PATH_IN_CRATE))
}

/// The file under `$CARGO_HOME/registry/src/*/mpp-<version>/`.
fn from_registry_glob() -> Result<PathBuf, String> {
    let cargo_home = match std::env::var_os("CARGO_HOME") {
        Some(home) => PathBuf::from(home),
        None => {
            PathBuf::from(std::env::var_os("HOME").ok_or("neither CARGO_HOME nor HOME is set")?)
                .join(".cargo")
        }
    };
    let src = cargo_home.join("registry/src");
    let registries =
        std::fs::read_dir(&src).map_err(|e| format!("cannot list {}: {e}", src.display()))?;
    registries
        .filter_map(Result::ok)
        .map(|entry| {
            entry
                .path()
                .join(format!("mpp-{FIXTURE_CRATE_VERSION}"))
                .join(FIXTURE_PATH_IN_CRATE)
        })
        .find(|path| path.is_file())
        .ok_or_else(|| {
            format!(
                "no {}/*/mpp-{FIXTURE_CRATE_VERSION}/{FIXTURE_PATH_IN_CRATE}",
                src.display()
            )
        })
}

/// The canonical `TempoStreamChannel` creation code (6,358 bytes; 6,046 bytes of runtime code
/// once deployed), read from [`fixture_path`] and decoded from hex.
pub fn canonical_bytecode() -> Result<Vec<u8>, String> {
    let path = fixture_path()?;
    let text = std::fs::read_to_string(&path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let text = text.trim();
    let code = alloy::hex::decode(text.strip_prefix("0x").unwrap_or(text))
        .map_err(|e| format!("{} is not hex: {e}", path.display()))?;
    if code.is_empty() {
        return Err(format!("{} is empty", path.display()));
    }
    Ok(code)
}

/// Deploys the canonical escrow from `deployer` (a funded account, e.g. a dev account) and
/// returns its address, once the deployment is mined and code is present there.
///
/// The gas limit is explicit: [`DEPLOY_GAS_LIMIT`], or the block gas limit when that is
/// lower. The deployment is a `0x76` transaction with a single `CREATE` call and the
/// sender's protocol nonce (the contract address derives from that nonce).
pub async fn deploy(rpc_url: &str, deployer: &PrivateKeySigner) -> Result<Address, String> {
    let receipt = deploy_with_receipt(rpc_url, deployer).await?;
    receipt
        .contract_address()
        .ok_or_else(|| "the deployment receipt has no contract address".to_owned())
}

/// [`deploy`], returning the whole receipt (gas used, contract address).
pub async fn deploy_with_receipt(
    rpc_url: &str,
    deployer: &PrivateKeySigner,
) -> Result<TempoTransactionReceipt, String> {
    // The lookup may run `cargo metadata`: off the async threads.
    let code = tokio::task::spawn_blocking(canonical_bytecode)
        .await
        .map_err(|e| format!("the creation code lookup failed: {e}"))??;
    let chain = client(rpc_url)?;
    let provider = chain.provider();
    let block = provider
        .get_block_by_number(BlockNumberOrTag::Latest)
        .await
        .map_err(|e| format!("eth_getBlockByNumber: {e}"))?
        .ok_or("the node has no latest block")?;
    let gas_limit = DEPLOY_GAS_LIMIT.min(block.header.gas_limit());
    let nonce = provider
        .get_transaction_count(deployer.address())
        .await
        .map_err(|e| format!("eth_getTransactionCount: {e}"))?;
    let chain_id = chain
        .chain_id()
        .await
        .map_err(|e| format!("eth_chainId: {e}"))?;
    let create = Call {
        to: TxKind::Create,
        value: U256::ZERO,
        input: Bytes::from(code),
    };
    let tx = TempoTransaction {
        nonce_key: U256::ZERO,
        nonce,
        valid_before: None,
        ..unsigned_tx(
            chain_id,
            vec![create],
            gas_limit,
            None,
            0,
            max_fee_per_gas(&chain).await?,
        )
    };
    let receipt = send_raw(rpc_url, &sign_tx(deployer, tx)?).await?;
    if !receipt.status() {
        return Err(format!(
            "the deployment reverted (gas used {} of {gas_limit})",
            receipt.gas_used()
        ));
    }
    let escrow = receipt
        .contract_address()
        .ok_or("the deployment receipt has no contract address")?;
    let runtime = provider
        .get_code_at(escrow)
        .await
        .map_err(|e| format!("eth_getCode: {e}"))?;
    if runtime.is_empty() {
        return Err(format!("no code at {escrow} after the deployment"));
    }
    Ok(receipt)
}

/// An unsigned `0x76` transaction with an expiring nonce (`nonceKey = U256::MAX`,
/// `nonce = 0`), as SDK clients build the open and top-up transactions: the caller signs
/// it (e.g. with [`crate::session::client::SessionSigner::open`]).
///
/// `gas_limit` must be explicit: anvil estimates only the last call of a batch (devnet.md
/// §6.1), far too low for approve + open. `fee_token` `None` lets the node pick the sender's
/// preference. `valid_before` is unix seconds, at most 30 s after the node's block time
/// (see [`valid_before`]). `max_fee_per_gas` is in attodollars per gas (see
/// [`max_fee_per_gas`]); the priority fee is 1 gwei, or less if the maximum is lower.
pub fn unsigned_tx(
    chain_id: u64,
    calls: Vec<Call>,
    gas_limit: u64,
    fee_token: Option<Address>,
    valid_before: u64,
    max_fee_per_gas: u128,
) -> TempoTransaction {
    TempoTransaction {
        chain_id,
        fee_token,
        max_priority_fee_per_gas: MIN_FEE_PER_GAS.min(max_fee_per_gas),
        max_fee_per_gas,
        gas_limit,
        calls,
        nonce_key: TEMPO_EXPIRING_NONCE_KEY,
        nonce: 0,
        valid_before: NonZeroU64::new(valid_before),
        ..Default::default()
    }
}

/// A `maxFeePerGas` the node accepts now: 20 % over `eth_gasPrice` (as viem does), at least
/// 1 gwei.
pub async fn max_fee_per_gas(chain: &ChainClient) -> Result<u128, String> {
    chain
        .suggested_max_fee_per_gas()
        .await
        .map_err(|e| format!("eth_gasPrice: {e}"))
}

/// A `validBefore` for an expiring-nonce transaction: the node's latest block time plus
/// [`TX_VALIDITY`]. The node's clock, not the wall clock, so it stays valid after
/// [`advance_time`] (a client using the wall clock, as SDK clients do, does not).
pub async fn valid_before(chain: &ChainClient) -> Result<u64, String> {
    let now = chain
        .latest_block_timestamp()
        .await
        .map_err(|e| e.to_string())?;
    Ok(now + TX_VALIDITY.as_secs())
}

/// [`unsigned_tx`] with the chain id, `validBefore` and fee filled in from the node at
/// `rpc_url`.
pub async fn expiring_tx(
    rpc_url: &str,
    calls: Vec<Call>,
    gas_limit: u64,
    fee_token: Option<Address>,
) -> Result<TempoTransaction, String> {
    let chain = client(rpc_url)?;
    let chain_id = chain
        .chain_id()
        .await
        .map_err(|e| format!("eth_chainId: {e}"))?;
    Ok(unsigned_tx(
        chain_id,
        calls,
        gas_limit,
        fee_token,
        valid_before(&chain).await?,
        max_fee_per_gas(&chain).await?,
    ))
}

/// Signs `tx` as its sender (secp256k1) and returns its EIP-2718 bytes (`0x76…`).
pub fn sign_tx(signer: &PrivateKeySigner, tx: TempoTransaction) -> Result<Vec<u8>, String> {
    let signature = signer
        .sign_hash_sync(&tx.signature_hash())
        .map_err(|e| format!("signing failed: {e}"))?;
    let signature = TempoSignature::Primitive(PrimitiveSignature::Secp256k1(signature));
    Ok(tx.into_signed(signature).encoded_2718())
}

/// Broadcasts signed transaction bytes (`eth_sendRawTransactionSync`) and returns the
/// receipt, which may record a revert: check its status. Fails after [`SEND_TIMEOUT`] when
/// the node never mines it (anvil drops invalid transactions without an error: gas limit
/// below the intrinsic cost, `validBefore` passed or too far ahead, a replayed expiring
/// nonce).
pub async fn send_raw(rpc_url: &str, raw: &[u8]) -> Result<TempoTransactionReceipt, String> {
    client(rpc_url)?
        .send_raw_sync(raw, SEND_TIMEOUT)
        .await
        .map_err(|e| format!("{e} (anvil drops invalid transactions silently)"))
}

/// Builds ([`expiring_tx`], the node picks the fee token), signs and sends `calls` from
/// `signer` with an explicit `gas_limit`, and returns the receipt (check its status: a
/// reverted transaction is `Ok`).
///
/// The expiring nonce's replay protection is the transaction hash: the same calls from the
/// same sender with the same `validBefore` and fee are one transaction, and the second send
/// is dropped. Vary something (an amount, the gas limit) to send the same calls twice in a
/// second.
pub async fn send_calls(
    rpc_url: &str,
    signer: &PrivateKeySigner,
    calls: Vec<Call>,
    gas_limit: u64,
) -> Result<TempoTransactionReceipt, String> {
    let tx = expiring_tx(rpc_url, calls, gas_limit, None).await?;
    send_raw(rpc_url, &sign_tx(signer, tx)?).await
}

/// Moves the node's clock `seconds` ahead (`evm_increaseTime`) and mines a block
/// (`evm_mine`); returns the new latest block time.
///
/// **Do this last, on a node of its own.** The clock stays ahead of the wall clock for the
/// rest of the node's life, and a node drops expiring-nonce transactions whose `validBefore`
/// is not after its block time: everything that takes `validBefore` from the wall clock
/// (SDK clients, [`crate::client::TempoPayer`], a server's checks) stops working on this
/// node. Transactions built by [`expiring_tx`] follow the node's clock and still work.
pub async fn advance_time(rpc_url: &str, seconds: u64) -> Result<u64, String> {
    let chain = client(rpc_url)?;
    let provider = chain.provider();
    provider
        .raw_request::<_, Value>("evm_increaseTime".into(), (seconds,))
        .await
        .map_err(|e| format!("evm_increaseTime: {e}"))?;
    provider
        .raw_request::<_, Value>("evm_mine".into(), ())
        .await
        .map_err(|e| format!("evm_mine: {e}"))?;
    chain
        .latest_block_timestamp()
        .await
        .map_err(|e| e.to_string())
}

/// A call of `input` on `to`, without value.
pub fn call(to: Address, input: impl Into<Bytes>) -> Call {
    Call {
        to: TxKind::Call(to),
        value: U256::ZERO,
        input: input.into(),
    }
}

fn client(rpc_url: &str) -> Result<ChainClient, String> {
    ChainClient::new(rpc_url, RPC_TIMEOUT).map_err(|e| e.to_string())
}
