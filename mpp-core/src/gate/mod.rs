//! The payment gate: the transport-neutral admission engine every layer and transport drives.
//!
//! A [`PaymentGate`] holds what does not depend on the transport: the HMAC secret, the
//! payment methods, the challenge lifetime and the clock. A transport (the HTTP layers of
//! `mpp-axum`, an MCP binding) supplies what does, in a [`RequestContext`]: the realm, the
//! scope a challenge is bound to, the bound body, the client's `Accept-Payment`. The gate then
//!
//! 1. builds a route's [`Offers`] from its [`PriceTerms`] once ([`PricedTerms`] caches them);
//! 2. issues bound challenges for them ([`PaymentGate::challenges`]);
//! 3. checks a credential (HMAC, pinned terms, scope, expiry on its one clock, digest) and
//!    hands it to the method ([`PaymentGate::admit`]);
//! 4. when the method holds the payment until the service has answered (charge on success),
//!    takes the money ([`PaymentGate::settle`]) and ends it ([`Settlement::finish`]).
//!
//! [`Settlement::finish`]: crate::method::Settlement::finish
//!
//! Every refusal is one [`Refusal`] value (a reason, a status, a public detail and fresh
//! challenges), which each transport renders once: an HTTP problem response, a JSON-RPC
//! error. Each outcome is logged once, here.
//!
//! ```
//! # #[cfg(feature = "testing")] {
//! use mpp_core::gate::{PaymentGate, PricedTerms, RequestContext};
//! use mpp_core::testing::TestMethod;
//! use mpp_core::{Credential, DecimalAmount, EncodedJson, PriceTerms};
//! use serde_json::json;
//!
//! # futures_lite_block_on(async {
//! let gate = PaymentGate::new("an-hmac-secret-of-at-least-32-bytes").unwrap()
//!     .method(TestMethod::new("test"));
//! let price = PricedTerms::new(PriceTerms::charge("0.01".parse::<DecimalAmount>().unwrap()));
//! let offers = price.offers(&gate).unwrap();              // once per route
//! let scope = EncodedJson::from_value(json!({"tool": "search"})).unwrap();
//!
//! // No credential: a refusal carrying fresh challenges.
//! let cx = RequestContext::new("api.example.com", gate.now()).scope(&scope);
//! let refusal = gate.admit(&offers, None, &cx).await.unwrap_err();
//! assert_eq!(refusal.status(), 402);
//! let challenge = refusal.challenges()[0].clone();
//!
//! // The client pays; the gate checks the echo and lets the method verify.
//! let credential = Credential::new(challenge, json!({"pay": "ref-1"}));
//! let admitted = gate.admit(&offers, Some(Ok(credential)), &cx).await.unwrap();
//! assert_eq!(admitted.verified.receipt.reference, "ref-1");
//! # });
//! # }
//! # fn futures_lite_block_on<F: std::future::Future>(f: F) -> F::Output {
//! #     let waker = std::task::Waker::noop();
//! #     let mut cx = std::task::Context::from_waker(&waker);
//! #     let mut f = std::pin::pin!(f);
//! #     loop { if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) { return v; } }
//! # }
//! ```
//!
//! [`PriceTerms`]: crate::PriceTerms

mod admit;
mod offer;
mod refusal;
mod settle;

pub use admit::{Admitted, RequestContext};
pub use offer::{Offer, OfferError, Offers, PricedTerms};
pub use refusal::{Refusal, RefusalReason};

use crate::binding::{ChallengeSecret, SecretTooShort};
use crate::expiry::{Clock, DEFAULT_CHALLENGE_TTL, DEFAULT_CLOCK_SKEW, SystemClock};
use crate::method::Method;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use time::OffsetDateTime;

/// The payment configuration of a server, independent of any transport: secret, methods,
/// challenge lifetime, clock and (optionally) a fixed realm.
///
/// Cloning is cheap enough for configuration (methods are shared); changing a clone gives it a
/// new [`PaymentGate::id`], so caches of offers built for the old one are not reused.
#[derive(Clone)]
#[must_use]
pub struct PaymentGate {
    id: u64,
    secret: ChallengeSecret,
    realm: Option<Arc<str>>,
    methods: Vec<Arc<dyn Method>>,
    challenge_ttl: Duration,
    /// `None`: derived from `challenge_ttl` (see [`PaymentGate::max_lifetime`]).
    max_challenge_lifetime: Option<Duration>,
    clock: Arc<dyn Clock>,
}

fn next_gate_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

