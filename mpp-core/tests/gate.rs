//! The payment gate without any transport: what a Lightning-like method that prepares every
//! challenge, a session-like method that accepts expired challenges, and a method with its own
//! problem type can rely on; and the refusal values transports render.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use mpp_core::expiry::{FixedClock, format_timestamp, parse_timestamp};
use mpp_core::gate::{PaymentGate, PricedTerms, RefusalReason, RequestContext};
use mpp_core::method::{PrepareContext, PreparedChallenge};
use mpp_core::problem::CustomProblem;
use mpp_core::testing::TestMethod;
use mpp_core::{
    BoxFuture, Challenge, Credential, EncodedJson, Method, MethodError, PriceTerms, ProblemType,
    Receipt, Verified, VerifyContext,
};
use serde_json::{Value, json};
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use time::macros::datetime;

const SECRET: &str = "gate-test-secret-0123456789abcdef-xyz";

/// Drives a future whose awaits are all ready (the methods here do no I/O).
fn block_on<F: Future>(f: F) -> F::Output {
    let waker = std::task::Waker::noop();
    let mut cx = std::task::Context::from_waker(waker);
    let mut f = std::pin::pin!(f);
    loop {
        if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
    }
}

fn price(amount: &str) -> PricedTerms {
    PricedTerms::new(PriceTerms::charge(amount.parse().unwrap()))
}

static INVOICE_EXPIRED: CustomProblem = CustomProblem {
    uri: "https://example.com/problems/invoice-expired",
    title: "Invoice Expired",
    status: 402,
};

/// Creates an "invoice" for every challenge (living 60 s), like a Lightning method would,
/// accepts credentials of expired challenges when the payload says `"voucher"` (as sessions
/// do for vouchers), and refuses `"stale"` payloads with its own problem type.
#[derive(Default)]
struct Invoicing {
    invoices: AtomicUsize,
}

impl Method for Invoicing {
    fn name(&self) -> &str {
        "invoice"
    }
    fn supports_intent(&self, intent: &str) -> bool {
        intent == "charge"
    }
    fn request(&self, terms: &PriceTerms) -> Result<Value, MethodError> {
        Ok(json!({"amount": terms.amount.to_base_units(3)?.to_string(), "currency": "msat"}))
    }
    fn prepare_challenge<'a>(
        &'a self,
        ctx: PrepareContext<'a>,
    ) -> Option<BoxFuture<'a, Result<PreparedChallenge, MethodError>>> {
        Some(Box::pin(async move {
            let n = self.invoices.fetch_add(1, Ordering::SeqCst);
            if ctx.offered.value()["amount"] == "666" {
                return Err(MethodError::unavailable("lightning node down"));
            }
            let mut request = ctx.offered.value().clone();
            request.insert("invoice".into(), Value::from(format!("lnbc-{n}")));
            Ok(PreparedChallenge {
                request: EncodedJson::from_map(request).unwrap(),
                expires: Some(ctx.now + time::Duration::seconds(60)),
            })
        }))
    }
    fn accepts_expired(&self, credential: &Credential) -> bool {
        credential.payload["kind"] == "voucher"
    }
    fn verify<'a>(
        &'a self,
        ctx: VerifyContext<'a>,
    ) -> BoxFuture<'a, Result<Verified, MethodError>> {
        Box::pin(async move {
            if ctx.credential.payload["kind"] == "stale" {
                return Err(MethodError::rejected(
                    ProblemType::Custom(&INVOICE_EXPIRED),
                    "that invoice is gone",
                ));
            }
            let invoice = ctx.request["invoice"].as_str().unwrap_or("?");
            Ok(Verified::serve(Receipt::success(
                "invoice",
                invoice,
                format_timestamp(ctx.now),
            )))
        })
    }
}

fn gate_at(now: time::OffsetDateTime, method: impl Method) -> PaymentGate {
    PaymentGate::new(SECRET)
        .unwrap()
        .clock(FixedClock::new(now))
        .method(method)
}

