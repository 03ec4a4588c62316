//! v2 sessions on chain, against the Solidity stand-in for the TIP-20 channel reserve
//! precompile (`tools/escrow-v2`), installed at the precompile's address on a local anvil
//! node (`mpp_tempo::testing::channel_reserve`).
//!
//! What this proves: our v2 calldata (open, topUp, settle, close, requestClose, withdraw),
//! channel ids, EIP-712 voucher digests and signatures, and event/state decoding agree with
//! a contract that has the precompile's exact ABI. What it cannot prove: that the node
//! derives `expiringNonceHash` as we do (the stand-in is told the hash by a test hook), and
//! the precompile's allowance-free token pull (the stand-in needs an `approve`).
//!
//! Each chain test skips (with a message) when the node binary is not installed, unless `CI`
//! is set. Run:
//! `ANVIL_BIN=… cargo test -p mpp-tempo --all-features --test session_v2_standin`

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::num::NonZeroU64;
use std::time::Duration;

use alloy::network::ReceiptResponse;
use alloy::primitives::{Address, B256, Bytes, Signature, TxKind, U256, aliases::U96};
use alloy::providers::Provider;
use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::{SolCall, SolError, SolEvent};
use mpp_tempo::ChainClient;
use mpp_tempo::session::abi::v2::ITIP20ChannelReserve as Reserve;
use mpp_tempo::session::client::{
    OpenParams, SessionChannel, SessionSigner, open_calls, top_up_calls,
};
use mpp_tempo::session::{
    CLOSE_GRACE_PERIOD, ChannelDescriptor, SECP256K1N_HALF, SessionPayload, SessionProtocol,
    TIP20_CHANNEL_RESERVE, VOUCHER_TYPEHASH_V2, VoucherDomain, VoucherSignature,
    expiring_nonce_hash,
};
use mpp_tempo::testing::channel_reserve::{self, CallOutcome};
use mpp_tempo::testing::{ANVIL_CHAIN_ID, AnvilNode, DEV_ACCOUNTS, token_balance, tokens};
use tempo_alloy::contracts::precompiles::ITIP20;
use tempo_alloy::rpc::TempoTransactionReceipt;
use tempo_primitives::transaction::{Call, TEMPO_EXPIRING_NONCE_KEY, TempoTransaction};

const ESCROW: Address = TIP20_CHANNEL_RESERVE;
/// The channel's token; every transaction pays its fee in another one (ALPHA_USD), so the
/// channel's balances move by exactly the channel's amounts.
const TOKEN: Address = tokens::PATH_USD;
const FEE_TOKEN: Address = tokens::ALPHA_USD;
const GAS: u64 = 2_000_000;
const SEND_TIMEOUT: Duration = Duration::from_secs(15);

fn key(account: usize) -> PrivateKeySigner {
    DEV_ACCOUNTS[account].private_key.parse().unwrap()
}

fn u96(value: u128) -> U96 {
    U96::from(value)
}

/// A running node with the stand-in installed.
struct Env {
    node: AnvilNode,
    chain: ChainClient,
    chain_id: u64,
    domain: VoucherDomain,
}

impl Env {
    async fn start() -> Option<Self> {
        let node = AnvilNode::start()?;
        channel_reserve::install(&node.rpc_url())
            .await
            .expect("install the stand-in");
        let chain = ChainClient::new(&node.rpc_url(), Duration::from_secs(5)).unwrap();
        let chain_id = chain.chain_id().await.unwrap();
        assert_eq!(chain_id, ANVIL_CHAIN_ID);
        let domain = VoucherDomain::new(SessionProtocol::V2, chain_id, ESCROW);
        Some(Self {
            node,
            chain,
            chain_id,
            domain,
        })
    }

    fn rpc(&self) -> String {
        self.node.rpc_url()
    }

    async fn balance(&self, owner: Address) -> u128 {
        token_balance(&self.rpc(), TOKEN, owner)
            .await
            .unwrap()
            .to::<u128>()
    }

    /// A Tempo transaction with an expiring nonce (what SDK clients send for open/topUp),
    /// valid for 20 s of node time.
    async fn expiring_tx(&self, calls: Vec<Call>) -> TempoTransaction {
        let now = self.chain.latest_block_timestamp().await.unwrap();
        let (max_fee_per_gas, max_priority_fee_per_gas) =
            channel_reserve::fees(&self.chain).await.unwrap();
        TempoTransaction {
            chain_id: self.chain_id,
            fee_token: Some(FEE_TOKEN),
            max_priority_fee_per_gas,
            max_fee_per_gas,
            gas_limit: GAS,
            calls,
            nonce_key: TEMPO_EXPIRING_NONCE_KEY,
            nonce: 0,
            valid_before: NonZeroU64::new(now + 20),
            ..Default::default()
        }
    }

