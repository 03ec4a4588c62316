//! Two background settlers (`TempoSessions::spawn_settler`) on one shared store, on a v1
//! channel of the canonical `TempoStreamChannel` escrow: while both run, only the lease
//! holder settles (also past its first lease term: it renews); once the holder is stopped,
//! the other takes the lease over after it expires, not before, and settles the vouchers
//! accepted since.
//!
//! The store is one SQLite file opened twice (two handles, two pools), and, when
//! `MPP_TEST_DATABASE_URL` is set, two Postgres handles on a schema of the test's own.
//!
//! Skips (with a message) when the node binary (or, for the Postgres test, the database) is
//! missing, unless `CI` is set. Run:
//! `ANVIL_BIN=… cargo test -p mpp-tempo --all-features --test session_settler_lease`

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use alloy::primitives::{Address, B256};
use mpp_tempo::session::abi::v1::ITempoStreamChannel;
use mpp_tempo::session::client::{OpenParams, SessionChannel, SessionSigner, open_calls};
use mpp_tempo::session::store::{ChannelIdentity, ChannelStore, NewChannel, Voucher};
use mpp_tempo::session::{
    SessionAction, SessionConfig, SessionCredential, SessionPayload, SessionProtocol,
    SettlementReport, SettlementSchedule, SettlementTrigger, SettlerConfig, SettlerHandle,
    TempoSessionRequest, TempoSessions,
};
use mpp_tempo::store::{ReplayStore, SqliteStore};
use mpp_tempo::testing::{AnvilNode, DEV_ACCOUNTS, PgSchema, stream_channel, tokens};
use mpp_tempo::{ChainClient, PrivateKeySigner, Tempo};
use time::OffsetDateTime;

const TOKEN: Address = tokens::ALPHA_USD;
const PRICE: u128 = 1_000;
const DEPOSIT: u128 = 100_000;
/// approve + open: anvil's estimate covers only the last call of a batch.
const OPEN_GAS: u64 = 2_000_000;

const DEPLOYER: usize = 0;
const PAYER: usize = 1;
const PAYEE: usize = 2;

/// The settlers' lease and poll: short, so that a takeover happens within seconds.
const LEASE: Duration = Duration::from_secs(3);
const POLL: Duration = Duration::from_millis(200);
/// The longest wait for a settlement that is due now.
const SETTLE_WITHIN: Duration = Duration::from_secs(15);

fn key(account: usize) -> PrivateKeySigner {
    DEV_ACCOUNTS[account].private_key.parse().unwrap()
}

fn addr(account: usize) -> Address {
    DEV_ACCOUNTS[account].address
}

/// A node with the canonical v1 escrow deployed.
struct Env {
    node: AnvilNode,
    chain: ChainClient,
    escrow: Address,
}

impl Env {
    async fn start() -> Option<Self> {
        let node = AnvilNode::start()?;
        let rpc = node.rpc_url();
        let escrow = stream_channel::deploy(&rpc, &key(DEPLOYER)).await.unwrap();
        let chain = ChainClient::new(&rpc, Duration::from_secs(5)).unwrap();
        Some(Self {
            node,
            chain,
            escrow,
        })
    }

    fn rpc(&self) -> String {
        self.node.rpc_url()
    }

    /// One server instance: its own handle on the shared store (replay keys, where the
    /// settler's lease lives, and channels).
    async fn instance(
        &self,
        replay: Arc<dyn ReplayStore>,
        channels: Arc<dyn ChannelStore>,
    ) -> TempoSessions {
        let tempo = Tempo::builder()
            .rpc_url(self.rpc())
            .recipient(addr(PAYEE))
            .currency(TOKEN)
            .store(replay)
            .maintenance_interval(Duration::ZERO)
            .build()
            .await
            .unwrap();
        SessionConfig::v1(self.escrow)
            .server_key(key(PAYEE), tokens::PATH_USD)
            .channel_store(channels)
            .build(&tempo)
            .await
            .unwrap()
    }

