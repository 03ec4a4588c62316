//! Deadlines of unsponsored pull transactions, and the modes a fixed memo offers, against a
//! real local node (`anvil --network tempo`, started per test by `mpp_tempo::testing`).
//!
//! Every pull must carry an expiring nonce with a `validBefore` no more than
//! [`MAX_PULL_VALIDITY`] ahead and no `validAfter` in the future; anything else is the payer's
//! fault, refused before it is broadcast. A `Tempo` with a fixed memo offers pull only (a hash
//! under a fixed memo names no challenge) unless told otherwise.
//!
//! Each test skips (with a message) when the node binary is not installed, unless `CI` is set.
//!
//! Run: `cargo test -p mpp-tempo --all-features --test charge_deadlines -- --nocapture`
#![cfg(all(feature = "testing", feature = "client"))]
// Test helpers outside #[test] fns panic on broken fixtures by design.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::num::NonZeroU64;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use alloy::eips::eip2718::Encodable2718;
use alloy::primitives::{Address, B256, Bytes, TxKind, U256, address};
use alloy::providers::Provider;
use alloy::signers::SignerSync;
use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::SolCall;
use mpp_core::expiry::{format_timestamp, parse_timestamp};
use mpp_core::{DecimalAmount, EncodedJson, Method, PriceTerms};
use mpp_tempo::charge::{ChargeMode, MAX_PULL_VALIDITY, attribution_memo};
use mpp_tempo::client::{ClientError, TempoPayer, TxOptions};
use mpp_tempo::store::SqliteStore;
use mpp_tempo::testing::{ANVIL_CHAIN_ID, AnvilNode, DEV_ACCOUNTS, tokens};
use mpp_tempo::{
    ChallengeView, ChargeContext, ChargeError, ChargeKind, SettledCharge, Tempo, TempoChargeRequest,
};
use serde_json::{Value, json};
use tempo_alloy::contracts::precompiles::ITIP20;
use tempo_primitives::transaction::{
    Call, PrimitiveSignature, TEMPO_EXPIRING_NONCE_KEY, TempoSignature, TempoTransaction,
};
use time::OffsetDateTime;

const REALM: &str = "api.example.com";
const RECIPIENT: Address = address!("742d35Cc6634c0532925a3b844bC9e7595F8fE00");
const PRICE: u128 = 10_000; // 0.01 pathUSD
const MEMO: B256 = B256::repeat_byte(0x42);

struct Env {
    node: AnvilNode,
    tempo: Tempo,
    _dir: tempfile::TempDir,
}

async fn env_with(
    configure: impl FnOnce(mpp_tempo::TempoBuilder) -> mpp_tempo::TempoBuilder,
) -> Option<Env> {
    let node = AnvilNode::start()?;
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("replay.db"))
        .await
        .unwrap();
    let builder = Tempo::builder()
        .rpc_url(node.rpc_url())
        .recipient(RECIPIENT)
        .store(Arc::new(store));
    let tempo = configure(builder).build().await.unwrap();
    assert_eq!(tempo.chain_id(), ANVIL_CHAIN_ID);
    Some(Env {
        node,
        tempo,
        _dir: dir,
    })
}

fn signer(account: usize) -> PrivateKeySigner {
    DEV_ACCOUNTS[account].private_key.parse().unwrap()
}

fn payer(env: &Env, account: usize) -> TempoPayer {
    TempoPayer::new(signer(account), &env.node.rpc_url()).unwrap()
}

fn source(account: usize) -> String {
    format!(
        "did:pkh:eip155:{ANVIL_CHAIN_ID}:{}",
        DEV_ACCOUNTS[account].address
    )
}

/// A fresh challenge: its id, expiry, and what the client is shown.
struct Challenge {
    id: String,
    expires: OffsetDateTime,
    offered: mpp_core::Challenge,
}

