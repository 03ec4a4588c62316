//! Runs the protocol test vectors in `tests/vectors/` (copied from the protocol digest; see
//! `tests/vectors/SOURCES.md`). Each test counts the cases it ran so a vector file that
//! silently loses its cases fails.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use mpp_core::binding::{BindingSlots, compute_challenge_id};
use mpp_core::credential::CredentialError;
use mpp_core::digest::{body_digest, verify_body_digest};
use mpp_core::expiry::parse_timestamp;
use mpp_core::problem::{Problem, ProblemType};
use mpp_core::{Challenge, ChallengeSecret, Credential, EncodedJson, Receipt, base64url, jcs};
use serde_json::Value;

fn load(name: &str) -> Value {
    let path = format!("{}/tests/vectors/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap()
}

fn s<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

#[test]
fn challenge_id_hmac() {
    let file = load("challenge-id-hmac.json");
    let cases = file["cases"].as_array().unwrap();
    for case in cases {
        let name = s(case, "name").unwrap();
        let request_b64 = s(case, "requestB64url").unwrap();
        if let Some(request) = case.get("request") {
            let canonical = jcs::to_string(request).unwrap();
            if let Some(expected) = s(case, "requestJcs") {
                assert_eq!(canonical, expected, "{name}: JCS");
            }
            assert_eq!(
                base64url::encode(&canonical),
                request_b64,
                "{name}: request b64"
            );
        }
        let slots = BindingSlots {
            realm: s(case, "realm").unwrap(),
            method: s(case, "method").unwrap(),
            intent: s(case, "intent").unwrap(),
            request: request_b64,
            expires: s(case, "expires"),
            digest: s(case, "digest"),
            opaque: s(case, "opaque"),
            header: s(case, "header"),
        };
        if let Some(input) = s(case, "hmacInput") {
            assert_eq!(slots.input_string(), input, "{name}: HMAC input");
        }
        let secret = s(case, "secretKey").unwrap();
        let expected = s(case, "expectedId").unwrap();
        assert_eq!(
            compute_challenge_id(secret.as_bytes(), &slots),
            expected,
            "{name}"
        );
        // The production key type agrees wherever the secret is long enough for it.
        if let Ok(key) = ChallengeSecret::new(secret) {
            assert_eq!(
                key.challenge_id(&slots),
                expected,
                "{name}: ChallengeSecret"
            );
            assert!(
                key.verify(expected, &slots, time::OffsetDateTime::UNIX_EPOCH),
                "{name}: verify"
            );
        }
    }
    assert_eq!(cases.len(), 44, "challenge-id-hmac.json case count");
    eprintln!("challenge-id-hmac: {} cases", cases.len());
}

/// The slots of the challenge in `challenge-id-canonical.json`.
fn canonical_id_slots(file: &Value) -> BindingSlots<'_> {
    BindingSlots {
        realm: s(file, "realm").unwrap(),
        method: s(file, "method").unwrap(),
        intent: s(file, "intent").unwrap(),
        request: s(file, "requestB64url").unwrap(),
        expires: s(file, "expires"),
        digest: None,
        opaque: None,
        header: None,
    }
}

#[test]
fn challenge_id_canonical_spelling() {
    let file = load("challenge-id-canonical.json");
    let slots = canonical_id_slots(&file);
    let request = jcs::to_string(&file["request"]).unwrap();
    assert_eq!(base64url::encode(&request), slots.request, "request b64");
    assert_eq!(slots.input_string(), s(&file, "hmacInput").unwrap());
    let secret = ChallengeSecret::new(s(&file, "secretKey").unwrap()).unwrap();
    let id = s(&file, "id").unwrap();
    assert_eq!(secret.challenge_id(&slots), id);
    let now = parse_timestamp(s(&file, "issuedAt").unwrap()).unwrap();
    assert!(secret.verify(id, &slots, now), "the canonical id verifies");
    let tag = base64url::decode(id).unwrap();
    let cases = file["nonCanonical"].as_array().unwrap();
    for case in cases {
        let spelling = s(case, "id").unwrap();
        let why = s(case, "why").unwrap();
        // Each is a real malleation: the lenient decoder reads the same tag from it.
        assert_eq!(base64url::decode(spelling).unwrap(), tag, "{why}");
        assert!(!secret.verify(spelling, &slots, now), "{why}: {spelling}");
    }
    assert_eq!(cases.len(), 8, "challenge-id-canonical.json case count");
    eprintln!("challenge-id-canonical: 1 id, {} spellings", cases.len());
}

fn www_authenticate_wire(case: &Value) -> String {
    if let Some(wire) = s(case, "wire") {
        return wire.to_owned();
    }
    let template = s(case, "wireTemplate").unwrap();
    assert!(template.contains("<16385 x 'a'>"));
    template.replace("<16385 x 'a'>", &"a".repeat(16385))
}