    async fn broadcast(&self, raw: &Bytes) -> TempoTransactionReceipt {
        self.chain
            .send_raw_sync(raw, SEND_TIMEOUT)
            .await
            .expect("broadcast")
    }

    /// Sends one call to the stand-in from `from` (fee in FEE_TOKEN); the receipt, whatever
    /// its status.
    async fn send(&self, from: &PrivateKeySigner, input: Vec<u8>) -> TempoTransactionReceipt {
        let call = Call {
            to: TxKind::Call(ESCROW),
            value: U256::ZERO,
            input: input.into(),
        };
        channel_reserve::send_calls(&self.rpc(), from, vec![call], GAS, Some(FEE_TOKEN))
            .await
            .expect("send")
    }

    async fn call(&self, from: Address, input: Vec<u8>) -> CallOutcome {
        channel_reserve::eth_call(&self.rpc(), from, ESCROW, input.into())
            .await
            .expect("eth_call")
    }

    /// Asserts that calling `input` from `from` reverts with the custom error `E`.
    async fn assert_reverts<E: SolError>(&self, from: Address, input: Vec<u8>, what: &str) {
        let outcome = self.call(from, input).await;
        assert_eq!(
            outcome.error_selector(),
            Some(E::SELECTOR),
            "{what}: expected {}, got {outcome:?}",
            E::SIGNATURE
        );
    }

    /// Opens a channel the way a client does: approve (setup), build the open transaction
    /// from `open_calls`, hand its expiring nonce hash to the test hook, sign it with
    /// `SessionSigner::open`, broadcast the payload's transaction.
    async fn open(
        &self,
        payer: &PrivateKeySigner,
        params: &OpenParams,
        initial_voucher: u128,
    ) -> (SessionChannel, TempoTransactionReceipt, B256) {
        channel_reserve::approve(&self.rpc(), payer, params.token, U256::MAX)
            .await
            .expect("approve");
        let calls = open_calls(&self.domain, params).unwrap();
        assert_eq!(calls.len(), 1, "a v2 open is one call");
        assert_eq!(calls[0].to, TxKind::Call(ESCROW));
        let tx = self.expiring_tx(calls).await;
        let nonce_hash = expiring_nonce_hash(&tx, payer.address());
        channel_reserve::set_next_expiring_nonce_hash(&self.rpc(), payer, nonce_hash)
            .await
            .expect("set the expiring nonce hash");
        let signer = SessionSigner::new(payer.clone(), self.domain);
        let signed = signer.open(tx, params, initial_voucher, false).unwrap();
        let SessionPayload::Open(payload) = &signed.payload else {
            panic!("not an open payload: {:?}", signed.payload);
        };
        let descriptor = signed.channel.descriptor.expect("v2 descriptor");
        assert_eq!(descriptor.expiring_nonce_hash, nonce_hash);
        let receipt = self.broadcast(&payload.transaction).await;
        assert!(receipt.status(), "open reverted: {receipt:?}");
        assert_eq!(Some(receipt.transaction_hash()), signed.tx_hash);
        (signed.channel, receipt, nonce_hash)
    }
}

/// The stand-in's events of type `E` in `receipt`, decoded.
fn events<E: SolEvent>(receipt: &TempoTransactionReceipt) -> Vec<E> {
    receipt
        .inner
        .logs()
        .iter()
        .filter(|l| l.address() == ESCROW && l.topics().first() == Some(&E::SIGNATURE_HASH))
        .map(|l| E::decode_log_data(l.data()).expect("decodes"))
        .collect()
}

/// topic0 of every stand-in log in `receipt`, in order.
fn escrow_topics(receipt: &TempoTransactionReceipt) -> Vec<B256> {
    receipt
        .inner
        .logs()
        .iter()
        .filter(|l| l.address() == ESCROW)
        .filter_map(|l| l.topics().first().copied())
        .collect()
}

/// `signature` with `s` replaced by `n − s` and the parity flipped: the same signer under
/// plain `ecrecover`, but high-s.
fn high_s(signature: &[u8]) -> Vec<u8> {
    // n = 2 · ⌊n/2⌋ + 1 (n is odd).
    let n = SECP256K1N_HALF * U256::from(2) + U256::from(1);
    let s = U256::from_be_slice(&signature[32..64]);
    let mut out = signature.to_vec();
    out[32..64].copy_from_slice(&(n - s).to_be_bytes::<32>());
    out[64] = if signature[64] == 27 { 28 } else { 27 };
    out
}

