//! The `session_channels` row as the SQL backends read and write it.
//!
//! Both databases hand every column back as text or a 64-bit integer: Postgres casts its
//! `NUMERIC(39,0)` amounts to `text` in the select list, SQLite stores them as text already.
//! Decoding checks every value and the invariants: a row that breaks them is a store fault
//! (the caller answers 503), never silently trusted.

use std::time::Duration;

use alloy::primitives::{Address, B256, Bytes};
use serde::{Deserialize, Serialize};

use super::logic::{check_invariants, ms_to_time, time_to_ms};
use super::{Channel, ChannelIdentity, ChannelState, LastSettlement, Reservation, SessionProtocol};
use crate::hex::{parse_address, parse_amount, parse_b256, parse_hex_bytes};
use crate::store::StoreError;

/// A channel row as read.
#[derive(Debug, sqlx::FromRow)]
pub(super) struct RawChannel {
    channel_id: String,
    protocol: String,
    chain_id: i64,
    escrow: String,
    payer: String,
    payee: String,
    token: String,
    operator: String,
    authorized_signer: String,
    salt: String,
    expiring_nonce_hash: String,
    deposit: String,
    highest_voucher: String,
    voucher_signature: Option<String>,
    spent: String,
    reserved: String,
    reservations: String,
    settled: String,
    units: i64,
    state: String,
    close_requested_at: Option<i64>,
    finalized_at: Option<i64>,
    finalized_tx: Option<String>,
    last_settlement_at: Option<i64>,
    last_settlement_spent: Option<String>,
    last_settlement_units: Option<i64>,
    last_settlement_tx: Option<String>,
    created_at: i64,
    updated_at: i64,
    retention_ms: i64,
    expires_at: i64,
    version: i64,
}

/// One reservation in the `reservations` JSON column.
#[derive(Debug, Serialize, Deserialize)]
struct RawReservation {
    id: String,
    /// Decimal base units (JSON numbers cannot hold a `u128` exactly everywhere).
    amount: String,
    /// Unix milliseconds.
    expires_at: i64,
}

/// A corrupt row: names the channel and the column, fails closed.
fn corrupt(channel: &str, what: impl std::fmt::Display) -> StoreError {
    StoreError::new(format!("channel row `{channel}` is corrupt: {what}"))
}

