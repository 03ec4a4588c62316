//! Channel identity (session.md §2, §4): the protocol versions, the escrow addresses, the v2
//! channel descriptor every v2 credential carries, and the channel id of both versions.

use std::fmt;
use std::time::Duration;

use alloy::consensus::SignableTransaction;
use alloy::primitives::{Address, B256, address, keccak256};
use serde::{Deserialize, Serialize};
use tempo_primitives::transaction::TempoTransaction;

use super::abi::v2::ITIP20ChannelReserve;
use super::wire;

/// The v2 escrow: the TIP-20 channel reserve precompile (TIP-1034), the same address on every
/// chain (ASCII "MPP" and zeros).
pub const TIP20_CHANNEL_RESERVE: Address = address!("4d50500000000000000000000000000000000000");

/// The v1 `TempoStreamChannel` escrow on Tempo mainnet (chain 4217), as both SDKs default it.
pub const V1_ESCROW_MAINNET: Address = address!("33b901018174DDabE4841042ab76ba85D4e24f25");

/// The v1 `TempoStreamChannel` escrow on Moderato (chain 42431), as both SDKs default it (the
/// draft lists another address; the SDKs' is the one deployed).
pub const V1_ESCROW_MODERATO: Address = address!("e1c4d3dce17bc111181ddf716f75bae49e61a336");

/// Largest v2 amount (deposit, voucher, capture): the precompile's `uint96`, 2^96 − 1.
pub const MAX_V2_AMOUNT: u128 = (1u128 << 96) - 1;

/// How long a payer waits after `requestClose` before `withdraw` (both versions: 900 s).
pub const CLOSE_GRACE_PERIOD: Duration = Duration::from_secs(900);

/// Which escrow backs a session: `methodDetails.sessionProtocol`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SessionProtocol {
    /// The legacy `TempoStreamChannel` Solidity escrow: `"v1"`, or the field absent.
    V1,
    /// The TIP-20 channel reserve precompile (TIP-1034): `"v2"`.
    V2,
}

impl SessionProtocol {
    /// The wire value: `"v1"` or `"v2"`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::V1 => "v1",
            Self::V2 => "v2",
        }
    }

    /// Parses the wire value `"v1"` or `"v2"`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "v1" => Some(Self::V1),
            "v2" => Some(Self::V2),
            _ => None,
        }
    }

    /// The largest amount the escrow stores: `uint128` for v1, `uint96` for v2.
    pub const fn max_amount(self) -> u128 {
        match self {
            Self::V1 => u128::MAX,
            Self::V2 => MAX_V2_AMOUNT,
        }
    }

    /// The escrow the SDKs use on `chain_id` when the server names none: the precompile for
    /// v2 (every chain), the deployed v1 contract on mainnet and Moderato (none elsewhere).
    pub const fn default_escrow(self, chain_id: u64) -> Option<Address> {
        match (self, chain_id) {
            (Self::V2, _) => Some(TIP20_CHANNEL_RESERVE),
            (Self::V1, 4217) => Some(V1_ESCROW_MAINNET),
            (Self::V1, 42431) => Some(V1_ESCROW_MODERATO),
            (Self::V1, _) => None,
        }
    }
}

impl fmt::Display for SessionProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The immutable identity of a v2 channel, carried in every v2 credential (`descriptor`).
///
/// Addresses are compared by their 20 bytes; they are written in EIP-55 form, hashes in
/// lowercase hex.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChannelDescriptor {
    /// Who funded the channel (the open transaction's sender) and receives refunds.
    #[serde(with = "wire::address")]
    pub payer: Address,
    /// Who receives settled vouchers (must equal the request's `recipient`).
    #[serde(with = "wire::address")]
    pub payee: Address,
    /// The payee-side operator allowed to settle and close (zero if none).
    #[serde(with = "wire::address")]
    pub operator: Address,
    /// The TIP-20 token (must equal the request's `currency`).
    #[serde(with = "wire::address")]
    pub token: Address,
    /// The payer's random salt.
    #[serde(with = "wire::b256")]
    pub salt: B256,
    /// The voucher signer; zero means the payer signs.
    #[serde(with = "wire::address")]
    pub authorized_signer: Address,
    /// `keccak256(encodeForSigning(openTx) ‖ sender)` of the open transaction
    /// ([`expiring_nonce_hash`]).
    #[serde(with = "wire::b256")]
    pub expiring_nonce_hash: B256,
}

