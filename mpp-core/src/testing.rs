//! Test support (feature `testing`): [`TestMethod`], an in-process payment method for layer
//! and transport tests, benchmarks and doc examples. It moves no money; the real methods are
//! tested against their real networks.

use crate::method::{Method, MethodError, PriceTerms, Settle, Verified, VerifyContext};
use crate::{BoxFuture, Receipt, expiry::format_timestamp};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// The decimals of the test method's currency (as Tempo's stablecoins).
const DECIMALS: u8 = 6;

/// An in-process method whose credentials say what should happen:
///
/// | payload | outcome |
/// |---|---|
/// | `{"pay": "<ref>"}` | verified and held; the money is taken when the gate settles it (counted by [`TestMethod::charges`]); a ref served once is refused after, one taken but not served may be presented again; the payer is the credential's `source` (default `did:test:payer`), the amount the offer's, in 6 decimals |
/// | `{"pay": "<ref>", "manage": true}` | paid, answered `204` without the handler |
/// | `{"pay": "<ref>", "settle": "fail"}` / `"down"` | verified, then settling it fails: `verification-failed` / unavailable |
/// | `{"fail": "<why>"}` | `verification-failed` |
/// | `{"down": true}` | infrastructure unavailable (503) |
/// | anything else | `invalid-payload` |
///
/// [`TestMethod::accept_any`] accepts every payload, repeatedly, and does nothing else (for
/// benchmarks: it neither counts nor allocates beyond its receipt).
#[derive(Debug)]
pub struct TestMethod {
    name: &'static str,
    intents: &'static [&'static str],
    accept_any: bool,
    ledger: Arc<Mutex<Ledger>>,
    verifications: AtomicUsize,
}

/// Where each payment reference stands, and how many were taken.
#[derive(Debug, Default)]
struct Ledger {
    refs: HashMap<String, RefState>,
    charges: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RefState {
    /// Verified, held by one request.
    Held,
    /// Taken; served by one request right now.
    Serving,
    /// Taken, not served: redeemable.
    Settled,
    /// Taken and served.
    Served,
}

fn lock(ledger: &Mutex<Ledger>) -> MutexGuard<'_, Ledger> {
    ledger.lock().unwrap_or_else(|e| e.into_inner())
}

/// A held test payment.
struct TestSettlement {
    ledger: Arc<Mutex<Ledger>>,
    reference: String,
    /// `Some` when settling must fail, the way it says.
    fault: Option<String>,
    finished: bool,
}

impl TestSettlement {
    fn end(&mut self, served: bool) {
        self.finished = true;
        let mut ledger = lock(&self.ledger);
        match (ledger.refs.get(&self.reference).copied(), served) {
            (Some(RefState::Serving), true) => {
                ledger.refs.insert(self.reference.clone(), RefState::Served);
            }
            (Some(RefState::Serving), false) => {
                ledger
                    .refs
                    .insert(self.reference.clone(), RefState::Settled);
            }
            (Some(RefState::Held), _) => {
                ledger.refs.remove(&self.reference);
            }
            _ => {}
        }
    }
}

impl Drop for TestSettlement {
    /// A request dropped mid-way (a panicking handler) ends unserved.
    fn drop(&mut self) {
        if !self.finished {
            self.end(false);
        }
    }
}

impl Settle for TestSettlement {
    fn settle(&mut self) -> BoxFuture<'_, Result<(), MethodError>> {
        Box::pin(async move {
            match self.fault.as_deref() {
                Some("down") => return Err(MethodError::unavailable("test node down")),
                Some(why) => return Err(MethodError::verification_failed(why.to_owned())),
                None => {}
            }
            let mut ledger = lock(&self.ledger);
            if ledger.refs.get(&self.reference) == Some(&RefState::Held) {
                ledger.charges += 1;
            }
            ledger
                .refs
                .insert(self.reference.clone(), RefState::Serving);
            Ok(())
        })
    }

    fn finish(mut self: Box<Self>, served: bool) -> BoxFuture<'static, ()> {
        self.end(served);
        Box::pin(async {})
    }
}

impl TestMethod {
    /// A method called `name` that serves the `charge` intent.
    pub fn new(name: &'static str) -> Self {
        Self {
            name,
            intents: &["charge"],
            accept_any: false,
            ledger: Arc::new(Mutex::new(Ledger::default())),
            verifications: AtomicUsize::new(0),
        }
    }

