//! Serde adapters for the session wire forms: addresses (any case in, EIP-55 out), 32-byte
//! values (lowercase `0x` hex), and amounts as decimal digit strings.

use alloy::primitives::{Address, B256};
use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serializer};

use crate::hex::{parse_address, parse_amount, parse_b256};

pub(crate) use crate::hex::address;

pub(crate) mod b256 {
    use super::*;

    pub(crate) fn serialize<S: Serializer>(v: &B256, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{v:#x}"))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<B256, D::Error> {
        let s = String::deserialize(d)?;
        parse_b256(&s).ok_or_else(|| D::Error::custom(format!("`{s}` is not 0x + 64 hex digits")))
    }
}

pub(crate) mod b256_opt {
    use super::*;

    pub(crate) fn serialize<S: Serializer>(v: &Option<B256>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(v) => s.serialize_str(&format!("{v:#x}")),
            None => s.serialize_none(),
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<B256>, D::Error> {
        match Option::<String>::deserialize(d)? {
            None => Ok(None),
            Some(s) => parse_b256(&s)
                .map(Some)
                .ok_or_else(|| D::Error::custom(format!("`{s}` is not 0x + 64 hex digits"))),
        }
    }
}

pub(crate) mod address_opt {
    use super::*;

    pub(crate) fn serialize<S: Serializer>(v: &Option<Address>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(v) => s.serialize_str(&v.to_checksum(None)),
            None => s.serialize_none(),
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Address>, D::Error> {
        match Option::<String>::deserialize(d)? {
            None => Ok(None),
            Some(s) => parse_address(&s)
                .map(Some)
                .ok_or_else(|| D::Error::custom(format!("`{s}` is not a 0x address"))),
        }
    }
}

pub(crate) mod amount_opt {
    use super::*;

    pub(crate) fn serialize<S: Serializer>(v: &Option<u128>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(v) => s.serialize_str(&v.to_string()),
            None => s.serialize_none(),
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u128>, D::Error> {
        match Option::<String>::deserialize(d)? {
            None => Ok(None),
            Some(s) => parse_amount(&s).map(Some).ok_or_else(|| {
                D::Error::custom(format!("`{s}` is not a base-unit amount (digits only)"))
            }),
        }
    }
}