fn settle_input(d: &ChannelDescriptor, cumulative: u128, signature: &[u8]) -> Vec<u8> {
    Reserve::settleCall {
        descriptor: d.to_abi(),
        cumulativeAmount: u96(cumulative),
        signature: Bytes::copy_from_slice(signature),
    }
    .abi_encode()
}

fn close_input(
    d: &ChannelDescriptor,
    cumulative: u128,
    capture: u128,
    signature: &[u8],
) -> Vec<u8> {
    Reserve::closeCall {
        descriptor: d.to_abi(),
        cumulativeAmount: u96(cumulative),
        captureAmount: u96(capture),
        signature: Bytes::copy_from_slice(signature),
    }
    .abi_encode()
}

/// The committed artifact's ABI is the canonical binding's, function for function, event
/// for event, error for error (names, types, indexed flags, mutability), plus the test hook.
#[test]
fn artifact_abi_is_the_precompile_abi_plus_the_test_hook() {
    let artifact = channel_reserve::artifact().expect("artifact");
    assert!(
        artifact.solc.starts_with("0.8.37+"),
        "solc {}",
        artifact.solc
    );
    let canonical = Reserve::abi::contract();
    let ours = &artifact.abi;

    let functions = |abi: &alloy::json_abi::JsonAbi| -> BTreeSet<String> {
        abi.functions()
            .map(|f| format!("{} | {}", f.full_signature(), f.signature_with_outputs()))
            .collect()
    };
    let mut expected = functions(&canonical);
    expected.insert(format!(
        "{} | {}",
        "function setNextExpiringNonceHash(bytes32 hash)", "setNextExpiringNonceHash(bytes32)()"
    ));
    assert_eq!(functions(ours), expected);
    assert_eq!(canonical.functions().count(), 15, "the binding changed");

    let events = |abi: &alloy::json_abi::JsonAbi| -> BTreeSet<String> {
        abi.events().map(|e| e.full_signature()).collect()
    };
    assert_eq!(events(ours), events(&canonical));
    assert_eq!(canonical.events().count(), 6);

    let errors = |abi: &alloy::json_abi::JsonAbi| -> BTreeSet<String> {
        abi.errors().map(|e| e.signature()).collect()
    };
    assert_eq!(errors(ours), errors(&canonical));
    assert_eq!(canonical.errors().count(), 13);

    // Struct layouts come through the tuple types above; the selectors are the vectors'.
    assert_eq!(
        ours.function("getChannel").unwrap()[0].selector(),
        Reserve::getChannelCall::SELECTOR
    );
    assert_eq!(
        ours.event("ChannelOpened").unwrap()[0].selector(),
        Reserve::ChannelOpened::SIGNATURE_HASH
    );
    let code = &artifact.deployed_bytecode;
    assert!(
        code.len() > 1000 && code.len() <= 24_576,
        "{} bytes",
        code.len()
    );
}

