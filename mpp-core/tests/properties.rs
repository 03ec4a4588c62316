//! Properties that must hold for every input: formatting then parsing is the identity, and no
//! parser panics on arbitrary bytes.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use mpp_core::accept_payment::AcceptPayment;
use mpp_core::amount::{DecimalAmount, format_base_units, parse_base_units};
use mpp_core::{Challenge, ChallengeSecret, Credential, EncodedJson, Receipt, base64url};
use proptest::prelude::*;
use serde_json::{Map, Value, json};

/// Printable text, including quotes, backslashes, commas, `=` and non-ASCII (but no control
/// characters, which formatting refuses).
fn text() -> impl Strategy<Value = String> {
    proptest::string::string_regex(r#"[ -~\u{a0}-\u{2fff}\u{1f600}-\u{1f64f}]{0,40}"#).unwrap()
}

fn json_leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        text().prop_map(Value::from),
        any::<u32>().prop_map(Value::from),
        any::<bool>().prop_map(Value::from),
        Just(Value::Null),
    ]
}

fn json_object() -> impl Strategy<Value = Map<String, Value>> {
    let value = json_leaf().prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map(text(), inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    });
    prop::collection::btree_map(text(), value, 0..5).prop_map(|m| m.into_iter().collect())
}

fn token() -> impl Strategy<Value = String> {
    "[a-z][a-z0-9-]{0,12}"
}

