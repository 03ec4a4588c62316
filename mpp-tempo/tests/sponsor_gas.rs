//! The sponsor's gas check on transactions of several calls, against a real local node
//! (`anvil --network tempo`, started per test by `mpp_tempo::testing`): a sponsored
//! transaction is co-signed only when its gas limit is proven to cover what *all* its calls
//! need. anvil has no `tempo_simulateV1`, and its `eth_estimateGas` runs only the last call
//! of a batch, so these tests exercise the bound built from the calls run one by one with gas
//! limits. Each test skips (with a message) when the node binary is not installed, unless
//! `CI` is set.
//!
//! The batch is a charge with a split: a `transferWithMemo` to the recipient and a `transfer`
//! to the split's recipient, the cheapest shape of several calls the call checks accept.
//!
//! Run: `cargo test -p mpp-tempo --features testing,client,sqlite --test sponsor_gas -- --nocapture`

// Test helpers outside #[test] fns panic on broken fixtures by design.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use alloy::primitives::{Address, U256, address};
use alloy::signers::local::PrivateKeySigner;
use mpp_core::expiry::{format_timestamp, parse_timestamp};
use mpp_tempo::charge::{
    PullTransaction, Split, Sponsor, SponsorPolicy, TempoChargeRequest, decode_pull,
};
use mpp_tempo::client::{PaymentCredential, TempoPayer, TxOptions};
use mpp_tempo::store::SqliteStore;
use mpp_tempo::testing::{AnvilNode, DEV_ACCOUNTS, tokens};
use mpp_tempo::{
    ChainError, ChallengeView, ChargeContext, ChargeError, ChargeKind, SettledCharge, Tempo,
};
use tempo_alloy::contracts::precompiles::ITIP20;
use tempo_primitives::transaction::TempoTransaction;
use time::OffsetDateTime;

const REALM: &str = "api.example.com";
const RECIPIENT: Address = address!("742d35Cc6634c0532925a3b844bC9e7595F8fE00");
const SPLIT_RECIPIENT: Address = address!("5aE1000000000000000000000000000000005917");
const PRICE: u128 = 10_000; // 0.01 pathUSD
const SPLIT: u128 = 2_500;
const SPONSOR: usize = 5;

struct Env {
    node: AnvilNode,
    tempo: Tempo,
    sponsor: Sponsor,
    _dir: tempfile::TempDir,
}

async fn env() -> Option<Env> {
    let node = AnvilNode::start()?;
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(
        SqliteStore::open(dir.path().join("replay.db"))
            .await
            .unwrap(),
    );
    let key: PrivateKeySigner = DEV_ACCOUNTS[SPONSOR].private_key.parse().unwrap();
    let tempo = Tempo::builder()
        .rpc_url(node.rpc_url())
        .recipient(RECIPIENT)
        .store(store)
        .fee_payer(key.clone(), SponsorPolicy::default())
        .build()
        .await
        .unwrap();
    Some(Env {
        node,
        tempo,
        sponsor: Sponsor::new(key, SponsorPolicy::default()),
        _dir: dir,
    })
}

/// The sponsored charge with one split: two transfers, so two calls.
fn split_request(env: &Env) -> TempoChargeRequest {
    let mut req = env.tempo.charge_request(PRICE);
    assert!(req.method_details.fee_payer, "the server sponsors");
    req.method_details.splits = Some(vec![Split {
        amount: SPLIT,
        recipient: SPLIT_RECIPIENT,
        memo: None,
    }]);
    req
}

fn payer(env: &Env, account: usize) -> TempoPayer {
    let signer: PrivateKeySigner = DEV_ACCOUNTS[account].private_key.parse().unwrap();
    TempoPayer::new(signer, &env.node.rpc_url()).unwrap()
}

/// A fresh challenge for `req`: what the client is shown and what the server checks.
struct Challenge {
    id: String,
    expires: OffsetDateTime,
    offered: mpp_core::Challenge,
}

