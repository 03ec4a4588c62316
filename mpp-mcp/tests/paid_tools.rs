//! Paid tools end to end over an in-process byte stream (what stdio carries), with mpp-core's
//! in-process test method: the exact `-32042`, success with the receipt, free tools, every
//! refusal, charge on success, and the capability.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use mpp_core::expiry::ManualClock;
use mpp_core::mcp::{META_CREDENTIAL, META_RECEIPT};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use support::{Api, SharedClock, call, credential, start, test_gate};

#[tokio::test]
async fn an_unpaid_call_gets_32042_with_the_challenges_and_the_tool_does_not_run() {
    let (api, method) = (Api::default(), test_gate());
    let client = start(&api, method.gate.clone()).await;
    let error = call(&client, "search", json!({"q": "rust"}), None)
        .await
        .unwrap_err();
    assert_eq!(error.code.0, -32042);
    assert_eq!(error.message, "Payment Required");
    let data = error.data.unwrap();
    let mut keys: Vec<&str> = data
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(keys, ["challenges", "httpStatus", "problem"]);
    assert_eq!(data["httpStatus"], 402);
    let challenges = data["challenges"].as_array().unwrap();
    assert_eq!(challenges.len(), 1);
    let challenge = &challenges[0];
    let mut keys: Vec<&str> = challenge
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "expires", "id", "intent", "method", "opaque", "realm", "request"
        ]
    );
    assert_eq!(challenge["realm"], "api.example.com");
    assert_eq!(
        (&challenge["method"], &challenge["intent"]),
        (&json!("test"), &json!("charge"))
    );
    // The terms as an object (not base64url), the scope as the opaque string.
    assert_eq!(challenge["request"]["amount"], "10000");
    assert!(challenge["opaque"].is_string());
    assert_eq!(
        data["problem"],
        json!({
            "type": "https://paymentauth.org/problems/payment-required",
            "title": "Payment Required",
            "status": 402,
            "detail": "Payment is required: 0.01 (10000 base units).",
            "challengeId": challenge["id"],
        })
    );
    assert_eq!(api.searches(), 0);
    assert_eq!(method.test.verifications(), 0);
}

#[tokio::test]
async fn a_paid_call_runs_the_tool_once_and_returns_the_receipt() {
    let (api, method) = (Api::default(), test_gate());
    let client = start(&api, method.gate.clone()).await;
    let challenge = support::challenge(&client, "search").await;
    let paid = credential(&challenge, json!({"pay": "ref-1"}));
    let result = call(&client, "search", json!({"q": "rust"}), Some(paid))
        .await
        .unwrap();
    assert_ne!(result.is_error, Some(true));
    assert_eq!(
        support::text(&result),
        "results for rust (paid by did:test:payer, 10000)"
    );
    let receipt = &result.meta.as_ref().unwrap()[META_RECEIPT];
    assert_eq!(receipt["status"], "success");
    assert_eq!(receipt["method"], "test");
    assert_eq!(receipt["reference"], "ref-1");
    assert_eq!(receipt["challengeId"], challenge["id"]);
    assert_eq!(api.searches(), 1);
    assert_eq!(method.test.charges(), 1);
    assert!(method.test.served("ref-1"));
}

#[tokio::test]
async fn a_free_tool_ignores_credentials() {
    let (api, method) = (Api::default(), test_gate());
    let client = start(&api, method.gate.clone()).await;
    let plain = call(&client, "status", json!({}), None).await.unwrap();
    assert_eq!(support::text(&plain), "up");
    assert!(plain.meta.is_none());
    // Even one that would not decode, or a genuine one for a paid tool: not looked at.
    let challenge = support::challenge(&client, "search").await;
    for junk in [
        json!("Payment abc"),
        credential(&challenge, json!({"pay": "ref-free"})),
    ] {
        let result = call(&client, "status", json!({}), Some(junk))
            .await
            .unwrap();
        assert_eq!(support::text(&result), "up");
        assert!(result.meta.is_none());
    }
    assert_eq!(method.test.verifications(), 0);
}

