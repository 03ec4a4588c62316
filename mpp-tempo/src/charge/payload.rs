//! The credential `payload` of a Tempo charge (charge.md §4), parsed strictly.

use alloy::primitives::B256;
use serde_json::Value;

use super::ChargeError;
use crate::hex::{parse_b256, parse_hex_bytes};

/// Largest signed transaction accepted (the whole credential is capped at 16 KiB anyway).
const MAX_TRANSACTION_BYTES: usize = 16 * 1024;

/// A decoded charge payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChargePayload {
    /// Pull: a signed `0x76` transaction or `0x78` fee-payer envelope for the server to send.
    Transaction {
        /// The raw bytes, starting with the type byte.
        raw: Vec<u8>,
    },
    /// Push: the hash of a transaction the payer already sent.
    Hash {
        /// The transaction hash.
        hash: B256,
    },
    /// Zero amount: an EIP-712 signature proving control of the `source` account.
    Proof {
        /// The 65-byte signature.
        signature: Vec<u8>,
    },
}

impl ChargePayload {
    /// Parses `payload`. `hash` needs `hash` and no `signature`; `transaction` and `proof` need
    /// `signature`. Anything else is `invalid-payload`.
    pub fn from_json(payload: &Value) -> Result<Self, ChargeError> {
        let bad = |m: &str| ChargeError::InvalidPayload(m.to_owned());
        let obj = payload
            .as_object()
            .ok_or_else(|| bad("payload is not an object"))?;
        let kind = obj
            .get("type")
            .and_then(Value::as_str)
            .ok_or_else(|| bad("payload.type is missing"))?;
        let string = |field: &str| obj.get(field).and_then(Value::as_str);
        match kind {
            "hash" => {
                if obj.contains_key("signature") {
                    return Err(bad("a hash payload must not carry a signature"));
                }
                let hash = string("hash")
                    .and_then(parse_b256)
                    .ok_or_else(|| bad("payload.hash must be 0x + 64 hex digits"))?;
                Ok(Self::Hash { hash })
            }
            "transaction" => {
                let raw = string("signature")
                    .and_then(parse_hex_bytes)
                    .ok_or_else(|| bad("payload.signature must be 0x-hex transaction bytes"))?;
                if raw.is_empty() || raw.len() > MAX_TRANSACTION_BYTES {
                    return Err(bad("payload.signature has an implausible length"));
                }
                Ok(Self::Transaction { raw })
            }
            "proof" => {
                let signature = string("signature")
                    .and_then(parse_hex_bytes)
                    .ok_or_else(|| bad("payload.signature must be 0x-hex"))?;
                if signature.len() != 65 {
                    return Err(bad("a proof signature must be 65 bytes"));
                }
                Ok(Self::Proof { signature })
            }
            other => Err(ChargeError::InvalidPayload(format!(
                "unknown payload type `{other}`"
            ))),
        }
    }

    /// The payload type name.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Transaction { .. } => "transaction",
            Self::Hash { .. } => "hash",
            Self::Proof { .. } => "proof",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn strict_fields() {
        let h = "0x1a2b3c4d5e6f7890abcdef1234567890abcdef1234567890abcdef1234567890";
        assert!(matches!(
            ChargePayload::from_json(&json!({"type": "hash", "hash": h})),
            Ok(ChargePayload::Hash { .. })
        ));
        for bad in [
            json!({"type": "hash", "hash": h, "signature": "0x00"}),
            json!({"type": "hash"}),
            json!({"type": "hash", "hash": "0x1234"}),
            json!({"type": "transaction"}),
            json!({"type": "transaction", "signature": "0x7"}),
            json!({"type": "transaction", "signature": "zz"}),
            json!({"type": "proof", "signature": "0x00"}),
            json!({"type": "teleport"}),
            json!({"hash": h}),
            json!("hash"),
        ] {
            assert!(
                matches!(
                    ChargePayload::from_json(&bad),
                    Err(ChargeError::InvalidPayload(_))
                ),
                "{bad}"
            );
        }
    }
}
