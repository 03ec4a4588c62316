//! Criterion benchmarks of the session hot path on each channel store: accept a voucher and
//! charge one unit against it (what every paid session request does), and a charge alone.
//! Postgres runs when `MPP_TEST_DATABASE_URL` is set (see `tools/postgres/start.sh`).
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use mpp_tempo::session::store::{
    Bytes, ChannelIdentity, ChannelStore, Charge, ChargeOutcome, MemoryChannelStore, NewChannel,
    OpenOutcome, SessionProtocol, Voucher, VoucherOutcome,
};
use mpp_tempo::store::{PgStore, SqliteStore};
use mpp_tempo::{Address, B256};
use tokio::runtime::Runtime;

const PRICE: u128 = 75;

fn channel_id() -> B256 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut bytes = [0u8; 32];
    let nanos = time::OffsetDateTime::now_utc().unix_timestamp_nanos();
    bytes[..16].copy_from_slice(&nanos.to_be_bytes());
    bytes[16..20].copy_from_slice(&std::process::id().to_be_bytes());
    bytes[20..28].copy_from_slice(&COUNTER.fetch_add(1, Ordering::Relaxed).to_be_bytes());
    B256::from(bytes)
}

/// Opens a channel with a deposit no benchmark run exhausts.
async fn open(store: &impl ChannelStore) -> B256 {
    let id = channel_id();
    let new = NewChannel {
        descriptor: ChannelIdentity {
            channel_id: id,
            protocol: SessionProtocol::V2,
            chain_id: 42431,
            escrow: Address::from_str("0x4d50500000000000000000000000000000000000").unwrap(),
            payer: Address::repeat_byte(1),
            payee: Address::repeat_byte(2),
            token: Address::from_str("0x20c0000000000000000000000000000000000000").unwrap(),
            operator: Address::ZERO,
            authorized_signer: Address::repeat_byte(1),
            salt: B256::ZERO,
            expiring_nonce_hash: B256::ZERO,
        },
        deposit: u128::from(u64::MAX),
        settled: 0,
        retention: Duration::from_secs(3600),
    };
    assert!(matches!(
        store.open(&new).await.unwrap(),
        OpenOutcome::Opened(_)
    ));
    id
}

fn signature() -> Bytes {
    Bytes::from(vec![0x1b; 65])
}

/// One paid request: a voucher raising the cumulative amount by one unit, then its charge.
async fn voucher_and_charge(store: &impl ChannelStore, id: B256, n: u128, sig: &Bytes) {
    let voucher = Voucher {
        cumulative_amount: n * PRICE,
        signature: sig.clone(),
    };
    let accepted = store.accept_voucher(id, &voucher, 0).await.unwrap();
    assert!(
        matches!(accepted, VoucherOutcome::Accepted(_)),
        "{accepted:?}"
    );
    let charged = store.charge(id, Charge::one(PRICE)).await.unwrap();
    assert!(matches!(charged, ChargeOutcome::Charged(_)), "{charged:?}");
    black_box(charged);
}

fn bench_store<S: ChannelStore>(c: &mut Criterion, rt: &Runtime, name: &str, store: &S) {
    let sig = signature();
    let id = rt.block_on(open(store));
    let mut n = 0u128;
    c.bench_function(&format!("{name}: accept voucher + charge"), |b| {
        b.iter(|| {
            n += 1;
            rt.block_on(voucher_and_charge(store, id, n, &sig));
        })
    });
    // A charge alone, against a voucher that covers every iteration.
    let id = rt.block_on(open(store));
    let big = Voucher {
        cumulative_amount: u128::from(u64::MAX),
        signature: sig.clone(),
    };
    rt.block_on(store.accept_voucher(id, &big, 0)).unwrap();
    c.bench_function(&format!("{name}: charge"), |b| {
        b.iter(|| {
            let charged = rt.block_on(store.charge(id, Charge::one(PRICE))).unwrap();
            assert!(matches!(charged, ChargeOutcome::Charged(_)));
        })
    });
}

fn channel_stores(c: &mut Criterion) {
    let rt = Runtime::new().unwrap();

    bench_store(c, &rt, "memory", &MemoryChannelStore::new());

    let dir = tempfile::tempdir().unwrap();
    let sqlite = rt
        .block_on(SqliteStore::open(dir.path().join("bench.db")))
        .unwrap();
    bench_store(c, &rt, "sqlite (WAL, synchronous=FULL)", &sqlite);

    match std::env::var("MPP_TEST_DATABASE_URL") {
        Ok(url) if !url.is_empty() => {
            let pg = rt.block_on(PgStore::connect(&url)).unwrap();
            bench_store(c, &rt, "postgres", &pg);
        }
        _ => eprintln!("MPP_TEST_DATABASE_URL is not set: skipping the Postgres benchmarks"),
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = channel_stores
}
criterion_main!(benches);
