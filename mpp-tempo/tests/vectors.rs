//! Protocol vectors (copied from the shared protocol notes into `tests/vectors/`): attribution
//! memos, the v3 proof, ABI constants, and the fee-payer policy cases, all offline.

// Test helpers outside #[test] fns panic on broken fixtures by design.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::num::NonZeroU64;
use std::time::Duration;

use alloy::consensus::transaction::SignerRecoverable;
use alloy::eips::eip2718::{Decodable2718, Encodable2718};
use alloy::primitives::{Address, B256, Bytes, TxKind, U256, address, keccak256};
use alloy::signers::SignerSync;
use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::{SolCall, SolEvent};
use mpp_tempo::charge::{
    ChargeError, FeePayerEnvelope, Sponsor, SponsorPolicy, TempoChargeRequest, attribution_memo,
    check_pull_calls, decode_pull, is_bound_to_challenge, proof_digest, recover_proof_signer,
};
use mpp_tempo::{ChallengeView, PATH_USD};
use serde_json::{Value, json};
use tempo_alloy::contracts::precompiles::ITIP20;
use tempo_primitives::transaction::{
    AASigned, Call, PrimitiveSignature, TEMPO_EXPIRING_NONCE_KEY, TempoSignature, TempoTransaction,
};
use time::OffsetDateTime;

