//! Criterion benchmarks of the hot protocol paths: issuing a challenge (JCS + HMAC + header
//! formatting) and parsing + verifying a credential.
#![allow(missing_docs, clippy::unwrap_used)]

use criterion::{Criterion, criterion_group, criterion_main};
use mpp_core::{Challenge, ChallengeSecret, Credential, EncodedJson};
use serde_json::json;
use std::hint::black_box;

fn request() -> serde_json::Value {
    json!({
        "amount": "10000",
        "currency": "0x20c0000000000000000000000000000000000000",
        "recipient": "0x742d35Cc6634C0532925a3b844Bc9e7595f8fE00",
        "methodDetails": {"chainId": 42431, "feePayer": true}
    })
}

fn issue(c: &mut Criterion) {
    let secret = ChallengeSecret::new("bench-secret-0123456789abcdef0123456789").unwrap();
    let encoded = EncodedJson::from_value(request()).unwrap();
    c.bench_function("issue challenge (JCS + HMAC + format)", |b| {
        b.iter(|| {
            let challenge = Challenge::builder("api.example.com", "tempo", "charge", request())
                .unwrap()
                .expires("2025-01-06T12:05:00.000Z")
                .sign(&secret);
            black_box(challenge.to_header_value().unwrap())
        })
    });
    c.bench_function("issue challenge (cached request: HMAC + format)", |b| {
        b.iter(|| {
            let challenge =
                Challenge::builder_encoded("api.example.com", "tempo", "charge", encoded.clone())
                    .expires("2025-01-06T12:05:00.000Z")
                    .sign(&secret);
            black_box(challenge.to_header_value().unwrap())
        })
    });
}

fn verify(c: &mut Criterion) {
    let secret = ChallengeSecret::new("bench-secret-0123456789abcdef0123456789").unwrap();
    let challenge = Challenge::builder("api.example.com", "tempo", "charge", request())
        .unwrap()
        .expires("2025-01-06T12:05:00.000Z")
        .sign(&secret);
    let authorization = Credential::new(
        challenge.clone(),
        json!({"type": "hash", "hash": "0x1a2b3c4d5e6f7890abcdef1234567890abcdef1234567890abcdef1234567890"}),
    )
    .with_source("did:pkh:eip155:42431:0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266")
    .to_authorization();
    let now = time::OffsetDateTime::UNIX_EPOCH;
    c.bench_function("parse + verify credential", |b| {
        b.iter(|| {
            let credential = Credential::from_authorization(black_box(&authorization)).unwrap();
            let echo = &credential.challenge;
            black_box(secret.verify(
                &echo.id,
                &echo.binding_slots_for_realm("api.example.com"),
                now,
            ))
        })
    });
    let header = challenge.to_header_value().unwrap();
    c.bench_function("parse WWW-Authenticate (client side)", |b| {
        b.iter(|| black_box(Challenge::parse_all(black_box(&header)).unwrap()))
    });
}

criterion_group!(benches, issue, verify);
criterion_main!(benches);
