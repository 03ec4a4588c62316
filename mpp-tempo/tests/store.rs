//! Replay-store semantics against real databases: SQLite in a temp file and Postgres from
//! `MPP_TEST_DATABASE_URL` (start one with `tools/postgres/start.sh`, then
//! `source /tmp/mpp-postgres/env`). Without that variable the Postgres tests skip, or fail when
//! `CI` is set. The in-process `MemoryStore` runs the same cases. The last section runs the
//! stores' migrations next to an application's own (`tests/app_migrations/`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mpp_core::BoxFuture;
use mpp_core::idempotency::{Begin, IdempotencyStore, StoredResponse};
use mpp_tempo::store::{
    Claim, ClaimRecord, ClaimState, FeeSpend, MIGRATIONS_TABLE, MemoryStore, NewClaim, PgStore,
    ReplayStore, SqliteStore, StoreError,
};
use sqlx::AssertSqlSafe;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions};
use time::OffsetDateTime;
use time::macros::datetime;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

// ---------------------------------------------------------------------------------------------
// Helpers

/// Whether a plain claim (one owner, for the single-use cases) was won.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Taken {
    Claimed,
    AlreadyClaimed,
}

const OWNER: &str = "test-owner";

/// Single-use claims on top of the stateful API: claim in `Served`, release from it.
trait SingleUse {
    fn claim_key<'a>(
        &'a self,
        key: &'a str,
        expires_at: OffsetDateTime,
    ) -> BoxFuture<'a, Result<Taken, StoreError>>;
    fn release_key<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), StoreError>>;
}

impl<T: ReplayStore + ?Sized> SingleUse for T {
    fn claim_key<'a>(
        &'a self,
        key: &'a str,
        expires_at: OffsetDateTime,
    ) -> BoxFuture<'a, Result<Taken, StoreError>> {
        Box::pin(async move {
            let claim = NewClaim {
                key,
                owner: OWNER,
                state: ClaimState::Served,
                expires_at,
                valid_before: None,
            };
            Ok(match self.claim(claim).await? {
                Claim::Claimed => Taken::Claimed,
                Claim::Existing(_) => Taken::AlreadyClaimed,
            })
        })
    }

    fn release_key<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            self.release(key, OWNER, ClaimState::Served).await?;
            Ok(())
        })
    }
}

/// A key no other test (or earlier run against the same Postgres) uses.
fn unique(name: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = OffsetDateTime::now_utc().unix_timestamp_nanos();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("test:{name}:{}:{nanos}:{n}", std::process::id())
}

fn in_a_minute() -> OffsetDateTime {
    OffsetDateTime::now_utc() + Duration::from_secs(60)
}

fn a_second_ago() -> OffsetDateTime {
    OffsetDateTime::now_utc() - Duration::from_secs(1)
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

async fn pg_store(url: &str) -> PgStore {
    PgStore::connect(url)
        .await
        .expect("connect to test Postgres")
}

async fn sqlite_file() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mpp.db");
    (dir, path)
}

/// A loopback port with nothing listening on it.
async fn dead_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap().port()
}

fn count(results: &[Result<Taken, StoreError>]) -> (usize, usize) {
    for r in results {
        assert!(r.is_ok(), "a claim failed: {r:?}");
    }
    let claimed = results
        .iter()
        .filter(|r| matches!(r, Ok(Taken::Claimed)))
        .count();
    let taken = results
        .iter()
        .filter(|r| matches!(r, Ok(Taken::AlreadyClaimed)))
        .count();
    (claimed, taken)
}

// ---------------------------------------------------------------------------------------------
// The shared cases, run against every backend

async fn claim_then_reclaim(store: &impl ReplayStore) {
    let key = unique("reclaim");
    assert_eq!(
        store.claim_key(&key, in_a_minute()).await.unwrap(),
        Taken::Claimed
    );
    assert_eq!(
        store.claim_key(&key, in_a_minute()).await.unwrap(),
        Taken::AlreadyClaimed
    );
    // A later expiry does not help a second claimant.
    let far = OffsetDateTime::now_utc() + Duration::from_secs(86_400);
    assert_eq!(
        store.claim_key(&key, far).await.unwrap(),
        Taken::AlreadyClaimed
    );
    // Keys are exact: another key (even a prefix) is independent.
    let other = format!("{key}x");
    assert_eq!(
        store.claim_key(&other, in_a_minute()).await.unwrap(),
        Taken::Claimed
    );
    assert_eq!(
        store
            .claim_key(&key[..key.len() - 1], in_a_minute())
            .await
            .unwrap(),
        Taken::Claimed
    );
}