#[tokio::test]
async fn a_malformed_credential_is_invalid_params() {
    let (api, method) = (Api::default(), test_gate());
    let client = start(&api, method.gate.clone()).await;
    for junk in [
        json!("Payment abc"),
        json!({"payload": {}}),
        json!({"challenge": {"id": 1}}),
    ] {
        let error = call(&client, "search", json!({"q": "x"}), Some(junk))
            .await
            .unwrap_err();
        assert_eq!(error.code.0, -32602, "{error:?}");
        let data = error.data.unwrap();
        assert_eq!(
            data["problem"]["type"],
            "https://paymentauth.org/problems/malformed-credential"
        );
        // A fresh challenge to pay instead.
        assert_eq!(data["challenges"].as_array().map(Vec::len), Some(1));
    }
    // A payload the method cannot read is invalid params too (as mppx maps it).
    let challenge = support::challenge(&client, "search").await;
    let error = call(
        &client,
        "search",
        json!({"q": "x"}),
        Some(credential(&challenge, json!({"what": 1}))),
    )
    .await
    .unwrap_err();
    assert_eq!(error.code.0, -32602);
    assert_eq!(api.searches(), 0);
}

#[tokio::test]
async fn a_tampered_challenge_is_refused_with_32043() {
    let (api, method) = (Api::default(), test_gate());
    let client = start(&api, method.gate.clone()).await;
    let mut challenge = support::challenge(&client, "search").await;
    challenge["request"]["amount"] = json!("1");
    let error = call(
        &client,
        "search",
        json!({"q": "x"}),
        Some(credential(&challenge, json!({"pay": "cheap"}))),
    )
    .await
    .unwrap_err();
    assert_eq!(error.code.0, -32043);
    let data = error.data.unwrap();
    assert_eq!(data["httpStatus"], 402);
    assert_eq!(data["failure"]["reason"], "invalid-challenge");
    assert_eq!(
        data["problem"]["type"],
        "https://paymentauth.org/problems/invalid-challenge"
    );
    assert_eq!(data["challenges"].as_array().map(Vec::len), Some(1));
    assert_eq!((api.searches(), method.test.verifications()), (0, 0));
}

#[tokio::test]
async fn a_challenge_of_another_tool_does_not_pay_this_one() {
    let (api, method) = (Api::default(), test_gate());
    let client = start(&api, method.gate.clone()).await;
    // Same price, other tool: only the scope tells them apart.
    let challenge = support::challenge(&client, "premium").await;
    let error = call(
        &client,
        "search",
        json!({"q": "x"}),
        Some(credential(&challenge, json!({"pay": "other"}))),
    )
    .await
    .unwrap_err();
    assert_eq!(error.code.0, -32043);
    assert_eq!(
        error.data.unwrap()["failure"]["detail"],
        "the challenge was issued for another route"
    );
    assert_eq!(api.searches(), 0);
}

#[tokio::test]
async fn a_replayed_credential_is_refused() {
    let (api, method) = (Api::default(), test_gate());
    let client = start(&api, method.gate.clone()).await;
    let challenge = support::challenge(&client, "search").await;
    let paid = credential(&challenge, json!({"pay": "once"}));
    call(&client, "search", json!({"q": "a"}), Some(paid.clone()))
        .await
        .unwrap();
    let error = call(&client, "search", json!({"q": "b"}), Some(paid))
        .await
        .unwrap_err();
    assert_eq!(error.code.0, -32043);
    assert_eq!(
        error.data.unwrap()["failure"]["reason"],
        "verification-failed"
    );
    assert_eq!((api.searches(), method.test.charges()), (1, 1));
}

#[tokio::test]
async fn an_expired_challenge_is_refused() {
    let clock = Arc::new(ManualClock::new(time::OffsetDateTime::now_utc()));
    let method = support::test_gate_with(|gate| gate.clock(SharedClock(clock.clone())));
    let api = Api::default();
    let client = start(&api, method.gate.clone()).await;
    let challenge = support::challenge(&client, "search").await;
    clock.advance(Duration::from_secs(301));
    let error = call(
        &client,
        "search",
        json!({"q": "late"}),
        Some(credential(&challenge, json!({"pay": "late"}))),
    )
    .await
    .unwrap_err();
    assert_eq!(error.code.0, -32043);
    let data = error.data.unwrap();
    assert_eq!(data["failure"]["reason"], "payment-expired");
    assert_ne!(data["challenges"][0]["id"], challenge["id"]);
    assert_eq!(api.searches(), 0);
}

