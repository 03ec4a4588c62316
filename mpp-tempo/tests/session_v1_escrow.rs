//! Session v1 against the canonical `TempoStreamChannel` escrow on a real local node
//! (`anvil --network tempo`, one node per test): our v1 ABI binding and EIP-712 domain agree
//! with the contract, and the transactions our session client signs (open, sponsored open,
//! topUp) and the vouchers it signs (settle, close) do what they should on chain.
//!
//! The escrow's creation code is read from the `mpp` 0.18.2 crate in the cargo registry
//! (`mpp_tempo::testing::stream_channel`). Each test skips (with a message) when the node
//! binary is not installed, unless `CI` is set.
//!
//! Run: `cargo test -p mpp-tempo --all-features --test session_v1_escrow -- --nocapture`

// Test helpers outside #[test] fns panic on broken fixtures by design.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use alloy::eips::eip2718::Encodable2718;
use alloy::network::ReceiptResponse;
use alloy::primitives::{Address, B256, U256};
use alloy::providers::Provider;
use alloy::sol_types::{SolCall, SolEvent};
use mpp_tempo::charge::{FEE_PAYER_ENVELOPE_TYPE, FeePayerEnvelope, Sponsor, SponsorPolicy};
use mpp_tempo::session::abi::v1::ITempoStreamChannel;
use mpp_tempo::session::client::{OpenParams, SessionSigner, open_calls, top_up_calls};
use mpp_tempo::session::{
    CLOSE_GRACE_PERIOD, SessionPayload, SessionProtocol, V1Channel, VOUCHER_TYPEHASH_V1,
    VoucherDomain,
};
use mpp_tempo::testing::{ANVIL_CHAIN_ID, AnvilNode, DEV_ACCOUNTS, stream_channel, tokens};
use mpp_tempo::{ChainClient, PrivateKeySigner};
use tempo_alloy::contracts::precompiles::{ITIP20, TIP_FEE_MANAGER_ADDRESS};
use tempo_alloy::rpc::TempoTransactionReceipt;
use time::OffsetDateTime;

/// The channel token. None of the accounts below pays its fees in it (devnet.md §2.3), so
/// token balance deltas are exact.
const TOKEN: Address = tokens::ALPHA_USD;
/// Gas for approve + open: anvil's estimate covers only the last call of a batch. The first
/// open on an escrow uses 1.59M (1.34M later: the escrow's token balance slot exists then),
/// yet needs a limit above 1.8M: at 1.8M it reverts, reporting only 416k gas used.
const OPEN_GAS: u64 = 2_000_000;
/// Gas for a sponsored approve + open. The default sponsor policy caps `gasLimit ×
/// maxFeePerGas` at 5e16: at the ~25 gwei a fresh node's price asks for, about 2M.
const SPONSORED_OPEN_GAS: u64 = 1_900_000;
/// Gas for approve + topUp.
const TOP_UP_GAS: u64 = 1_000_000;
/// Gas for one escrow call by the payee or the payer (settle, close, requestClose, withdraw).
const CALL_GAS: u64 = 1_000_000;

/// Account 0 deploys; 1 and 3 pay (fees in BetaUSD and pathUSD); 2 is the payee (fees in
/// ThetaUSD); 5 sponsors (fees in pathUSD).
const DEPLOYER: usize = 0;
const PAYER: usize = 1;
const PAYEE: usize = 2;
const SPONSORED_PAYER: usize = 3;
const FEE_PAYER: usize = 5;

fn key(account: usize) -> PrivateKeySigner {
    DEV_ACCOUNTS[account].private_key.parse().unwrap()
}

fn addr(account: usize) -> Address {
    DEV_ACCOUNTS[account].address
}

/// A node with a freshly deployed escrow.
struct Env {
    node: AnvilNode,
    chain: ChainClient,
    escrow: Address,
    domain: VoucherDomain,
}

