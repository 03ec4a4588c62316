//! The credential `payload` of a Tempo session (session.md §6), one variant per `action`.
//!
//! | action | fields besides `action` |
//! |---|---|
//! | `open` | `type: "transaction"`, `channelId`, `transaction`, `signature`, `descriptor` (v2), `cumulativeAmount`, `authorizedSigner?` |
//! | `topUp` | `type: "transaction"`, `channelId`, `transaction`, `descriptor` (v2), `additionalDeposit` |
//! | `voucher` | `channelId`, `descriptor` (v2), `cumulativeAmount`, `signature` |
//! | `close` | `channelId`, `descriptor` (v2), `cumulativeAmount`, `signature`, `closeSignature?` |
//!
//! Parsing checks formats only (hex lengths, digit strings, the amount range of the
//! protocol), never signatures: that is the verifier's job, after the cheap checks. SDK-only
//! extras (`authorizationSignature`, `refundSignature`, `settlementRoute`) and unknown fields
//! are ignored; an unknown `action` is refused. v1 payloads may carry a descriptor (it is
//! parsed if present); v2 payloads must.

use alloy::primitives::{Address, B256, Bytes};
use mpp_core::did::PkhDid;
use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};
use serde_json::{Map, Value};

use super::SessionError;
use super::channel::{ChannelDescriptor, SessionProtocol};
use super::voucher::VoucherSignature;
use crate::hex::{parse_address, parse_amount, parse_b256, parse_hex_bytes};

/// Largest signed transaction accepted (the whole credential is capped at 16 KiB anyway).
pub const MAX_TRANSACTION_BYTES: usize = 16 * 1024;

/// A decoded session payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionPayload {
    /// Open a channel: the signed open transaction and the first voucher.
    Open(OpenPayload),
    /// Add to the deposit: the signed top-up transaction.
    TopUp(TopUpPayload),
    /// A new cumulative voucher.
    Voucher(VoucherPayload),
    /// Close cooperatively with a final voucher.
    Close(ClosePayload),
}

/// `action: "open"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenPayload {
    /// The channel the transaction opens.
    pub channel_id: B256,
    /// The payer-signed Tempo transaction: `0x76…`, or a `0x78…` fee-payer envelope when the
    /// server sponsors.
    pub transaction: Bytes,
    /// The channel descriptor (v2; required there).
    pub descriptor: Option<ChannelDescriptor>,
    /// The first voucher's amount (covers the first unit: SDK clients never open at 0).
    pub cumulative_amount: u128,
    /// The first voucher's signature.
    pub signature: VoucherSignature,
    /// The voucher signer the client declares (v2: must equal the descriptor's).
    pub authorized_signer: Option<Address>,
}

/// `action: "topUp"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopUpPayload {
    /// The channel to top up.
    pub channel_id: B256,
    /// The payer-signed Tempo transaction (or `0x78` envelope).
    pub transaction: Bytes,
    /// The channel descriptor (v2; required there).
    pub descriptor: Option<ChannelDescriptor>,
    /// What the transaction adds to the deposit.
    pub additional_deposit: u128,
}

/// `action: "voucher"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VoucherPayload {
    /// The channel.
    pub channel_id: B256,
    /// The channel descriptor (v2; required there).
    pub descriptor: Option<ChannelDescriptor>,
    /// The running total the payer authorizes.
    pub cumulative_amount: u128,
    /// The voucher signature.
    pub signature: VoucherSignature,
}

/// `action: "close"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClosePayload {
    /// The channel.
    pub channel_id: B256,
    /// The channel descriptor (v2; required there).
    pub descriptor: Option<ChannelDescriptor>,
    /// The final voucher's amount.
    pub cumulative_amount: u128,
    /// The final voucher's signature.
    pub signature: VoucherSignature,
    /// v2: the EIP-712 `CloseAuthorization` newer SDKs send (mppx ≥ 0.13.1, `mpp` ≥ 0.17);
    /// mppx 0.11 sends none.
    pub close_signature: Option<VoucherSignature>,
}