#[test]
fn a_method_prepares_each_challenge_and_may_shorten_it() {
    let now = datetime!(2026-03-01 10:00:00 UTC);
    let gate = gate_at(now, Invoicing::default());
    let offers = price("0.5").offers(&gate).unwrap();
    let cx = RequestContext::new("api.example.com", gate.now());
    let first = block_on(gate.challenges(&offers, &cx)).unwrap();
    let second = block_on(gate.challenges(&offers, &cx)).unwrap();
    assert_eq!(first[0].request.value()["invoice"], "lnbc-0");
    assert_eq!(second[0].request.value()["invoice"], "lnbc-1");
    assert_ne!(first[0].id, second[0].id);
    // The invoice lives 60 s, the challenge would live 300 s: the shorter wins.
    assert_eq!(
        parse_timestamp(first[0].expires.as_deref().unwrap()).unwrap(),
        now + Duration::from_secs(60)
    );
    // A prepared challenge comes back and pays (pinning compares the route's fields).
    let credential = Credential::new(first[0].clone(), json!({"kind": "pay"}));
    let admitted = block_on(gate.admit(&offers, Some(Ok(credential)), &cx)).unwrap();
    assert_eq!(admitted.verified.receipt.reference, "lnbc-0");
}

#[test]
fn a_failed_preparation_is_503_not_a_challenge_without_terms() {
    let gate = gate_at(datetime!(2026-03-01 10:00:00 UTC), Invoicing::default());
    let offers = price("0.666").offers(&gate).unwrap();
    let cx = RequestContext::new("api.example.com", gate.now());
    let refusal = block_on(gate.admit(&offers, None, &cx)).unwrap_err();
    assert_eq!(refusal.reason(), RefusalReason::Unavailable);
    assert_eq!(refusal.status(), 503);
    assert_eq!(refusal.retry_after(), Some(1));
    assert!(refusal.challenges().is_empty());
    assert!(!refusal.detail().contains("lightning"));
}

#[test]
fn expired_challenges_pass_only_where_the_method_accepts_them() {
    let issued_at = datetime!(2026-03-01 10:00:00 UTC);
    let gate = gate_at(issued_at, Invoicing::default());
    let offers = price("0.5").offers(&gate).unwrap();
    let cx = RequestContext::new("api.example.com", gate.now());
    let challenge = block_on(gate.challenges(&offers, &cx)).unwrap().remove(0);

    // Same secret and methods, ten minutes later.
    let later = gate
        .clone()
        .clock(FixedClock::new(issued_at + Duration::from_secs(600)));
    let offers = price("0.5").offers(&later).unwrap();
    let cx = RequestContext::new("api.example.com", later.now());
    let pay = Credential::new(challenge.clone(), json!({"kind": "pay"}));
    let refusal = block_on(later.admit(&offers, Some(Ok(pay)), &cx)).unwrap_err();
    assert_eq!(refusal.problem_type(), Some(ProblemType::PaymentExpired));
    let voucher = Credential::new(challenge, json!({"kind": "voucher"}));
    assert!(block_on(later.admit(&offers, Some(Ok(voucher)), &cx)).is_ok());
}

#[test]
fn a_method_can_refuse_with_its_own_problem_type() {
    let gate = gate_at(datetime!(2026-03-01 10:00:00 UTC), Invoicing::default());
    let offers = price("0.5").offers(&gate).unwrap();
    let cx = RequestContext::new("api.example.com", gate.now());
    let challenge = block_on(gate.challenges(&offers, &cx)).unwrap().remove(0);
    let stale = Credential::new(challenge, json!({"kind": "stale"}));
    let refusal = block_on(gate.admit(&offers, Some(Ok(stale)), &cx)).unwrap_err();
    let problem = refusal.to_problem();
    assert_eq!(problem.type_uri, INVOICE_EXPIRED.uri);
    assert_eq!(problem.title, "Invoice Expired");
    assert_eq!(refusal.status(), 402);
    // A fresh (freshly prepared) challenge comes with it, and the problem names it.
    assert_eq!(refusal.challenges().len(), 1);
    assert_eq!(
        problem.challenge_id.as_deref(),
        Some(refusal.challenges()[0].id.as_str())
    );
}