impl RawChannel {
    /// The channel, every value checked.
    pub(super) fn decode(self) -> Result<Channel, StoreError> {
        let id = self.channel_id.as_str();
        let amount = |what: &str, v: &str| {
            parse_amount(v).ok_or_else(|| corrupt(id, format_args!("{what} `{v}`")))
        };
        let address = |what: &str, v: &str| {
            parse_address(v).ok_or_else(|| corrupt(id, format_args!("{what} `{v}`")))
        };
        let b256 = |what: &str, v: &str| {
            parse_b256(v).ok_or_else(|| corrupt(id, format_args!("{what} `{v}`")))
        };
        let time = |what: &str, v: i64| {
            ms_to_time(v).ok_or_else(|| corrupt(id, format_args!("{what} {v}")))
        };
        let count = |what: &str, v: i64| {
            u64::try_from(v).map_err(|_| corrupt(id, format_args!("{what} {v}")))
        };

        let descriptor = ChannelIdentity {
            channel_id: b256("channel id", id)?,
            protocol: SessionProtocol::parse(&self.protocol)
                .ok_or_else(|| corrupt(id, format_args!("protocol `{}`", self.protocol)))?,
            chain_id: count("chain id", self.chain_id)?,
            escrow: address("escrow", &self.escrow)?,
            payer: address("payer", &self.payer)?,
            payee: address("payee", &self.payee)?,
            token: address("token", &self.token)?,
            operator: address("operator", &self.operator)?,
            authorized_signer: address("authorized signer", &self.authorized_signer)?,
            salt: b256("salt", &self.salt)?,
            expiring_nonce_hash: b256("expiring nonce hash", &self.expiring_nonce_hash)?,
        };
        let voucher_signature = match &self.voucher_signature {
            None => None,
            Some(sig) => Some(Bytes::from(
                parse_hex_bytes(sig).ok_or_else(|| corrupt(id, "voucher signature"))?,
            )),
        };
        let raw: Vec<RawReservation> = serde_json::from_str(&self.reservations)
            .map_err(|e| corrupt(id, format_args!("reservations: {e}")))?;
        let mut reservations = Vec::with_capacity(raw.len());
        for r in raw {
            reservations.push(Reservation {
                amount: amount("reservation amount", &r.amount)?,
                expires_at: time("reservation expiry", r.expires_at)?,
                id: r.id,
            });
        }
        let state = match (
            self.state.as_str(),
            self.close_requested_at,
            self.finalized_at,
        ) {
            ("open", None, None) => ChannelState::Open,
            ("closing", Some(at), None) => ChannelState::Closing {
                requested_at: time("close request", at)?,
            },
            ("finalized", None, Some(at)) => ChannelState::Finalized {
                at: time("finalized at", at)?,
                tx_hash: match &self.finalized_tx {
                    None => None,
                    Some(tx) => Some(b256("finalized tx", tx)?),
                },
            },
            (state, ..) => return Err(corrupt(id, format_args!("state `{state}`"))),
        };
        let last_settlement = match (
            self.last_settlement_at,
            &self.last_settlement_spent,
            self.last_settlement_units,
        ) {
            (None, None, None) => None,
            (Some(at), Some(spent), Some(units)) => Some(LastSettlement {
                at: time("last settlement", at)?,
                spent: amount("last settlement spent", spent)?,
                units: count("last settlement units", units)?,
                tx_hash: match &self.last_settlement_tx {
                    None => None,
                    Some(tx) => Some(b256("last settlement tx", tx)?),
                },
            }),
            _ => return Err(corrupt(id, "incomplete last settlement")),
        };
        let channel = Channel {
            descriptor,
            deposit: amount("deposit", &self.deposit)?,
            highest_voucher: amount("highest voucher", &self.highest_voucher)?,
            voucher_signature,
            spent: amount("spent", &self.spent)?,
            reserved: amount("reserved", &self.reserved)?,
            reservations,
            settled: amount("settled", &self.settled)?,
            units: count("units", self.units)?,
            state,
            last_settlement,
            created_at: time("created at", self.created_at)?,
            updated_at: time("updated at", self.updated_at)?,
            retention: Duration::from_millis(count("retention", self.retention_ms)?),
            expires_at: time("expires at", self.expires_at)?,
            version: count("version", self.version)?,
        };
        check_invariants(&channel).map_err(|broken| corrupt(id, broken))?;
        Ok(channel)
    }
}

/// How a backend writes an amount.
pub(super) type AmountFormat = fn(u128) -> String;

/// SQLite: exactly 39 zero-padded digits, so that text comparison is numeric comparison.
#[cfg(feature = "sqlite")]
pub(super) fn padded_amount(v: u128) -> String {
    format!("{v:039}")
}

/// Postgres: plain decimal, cast to `NUMERIC` by the statement.
#[cfg(feature = "postgres")]
pub(super) fn plain_amount(v: u128) -> String {
    v.to_string()
}

fn hex(bytes: impl AsRef<[u8]>) -> String {
    alloy::hex::encode_prefixed(bytes)
}

/// Lowercase `0x` hex of a channel id, the row's key.
pub(super) fn channel_key(id: B256) -> String {
    hex(id)
}

fn address(a: Address) -> String {
    hex(a)
}

