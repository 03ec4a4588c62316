//! Session receipts (session.md §11, sdk-behaviour.md §1.7 "Receipt checks") and the
//! `payment-need-voucher` SSE event.
//!
//! A receipt is written exactly as mppx's `createSessionReceipt` writes it, keys in its
//! order:
//!
//! ```json
//! {"method":"tempo","intent":"session","status":"success","timestamp":"…",
//!  "reference":"0x<channelId>","challengeId":"…","channelId":"0x<channelId>",
//!  "acceptedCumulative":"100","spent":"100","units":4,"txHash":"0x…"}
//! ```
//!
//! `reference` is always the channel id (never a transaction hash), amounts are decimal
//! strings, `units` (the channel's running count) and `txHash` (set after an open, top-up,
//! close or settlement in this request) are left out when unknown. The mppx clients refuse a
//! receipt whose `spent` exceeds `acceptedCumulative`.

use alloy::primitives::B256;
use mpp_core::Receipt;
use mpp_core::expiry::{format_timestamp, parse_timestamp};
use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};
use serde_json::Value;
use time::OffsetDateTime;

use crate::METHOD_NAME;
use crate::hex::{parse_amount, parse_b256};

/// The intent name in session receipts.
pub const SESSION_INTENT: &str = "session";

/// A session receipt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionReceipt {
    /// When (RFC 3339).
    pub timestamp: String,
    /// The id of the challenge the credential answered.
    pub challenge_id: String,
    /// The channel (also the `reference`).
    pub channel_id: B256,
    /// The highest accepted voucher (on `close`, the close voucher's amount).
    pub accepted_cumulative: u128,
    /// What was charged against the channel so far.
    pub spent: u128,
    /// The channel's running count of charges.
    pub units: Option<u64>,
    /// The transaction sent for this request (open, top-up, close, settlement).
    pub tx_hash: Option<B256>,
}

/// Why a receipt is not one the official clients would accept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReceiptError {
    /// Not base64url of JSON.
    #[error("the receipt is not base64url JSON")]
    Encoding,
    /// A field is missing or has the wrong type or value.
    #[error("invalid session receipt: {0}")]
    Invalid(&'static str),
}

impl SessionReceipt {
    /// A receipt for `challenge_id` on `channel_id`, at `now`.
    pub fn new(
        challenge_id: impl Into<String>,
        channel_id: B256,
        accepted_cumulative: u128,
        spent: u128,
        now: OffsetDateTime,
    ) -> Self {
        Self {
            timestamp: format_timestamp(now),
            challenge_id: challenge_id.into(),
            channel_id,
            accepted_cumulative,
            spent,
            units: None,
            tx_hash: None,
        }
    }

    /// Sets `units`.
    pub fn with_units(mut self, units: u64) -> Self {
        self.units = Some(units);
        self
    }

    /// Sets `txHash`.
    pub fn with_tx_hash(mut self, tx_hash: B256) -> Self {
        self.tx_hash = Some(tx_hash);
        self
    }

