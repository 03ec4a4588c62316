//! Channel-store semantics (`mpp_tempo::session::store`) on every backend: the in-process
//! `MemoryChannelStore`, SQLite in a temp file, and Postgres from `MPP_TEST_DATABASE_URL`
//! (start one with `tools/postgres/start.sh`, then `source /tmp/mpp-postgres/env`). Without
//! that variable the Postgres tests skip, or fail when `CI` is set. Each Postgres test runs in
//! a schema of its own, so purges and settlement scans see only its rows.
//!
//! - `memory_suite::*`, `sqlite_suite::*`, `postgres_suite::*`: the same conformance cases;
//! - `*_model_*`: random sequences of operations checked step by step against a small model;
//! - `*concurrent*`, `*two_handles*`, `*two_instances*`: races on one channel, from one handle
//!   and from two handles (pools) on one database;
//! - the rest: what each database stores (exact amounts, constraints, corrupt rows).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use mpp_tempo::session::store::{
    Bytes, CancelCloseOutcome, Channel, ChannelIdentity, ChannelState, ChannelStore,
    ChannelStoreError, Charge, ChargeOutcome, CloseOutcome, Commit, CommitOutcome, DepositOutcome,
    FinalizeOutcome, MAX_RESERVATIONS, MemoryChannelStore, NewChannel, OpenOutcome, ReserveOutcome,
    SessionProtocol, SettlementOutcome, SettlementQuery, Voucher, VoucherOutcome,
};
use mpp_tempo::store::{MIGRATIONS_TABLE, PgStore, SqliteStore};
use mpp_tempo::testing::PgSchema;
use mpp_tempo::{Address, B256};
use proptest::prelude::*;
use sqlx::AssertSqlSafe;
use time::OffsetDateTime;

// ---------------------------------------------------------------------------------------------
// Helpers

const HOUR: Duration = Duration::from_secs(3600);
const V2_ESCROW: &str = "0x4d50500000000000000000000000000000000000";

/// A channel id no other test (or earlier run against the same Postgres) uses.
fn unique_id() -> B256 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut bytes = [0u8; 32];
    let nanos = OffsetDateTime::now_utc().unix_timestamp_nanos();
    bytes[..16].copy_from_slice(&nanos.to_be_bytes());
    bytes[16..20].copy_from_slice(&std::process::id().to_be_bytes());
    bytes[20..28].copy_from_slice(&COUNTER.fetch_add(1, Ordering::Relaxed).to_be_bytes());
    bytes[31] = 0xab;
    B256::from(bytes)
}

fn address(last: u8) -> Address {
    let mut bytes = [0x11u8; 20];
    bytes[19] = last;
    Address::from(bytes)
}

fn descriptor(channel_id: B256) -> ChannelIdentity {
    ChannelIdentity {
        channel_id,
        protocol: SessionProtocol::V2,
        chain_id: 42431,
        escrow: Address::from_str(V2_ESCROW).unwrap(),
        payer: address(1),
        payee: address(2),
        token: Address::from_str("0x20c0000000000000000000000000000000000000").unwrap(),
        operator: Address::ZERO,
        authorized_signer: address(1),
        salt: B256::repeat_byte(0x5a),
        expiring_nonce_hash: B256::repeat_byte(0xe1),
    }
}

fn new_channel(deposit: u128) -> NewChannel {
    NewChannel {
        descriptor: descriptor(unique_id()),
        deposit,
        settled: 0,
        retention: HOUR,
    }
}

/// A 65-byte signature-shaped value that names its amount (the store does not verify it).
fn signature(amount: u128, tag: u8) -> Bytes {
    let mut sig = vec![tag; 65];
    sig[..16].copy_from_slice(&amount.to_be_bytes());
    sig[64] = 27;
    Bytes::from(sig)
}

fn voucher(amount: u128) -> Voucher {
    Voucher {
        cumulative_amount: amount,
        signature: signature(amount, 0x01),
    }
}

/// Opens a fresh channel with `deposit` and accepts a voucher for `highest`.
async fn funded(store: &impl ChannelStore, deposit: u128, highest: u128) -> Channel {
    let new = new_channel(deposit);
    let OpenOutcome::Opened(_) = store.open(&new).await.unwrap() else {
        panic!("a fresh channel id was already stored")
    };
    if highest == 0 {
        return store.get(new.descriptor.channel_id).await.unwrap().unwrap();
    }
    match store
        .accept_voucher(new.descriptor.channel_id, &voucher(highest), 0)
        .await
        .unwrap()
    {
        VoucherOutcome::Accepted(ch) => ch,
        other => panic!("funding voucher refused: {other:?}"),
    }
}

fn assert_invariants(ch: &Channel) {
    assert!(
        ch.spent + ch.reserved <= ch.highest_voucher,
        "spent {} + reserved {} > highest {}",
        ch.spent,
        ch.reserved,
        ch.highest_voucher
    );
    assert!(ch.highest_voucher <= ch.deposit, "highest above deposit");
    assert!(ch.settled <= ch.highest_voucher, "settled above highest");
    assert_eq!(
        ch.reserved,
        ch.reservations.iter().map(|r| r.amount).sum::<u128>(),
        "reserved is not the sum of the reservations"
    );
}

/// The test Postgres URL, or `None` (skip) when unset outside CI. In CI a missing database is
/// a failure, not a silent skip.
fn pg_url() -> Option<String> {
    const HINT: &str = "MPP_TEST_DATABASE_URL is not set: run `tools/postgres/start.sh` and \
         `source /tmp/mpp-postgres/env` (or export MPP_TEST_DATABASE_URL=postgres://...)";
    match std::env::var("MPP_TEST_DATABASE_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ if std::env::var_os("CI").is_some() => panic!("{HINT}"),
        _ => {
            eprintln!("skipping Postgres test: {HINT}");
            None
        }
    }
}

async fn sqlite() -> (tempfile::TempDir, SqliteStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("mpp.db")).await.unwrap();
    (dir, store)
}

// ---------------------------------------------------------------------------------------------
// Conformance cases, run on every backend

async fn open_is_idempotent(store: &impl ChannelStore) {
    let new = new_channel(1_000);
    let id = new.descriptor.channel_id;
    assert_eq!(store.get(id).await.unwrap(), None);

    let opened = match store.open(&new).await.unwrap() {
        OpenOutcome::Opened(ch) => ch,
        other => panic!("{other:?}"),
    };
    assert_eq!(opened.descriptor, new.descriptor);
    assert_eq!(
        (opened.deposit, opened.highest_voucher, opened.spent),
        (1_000, 0, 0)
    );
    assert_eq!(opened.state, ChannelState::Open);
    assert_eq!(opened.voucher_signature, None);
    assert_eq!(opened.version, 1);
    assert_eq!(store.get(id).await.unwrap().as_ref(), Some(&opened));

    // The same open again: recognized, nothing changes.
    match store.open(&new).await.unwrap() {
        OpenOutcome::AlreadyOpen(ch) => assert_eq!(ch, opened),
        other => panic!("{other:?}"),
    }
    // Re-verified with a larger deposit: only the deposit grows.
    let bigger = NewChannel {
        deposit: 1_500,
        ..new.clone()
    };
    match store.open(&bigger).await.unwrap() {
        OpenOutcome::AlreadyOpen(ch) => {
            assert_eq!(ch.deposit, 1_500);
            assert!(ch.version > opened.version);
        }
        other => panic!("{other:?}"),
    }
    // ... and a smaller one does not lower it.
    match store.open(&new).await.unwrap() {
        OpenOutcome::AlreadyOpen(ch) => assert_eq!(ch.deposit, 1_500),
        other => panic!("{other:?}"),
    }
    // Another descriptor under the same id is refused.
    let mut other = new.clone();
    other.descriptor.payer = address(9);
    match store.open(&other).await.unwrap() {
        OpenOutcome::Conflict(ch) => assert_eq!(ch.descriptor.payer, address(1)),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        store.get(id).await.unwrap().unwrap().descriptor.payer,
        address(1)
    );

    // Resumed from the chain with value already settled: that value counts as spent.
    let mut resumed = new_channel(1_000);
    resumed.settled = 300;
    match store.open(&resumed).await.unwrap() {
        OpenOutcome::Opened(ch) => {
            assert_eq!((ch.highest_voucher, ch.spent, ch.settled), (300, 300, 300));
            assert_eq!(ch.available(), 0);
        }
        other => panic!("{other:?}"),
    }
    // Settled above the deposit is not a channel.
    let mut broken = new_channel(100);
    broken.settled = 101;
    assert!(matches!(
        store.open(&broken).await,
        Err(ChannelStoreError::Invalid(_))
    ));
    assert_eq!(store.get(broken.descriptor.channel_id).await.unwrap(), None);
}

