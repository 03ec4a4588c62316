//! Tempo charge verification against a real local node (`anvil --network tempo`, started per
//! test by `mpp_tempo::testing`). Each test skips (with a message) when the node binary is not
//! installed, unless `CI` is set.
//!
//! Run: `cargo test -p mpp-tempo --features testing,client --test charge_devnet -- --nocapture`

// Test helpers outside #[test] fns panic on broken fixtures by design.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use alloy::primitives::{Address, B256, U256, address};
use alloy::signers::local::PrivateKeySigner;
use mpp_core::EncodedJson;
use mpp_core::expiry::{format_timestamp, parse_timestamp};
use mpp_tempo::charge::{ChargeMode, SponsorPolicy};
use mpp_tempo::client::{PaymentCredential, TempoPayer, TxOptions};
use mpp_tempo::store::{Claim, ClaimState, NewClaim, ReplayStore, SqliteStore};
use mpp_tempo::testing::{ANVIL_CHAIN_ID, AnvilNode, DEV_ACCOUNTS, tokens};
use mpp_tempo::{
    ChallengeView, ChargeContext, ChargeError, ChargeKind, SettledCharge, Tempo, TempoChargeRequest,
};
use serde_json::Value;
use tempo_alloy::contracts::precompiles::ITIP20;
use time::OffsetDateTime;

const REALM: &str = "api.example.com";
const RECIPIENT: Address = address!("742d35Cc6634c0532925a3b844bC9e7595F8fE00");
const PRICE: u128 = 10_000; // 0.01 pathUSD

struct Env {
    node: AnvilNode,
    tempo: Tempo,
    store: Arc<SqliteStore>,
    _dir: tempfile::TempDir,
}

async fn env() -> Option<Env> {
    env_with(|b| b).await
}

async fn env_with(
    configure: impl FnOnce(mpp_tempo::TempoBuilder) -> mpp_tempo::TempoBuilder,
) -> Option<Env> {
    let node = AnvilNode::start()?;
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(
        SqliteStore::open(dir.path().join("replay.db"))
            .await
            .unwrap(),
    );
    let builder = Tempo::builder()
        .rpc_url(node.rpc_url())
        .recipient(RECIPIENT)
        .store(store.clone());
    let tempo = configure(builder).build().await.unwrap();
    assert_eq!(tempo.chain_id(), ANVIL_CHAIN_ID);
    Some(Env {
        node,
        tempo,
        store,
        _dir: dir,
    })
}

fn payer(env: &Env, account: usize) -> TempoPayer {
    let signer: PrivateKeySigner = DEV_ACCOUNTS[account].private_key.parse().unwrap();
    TempoPayer::new(signer, &env.node.rpc_url()).unwrap()
}

/// A fresh challenge: id, expiry, and the challenge the client is shown.
struct Challenge {
    id: String,
    /// Millisecond precision, as the client reads it back from `expires`.
    expires: OffsetDateTime,
    offered: mpp_core::Challenge,
}

impl Challenge {
    fn new(req: &TempoChargeRequest) -> Self {
        static N: AtomicU64 = AtomicU64::new(0);
        let id = format!(
            "chal-{}-{}",
            N.fetch_add(1, Ordering::Relaxed),
            OffsetDateTime::now_utc().unix_timestamp_nanos()
        );
        let expires = format_timestamp(OffsetDateTime::now_utc() + Duration::from_secs(300));
        let offered = mpp_core::Challenge::builder(REALM, "tempo", "charge", req.to_json())
            .unwrap()
            .expires(expires.clone())
            .with_id(id.clone());
        Self {
            id,
            expires: parse_timestamp(&expires).unwrap(),
            offered,
        }
    }

    fn as_client(&self) -> &mpp_core::Challenge {
        &self.offered
    }

    /// The same challenge, but the client is shown other terms (to build wrong payments).
    fn client_view(&self, request: &Value) -> mpp_core::Challenge {
        mpp_core::Challenge {
            request: EncodedJson::from_value(request.clone()).unwrap(),
            ..self.offered.clone()
        }
    }

    /// What the server verifies against.
    fn server_view(&self) -> ChallengeView<'_> {
        ChallengeView::new(&self.id, REALM, self.expires)
    }
}

async fn verify(
    env: &Env,
    req: &TempoChargeRequest,
    ch: &Challenge,
    cred: &PaymentCredential,
) -> Result<SettledCharge, ChargeError> {
    verify_payload(env, req, ch, Some(&cred.source), &cred.payload).await
}

async fn verify_payload(
    env: &Env,
    req: &TempoChargeRequest,
    ch: &Challenge,
    source: Option<&str>,
    payload: &Value,
) -> Result<SettledCharge, ChargeError> {
    let ctx = ChargeContext::new(req, ch.server_view(), OffsetDateTime::now_utc());
    env.tempo.verify_charge(ctx, source, payload).await
}

/// A probe claim: `Claimed` proves nobody holds `key`.
fn free_claim(key: &str, expires_at: OffsetDateTime) -> NewClaim<'_> {
    NewClaim {
        key,
        owner: "probe",
        state: ClaimState::Served,
        expires_at,
        valid_before: None,
    }
}

async fn balance(env: &Env, token: Address, who: Address) -> U256 {
    ITIP20::new(token, env.tempo.chain().provider())
        .balanceOf(who)
        .call()
        .await
        .unwrap()
}