/// open → requestClose → topUp (cancels it) → settle → refusals → close with capture <
/// cumulative, all through the client's own calls and signatures.
#[tokio::test]
async fn v2_channel_lifecycle_on_the_stand_in() {
    let Some(env) = Env::start().await else {
        return;
    };
    let reserve = Reserve::new(ESCROW, env.chain.provider());
    let payer_key = key(1);
    let payer = payer_key.address();
    let payee_key = key(2);
    let payee = payee_key.address();
    let stranger = key(3);

    // The stand-in's domain and constants are the client's.
    assert_eq!(
        reserve.domainSeparator().call().await.unwrap(),
        env.domain.separator()
    );
    assert_eq!(
        reserve.VOUCHER_TYPEHASH().call().await.unwrap(),
        VOUCHER_TYPEHASH_V2
    );
    assert_eq!(
        reserve.CLOSE_GRACE_PERIOD().call().await.unwrap(),
        CLOSE_GRACE_PERIOD.as_secs()
    );

    // ---- open ------------------------------------------------------------------------
    let deposit = 1_000_000u128;
    let params = OpenParams {
        payee,
        operator: Address::ZERO,
        token: TOKEN,
        deposit,
        salt: B256::random(),
        authorized_signer: Address::ZERO, // the payer signs
    };
    let payer_before = env.balance(payer).await;
    let escrow_before = env.balance(ESCROW).await;
    let (channel, receipt, nonce_hash) = env.open(&payer_key, &params, 100_000).await;
    let d = channel.descriptor.unwrap();
    let id = channel.channel_id;
    assert_eq!(id, d.channel_id(ESCROW, env.chain_id));
    assert_eq!(
        (
            d.payer,
            d.payee,
            d.operator,
            d.token,
            d.salt,
            d.authorized_signer
        ),
        (
            payer,
            payee,
            Address::ZERO,
            TOKEN,
            params.salt,
            Address::ZERO
        )
    );

    let opened = events::<Reserve::ChannelOpened>(&receipt);
    assert_eq!(opened.len(), 1, "exactly one ChannelOpened");
    let e = &opened[0];
    assert_eq!(e.channelId, id);
    assert_eq!(e.expiringNonceHash, nonce_hash);
    assert_eq!(e.deposit, u96(deposit));
    assert_eq!(
        (
            e.payer,
            e.payee,
            e.operator,
            e.token,
            e.authorizedSigner,
            e.salt
        ),
        (
            d.payer,
            d.payee,
            d.operator,
            d.token,
            d.authorized_signer,
            d.salt
        )
    );
    assert_eq!(
        escrow_topics(&receipt),
        vec![Reserve::ChannelOpened::SIGNATURE_HASH]
    );
    let pulled: Vec<_> = receipt
        .inner
        .logs()
        .iter()
        .filter(|l| l.address() == TOKEN)
        .filter_map(|l| ITIP20::Transfer::decode_log_data(l.data()).ok())
        .collect();
    assert_eq!(pulled.len(), 1, "one Transfer of the channel token");
    assert_eq!(
        (pulled[0].from, pulled[0].to, pulled[0].amount),
        (payer, ESCROW, U256::from(deposit))
    );
    assert_eq!(env.balance(payer).await, payer_before - deposit);
    assert_eq!(env.balance(ESCROW).await, escrow_before + deposit);

    // Read back: by descriptor, by id, in a batch, and the id the contract computes.
    let onchain = reserve.getChannel(d.to_abi()).call().await.unwrap();
    assert_eq!(ChannelDescriptor::from_abi(&onchain.descriptor), d);
    let open_state = Reserve::ChannelState {
        settled: u96(0),
        deposit: u96(deposit),
        closeRequestedAt: 0,
    };
    assert_eq!(onchain.state, open_state);
    assert_eq!(
        reserve.getChannelState(id).call().await.unwrap(),
        open_state
    );
    let unknown = B256::random();
    let batch = reserve
        .getChannelStatesBatch(vec![id, unknown])
        .call()
        .await
        .unwrap();
    assert_eq!(batch.len(), 2);
    assert_eq!(batch[0], open_state);
    assert_eq!(batch[1].deposit, u96(0));
    assert_eq!(
        reserve
            .computeChannelId(
                d.payer,
                d.payee,
                d.operator,
                d.token,
                d.salt,
                d.authorized_signer,
                d.expiring_nonce_hash
            )
            .call()
            .await
            .unwrap(),
        id
    );

    // The hook was consumed: a second open without a new hash is refused.
    let reopen = Reserve::openCall {
        payee,
        operator: Address::ZERO,
        token: TOKEN,
        deposit: u96(1),
        salt: B256::random(),
        authorizedSigner: Address::ZERO,
    }
    .abi_encode();
    env.assert_reverts::<Reserve::ExpiringNonceHashNotSet>(payer, reopen, "open without a hash")
        .await;
    // Open's own checks come before the hash: a TIP-20 or zero payee, a zero deposit.
    for (bad_payee, bad_deposit, what) in [
        (tokens::PATH_USD, 1u128, "a TIP-20 payee"),
        (Address::ZERO, 1, "a zero payee"),
    ] {
        let input = Reserve::openCall {
            payee: bad_payee,
            operator: Address::ZERO,
            token: TOKEN,
            deposit: u96(bad_deposit),
            salt: B256::random(),
            authorizedSigner: Address::ZERO,
        }
        .abi_encode();
        env.assert_reverts::<Reserve::InvalidPayee>(payer, input, what)
            .await;
    }
    let zero_deposit = Reserve::openCall {
        payee,
        operator: Address::ZERO,
        token: TOKEN,
        deposit: u96(0),
        salt: B256::random(),
        authorizedSigner: Address::ZERO,
    }
    .abi_encode();
    env.assert_reverts::<Reserve::ZeroDeposit>(payer, zero_deposit, "a zero deposit")
        .await;

    // Voucher digests agree, from 0 up to the uint96 maximum.
    for amount in [0u128, 1, 300_000, (1u128 << 96) - 1] {
        assert_eq!(
            reserve
                .getVoucherDigest(id, u96(amount))
                .call()
                .await
                .unwrap(),
            env.domain.voucher_digest(id, amount).unwrap(),
            "digest of {amount}"
        );
    }

    // ---- requestClose, then a topUp cancels it ------------------------------------------
    let receipt = env
        .send(
            &payer_key,
            Reserve::requestCloseCall {
                descriptor: d.to_abi(),
            }
            .abi_encode(),
        )
        .await;
    assert!(receipt.status(), "requestClose reverted");
    let block_ts = env
        .chain
        .block_timestamp(receipt.block_number().unwrap())
        .await
        .unwrap();
    let requested = events::<Reserve::CloseRequested>(&receipt);
    assert_eq!(requested.len(), 1);
    assert_eq!(requested[0].channelId, id);
    assert_eq!(
        requested[0].closeGraceEnd,
        U256::from(block_ts + CLOSE_GRACE_PERIOD.as_secs())
    );
    let state = reserve.getChannelState(id).call().await.unwrap();
    assert_eq!(u64::from(state.closeRequestedAt), block_ts);

    let top_up = 500_000u128;
    let calls = top_up_calls(&env.domain, &channel, TOKEN, top_up).unwrap();
    assert_eq!(calls.len(), 1, "a v2 topUp is one call");
    let tx = env.expiring_tx(calls).await;
    let signer = SessionSigner::new(payer_key.clone(), env.domain);
    let signed = signer.top_up(tx, &channel, top_up, false).unwrap();
    let SessionPayload::TopUp(payload) = &signed.payload else {
        panic!("not a topUp payload");
    };
    let receipt = env.broadcast(&payload.transaction).await;
    assert!(receipt.status(), "topUp reverted");
    assert_eq!(
        escrow_topics(&receipt),
        vec![
            Reserve::CloseRequestCancelled::SIGNATURE_HASH,
            Reserve::TopUp::SIGNATURE_HASH
        ]
    );
    let topped = events::<Reserve::TopUp>(&receipt);
    assert_eq!(topped[0].channelId, id);
    assert_eq!(topped[0].additionalDeposit, u96(top_up));
    assert_eq!(topped[0].newDeposit, u96(deposit + top_up));
    let deposit = deposit + top_up;
    assert_eq!(
        reserve.getChannelState(id).call().await.unwrap(),
        Reserve::ChannelState {
            settled: u96(0),
            deposit: u96(deposit),
            closeRequestedAt: 0,
        }
    );
    assert_eq!(env.balance(payer).await, payer_before - deposit);

    // ---- settle (payee, voucher from SessionSigner::sign_voucher) -----------------------
    let settle_amount = 300_000u128;
    let voucher = signer.sign_voucher(id, settle_amount).unwrap();
    env.domain
        .verify_voucher(id, settle_amount, &voucher, d.signer())
        .expect("our own verifier accepts it");
    let payee_before = env.balance(payee).await;
    let receipt = env
        .send(
            &payee_key,
            settle_input(&d, settle_amount, voucher.as_bytes()),
        )
        .await;
    assert!(receipt.status(), "settle reverted");
    assert_eq!(env.balance(payee).await - payee_before, settle_amount);
    let settled = events::<Reserve::Settled>(&receipt);
    assert_eq!(settled.len(), 1);
    assert_eq!(
        (
            settled[0].cumulativeAmount,
            settled[0].deltaPaid,
            settled[0].newSettled
        ),
        (u96(settle_amount), u96(settle_amount), u96(settle_amount))
    );
    assert_eq!(
        reserve.getChannelState(id).call().await.unwrap().settled,
        u96(settle_amount)
    );

    // ---- refusals -----------------------------------------------------------------------
    let next = 600_000u128;
    let good = signer.sign_voucher(id, next).unwrap();
    // Control: the same call with the canonical signature goes through.
    assert!(
        matches!(
            env.call(payee, settle_input(&d, next, good.as_bytes()))
                .await,
            CallOutcome::Returned(_)
        ),
        "a good voucher must settle"
    );
    // High s: ecrecover would still give the payer, the contract (and our verifier) refuse.
    let malleated = high_s(good.as_bytes());
    let digest = env.domain.voucher_digest(id, next).unwrap();
    let recovered = Signature::new(
        U256::from_be_slice(&malleated[..32]),
        U256::from_be_slice(&malleated[32..64]),
        malleated[64] == 28,
    )
    .recover_address_from_prehash(&digest)
    .unwrap();
    assert_eq!(
        recovered, payer,
        "the malleated signature recovers to the payer"
    );
    assert!(
        env.domain
            .verify_voucher(
                id,
                next,
                &VoucherSignature::from_bytes(&malleated).unwrap(),
                payer
            )
            .is_err(),
        "our verifier refuses high s"
    );
    env.assert_reverts::<Reserve::InvalidSignature>(
        payee,
        settle_input(&d, next, &malleated),
        "high-s voucher",
    )
    .await;
    let receipt = env
        .send(&payee_key, settle_input(&d, next, &malleated))
        .await;
    assert!(!receipt.status(), "a high-s settle must revert on chain");
    // v ∈ {0, 1}.
    let mut v01 = good.as_bytes().to_vec();
    v01[64] -= 27;
    env.assert_reverts::<Reserve::InvalidSignature>(payee, settle_input(&d, next, &v01), "v=0/1")
        .await;
    // Signed by someone else.
    let other = SessionSigner::new(stranger.clone(), env.domain)
        .sign_voucher(id, next)
        .unwrap();
    env.assert_reverts::<Reserve::InvalidSignature>(
        payee,
        settle_input(&d, next, other.as_bytes()),
        "stranger's voucher",
    )
    .await;
    // Wrong caller, non-increasing, above deposit.
    env.assert_reverts::<Reserve::NotPayeeOrOperator>(
        payer,
        settle_input(&d, next, good.as_bytes()),
        "settle by the payer",
    )
    .await;
    let same = signer.sign_voucher(id, settle_amount).unwrap();
    env.assert_reverts::<Reserve::AmountNotIncreasing>(
        payee,
        settle_input(&d, settle_amount, same.as_bytes()),
        "settle at the settled amount",
    )
    .await;
    let too_much = signer.sign_voucher(id, deposit + 1).unwrap();
    env.assert_reverts::<Reserve::AmountExceedsDeposit>(
        payee,
        settle_input(&d, deposit + 1, too_much.as_bytes()),
        "settle above the deposit",
    )
    .await;
    assert_eq!(
        reserve.getChannelState(id).call().await.unwrap().settled,
        u96(settle_amount),
        "nothing was settled by the refused calls"
    );

    // A second settle pays only the delta over what is settled.
    let payee_before = env.balance(payee).await;
    let receipt = env
        .send(&payee_key, settle_input(&d, next, good.as_bytes()))
        .await;
    assert!(receipt.status(), "second settle reverted");
    assert_eq!(
        env.balance(payee).await - payee_before,
        next - settle_amount
    );
    let settled = events::<Reserve::Settled>(&receipt);
    assert_eq!(settled.len(), 1);
    assert_eq!(
        (
            settled[0].cumulativeAmount,
            settled[0].deltaPaid,
            settled[0].newSettled
        ),
        (u96(next), u96(next - settle_amount), u96(next))
    );
    let settled_total = next;

    // ---- close with capture < cumulative --------------------------------------------------
    let cumulative = 900_000u128;
    let capture = 700_000u128;
    let close_voucher = signer.sign_voucher(id, cumulative).unwrap();
    env.assert_reverts::<Reserve::CaptureAmountInvalid>(
        payee,
        close_input(&d, cumulative, cumulative + 1, close_voucher.as_bytes()),
        "capture above cumulative",
    )
    .await;
    env.assert_reverts::<Reserve::CaptureAmountInvalid>(
        payee,
        close_input(&d, cumulative, settled_total - 1, close_voucher.as_bytes()),
        "capture below settled",
    )
    .await;
    env.assert_reverts::<Reserve::InvalidSignature>(
        payee,
        close_input(&d, cumulative, capture, &high_s(close_voucher.as_bytes())),
        "high-s close",
    )
    .await;
    let payer_before_close = env.balance(payer).await;
    let payee_before_close = env.balance(payee).await;
    let escrow_before_close = env.balance(ESCROW).await;
    let receipt = env
        .send(
            &payee_key,
            close_input(&d, cumulative, capture, close_voucher.as_bytes()),
        )
        .await;
    assert!(receipt.status(), "close reverted");
    assert_eq!(
        env.balance(payee).await - payee_before_close,
        capture - settled_total
    );
    assert_eq!(
        env.balance(payer).await - payer_before_close,
        deposit - capture
    );
    assert_eq!(
        escrow_before_close - env.balance(ESCROW).await,
        deposit - settled_total
    );
    assert_eq!(env.balance(ESCROW).await, escrow_before);
    let closed = events::<Reserve::ChannelClosed>(&receipt);
    assert_eq!(closed.len(), 1);
    // `settledToPayee` is the channel's total (= capture), not what this call paid.
    assert_eq!(
        (closed[0].settledToPayee, closed[0].refundedToPayer),
        (u96(capture), u96(deposit - capture))
    );
    let zero = Reserve::ChannelState {
        settled: u96(0),
        deposit: u96(0),
        closeRequestedAt: 0,
    };
    assert_eq!(reserve.getChannelState(id).call().await.unwrap(), zero);
    assert_eq!(
        reserve.getChannel(d.to_abi()).call().await.unwrap().state,
        zero
    );
    env.assert_reverts::<Reserve::ChannelNotFound>(
        payee,
        settle_input(&d, next, good.as_bytes()),
        "settle after close",
    )
    .await;
}