async fn deposit_never_decreases(store: &impl ChannelStore) {
    let ch = funded(store, 1_000, 0).await;
    let id = ch.id();
    match store.record_deposit(id, 2_000).await.unwrap() {
        DepositOutcome::Raised(ch) => assert_eq!(ch.deposit, 2_000),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        store.record_deposit(id, 2_000).await.unwrap(),
        DepositOutcome::Unchanged(ch) if ch.deposit == 2_000
    ));
    assert!(matches!(
        store.record_deposit(id, 1_999).await.unwrap(),
        DepositOutcome::Stale(ch) if ch.deposit == 2_000
    ));
    assert_eq!(store.get(id).await.unwrap().unwrap().deposit, 2_000);
    assert_eq!(
        store.record_deposit(unique_id(), 5).await.unwrap(),
        DepositOutcome::NotFound
    );
    // A top-up seen during a close request still counts.
    store
        .mark_closing(id, OffsetDateTime::now_utc())
        .await
        .unwrap();
    assert!(matches!(
        store.record_deposit(id, 3_000).await.unwrap(),
        DepositOutcome::Raised(ch) if ch.deposit == 3_000
    ));
    store.finalize(id, None, None).await.unwrap();
    assert!(matches!(
        store.record_deposit(id, 4_000).await.unwrap(),
        DepositOutcome::Finalized(ch) if ch.deposit == 3_000
    ));
}

async fn vouchers_are_cumulative(store: &impl ChannelStore) {
    let ch = funded(store, 1_000, 0).await;
    let id = ch.id();
    let first = Voucher {
        cumulative_amount: 100,
        signature: signature(100, 0xaa),
    };
    let accepted = match store.accept_voucher(id, &first, 0).await.unwrap() {
        VoucherOutcome::Accepted(ch) => ch,
        other => panic!("{other:?}"),
    };
    assert_eq!(accepted.highest_voucher, 100);
    assert_eq!(accepted.voucher_signature, Some(first.signature.clone()));

    // Equal: idempotent, the first signature is kept, nothing changes.
    let again = Voucher {
        cumulative_amount: 100,
        signature: signature(100, 0xbb),
    };
    match store.accept_voucher(id, &again, 0).await.unwrap() {
        VoucherOutcome::AlreadyAccepted(ch) => assert_eq!(ch, accepted),
        other => panic!("{other:?}"),
    }
    // Lower: refused.
    assert!(matches!(
        store.accept_voucher(id, &voucher(99), 0).await.unwrap(),
        VoucherOutcome::BelowHighest(ch) if ch.highest_voucher == 100
    ));
    // Above the deposit: refused, even when also higher.
    assert!(matches!(
        store.accept_voucher(id, &voucher(1_001), 0).await.unwrap(),
        VoucherOutcome::ExceedsDeposit(ch) if ch.highest_voucher == 100
    ));
    // Below the minimum delta: refused; at it: accepted.
    assert!(matches!(
        store.accept_voucher(id, &voucher(149), 50).await.unwrap(),
        VoucherOutcome::DeltaTooSmall(ch) if ch.highest_voucher == 100
    ));
    assert!(matches!(
        store.accept_voucher(id, &voucher(150), 50).await.unwrap(),
        VoucherOutcome::Accepted(ch) if ch.highest_voucher == 150
    ));
    // Up to the deposit exactly.
    let top = match store.accept_voucher(id, &voucher(1_000), 0).await.unwrap() {
        VoucherOutcome::Accepted(ch) => ch,
        other => panic!("{other:?}"),
    };
    assert_eq!(top.voucher_signature, Some(signature(1_000, 0x01)));
    assert_eq!(store.get(id).await.unwrap().unwrap(), top);
    assert_eq!(
        store
            .accept_voucher(unique_id(), &voucher(1), 0)
            .await
            .unwrap(),
        VoucherOutcome::NotFound
    );

    // Closing: refused.
    let ch = funded(store, 1_000, 100).await;
    store
        .mark_closing(ch.id(), OffsetDateTime::now_utc())
        .await
        .unwrap();
    assert!(matches!(
        store.accept_voucher(ch.id(), &voucher(200), 0).await.unwrap(),
        VoucherOutcome::Closed(ch) if ch.highest_voucher == 100
    ));
}

async fn charges_need_headroom(store: &impl ChannelStore) {
    let ch = funded(store, 1_000, 100).await;
    let id = ch.id();
    let charged = match store.charge(id, Charge::one(30)).await.unwrap() {
        ChargeOutcome::Charged(ch) => ch,
        other => panic!("{other:?}"),
    };
    assert_eq!((charged.spent, charged.units), (30, 1));
    // Several units at once.
    assert!(matches!(
        store.charge(id, Charge { price: 10, units: 5 }).await.unwrap(),
        ChargeOutcome::Charged(ch) if ch.spent == 80 && ch.units == 6
    ));
    // 20 left: 21 is refused and changes nothing, 20 goes through.
    match store.charge(id, Charge::one(21)).await.unwrap() {
        ChargeOutcome::Insufficient { cost, channel } => {
            assert_eq!(cost, 21);
            assert_eq!((channel.spent, channel.units), (80, 6));
            assert_eq!(channel.available(), 20);
            assert_eq!(channel.required_cumulative(21), 101);
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        store.charge(id, Charge::one(20)).await.unwrap(),
        ChargeOutcome::Charged(ch) if ch.spent == 100 && ch.available() == 0
    ));
    assert!(matches!(
        store.charge(id, Charge::one(1)).await.unwrap(),
        ChargeOutcome::Insufficient { .. }
    ));
    // A new voucher makes room again.
    store.accept_voucher(id, &voucher(150), 0).await.unwrap();
    assert!(matches!(
        store.charge(id, Charge::one(50)).await.unwrap(),
        ChargeOutcome::Charged(ch) if ch.spent == 150
    ));

    // Caller bugs are errors, and change nothing.
    assert!(matches!(
        store
            .charge(
                id,
                Charge {
                    price: u128::MAX,
                    units: 2
                }
            )
            .await,
        Err(ChannelStoreError::Invalid(_))
    ));
    assert!(matches!(
        store.charge(id, Charge { price: 5, units: 0 }).await,
        Err(ChannelStoreError::Invalid(_))
    ));
    assert!(matches!(
        store.charge(id, Charge::one(0)).await,
        Err(ChannelStoreError::Invalid(_))
    ));
    assert_eq!(store.get(id).await.unwrap().unwrap().spent, 150);
    assert_eq!(
        store.charge(unique_id(), Charge::one(1)).await.unwrap(),
        ChargeOutcome::NotFound
    );

    // Closing: nothing charged.
    let ch = funded(store, 1_000, 500).await;
    store
        .mark_closing(ch.id(), OffsetDateTime::now_utc())
        .await
        .unwrap();
    assert!(matches!(
        store.charge(ch.id(), Charge::one(1)).await.unwrap(),
        ChargeOutcome::Closed(ch) if ch.spent == 0
    ));
}

