//! [`Mpp`]: the server's payment configuration (secret, realm, methods, expiry), and the
//! outer layer that makes it available to the route layers below it.

use crate::gate::CredentialHeader;
use mpp_core::binding::SecretTooShort;
use mpp_core::expiry::Clock;
use mpp_core::gate::OfferError;
use mpp_core::{Method, PaymentGate};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
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
    /// ```no_run
    /// # fn main() -> Result<(), mpp_axum::ConfigError> {
    /// // MPP_SECRET_KEY unset: "MPP_SECRET_KEY is not set: ... make one with
    /// // `openssl rand -base64 32`"
    /// let mpp = mpp_axum::Mpp::from_env()?;
    /// # let _ = mpp; Ok(()) }
    /// ```
    pub fn from_env() -> Result<Self, ConfigError> {
        const SECRET: &str = "MPP_SECRET_KEY";
        let secret = std::env::var(SECRET)
            .ok()
            .filter(|s| !s.is_empty())
            .ok_or(ConfigError::MissingSecret(SECRET))?;
        let mpp = Self::new(secret)?;
        Ok(match std::env::var("MPP_REALM") {
            Ok(realm) if !realm.is_empty() => mpp.realm(realm),
            _ => mpp,
        })
    }

    /// Wraps a gate configured elsewhere (e.g. shared with an MCP server).
    pub fn from_gate(gate: PaymentGate) -> Self {
        Self {
            gate: Arc::new(gate),
            credential_header: CredentialHeader::default(),
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

    /// Also accepts challenges made with an older secret (rotation).
    pub fn previous_secret(self, secret: impl AsRef<[u8]>) -> Result<Self, ConfigError> {
        let gate = Arc::unwrap_or_clone(self.gate).previous_secret(secret)?;
        Ok(Self {
            gate: Arc::new(gate),
            ..self
        })
    }

    /// How long a challenge stays valid. Default 5 minutes.
    pub fn challenge_ttl(self, ttl: Duration) -> Self {
        self.update(|g| g.challenge_ttl(ttl))
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
    pub fn layer(&self) -> MppLayer {
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