async fn expired_claim_is_reclaimable(store: &impl ReplayStore) {
    // Already expired when claimed: the claim succeeds, and the key stays free.
    let key = unique("expired");
    assert_eq!(
        store.claim_key(&key, a_second_ago()).await.unwrap(),
        Taken::Claimed
    );
    assert_eq!(
        store.claim_key(&key, in_a_minute()).await.unwrap(),
        Taken::Claimed
    );
    // ... and the take-over holds for its new expiry.
    assert_eq!(
        store.claim_key(&key, in_a_minute()).await.unwrap(),
        Taken::AlreadyClaimed
    );

    // Expires while we wait.
    let key = unique("expiring");
    let soon = OffsetDateTime::now_utc() + Duration::from_millis(300);
    assert_eq!(store.claim_key(&key, soon).await.unwrap(), Taken::Claimed);
    assert_eq!(
        store.claim_key(&key, in_a_minute()).await.unwrap(),
        Taken::AlreadyClaimed
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        store.claim_key(&key, in_a_minute()).await.unwrap(),
        Taken::Claimed
    );
    assert_eq!(
        store.claim_key(&key, in_a_minute()).await.unwrap(),
        Taken::AlreadyClaimed
    );
}

async fn release_frees_the_key(store: &impl ReplayStore) {
    let key = unique("release");
    assert_eq!(
        store.claim_key(&key, in_a_minute()).await.unwrap(),
        Taken::Claimed
    );
    store.release_key(&key).await.unwrap();
    assert_eq!(
        store.claim_key(&key, in_a_minute()).await.unwrap(),
        Taken::Claimed
    );
    assert_eq!(
        store.claim_key(&key, in_a_minute()).await.unwrap(),
        Taken::AlreadyClaimed
    );
    // Releasing one key leaves others alone; releasing an unknown key is fine.
    let other = unique("release-other");
    assert_eq!(
        store.claim_key(&other, in_a_minute()).await.unwrap(),
        Taken::Claimed
    );
    store.release_key(&key).await.unwrap();
    store.release_key(&unique("never-claimed")).await.unwrap();
    assert_eq!(
        store.claim_key(&other, in_a_minute()).await.unwrap(),
        Taken::AlreadyClaimed
    );
}

/// 50 concurrent claims of one fresh key, then 50 of one expired key: one winner each.
async fn concurrent_claims_one_winner<S: ReplayStore + Clone>(store: &S) {
    for expired_first in [false, true] {
        let key = unique("concurrent");
        if expired_first {
            assert_eq!(
                store.claim_key(&key, a_second_ago()).await.unwrap(),
                Taken::Claimed
            );
        }
        let tasks: Vec<JoinHandle<Result<Taken, StoreError>>> = (0..50)
            .map(|_| {
                let store = store.clone();
                let key = key.clone();
                tokio::spawn(async move { store.claim_key(&key, in_a_minute()).await })
            })
            .collect();
        let mut results = Vec::new();
        for t in tasks {
            results.push(t.await.unwrap());
        }
        assert_eq!(
            count(&results),
            (1, 49),
            "expired_first={expired_first}: {results:?}"
        );
    }
}

/// A key taken and given back again and again (a sponsored sender's turn): every claim
/// answers either "claimed" or "held by someone", never an error, even when the holder
/// releases it between the claimant's insert and its read.
async fn a_key_taken_and_released_in_turns_never_fails<S: ReplayStore + Clone>(store: &S) {
    let key = unique("turns");
    let tasks: Vec<JoinHandle<Result<usize, StoreError>>> = (0..16)
        .map(|i| {
            let (store, key) = (store.clone(), key.clone());
            tokio::spawn(async move {
                let owner = format!("owner-{i}");
                let mut turns = 0;
                for _ in 0..40 {
                    match store
                        .claim(new_claim(&key, &owner, ClaimState::Held))
                        .await?
                    {
                        Claim::Claimed => {
                            turns += 1;
                            assert!(store.release(&key, &owner, ClaimState::Held).await?);
                        }
                        Claim::Existing(held) => assert_ne!(held.owner, owner),
                    }
                }
                Ok(turns)
            })
        })
        .collect();
    let mut turns = 0;
    for t in tasks {
        turns += t.await.unwrap().expect("a claim in turns failed");
    }
    assert!(turns > 0, "nobody ever got the key");
}

/// Two independent handles (separate pools) race on the same keys: one winner per key.
async fn two_handles_race<A, B>(a: &A, b: &B)
where
    A: ReplayStore + Clone,
    B: ReplayStore + Clone,
{
    const KEYS: usize = 20;
    const PER_HANDLE: usize = 4;
    let keys: Vec<String> = (0..KEYS).map(|_| unique("race")).collect();
    // Half the keys start as expired claims, so take-overs race too.
    for key in keys.iter().step_by(2) {
        assert_eq!(
            a.claim_key(key, a_second_ago()).await.unwrap(),
            Taken::Claimed
        );
    }
    let mut tasks: Vec<(usize, JoinHandle<Result<Taken, StoreError>>)> = Vec::new();
    for _ in 0..PER_HANDLE {
        for (i, key) in keys.iter().enumerate() {
            let (a, key_a) = (a.clone(), key.clone());
            tasks.push((
                i,
                tokio::spawn(async move { a.claim_key(&key_a, in_a_minute()).await }),
            ));
            let (b, key_b) = (b.clone(), key.clone());
            tasks.push((
                i,
                tokio::spawn(async move { b.claim_key(&key_b, in_a_minute()).await }),
            ));
        }
    }
    let mut per_key: Vec<Vec<Result<Taken, StoreError>>> = (0..KEYS).map(|_| Vec::new()).collect();
    for (i, t) in tasks {
        per_key[i].push(t.await.unwrap());
    }
    for (i, results) in per_key.iter().enumerate() {
        assert_eq!(
            count(results),
            (1, 2 * PER_HANDLE - 1),
            "key {i}: {results:?}"
        );
    }
    // Each handle sees the other's claims.
    for key in &keys {
        assert_eq!(
            a.claim_key(key, in_a_minute()).await.unwrap(),
            Taken::AlreadyClaimed
        );
        assert_eq!(
            b.claim_key(key, in_a_minute()).await.unwrap(),
            Taken::AlreadyClaimed
        );
    }
}