#[test]
fn scope_and_realm_are_the_transports_and_bind_the_challenge() {
    let gate = PaymentGate::new(SECRET)
        .unwrap()
        .method(TestMethod::new("test"));
    let offers = price("0.01").offers(&gate).unwrap();
    let search = EncodedJson::from_value(json!({"tool": "search"})).unwrap();
    let fetch = EncodedJson::from_value(json!({"tool": "fetch"})).unwrap();
    let cx = RequestContext::new("mcp.example.com", gate.now()).scope(&search);
    let challenge = block_on(gate.challenges(&offers, &cx)).unwrap().remove(0);
    assert_eq!(challenge.opaque.as_ref(), Some(&search));

    let other_tool = RequestContext::new("mcp.example.com", gate.now()).scope(&fetch);
    let credential = Credential::new(challenge.clone(), json!({"pay": "s1"}));
    let refusal = block_on(gate.admit(&offers, Some(Ok(credential)), &other_tool)).unwrap_err();
    assert_eq!(refusal.problem_type(), Some(ProblemType::InvalidChallenge));

    let other_realm = RequestContext::new("evil.example.com", gate.now()).scope(&search);
    let credential = Credential::new(challenge.clone(), json!({"pay": "s2"}));
    let refusal = block_on(gate.admit(&offers, Some(Ok(credential)), &other_realm)).unwrap_err();
    assert_eq!(refusal.problem_type(), Some(ProblemType::InvalidChallenge));

    let credential = Credential::new(challenge, json!({"pay": "s3"}));
    let admitted = block_on(gate.admit(&offers, Some(Ok(credential)), &cx)).unwrap();
    assert_eq!(admitted.credential.challenge.method, "test");
}

#[test]
fn offers_are_built_once_per_gate_and_checked() {
    let gate = PaymentGate::new(SECRET)
        .unwrap()
        .method(TestMethod::new("test"));
    let priced = price("0.01");
    let a = priced.offers(&gate).unwrap();
    let b = priced.offers(&gate).unwrap();
    assert!(std::ptr::eq(&a[0], &b[0]), "the cached offers are shared");
    // A changed gate (another method) gets its own offers.
    let two = gate.clone().method(TestMethod::new("second"));
    assert_eq!(priced.offers(&two).unwrap().len(), 2);
    // Terms no method can express are a configuration error.
    assert!(price("0.0000001").offers(&gate).is_err());
    let mut session = PriceTerms::session("0.001".parse().unwrap());
    session.unit_type = Some("token".into());
    assert!(gate.offers(&session).is_err(), "no method serves sessions");
}

#[test]
fn challenges_follow_accept_payment() {
    let gate = PaymentGate::new(SECRET)
        .unwrap()
        .method(TestMethod::new("alpha"))
        .method(TestMethod::new("beta"));
    let offers = price("0.01").offers(&gate).unwrap();
    let accept = "beta/charge, alpha/*;q=0.5".parse().unwrap();
    let cx = RequestContext::new("api", gate.now()).accept(Some(&accept));
    let names: Vec<String> = block_on(gate.challenges(&offers, &cx))
        .unwrap()
        .into_iter()
        .map(|c: Challenge| c.method)
        .collect();
    assert_eq!(names, ["beta", "alpha"]);
}