fn assert_refused(result: Result<SettledCharge, ChargeError>, what: &str) -> ChargeError {
    match result {
        Ok(r) => panic!("{what}: accepted {r:?}"),
        Err(e) => {
            assert!(
                e.is_payer_fault(),
                "{what}: expected a payer fault, got {e}"
            );
            println!("{what}: refused as expected: {e}");
            e
        }
    }
}

#[tokio::test]
async fn pull_payment_settles() {
    let Some(env) = env().await else { return };
    let req = env.tempo.charge_request(PRICE);
    let ch = Challenge::new(&req);
    let before = balance(&env, tokens::PATH_USD, RECIPIENT).await;
    let started = Instant::now();
    let cred = payer(&env, 1)
        .pull(ch.as_client(), &TxOptions::default())
        .await
        .unwrap();
    let signed = started.elapsed();
    let receipt = verify(&env, &req, &ch, &cred).await.unwrap();
    let total = started.elapsed();
    println!(
        "TIMING pull: client sign {signed:?}, server verify+broadcast {:?}, total {total:?}",
        total - signed
    );
    assert_eq!(receipt.kind, ChargeKind::Transaction);
    assert_eq!(receipt.payer, DEV_ACCOUNTS[1].address);
    assert_eq!(
        Some(receipt.reference.clone()),
        cred.tx_hash.map(|h| format!("{h:#x}"))
    );
    assert_eq!(receipt.reference, receipt.reference.to_lowercase());
    assert_eq!(
        balance(&env, tokens::PATH_USD, RECIPIENT).await - before,
        U256::from(PRICE)
    );
    // The same credential again, and its hash as a push credential: both refused.
    let e = assert_refused(verify(&env, &req, &ch, &cred).await, "replayed pull");
    assert!(matches!(e, ChargeError::Replayed(_)));
    let as_push = serde_json::json!({"type": "hash", "hash": receipt.reference});
    let e = assert_refused(
        verify_payload(&env, &req, &ch, Some(&cred.source), &as_push).await,
        "pulled tx presented as push",
    );
    assert!(matches!(e, ChargeError::Replayed(_)));
}

#[tokio::test]
async fn push_payment_settles_once() {
    let Some(env) = env().await else { return };
    let req = env.tempo.charge_request(PRICE);
    let ch = Challenge::new(&req);
    let started = Instant::now();
    let cred = payer(&env, 2)
        .push(ch.as_client(), &TxOptions::default())
        .await
        .unwrap();
    let sent = started.elapsed();
    let receipt = verify(&env, &req, &ch, &cred).await.unwrap();
    let total = started.elapsed();
    println!(
        "TIMING push: client send {sent:?}, server verify {:?}, total {total:?}",
        total - sent
    );
    assert_eq!(receipt.kind, ChargeKind::Hash);
    assert_eq!(receipt.payer, DEV_ACCOUNTS[2].address);
    let e = assert_refused(verify(&env, &req, &ch, &cred).await, "replayed hash");
    assert!(matches!(e, ChargeError::Replayed(_)));
    // Without source, the sender is the receipt's `from`; still single use.
    let e = assert_refused(
        verify_payload(&env, &req, &ch, None, &cred.payload).await,
        "replayed hash without source",
    );
    assert!(matches!(e, ChargeError::Replayed(_)));
}

#[tokio::test]
async fn push_for_another_challenge_or_from_someone_else_is_refused() {
    let Some(env) = env().await else { return };
    let req = env.tempo.charge_request(PRICE);
    let paid = Challenge::new(&req);
    let cred = payer(&env, 3)
        .push(paid.as_client(), &TxOptions::default())
        .await
        .unwrap();
    // Same hash, presented for another challenge: the memo binds it to `paid`.
    let other = Challenge::new(&req);
    assert_refused(
        verify(&env, &req, &other, &cred).await,
        "hash for another challenge",
    );
    // Claiming someone else's payment: source is a different account.
    let mut stolen = cred.clone();
    stolen.source = format!(
        "did:pkh:eip155:{ANVIL_CHAIN_ID}:{}",
        DEV_ACCOUNTS[4].address
    );
    assert_refused(verify(&env, &req, &paid, &stolen).await, "foreign source");
    let mut bad_chain = cred.clone();
    bad_chain.source = format!("did:pkh:eip155:1:{}", DEV_ACCOUNTS[3].address);
    assert_refused(
        verify(&env, &req, &paid, &bad_chain).await,
        "source on another chain",
    );
    // The genuine one still works (refusals claimed nothing).
    verify(&env, &req, &paid, &cred).await.unwrap();
}