impl fmt::Debug for PaymentGate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PaymentGate")
            .field("realm", &self.realm)
            .field(
                "methods",
                &self.methods.iter().map(|m| m.name()).collect::<Vec<_>>(),
            )
            .field("challenge_ttl", &self.challenge_ttl)
            .field("max_challenge_lifetime", &self.max_lifetime())
            .finish_non_exhaustive()
    }
}

impl PaymentGate {
    /// A gate with the HMAC secret that binds challenges (at least 32 bytes; its UTF-8 bytes
    /// are the key, as in the official SDKs), no methods yet, a 5-minute challenge lifetime
    /// and the system clock.
    pub fn new(secret: impl AsRef<[u8]>) -> Result<Self, SecretTooShort> {
        Ok(Self {
            id: next_gate_id(),
            secret: ChallengeSecret::new(secret)?,
            realm: None,
            methods: Vec::new(),
            challenge_ttl: DEFAULT_CHALLENGE_TTL,
            max_challenge_lifetime: None,
            clock: Arc::new(SystemClock),
        })
    }

    fn changed(mut self) -> Self {
        self.id = next_gate_id();
        self
    }

    /// Adds a payment method. Offers follow the order methods are added in.
    pub fn method(self, method: impl Method) -> Self {
        self.method_arc(Arc::new(method))
    }

    /// Adds a shared payment method.
    pub fn method_arc(mut self, method: Arc<dyn Method>) -> Self {
        self.methods.push(method);
        self.changed()
    }

    /// Fixes the realm. Without one, the transport supplies it (HTTP: the request's host).
    pub fn realm(mut self, realm: impl Into<String>) -> Self {
        self.realm = Some(realm.into().into());
        self.changed()
    }

    /// Also accepts challenges made with an older secret (rotation), with no end date. Prefer
    /// [`PaymentGate::previous_secret_until`]: a secret that never retires keeps a leaked one
    /// alive.
    pub fn previous_secret(mut self, secret: impl AsRef<[u8]>) -> Result<Self, SecretTooShort> {
        self.secret = self.secret.with_previous(secret)?;
        Ok(self.changed())
    }

    /// Also accepts challenges made with an older secret (rotation) until `retire_at` on the
    /// gate's clock; after that they are refused as `invalid-challenge`. A `retire_at` of the
    /// rotation time plus [`PaymentGate::max_lifetime`] lets every challenge issued before the
    /// rotation be paid.
    pub fn previous_secret_until(
        mut self,
        secret: impl AsRef<[u8]>,
        retire_at: OffsetDateTime,
    ) -> Result<Self, SecretTooShort> {
        self.secret = self.secret.with_previous_until(secret, retire_at)?;
        Ok(self.changed())
    }

    /// How long a challenge stays valid. Default 5 minutes.
    pub fn challenge_ttl(mut self, ttl: Duration) -> Self {
        self.challenge_ttl = ttl;
        self.changed()
    }

    /// The latest `expires` a credential's challenge may have, counted from now: one that
    /// expires later is refused as `invalid-challenge`, since this server never issued it (it
    /// was minted with a leaked secret, or by an instance with another configuration).
    /// Default: the challenge TTL plus [`DEFAULT_CLOCK_SKEW`], following later changes of
    /// [`PaymentGate::challenge_ttl`] unless set here.
    pub fn max_challenge_lifetime(mut self, lifetime: Duration) -> Self {
        self.max_challenge_lifetime = Some(lifetime);
        self.changed()
    }

    /// The clock for expiry, everywhere (tests inject one).
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self.changed()
    }

    /// Identifies this configuration state: it changes with every change.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The configured methods, in offer order.
    pub fn methods(&self) -> &[Arc<dyn Method>] {
        &self.methods
    }

    /// The fixed realm, if one is configured.
    pub fn configured_realm(&self) -> Option<&str> {
        self.realm.as_deref()
    }

    /// The challenge lifetime.
    pub fn ttl(&self) -> Duration {
        self.challenge_ttl
    }

    /// The maximum challenge lifetime (see [`PaymentGate::max_challenge_lifetime`]).
    pub fn max_lifetime(&self) -> Duration {
        self.max_challenge_lifetime
            .unwrap_or_else(|| self.challenge_ttl.saturating_add(DEFAULT_CLOCK_SKEW))
    }

    /// The current time on the gate's clock.
    pub fn now(&self) -> OffsetDateTime {
        self.clock.now()
    }

    pub(crate) fn secret(&self) -> &ChallengeSecret {
        &self.secret
    }
}
