//! Vouchers (session.md §5): EIP-712 digests per protocol version, signature checks, and the
//! order of a server's voucher checks (cheap ones before any signature work).
//!
//! ```text
//! domain    = {name, version: "1", chainId, verifyingContract: escrow}
//!             name: v1 "Tempo Stream Channel", v2 "TIP20 Channel Reserve"
//! struct    = keccak256(typeHash ‖ channelId ‖ uint256(cumulativeAmount))
//!             typeHash: Voucher(bytes32 channelId,uint128 cumulativeAmount)   (v1)
//!                       Voucher(bytes32 channelId,uint96 cumulativeAmount)    (v2)
//! digest    = keccak256(0x1901 ‖ domainSeparator ‖ struct)
//! ```
//!
//! The digest of a [`VoucherDomain`] (built once per escrow and chain) is computed on the
//! stack: no allocation on the hot path. Signatures accepted:
//!
//! - **v2**: only a canonical TIP-1020 primitive signature, as both SDK verifiers require:
//!   65-byte secp256k1 `r ‖ s ‖ v` with `v ∈ {27, 28}` and low `s`, or a canonical P-256 /
//!   WebAuthn envelope (re-encoded byte for byte). The 64-byte EIP-2098 form, `v ∈ {0, 1}`,
//!   keychain wrappers and magic suffixes are refused.
//! - **v1**: 65-byte `r ‖ s ‖ v` (`v ∈ {27, 28}`) or 64-byte EIP-2098, low `s` (what the
//!   `mpp` server and the draft accept; stored in the 65-byte form).

use std::fmt;

use alloy::primitives::{Address, B256, Bytes, Signature, U256, b256, keccak256};
use alloy::sol_types::Eip712Domain;
use serde::{Deserialize, Deserializer, Serialize, Serializer, de::Error as _};
use tempo_primitives::transaction::PrimitiveSignature;

use super::SessionError;
use super::channel::SessionProtocol;

/// `keccak256("EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)")`.
pub const EIP712_DOMAIN_TYPEHASH: B256 =
    b256!("8b73c3c69bb8fe3d512ecc4cf759cc79239f7b179b0ffacaa9a75d522b39400f");

/// `keccak256("Voucher(bytes32 channelId,uint128 cumulativeAmount)")`: v1.
pub const VOUCHER_TYPEHASH_V1: B256 =
    b256!("e97c93f01d3ef8eaba1586553df13308f236815bf4ea49c7b696895d8f5ea68a");

/// `keccak256("Voucher(bytes32 channelId,uint96 cumulativeAmount)")`: v2.
pub const VOUCHER_TYPEHASH_V2: B256 =
    b256!("4730b4b2fe8de522475e80e010877c5b58ad10eb07fd0436615ee123f743bbe8");

/// `keccak256("CloseAuthorization(bytes32 channelId,uint96 cumulativeAmount)")`: the v2
/// cooperative-close authorization newer SDKs send as `closeSignature`.
pub const CLOSE_AUTHORIZATION_TYPEHASH: B256 =
    b256!("15588a02d9b068ec4a4593a3d3bd1068f3614e6c28e013500ce554846f4b4646");

/// The EIP-712 domain name of v1 vouchers.
pub const DOMAIN_NAME_V1: &str = "Tempo Stream Channel";

/// The EIP-712 domain name of v2 vouchers.
pub const DOMAIN_NAME_V2: &str = "TIP20 Channel Reserve";

/// The EIP-712 domain version of both.
pub const DOMAIN_VERSION: &str = "1";

/// `keccak256(DOMAIN_NAME_V1)`.
const DOMAIN_NAME_V1_HASH: B256 =
    b256!("1a08d077184f6afbbddcf8277afb64043c299aa8f68e13b9e1be1800a5237bd1");
/// `keccak256(DOMAIN_NAME_V2)`.
const DOMAIN_NAME_V2_HASH: B256 =
    b256!("131992c67b15deae2fea2ee6e0448ff6217787c4722ce1b46fba946132054433");
