//! A broadcast whose outcome is not known at once (charge.md §6a.6; the review's finding 1),
//! against a real local node behind a JSON-RPC proxy that loses the send's answer, answers
//! with the EIP-7966 timeout error, never forwards the transaction, or hides receipts. In
//! every case the payer is charged at most once and is either served, told plainly that
//! nothing was charged, or (503) told that the payment may have gone through, or did, and to
//! send the same credential again; a payment whose outcome was lost is settled later (by the
//! same credential, or by the background resolver after a restart), never refused as "used".
//!
//! Each test skips (with a message) when the node binary is not installed, unless `CI` is set.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use alloy::primitives::{Address, U256, address};
use alloy::signers::local::PrivateKeySigner;
use mpp_core::expiry::{format_timestamp, parse_timestamp};
use mpp_core::gate::{Offers, Refusal, RequestContext};
use mpp_core::method::Settlement;
use mpp_core::{BoxFuture, Credential, DecimalAmount, MethodError, PaymentGate, PriceTerms};
use mpp_tempo::client::{ClientError, PaymentCredential, TempoPayer, TxOptions};
use mpp_tempo::store::{
    Claim, ClaimRecord, ClaimState, FeeSpend, NewClaim, ReplayStore, SqliteStore, StoreError,
};
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
        self.tempo_with(self.store.clone(), maintenance).await
    }

    /// [`Env::tempo`] with another store in front of the same database.
    async fn tempo_with(&self, store: Arc<dyn ReplayStore>, maintenance: Duration) -> Tempo {
        Tempo::builder()
            .rpc_url(self.proxy.url())
            .recipient(RECIPIENT)
            .store(store)
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

/// The payment gate in front of a [`Tempo`], as a transport drives it: challenges, admission
/// (verification), settlement once the service answered, and the end of the request. Its
/// refusals are what the payer receives (status, `Retry-After`, problem detail).
struct Gate {
    gate: PaymentGate,
    offers: Offers,
}

impl Gate {
    fn new(tempo: &Tempo) -> Self {
        let gate = PaymentGate::new("uncertain-broadcast test secret, 32+ bytes")
            .unwrap()
            .method(tempo.clone())
            .realm(REALM);
        let offers = gate
            .offers(&PriceTerms::charge(DecimalAmount::from_base_units(
                PRICE, 6,
            )))
            .unwrap();
        Self { gate, offers }
    }

    async fn challenge(&self) -> mpp_core::Challenge {
        let cx = RequestContext::new(REALM, self.gate.now());
        self.gate
            .challenges(&self.offers, &cx)
            .await
            .unwrap()
            .remove(0)
    }

    /// Admits `credential`: the held settlement, or the refusal.
    async fn admit(&self, credential: &Credential) -> Result<Settlement, Refusal> {
        let cx = RequestContext::new(REALM, self.gate.now());
        let admitted = self
            .gate
            .admit(&self.offers, Some(Ok(credential.clone())), &cx)
            .await?;
        Ok(admitted
            .verified
            .settlement
            .expect("a tempo charge is settled once the service answered"))
    }

    /// Takes the money of an admitted payment.
    async fn settle(
        &self,
        settlement: &mut Settlement,
        credential: &Credential,
    ) -> Result<(), Refusal> {
        let cx = RequestContext::new(REALM, self.gate.now());
        self.gate
            .settle(&self.offers, settlement, credential, &cx)
            .await
    }

    /// One whole paid request: admitted, settled, served (or not) and ended.
    async fn request(&self, credential: &Credential) -> Result<(), Refusal> {
        let mut settlement = self.admit(credential).await?;
        let settled = self.settle(&mut settlement, credential).await;
        settlement.finish(settled.is_ok()).await;
        settled
    }
}

/// A payer-side refusal (402) saying the payment was used.
fn assert_used(refusal: &Refusal) {
    assert_eq!(refusal.status(), 402, "{refusal:?}");
    assert!(
        refusal.detail().contains("already been used"),
        "{}",
        refusal.detail()
    );
}

/// The node stops answering right after the send (its answer held, then the proxy down):
/// the request keeps looking for the transaction while it can, then answers the honest 503
/// of a payment whose outcome is unknown (Retry-After, "send the same credential again"),
/// and the claim stays pending. When the node is back, the same credential presented again
/// is resolved by that request itself (the background resolver is off): mined, so settled
/// and served once, with no second charge and no second broadcast; a third time it is used.
#[tokio::test]
async fn a_node_gone_after_the_send_leaves_the_payment_pending_until_the_same_credential_returns() {
    let Some(env) = env().await else { return };
    // Maintenance off: only the returning credential can resolve the pending claims.
    let tempo = env.tempo(Duration::ZERO).await;
    let faults = env.faults();
    let gate = Gate::new(&tempo);
    let before = env.recipient_balance().await;

    // One payment through the gate (what the payer receives), one through `verify_charge`
    // (the method's own error).
    let challenge = gate.challenge().await;
    let pulled = env
        .payer(5)
        .pull(&challenge, &TxOptions::default())
        .await
        .unwrap();
    let gated_key = hash_key(&pulled);
    let credential = pulled.into_credential(&challenge);
    let mut settlement = gate.admit(&credential).await.expect("verified and held");
    let ch = Challenge::new(&tempo, "node-gone-direct");
    let cred = env
        .payer(6)
        .pull(&ch.offered, &TxOptions::default())
        .await
        .unwrap();
    let direct_key = hash_key(&cred);

    // Both sends reach the node (and are mined), their answers never come back, and the
    // node is gone before either request can learn the outcome.
    faults.hold_sync_send(Duration::from_secs(60));
    faults.hide_receipts_for(Duration::from_secs(60));
    let forwarded = faults.sends_forwarded();
    let started = Instant::now();
    let (gated, direct, ()) = tokio::join!(
        gate.settle(&mut settlement, &credential),
        pay(&tempo, &ch, &cred),
        async {
            let deadline = Instant::now() + Duration::from_secs(10);
            while faults.sends_forwarded() < forwarded + 2 {
                assert!(
                    Instant::now() < deadline,
                    "the sends did not reach the node"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            faults.down(true).await.unwrap();
        }
    );
    println!("answered after {:?} without a node", started.elapsed());
    settlement.finish(gated.is_ok()).await;

    // What the payer receives: 503, Retry-After, and the pending text.
    let refusal = gated.expect_err("the outcome is unknown: not served");
    println!(
        "gate: {} {:?}: {}",
        refusal.status(),
        refusal.retry_after(),
        refusal.detail()
    );
    assert_eq!(refusal.status(), 503);
    assert_eq!(refusal.problem_type(), None, "not the payer's fault");
    assert!(refusal.retry_after().is_some_and(|s| s >= 1), "{refusal:?}");
    let detail = refusal.detail();
    for words in [
        "submitted",
        "not known yet",
        "same credential again",
        "at most once",
    ] {
        assert!(detail.contains(words), "missing {words:?}: {detail}");
    }
    assert!(!detail.contains("nothing was charged"), "{detail}");
    assert!(
        refusal.challenges().is_empty(),
        "no new payment is asked for"
    );
    // What the method answered: Pending, which the gate turns into that 503.
    let e = direct.expect_err("the outcome is unknown: not settled");
    assert!(matches!(e, ChargeError::Pending(_)), "{e}");
    assert!(!e.is_payer_fault());
    assert!(matches!(MethodError::from(e), MethodError::Pending(_)));
    // The claims stay pending, and the payments did go through meanwhile.
    for key in [&gated_key, &direct_key] {
        assert_eq!(
            state_of(&env.store, key).await,
            Some(ClaimState::Pending),
            "{key}"
        );
    }
    assert_eq!(
        env.recipient_balance().await - before,
        U256::from(2 * PRICE)
    );

    // The node is back. Nothing resolved the claims meanwhile.
    faults.down(false).await.unwrap();
    faults.reset();
    for key in [&gated_key, &direct_key] {
        assert_eq!(
            state_of(&env.store, key).await,
            Some(ClaimState::Pending),
            "{key}"
        );
    }
    let sends = faults.send_calls();
    // The same credentials again: resolved by these requests, settled and served.
    gate.request(&credential)
        .await
        .expect("mined: settled and served");
    let settled = pay(&tempo, &ch, &cred)
        .await
        .expect("mined: settled and served");
    assert_eq!(settled.reference, direct_key);
    for key in [&gated_key, &direct_key] {
        assert_eq!(
            state_of(&env.store, key).await,
            Some(ClaimState::Served),
            "{key}"
        );
    }
    // Charged once each, and nothing was sent again.
    assert_eq!(
        env.recipient_balance().await - before,
        U256::from(2 * PRICE)
    );
    assert_eq!(faults.send_calls(), sends, "no second broadcast");

    // A third time: used.
    assert_used(&gate.request(&credential).await.unwrap_err());
    let again = pay(&tempo, &ch, &cred).await.unwrap_err();
    assert!(matches!(again, ChargeError::Replayed(_)), "{again}");
    assert_eq!(
        env.recipient_balance().await - before,
        U256::from(2 * PRICE)
    );
}

/// A store that fails every move out of `Pending` while `fail` is set (the database gone
/// between the claim and the record of the outcome).
struct FlakyStore {
    inner: Arc<SqliteStore>,
    fail: AtomicBool,
    failures: AtomicU32,
}

impl ReplayStore for FlakyStore {
    fn claim<'a>(&'a self, claim: NewClaim<'a>) -> BoxFuture<'a, Result<Claim, StoreError>> {
        self.inner.claim(claim)
    }

    fn advance<'a>(
        &'a self,
        key: &'a str,
        owner: &'a str,
        from: ClaimState,
        to: ClaimState,
        expires_at: OffsetDateTime,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        if from == ClaimState::Pending && self.fail.load(Ordering::SeqCst) {
            self.failures.fetch_add(1, Ordering::SeqCst);
            return Box::pin(async { Err(StoreError::new("the database went away")) });
        }
        self.inner.advance(key, owner, from, to, expires_at)
    }

    fn release<'a>(
        &'a self,
        key: &'a str,
        owner: &'a str,
        from: ClaimState,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        self.inner.release(key, owner, from)
    }

    fn in_state<'a>(
        &'a self,
        state: ClaimState,
        limit: u32,
    ) -> BoxFuture<'a, Result<Vec<ClaimRecord>, StoreError>> {
        self.inner.in_state(state, limit)
    }

    fn spend<'a>(&'a self, spend: FeeSpend<'a>) -> BoxFuture<'a, Result<bool, StoreError>> {
        self.inner.spend(spend)
    }

    fn refund<'a>(
        &'a self,
        spend: FeeSpend<'a>,
        amount: u64,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        self.inner.refund(spend, amount)
    }

    fn purge_expired(&self) -> BoxFuture<'_, Result<u64, StoreError>> {
        self.inner.purge_expired()
    }
}