impl Env {
    async fn start() -> Option<Self> {
        let node = AnvilNode::start()?;
        let rpc = node.rpc_url();
        let receipt = stream_channel::deploy_with_receipt(&rpc, &key(DEPLOYER))
            .await
            .unwrap();
        let escrow = receipt.contract_address().unwrap();
        println!("GAS deploy: {}", receipt.gas_used());
        let chain = ChainClient::new(&rpc, Duration::from_secs(5)).unwrap();
        let chain_id = chain.chain_id().await.unwrap();
        assert_eq!(chain_id, ANVIL_CHAIN_ID);
        Some(Self {
            node,
            chain,
            escrow,
            domain: VoucherDomain::new(SessionProtocol::V1, chain_id, escrow),
        })
    }

    fn rpc(&self) -> String {
        self.node.rpc_url()
    }

    fn contract(
        &self,
    ) -> ITempoStreamChannel::ITempoStreamChannelInstance<
        &alloy::providers::RootProvider<tempo_alloy::TempoNetwork>,
        tempo_alloy::TempoNetwork,
    > {
        ITempoStreamChannel::new(self.escrow, self.chain.provider())
    }

    async fn channel(&self, id: B256) -> ITempoStreamChannel::Channel {
        self.contract().getChannel(id).call().await.unwrap()
    }

    async fn balance(&self, token: Address, who: Address) -> U256 {
        self.chain.token_balance(token, who).await.unwrap()
    }

    /// Sends one escrow call from `account`.
    async fn send(&self, account: usize, input: Vec<u8>) -> TempoTransactionReceipt {
        let call = stream_channel::call(self.escrow, input);
        stream_channel::send_calls(&self.rpc(), &key(account), vec![call], CALL_GAS)
            .await
            .unwrap()
    }

    /// The escrow's events of type `E` in `receipt`.
    fn events<E: SolEvent>(&self, receipt: &TempoTransactionReceipt) -> Vec<E> {
        receipt
            .inner
            .logs()
            .iter()
            .filter(|l| l.address() == self.escrow && l.topic0() == Some(&E::SIGNATURE_HASH))
            .map(|l| E::decode_log(&l.inner).unwrap().data)
            .collect()
    }

    /// The one event of type `E` in `receipt`.
    fn event<E: SolEvent + std::fmt::Debug>(&self, receipt: &TempoTransactionReceipt) -> E {
        let mut events = self.events::<E>(receipt);
        assert_eq!(events.len(), 1, "expected exactly one {}", E::SIGNATURE);
        events.remove(0)
    }

    async fn block_time(&self, receipt: &TempoTransactionReceipt) -> u64 {
        self.chain
            .block_timestamp(receipt.block_number.unwrap())
            .await
            .unwrap()
    }
}

/// The fees a receipt records: `(fee token, who paid, amount)` of each TIP-20 `Transfer` to
/// the fee manager (devnet.md §3.3.1: the receipt's `feePayer` is always the sender on
/// anvil).
fn fee_transfers(receipt: &TempoTransactionReceipt) -> Vec<(Address, Address, U256)> {
    receipt
        .inner
        .logs()
        .iter()
        .filter(|l| l.topic0() == Some(&ITIP20::Transfer::SIGNATURE_HASH))
        .map(|l| {
            (
                l.address(),
                ITIP20::Transfer::decode_log(&l.inner).unwrap().data,
            )
        })
        .filter(|(_, t)| t.to == TIP_FEE_MANAGER_ADDRESS)
        .map(|(token, t)| (token, t.from, t.amount))
        .collect()
}

/// What `getChannel` returns for a closed or withdrawn channel.
fn finalized_channel() -> ITempoStreamChannel::Channel {
    ITempoStreamChannel::Channel {
        finalized: true,
        ..unknown_channel()
    }
}

/// What `getChannel` returns for an id no channel has.
fn unknown_channel() -> ITempoStreamChannel::Channel {
    ITempoStreamChannel::Channel {
        finalized: false,
        closeRequestedAt: 0,
        payer: Address::ZERO,
        payee: Address::ZERO,
        token: Address::ZERO,
        authorizedSigner: Address::ZERO,
        deposit: 0,
        settled: 0,
    }
}

fn salt() -> B256 {
    B256::random()
}

/// Runs without a node: the creation code is found in the cargo registry and decodes.
#[test]
fn the_canonical_creation_code_is_found() {
    let path = stream_channel::fixture_path().unwrap();
    println!("escrow creation code: {}", path.display());
    let code = stream_channel::canonical_bytecode().unwrap();
    assert_eq!(
        code.len(),
        6_358,
        "the creation code of mpp 0.18.2's fixture"
    );
}

