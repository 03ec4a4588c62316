//! The offline half of the Tempo `session` intent against the protocol vectors (copied into
//! `tests/vectors/`), the official Rust SDK (`mpp` 0.18.2) and, when it is installed, the
//! official TypeScript SDK (`mppx` 0.11.0, through `tests/interop/mppx-session.mjs`).

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;

use alloy::primitives::{Address, B256, Signature, U256, address, aliases::U96, keccak256};
use alloy::signers::SignerSync;
use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::{SolCall, SolEvent, SolStruct};
use mpp_core::ProblemType;
use mpp_tempo::PATH_USD;
use mpp_tempo::session::abi::{v1::ITempoStreamChannel, v2::ITIP20ChannelReserve};
use mpp_tempo::session::{
    ChannelDescriptor, ClosePayload, OpenPayload, PayloadError, SessionError, SessionPayload,
    SessionProtocol, SessionReceipt, TIP20_CHANNEL_RESERVE, TempoSessionRequest, TopUpPayload,
    V1_ESCROW_MODERATO, V1Channel, VoucherDomain, VoucherOutcome, VoucherPayload, VoucherSignature,
    VoucherState, check_descriptor, check_open_amounts, check_source, check_voucher, close_capture,
};
use serde_json::{Value, json};

/// The well-known test key the vectors are signed with (anvil account 0).
const KEY: &str = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";
const SIGNER: Address = address!("f39Fd6e51aad88F6F4ce6aB8827279cffFb92266");

