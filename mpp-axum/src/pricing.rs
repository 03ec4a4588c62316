//! What a paid route charges: fixed terms (offers built once per configuration) or terms
//! computed from each request, plus the options every form shares.

use crate::config::{ConfigError, Mpp};
use mpp_core::discovery::{PaymentInfo, PaymentOffer};
use mpp_core::gate::{OfferError, Offers, PricedTerms};
use mpp_core::{DecimalAmount, PriceTerms};
use std::fmt;
use std::sync::Arc;

/// Computes the price of one request (see [`crate::charge_with`]).
pub type PriceFn =
    dyn Fn(&http::request::Parts) -> Result<PriceTerms, PriceError> + Send + Sync + 'static;

/// Why a per-request price could not be computed: answered with `400`, the text as the
/// problem's `detail` (the client sees it: say what is wrong with the request).
///
/// ```
/// use mpp_axum::PriceError;
/// let e = PriceError::new("query parameter `kb` must be a whole number");
/// assert_eq!(e.to_string(), "query parameter `kb` must be a whole number");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PriceError(pub String);

impl PriceError {
    /// A refusal saying `reason` (anything displayable, e.g. a parse error).
    pub fn new(reason: impl fmt::Display) -> Self {
        Self(reason.to_string())
    }
}

/// The options that apply to every priced layer, whatever computes its amount.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct PriceOptions {
    pub(crate) description: Option<String>,
    pub(crate) external_id: Option<String>,
    pub(crate) currency: Option<String>,
    /// What one unit is (session routes).
    pub(crate) unit_type: Option<String>,
}

impl PriceOptions {
    /// Fills what `terms` leaves unset (a price function's own choices win).
    fn apply(&self, terms: &mut PriceTerms) {
        let fill = |slot: &mut Option<String>, value: &Option<String>| {
            if slot.is_none() {
                slot.clone_from(value);
            }
        };
        fill(&mut terms.description, &self.description);
        fill(&mut terms.external_id, &self.external_id);
        fill(&mut terms.currency, &self.currency);
        fill(&mut terms.unit_type, &self.unit_type);
    }
}

/// How a route is priced.
#[derive(Clone)]
pub(crate) enum Price {
    /// The same terms for every request: offers built once per configuration.
    Fixed(PricedTerms),
    /// Terms computed per request by `f`, with the layer's options filled in.
    Dynamic {
        intent: &'static str,
        f: Arc<PriceFn>,
        options: PriceOptions,
    },
}

impl fmt::Debug for Price {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Fixed(terms) => f.debug_tuple("Fixed").field(terms.terms()).finish(),
            Self::Dynamic {
                intent, options, ..
            } => f
                .debug_struct("Dynamic")
                .field("intent", intent)
                .field("options", options)
                .finish_non_exhaustive(),
        }
    }
}

/// Why a request's offers could not be built.
pub(crate) enum PriceFailure {
    /// The price function refused the request (400).
    Request(PriceError),
    /// The methods cannot express the amount computed from the request (400: the client
    /// chose it, e.g. more decimals than the currency has).
    Amount(OfferError),
    /// The methods cannot offer the terms (500: a configuration error).
    Config(OfferError),
}

impl Price {
    /// Parses a price literal into fixed terms for `intent`.
    pub(crate) fn fixed(intent: &str, literal: &str) -> Result<Self, ConfigError> {
        let amount: DecimalAmount =
            literal
                .parse()
                .map_err(|e: mpp_core::amount::AmountError| ConfigError::Price {
                    literal: literal.to_owned(),
                    reason: e.to_string(),
                })?;
        let mut terms = PriceTerms::charge(amount);
        terms.intent = intent.to_owned();
        Ok(Self::Fixed(PricedTerms::new(terms)))
    }

    /// Changes the options: fixed terms are re-made (with a fresh offer cache).
    pub(crate) fn with_options(self, f: impl FnOnce(&mut PriceOptions)) -> Self {
        match self {
            Self::Fixed(priced) => {
                let mut terms = priced.terms().clone();
                let mut options = PriceOptions {
                    description: terms.description.take(),
                    external_id: terms.external_id.take(),
                    currency: terms.currency.take(),
                    unit_type: terms.unit_type.take(),
                };
                f(&mut options);
                options.apply(&mut terms);
                Self::Fixed(PricedTerms::new(terms))
            }
            Self::Dynamic {
                intent,
                f: price,
                mut options,
            } => {
                f(&mut options);
                Self::Dynamic {
                    intent,
                    f: price,
                    options,
                }
            }
        }
    }

    /// The offers for one request.
    pub(crate) fn offers(
        &self,
        mpp: &Mpp,
        parts: &http::request::Parts,
    ) -> Result<Offers, PriceFailure> {
        match self {
            Self::Fixed(priced) => priced.offers(mpp.gate()).map_err(PriceFailure::Config),
            Self::Dynamic { f, options, .. } => {
                let mut terms = f(parts).map_err(PriceFailure::Request)?;
                options.apply(&mut terms);
                mpp.gate().offers(&terms).map_err(|e| match e {
                    OfferError::Amount { .. } => PriceFailure::Amount(e),
                    other => PriceFailure::Config(other),
                })
            }
        }
    }

    /// Checks at start-up that `mpp`'s methods can offer this price. Dynamic prices are
    /// probed with an amount of 1 and the layer's options (method, intent, currency,
    /// description); their per-request amounts can only be checked per request.
    pub(crate) fn check(&self, mpp: &Mpp) -> Result<(), ConfigError> {
        self.start_up_offers(mpp).map(drop)
    }

    /// The offers known at start-up: a fixed price's own (the ones its challenges carry),
    /// or a dynamic price's probe at an amount of 1 with the layer's options.
    fn start_up_offers(&self, mpp: &Mpp) -> Result<Offers, ConfigError> {
        Ok(match self {
            Self::Fixed(priced) => priced.offers(mpp.gate())?,
            Self::Dynamic {
                intent, options, ..
            } => {
                let mut probe = PriceTerms::charge(DecimalAmount::from_base_units(1, 0));
                probe.intent = (*intent).to_owned();
                options.apply(&mut probe);
                mpp.gate().offers(&probe)?
            }
        })
    }

    /// What discovery documents for this price under `mpp`: one offer per method and
    /// intent, read from the same offers the 402 challenges carry. A price computed per
    /// request documents its method, intent, currency and description with `amount: null`.
    pub(crate) fn payment_info(&self, mpp: &Mpp) -> Result<PaymentInfo, ConfigError> {
        let dynamic = matches!(self, Self::Dynamic { .. });
        let offers = self.start_up_offers(mpp)?;
        Ok(PaymentInfo::new(
            offers
                .iter()
                .map(|offer| {
                    let documented = PaymentOffer::from_offer(offer);
                    if dynamic {
                        documented.without_amount()
                    } else {
                        documented
                    }
                })
                .collect(),
        ))
    }

    /// The fixed terms, when the price does not depend on the request.
    pub(crate) fn terms(&self) -> Option<&PriceTerms> {
        match self {
            Self::Fixed(priced) => Some(priced.terms()),
            Self::Dynamic { .. } => None,
        }
    }
}