/// The payer's forced close: requestClose → withdraw refused during the grace period →
/// withdraw after it refunds `deposit − settled`. With an explicit authorized signer and an
/// operator who settles.
#[tokio::test]
async fn v2_forced_close_after_the_grace_period() {
    let Some(env) = Env::start().await else {
        return;
    };
    let reserve = Reserve::new(ESCROW, env.chain.provider());
    let payer_key = key(4);
    let payer = payer_key.address();
    let payee = key(5).address();
    let operator_key = key(6);

    let deposit = 200_000u128;
    let params = OpenParams {
        payee,
        operator: operator_key.address(),
        token: TOKEN,
        deposit,
        salt: B256::random(),
        authorized_signer: payer, // what SDK clients send
    };
    let (channel, _, _) = env.open(&payer_key, &params, 10_000).await;
    let d = channel.descriptor.unwrap();
    let id = channel.channel_id;
    let signer = SessionSigner::new(payer_key.clone(), env.domain);

    // The operator settles for the payee; the payee gets the money.
    let payee_before = env.balance(payee).await;
    let voucher = signer.sign_voucher(id, 50_000).unwrap();
    let receipt = env
        .send(&operator_key, settle_input(&d, 50_000, voucher.as_bytes()))
        .await;
    assert!(receipt.status(), "operator settle reverted");
    assert_eq!(env.balance(payee).await - payee_before, 50_000);

    let request = Reserve::requestCloseCall {
        descriptor: d.to_abi(),
    }
    .abi_encode();
    env.assert_reverts::<Reserve::NotPayer>(payee, request.clone(), "requestClose by the payee")
        .await;
    let receipt = env.send(&payer_key, request.clone()).await;
    assert!(receipt.status(), "requestClose reverted");
    let first = reserve
        .getChannelState(id)
        .call()
        .await
        .unwrap()
        .closeRequestedAt;
    assert_ne!(first, 0);
    // Idempotent: a second request keeps the deadline and emits nothing.
    let receipt = env.send(&payer_key, request).await;
    assert!(receipt.status());
    assert!(escrow_topics(&receipt).is_empty());
    assert_eq!(
        reserve
            .getChannelState(id)
            .call()
            .await
            .unwrap()
            .closeRequestedAt,
        first
    );

    let withdraw = Reserve::withdrawCall {
        descriptor: d.to_abi(),
    }
    .abi_encode();
    env.assert_reverts::<Reserve::CloseNotReady>(payer, withdraw.clone(), "withdraw too early")
        .await;

    // Past the grace period.
    let provider = env.chain.provider();
    provider
        .raw_request::<_, serde_json::Value>(
            "evm_increaseTime".into(),
            (CLOSE_GRACE_PERIOD.as_secs() + 1,),
        )
        .await
        .unwrap();
    provider
        .raw_request::<_, serde_json::Value>("evm_mine".into(), ())
        .await
        .unwrap();

    let payer_before = env.balance(payer).await;
    let receipt = env.send(&payer_key, withdraw).await;
    assert!(receipt.status(), "withdraw reverted");
    let closed = events::<Reserve::ChannelClosed>(&receipt);
    assert_eq!(closed.len(), 1);
    assert_eq!(
        (closed[0].settledToPayee, closed[0].refundedToPayer),
        (u96(50_000), u96(deposit - 50_000))
    );
    assert_eq!(env.balance(payer).await - payer_before, deposit - 50_000);
    assert_eq!(
        reserve.getChannelState(id).call().await.unwrap().deposit,
        u96(0)
    );
}