async fn reservations_hold_headroom(store: &impl ChannelStore) {
    let ch = funded(store, 1_000, 100).await;
    let id = ch.id();
    match store.reserve(id, "stream-a", 60, HOUR).await.unwrap() {
        ReserveOutcome::Reserved { held, channel } => {
            assert_eq!(held, 60);
            assert_eq!(channel.reserved, 60);
            assert_eq!(channel.available(), 40);
            assert_eq!(channel.reservation("stream-a").unwrap().amount, 60);
        }
        other => panic!("{other:?}"),
    }
    // Another stream cannot take the same headroom, nor can a charge.
    match store.reserve(id, "stream-b", 41, HOUR).await.unwrap() {
        ReserveOutcome::Insufficient(ch) => {
            assert_eq!(ch.required_cumulative(41), 101);
            assert_eq!(ch.reservation("stream-b"), None);
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        store.charge(id, Charge::one(41)).await.unwrap(),
        ChargeOutcome::Insufficient { .. }
    ));
    assert!(matches!(
        store.reserve(id, "stream-b", 40, HOUR).await.unwrap(),
        ReserveOutcome::Reserved { held: 40, channel } if channel.available() == 0
    ));
    // Adding to a reservation that exists.
    store.accept_voucher(id, &voucher(130), 0).await.unwrap();
    assert!(matches!(
        store.reserve(id, "stream-a", 30, HOUR).await.unwrap(),
        ReserveOutcome::Reserved { held: 90, channel } if channel.reserved == 130
    ));

    // Commit part, keep the rest.
    let partial = Commit {
        amount: 50,
        units: 2,
        release_rest: false,
    };
    match store.commit(id, "stream-a", partial).await.unwrap() {
        CommitOutcome::Committed { released, channel } => {
            assert_eq!(released, 0);
            assert_eq!((channel.spent, channel.units), (50, 2));
            assert_eq!(channel.reservation("stream-a").unwrap().amount, 40);
            assert_eq!(channel.reserved, 80);
            assert_invariants(&channel);
        }
        other => panic!("{other:?}"),
    }
    // More than held: refused, nothing changes.
    let too_much = Commit {
        amount: 41,
        units: 1,
        release_rest: false,
    };
    match store.commit(id, "stream-a", too_much).await.unwrap() {
        CommitOutcome::ExceedsReservation { held, channel } => {
            assert_eq!(held, 40);
            assert_eq!(channel.spent, 50);
        }
        other => panic!("{other:?}"),
    }
    // Commit and end the stream: the rest is released.
    let last = Commit {
        amount: 10,
        units: 1,
        release_rest: true,
    };
    match store.commit(id, "stream-a", last).await.unwrap() {
        CommitOutcome::Committed { released, channel } => {
            assert_eq!(released, 30);
            assert_eq!((channel.spent, channel.units), (60, 3));
            assert_eq!(channel.reservation("stream-a"), None);
            assert_eq!(channel.reserved, 40);
            assert_eq!(channel.available(), 30);
        }
        other => panic!("{other:?}"),
    }
    // A released reservation is gone.
    assert!(matches!(
        store.commit(id, "stream-a", last).await.unwrap(),
        CommitOutcome::ReservationNotFound(ch) if ch.spent == 60
    ));
    // Committing exactly what is held removes it.
    let exact = Commit {
        amount: 40,
        units: 1,
        release_rest: false,
    };
    assert!(matches!(
        store.commit(id, "stream-b", exact).await.unwrap(),
        CommitOutcome::Committed { released: 0, channel }
            if channel.reservations.is_empty() && channel.spent == 100
    ));
    // Release without charging.
    store.reserve(id, "stream-c", 20, HOUR).await.unwrap();
    assert!(matches!(
        store.release(id, "stream-c").await.unwrap(),
        CommitOutcome::Committed { released: 20, channel }
            if channel.reserved == 0 && channel.spent == 100
    ));

    // Bounded: at most MAX_RESERVATIONS per channel (renewing one that exists still works).
    for i in 0..MAX_RESERVATIONS {
        assert!(matches!(
            store.reserve(id, &format!("s{i}"), 1, HOUR).await.unwrap(),
            ReserveOutcome::Reserved { .. }
        ));
    }
    assert!(matches!(
        store.reserve(id, "one-too-many", 1, HOUR).await.unwrap(),
        ReserveOutcome::TooManyReservations(_)
    ));
    assert!(matches!(
        store.reserve(id, "s0", 0, HOUR).await.unwrap(),
        ReserveOutcome::Reserved { held: 1, .. }
    ));
    // Invalid ids are caller bugs.
    assert!(matches!(
        store.reserve(id, "", 1, HOUR).await,
        Err(ChannelStoreError::Invalid(_))
    ));
    assert!(matches!(
        store.reserve(id, &"x".repeat(129), 1, HOUR).await,
        Err(ChannelStoreError::Invalid(_))
    ));
    assert_eq!(
        store.reserve(unique_id(), "s", 1, HOUR).await.unwrap(),
        ReserveOutcome::NotFound
    );

    // Closing: no new reservation; a commit releases and charges nothing.
    let ch = funded(store, 1_000, 100).await;
    store.reserve(ch.id(), "s", 70, HOUR).await.unwrap();
    store
        .mark_closing(ch.id(), OffsetDateTime::now_utc())
        .await
        .unwrap();
    assert!(matches!(
        store.reserve(ch.id(), "t", 1, HOUR).await.unwrap(),
        ReserveOutcome::Closed(_)
    ));
    match store.commit(ch.id(), "s", last).await.unwrap() {
        CommitOutcome::Closed { released, channel } => {
            assert_eq!(released, 70);
            assert_eq!((channel.spent, channel.reserved), (0, 0));
        }
        other => panic!("{other:?}"),
    }
}

async fn reservations_expire(store: &impl ChannelStore) {
    const TTL: Duration = Duration::from_millis(1_500);
    let ch = funded(store, 1_000, 100).await;
    let id = ch.id();
    let start = std::time::Instant::now();
    store.reserve(id, "short", 80, TTL).await.unwrap();
    store.reserve(id, "long", 10, HOUR).await.unwrap();
    let held = store.charge(id, Charge::one(50)).await.unwrap();
    // (Unless a loaded machine took longer than the TTL to get here.)
    if start.elapsed() < TTL - Duration::from_millis(300) {
        assert!(
            matches!(held, ChargeOutcome::Insufficient { .. }),
            "{held:?}"
        );
    }
    tokio::time::sleep_until((start + TTL + Duration::from_millis(200)).into()).await;
    // The lapsed reservation's headroom is free again; the live one still holds.
    match store.charge(id, Charge::one(90)).await.unwrap() {
        ChargeOutcome::Charged(ch) => {
            assert_eq!(ch.spent, 90);
            assert_eq!(ch.reserved, 10);
            assert_eq!(ch.reservation("short"), None);
            assert!(ch.reservation("long").is_some());
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        store
            .commit(
                id,
                "short",
                Commit {
                    amount: 1,
                    units: 1,
                    release_rest: true
                }
            )
            .await
            .unwrap(),
        CommitOutcome::ReservationNotFound(_)
    ));

    // The purge sweeps lapsed reservations of channels nothing else touched.
    let ch = funded(store, 1_000, 100).await;
    store
        .reserve(ch.id(), "short", 100, Duration::from_millis(100))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(250)).await;
    let report = store.purge().await.unwrap();
    assert!(report.swept_channels >= 1, "{report:?}");
    let after = store.get(ch.id()).await.unwrap().unwrap();
    assert_eq!((after.reserved, after.reservations.len()), (0, 0));
    assert_eq!(after.available(), 100);
}

async fn closing_can_be_cancelled(store: &impl ChannelStore) {
    let ch = funded(store, 1_000, 100).await;
    let id = ch.id();
    let at = OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap();
    match store.mark_closing(id, at).await.unwrap() {
        CloseOutcome::Marked(ch) => {
            assert_eq!(ch.state, ChannelState::Closing { requested_at: at })
        }
        other => panic!("{other:?}"),
    }
    // The first request time is kept.
    let later = at + Duration::from_secs(60);
    assert!(matches!(
        store.mark_closing(id, later).await.unwrap(),
        CloseOutcome::AlreadyClosing(ch) if ch.state == ChannelState::Closing { requested_at: at }
    ));
    // Only the marker that was set can be cancelled.
    assert!(matches!(
        store.cancel_closing(id, later).await.unwrap(),
        CancelCloseOutcome::NotClosing(ch) if !ch.state.is_open()
    ));
    assert!(matches!(
        store.cancel_closing(id, at).await.unwrap(),
        CancelCloseOutcome::Reopened(ch) if ch.state.is_open()
    ));
    assert!(matches!(
        store.cancel_closing(id, at).await.unwrap(),
        CancelCloseOutcome::NotClosing(_)
    ));
    // Open again: charges go through.
    assert!(matches!(
        store.charge(id, Charge::one(10)).await.unwrap(),
        ChargeOutcome::Charged(_)
    ));
    assert_eq!(
        store.mark_closing(unique_id(), at).await.unwrap(),
        CloseOutcome::NotFound
    );
    assert_eq!(
        store.cancel_closing(unique_id(), at).await.unwrap(),
        CancelCloseOutcome::NotFound
    );
}

