//! The terms of a Tempo charge (the challenge's `request` object, charge.md §3) and the
//! transfers that pay it.

use alloy::primitives::{Address, B256};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::hex;

/// Most splits a request may carry.
pub const MAX_SPLITS: usize = 10;

/// A Tempo `charge` request: what a challenge asks the payer to transfer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TempoChargeRequest {
    /// Total amount in base units (the primary recipient gets `amount − Σ splits`).
    #[serde(with = "hex::amount")]
    pub amount: u128,
    /// The TIP-20 token contract.
    #[serde(with = "hex::address_lower")]
    pub currency: Address,
    /// The primary recipient.
    #[serde(with = "hex::address")]
    pub recipient: Address,
    /// Display text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Merchant reference, echoed in the receipt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
    /// Tempo-specific details.
    pub method_details: MethodDetails,
}

/// `methodDetails` of a Tempo charge request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MethodDetails {
    /// The chain the payment must happen on. Always emitted.
    pub chain_id: u64,
    /// The server pays gas for pull transactions. Emitted only when true.
    #[serde(default, skip_serializing_if = "is_false")]
    pub fee_payer: bool,
    /// A server-chosen memo the primary transfer must carry (disables the attribution rule).
    #[serde(
        default,
        with = "hex::memo_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub memo: Option<B256>,
    /// Extra recipients, paid out of `amount`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub splits: Option<Vec<Split>>,
    /// Which credential modes the server accepts; `None` = both.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub supported_modes: Option<Vec<ChargeMode>>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// One split of a charge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Split {
    /// Base units for this recipient (> 0).
    #[serde(with = "hex::amount")]
    pub amount: u128,
    /// The split recipient.
    #[serde(with = "hex::address")]
    pub recipient: Address,
    /// A memo the split transfer must carry.
    #[serde(
        default,
        with = "hex::memo_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub memo: Option<B256>,
}

/// A credential mode a request can allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChargeMode {
    /// The payer signs a transaction, the server broadcasts it (`transaction` payload).
    Pull,
    /// The payer broadcasts, then presents the hash (`hash` payload).
    Push,
    /// A mode this version does not know; never matches.
    #[serde(other)]
    Unknown,
}

/// A transfer the payment must contain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExpectedTransfer {
    /// Who receives it.
    pub recipient: Address,
    /// Exact base units.
    pub amount: u128,
    /// The memo it must carry, if any.
    pub memo: Option<B256>,
}

/// Why a charge request is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// The JSON does not have the Tempo charge request shape.
    #[error("malformed tempo charge request: {0}")]
    Malformed(String),
    /// The splits break the charge rules.
    #[error("invalid splits: {0}")]
    Splits(&'static str),
}

impl TempoChargeRequest {
    /// Parses and validates a request object.
    pub fn from_json(value: &Value) -> Result<Self, RequestError> {
        let request = Self::deserialize(value).map_err(malformed)?;
        request.validate()?;
        Ok(request)
    }

    /// Parses and validates the decoded `request` of a challenge
    /// (`challenge.request.value()`), without copying it.
    pub fn from_map(map: &Map<String, Value>) -> Result<Self, RequestError> {
        let request = Self::parse_map(map)?;
        request.validate()?;
        Ok(request)
    }

    /// Parses without validating: for the server, whose verification validates once
    /// ([`Self::expected_transfers`]).
    pub(crate) fn parse_map(map: &Map<String, Value>) -> Result<Self, RequestError> {
        Self::deserialize(map).map_err(malformed)
    }

    /// The JSON object for a challenge.
    pub fn to_json(&self) -> Value {
        // Serializing plain strings, integers and booleans cannot fail.
        serde_json::to_value(self).unwrap_or(Value::Null)
    }

    /// Checks the split rules: 1..=10 entries, each > 0, and their sum strictly below
    /// `amount` (so the primary recipient always gets something).
    pub fn validate(&self) -> Result<(), RequestError> {
        let Some(splits) = &self.method_details.splits else {
            return Ok(());
        };
        if splits.is_empty() {
            return Err(RequestError::Splits(
                "splits must not be empty when present",
            ));
        }
        if splits.len() > MAX_SPLITS {
            return Err(RequestError::Splits("at most 10 splits are allowed"));
        }
        if splits.iter().any(|s| s.amount == 0) {
            return Err(RequestError::Splits("every split amount must be > 0"));
        }
        let sum = self
            .splits_total()
            .ok_or(RequestError::Splits("split sum overflows"))?;
        if sum >= self.amount {
            return Err(RequestError::Splits(
                "the sum of splits must be strictly less than amount",
            ));
        }
        Ok(())
    }

    fn splits_total(&self) -> Option<u128> {
        self.method_details
            .splits
            .iter()
            .flatten()
            .try_fold(0u128, |acc, s| acc.checked_add(s.amount))
    }

    /// Whether credentials of `mode` are accepted (absent `supportedModes` = all).
    pub fn allows(&self, mode: ChargeMode) -> bool {
        match &self.method_details.supported_modes {
            None => true,
            Some(modes) => modes.contains(&mode),
        }
    }