#[tokio::test]
async fn the_canonical_escrow_agrees_with_our_binding_and_domain() {
    let Some(env) = Env::start().await else {
        return;
    };
    let escrow = env.contract();
    let runtime = env.chain.provider().get_code_at(env.escrow).await.unwrap();
    println!(
        "escrow {} runtime code: {} bytes",
        env.escrow,
        runtime.len()
    );

    assert_eq!(
        escrow.domainSeparator().call().await.unwrap(),
        env.domain.separator()
    );
    assert_eq!(
        escrow.VOUCHER_TYPEHASH().call().await.unwrap(),
        VOUCHER_TYPEHASH_V1
    );
    assert_eq!(
        escrow.CLOSE_GRACE_PERIOD().call().await.unwrap(),
        CLOSE_GRACE_PERIOD.as_secs()
    );
    assert_eq!(CLOSE_GRACE_PERIOD.as_secs(), 900);

    // With a zero and a distinct authorized signer: both are hashed as given.
    for authorized_signer in [Address::ZERO, Address::repeat_byte(0x66)] {
        let channel = V1Channel {
            payer: addr(PAYER),
            payee: addr(PAYEE),
            token: TOKEN,
            salt: salt(),
            authorized_signer,
        };
        let on_chain = escrow
            .computeChannelId(
                channel.payer,
                channel.payee,
                channel.token,
                channel.salt,
                channel.authorized_signer,
            )
            .call()
            .await
            .unwrap();
        let id = channel.channel_id(env.escrow, ANVIL_CHAIN_ID);
        assert_eq!(on_chain, id, "computeChannelId, signer {authorized_signer}");
        for amount in [0u128, 1, 1_000_000, u128::from(u64::MAX) + 1, u128::MAX] {
            assert_eq!(
                escrow.getVoucherDigest(id, amount).call().await.unwrap(),
                env.domain.voucher_digest(id, amount).unwrap(),
                "getVoucherDigest({id}, {amount})"
            );
        }
    }

    // An unknown channel reads back as all zeros.
    let unknown = env.channel(B256::repeat_byte(0x42)).await;
    assert_eq!(unknown, unknown_channel());
}

