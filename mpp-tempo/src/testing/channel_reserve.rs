//! A stand-in for the v2 TIP-20 channel reserve precompile (TIP-1034) on a local anvil node.
//!
//! anvil 1.7.1 stops at hardfork T4 and has nothing at [`TIP20_CHANNEL_RESERVE`] (the
//! precompile activates at T5). [`install`] puts a Solidity contract with the precompile's
//! exact ABI there (`anvil_setCode`), so that the v2 calls (calldata, events, read-back,
//! settle/close) can run against a real node. The contract and its compiled artifact live in
//! `tools/escrow-v2/` (see its README for what the stand-in proves and what it does not).
//!
//! Two differences the caller has to deal with:
//!
//! - The precompile binds a channel to `expiringNonceHash`, which it takes from the opening
//!   transaction; a contract cannot see that. Before sending an open, compute the hash with
//!   [`expiring_nonce_hash`](crate::session::expiring_nonce_hash) and hand it over with
//!   [`set_next_expiring_nonce_hash`] (a test hook, not part of the precompile).
//! - The precompile moves deposits without an allowance; the stand-in uses `transferFrom`, so
//!   the payer must [`approve`] it first (in a separate setup transaction, so the open
//!   transaction keeps the single `open` call the SDK clients send).
//!
//! ```no_run
//! # async fn demo() -> Result<(), String> {
//! use mpp_tempo::testing::{AnvilNode, DEV_ACCOUNTS, channel_reserve, tokens};
//! let Some(node) = AnvilNode::start() else { return Ok(()) };
//! channel_reserve::install(&node.rpc_url()).await?;
//! let payer: mpp_tempo::PrivateKeySigner = DEV_ACCOUNTS[1].private_key.parse().map_err(|e| format!("{e}"))?;
//! channel_reserve::approve(&node.rpc_url(), &payer, tokens::PATH_USD, alloy::primitives::U256::MAX).await?;
//! // ... build the open transaction, then:
//! // channel_reserve::set_next_expiring_nonce_hash(&node.rpc_url(), &payer, hash).await?;
//! # Ok(()) }
//! ```

use std::path::PathBuf;
use std::time::Duration;

use alloy::eips::eip2718::Encodable2718;
use alloy::json_abi::JsonAbi;
use alloy::network::ReceiptResponse;
use alloy::primitives::{Address, B256, Bytes, TxKind, U256};
use alloy::providers::Provider;
use alloy::signers::SignerSync;
use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::SolCall;
use alloy::transports::RpcError;
use serde_json::{Value, json};
use tempo_alloy::contracts::precompiles::ITIP20;
use tempo_alloy::rpc::TempoTransactionReceipt;
use tempo_primitives::transaction::{Call, PrimitiveSignature, TempoSignature, TempoTransaction};

use crate::chain::ChainClient;
use crate::session::TIP20_CHANNEL_RESERVE;

/// The compiled stand-in, relative to the workspace root.
pub const ARTIFACT_PATH: &str = "tools/escrow-v2/TIP20ChannelReserveStandIn.json";

/// How to rebuild the artifact (run from the workspace root).
pub const COMPILE_HINT: &str =
    "npm ci --prefix tools/escrow-v2 && node tools/escrow-v2/compile.mjs";

/// Gas limit of the setup transactions sent here (`approve`, the test hook). Generous on
/// purpose: T1+ charges about 250k gas for each new storage slot, and anvil underestimates
/// Tempo transactions.
pub const SETUP_GAS_LIMIT: u64 = 1_000_000;

/// How long to wait for a transaction sent here to be mined.
const SEND_TIMEOUT: Duration = Duration::from_secs(15);

/// How long one plain RPC call may take.
const RPC_TIMEOUT: Duration = Duration::from_secs(5);

alloy::sol! {
    /// The stand-in's only function beyond the precompile's ABI.
    interface IChannelReserveStandIn {
        /// TEST HOOK, not part of the precompile: the `expiringNonceHash` that the next
        /// transaction calling `open` binds its channels to (zero clears it).
        function setNextExpiringNonceHash(bytes32 hash) external;
    }
}

/// The compiled stand-in: `tools/escrow-v2/TIP20ChannelReserveStandIn.json`.
#[derive(Debug, Clone)]
pub struct StandInArtifact {
    /// The solc version that compiled it (e.g. `0.8.37+commit.…`).
    pub solc: String,
    /// The contract's ABI: the precompile's, plus `setNextExpiringNonceHash`.
    pub abi: JsonAbi,
    /// The runtime code that [`install`] places at [`TIP20_CHANNEL_RESERVE`].
    pub deployed_bytecode: Bytes,
}