#[tokio::test]
async fn sponsored_pull_settles_and_the_sponsor_pays_the_fee() {
    let sponsor = DEV_ACCOUNTS[5];
    let Some(env) = env_with(|b| {
        b.fee_payer(
            sponsor.private_key.parse().unwrap(),
            SponsorPolicy::default(),
        )
    })
    .await
    else {
        return;
    };
    let req = env.tempo.charge_request(PRICE);
    assert!(req.method_details.fee_payer);
    assert_eq!(
        req.method_details.supported_modes,
        Some(vec![ChargeMode::Pull])
    );
    let ch = Challenge::new(&req);
    let payer_account = DEV_ACCOUNTS[6];
    // Account 6 pays fees in pathUSD by default; it must lose exactly the price.
    let payer_before = balance(&env, tokens::PATH_USD, payer_account.address).await;
    let sponsor_before = balance(&env, tokens::PATH_USD, sponsor.address).await;
    let started = Instant::now();
    let cred = payer(&env, 6)
        .pull(ch.as_client(), &TxOptions::default())
        .await
        .unwrap();
    assert!(
        cred.payload["signature"]
            .as_str()
            .unwrap()
            .starts_with("0x78")
    );
    let signed = started.elapsed();
    let receipt = verify(&env, &req, &ch, &cred).await.unwrap();
    let total = started.elapsed();
    println!(
        "TIMING sponsored pull: client sign {signed:?}, server co-sign+broadcast {:?}, total {total:?}",
        total - signed
    );
    assert_eq!(receipt.kind, ChargeKind::SponsoredTransaction);
    assert_eq!(receipt.payer, payer_account.address);
    assert_eq!(
        payer_before - balance(&env, tokens::PATH_USD, payer_account.address).await,
        U256::from(PRICE)
    );
    assert!(balance(&env, tokens::PATH_USD, sponsor.address).await < sponsor_before);
    let e = assert_refused(verify(&env, &req, &ch, &cred).await, "replayed envelope");
    assert!(matches!(e, ChargeError::Replayed(_)));
}

/// Twenty sponsored payments whose gas limit is below what their call needs are refused
/// before anything is sent: the fee payer pays nothing for them (the review's finding 2a).
#[tokio::test]
async fn under_gassed_sponsored_payments_cost_the_fee_payer_nothing() {
    let sponsor = DEV_ACCOUNTS[5];
    let Some(env) = env_with(|b| {
        b.fee_payer(
            sponsor.private_key.parse().unwrap(),
            SponsorPolicy::default(),
        )
    })
    .await
    else {
        return;
    };
    let req = env.tempo.charge_request(PRICE);
    let sponsor_before = balance(&env, tokens::PATH_USD, sponsor.address).await;
    let recipient_before = balance(&env, tokens::PATH_USD, RECIPIENT).await;
    for i in 0..20 {
        let ch = Challenge::new(&req);
        // Above intrinsic gas, below what a transferWithMemo needs.
        let options = TxOptions {
            gas_limit: Some(30_000 + i * 100),
            ..Default::default()
        };
        let cred = payer(&env, 7).pull(ch.as_client(), &options).await.unwrap();
        let e = assert_refused(verify(&env, &req, &ch, &cred).await, "under-gassed");
        assert!(e.to_string().contains("gas"), "{e}");
    }
    assert_eq!(
        balance(&env, tokens::PATH_USD, sponsor.address).await,
        sponsor_before,
        "the fee payer paid for refused transactions"
    );
    assert_eq!(
        balance(&env, tokens::PATH_USD, RECIPIENT).await,
        recipient_before
    );
    // A properly gassed one still goes through.
    let ch = Challenge::new(&req);
    let cred = payer(&env, 7)
        .pull(ch.as_client(), &TxOptions::default())
        .await
        .unwrap();
    verify(&env, &req, &ch, &cred).await.unwrap();
}

/// A fresh account holding exactly `amount` pathUSD (and nothing to pay fees with).
async fn account_holding(env: &Env, amount: u128) -> PrivateKeySigner {
    let fresh = PrivateKeySigner::random();
    let mut funding = env.tempo.charge_request(amount);
    funding.recipient = fresh.address();
    funding.method_details.fee_payer = false;
    funding.method_details.supported_modes = None;
    let ch = Challenge::new(&funding);
    payer(env, 2)
        .push(ch.as_client(), &TxOptions::default())
        .await
        .unwrap();
    assert_eq!(
        balance(env, tokens::PATH_USD, fresh.address()).await,
        U256::from(amount)
    );
    fresh
}