impl ChannelDescriptor {
    /// The channel id: `keccak256(abi.encode(payer, payee, operator, token, salt,
    /// authorizedSigner, expiringNonceHash, escrow, uint256 chainId))`.
    pub fn channel_id(&self, escrow: Address, chain_id: u64) -> B256 {
        let mut words = [[0u8; 32]; 9];
        put_address(&mut words[0], self.payer);
        put_address(&mut words[1], self.payee);
        put_address(&mut words[2], self.operator);
        put_address(&mut words[3], self.token);
        words[4] = self.salt.0;
        put_address(&mut words[5], self.authorized_signer);
        words[6] = self.expiring_nonce_hash.0;
        put_address(&mut words[7], escrow);
        words[8][24..].copy_from_slice(&chain_id.to_be_bytes());
        keccak256(words.as_flattened())
    }

    /// Who signs the channel's vouchers: `authorizedSigner`, or the payer when it is zero.
    pub fn signer(&self) -> Address {
        effective_signer(self.payer, self.authorized_signer)
    }

    /// The descriptor as the precompile's ABI tuple.
    pub fn to_abi(&self) -> ITIP20ChannelReserve::ChannelDescriptor {
        ITIP20ChannelReserve::ChannelDescriptor {
            payer: self.payer,
            payee: self.payee,
            operator: self.operator,
            token: self.token,
            salt: self.salt,
            authorizedSigner: self.authorized_signer,
            expiringNonceHash: self.expiring_nonce_hash,
        }
    }

    /// A descriptor from the precompile's ABI tuple (e.g. a `getChannel` answer).
    pub fn from_abi(d: &ITIP20ChannelReserve::ChannelDescriptor) -> Self {
        Self {
            payer: d.payer,
            payee: d.payee,
            operator: d.operator,
            token: d.token,
            salt: d.salt,
            authorized_signer: d.authorizedSigner,
            expiring_nonce_hash: d.expiringNonceHash,
        }
    }

    /// The JSON object of a credential's `descriptor`.
    pub fn to_json(&self) -> serde_json::Value {
        // Strings only: serializing cannot fail.
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }
}

/// The identity of a v1 channel: the arguments of the escrow's `open` plus its sender. v1
/// credentials carry no descriptor; the server recomputes the id from the open calldata.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct V1Channel {
    /// The open transaction's sender.
    pub payer: Address,
    /// `open(payee, …)`.
    pub payee: Address,
    /// `open(…, token, …)`.
    pub token: Address,
    /// `open(…, salt, …)`.
    pub salt: B256,
    /// `open(…, authorizedSigner)`; zero means the payer signs.
    pub authorized_signer: Address,
}

impl V1Channel {
    /// The channel id: `keccak256(abi.encode(payer, payee, token, salt, authorizedSigner,
    /// escrow, uint256 chainId))`, as the escrow's `computeChannelId` returns it.
    pub fn channel_id(&self, escrow: Address, chain_id: u64) -> B256 {
        let mut words = [[0u8; 32]; 7];
        put_address(&mut words[0], self.payer);
        put_address(&mut words[1], self.payee);
        put_address(&mut words[2], self.token);
        words[3] = self.salt.0;
        put_address(&mut words[4], self.authorized_signer);
        put_address(&mut words[5], escrow);
        words[6][24..].copy_from_slice(&chain_id.to_be_bytes());
        keccak256(words.as_flattened())
    }

    /// Who signs the channel's vouchers: `authorizedSigner`, or the payer when it is zero.
    pub fn signer(&self) -> Address {
        effective_signer(self.payer, self.authorized_signer)
    }
}