#[tokio::test]
async fn a_tool_that_fails_after_payment_takes_no_money() {
    let (api, method) = (Api::default(), test_gate());
    let client = start(&api, method.gate.clone()).await;

    // A tool error (`isError: true`): the result goes out, without a receipt; nothing taken.
    let challenge = support::challenge(&client, "flaky").await;
    let paid = credential(&challenge, json!({"pay": "flaky-1"}));
    let result = call(&client, "flaky", json!({}), Some(paid.clone()))
        .await
        .unwrap();
    assert_eq!(result.is_error, Some(true));
    assert!(
        result
            .meta
            .as_ref()
            .is_none_or(|m| !m.contains_key(META_RECEIPT))
    );
    assert_eq!(method.test.charges(), 0);
    // The payment was released, not spent: the same credential pays a retry.
    let again = call(&client, "flaky", json!({}), Some(paid)).await.unwrap();
    assert_eq!(again.is_error, Some(true));

    // A JSON-RPC error from the tool: passed on as it is; nothing taken either.
    let challenge = support::challenge(&client, "broken").await;
    let error = call(
        &client,
        "broken",
        json!({}),
        Some(credential(&challenge, json!({"pay": "broken-1"}))),
    )
    .await
    .unwrap_err();
    assert_eq!(
        (error.code.0, error.message.as_ref()),
        (-32603, "the index is down")
    );
    assert_eq!(method.test.charges(), 0);
    assert_eq!(method.test.verifications(), 3);
}

#[tokio::test]
async fn a_payment_that_cannot_be_taken_withholds_the_result() {
    let (api, method) = (Api::default(), test_gate());
    let client = start(&api, method.gate.clone()).await;
    let challenge = support::challenge(&client, "search").await;
    let error = call(
        &client,
        "search",
        json!({"q": "x"}),
        Some(credential(
            &challenge,
            json!({"pay": "r", "settle": "fail"}),
        )),
    )
    .await
    .unwrap_err();
    assert_eq!(error.code.0, -32043);
    // Infrastructure down at that point: an internal error, retryable, no challenge.
    let error = call(
        &client,
        "search",
        json!({"q": "x"}),
        Some(credential(
            &challenge,
            json!({"pay": "s", "settle": "down"}),
        )),
    )
    .await
    .unwrap_err();
    assert_eq!(error.code.0, -32603);
    let data = error.data.unwrap();
    assert_eq!(
        (data["httpStatus"].clone(), data["retryAfter"].clone()),
        (json!(503), json!(1))
    );
    assert_eq!(method.test.charges(), 0);
}

#[tokio::test]
async fn the_capability_names_the_accepted_methods() {
    let (api, method) = (Api::default(), test_gate());
    let client = start(&api, method.gate.clone()).await;
    let info = client.peer_info().unwrap();
    let experimental = info.capabilities.experimental.clone().unwrap();
    assert_eq!(
        Value::Object(experimental["payment"].clone()),
        json!({"methods": {"test": {"intents": ["charge"]}}})
    );
    // The inner server's own capabilities are kept.
    assert!(info.capabilities.tools.is_some());
    let tools = client.list_all_tools().await.unwrap();
    assert_eq!(tools.len(), 5);
}

#[tokio::test]
async fn a_credential_in_the_tools_meta_never_reaches_the_tool() {
    let (api, method) = (Api::default(), test_gate());
    let client = start(&api, method.gate.clone()).await;
    let challenge = support::challenge(&client, "premium").await;
    let result = call(
        &client,
        "premium",
        json!({}),
        Some(credential(&challenge, json!({"pay": "p"}))),
    )
    .await
    .unwrap();
    // `premium` answers with the `_meta` keys it was given.
    let seen = support::text(&result);
    assert!(seen.starts_with("meta: ["), "{seen}");
    assert!(!seen.contains(META_CREDENTIAL), "{seen}");
}