/// `keccak256(DOMAIN_VERSION)`.
const DOMAIN_VERSION_HASH: B256 =
    b256!("c89efdaa54c0f20c7adf612882df0950f5a951637e0307cdcb4c672f298b8bc6");

/// secp256k1 `n / 2`: a signature's `s` must not exceed it (low-s).
pub const SECP256K1N_HALF: U256 = U256::from_limbs([
    0xDFE92F46681B20A0,
    0x5D576E7357A4501D,
    0xFFFFFFFFFFFFFFFF,
    0x7FFFFFFFFFFFFFFF,
]);

/// Longest signature accepted from a credential (a WebAuthn envelope is the longest kind).
pub const MAX_SIGNATURE_BYTES: usize = 2048;

/// The EIP-712 domain of one escrow on one chain, with its separator computed once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct VoucherDomain {
    protocol: SessionProtocol,
    chain_id: u64,
    escrow: Address,
    separator: B256,
}

impl VoucherDomain {
    /// The domain of `protocol`'s vouchers for `escrow` on `chain_id`.
    pub fn new(protocol: SessionProtocol, chain_id: u64, escrow: Address) -> Self {
        let name = match protocol {
            SessionProtocol::V1 => DOMAIN_NAME_V1_HASH,
            SessionProtocol::V2 => DOMAIN_NAME_V2_HASH,
        };
        let mut words = [[0u8; 32]; 5];
        words[0] = EIP712_DOMAIN_TYPEHASH.0;
        words[1] = name.0;
        words[2] = DOMAIN_VERSION_HASH.0;
        words[3][24..].copy_from_slice(&chain_id.to_be_bytes());
        words[4][12..].copy_from_slice(escrow.as_slice());
        Self {
            protocol,
            chain_id,
            escrow,
            separator: keccak256(words.as_flattened()),
        }
    }

    /// The protocol version.
    pub fn protocol(&self) -> SessionProtocol {
        self.protocol
    }

    /// The chain id.
    pub fn chain_id(&self) -> u64 {
        self.chain_id
    }

    /// The escrow (`verifyingContract`).
    pub fn escrow(&self) -> Address {
        self.escrow
    }

    /// The domain separator (what the escrow's `domainSeparator()` returns).
    pub fn separator(&self) -> B256 {
        self.separator
    }

    /// The domain as alloy's [`Eip712Domain`] (for typed-data signers).
    pub fn eip712_domain(&self) -> Eip712Domain {
        let name = match self.protocol {
            SessionProtocol::V1 => DOMAIN_NAME_V1,
            SessionProtocol::V2 => DOMAIN_NAME_V2,
        };
        Eip712Domain::new(
            Some(name.into()),
            Some(DOMAIN_VERSION.into()),
            Some(U256::from(self.chain_id)),
            Some(self.escrow),
            None,
        )
    }

    /// The voucher type hash of this protocol.
    pub fn voucher_typehash(&self) -> B256 {
        match self.protocol {
            SessionProtocol::V1 => VOUCHER_TYPEHASH_V1,
            SessionProtocol::V2 => VOUCHER_TYPEHASH_V2,
        }
    }

    /// The EIP-712 struct hash of a voucher (no range check; see [`Self::voucher_digest`]).
    pub fn voucher_struct_hash(&self, channel_id: B256, cumulative_amount: u128) -> B256 {
        struct_hash(self.voucher_typehash(), channel_id, cumulative_amount)
    }

    /// The digest the payer signs for a voucher of `cumulative_amount` on `channel_id`.
    /// Fails (`invalid-payload`) when the amount does not fit the escrow's type (`uint96` for
    /// v2).
    pub fn voucher_digest(
        &self,
        channel_id: B256,
        cumulative_amount: u128,
    ) -> Result<B256, SessionError> {
        self.check_range(cumulative_amount)?;
        Ok(self.digest(self.voucher_struct_hash(channel_id, cumulative_amount)))
    }

    /// The digest of a v2 `CloseAuthorization` (`closeSignature`), signed in the same domain.
    pub fn close_authorization_digest(
        &self,
        channel_id: B256,
        cumulative_amount: u128,
    ) -> Result<B256, SessionError> {
        self.check_range(cumulative_amount)?;
        let hash = struct_hash(CLOSE_AUTHORIZATION_TYPEHASH, channel_id, cumulative_amount);
        Ok(self.digest(hash))
    }