    /// The transfers that pay this request: the primary (`amount − Σ splits`, with the
    /// request memo) and one per split. Validates the request first ([`Self::validate`]), so
    /// a verifier that starts here validates exactly once.
    pub fn expected_transfers(&self) -> Result<Vec<ExpectedTransfer>, RequestError> {
        self.validate()?;
        let sum = self
            .splits_total()
            .ok_or(RequestError::Splits("split sum overflows"))?;
        let mut out =
            Vec::with_capacity(1 + self.method_details.splits.as_ref().map_or(0, Vec::len));
        out.push(ExpectedTransfer {
            recipient: self.recipient,
            amount: self.amount - sum,
            memo: self.method_details.memo,
        });
        for split in self.method_details.splits.iter().flatten() {
            out.push(ExpectedTransfer {
                recipient: split.recipient,
                amount: split.amount,
                memo: split.memo,
            });
        }
        Ok(out)
    }

    /// Σ of all expected transfers (= `amount`).
    pub fn total(&self) -> u128 {
        self.amount
    }
}

fn malformed(e: serde_json::Error) -> RequestError {
    RequestError::Malformed(e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn base() -> serde_json::Value {
        json!({
            "amount": "1000000",
            "currency": "0x20c0000000000000000000000000000000000000",
            "recipient": "0x742d35Cc6634C0532925a3b844Bc9e7595f8fE00",
            "methodDetails": {"chainId": 42431}
        })
    }

    #[test]
    fn round_trips_the_minimal_shape() {
        let r = TempoChargeRequest::from_json(&base()).unwrap();
        assert_eq!(r.amount, 1_000_000);
        let json = r.to_json();
        assert_eq!(
            json["currency"],
            "0x20c0000000000000000000000000000000000000"
        );
        // Addresses compare by bytes: the checksum form of the recipient round-trips.
        assert_eq!(TempoChargeRequest::from_json(&json).unwrap(), r);
        assert_eq!(json["methodDetails"], json!({"chainId": 42431}));
        let t = r.expected_transfers().unwrap();
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].amount, 1_000_000);
    }

    #[test]
    fn fee_payer_is_only_emitted_when_true() {
        let mut r = TempoChargeRequest::from_json(&base()).unwrap();
        assert!(r.to_json()["methodDetails"].get("feePayer").is_none());
        r.method_details.fee_payer = true;
        assert_eq!(r.to_json()["methodDetails"]["feePayer"], true);
    }

    #[test]
    fn rejects_bad_amounts_and_addresses() {
        for amount in ["", "-1", "1.5", "+1", "0x10", " 1", "1e6"] {
            let mut v = base();
            v["amount"] = json!(amount);
            assert!(TempoChargeRequest::from_json(&v).is_err(), "{amount}");
        }
        let mut v = base();
        v["amount"] = json!(1000000);
        assert!(TempoChargeRequest::from_json(&v).is_err());
        let mut v = base();
        v["recipient"] = json!("0x742d35");
        assert!(TempoChargeRequest::from_json(&v).is_err());
        let mut v = base();
        v["methodDetails"] = json!({});
        assert!(TempoChargeRequest::from_json(&v).is_err());
    }

    #[test]
    fn splits_rules() {
        let split = |a: &str| json!({"amount": a, "recipient": "0x0000000000000000000000000000000000000001"});
        let with = |splits: Vec<serde_json::Value>| {
            let mut v = base();
            v["methodDetails"]["splits"] = json!(splits);
            TempoChargeRequest::from_json(&v)
        };
        let r = with(vec![split("250000"), split("50000")]).unwrap();
        let t = r.expected_transfers().unwrap();
        assert_eq!(
            t.iter().map(|t| t.amount).collect::<Vec<_>>(),
            [700000, 250000, 50000]
        );
        assert!(with(vec![]).is_err());
        assert!(with(vec![split("0")]).is_err());
        assert!(
            with(vec![split("1000000")]).is_err(),
            "sum must be strictly below amount"
        );
        assert!(with(vec![split("999999")]).is_ok());
        assert!(with((0..11).map(|_| split("1")).collect()).is_err());
        assert!(with((0..10).map(|_| split("1")).collect()).is_ok());
    }

    #[test]
    fn tolerates_unknown_fields_and_modes() {
        let mut v = base();
        v["expires"] = json!("2025-01-01T00:00:00Z");
        v["methodDetails"]["machineTokenEnabled"] = json!(true);
        v["methodDetails"]["supportedModes"] = json!(["pull", "teleport"]);
        let r = TempoChargeRequest::from_json(&v).unwrap();
        assert!(r.allows(ChargeMode::Pull));
        assert!(!r.allows(ChargeMode::Push));
    }

    #[test]
    fn from_map_parses_in_place_and_validates() {
        let v = base();
        let map = v.as_object().unwrap();
        assert_eq!(
            TempoChargeRequest::from_map(map).unwrap(),
            TempoChargeRequest::from_json(&v).unwrap()
        );
        let mut bad = base();
        bad["methodDetails"]["splits"] = json!([]);
        let bad = bad.as_object().unwrap();
        assert!(matches!(
            TempoChargeRequest::from_map(bad),
            Err(RequestError::Splits(_))
        ));
        // The server's parse leaves validation to verification.
        assert!(TempoChargeRequest::parse_map(bad).is_ok());
    }
}
