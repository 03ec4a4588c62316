//! The session server (`TempoSessions` with `SessionConfig::v2()`) end to end against the
//! Solidity stand-in for the TIP-20 channel reserve precompile, installed at the
//! precompile's address on a local node (`mpp_tempo::testing::channel_reserve`).
//!
//! What this proves: the server's v2 chain encoding and decoding (`escrow.rs`, v2 branch) on
//! a contract with the precompile's exact ABI, driven by `verify` / `charge` / `settle`: the
//! payer's `open` is checked, broadcast and its `ChannelOpened` event and `getChannelState`
//! read-back accepted; a v2 `topUp` is broadcast and its `TopUp` event read; the server's
//! `settle(descriptor, …)` and `close(descriptor, cumulative, capture, …)` calldata go
//! through, signed by the server key; and the close captures `max(spent, settled)`, less
//! than the close voucher, refunding the rest.
//!
//! What it cannot prove (the stand-in's limits, see `tools/escrow-v2/README.md`): that a
//! real node derives `expiringNonceHash` as `expiring_nonce_hash` does (the stand-in is told
//! the hash by a test hook before the server broadcasts the open), the precompile's
//! allowance-free deposit pull (the payer approves the stand-in in a setup transaction),
//! P-256 / WebAuthn vouchers, and the precompile's gas costs.
//!
//! Skips (with a message) when the node binary is not installed, unless `CI` is set. Run:
//! `ANVIL_BIN=… cargo test -p mpp-tempo --test session_v2_server`

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use alloy::primitives::{Address, B256, U256, aliases::U96};
use alloy::sol_types::SolEvent;
use mpp_tempo::session::abi::v2::ITIP20ChannelReserve as Reserve;
use mpp_tempo::session::client::{
    OpenParams, SessionChannel, SessionSigner, open_calls, top_up_calls,
};
use mpp_tempo::session::store::ChannelStore;
use mpp_tempo::session::{
    SessionAction, SessionConfig, SessionCredential, SessionError, SessionPayload, SessionProtocol,
    SessionVerified, SettlementTrigger, TIP20_CHANNEL_RESERVE, TempoSessionRequest, TempoSessions,
    expiring_nonce_hash,
};
use mpp_tempo::store::SqliteStore;
use mpp_tempo::testing::{AnvilNode, DEV_ACCOUNTS, channel_reserve, stream_channel, tokens};
use mpp_tempo::{ChainClient, PrivateKeySigner, Tempo};
use serde_json::Value;
use tempo_alloy::rpc::TempoTransactionReceipt;
use time::OffsetDateTime;

const ESCROW: Address = TIP20_CHANNEL_RESERVE;
/// The channel's token. Every transaction of the payer and the server pays its fee in
/// another one (FEE_TOKEN), so the channel token's balances move by exactly the channel's
/// amounts.
const TOKEN: Address = tokens::PATH_USD;
const FEE_TOKEN: Address = tokens::ALPHA_USD;
const PRICE: u128 = 1_000;
const DEPOSIT: u128 = 100_000;
const TOP_UP: u128 = 50_000;
/// anvil underestimates `0x76` transactions: the payer's transactions carry their own limit.
const GAS: u64 = 2_000_000;

const PAYER: usize = 1;
const PAYEE: usize = 2;

fn key(account: usize) -> PrivateKeySigner {
    DEV_ACCOUNTS[account].private_key.parse().unwrap()
}

fn addr(account: usize) -> Address {
    DEV_ACCOUNTS[account].address
}

fn u96(value: u128) -> U96 {
    U96::from(value)
}

struct Env {
    node: AnvilNode,
    chain: ChainClient,
    sessions: TempoSessions,
    _dir: tempfile::TempDir,
}