/// What a mined transaction cost its fee payer, in fee-token base units (attodollars per
/// gas × gas, over 10^12).
async fn fee_of(env: &Env, reference: &str) -> U256 {
    use alloy::network::ReceiptResponse;
    let receipt = env
        .tempo
        .chain()
        .receipt(reference.parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    let cost = u128::from(receipt.gas_used()) * receipt.effective_gas_price();
    U256::from(cost.div_ceil(1_000_000_000_000))
}

/// Twenty concurrent sponsored payments from an account that can pay once: sponsored
/// settlements of one sender take turns (across instances: the turn is a store claim), and
/// each estimates its transaction again inside its turn, so one is sent and nineteen are
/// refused before the fee payer spends anything (the review's finding 2b).
#[tokio::test]
async fn concurrent_sponsored_payments_from_an_account_that_can_pay_once_cost_one_fee() {
    let sponsor = DEV_ACCOUNTS[5];
    let Some(env) = env_with(|b| {
        b.fee_payer(
            sponsor.private_key.parse().unwrap(),
            SponsorPolicy::default(),
        )
    })
    .await
    else {
        return;
    };
    let req = env.tempo.charge_request(PRICE);
    let fresh = account_holding(&env, PRICE).await;
    let fresh_payer = TempoPayer::new(fresh.clone(), &env.node.rpc_url()).unwrap();
    let mut credentials = Vec::new();
    for _ in 0..20 {
        let ch = Challenge::new(&req);
        let cred = fresh_payer
            .pull(ch.as_client(), &TxOptions::default())
            .await
            .unwrap();
        credentials.push((ch, cred));
    }
    let sponsor_before = balance(&env, tokens::PATH_USD, sponsor.address).await;
    let recipient_before = balance(&env, tokens::PATH_USD, RECIPIENT).await;
    let mut tasks = tokio::task::JoinSet::new();
    for (ch, cred) in credentials {
        let (tempo, req) = (env.tempo.clone(), req.clone());
        tasks.spawn(async move {
            let challenge = ChallengeView::new(&ch.id, REALM, ch.expires);
            let ctx = ChargeContext::new(&req, challenge, OffsetDateTime::now_utc());
            tempo
                .verify_charge(ctx, Some(&cred.source), &cred.payload)
                .await
        });
    }
    let (mut settled, mut refused, mut deferred) = (Vec::new(), 0, 0);
    while let Some(result) = tasks.join_next().await {
        match result.unwrap() {
            Ok(receipt) => settled.push(receipt),
            Err(e) if e.is_payer_fault() => refused += 1,
            // A loaded machine can make a payment wait longer for its turn than a request
            // may: deferred (503), nothing sent.
            Err(ChargeError::Deferred { .. }) => deferred += 1,
            Err(e) => panic!("unexpected {e}"),
        }
    }
    println!(
        "settled {}, refused {refused}, deferred {deferred}",
        settled.len()
    );
    assert_eq!((settled.len(), refused + deferred), (1, 19));
    assert_eq!(
        balance(&env, tokens::PATH_USD, RECIPIENT).await - recipient_before,
        U256::from(PRICE)
    );
    let fee = fee_of(&env, &settled[0].reference).await;
    println!(
        "20 concurrent sponsored payments, balance for one: 1 settled, the fee payer paid {fee}"
    );
    assert_eq!(
        sponsor_before - balance(&env, tokens::PATH_USD, sponsor.address).await,
        fee,
        "the fee payer paid for more than the one payment"
    );
}

/// Past the per-sender budget, a sender's sponsored payments are deferred (503 with
/// Retry-After), and nothing is charged; another sender is not affected.
#[tokio::test]
async fn sponsored_fees_stop_at_the_budget() {
    use alloy::providers::Provider;
    let sponsor = DEV_ACCOUNTS[5];
    const GAS: u64 = 500_000;
    // The node's price as the client reads it: the client offers 20 % more.
    let node = AnvilNode::start();
    let Some(node) = node else { return };
    let price = gas_price(&node).await;
    drop(node);
    let most_of_one = u128::from(GAS) * (price * 6 / 5).max(1_000_000_000);
    let Some(env) = env_with(|b| {
        b.fee_payer(
            sponsor.private_key.parse().unwrap(),
            SponsorPolicy {
                budget: mpp_tempo::SponsorBudget {
                    window: Duration::from_secs(3600),
                    // Room for one payment's most, not for a second on top of what the
                    // first really cost.
                    per_sender: most_of_one,
                    total: 100 * most_of_one,
                },
                ..SponsorPolicy::default()
            },
        )
    })
    .await
    else {
        return;
    };
    assert_eq!(
        env.tempo.chain().provider().get_gas_price().await.unwrap(),
        price,
        "the gas price is the same on every fresh node"
    );
    let req = env.tempo.charge_request(PRICE);
    let options = TxOptions {
        gas_limit: Some(GAS),
        ..Default::default()
    };
    let ch = Challenge::new(&req);
    let cred = payer(&env, 6).pull(ch.as_client(), &options).await.unwrap();
    verify(&env, &req, &ch, &cred).await.unwrap();

    let sponsor_before = balance(&env, tokens::PATH_USD, sponsor.address).await;
    let ch = Challenge::new(&req);
    let cred = payer(&env, 6).pull(ch.as_client(), &options).await.unwrap();
    match verify(&env, &req, &ch, &cred).await {
        Err(ChargeError::Deferred {
            detail,
            retry_after,
        }) => {
            println!("over the sender's budget: {detail} (retry after {retry_after} s)");
            assert!((1..=3600).contains(&retry_after), "{retry_after}");
            assert!(!detail.contains("http"), "{detail}");
        }
        other => panic!("expected a deferral, got {other:?}"),
    }
    assert_eq!(
        balance(&env, tokens::PATH_USD, sponsor.address).await,
        sponsor_before
    );
    // The deferred credential was released, not used: another sender goes through.
    let ch = Challenge::new(&req);
    let cred = payer(&env, 7).pull(ch.as_client(), &options).await.unwrap();
    verify(&env, &req, &ch, &cred).await.unwrap();
}

/// A fee payer that cannot pay is the operator's fault: 503, never the payer's 402.
#[tokio::test]
async fn an_unfunded_fee_payer_is_a_server_fault() {
    let unfunded = PrivateKeySigner::random();
    let Some(env) = env_with(|b| b.fee_payer(unfunded, SponsorPolicy::default())).await else {
        return;
    };
    let req = env.tempo.charge_request(PRICE);
    let ch = Challenge::new(&req);
    let cred = payer(&env, 6)
        .pull(ch.as_client(), &TxOptions::default())
        .await
        .unwrap();
    let payer_before = balance(&env, tokens::PATH_USD, DEV_ACCOUNTS[6].address).await;
    match verify(&env, &req, &ch, &cred).await {
        Err(e @ ChargeError::FeePayer(_)) => {
            assert!(!e.is_payer_fault());
            assert!(e.problem().is_none(), "a 503, not a problem for the payer");
            println!("unfunded fee payer: {e}");
        }
        other => panic!("expected a fee payer fault, got {other:?}"),
    }
    assert_eq!(
        balance(&env, tokens::PATH_USD, DEV_ACCOUNTS[6].address).await,
        payer_before
    );
}

/// The gas price a node quotes.
async fn gas_price(node: &AnvilNode) -> u128 {
    use alloy::providers::Provider;
    mpp_tempo::ChainClient::new(&node.rpc_url(), Duration::from_secs(5))
        .unwrap()
        .provider()
        .get_gas_price()
        .await
        .unwrap()
}

#[tokio::test]
async fn sponsored_envelope_is_refused_without_a_sponsor() {
    let Some(env) = env().await else { return };
    let mut req = env.tempo.charge_request(PRICE);
    let ch = Challenge::new(&req);
    // The client believes the server sponsors; the server does not.
    req.method_details.fee_payer = true;
    let view = req.to_json();
    let cred = payer(&env, 1)
        .pull(&ch.client_view(&view), &TxOptions::default())
        .await
        .unwrap();
    req.method_details.fee_payer = false;
    assert_refused(
        verify(&env, &req, &ch, &cred).await,
        "0x78 without sponsorship",
    );
}

#[tokio::test]
async fn proof_settles_once() {
    let Some(env) = env().await else { return };
    let req = env.tempo.charge_request(0);
    let ch = Challenge::new(&req);
    let started = Instant::now();
    let cred = payer(&env, 7).proof(ch.as_client()).unwrap();
    let receipt = verify(&env, &req, &ch, &cred).await.unwrap();
    println!("TIMING proof: total {:?}", started.elapsed());
    assert_eq!(receipt.kind, ChargeKind::Proof);
    assert_eq!(receipt.reference, ch.id);
    assert_eq!(receipt.payer, DEV_ACCOUNTS[7].address);
    assert_refused(verify(&env, &req, &ch, &cred).await, "replayed proof");
    // Someone else's source with this signature.
    let ch2 = Challenge::new(&req);
    let mut cred2 = payer(&env, 7).proof(ch2.as_client()).unwrap();
    cred2.source = format!(
        "did:pkh:eip155:{ANVIL_CHAIN_ID}:{}",
        DEV_ACCOUNTS[8].address
    );
    assert_refused(
        verify(&env, &req, &ch2, &cred2).await,
        "proof for a foreign source",
    );
    // A proof cannot pay a price, and a zero price needs a proof.
    let priced = env.tempo.charge_request(PRICE);
    let ch3 = Challenge::new(&priced);
    let cred3 = payer(&env, 7).proof(ch3.as_client()).unwrap();
    assert_refused(
        verify(&env, &priced, &ch3, &cred3).await,
        "proof for a price",
    );
    let no_source = verify_payload(&env, &req, &ch3, None, &cred3.payload).await;
    assert_refused(no_source, "proof without source");
}

#[tokio::test]
async fn wrong_payments_are_refused_before_broadcast() {
    let Some(env) = env().await else { return };
    let req = env.tempo.charge_request(PRICE);
    let client = payer(&env, 1);
    let before = balance(&env, tokens::PATH_USD, RECIPIENT).await;

    let cases: Vec<(&str, TempoChargeRequest, TxOptions)> = vec![
        (
            "wrong amount",
            TempoChargeRequest {
                amount: PRICE - 1,
                ..req.clone()
            },
            TxOptions::default(),
        ),
        (
            "wrong recipient",
            TempoChargeRequest {
                recipient: DEV_ACCOUNTS[9].address,
                ..req.clone()
            },
            TxOptions::default(),
        ),
        (
            "wrong token",
            TempoChargeRequest {
                currency: tokens::ALPHA_USD,
                ..req.clone()
            },
            TxOptions::default(),
        ),
        (
            "missing memo (plain transfer)",
            req.clone(),
            TxOptions {
                primary_memo: Some(None),
                ..Default::default()
            },
        ),
        (
            "foreign memo",
            req.clone(),
            TxOptions {
                primary_memo: Some(Some(B256::repeat_byte(0xab))),
                ..Default::default()
            },
        ),
        (
            "memo of another challenge",
            req.clone(),
            TxOptions {
                primary_memo: Some(Some(mpp_tempo::charge::attribution_memo(
                    REALM, "other", None,
                ))),
                ..Default::default()
            },
        ),
        (
            "tx for another chain",
            req.clone(),
            TxOptions {
                chain_id: Some(4217),
                gas_limit: Some(600_000),
                ..Default::default()
            },
        ),
        (
            "expired validBefore",
            req.clone(),
            TxOptions {
                valid_before: Some(OffsetDateTime::now_utc().unix_timestamp() as u64 - 5),
                gas_limit: Some(600_000),
                ..Default::default()
            },
        ),
    ];
    for (what, client_terms, options) in cases {
        let ch = Challenge::new(&req);
        let view = client_terms.to_json();
        let cred = client.pull(&ch.client_view(&view), &options).await.unwrap();
        let e = assert_refused(verify(&env, &req, &ch, &cred).await, what);
        assert!(
            matches!(e, ChargeError::VerificationFailed(_)),
            "{what}: {e}"
        );
    }

    // A required server memo.
    let memo = B256::repeat_byte(0x11);
    let mut with_memo = req.clone();
    with_memo.method_details.memo = Some(memo);
    let ch = Challenge::new(&with_memo);
    let cred = client
        .pull(ch.as_client(), &TxOptions::default())
        .await
        .unwrap();
    let plain = client
        .pull(
            ch.as_client(),
            &TxOptions {
                primary_memo: Some(Some(B256::repeat_byte(0x12))),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_refused(
        verify(&env, &with_memo, &ch, &plain).await,
        "wrong server memo",
    );
    verify(&env, &with_memo, &ch, &cred).await.unwrap();

    // The request names another chain than the node's.
    let mut other_chain = req.clone();
    other_chain.method_details.chain_id = 4217;
    let ch = Challenge::new(&other_chain);
    let cred = client.proof(ch.as_client()).unwrap();
    let e = assert_refused(
        verify(&env, &other_chain, &ch, &cred).await,
        "request chain id",
    );
    assert!(matches!(
        e,
        ChargeError::ChainMismatch {
            requested: 4217,
            node: ANVIL_CHAIN_ID
        }
    ));

    // Only the server-memo payment moved money.
    assert_eq!(
        balance(&env, tokens::PATH_USD, RECIPIENT).await - before,
        U256::from(PRICE)
    );
}

#[tokio::test]
async fn modes_not_offered_are_refused() {
    let Some(env) = env_with(|b| b.supported_modes(vec![ChargeMode::Push])).await else {
        return;
    };
    let req = env.tempo.charge_request(PRICE);
    let ch = Challenge::new(&req);
    let mut pull_view = req.clone();
    pull_view.method_details.supported_modes = None;
    let view = pull_view.to_json();
    let cred = payer(&env, 1)
        .pull(&ch.client_view(&view), &TxOptions::default())
        .await
        .unwrap();
    assert_refused(
        verify(&env, &req, &ch, &cred).await,
        "pull when only push is offered",
    );
}

#[tokio::test]
async fn fifty_concurrent_submissions_settle_once() {
    let Some(env) = env().await else { return };
    let req = env.tempo.charge_request(PRICE);
    let before = balance(&env, tokens::PATH_USD, RECIPIENT).await;
    for (kind, cred, ch) in [
        {
            let ch = Challenge::new(&req);
            (
                "pull",
                payer(&env, 8)
                    .pull(ch.as_client(), &TxOptions::default())
                    .await
                    .unwrap(),
                ch,
            )
        },
        {
            let ch = Challenge::new(&req);
            (
                "push",
                payer(&env, 8)
                    .push(ch.as_client(), &TxOptions::default())
                    .await
                    .unwrap(),
                ch,
            )
        },
    ] {
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..50 {
            let (tempo, req, cred) = (env.tempo.clone(), req.clone(), cred.clone());
            let (id, expires) = (ch.id.clone(), ch.expires);
            tasks.spawn(async move {
                let challenge = ChallengeView::new(&id, REALM, expires);
                let ctx = ChargeContext::new(&req, challenge, OffsetDateTime::now_utc());
                tempo
                    .verify_charge(ctx, Some(&cred.source), &cred.payload)
                    .await
            });
        }
        let (mut ok, mut replayed) = (0, 0);
        while let Some(result) = tasks.join_next().await {
            match result.unwrap() {
                Ok(_) => ok += 1,
                Err(ChargeError::Replayed(_)) => replayed += 1,
                Err(e) => panic!("{kind}: unexpected {e}"),
            }
        }
        println!("{kind}: 50 concurrent submissions -> {ok} success, {replayed} replayed");
        assert_eq!((ok, replayed), (1, 49), "{kind}");
    }
    // One pull and one push: exactly two prices moved.
    assert_eq!(
        balance(&env, tokens::PATH_USD, RECIPIENT).await - before,
        U256::from(2 * PRICE)
    );
}

#[tokio::test]
async fn reverted_and_unknown_transactions_are_refused() {
    let Some(env) = env().await else { return };
    let req = env.tempo.charge_request(PRICE);
    let client = payer(&env, 4);

    // Mined but reverted: a transfer of more than the payer holds, with an explicit gas limit
    // (an estimate would fail).
    let ch = Challenge::new(&req);
    let too_much = TempoChargeRequest {
        amount: u128::from(u64::MAX) + 1,
        ..req.clone()
    };
    let view = too_much.to_json();
    let options = TxOptions {
        gas_limit: Some(1_500_000),
        ..Default::default()
    };
    let (hash, succeeded) = client
        .send_payment(&ch.client_view(&view), &options)
        .await
        .unwrap();
    assert!(!succeeded, "the oversized transfer should revert");
    let payload = serde_json::json!({"type": "hash", "hash": hash.to_string()});
    let e = assert_refused(
        verify_payload(&env, &req, &ch, None, &payload).await,
        "reverted push",
    );
    assert!(e.to_string().contains("reverted"), "{e}");

    // The same reverting transfer as a pull: the simulation refuses it, nothing is claimed.
    let ch = Challenge::new(&req);
    let cred = client.pull(&ch.client_view(&view), &options).await.unwrap();
    let mut big = req.clone();
    big.amount = too_much.amount;
    assert_refused(verify(&env, &big, &ch, &cred).await, "reverting pull");
    let hash_key = format!("{:#x}", cred.tx_hash.unwrap());
    assert_eq!(
        env.store
            .claim(free_claim(&hash_key, ch.expires))
            .await
            .unwrap(),
        Claim::Claimed,
        "a refused simulation must release its claims"
    );

    // Never mined (dropped or made up).
    let ch = Challenge::new(&req);
    let payload = serde_json::json!({"type": "hash", "hash": B256::repeat_byte(0x5a).to_string()});
    assert_refused(
        verify_payload(&env, &req, &ch, None, &payload).await,
        "unknown hash",
    );
}

#[tokio::test]
async fn node_down_is_an_error_never_a_success() {
    let Some(mut env) = env().await else { return };
    let req = env.tempo.charge_request(PRICE);
    let client = payer(&env, 3);
    let ch_pull = Challenge::new(&req);
    let pull = client
        .pull(ch_pull.as_client(), &TxOptions::default())
        .await
        .unwrap();
    let ch_push = Challenge::new(&req);
    let push = client
        .push(ch_push.as_client(), &TxOptions::default())
        .await
        .unwrap();

    env.node.stop();
    assert!(!env.node.is_running());

    for (what, ch, cred) in [("pull", &ch_pull, &pull), ("push", &ch_push, &push)] {
        let started = Instant::now();
        let result = verify(&env, &req, ch, cred).await;
        let e = result.expect_err("a dead node must not settle a payment");
        assert!(
            !e.is_payer_fault(),
            "{what}: {e} must be an infrastructure fault"
        );
        assert!(e.problem().is_none());
        println!(
            "{what} with the node down: {e} (after {:?})",
            started.elapsed()
        );
    }
    // The pull was never broadcast, so its claims were released: the payer may retry.
    let hash_key = format!("{:#x}", pull.tx_hash.unwrap());
    assert_eq!(
        env.store
            .claim(free_claim(&hash_key, ch_pull.expires))
            .await
            .unwrap(),
        Claim::Claimed
    );
    // The push was never claimed either.
    let push_key = format!("{:#x}", push.tx_hash.unwrap());
    assert_eq!(
        env.store
            .claim(free_claim(&push_key, ch_push.expires))
            .await
            .unwrap(),
        Claim::Claimed
    );
}

/// The `mpp_core::Method` adapter: terms from a display price, then a full credential from
/// the `mpp_core::Payer` client.
#[tokio::test]
async fn method_adapter_issues_terms_and_verifies() {
    use mpp_core::method::{Method, PriceTerms, VerifyContext};
    use mpp_core::{Challenge, ChallengeSecret, DecimalAmount, Payer, expiry};

    let Some(env) = env().await else { return };
    let mut terms = PriceTerms::charge("0.01".parse::<DecimalAmount>().unwrap());
    terms.external_id = Some("order-42".into());
    let request = env.tempo.request(&terms).unwrap();
    assert_eq!(request["amount"], "10000");
    assert_eq!(request["methodDetails"]["chainId"], ANVIL_CHAIN_ID);
    assert!(
        env.tempo
            .request(&PriceTerms::charge("0.0000001".parse().unwrap()))
            .is_err()
    );

    let secret = ChallengeSecret::new("0123456789abcdef0123456789abcdef").unwrap();
    let now = OffsetDateTime::now_utc();
    let expires = now + Duration::from_secs(300);
    let challenge = Challenge::builder(REALM, "tempo", "charge", request.clone())
        .unwrap()
        .expires(expiry::format_timestamp(expires))
        .sign(&secret);
    let client = payer(&env, 9);
    assert!(client.supports(&challenge));
    let elsewhere = Challenge {
        method: "stripe".into(),
        ..challenge.clone()
    };
    assert!(!client.supports(&elsewhere));
    assert!(client.pay(&elsewhere).await.is_err());
    let credential = client.pay(&challenge).await.unwrap();
    assert_eq!(credential.challenge, challenge);
    assert_eq!(credential.payload["type"], "transaction");
    let ctx = VerifyContext::new(&credential, REALM, expires, now);
    let mut verified = env.tempo.verify(ctx).await.unwrap();
    // Verified and held: the money is taken when the gate settles it.
    let mut settlement = verified.settlement.take().expect("a held settlement");
    settlement.settle().await.unwrap();
    settlement.finish(true).await;
    assert_eq!(verified.receipt.method, "tempo");
    assert_eq!(verified.receipt.external_id.as_deref(), Some("order-42"));
    assert_eq!(verified.amount, Some(10_000));
    let payer_did = format!(
        "did:pkh:eip155:{ANVIL_CHAIN_ID}:{}",
        DEV_ACCOUNTS[9].address
    );
    assert_eq!(verified.payer.as_deref(), Some(payer_did.as_str()));
    assert_eq!(credential.source.as_deref(), Some(payer_did.as_str()));
    // Again: a payer fault mapped to verification-failed.
    match env.tempo.verify(ctx).await {
        Err(mpp_core::MethodError::Rejected { problem, .. }) => {
            assert_eq!(problem, mpp_core::ProblemType::VerificationFailed)
        }
        other => panic!("replay through the adapter: {other:?}"),
    }
}

/// The method reads time from the verify context (the gate's one clock), never from the
/// system clock: a later `now` expires a pull transaction, and replay keys expire relative
/// to `now`.
#[tokio::test]
async fn verification_reads_time_from_the_context() {
    use mpp_core::method::{Method, VerifyContext};
    use mpp_core::{Credential, MethodError, ProblemType};

    let Some(env) = env().await else { return };
    let req = env.tempo.charge_request(PRICE);
    let ch = Challenge::new(&req);
    let paid = payer(&env, 2)
        .pull(ch.as_client(), &TxOptions::default())
        .await
        .unwrap();
    let credential = paid.clone().into_credential(ch.as_client());
    let now = OffsetDateTime::now_utc();
    // An hour later by the server's clock: validBefore (at most 25 s away) has passed, though
    // the system clock says otherwise. Nothing is claimed or broadcast.
    let later = VerifyContext::new(
        &credential,
        REALM,
        ch.expires,
        now + Duration::from_secs(3600),
    );
    match env.tempo.verify(later).await {
        Err(MethodError::Rejected { problem, detail }) => {
            assert_eq!(problem, ProblemType::VerificationFailed);
            assert!(detail.contains("validBefore"), "{detail}");
        }
        other => panic!("a pull past validBefore by the context's clock: {other:?}"),
    }
    let mut verified = env
        .tempo
        .verify(VerifyContext::new(&credential, REALM, ch.expires, now))
        .await
        .unwrap();
    let mut settlement = verified.settlement.take().expect("a held settlement");
    settlement.settle().await.unwrap();
    settlement.finish(true).await;
    assert_eq!(
        Some(verified.receipt.reference),
        paid.tx_hash.map(|h| format!("{h:#x}"))
    );

    // A proof verified "yesterday": its claim lasts as long as its challenge could be
    // accepted (plus a minute), not a fixed retention from that `now`.
    let free = env.tempo.charge_request(0);
    let ch = Challenge::new(&free);
    let proof = payer(&env, 2).proof(ch.as_client()).unwrap();
    let credential: Credential = proof.into_credential(ch.as_client());
    let yesterday = now - Duration::from_secs(86_400);
    let mut verified = env
        .tempo
        .verify(VerifyContext::new(
            &credential,
            REALM,
            ch.expires,
            yesterday,
        ))
        .await
        .unwrap();
    let mut settlement = verified.settlement.take().expect("a held settlement");
    settlement.settle().await.unwrap();
    settlement.finish(true).await;
    let stored: i64 = sqlx::query_scalar("SELECT expires_at FROM replay_keys WHERE key = ?1")
        .bind(format!("tempo:charge:proof:{}", ch.id))
        .fetch_one(env.store.pool())
        .await
        .unwrap();
    let nanos = (ch.expires + Duration::from_secs(60)).unix_timestamp_nanos();
    let expected_ms = nanos / 1_000_000 + i128::from(nanos % 1_000_000 != 0);
    assert_eq!(i128::from(stored), expected_ms);
}

#[tokio::test]
async fn unfunded_payer_is_told_it_has_no_balance() {
    let Some(env) = env().await else { return };
    // A key no dev account funded: no token and no fee token.
    let signer: PrivateKeySigner =
        "0x0101010101010101010101010101010101010101010101010101010101010101"
            .parse()
            .unwrap();
    let address = signer.address();
    let payer = TempoPayer::new(signer, &env.node.rpc_url()).unwrap();
    let req = env.tempo.charge_request(PRICE);
    let ch = Challenge::new(&req);
    let err = payer
        .pull(ch.as_client(), &TxOptions::default())
        .await
        .unwrap_err();
    let text = err.to_string();
    println!("unfunded payer: {text}");
    assert!(
        matches!(err, mpp_tempo::client::ClientError::InsufficientFunds(_)),
        "{text}"
    );
    assert!(
        text.contains(&format!("the payer {address} has 0 base units")),
        "{text}"
    );
}

/// Binding edges of pull deadlines and pushed hashes: a `validBefore` more than 900 s ahead
/// is refused; a hash cannot answer an offer with fee sponsorship (charge.md §6b.1); a pushed
/// transaction mined before its challenge could have been issued (block time before
/// `expires − max lifetime`) is refused, so an old hash cannot be presented again once its
/// claim has expired.
#[tokio::test]
async fn deadlines_and_push_edges_are_refused() {
    let sponsor = DEV_ACCOUNTS[5];
    let Some(env) = env_with(|b| {
        b.fee_payer(
            sponsor.private_key.parse().unwrap(),
            SponsorPolicy::default(),
        )
        .supported_modes(vec![ChargeMode::Pull, ChargeMode::Push])
    })
    .await
    else {
        return;
    };
    let req = env.tempo.charge_request(PRICE);
    assert!(req.method_details.fee_payer);

    let ch = Challenge::new(&req);
    let now = OffsetDateTime::now_utc().unix_timestamp() as u64;
    let far = TxOptions {
        valid_before: Some(now + 1_000),
        // A node refuses to estimate it (its own 30 s limit): the client must not ask.
        gas_limit: Some(500_000),
        ..Default::default()
    };
    let cred = payer(&env, 3).pull(ch.as_client(), &far).await.unwrap();
    let e = assert_refused(verify(&env, &req, &ch, &cred).await, "validBefore too far");
    assert!(e.to_string().contains("ahead"), "{e}");

    let ch = Challenge::new(&req);
    let cred = payer(&env, 3)
        .push(ch.as_client(), &TxOptions::default())
        .await
        .unwrap();
    let e = assert_refused(
        verify(&env, &req, &ch, &cred).await,
        "hash on a sponsored offer",
    );
    assert!(e.to_string().contains("sponsorship"), "{e}");

    // Without sponsorship offered, the same kind of hash pays, but only for a challenge
    // that could have been issued before it was mined.
    let mut plain = req.clone();
    plain.method_details.fee_payer = false;
    let ch = Challenge::new(&plain);
    let cred = payer(&env, 3)
        .push(ch.as_client(), &TxOptions::default())
        .await
        .unwrap();
    let short_lived = ChargeContext::new(&plain, ch.server_view(), OffsetDateTime::now_utc())
        .with_max_lifetime(Duration::from_secs(60));
    let e = env
        .tempo
        .verify_charge(short_lived, Some(&cred.source), &cred.payload)
        .await
        .unwrap_err();
    assert!(e.is_payer_fault(), "{e}");
    assert!(e.to_string().contains("before"), "{e}");
    verify(&env, &plain, &ch, &cred).await.unwrap();
}