/// Several `open`s in one transaction share its expiring nonce hash (as with the
/// precompile); the same id twice in one transaction is refused and reverts the batch.
#[tokio::test]
async fn v2_batched_opens_share_the_transaction_hash() {
    let Some(env) = Env::start().await else {
        return;
    };
    let reserve = Reserve::new(ESCROW, env.chain.provider());
    let payer_key = key(7);
    let payer = payer_key.address();
    let payee = key(8).address();
    channel_reserve::approve(&env.rpc(), &payer_key, TOKEN, U256::MAX)
        .await
        .expect("approve");
    let params = |salt: B256| OpenParams {
        payee,
        operator: Address::ZERO,
        token: TOKEN,
        deposit: 1_000,
        salt,
        authorized_signer: Address::ZERO,
    };
    let send_batch = async |salts: [B256; 2]| {
        let mut calls = open_calls(&env.domain, &params(salts[0])).unwrap();
        calls.extend(open_calls(&env.domain, &params(salts[1])).unwrap());
        let tx = env.expiring_tx(calls).await;
        let hash = expiring_nonce_hash(&tx, payer);
        channel_reserve::set_next_expiring_nonce_hash(&env.rpc(), &payer_key, hash)
            .await
            .expect("set the hash");
        let signature =
            alloy::signers::SignerSync::sign_hash_sync(&payer_key, &tx.signature_hash()).unwrap();
        let signed = tx.into_signed(tempo_primitives::transaction::TempoSignature::Primitive(
            tempo_primitives::transaction::PrimitiveSignature::Secp256k1(signature),
        ));
        let raw = alloy::eips::eip2718::Encodable2718::encoded_2718(&signed);
        (env.broadcast(&raw.into()).await, hash)
    };
    let id = |salt: B256, hash: B256| {
        ChannelDescriptor {
            payer,
            payee,
            operator: Address::ZERO,
            token: TOKEN,
            salt,
            authorized_signer: Address::ZERO,
            expiring_nonce_hash: hash,
        }
        .channel_id(ESCROW, env.chain_id)
    };

    let salts = [B256::random(), B256::random()];
    let (receipt, hash) = send_batch(salts).await;
    assert!(receipt.status(), "two opens in one transaction");
    let opened = events::<Reserve::ChannelOpened>(&receipt);
    assert_eq!(opened.len(), 2);
    for (event, salt) in opened.iter().zip(salts) {
        assert_eq!(event.expiringNonceHash, hash);
        assert_eq!(event.channelId, id(salt, hash));
        assert_eq!(
            reserve
                .getChannelState(id(salt, hash))
                .call()
                .await
                .unwrap()
                .deposit,
            u96(1_000)
        );
    }

    let salt = B256::random();
    let (receipt, hash) = send_batch([salt, salt]).await;
    assert!(!receipt.status(), "the same id twice in one transaction");
    assert_eq!(
        reserve
            .getChannelState(id(salt, hash))
            .call()
            .await
            .unwrap()
            .deposit,
        u96(0)
    );

    // Closed and re-opened in one transaction: refused, as by the precompile. Only reachable
    // with payer == payee (the payer may then close) and a hook value that is not the
    // transaction's own hash (the close names the descriptor, which holds the hash).
    let fake_hash = B256::repeat_byte(0x42);
    let salt = B256::random();
    let own = ChannelDescriptor {
        payer,
        payee: payer,
        operator: Address::ZERO,
        token: TOKEN,
        salt,
        authorized_signer: Address::ZERO,
        expiring_nonce_hash: fake_hash,
    };
    let open_self = open_calls(
        &env.domain,
        &OpenParams {
            payee: payer,
            ..params(salt)
        },
    )
    .unwrap()
    .remove(0);
    let close_self = Call {
        to: TxKind::Call(ESCROW),
        value: U256::ZERO,
        input: close_input(&own, 0, 0, &[]).into(),
    };
    for (calls, reopened) in [
        (vec![open_self.clone(), close_self.clone()], false),
        (vec![open_self.clone(), close_self, open_self], true),
    ] {
        channel_reserve::set_next_expiring_nonce_hash(&env.rpc(), &payer_key, fake_hash)
            .await
            .expect("set the hash");
        let receipt =
            channel_reserve::send_calls(&env.rpc(), &payer_key, calls, GAS, Some(FEE_TOKEN))
                .await
                .expect("send");
        assert_eq!(receipt.status(), !reopened, "re-opened: {reopened}");
        if !reopened {
            assert_eq!(
                escrow_topics(&receipt),
                vec![
                    Reserve::ChannelOpened::SIGNATURE_HASH,
                    Reserve::ChannelClosed::SIGNATURE_HASH
                ]
            );
        }
    }
}
