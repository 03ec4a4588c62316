//! The session server (`TempoSessions`) on a real local node against the canonical v1
//! `TempoStreamChannel` escrow (its creation code read from the `mpp` 0.18.2 crate at test
//! time): open (plain and sponsored), vouchers, charges, top-up, cooperative close (the payee
//! receives exactly the capture), scheduled and on-demand settlement, a payer's
//! `requestClose` answered by the settler before the grace period ends, and 50 concurrent
//! vouchers and charges on one channel through SQLite and through two Postgres handles.
//!
//! One node per test. Skips (with a message) when anvil or Postgres is missing, unless `CI`
//! is set.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use alloy::primitives::{Address, B256, U256};
use alloy::sol_types::SolCall;
use mpp_tempo::charge::SponsorPolicy;
use mpp_tempo::session::abi::v1::ITempoStreamChannel;
use mpp_tempo::session::client::{
    OpenParams, SessionChannel, SessionSigner, open_calls, top_up_calls,
};
use mpp_tempo::session::store::{ChannelStore, MemoryChannelStore};
use mpp_tempo::session::{
    SessionAction, SessionConfig, SessionCredential, SessionError, SessionPayload,
    SettlementReport, SettlementSchedule, SettlementTrigger, SettlerConfig, TempoSessionRequest,
    TempoSessions,
};
use mpp_tempo::store::{MemoryStore, PgStore, ReplayStore, SqliteStore};
use mpp_tempo::testing::{AnvilNode, DEV_ACCOUNTS, stream_channel, tokens};
use mpp_tempo::{ChainClient, PrivateKeySigner, Tempo};
use serde_json::Value;
use time::OffsetDateTime;

const TOKEN: Address = tokens::ALPHA_USD;
const PRICE: u128 = 1_000;
const DEPOSIT: u128 = 100_000;
/// approve + open: anvil's estimate covers only the last call of a batch.
const OPEN_GAS: u64 = 2_000_000;
/// Under the default sponsor policy's fee budget at a fresh node's gas price.
const SPONSORED_OPEN_GAS: u64 = 1_900_000;
const TOP_UP_GAS: u64 = 1_000_000;
const CALL_GAS: u64 = 1_000_000;

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

struct Env {
    node: AnvilNode,
    chain: ChainClient,
    escrow: Address,
    sessions: TempoSessions,
    _dir: tempfile::TempDir,
}

async fn tempo(rpc: &str, replay: Arc<dyn ReplayStore>, sponsor: bool) -> Tempo {
    let mut builder = Tempo::builder()
        .rpc_url(rpc)
        .recipient(addr(PAYEE))
        .currency(TOKEN)
        .store(replay)
        .maintenance_interval(Duration::ZERO);
    if sponsor {
        builder = builder.fee_payer(key(FEE_PAYER), SponsorPolicy::default());
    }
    builder.build().await.unwrap()
}

async fn sessions(tempo: &Tempo, escrow: Address, store: Arc<dyn ChannelStore>) -> TempoSessions {
    SessionConfig::v1(escrow)
        .server_key(key(PAYEE), tokens::PATH_USD)
        .channel_store(store)
        .suggested_deposit(DEPOSIT)
        .build(tempo)
        .await
        .unwrap()
}

impl Env {
    async fn start(sponsor: bool) -> Option<Self> {
        let node = AnvilNode::start()?;
        let rpc = node.rpc_url();
        let escrow = stream_channel::deploy(&rpc, &key(DEPLOYER)).await.unwrap();
        let chain = ChainClient::new(&rpc, Duration::from_secs(5)).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(SqliteStore::open(dir.path().join("mpp.db")).await.unwrap());
        let tempo = tempo(&rpc, store.clone(), sponsor).await;
        let sessions = sessions(&tempo, escrow, store).await;
        Some(Self {
            node,
            chain,
            escrow,
            sessions,
            _dir: dir,
        })
    }

    fn rpc(&self) -> String {
        self.node.rpc_url()
    }

    async fn balance(&self, token: Address, who: Address) -> U256 {
        self.chain.token_balance(token, who).await.unwrap()
    }