fn vector(name: &str) -> Value {
    let path = format!("{}/tests/vectors/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn key() -> PrivateKeySigner {
    KEY.parse().unwrap()
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or_else(|| panic!("not a string: {v}"))
}

fn protocol(v: &Value) -> SessionProtocol {
    match s(v) {
        "v1" => SessionProtocol::V1,
        "v2" => SessionProtocol::V2,
        other => panic!("protocol {other}"),
    }
}

/// The v2 channel of `channel-id.json` `v2_cross_sdk_golden`.
fn golden_descriptor() -> ChannelDescriptor {
    serde_json::from_value(vector("channel-id.json")["cases"][0]["descriptor"].clone()).unwrap()
}

fn moderato_v2() -> VoucherDomain {
    VoucherDomain::new(SessionProtocol::V2, 42431, TIP20_CHANNEL_RESERVE)
}

// ---------------------------------------------------------------------------------------------
// Vectors

/// channel-id.json: every case (v2 descriptors and the v1 parameters) gives its channel id.
#[test]
fn channel_id_vectors() {
    let v = vector("channel-id.json");
    let cases = v["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 3);
    for case in cases {
        let escrow: Address = s(&case["escrow"]).parse().unwrap();
        let chain_id = case["chainId"].as_u64().unwrap();
        let expected: B256 = s(&case["channelId"]).parse().unwrap();
        let id = match s(&case["version"]) {
            "v2" => {
                let d: ChannelDescriptor =
                    serde_json::from_value(case["descriptor"].clone()).unwrap();
                d.channel_id(escrow, chain_id)
            }
            "v1" => {
                let p = &case["params"];
                V1Channel {
                    payer: s(&p["payer"]).parse().unwrap(),
                    payee: s(&p["payee"]).parse().unwrap(),
                    token: s(&p["token"]).parse().unwrap(),
                    salt: s(&p["salt"]).parse().unwrap(),
                    authorized_signer: s(&p["authorizedSigner"]).parse().unwrap(),
                }
                .channel_id(escrow, chain_id)
            }
            other => panic!("version {other}"),
        };
        assert_eq!(id, expected, "{}", case["name"]);
    }
}

/// voucher-eip712.json: domain separator, struct hash and digest of every case; the 65-byte
/// signature recovers to the key's address; the high-s variant is refused; the 64-byte
/// compact form is refused for v2 and accepted (as its 65-byte form) for v1.
#[test]
fn voucher_eip712_vectors() {
    let v = vector("voucher-eip712.json");
    let cases = v["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 4);
    for case in cases {
        let name = format!("{} {}", case["protocol"], case["message"]);
        let protocol = protocol(&case["protocol"]);
        let d = &case["domain"];
        let expected_name = match protocol {
            SessionProtocol::V1 => "Tempo Stream Channel",
            SessionProtocol::V2 => "TIP20 Channel Reserve",
        };
        assert_eq!(s(&d["name"]), expected_name);
        assert_eq!(s(&d["version"]), "1");
        let domain = VoucherDomain::new(
            protocol,
            d["chainId"].as_u64().unwrap(),
            s(&d["verifyingContract"]).parse().unwrap(),
        );
        let channel_id: B256 = s(&case["message"]["channelId"]).parse().unwrap();
        let amount: u128 = s(&case["message"]["cumulativeAmount"]).parse().unwrap();
        let b = |field: &str| s(&case[field]).parse::<B256>().unwrap();
        assert_eq!(domain.separator(), b("domainSeparator"), "{name}");
        assert_eq!(domain.eip712_domain().separator(), b("domainSeparator"));
        assert_eq!(
            domain.voucher_struct_hash(channel_id, amount),
            b("structHash"),
            "{name}"
        );
        let digest = domain.voucher_digest(channel_id, amount).unwrap();
        assert_eq!(digest, b("digest"), "{name}");

        let signer: Address = s(&case["signerAddress"]).parse().unwrap();
        let sig = VoucherSignature::from_hex(s(&case["signature65"])).unwrap();
        assert_eq!(sig.recover(protocol, &digest).unwrap(), signer, "{name}");
        domain
            .verify_voucher(channel_id, amount, &sig, signer)
            .unwrap();
        // RFC 6979: our signer produces the same bytes.
        let ours = VoucherSignature::from_signature(&key().sign_hash_sync(&digest).unwrap());
        assert_eq!(ours, sig, "{name}");

        let high_s =
            VoucherSignature::from_hex(s(&case["highSMalleatedVariant_mustReject"])).unwrap();
        let err = domain
            .verify_voucher(channel_id, amount, &high_s, signer)
            .unwrap_err();
        assert!(
            matches!(&err, SessionError::InvalidSignature(m) if m.contains("high-s")),
            "{name}: {err}"
        );

        let compact = VoucherSignature::from_hex(s(&case["eip2098Compact64"])).unwrap();
        assert!(matches!(compact, VoucherSignature::Compact(_)));
        match protocol {
            SessionProtocol::V2 => assert!(matches!(
                domain.verify_voucher(channel_id, amount, &compact, signer),
                Err(SessionError::InvalidSignature(_))
            )),
            SessionProtocol::V1 => {
                domain
                    .verify_voucher(channel_id, amount, &compact, signer)
                    .unwrap();
                assert_eq!(compact.canonical(), sig);
            }
        }
    }
}

/// tempo-abi-constants.json: the selectors of both escrows, their event topics, the typehashes
/// and the v1/v2 domain separators.
#[test]
fn abi_constants_vectors() {
    let v = vector("tempo-abi-constants.json");
    let selector = |group: &str, sig: &str| -> [u8; 4] {
        let hex = s(&v[group][sig]);
        alloy::hex::decode(hex).unwrap().try_into().unwrap()
    };
    let v1 = "escrowV1Selectors";
    use ITempoStreamChannel as E1;
    for (sig, ours) in [
        (
            "open(address,address,uint128,bytes32,address)",
            E1::openCall::SELECTOR,
        ),
        ("settle(bytes32,uint128,bytes)", E1::settleCall::SELECTOR),
        ("topUp(bytes32,uint256)", E1::topUpCall::SELECTOR),
        ("close(bytes32,uint128,bytes)", E1::closeCall::SELECTOR),
        ("requestClose(bytes32)", E1::requestCloseCall::SELECTOR),
        ("withdraw(bytes32)", E1::withdrawCall::SELECTOR),
        ("getChannel(bytes32)", E1::getChannelCall::SELECTOR),
        (
            "getChannelsBatch(bytes32[])",
            E1::getChannelsBatchCall::SELECTOR,
        ),
        ("channels(bytes32)", E1::channelsCall::SELECTOR),
        (
            "computeChannelId(address,address,address,bytes32,address)",
            E1::computeChannelIdCall::SELECTOR,
        ),
        (
            "getVoucherDigest(bytes32,uint128)",
            E1::getVoucherDigestCall::SELECTOR,
        ),
        ("domainSeparator()", E1::domainSeparatorCall::SELECTOR),
        ("CLOSE_GRACE_PERIOD()", E1::CLOSE_GRACE_PERIODCall::SELECTOR),
        ("VOUCHER_TYPEHASH()", E1::VOUCHER_TYPEHASHCall::SELECTOR),
    ] {
        assert_eq!(ours, selector(v1, sig), "{sig}");
    }
    let v2 = "precompileV2Selectors";
    let d = "(address,address,address,address,bytes32,address,bytes32)";
    use ITIP20ChannelReserve as E2;
    for (sig, ours) in [
        (
            "open(address,address,address,uint96,bytes32,address)".to_owned(),
            E2::openCall::SELECTOR,
        ),
        (
            format!("settle({d},uint96,bytes)"),
            E2::settleCall::SELECTOR,
        ),
        (format!("topUp({d},uint96)"), E2::topUpCall::SELECTOR),
        (
            format!("close({d},uint96,uint96,bytes)"),
            E2::closeCall::SELECTOR,
        ),
        (format!("requestClose({d})"), E2::requestCloseCall::SELECTOR),
        (format!("withdraw({d})"), E2::withdrawCall::SELECTOR),
        (format!("getChannel({d})"), E2::getChannelCall::SELECTOR),
        (
            "getChannelState(bytes32)".to_owned(),
            E2::getChannelStateCall::SELECTOR,
        ),
        (
            "getChannelStatesBatch(bytes32[])".to_owned(),
            E2::getChannelStatesBatchCall::SELECTOR,
        ),
        (
            "computeChannelId(address,address,address,address,bytes32,address,bytes32)".to_owned(),
            E2::computeChannelIdCall::SELECTOR,
        ),
        (
            "getVoucherDigest(bytes32,uint96)".to_owned(),
            E2::getVoucherDigestCall::SELECTOR,
        ),
        (
            "domainSeparator()".to_owned(),
            E2::domainSeparatorCall::SELECTOR,
        ),
        (
            "CLOSE_GRACE_PERIOD()".to_owned(),
            E2::CLOSE_GRACE_PERIODCall::SELECTOR,
        ),
        (
            "VOUCHER_TYPEHASH()".to_owned(),
            E2::VOUCHER_TYPEHASHCall::SELECTOR,
        ),
    ] {
        assert_eq!(ours, selector(v2, &sig), "{sig}");
    }

    let topic =
        |group: &str, sig: &str| -> B256 { s(&v["eventTopics"][group][sig]).parse().unwrap() };
    let g1 = "escrowV1_deployed";
    for (sig, ours) in [
        (
            "ChannelOpened(bytes32,address,address,address,address,bytes32,uint256)",
            E1::ChannelOpened::SIGNATURE_HASH,
        ),
        (
            "Settled(bytes32,address,address,uint256,uint256,uint256)",
            E1::Settled::SIGNATURE_HASH,
        ),
        (
            "TopUp(bytes32,address,address,uint256,uint256)",
            E1::TopUp::SIGNATURE_HASH,
        ),
        (
            "CloseRequested(bytes32,address,address,uint256)",
            E1::CloseRequested::SIGNATURE_HASH,
        ),
        (
            "CloseRequestCancelled(bytes32,address,address)",
            E1::CloseRequestCancelled::SIGNATURE_HASH,
        ),
        (
            "ChannelClosed(bytes32,address,address,uint256,uint256)",
            E1::ChannelClosed::SIGNATURE_HASH,
        ),
        (
            "ChannelExpired(bytes32,address,address)",
            E1::ChannelExpired::SIGNATURE_HASH,
        ),
    ] {
        assert_eq!(ours, topic(g1, sig), "{sig}");
    }
    let g2 = "precompileV2";
    for (sig, ours) in [
        (
            "ChannelOpened(bytes32,address,address,address,address,address,bytes32,bytes32,uint96)",
            E2::ChannelOpened::SIGNATURE_HASH,
        ),
        (
            "Settled(bytes32,address,address,uint96,uint96,uint96)",
            E2::Settled::SIGNATURE_HASH,
        ),
        (
            "TopUp(bytes32,address,address,uint96,uint96)",
            E2::TopUp::SIGNATURE_HASH,
        ),
        (
            "CloseRequested(bytes32,address,address,uint256)",
            E2::CloseRequested::SIGNATURE_HASH,
        ),
        (
            "CloseRequestCancelled(bytes32,address,address)",
            E2::CloseRequestCancelled::SIGNATURE_HASH,
        ),
        (
            "ChannelClosed(bytes32,address,address,uint96,uint96)",
            E2::ChannelClosed::SIGNATURE_HASH,
        ),
    ] {
        assert_eq!(ours, topic(g2, sig), "{sig}");
    }

    let typehash = |sig: &str| -> B256 { s(&v["typehashes"][sig]).parse().unwrap() };
    use mpp_tempo::session::{EIP712_DOMAIN_TYPEHASH, VOUCHER_TYPEHASH_V1, VOUCHER_TYPEHASH_V2};
    assert_eq!(
        EIP712_DOMAIN_TYPEHASH,
        typehash(
            "EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"
        )
    );
    assert_eq!(
        VOUCHER_TYPEHASH_V1,
        typehash("Voucher(bytes32 channelId,uint128 cumulativeAmount)")
    );
    assert_eq!(
        VOUCHER_TYPEHASH_V2,
        typehash("Voucher(bytes32 channelId,uint96 cumulativeAmount)")
    );

    let mut checked = 0;
    for sep in v["domainSeparators"].as_array().unwrap() {
        let protocol = match s(&sep["name"]) {
            "Tempo Stream Channel" => SessionProtocol::V1,
            "TIP20 Channel Reserve" => SessionProtocol::V2,
            _ => continue, // the zero-amount proof domains (charge)
        };
        let domain = VoucherDomain::new(
            protocol,
            sep["chainId"].as_u64().unwrap(),
            s(&sep["verifyingContract"]).parse().unwrap(),
        );
        assert_eq!(
            domain.separator(),
            s(&sep["domainSeparator"]).parse::<B256>().unwrap(),
            "{}",
            sep["label"]
        );
        checked += 1;
    }
    assert_eq!(checked, 5);
    assert_eq!(
        ITIP20ChannelReserve::ChannelOpened::SIGNATURE_HASH,
        keccak256(
            "ChannelOpened(bytes32,address,address,address,address,address,bytes32,bytes32,uint96)"
        )
    );
}

/// receipts.json `session_receipt_shape`: our receipt serializes to the vector's JSON text,
/// header and SSE frame byte for byte, and reads back; the core (non-session) receipts are
/// refused as session receipts.
#[test]
fn receipt_vectors() {
    let v = vector("receipts.json");
    let case = v["cases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "session_receipt_shape")
        .unwrap();
    let json = &case["json"];
    let receipt = SessionReceipt {
        timestamp: s(&json["timestamp"]).to_owned(),
        challenge_id: s(&json["challengeId"]).to_owned(),
        channel_id: s(&json["channelId"]).parse().unwrap(),
        accepted_cumulative: 250_000,
        spent: 237_500,
        units: Some(95),
        tx_hash: None,
    };
    // The vector's key order is mppx's, and serde_json keeps it when printing a Value parsed
    // with `preserve_order`; compare with the header instead, which is exact.
    assert_eq!(receipt.to_header_value(), s(&case["header"]));
    // The frame itself is written by the SSE layer (axum's `Event`); its data is this JSON.
    assert_eq!(
        format!(
            "event: payment-receipt\ndata: {}\n\n",
            receipt.to_json_string()
        ),
        s(&case["sseEvent"])
    );
    assert_eq!(
        serde_json::from_str::<Value>(&receipt.to_json_string()).unwrap(),
        *json
    );
    assert_eq!(
        SessionReceipt::from_header_value(s(&case["header"])).unwrap(),
        receipt
    );
    assert_eq!(SessionReceipt::from_json(json).unwrap(), receipt);
    // As the gate's receipt: the same fields.
    let core = receipt.to_receipt();
    assert_eq!(core.reference, s(&json["reference"]));
    assert_eq!(
        serde_json::from_str::<Value>(&core.to_json()).unwrap(),
        *json
    );
    for other in v["cases"].as_array().unwrap() {
        if other["name"] != "session_receipt_shape" {
            assert!(SessionReceipt::from_json(&other["json"]).is_err());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Round trips

/// Terms: our v2 and v1 forms round-trip; the forms the SDK servers emit (mppx with feeToken,
/// operator, channelId, snapshot; `mpp` without unitType or sessionProtocol) parse.
#[test]
fn terms_round_trips() {
    let recipient = address!("742d35Cc6634C0532925a3b844Bc9e7595f8fE00");
    let v2 = TempoSessionRequest::v2(42431, 25, "llm_token", PATH_USD, recipient)
        .with_suggested_deposit(10_000_000)
        .with_min_voucher_delta(1000)
        .with_fee_payer(true)
        .with_operator(Address::with_last_byte(9));
    let json = v2.to_json();
    assert_eq!(json["methodDetails"]["feePayer"], true);
    assert_eq!(json["methodDetails"]["sessionProtocol"], "v2");
    assert_eq!(json["unitType"], "llm_token");
    assert_eq!(TempoSessionRequest::from_json(&json).unwrap(), v2);
    assert_eq!(v2.voucher_domain(), moderato_v2());
    assert_eq!(v2.cost(4), Some(100));

    let mppx = json!({
        "amount": "25", "currency": "0x20c0000000000000000000000000000000000000",
        "recipient": "0x742d35cc6634c0532925a3b844bc9e7595f8fe00", "unitType": "token",
        "description": "chat", "suggestedDeposit": "1000000",
        "methodDetails": {
            "escrowContract": "0x4d50500000000000000000000000000000000000", "chainId": 4217,
            "feePayer": true, "feeToken": "0x20c0000000000000000000000000000000000001",
            "operator": "0x0000000000000000000000000000000000000009",
            "channelId": format!("{:#x}", B256::repeat_byte(1)),
            "sessionProtocol": "v2", "sessionSnapshot": {"acceptedCumulative": "1"},
            "machineTokenEnabled": false
        }
    });
    let parsed = TempoSessionRequest::from_json(&mppx).unwrap();
    assert_eq!(parsed.protocol(), SessionProtocol::V2);
    assert_eq!(parsed.operator(), Address::with_last_byte(9));
    assert_eq!(parsed.method_details.channel_id, Some(B256::repeat_byte(1)));
    assert_eq!(
        TempoSessionRequest::from_json(&parsed.to_json()).unwrap(),
        parsed
    );

    let mpp_rs = json!({
        "amount": "1000", "currency": "0x20c0000000000000000000000000000000000000",
        "recipient": "0x742d35Cc6634C0532925a3b844Bc9e7595f8fE00",
        "methodDetails": {
            "escrowContract": "0xe1c4d3dce17bc111181ddf716f75bae49e61a336",
            "chainId": 42431, "minVoucherDelta": "0"
        }
    });
    let parsed = TempoSessionRequest::from_json(&mpp_rs).unwrap();
    assert_eq!(parsed.protocol(), SessionProtocol::V1);
    assert_eq!(parsed.unit_type, None);
    assert_eq!(
        parsed.voucher_domain(),
        VoucherDomain::new(SessionProtocol::V1, 42431, V1_ESCROW_MODERATO)
    );
    let v1 = TempoSessionRequest::v1(
        42431,
        V1_ESCROW_MODERATO,
        1000,
        "request",
        PATH_USD,
        recipient,
    );
    assert!(
        v1.to_json()["methodDetails"]
            .get("sessionProtocol")
            .is_none()
    );
    assert_eq!(TempoSessionRequest::from_json(&v1.to_json()).unwrap(), v1);
    // The same terms through the `mpp` crate's own types.
    let theirs: mpp::protocol::intents::SessionRequest =
        serde_json::from_value(v2.to_json()).unwrap();
    use mpp::protocol::methods::tempo::TempoSessionExt;
    assert!(theirs.is_tip1034_session());
    assert_eq!(theirs.chain_id(), Some(42431));
    assert_eq!(theirs.min_voucher_delta().as_deref(), Some("1000"));
    assert!(theirs.fee_payer());
}

fn sample_payloads(protocol: SessionProtocol) -> Vec<SessionPayload> {
    let d = golden_descriptor();
    let descriptor = (protocol == SessionProtocol::V2).then_some(d);
    let channel_id = d.channel_id(TIP20_CHANNEL_RESERVE, 42431);
    let sig = VoucherSignature::Secp256k1([7; 65]);
    let tx: alloy::primitives::Bytes = vec![0x76, 0xc0].into();
    vec![
        SessionPayload::Open(OpenPayload {
            channel_id,
            transaction: tx.clone(),
            descriptor,
            cumulative_amount: 25,
            signature: sig.clone(),
            authorized_signer: Some(d.authorized_signer),
        }),
        SessionPayload::TopUp(TopUpPayload {
            channel_id,
            transaction: vec![0x78, 0xc0].into(),
            descriptor,
            additional_deposit: 1_000_000,
        }),
        SessionPayload::Voucher(VoucherPayload {
            channel_id,
            descriptor,
            cumulative_amount: u128::from(u64::MAX),
            signature: sig.clone(),
        }),
        SessionPayload::Close(ClosePayload {
            channel_id,
            descriptor,
            cumulative_amount: 0,
            signature: sig.clone(),
            close_signature: (protocol == SessionProtocol::V2)
                .then(|| VoucherSignature::Envelope(vec![1; 130].into())),
        }),
    ]
}

/// Payloads: every action round-trips through JSON for v1 and v2, with the wire field names;
/// the `mpp` crate reads what we write, and we read what it writes.
#[test]
fn payload_round_trips() {
    use mpp::protocol::methods::tempo::SessionCredentialPayload as Theirs;
    for protocol in [SessionProtocol::V1, SessionProtocol::V2] {
        for payload in sample_payloads(protocol) {
            let json = payload.to_json();
            assert_eq!(
                SessionPayload::from_json(&json, protocol).unwrap(),
                payload,
                "{json}"
            );
            let theirs: Theirs = serde_json::from_value(json.clone())
                .unwrap_or_else(|e| panic!("mpp cannot read {json}: {e}"));
            let back = serde_json::to_value(&theirs).unwrap();
            assert_eq!(SessionPayload::from_json(&back, protocol).unwrap(), payload);
        }
    }
    let open = sample_payloads(SessionProtocol::V2).remove(0).to_json();
    let keys: Vec<_> = open.as_object().unwrap().keys().cloned().collect();
    for key in [
        "action",
        "type",
        "channelId",
        "transaction",
        "signature",
        "descriptor",
        "cumulativeAmount",
        "authorizedSigner",
    ] {
        assert!(keys.iter().any(|k| k == key), "{key}");
    }
    assert_eq!(open["type"], "transaction");
    assert_eq!(open["cumulativeAmount"], "25");
    // The descriptor as mppx writes it (keys alphabetical, mixed-case addresses) parses.
    let mut mppx = open.clone();
    mppx["descriptor"] = json!({
        "authorizedSigner": "0xFE9d3D9cBb5f6FBe495b03f7Ec90d4Adc22126f5",
        "expiringNonceHash": "0x4e40183cda8c676032af4f7b038178505d877ae1c36b374239fe20ac3485c3ab",
        "operator": "0x0000000000000000000000000000000000000000",
        "payee": "0xda2390fEE8d9744b39A8A855675649e95617aCd8",
        "payer": "0x3d6885f89100445ca9869d1b0a49c97cfdbafeee",
        "salt": "0xfb05173ba9285aef8a91f275930f68ad3565a491edb810c07baa60b643fdd378",
        "token": "0x20C0000000000000000000000000000000000000"
    });
    mppx["refundSignature"] = json!("0x00");
    mppx["settlementRoute"] = json!({"adapter": "0x"});
    assert_eq!(
        SessionPayload::from_json(&mppx, SessionProtocol::V2)
            .unwrap()
            .descriptor(),
        Some(&golden_descriptor())
    );
}

/// Payload refusals, each with its own error: format problems never reach signature work.
#[test]
fn payload_refusals() {
    let v2 = SessionProtocol::V2;
    let voucher = sample_payloads(v2).remove(2).to_json();
    let with = |key: &str, value: Value| {
        let mut v = voucher.clone();
        v[key] = value;
        SessionPayload::from_json(&v, v2)
    };
    assert_eq!(
        SessionPayload::from_json(&json!("voucher"), v2),
        Err(PayloadError::NotAnObject)
    );
    assert_eq!(
        with("action", json!("settle")),
        Err(PayloadError::UnknownAction("settle".into()))
    );
    assert_eq!(with("action", json!(1)), Err(PayloadError::MissingAction));
    assert_eq!(
        with("channelId", json!("0x1234")),
        Err(PayloadError::Invalid {
            field: "channelId",
            expected: "0x + 64 hex digits"
        })
    );
    assert_eq!(
        with("cumulativeAmount", Value::Null),
        Err(PayloadError::Missing("cumulativeAmount"))
    );
    for bad in [json!("1.0"), json!("-1"), json!("0x10"), json!(5)] {
        assert!(matches!(
            with("cumulativeAmount", bad),
            Err(PayloadError::Invalid {
                field: "cumulativeAmount",
                ..
            })
        ));
    }
    // uint96 bounds v2, uint128 bounds v1.
    let over = json!("79228162514264337593543950336");
    assert_eq!(
        with("cumulativeAmount", over.clone()),
        Err(PayloadError::OutOfRange("cumulativeAmount"))
    );
    let mut v1 = voucher.clone();
    v1["cumulativeAmount"] = over;
    v1.as_object_mut().unwrap().remove("descriptor");
    assert!(SessionPayload::from_json(&v1, SessionProtocol::V1).is_ok());
    assert_eq!(
        SessionPayload::from_json(&v1, v2),
        Err(PayloadError::OutOfRange("cumulativeAmount"))
    );
    v1["cumulativeAmount"] = json!("1");
    assert_eq!(
        SessionPayload::from_json(&v1, v2),
        Err(PayloadError::MissingDescriptor)
    );
    assert!(matches!(
        with("signature", json!("0xzz")),
        Err(PayloadError::Invalid {
            field: "signature",
            ..
        })
    ));
    assert!(matches!(
        with("descriptor", json!({"payer": "0x1"})),
        Err(PayloadError::Invalid {
            field: "descriptor.payer",
            ..
        })
    ));
    let open = sample_payloads(v2).remove(0).to_json();
    let open_with = |key: &str, value: Value| {
        let mut v = open.clone();
        v[key] = value;
        SessionPayload::from_json(&v, v2)
    };
    assert!(matches!(
        open_with("type", json!("hash")),
        Err(PayloadError::Invalid { field: "type", .. })
    ));
    assert!(matches!(
        open_with("transaction", json!("0x02c0")),
        Err(PayloadError::Invalid {
            field: "transaction",
            ..
        })
    ));
    // Every refusal is `invalid-payload`.
    let err = SessionError::from(PayloadError::MissingDescriptor);
    assert_eq!(err.problem(), Some(ProblemType::InvalidPayload));
}

/// The shared v2 checks: descriptor ↔ channel id, payee, token, operator, declared signer;
/// and the `source` rule.
#[test]
fn descriptor_and_source_checks() {
    let d = golden_descriptor();
    let payload = sample_payloads(SessionProtocol::V2).remove(0);
    let check = |payload: &SessionPayload, recipient, currency, operator| {
        check_descriptor(
            payload,
            TIP20_CHANNEL_RESERVE,
            42431,
            recipient,
            currency,
            operator,
        )
    };
    assert_eq!(check(&payload, d.payee, d.token, Address::ZERO).unwrap(), d);
    for (recipient, currency, operator) in [
        (Address::repeat_byte(1), d.token, Address::ZERO),
        (d.payee, Address::with_last_byte(1), Address::ZERO),
        (d.payee, d.token, Address::repeat_byte(1)),
    ] {
        assert!(matches!(
            check(&payload, recipient, currency, operator),
            Err(SessionError::VerificationFailed(_))
        ));
    }
    let wrong_chain = check_descriptor(
        &payload,
        TIP20_CHANNEL_RESERVE,
        4217,
        d.payee,
        d.token,
        Address::ZERO,
    );
    assert!(matches!(
        wrong_chain,
        Err(SessionError::VerificationFailed(m)) if m.contains("channelId")
    ));
    let SessionPayload::Open(mut open) = payload else {
        unreachable!()
    };
    open.authorized_signer = Some(Address::repeat_byte(5));
    assert!(check(&SessionPayload::Open(open), d.payee, d.token, Address::ZERO).is_err());

    let source = format!("did:pkh:eip155:42431:{}", d.payer.to_checksum(None));
    check_source(Some(&source), 42431, d.payer, d.signer()).unwrap();
    let signer_source = format!("did:pkh:eip155:42431:{:#x}", d.authorized_signer);
    check_source(Some(&signer_source), 42431, d.payer, d.signer()).unwrap();
    for bad in [
        None,
        Some("did:pkh:eip155:4217:0x3d6885f89100445ca9869d1b0a49c97cfdbafeee"),
        Some("did:pkh:eip155:42431:0x0000000000000000000000000000000000000001"),
        Some("0x3d6885f89100445ca9869d1b0a49c97cfdbafeee"),
    ] {
        assert!(matches!(
            check_source(bad, 42431, d.payer, d.signer()),
            Err(SessionError::VerificationFailed(_))
        ));
    }
}

// ---------------------------------------------------------------------------------------------
// Voucher checks

fn state(highest: u128) -> VoucherState<'static> {
    VoucherState {
        signer: SIGNER,
        deposit: 1_000_000,
        settled: 0,
        highest,
        highest_signature: None,
        min_voucher_delta: 0,
        finalized: false,
        close_requested: false,
    }
}

fn sign(domain: &VoucherDomain, channel_id: B256, amount: u128) -> VoucherSignature {
    let digest = domain.voucher_digest(channel_id, amount).unwrap();
    VoucherSignature::from_signature(&key().sign_hash_sync(&digest).unwrap())
}

/// Sign → verify with our own signer, in both versions; and with alloy's typed-data hashing
/// of the voucher struct, the digest is the same.
#[test]
fn voucher_sign_then_verify() {
    alloy::sol! {
        struct Voucher { bytes32 channelId; uint96 cumulativeAmount; }
    }
    for domain in [
        moderato_v2(),
        VoucherDomain::new(SessionProtocol::V1, 31337, Address::repeat_byte(0xe5)),
    ] {
        let channel_id = B256::repeat_byte(0xc1);
        let sig = sign(&domain, channel_id, 500);
        assert_eq!(
            check_voucher(&domain, channel_id, 500, &sig, &state(100)),
            Ok(VoucherOutcome::Accepted { delta: 400 })
        );
        // Another amount, channel or signer does not verify.
        assert!(matches!(
            check_voucher(&domain, channel_id, 501, &sig, &state(100)),
            Err(SessionError::InvalidSignature(_))
        ));
        assert!(matches!(
            check_voucher(&domain, B256::ZERO, 500, &sig, &state(100)),
            Err(SessionError::InvalidSignature(_))
        ));
        let other = VoucherState {
            signer: Address::repeat_byte(1),
            ..state(100)
        };
        assert!(matches!(
            check_voucher(&domain, channel_id, 500, &sig, &other),
            Err(SessionError::InvalidSignature(_))
        ));
    }
    let domain = moderato_v2();
    let voucher = Voucher {
        channelId: B256::repeat_byte(0xc1),
        cumulativeAmount: U96::from(500u64),
    };
    assert_eq!(
        voucher.eip712_signing_hash(&domain.eip712_domain()),
        domain.voucher_digest(B256::repeat_byte(0xc1), 500).unwrap()
    );
}

/// A signature from another EIP-712 domain is refused: another chain, another escrow, the
/// other protocol's name and type.
#[test]
fn wrong_domain_refused() {
    let channel_id = B256::repeat_byte(0xc1);
    let good = moderato_v2();
    for wrong in [
        VoucherDomain::new(SessionProtocol::V2, 4217, TIP20_CHANNEL_RESERVE),
        VoucherDomain::new(SessionProtocol::V2, 42431, V1_ESCROW_MODERATO),
        VoucherDomain::new(SessionProtocol::V1, 42431, TIP20_CHANNEL_RESERVE),
    ] {
        let sig = sign(&wrong, channel_id, 500);
        assert!(matches!(
            check_voucher(&good, channel_id, 500, &sig, &state(0)),
            Err(SessionError::InvalidSignature(_))
        ));
    }
}

/// High-s (the malleated twin of a valid signature), v ∈ {0, 1}, zero r/s and wrong lengths
/// are refused as `session/invalid-signature`.
#[test]
fn high_s_and_non_canonical_refused() {
    let domain = moderato_v2();
    let channel_id = B256::repeat_byte(0xc1);
    let VoucherSignature::Secp256k1(raw) = sign(&domain, channel_id, 500) else {
        unreachable!()
    };
    let good = Signature::from_raw(&raw).unwrap();
    let n = U256::from_str_radix(
        "FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141",
        16,
    )
    .unwrap();
    let twin = Signature::new(good.r(), n - good.s(), !good.v());
    // The twin is mathematically valid (it recovers the same key when s is not checked).
    assert_eq!(
        twin.recover_address_from_prehash(&domain.voucher_digest(channel_id, 500).unwrap())
            .unwrap(),
        SIGNER
    );
    let mut bad = vec![VoucherSignature::from_signature(&twin)];
    let mut v01 = raw;
    v01[64] -= 27;
    bad.push(VoucherSignature::Secp256k1(v01));
    let mut zero_r = raw;
    zero_r[..32].fill(0);
    bad.push(VoucherSignature::Secp256k1(zero_r));
    let mut compact = [0u8; 64];
    compact.copy_from_slice(&good.as_erc2098());
    bad.push(VoucherSignature::Compact(compact));
    let mut keychain = vec![0x03];
    keychain.extend_from_slice(&SIGNER.0.0);
    keychain.extend_from_slice(&raw);
    bad.push(VoucherSignature::from_bytes(&keychain).unwrap());
    let mut magic = raw.to_vec();
    magic.extend_from_slice(&[0x77; 32]);
    bad.push(VoucherSignature::from_bytes(&magic).unwrap());
    for sig in bad {
        let err = check_voucher(&domain, channel_id, 500, &sig, &state(0)).unwrap_err();
        assert!(
            matches!(err, SessionError::InvalidSignature(_)),
            "{sig:?}: {err}"
        );
        assert_eq!(err.problem(), Some(ProblemType::SessionInvalidSignature));
    }
}

/// Signature bytes a client controls never panic the verifier: every length up to 400 with
/// each envelope type byte (P-256, WebAuthn, keychain, unknown), in both versions.
#[test]
fn garbage_signatures_are_refused_without_panicking() {
    let digest = B256::repeat_byte(0x42);
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed & 0xff) as u8
    };
    for len in 1..=400usize {
        for first in [0x01u8, 0x02, 0x03, 0x04, 0xff] {
            let mut bytes: Vec<u8> = (0..len).map(|_| next()).collect();
            bytes[0] = first;
            if len > 37 && first == 0x02 {
                // A plausible authenticator data flags byte, to get past the first check.
                bytes[33] = 0x05;
            }
            let sig = VoucherSignature::from_bytes(&bytes).unwrap();
            for protocol in [SessionProtocol::V1, SessionProtocol::V2] {
                assert!(sig.recover(protocol, &digest).is_err() || len == 65 || len == 64);
            }
        }
    }
}

/// The check order: the cheap refusals come before any signature work (a garbage signature
/// does not change their outcome), and an equal voucher is an idempotent success.
#[test]
fn voucher_check_order() {
    let domain = moderato_v2();
    let channel_id = B256::repeat_byte(0xc1);
    // Not a valid signature of anything: if it were checked, the answer would be
    // invalid-signature.
    let garbage = VoucherSignature::Secp256k1([0; 65]);
    // Lower than the highest: refused before the signature.
    let err = check_voucher(&domain, channel_id, 99, &garbage, &state(100)).unwrap_err();
    assert!(matches!(err, SessionError::VerificationFailed(_)), "{err}");
    // Above the deposit: refused before the signature.
    let err = check_voucher(&domain, channel_id, 1_000_001, &garbage, &state(0)).unwrap_err();
    assert_eq!(
        err,
        SessionError::AmountExceedsDeposit {
            amount: 1_000_001,
            deposit: 1_000_000
        }
    );
    // Closed channels: 410 before anything else.
    for (finalized, close_requested, deposit, problem) in [
        (true, false, 1, ProblemType::SessionChannelFinalized),
        (false, true, 1, ProblemType::SessionChannelFinalized),
        (false, false, 0, ProblemType::SessionChannelNotFound),
    ] {
        let st = VoucherState {
            finalized,
            close_requested,
            deposit,
            ..state(0)
        };
        let err = check_voucher(&domain, channel_id, 1, &garbage, &st).unwrap_err();
        assert_eq!(err.problem(), Some(problem));
        assert_eq!(err.status(), 410);
    }
    // Equal and byte-identical to the stored voucher: idempotent, no signature work (the
    // stored bytes are garbage here, which a verification would refuse).
    let stored = garbage.clone();
    let replay = VoucherState {
        highest_signature: Some(&stored),
        ..state(100)
    };
    assert_eq!(
        check_voucher(&domain, channel_id, 100, &garbage, &replay),
        Ok(VoucherOutcome::AlreadyAccepted)
    );
    // Equal but other bytes: verified; a valid one is still idempotent.
    let valid = sign(&domain, channel_id, 100);
    assert_eq!(
        check_voucher(&domain, channel_id, 100, &valid, &replay),
        Ok(VoucherOutcome::AlreadyAccepted)
    );
    let mut tampered = valid.as_bytes().to_vec();
    tampered[10] ^= 1;
    let tampered = VoucherSignature::from_bytes(&tampered).unwrap();
    assert!(matches!(
        check_voucher(&domain, channel_id, 100, &tampered, &replay),
        Err(SessionError::InvalidSignature(_))
    ));
    // At or below the settled amount: refused after the signature.
    let settled = VoucherState {
        settled: 300,
        ..state(100)
    };
    let sig = sign(&domain, channel_id, 300);
    assert!(matches!(
        check_voucher(&domain, channel_id, 300, &sig, &settled),
        Err(SessionError::VerificationFailed(_))
    ));
    // minVoucherDelta.
    let min = VoucherState {
        min_voucher_delta: 1000,
        ..state(100)
    };
    let sig = sign(&domain, channel_id, 1099);
    assert_eq!(
        check_voucher(&domain, channel_id, 1099, &sig, &min),
        Err(SessionError::DeltaTooSmall {
            delta: 999,
            min: 1000
        })
    );
    let sig = sign(&domain, channel_id, 1100);
    assert_eq!(
        check_voucher(&domain, channel_id, 1100, &sig, &min),
        Ok(VoucherOutcome::Accepted { delta: 1000 })
    );
    // uint96 overflow on v2 is a payload error, whatever the state.
    let big = VoucherState {
        deposit: u128::MAX,
        ..state(0)
    };
    assert!(matches!(
        check_voucher(&domain, channel_id, 1 << 96, &garbage, &big),
        Err(SessionError::InvalidPayload(_))
    ));
}

/// Open amounts and close capture (pure rules of session.md §7).
#[test]
fn open_and_close_amounts() {
    check_open_amounts(25, 1000, 25).unwrap();
    assert!(matches!(
        check_open_amounts(25, 24, 24),
        Err(SessionError::VerificationFailed(_))
    ));
    assert!(matches!(
        check_open_amounts(25, 1000, 24),
        Err(SessionError::VerificationFailed(_))
    ));
    assert!(matches!(
        check_open_amounts(25, 1000, 1001),
        Err(SessionError::AmountExceedsDeposit { .. })
    ));
    assert_eq!(close_capture(500, 300, 200, 1000), Ok(300));
    assert_eq!(close_capture(500, 100, 200, 1000), Ok(200));
    assert!(close_capture(299, 300, 0, 1000).is_err());
    assert!(close_capture(100, 0, 200, 1000).is_err());
    assert!(matches!(
        close_capture(2000, 0, 0, 1000),
        Err(SessionError::AmountExceedsDeposit { .. })
    ));
}

// ---------------------------------------------------------------------------------------------
// The official Rust SDK (`mpp` 0.18.2) as a peer

/// Channel ids, voucher digests (v1, v2, close authorization), and signatures both ways.
#[tokio::test]
async fn mpp_rs_agrees() {
    use mpp::protocol::methods::tempo::{compute_channel_id, precompile_voucher as pv, voucher};
    let d = golden_descriptor();
    assert_eq!(
        pv::compute_precompile_channel_id_with_escrow(
            d.payer,
            d.payee,
            d.operator,
            d.token,
            d.salt,
            d.authorized_signer,
            d.expiring_nonce_hash,
            TIP20_CHANNEL_RESERVE,
            42431
        ),
        d.channel_id(TIP20_CHANNEL_RESERVE, 42431)
    );
    let v1 = V1Channel {
        payer: d.payer,
        payee: d.payee,
        token: d.token,
        salt: d.salt,
        authorized_signer: d.authorized_signer,
    };
    assert_eq!(
        compute_channel_id(
            v1.payer,
            v1.payee,
            v1.token,
            v1.salt,
            v1.authorized_signer,
            V1_ESCROW_MODERATO,
            42431
        ),
        v1.channel_id(V1_ESCROW_MODERATO, 42431)
    );

    let domain = moderato_v2();
    let channel_id = d.channel_id(TIP20_CHANNEL_RESERVE, 42431);
    for amount in [0u128, 1, 1_000_000, mpp_tempo::session::MAX_V2_AMOUNT] {
        assert_eq!(
            pv::precompile_voucher_signing_hash_with_escrow(
                channel_id,
                amount,
                TIP20_CHANNEL_RESERVE,
                42431
            )
            .unwrap(),
            domain.voucher_digest(channel_id, amount).unwrap()
        );
        assert_eq!(
            pv::precompile_close_authorization_signing_hash_with_escrow(
                channel_id,
                amount,
                TIP20_CHANNEL_RESERVE,
                42431
            )
            .unwrap(),
            domain
                .close_authorization_digest(channel_id, amount)
                .unwrap()
        );
        // mpp signs, we verify.
        let theirs = pv::sign_precompile_voucher_with_escrow(
            &key(),
            channel_id,
            amount,
            TIP20_CHANNEL_RESERVE,
            42431,
        )
        .await
        .unwrap();
        let sig = VoucherSignature::from_bytes(&theirs).unwrap();
        domain
            .verify_voucher(channel_id, amount, &sig, SIGNER)
            .unwrap();
        // We sign, mpp verifies.
        let ours = sign(&domain, channel_id, amount);
        assert!(
            pv::verify_precompile_voucher_signature(
                ours.as_bytes(),
                SIGNER,
                channel_id,
                amount,
                TIP20_CHANNEL_RESERVE,
                42431
            )
            .unwrap()
        );
    }
    // Both of us refuse the vectors' high-s twins (v2 and v1).
    let v = vector("voucher-eip712.json");
    for case in v["cases"].as_array().unwrap() {
        let high_s = alloy::hex::decode(s(&case["highSMalleatedVariant_mustReject"])).unwrap();
        let channel_id: B256 = s(&case["message"]["channelId"]).parse().unwrap();
        let amount: u128 = s(&case["message"]["cumulativeAmount"]).parse().unwrap();
        let chain_id = case["domain"]["chainId"].as_u64().unwrap();
        let escrow: Address = s(&case["domain"]["verifyingContract"]).parse().unwrap();
        let theirs = match protocol(&case["protocol"]) {
            SessionProtocol::V2 => pv::verify_precompile_voucher_signature(
                &high_s, SIGNER, channel_id, amount, escrow, chain_id,
            )
            .unwrap_or(false),
            SessionProtocol::V1 => {
                voucher::verify_voucher(escrow, chain_id, channel_id, amount, &high_s, SIGNER)
            }
        };
        assert!(!theirs, "mpp accepted a high-s voucher");
        let domain = VoucherDomain::new(protocol(&case["protocol"]), chain_id, escrow);
        let ours = VoucherSignature::from_bytes(&high_s).unwrap();
        assert!(
            domain
                .verify_voucher(channel_id, amount, &ours, SIGNER)
                .is_err()
        );
    }
    // v1: mpp signs, we verify; we sign, mpp verifies.
    let v1_domain = VoucherDomain::new(SessionProtocol::V1, 42431, V1_ESCROW_MODERATO);
    let v1_id = v1.channel_id(V1_ESCROW_MODERATO, 42431);
    let theirs = voucher::sign_voucher(&key(), v1_id, 250_000, V1_ESCROW_MODERATO, 42431)
        .await
        .unwrap();
    let sig = VoucherSignature::from_bytes(&theirs).unwrap();
    v1_domain
        .verify_voucher(v1_id, 250_000, &sig, SIGNER)
        .unwrap();
    assert!(voucher::verify_voucher(
        V1_ESCROW_MODERATO,
        42431,
        v1_id,
        250_000,
        sign(&v1_domain, v1_id, 250_000).as_bytes(),
        SIGNER
    ));
}

/// Receipts: ours reads as an `mpp` receipt with the same fields, and prints the same JSON.
#[test]
fn mpp_rs_receipts_agree() {
    use mpp::protocol::methods::tempo::SessionReceipt as Theirs;
    let receipt = SessionReceipt::new(
        "challenge-1",
        B256::repeat_byte(0xab),
        200,
        125,
        time::OffsetDateTime::from_unix_timestamp(1_736_165_310).unwrap(),
    )
    .with_units(5)
    .with_tx_hash(B256::repeat_byte(0xcd));
    assert_eq!(receipt.timestamp, "2025-01-06T12:08:30.000Z");
    let theirs: Theirs = serde_json::from_str(&receipt.to_json_string()).unwrap();
    assert_eq!(
        serde_json::to_string(&theirs).unwrap(),
        receipt.to_json_string()
    );
    assert_eq!(theirs.reference, format!("{:#x}", B256::repeat_byte(0xab)));
    assert_eq!(
        SessionReceipt::from_header_value(&receipt.to_header_value()).unwrap(),
        receipt
    );
    // The clients' own refusals.
    let mut bad = serde_json::from_str::<Value>(&receipt.to_json_string()).unwrap();
    bad["spent"] = json!("201");
    assert!(SessionReceipt::from_json(&bad).is_err());
    bad["spent"] = json!(125);
    assert!(SessionReceipt::from_json(&bad).is_err());
}

// ---------------------------------------------------------------------------------------------
// Client side (feature `client`)

#[cfg(feature = "client")]
mod client {
    use super::*;
    use alloy::consensus::transaction::SignerRecoverable;
    use alloy::eips::eip2718::Decodable2718;
    use mpp_tempo::charge::FeePayerEnvelope;
    use mpp_tempo::session::client::{
        OpenParams, SessionChannel, SessionSigner, open_calls, top_up_calls,
    };
    use mpp_tempo::session::expiring_nonce_hash;
    use std::num::NonZeroU64;
    use tempo_primitives::transaction::{AASigned, TEMPO_EXPIRING_NONCE_KEY, TempoTransaction};

    fn unsigned(calls: Vec<tempo_primitives::transaction::Call>) -> TempoTransaction {
        TempoTransaction {
            chain_id: 42431,
            max_priority_fee_per_gas: 1_000_000_000,
            max_fee_per_gas: 20_000_000_000,
            gas_limit: 2_000_000,
            calls,
            nonce_key: TEMPO_EXPIRING_NONCE_KEY,
            nonce: 0,
            valid_before: NonZeroU64::new(1_900_000_000),
            ..Default::default()
        }
    }

    fn params() -> OpenParams {
        OpenParams {
            payee: address!("742d35Cc6634C0532925a3b844Bc9e7595f8fE00"),
            operator: Address::ZERO,
            token: PATH_USD,
            deposit: 10_000_000,
            salt: B256::repeat_byte(0x5a),
            authorized_signer: SIGNER,
        }
    }

    /// A v2 open built offline: the transaction decodes, its sender is the payer, the
    /// descriptor's expiringNonceHash is the node's (`AASigned::expiring_nonce_hash`), the
    /// id matches, the calldata carries the descriptor's fields, and the first voucher
    /// verifies. Sponsored: the same from the `0x78` envelope.
    #[test]
    fn v2_open_offline() {
        let domain = moderato_v2();
        let signer = SessionSigner::new(key(), domain);
        for sponsored in [false, true] {
            let tx = unsigned(open_calls(&domain, &params()).unwrap());
            let opened = signer.open(tx, &params(), 25, sponsored).unwrap();
            let json = opened.payload.to_json();
            let SessionPayload::Open(open) =
                SessionPayload::from_json(&json, SessionProtocol::V2).unwrap()
            else {
                panic!("not an open")
            };
            let d = open.descriptor.unwrap();
            assert_eq!(d.payer, SIGNER);
            let (sender, nonce_hash, calls) = if sponsored {
                assert_eq!(open.transaction[0], 0x78);
                assert_eq!(opened.tx_hash, None);
                let env = FeePayerEnvelope::decode(&open.transaction).unwrap();
                let recovered = env.recoverable().recover_signer().unwrap();
                assert_eq!(recovered, env.sender);
                // What the node sees once the server co-signs and picks a fee token: the
                // same expiringNonceHash (the channel id does not depend on the sponsor).
                let mut cosigned = env.tx.clone();
                cosigned.fee_token = Some(PATH_USD);
                let sponsor: PrivateKeySigner =
                    "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d"
                        .parse()
                        .unwrap();
                let fee_sig = sponsor
                    .sign_hash_sync(&cosigned.fee_payer_signature_hash(env.sender))
                    .unwrap();
                cosigned.fee_payer_signature = Some(fee_sig);
                let broadcast = cosigned.into_signed(env.signature.clone());
                assert_eq!(
                    broadcast.expiring_nonce_hash(env.sender),
                    d.expiring_nonce_hash
                );
                (
                    env.sender,
                    expiring_nonce_hash(&env.tx, env.sender),
                    env.tx.calls,
                )
            } else {
                assert_eq!(open.transaction[0], 0x76);
                let signed = AASigned::decode_2718(&mut open.transaction.as_ref()).unwrap();
                let sender = signed.recover_signer().unwrap();
                assert_eq!(Some(*signed.hash()), opened.tx_hash);
                (
                    sender,
                    signed.expiring_nonce_hash(sender),
                    signed.tx().calls.clone(),
                )
            };
            assert_eq!(sender, SIGNER);
            assert_eq!(nonce_hash, d.expiring_nonce_hash);
            assert_eq!(open.channel_id, d.channel_id(TIP20_CHANNEL_RESERVE, 42431));
            assert_eq!(calls.len(), 1);
            let call = ITIP20ChannelReserve::openCall::abi_decode(&calls[0].input).unwrap();
            assert_eq!(calls[0].to.to().copied(), Some(TIP20_CHANNEL_RESERVE));
            assert_eq!(
                (
                    call.payee,
                    call.operator,
                    call.token,
                    call.salt,
                    call.authorizedSigner
                ),
                (d.payee, d.operator, d.token, d.salt, d.authorized_signer)
            );
            assert_eq!(call.deposit, U96::from(10_000_000u64));
            check_descriptor(
                &SessionPayload::Open(open.clone()),
                TIP20_CHANNEL_RESERVE,
                42431,
                params().payee,
                PATH_USD,
                Address::ZERO,
            )
            .unwrap();
            domain
                .verify_voucher(open.channel_id, 25, &open.signature, d.signer())
                .unwrap();
        }
    }

    /// mppx's server validates our v2 open transactions offline (plain `0x76` and sponsored
    /// `0x78`): one call to the precompile, the open arguments, the sender as payer, and the
    /// same expiringNonceHash and channel id.
    #[test]
    fn mppx_validates_our_open() {
        let domain = moderato_v2();
        let signer = SessionSigner::new(key(), domain);
        let mut jobs = Vec::new();
        let mut opened = Vec::new();
        for sponsored in [false, true] {
            let tx = unsigned(open_calls(&domain, &params()).unwrap());
            let o = signer.open(tx, &params(), 25, sponsored).unwrap();
            let json = o.payload.to_json();
            jobs.push(json!({"op": "openTx", "transaction": json["transaction"],
                "escrow": format!("{TIP20_CHANNEL_RESERVE:#x}"), "chainId": 42431,
                "sponsored": sponsored, "descriptor": json["descriptor"],
                "channelId": json["channelId"]}));
            jobs.push(json!({"op": "serverPayload", "payload": json}));
            opened.push(o);
        }
        let Some(out) = mppx(Value::Array(jobs)) else {
            return;
        };
        for (i, o) in opened.iter().enumerate() {
            let r = &out[2 * i];
            assert_eq!(r["ok"], true, "sponsored={}: {r}", i == 1);
            let d = o.channel.descriptor.unwrap();
            assert_eq!(
                s(&r["expiringNonceHash"]).parse::<B256>().unwrap(),
                d.expiring_nonce_hash
            );
            assert_eq!(r["deposit"], "10000000");
            assert_eq!(out[2 * i + 1]["ok"], true, "{}", out[2 * i + 1]);
        }
    }

    /// v1 open: approve + open, the id from the calldata and the sender; top-ups of both
    /// versions; vouchers and closes with and without the close authorization.
    #[test]
    fn v1_open_top_up_voucher_close() {
        let domain = VoucherDomain::new(SessionProtocol::V1, 42431, V1_ESCROW_MODERATO);
        let signer = SessionSigner::new(key(), domain);
        let opened = signer
            .open(
                unsigned(open_calls(&domain, &params()).unwrap()),
                &params(),
                25,
                false,
            )
            .unwrap();
        let SessionPayload::Open(open) = &opened.payload else {
            panic!()
        };
        assert_eq!(open.descriptor, None);
        let signed = AASigned::decode_2718(&mut open.transaction.as_ref()).unwrap();
        let calls = &signed.tx().calls;
        assert_eq!(calls.len(), 2);
        let approve =
            tempo_alloy::contracts::precompiles::ITIP20::approveCall::abi_decode(&calls[0].input)
                .unwrap();
        assert_eq!(approve.spender, V1_ESCROW_MODERATO);
        let call = ITempoStreamChannel::openCall::abi_decode(&calls[1].input).unwrap();
        let id = V1Channel {
            payer: signed.recover_signer().unwrap(),
            payee: call.payee,
            token: call.token,
            salt: call.salt,
            authorized_signer: call.authorizedSigner,
        }
        .channel_id(V1_ESCROW_MODERATO, 42431);
        assert_eq!(id, open.channel_id);

        let calls = top_up_calls(&domain, &opened.channel, PATH_USD, 5).unwrap();
        let top = signer
            .top_up(unsigned(calls), &opened.channel, 5, false)
            .unwrap();
        assert_eq!(top.payload.to_json()["additionalDeposit"], "5");
        let voucher = signer.voucher(&opened.channel, 50).unwrap().to_json();
        assert_eq!(
            voucher.as_object().unwrap().keys().len(),
            4,
            "v1 vouchers carry no descriptor: {voucher}"
        );
        let close = signer.close(&opened.channel, 50, true).unwrap();
        let SessionPayload::Close(close) = close else {
            panic!()
        };
        assert_eq!(close.close_signature, None, "v1 has no close authorization");

        let v2 = moderato_v2();
        let signer2 = SessionSigner::new(key(), v2);
        let channel = SessionChannel::v2(golden_descriptor(), &v2);
        let calls = top_up_calls(&v2, &channel, PATH_USD, 7).unwrap();
        let call = ITIP20ChannelReserve::topUpCall::abi_decode(&calls[0].input).unwrap();
        assert_eq!(
            ChannelDescriptor::from_abi(&call.descriptor),
            golden_descriptor()
        );
        let SessionPayload::Close(close) = signer2.close(&channel, 9, true).unwrap() else {
            panic!()
        };
        let digest = v2
            .close_authorization_digest(channel.channel_id, 9)
            .unwrap();
        close
            .close_signature
            .unwrap()
            .verify(SessionProtocol::V2, &digest, SIGNER)
            .unwrap();
        assert!(
            signer2
                .voucher(
                    &SessionChannel {
                        descriptor: None,
                        ..channel
                    },
                    1
                )
                .is_err(),
            "a v2 voucher needs the descriptor"
        );
        assert!(signer2.voucher(&channel, 1 << 96).is_err());
    }
}

// ---------------------------------------------------------------------------------------------
// mppx 0.11.0 as a peer (skipped when `tools/devnet` has not been installed)

fn mppx_dir() -> Option<PathBuf> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tools/devnet");
    if root.join("node_modules/mppx").is_dir() {
        return Some(root);
    }
    let message = "mppx is not installed (run `scripts/devnet-install.sh`)";
    if std::env::var_os("CI").is_some() {
        panic!("{message}");
    }
    eprintln!("skipping mppx interop: {message}");
    None
}

fn mppx(jobs: Value) -> Option<Vec<Value>> {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let dir = mppx_dir()?;
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/interop/mppx-session.mjs");
    let mut child = Command::new("node")
        .arg(script)
        .arg(&dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("node (Node.js 20+) is required for the mppx interop test");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(jobs.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "mppx-session.mjs failed");
    Some(serde_json::from_slice(&out.stdout).unwrap())
}

/// mppx signs, we verify (v2 and v1), and the other way round; mppx's server reads our
/// payloads and our receipt, and its client accepts our v2 terms (and not our v1 ones).
#[test]
fn mppx_agrees() {
    let d = golden_descriptor();
    let domain = moderato_v2();
    let channel_id = d.channel_id(TIP20_CHANNEL_RESERVE, 42431);
    let escrow = format!("{TIP20_CHANNEL_RESERVE:#x}");
    let ours = sign(&domain, channel_id, 777);
    let VoucherSignature::Secp256k1(raw) = ours.clone() else {
        unreachable!()
    };
    let good = Signature::from_raw(&raw).unwrap();
    let n = U256::from_str_radix(
        "FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141",
        16,
    )
    .unwrap();
    let high_s =
        VoucherSignature::from_signature(&Signature::new(good.r(), n - good.s(), !good.v()));
    let v1_domain = VoucherDomain::new(SessionProtocol::V1, 42431, V1_ESCROW_MODERATO);
    let v1 = V1Channel {
        payer: SIGNER,
        payee: d.payee,
        token: PATH_USD,
        salt: B256::repeat_byte(1),
        authorized_signer: Address::ZERO,
    };
    let v1_id = v1.channel_id(V1_ESCROW_MODERATO, 42431);
    // A receipt, and v2 payloads of every action, signed by us.
    let receipt = SessionReceipt::new(
        "chal",
        channel_id,
        777,
        700,
        time::OffsetDateTime::now_utc(),
    )
    .with_units(28)
    .with_tx_hash(B256::repeat_byte(2));
    let check = json!({"chainId": 42431, "escrow": escrow, "recipient": format!("{:#x}", d.payee),
                       "currency": format!("{:#x}", d.token), "operator": format!("{:#x}", d.operator)});
    let mut payloads: Vec<Value> = sample_payloads(SessionProtocol::V2)
        .iter()
        .map(SessionPayload::to_json)
        .collect();
    // mppx 0.11's schema has no closeSignature; it ignores unknown fields anyway.
    payloads[2]["signature"] = json!(ours.to_string());
    let recipient = address!("742d35Cc6634C0532925a3b844Bc9e7595f8fE00");
    let v2_terms = TempoSessionRequest::v2(42431, 25, "token", PATH_USD, recipient).to_json();
    let v1_terms =
        TempoSessionRequest::v1(42431, V1_ESCROW_MODERATO, 25, "token", PATH_USD, recipient)
            .to_json();

    // A channel the test key pays, with no separate signer.
    let mine = ChannelDescriptor {
        payer: SIGNER,
        authorized_signer: Address::ZERO,
        ..d
    };
    let mine_id = mine.channel_id(TIP20_CHANNEL_RESERVE, 42431);
    let mut jobs = vec![
        json!({"op": "v2Voucher", "key": KEY, "chainId": 42431, "escrow": escrow,
               "amount": "123456789", "descriptor": mine.to_json()}),
        json!({"op": "v2Close", "key": KEY, "chainId": 42431, "escrow": escrow,
               "amount": "777", "descriptor": mine.to_json()}),
        json!({"op": "v2Verify", "escrow": escrow, "chainId": 42431, "channelId": channel_id,
               "amount": "777", "signature": ours.to_string(), "signer": SIGNER}),
        json!({"op": "v2Verify", "escrow": escrow, "chainId": 42431, "channelId": channel_id,
               "amount": "777", "signature": high_s.to_string(), "signer": SIGNER}),
        json!({"op": "v1Voucher", "key": KEY, "chainId": 42431, "escrow": V1_ESCROW_MODERATO,
               "amount": "250000", "channelId": v1_id}),
        json!({"op": "v1Verify", "escrow": V1_ESCROW_MODERATO, "chainId": 42431,
               "channelId": v1_id, "amount": "250000",
               "signature": sign(&v1_domain, v1_id, 250_000).to_string(), "signer": SIGNER}),
        json!({"op": "v1ChannelId", "chainId": 42431, "escrow": V1_ESCROW_MODERATO,
               "params": {"payer": v1.payer, "payee": v1.payee, "token": v1.token,
                          "salt": v1.salt, "authorizedSigner": v1.authorized_signer}}),
        json!({"op": "receipt", "header": receipt.to_header_value()}),
        json!({"op": "challenge", "request": v2_terms}),
        json!({"op": "challenge", "request": v1_terms}),
    ];
    let first_payload = jobs.len();
    jobs.extend(
        payloads
            .iter()
            .map(|p| json!({"op": "serverPayload", "payload": p, "check": check})),
    );
    let Some(out) = mppx(Value::Array(jobs)) else {
        return;
    };

    // 0, 1: mppx-signed voucher and close payloads (for a channel the test key pays)
    // parse, bind to the channel, pass the source rule and verify with our code.
    for (i, amount) in [(0, 123_456_789u128), (1, 777)] {
        let payload = SessionPayload::from_json(&out[i]["payload"], SessionProtocol::V2).unwrap();
        assert_eq!(s(&out[i]["channelId"]).parse::<B256>().unwrap(), mine_id);
        let descriptor = check_descriptor(
            &payload,
            TIP20_CHANNEL_RESERVE,
            42431,
            mine.payee,
            mine.token,
            mine.operator,
        )
        .unwrap();
        assert_eq!(descriptor, mine);
        check_source(out[i]["source"].as_str(), 42431, mine.payer, mine.signer()).unwrap();
        let (got, sig) = payload.voucher().unwrap();
        assert_eq!(got, amount);
        let st = VoucherState {
            signer: descriptor.signer(),
            deposit: u128::from(u64::MAX),
            ..state(0)
        };
        assert_eq!(
            check_voucher(&domain, mine_id, amount, sig, &st),
            Ok(VoucherOutcome::Accepted { delta: amount })
        );
    }
    // 2, 3: mppx verifies our signature. It also takes its high-s twin: mppx 0.11's
    // verifier re-serializes the signature but never checks `s`. We refuse it (as the `mpp`
    // crate and the precompile's own recovery do, see `mpp_rs_agrees`), so a malleated copy
    // of a stored voucher can never be accepted here.
    assert_eq!(out[2]["valid"], true);
    assert_eq!(
        out[3]["valid"], true,
        "mppx 0.11 was expected to accept high-s"
    );
    assert!(matches!(
        domain.verify_voucher(channel_id, 777, &high_s, SIGNER),
        Err(SessionError::InvalidSignature(_))
    ));
    // 4, 5: v1 both ways.
    let p = SessionPayload::from_json(&out[4]["payload"], SessionProtocol::V1).unwrap();
    let (amount, sig) = p.voucher().unwrap();
    v1_domain
        .verify_voucher(v1_id, amount, sig, SIGNER)
        .unwrap();
    assert_eq!(out[5]["valid"], true);
    // 6: the v1 channel id.
    assert_eq!(s(&out[6]["channelId"]).parse::<B256>().unwrap(), v1_id);
    // 7: mppx's client accepts our receipt, field for field.
    assert_eq!(out[7]["ok"], true, "{}", out[7]);
    assert_eq!(
        SessionReceipt::from_json(&out[7]["receipt"]).unwrap(),
        receipt
    );
    // 8, 9: the v2 terms are a v2 challenge on the precompile for mppx's client; v1 is not.
    assert_eq!(out[8]["v2"], true);
    assert_eq!(s(&out[8]["escrow"]).to_lowercase(), escrow);
    assert_eq!(out[9]["v2"], false);
    // The server's readers accept every payload we write, and the descriptor binds.
    for (i, payload) in payloads.iter().enumerate() {
        let r = &out[first_payload + i];
        assert_eq!(r["ok"], true, "{payload}: {r}");
        assert_eq!(r["action"], payload["action"]);
    }
}
