//! [`Mpp`]: the server's payment configuration (secret, realm, methods, expiry), and the
//! outer layer that makes it available to the route layers below it.

use crate::gate::CredentialHeader;
use mpp_core::binding::SecretTooShort;
use mpp_core::expiry::{Clock, TimestampError, parse_timestamp};
use mpp_core::gate::OfferError;
use mpp_core::idempotency::{IdempotencyStore, MemoryIdempotencyStore};
use mpp_core::{Method, PaymentGate};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use time::OffsetDateTime;
use tower_layer::Layer;
use tower_service::Service;

/// A configuration mistake, reported when the server starts.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The challenge secret is shorter than 32 bytes.
    #[error("{0}; make one with `openssl rand -base64 32`")]
    Secret(#[from] SecretTooShort),
    /// [`Mpp::from_env`] found no secret.
    #[error(
        "{0} is not set: it holds the HMAC secret that binds challenges (at least 32 bytes, the \
         same on every instance); make one with `openssl rand -base64 32`"
    )]
    MissingSecret(&'static str),
    /// [`Mpp::from_env`] found one variable of a pair without the other: a previous secret
    /// needs the time it retires.
    #[error(
        "{set} is set but {missing} is not: a previous secret is accepted until an RFC 3339 \
         time (e.g. the rotation time plus 6 minutes), so a leaked one does not stay valid"
    )]
    UnpairedEnv {
        /// The variable that is set.
        set: &'static str,
        /// The variable it needs.
        missing: &'static str,
    },
    /// [`Mpp::from_env`] found a time that is not RFC 3339.
    #[error("{name} must be an RFC 3339 time such as 2026-03-01T12:00:00Z")]
    InvalidTime {
        /// The variable.
        name: &'static str,
        /// What is wrong with its value.
        #[source]
        source: TimestampError,
    },
    /// A price literal that is not a non-negative decimal.
    #[error("invalid price `{literal}`: {reason}")]
    Price {
        /// The literal.
        literal: String,
        /// Why it is invalid.
        reason: String,
    },
    /// Terms that the configured methods cannot offer.
    #[error("the price cannot be offered: {0}")]
    Offer(#[from] OfferError),
}

/// The payment configuration shared by every paid route: an HTTP face on
/// [`mpp_core::PaymentGate`].
///
/// ```
/// use mpp_axum::Mpp;
/// let mpp = Mpp::new("0123456789abcdef0123456789abcdef").unwrap().realm("api.example.com");
/// assert!(Mpp::new("short").is_err());
/// # let _ = mpp;
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct Mpp {
    gate: Arc<PaymentGate>,
    /// Where routes read credentials unless they say otherwise.
    credential_header: CredentialHeader,
    /// Where `Idempotency-Key` requests are recorded.
    idempotency: Idempotency,
}

/// The idempotency store, shown by name in `Debug`.
#[derive(Clone)]
struct Idempotency(Arc<dyn IdempotencyStore>);

impl std::fmt::Debug for Idempotency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IdempotencyStore")
    }
}

impl Mpp {
    /// A configuration with the HMAC secret that binds challenges (at least 32 bytes; its
    /// UTF-8 bytes are the key, as in the official SDKs). Add methods with [`Mpp::method`].
    pub fn new(secret: impl AsRef<[u8]>) -> Result<Self, ConfigError> {
        Ok(Self::from_gate(PaymentGate::new(secret)?))
    }