/// A channel's values as the SQL columns hold them.
#[derive(Debug)]
pub(super) struct Encoded {
    pub(super) channel_id: String,
    pub(super) protocol: &'static str,
    pub(super) chain_id: i64,
    pub(super) escrow: String,
    pub(super) payer: String,
    pub(super) payee: String,
    pub(super) token: String,
    pub(super) operator: String,
    pub(super) authorized_signer: String,
    pub(super) salt: String,
    pub(super) expiring_nonce_hash: String,
    pub(super) deposit: String,
    pub(super) highest_voucher: String,
    pub(super) voucher_signature: Option<String>,
    pub(super) spent: String,
    pub(super) reserved: String,
    pub(super) reservations: String,
    /// The earliest reservation expiry (unix ms), for the purge's sweep.
    pub(super) reservations_expire_at: Option<i64>,
    pub(super) settled: String,
    /// `highest_voucher − settled` (SQLite keeps it as a column for the settlement scan;
    /// Postgres generates it).
    #[cfg(feature = "sqlite")]
    pub(super) unsettled: String,
    pub(super) units: i64,
    pub(super) state: &'static str,
    pub(super) close_requested_at: Option<i64>,
    pub(super) finalized_at: Option<i64>,
    pub(super) finalized_tx: Option<String>,
    pub(super) last_settlement_at: Option<i64>,
    pub(super) last_settlement_spent: Option<String>,
    pub(super) last_settlement_units: Option<i64>,
    pub(super) last_settlement_tx: Option<String>,
    pub(super) created_at: i64,
    pub(super) updated_at: i64,
    pub(super) retention_ms: i64,
    pub(super) expires_at: i64,
    pub(super) version: i64,
}

/// `v` as a signed 64-bit column, or a store fault.
fn int(what: &str, v: impl TryInto<i64>) -> Result<i64, StoreError> {
    v.try_into()
        .map_err(|_| StoreError::new(format!("{what} does not fit a 64-bit column")))
}

/// Encodes `ch` for writing, amounts in `format`.
pub(super) fn encode(ch: &Channel, format: AmountFormat) -> Result<Encoded, StoreError> {
    let d = &ch.descriptor;
    let raw: Vec<RawReservation> = ch
        .reservations
        .iter()
        .map(|r| RawReservation {
            id: r.id.clone(),
            amount: r.amount.to_string(),
            expires_at: time_to_ms(r.expires_at),
        })
        .collect();
    let reservations = serde_json::to_string(&raw).map_err(StoreError::new)?;
    let (state, close_requested_at, finalized_at, finalized_tx) = match ch.state {
        ChannelState::Open => ("open", None, None, None),
        ChannelState::Closing { requested_at } => {
            ("closing", Some(time_to_ms(requested_at)), None, None)
        }
        ChannelState::Finalized { at, tx_hash } => {
            ("finalized", None, Some(time_to_ms(at)), tx_hash.map(hex))
        }
    };
    let last = ch.last_settlement.as_ref();
    Ok(Encoded {
        channel_id: channel_key(d.channel_id),
        protocol: d.protocol.as_str(),
        chain_id: int("chain id", d.chain_id)?,
        escrow: address(d.escrow),
        payer: address(d.payer),
        payee: address(d.payee),
        token: address(d.token),
        operator: address(d.operator),
        authorized_signer: address(d.authorized_signer),
        salt: hex(d.salt),
        expiring_nonce_hash: hex(d.expiring_nonce_hash),
        deposit: format(ch.deposit),
        highest_voucher: format(ch.highest_voucher),
        voucher_signature: ch.voucher_signature.as_ref().map(hex),
        spent: format(ch.spent),
        reserved: format(ch.reserved),
        reservations,
        reservations_expire_at: ch
            .reservations
            .iter()
            .map(|r| time_to_ms(r.expires_at))
            .min(),
        settled: format(ch.settled),
        #[cfg(feature = "sqlite")]
        unsettled: format(ch.unsettled()),
        units: int("units", ch.units)?,
        state,
        close_requested_at,
        finalized_at,
        finalized_tx,
        last_settlement_at: last.map(|l| time_to_ms(l.at)),
        last_settlement_spent: last.map(|l| format(l.spent)),
        last_settlement_units: last.map(|l| int("units", l.units)).transpose()?,
        last_settlement_tx: last.and_then(|l| l.tx_hash).map(hex),
        created_at: time_to_ms(ch.created_at),
        updated_at: time_to_ms(ch.updated_at),
        retention_ms: int("retention", ch.retention.as_millis())?,
        expires_at: time_to_ms(ch.expires_at),
        version: int("version", ch.version)?,
    })
}