    async fn on_chain(&self, id: B256) -> ITempoStreamChannel::Channel {
        ITempoStreamChannel::new(self.escrow, self.chain.provider())
            .getChannel(id)
            .call()
            .await
            .unwrap()
    }
}

/// A payer of one channel.
struct Payer {
    signer: SessionSigner,
    account: usize,
}

impl Payer {
    fn new(account: usize, request: &TempoSessionRequest) -> Self {
        Self {
            signer: SessionSigner::new(key(account), request.voucher_domain()),
            account,
        }
    }

    async fn open(
        &self,
        rpc: &str,
        request: &TempoSessionRequest,
        deposit: u128,
        first: u128,
        sponsored: bool,
    ) -> (SessionChannel, SessionPayload) {
        let params = OpenParams {
            payee: request.recipient,
            operator: Address::ZERO,
            token: request.currency,
            deposit,
            salt: B256::random(),
            authorized_signer: addr(self.account),
        };
        let calls = open_calls(self.signer.domain(), &params).unwrap();
        let gas = if sponsored {
            SPONSORED_OPEN_GAS
        } else {
            OPEN_GAS
        };
        let tx = stream_channel::expiring_tx(rpc, calls, gas, None)
            .await
            .unwrap();
        let signed = self.signer.open(tx, &params, first, sponsored).unwrap();
        (signed.channel, signed.payload)
    }

    async fn top_up(
        &self,
        rpc: &str,
        channel: &SessionChannel,
        additional: u128,
    ) -> SessionPayload {
        let calls = top_up_calls(self.signer.domain(), channel, TOKEN, additional).unwrap();
        let tx = stream_channel::expiring_tx(rpc, calls, TOP_UP_GAS, None)
            .await
            .unwrap();
        self.signer
            .top_up(tx, channel, additional, false)
            .unwrap()
            .payload
    }
}