impl Challenge {
    fn new(req: &TempoChargeRequest) -> Self {
        static N: AtomicU64 = AtomicU64::new(0);
        let id = format!(
            "deadline-{}-{}",
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

    /// The same challenge with other terms shown to the client.
    fn client_view(&self, request: &TempoChargeRequest) -> mpp_core::Challenge {
        mpp_core::Challenge {
            request: EncodedJson::from_value(request.to_json()).unwrap(),
            ..self.offered.clone()
        }
    }
}

async fn verify_at(
    env: &Env,
    req: &TempoChargeRequest,
    ch: &Challenge,
    now: OffsetDateTime,
    source: &str,
    payload: &Value,
) -> Result<SettledCharge, ChargeError> {
    let view = ChallengeView::new(&ch.id, REALM, ch.expires);
    let ctx = ChargeContext::new(req, view, now);
    env.tempo.verify_charge(ctx, Some(source), payload).await
}

/// A signed, unsponsored `0x76` pull of [`PRICE`] pathUSD to [`RECIPIENT`] from dev account
/// `account`, as the SDK clients build it (an expiring nonce, `validBefore` = `now` + 25 s,
/// the attribution memo of `ch`), after `edit`. Returns the payload and the hash.
async fn signed_pull(
    env: &Env,
    account: usize,
    ch: &Challenge,
    now: u64,
    edit: impl FnOnce(&mut TempoTransaction),
) -> (Value, B256) {
    let input = ITIP20::transferWithMemoCall {
        to: RECIPIENT,
        amount: U256::from(PRICE),
        memo: attribution_memo(REALM, &ch.id, None),
    }
    .abi_encode();
    let max_fee_per_gas = env.tempo.chain().suggested_max_fee_per_gas().await.unwrap();
    let mut tx = TempoTransaction {
        chain_id: ANVIL_CHAIN_ID,
        fee_token: None,
        max_priority_fee_per_gas: 1_000_000_000u128.min(max_fee_per_gas),
        max_fee_per_gas,
        // Fixed: a node will not estimate some of the transactions built here.
        gas_limit: 600_000,
        calls: vec![Call {
            to: TxKind::Call(tokens::PATH_USD),
            value: U256::ZERO,
            input: input.into(),
        }],
        nonce_key: TEMPO_EXPIRING_NONCE_KEY,
        nonce: 0,
        valid_before: NonZeroU64::new(now + 25),
        ..Default::default()
    };
    edit(&mut tx);
    let signature = signer(account)
        .sign_hash_sync(&tx.signature_hash())
        .unwrap();
    let signed = tx.into_signed(TempoSignature::Primitive(PrimitiveSignature::Secp256k1(
        signature,
    )));
    let payload = json!({
        "type": "transaction",
        "signature": Bytes::from(signed.encoded_2718()).to_string(),
    });
    (payload, *signed.hash())
}

async fn balance(env: &Env, who: Address) -> U256 {
    ITIP20::new(tokens::PATH_USD, env.tempo.chain().provider())
        .balanceOf(who)
        .call()
        .await
        .unwrap()
}

/// The account's protocol nonce (nonce key 0).
async fn nonce(env: &Env, who: Address) -> u64 {
    env.tempo
        .chain()
        .provider()
        .get_transaction_count(who)
        .await
        .unwrap()
}

fn assert_payer_fault(result: Result<SettledCharge, ChargeError>, what: &str) -> ChargeError {
    match result {
        Ok(settled) => panic!("{what}: accepted {settled:?}"),
        Err(e) => {
            assert!(e.is_payer_fault(), "{what}: not a payer fault: {e}");
            assert!(
                e.problem().is_some(),
                "{what}: a payer fault is answered 402: {e}"
            );
            assert!(
                matches!(e, ChargeError::VerificationFailed(_)),
                "{what}: {e}"
            );
            println!("{what}: refused: {e}");
            e
        }
    }
}

#[tokio::test]
async fn pulls_without_a_proper_deadline_are_refused_before_broadcast() {
    let Some(env) = env_with(|b| b).await else {
        return;
    };
    let req = env.tempo.charge_request(PRICE);
    assert!(!req.method_details.fee_payer, "unsponsored");
    let account = 4;
    let from = DEV_ACCOUNTS[account].address;
    let payer_before = balance(&env, from).await;
    let recipient_before = balance(&env, RECIPIENT).await;
    let nonce_before = nonce(&env, from).await;
    let now = OffsetDateTime::now_utc();
    let secs = u64::try_from(now.unix_timestamp()).unwrap();
    let too_far = secs + MAX_PULL_VALIDITY.as_secs() + 60;

    type Edit = Box<dyn FnOnce(&mut TempoTransaction)>;
    let cases: Vec<(&str, Edit, &str)> = vec![
        (
            "a regular (non-expiring) nonce",
            Box::new(move |tx| {
                tx.nonce_key = U256::ZERO;
                tx.nonce = nonce_before;
            }),
            "expiring nonce",
        ),
        (
            "no validBefore",
            Box::new(|tx| tx.valid_before = None),
            "no validBefore",
        ),
        (
            "validAfter in the future",
            Box::new(move |tx| tx.valid_after = NonZeroU64::new(secs + 4)),
            "validAfter",
        ),
        (
            "validBefore beyond the allowed maximum",
            Box::new(move |tx| tx.valid_before = NonZeroU64::new(too_far)),
            "ahead",
        ),
    ];
    let mut hashes = Vec::new();
    for (what, edit, says) in cases {
        let ch = Challenge::new(&req);
        let (payload, hash) = signed_pull(&env, account, &ch, secs, edit).await;
        let e = assert_payer_fault(
            verify_at(&env, &req, &ch, now, &source(account), &payload).await,
            what,
        );
        assert!(e.to_string().contains(says), "{what}: {e}");
        hashes.push((what, hash));
    }

    // Past the `validAfter` above and a block or two: anything sent would be mined by now.
    tokio::time::sleep(Duration::from_secs(7)).await;
    for (what, hash) in hashes {
        assert!(
            env.tempo.chain().receipt(hash).await.unwrap().is_none(),
            "{what}: the transaction was broadcast"
        );
    }
    assert_eq!(balance(&env, from).await, payer_before, "payer charged");
    assert_eq!(
        balance(&env, RECIPIENT).await,
        recipient_before,
        "recipient paid"
    );
    assert_eq!(nonce(&env, from).await, nonce_before, "a nonce was used");

    // The same transaction with the SDKs' deadline pays: the refusals above were the
    // deadlines', not the builder's.
    let ch = Challenge::new(&req);
    let now = OffsetDateTime::now_utc();
    let secs = u64::try_from(now.unix_timestamp()).unwrap();
    let (payload, hash) = signed_pull(&env, account, &ch, secs, |_| {}).await;
    let settled = verify_at(&env, &req, &ch, now, &source(account), &payload)
        .await
        .unwrap();
    assert_eq!(settled.kind, ChargeKind::Transaction);
    assert_eq!(settled.reference, format!("{hash:#x}"));
    assert_eq!(
        balance(&env, RECIPIENT).await - recipient_before,
        U256::from(PRICE)
    );
}

#[tokio::test]
async fn a_fixed_memo_offers_pull_only_and_refuses_a_hash() {
    let Some(env) = env_with(|b| b.memo(MEMO)).await else {
        return;
    };
    let req = env.tempo.charge_request(PRICE);
    assert_eq!(req.method_details.memo, Some(MEMO));
    assert_eq!(
        req.method_details.supported_modes,
        Some(vec![ChargeMode::Pull])
    );
    assert!(req.allows(ChargeMode::Pull));
    assert!(!req.allows(ChargeMode::Push));
    // What the challenges of a route carry (the `Method` the gate asks).
    let offered = Method::request(
        &env.tempo,
        &PriceTerms::charge(DecimalAmount::parse("0.01").unwrap()),
    )
    .unwrap();
    assert_eq!(
        offered["methodDetails"]["supportedModes"],
        json!(["pull"]),
        "{offered}"
    );
    assert_eq!(
        offered["methodDetails"]["memo"],
        json!(MEMO.to_string()),
        "{offered}"
    );

    // A client reading the challenge will not push.
    let ch = Challenge::new(&req);
    let refused = payer(&env, 3)
        .push(&ch.offered, &TxOptions::default())
        .await
        .unwrap_err();
    assert!(
        matches!(refused, ClientError::NotOffered("push")),
        "{refused}"
    );

    // A hash paid anyway (the client shown terms that allow push; the transfer carries the
    // fixed memo) is refused: the payer's fault, and it stays refused.
    let mut push_view = req.clone();
    push_view.method_details.supported_modes = None;
    let pushed = payer(&env, 3)
        .push(&ch.client_view(&push_view), &TxOptions::default())
        .await
        .unwrap();
    assert_eq!(pushed.payload["type"], "hash");
    for attempt in ["hash under a fixed memo", "the same hash again"] {
        let e = assert_payer_fault(
            verify_at(
                &env,
                &req,
                &ch,
                OffsetDateTime::now_utc(),
                &pushed.source,
                &pushed.payload,
            )
            .await,
            attempt,
        );
        assert!(e.to_string().contains("not offered"), "{attempt}: {e}");
    }

    // What the client does by default: a pull carrying the memo, which pays.
    let ch = Challenge::new(&req);
    let before = balance(&env, RECIPIENT).await;
    let cred = payer(&env, 3).pay_charge(&ch.offered).await.unwrap();
    assert_eq!(cred.payload["type"], "transaction");
    let settled = verify_at(
        &env,
        &req,
        &ch,
        OffsetDateTime::now_utc(),
        &cred.source,
        &cred.payload,
    )
    .await
    .unwrap();
    assert_eq!(settled.kind, ChargeKind::Transaction);
    assert_eq!(balance(&env, RECIPIENT).await - before, U256::from(PRICE));
}

/// The opt-in the builder documents: a fixed memo with push named explicitly accepts the
/// same kind of hash the test above refuses.
#[tokio::test]
async fn a_fixed_memo_with_push_named_accepts_a_hash() {
    let Some(env) = env_with(|b| {
        b.memo(MEMO)
            .supported_modes(vec![ChargeMode::Pull, ChargeMode::Push])
    })
    .await
    else {
        return;
    };
    let req = env.tempo.charge_request(PRICE);
    assert!(req.allows(ChargeMode::Push));
    let ch = Challenge::new(&req);
    let pushed = payer(&env, 2)
        .push(&ch.offered, &TxOptions::default())
        .await
        .unwrap();
    let settled = verify_at(
        &env,
        &req,
        &ch,
        OffsetDateTime::now_utc(),
        &pushed.source,
        &pushed.payload,
    )
    .await
    .unwrap();
    assert_eq!(settled.kind, ChargeKind::Hash);
    assert_eq!(settled.payer, DEV_ACCOUNTS[2].address);
}
