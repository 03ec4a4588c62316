//! The node client ([`ChainClient`]) against a real local node (`anvil --network tempo`)
//! behind a fault-injecting JSON-RPC proxy ([`RpcFaultProxy`]): broadcasts whose answer is
//! lost or ambiguous are `Uncertain` (and the transaction may still be mined), a node that is
//! down is `Unavailable`, gas estimates of the very transaction. Each test skips (with a
//! message) when the node binary is not installed, unless `CI` is set.
//!
//! Run: `cargo test -p mpp-tempo --features testing --test rpc_faults -- --nocapture`

// Test helpers outside #[test] fns panic on broken fixtures by design.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::num::NonZeroU64;
use std::time::{Duration, Instant};

use alloy::eips::eip2718::Encodable2718;
use alloy::network::ReceiptResponse;
use alloy::primitives::{Address, B256, TxKind, U256, keccak256};
use alloy::providers::Provider;
use alloy::signers::SignerSync;
use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::SolCall;
use mpp_tempo::testing::{
    ANVIL_CHAIN_ID, AnvilNode, DEV_ACCOUNTS, RpcFaultControl, RpcFaultProxy, token_balance, tokens,
};
use mpp_tempo::{ChainClient, ChainError};
use serde_json::Value;
use tempo_alloy::contracts::precompiles::ITIP20;
use tempo_alloy::rpc::TempoTransactionReceipt;
use tempo_primitives::transaction::{
    Call, PrimitiveSignature, TEMPO_EXPIRING_NONCE_KEY, TempoSignature, TempoTransaction,
};

const AMOUNT: u64 = 10_000; // 0.01 pathUSD

struct Env {
    node: AnvilNode,
    proxy: RpcFaultProxy,
    faults: RpcFaultControl,
    /// The client under test, talking through the proxy.
    chain: ChainClient,
    /// A client talking to the node directly: the truth.
    direct: ChainClient,
}

async fn env() -> Option<Env> {
    let node = AnvilNode::start()?;
    let proxy = RpcFaultProxy::start(&node.rpc_url()).await.unwrap();
    let chain = ChainClient::new(&proxy.url(), Duration::from_secs(5)).unwrap();
    let direct = ChainClient::new(&node.rpc_url(), Duration::from_secs(5)).unwrap();
    let faults = proxy.control();
    Some(Env {
        node,
        proxy,
        faults,
        chain,
        direct,
    })
}

/// A fresh recipient per test (a transfer to it creates its balance slot).
fn recipient(name: &str) -> Address {
    Address::from_slice(&keccak256(name.as_bytes())[12..])
}

fn dev_signer(account: usize) -> PrivateKeySigner {
    DEV_ACCOUNTS[account].private_key.parse().unwrap()
}

/// A signed `0x76` payment.
struct Payment {
    tx: TempoTransaction,
    raw: Vec<u8>,
    hash: B256,
}

/// An unsigned pull payment as SDK clients build it: one `transferWithMemo` of pathUSD,
/// an expiring nonce, `validBefore` = the node's time + `valid_for` seconds, fee in pathUSD,
/// no gas limit yet.
async fn unsigned(chain: &ChainClient, to: Address, valid_for: u64) -> TempoTransaction {
    let now = chain.latest_block_timestamp().await.unwrap();
    let gas_price = chain.provider().get_gas_price().await.unwrap();
    let max_fee_per_gas = (gas_price.saturating_mul(6) / 5).max(1_000_000_000);
    let input = ITIP20::transferWithMemoCall {
        to,
        amount: U256::from(AMOUNT),
        memo: B256::with_last_byte(7),
    }
    .abi_encode();
    TempoTransaction {
        chain_id: ANVIL_CHAIN_ID,
        fee_token: Some(tokens::PATH_USD),
        max_priority_fee_per_gas: 1_000_000_000u128.min(max_fee_per_gas),
        max_fee_per_gas,
        gas_limit: 0,
        calls: vec![Call {
            to: TxKind::Call(tokens::PATH_USD),
            value: U256::ZERO,
            input: input.into(),
        }],
        nonce_key: TEMPO_EXPIRING_NONCE_KEY,
        nonce: 0,
        valid_before: NonZeroU64::new(now + valid_for),
        ..Default::default()
    }
}