prop_compose! {
    fn challenge()(
        realm in text(),
        method in token(),
        intent in token(),
        request in json_object(),
        expires in proptest::option::of(Just("2025-01-06T12:05:00.000Z".to_owned())),
        digest in proptest::option::of("sha-256=[A-Za-z0-9+/]{43}="),
        description in proptest::option::of(text()),
        opaque in proptest::option::of(prop::collection::btree_map(text(), text(), 0..3)),
    ) -> Challenge {
        let mut b = Challenge::builder(realm, method, intent, Value::Object(request)).unwrap();
        if let Some(e) = expires { b = b.expires(e); }
        if let Some(d) = digest { b = b.digest(d); }
        if let Some(d) = description { b = b.description(d); }
        if let Some(o) = opaque {
            let map: Map<String, Value> = o.into_iter().map(|(k, v)| (k, Value::from(v))).collect();
            b = b.opaque(EncodedJson::from_map(map).unwrap());
        }
        b.sign(&ChallengeSecret::new("property-test-secret-0123456789abcdef").unwrap())
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn challenge_format_then_parse_is_identity(c in challenge()) {
        let header = c.to_header_value().unwrap();
        prop_assert_eq!(Challenge::parse_all(&header).unwrap(), vec![c]);
    }

    #[test]
    fn two_challenges_in_one_field(a in challenge(), b in challenge()) {
        let joined = format!("{}, {}", a.to_header_value().unwrap(), b.to_header_value().unwrap());
        prop_assert_eq!(Challenge::parse_all(&joined).unwrap(), vec![a, b]);
    }

    #[test]
    fn credential_encode_then_decode_is_identity(
        c in challenge(),
        payload in json_object(),
        source in proptest::option::of(text()),
    ) {
        let mut credential = Credential::new(c.clone(), Value::Object(payload));
        credential.source = source;
        let decoded = Credential::from_authorization(&credential.to_authorization()).unwrap();
        prop_assert_eq!(decoded, credential);
    }

    #[test]
    fn receipt_encode_then_decode_is_identity(reference in text(), method in token(), extra in json_object()) {
        let mut receipt = Receipt::success(method, reference, "2025-01-06T12:00:30.000Z");
        // Keys the struct owns cannot also be extras.
        receipt.extra = extra.into_iter()
            .filter(|(k, _)| !["method", "reference", "status", "timestamp", "externalId"].contains(&k.as_str()))
            .collect();
        prop_assert_eq!(Receipt::from_header_value(&receipt.to_header_value()).unwrap(), receipt);
    }

    #[test]
    fn base64url_round_trip(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let encoded = base64url::encode(&bytes);
        prop_assert!(!encoded.contains('=') && !encoded.contains('+') && !encoded.contains('/'));
        prop_assert_eq!(base64url::decode(&encoded).unwrap(), bytes);
    }

    #[test]
    fn base_units_round_trip(units in any::<u128>(), decimals in 0u8..=18) {
        let display = format_base_units(units, decimals);
        let parsed: DecimalAmount = display.parse().unwrap();
        prop_assert_eq!(parsed.to_base_units(decimals).unwrap(), units);
        prop_assert_eq!(parse_base_units(&units.to_string()).unwrap(), units);
    }

    #[test]
    fn decimal_arithmetic_is_base_unit_arithmetic(
        a in any::<u64>(),
        b in any::<u64>(),
        count in any::<u32>(),
        decimals in 0u8..=18,
    ) {
        let (a, b) = (u128::from(a), u128::from(b));
        let x = DecimalAmount::from_base_units(a, decimals);
        let y = DecimalAmount::from_base_units(b, decimals);
        prop_assert_eq!(x.to_base_units(decimals).unwrap(), a);
        prop_assert_eq!(x.to_string(), format_base_units(a, decimals));
        let sum = x.checked_add(y).unwrap();
        prop_assert_eq!(sum.to_base_units(decimals).unwrap(), a + b);
        let product = x.checked_mul(u64::from(count)).unwrap();
        prop_assert_eq!(product.to_base_units(decimals).unwrap(), a * u128::from(count));
        // Equal values are equal however they were made.
        prop_assert_eq!(sum.to_string().parse::<DecimalAmount>().unwrap(), sum);
    }

    #[test]
    fn parsers_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let text = String::from_utf8_lossy(&bytes);
        let _ = Challenge::parse_all(&text);
        let _ = Credential::from_authorization(&text);
        let _ = Credential::from_token(&text);
        let _ = Receipt::from_header_value(&text);
        let _ = EncodedJson::from_wire(&text);
        let _ = DecimalAmount::parse(&text);
        let _ = parse_base_units(&text);
        let _ = text.parse::<AcceptPayment>();
        let _ = base64url::decode(&text);
        let _ = mpp_core::expiry::parse_timestamp(&text);
        let _ = text.parse::<mpp_core::did::PkhDid>();
    }

    #[test]
    fn parsers_never_panic_on_near_valid_headers(
        prefix in "[Pp]ayment ?",
        params in prop::collection::vec(("[a-zA-Z]{1,8}", "[ -~]{0,20}", any::<bool>()), 0..8),
    ) {
        let mut header = prefix;
        for (name, value, quoted) in params {
            if quoted {
                header.push_str(&format!("{name}=\"{value}\", "));
            } else {
                header.push_str(&format!("{name}={value}, "));
            }
        }
        let _ = Challenge::parse_all(&header);
    }

    #[test]
    fn tampering_any_bound_slot_breaks_the_id(c in challenge(), which in 0usize..5) {
        let secret = ChallengeSecret::new("property-test-secret-0123456789abcdef").unwrap();
        let mut echo = c.clone();
        match which {
            0 => echo.method.push('x'),
            1 => echo.intent.push('x'),
            2 => echo.request = EncodedJson::from_value(json!({"tampered": true})).unwrap(),
            3 => echo.expires = Some("2099-01-01T00:00:00.000Z".into()),
            _ => echo.digest = Some("sha-256=AAAA".into()),
        }
        prop_assume!(echo != c.clone());
        let now = time::OffsetDateTime::UNIX_EPOCH;
        prop_assert!(secret.verify(&c.id, &c.clone().binding_slots_for_realm(&c.realm), now));
        prop_assert!(!secret.verify(&c.id, &echo.binding_slots_for_realm(&c.realm), now));
    }
}