    fn check_range(&self, amount: u128) -> Result<(), SessionError> {
        if amount > self.protocol.max_amount() {
            return Err(SessionError::payload(
                "cumulativeAmount exceeds the escrow's uint96 range",
            ));
        }
        Ok(())
    }

    fn digest(&self, struct_hash: B256) -> B256 {
        let mut buf = [0u8; 66];
        buf[0] = 0x19;
        buf[1] = 0x01;
        buf[2..34].copy_from_slice(self.separator.as_slice());
        buf[34..].copy_from_slice(struct_hash.as_slice());
        keccak256(buf)
    }

    /// Checks that `signature` over the voucher recovers to `expected_signer`.
    ///
    /// `session/invalid-signature` for a malformed, non-canonical or high-s signature and for
    /// an ECDSA signature that recovers to anyone else; `session/signer-mismatch` for a valid
    /// P-256/WebAuthn signature by another key.
    pub fn verify_voucher(
        &self,
        channel_id: B256,
        cumulative_amount: u128,
        signature: &VoucherSignature,
        expected_signer: Address,
    ) -> Result<(), SessionError> {
        let digest = self.voucher_digest(channel_id, cumulative_amount)?;
        signature.verify(self.protocol, &digest, expected_signer)
    }
}

fn struct_hash(typehash: B256, channel_id: B256, amount: u128) -> B256 {
    let mut buf = [0u8; 96];
    buf[..32].copy_from_slice(typehash.as_slice());
    buf[32..64].copy_from_slice(channel_id.as_slice());
    buf[80..].copy_from_slice(&amount.to_be_bytes());
    keccak256(buf)
}

/// A voucher signature as the payer sent it. Parsing checks only the length; whether the
/// form is acceptable for a protocol, and whom it recovers to, is decided by
/// [`VoucherSignature::recover`].
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum VoucherSignature {
    /// 65 bytes: secp256k1 `r ‖ s ‖ v`.
    Secp256k1([u8; 65]),
    /// 64 bytes: secp256k1 EIP-2098 `r ‖ yParity·s` (v1 only).
    Compact([u8; 64]),
    /// Any other length: a TIP-1020 envelope (`0x01` P-256, `0x02` WebAuthn; v2 only).
    Envelope(Bytes),
}

