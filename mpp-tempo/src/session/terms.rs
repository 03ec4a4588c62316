//! The terms of a Tempo session (the challenge's `request` object, session.md §3).
//!
//! The wire form is what both SDKs emit and accept: amounts are decimal strings of base
//! units, `unitType` is always written (the mppx verifier requires it), `methodDetails`
//! always carries `escrowContract` and `chainId`, `feePayer` only when true, and
//! `sessionProtocol: "v2"` for the precompile (v1 leaves it out, as the `mpp` server does;
//! `"v1"` is read as v1). Key order is irrelevant: a challenge's request is JCS-encoded.

use alloy::primitives::{Address, B256};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::channel::{SessionProtocol, TIP20_CHANNEL_RESERVE};
use super::voucher::VoucherDomain;
use super::wire;
use crate::hex;

/// A Tempo `session` request: the price per unit and the channel the payer must use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TempoSessionRequest {
    /// Base units per unit (> 0). A request costs `amount × units`.
    #[serde(with = "hex::amount")]
    pub amount: u128,
    /// What one unit is (`"request"`, `"token"`, `"llm_token"`, `"byte"`…). Always set by
    /// the constructors; a challenge from a server that leaves it out parses to `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit_type: Option<String>,
    /// A hint for the first deposit, in base units (left out when resuming a channel).
    #[serde(
        default,
        with = "wire::amount_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub suggested_deposit: Option<u128>,
    /// The TIP-20 token (must equal the descriptor's `token`).
    #[serde(with = "hex::address_lower")]
    pub currency: Address,
    /// The payee (must equal the descriptor's `payee`).
    #[serde(with = "hex::address")]
    pub recipient: Address,
    /// Display text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Merchant reference.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
    /// Tempo-specific details.
    pub method_details: SessionMethodDetails,
}

/// `methodDetails` of a Tempo session request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionMethodDetails {
    /// The escrow: the precompile for v2, a `TempoStreamChannel` for v1. Written in lowercase
    /// hex, as mppx writes the precompile address.
    #[serde(with = "hex::address_lower")]
    pub escrow_contract: Address,
    /// The chain. Always written.
    pub chain_id: u64,
    /// `"v2"` for the precompile; absent or `"v1"` for a v1 escrow. See
    /// [`TempoSessionRequest::protocol`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_protocol: Option<SessionProtocol>,
    /// The smallest increase of a new voucher, in base units.
    #[serde(
        default,
        with = "wire::amount_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub min_voucher_delta: Option<u128>,
    /// The server pays gas for `open` and `topUp` transactions. Written only when true.
    #[serde(default, skip_serializing_if = "is_false")]
    pub fee_payer: bool,
    /// The fee token clients should use in sponsored transactions (SDK extension).
    #[serde(
        default,
        with = "wire::address_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub fee_token: Option<Address>,
    /// v2: the payee-side operator clients must put into new descriptors (absent = zero).
    #[serde(
        default,
        with = "wire::address_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub operator: Option<Address>,
    /// A channel the payer may resume.
    #[serde(
        default,
        with = "wire::b256_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub channel_id: Option<B256>,
    /// A resume hint (session.md §11), kept as JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_snapshot: Option<Value>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// Why session terms are not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TermsError {
    /// The JSON does not have the Tempo session request shape.
    #[error("malformed tempo session request: {0}")]
    Malformed(String),
    /// The shape is right but a value is not acceptable.
    #[error("invalid tempo session request: {0}")]
    Invalid(&'static str),
}

impl TempoSessionRequest {
    /// v2 terms on the precompile: `amount` base units per `unit_type`, paid in `currency`
    /// to `recipient` on `chain_id`.
    pub fn v2(
        chain_id: u64,
        amount: u128,
        unit_type: impl Into<String>,
        currency: Address,
        recipient: Address,
    ) -> Self {
        Self::new(
            SessionProtocol::V2,
            TIP20_CHANNEL_RESERVE,
            chain_id,
            amount,
            unit_type.into(),
            currency,
            recipient,
        )
    }