/// The artifact's file: [`ARTIFACT_PATH`] under the workspace root.
pub fn artifact_path() -> PathBuf {
    super::workspace_root().join(ARTIFACT_PATH)
}

/// Reads and parses the committed artifact ([`artifact_path`]).
pub fn artifact() -> Result<StandInArtifact, String> {
    let path = artifact_path();
    let text = std::fs::read_to_string(&path).map_err(|e| {
        format!(
            "cannot read {} ({e}); rebuild it with `{COMPILE_HINT}`",
            path.display()
        )
    })?;
    let mut json: Value =
        serde_json::from_str(&text).map_err(|e| format!("{} is not JSON: {e}", path.display()))?;
    let field = |json: &mut Value, name: &str| {
        json.get_mut(name)
            .map(Value::take)
            .ok_or_else(|| format!("{} has no `{name}`", path.display()))
    };
    let solc = field(&mut json, "solc")?
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| format!("{}: `solc` is not a string", path.display()))?;
    let abi: JsonAbi = serde_json::from_value(field(&mut json, "abi")?)
        .map_err(|e| format!("{}: unreadable `abi`: {e}", path.display()))?;
    let code: Bytes = serde_json::from_value(field(&mut json, "deployedBytecode")?)
        .map_err(|e| format!("{}: unreadable `deployedBytecode`: {e}", path.display()))?;
    if code.is_empty() {
        return Err(format!("{}: `deployedBytecode` is empty", path.display()));
    }
    Ok(StandInArtifact {
        solc,
        abi,
        deployed_bytecode: code,
    })
}

/// Installs the stand-in at [`TIP20_CHANNEL_RESERVE`] on the anvil node at `rpc_url`
/// (`anvil_setCode`), and checks that the node now reports that code there.
pub async fn install(rpc_url: &str) -> Result<(), String> {
    let artifact = artifact()?;
    let chain = client(rpc_url)?;
    let provider = chain.provider();
    let set = provider.raw_request::<_, Value>(
        "anvil_setCode".into(),
        (TIP20_CHANNEL_RESERVE, artifact.deployed_bytecode.clone()),
    );
    tokio::time::timeout(RPC_TIMEOUT, set)
        .await
        .map_err(|_| "anvil_setCode timed out".to_owned())?
        .map_err(|e| format!("anvil_setCode: {e}"))?;
    let code = tokio::time::timeout(RPC_TIMEOUT, provider.get_code_at(TIP20_CHANNEL_RESERVE))
        .await
        .map_err(|_| "eth_getCode timed out".to_owned())?
        .map_err(|e| format!("eth_getCode: {e}"))?;
    if code != artifact.deployed_bytecode {
        return Err(format!(
            "after anvil_setCode the node reports {} bytes of code at {TIP20_CHANNEL_RESERVE}, not the stand-in's {}",
            code.len(),
            artifact.deployed_bytecode.len()
        ));
    }
    Ok(())
}

/// Sends the test hook `setNextExpiringNonceHash(hash)` from `from` and waits for it: the
/// next transaction that calls `open` on the stand-in binds its channels to `hash`. Compute
/// `hash` from the open transaction with
/// [`expiring_nonce_hash`](crate::session::expiring_nonce_hash). Fails when the
/// transaction reverts.
pub async fn set_next_expiring_nonce_hash(
    rpc_url: &str,
    from: &PrivateKeySigner,
    hash: B256,
) -> Result<TempoTransactionReceipt, String> {
    let input = IChannelReserveStandIn::setNextExpiringNonceHashCall { hash }.abi_encode();
    let receipt = send_calls(
        rpc_url,
        from,
        vec![call(TIP20_CHANNEL_RESERVE, input)],
        SETUP_GAS_LIMIT,
        None,
    )
    .await?;
    succeeded(receipt, "setNextExpiringNonceHash")
}

/// Lets the stand-in pull up to `amount` of `token` from `from` (`approve`): the stand-in's
/// `open` and `topUp` take the deposit with `transferFrom` (the precompile needs no
/// allowance). Fails when the transaction reverts.
pub async fn approve(
    rpc_url: &str,
    from: &PrivateKeySigner,
    token: Address,
    amount: U256,
) -> Result<TempoTransactionReceipt, String> {
    let input = ITIP20::approveCall {
        spender: TIP20_CHANNEL_RESERVE,
        amount,
    }
    .abi_encode();
    let receipt = send_calls(
        rpc_url,
        from,
        vec![call(token, input)],
        SETUP_GAS_LIMIT,
        None,
    )
    .await?;
    succeeded(receipt, "approve")
}

