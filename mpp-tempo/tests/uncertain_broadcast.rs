//! A broadcast whose outcome is not known at once (charge.md §6a.6; the review's finding 1),
//! against a real local node behind a JSON-RPC proxy that loses the send's answer, answers
//! with the EIP-7966 timeout error, never forwards the transaction, or hides receipts. In
//! every case the payer is charged at most once and is either served or told plainly that
//! nothing was charged; a payment whose outcome was lost is settled later (by the same
//! credential, or by the background resolver after a restart), never refused as "used".
//!
//! Each test skips (with a message) when the node binary is not installed, unless `CI` is set.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use alloy::primitives::{Address, U256, address};
use alloy::signers::local::PrivateKeySigner;
use mpp_core::expiry::{format_timestamp, parse_timestamp};
use mpp_tempo::client::{ClientError, PaymentCredential, TempoPayer, TxOptions};
use mpp_tempo::store::{Claim, ClaimState, NewClaim, ReplayStore, SqliteStore};
use mpp_tempo::testing::{AnvilNode, DEV_ACCOUNTS, RpcFaultControl, RpcFaultProxy, tokens};
use mpp_tempo::{ChallengeView, ChargeContext, ChargeError, SettledCharge, Tempo};
use tempo_alloy::contracts::precompiles::ITIP20;
use time::OffsetDateTime;

const REALM: &str = "api.example.com";
const RECIPIENT: Address = address!("742d35Cc6634c0532925a3b844bC9e7595F8fE00");
const PRICE: u128 = 10_000;

struct Env {
    node: AnvilNode,
    proxy: RpcFaultProxy,
    store: Arc<SqliteStore>,
    dir: tempfile::TempDir,
}