    /// A configuration from the environment: the secret from `MPP_SECRET_KEY` (required, at
    /// least 32 bytes) and, when set, the realm from `MPP_REALM` (otherwise each request's
    /// host name). The errors say how to make a secret.
    ///
    /// After a rotation, `MPP_PREVIOUS_SECRET_KEY` (the old secret) and
    /// `MPP_PREVIOUS_SECRET_UNTIL` (an RFC 3339 time such as `2026-03-01T12:06:00Z`) keep the
    /// challenges issued under the old secret payable until then (see
    /// [`Mpp::previous_secret_until`]). They go together: one without the other is an error.
    ///
    /// ```no_run
    /// # fn main() -> Result<(), mpp_axum::ConfigError> {
    /// // MPP_SECRET_KEY unset: "MPP_SECRET_KEY is not set: ... make one with
    /// // `openssl rand -base64 32`"
    /// let mpp = mpp_axum::Mpp::from_env()?;
    /// # let _ = mpp; Ok(()) }
    /// ```
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    /// [`Mpp::from_env`] over any source of variables (empty values count as unset): a
    /// configuration file, a secret manager, or a test that must not touch the process
    /// environment.
    ///
    /// ```
    /// let vars = [("MPP_SECRET_KEY", "0123456789abcdef0123456789abcdef"), ("MPP_REALM", "api.example.com")];
    /// let lookup = |name: &str| vars.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string());
    /// let mpp = mpp_axum::Mpp::from_vars(lookup).unwrap();
    /// # let _ = mpp;
    /// ```
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        const SECRET: &str = "MPP_SECRET_KEY";
        const PREVIOUS: &str = "MPP_PREVIOUS_SECRET_KEY";
        const UNTIL: &str = "MPP_PREVIOUS_SECRET_UNTIL";
        let var = |name| var(name).filter(|v| !v.is_empty());
        let secret = var(SECRET).ok_or(ConfigError::MissingSecret(SECRET))?;
        let mut mpp = Self::new(secret)?;
        if let Some(realm) = var("MPP_REALM") {
            mpp = mpp.realm(realm);
        }
        match (var(PREVIOUS), var(UNTIL)) {
            (None, None) => Ok(mpp),
            (Some(previous), Some(until)) => {
                let retire_at =
                    parse_timestamp(until.trim()).map_err(|source| ConfigError::InvalidTime {
                        name: UNTIL,
                        source,
                    })?;
                mpp.previous_secret_until(previous, retire_at)
            }
            (Some(_), None) => Err(ConfigError::UnpairedEnv {
                set: PREVIOUS,
                missing: UNTIL,
            }),
            (None, Some(_)) => Err(ConfigError::UnpairedEnv {
                set: UNTIL,
                missing: PREVIOUS,
            }),
        }
    }

    /// Wraps a gate configured elsewhere (e.g. shared with an MCP server).
    pub fn from_gate(gate: PaymentGate) -> Self {
        Self {
            gate: Arc::new(gate),
            credential_header: CredentialHeader::default(),
            idempotency: Idempotency(Arc::new(MemoryIdempotencyStore::default())),
        }
    }

    /// Copy on write: the gate is changed in place when this is its only handle, else a
    /// changed copy is made (routes already bound keep the old one).
    fn update(mut self, f: impl FnOnce(PaymentGate) -> PaymentGate) -> Self {
        self.gate = Arc::new(f(Arc::unwrap_or_clone(self.gate)));
        self
    }

    /// Adds a payment method. Offers follow the order methods are added in.
    pub fn method(self, method: impl Method) -> Self {
        self.update(|g| g.method(method))
    }

    /// Adds a shared payment method.
    pub fn method_arc(self, method: Arc<dyn Method>) -> Self {
        self.update(|g| g.method_arc(method))
    }

    /// Sets the realm. Default: the request's host name (as the SDKs do).
    pub fn realm(self, realm: impl Into<String>) -> Self {
        self.update(|g| g.realm(realm))
    }

    /// Also accepts challenges made with an older secret (rotation), with no end date. Prefer
    /// [`Mpp::previous_secret_until`]: a secret that never retires keeps a leaked one alive.
    pub fn previous_secret(self, secret: impl AsRef<[u8]>) -> Result<Self, ConfigError> {
        let gate = Arc::unwrap_or_clone(self.gate).previous_secret(secret)?;
        Ok(Self {
            gate: Arc::new(gate),
            ..self
        })
    }

    /// Also accepts challenges made with an older secret (rotation) until `retire_at` on the
    /// configured clock; after that they are refused (402 `invalid-challenge`). The rotation
    /// time plus the maximum challenge lifetime (6 minutes by default) lets every challenge
    /// issued before the rotation be paid.
    ///
    /// ```
    /// use mpp_axum::Mpp;
    /// use time::macros::datetime;
    ///
    /// let mpp = Mpp::new("the-new-secret-0123456789abcdef-0123")
    ///     .unwrap()
    ///     .previous_secret_until(
    ///         "the-old-secret-0123456789abcdef-0123",
    ///         datetime!(2026-03-01 12:06 UTC), // rotated at 12:00
    ///     )
    ///     .unwrap();
    /// # let _ = mpp;
    /// ```
    pub fn previous_secret_until(
        self,
        secret: impl AsRef<[u8]>,
        retire_at: OffsetDateTime,
    ) -> Result<Self, ConfigError> {
        let gate = Arc::unwrap_or_clone(self.gate).previous_secret_until(secret, retire_at)?;
        Ok(Self {
            gate: Arc::new(gate),
            ..self
        })
    }

    /// How long a challenge stays valid. Default 5 minutes.
    pub fn challenge_ttl(self, ttl: Duration) -> Self {
        self.update(|g| g.challenge_ttl(ttl))
    }

    /// The latest a paid challenge may expire, counted from now: a credential whose challenge
    /// expires later is refused (402 `invalid-challenge`), since this server never issued it
    /// (it was minted with a leaked secret). Default: the challenge TTL plus 60 seconds of
    /// clock skew between instances, following [`Mpp::challenge_ttl`] unless set here. Read it
    /// with [`PaymentGate::max_lifetime`] on [`Mpp::gate`].
    pub fn max_challenge_lifetime(self, lifetime: Duration) -> Self {
        self.update(|g| g.max_challenge_lifetime(lifetime))
    }

    /// The clock used for expiry, by the gate and every method (tests inject one).
    pub fn clock(self, clock: impl Clock) -> Self {
        self.update(|g| g.clock(clock))
    }

    /// Where paid routes read the credential, unless a route sets its own
    /// ([`ChargeLayer::credential_header`](crate::ChargeLayer::credential_header)). Default:
    /// [`CredentialHeader::Authorization`]. Routes bound before this call keep what they had.
    pub fn credential_header(mut self, header: CredentialHeader) -> Self {
        self.credential_header = header;
        self
    }

    /// Where paid requests with an `Idempotency-Key` are recorded, so that a repeat with the
    /// same key and credential gets the stored response without running the handler again.
    /// Default: in this process ([`MemoryIdempotencyStore`]); with several instances, a
    /// shared one (`mpp_tempo::store::SqliteStore` or `PgStore`, which also keep the payment
    /// claims). Routes bound before this call keep what they had.
    pub fn idempotency_store(mut self, store: impl IdempotencyStore) -> Self {
        self.idempotency = Idempotency(Arc::new(store));
        self
    }

    /// Where `Idempotency-Key` requests are recorded.
    pub(crate) fn idempotency_store_ref(&self) -> &Arc<dyn IdempotencyStore> {
        &self.idempotency.0
    }

    /// Where paid routes read the credential unless they say otherwise.
    pub fn default_credential_header(&self) -> CredentialHeader {
        self.credential_header
    }

    /// The configured methods.
    pub fn methods(&self) -> impl Iterator<Item = &Arc<dyn Method>> {
        self.gate.methods().iter()
    }

    /// The transport-neutral gate this configuration drives.
    pub fn gate(&self) -> &PaymentGate {
        &self.gate
    }

    /// The outer layer: puts this configuration into each request's extensions, where
    /// [`crate::charge()`] layers on inner routes find it.
    ///
    /// Warns once, here at start-up, when no realm is configured: the realm then comes from
    /// each request's `Host`, which the client chooses and a proxy may rewrite per instance,
    /// so a challenge issued behind one host name fails on another.
    pub fn layer(&self) -> MppLayer {
        if self.gate.configured_realm().is_none() {
            tracing::warn!(
                "no realm configured: using each request's Host header; set one with \
                 Mpp::realm (or MPP_REALM) so challenges verify on every instance"
            );
        }
        MppLayer { mpp: self.clone() }
    }
}