async fn settlement_and_finalization(store: &impl ChannelStore) {
    let ch = funded(store, 1_000, 400).await;
    let id = ch.id();
    store
        .charge(
            id,
            Charge {
                price: 50,
                units: 3,
            },
        )
        .await
        .unwrap();
    let tx = B256::repeat_byte(0x77);
    match store.record_settlement(id, 300, Some(tx)).await.unwrap() {
        SettlementOutcome::Recorded(ch) => {
            assert_eq!(ch.settled, 300);
            let last = ch.last_settlement.unwrap();
            assert_eq!((last.spent, last.units, last.tx_hash), (150, 3, Some(tx)));
            assert_eq!(ch.unsettled(), 100);
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        store.record_settlement(id, 300, None).await.unwrap(),
        SettlementOutcome::Unchanged(_)
    ));
    assert!(matches!(
        store.record_settlement(id, 200, None).await.unwrap(),
        SettlementOutcome::Stale(ch) if ch.settled == 300
    ));
    assert!(matches!(
        store.record_settlement(id, 401, None).await.unwrap(),
        SettlementOutcome::AboveHighest(ch) if ch.settled == 300
    ));
    assert_eq!(
        store.record_settlement(unique_id(), 1, None).await.unwrap(),
        SettlementOutcome::NotFound
    );

    store.reserve(id, "s", 50, HOUR).await.unwrap();
    assert!(matches!(
        store.finalize(id, Some(401), None).await.unwrap(),
        FinalizeOutcome::AboveHighest(ch) if ch.state.is_open()
    ));
    let close_tx = B256::repeat_byte(0x99);
    let finalized = match store.finalize(id, Some(350), Some(close_tx)).await.unwrap() {
        FinalizeOutcome::Finalized(ch) => ch,
        other => panic!("{other:?}"),
    };
    assert!(matches!(
        finalized.state,
        ChannelState::Finalized { tx_hash: Some(t), .. } if t == close_tx
    ));
    assert_eq!(finalized.settled, 350);
    assert_eq!((finalized.reserved, finalized.reservations.len()), (0, 0));
    assert_eq!(store.get(id).await.unwrap().unwrap(), finalized);
    assert!(matches!(
        store.finalize(id, Some(400), None).await.unwrap(),
        FinalizeOutcome::AlreadyFinalized(ch) if ch.settled == 350
    ));
    // Nothing moves a finalized channel.
    assert!(matches!(
        store.accept_voucher(id, &voucher(500), 0).await.unwrap(),
        VoucherOutcome::Closed(_)
    ));
    assert!(matches!(
        store.charge(id, Charge::one(1)).await.unwrap(),
        ChargeOutcome::Closed(_)
    ));
    assert!(matches!(
        store.reserve(id, "t", 1, HOUR).await.unwrap(),
        ReserveOutcome::Closed(_)
    ));
    assert!(matches!(
        store.record_settlement(id, 400, None).await.unwrap(),
        SettlementOutcome::Finalized(_)
    ));
    assert!(matches!(
        store
            .mark_closing(id, OffsetDateTime::now_utc())
            .await
            .unwrap(),
        CloseOutcome::Finalized(_)
    ));
    assert_eq!(store.get(id).await.unwrap().unwrap(), finalized);
    assert_eq!(
        store.finalize(unique_id(), None, None).await.unwrap(),
        FinalizeOutcome::NotFound
    );
}

async fn settlement_scan(store: &impl ChannelStore) {
    // Amounts far above the other cases', so a shared store would not confuse the scan.
    const E: u128 = 10u128.pow(30);
    let small = funded(store, 100 * E, 2 * E).await;
    let big = funded(store, 100 * E, 50 * E).await;
    let settled = funded(store, 100 * E, 40 * E).await;
    store
        .record_settlement(settled.id(), 40 * E, None)
        .await
        .unwrap();
    let closing = funded(store, 100 * E, 0).await;
    store
        .mark_closing(closing.id(), OffsetDateTime::now_utc())
        .await
        .unwrap();
    let done = funded(store, 100 * E, 90 * E).await;
    store.finalize(done.id(), None, None).await.unwrap();

    let ids = |chs: &[Channel]| chs.iter().map(Channel::id).collect::<Vec<_>>();
    let due = store
        .needing_settlement(SettlementQuery {
            min_unsettled: 10 * E,
            idle_since: None,
            limit: 100,
        })
        .await
        .unwrap();
    // Closing first, then by unsettled value; the small, settled and finalized ones are not due.
    assert_eq!(ids(&due), vec![closing.id(), big.id()]);

    // Idle: anything unsettled and unchanged since the cut-off.
    let cutoff = OffsetDateTime::now_utc() + Duration::from_millis(5);
    tokio::time::sleep(Duration::from_millis(20)).await;
    store
        .accept_voucher(big.id(), &voucher(60 * E), 0)
        .await
        .unwrap();
    let due = store
        .needing_settlement(SettlementQuery {
            min_unsettled: 90 * E,
            idle_since: Some(cutoff),
            limit: 100,
        })
        .await
        .unwrap();
    assert_eq!(ids(&due), vec![closing.id(), small.id()]);

    // Limit.
    let due = store
        .needing_settlement(SettlementQuery {
            min_unsettled: 1,
            idle_since: None,
            limit: 2,
        })
        .await
        .unwrap();
    assert_eq!(ids(&due), vec![closing.id(), big.id()]);
}

async fn purge_keeps_unsettled_channels(store: &impl ChannelStore) {
    let short = |deposit| NewChannel {
        retention: Duration::ZERO,
        ..new_channel(deposit)
    };
    // Expired, nothing unsettled: purged.
    let empty = short(1_000);
    store.open(&empty).await.unwrap();
    // Expired but holding an unsettled voucher: kept, however old.
    let owed = short(1_000);
    store.open(&owed).await.unwrap();
    store
        .accept_voucher(owed.descriptor.channel_id, &voucher(10), 0)
        .await
        .unwrap();
    // Expired and finalized: purged, even with value unsettled.
    let closed = short(1_000);
    store.open(&closed).await.unwrap();
    store
        .accept_voucher(closed.descriptor.channel_id, &voucher(10), 0)
        .await
        .unwrap();
    store
        .finalize(closed.descriptor.channel_id, None, None)
        .await
        .unwrap();
    // Expired, settled, but a live reservation: kept.
    let streaming = short(1_000);
    store.open(&streaming).await.unwrap();
    let sid = streaming.descriptor.channel_id;
    store.accept_voucher(sid, &voucher(10), 0).await.unwrap();
    store.record_settlement(sid, 10, None).await.unwrap();
    // (A reservation needs headroom; settled value can still be reserved.)
    store.reserve(sid, "s", 10, HOUR).await.unwrap();
    // Not expired: kept.
    let fresh = new_channel(1_000);
    store.open(&fresh).await.unwrap();

    tokio::time::sleep(Duration::from_millis(5)).await;
    let report = store.purge().await.unwrap();
    assert_eq!(report.deleted_channels, 2, "{report:?}");
    assert_eq!(store.get(empty.descriptor.channel_id).await.unwrap(), None);
    assert_eq!(store.get(closed.descriptor.channel_id).await.unwrap(), None);
    assert!(
        store
            .get(owed.descriptor.channel_id)
            .await
            .unwrap()
            .is_some()
    );
    assert!(store.get(sid).await.unwrap().is_some());
    assert!(
        store
            .get(fresh.descriptor.channel_id)
            .await
            .unwrap()
            .is_some()
    );
    // Once settled, the owed one goes too (its settlement pushed its expiry: retention 0).
    store
        .record_settlement(owed.descriptor.channel_id, 10, None)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert_eq!(store.purge().await.unwrap().deleted_channels, 1);
    assert_eq!(store.get(owed.descriptor.channel_id).await.unwrap(), None);
}

async fn amounts_are_exact(store: &impl ChannelStore) {
    let max = u128::MAX;
    let ch = funded(store, max, max - 1).await;
    let id = ch.id();
    assert_eq!(ch.highest_voucher, max - 1);
    assert!(matches!(
        store.accept_voucher(id, &voucher(max), 0).await.unwrap(),
        VoucherOutcome::Accepted(ch) if ch.highest_voucher == max
    ));
    assert!(matches!(
        store.charge(id, Charge::one(max - 7)).await.unwrap(),
        ChargeOutcome::Charged(ch) if ch.spent == max - 7 && ch.available() == 7
    ));
    assert!(matches!(
        store.charge(id, Charge::one(8)).await.unwrap(),
        ChargeOutcome::Insufficient { .. }
    ));
    assert!(matches!(
        store.reserve(id, "r", 7, HOUR).await.unwrap(),
        ReserveOutcome::Reserved { held: 7, channel } if channel.available() == 0
    ));
    store.record_settlement(id, max - 1, None).await.unwrap();
    let read = store.get(id).await.unwrap().unwrap();
    assert_eq!(
        (
            read.deposit,
            read.highest_voucher,
            read.spent,
            read.reserved,
            read.settled
        ),
        (max, max, max - 7, 7, max - 1)
    );
    // Amounts that differ only past 2^64 and 2^96 stay apart.
    let wide = funded(store, (1 << 96) + 2, (1 << 96) + 1).await;
    assert!(matches!(
        store.charge(wide.id(), Charge::one(1 << 96)).await.unwrap(),
        ChargeOutcome::Charged(ch) if ch.available() == 1
    ));
    assert!(matches!(
        store
            .accept_voucher(wide.id(), &voucher((1 << 96) + 3), 0)
            .await
            .unwrap(),
        VoucherOutcome::ExceedsDeposit(_)
    ));
}