/// The store is usable as `Arc<dyn ReplayStore>` (how a method holds it).
async fn through_dyn(store: Arc<dyn ReplayStore>) {
    let key = unique("dyn");
    assert_eq!(
        store.claim_key(&key, in_a_minute()).await.unwrap(),
        Taken::Claimed
    );
    assert_eq!(
        store.claim_key(&key, in_a_minute()).await.unwrap(),
        Taken::AlreadyClaimed
    );
}

/// A claim of `key` by `owner` in `state`, with a deadline.
fn new_claim<'a>(key: &'a str, owner: &'a str, state: ClaimState) -> NewClaim<'a> {
    NewClaim {
        key,
        owner,
        state,
        expires_at: in_a_minute(),
        valid_before: Some(1_700_000_000),
    }
}

/// The payment life cycle: each move happens only from the state named, for the owner that
/// holds the claim; a second claimant sees the live claim as it stands.
async fn states_move_only_from_the_named_state(store: &impl ReplayStore) {
    let key = unique("states");
    assert_eq!(
        store
            .claim(new_claim(&key, "a", ClaimState::Held))
            .await
            .unwrap(),
        Claim::Claimed
    );
    let seen = |state| {
        Claim::Existing(ClaimRecord {
            key: key.clone(),
            owner: "a".into(),
            state,
            valid_before: Some(1_700_000_000),
        })
    };
    assert_eq!(
        store
            .claim(new_claim(&key, "b", ClaimState::Held))
            .await
            .unwrap(),
        seen(ClaimState::Held)
    );
    let later = in_a_minute();
    // Wrong owner, wrong state: nothing moves.
    assert!(
        !store
            .advance(&key, "b", ClaimState::Held, ClaimState::Pending, later)
            .await
            .unwrap()
    );
    assert!(
        !store
            .advance(&key, "a", ClaimState::Settled, ClaimState::Serving, later)
            .await
            .unwrap()
    );
    assert!(
        store
            .advance(&key, "a", ClaimState::Held, ClaimState::Pending, later)
            .await
            .unwrap()
    );
    assert!(
        !store
            .advance(&key, "a", ClaimState::Held, ClaimState::Pending, later)
            .await
            .unwrap()
    );
    let pending = store.in_state(ClaimState::Pending, 1000).await.unwrap();
    assert!(
        pending.iter().any(|r| r.key == key && r.owner == "a"),
        "{pending:?}"
    );
    assert!(
        store
            .advance(&key, "a", ClaimState::Pending, ClaimState::Settled, later)
            .await
            .unwrap()
    );
    assert!(
        !store
            .in_state(ClaimState::Pending, 1000)
            .await
            .unwrap()
            .iter()
            .any(|r| r.key == key)
    );
    assert_eq!(
        store
            .claim(new_claim(&key, "a", ClaimState::Held))
            .await
            .unwrap(),
        seen(ClaimState::Settled)
    );
    // Release only from the named state and owner.
    assert!(!store.release(&key, "a", ClaimState::Held).await.unwrap());
    assert!(!store.release(&key, "b", ClaimState::Settled).await.unwrap());
    assert!(store.release(&key, "a", ClaimState::Settled).await.unwrap());
    assert_eq!(
        store
            .claim(new_claim(&key, "b", ClaimState::Held))
            .await
            .unwrap(),
        Claim::Claimed
    );
}

/// 20 concurrent moves of one settled claim to `Serving`: exactly one wins (two requests with
/// the same credential are never both served from one payment).
async fn concurrent_advances_one_winner<S: ReplayStore + Clone>(store: &S) {
    let key = unique("serve-once");
    store
        .claim(new_claim(&key, "a", ClaimState::Settled))
        .await
        .unwrap();
    let tasks: Vec<JoinHandle<Result<bool, StoreError>>> = (0..20)
        .map(|_| {
            let (store, key) = (store.clone(), key.clone());
            tokio::spawn(async move {
                store
                    .advance(
                        &key,
                        "a",
                        ClaimState::Settled,
                        ClaimState::Serving,
                        in_a_minute(),
                    )
                    .await
            })
        })
        .collect();
    let mut won = 0;
    for t in tasks {
        won += usize::from(t.await.unwrap().unwrap());
    }
    assert_eq!(won, 1);
}

/// An expiry of 2100-01-01T00:00:00.123456Z, stored as unix ms rounded up.
const EXACT_EXPIRY: OffsetDateTime = datetime!(2100-01-01 0:00:00.123456 UTC);
const EXACT_EXPIRY_MS: i64 = 4_102_444_800_124;