impl Env {
    async fn start() -> Option<Self> {
        let node = AnvilNode::start()?;
        let rpc = node.rpc_url();
        channel_reserve::install(&rpc)
            .await
            .expect("install the stand-in at the precompile address");
        let chain = ChainClient::new(&rpc, Duration::from_secs(5)).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(SqliteStore::open(dir.path().join("mpp.db")).await.unwrap());
        let tempo = Tempo::builder()
            .rpc_url(&rpc)
            .recipient(addr(PAYEE))
            .currency(TOKEN)
            .store(store.clone())
            .maintenance_interval(Duration::ZERO)
            .build()
            .await
            .unwrap();
        // The server key is the payee's: it settles and closes, and no operator is
        // advertised.
        let sessions = SessionConfig::v2()
            .server_key(key(PAYEE), FEE_TOKEN)
            .channel_store(store)
            .suggested_deposit(DEPOSIT)
            .build(&tempo)
            .await
            .expect("v2 sessions on the stand-in");
        Some(Self {
            node,
            chain,
            sessions,
            _dir: dir,
        })
    }

    fn rpc(&self) -> String {
        self.node.rpc_url()
    }

    async fn balance(&self, who: Address) -> u128 {
        self.chain
            .token_balance(TOKEN, who)
            .await
            .unwrap()
            .to::<u128>()
    }

    async fn state(&self, id: B256) -> Reserve::ChannelState {
        Reserve::new(ESCROW, self.chain.provider())
            .getChannelState(id)
            .call()
            .await
            .unwrap()
    }

    async fn receipt(&self, hash: B256) -> TempoTransactionReceipt {
        self.chain
            .receipt(hash)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("no receipt for {hash}"))
    }
}

/// The stand-in's events of type `E` about channel `id` in `receipt`, decoded.
fn events<E: SolEvent>(receipt: &TempoTransactionReceipt, id: B256) -> Vec<E> {
    receipt
        .inner
        .logs()
        .iter()
        .filter(|l| {
            l.address() == ESCROW
                && l.topics().first() == Some(&E::SIGNATURE_HASH)
                && l.topics().get(1) == Some(&id)
        })
        .map(|l| E::decode_log_data(l.data()).expect("decodes"))
        .collect()
}

async fn present(
    sessions: &TempoSessions,
    request: &TempoSessionRequest,
    signer: &SessionSigner,
    payload: &SessionPayload,
) -> Result<SessionVerified, SessionError> {
    let now = OffsetDateTime::now_utc();
    let json: Value = payload.to_json();
    let source = signer.source();
    sessions
        .verify(SessionCredential {
            request,
            payload: &json,
            source: Some(&source),
            expires: now + time::Duration::minutes(5),
            now,
        })
        .await
}

/// The receipt the server would answer `verified` with, as JSON.
fn receipt_json(verified: &SessionVerified) -> Value {
    let receipt = verified.receipt("challenge-v2", OffsetDateTime::now_utc());
    serde_json::from_str(&receipt.to_json_string()).unwrap()
}

/// Asserts the receipt fields that matter: `acceptedCumulative`, `spent`, `units`, the
/// channel, and `txHash` (present exactly when `tx_hash` is).
fn assert_receipt(
    verified: &SessionVerified,
    id: B256,
    accepted: u128,
    spent: u128,
    units: u64,
    tx_hash: Option<B256>,
) {
    let json = receipt_json(verified);
    assert_eq!(json["intent"], "session", "{json}");
    assert_eq!(json["channelId"], format!("{id:#x}"), "{json}");
    assert_eq!(json["reference"], format!("{id:#x}"), "{json}");
    assert_eq!(json["acceptedCumulative"], accepted.to_string(), "{json}");
    assert_eq!(json["spent"], spent.to_string(), "{json}");
    assert_eq!(json["units"], units, "{json}");
    match tx_hash {
        Some(hash) => assert_eq!(json["txHash"], format!("{hash:#x}"), "{json}"),
        None => assert!(json.get("txHash").is_none(), "{json}"),
    }
}