    /// Serves these intents instead.
    #[must_use]
    pub fn intents(mut self, intents: &'static [&'static str]) -> Self {
        self.intents = intents;
        self
    }

    /// Accepts every payload, any number of times.
    #[must_use]
    pub fn accept_any(mut self) -> Self {
        self.accept_any = true;
        self
    }

    /// How many credentials reached [`Method::verify`] (not counted with
    /// [`TestMethod::accept_any`]).
    pub fn verifications(&self) -> usize {
        self.verifications.load(Ordering::SeqCst)
    }

    /// How many payments were taken (settled), each counted once however often it was
    /// served.
    pub fn charges(&self) -> usize {
        lock(&self.ledger).charges
    }

    /// Whether the payment `reference` was served (its credential is used for good).
    pub fn served(&self, reference: &str) -> bool {
        lock(&self.ledger).refs.get(reference) == Some(&RefState::Served)
    }

    fn check(&self, ctx: &VerifyContext<'_>) -> Result<Verified, MethodError> {
        let receipt =
            |reference: &str| Receipt::success(self.name, reference, format_timestamp(ctx.now));
        if self.accept_any {
            return Ok(Verified::serve(receipt("0xtest")));
        }
        let payload = &ctx.credential.payload;
        let amount = ctx
            .request
            .get("amount")
            .and_then(Value::as_str)
            .and_then(|a| a.parse::<u128>().ok());
        if payload["down"] == true {
            return Err(MethodError::unavailable("test node down"));
        }
        if let Some(reason) = payload["fail"].as_str() {
            return Err(MethodError::verification_failed(reason));
        }
        let Some(reference) = payload["pay"].as_str() else {
            return Err(MethodError::invalid_payload("missing `pay`"));
        };
        {
            let mut ledger = lock(&self.ledger);
            match ledger.refs.get(reference).copied() {
                None => {
                    ledger.refs.insert(reference.to_owned(), RefState::Held);
                }
                // Taken but not served: this request serves it, with no second charge.
                Some(RefState::Settled) => {
                    ledger.refs.insert(reference.to_owned(), RefState::Serving);
                }
                Some(RefState::Served) => {
                    return Err(MethodError::verification_failed("already used"));
                }
                Some(RefState::Held | RefState::Serving) => {
                    return Err(MethodError::verification_failed(
                        "in use by another request",
                    ));
                }
            }
        }
        let mut verified = if payload["manage"] == true {
            Verified::respond(204, receipt(reference))
        } else {
            Verified::serve(receipt(reference))
        };
        // The credential's `source` when it names one, so payer handling can be tested.
        verified.payer = Some(
            ctx.credential
                .source
                .clone()
                .unwrap_or_else(|| "did:test:payer".into()),
        );
        verified.amount = amount;
        verified.decimals = Some(DECIMALS);
        Ok(verified.settle_later(TestSettlement {
            ledger: self.ledger.clone(),
            reference: reference.to_owned(),
            fault: payload["settle"].as_str().map(str::to_owned),
            finished: false,
        }))
    }
}

impl Method for TestMethod {
    fn name(&self) -> &str {
        self.name
    }

    fn supports_intent(&self, intent: &str) -> bool {
        self.intents.contains(&intent)
    }

    /// Tempo-shaped terms (6 decimals), so sizes are realistic. A currency must look like a
    /// token address (`0x...`), so configuration errors can be tested.
    fn request(&self, terms: &PriceTerms) -> Result<Value, MethodError> {
        if let Some(currency) = &terms.currency
            && !currency.starts_with("0x")
        {
            return Err(MethodError::config(format!(
                "`{currency}` is not a token address"
            )));
        }
        let mut request = json!({
            "amount": terms.amount.to_base_units(DECIMALS)?.to_string(),
            "currency": terms.currency.as_deref().unwrap_or("0x20c0000000000000000000000000000000000000"),
            "recipient": "0x70997970C51812dc3A010C7d01b50e0d17dc79C8",
            "methodDetails": {"chainId": 31337},
        });
        if let Some(unit) = &terms.unit_type {
            request["unitType"] = Value::from(unit.as_str());
        }
        if let Some(id) = &terms.external_id {
            request["externalId"] = Value::from(id.as_str());
        }
        Ok(request)
    }

    fn verify<'a>(
        &'a self,
        ctx: VerifyContext<'a>,
    ) -> BoxFuture<'a, Result<Verified, MethodError>> {
        if !self.accept_any {
            self.verifications.fetch_add(1, Ordering::SeqCst);
        }
        Box::pin(async move { self.check(&ctx) })
    }
}
