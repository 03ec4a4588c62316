//! Offers: what a route accepts, one per method and intent, with the terms encoded once.

use super::PaymentGate;
use crate::amount::DecimalAmount;
use crate::encoded_json::EncodedJson;
use crate::method::{Method, MethodError, PriceTerms};
use std::fmt;
use std::ops::Deref;
use std::sync::{Arc, OnceLock};

/// One payable alternative of a route: a method, an intent and the terms it offers, encoded
/// once (`base64url(JCS(request))`, the exact string every challenge carries).
#[derive(Clone)]
pub struct Offer {
    method: Arc<dyn Method>,
    intent: Arc<str>,
    request: EncodedJson,
    description: Option<Arc<str>>,
    /// The detail of a 402 when this is the route's only offer, naming its price; written
    /// once here rather than on every 402.
    payment_required: Option<Arc<str>>,
}

impl fmt::Debug for Offer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Offer")
            .field("method", &self.method.name())
            .field("intent", &self.intent)
            .field("request", &self.request.wire())
            .field("description", &self.description)
            .finish()
    }
}

impl Offer {
    /// The payment method.
    pub fn method(&self) -> &Arc<dyn Method> {
        &self.method
    }

    /// The method id (`tempo`, `stripe`...).
    pub fn method_name(&self) -> &str {
        self.method.name()
    }

    /// The intent (`charge`, `session`...).
    pub fn intent(&self) -> &str {
        &self.intent
    }

    /// The terms, as challenges carry them.
    pub fn request(&self) -> &EncodedJson {
        &self.request
    }

    /// The human description sent with each challenge.
    pub fn description(&self) -> Option<&str> {
        self.description.as_deref()
    }

    /// "Payment is required: 0.01 (10000 base units).", for a charge whose terms name a
    /// base-unit `amount`.
    pub(crate) fn payment_required_detail(&self) -> Option<&Arc<str>> {
        self.payment_required.as_ref()
    }
}

/// The 402 detail of a charge offer: its price in display and in base units.
fn payment_required_detail(
    intent: &str,
    price: DecimalAmount,
    request: &EncodedJson,
) -> Option<Arc<str>> {
    if intent != "charge" {
        return None;
    }
    let base_units = request.value().get("amount")?.as_str()?;
    Some(format!("Payment is required: {price} ({base_units} base units).").into())
}

/// The offers of one route, in method order. Cloning is cheap (shared).
#[derive(Debug, Clone)]
pub struct Offers(Arc<[Offer]>);

impl Deref for Offers {
    type Target = [Offer];
    fn deref(&self) -> &[Offer] {
        &self.0
    }
}

/// Why a route's terms cannot be offered. For fixed terms it is a configuration error,
/// reported at start-up; for terms computed per request, [`OfferError::Amount`] is about the
/// computed amount (which a client may have chosen), every other variant about the
/// configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OfferError {
    /// No configured method serves the intent.
    #[error("no configured payment method serves the `{0}` intent")]
    NoMethod(String),
    /// A method cannot express this amount (e.g. more decimals than the currency has, or too
    /// large), though it can offer the same terms at an amount of 1.
    #[error("{method}: {reason}")]
    Amount {
        /// The method id.
        method: String,
        /// The amount that cannot be offered.
        amount: DecimalAmount,
        /// Why.
        reason: String,
    },
    /// A method cannot express the terms (e.g. a currency it does not know).
    #[error("{method}: {reason}")]
    Method {
        /// The method id.
        method: String,
        /// Why.
        reason: String,
    },
    /// The description holds a control character, so it cannot travel in a header.
    #[error("the description contains a control character")]
    Description,
}

impl PaymentGate {
    /// Builds the offers of `terms` with every configured method that serves the intent.
    /// Deterministic and without I/O; call it once per route (see [`PricedTerms`]).
    pub fn offers(&self, terms: &PriceTerms) -> Result<Offers, OfferError> {
        if terms
            .description
            .as_deref()
            .is_some_and(|d| d.chars().any(char::is_control))
        {
            return Err(OfferError::Description);
        }
        let description: Option<Arc<str>> = terms.description.as_deref().map(Into::into);
        let intent: Arc<str> = terms.intent.as_str().into();
        let mut offers = Vec::new();
        for method in self
            .methods()
            .iter()
            .filter(|m| m.supports_intent(&terms.intent))
        {
            let failed = |reason: String| OfferError::Method {
                method: method.name().to_owned(),
                reason,
            };
            let request = method
                .request(terms)
                .map_err(|e| refused(method.as_ref(), terms, &e))?;
            let request = EncodedJson::from_value(request).map_err(|e| failed(e.to_string()))?;
            offers.push(Offer {
                method: method.clone(),
                intent: intent.clone(),
                payment_required: payment_required_detail(&intent, terms.amount, &request),
                request,
                description: description.clone(),
            });
        }
        if offers.is_empty() {
            return Err(OfferError::NoMethod(terms.intent.clone()));
        }
        Ok(Offers(offers.into()))
    }
}

/// Why `method` refused `terms`: the amount's fault when the same terms at an amount of 1
/// are fine (methods say why only in text, so the gate asks again rather than guess).
fn refused(method: &dyn Method, terms: &PriceTerms, error: &MethodError) -> OfferError {
    let one = DecimalAmount::from_base_units(1, 0);
    let amount_at_fault = terms.amount != one && {
        let probe = PriceTerms {
            amount: one,
            ..terms.clone()
        };
        method.request(&probe).is_ok()
    };
    if amount_at_fault {
        OfferError::Amount {
            method: method.name().to_owned(),
            amount: terms.amount,
            // The method's own words, without the "configuration error" framing: the amount
            // was computed per request.
            reason: match error {
                MethodError::Config(reason) => reason.clone(),
                other => other.to_string(),
            },
        }
    } else {
        OfferError::Method {
            method: method.name().to_owned(),
            reason: error.to_string(),
        }
    }
}

/// Fixed terms with their offers cached per gate configuration: what a priced route or tool
/// holds. The first gate it is used with keeps the cache; another gate rebuilds on each call.
#[derive(Clone)]
pub struct PricedTerms {
    terms: Arc<PriceTerms>,
    cache: Arc<OnceLock<(u64, Offers)>>,
}

impl fmt::Debug for PricedTerms {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("PricedTerms").field(&self.terms).finish()
    }
}

impl PricedTerms {
    /// Terms whose offers are not built yet.
    pub fn new(terms: PriceTerms) -> Self {
        Self {
            terms: Arc::new(terms),
            cache: Arc::new(OnceLock::new()),
        }
    }

    /// The terms.
    pub fn terms(&self) -> &PriceTerms {
        &self.terms
    }

    /// The offers for `gate`, built on first use and then shared.
    pub fn offers(&self, gate: &PaymentGate) -> Result<Offers, OfferError> {
        if let Some((id, offers)) = self.cache.get()
            && *id == gate.id()
        {
            return Ok(offers.clone());
        }
        let offers = gate.offers(&self.terms)?;
        // Another thread may have filled the cache meanwhile; both results are equal.
        let _ = self.cache.set((gate.id(), offers.clone()));
        Ok(offers)
    }
}