/// open → vouchers + charges → topUp → settle (on demand) → more vouchers + charges →
/// close capturing `max(spent, settled)`, all through `TempoSessions` with
/// `SessionConfig::v2()` on the stand-in.
#[tokio::test]
async fn a_v2_channel_is_opened_paid_settled_and_closed_by_the_server() {
    let Some(env) = Env::start().await else {
        return;
    };
    let rpc = env.rpc();
    let s = &env.sessions;
    assert_eq!(
        (s.protocol(), s.escrow(), s.server_key()),
        (SessionProtocol::V2, ESCROW, Some(addr(PAYEE)))
    );
    let request = s.request(PRICE, "request");
    assert_eq!(
        (request.recipient, request.currency, request.operator()),
        (addr(PAYEE), TOKEN, Address::ZERO),
        "the server key is the payee's: no operator"
    );
    let domain = request.voucher_domain();
    assert_eq!(
        (domain.protocol(), domain.escrow()),
        (SessionProtocol::V2, ESCROW)
    );
    let payer_key = key(PAYER);
    let payer = payer_key.address();
    let signer = SessionSigner::new(payer_key.clone(), domain);

    // ---- open ----------------------------------------------------------------------------
    // Setup the stand-in needs and the precompile does not: an allowance.
    channel_reserve::approve(&rpc, &payer_key, TOKEN, U256::MAX)
        .await
        .expect("approve the stand-in");
    let params = OpenParams {
        payee: request.recipient,
        operator: request.operator(),
        token: request.currency,
        deposit: DEPOSIT,
        salt: B256::random(),
        authorized_signer: payer, // what SDK clients send
    };
    let calls = open_calls(&domain, &params).unwrap();
    assert_eq!(calls.len(), 1, "a v2 open is one call");
    let tx = stream_channel::expiring_tx(&rpc, calls, GAS, Some(FEE_TOKEN))
        .await
        .unwrap();
    // The hash the server computes from the transaction it broadcasts; the stand-in binds
    // the next open to it (the precompile derives it itself).
    let nonce_hash = expiring_nonce_hash(&tx, payer);
    channel_reserve::set_next_expiring_nonce_hash(&rpc, &payer_key, nonce_hash)
        .await
        .expect("set the expiring nonce hash");
    let signed = signer.open(tx, &params, PRICE, false).unwrap();
    let channel: SessionChannel = signed.channel;
    let id = channel.channel_id;
    let descriptor = channel.descriptor.expect("a v2 channel has a descriptor");
    assert_eq!(descriptor.expiring_nonce_hash, nonce_hash);
    let open_hash = signed.tx_hash.expect("an unsponsored open has its hash");

    let payee_before = env.balance(addr(PAYEE)).await;
    let payer_before = env.balance(payer).await;
    let escrow_before = env.balance(ESCROW).await;

    let opened = present(s, &request, &signer, &signed.payload)
        .await
        .unwrap();
    assert_eq!(opened.action, SessionAction::Open);
    assert_eq!(
        opened.tx_hash,
        Some(open_hash),
        "the server broadcast the payer's transaction as signed"
    );
    assert_eq!(opened.channel.id(), id);
    assert_eq!(opened.channel.descriptor.protocol, SessionProtocol::V2);
    assert_eq!(opened.channel.descriptor.escrow, ESCROW);
    assert_eq!(opened.channel.descriptor.descriptor(), descriptor);
    assert_eq!(
        (
            opened.channel.deposit,
            opened.channel.highest_voucher,
            opened.channel.spent,
            opened.channel.settled,
            opened.accepted_cumulative
        ),
        (DEPOSIT, PRICE, 0, 0, PRICE)
    );
    assert!(opened.channel.state.is_open());
    assert_receipt(&opened, id, PRICE, 0, 0, Some(open_hash));

    // On chain: one ChannelOpened with the server-computed hash, the deposit pulled.
    let open_receipt = env.receipt(open_hash).await;
    let events_opened = events::<Reserve::ChannelOpened>(&open_receipt, id);
    assert_eq!(events_opened.len(), 1);
    let e = &events_opened[0];
    assert_eq!(
        (
            e.payer,
            e.payee,
            e.operator,
            e.token,
            e.authorizedSigner,
            e.salt,
            e.expiringNonceHash,
            e.deposit
        ),
        (
            payer,
            addr(PAYEE),
            Address::ZERO,
            TOKEN,
            payer,
            params.salt,
            nonce_hash,
            u96(DEPOSIT)
        )
    );
    assert_eq!(
        env.state(id).await,
        Reserve::ChannelState {
            settled: u96(0),
            deposit: u96(DEPOSIT),
            closeRequestedAt: 0
        }
    );
    assert_eq!(env.balance(payer).await, payer_before - DEPOSIT);
    assert_eq!(env.balance(ESCROW).await, escrow_before + DEPOSIT);

    // The same open again (a retry after a lost answer) is recognized, not broadcast again.
    let again = present(s, &request, &signer, &signed.payload)
        .await
        .unwrap();
    assert_eq!((again.action, again.tx_hash), (SessionAction::Open, None));
    assert_eq!(env.balance(payer).await, payer_before - DEPOSIT);

    // ---- vouchers and charges ---------------------------------------------------------------
    let charged = s.charge(id, 1, PRICE).await.unwrap();
    assert_eq!((charged.spent, charged.units), (PRICE, 1));
    let short = s.charge(id, 1, PRICE).await.unwrap_err();
    assert!(
        matches!(
            short,
            SessionError::InsufficientBalance {
                requested: PRICE,
                available: 0
            }
        ),
        "{short:?}"
    );
    for k in 2..=4u128 {
        let voucher = signer.voucher(&channel, k * PRICE).unwrap();
        let accepted = present(s, &request, &signer, &voucher).await.unwrap();
        assert_eq!(
            (
                accepted.action,
                accepted.accepted_cumulative,
                accepted.tx_hash
            ),
            (SessionAction::Voucher, k * PRICE, None)
        );
        assert_receipt(&accepted, id, k * PRICE, PRICE, 1, None);
    }
    let lower = signer.voucher(&channel, 3 * PRICE).unwrap();
    assert!(matches!(
        present(s, &request, &signer, &lower).await,
        Err(SessionError::VerificationFailed(_))
    ));
    let charged = s.charge(id, 2, PRICE).await.unwrap();
    assert_eq!((charged.spent, charged.units), (3 * PRICE, 3));

    // ---- top-up (v2: one topUp(descriptor, n) call) ---------------------------------------
    let calls = top_up_calls(&domain, &channel, TOKEN, TOP_UP).unwrap();
    let tx = stream_channel::expiring_tx(&rpc, calls, GAS, Some(FEE_TOKEN))
        .await
        .unwrap();
    let top_up = signer.top_up(tx, &channel, TOP_UP, false).unwrap();
    let topped = present(s, &request, &signer, &top_up.payload)
        .await
        .unwrap();
    assert_eq!(
        (topped.action, topped.tx_hash, topped.channel.deposit),
        (SessionAction::TopUp, top_up.tx_hash, DEPOSIT + TOP_UP)
    );
    assert!(topped.tx_hash.is_some());
    assert_receipt(&topped, id, 4 * PRICE, 3 * PRICE, 3, top_up.tx_hash);
    assert_eq!(env.state(id).await.deposit, u96(DEPOSIT + TOP_UP));
    let deposit = DEPOSIT + TOP_UP;

    // ---- settle on demand: the highest voucher -------------------------------------------------
    let report = s.settle(id).await.unwrap().expect("something to settle");
    assert_eq!(
        (
            report.channel_id,
            report.trigger,
            report.settled,
            report.delta,
            report.closed
        ),
        (id, SettlementTrigger::OnDemand, 4 * PRICE, 4 * PRICE, false)
    );
    let settle_receipt = env.receipt(report.tx_hash).await;
    assert_eq!(settle_receipt.from, addr(PAYEE), "sent with the server key");
    let settled_events = events::<Reserve::Settled>(&settle_receipt, id);
    assert_eq!(settled_events.len(), 1);
    assert_eq!(
        (
            settled_events[0].cumulativeAmount,
            settled_events[0].deltaPaid,
            settled_events[0].newSettled
        ),
        (u96(4 * PRICE), u96(4 * PRICE), u96(4 * PRICE))
    );
    assert_eq!(
        env.state(id).await,
        Reserve::ChannelState {
            settled: u96(4 * PRICE),
            deposit: u96(deposit),
            closeRequestedAt: 0
        }
    );
    assert_eq!(env.balance(addr(PAYEE)).await, payee_before + 4 * PRICE);
    let stored = s.store().get(id).await.unwrap().unwrap();
    assert_eq!(stored.settled, 4 * PRICE);
    assert_eq!(
        stored.last_settlement.and_then(|l| l.tx_hash),
        Some(report.tx_hash)
    );
    assert!(stored.state.is_open());
    assert!(
        s.settle(id).await.unwrap().is_none(),
        "nothing left to settle"
    );

    // ---- more use, then close ---------------------------------------------------------------
    let six = signer.voucher(&channel, 6 * PRICE).unwrap();
    let accepted = present(s, &request, &signer, &six).await.unwrap();
    assert_receipt(&accepted, id, 6 * PRICE, 3 * PRICE, 3, None);
    let charged = s.charge(id, 2, PRICE).await.unwrap();
    assert_eq!((charged.spent, charged.units), (5 * PRICE, 5));
    let spent = 5 * PRICE;
    let settled = 4 * PRICE;

    // A close below what was spent is refused, and leaves the channel open.
    let below = signer.close(&channel, 4 * PRICE, false).unwrap();
    assert!(matches!(
        present(s, &request, &signer, &below).await,
        Err(SessionError::VerificationFailed(_))
    ));
    assert!(s.store().get(id).await.unwrap().unwrap().state.is_open());

    // The payer signs a close for more than it used: v2 captures only max(spent, settled).
    let close_amount = 7 * PRICE;
    let capture = spent.max(settled);
    assert!(capture < close_amount && capture > settled);
    let close = signer.close(&channel, close_amount, true).unwrap();
    let closed = present(s, &request, &signer, &close).await.unwrap();
    assert_eq!(
        (closed.action, closed.accepted_cumulative),
        (SessionAction::Close, close_amount)
    );
    let close_hash = closed.tx_hash.expect("the close has a transaction");
    assert_receipt(&closed, id, close_amount, spent, 5, Some(close_hash));
    assert!(closed.channel.state.is_finalized());

    let close_receipt = env.receipt(close_hash).await;
    assert_eq!(close_receipt.from, addr(PAYEE), "sent with the server key");
    let closed_events = events::<Reserve::ChannelClosed>(&close_receipt, id);
    assert_eq!(closed_events.len(), 1);
    assert_eq!(
        (
            closed_events[0].settledToPayee,
            closed_events[0].refundedToPayer
        ),
        (u96(capture), u96(deposit - capture))
    );
    // The payee received exactly max(spent, settled) over the channel's life, the payer got
    // the rest of the deposit back, the escrow holds nothing of it.
    assert_eq!(env.balance(addr(PAYEE)).await, payee_before + capture);
    assert_eq!(env.balance(payer).await, payer_before - capture);
    assert_eq!(env.balance(ESCROW).await, escrow_before);
    assert_eq!(
        env.state(id).await,
        Reserve::ChannelState {
            settled: u96(0),
            deposit: u96(0),
            closeRequestedAt: 0
        },
        "a closed v2 channel reads as the zero state"
    );

    let stored = s.store().get(id).await.unwrap().unwrap();
    assert!(
        matches!(
            stored.state,
            mpp_tempo::session::store::ChannelState::Finalized { tx_hash: Some(h), .. } if h == close_hash
        ),
        "{:?}",
        stored.state
    );
    assert_eq!(
        (
            stored.settled,
            stored.spent,
            stored.units,
            stored.highest_voucher
        ),
        (capture, spent, 5, close_amount)
    );

    // Nothing more on a finalized channel.
    let after = present(
        s,
        &request,
        &signer,
        &signer.voucher(&channel, 8 * PRICE).unwrap(),
    )
    .await
    .unwrap_err();
    assert_eq!(
        (after.status(), after.problem().map(|p| p.code())),
        (410, Some("session/channel-finalized"))
    );
    assert!(matches!(
        s.charge(id, 1, PRICE).await,
        Err(SessionError::ChannelFinalized(_))
    ));
}