/// The 503 of a payment that was mined but could not be recorded.
fn assert_paid_not_recorded(refusal: &Refusal) {
    println!(
        "{} {:?}: {}",
        refusal.status(),
        refusal.retry_after(),
        refusal.detail()
    );
    assert_eq!(refusal.status(), 503);
    assert!(refusal.retry_after().is_some_and(|s| s >= 1), "{refusal:?}");
    let detail = refusal.detail();
    for words in [
        "went through",
        "same credential again",
        "not be charged again",
    ] {
        assert!(detail.contains(words), "missing {words:?}: {detail}");
    }
    assert!(!detail.contains("nothing was charged"), "{detail}");
}

/// The store fails after the transaction was mined, both when the send learns it and when
/// the same credential comes back to the pending claim (`resume`): the payer is told the
/// payment went through and will be served when presented again, never "nothing was
/// charged"; once the store works, the same credential is served, charged once.
#[tokio::test]
async fn a_store_failure_after_a_mined_payment_says_it_was_paid() {
    let Some(env) = env().await else { return };
    let flaky = Arc::new(FlakyStore {
        inner: env.store.clone(),
        fail: AtomicBool::new(true),
        failures: AtomicU32::new(0),
    });
    let tempo = env.tempo_with(flaky.clone(), Duration::ZERO).await;
    let gate = Gate::new(&tempo);
    let before = env.recipient_balance().await;
    let challenge = gate.challenge().await;
    let pulled = env
        .payer(7)
        .pull(&challenge, &TxOptions::default())
        .await
        .unwrap();
    let key = hash_key(&pulled);
    let credential = pulled.into_credential(&challenge);

    // Sent and mined; recording it fails.
    assert_paid_not_recorded(&gate.request(&credential).await.unwrap_err());
    assert_eq!(env.recipient_balance().await - before, U256::from(PRICE));
    assert_eq!(state_of(&env.store, &key).await, Some(ClaimState::Pending));
    // The same credential: `resume` finds it mined; recording fails again.
    assert_paid_not_recorded(&gate.request(&credential).await.unwrap_err());
    assert_eq!(state_of(&env.store, &key).await, Some(ClaimState::Pending));
    assert_eq!(flaky.failures.load(Ordering::SeqCst), 2);

    // The store is back: served once, then used.
    flaky.fail.store(false, Ordering::SeqCst);
    gate.request(&credential).await.expect("paid: served now");
    assert_eq!(state_of(&env.store, &key).await, Some(ClaimState::Served));
    assert_used(&gate.request(&credential).await.unwrap_err());
    assert_eq!(env.recipient_balance().await - before, U256::from(PRICE));
}