async fn usable_as_dyn(store: Arc<dyn ChannelStore>) {
    let ch = funded(&store, 100, 100).await;
    assert!(matches!(
        store.charge(ch.id(), Charge::one(100)).await.unwrap(),
        ChargeOutcome::Charged(ch) if ch.spent == 100
    ));
    assert!(matches!(
        store.release(ch.id(), "nothing").await.unwrap(),
        CommitOutcome::ReservationNotFound(_)
    ));
}

/// 50 concurrent vouchers and 50 concurrent charges or reserve/commit pairs on one channel,
/// spread over two handles: the invariants hold, and what was charged is exactly `spent`.
async fn concurrent_vouchers_and_charges<S: ChannelStore + Clone>(a: S, b: S) {
    const N: u128 = 50;
    let ch = funded(&a, 100_000, 0).await;
    let id = ch.id();
    let mut tasks = Vec::new();
    for i in 0..N {
        let store = if i % 2 == 0 { a.clone() } else { b.clone() };
        tasks.push(tokio::spawn(async move {
            // Vouchers arrive out of order: some are refused as lower, none is lost.
            let amount = 100 * ((i * 7) % N + 1);
            let v = store.accept_voucher(id, &voucher(amount), 0).await.unwrap();
            assert!(
                matches!(
                    v,
                    VoucherOutcome::Accepted(_)
                        | VoucherOutcome::BelowHighest(_)
                        | VoucherOutcome::AlreadyAccepted(_)
                ),
                "{v:?}"
            );
            let price = 60 + i;
            let charged = if i % 3 == 0 {
                let name = format!("stream-{i}");
                match store.reserve(id, &name, price, HOUR).await.unwrap() {
                    ReserveOutcome::Reserved { .. } => {
                        let commit = Commit {
                            amount: price - 10,
                            units: 1,
                            release_rest: true,
                        };
                        match store.commit(id, &name, commit).await.unwrap() {
                            CommitOutcome::Committed { released: 10, .. } => price - 10,
                            other => panic!("a live reservation failed to commit: {other:?}"),
                        }
                    }
                    // 17 streams race for MAX_RESERVATIONS (16) slots.
                    ReserveOutcome::Insufficient(_) | ReserveOutcome::TooManyReservations(_) => 0,
                    other => panic!("{other:?}"),
                }
            } else {
                match store.charge(id, Charge::one(price)).await.unwrap() {
                    ChargeOutcome::Charged(ch) => {
                        assert_invariants(&ch);
                        price
                    }
                    ChargeOutcome::Insufficient { .. } => 0,
                    other => panic!("{other:?}"),
                }
            };
            (matches!(v, VoucherOutcome::Accepted(_)), charged)
        }));
    }
    let mut charged = 0;
    let mut successes = 0;
    let mut accepted = 0;
    for t in tasks {
        let (was_accepted, c) = t.await.unwrap();
        accepted += u32::from(was_accepted);
        charged += c;
        successes += u64::from(c > 0);
    }
    let end = a.get(id).await.unwrap().unwrap();
    assert_invariants(&end);
    assert_eq!(end.highest_voucher, 100 * N, "the highest voucher was lost");
    assert!(accepted >= 1);
    assert_eq!(
        end.spent, charged,
        "charged {charged}, but spent is {}",
        end.spent
    );
    assert_eq!(end.units, successes);
    assert_eq!(end.reserved, 0);
    assert!(charged > 0);

    // Now a fixed headroom and a race for it: exactly as many as fit get through.
    let ch = funded(&a, 10_000, 2_500).await;
    let id = ch.id();
    let mut tasks = Vec::new();
    for i in 0..50 {
        let store = if i % 2 == 0 { a.clone() } else { b.clone() };
        tasks.push(tokio::spawn(async move {
            if i % 2 == 0 {
                matches!(
                    store.charge(id, Charge::one(100)).await.unwrap(),
                    ChargeOutcome::Charged(_)
                )
            } else {
                matches!(
                    store
                        .reserve(id, &format!("r{i}"), 100, HOUR)
                        .await
                        .unwrap(),
                    ReserveOutcome::Reserved { .. }
                )
            }
        }));
    }
    let mut won = 0;
    for t in tasks {
        won += u32::from(t.await.unwrap());
    }
    assert_eq!(won, 25, "2500 of headroom at 100 each fits 25 winners");
    let end = a.get(id).await.unwrap().unwrap();
    assert_eq!(end.spent + end.reserved, 2_500);
    assert_invariants(&end);
}

/// 20 concurrent opens of one new channel over two handles: exactly one stores it.
async fn concurrent_opens_one_winner<S: ChannelStore + Clone>(a: S, b: S) {
    let new = Arc::new(new_channel(1_000));
    let mut tasks = Vec::new();
    for i in 0..20 {
        let store = if i % 2 == 0 { a.clone() } else { b.clone() };
        let new = new.clone();
        tasks.push(tokio::spawn(async move { store.open(&new).await.unwrap() }));
    }
    let mut opened = 0;
    for t in tasks {
        match t.await.unwrap() {
            OpenOutcome::Opened(ch) => {
                opened += 1;
                assert_eq!(ch.version, 1);
            }
            OpenOutcome::AlreadyOpen(ch) => assert_eq!(ch.descriptor, new.descriptor),
            OpenOutcome::Conflict(ch) => panic!("the same descriptor conflicted: {ch:?}"),
        }
    }
    assert_eq!(opened, 1);
}

/// 50 concurrent voucher-and-hold steps ([`ChannelStore::accept_and_reserve`]), each then
/// committed, on one channel over two handles: the write races make the Postgres optimistic
/// path fall back to the row lock, and still every voucher is decided once, what was
/// committed is exactly `spent`, and nothing stays reserved.
async fn concurrent_accept_and_reserve<S: ChannelStore + Clone>(a: S, b: S) {
    const N: u128 = 50;
    let id = funded(&a, 100_000, 0).await.id();
    let mut tasks = Vec::new();
    for i in 0..N {
        let store = if i % 2 == 0 { a.clone() } else { b.clone() };
        tasks.push(tokio::spawn(async move {
            // Distinct amounts, out of order: each is accepted or found below the highest.
            let amount = 100 * ((i * 7) % N + 1);
            let price = 60 + i;
            let name = format!("stream-{i}");
            let step = store
                .accept_and_reserve(id, &voucher(amount), 0, &name, (price, HOUR))
                .await
                .unwrap();
            let accepted = match (&step.voucher, &step.reserve) {
                (VoucherOutcome::Accepted(_), Some(_)) => true,
                (VoucherOutcome::BelowHighest(_), None) => false,
                other => panic!("{other:?}"),
            };
            let charged = match step.reserve {
                Some(ReserveOutcome::Reserved { channel, .. }) => {
                    assert_invariants(&channel);
                    let commit = Commit {
                        amount: price - 10,
                        units: 1,
                        release_rest: true,
                    };
                    match store.commit(id, &name, commit).await.unwrap() {
                        CommitOutcome::Committed { released: 10, .. } => price - 10,
                        other => panic!("a live reservation failed to commit: {other:?}"),
                    }
                }
                Some(ReserveOutcome::Insufficient(_) | ReserveOutcome::TooManyReservations(_))
                | None => 0,
                Some(other) => panic!("{other:?}"),
            };
            (accepted, charged)
        }));
    }
    let (mut accepted, mut charged, mut successes) = (0, 0, 0);
    for t in tasks {
        let (was_accepted, c) = t.await.unwrap();
        accepted += u32::from(was_accepted);
        charged += c;
        successes += u64::from(c > 0);
    }
    let end = a.get(id).await.unwrap().unwrap();
    assert_invariants(&end);
    assert_eq!(end.highest_voucher, 100 * N, "the highest voucher was lost");
    assert!(accepted >= 1);
    assert_eq!(
        end.spent, charged,
        "committed {charged}, but spent is {}",
        end.spent
    );
    assert_eq!(end.units, successes);
    assert_eq!(end.reserved, 0);
    assert!(end.reservations.is_empty());
    assert!(charged > 0);
}

// ---------------------------------------------------------------------------------------------
// The suites: every case on every backend

macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        mod memory_suite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$case(&super::MemoryChannelStore::new()).await;
                }
            )*
        }
        mod sqlite_suite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let (_dir, store) = super::sqlite().await;
                    super::$case(&store).await;
                }
            )*
        }
        mod postgres_suite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let Some(url) = super::pg_url() else { return };
                    let schema = super::PgSchema::create(&url, "chan").await.unwrap();
                    super::$case(&schema.store().await.unwrap()).await;
                    schema.drop().await;
                }
            )*
        }
    };
}

conformance!(
    open_is_idempotent,
    deposit_never_decreases,
    vouchers_are_cumulative,
    charges_need_headroom,
    reservations_hold_headroom,
    reservations_expire,
    closing_can_be_cancelled,
    settlement_and_finalization,
    settlement_scan,
    purge_keeps_unsettled_channels,
    amounts_are_exact,
);

#[tokio::test]
async fn memory_usable_as_dyn() {
    usable_as_dyn(Arc::new(MemoryChannelStore::new())).await;
}

#[tokio::test]
async fn sqlite_usable_as_dyn() {
    let (_dir, store) = sqlite().await;
    usable_as_dyn(Arc::new(store)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_concurrent_vouchers_and_charges() {
    let store = MemoryChannelStore::new();
    concurrent_opens_one_winner(store.clone(), store.clone()).await;
    concurrent_vouchers_and_charges(store.clone(), store).await;
}

#[tokio::test]
async fn memory_store_is_bounded_and_fails_closed() {
    let store = MemoryChannelStore::with_capacity(2);
    let owed = funded(&store, 1_000, 10).await;
    let short = NewChannel {
        retention: Duration::ZERO,
        ..new_channel(1_000)
    };
    store.open(&short).await.unwrap();
    assert_eq!(store.len(), 2);
    // Full: the expired empty channel makes room; the one holding a voucher stays.
    tokio::time::sleep(Duration::from_millis(5)).await;
    let third = funded(&store, 1_000, 10).await;
    assert_eq!(store.len(), 2);
    assert_eq!(store.get(short.descriptor.channel_id).await.unwrap(), None);
    assert!(store.get(owed.id()).await.unwrap().is_some());
    // Full of channels that may not go: a new one is a store fault, nothing is evicted.
    assert!(matches!(
        store.open(&new_channel(1_000)).await,
        Err(ChannelStoreError::Store(_))
    ));
    assert_eq!(store.len(), 2);
    assert!(store.get(third.id()).await.unwrap().is_some());
    // Operations on stored channels still work.
    assert!(matches!(
        store.charge(owed.id(), Charge::one(10)).await.unwrap(),
        ChargeOutcome::Charged(_)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_concurrent_vouchers_and_charges() {
    let (_dir, store) = sqlite().await;
    concurrent_vouchers_and_charges(store.clone(), store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_two_handles_on_one_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mpp.db");
    let (a, b) = tokio::join!(SqliteStore::open(&path), SqliteStore::open(&path));
    let (a, b) = (a.unwrap(), b.unwrap());
    concurrent_opens_one_winner(a.clone(), b.clone()).await;
    concurrent_vouchers_and_charges(a, b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_concurrent_vouchers_and_charges() {
    let Some(url) = pg_url() else { return };
    let schema = PgSchema::create(&url, "chan").await.unwrap();
    let store = schema.store().await.unwrap();
    concurrent_vouchers_and_charges(store.clone(), store).await;
    schema.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_two_instances() {
    let Some(url) = pg_url() else { return };
    let schema = PgSchema::create(&url, "chan").await.unwrap();
    let (a, b) = tokio::join!(schema.store(), schema.store());
    let (a, b) = (a.unwrap(), b.unwrap());
    usable_as_dyn(Arc::new(a.clone())).await;
    concurrent_opens_one_winner(a.clone(), b.clone()).await;
    concurrent_vouchers_and_charges(a, b).await;
    schema.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_concurrent_accept_and_reserve() {
    let store = MemoryChannelStore::new();
    concurrent_accept_and_reserve(store.clone(), store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_two_handles_accept_and_reserve() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mpp.db");
    let (a, b) = tokio::join!(SqliteStore::open(&path), SqliteStore::open(&path));
    concurrent_accept_and_reserve(a.unwrap(), b.unwrap()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_two_instances_accept_and_reserve() {
    let Some(url) = pg_url() else { return };
    let schema = PgSchema::create(&url, "chan").await.unwrap();
    let (a, b) = tokio::join!(schema.store(), schema.store());
    let (a, b) = (a.unwrap(), b.unwrap());
    concurrent_accept_and_reserve(a, b).await;
    schema.drop().await;
}

/// Another instance's changes that can unblock a waiting stream reach a watcher (Postgres
/// `LISTEN/NOTIFY`); charges and reservations, the frequent writes, do not notify.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_changes_reach_other_instances() {
    let Some(url) = pg_url() else { return };
    let schema = PgSchema::create(&url, "chan").await.unwrap();
    let (watcher, writer) = tokio::join!(schema.store(), schema.store());
    let (watcher, writer) = (watcher.unwrap(), writer.unwrap());
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let _watch = watcher
        .watch(Arc::new(move |id| {
            let _ = tx.send(id);
        }))
        .expect("Postgres pushes channel changes");
    let ch = funded(&writer, 1_000, 100).await;
    let id = ch.id();
    let wait = Duration::from_secs(5);
    // The listener connects in the background: keep raising the voucher until it is heard.
    let mut amount = 100;
    let heard = loop {
        amount += 10;
        assert!(amount < 1_000, "no notification arrived");
        let VoucherOutcome::Accepted(_) = writer
            .accept_voucher(id, &voucher(amount), 0)
            .await
            .unwrap()
        else {
            panic!("voucher refused")
        };
        // Other tests' channels notify on the same database: only this one counts.
        if let Ok(Some(heard)) =
            tokio::time::timeout(Duration::from_millis(200), next_for(&mut rx, id)).await
        {
            break heard;
        }
    };
    assert_eq!(heard, id);
    // Notifications of the earlier vouchers may still be on their way: wait for quiet.
    while let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(500), rx.recv()).await {}
    // A charge and a reservation: nothing to wake anybody for.
    let ChargeOutcome::Charged(_) = writer.charge(id, Charge::one(5)).await.unwrap() else {
        panic!("charge refused")
    };
    let ReserveOutcome::Reserved { .. } = writer
        .reserve(id, "s", 10, Duration::from_secs(60))
        .await
        .unwrap()
    else {
        panic!("reserve refused")
    };
    assert!(
        tokio::time::timeout(Duration::from_millis(300), next_for(&mut rx, id))
            .await
            .is_err(),
        "a charge or a reservation notified"
    );
    // Released headroom, a top-up, a voucher, a close: each is heard, within the wait.
    writer.release(id, "s").await.unwrap();
    assert_eq!(
        tokio::time::timeout(wait, next_for(&mut rx, id))
            .await
            .unwrap(),
        Some(id)
    );
    writer.record_deposit(id, 2_000).await.unwrap();
    assert_eq!(
        tokio::time::timeout(wait, next_for(&mut rx, id))
            .await
            .unwrap(),
        Some(id)
    );
    writer
        .mark_closing(id, OffsetDateTime::now_utc())
        .await
        .unwrap();
    assert_eq!(
        tokio::time::timeout(wait, next_for(&mut rx, id))
            .await
            .unwrap(),
        Some(id)
    );
    schema.drop().await;
}

/// The next notification for `id`, skipping other channels'.
async fn next_for(rx: &mut tokio::sync::mpsc::UnboundedReceiver<B256>, id: B256) -> Option<B256> {
    loop {
        match rx.recv().await {
            Some(heard) if heard == id => return Some(heard),
            Some(_) => continue,
            None => return None,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Random sequences against a model

#[derive(Debug, Clone)]
enum Op {
    Voucher {
        amount: u128,
        min_delta: u128,
    },
    Charge {
        price: u128,
        units: u64,
    },
    Reserve {
        stream: u8,
        amount: u128,
    },
    Commit {
        stream: u8,
        amount: u128,
        units: u64,
        release_rest: bool,
    },
    Deposit(u128),
    Close,
    Cancel {
        right_marker: bool,
    },
    Settle(u128),
    Finalize(Option<u128>),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u128..1_300, prop_oneof![Just(0u128), 0u128..50])
            .prop_map(|(amount, min_delta)| Op::Voucher { amount, min_delta }),
        4 => (0u128..120, 0u64..4).prop_map(|(price, units)| Op::Charge { price, units }),
        3 => (0u8..3, 0u128..200).prop_map(|(stream, amount)| Op::Reserve { stream, amount }),
        3 => (0u8..3, 0u128..200, 0u64..3, any::<bool>()).prop_map(
            |(stream, amount, units, release_rest)| Op::Commit { stream, amount, units, release_rest }
        ),
        1 => (0u128..2_000).prop_map(Op::Deposit),
        1 => Just(Op::Close),
        1 => any::<bool>().prop_map(|right_marker| Op::Cancel { right_marker }),
        1 => (0u128..1_300).prop_map(Op::Settle),
        1 => proptest::option::of(0u128..1_300).prop_map(Op::Finalize),
    ]
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ModelState {
    Open,
    Closing,
    Finalized,
}

/// The rules, written plainly and separately from the store's.
#[derive(Debug, Clone)]
struct Model {
    deposit: u128,
    highest: u128,
    spent: u128,
    settled: u128,
    units: u64,
    state: ModelState,
    reservations: BTreeMap<u8, u128>,
}

impl Model {
    fn reserved(&self) -> u128 {
        self.reservations.values().sum()
    }

    fn free(&self) -> u128 {
        self.highest - self.spent - self.reserved()
    }

    /// The outcome's name, applying the op.
    fn apply(&mut self, op: &Op) -> &'static str {
        let open = self.state == ModelState::Open;
        match *op {
            Op::Voucher { amount, min_delta } => {
                if !open {
                    "closed"
                } else if amount < self.highest {
                    "below"
                } else if amount == self.highest {
                    "already"
                } else if amount > self.deposit {
                    "exceeds"
                } else if amount - self.highest < min_delta {
                    "delta"
                } else {
                    self.highest = amount;
                    "accepted"
                }
            }
            Op::Charge { price, units } => {
                let cost = price * u128::from(units);
                if cost == 0 {
                    "invalid"
                } else if !open {
                    "closed"
                } else if self.free() < cost {
                    "insufficient"
                } else {
                    self.spent += cost;
                    self.units += units;
                    "charged"
                }
            }
            Op::Reserve { stream, amount } => {
                if !open {
                    "closed"
                } else if self.free() < amount {
                    "insufficient"
                } else {
                    *self.reservations.entry(stream).or_default() += amount;
                    "reserved"
                }
            }
            Op::Commit {
                stream,
                amount,
                units,
                release_rest,
            } => {
                let Some(&held) = self.reservations.get(&stream) else {
                    return "no-reservation";
                };
                if !open {
                    self.reservations.remove(&stream);
                    "closed"
                } else if amount > held {
                    "exceeds"
                } else {
                    self.spent += amount;
                    self.units += units;
                    if release_rest || held == amount {
                        self.reservations.remove(&stream);
                    } else {
                        self.reservations.insert(stream, held - amount);
                    }
                    "committed"
                }
            }
            Op::Deposit(d) => {
                if self.state == ModelState::Finalized {
                    "finalized"
                } else if d < self.deposit {
                    "stale"
                } else if d == self.deposit {
                    "unchanged"
                } else {
                    self.deposit = d;
                    "raised"
                }
            }
            Op::Close => match self.state {
                ModelState::Open => {
                    self.state = ModelState::Closing;
                    "marked"
                }
                ModelState::Closing => "already",
                ModelState::Finalized => "finalized",
            },
            Op::Cancel { right_marker } => {
                if self.state == ModelState::Closing && right_marker {
                    self.state = ModelState::Open;
                    "reopened"
                } else {
                    "not-closing"
                }
            }
            Op::Settle(s) => {
                if self.state == ModelState::Finalized {
                    "finalized"
                } else if s > self.highest {
                    "above"
                } else if s < self.settled {
                    "stale"
                } else if s == self.settled {
                    "unchanged"
                } else {
                    self.settled = s;
                    "recorded"
                }
            }
            Op::Finalize(s) => {
                if self.state == ModelState::Finalized {
                    "already"
                } else if s.is_some_and(|s| s > self.highest) {
                    "above"
                } else {
                    if let Some(s) = s {
                        self.settled = self.settled.max(s);
                    }
                    self.reservations.clear();
                    self.state = ModelState::Finalized;
                    "finalized"
                }
            }
        }
    }

    fn matches(&self, ch: &Channel) -> bool {
        let state = match ch.state {
            ChannelState::Open => ModelState::Open,
            ChannelState::Closing { .. } => ModelState::Closing,
            ChannelState::Finalized { .. } => ModelState::Finalized,
        };
        let reservations: BTreeMap<u8, u128> = ch
            .reservations
            .iter()
            .map(|r| (r.id.parse().unwrap(), r.amount))
            .collect();
        (
            ch.deposit,
            ch.highest_voucher,
            ch.spent,
            ch.settled,
            ch.units,
            state,
            &reservations,
        ) == (
            self.deposit,
            self.highest,
            self.spent,
            self.settled,
            self.units,
            self.state,
            &self.reservations,
        )
    }
}

/// Runs `op` on the store; the outcome's name.
async fn run_op(
    store: &impl ChannelStore,
    id: B256,
    op: &Op,
    marker: OffsetDateTime,
) -> &'static str {
    match *op {
        Op::Voucher { amount, min_delta } => {
            match store
                .accept_voucher(id, &voucher(amount), min_delta)
                .await
                .unwrap()
            {
                VoucherOutcome::Accepted(_) => "accepted",
                VoucherOutcome::AlreadyAccepted(_) => "already",
                VoucherOutcome::BelowHighest(_) => "below",
                VoucherOutcome::ExceedsDeposit(_) => "exceeds",
                VoucherOutcome::DeltaTooSmall(_) => "delta",
                VoucherOutcome::Closed(_) => "closed",
                VoucherOutcome::NotFound => "not-found",
            }
        }
        Op::Charge { price, units } => match store.charge(id, Charge { price, units }).await {
            Err(ChannelStoreError::Invalid(_)) => "invalid",
            Err(e) => panic!("{e}"),
            Ok(ChargeOutcome::Charged(_)) => "charged",
            Ok(ChargeOutcome::Insufficient { .. }) => "insufficient",
            Ok(ChargeOutcome::Closed(_)) => "closed",
            Ok(ChargeOutcome::NotFound) => "not-found",
        },
        Op::Reserve { stream, amount } => {
            match store
                .reserve(id, &stream.to_string(), amount, HOUR)
                .await
                .unwrap()
            {
                ReserveOutcome::Reserved { .. } => "reserved",
                ReserveOutcome::Insufficient(_) => "insufficient",
                ReserveOutcome::TooManyReservations(_) => "too-many",
                ReserveOutcome::Closed(_) => "closed",
                ReserveOutcome::NotFound => "not-found",
            }
        }
        Op::Commit {
            stream,
            amount,
            units,
            release_rest,
        } => {
            let commit = Commit {
                amount,
                units,
                release_rest,
            };
            match store.commit(id, &stream.to_string(), commit).await.unwrap() {
                CommitOutcome::Committed { .. } => "committed",
                CommitOutcome::ExceedsReservation { .. } => "exceeds",
                CommitOutcome::ReservationNotFound(_) => "no-reservation",
                CommitOutcome::Closed { .. } => "closed",
                CommitOutcome::NotFound => "not-found",
            }
        }
        Op::Deposit(d) => match store.record_deposit(id, d).await.unwrap() {
            DepositOutcome::Raised(_) => "raised",
            DepositOutcome::Unchanged(_) => "unchanged",
            DepositOutcome::Stale(_) => "stale",
            DepositOutcome::Finalized(_) => "finalized",
            DepositOutcome::NotFound => "not-found",
        },
        Op::Close => match store.mark_closing(id, marker).await.unwrap() {
            CloseOutcome::Marked(_) => "marked",
            CloseOutcome::AlreadyClosing(_) => "already",
            CloseOutcome::Finalized(_) => "finalized",
            CloseOutcome::NotFound => "not-found",
        },
        Op::Cancel { right_marker } => {
            let at = if right_marker {
                marker
            } else {
                marker + Duration::from_secs(1)
            };
            match store.cancel_closing(id, at).await.unwrap() {
                CancelCloseOutcome::Reopened(_) => "reopened",
                CancelCloseOutcome::NotClosing(_) => "not-closing",
                CancelCloseOutcome::NotFound => "not-found",
            }
        }
        Op::Settle(s) => match store.record_settlement(id, s, None).await.unwrap() {
            SettlementOutcome::Recorded(_) => "recorded",
            SettlementOutcome::Unchanged(_) => "unchanged",
            SettlementOutcome::Stale(_) => "stale",
            SettlementOutcome::AboveHighest(_) => "above",
            SettlementOutcome::Finalized(_) => "finalized",
            SettlementOutcome::NotFound => "not-found",
        },
        Op::Finalize(s) => match store.finalize(id, s, None).await.unwrap() {
            FinalizeOutcome::Finalized(_) => "finalized",
            FinalizeOutcome::AlreadyFinalized(_) => "already",
            FinalizeOutcome::AboveHighest(_) => "above",
            FinalizeOutcome::NotFound => "not-found",
        },
    }
}

/// Runs `ops` on a fresh channel, checking each outcome and the row against the model, and
/// that nothing that must not decrease did.
async fn check_against_model(store: &impl ChannelStore, ops: &[Op]) -> Result<(), TestCaseError> {
    let ch = funded(store, 1_000, 0).await;
    let id = ch.id();
    // One close marker per channel: the model's "right marker" is this one.
    let marker = OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap();
    let mut model = Model {
        deposit: 1_000,
        highest: 0,
        spent: 0,
        settled: 0,
        units: 0,
        state: ModelState::Open,
        reservations: BTreeMap::new(),
    };
    let mut before = ch;
    for (i, op) in ops.iter().enumerate() {
        let expected = model.apply(op);
        let got = run_op(store, id, op, marker).await;
        prop_assert_eq!(got, expected, "step {}: {:?}", i, op);
        let now = store.get(id).await.unwrap().unwrap();
        prop_assert!(
            model.matches(&now),
            "step {}: {:?}\nmodel {:?}\nstore {:?}",
            i,
            op,
            model,
            now
        );
        assert_invariants(&now);
        prop_assert!(now.deposit >= before.deposit);
        prop_assert!(now.highest_voucher >= before.highest_voucher);
        prop_assert!(now.spent >= before.spent);
        prop_assert!(now.settled >= before.settled);
        prop_assert!(now.units >= before.units);
        prop_assert!(now.version >= before.version);
        before = now;
    }
    Ok(())
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]
    #[test]
    fn memory_model_interleavings(ops in proptest::collection::vec(op(), 1..60)) {
        let store = MemoryChannelStore::new();
        runtime().block_on(check_against_model(&store, &ops))?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]
    #[test]
    fn sqlite_model_interleavings(ops in proptest::collection::vec(op(), 1..40)) {
        let rt = runtime();
        let (_dir, store) = rt.block_on(sqlite());
        rt.block_on(check_against_model(&store, &ops))?;
    }

    #[test]
    fn postgres_model_interleavings(ops in proptest::collection::vec(op(), 1..40)) {
        let Some(url) = pg_url() else { return Ok(()) };
        let rt = runtime();
        let store = rt.block_on(PgStore::connect(&url)).unwrap();
        rt.block_on(check_against_model(&store, &ops))?;
    }
}

// ---------------------------------------------------------------------------------------------
// What the databases hold

#[tokio::test]
async fn sqlite_stores_fixed_width_amounts_and_checks_them() {
    let (_dir, store) = sqlite().await;
    let ch = funded(&store, u128::MAX, 12_345).await;
    let key = format!("{:#x}", ch.id());
    let (deposit, highest): (String, String) = sqlx::query_as(
        "SELECT deposit, highest_voucher FROM session_channels WHERE channel_id = ?1",
    )
    .bind(&key)
    .fetch_one(store.pool())
    .await
    .unwrap();
    assert_eq!(deposit, u128::MAX.to_string());
    assert_eq!(highest, "000000000000000000000000000000000012345");
    // SQL compares them as numbers: a 9-digit string sorts below a 39-digit one.
    let (small,): (i64,) = sqlx::query_as(
        "SELECT count(*) FROM session_channels WHERE channel_id = ?1 AND highest_voucher < deposit",
    )
    .bind(&key)
    .fetch_one(store.pool())
    .await
    .unwrap();
    assert_eq!(small, 1);
    // The schema refuses a write that breaks the invariants, or is not 39 digits.
    let broken = sqlx::query(
        "UPDATE session_channels SET spent = '000000000000000000000000000000000012346' \
         WHERE channel_id = ?1",
    )
    .bind(&key)
    .execute(store.pool())
    .await;
    assert!(
        broken.is_err(),
        "spent above the highest voucher was stored"
    );
    let short = sqlx::query("UPDATE session_channels SET spent = '1' WHERE channel_id = ?1")
        .bind(&key)
        .execute(store.pool())
        .await;
    assert!(short.is_err(), "an unpadded amount was stored");
}

#[tokio::test]
async fn sqlite_reopen_keeps_channels() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mpp.db");
    let store = SqliteStore::open(&path).await.unwrap();
    let ch = funded(&store, 1_000, 500).await;
    store.charge(ch.id(), Charge::one(123)).await.unwrap();
    store.reserve(ch.id(), "s", 7, HOUR).await.unwrap();
    let before = store.get(ch.id()).await.unwrap().unwrap();
    store.close().await;
    let store = SqliteStore::open(&path).await.unwrap();
    assert_eq!(store.get(ch.id()).await.unwrap().unwrap(), before);
    // The channel table sits beside the replay keys, tracked in the library's own table.
    let (versions,): (i64,) = sqlx::query_as(AssertSqlSafe(format!(
        "SELECT count(*) FROM {MIGRATIONS_TABLE} WHERE version = 4"
    )))
    .fetch_one(store.pool())
    .await
    .unwrap();
    assert_eq!(versions, 1);
}

#[tokio::test]
async fn sqlite_corrupt_rows_are_store_errors() {
    let (_dir, store) = sqlite().await;
    let ch = funded(&store, 1_000, 500).await;
    sqlx::query("UPDATE session_channels SET reservations = 'not json' WHERE channel_id = ?1")
        .bind(format!("{:#x}", ch.id()))
        .execute(store.pool())
        .await
        .unwrap();
    assert!(matches!(
        store.get(ch.id()).await,
        Err(ChannelStoreError::Store(_))
    ));
    // Nothing is charged on a row that cannot be trusted.
    assert!(matches!(
        store.charge(ch.id(), Charge::one(1)).await,
        Err(ChannelStoreError::Store(_))
    ));
    // A broken schema is a store error too, never a success.
    sqlx::query("DROP TABLE session_channels")
        .execute(store.pool())
        .await
        .unwrap();
    assert!(matches!(
        store.accept_voucher(ch.id(), &voucher(600), 0).await,
        Err(ChannelStoreError::Store(_))
    ));
    store.close().await;
    assert!(store.get(ch.id()).await.is_err());
}

#[tokio::test]
async fn postgres_stores_numeric_amounts_and_checks_them() {
    let Some(url) = pg_url() else { return };
    let schema = PgSchema::create(&url, "chan").await.unwrap();
    let store = schema.store().await.unwrap();
    let ch = funded(&store, u128::MAX, u128::MAX - 1).await;
    let key = format!("{:#x}", ch.id());
    let (kind, exact): (String, bool) = sqlx::query_as(
        "SELECT pg_typeof(deposit)::text, \
         deposit = 340282366920938463463374607431768211455 \
         AND highest_voucher = 340282366920938463463374607431768211454 \
         FROM session_channels WHERE channel_id = $1",
    )
    .bind(&key)
    .fetch_one(store.pool())
    .await
    .unwrap();
    assert_eq!(kind, "numeric");
    assert!(exact, "the amounts were not stored exactly");
    let broken = sqlx::query(
        "UPDATE session_channels SET spent = highest_voucher + 1 WHERE channel_id = $1",
    )
    .bind(&key)
    .execute(store.pool())
    .await;
    assert!(
        broken.is_err(),
        "spent above the highest voucher was stored"
    );
    let negative = sqlx::query("UPDATE session_channels SET settled = -1 WHERE channel_id = $1")
        .bind(&key)
        .execute(store.pool())
        .await;
    assert!(negative.is_err(), "a negative amount was stored");

    // Corrupt JSON fails closed.
    sqlx::query("UPDATE session_channels SET reservations = 'nope' WHERE channel_id = $1")
        .bind(&key)
        .execute(store.pool())
        .await
        .unwrap();
    assert!(matches!(
        store.charge(ch.id(), Charge::one(1)).await,
        Err(ChannelStoreError::Store(_))
    ));
    let (versions,): (i64,) = sqlx::query_as(AssertSqlSafe(format!(
        "SELECT count(*) FROM {MIGRATIONS_TABLE} WHERE version = 4"
    )))
    .fetch_one(store.pool())
    .await
    .unwrap();
    assert_eq!(versions, 1);
    schema.drop().await;
}
