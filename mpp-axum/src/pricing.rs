//! What a route charges: fixed terms (encoded once per configuration) or terms computed from
//! each request.

use crate::config::{ConfigError, MppConfig};
use mpp_core::{EncodedJson, Method, PriceTerms};
use std::fmt;
use std::sync::{Arc, OnceLock};

/// Computes the price of one request (see [`crate::charge_with`]).
pub type PriceFn =
    dyn Fn(&http::request::Parts) -> Result<PriceTerms, PriceError> + Send + Sync + 'static;

/// Why a per-request price could not be computed: answered with `400 bad-request`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PriceError(pub String);

/// One payable alternative of a route: a method and its encoded terms.
#[derive(Clone)]
pub(crate) struct Offer {
    pub(crate) method: Arc<dyn Method>,
    pub(crate) intent: Arc<str>,
    pub(crate) request: EncodedJson,
    pub(crate) description: Option<Arc<str>>,
}

impl fmt::Debug for Offer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Offer")
            .field("method", &self.method.name())
            .field("intent", &self.intent)
            .field("request", &self.request.wire())
            .finish()
    }
}

/// Builds the offers of `terms` with every configured method that serves the intent.
pub(crate) fn build_offers(
    config: &MppConfig,
    terms: &PriceTerms,
) -> Result<Arc<[Offer]>, ConfigError> {
    let mut offers = Vec::new();
    for method in config
        .methods
        .iter()
        .filter(|m| m.supports_intent(&terms.intent))
    {
        let request = method
            .request(terms)
            .map_err(|e| ConfigError::Price(format!("{}: {e}", method.name())))?;
        let request = EncodedJson::from_value(request)
            .map_err(|e| ConfigError::Price(format!("{}: {e}", method.name())))?;
        offers.push(Offer {
            method: method.clone(),
            intent: terms.intent.as_str().into(),
            request,
            description: terms.description.as_deref().map(Into::into),
        });
    }
    if offers.is_empty() {
        return Err(ConfigError::Price(format!(
            "no configured payment method serves the `{}` intent",
            terms.intent
        )));
    }
    Ok(offers.into())
}

/// How a route is priced.
#[derive(Clone)]
pub(crate) enum Pricing {
    /// The same terms for every request; offers are built once per configuration.
    Fixed {
        terms: Arc<PriceTerms>,
        /// The offers for the first configuration seen, keyed by its id.
        cache: Arc<OnceLock<(u64, Arc<[Offer]>)>>,
    },
    /// Terms computed per request.
    Dynamic(Arc<PriceFn>),
}

impl Pricing {
    pub(crate) fn fixed(terms: PriceTerms) -> Self {
        Self::Fixed {
            terms: Arc::new(terms),
            cache: Arc::new(OnceLock::new()),
        }
    }

    /// The offers for this request. `Err` carries the status class: configuration errors
    /// (500) versus a price function's refusal (400).
    pub(crate) fn offers(
        &self,
        config: &Arc<MppConfig>,
        parts: &http::request::Parts,
    ) -> Result<Arc<[Offer]>, OfferError> {
        match self {
            Self::Fixed { terms, cache } => {
                let key = config.id;
                if let Some((cached_key, offers)) = cache.get()
                    && *cached_key == key
                {
                    return Ok(offers.clone());
                }
                let offers = build_offers(config, terms).map_err(OfferError::Config)?;
                let _ = cache.set((key, offers.clone()));
                Ok(offers)
            }
            Self::Dynamic(price) => {
                let terms = price(parts).map_err(OfferError::Price)?;
                build_offers(config, &terms).map_err(OfferError::Config)
            }
        }
    }

    /// Builds the offers now, so that a bad price fails at start-up.
    pub(crate) fn prime(&self, config: &Arc<MppConfig>) -> Result<(), ConfigError> {
        if let Self::Fixed { terms, cache } = self {
            let offers = build_offers(config, terms)?;
            let _ = cache.set((config.id, offers));
        }
        Ok(())
    }
}

pub(crate) enum OfferError {
    Config(ConfigError),
    Price(PriceError),
}