#[tokio::test]
async fn open_top_up_settle_and_close_with_our_session_client() {
    let Some(env) = Env::start().await else {
        return;
    };
    let rpc = env.rpc();
    let (payer, payee) = (addr(PAYER), addr(PAYEE));
    let session = SessionSigner::new(key(PAYER), env.domain);
    let deposit = 1_000_000u128;
    let params = OpenParams {
        payee,
        operator: Address::ZERO,
        token: TOKEN,
        deposit,
        salt: salt(),
        authorized_signer: payer,
    };

    // Open: approve + open in one 0x76 transaction, signed by our client.
    let calls = open_calls(&env.domain, &params).unwrap();
    assert_eq!(calls.len(), 2, "approve + open");
    let tx = stream_channel::expiring_tx(&rpc, calls, OPEN_GAS, None)
        .await
        .unwrap();
    let signed = session.open(tx, &params, 100, false).unwrap();
    let SessionPayload::Open(open) = &signed.payload else {
        panic!("not an open payload: {:?}", signed.payload)
    };
    assert_eq!(open.transaction[0], 0x76);
    assert_eq!(open.channel_id, signed.channel.channel_id);
    let id = signed.channel.channel_id;
    let payer_before = env.balance(TOKEN, payer).await;
    let escrow_before = env.balance(TOKEN, env.escrow).await;
    let receipt = stream_channel::send_raw(&rpc, &open.transaction)
        .await
        .unwrap();
    println!("GAS open (approve + open): {}", receipt.gas_used());
    assert!(receipt.status(), "open reverted: {receipt:?}");
    assert_eq!(Some(receipt.transaction_hash()), signed.tx_hash);
    let opened = env.event::<ITempoStreamChannel::ChannelOpened>(&receipt);
    assert_eq!(
        opened,
        ITempoStreamChannel::ChannelOpened {
            channelId: id,
            payer,
            payee,
            token: TOKEN,
            authorizedSigner: payer,
            salt: params.salt,
            deposit: U256::from(deposit),
        }
    );
    assert_eq!(
        env.channel(id).await,
        ITempoStreamChannel::Channel {
            finalized: false,
            closeRequestedAt: 0,
            payer,
            payee,
            token: TOKEN,
            authorizedSigner: payer,
            deposit,
            settled: 0,
        }
    );
    assert_eq!(
        payer_before - env.balance(TOKEN, payer).await,
        U256::from(deposit)
    );
    assert_eq!(
        env.balance(TOKEN, env.escrow).await - escrow_before,
        U256::from(deposit)
    );
    // Top up: approve + topUp, signed by our client.
    let additional = 500_000u128;
    let calls = top_up_calls(&env.domain, &signed.channel, TOKEN, additional).unwrap();
    assert_eq!(calls.len(), 2, "approve + topUp");
    let tx = stream_channel::expiring_tx(&rpc, calls, TOP_UP_GAS, None)
        .await
        .unwrap();
    let top_up = session
        .top_up(tx, &signed.channel, additional, false)
        .unwrap();
    let SessionPayload::TopUp(top_up_payload) = &top_up.payload else {
        panic!("not a topUp payload: {:?}", top_up.payload)
    };
    assert_eq!(top_up_payload.additional_deposit, additional);
    let payer_before = env.balance(TOKEN, payer).await;
    let receipt = stream_channel::send_raw(&rpc, &top_up_payload.transaction)
        .await
        .unwrap();
    println!("GAS topUp (approve + topUp): {}", receipt.gas_used());
    assert!(receipt.status(), "topUp reverted: {receipt:?}");
    assert_eq!(Some(receipt.transaction_hash()), top_up.tx_hash);
    let total = deposit + additional;
    assert_eq!(
        env.event::<ITempoStreamChannel::TopUp>(&receipt),
        ITempoStreamChannel::TopUp {
            channelId: id,
            payer,
            payee,
            additionalDeposit: U256::from(additional),
            newDeposit: U256::from(total),
        }
    );
    assert_eq!(env.channel(id).await.deposit, total);
    assert_eq!(
        payer_before - env.balance(TOKEN, payer).await,
        U256::from(additional)
    );

    // A voucher signed for another escrow (another EIP-712 domain) does not settle.
    let elsewhere = SessionSigner::new(
        key(PAYER),
        VoucherDomain::new(
            SessionProtocol::V1,
            ANVIL_CHAIN_ID,
            Address::repeat_byte(0xee),
        ),
    );
    let foreign = elsewhere.sign_voucher(id, 300_000).unwrap();
    let payee_before = env.balance(TOKEN, payee).await;
    let settle = |amount: u128, signature: &[u8]| {
        ITempoStreamChannel::settleCall {
            channelId: id,
            cumulativeAmount: amount,
            signature: signature.to_vec().into(),
        }
        .abi_encode()
    };
    let receipt = env.send(PAYEE, settle(300_000, foreign.as_bytes())).await;
    assert!(!receipt.status(), "a foreign-domain voucher settled");
    assert_eq!(env.channel(id).await.settled, 0);
    assert_eq!(env.balance(TOKEN, payee).await, payee_before);

    // Settle by the payee with our client's voucher.
    let settled = 300_000u128;
    let voucher = session.sign_voucher(id, settled).unwrap();
    assert_eq!(voucher.as_bytes().len(), 65);
    let escrow_before = env.balance(TOKEN, env.escrow).await;
    let receipt = env.send(PAYEE, settle(settled, voucher.as_bytes())).await;
    println!("GAS settle: {}", receipt.gas_used());
    assert!(receipt.status(), "settle reverted: {receipt:?}");
    assert_eq!(
        env.event::<ITempoStreamChannel::Settled>(&receipt),
        ITempoStreamChannel::Settled {
            channelId: id,
            payer,
            payee,
            cumulativeAmount: U256::from(settled),
            deltaPaid: U256::from(settled),
            newSettled: U256::from(settled),
        }
    );
    assert_eq!(
        env.balance(TOKEN, payee).await - payee_before,
        U256::from(settled)
    );
    assert_eq!(
        escrow_before - env.balance(TOKEN, env.escrow).await,
        U256::from(settled)
    );
    assert_eq!(env.channel(id).await.settled, settled);

    // Close by the payee at the cumulative amount spent: the payee gets the rest of it, the
    // payer the rest of the deposit.
    let cumulative = 700_000u128;
    let voucher = session.sign_voucher(id, cumulative).unwrap();
    let (payer_before, payee_before, escrow_before) = (
        env.balance(TOKEN, payer).await,
        env.balance(TOKEN, payee).await,
        env.balance(TOKEN, env.escrow).await,
    );
    let close = ITempoStreamChannel::closeCall {
        channelId: id,
        cumulativeAmount: cumulative,
        signature: voucher.as_bytes().to_vec().into(),
    };
    let receipt = env.send(PAYEE, close.abi_encode()).await;
    println!("GAS close: {}", receipt.gas_used());
    assert!(receipt.status(), "close reverted: {receipt:?}");
    let to_payee = cumulative - settled;
    let refund = total - cumulative;
    assert_eq!(
        env.balance(TOKEN, payee).await - payee_before,
        U256::from(to_payee)
    );
    assert_eq!(
        env.balance(TOKEN, payer).await - payer_before,
        U256::from(refund)
    );
    assert_eq!(
        escrow_before - env.balance(TOKEN, env.escrow).await,
        U256::from(to_payee + refund)
    );
    let closed = env.event::<ITempoStreamChannel::ChannelClosed>(&receipt);
    println!("ChannelClosed on close: {closed:?}");
    assert_eq!(
        (closed.channelId, closed.payer, closed.payee),
        (id, payer, payee)
    );
    // `settledToPayee` is the channel's final settled total, not what this close paid.
    assert_eq!(closed.settledToPayee, U256::from(cumulative));
    assert_eq!(closed.refundedToPayer, U256::from(refund));
    // The escrow deletes a closed channel and keeps only its `finalized` flag.
    assert_eq!(env.channel(id).await, finalized_channel());

    // A finalized channel takes no more vouchers.
    let voucher = session.sign_voucher(id, total).unwrap();
    let receipt = env.send(PAYEE, settle(total, voucher.as_bytes())).await;
    assert!(!receipt.status(), "settled on a finalized channel");
}