// ---------------------------------------------------------------------------------------------
/// Sponsored spend: capped per scope, all scopes or none, refunded, concurrent spends never
/// pass a cap together.
async fn spend_is_capped_all_or_none<S: ReplayStore + Clone>(store: &S) {
    let sender = unique("sender");
    let other = unique("other");
    let total = unique("total");
    let window_start = OffsetDateTime::now_utc().unix_timestamp();
    let window_end = OffsetDateTime::now_utc() + time::Duration::hours(1);
    let scopes_a = [(sender.as_str(), 100), (total.as_str(), 150)];
    let scopes_b = [(other.as_str(), 100), (total.as_str(), 150)];
    let a = |amount| FeeSpend {
        scopes: &scopes_a,
        window_start,
        window_end,
        amount,
    };
    let b = |amount| FeeSpend {
        scopes: &scopes_b,
        window_start,
        window_end,
        amount,
    };
    assert!(
        !store.spend(a(101)).await.unwrap(),
        "over the sender cap alone"
    );
    assert!(store.spend(a(60)).await.unwrap());
    assert!(store.spend(a(40)).await.unwrap(), "exactly at the cap");
    assert!(!store.spend(a(1)).await.unwrap(), "past the sender cap");
    // The other sender has room, the total has 50 left: refused whole, nothing counted.
    assert!(!store.spend(b(60)).await.unwrap());
    assert!(
        store.spend(b(50)).await.unwrap(),
        "the refused spend counted nothing"
    );
    assert!(!store.spend(b(1)).await.unwrap(), "the total is spent");
    // A refund makes room in every scope of the spend.
    store.refund(a(60), 30).await.unwrap();
    assert!(store.spend(b(30)).await.unwrap());
    assert!(
        !store.spend(a(1)).await.unwrap(),
        "the total is spent again"
    );
    // Never below zero.
    store.refund(b(30), 1_000).await.unwrap();
    assert!(store.spend(b(100)).await.unwrap());
    // Another window starts empty.
    let next = [(sender.as_str(), 100), (total.as_str(), 150)];
    let later = FeeSpend {
        scopes: &next,
        window_start: window_start + 3600,
        window_end: window_end + time::Duration::hours(1),
        amount: 100,
    };
    assert!(store.spend(later).await.unwrap());

    // Concurrent spends of 10 against a cap of 100: exactly ten pass.
    let scope = unique("race");
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..30 {
        let (store, scope) = (store.clone(), scope.clone());
        tasks.spawn(async move {
            let scopes = [(scope.as_str(), 100)];
            store
                .spend(FeeSpend {
                    scopes: &scopes,
                    window_start,
                    window_end,
                    amount: 10,
                })
                .await
                .unwrap()
        });
    }
    let mut passed = 0;
    while let Some(ok) = tasks.join_next().await {
        passed += usize::from(ok.unwrap());
    }
    assert_eq!(passed, 10);
}

/// Ended spend windows are purged.
async fn ended_windows_are_purged(store: &impl ReplayStore) {
    let scope = unique("ended");
    let scopes = [(scope.as_str(), 100)];
    let ended = FeeSpend {
        scopes: &scopes,
        window_start: 0,
        window_end: a_second_ago(),
        amount: 100,
    };
    assert!(store.spend(ended).await.unwrap());
    assert!(store.purge_expired().await.unwrap() >= 1);
    // Purged: the window's spend starts again from zero.
    assert!(store.spend(ended).await.unwrap());
}

/// `Idempotency-Key` records: begin, in flight, other credential, complete once, replay,
/// abandon, expiry.
async fn idempotency_records_move_atomically(store: &impl IdempotencyStore) {
    let until = OffsetDateTime::now_utc() + time::Duration::minutes(5);
    let k = unique("idem");
    assert_eq!(
        store.begin(&k, "c", "o1", until).await.unwrap(),
        Begin::Started
    );
    assert_eq!(
        store.begin(&k, "c", "o2", until).await.unwrap(),
        Begin::InFlight
    );
    assert_eq!(
        store.begin(&k, "d", "o2", until).await.unwrap(),
        Begin::OtherCredential
    );
    assert!(!store.abandon(&k, "o2").await.unwrap());
    let response = StoredResponse {
        status: 201,
        headers: vec![
            ("payment-receipt".into(), b"eyJ4IjoxfQ".to_vec()),
            ("x-b".into(), Vec::new()),
        ],
        body: vec![0, 159, 146, 150],
    };
    assert!(store.complete(&k, "o1", &response, until).await.unwrap());
    assert!(!store.complete(&k, "o1", &response, until).await.unwrap());
    assert!(!store.abandon(&k, "o1").await.unwrap());
    assert_eq!(
        store.begin(&k, "c", "o3", until).await.unwrap(),
        Begin::Replay(response)
    );
    let j = unique("idem");
    assert_eq!(
        store.begin(&j, "c", "o1", until).await.unwrap(),
        Begin::Started
    );
    assert!(store.abandon(&j, "o1").await.unwrap());
    assert_eq!(
        store.begin(&j, "c", "o2", until).await.unwrap(),
        Begin::Started
    );
    let e = unique("idem");
    assert_eq!(
        store.begin(&e, "c", "o1", a_second_ago()).await.unwrap(),
        Begin::Started
    );
    assert_eq!(
        store.begin(&e, "d", "o2", until).await.unwrap(),
        Begin::Started
    );
}