/// Makes an [`Mpp`] available to the route layers below; see [`Mpp::layer`].
#[derive(Debug, Clone)]
#[must_use]
pub struct MppLayer {
    mpp: Mpp,
}

impl<S> Layer<S> for MppLayer {
    type Service = MppService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        MppService {
            inner,
            mpp: self.mpp.clone(),
        }
    }
}

/// The service of [`MppLayer`].
#[derive(Debug, Clone)]
pub struct MppService<S> {
    inner: S,
    mpp: Mpp,
}

impl<S> MppService<S> {
    inner_service_accessors!();
}

impl<S, B> Service<http::Request<B>> for MppService<S>
where
    S: Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        req.extensions_mut().insert(self.mpp.clone());
        self.inner.call(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mpp_core::expiry::FixedClock;
    use mpp_core::gate::RequestContext;
    use mpp_core::testing::TestMethod;
    use mpp_core::{Challenge, ChallengeSecret, Credential, PriceTerms};
    use std::collections::HashMap;
    use time::macros::datetime;

    const SECRET: &str = "env-test-secret-0123456789abcdef-0123";
    const OLD: &str = "env-test-old-secret-0123456789abcdef";
    const UNTIL: &str = "2026-03-01T12:06:00Z";

    fn from(vars: &[(&str, &str)]) -> Result<Mpp, ConfigError> {
        let vars: HashMap<&str, &str> = vars.iter().copied().collect();
        Mpp::from_vars(|name| vars.get(name).map(|v| (*v).to_owned()))
    }

    /// Whether a challenge signed with the old secret pays at `now`.
    async fn old_secret_pays(mpp: Mpp, now: OffsetDateTime) -> bool {
        let mpp = mpp
            .method(TestMethod::new("test"))
            .clock(FixedClock::new(now));
        let gate = mpp.gate();
        let offers = gate
            .offers(&PriceTerms::charge("0.01".parse().unwrap()))
            .unwrap();
        let cx = RequestContext::new("api.example.com", gate.now());
        let issued = gate.challenges(&offers, &cx).await.unwrap().remove(0);
        let old = Challenge::builder_encoded(
            &issued.realm,
            &issued.method,
            &issued.intent,
            issued.request.clone(),
        )
        .expires(issued.expires.clone().unwrap())
        .sign(&ChallengeSecret::new(OLD).unwrap());
        let credential = Credential::new(old, serde_json::json!({"pay": "old"}));
        gate.admit(&offers, Some(Ok(credential)), &cx).await.is_ok()
    }

    #[tokio::test]
    async fn the_environment_names_a_previous_secret_and_when_it_retires() {
        let vars = [
            ("MPP_SECRET_KEY", SECRET),
            ("MPP_PREVIOUS_SECRET_KEY", OLD),
            ("MPP_PREVIOUS_SECRET_UNTIL", UNTIL),
        ];
        let retire_at = datetime!(2026-03-01 12:06 UTC);
        assert!(old_secret_pays(from(&vars).unwrap(), retire_at).await);
        let later = retire_at + Duration::from_secs(1);
        assert!(!old_secret_pays(from(&vars).unwrap(), later).await);
        let without = from(&[("MPP_SECRET_KEY", SECRET)]).unwrap();
        assert!(!old_secret_pays(without, retire_at).await);
    }

    #[test]
    fn a_previous_secret_from_the_environment_needs_a_valid_retirement_time() {
        for (vars, want) in [
            (
                vec![("MPP_PREVIOUS_SECRET_KEY", OLD)],
                "MPP_PREVIOUS_SECRET_KEY is set but MPP_PREVIOUS_SECRET_UNTIL is not",
            ),
            (
                vec![("MPP_PREVIOUS_SECRET_UNTIL", UNTIL)],
                "MPP_PREVIOUS_SECRET_UNTIL is set but MPP_PREVIOUS_SECRET_KEY is not",
            ),
            (
                vec![
                    ("MPP_PREVIOUS_SECRET_KEY", OLD),
                    ("MPP_PREVIOUS_SECRET_UNTIL", "tomorrow"),
                ],
                "MPP_PREVIOUS_SECRET_UNTIL must be an RFC 3339 time",
            ),
            (
                vec![
                    ("MPP_PREVIOUS_SECRET_KEY", "short"),
                    ("MPP_PREVIOUS_SECRET_UNTIL", UNTIL),
                ],
                "at least 32 bytes",
            ),
        ] {
            let vars: Vec<_> = [("MPP_SECRET_KEY", SECRET)]
                .into_iter()
                .chain(vars)
                .collect();
            let error = from(&vars).unwrap_err().to_string();
            assert!(error.contains(want), "{error}");
        }
        // Empty values count as unset.
        let empty = [
            ("MPP_SECRET_KEY", SECRET),
            ("MPP_PREVIOUS_SECRET_KEY", ""),
            ("MPP_PREVIOUS_SECRET_UNTIL", ""),
        ];
        assert!(from(&empty).is_ok());
    }
}