impl VoucherSignature {
    /// The signature from its bytes: 1 to [`MAX_SIGNATURE_BYTES`] long.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, SessionError> {
        if let Ok(raw) = <[u8; 65]>::try_from(bytes) {
            return Ok(Self::Secp256k1(raw));
        }
        if let Ok(raw) = <[u8; 64]>::try_from(bytes) {
            return Ok(Self::Compact(raw));
        }
        if bytes.is_empty() || bytes.len() > MAX_SIGNATURE_BYTES {
            return Err(SessionError::payload("signature has an implausible length"));
        }
        Ok(Self::Envelope(Bytes::copy_from_slice(bytes)))
    }

    /// The signature from `0x`-hex (any case), decoding a 65-byte one without allocating.
    pub fn from_hex(s: &str) -> Result<Self, SessionError> {
        let bad = || SessionError::payload("signature must be 0x-prefixed hex");
        let digits = s
            .strip_prefix("0x")
            .or_else(|| s.strip_prefix("0X"))
            .ok_or_else(bad)?;
        if digits.len() == 130 {
            let mut raw = [0u8; 65];
            alloy::hex::decode_to_slice(digits, &mut raw).map_err(|_| bad())?;
            return Ok(Self::Secp256k1(raw));
        }
        if digits.len() % 2 != 0 || digits.len() > 2 * MAX_SIGNATURE_BYTES {
            return Err(SessionError::payload("signature has an implausible length"));
        }
        let bytes = alloy::hex::decode(digits).map_err(|_| bad())?;
        Self::from_bytes(&bytes)
    }

    /// A 65-byte secp256k1 signature (`v` = 27/28), as alloy signers produce it.
    pub fn from_signature(signature: &Signature) -> Self {
        Self::Secp256k1(signature.as_bytes())
    }

    /// The bytes as sent.
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Self::Secp256k1(raw) => raw,
            Self::Compact(raw) => raw,
            Self::Envelope(raw) => raw,
        }
    }

    /// The form to store and settle with: the 65-byte form for an EIP-2098 signature, the
    /// bytes as sent otherwise.
    pub fn canonical(&self) -> Self {
        match self {
            Self::Compact(raw) => Self::Secp256k1(Signature::from_erc2098(raw).as_bytes()),
            other => other.clone(),
        }
    }

    /// Recovers the signer of `digest`, accepting only the forms `protocol` allows (see the
    /// module docs). Every refusal is `session/invalid-signature`.
    pub fn recover(
        &self,
        protocol: SessionProtocol,
        digest: &B256,
    ) -> Result<Address, SessionError> {
        match (self, protocol) {
            (Self::Secp256k1(raw), _) => {
                let parity = match raw[64] {
                    27 => false,
                    28 => true,
                    _ => return Err(SessionError::signature("v must be 27 or 28")),
                };
                let r = U256::from_be_slice(&raw[..32]);
                let s = U256::from_be_slice(&raw[32..64]);
                recover_secp256k1(Signature::new(r, s, parity), digest)
            }
            (Self::Compact(raw), SessionProtocol::V1) => {
                recover_secp256k1(Signature::from_erc2098(raw), digest)
            }
            (Self::Compact(_), SessionProtocol::V2) => Err(SessionError::signature(
                "v2 vouchers need the 65-byte signature, not the EIP-2098 compact form",
            )),
            (Self::Envelope(_), SessionProtocol::V1) => Err(SessionError::signature(
                "v1 vouchers need a secp256k1 signature",
            )),
            (Self::Envelope(raw), SessionProtocol::V2) => {
                let primitive = PrimitiveSignature::from_bytes(raw)
                    .map_err(|e| SessionError::signature(e.to_string()))?;
                if matches!(primitive, PrimitiveSignature::Secp256k1(_))
                    || primitive.to_bytes().as_ref() != raw.as_ref()
                {
                    return Err(SessionError::signature(
                        "not a canonical TIP-1020 primitive signature",
                    ));
                }
                primitive
                    .recover_signer(digest)
                    .map_err(|_| SessionError::signature("the signature does not verify"))
            }
        }
    }

    /// Checks that the signature over `digest` is by `expected_signer` (see
    /// [`VoucherDomain::verify_voucher`] for the problem types).
    pub fn verify(
        &self,
        protocol: SessionProtocol,
        digest: &B256,
        expected_signer: Address,
    ) -> Result<(), SessionError> {
        let signer = self.recover(protocol, digest)?;
        if signer == expected_signer {
            return Ok(());
        }
        match self {
            // A P-256 key is carried in the signature: it verified, but is someone else's.
            Self::Envelope(_) => Err(SessionError::SignerMismatch(format!(
                "signed by {signer}, the channel's signer is {expected_signer}"
            ))),
            // An ECDSA signature recovers to *some* address whatever its bytes are.
            _ => Err(SessionError::signature(
                "the signature is not by the channel's signer",
            )),
        }
    }
}

fn recover_secp256k1(signature: Signature, digest: &B256) -> Result<Address, SessionError> {
    let (r, s) = (signature.r(), signature.s());
    if r.is_zero() || s.is_zero() {
        return Err(SessionError::signature("r and s must be non-zero"));
    }
    if s > SECP256K1N_HALF {
        return Err(SessionError::signature("high-s signature (s > n/2)"));
    }
    signature
        .recover_address_from_prehash(digest)
        .map_err(|_| SessionError::signature("the signature does not recover"))
}

impl fmt::Debug for VoucherSignature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VoucherSignature({self})")
    }
}