#[test]
fn www_authenticate_parsing() {
    let file = load("header-parsing.json");
    let cases = file["wwwAuthenticate"].as_array().unwrap();
    for case in cases {
        let name = s(case, "name").unwrap();
        let wire = www_authenticate_wire(case);
        let expect = &case["expect"];
        let parsed = Challenge::parse_all(&wire);
        if expect["ok"] == false {
            assert!(parsed.is_err(), "{name}: expected an error, got {parsed:?}");
            continue;
        }
        let challenges = parsed.unwrap_or_else(|e| panic!("{name}: {e}"));
        if let Some(count) = expect.get("challengeCount") {
            assert_eq!(challenges.len() as u64, count.as_u64().unwrap(), "{name}");
        }
        if let Some(ids) = expect.get("ids") {
            let got: Vec<&str> = challenges.iter().map(|c| c.id.as_str()).collect();
            let want: Vec<&str> = ids
                .as_array()
                .unwrap()
                .iter()
                .filter_map(Value::as_str)
                .collect();
            assert_eq!(got, want, "{name}");
        }
        let first = &challenges[0];
        for (field, got) in [
            ("id", Some(first.id.as_str())),
            ("realm", Some(first.realm.as_str())),
            ("method", Some(first.method.as_str())),
            ("intent", Some(first.intent.as_str())),
            ("description", first.description.as_deref()),
        ] {
            if let Some(want) = s(expect, field) {
                assert_eq!(got, Some(want), "{name}: {field}");
            }
        }
        if let Some(request) = expect.get("request") {
            assert_eq!(
                &Value::Object(first.request.value().clone()),
                request,
                "{name}: request"
            );
        }
        if case["formatRoundtrip"] == true {
            assert_eq!(
                first.to_header_value().unwrap(),
                wire,
                "{name}: format round trip"
            );
        }
    }
    let format_cases = file["wwwAuthenticateFormat"].as_array().unwrap();
    for case in format_cases {
        let object = &case["object"];
        let mut builder = Challenge::builder(
            s(object, "realm").unwrap(),
            s(object, "method").unwrap(),
            s(object, "intent").unwrap(),
            object["request"].clone(),
        )
        .unwrap();
        if let Some(d) = s(object, "description") {
            builder = builder.description(d);
        }
        let challenge = builder.with_id(s(object, "id").unwrap());
        assert_eq!(
            challenge.to_header_value().is_ok(),
            case["expect"]["ok"] == true,
            "{}",
            s(case, "name").unwrap()
        );
    }
    assert_eq!(
        cases.len() + format_cases.len(),
        30,
        "header-parsing case count"
    );
    eprintln!(
        "www-authenticate: {} cases",
        cases.len() + format_cases.len()
    );
}

#[test]
fn authorization_parsing() {
    let file = load("header-parsing.json");
    let cases = file["authorization"].as_array().unwrap();
    for case in cases {
        let name = s(case, "name").unwrap();
        let expect = &case["expect"];
        let parsed = Credential::from_authorization(s(case, "wire").unwrap());
        if expect["ok"] == false {
            match s(expect, "problem") {
                Some("malformed-credential") => assert!(
                    matches!(parsed, Err(CredentialError::Malformed(_))),
                    "{name}: {parsed:?}"
                ),
                _ => assert!(parsed.is_err(), "{name}"),
            }
            continue;
        }
        let credential = parsed.unwrap_or_else(|e| panic!("{name}: {e}"));
        if let Some(id) = s(expect, "challengeId") {
            assert_eq!(credential.challenge.id, id, "{name}");
        }
        if let Some(t) = s(expect, "payloadType") {
            assert_eq!(credential.payload["type"], t, "{name}");
        }
        if let Some(request) = expect.get("requestDecoded") {
            assert_eq!(
                &Value::Object(credential.challenge.request.value().clone()),
                request,
                "{name}"
            );
        }
        if let Some(header) = s(expect, "challengeHeader") {
            assert_eq!(
                credential.challenge.header.as_deref(),
                Some(header),
                "{name}"
            );
        }
        // Our own encoding of what we decoded decodes to the same credential.
        let again = Credential::from_authorization(&credential.to_authorization()).unwrap();
        assert_eq!(again, credential, "{name}: re-encode");
    }
    assert_eq!(cases.len(), 8);
    eprintln!("authorization: {} cases", cases.len());
}

#[test]
fn base64url_vectors() {
    let file = load("base64url.json");
    let roundtrip = file["roundtrip"].as_array().unwrap();
    for case in roundtrip {
        let decoded = s(case, "decoded").unwrap();
        let encoded = s(case, "encoded").unwrap();
        assert_eq!(base64url::encode(decoded), encoded);
        assert_eq!(base64url::decode_utf8(encoded).unwrap(), decoded);
    }
    let reject = file["mustReject"].as_array().unwrap();
    for case in reject {
        assert!(base64url::decode_utf8(s(case, "encoded").unwrap()).is_err());
    }
    assert_eq!(roundtrip.len() + reject.len(), 12);
    eprintln!("base64url: {} cases", roundtrip.len() + reject.len());
}