    async fn settled_on_chain(&self, id: B256) -> u128 {
        ITempoStreamChannel::new(self.escrow, self.chain.provider())
            .getChannel(id)
            .call()
            .await
            .unwrap()
            .settled
    }

    async fn payee_balance(&self) -> u128 {
        self.chain
            .token_balance(TOKEN, addr(PAYEE))
            .await
            .unwrap()
            .to::<u128>()
    }
}

/// What one instance's settler reported, with when.
type Seen = Arc<Mutex<Vec<(Instant, SettlementReport)>>>;

/// Starts `sessions`' settler: settles whatever is unsettled, every `POLL`, under a `LEASE`
/// lease; its reports go to the returned list.
fn spawn(sessions: &TempoSessions) -> (SettlerHandle, Seen) {
    let seen: Seen = Arc::default();
    let hook_seen = seen.clone();
    let handle = sessions.spawn_settler(SettlerConfig {
        schedule: SettlementSchedule {
            amount: Some(1),
            units: None,
            interval: None,
            idle: None,
        },
        poll: POLL,
        lease: LEASE,
        lookback_blocks: 100,
        hook: Some(Arc::new(move |r: &SettlementReport| {
            hook_seen.lock().unwrap().push((Instant::now(), r.clone()));
        })),
        purge_interval: None,
    });
    (handle, seen)
}

fn reports(seen: &Seen) -> Vec<SettlementReport> {
    seen.lock()
        .unwrap()
        .iter()
        .map(|(_, r)| r.clone())
        .collect()
}