impl fmt::Display for VoucherSignature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("0x")?;
        for byte in self.as_bytes() {
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

impl Serialize for VoucherSignature {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for VoucherSignature {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::from_hex(&s).map_err(D::Error::custom)
    }
}

/// What the server holds for a channel when a voucher arrives: the input of
/// [`check_voucher`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VoucherState<'a> {
    /// Who must have signed (the descriptor's effective signer; v1: the stored one).
    pub signer: Address,
    /// The deposit (latest verified on chain).
    pub deposit: u128,
    /// What the escrow already paid out (latest verified on chain).
    pub settled: u128,
    /// The highest accepted cumulative amount (0 if none).
    pub highest: u128,
    /// The stored signature of the highest voucher: an exact replay of it skips the
    /// signature work.
    pub highest_signature: Option<&'a VoucherSignature>,
    /// `methodDetails.minVoucherDelta` (0 if absent).
    pub min_voucher_delta: u128,
    /// Closed for good (410 `channel-finalized`).
    pub finalized: bool,
    /// A close was requested on chain or locally started (410 `channel-finalized`).
    pub close_requested: bool,
}

/// What to do with a voucher that passed [`check_voucher`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VoucherOutcome {
    /// A new highest voucher, `delta` above the previous one: store it (compare-and-set
    /// against the `highest` that was read) before serving anything that relies on it.
    Accepted {
        /// The increase over the previous highest voucher.
        delta: u128,
    },
    /// Equal to the highest accepted voucher: an idempotent retry. Change nothing and answer
    /// with the current receipt.
    AlreadyAccepted,
}

/// The server's voucher checks, in mppx's order, cheap ones first:
///
/// 1. channel finalized or closing → `session/channel-finalized` (410); no deposit →
///    `session/channel-not-found` (410);
/// 2. `cumulativeAmount > deposit` → `session/amount-exceeds-deposit`;
/// 3. `cumulativeAmount < highest` → `verification-failed`, **before any signature work**;
/// 4. the signature must be the channel signer's → `session/invalid-signature` (skipped for
///    a byte-identical replay of the stored highest voucher);
/// 5. `cumulativeAmount ≤ settled` → `verification-failed`;
/// 6. `cumulativeAmount == highest` → [`VoucherOutcome::AlreadyAccepted`];
/// 7. `cumulativeAmount − highest < minVoucherDelta` → `session/delta-too-small`.
pub fn check_voucher(
    domain: &VoucherDomain,
    channel_id: B256,
    cumulative_amount: u128,
    signature: &VoucherSignature,
    state: &VoucherState<'_>,
) -> Result<VoucherOutcome, SessionError> {
    if state.finalized {
        return Err(SessionError::ChannelFinalized(
            "the channel is finalized".into(),
        ));
    }
    if state.close_requested {
        return Err(SessionError::ChannelFinalized(
            "the channel has a pending close request".into(),
        ));
    }
    if state.deposit == 0 {
        return Err(SessionError::ChannelNotFound(
            "the channel is not funded on chain".into(),
        ));
    }
    if cumulative_amount > state.deposit {
        return Err(SessionError::AmountExceedsDeposit {
            amount: cumulative_amount,
            deposit: state.deposit,
        });
    }
    if cumulative_amount < state.highest {
        return Err(SessionError::failed(format!(
            "voucher amount {cumulative_amount} is below the highest accepted {}",
            state.highest
        )));
    }
    let replay = cumulative_amount == state.highest
        && state
            .highest_signature
            .is_some_and(|stored| stored.as_bytes() == signature.as_bytes());
    if !replay {
        domain.verify_voucher(channel_id, cumulative_amount, signature, state.signer)?;
    }
    if cumulative_amount <= state.settled {
        return Err(SessionError::failed(format!(
            "voucher amount {cumulative_amount} is not above the settled {}",
            state.settled
        )));
    }
    if cumulative_amount == state.highest {
        return Ok(VoucherOutcome::AlreadyAccepted);
    }
    let delta = cumulative_amount - state.highest;
    if delta < state.min_voucher_delta {
        return Err(SessionError::DeltaTooSmall {
            delta,
            min: state.min_voucher_delta,
        });
    }
    Ok(VoucherOutcome::Accepted { delta })
}