async fn present(
    sessions: &TempoSessions,
    request: &TempoSessionRequest,
    payer: &Payer,
    payload: &SessionPayload,
) -> Result<mpp_tempo::session::SessionVerified, SessionError> {
    let now = OffsetDateTime::now_utc();
    let json: Value = payload.to_json();
    let source = payer.signer.source();
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

#[tokio::test]
async fn a_v1_channel_is_opened_paid_topped_up_settled_and_closed() {
    let Some(env) = Env::start(false).await else {
        return;
    };
    let rpc = env.rpc();
    let s = &env.sessions;
    let request = s.request(PRICE, "request");
    assert_eq!(request.suggested_deposit, Some(DEPOSIT));
    let payer = Payer::new(PAYER, &request);
    let payee_before = env.balance(TOKEN, addr(PAYEE)).await;
    let payer_before = env.balance(TOKEN, addr(PAYER)).await;

    // Open with a first voucher for one unit.
    let (channel, open) = payer.open(&rpc, &request, DEPOSIT, PRICE, false).await;
    let opened = present(s, &request, &payer, &open).await.unwrap();
    assert_eq!(opened.action, SessionAction::Open);
    assert_eq!(opened.channel.id(), channel.channel_id);
    assert_eq!(
        (
            opened.channel.deposit,
            opened.channel.highest_voucher,
            opened.channel.spent
        ),
        (DEPOSIT, PRICE, 0)
    );
    let receipt = opened.receipt("challenge-1", OffsetDateTime::now_utc());
    assert_eq!(receipt.tx_hash, opened.tx_hash);
    assert!(opened.tx_hash.is_some());
    let on_chain = env.on_chain(channel.channel_id).await;
    assert_eq!(
        (on_chain.deposit, on_chain.payer, on_chain.payee),
        (DEPOSIT, addr(PAYER), addr(PAYEE))
    );
    // The same open again (a retry after a lost answer) is recognized, not sent twice.
    let again = present(s, &request, &payer, &open).await.unwrap();
    assert_eq!((again.action, again.tx_hash), (SessionAction::Open, None));

    // One unit is covered; the second is not.
    let charged = s.charge(channel.channel_id, 1, PRICE).await.unwrap();
    assert_eq!((charged.spent, charged.units), (PRICE, 1));
    let short = s.charge(channel.channel_id, 1, PRICE).await.unwrap_err();
    assert_eq!(short.status(), 402);
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

    // Vouchers: higher accepted, equal idempotent, lower / above deposit / forged refused.
    let v2 = payer.signer.voucher(&channel, 2 * PRICE).unwrap();
    let accepted = present(s, &request, &payer, &v2).await.unwrap();
    assert_eq!(
        (accepted.action, accepted.channel.highest_voucher),
        (SessionAction::Voucher, 2 * PRICE)
    );
    let same = present(s, &request, &payer, &v2).await.unwrap();
    assert_eq!(same.channel.highest_voucher, 2 * PRICE);
    let lower = payer.signer.voucher(&channel, PRICE + 1).unwrap();
    assert!(matches!(
        present(s, &request, &payer, &lower).await,
        Err(SessionError::VerificationFailed(_))
    ));
    let too_much = payer.signer.voucher(&channel, DEPOSIT + 1).unwrap();
    assert!(matches!(
        present(s, &request, &payer, &too_much).await,
        Err(SessionError::AmountExceedsDeposit { .. })
    ));
    let forger = Payer::new(SPONSORED_PAYER, &request);
    let forged = forger.signer.voucher(&channel, 3 * PRICE).unwrap();
    let refused = present(s, &request, &payer, &forged).await.unwrap_err();
    assert_eq!(
        refused.problem().map(|p| p.code()),
        Some("session/invalid-signature")
    );
    let unknown = SessionChannel {
        channel_id: B256::repeat_byte(7),
        ..channel
    };
    let gone = present(
        s,
        &request,
        &payer,
        &payer.signer.voucher(&unknown, PRICE).unwrap(),
    )
    .await
    .unwrap_err();
    assert_eq!(gone.status(), 410);
    s.charge(channel.channel_id, 1, PRICE).await.unwrap();

    // Top-up: the deposit grows on chain and in the store.
    let top_up = payer.top_up(&rpc, &channel, 50_000).await;
    let topped = present(s, &request, &payer, &top_up).await.unwrap();
    assert_eq!(
        (topped.action, topped.channel.deposit),
        (SessionAction::TopUp, DEPOSIT + 50_000)
    );
    assert!(topped.action.is_management());
    assert_eq!(
        env.on_chain(channel.channel_id).await.deposit,
        DEPOSIT + 50_000
    );

    // Settle on demand: the payee receives the highest voucher.
    let report = s.settle(channel.channel_id).await.unwrap().unwrap();
    assert_eq!(
        (report.settled, report.delta, report.trigger),
        (2 * PRICE, 2 * PRICE, SettlementTrigger::OnDemand)
    );
    assert_eq!(
        env.balance(TOKEN, addr(PAYEE)).await,
        payee_before + U256::from(2 * PRICE)
    );
    assert_eq!(env.on_chain(channel.channel_id).await.settled, 2 * PRICE);
    assert!(
        s.settle(channel.channel_id).await.unwrap().is_none(),
        "nothing left to settle"
    );

    // One more unit, then close: a close below what was spent is refused, and the close
    // pays the payee exactly the close amount minus what was settled.
    present(
        s,
        &request,
        &payer,
        &payer.signer.voucher(&channel, 3 * PRICE).unwrap(),
    )
    .await
    .unwrap();
    s.charge(channel.channel_id, 1, PRICE).await.unwrap();
    let below = payer.signer.close(&channel, 2 * PRICE, false).unwrap();
    assert!(matches!(
        present(s, &request, &payer, &below).await,
        Err(SessionError::VerificationFailed(_))
    ));
    let close = payer.signer.close(&channel, 3 * PRICE, false).unwrap();
    let closed = present(s, &request, &payer, &close).await.unwrap();
    assert_eq!(
        (closed.action, closed.accepted_cumulative),
        (SessionAction::Close, 3 * PRICE)
    );
    assert!(closed.channel.state.is_finalized());
    assert!(closed.tx_hash.is_some());
    assert_eq!(
        env.balance(TOKEN, addr(PAYEE)).await,
        payee_before + U256::from(3 * PRICE)
    );
    assert_eq!(
        env.balance(TOKEN, addr(PAYER)).await,
        payer_before - U256::from(3 * PRICE)
    );
    assert!(env.on_chain(channel.channel_id).await.finalized);
    let after = present(
        s,
        &request,
        &payer,
        &payer.signer.voucher(&channel, 4 * PRICE).unwrap(),
    )
    .await
    .unwrap_err();
    assert_eq!(
        (after.status(), after.problem().map(|p| p.code())),
        (410, Some("session/channel-finalized"))
    );
}

#[tokio::test]
async fn a_sponsored_open_costs_the_payer_no_fee() {
    let Some(env) = Env::start(true).await else {
        return;
    };
    let rpc = env.rpc();
    let s = &env.sessions;
    let request = s.request(PRICE, "request");
    assert!(request.method_details.fee_payer, "the method sponsors");
    let payer = Payer::new(SPONSORED_PAYER, &request);
    let fee_token_before = env.balance(tokens::PATH_USD, addr(SPONSORED_PAYER)).await;
    let token_before = env.balance(TOKEN, addr(SPONSORED_PAYER)).await;
    let sponsor_before = env.balance(tokens::PATH_USD, addr(FEE_PAYER)).await;
    let (_, open) = payer.open(&rpc, &request, DEPOSIT, PRICE, true).await;
    let opened = present(s, &request, &payer, &open).await.unwrap();
    assert_eq!(opened.channel.deposit, DEPOSIT);
    assert_eq!(
        env.balance(TOKEN, addr(SPONSORED_PAYER)).await,
        token_before - U256::from(DEPOSIT)
    );
    assert_eq!(
        env.balance(tokens::PATH_USD, addr(SPONSORED_PAYER)).await,
        fee_token_before,
        "no fee for the payer"
    );
    assert!(
        env.balance(tokens::PATH_USD, addr(FEE_PAYER)).await < sponsor_before,
        "the sponsor paid"
    );
}

#[tokio::test]
async fn scheduled_settlement_and_a_payers_close_request_are_answered_before_the_grace_period() {
    let Some(env) = Env::start(false).await else {
        return;
    };
    let rpc = env.rpc();
    let s = &env.sessions;
    let request = s.request(PRICE, "request");
    let payer = Payer::new(PAYER, &request);
    let payee_before = env.balance(TOKEN, addr(PAYEE)).await;
    let payer_before = env.balance(TOKEN, addr(PAYER)).await;
    let (channel, open) = payer.open(&rpc, &request, DEPOSIT, PRICE, false).await;
    present(s, &request, &payer, &open).await.unwrap();
    s.charge(channel.channel_id, 1, PRICE).await.unwrap();

    // Units threshold: due at 2 units, not before.
    let schedule = SettlementSchedule {
        amount: None,
        units: Some(2),
        interval: None,
        idle: None,
    };
    assert!(s.settle_due(&schedule).await.unwrap().is_empty());
    present(
        s,
        &request,
        &payer,
        &payer.signer.voucher(&channel, 2 * PRICE).unwrap(),
    )
    .await
    .unwrap();
    s.charge(channel.channel_id, 1, PRICE).await.unwrap();
    let reports = s.settle_due(&schedule).await.unwrap();
    assert_eq!(reports.len(), 1);
    assert_eq!(
        (reports[0].trigger, reports[0].settled),
        (SettlementTrigger::Scheduled, 2 * PRICE)
    );
    assert_eq!(
        env.balance(TOKEN, addr(PAYEE)).await,
        payee_before + U256::from(2 * PRICE)
    );

    // More vouchers, then the payer asks to close on chain: the settler (running in the
    // background) closes the channel with the highest voucher long before the grace ends.
    present(
        s,
        &request,
        &payer,
        &payer.signer.voucher(&channel, 4 * PRICE).unwrap(),
    )
    .await
    .unwrap();
    s.charge(channel.channel_id, 2, PRICE).await.unwrap();
    let seen: Arc<Mutex<Vec<SettlementReport>>> = Arc::default();
    let hook_seen = seen.clone();
    let settler = s.spawn_settler(SettlerConfig {
        schedule: SettlementSchedule {
            amount: None,
            units: None,
            interval: None,
            idle: None,
        },
        poll: Duration::from_millis(200),
        hook: Some(Arc::new(move |r: &SettlementReport| {
            hook_seen.lock().unwrap().push(r.clone())
        })),
        ..SettlerConfig::default()
    });
    let request_close = ITempoStreamChannel::requestCloseCall {
        channelId: channel.channel_id,
    }
    .abi_encode();
    let asked = stream_channel::send_calls(
        &rpc,
        &key(PAYER),
        vec![stream_channel::call(env.escrow, request_close)],
        CALL_GAS,
    )
    .await
    .unwrap();
    assert!(alloy::network::ReceiptResponse::status(&asked));
    let asked_at = env.chain.latest_block_timestamp().await.unwrap();
    let mut waited = 0;
    while !env.on_chain(channel.channel_id).await.finalized {
        waited += 1;
        assert!(
            waited < 150,
            "the settler did not close the channel within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let closed_at = env.chain.latest_block_timestamp().await.unwrap();
    assert!(closed_at < asked_at + 900, "closed within the grace period");
    drop(settler);
    let reports = seen.lock().unwrap().clone();
    assert_eq!(reports.len(), 1, "{reports:?}");
    assert_eq!(
        (reports[0].trigger, reports[0].settled, reports[0].closed),
        (SettlementTrigger::CloseRequested, 4 * PRICE, true)
    );
    let stored = s.store().get(channel.channel_id).await.unwrap().unwrap();
    assert!(stored.state.is_finalized());
    assert_eq!(
        env.balance(TOKEN, addr(PAYEE)).await,
        payee_before + U256::from(4 * PRICE)
    );
    assert_eq!(
        env.balance(TOKEN, addr(PAYER)).await,
        payer_before - U256::from(4 * PRICE)
    );

    // Last (the clock then runs ahead of wall time): past the grace period, the payer's
    // withdraw finds nothing left to take.
    stream_channel::advance_time(&rpc, 901).await.unwrap();
    let withdraw = ITempoStreamChannel::withdrawCall {
        channelId: channel.channel_id,
    }
    .abi_encode();
    let receipt = stream_channel::send_calls(
        &rpc,
        &key(PAYER),
        vec![stream_channel::call(env.escrow, withdraw)],
        CALL_GAS,
    )
    .await
    .unwrap();
    assert!(
        !alloy::network::ReceiptResponse::status(&receipt),
        "withdraw of a closed channel reverts"
    );
    assert_eq!(
        env.balance(TOKEN, addr(PAYER)).await,
        payer_before - U256::from(4 * PRICE)
    );
}

/// 50 vouchers (each +1 unit) and 50 charges, all at once, alternating between `sessions`:
/// every charge that succeeded is in `spent`, nothing beyond the vouchers, none twice.
async fn concurrent_vouchers_and_charges(env: &Env, all: &[TempoSessions]) {
    let rpc = env.rpc();
    let request = all[0].request(PRICE, "request");
    let payer = Arc::new(Payer::new(PAYER, &request));
    let (channel, open) = payer.open(&rpc, &request, DEPOSIT, PRICE, false).await;
    present(&all[0], &request, &payer, &open).await.unwrap();
    let mut tasks = Vec::new();
    for k in 2..=51u128 {
        let sessions = all[k as usize % all.len()].clone();
        let (request, payer) = (request.clone(), payer.clone());
        tasks.push(tokio::spawn(async move {
            let voucher = payer.signer.voucher(&channel, k * PRICE).unwrap();
            let accepted = match present(&sessions, &request, &payer, &voucher).await {
                Ok(_) => true,
                Err(SessionError::VerificationFailed(_)) => false, // a higher one came first
                Err(e) => panic!("voucher {k}: {e:?}"),
            };
            let charged = match sessions.charge(channel.channel_id, 1, PRICE).await {
                Ok(_) => true,
                Err(SessionError::InsufficientBalance { .. }) => false,
                Err(e) => panic!("charge {k}: {e:?}"),
            };
            (accepted, charged)
        }));
    }
    let mut charges = 0u128;
    for task in tasks {
        let (_, charged) = task.await.unwrap();
        charges += u128::from(charged);
    }
    let stored = all[0]
        .store()
        .get(channel.channel_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        stored.highest_voucher,
        51 * PRICE,
        "the highest voucher always wins"
    );
    assert_eq!(
        stored.spent,
        charges * PRICE,
        "every successful charge, once"
    );
    assert_eq!(u128::from(stored.units), charges);
    assert!(stored.spent <= stored.highest_voucher && stored.highest_voucher <= stored.deposit);
    // Settling pays exactly the accepted voucher.
    let before = env.balance(TOKEN, addr(PAYEE)).await;
    let report = all[1 % all.len()]
        .settle(channel.channel_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(report.settled, 51 * PRICE);
    assert_eq!(
        env.balance(TOKEN, addr(PAYEE)).await,
        before + U256::from(51 * PRICE)
    );
}

#[tokio::test]
async fn fifty_concurrent_vouchers_and_charges_on_sqlite() {
    let Some(env) = Env::start(false).await else {
        return;
    };
    concurrent_vouchers_and_charges(&env, std::slice::from_ref(&env.sessions)).await;
}

#[tokio::test]
async fn fifty_concurrent_vouchers_and_charges_from_two_postgres_handles() {
    const HINT: &str = "MPP_TEST_DATABASE_URL is not set: run `tools/postgres/start.sh` and \
         `source <state dir>/env` (scripts/test.sh does both)";
    let url = match std::env::var("MPP_TEST_DATABASE_URL") {
        Ok(url) if !url.is_empty() => url,
        _ if std::env::var_os("CI").is_some() => panic!("{HINT}"),
        _ => {
            eprintln!("skipping Postgres test: {HINT}");
            return;
        }
    };
    let Some(env) = Env::start(false).await else {
        return;
    };
    let mut instances = Vec::new();
    for _ in 0..2 {
        let store = Arc::new(PgStore::connect(&url).await.unwrap());
        let tempo = tempo(&env.rpc(), store.clone(), false).await;
        instances.push(sessions(&tempo, env.escrow, store).await);
    }
    concurrent_vouchers_and_charges(&env, &instances).await;
}

#[tokio::test]
async fn start_up_checks_fail_clearly() {
    let Some(env) = Env::start(false).await else {
        return;
    };
    let tempo = tempo(&env.rpc(), Arc::new(MemoryStore::new()), false).await;
    let store: Arc<dyn ChannelStore> = Arc::new(MemoryChannelStore::new());
    let no_code = SessionConfig::v1(Address::repeat_byte(0x11))
        .channel_store(store.clone())
        .build(&tempo)
        .await
        .unwrap_err();
    assert!(no_code.to_string().contains("no contract"), "{no_code}");
    let v2 = SessionConfig::v2()
        .channel_store(store.clone())
        .build(&tempo)
        .await
        .unwrap_err();
    assert!(v2.to_string().contains("precompile"), "{v2}");
    let not_payee = SessionConfig::v1(env.escrow)
        .server_key(key(PAYER), tokens::PATH_USD)
        .channel_store(store.clone())
        .build(&tempo)
        .await
        .unwrap_err();
    assert!(not_payee.to_string().contains("payee"), "{not_payee}");
    let unfunded: PrivateKeySigner =
        "0x0101010101010101010101010101010101010101010101010101010101010101"
            .parse()
            .unwrap();
    let tempo_unfunded = Tempo::builder()
        .rpc_url(env.rpc())
        .recipient(unfunded.address())
        .currency(TOKEN)
        .store(Arc::new(MemoryStore::new()))
        .maintenance_interval(Duration::ZERO)
        .build()
        .await
        .unwrap();
    let broke = SessionConfig::v1(env.escrow)
        .server_key(unfunded, tokens::PATH_USD)
        .channel_store(store.clone())
        .build(&tempo_unfunded)
        .await
        .unwrap_err();
    assert!(broke.to_string().contains("fund it"), "{broke}");
    let no_store = SessionConfig::v1(env.escrow)
        .build(&tempo)
        .await
        .unwrap_err();
    assert!(no_store.to_string().contains("channel_store"), "{no_store}");
}