/// A pending payment whose `validBefore` has passed is still the same credential's: when it
/// comes back, it is looked up (mined: served) rather than refused as expired.
#[tokio::test]
async fn a_pending_payment_is_served_after_its_valid_before() {
    let Some(env) = env().await else { return };
    let tempo = env.tempo(Duration::ZERO).await;
    let faults = env.faults();
    let before = env.recipient_balance().await;
    let ch = Challenge::new(&tempo, "pending-past-deadline");
    let now = u64::try_from(OffsetDateTime::now_utc().unix_timestamp()).unwrap();
    let valid_before = now + 6;
    let options = TxOptions {
        valid_before: Some(valid_before),
        ..TxOptions::default()
    };
    let cred = env.payer(8).pull(&ch.offered, &options).await.unwrap();
    // Sent and mined, and the request is dropped before it learns so.
    faults.hold_sync_send(Duration::from_secs(60));
    faults.hide_receipts_for(Duration::from_secs(60));
    let cut = tokio::time::timeout(Duration::from_secs(3), pay(&tempo, &ch, &cred)).await;
    assert!(cut.is_err(), "still waiting for the outcome");
    assert_eq!(
        state_of(&env.store, &hash_key(&cred)).await,
        Some(ClaimState::Pending)
    );
    faults.reset();
    // Past validBefore (by the server's clock, which the verifier reads).
    while u64::try_from(OffsetDateTime::now_utc().unix_timestamp()).unwrap() <= valid_before {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let settled = pay(&tempo, &ch, &cred)
        .await
        .expect("mined: served, not refused as expired");
    assert_eq!(settled.reference, hash_key(&cred));
    assert_eq!(env.recipient_balance().await - before, U256::from(PRICE));
    let again = pay(&tempo, &ch, &cred).await.unwrap_err();
    assert!(matches!(again, ChargeError::Replayed(_)), "{again}");
}

/// A transaction the node's simulation refuses is the payer's 402, in fixed words: the
/// node's own message (its wording, possibly about the node) is logged, not sent.
#[tokio::test]
async fn a_refusal_by_the_node_does_not_carry_the_nodes_text() {
    let Some(env) = env().await else { return };
    let tempo = env.tempo(Duration::ZERO).await;
    let before = env.recipient_balance().await;
    // More than the payer holds: it would revert. An explicit gas limit (an estimate fails).
    let too_much = u128::from(u64::MAX) + 1;
    let request = tempo.charge_request(too_much);
    let expires = format_timestamp(OffsetDateTime::now_utc() + Duration::from_secs(300));
    let offered = mpp_core::Challenge::builder(REALM, "tempo", "charge", request.to_json())
        .unwrap()
        .expires(expires.clone())
        .with_id("would-fail");
    let options = TxOptions {
        gas_limit: Some(1_500_000),
        ..TxOptions::default()
    };
    let cred = env.payer(9).pull(&offered, &options).await.unwrap();
    let view = ChallengeView::new("would-fail", REALM, parse_timestamp(&expires).unwrap());
    let ctx = ChargeContext::new(&request, view, OffsetDateTime::now_utc());
    let e = tempo
        .verify_charge(ctx, Some(&cred.source), &cred.payload)
        .await
        .unwrap_err();
    println!("refused: {e}");
    assert!(matches!(e, ChargeError::VerificationFailed(_)), "{e}");
    let MethodError::Rejected { detail, .. } = MethodError::from(e) else {
        panic!("a refusal is the payer's 402");
    };
    // Exactly the fixed words: nothing of the node's message.
    assert_eq!(
        detail,
        "verification failed: the transaction would fail on chain (the node's simulation \
         rejected it); nothing was charged"
    );
    for node_words in [
        "revert",
        "Revert",
        "error",
        "0x",
        "insufficient",
        "Insufficient",
    ] {
        assert!(!detail.contains(node_words), "{node_words:?} in {detail}");
    }
    assert_eq!(env.recipient_balance().await, before);
    assert_eq!(
        state_of(&env.store, &hash_key(&cred)).await,
        None,
        "released"
    );
}