    /// v1 terms on the `TempoStreamChannel` escrow at `escrow`.
    pub fn v1(
        chain_id: u64,
        escrow: Address,
        amount: u128,
        unit_type: impl Into<String>,
        currency: Address,
        recipient: Address,
    ) -> Self {
        Self::new(
            SessionProtocol::V1,
            escrow,
            chain_id,
            amount,
            unit_type.into(),
            currency,
            recipient,
        )
    }

    fn new(
        protocol: SessionProtocol,
        escrow: Address,
        chain_id: u64,
        amount: u128,
        unit_type: String,
        currency: Address,
        recipient: Address,
    ) -> Self {
        Self {
            amount,
            unit_type: Some(unit_type),
            suggested_deposit: None,
            currency,
            recipient,
            description: None,
            external_id: None,
            method_details: SessionMethodDetails {
                escrow_contract: escrow,
                chain_id,
                // v1 leaves the marker out, as the `mpp` server does.
                session_protocol: (protocol == SessionProtocol::V2).then_some(protocol),
                min_voucher_delta: None,
                fee_payer: false,
                fee_token: None,
                operator: None,
                channel_id: None,
                session_snapshot: None,
            },
        }
    }

    /// Sets `suggestedDeposit`.
    pub fn with_suggested_deposit(mut self, deposit: u128) -> Self {
        self.suggested_deposit = Some(deposit);
        self
    }

    /// Sets `methodDetails.minVoucherDelta`.
    pub fn with_min_voucher_delta(mut self, delta: u128) -> Self {
        self.method_details.min_voucher_delta = Some(delta);
        self
    }

    /// Sets `methodDetails.feePayer` (written only when true).
    pub fn with_fee_payer(mut self, sponsored: bool) -> Self {
        self.method_details.fee_payer = sponsored;
        self
    }

    /// Sets `methodDetails.operator` (v2).
    pub fn with_operator(mut self, operator: Address) -> Self {
        self.method_details.operator = Some(operator);
        self
    }

    /// Parses and validates a request object.
    pub fn from_json(value: &Value) -> Result<Self, TermsError> {
        let request = Self::deserialize(value).map_err(malformed)?;
        request.validate()?;
        Ok(request)
    }

    /// Parses and validates the decoded `request` of a challenge, without copying it.
    pub fn from_map(map: &Map<String, Value>) -> Result<Self, TermsError> {
        let request = Self::deserialize(map).map_err(malformed)?;
        request.validate()?;
        Ok(request)
    }

    /// The JSON object for a challenge.
    pub fn to_json(&self) -> Value {
        // Strings, integers, booleans and a JSON value: serializing cannot fail.
        serde_json::to_value(self).unwrap_or(Value::Null)
    }

    /// Checks the values: `amount > 0`, a non-zero escrow, and for v2 every amount within
    /// `uint96`.
    pub fn validate(&self) -> Result<(), TermsError> {
        if self.amount == 0 {
            return Err(TermsError::Invalid("amount must be greater than 0"));
        }
        if self.method_details.escrow_contract.is_zero() {
            return Err(TermsError::Invalid("escrowContract must not be zero"));
        }
        let max = self.protocol().max_amount();
        let amounts = [
            Some(self.amount),
            self.suggested_deposit,
            self.method_details.min_voucher_delta,
        ];
        if amounts.into_iter().flatten().any(|a| a > max) {
            return Err(TermsError::Invalid(
                "an amount exceeds the escrow's range (uint96 for v2)",
            ));
        }
        Ok(())
    }

    /// The protocol version: v2 when `sessionProtocol` says `"v2"`, v1 otherwise.
    pub fn protocol(&self) -> SessionProtocol {
        self.method_details
            .session_protocol
            .unwrap_or(SessionProtocol::V1)
    }