/// Signs and sends a Tempo (`0x76`) transaction holding `calls` from `from`, with the
/// account's next protocol nonce, an explicit `gas_limit` (anvil underestimates `0x76`
/// batches) and `fee_token` (`None`: the node picks the account's preference), and waits for
/// its receipt. The receipt may report a revert: check its status.
pub async fn send_calls(
    rpc_url: &str,
    from: &PrivateKeySigner,
    calls: Vec<Call>,
    gas_limit: u64,
    fee_token: Option<Address>,
) -> Result<TempoTransactionReceipt, String> {
    let chain = client(rpc_url)?;
    let provider = chain.provider();
    let chain_id = chain.chain_id().await.map_err(|e| e.to_string())?;
    let nonce = tokio::time::timeout(
        RPC_TIMEOUT,
        provider.get_transaction_count(from.address()).pending(),
    )
    .await
    .map_err(|_| "eth_getTransactionCount timed out".to_owned())?
    .map_err(|e| format!("eth_getTransactionCount: {e}"))?;
    let (max_fee_per_gas, max_priority_fee_per_gas) = fees(&chain).await?;
    let tx = TempoTransaction {
        chain_id,
        fee_token,
        max_priority_fee_per_gas,
        max_fee_per_gas,
        gas_limit,
        calls,
        nonce,
        ..Default::default()
    };
    let signature = from
        .sign_hash_sync(&tx.signature_hash())
        .map_err(|e| format!("signing failed: {e}"))?;
    let signed = tx.into_signed(TempoSignature::Primitive(PrimitiveSignature::Secp256k1(
        signature,
    )));
    chain
        .send_raw_sync(&signed.encoded_2718(), SEND_TIMEOUT)
        .await
        .map_err(|e| e.to_string())
}

/// `maxFeePerGas` and `maxPriorityFeePerGas` for a transaction sent now: twice the node's
/// gas price (at least 1 gwei), and 1 gwei of tip (capped by the former).
pub async fn fees(chain: &ChainClient) -> Result<(u128, u128), String> {
    let gas_price = tokio::time::timeout(RPC_TIMEOUT, chain.provider().get_gas_price())
        .await
        .map_err(|_| "eth_gasPrice timed out".to_owned())?
        .map_err(|e| format!("eth_gasPrice: {e}"))?;
    let max_fee = gas_price.saturating_mul(2).max(1_000_000_000);
    Ok((max_fee, 1_000_000_000u128.min(max_fee)))
}

/// What an `eth_call` did: returned, or reverted with some data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallOutcome {
    /// The call succeeded with this output.
    Returned(Bytes),
    /// The call reverted with this data (e.g. a custom error's 4-byte selector).
    Reverted(Bytes),
}

impl CallOutcome {
    /// The 4-byte selector of the revert data (a custom error), if the call reverted with one.
    pub fn error_selector(&self) -> Option<[u8; 4]> {
        match self {
            Self::Reverted(data) => data.get(..4).and_then(|s| s.try_into().ok()),
            Self::Returned(_) => None,
        }
    }
}

/// `eth_call` of `input` on `to` from `from` against the latest block: whether it returned
/// or reverted (and with what). `Err` only when the node failed or refused for another
/// reason.
pub async fn eth_call(
    rpc_url: &str,
    from: Address,
    to: Address,
    input: Bytes,
) -> Result<CallOutcome, String> {
    let chain = client(rpc_url)?;
    let request = json!({"from": from, "to": to, "input": input});
    let called = chain
        .provider()
        .raw_request::<_, Bytes>("eth_call".into(), (request, "latest"));
    match tokio::time::timeout(RPC_TIMEOUT, called).await {
        Err(_) => Err("eth_call timed out".into()),
        Ok(Ok(output)) => Ok(CallOutcome::Returned(output)),
        Ok(Err(RpcError::ErrorResp(e))) => match e.as_revert_data() {
            Some(data) => Ok(CallOutcome::Reverted(data)),
            None if e.message.contains("revert") => Ok(CallOutcome::Reverted(Bytes::new())),
            None => Err(format!("eth_call: {e}")),
        },
        Ok(Err(e)) => Err(format!("eth_call: {e}")),
    }
}

fn client(rpc_url: &str) -> Result<ChainClient, String> {
    ChainClient::new(rpc_url, RPC_TIMEOUT).map_err(|e| e.to_string())
}

fn call(to: Address, input: Vec<u8>) -> Call {
    Call {
        to: TxKind::Call(to),
        value: U256::ZERO,
        input: input.into(),
    }
}

fn succeeded(
    receipt: TempoTransactionReceipt,
    what: &str,
) -> Result<TempoTransactionReceipt, String> {
    if receipt.status() {
        Ok(receipt)
    } else {
        Err(format!(
            "{what} transaction {} reverted",
            receipt.transaction_hash()
        ))
    }
}