#[test]
fn a_route_can_name_payment_authorization_and_echoes_must_too() {
    let gate = PaymentGate::new(SECRET)
        .unwrap()
        .method(TestMethod::new("test"));
    let offers = price("0.01").offers(&gate).unwrap();
    let scope = EncodedJson::from_value(json!({"_mppx_scope": "GET /report"})).unwrap();
    let named = RequestContext::new("api.example.com", gate.now())
        .scope(&scope)
        .credential_header("Payment-Authorization");
    let challenge = block_on(gate.challenges(&offers, &named))
        .unwrap()
        .remove(0);
    assert_eq!(challenge.header.as_deref(), Some("Payment-Authorization"));
    assert!(
        challenge
            .to_header_value()
            .unwrap()
            .contains(r#"header="Payment-Authorization""#)
    );

    // A client that drops `header` from the echo breaks the binding.
    let mut stripped = challenge.clone();
    stripped.header = None;
    let refusal = block_on(gate.admit(
        &offers,
        Some(Ok(Credential::new(stripped, json!({"pay": "h1"})))),
        &named,
    ))
    .unwrap_err();
    assert_eq!(refusal.problem_type(), Some(ProblemType::InvalidChallenge));
    assert_eq!(
        refusal.challenges()[0].header.as_deref(),
        Some("Payment-Authorization")
    );

    // The same route read from `Authorization` does not take a challenge that named
    // `Payment-Authorization`, nor the reverse.
    let default = RequestContext::new("api.example.com", gate.now()).scope(&scope);
    let refusal = block_on(gate.admit(
        &offers,
        Some(Ok(Credential::new(challenge.clone(), json!({"pay": "h2"})))),
        &default,
    ))
    .unwrap_err();
    assert_eq!(refusal.problem_type(), Some(ProblemType::InvalidChallenge));
    assert!(
        refusal.detail().contains("credential header"),
        "{}",
        refusal.detail()
    );
    assert_eq!(refusal.challenges()[0].header, None);
    let plain = block_on(gate.challenges(&offers, &default))
        .unwrap()
        .remove(0);
    let refusal = block_on(gate.admit(
        &offers,
        Some(Ok(Credential::new(plain, json!({"pay": "h3"})))),
        &named,
    ))
    .unwrap_err();
    assert_eq!(refusal.problem_type(), Some(ProblemType::InvalidChallenge));

    // Naming `Authorization` is naming nothing; the header name is case-insensitive.
    let explicit = RequestContext::new("api.example.com", gate.now())
        .scope(&scope)
        .credential_header("authorization");
    assert_eq!(
        block_on(gate.challenges(&offers, &explicit)).unwrap()[0].header,
        None
    );
    let lower = RequestContext::new("api.example.com", gate.now())
        .scope(&scope)
        .credential_header("payment-authorization");
    let admitted = block_on(gate.admit(
        &offers,
        Some(Ok(Credential::new(challenge, json!({"pay": "h4"})))),
        &lower,
    ))
    .unwrap();
    assert_eq!(admitted.verified.receipt.reference, "h4");
}

#[test]
fn an_amount_a_method_cannot_express_is_told_apart_from_bad_terms() {
    use mpp_core::gate::OfferError;
    let gate = PaymentGate::new(SECRET)
        .unwrap()
        .method(TestMethod::new("test"));
    // More decimals than the currency: the amount's fault.
    let too_precise = PriceTerms::charge("0.0000001".parse().unwrap());
    match gate.offers(&too_precise) {
        Err(OfferError::Amount {
            method,
            amount,
            reason,
        }) => {
            assert_eq!(method, "test");
            assert_eq!(amount.to_string(), "0.0000001");
            assert!(reason.contains("decimal places"), "{reason}");
            assert!(!reason.contains("configuration"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    // Too large for 128 bits of base units: the amount's fault too.
    let huge = PriceTerms::charge(mpp_core::DecimalAmount::from_base_units(u128::MAX, 0));
    assert!(matches!(gate.offers(&huge), Err(OfferError::Amount { .. })));
    // A currency the method does not know fails at every amount: the terms' fault.
    let mut bad_currency = PriceTerms::charge("0.0000001".parse().unwrap());
    bad_currency.currency = Some("usd".into());
    assert!(matches!(
        gate.offers(&bad_currency),
        Err(OfferError::Method { .. })
    ));
}

#[test]
fn the_402_of_a_single_charge_offer_names_its_price() {
    let gate = PaymentGate::new(SECRET)
        .unwrap()
        .method(TestMethod::new("test"));
    let cx = RequestContext::new("api.example.com", gate.now());
    let offers = price("0.01").offers(&gate).unwrap();
    let refusal = block_on(gate.admit(&offers, None, &cx)).unwrap_err();
    assert_eq!(refusal.problem_type(), Some(ProblemType::PaymentRequired));
    assert_eq!(
        refusal.detail(),
        "Payment is required: 0.01 (10000 base units)."
    );
    // Two methods (their currencies may differ): no single price to name.
    let two = gate.clone().method(TestMethod::new("second"));
    let offers = price("0.01").offers(&two).unwrap();
    let refusal = block_on(two.admit(&offers, None, &cx)).unwrap_err();
    assert_eq!(refusal.detail(), "Payment is required.");
}

/// Asserts a 402 `invalid-challenge` shaped like every other: a fresh challenge, named by
/// the problem.
fn assert_invalid_challenge(refusal: &mpp_core::gate::Refusal, what: &str) {
    assert_eq!(refusal.status(), 402, "{what}");
    assert_eq!(
        refusal.problem_type(),
        Some(ProblemType::InvalidChallenge),
        "{what}: {}",
        refusal.detail()
    );
    assert_eq!(refusal.challenges().len(), 1, "{what}: a fresh challenge");
    assert_eq!(
        refusal.to_problem().challenge_id.as_deref(),
        Some(refusal.challenges()[0].id.as_str()),
        "{what}"
    );
}

#[test]
fn only_the_canonical_spelling_of_a_challenge_id_is_admitted() {
    let path = format!(
        "{}/tests/vectors/challenge-id-canonical.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let file: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let field = |key: &str| file[key].as_str().unwrap();
    let gate = PaymentGate::new(field("secretKey"))
        .unwrap()
        .clock(FixedClock::new(parse_timestamp(field("issuedAt")).unwrap()))
        .method(TestMethod::new("test"));
    let offers = price("0.01").offers(&gate).unwrap();
    let cx = RequestContext::new(field("realm"), gate.now());
    let issued = block_on(gate.challenges(&offers, &cx)).unwrap().remove(0);
    // The vector is this gate's challenge.
    assert_eq!(issued.id, field("id"));
    assert_eq!(issued.request.wire(), field("requestB64url"));

    let spellings = file["nonCanonical"].as_array().unwrap();
    for (n, case) in spellings.iter().enumerate() {
        let mut echo = issued.clone();
        echo.id = case["id"].as_str().unwrap().to_owned();
        let credential = Credential::new(echo, json!({"pay": format!("spelling-{n}")}));
        let refusal = block_on(gate.admit(&offers, Some(Ok(credential)), &cx)).unwrap_err();
        assert_invalid_challenge(&refusal, case["why"].as_str().unwrap());
    }
    assert_eq!(spellings.len(), 8);
    let credential = Credential::new(issued, json!({"pay": "canonical"}));
    assert!(block_on(gate.admit(&offers, Some(Ok(credential)), &cx)).is_ok());
}

/// The gate's own challenge, signed again with `secret` and another `expires`.
fn resigned(issued: &Challenge, secret: &str, expires: &str) -> Challenge {
    Challenge::builder_encoded(
        &issued.realm,
        &issued.method,
        &issued.intent,
        issued.request.clone(),
    )
    .expires(expires)
    .sign(&mpp_core::ChallengeSecret::new(secret).unwrap())
}

#[test]
fn a_challenge_that_outlives_the_maximum_lifetime_is_refused() {
    let now = datetime!(2026-03-01 10:00:00 UTC);
    let gate = gate_at(now, TestMethod::new("test"));
    let offers = price("0.01").offers(&gate).unwrap();
    let cx = RequestContext::new("api.example.com", gate.now());
    let issued = block_on(gate.challenges(&offers, &cx)).unwrap().remove(0);

    // The real secret and terms, but an `expires` this server never issues.
    let forever = resigned(&issued, SECRET, "2099-01-01T00:00:00.000Z");
    let credential = Credential::new(forever, json!({"pay": "l1"}));
    let refusal = block_on(gate.admit(&offers, Some(Ok(credential)), &cx)).unwrap_err();
    assert_invalid_challenge(&refusal, "expires in 2099");

    // Within the TTL plus the clock skew allowance (another instance's clock is ahead).
    assert_eq!(gate.max_lifetime(), Duration::from_secs(360));
    let skewed = format_timestamp(now + Duration::from_secs(360));
    let credential = Credential::new(resigned(&issued, SECRET, &skewed), json!({"pay": "l2"}));
    assert!(block_on(gate.admit(&offers, Some(Ok(credential)), &cx)).is_ok());
    let beyond = format_timestamp(now + Duration::from_secs(361));
    let credential = Credential::new(resigned(&issued, SECRET, &beyond), json!({"pay": "l3"}));
    let refusal = block_on(gate.admit(&offers, Some(Ok(credential)), &cx)).unwrap_err();
    assert_invalid_challenge(&refusal, "one second past the maximum");

    // The default follows the TTL; an explicit maximum stays.
    let longer = gate.clone().challenge_ttl(Duration::from_secs(3600));
    assert_eq!(longer.max_lifetime(), Duration::from_secs(3660));
    let capped = gate.clone().max_challenge_lifetime(Duration::from_secs(30));
    assert_eq!(capped.max_lifetime(), Duration::from_secs(30));
    let capped = capped.challenge_ttl(Duration::from_secs(3600));
    assert_eq!(capped.max_lifetime(), Duration::from_secs(30));
    assert_ne!(capped.id(), gate.id(), "a new configuration state");
    let offers = price("0.01").offers(&capped).unwrap();
    let credential = Credential::new(resigned(&issued, SECRET, &skewed), json!({"pay": "l4"}));
    let refusal = block_on(capped.admit(&offers, Some(Ok(credential)), &cx)).unwrap_err();
    assert_invalid_challenge(&refusal, "past an explicit maximum");
}

#[test]
fn a_retired_previous_secret_no_longer_verifies() {
    const OLD: &str = "the-old-secret-0123456789abcdef-0123";
    let now = datetime!(2026-03-01 10:00:00 UTC);
    let retire_at = now + Duration::from_secs(120);
    let rotated = |at: time::OffsetDateTime| {
        PaymentGate::new(SECRET)
            .unwrap()
            .previous_secret_until(OLD, retire_at)
            .unwrap()
            .clock(FixedClock::new(at))
            .method(TestMethod::new("test"))
    };
    let gate = rotated(now);
    let offers = price("0.01").offers(&gate).unwrap();
    let cx = RequestContext::new("api.example.com", gate.now());
    let issued = block_on(gate.challenges(&offers, &cx)).unwrap().remove(0);
    let expires = format_timestamp(now + Duration::from_secs(300));
    let old = resigned(&issued, OLD, &expires);

    // Before retirement (and at it), the old secret's challenges verify.
    for (n, at) in [now, retire_at].into_iter().enumerate() {
        let gate = rotated(at);
        let offers = price("0.01").offers(&gate).unwrap();
        let cx = RequestContext::new("api.example.com", gate.now());
        let credential = Credential::new(old.clone(), json!({"pay": format!("p{n}")}));
        assert!(block_on(gate.admit(&offers, Some(Ok(credential)), &cx)).is_ok());
    }

    // After it, they are refused; the current secret's are not.
    let later = rotated(retire_at + Duration::from_secs(1));
    let offers = price("0.01").offers(&later).unwrap();
    let cx = RequestContext::new("api.example.com", later.now());
    let credential = Credential::new(old, json!({"pay": "p2"}));
    let refusal = block_on(later.admit(&offers, Some(Ok(credential)), &cx)).unwrap_err();
    assert_invalid_challenge(&refusal, "retired secret");
    let current = resigned(&issued, SECRET, &expires);
    let credential = Credential::new(current, json!({"pay": "p3"}));
    assert!(block_on(later.admit(&offers, Some(Ok(credential)), &cx)).is_ok());

    // Adding a previous secret is a configuration change.
    let plain = PaymentGate::new(SECRET).unwrap();
    let before = plain.id();
    assert_ne!(
        plain.previous_secret_until(OLD, retire_at).unwrap().id(),
        before
    );
}
