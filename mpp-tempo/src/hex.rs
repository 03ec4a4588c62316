//! Strict hex and decimal parsing for the wire forms every Tempo intent uses, and serde adapters
//! built on it: amounts as decimal digit strings, addresses as `0x` + 40 hex digits (any case
//! in, EIP-55 checksum out), 32-byte values as `0x` + 64 hex digits, and `0x`-hex byte strings.

use alloy::primitives::{Address, B256};
use serde::{Deserialize, Deserializer, Serializer, de::Error as _};

/// Parses a base-unit amount: ASCII digits only, no sign, no leading `+`, fits in `u128`.
pub(crate) fn parse_amount(s: &str) -> Option<u128> {
    if s.is_empty() || s.len() > 39 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Parses `0x` + 40 hex digits (any case; the checksum is not enforced because SDKs compare
/// addresses by their 20 bytes).
pub(crate) fn parse_address(s: &str) -> Option<Address> {
    let hex = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X"))?;
    if hex.len() != 40 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    hex.parse().ok()
}

/// Parses `0x` + 64 hex digits.
pub(crate) fn parse_b256(s: &str) -> Option<B256> {
    let hex = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X"))?;
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    hex.parse().ok()
}

/// Parses `0x`-prefixed hex of any even length.
pub(crate) fn parse_hex_bytes(s: &str) -> Option<Vec<u8>> {
    let hex = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X"))?;
    if hex.len() % 2 != 0 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    alloy::hex::decode(hex).ok()
}

pub(crate) mod amount {
    use super::*;

    pub(crate) fn serialize<S: Serializer>(v: &u128, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&v.to_string())
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u128, D::Error> {
        let s = String::deserialize(d)?;
        parse_amount(&s).ok_or_else(|| {
            D::Error::custom(format!("`{s}` is not a base-unit amount (digits only)"))
        })
    }
}

pub(crate) mod address {
    use super::*;

    pub(crate) fn serialize<S: Serializer>(v: &Address, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&v.to_checksum(None))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Address, D::Error> {
        let s = String::deserialize(d)?;
        parse_address(&s).ok_or_else(|| D::Error::custom(format!("`{s}` is not a 0x address")))
    }
}

/// Lowercase `0x` hex, the form SDKs emit token addresses in (`0x20c0…`).
pub(crate) mod address_lower {
    use super::*;

    pub(crate) fn serialize<S: Serializer>(v: &Address, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{v:#x}"))
    }

    pub(crate) use super::address::deserialize;
}

pub(crate) mod memo_opt {
    use super::*;

    pub(crate) fn serialize<S: Serializer>(v: &Option<B256>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(m) => s.serialize_str(&m.to_string()),
            None => s.serialize_none(),
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<B256>, D::Error> {
        let s = Option::<String>::deserialize(d)?;
        match s {
            None => Ok(None),
            Some(s) => parse_b256(&s)
                .map(Some)
                .ok_or_else(|| D::Error::custom(format!("`{s}` is not a 0x bytes32 memo"))),
        }
    }
}
