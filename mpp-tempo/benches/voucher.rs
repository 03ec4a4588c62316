//! Criterion benchmarks of the session voucher hot path: the EIP-712 digest, ECDSA recovery,
//! and the whole server-side check (`check_voucher`: cheap checks, digest, low-s, recover,
//! compare), plus the refusal of a lower voucher that never reaches the signature.
//!
//! `cargo bench -p mpp-tempo --bench voucher`
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;

use alloy::primitives::{Address, B256};
use alloy::signers::SignerSync;
use alloy::signers::local::PrivateKeySigner;
use criterion::{Criterion, criterion_group, criterion_main};
use mpp_tempo::session::{
    SessionPayload, SessionProtocol, TIP20_CHANNEL_RESERVE, VoucherDomain, VoucherSignature,
    VoucherState, check_voucher,
};

const KEY: &str = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";

fn voucher(c: &mut Criterion) {
    let key: PrivateKeySigner = KEY.parse().unwrap();
    let domain = VoucherDomain::new(SessionProtocol::V2, 42431, TIP20_CHANNEL_RESERVE);
    let channel_id = B256::repeat_byte(0xc1);
    let amount = 1_000_000u128;
    let digest = domain.voucher_digest(channel_id, amount).unwrap();
    let signature = VoucherSignature::from_signature(&key.sign_hash_sync(&digest).unwrap());
    let state = VoucherState {
        signer: key.address(),
        deposit: 10_000_000,
        settled: 0,
        highest: 999_000,
        highest_signature: None,
        min_voucher_delta: 0,
        finalized: false,
        close_requested: false,
    };

    c.bench_function("voucher domain (separator)", |b| {
        b.iter(|| {
            VoucherDomain::new(
                SessionProtocol::V2,
                black_box(42431),
                black_box(TIP20_CHANNEL_RESERVE),
            )
        })
    });
    c.bench_function("voucher digest (EIP-712)", |b| {
        b.iter(|| domain.voucher_digest(black_box(channel_id), black_box(amount)))
    });
    c.bench_function("voucher recover (low-s check + ecrecover)", |b| {
        b.iter(|| black_box(&signature).recover(SessionProtocol::V2, black_box(&digest)))
    });
    c.bench_function("voucher verify (digest + recover + compare)", |b| {
        b.iter(|| {
            domain.verify_voucher(
                black_box(channel_id),
                black_box(amount),
                black_box(&signature),
                black_box(state.signer),
            )
        })
    });
    c.bench_function("check_voucher (accepted)", |b| {
        b.iter(|| {
            check_voucher(
                &domain,
                black_box(channel_id),
                black_box(amount),
                black_box(&signature),
                black_box(&state),
            )
        })
    });
    c.bench_function("check_voucher (lower: refused before ECDSA)", |b| {
        b.iter(|| {
            check_voucher(
                &domain,
                black_box(channel_id),
                black_box(1),
                black_box(&signature),
                black_box(&state),
            )
        })
    });
    let payload = serde_json::json!({
        "action": "voucher",
        "channelId": channel_id,
        "descriptor": {
            "payer": key.address(), "payee": Address::repeat_byte(2), "operator": Address::ZERO,
            "token": Address::repeat_byte(3), "salt": B256::repeat_byte(4),
            "authorizedSigner": Address::ZERO, "expiringNonceHash": B256::repeat_byte(5)
        },
        "cumulativeAmount": amount.to_string(),
        "signature": signature.to_string(),
    });
    c.bench_function("voucher payload parse (JSON value → typed)", |b| {
        b.iter(|| SessionPayload::from_json(black_box(&payload), SessionProtocol::V2))
    });
}

criterion_group!(benches, voucher);
criterion_main!(benches);
