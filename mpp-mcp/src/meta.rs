//! The payment's carriage in MCP `_meta`: the credential a client sends in
//! `params._meta["org.paymentauth/credential"]` (a JSON object whose challenge `request` is an
//! object, not base64url), and the receipt a server returns in
//! `result._meta["org.paymentauth/receipt"]`.

use mpp_core::credential::CredentialError;
use mpp_core::mcp::{self, META_CREDENTIAL, META_RECEIPT};
use mpp_core::{Credential, Receipt};
use rmcp::model::{JsonObject, MetaObject};
use serde_json::{Map, Value};

/// Takes the credential out of a request's `_meta` (so the tool never sees it): `None` when
/// there is none, `Some(Err)` when it cannot be decoded.
pub(crate) fn take_credential(
    meta: &mut JsonObject,
) -> Option<Result<Credential, CredentialError>> {
    let found = meta.remove(META_CREDENTIAL)?;
    // The one reader of MCP credentials (object `request`, `opaque` rebuilt from mppx's
    // `meta`) takes a whole message.
    let mut root_meta = Map::new();
    root_meta.insert(META_CREDENTIAL.into(), found);
    let mut message = Map::new();
    message.insert("_meta".into(), Value::Object(root_meta));
    mcp::credential_from_message(&Value::Object(message)).transpose()
}

/// The credential as MCP carries it: its challenge with `request` as a JSON object.
#[cfg_attr(not(feature = "client"), allow(dead_code))]
pub(crate) fn credential_value(credential: &Credential) -> Value {
    let mut object = Map::new();
    // Strings and JSON maps: this always serializes.
    let challenge =
        serde_json::to_value(mcp::McpChallenge::from(&credential.challenge)).unwrap_or(Value::Null);
    object.insert("challenge".into(), challenge);
    if let Some(source) = &credential.source {
        object.insert("source".into(), source.clone().into());
    }
    object.insert("payload".into(), credential.payload.clone());
    Value::Object(object)
}

/// Adds the receipt (with its required `challengeId`) to a result's `_meta`, keeping what
/// the tool put there.
pub(crate) fn attach_receipt(meta: &mut Option<MetaObject>, receipt: &Receipt, challenge_id: &str) {
    meta.get_or_insert_with(MetaObject::new).insert(
        META_RECEIPT.into(),
        mcp::receipt_meta(receipt, challenge_id),
    );
}

/// The receipt in a result's `_meta`, when there is one a client can trust the shape of.
#[cfg_attr(not(feature = "client"), allow(dead_code))]
pub(crate) fn receipt(meta: Option<&MetaObject>) -> Option<Receipt> {
    let value = meta?.get(META_RECEIPT)?;
    let receipt: Receipt = serde_json::from_value(value.clone()).ok()?;
    (receipt.status == "success").then_some(receipt)
}

#[cfg(test)]
mod tests {
    use super::*;
    use mpp_core::{Challenge, EncodedJson};
    use serde_json::json;

    #[test]
    fn a_credential_round_trips_through_meta() {
        let request =
            EncodedJson::from_value(json!({"amount": "1", "currency": "0x20c0"})).unwrap();
        let opaque = EncodedJson::from_value(json!({"_mppx_scope": "tools/call search"})).unwrap();
        let challenge = Challenge::builder_encoded("api", "tempo", "charge", request)
            .opaque(opaque)
            .expires("2030-01-01T00:00:00.000Z")
            .with_id("id-1");
        let credential = Credential::new(challenge, json!({"type": "hash", "hash": "0x1"}))
            .with_source("did:pkh:eip155:1:0xabc");
        let value = credential_value(&credential);
        assert_eq!(value["challenge"]["request"]["amount"], "1");
        assert!(value["challenge"]["opaque"].is_string());
        let mut meta = JsonObject::new();
        meta.insert(META_CREDENTIAL.into(), value);
        meta.insert("progressToken".into(), 1.into());
        let read = take_credential(&mut meta).and_then(Result::ok);
        assert_eq!(read.as_ref(), Some(&credential));
        assert!(!meta.contains_key(META_CREDENTIAL));
        assert!(take_credential(&mut meta).is_none());
    }

    #[test]
    fn a_malformed_credential_is_an_error() {
        let mut meta = JsonObject::new();
        meta.insert(META_CREDENTIAL.into(), json!("Payment abc"));
        assert!(matches!(take_credential(&mut meta), Some(Err(_))));
    }

    #[test]
    fn the_receipt_keeps_the_tools_meta() {
        let mut meta = Some(MetaObject::from(
            json!({"mine": 1}).as_object().cloned().unwrap(),
        ));
        let sent = Receipt::success("tempo", "0xab", "2030-01-01T00:00:00.000Z");
        attach_receipt(&mut meta, &sent, "id-1");
        let object = meta.as_ref().map(|m| m.0.clone()).unwrap();
        assert_eq!(object["mine"], 1);
        assert_eq!(object[META_RECEIPT]["challengeId"], "id-1");
        let read = receipt(meta.as_ref()).unwrap();
        assert_eq!(read.reference, "0xab");
    }
}