impl Challenge {
    fn new(req: &TempoChargeRequest) -> Self {
        static N: AtomicU64 = AtomicU64::new(0);
        let id = format!(
            "gas-{}-{}",
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

    fn view(&self) -> ChallengeView<'_> {
        ChallengeView::new(&self.id, REALM, self.expires)
    }
}

async fn verify(
    env: &Env,
    req: &TempoChargeRequest,
    ch: &Challenge,
    cred: &PaymentCredential,
) -> Result<SettledCharge, ChargeError> {
    let ctx = ChargeContext::new(req, ch.view(), OffsetDateTime::now_utc());
    env.tempo
        .verify_charge(ctx, Some(&cred.source), &cred.payload)
        .await
}

/// A sponsored pull of `req` by dev account `account`, signed with `gas_limit`.
async fn sponsored_pull(
    env: &Env,
    account: usize,
    req: &TempoChargeRequest,
    gas_limit: u64,
) -> (Challenge, PaymentCredential) {
    let ch = Challenge::new(req);
    let options = TxOptions {
        gas_limit: Some(gas_limit),
        ..Default::default()
    };
    let cred = payer(env, account)
        .pull(&ch.offered, &options)
        .await
        .unwrap();
    (ch, cred)
}

/// The transaction the server would send for `cred`: the payer's envelope, co-signed by the
/// sponsor.
fn co_signed(env: &Env, cred: &PaymentCredential) -> TempoTransaction {
    let raw = alloy::hex::decode(cred.payload["signature"].as_str().unwrap()).unwrap();
    let PullTransaction::Sponsored(envelope) = decode_pull(&raw).unwrap().tx else {
        panic!("expected a 0x78 fee payer envelope");
    };
    env.sponsor
        .co_sign(&envelope, tokens::PATH_USD)
        .unwrap()
        .tx()
        .clone()
}

async fn balance(env: &Env, token: Address, who: Address) -> U256 {
    ITIP20::new(token, env.tempo.chain().provider())
        .balanceOf(who)
        .call()
        .await
        .unwrap()
}

fn sponsor_address() -> Address {
    DEV_ACCOUNTS[SPONSOR].address
}

/// A sponsored transaction of two calls signed with the gas anvil's estimate asks for (which
/// covers only its last call, and which the sponsor used to accept) is refused before it is
/// sent, and the fee payer pays nothing; the same calls with that gas do run out of gas on
/// chain. The same transaction with enough gas settles.
#[tokio::test]
async fn an_under_gassed_sponsored_batch_is_refused_and_costs_the_fee_payer_nothing() {
    let Some(env) = env().await else { return };
    let req = split_request(&env);
    let payer_account = 6;
    let sender = DEV_ACCOUNTS[payer_account].address;

    // What the node's estimate of the very transaction says (its last call only, on anvil).
    let (_, probe) = sponsored_pull(&env, payer_account, &req, 1_500_000).await;
    let probe_tx = co_signed(&env, &probe);
    assert_eq!(probe_tx.calls.len(), 2, "a split is a second call");
    let estimate = env
        .tempo
        .chain()
        .estimate_gas(sender, &probe_tx, Some(sponsor_address()))
        .await
        .unwrap();
    let needed = match env
        .tempo
        .chain()
        .sponsored_gas_check(sender, &probe_tx, sponsor_address())
        .await
        .unwrap()
    {
        Ok(needed) => needed,
        other => panic!("1.5M gas should be proven to cover two transfers: {other:?}"),
    };
    println!("eth_estimateGas of the batch: {estimate}; the batch needs about {needed}");
    assert!(
        estimate < needed,
        "the node's estimate ({estimate}) is expected to miss the first call (needed {needed}); \
         if the node now estimates whole batches, pick a gas limit below {needed} instead"
    );

    // Signed with the estimate: refused before broadcast, the fee payer pays nothing.
    let sponsor_before = balance(&env, tokens::PATH_USD, sponsor_address()).await;
    let recipient_before = balance(&env, tokens::PATH_USD, RECIPIENT).await;
    let split_before = balance(&env, tokens::PATH_USD, SPLIT_RECIPIENT).await;
    let payer_before = balance(&env, tokens::PATH_USD, sender).await;
    let (ch, cred) = sponsored_pull(&env, payer_account, &req, estimate).await;
    assert_eq!(
        env.tempo
            .chain()
            .sponsored_gas_check(sender, &co_signed(&env, &cred), sponsor_address())
            .await
            .unwrap(),
        Err(Some(needed)),
        "the gas check refuses the estimate"
    );
    let e = verify(&env, &req, &ch, &cred).await.unwrap_err();
    println!("under-gassed batch: {e}");
    assert!(e.is_payer_fault(), "a payer fault (402): {e}");
    assert!(e.to_string().contains("gas limit"), "{e}");
    assert_eq!(
        balance(&env, tokens::PATH_USD, sponsor_address()).await,
        sponsor_before,
        "the fee payer paid for a refused transaction"
    );
    assert_eq!(
        balance(&env, tokens::PATH_USD, RECIPIENT).await,
        recipient_before
    );
    assert_eq!(
        balance(&env, tokens::PATH_USD, SPLIT_RECIPIENT).await,
        split_before
    );
    assert_eq!(balance(&env, tokens::PATH_USD, sender).await, payer_before);

    // The same calls with that gas, sent by the payer paying its own fee: mined, out of gas.
    // This is what the fee payer would have paid for.
    let mut unsponsored = req.clone();
    unsponsored.method_details.fee_payer = false;
    let ch_unsponsored = Challenge::new(&unsponsored);
    let options = TxOptions {
        gas_limit: Some(estimate),
        ..Default::default()
    };
    let (hash, succeeded) = payer(&env, 7)
        .send_payment(&ch_unsponsored.offered, &options)
        .await
        .unwrap();
    assert!(
        !succeeded,
        "the batch with {estimate} gas should run out of gas on chain ({hash})"
    );
    assert_eq!(
        balance(&env, tokens::PATH_USD, RECIPIENT).await,
        recipient_before
    );

    // The same transaction with enough gas settles, the fee on the sponsor.
    let (ch, cred) = sponsored_pull(&env, payer_account, &req, needed + 100_000).await;
    let settled = verify(&env, &req, &ch, &cred).await.unwrap();
    assert_eq!(settled.kind, ChargeKind::SponsoredTransaction);
    assert_eq!(
        balance(&env, tokens::PATH_USD, RECIPIENT).await - recipient_before,
        U256::from(PRICE - SPLIT)
    );
    assert_eq!(
        balance(&env, tokens::PATH_USD, SPLIT_RECIPIENT).await - split_before,
        U256::from(SPLIT)
    );
    assert_eq!(
        payer_before - balance(&env, tokens::PATH_USD, sender).await,
        U256::from(PRICE),
        "the payer paid the price and no fee"
    );
    assert!(balance(&env, tokens::PATH_USD, sponsor_address()).await < sponsor_before);
}

/// The least gas limit the sponsor accepts for a batch is enough on chain: a bisection over
/// the gas limit, where every accepted payment must settle (a sponsored transaction that ran
/// out of gas would be "reverted") and every refused one is refused for its gas, ends with
/// an accepted limit whose next lower one is refused. (Also prints how much the bound asks
/// beyond what the calls really need, found the same way with the payer paying its own fee.)
#[tokio::test]
async fn the_least_gas_the_sponsor_accepts_for_a_batch_is_enough_on_chain() {
    let Some(env) = env().await else { return };
    let req = split_request(&env);
    let payer_account = 8;
    // Every recipient's balance exists first, so each payment below needs the same gas.
    let (ch, cred) = sponsored_pull(&env, payer_account, &req, 1_500_000).await;
    verify(&env, &req, &ch, &cred).await.unwrap();

    let (mut refused, mut accepted) = (30_000u64, 1_500_000u64);
    let mut settled = 0;
    while accepted - refused > 1 {
        let gas = refused + (accepted - refused) / 2;
        let (ch, cred) = sponsored_pull(&env, payer_account, &req, gas).await;
        match verify(&env, &req, &ch, &cred).await {
            Ok(receipt) => {
                assert_eq!(receipt.kind, ChargeKind::SponsoredTransaction);
                settled += 1;
                accepted = gas;
            }
            Err(e) => {
                assert!(
                    e.is_payer_fault() && e.to_string().contains("gas limit"),
                    "{gas}: {e}"
                );
                refused = gas;
            }
        }
    }
    println!("least accepted gas limit: {accepted} ({settled} payments settled on the way)");
    assert!(settled > 0);

    // What the calls really need: the least gas with which the payer's own (unsponsored)
    // transaction of the same calls succeeds.
    let mut unsponsored = req.clone();
    unsponsored.method_details.fee_payer = false;
    let client = payer(&env, 9);
    // A lower end above intrinsic gas (below it, anvil drops the transaction silently): the
    // node's estimate, which covers only the last call.
    let (_, probe) = sponsored_pull(&env, payer_account, &req, 1_500_000).await;
    let estimate = env
        .tempo
        .chain()
        .estimate_gas(
            DEV_ACCOUNTS[payer_account].address,
            &co_signed(&env, &probe),
            Some(sponsor_address()),
        )
        .await
        .unwrap();
    let (mut fails, mut succeeds) = (estimate, accepted.max(estimate) * 2);
    let ch = Challenge::new(&unsponsored);
    let options = TxOptions {
        gas_limit: Some(fails),
        ..Default::default()
    };
    assert!(
        !client.send_payment(&ch.offered, &options).await.unwrap().1,
        "the calls need more than the estimate of the last one"
    );
    while succeeds - fails > 1 {
        let gas = fails + (succeeds - fails) / 2;
        let ch = Challenge::new(&unsponsored);
        let options = TxOptions {
            gas_limit: Some(gas),
            ..Default::default()
        };
        if client.send_payment(&ch.offered, &options).await.unwrap().1 {
            succeeds = gas;
        } else {
            fails = gas;
        }
    }
    println!(
        "the calls need {succeeds} when the payer pays its fee; the sponsor asks {} more",
        i128::from(accepted) - i128::from(succeeds)
    );
}

/// When the node refuses a sponsored transaction in the gas check, the payer hears a fixed
/// sentence, not the node's text (which is logged): here a `validBefore` the sponsor policy
/// allows (two minutes) but the node's expiring-nonce rule does not (30 s), for a batch and
/// for a single call.
#[tokio::test]
async fn a_refusal_by_the_node_reaches_the_payer_in_fixed_words() {
    let Some(env) = env().await else { return };
    let sponsor_before = balance(&env, tokens::PATH_USD, sponsor_address()).await;
    let single = env.tempo.charge_request(PRICE);
    for req in [split_request(&env), single] {
        let ch = Challenge::new(&req);
        let options = TxOptions {
            gas_limit: Some(1_500_000),
            valid_before: Some(
                u64::try_from(OffsetDateTime::now_utc().unix_timestamp()).unwrap() + 120,
            ),
            ..Default::default()
        };
        let cred = payer(&env, 4).pull(&ch.offered, &options).await.unwrap();
        // What the node says.
        let node_text = match env
            .tempo
            .chain()
            .sponsored_gas_check(
                DEV_ACCOUNTS[4].address,
                &co_signed(&env, &cred),
                sponsor_address(),
            )
            .await
        {
            Err(ChainError::Refused(text)) => text,
            other => panic!("expected the node to refuse it: {other:?}"),
        };
        println!("the node: {node_text}");
        assert!(node_text.contains("valid_before"), "{node_text}");
        // What the payer hears.
        let e = verify(&env, &req, &ch, &cred).await.unwrap_err();
        println!("the payer: {e}");
        assert!(e.is_payer_fault(), "{e}");
        let text = e.to_string();
        assert!(text.contains("nothing was charged"), "{text}");
        for node_words in [node_text.as_str(), "valid_before", "30s", "error"] {
            assert!(!text.contains(node_words), "the node's text leaked: {text}");
        }
    }
    assert_eq!(
        balance(&env, tokens::PATH_USD, sponsor_address()).await,
        sponsor_before
    );
}
