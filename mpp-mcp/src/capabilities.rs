//! The `experimental.payment` capability: which methods and intents the paid tools accept,
//! so a client knows before its first call that it may have to pay. A hint only; the
//! challenges of a `-32042` are authoritative.

use mpp_core::gate::Offers;
use rmcp::model::{JsonObject, ServerCapabilities};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

/// The key under `experimental`.
pub(crate) const PAYMENT: &str = "payment";

/// `{"methods": {"tempo": {"intents": ["charge"]}}}` for these offers; `None` without any.
pub(crate) fn payment_capability<'a>(
    offers: impl Iterator<Item = &'a Offers>,
) -> Option<JsonObject> {
    let mut methods: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for offer in offers.flat_map(|o| o.iter()) {
        methods
            .entry(offer.method_name())
            .or_default()
            .insert(offer.intent());
    }
    if methods.is_empty() {
        return None;
    }
    let methods: JsonObject = methods
        .into_iter()
        .map(|(method, intents)| {
            let intents = intents.into_iter().map(Value::from).collect::<Vec<_>>();
            let mut entry = JsonObject::new();
            entry.insert("intents".into(), Value::Array(intents));
            (method.to_owned(), Value::Object(entry))
        })
        .collect();
    let mut payment = JsonObject::new();
    payment.insert("methods".into(), Value::Object(methods));
    Some(payment)
}

/// Adds `payment` (when there is one) under `experimental`, replacing any the inner server
/// wrote: what it accepts is decided here.
pub(crate) fn advertise(capabilities: &mut ServerCapabilities, payment: Option<&JsonObject>) {
    if let Some(payment) = payment {
        capabilities
            .experimental
            .get_or_insert_default()
            .insert(PAYMENT.into(), payment.clone());
    }
}