/// The v2 `expiringNonceHash` of an open transaction:
/// `keccak256(encodeForSigning(tx) ‖ sender)`, what the node assigns and the precompile
/// binds the channel to.
///
/// `tx` is the transaction as its sender signed it. For a fee-sponsored open (a `0x78`
/// envelope) that means with the fee-payer placeholder set
/// ([`FeePayerEnvelope::tx`](crate::charge::FeePayerEnvelope) already is), so the fee payer's
/// co-signature and fee token do not change the channel id.
pub fn expiring_nonce_hash(tx: &TempoTransaction, sender: Address) -> B256 {
    let mut buf = Vec::with_capacity(tx.payload_len_for_signature() + Address::len_bytes());
    tx.encode_for_signing(&mut buf);
    buf.extend_from_slice(sender.as_slice());
    keccak256(&buf)
}

fn put_address(word: &mut [u8; 32], address: Address) {
    word[12..].copy_from_slice(address.as_slice());
}

fn effective_signer(payer: Address, authorized_signer: Address) -> Address {
    if authorized_signer.is_zero() {
        payer
    } else {
        authorized_signer
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy::primitives::U256;
    use alloy::sol_types::SolValue;

    fn descriptor() -> ChannelDescriptor {
        ChannelDescriptor {
            payer: Address::repeat_byte(0x11),
            payee: Address::repeat_byte(0x22),
            operator: Address::repeat_byte(0x33),
            token: Address::repeat_byte(0x44),
            salt: B256::repeat_byte(0x55),
            authorized_signer: Address::repeat_byte(0x66),
            expiring_nonce_hash: B256::repeat_byte(0x77),
        }
    }

    #[test]
    fn ids_equal_abi_encode_of_the_fields() {
        let d = descriptor();
        let encoded = (
            d.payer,
            d.payee,
            d.operator,
            d.token,
            d.salt,
            d.authorized_signer,
            d.expiring_nonce_hash,
            TIP20_CHANNEL_RESERVE,
            U256::from(4217u64),
        )
            .abi_encode();
        assert_eq!(
            d.channel_id(TIP20_CHANNEL_RESERVE, 4217),
            keccak256(encoded)
        );
        let v1 = V1Channel {
            payer: d.payer,
            payee: d.payee,
            token: d.token,
            salt: d.salt,
            authorized_signer: Address::ZERO,
        };
        let encoded = (
            v1.payer,
            v1.payee,
            v1.token,
            v1.salt,
            v1.authorized_signer,
            V1_ESCROW_MODERATO,
            U256::from(u64::MAX),
        )
            .abi_encode();
        assert_eq!(
            v1.channel_id(V1_ESCROW_MODERATO, u64::MAX),
            keccak256(encoded)
        );
        assert_eq!(v1.signer(), v1.payer);
        assert_eq!(d.signer(), d.authorized_signer);
    }

    #[test]
    fn descriptor_json_round_trips_and_compares_by_bytes() {
        let d = descriptor();
        let json = d.to_json();
        assert_eq!(json["payer"], d.payer.to_checksum(None));
        assert_eq!(json["salt"], format!("{:#x}", d.salt));
        let back: ChannelDescriptor = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(back, d);
        let mut lower = json;
        lower["payer"] = format!("{:#x}", d.payer).into();
        assert_eq!(
            serde_json::from_value::<ChannelDescriptor>(lower).unwrap(),
            d
        );
        assert_eq!(ChannelDescriptor::from_abi(&d.to_abi()), d);
    }

    #[test]
    fn default_escrows() {
        assert_eq!(
            SessionProtocol::V2.default_escrow(31337),
            Some(TIP20_CHANNEL_RESERVE)
        );
        assert_eq!(SessionProtocol::V1.default_escrow(31337), None);
        assert_eq!(
            SessionProtocol::V1.default_escrow(4217),
            Some(V1_ESCROW_MAINNET)
        );
        assert_eq!(
            SessionProtocol::V2.max_amount(),
            79228162514264337593543950335
        );
    }
}