#[tokio::test]
async fn sponsored_open_then_request_close_and_withdraw() {
    let Some(env) = Env::start().await else {
        return;
    };
    let rpc = env.rpc();
    let (payer, payee, fee_payer) = (addr(SPONSORED_PAYER), addr(PAYEE), addr(FEE_PAYER));
    let session = SessionSigner::new(key(SPONSORED_PAYER), env.domain);
    let deposit = 2_000_000u128;
    let params = OpenParams {
        payee,
        operator: Address::ZERO,
        token: TOKEN,
        deposit,
        salt: salt(),
        authorized_signer: payer,
    };

    // The payer signs a 0x78 fee-payer envelope; a sponsor checks it against the default
    // policy, co-signs and broadcasts it.
    let calls = open_calls(&env.domain, &params).unwrap();
    let tx = stream_channel::expiring_tx(&rpc, calls, SPONSORED_OPEN_GAS, None)
        .await
        .unwrap();
    let signed = session.open(tx, &params, 100, true).unwrap();
    assert_eq!(signed.tx_hash, None, "a sponsored open has no hash yet");
    let SessionPayload::Open(open) = &signed.payload else {
        panic!("not an open payload: {:?}", signed.payload)
    };
    assert_eq!(open.transaction[0], FEE_PAYER_ENVELOPE_TYPE);
    let envelope = FeePayerEnvelope::decode(&open.transaction).unwrap();
    assert_eq!(envelope.sender, payer);
    let sponsor = Sponsor::new(key(FEE_PAYER), SponsorPolicy::default());
    let now = OffsetDateTime::now_utc();
    let fee_token = sponsor
        .check(&envelope, now, now + Duration::from_secs(300))
        .unwrap();
    assert_eq!(fee_token, tokens::PATH_USD);
    let broadcast = sponsor.co_sign(&envelope, fee_token).unwrap();

    let id = signed.channel.channel_id;
    let payer_fee_before = env.balance(tokens::PATH_USD, payer).await;
    let payer_before = env.balance(TOKEN, payer).await;
    let sponsor_before = env.balance(fee_token, fee_payer).await;
    let receipt = stream_channel::send_raw(&rpc, &broadcast.encoded_2718())
        .await
        .unwrap();
    println!(
        "GAS sponsored open (approve + open): {}",
        receipt.gas_used()
    );
    assert!(receipt.status(), "sponsored open reverted: {receipt:?}");
    assert_eq!(receipt.transaction_hash(), *broadcast.hash());
    let opened = env.event::<ITempoStreamChannel::ChannelOpened>(&receipt);
    assert_eq!(opened.channelId, id);
    assert_eq!(opened.payer, payer, "the sender opens, not the fee payer");
    assert_eq!(opened.deposit, U256::from(deposit));
    assert_eq!(opened.salt, params.salt);
    let state = env.channel(id).await;
    assert_eq!((state.payer, state.deposit), (payer, deposit));
    // The fee payer paid the fee; the payer paid exactly the deposit.
    let fees = fee_transfers(&receipt);
    assert_eq!(fees.len(), 1, "one fee transfer: {fees:?}");
    let (token, from, fee) = fees[0];
    assert_eq!((token, from), (fee_token, fee_payer));
    assert!(fee > U256::ZERO);
    assert_eq!(
        sponsor_before - env.balance(fee_token, fee_payer).await,
        fee
    );
    assert_eq!(
        env.balance(tokens::PATH_USD, payer).await,
        payer_fee_before,
        "the payer paid a fee"
    );
    assert_eq!(
        payer_before - env.balance(TOKEN, payer).await,
        U256::from(deposit)
    );

    // The payer asks to close.
    let request = ITempoStreamChannel::requestCloseCall { channelId: id }.abi_encode();
    let receipt = env.send(SPONSORED_PAYER, request).await;
    println!("GAS requestClose: {}", receipt.gas_used());
    assert!(receipt.status(), "requestClose reverted: {receipt:?}");
    let requested_at = env.block_time(&receipt).await;
    assert_eq!(
        env.event::<ITempoStreamChannel::CloseRequested>(&receipt),
        ITempoStreamChannel::CloseRequested {
            channelId: id,
            payer,
            payee,
            closeGraceEnd: U256::from(requested_at + CLOSE_GRACE_PERIOD.as_secs()),
        }
    );
    let state = env.channel(id).await;
    assert_eq!(state.closeRequestedAt, requested_at);
    assert!(!state.finalized);

    // Too early: withdraw reverts and nothing moves.
    let withdraw = ITempoStreamChannel::withdrawCall { channelId: id }.abi_encode();
    let payer_before = env.balance(TOKEN, payer).await;
    let receipt = env.send(SPONSORED_PAYER, withdraw.clone()).await;
    assert!(!receipt.status(), "withdraw before the grace period ended");
    assert_eq!(env.balance(TOKEN, payer).await, payer_before);
    assert!(!env.channel(id).await.finalized);

    // Last on this node: move its clock past the grace period; withdraw refunds the payer.
    let now = stream_channel::advance_time(&rpc, CLOSE_GRACE_PERIOD.as_secs() + 5)
        .await
        .unwrap();
    assert!(now >= requested_at + CLOSE_GRACE_PERIOD.as_secs());
    let receipt = env.send(SPONSORED_PAYER, withdraw).await;
    println!("GAS withdraw: {}", receipt.gas_used());
    assert!(receipt.status(), "withdraw reverted: {receipt:?}");
    assert_eq!(
        env.balance(TOKEN, payer).await - payer_before,
        U256::from(deposit)
    );
    let closed = env.event::<ITempoStreamChannel::ChannelClosed>(&receipt);
    println!("ChannelClosed on withdraw: {closed:?}");
    assert_eq!(
        (closed.channelId, closed.payer, closed.payee),
        (id, payer, payee)
    );
    assert_eq!(closed.settledToPayee, U256::ZERO);
    assert_eq!(closed.refundedToPayer, U256::from(deposit));
    assert_eq!(env.channel(id).await, finalized_channel());
}