/// Why a payload does not have the shape of its action (answered `invalid-payload`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PayloadError {
    /// The payload is not a JSON object.
    #[error("the payload is not a JSON object")]
    NotAnObject,
    /// `action` is missing or not a string.
    #[error("payload.action is missing")]
    MissingAction,
    /// `action` is not one of `open`, `topUp`, `voucher`, `close`.
    #[error("unknown session action `{0}`")]
    UnknownAction(String),
    /// A required field is absent.
    #[error("payload.{0} is missing")]
    Missing(&'static str),
    /// A field is present but malformed.
    #[error("payload.{field} must be {expected}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// What it must be.
        expected: &'static str,
    },
    /// An amount does not fit the escrow's type (`uint96` for v2).
    #[error("payload.{0} exceeds the escrow's amount range")]
    OutOfRange(&'static str),
    /// A v2 payload without its channel descriptor.
    #[error("payload.descriptor is required for v2 sessions")]
    MissingDescriptor,
}

impl From<PayloadError> for SessionError {
    fn from(e: PayloadError) -> Self {
        SessionError::InvalidPayload(e.to_string())
    }
}

impl SessionPayload {
    /// Parses `payload` for a session of `protocol` (see the module docs).
    pub fn from_json(payload: &Value, protocol: SessionProtocol) -> Result<Self, PayloadError> {
        let obj = payload.as_object().ok_or(PayloadError::NotAnObject)?;
        let fields = Fields { obj, protocol };
        let action = obj
            .get("action")
            .and_then(Value::as_str)
            .ok_or(PayloadError::MissingAction)?;
        let parsed = match action {
            "open" => {
                fields.transaction_type()?;
                Self::Open(OpenPayload {
                    channel_id: fields.channel_id()?,
                    transaction: fields.transaction()?,
                    descriptor: fields.descriptor()?,
                    cumulative_amount: fields.amount("cumulativeAmount")?,
                    signature: fields.signature("signature")?,
                    authorized_signer: fields.optional_address("authorizedSigner")?,
                })
            }
            "topUp" => {
                fields.transaction_type()?;
                Self::TopUp(TopUpPayload {
                    channel_id: fields.channel_id()?,
                    transaction: fields.transaction()?,
                    descriptor: fields.descriptor()?,
                    additional_deposit: fields.amount("additionalDeposit")?,
                })
            }
            "voucher" => Self::Voucher(VoucherPayload {
                channel_id: fields.channel_id()?,
                descriptor: fields.descriptor()?,
                cumulative_amount: fields.amount("cumulativeAmount")?,
                signature: fields.signature("signature")?,
            }),
            "close" => Self::Close(ClosePayload {
                channel_id: fields.channel_id()?,
                descriptor: fields.descriptor()?,
                cumulative_amount: fields.amount("cumulativeAmount")?,
                signature: fields.signature("signature")?,
                close_signature: match obj.get("closeSignature") {
                    None | Some(Value::Null) => None,
                    Some(_) => Some(fields.signature("closeSignature")?),
                },
            }),
            other => return Err(PayloadError::UnknownAction(other.to_owned())),
        };
        if protocol == SessionProtocol::V2 && parsed.descriptor().is_none() {
            return Err(PayloadError::MissingDescriptor);
        }
        Ok(parsed)
    }

