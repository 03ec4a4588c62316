//! [`Mpp`]: the server's payment configuration (secret, realm, methods, expiry), and the
//! outer layer that makes it available to the route layers below it.

use mpp_core::binding::SecretTooShort;
use mpp_core::expiry::{Clock, DEFAULT_CHALLENGE_TTL, SystemClock};
use mpp_core::{ChallengeSecret, Method};
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use tower_layer::Layer;
use tower_service::Service;

/// A configuration mistake, reported when the server starts.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The challenge secret is shorter than 32 bytes.
    #[error(transparent)]
    Secret(#[from] SecretTooShort),
    /// A price literal or terms that a method cannot express.
    #[error("invalid price: {0}")]
    Price(String),
}

/// The payment configuration shared by every paid route.
///
/// ```
/// use mpp_axum::Mpp;
/// let mpp = Mpp::new("0123456789abcdef0123456789abcdef").unwrap().realm("api.example.com");
/// assert!(Mpp::new("short").is_err());
/// # let _ = mpp;
/// ```
#[derive(Clone)]
pub struct Mpp {
    pub(crate) inner: Arc<MppConfig>,
}

pub(crate) struct MppConfig {
    /// Unique per configuration state; routes cache their offers under it.
    pub(crate) id: u64,
    pub(crate) secret: ChallengeSecret,
    pub(crate) realm: Option<String>,
    pub(crate) methods: Vec<Arc<dyn Method>>,
    pub(crate) challenge_ttl: Duration,
    pub(crate) clock: Arc<dyn Clock>,
}

fn next_config_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

impl fmt::Debug for Mpp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mpp")
            .field("realm", &self.inner.realm)
            .field(
                "methods",
                &self
                    .inner
                    .methods
                    .iter()
                    .map(|m| m.name())
                    .collect::<Vec<_>>(),
            )
            .field("challenge_ttl", &self.inner.challenge_ttl)
            .finish_non_exhaustive()
    }
}

impl Mpp {
    /// A configuration with the HMAC secret that binds challenges (at least 32 bytes; its
    /// UTF-8 bytes are the key, as in the official SDKs). Add methods with [`Mpp::method`].
    pub fn new(secret: impl AsRef<[u8]>) -> Result<Self, ConfigError> {
        Ok(Self {
            inner: Arc::new(MppConfig {
                id: next_config_id(),
                secret: ChallengeSecret::new(secret)?,
                realm: None,
                methods: Vec::new(),
                challenge_ttl: DEFAULT_CHALLENGE_TTL,
                clock: Arc::new(SystemClock),
            }),
        })
    }

    fn update(mut self, f: impl FnOnce(&mut MppConfig)) -> Self {
        match Arc::get_mut(&mut self.inner) {
            Some(inner) => {
                f(inner);
                inner.id = next_config_id();
            }
            None => {
                let mut copy = MppConfig {
                    id: 0,
                    secret: self.inner.secret.clone(),
                    realm: self.inner.realm.clone(),
                    methods: self.inner.methods.clone(),
                    challenge_ttl: self.inner.challenge_ttl,
                    clock: self.inner.clock.clone(),
                };
                f(&mut copy);
                copy.id = next_config_id();
                self.inner = Arc::new(copy);
            }
        }
        self
    }

    /// Adds a payment method. Offers follow the order methods are added in.
    pub fn method(self, method: impl Method) -> Self {
        self.method_arc(Arc::new(method))
    }

    /// Adds a shared payment method.
    pub fn method_arc(self, method: Arc<dyn Method>) -> Self {
        self.update(|c| c.methods.push(method))
    }

    /// Sets the realm. Default: the request's host name (as the SDKs do).
    pub fn realm(self, realm: impl Into<String>) -> Self {
        let realm = realm.into();
        self.update(|c| c.realm = Some(realm))
    }

    /// Also accepts challenges made with an older secret (rotation).
    pub fn previous_secret(self, secret: impl AsRef<[u8]>) -> Result<Self, ConfigError> {
        let rotated = self.inner.secret.clone().with_previous(secret)?;
        Ok(self.update(|c| c.secret = rotated))
    }

    /// How long a challenge stays valid. Default 5 minutes.
    pub fn challenge_ttl(self, ttl: Duration) -> Self {
        self.update(|c| c.challenge_ttl = ttl)
    }

    /// The clock used for expiry (tests inject one).
    pub fn clock(self, clock: impl Clock) -> Self {
        let clock: Arc<dyn Clock> = Arc::new(clock);
        self.update(|c| c.clock = clock)
    }

    /// The configured methods.
    pub fn methods(&self) -> impl Iterator<Item = &Arc<dyn Method>> {
        self.inner.methods.iter()
    }

    /// The outer layer: puts this configuration into each request's extensions, where
    /// [`crate::charge()`] layers on inner routes find it.
    pub fn layer(&self) -> MppLayer {
        MppLayer { mpp: self.clone() }
    }
}

/// Makes an [`Mpp`] available to the route layers below; see [`Mpp::layer`].
#[derive(Debug, Clone)]
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