#[test]
fn body_digest_vectors() {
    let file = load("body-digest.json");
    let cases = file["cases"].as_array().unwrap();
    for case in cases {
        let body = s(case, "bodyUtf8").unwrap().as_bytes();
        let sdk = s(case, "sdkForm").unwrap();
        assert_eq!(body_digest(body), sdk);
        assert!(verify_body_digest(sdk, body));
        assert!(verify_body_digest(s(case, "rfc9530Form").unwrap(), body));
        assert!(!verify_body_digest(sdk, b"something else"));
    }
    assert_eq!(cases.len(), 3);
    eprintln!("body-digest: {} cases", cases.len());
}

#[test]
fn receipt_vectors() {
    let file = load("receipts.json");
    let cases = file["cases"].as_array().unwrap();
    for case in cases {
        let name = s(case, "name").unwrap();
        let header = s(case, "header").unwrap();
        let from_json: Receipt = serde_json::from_value(case["json"].clone()).unwrap();
        let decoded = Receipt::from_header_value(header).unwrap();
        assert_eq!(decoded, from_json, "{name}");
        assert_eq!(
            Receipt::from_header_value(&decoded.to_header_value()).unwrap(),
            decoded,
            "{name}: re-encode"
        );
    }
    // The mppx snapshot is reproduced byte for byte.
    let snapshot = &cases[0];
    let receipt: Receipt = serde_json::from_value(snapshot["json"].clone()).unwrap();
    assert_eq!(receipt.to_header_value(), s(snapshot, "header").unwrap());
    assert_eq!(cases.len(), 3);
    eprintln!("receipts: {} cases", cases.len());
}

#[test]
fn charge_wire_example() {
    let file = load("charge-wire-example.json");
    let c = &file["challenge"];
    let secret = ChallengeSecret::new(s(&file, "secretKey").unwrap()).unwrap();
    let challenge = Challenge::builder(
        s(c, "realm").unwrap(),
        s(c, "method").unwrap(),
        s(c, "intent").unwrap(),
        c["request"].clone(),
    )
    .unwrap()
    .expires(s(c, "expires").unwrap())
    .sign(&secret);
    assert_eq!(challenge.request.wire(), s(c, "requestB64url").unwrap());
    assert_eq!(
        challenge.binding_slots().input_string(),
        s(c, "hmacInput").unwrap()
    );
    assert_eq!(challenge.id, s(c, "id").unwrap());

    // The 402 response: header and problem body.
    let response = &file["response402"];
    assert_eq!(
        challenge.to_header_value().unwrap(),
        s(&response["headers"], "WWW-Authenticate").unwrap()
    );
    let problem = Problem::new(ProblemType::PaymentRequired, "Payment is required.")
        .with_challenge_id(&challenge.id);
    assert_eq!(serde_json::to_value(&problem).unwrap(), response["body"]);

    // The credential decodes to the vector's JSON and its echo verifies.
    let credential_vector = &file["credential"];
    let credential =
        Credential::from_authorization(s(credential_vector, "authorizationHeader").unwrap())
            .unwrap();
    assert_eq!(credential.to_json(), credential_vector["json"]);
    assert_eq!(credential.challenge, challenge.clone());
    let now = parse_timestamp(s(c, "expires").unwrap()).unwrap();
    assert!(
        secret.verify(
            &credential.challenge.id,
            &credential
                .challenge
                .binding_slots_for_realm("api.example.com"),
            now
        )
    );
    assert!(
        !secret.verify(
            &credential.challenge.id,
            &credential
                .challenge
                .binding_slots_for_realm("evil.example.com"),
            now
        )
    );

    // The receipt, byte for byte.
    let r = &file["receipt"]["json"];
    let receipt = Receipt::success(
        s(r, "method").unwrap(),
        s(r, "reference").unwrap(),
        s(r, "timestamp").unwrap(),
    );
    assert_eq!(
        receipt.to_json(),
        s(&file["receipt"], "jsonCompact").unwrap()
    );
    assert_eq!(
        receipt.to_header_value(),
        s(&file["receipt"], "paymentReceiptHeader").unwrap()
    );
    eprintln!("charge-wire-example: 1 exchange (challenge, 402, credential, receipt)");
}

#[test]
fn spec_examples_decode() {
    let file = load("spec-examples.json");
    let cases = file["cases"].as_array().unwrap();
    let mut ran = 0;
    for case in cases {
        let name = s(case, "name").unwrap();
        // Some drafts' blobs are truncated in the source; only their decoded prose is given.
        let Some(b64) = s(case, "b64url") else {
            continue;
        };
        ran += 1;
        let decoded = base64url::decode_utf8(b64).unwrap();
        assert_eq!(decoded, s(case, "decoded").unwrap(), "{name}");
        if let Some(is_jcs) = case.get("isJcs").and_then(Value::as_bool) {
            let value: Value = serde_json::from_str(&decoded).unwrap();
            assert_eq!(
                jcs::to_string(&value).unwrap() == decoded,
                is_jcs,
                "{name}: isJcs"
            );
        }
        // Objects survive EncodedJson with their wire string kept verbatim.
        if decoded.starts_with('{') {
            let encoded = EncodedJson::from_wire(s(case, "b64url").unwrap()).unwrap();
            assert_eq!(encoded.wire(), s(case, "b64url").unwrap());
        }
    }
    assert_eq!(ran, 5);
    eprintln!("spec-examples: {ran} cases");
}