    /// The `action` name.
    pub fn action(&self) -> &'static str {
        match self {
            Self::Open(_) => "open",
            Self::TopUp(_) => "topUp",
            Self::Voucher(_) => "voucher",
            Self::Close(_) => "close",
        }
    }

    /// The channel id the payload names.
    pub fn channel_id(&self) -> B256 {
        match self {
            Self::Open(p) => p.channel_id,
            Self::TopUp(p) => p.channel_id,
            Self::Voucher(p) => p.channel_id,
            Self::Close(p) => p.channel_id,
        }
    }

    /// The descriptor, when the payload carries one (always, for v2).
    pub fn descriptor(&self) -> Option<&ChannelDescriptor> {
        match self {
            Self::Open(p) => p.descriptor.as_ref(),
            Self::TopUp(p) => p.descriptor.as_ref(),
            Self::Voucher(p) => p.descriptor.as_ref(),
            Self::Close(p) => p.descriptor.as_ref(),
        }
    }

    /// The voucher the payload carries (`open`, `voucher`, `close`): amount and signature.
    pub fn voucher(&self) -> Option<(u128, &VoucherSignature)> {
        match self {
            Self::Open(p) => Some((p.cumulative_amount, &p.signature)),
            Self::Voucher(p) => Some((p.cumulative_amount, &p.signature)),
            Self::Close(p) => Some((p.cumulative_amount, &p.signature)),
            Self::TopUp(_) => None,
        }
    }

    /// Whether the request is channel management (`topUp`, `close`): answered 204 with a
    /// receipt, never by the handler.
    pub fn is_management(&self) -> bool {
        matches!(self, Self::TopUp(_) | Self::Close(_))
    }

    /// The payload JSON (keys in mppx's order when serialized directly).
    pub fn to_json(&self) -> Value {
        // Strings and a descriptor of strings: serializing cannot fail.
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

impl Serialize for SessionPayload {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(None)?;
        map.serialize_entry("action", self.action())?;
        match self {
            Self::Open(p) => {
                map.serialize_entry("type", "transaction")?;
                map.serialize_entry("channelId", &p.channel_id)?;
                map.serialize_entry("transaction", &p.transaction)?;
                map.serialize_entry("signature", &p.signature)?;
                if let Some(d) = &p.descriptor {
                    map.serialize_entry("descriptor", d)?;
                }
                map.serialize_entry("cumulativeAmount", &p.cumulative_amount.to_string())?;
                if let Some(a) = &p.authorized_signer {
                    map.serialize_entry("authorizedSigner", &a.to_checksum(None))?;
                }
            }
            Self::TopUp(p) => {
                map.serialize_entry("type", "transaction")?;
                map.serialize_entry("channelId", &p.channel_id)?;
                map.serialize_entry("transaction", &p.transaction)?;
                if let Some(d) = &p.descriptor {
                    map.serialize_entry("descriptor", d)?;
                }
                map.serialize_entry("additionalDeposit", &p.additional_deposit.to_string())?;
            }
            Self::Voucher(p) => {
                map.serialize_entry("channelId", &p.channel_id)?;
                if let Some(d) = &p.descriptor {
                    map.serialize_entry("descriptor", d)?;
                }
                map.serialize_entry("cumulativeAmount", &p.cumulative_amount.to_string())?;
                map.serialize_entry("signature", &p.signature)?;
            }
            Self::Close(p) => {
                map.serialize_entry("channelId", &p.channel_id)?;
                if let Some(d) = &p.descriptor {
                    map.serialize_entry("descriptor", d)?;
                }
                map.serialize_entry("cumulativeAmount", &p.cumulative_amount.to_string())?;
                map.serialize_entry("signature", &p.signature)?;
                if let Some(c) = &p.close_signature {
                    map.serialize_entry("closeSignature", c)?;
                }
            }
        }
        map.end()
    }
}

/// Field readers over the payload object, with the protocol's amount range.
struct Fields<'a> {
    obj: &'a Map<String, Value>,
    protocol: SessionProtocol,
}

impl Fields<'_> {
    fn string(&self, field: &'static str) -> Result<&str, PayloadError> {
        match self.obj.get(field) {
            None | Some(Value::Null) => Err(PayloadError::Missing(field)),
            Some(Value::String(s)) => Ok(s),
            Some(_) => Err(PayloadError::Invalid {
                field,
                expected: "a string",
            }),
        }
    }

    fn transaction_type(&self) -> Result<(), PayloadError> {
        match self.string("type")? {
            "transaction" => Ok(()),
            _ => Err(PayloadError::Invalid {
                field: "type",
                expected: "\"transaction\"",
            }),
        }
    }

    fn channel_id(&self) -> Result<B256, PayloadError> {
        parse_b256(self.string("channelId")?).ok_or(PayloadError::Invalid {
            field: "channelId",
            expected: "0x + 64 hex digits",
        })
    }

    fn amount(&self, field: &'static str) -> Result<u128, PayloadError> {
        let amount = parse_amount(self.string(field)?).ok_or(PayloadError::Invalid {
            field,
            expected: "a decimal string of base units",
        })?;
        if amount > self.protocol.max_amount() {
            return Err(PayloadError::OutOfRange(field));
        }
        Ok(amount)
    }

    fn signature(&self, field: &'static str) -> Result<VoucherSignature, PayloadError> {
        VoucherSignature::from_hex(self.string(field)?).map_err(|_| PayloadError::Invalid {
            field,
            expected: "0x-hex signature bytes (1 to 2048)",
        })
    }

    fn transaction(&self) -> Result<Bytes, PayloadError> {
        let invalid = PayloadError::Invalid {
            field: "transaction",
            expected: "0x-hex of a signed 0x76 transaction or 0x78 envelope",
        };
        let raw = parse_hex_bytes(self.string("transaction")?).ok_or(invalid.clone())?;
        if raw.len() > MAX_TRANSACTION_BYTES || !matches!(raw.first(), Some(0x76 | 0x78)) {
            return Err(invalid);
        }
        Ok(raw.into())
    }

    fn optional_address(&self, field: &'static str) -> Result<Option<Address>, PayloadError> {
        match self.obj.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(_) => parse_address(self.string(field)?)
                .map(Some)
                .ok_or(PayloadError::Invalid {
                    field,
                    expected: "a 0x address",
                }),
        }
    }

    fn descriptor(&self) -> Result<Option<ChannelDescriptor>, PayloadError> {
        match self.obj.get("descriptor") {
            None | Some(Value::Null) => Ok(None),
            Some(value) => parse_descriptor(value).map(Some),
        }
    }
}