async fn env() -> Option<Env> {
    let node = AnvilNode::start()?;
    let proxy = RpcFaultProxy::start(&node.rpc_url()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(
        SqliteStore::open(dir.path().join("claims.db"))
            .await
            .unwrap(),
    );
    Some(Env {
        node,
        proxy,
        store,
        dir,
    })
}

impl Env {
    /// A method reaching the node through the proxy; `maintenance` off unless given.
    async fn tempo(&self, maintenance: Duration) -> Tempo {
        Tempo::builder()
            .rpc_url(self.proxy.url())
            .recipient(RECIPIENT)
            .store(self.store.clone())
            .broadcast_timeout(Duration::from_secs(2))
            .maintenance_interval(maintenance)
            .build()
            .await
            .unwrap()
    }

    fn faults(&self) -> RpcFaultControl {
        self.proxy.control()
    }

    fn payer(&self, account: usize) -> TempoPayer {
        let signer: PrivateKeySigner = DEV_ACCOUNTS[account].private_key.parse().unwrap();
        // The payer talks to the node directly: only the server's calls see the faults.
        TempoPayer::new(signer, &self.node.rpc_url()).unwrap()
    }

    async fn recipient_balance(&self) -> U256 {
        let provider = alloy::providers::ProviderBuilder::new()
            .connect_http(self.node.rpc_url().parse().unwrap());
        ITIP20::new(tokens::PATH_USD, provider)
            .balanceOf(RECIPIENT)
            .call()
            .await
            .unwrap()
    }
}

struct Challenge {
    id: String,
    expires: OffsetDateTime,
    offered: mpp_core::Challenge,
}

impl Challenge {
    fn new(tempo: &Tempo, id: &str) -> Self {
        let expires = format_timestamp(OffsetDateTime::now_utc() + Duration::from_secs(300));
        let offered = mpp_core::Challenge::builder(
            REALM,
            "tempo",
            "charge",
            tempo.charge_request(PRICE).to_json(),
        )
        .unwrap()
        .expires(expires.clone())
        .with_id(id);
        Self {
            id: id.into(),
            expires: parse_timestamp(&expires).unwrap(),
            offered,
        }
    }
}

async fn pay(
    tempo: &Tempo,
    ch: &Challenge,
    cred: &PaymentCredential,
) -> Result<SettledCharge, ChargeError> {
    let request = tempo.charge_request(PRICE);
    let view = ChallengeView::new(&ch.id, REALM, ch.expires);
    let ctx = ChargeContext::new(&request, view, OffsetDateTime::now_utc());
    tempo
        .verify_charge(ctx, Some(&cred.source), &cred.payload)
        .await
}

fn hash_key(cred: &PaymentCredential) -> String {
    format!("{:#x}", cred.tx_hash.unwrap())
}

async fn state_of(store: &SqliteStore, key: &str) -> Option<ClaimState> {
    let probe = NewClaim {
        key,
        owner: "probe",
        state: ClaimState::Served,
        expires_at: OffsetDateTime::now_utc() + Duration::from_secs(1),
        valid_before: None,
    };
    match store.claim(probe).await.unwrap() {
        Claim::Claimed => {
            store
                .release(key, "probe", ClaimState::Served)
                .await
                .unwrap();
            None
        }
        Claim::Existing(record) => Some(record.state),
    }
}

#[tokio::test]
async fn a_lost_broadcast_answer_is_followed_up_and_settled_once() {
    let Some(env) = env().await else { return };
    let tempo = env.tempo(Duration::ZERO).await;
    let before = env.recipient_balance().await;
    let ch = Challenge::new(&tempo, "lost-answer");
    let cred = env
        .payer(1)
        .pull(&ch.offered, &TxOptions::default())
        .await
        .unwrap();
    // The send is forwarded but its answer never comes in time, and the receipt stays
    // hidden for a while after.
    env.faults().hold_sync_send(Duration::from_secs(30));
    env.faults().hide_receipts_for(Duration::from_secs(5));
    let started = Instant::now();
    let settled = pay(&tempo, &ch, &cred)
        .await
        .expect("mined: settled, not refused");
    println!("settled after a lost answer in {:?}", started.elapsed());
    assert_eq!(settled.reference, hash_key(&cred));
    assert_eq!(env.recipient_balance().await - before, U256::from(PRICE));
    assert_eq!(
        state_of(&env.store, &hash_key(&cred)).await,
        Some(ClaimState::Served)
    );
    // Served once: the same credential is now refused, and nothing more is charged.
    env.faults().forward_sync_send();
    let again = pay(&tempo, &ch, &cred).await.unwrap_err();
    assert!(again.is_payer_fault(), "{again}");
    assert_eq!(env.recipient_balance().await - before, U256::from(PRICE));
}

#[tokio::test]
async fn an_eip7966_timeout_error_is_not_a_refusal() {
    let Some(env) = env().await else { return };
    let tempo = env.tempo(Duration::ZERO).await;
    let before = env.recipient_balance().await;
    let ch = Challenge::new(&tempo, "eip7966");
    let cred = env
        .payer(2)
        .pull(&ch.offered, &TxOptions::default())
        .await
        .unwrap();
    env.faults().sync_send_error_eip7966();
    pay(&tempo, &ch, &cred)
        .await
        .expect("in the pool and mined: settled");
    assert_eq!(env.recipient_balance().await - before, U256::from(PRICE));
}

#[tokio::test]
async fn a_transaction_never_mined_is_released_once_its_deadline_passes() {
    let Some(env) = env().await else { return };
    let tempo = env.tempo(Duration::ZERO).await;
    let before = env.recipient_balance().await;
    let ch = Challenge::new(&tempo, "never-mined");
    let valid_before = u64::try_from(OffsetDateTime::now_utc().unix_timestamp()).unwrap() + 4;
    let options = TxOptions {
        valid_before: Some(valid_before),
        ..Default::default()
    };
    let cred = env.payer(3).pull(&ch.offered, &options).await.unwrap();
    // The send never reaches the node, and the answer says "maybe".
    env.faults().drop_sync_send();
    let e = pay(&tempo, &ch, &cred).await.unwrap_err();
    assert!(e.is_payer_fault(), "a definite outcome, not a 503: {e}");
    assert!(e.to_string().contains("nothing was charged"), "{e}");
    assert_eq!(env.recipient_balance().await, before);
    assert_eq!(
        state_of(&env.store, &hash_key(&cred)).await,
        None,
        "released"
    );
}

#[tokio::test]
async fn a_payment_pending_at_a_crash_is_settled_after_the_restart_and_served_once() {
    let Some(env) = env().await else { return };
    let before = env.recipient_balance().await;
    let ch;
    let cred;
    {
        let tempo = env.tempo(Duration::ZERO).await;
        ch = Challenge::new(&tempo, "crash");
        cred = env
            .payer(4)
            .pull(&ch.offered, &TxOptions::default())
            .await
            .unwrap();
        env.faults().hold_sync_send(Duration::from_secs(30));
        env.faults().hide_receipts_for(Duration::from_secs(30));
        // The request is dropped while the outcome is unknown (a crash, a client gone).
        let cut = tokio::time::timeout(Duration::from_secs(4), pay(&tempo, &ch, &cred)).await;
        assert!(cut.is_err(), "still waiting for the outcome");
    }
    // Mined meanwhile, and recorded as pending, not lost.
    assert_eq!(env.recipient_balance().await - before, U256::from(PRICE));
    assert_eq!(
        state_of(&env.store, &hash_key(&cred)).await,
        Some(ClaimState::Pending)
    );

    // A new instance on the same store: its background resolver settles the payment.
    env.faults().reset();
    let tempo = env.tempo(Duration::from_millis(200)).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while state_of(&env.store, &hash_key(&cred)).await != Some(ClaimState::Settled) {
        assert!(
            Instant::now() < deadline,
            "the resolver did not settle the payment"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The same credential is served, without a second charge; then it is used.
    pay(&tempo, &ch, &cred)
        .await
        .expect("settled but not served: served now");
    assert_eq!(env.recipient_balance().await - before, U256::from(PRICE));
    assert!(pay(&tempo, &ch, &cred).await.unwrap_err().is_payer_fault());
    drop(env.dir);
}

/// A push payer whose send answer is lost does not treat it as a failure (and pay again): it
/// looks the transaction up, learns it was mined, and presents its hash; one whose
/// transaction never reached the node learns, once `validBefore` passes, that nothing was
/// paid.
#[tokio::test]
async fn a_push_payer_learns_the_outcome_of_a_lost_send() {
    let Some(env) = env().await else { return };
    let tempo = env.tempo(Duration::ZERO).await;
    let signer: PrivateKeySigner = DEV_ACCOUNTS[4].private_key.parse().unwrap();
    // This payer sends through the proxy, which loses the answer.
    let payer = TempoPayer::new(signer, &env.proxy.url()).unwrap();
    let before = env.recipient_balance().await;

    env.faults().sync_send_error_eip7966();
    let ch = Challenge::new(&tempo, "push-lost-answer");
    let cred = payer
        .push(&ch.offered, &TxOptions::default())
        .await
        .expect("a mined payment is a credential, not an error");
    assert_eq!(env.recipient_balance().await - before, U256::from(PRICE));
    env.faults().forward_sync_send();
    pay(&tempo, &ch, &cred).await.unwrap();

    env.faults().drop_sync_send();
    let ch = Challenge::new(&tempo, "push-never-sent");
    let now = OffsetDateTime::now_utc().unix_timestamp() as u64;
    let options = TxOptions {
        valid_before: Some(now + 3),
        ..TxOptions::default()
    };
    match payer.push(&ch.offered, &options).await {
        Err(ClientError::Node(reason)) => {
            assert!(reason.contains("nothing was paid"), "{reason}")
        }
        other => panic!("expected a definite failure, got {other:?}"),
    }
    assert_eq!(env.recipient_balance().await - before, U256::from(PRICE));
}