// MemoryStore

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_semantics() {
    let store = MemoryStore::new();
    claim_then_reclaim(&store).await;
    expired_claim_is_reclaimable(&store).await;
    release_frees_the_key(&store).await;
    concurrent_claims_one_winner(&store).await;
    a_key_taken_and_released_in_turns_never_fails(&store).await;
    two_handles_race(&store, &store.clone()).await;
    through_dyn(Arc::new(store.clone())).await;

    let live = store.live_keys();
    assert!(live > 0);
    let key = unique("purge");
    assert_eq!(
        store.claim_key(&key, a_second_ago()).await.unwrap(),
        Taken::Claimed
    );
    assert!(store.purge_expired().await.unwrap() >= 1);
    assert_eq!(store.live_keys(), live);
    states_move_only_from_the_named_state(&store).await;
    concurrent_advances_one_winner(&store).await;
    spend_is_capped_all_or_none(&store).await;
    ended_windows_are_purged(&store).await;
    idempotency_records_move_atomically(&mpp_core::idempotency::MemoryIdempotencyStore::default())
        .await;
}

#[tokio::test]
async fn memory_store_is_bounded_and_fails_closed() {
    let store = MemoryStore::with_capacity(3);
    for _ in 0..3 {
        assert_eq!(
            store
                .claim_key(&unique("cap"), in_a_minute())
                .await
                .unwrap(),
            Taken::Claimed
        );
    }
    // Full of live claims: a new one is a store fault (503), never an eviction of a live
    // claim, which would reopen it to replay.
    assert!(
        store
            .claim_key(&unique("cap"), in_a_minute())
            .await
            .is_err()
    );
    // Expired claims make room.
    let store = MemoryStore::with_capacity(2);
    store
        .claim_key(&unique("old"), a_second_ago())
        .await
        .unwrap();
    store
        .claim_key(&unique("old"), a_second_ago())
        .await
        .unwrap();
    assert_eq!(
        store
            .claim_key(&unique("new"), in_a_minute())
            .await
            .unwrap(),
        Taken::Claimed
    );
    assert_eq!(store.live_keys(), 1);
}

// ---------------------------------------------------------------------------------------------
// SqliteStore

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_semantics() {
    let (_dir, path) = sqlite_file().await;
    let store = SqliteStore::open(&path).await.unwrap();
    assert!(path.exists(), "open creates the file");
    claim_then_reclaim(&store).await;
    expired_claim_is_reclaimable(&store).await;
    release_frees_the_key(&store).await;
    concurrent_claims_one_winner(&store).await;
    a_key_taken_and_released_in_turns_never_fails(&store).await;
    through_dyn(Arc::new(store.clone())).await;
    states_move_only_from_the_named_state(&store).await;
    concurrent_advances_one_winner(&store).await;
    spend_is_capped_all_or_none(&store).await;
    ended_windows_are_purged(&store).await;
    idempotency_records_move_atomically(&store).await;
}