fn sign(tx: TempoTransaction, signer: &PrivateKeySigner) -> Payment {
    let signature = signer.sign_hash_sync(&tx.signature_hash()).unwrap();
    let signed = tx
        .clone()
        .into_signed(TempoSignature::Primitive(PrimitiveSignature::Secp256k1(
            signature,
        )));
    Payment {
        raw: signed.encoded_2718(),
        hash: *signed.hash(),
        tx,
    }
}

/// A payment of [`AMOUNT`] from dev account `account` to `to`, with the estimated gas plus
/// the client's margin, valid for `valid_for` seconds.
async fn payment(chain: &ChainClient, account: usize, to: Address, valid_for: u64) -> Payment {
    let mut tx = unsigned(chain, to, valid_for).await;
    let gas = chain
        .estimate_gas(DEV_ACCOUNTS[account].address, &tx, None)
        .await
        .unwrap();
    tx.gas_limit = gas.saturating_mul(5) / 4 + 50_000;
    sign(tx, &dev_signer(account))
}

/// Polls for a receipt until `within` has passed.
async fn wait_for_receipt(
    chain: &ChainClient,
    hash: B256,
    within: Duration,
) -> Option<TempoTransactionReceipt> {
    let deadline = Instant::now() + within;
    loop {
        if let Ok(Some(receipt)) = chain.receipt(hash).await {
            return Some(receipt);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until the node's latest block is later than `valid_before`: from then on the
/// transaction can never be mined.
async fn wait_past(chain: &ChainClient, valid_before: u64) {
    let deadline = Instant::now() + Duration::from_secs(40);
    while chain.latest_block_timestamp().await.unwrap() <= valid_before {
        assert!(
            Instant::now() < deadline,
            "the node's clock does not advance"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn valid_before(tx: &TempoTransaction) -> u64 {
    tx.valid_before.map(NonZeroU64::get).unwrap()
}

async fn balance(env: &Env, who: Address) -> U256 {
    token_balance(&env.node.rpc_url(), tokens::PATH_USD, who)
        .await
        .unwrap()
}

fn uncertain(result: Result<impl std::fmt::Debug, ChainError>, what: &str) -> String {
    match result {
        Err(ChainError::Uncertain(detail)) => {
            println!("{what}: Uncertain: {detail}");
            detail
        }
        other => panic!("{what}: expected Uncertain, got {other:?}"),
    }
}

fn refused(result: Result<impl std::fmt::Debug, ChainError>, what: &str) -> String {
    match result {
        Err(ChainError::Refused(detail)) => {
            println!("{what}: Refused: {detail}");
            detail
        }
        other => panic!("{what}: expected Refused, got {other:?}"),
    }
}

fn unavailable(result: Result<impl std::fmt::Debug, ChainError>, what: &str, env: &Env) {
    match result {
        Err(ChainError::Unavailable(detail)) => {
            println!("{what}: Unavailable: {detail}");
            let port = env.proxy.port().to_string();
            assert!(
                !detail.contains(&port) && !detail.contains("127.0.0.1"),
                "{what}: the error names the RPC URL: {detail}"
            );
        }
        other => panic!("{what}: expected Unavailable, got {other:?}"),
    }
}

#[tokio::test]
async fn without_faults_everything_passes_through() {
    let Some(env) = env().await else { return };
    let to = recipient("pass-through");
    let p = payment(&env.chain, 1, to, 25).await;
    let receipt = env
        .chain
        .send_raw_sync(&p.raw, Duration::from_secs(10))
        .await
        .unwrap();
    assert!(receipt.status());
    assert_eq!(receipt.transaction_hash, p.hash);
    assert_eq!(balance(&env, to).await, U256::from(AMOUNT));
    assert_eq!(env.faults.send_calls(), 1);
    assert_eq!(env.faults.sends_forwarded(), 1);
    assert!(env.chain.receipt(p.hash).await.unwrap().is_some());
    assert_eq!(env.faults.receipt_calls(), 1);
}

#[tokio::test]
async fn a_held_sync_send_is_uncertain_and_the_transaction_is_still_mined() {
    let Some(env) = env().await else { return };
    let to = recipient("held");
    let p = payment(&env.chain, 1, to, 25).await;
    env.faults.hold_sync_send(Duration::from_secs(8));
    env.faults.hide_receipts_for(Duration::from_secs(6));
    let started = Instant::now();

    let result = env
        .chain
        .send_raw_sync(&p.raw, Duration::from_secs(1))
        .await;
    let detail = uncertain(result, "held sync send, client timeout 1 s");
    assert!(detail.contains("no answer within"), "{detail}");
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(env.faults.sends_forwarded(), 1);

    // Mined meanwhile: the node knows it, the proxy hides it.
    assert!(
        wait_for_receipt(&env.direct, p.hash, Duration::from_secs(5))
            .await
            .is_some()
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "too slow to look inside the hide window"
    );
    assert!(env.chain.receipt(p.hash).await.unwrap().is_none());

    // After the window, the receipt shows through the proxy too.
    let receipt = wait_for_receipt(&env.chain, p.hash, Duration::from_secs(10))
        .await
        .expect("the held transaction was never mined");
    assert!(started.elapsed() >= Duration::from_secs(6));
    assert!(receipt.status());
    assert_eq!(balance(&env, to).await, U256::from(AMOUNT));
    assert!(env.faults.receipt_calls() >= 2);
}

#[tokio::test]
async fn a_held_sync_send_answered_with_the_nodes_timeout_error_is_uncertain() {
    let Some(env) = env().await else { return };
    let to = recipient("held-then-error");
    let p = payment(&env.chain, 2, to, 25).await;
    env.faults.hold_sync_send(Duration::from_millis(800));

    let started = Instant::now();
    let result = env
        .chain
        .send_raw_sync(&p.raw, Duration::from_secs(10))
        .await;
    let detail = uncertain(result, "held sync send answered -32603");
    assert!(started.elapsed() >= Duration::from_millis(800));
    assert!(detail.contains("-32603"), "{detail}");
    let receipt = wait_for_receipt(&env.chain, p.hash, Duration::from_secs(10))
        .await
        .unwrap();
    assert!(receipt.status());
}

#[tokio::test]
async fn an_eip7966_answer_is_uncertain_and_the_transaction_is_mined() {
    let Some(env) = env().await else { return };
    let to = recipient("eip7966");
    let p = payment(&env.chain, 3, to, 25).await;
    env.faults.sync_send_error_eip7966();

    let result = env
        .chain
        .send_raw_sync(&p.raw, Duration::from_secs(10))
        .await;
    let detail = uncertain(result, "EIP-7966 answer");
    assert!(detail.contains("code 4"), "{detail}");
    assert!(detail.contains(&p.hash.to_string()), "{detail}");
    assert_eq!(env.faults.sends_forwarded(), 1);
    let receipt = wait_for_receipt(&env.chain, p.hash, Duration::from_secs(10))
        .await
        .unwrap();
    assert!(receipt.status());
    assert_eq!(balance(&env, to).await, U256::from(AMOUNT));
}

#[tokio::test]
async fn a_dropped_sync_send_is_uncertain_and_never_mined() {
    let Some(env) = env().await else { return };
    let to = recipient("dropped");
    let p = payment(&env.chain, 4, to, 5).await;
    env.faults.drop_sync_send();

    let result = env
        .chain
        .send_raw_sync(&p.raw, Duration::from_secs(10))
        .await;
    uncertain(result, "dropped sync send");
    assert_eq!(env.faults.send_calls(), 1);
    assert_eq!(env.faults.sends_forwarded(), 0);

    // Once validBefore has passed it can never be mined: a pending claim can be released.
    wait_past(&env.direct, valid_before(&p.tx)).await;
    assert!(env.direct.receipt(p.hash).await.unwrap().is_none());
    assert_eq!(balance(&env, to).await, U256::ZERO);
    env.faults.forward_sync_send();
    refused(
        env.chain.send_raw(&p.raw).await,
        "rebroadcast after validBefore",
    );
}

#[tokio::test]
async fn an_uncertain_broadcast_can_be_rebroadcast_with_the_same_bytes() {
    let Some(env) = env().await else { return };
    let to = recipient("rebroadcast");
    let p = payment(&env.chain, 5, to, 25).await;
    env.faults.drop_sync_send();
    uncertain(
        env.chain
            .send_raw_sync(&p.raw, Duration::from_secs(10))
            .await,
        "dropped sync send",
    );

    env.faults.forward_sync_send();
    assert_eq!(env.chain.send_raw(&p.raw).await.unwrap(), p.hash);
    let receipt = wait_for_receipt(&env.chain, p.hash, Duration::from_secs(10))
        .await
        .unwrap();
    assert!(receipt.status());
    // Once more, after it was mined: anvil answers with the hash again, and paid only once.
    assert_eq!(env.chain.send_raw(&p.raw).await.unwrap(), p.hash);
    match env
        .chain
        .send_raw_sync(&p.raw, Duration::from_secs(10))
        .await
    {
        Ok(again) => assert_eq!(again.transaction_hash, p.hash),
        // anvil answers some re-sends of a mined transaction with "already imported": an
        // uncertain outcome, which the receipt settles.
        Err(ChainError::Uncertain(reason)) => {
            assert!(reason.contains("already"), "{reason}");
            assert!(env.chain.receipt(p.hash).await.unwrap().is_some());
        }
        Err(e) => panic!("re-send of a mined transaction: {e}"),
    }
    assert_eq!(balance(&env, to).await, U256::from(AMOUNT));
}

#[tokio::test]
async fn a_transaction_the_node_already_holds_counts_as_sent() {
    let Some(env) = env().await else { return };
    let to = recipient("already-known");
    // validAfter in the future: the node keeps it in its pool for a while.
    let mut tx = unsigned(&env.chain, to, 25).await;
    let now = env.chain.latest_block_timestamp().await.unwrap();
    tx.valid_after = NonZeroU64::new(now + 8);
    tx.gas_limit = 400_000;
    let p = sign(tx, &dev_signer(6));
    assert_eq!(env.chain.send_raw(&p.raw).await.unwrap(), p.hash);
    // What anvil answers a second time (straight to the node):
    let again = env
        .direct
        .provider()
        .raw_request::<_, B256>(
            "eth_sendRawTransaction".into(),
            (alloy::hex::encode_prefixed(&p.raw),),
        )
        .await
        .unwrap_err();
    println!("anvil, the same pending transaction again: {again}");
    assert!(again.to_string().contains("already imported"), "{again}");
    // ... which counts as sent.
    assert_eq!(env.chain.send_raw(&p.raw).await.unwrap(), p.hash);
    assert_eq!(env.faults.sends_forwarded(), 2);
    let mined = wait_for_receipt(&env.direct, p.hash, Duration::from_secs(20)).await;
    println!(
        "a 0x76 with validAfter = now + 8 s: {}",
        match &mined {
            Some(r) => format!("mined, status {}", r.status()),
            None => "not mined within 20 s".into(),
        }
    );
}

#[tokio::test]
async fn a_node_that_is_down_is_unavailable_and_no_url_is_shown() {
    let Some(env) = env().await else { return };
    let to = recipient("down");
    let p = payment(&env.chain, 7, to, 25).await;
    env.faults.down(true).await.unwrap();

    unavailable(env.chain.receipt(p.hash).await, "receipt", &env);
    unavailable(
        env.chain.latest_block_timestamp().await,
        "latest block",
        &env,
    );
    unavailable(env.chain.chain_id().await, "chain id", &env);
    unavailable(
        env.chain
            .estimate_gas(DEV_ACCOUNTS[7].address, &p.tx, None)
            .await,
        "estimate",
        &env,
    );
    // The connection was refused: nothing was sent, so this is not Uncertain.
    unavailable(
        env.chain
            .send_raw_sync(&p.raw, Duration::from_secs(5))
            .await,
        "sync send",
        &env,
    );
    unavailable(env.chain.send_raw(&p.raw).await, "send", &env);
    assert_eq!(env.faults.send_calls(), 0);

    env.faults.down(false).await.unwrap();
    let receipt = env
        .chain
        .send_raw_sync(&p.raw, Duration::from_secs(10))
        .await
        .unwrap();
    assert!(receipt.status());
    assert_eq!(env.faults.sends_forwarded(), 1);
}

#[tokio::test]
async fn an_http_error_after_sending_is_uncertain() {
    let Some(env) = env().await else { return };
    let to = recipient("http-502");
    let p = payment(&env.chain, 8, to, 25).await;
    env.faults.http_error(Some(502));

    let detail = uncertain(
        env.chain
            .send_raw_sync(&p.raw, Duration::from_secs(5))
            .await,
        "sync send answered HTTP 502",
    );
    assert!(!detail.contains(&env.proxy.port().to_string()), "{detail}");
    uncertain(env.chain.send_raw(&p.raw).await, "send answered HTTP 502");
    unavailable(
        env.chain.receipt(p.hash).await,
        "receipt answered 502",
        &env,
    );

    env.faults.http_error(None);
    // This proxy answered without forwarding: the node never saw it.
    assert!(env.chain.receipt(p.hash).await.unwrap().is_none());
}

#[tokio::test]
async fn estimate_gas_is_what_the_very_transaction_needs() {
    let Some(env) = env().await else { return };
    let sender = DEV_ACCOUNTS[1].address;
    let signer = dev_signer(1);
    let to = recipient("estimate");
    let tx = unsigned(&env.chain, to, 25).await;
    let estimate = env.chain.estimate_gas(sender, &tx, None).await.unwrap();
    println!("estimate of one transferWithMemo to a new address: {estimate}");
    assert!(estimate > 21_000);
    // A sponsor's view (fee fields left out) of the same transaction.
    let sponsored = env
        .chain
        .estimate_gas(sender, &tx, Some(DEV_ACCOUNTS[0].address))
        .await
        .unwrap();
    println!("the same, fee paid by a sponsor: {sponsored}");
    assert!(sponsored > 21_000);

    // One gas short: mined, reverted, and the fee is paid anyway.
    let fee_token_before = balance(&env, sender).await;
    let mut short = tx.clone();
    short.gas_limit = estimate - 1;
    let short = sign(short, &signer);
    let receipt = env
        .chain
        .send_raw_sync(&short.raw, Duration::from_secs(10))
        .await
        .unwrap();
    println!(
        "gas = estimate - 1: status {}, gas used {}",
        receipt.status(),
        receipt.gas_used()
    );
    assert!(!receipt.status(), "a transaction one gas short succeeded");
    assert_eq!(balance(&env, to).await, U256::ZERO);
    assert!(
        balance(&env, sender).await < fee_token_before,
        "the reverted transaction's fee was not charged"
    );

    // The estimate itself: mined and paid.
    let mut exact = unsigned(&env.chain, to, 25).await;
    exact.gas_limit = estimate;
    let exact = sign(exact, &signer);
    let receipt = env
        .chain
        .send_raw_sync(&exact.raw, Duration::from_secs(10))
        .await
        .unwrap();
    assert!(receipt.status(), "a transaction with the estimate reverted");
    assert_eq!(balance(&env, to).await, U256::from(AMOUNT));

    // Below the intrinsic gas: anvil drops it silently (devnet.md §3.3.4), so the sync send
    // never answers and is Uncertain; it is never mined.
    let mut starved = unsigned(&env.chain, to, 5).await;
    starved.gas_limit = 30_000;
    let starved = sign(starved, &signer);
    uncertain(
        env.chain
            .send_raw_sync(&starved.raw, Duration::from_secs(2))
            .await,
        "gas below the intrinsic cost",
    );
    wait_past(&env.direct, valid_before(&starved.tx)).await;
    assert!(env.direct.receipt(starved.hash).await.unwrap().is_none());
}

#[tokio::test]
async fn estimate_gas_refuses_what_would_fail_and_checks_who_pays_the_fee() {
    let Some(env) = env().await else { return };
    // A fresh payer holding only pathUSD, asked to pay its fee in AlphaUSD.
    let fresh = PrivateKeySigner::from_bytes(&keccak256("rpc-faults fresh payer")).unwrap();
    let fund = payment(&env.chain, 2, fresh.address(), 25).await;
    assert!(
        env.chain
            .send_raw_sync(&fund.raw, Duration::from_secs(10))
            .await
            .unwrap()
            .status()
    );
    let mut tx = unsigned(&env.chain, recipient("fee-payer"), 25).await;
    tx.fee_token = Some(tokens::ALPHA_USD);
    refused(
        env.chain.estimate_gas(fresh.address(), &tx, None).await,
        "estimate, the payer pays its fee in a token it does not hold",
    );
    let sponsored = env
        .chain
        .estimate_gas(fresh.address(), &tx, Some(DEV_ACCOUNTS[0].address))
        .await
        .unwrap();
    assert!(sponsored > 21_000);

    // A transfer of more than the sender holds reverts: Refused, whoever pays the fee.
    let mut too_much = tx.clone();
    too_much.calls[0].input = ITIP20::transferWithMemoCall {
        to: recipient("fee-payer"),
        amount: U256::from(AMOUNT) * U256::from(1_000),
        memo: B256::ZERO,
    }
    .abi_encode()
    .into();
    refused(
        env.chain
            .estimate_gas(fresh.address(), &too_much, Some(DEV_ACCOUNTS[0].address))
            .await,
        "estimate of a transfer beyond the balance",
    );
    let mut no_calls = tx.clone();
    no_calls.calls.clear();
    refused(
        env.chain
            .estimate_gas(fresh.address(), &no_calls, None)
            .await,
        "estimate of no calls",
    );
}

#[tokio::test]
async fn definite_refusals_stay_refused() {
    let Some(env) = env().await else { return };
    let signer = dev_signer(9);
    let to = recipient("refusals");

    // validBefore too close (anvil wants more than now + 3 s).
    let mut tx = unsigned(&env.chain, to, 2).await;
    tx.gas_limit = 400_000;
    refused(
        env.chain
            .send_raw_sync(&sign(tx, &signer).raw, Duration::from_secs(10))
            .await,
        "validBefore too close",
    );

    let mut tx = unsigned(&env.chain, to, 25).await;
    tx.gas_limit = 400_000;
    tx.chain_id = 1;
    refused(
        env.chain
            .send_raw_sync(&sign(tx, &signer).raw, Duration::from_secs(10))
            .await,
        "wrong chain id",
    );

    let mut tx = unsigned(&env.chain, to, 25).await;
    tx.gas_limit = 400_000;
    tx.max_fee_per_gas = 0;
    tx.max_priority_fee_per_gas = 0;
    refused(
        env.chain
            .send_raw_sync(&sign(tx, &signer).raw, Duration::from_secs(10))
            .await,
        "max fee below the base fee",
    );

    let mut tx = unsigned(&env.chain, to, 25).await;
    tx.gas_limit = 40_000_000;
    refused(
        env.chain.send_raw(&sign(tx, &signer).raw).await,
        "gas limit above the block's",
    );

    refused(
        env.chain
            .send_raw_sync(&[0x76, 0x01], Duration::from_secs(10))
            .await,
        "garbage bytes",
    );
    assert_eq!(balance(&env, to).await, U256::ZERO);
}

#[tokio::test]
async fn block_timestamps() {
    let Some(env) = env().await else { return };
    let latest = env.chain.latest_block_timestamp().await.unwrap();
    let wall = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(
        latest.abs_diff(wall) < 60,
        "latest {latest}, wall clock {wall}"
    );
    let genesis = env.chain.block_timestamp(0).await.unwrap();
    assert!(genesis <= latest);
    let number = env.chain.provider().get_block_number().await.unwrap();
    assert!(env.chain.block_timestamp(number).await.unwrap() >= genesis);
    match env.chain.block_timestamp(number + 1_000_000).await {
        Err(ChainError::Unavailable(detail)) => println!("a future block: {detail}"),
        other => panic!("a future block: {other:?}"),
    }
}

#[tokio::test]
async fn batch_requests_pass_through_unchanged() {
    let Some(env) = env().await else { return };
    let batch = serde_json::json!([
        {"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []},
        {"jsonrpc": "2.0", "id": 2, "method": "eth_getTransactionReceipt", "params": [B256::ZERO]},
    ]);
    env.faults.hide_receipts_for(Duration::from_secs(60));
    let answer: Value = reqwest::Client::new()
        .post(env.proxy.url())
        .json(&batch)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let answers = answer.as_array().expect("a batch answer");
    assert_eq!(answers.len(), 2);
    let chain_id = answers.iter().find(|a| a["id"] == 1).unwrap();
    assert_eq!(chain_id["result"], format!("{ANVIL_CHAIN_ID:#x}"));
    // Batches are not inspected: nothing counted.
    assert_eq!(env.faults.receipt_calls(), 0);
}