fn vector(name: &str) -> Value {
    let path = format!("{}/tests/vectors/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn attribution_memo_vectors() {
    let v = vector("attribution-memo.json");
    for case in v["cases"].as_array().unwrap() {
        let memo = attribution_memo(
            case["serverId"].as_str().unwrap(),
            case["challengeId"].as_str().unwrap(),
            case["clientId"].as_str(),
        );
        assert_eq!(memo.to_string(), case["memo"].as_str().unwrap(), "{case}");
        assert!(is_bound_to_challenge(
            &memo,
            case["serverId"].as_str().unwrap(),
            case["challengeId"].as_str().unwrap()
        ));
    }
    let fixtures = &v["receiptFixtures"];
    let accept: B256 = fixtures["accept"]["topics"][3]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(is_bound_to_challenge(
        &accept,
        "api.example.com",
        "challenge-123"
    ));
    for reject in [
        "reject_non_mpp_memo",
        "reject_other_challenge",
        "reject_other_realm",
    ] {
        let memo: B256 = fixtures[reject]["memoTopic"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(
            !is_bound_to_challenge(&memo, "api.example.com", "challenge-123"),
            "{reject}"
        );
    }
    let wire = vector("charge-wire-example.json");
    let id = wire["challenge"]["id"].as_str().unwrap();
    assert_eq!(
        attribution_memo("api.example.com", id, None).to_string(),
        wire["expectedAttributionMemo"].as_str().unwrap()
    );
}

#[test]
fn wire_example_request_parses() {
    let wire = vector("charge-wire-example.json");
    let req = TempoChargeRequest::from_json(&wire["challenge"]["request"]).unwrap();
    assert_eq!(req.amount, 1_000_000);
    assert_eq!(req.method_details.chain_id, 42431);
}

#[test]
fn proof_v3_vector() {
    let v = &vector("proof-eip712.json")["current_v3"];
    let account: Address = v["account"].as_str().unwrap().parse().unwrap();
    let chain_id = v["chainId"].as_u64().unwrap();
    let digest = proof_digest(
        chain_id,
        account,
        v["challengeId"].as_str().unwrap(),
        v["realm"].as_str().unwrap(),
    );
    assert_eq!(digest.to_string(), v["digest"].as_str().unwrap());
    let signature: Bytes = v["signature"].as_str().unwrap().parse().unwrap();
    assert_eq!(recover_proof_signer(&digest, &signature), Some(account));
    // Our signer produces the same (RFC 6979) signature.
    let signer: PrivateKeySigner = v["privateKey"].as_str().unwrap().parse().unwrap();
    assert_eq!(signer.address(), account);
    let ours = signer.sign_hash_sync(&digest).unwrap();
    assert_eq!(Bytes::from(ours.as_bytes()), signature);
}

#[test]
fn abi_constants() {
    let v = vector("tempo-abi-constants.json");
    let sel = |s: [u8; 4]| format!("0x{}", alloy::hex::encode(s));
    let tip20 = &v["tip20Selectors"];
    assert_eq!(
        sel(ITIP20::transferCall::SELECTOR),
        tip20["transfer(address,uint256)"]
    );
    assert_eq!(
        sel(ITIP20::transferWithMemoCall::SELECTOR),
        tip20["transferWithMemo(address,uint256,bytes32)"]
    );
    assert_eq!(
        sel(ITIP20::approveCall::SELECTOR),
        tip20["approve(address,uint256)"]
    );
    let topics = &v["eventTopics"]["tip20"];
    assert_eq!(
        ITIP20::Transfer::SIGNATURE_HASH.to_string(),
        topics["Transfer(address,address,uint256)"]
    );
    assert_eq!(
        ITIP20::TransferWithMemo::SIGNATURE_HASH.to_string(),
        topics["TransferWithMemo(address,address,uint256,bytes32)"]
    );
    assert_eq!(
        keccak256("Proof(address account,string challengeId,string realm)").to_string(),
        v["typehashes"]["Proof(address account,string challengeId,string realm)"]
    );
}

struct PolicyCase {
    tx: TempoTransaction,
    extra_call: bool,
}

fn payer() -> PrivateKeySigner {
    format!("0x{}", "11".repeat(32)).parse().unwrap()
}

fn sponsor() -> Sponsor {
    let key: PrivateKeySigner = format!("0x{}", "22".repeat(32)).parse().unwrap();
    Sponsor::new(key, SponsorPolicy::default())
}

fn base_case(v: &Value, now: OffsetDateTime) -> PolicyCase {
    let b = &v["baseTransaction"];
    let call = Call {
        to: TxKind::Call(PATH_USD),
        value: U256::ZERO,
        input: b["callOk"]["data"].as_str().unwrap().parse().unwrap(),
    };
    PolicyCase {
        tx: TempoTransaction {
            chain_id: 42431,
            max_priority_fee_per_gas: 1,
            max_fee_per_gas: 1,
            gas_limit: 1_000_000,
            calls: vec![call],
            nonce_key: TEMPO_EXPIRING_NONCE_KEY,
            nonce: 0,
            valid_before: NonZeroU64::new((now.unix_timestamp() + 60) as u64),
            ..Default::default()
        },
        extra_call: false,
    }
}

/// Signs the case as the payer in fee-payer form and runs every offline check a server runs.
fn run_case(case: PolicyCase, now: OffsetDateTime) -> Result<AASigned, ChargeError> {
    let mut tx = case.tx;
    if case.extra_call {
        let dup = tx.calls[0].clone();
        tx.calls.push(dup);
    }
    let signer = payer();
    let mut signing = tx.clone();
    signing.access_list = Default::default();
    signing.fee_payer_signature = Some(tempo_primitives::transaction::FEE_PAYER_SIGNATURE_MARKER);
    let sig = signer.sign_hash_sync(&signing.signature_hash()).unwrap();
    let envelope = FeePayerEnvelope::new(
        tx,
        signer.address(),
        TempoSignature::Primitive(PrimitiveSignature::Secp256k1(sig)),
    );
    let raw = envelope.encode();
    assert_eq!(raw[0], 0x78);
    assert_eq!(FeePayerEnvelope::decode(&raw).unwrap(), envelope);
    let decoded = decode_pull(&raw)?;
    assert_eq!(decoded.sender, signer.address());
    let req = TempoChargeRequest::from_json(&json!({
        "amount": "1000000",
        "currency": "0x20c0000000000000000000000000000000000000",
        "recipient": "0x742d35Cc6634c0532925a3b844bC9e7595F8fE00",
        "methodDetails": {"feePayer": true, "chainId": 42431}
    }))
    .unwrap();
    let expires = now + Duration::from_secs(300);
    let challenge = ChallengeView::new("challenge-123", "api.example.com", expires);
    let expected = req.expected_transfers().unwrap();
    check_pull_calls(&decoded, &req, &expected, challenge)?;
    let sponsor = sponsor();
    let fee_token = sponsor.check(&envelope, now, expires)?;
    sponsor.co_sign(&envelope, fee_token)
}

#[test]
fn fee_payer_policy_vectors() {
    let v = vector("fee-payer-policy.json");
    let now = OffsetDateTime::now_utc();
    for case in v["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let mut c = base_case(&v, now);
        match name {
            "valid_envelope_cosigned" => {}
            "plain_transfer_without_memo" => {
                c.tx.calls[0].input = ITIP20::transferCall {
                    to: address!("742d35Cc6634c0532925a3b844bC9e7595F8fE00"),
                    amount: U256::from(1_000_000u64),
                }
                .abi_encode()
                .into();
            }
            "memo_for_other_challenge" => {
                c.tx.calls[0].input = ITIP20::transferWithMemoCall {
                    to: address!("742d35Cc6634c0532925a3b844bC9e7595F8fE00"),
                    amount: U256::from(1_000_000u64),
                    memo: attribution_memo("api.example.com", "other-challenge", None),
                }
                .abi_encode()
                .into();
            }
            "extra_call" => c.extra_call = true,
            "gas_above_policy" => c.tx.gas_limit = 2_000_001,
            "client_chose_fee_token" => {
                c.tx.fee_token = Some(address!("9999999999999999999999999999999999999999"))
            }
            "non_expiring_nonce" => c.tx.nonce_key = U256::ZERO,
            "validity_window_too_long" => {
                c.tx.valid_before = NonZeroU64::new((now.unix_timestamp() + 1800) as u64)
            }
            "access_list_present" => {
                c.tx.access_list =
                    alloy::eips::eip2930::AccessList(vec![alloy::eips::eip2930::AccessListItem {
                        address: PATH_USD,
                        storage_keys: vec![B256::ZERO],
                    }])
            }
            other => panic!("unknown case {other}"),
        }
        let result = run_case(c, now);
        if name == "valid_envelope_cosigned" {
            let signed = result.unwrap();
            let raw = signed.encoded_2718();
            assert_eq!(raw[0], 0x76);
            let back = AASigned::decode_2718(&mut raw.as_slice()).unwrap();
            assert_eq!(back.tx().fee_token, Some(PATH_USD));
            assert!(back.tx().access_list.is_empty());
            assert_eq!(back.tx().calls.len(), 1);
            let sender = back.recover_signer().unwrap();
            assert_eq!(sender, payer().address());
            assert_eq!(
                back.tx().recover_fee_payer(sender).unwrap(),
                sponsor().address()
            );
        } else {
            assert!(
                matches!(result, Err(ChargeError::VerificationFailed(_))),
                "{name}: {result:?}"
            );
        }
    }
}

#[test]
fn rejects_garbage_transactions() {
    for raw in [
        vec![],
        vec![0x02, 0xc0],
        vec![0x76],
        vec![0x76, 0xc0],
        vec![0x78, 0xc1, 0x80],
        vec![0x78; 40],
    ] {
        assert!(
            matches!(decode_pull(&raw), Err(ChargeError::VerificationFailed(_))),
            "{raw:?}"
        );
    }
}