    /// The EIP-712 domain vouchers for these terms are signed in.
    pub fn voucher_domain(&self) -> VoucherDomain {
        VoucherDomain::new(
            self.protocol(),
            self.method_details.chain_id,
            self.method_details.escrow_contract,
        )
    }

    /// The operator new v2 descriptors must carry (zero when none is advertised).
    pub fn operator(&self) -> Address {
        self.method_details.operator.unwrap_or(Address::ZERO)
    }

    /// `methodDetails.minVoucherDelta`, 0 when absent.
    pub fn min_voucher_delta(&self) -> u128 {
        self.method_details.min_voucher_delta.unwrap_or(0)
    }

    /// What `units` units cost (`amount × units`), `None` on overflow.
    pub fn cost(&self, units: u64) -> Option<u128> {
        self.amount.checked_mul(u128::from(units))
    }
}

fn malformed(e: serde_json::Error) -> TermsError {
    TermsError::Malformed(e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::PATH_USD;
    use serde_json::json;

    #[test]
    fn v2_wire_form() {
        let recipient: Address = "0x742d35cc6634c0532925a3b844bc9e7595f8fe00"
            .parse()
            .unwrap();
        let r = TempoSessionRequest::v2(42431, 25, "llm_token", PATH_USD, recipient)
            .with_suggested_deposit(10_000_000)
            .with_min_voucher_delta(1000);
        assert_eq!(
            r.to_json(),
            json!({
                "amount": "25",
                "unitType": "llm_token",
                "suggestedDeposit": "10000000",
                "currency": "0x20c0000000000000000000000000000000000000",
                "recipient": recipient.to_checksum(None),
                "methodDetails": {
                    "escrowContract": "0x4d50500000000000000000000000000000000000",
                    "chainId": 42431,
                    "sessionProtocol": "v2",
                    "minVoucherDelta": "1000"
                }
            })
        );
        assert_eq!(TempoSessionRequest::from_json(&r.to_json()).unwrap(), r);
        assert_eq!(r.protocol(), SessionProtocol::V2);
    }

    #[test]
    fn v1_leaves_the_marker_out_and_reads_v1() {
        let escrow = crate::session::V1_ESCROW_MODERATO;
        let r = TempoSessionRequest::v1(42431, escrow, 1, "request", PATH_USD, Address::ZERO);
        let mut json = r.to_json();
        assert!(json["methodDetails"].get("sessionProtocol").is_none());
        assert_eq!(r.protocol(), SessionProtocol::V1);
        json["methodDetails"]["sessionProtocol"] = json!("v1");
        let parsed = TempoSessionRequest::from_json(&json).unwrap();
        assert_eq!(parsed.protocol(), SessionProtocol::V1);
        json["methodDetails"]["sessionProtocol"] = json!("v3");
        assert!(TempoSessionRequest::from_json(&json).is_err());
    }

    #[test]
    fn refuses_bad_values() {
        let base = TempoSessionRequest::v2(4217, 1, "request", PATH_USD, Address::ZERO).to_json();
        for (path, value) in [
            ("amount", json!("0")),
            ("amount", json!("1.5")),
            ("amount", json!(1)),
            ("amount", json!("79228162514264337593543950336")),
            ("suggestedDeposit", json!("-1")),
            ("currency", json!("0x20c0")),
        ] {
            let mut v = base.clone();
            v[path] = value;
            assert!(TempoSessionRequest::from_json(&v).is_err(), "{path}");
        }
        let mut v = base.clone();
        v["methodDetails"]["escrowContract"] = json!("0x0000000000000000000000000000000000000000");
        assert!(TempoSessionRequest::from_json(&v).is_err());
        let mut v = base;
        v["methodDetails"]
            .as_object_mut()
            .unwrap()
            .remove("chainId");
        assert!(TempoSessionRequest::from_json(&v).is_err());
    }
}