    /// The JSON text, keys in mppx's order.
    pub fn to_json_string(&self) -> String {
        // Strings and integers: serializing cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The `Payment-Receipt` header value: base64url (no padding) of the JSON text.
    pub fn to_header_value(&self) -> String {
        mpp_core::base64url::encode(self.to_json_string())
    }

    /// The receipt as the gate's [`Receipt`] (`reference` = channel id, the session fields
    /// as extras).
    pub fn to_receipt(&self) -> Receipt {
        let mut receipt = Receipt::success(
            METHOD_NAME,
            format!("{:#x}", self.channel_id),
            self.timestamp.clone(),
        )
        .with_extra("intent", SESSION_INTENT)
        .with_extra("challengeId", self.challenge_id.clone())
        .with_extra("channelId", format!("{:#x}", self.channel_id))
        .with_extra("acceptedCumulative", self.accepted_cumulative.to_string())
        .with_extra("spent", self.spent.to_string());
        if let Some(units) = self.units {
            receipt = receipt.with_extra("units", units);
        }
        if let Some(tx_hash) = self.tx_hash {
            receipt = receipt.with_extra("txHash", format!("{tx_hash:#x}"));
        }
        receipt
    }

    /// Reads a receipt JSON object and checks it as the mppx clients do: `method` `tempo`,
    /// `intent` `session`, `status` `success`, an RFC 3339 `timestamp`, string `reference`
    /// and `challengeId`, a 32-byte `channelId`, decimal `acceptedCumulative` and `spent`
    /// with `spent ≤ acceptedCumulative`, numeric `units` and a 32-byte `txHash` if present.
    pub fn from_json(value: &Value) -> Result<Self, ReceiptError> {
        let obj = value
            .as_object()
            .ok_or(ReceiptError::Invalid("not an object"))?;
        let string = |field: &'static str| {
            obj.get(field)
                .and_then(Value::as_str)
                .ok_or(ReceiptError::Invalid(field))
        };
        if string("method")? != METHOD_NAME {
            return Err(ReceiptError::Invalid("method"));
        }
        if string("intent")? != SESSION_INTENT {
            return Err(ReceiptError::Invalid("intent"));
        }
        if string("status")? != "success" {
            return Err(ReceiptError::Invalid("status"));
        }
        let timestamp = string("timestamp")?;
        parse_timestamp(timestamp).map_err(|_| ReceiptError::Invalid("timestamp"))?;
        string("reference")?;
        let channel_id =
            parse_b256(string("channelId")?).ok_or(ReceiptError::Invalid("channelId"))?;
        let amount =
            |field: &'static str| parse_amount(string(field)?).ok_or(ReceiptError::Invalid(field));
        let accepted_cumulative = amount("acceptedCumulative")?;
        let spent = amount("spent")?;
        if spent > accepted_cumulative {
            return Err(ReceiptError::Invalid("spent exceeds acceptedCumulative"));
        }
        let units = match obj.get("units") {
            None => None,
            Some(v) => Some(v.as_u64().ok_or(ReceiptError::Invalid("units"))?),
        };
        let tx_hash = match obj.get("txHash") {
            None => None,
            Some(v) => Some(
                v.as_str()
                    .and_then(parse_b256)
                    .ok_or(ReceiptError::Invalid("txHash"))?,
            ),
        };
        Ok(Self {
            timestamp: timestamp.to_owned(),
            challenge_id: string("challengeId")?.to_owned(),
            channel_id,
            accepted_cumulative,
            spent,
            units,
            tx_hash,
        })
    }

    /// Decodes and checks a `Payment-Receipt` value ([`Self::from_json`]).
    pub fn from_header_value(value: &str) -> Result<Self, ReceiptError> {
        let bytes =
            mpp_core::base64url::decode(value.trim()).map_err(|_| ReceiptError::Encoding)?;
        let json: Value = serde_json::from_slice(&bytes).map_err(|_| ReceiptError::Encoding)?;
        Self::from_json(&json)
    }
}

impl Serialize for SessionReceipt {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let channel_id = format!("{:#x}", self.channel_id);
        let mut map = s.serialize_map(None)?;
        map.serialize_entry("method", METHOD_NAME)?;
        map.serialize_entry("intent", SESSION_INTENT)?;
        map.serialize_entry("status", "success")?;
        map.serialize_entry("timestamp", &self.timestamp)?;
        map.serialize_entry("reference", &channel_id)?;
        map.serialize_entry("challengeId", &self.challenge_id)?;
        map.serialize_entry("channelId", &channel_id)?;
        map.serialize_entry("acceptedCumulative", &self.accepted_cumulative.to_string())?;
        map.serialize_entry("spent", &self.spent.to_string())?;
        if let Some(units) = self.units {
            map.serialize_entry("units", &units)?;
        }
        if let Some(tx_hash) = self.tx_hash {
            map.serialize_entry("txHash", &format!("{tx_hash:#x}"))?;
        }
        map.end()
    }
}

impl From<&SessionReceipt> for Receipt {
    fn from(receipt: &SessionReceipt) -> Self {
        receipt.to_receipt()
    }
}

/// The `payment-need-voucher` SSE event: the stream paused until a voucher for
/// `required_cumulative` arrives. Every field is written as a string, in mppx's order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NeedVoucher {
    /// The channel (as the credential named it).
    pub channel_id: B256,
    /// The cumulative amount the next voucher must reach.
    pub required_cumulative: u128,
    /// The highest accepted voucher.
    pub accepted_cumulative: u128,
    /// The channel deposit (above it, the client tops up first).
    pub deposit: u128,
}

impl NeedVoucher {
    /// The JSON text: `{"channelId","requiredCumulative","acceptedCumulative","deposit"}`.
    pub fn to_json_string(&self) -> String {
        format!(
            r#"{{"channelId":"{:#x}","requiredCumulative":"{}","acceptedCumulative":"{}","deposit":"{}"}}"#,
            self.channel_id, self.required_cumulative, self.accepted_cumulative, self.deposit
        )
    }
}