/// Waits (at most `limit`) until one of `seen` reports a settlement of `settled` in total;
/// which one (its index), and when.
async fn settled_by(seen: &[&Seen], settled: u128, limit: Duration) -> (usize, Instant) {
    let found = || {
        seen.iter().enumerate().find_map(|(k, s)| {
            s.lock()
                .unwrap()
                .iter()
                .find(|(_, r)| r.settled == settled)
                .map(|(at, _)| (k, *at))
        })
    };
    tokio::time::timeout(limit, async {
        loop {
            if let Some(hit) = found() {
                return hit;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no settler settled {settled} within {limit:?}"))
}

async fn present(
    sessions: &TempoSessions,
    request: &TempoSessionRequest,
    signer: &SessionSigner,
    payload: &SessionPayload,
) -> mpp_tempo::session::SessionVerified {
    let now = OffsetDateTime::now_utc();
    let json = payload.to_json();
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
        .expect("credential accepted")
}

/// The whole scenario on two instances `a` and `b` that share one store.
async fn lease_is_held_by_one_and_taken_over_after_it_expires(
    env: &Env,
    a: TempoSessions,
    b: TempoSessions,
) {
    let rpc = env.rpc();
    let request = a.request(PRICE, "request");
    let signer = SessionSigner::new(key(PAYER), request.voucher_domain());
    let payee_before = env.payee_balance().await;

    // Both settlers run; give both a few passes, so that the lease is taken.
    let (handle_a, seen_a) = spawn(&a);
    let (handle_b, seen_b) = spawn(&b);
    let mut handles = [Some(handle_a), Some(handle_b)];
    let seen = [&seen_a, &seen_b];
    tokio::time::sleep(POLL * 3).await;

    // Open through `a`: the first voucher is due at once.
    let params = OpenParams {
        payee: request.recipient,
        operator: Address::ZERO,
        token: request.currency,
        deposit: DEPOSIT,
        salt: B256::random(),
        authorized_signer: addr(PAYER),
    };
    let calls = open_calls(signer.domain(), &params).unwrap();
    let tx = stream_channel::expiring_tx(&rpc, calls, OPEN_GAS, None)
        .await
        .unwrap();
    let signed = signer.open(tx, &params, PRICE, false).unwrap();
    let channel: SessionChannel = signed.channel;
    let id = channel.channel_id;
    let opened = present(&a, &request, &signer, &signed.payload).await;
    assert_eq!(opened.action, SessionAction::Open);

    // Whoever holds the lease settles it; the other one does nothing.
    let (holder, first_at) = settled_by(&seen, PRICE, SETTLE_WITHIN).await;
    let other = 1 - holder;
    assert_eq!(env.settled_on_chain(id).await, PRICE);

    // Past a whole lease term with both running: the holder renews, the other never takes
    // over. A voucher accepted through the other instance is settled by the holder.
    tokio::time::sleep(LEASE + Duration::from_secs(1)).await;
    let through = [&a, &b][other];
    present(
        through,
        &request,
        &signer,
        &signer.voucher(&channel, 2 * PRICE).unwrap(),
    )
    .await;
    let (by, second_at) = settled_by(&seen, 2 * PRICE, SETTLE_WITHIN).await;
    assert_eq!(
        by, holder,
        "the holder settled again after its first lease term"
    );
    assert!(second_at - first_at > LEASE);
    assert_eq!(env.settled_on_chain(id).await, 2 * PRICE);
    let holder_reports = reports(seen[holder]);
    assert_eq!(
        holder_reports
            .iter()
            .map(|r| (r.channel_id, r.trigger, r.settled, r.delta, r.closed))
            .collect::<Vec<_>>(),
        vec![
            (id, SettlementTrigger::Scheduled, PRICE, PRICE, false),
            (id, SettlementTrigger::Scheduled, 2 * PRICE, PRICE, false),
        ]
    );
    assert!(
        reports(seen[other]).is_empty(),
        "only the lease holder settles while both run: {:?}",
        reports(seen[other])
    );

    // Let the holder renew on an idle pass, then stop it (as a crash would).
    tokio::time::sleep(POLL * 2).await;
    drop(handles[holder].take());
    let stopped_at = Instant::now();

    // A voucher accepted now is settled by the other instance, once the lease has expired.
    present(
        &a,
        &request,
        &signer,
        &signer.voucher(&channel, 3 * PRICE).unwrap(),
    )
    .await;
    let (by, taken_at) = settled_by(&seen, 3 * PRICE, LEASE + SETTLE_WITHIN).await;
    assert_eq!(by, other, "the other instance took over");
    let waited = taken_at - stopped_at;
    // The holder renewed at most about one poll before it stopped: its lease ran for
    // nearly `LEASE` more; a takeover much sooner means the lease was not respected.
    assert!(
        waited >= LEASE - Duration::from_secs(1),
        "taken over after {waited:?}, before the {LEASE:?} lease could expire"
    );
    assert_eq!(
        reports(seen[other])
            .iter()
            .map(|r| (r.channel_id, r.trigger, r.settled, r.delta, r.closed))
            .collect::<Vec<_>>(),
        vec![(id, SettlementTrigger::Scheduled, 3 * PRICE, PRICE, false)]
    );
    assert_eq!(
        reports(seen[holder]),
        holder_reports,
        "the stopped instance settled nothing more"
    );
    assert_eq!(env.settled_on_chain(id).await, 3 * PRICE);
    assert_eq!(env.payee_balance().await, payee_before + 3 * PRICE);
    let stored = a.store().get(id).await.unwrap().unwrap();
    assert_eq!(
        (stored.settled, stored.highest_voucher),
        (3 * PRICE, 3 * PRICE)
    );

    // The new holder keeps settling.
    present(
        &b,
        &request,
        &signer,
        &signer.voucher(&channel, 4 * PRICE).unwrap(),
    )
    .await;
    let (by, _) = settled_by(&seen, 4 * PRICE, SETTLE_WITHIN).await;
    assert_eq!(by, other);
    assert_eq!(env.settled_on_chain(id).await, 4 * PRICE);
    assert_eq!(reports(seen[holder]), holder_reports);
    drop(handles);
}

#[tokio::test]
async fn sqlite_file_opened_twice_one_settler_at_a_time() {
    let Some(env) = Env::start().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mpp.db");
    let first = Arc::new(SqliteStore::open(&path).await.unwrap());
    let second = Arc::new(SqliteStore::open(&path).await.unwrap());
    let a = env.instance(first.clone(), first).await;
    let b = env.instance(second.clone(), second).await;
    lease_is_held_by_one_and_taken_over_after_it_expires(&env, a, b).await;
}

/// A channel row of this escrow stored directly (the settler's purge looks at rows only),
/// kept for `retention` after its last change, with a voucher for `highest` accepted.
async fn stored_channel(
    env: &Env,
    store: &dyn ChannelStore,
    retention: Duration,
    highest: u128,
) -> B256 {
    let channel_id = B256::random();
    let new = NewChannel {
        descriptor: ChannelIdentity {
            channel_id,
            protocol: SessionProtocol::V1,
            chain_id: env.chain.chain_id().await.unwrap(),
            escrow: env.escrow,
            payer: addr(PAYER),
            payee: addr(PAYEE),
            token: TOKEN,
            operator: Address::ZERO,
            authorized_signer: addr(PAYER),
            salt: B256::random(),
            expiring_nonce_hash: B256::ZERO,
        },
        deposit: DEPOSIT,
        settled: 0,
        retention,
    };
    store.open(&new).await.unwrap();
    if highest > 0 {
        let voucher = Voucher {
            cumulative_amount: highest,
            signature: vec![1; 65].into(),
        };
        store.accept_voucher(channel_id, &voucher, 0).await.unwrap();
    }
    channel_id
}

/// The lease holder also purges the channel store: a finalized channel past its retention
/// is deleted while the settler runs, and an expired one still holding an unsettled voucher
/// is kept.
#[tokio::test]
async fn the_running_settler_purges_expired_channels() {
    let Some(env) = Env::start().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(dir.path().join("mpp.db")).await.unwrap());
    let sessions = env.instance(store.clone(), store.clone()).await;
    let short = Duration::from_millis(1);
    let finalized = stored_channel(&env, store.as_ref(), short, 0).await;
    store.finalize(finalized, Some(0), None).await.unwrap();
    let unsettled = stored_channel(&env, store.as_ref(), short, 5 * PRICE).await;
    let _handle = sessions.spawn_settler(SettlerConfig {
        schedule: SettlementSchedule {
            amount: None,
            units: None,
            interval: None,
            idle: None,
        },
        poll: POLL,
        lease: LEASE,
        lookback_blocks: 100,
        hook: None,
        purge_interval: Some(POLL),
    });
    let started = Instant::now();
    while store.get(finalized).await.unwrap().is_some() {
        assert!(
            started.elapsed() < SETTLE_WITHIN,
            "the settler never purged the expired finalized channel"
        );
        tokio::time::sleep(POLL).await;
    }
    let kept = store.get(unsettled).await.unwrap();
    assert_eq!(kept.map(|c| c.highest_voucher), Some(5 * PRICE));
}

/// The test Postgres URL, or `None` (skip) when unset outside CI. In CI a missing database is
/// a failure, not a silent skip.
fn pg_url() -> Option<String> {
    const HINT: &str = "MPP_TEST_DATABASE_URL is not set: run `tools/postgres/start.sh` and \
         `source <state dir>/env` (scripts/test.sh does both)";
    match std::env::var("MPP_TEST_DATABASE_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ if std::env::var_os("CI").is_some() => panic!("{HINT}"),
        _ => {
            eprintln!("skipping Postgres test: {HINT}");
            None
        }
    }
}

#[tokio::test]
async fn two_postgres_handles_one_settler_at_a_time() {
    let Some(url) = pg_url() else {
        return;
    };
    let Some(env) = Env::start().await else {
        return;
    };
    // A schema of the test's own: the settlers scan every channel of their store.
    let schema = PgSchema::create(&url, "lease").await.unwrap();
    let first = Arc::new(schema.store().await.unwrap());
    let second = Arc::new(schema.store().await.unwrap());
    let a = env.instance(first.clone(), first).await;
    let b = env.instance(second.clone(), second).await;
    lease_is_held_by_one_and_taken_over_after_it_expires(&env, a, b).await;
    schema.drop().await;
}