/// Reads a credential's `descriptor` object, naming the bad field.
fn parse_descriptor(value: &Value) -> Result<ChannelDescriptor, PayloadError> {
    let obj = value.as_object().ok_or(PayloadError::Invalid {
        field: "descriptor",
        expected: "an object",
    })?;
    let address = |field: &'static str, name: &'static str| {
        obj.get(name)
            .and_then(Value::as_str)
            .and_then(parse_address)
            .ok_or(PayloadError::Invalid {
                field,
                expected: "a 0x address",
            })
    };
    let hash = |field: &'static str, name: &'static str| {
        obj.get(name)
            .and_then(Value::as_str)
            .and_then(parse_b256)
            .ok_or(PayloadError::Invalid {
                field,
                expected: "0x + 64 hex digits",
            })
    };
    Ok(ChannelDescriptor {
        payer: address("descriptor.payer", "payer")?,
        payee: address("descriptor.payee", "payee")?,
        operator: address("descriptor.operator", "operator")?,
        token: address("descriptor.token", "token")?,
        salt: hash("descriptor.salt", "salt")?,
        authorized_signer: address("descriptor.authorizedSigner", "authorizedSigner")?,
        expiring_nonce_hash: hash("descriptor.expiringNonceHash", "expiringNonceHash")?,
    })
}

/// The checks of session.md §7 step 2 (v2) every action shares: the descriptor hashes to the
/// payload's channel id on this escrow and chain, pays `recipient` in `currency`, and names
/// the advertised `operator` (zero if none). On `open`, a declared `authorizedSigner` must be
/// the descriptor's. Mismatches are `verification-failed`.
pub fn check_descriptor(
    payload: &SessionPayload,
    escrow: Address,
    chain_id: u64,
    recipient: Address,
    currency: Address,
    operator: Address,
) -> Result<ChannelDescriptor, SessionError> {
    let descriptor = *payload
        .descriptor()
        .ok_or_else(|| SessionError::payload(PayloadError::MissingDescriptor.to_string()))?;
    if descriptor.channel_id(escrow, chain_id) != payload.channel_id() {
        return Err(SessionError::failed(
            "channel descriptor does not match channelId",
        ));
    }
    if descriptor.payee != recipient {
        return Err(SessionError::failed(
            "channel descriptor payee does not match the request recipient",
        ));
    }
    if descriptor.token != currency {
        return Err(SessionError::failed(
            "channel descriptor token does not match the request currency",
        ));
    }
    if descriptor.operator != operator {
        return Err(SessionError::failed(
            "channel descriptor operator does not match the advertised operator",
        ));
    }
    if let SessionPayload::Open(open) = payload
        && open
            .authorized_signer
            .is_some_and(|declared| declared != descriptor.authorized_signer)
    {
        return Err(SessionError::failed(
            "credential authorizedSigner does not match the descriptor",
        ));
    }
    Ok(descriptor)
}

/// mppx's `source` rule for vouchers: the credential's `source` must be
/// `did:pkh:eip155:<chainId>:<address>` with the channel's payer or its voucher signer as the
/// address (`verification-failed` otherwise, or when it is absent).
pub fn check_source(
    source: Option<&str>,
    chain_id: u64,
    payer: Address,
    signer: Address,
) -> Result<(), SessionError> {
    let did: PkhDid = source
        .ok_or_else(|| SessionError::failed("the credential has no source"))?
        .parse()
        .map_err(|_| SessionError::failed("invalid credential source"))?;
    let address = Address::from(did.address_bytes());
    if did.chain_id != chain_id || (address != payer && address != signer) {
        return Err(SessionError::failed(
            "credential source does not match the channel payer or authorized signer",
        ));
    }
    Ok(())
}