/// The amount checks of an `open` (mppx's): the deposit covers one unit (`deposit ≥
/// amount`), and the first voucher pays for it without exceeding the deposit (`amount ≤
/// cumulativeAmount ≤ deposit`). Failures are `verification-failed`, and
/// `session/amount-exceeds-deposit` for a voucher above the deposit.
pub fn check_open_amounts(
    request_amount: u128,
    deposit: u128,
    cumulative_amount: u128,
) -> Result<(), SessionError> {
    if deposit < request_amount {
        return Err(SessionError::failed(
            "the open deposit is less than the request amount",
        ));
    }
    if cumulative_amount < request_amount {
        return Err(SessionError::failed(
            "the open voucher is less than the request amount",
        ));
    }
    if cumulative_amount > deposit {
        return Err(SessionError::AmountExceedsDeposit {
            amount: cumulative_amount,
            deposit,
        });
    }
    Ok(())
}

/// What a cooperative close may capture (session.md §7): `max(spent, settled)`, never the
/// whole voucher just because it was signed. The close voucher must cover both
/// (`verification-failed` otherwise), and neither may exceed the deposit
/// (`session/amount-exceeds-deposit`).
pub fn close_capture(
    cumulative_amount: u128,
    spent: u128,
    settled: u128,
    deposit: u128,
) -> Result<u128, SessionError> {
    if cumulative_amount < spent {
        return Err(SessionError::failed(format!(
            "close amount {cumulative_amount} is below the spent {spent}"
        )));
    }
    if cumulative_amount < settled {
        return Err(SessionError::failed(format!(
            "close amount {cumulative_amount} is below the settled {settled}"
        )));
    }
    if cumulative_amount > deposit {
        return Err(SessionError::AmountExceedsDeposit {
            amount: cumulative_amount,
            deposit,
        });
    }
    Ok(spent.max(settled))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constants_are_the_hashes_they_name() {
        assert_eq!(
            EIP712_DOMAIN_TYPEHASH,
            keccak256(
                "EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"
            )
        );
        assert_eq!(
            VOUCHER_TYPEHASH_V1,
            keccak256("Voucher(bytes32 channelId,uint128 cumulativeAmount)")
        );
        assert_eq!(
            VOUCHER_TYPEHASH_V2,
            keccak256("Voucher(bytes32 channelId,uint96 cumulativeAmount)")
        );
        assert_eq!(
            CLOSE_AUTHORIZATION_TYPEHASH,
            keccak256("CloseAuthorization(bytes32 channelId,uint96 cumulativeAmount)")
        );
        assert_eq!(DOMAIN_NAME_V1_HASH, keccak256(DOMAIN_NAME_V1));
        assert_eq!(DOMAIN_NAME_V2_HASH, keccak256(DOMAIN_NAME_V2));
        assert_eq!(DOMAIN_VERSION_HASH, keccak256(DOMAIN_VERSION));
        assert_eq!(
            SECP256K1N_HALF,
            U256::from_str_radix(
                "7FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF5D576E7357A4501DDFE92F46681B20A0",
                16
            )
            .unwrap()
        );
    }

    #[test]
    fn separator_equals_alloys() {
        for protocol in [SessionProtocol::V1, SessionProtocol::V2] {
            let d = VoucherDomain::new(protocol, 42431, Address::repeat_byte(7));
            assert_eq!(d.separator(), d.eip712_domain().separator());
        }
    }

    #[test]
    fn signature_lengths() {
        assert!(matches!(
            VoucherSignature::from_hex(&format!("0x{}", "00".repeat(65))),
            Ok(VoucherSignature::Secp256k1(_))
        ));
        assert!(matches!(
            VoucherSignature::from_hex(&format!("0x{}", "00".repeat(64))),
            Ok(VoucherSignature::Compact(_))
        ));
        for bad in [
            "",
            "0x",
            "00",
            "0x0",
            "0xzz",
            &format!("0x{}", "01".repeat(2049)),
        ] {
            assert!(VoucherSignature::from_hex(bad).is_err(), "{bad}");
        }
        let sig = VoucherSignature::from_hex(&format!("0X{}", "AB".repeat(65))).unwrap();
        assert_eq!(sig.to_string(), format!("0x{}", "ab".repeat(65)));
    }
}