/// A database written before claim states existed keeps its claims, as served payments.
#[tokio::test]
async fn sqlite_claims_from_before_states_stay_used() {
    let (_dir, path) = sqlite_file().await;
    let options = SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))
        .unwrap()
        .create_if_missing(true);
    let pool = SqlitePoolOptions::new()
        .connect_with(options)
        .await
        .unwrap();
    let store = SqliteStore::new_unmigrated(pool.clone());
    // Only the first migration, as an older release ran it.
    let first = Migrator {
        migrations: std::borrow::Cow::Owned(
            mpp_tempo::store::sqlite::MIGRATOR.migrations[..1].to_vec(),
        ),
        ..Migrator::DEFAULT
    };
    let mut first = first;
    first.dangerous_set_table_name(MIGRATIONS_TABLE);
    first.run(&pool).await.unwrap();
    let key = unique("old-row");
    sqlx::query("INSERT INTO replay_keys (key, expires_at) VALUES (?1, ?2)")
        .bind(&key)
        .bind(EXACT_EXPIRY_MS)
        .execute(&pool)
        .await
        .unwrap();
    store.migrate().await.unwrap();
    match store
        .claim(new_claim(&key, "a", ClaimState::Held))
        .await
        .unwrap()
    {
        Claim::Existing(record) => assert_eq!(record.state, ClaimState::Served),
        other => panic!("the old claim was lost: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_in_memory_semantics() {
    let store = SqliteStore::in_memory().await.unwrap();
    claim_then_reclaim(&store).await;
    expired_claim_is_reclaimable(&store).await;
    release_frees_the_key(&store).await;
    concurrent_claims_one_winner(&store).await;

    // Not shared with another in-memory store.
    let key = unique("private");
    assert_eq!(
        store.claim_key(&key, in_a_minute()).await.unwrap(),
        Taken::Claimed
    );
    let other = SqliteStore::in_memory().await.unwrap();
    assert_eq!(
        other.claim_key(&key, in_a_minute()).await.unwrap(),
        Taken::Claimed
    );
}

#[tokio::test]
async fn sqlite_uses_wal_and_stores_exact_times() {
    let (_dir, path) = sqlite_file().await;
    let store = SqliteStore::open(&path).await.unwrap();
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(mode.to_lowercase(), "wal");
    let busy: i64 = sqlx::query_scalar("PRAGMA busy_timeout")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert!(busy >= 1000, "busy_timeout = {busy}");

    let key = unique("exact");
    assert_eq!(
        store.claim_key(&key, EXACT_EXPIRY).await.unwrap(),
        Taken::Claimed
    );
    let stored: i64 = sqlx::query_scalar("SELECT expires_at FROM replay_keys WHERE key = ?1")
        .bind(&key)
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(stored, EXACT_EXPIRY_MS);

    // Purging removes expired rows only.
    let old = unique("old");
    assert_eq!(
        store.claim_key(&old, a_second_ago()).await.unwrap(),
        Taken::Claimed
    );
    assert_eq!(store.purge_expired().await.unwrap(), 1);
    let left: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM replay_keys")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(left, 1);
}

#[tokio::test]
async fn sqlite_reopen_keeps_claims() {
    let (_dir, path) = sqlite_file().await;
    let key = unique("durable");
    {
        let store = SqliteStore::open(&path).await.unwrap();
        assert_eq!(
            store.claim_key(&key, in_a_minute()).await.unwrap(),
            Taken::Claimed
        );
        store.close().await;
    }
    // Re-opening runs the (already applied) migrations again, harmlessly.
    let store = SqliteStore::open(&path).await.unwrap();
    assert_eq!(
        store.claim_key(&key, in_a_minute()).await.unwrap(),
        Taken::AlreadyClaimed
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_two_handles_on_one_file() {
    let (_dir, path) = sqlite_file().await;
    // Opened concurrently: the migration race between them must resolve.
    let (a, b) = tokio::join!(SqliteStore::open(&path), SqliteStore::open(&path));
    let (a, b) = (a.unwrap(), b.unwrap());
    two_handles_race(&a, &b).await;
}

#[tokio::test]
async fn sqlite_database_errors_are_store_errors() {
    // Unopenable path.
    let (dir, _) = sqlite_file().await;
    let bad = dir.path().join("no/such/dir/mpp.db");
    assert!(SqliteStore::open(&bad).await.is_err());

    // A broken schema: every operation errors; nothing is reported as claimed.
    let (_dir, path) = sqlite_file().await;
    let store = SqliteStore::open(&path).await.unwrap();
    sqlx::query("DROP TABLE replay_keys")
        .execute(store.pool())
        .await
        .unwrap();
    let err = store.claim_key(&unique("broken"), in_a_minute()).await;
    assert!(err.is_err(), "{err:?}");
    assert!(
        err.unwrap_err()
            .to_string()
            .contains("replay store unavailable")
    );
    assert!(store.release_key("k").await.is_err());
    assert!(store.purge_expired().await.is_err());

    // A closed pool.
    let store = SqliteStore::open(&path).await.unwrap();
    store.close().await;
    assert!(
        store
            .claim_key(&unique("closed"), in_a_minute())
            .await
            .is_err()
    );
    assert!(store.release_key("k").await.is_err());
}

// ---------------------------------------------------------------------------------------------
// PgStore

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_semantics() {
    let Some(url) = pg_url() else { return };
    let store = pg_store(&url).await;
    claim_then_reclaim(&store).await;
    expired_claim_is_reclaimable(&store).await;
    release_frees_the_key(&store).await;
    concurrent_claims_one_winner(&store).await;
    a_key_taken_and_released_in_turns_never_fails(&store).await;
    through_dyn(Arc::new(store.clone())).await;
    states_move_only_from_the_named_state(&store).await;
    concurrent_advances_one_winner(&store).await;
    spend_is_capped_all_or_none(&store).await;
    ended_windows_are_purged(&store).await;
    idempotency_records_move_atomically(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_two_instances_race() {
    let Some(url) = pg_url() else { return };
    // Two instances start at once: the migrations serialize on sqlx's advisory lock.
    let (a, b) = tokio::join!(PgStore::connect(&url), PgStore::connect(&url));
    let (a, b) = (a.unwrap(), b.unwrap());
    two_handles_race(&a, &b).await;
}

#[tokio::test]
async fn postgres_stores_exact_times_and_purges() {
    let Some(url) = pg_url() else { return };
    let store = pg_store(&url).await;
    let key = unique("exact");
    assert_eq!(
        store.claim_key(&key, EXACT_EXPIRY).await.unwrap(),
        Taken::Claimed
    );
    let stored: i64 = sqlx::query_scalar("SELECT expires_at FROM replay_keys WHERE key = $1")
        .bind(&key)
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(stored, EXACT_EXPIRY_MS);

    let old = unique("old");
    assert_eq!(
        store.claim_key(&old, a_second_ago()).await.unwrap(),
        Taken::Claimed
    );
    assert!(store.purge_expired().await.unwrap() >= 1);
    let gone: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM replay_keys WHERE key = $1")
        .bind(&old)
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(gone, 0);
    let kept: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM replay_keys WHERE key = $1")
        .bind(&key)
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(kept, 1);
}

#[tokio::test]
async fn postgres_unreachable_is_an_error() {
    // This case needs no database; it runs everywhere.
    let port = dead_port().await;
    let url = format!("postgres://mpp:secret@127.0.0.1:{port}/mpp_test");
    assert!(PgStore::connect(&url).await.is_err());

    let pool = PgPoolOptions::new()
        .acquire_timeout(Duration::from_secs(2))
        .connect_lazy(&url)
        .unwrap();
    let store = PgStore::new_unmigrated(pool);
    let claim = store.claim_key(&unique("unreachable"), in_a_minute()).await;
    assert!(claim.is_err(), "{claim:?}");
    assert!(store.release_key("k").await.is_err());
}

#[tokio::test]
async fn postgres_silent_server_times_out() {
    // Accepts TCP connections and never answers: the operation deadline ends the wait.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let held = Arc::new(Mutex::new(Vec::new()));
    let held2 = held.clone();
    let accept = tokio::spawn(async move {
        while let Ok((conn, _)) = listener.accept().await {
            held2.lock().unwrap().push(conn);
        }
    });
    let pool = PgPoolOptions::new()
        .acquire_timeout(Duration::from_secs(30))
        .connect_lazy(&format!("postgres://mpp:secret@127.0.0.1:{port}/mpp_test"))
        .unwrap();
    let store = PgStore::new_unmigrated(pool).with_timeout(Duration::from_millis(500));
    let start = Instant::now();
    let claim = store.claim_key(&unique("silent"), in_a_minute()).await;
    assert!(claim.is_err(), "{claim:?}");
    assert!(claim.unwrap_err().to_string().contains("did not finish"));
    assert!(start.elapsed() < Duration::from_secs(5));
    accept.abort();
}

/// A TCP proxy in front of the test Postgres, so a test can make "the database" die under a
/// live pool without stopping the shared server.
struct Proxy {
    addr: SocketAddr,
    accept: JoinHandle<()>,
    conns: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Proxy {
    async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let conns: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let conns2 = conns.clone();
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let task = tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                conns2.lock().unwrap().push(task);
            }
        });
        Self {
            addr,
            accept,
            conns,
        }
    }

    /// Stops listening and cuts every open connection.
    fn kill(&self) {
        self.accept.abort();
        for task in self.conns.lock().unwrap().drain(..) {
            task.abort();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_dies_under_a_live_pool() {
    let Some(url) = pg_url() else { return };
    let direct = pg_store(&url).await;
    let options = PgConnectOptions::from_str(&url).unwrap();
    let upstream: SocketAddr = tokio::net::lookup_host((options.get_host(), options.get_port()))
        .await
        .unwrap()
        .next()
        .unwrap();
    let proxy = Proxy::start(upstream).await;
    let pool = PgPoolOptions::new()
        .max_connections(2)
        .acquire_timeout(Duration::from_secs(2))
        .connect_with(options.host("127.0.0.1").port(proxy.addr.port()))
        .await
        .unwrap();
    let store = PgStore::from_pool(pool)
        .await
        .unwrap()
        .with_timeout(Duration::from_secs(5));

    let live = unique("before-death");
    assert_eq!(
        store.claim_key(&live, in_a_minute()).await.unwrap(),
        Taken::Claimed
    );

    proxy.kill();
    let key = unique("after-death");
    for _ in 0..3 {
        let claim = store.claim_key(&key, in_a_minute()).await;
        assert!(claim.is_err(), "dead database gave {claim:?}");
    }
    assert!(store.release_key(&live).await.is_err());

    // None of the failed claims took the key; the earlier claim is intact.
    assert_eq!(
        direct.claim_key(&key, in_a_minute()).await.unwrap(),
        Taken::Claimed
    );
    assert_eq!(
        direct.claim_key(&live, in_a_minute()).await.unwrap(),
        Taken::AlreadyClaimed
    );
}

#[tokio::test]
async fn postgres_closed_pool_is_an_error() {
    let Some(url) = pg_url() else { return };
    let store = pg_store(&url).await;
    store.close().await;
    assert!(
        store
            .claim_key(&unique("closed"), in_a_minute())
            .await
            .is_err()
    );
    assert!(store.release_key("k").await.is_err());
}

// ---------------------------------------------------------------------------------------------
// The stores' migrations next to an application's own

/// An application's own migrations, tracked in sqlx's default `_sqlx_migrations`.
static APP_SQLITE: Migrator = sqlx::migrate!("./tests/app_migrations/sqlite");
static APP_POSTGRES: Migrator = sqlx::migrate!("./tests/app_migrations/postgres");

/// What the application's migrator records, and what the store's records.
const APP_HISTORY: (i64, &str) = (1, "app");
/// The store's own migrations, as sqlx records them: read from its migration files (the
/// same in both backends), so a new migration needs no edit here.
fn store_history(backend: &str) -> Vec<(i64, String)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("migrations")
        .join(backend);
    let mut history: Vec<(i64, String)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| {
            let name = entry.unwrap().file_name().into_string().unwrap();
            let stem = name.strip_suffix(".sql").unwrap();
            let (version, description) = stem.split_once('_').unwrap();
            (version.parse().unwrap(), description.replace('_', " "))
        })
        .collect();
    history.sort();
    assert!(history.len() >= 3, "{history:?}");
    history
}

fn history_sql(table: &str) -> AssertSqlSafe<String> {
    AssertSqlSafe(format!(
        "SELECT version, description FROM {table} ORDER BY version"
    ))
}

async fn sqlite_history(pool: &SqlitePool, table: &str) -> Vec<(i64, String)> {
    sqlx::query_as(history_sql(table))
        .fetch_all(pool)
        .await
        .unwrap()
}

async fn pg_history(pool: &PgPool, table: &str) -> Vec<(i64, String)> {
    sqlx::query_as(history_sql(table))
        .fetch_all(pool)
        .await
        .unwrap()
}

fn history(entry: (i64, &str)) -> Vec<(i64, String)> {
    vec![(entry.0, entry.1.to_owned())]
}

#[tokio::test]
async fn sqlite_migrations_live_beside_the_application_s() {
    // The application migrates before the store on one database, after it on the other; then
    // everyone migrates again (every restart does).
    for app_first in [true, false] {
        let (_dir, path) = sqlite_file().await;
        let options = SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true)
            .busy_timeout(Duration::from_secs(5));
        let pool = SqlitePoolOptions::new()
            .connect_with(options)
            .await
            .unwrap();
        if app_first {
            APP_SQLITE.run(&pool).await.unwrap();
        }
        // Unmigrated, the store has no table to claim in.
        let unmigrated = SqliteStore::new_unmigrated(pool.clone());
        assert!(
            unmigrated
                .claim_key(&unique("early"), in_a_minute())
                .await
                .is_err()
        );
        unmigrated.migrate().await.unwrap();
        APP_SQLITE.run(&pool).await.unwrap();
        let store = SqliteStore::from_pool(pool.clone()).await.unwrap();
        APP_SQLITE.run(&pool).await.unwrap();

        assert_eq!(
            sqlite_history(&pool, "_sqlx_migrations").await,
            history(APP_HISTORY),
            "app_first={app_first}"
        );
        assert_eq!(
            sqlite_history(&pool, MIGRATIONS_TABLE).await,
            store_history("sqlite"),
            "app_first={app_first}"
        );
        sqlx::query("INSERT INTO app_orders (item) VALUES ('fortune')")
            .execute(&pool)
            .await
            .unwrap();
        assert_eq!(
            store
                .claim_key(&unique("beside"), in_a_minute())
                .await
                .unwrap(),
            Taken::Claimed
        );
        pool.close().await;
    }
}

#[tokio::test]
async fn postgres_migrations_live_beside_the_application_s() {
    let Some(url) = pg_url() else { return };
    let admin = PgPoolOptions::new()
        .max_connections(1)
        .connect(&url)
        .await
        .unwrap();
    for app_first in [true, false] {
        // A fresh schema stands in for a fresh database: both migrators and both schemas land
        // in it, away from the other tests' tables.
        static N: AtomicU64 = AtomicU64::new(0);
        let schema = format!(
            "app_{}_{}_{}",
            std::process::id(),
            OffsetDateTime::now_utc().unix_timestamp(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        sqlx::query(AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
            .execute(&admin)
            .await
            .unwrap();
        let options = PgConnectOptions::from_str(&url)
            .unwrap()
            .options([("search_path", schema.as_str())]);
        let pool = PgPoolOptions::new()
            .max_connections(2)
            .connect_with(options)
            .await
            .unwrap();
        if app_first {
            APP_POSTGRES.run(&pool).await.unwrap();
        }
        let unmigrated = PgStore::new_unmigrated(pool.clone());
        assert!(
            unmigrated
                .claim_key(&unique("early"), in_a_minute())
                .await
                .is_err()
        );
        unmigrated.migrate().await.unwrap();
        APP_POSTGRES.run(&pool).await.unwrap();
        let store = PgStore::from_pool(pool.clone()).await.unwrap();
        APP_POSTGRES.run(&pool).await.unwrap();

        assert_eq!(
            pg_history(&pool, "_sqlx_migrations").await,
            history(APP_HISTORY),
            "app_first={app_first}"
        );
        assert_eq!(
            pg_history(&pool, MIGRATIONS_TABLE).await,
            store_history("postgres"),
            "app_first={app_first}"
        );
        // The tables are in the fresh schema, not shared with the other tests.
        let tables: Vec<String> = sqlx::query_scalar(
            "SELECT table_name::text FROM information_schema.tables \
             WHERE table_schema = $1 ORDER BY table_name",
        )
        .bind(&schema)
        .fetch_all(&admin)
        .await
        .unwrap();
        for table in [
            MIGRATIONS_TABLE,
            "_sqlx_migrations",
            "app_orders",
            "replay_keys",
            "sponsor_spend",
            "idempotent_responses",
        ] {
            assert!(
                tables.iter().any(|t| t == table),
                "app_first={app_first}: {table} not in {tables:?}"
            );
        }
        sqlx::query("INSERT INTO app_orders (item) VALUES ('fortune')")
            .execute(&pool)
            .await
            .unwrap();
        assert_eq!(
            store
                .claim_key(&unique("beside"), in_a_minute())
                .await
                .unwrap(),
            Taken::Claimed
        );
        pool.close().await;
        sqlx::query(AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
            .execute(&admin)
            .await
            .unwrap();
    }
}
