//! The payer side of a session, offline (feature `client`): the escrow calls to open and top
//! up a channel, voucher signing, and the credential payloads, as the SDK clients build
//! them.
//!
//! ```
//! use mpp_tempo::session::client::{SessionChannel, SessionSigner};
//! use mpp_tempo::session::{ChannelDescriptor, SessionProtocol, VoucherDomain};
//! use mpp_tempo::session::TIP20_CHANNEL_RESERVE;
//! use mpp_tempo::{Address, B256, PrivateKeySigner};
//!
//! let key: PrivateKeySigner =
//!     "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80".parse().unwrap();
//! let domain = VoucherDomain::new(SessionProtocol::V2, 42431, TIP20_CHANNEL_RESERVE);
//! let signer = SessionSigner::new(key, domain);
//! let descriptor = ChannelDescriptor {
//!     payer: signer.address(),
//!     payee: Address::repeat_byte(0x22),
//!     operator: Address::ZERO,
//!     token: mpp_tempo::PATH_USD,
//!     salt: B256::repeat_byte(1),
//!     authorized_signer: Address::ZERO,
//!     expiring_nonce_hash: B256::repeat_byte(2),
//! };
//! let channel = SessionChannel::v2(descriptor, &domain);
//! let payload = signer.voucher(&channel, 1_000_000).unwrap();
//! assert_eq!(payload.to_json()["action"], "voucher");
//! assert_eq!(signer.source(), format!("did:pkh:eip155:42431:{}", signer.address()));
//! ```
//!
//! The open and top-up transactions are built by the caller (gas, fees, `validBefore` need a
//! node): put [`open_calls`] / [`top_up_calls`] into a [`TempoTransaction`] with an expiring
//! nonce (`nonceKey = U256::MAX`, `nonce = 0`, `validBefore ≈ now + 25 s`), then let
//! [`SessionSigner::open`] / [`SessionSigner::top_up`] sign it and build the payload.

use alloy::eips::eip2718::Encodable2718;
use alloy::primitives::{Address, B256, Bytes, TxKind, U256, aliases::U96};
use alloy::signers::SignerSync;
use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::SolCall;
use mpp_core::did::PkhDid;
use tempo_alloy::contracts::precompiles::ITIP20;
use tempo_primitives::transaction::{
    Call, FEE_PAYER_SIGNATURE_MARKER, PrimitiveSignature, TempoSignature, TempoTransaction,
};

use super::abi::{v1::ITempoStreamChannel, v2::ITIP20ChannelReserve};
use super::channel::{ChannelDescriptor, SessionProtocol, V1Channel, expiring_nonce_hash};
use super::payload::{ClosePayload, OpenPayload, SessionPayload, TopUpPayload, VoucherPayload};
use super::voucher::{VoucherDomain, VoucherSignature};
use crate::charge::FeePayerEnvelope;

/// Why a session payload could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SessionClientError {
    /// An amount does not fit the escrow's type (`uint96` for v2).
    #[error("amount {0} exceeds the escrow's range")]
    OutOfRange(u128),
    /// The channel does not fit the domain (a v2 channel without a descriptor).
    #[error("channel does not fit the session: {0}")]
    Channel(&'static str),
    /// The key refused to sign.
    #[error("signing failed: {0}")]
    Signing(String),
}

/// A channel as the payer knows it: its id and, for v2, its descriptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionChannel {
    /// The channel id.
    pub channel_id: B256,
    /// The v2 descriptor (every v2 credential carries it); `None` for v1.
    pub descriptor: Option<ChannelDescriptor>,
}

impl SessionChannel {
    /// A v2 channel, its id computed in `domain` (escrow and chain).
    pub fn v2(descriptor: ChannelDescriptor, domain: &VoucherDomain) -> Self {
        Self {
            channel_id: descriptor.channel_id(domain.escrow(), domain.chain_id()),
            descriptor: Some(descriptor),
        }
    }

    /// A v1 channel, its id computed in `domain`.
    pub fn v1(channel: &V1Channel, domain: &VoucherDomain) -> Self {
        Self {
            channel_id: channel.channel_id(domain.escrow(), domain.chain_id()),
            descriptor: None,
        }
    }
}

/// The arguments of the escrow's `open` (the payer is the transaction's sender).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenParams {
    /// The payee (the request's `recipient`).
    pub payee: Address,
    /// v2: the operator the request advertises (zero if none). Ignored for v1.
    pub operator: Address,
    /// The token (the request's `currency`).
    pub token: Address,
    /// What to lock.
    pub deposit: u128,
    /// A fresh random salt.
    pub salt: B256,
    /// Who signs vouchers (zero = the payer). SDK clients put the payer's address here.
    pub authorized_signer: Address,
}

/// The calls that open a channel: v2 one `open` on the precompile; v1 an `approve` of the
/// escrow on the token, then `open` (what both SDK clients send).
pub fn open_calls(
    domain: &VoucherDomain,
    params: &OpenParams,
) -> Result<Vec<Call>, SessionClientError> {
    let escrow = domain.escrow();
    match domain.protocol() {
        SessionProtocol::V2 => {
            let input = ITIP20ChannelReserve::openCall {
                payee: params.payee,
                operator: params.operator,
                token: params.token,
                deposit: u96(params.deposit)?,
                salt: params.salt,
                authorizedSigner: params.authorized_signer,
            }
            .abi_encode();
            Ok(vec![call(escrow, input)])
        }
        SessionProtocol::V1 => {
            let open = ITempoStreamChannel::openCall {
                payee: params.payee,
                token: params.token,
                deposit: params.deposit,
                salt: params.salt,
                authorizedSigner: params.authorized_signer,
            }
            .abi_encode();
            Ok(vec![
                approve(params.token, escrow, params.deposit),
                call(escrow, open),
            ])
        }
    }
}

/// The calls that add `additional` to a channel's deposit: v2 one `topUp(descriptor,
/// additional)`; v1 an `approve`, then `topUp(channelId, additional)`.
pub fn top_up_calls(
    domain: &VoucherDomain,
    channel: &SessionChannel,
    token: Address,
    additional: u128,
) -> Result<Vec<Call>, SessionClientError> {
    let escrow = domain.escrow();
    match domain.protocol() {
        SessionProtocol::V2 => {
            let descriptor = channel.descriptor.ok_or(SessionClientError::Channel(
                "a v2 channel needs its descriptor",
            ))?;
            let input = ITIP20ChannelReserve::topUpCall {
                descriptor: descriptor.to_abi(),
                additionalDeposit: u96(additional)?,
            }
            .abi_encode();
            Ok(vec![call(escrow, input)])
        }
        SessionProtocol::V1 => {
            let input = ITempoStreamChannel::topUpCall {
                channelId: channel.channel_id,
                additionalDeposit: U256::from(additional),
            }
            .abi_encode();
            Ok(vec![
                approve(token, escrow, additional),
                call(escrow, input),
            ])
        }
    }
}

fn u96(amount: u128) -> Result<U96, SessionClientError> {
    U96::try_from(amount).map_err(|_| SessionClientError::OutOfRange(amount))
}

fn call(to: Address, input: Vec<u8>) -> Call {
    Call {
        to: TxKind::Call(to),
        value: U256::ZERO,
        input: input.into(),
    }
}

fn approve(token: Address, spender: Address, amount: u128) -> Call {
    let input = ITIP20::approveCall {
        spender,
        amount: U256::from(amount),
    }
    .abi_encode();
    call(token, input)
}

/// A signed open or top-up: the payload, and what the payer needs to keep.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedChannelTx {
    /// The channel.
    pub channel: SessionChannel,
    /// The credential payload.
    pub payload: SessionPayload,
    /// The transaction hash the server's broadcast will have (`None` when sponsored: the
    /// fee payer's signature changes it).
    pub tx_hash: Option<B256>,
}

/// A payer's voucher key in one session domain (escrow, chain, protocol).
#[derive(Debug, Clone)]
pub struct SessionSigner {
    signer: PrivateKeySigner,
    domain: VoucherDomain,
}

impl SessionSigner {
    /// Signs with `signer` in `domain`.
    pub fn new(signer: PrivateKeySigner, domain: VoucherDomain) -> Self {
        Self { signer, domain }
    }

    /// The signer's address.
    pub fn address(&self) -> Address {
        self.signer.address()
    }

    /// The domain.
    pub fn domain(&self) -> &VoucherDomain {
        &self.domain
    }

    /// The credential `source`: `did:pkh:eip155:<chainId>:<address>` (EIP-55).
    pub fn source(&self) -> String {
        PkhDid {
            chain_id: self.domain.chain_id(),
            address: self.address().to_checksum(None),
        }
        .to_string()
    }

    /// Signs a voucher: 65 bytes `r ‖ s ‖ v`, `v` = 27/28, low `s`.
    pub fn sign_voucher(
        &self,
        channel_id: B256,
        cumulative_amount: u128,
    ) -> Result<VoucherSignature, SessionClientError> {
        let digest = self
            .domain
            .voucher_digest(channel_id, cumulative_amount)
            .map_err(|_| SessionClientError::OutOfRange(cumulative_amount))?;
        self.sign_digest(&digest)
    }

    /// Signs a v2 `CloseAuthorization` (the `closeSignature` newer servers require).
    pub fn sign_close_authorization(
        &self,
        channel_id: B256,
        cumulative_amount: u128,
    ) -> Result<VoucherSignature, SessionClientError> {
        let digest = self
            .domain
            .close_authorization_digest(channel_id, cumulative_amount)
            .map_err(|_| SessionClientError::OutOfRange(cumulative_amount))?;
        self.sign_digest(&digest)
    }

    fn sign_digest(&self, digest: &B256) -> Result<VoucherSignature, SessionClientError> {
        let signature = self
            .signer
            .sign_hash_sync(digest)
            .map_err(|e| SessionClientError::Signing(e.to_string()))?;
        Ok(VoucherSignature::from_signature(&signature))
    }

    /// A `voucher` payload for `cumulative_amount`.
    pub fn voucher(
        &self,
        channel: &SessionChannel,
        cumulative_amount: u128,
    ) -> Result<SessionPayload, SessionClientError> {
        self.check_channel(channel)?;
        Ok(SessionPayload::Voucher(VoucherPayload {
            channel_id: channel.channel_id,
            descriptor: channel.descriptor,
            cumulative_amount,
            signature: self.sign_voucher(channel.channel_id, cumulative_amount)?,
        }))
    }

    /// A `close` payload for `cumulative_amount`; with `close_authorization`, v2 also carries
    /// the `closeSignature` (mppx 0.11 neither sends nor checks it).
    pub fn close(
        &self,
        channel: &SessionChannel,
        cumulative_amount: u128,
        close_authorization: bool,
    ) -> Result<SessionPayload, SessionClientError> {
        self.check_channel(channel)?;
        let close_signature = match (close_authorization, self.domain.protocol()) {
            (true, SessionProtocol::V2) => {
                Some(self.sign_close_authorization(channel.channel_id, cumulative_amount)?)
            }
            _ => None,
        };
        Ok(SessionPayload::Close(ClosePayload {
            channel_id: channel.channel_id,
            descriptor: channel.descriptor,
            cumulative_amount,
            signature: self.sign_voucher(channel.channel_id, cumulative_amount)?,
            close_signature,
        }))
    }

    /// Signs `tx` (which must hold [`open_calls`] for `params`, with an expiring nonce) and
    /// builds the `open` payload with the first voucher of `initial_amount`. `sponsored`
    /// (the request's `feePayer`) sends the `0x78` fee-payer envelope instead of a `0x76`
    /// transaction. The signer must be the payer (it is the transaction's sender).
    pub fn open(
        &self,
        mut tx: TempoTransaction,
        params: &OpenParams,
        initial_amount: u128,
        sponsored: bool,
    ) -> Result<SignedChannelTx, SessionClientError> {
        let (transaction, tx_hash, nonce_hash) = self.sign_tx(&mut tx, sponsored)?;
        let channel = match self.domain.protocol() {
            SessionProtocol::V2 => SessionChannel::v2(
                ChannelDescriptor {
                    payer: self.address(),
                    payee: params.payee,
                    operator: params.operator,
                    token: params.token,
                    salt: params.salt,
                    authorized_signer: params.authorized_signer,
                    expiring_nonce_hash: nonce_hash,
                },
                &self.domain,
            ),
            SessionProtocol::V1 => SessionChannel::v1(
                &V1Channel {
                    payer: self.address(),
                    payee: params.payee,
                    token: params.token,
                    salt: params.salt,
                    authorized_signer: params.authorized_signer,
                },
                &self.domain,
            ),
        };
        let payload = SessionPayload::Open(OpenPayload {
            channel_id: channel.channel_id,
            transaction,
            descriptor: channel.descriptor,
            cumulative_amount: initial_amount,
            signature: self.sign_voucher(channel.channel_id, initial_amount)?,
            authorized_signer: Some(params.authorized_signer),
        });
        Ok(SignedChannelTx {
            channel,
            payload,
            tx_hash,
        })
    }

    /// Signs `tx` (which must hold [`top_up_calls`]) and builds the `topUp` payload.
    pub fn top_up(
        &self,
        mut tx: TempoTransaction,
        channel: &SessionChannel,
        additional: u128,
        sponsored: bool,
    ) -> Result<SignedChannelTx, SessionClientError> {
        self.check_channel(channel)?;
        let (transaction, tx_hash, _) = self.sign_tx(&mut tx, sponsored)?;
        Ok(SignedChannelTx {
            channel: *channel,
            payload: SessionPayload::TopUp(TopUpPayload {
                channel_id: channel.channel_id,
                transaction,
                descriptor: channel.descriptor,
                additional_deposit: additional,
            }),
            tx_hash,
        })
    }

    /// Signs `tx` as its sender: the wire bytes, the hash (unsponsored), and the expiring
    /// nonce hash of the transaction as signed.
    fn sign_tx(
        &self,
        tx: &mut TempoTransaction,
        sponsored: bool,
    ) -> Result<(Bytes, Option<B256>, B256), SessionClientError> {
        if sponsored {
            // The placeholder makes the sender's signing hash skip `fee_token`.
            tx.fee_token = None;
            tx.fee_payer_signature = Some(FEE_PAYER_SIGNATURE_MARKER);
        }
        let nonce_hash = expiring_nonce_hash(tx, self.address());
        let signature = self
            .signer
            .sign_hash_sync(&tx.signature_hash())
            .map_err(|e| SessionClientError::Signing(e.to_string()))?;
        let signature = TempoSignature::Primitive(PrimitiveSignature::Secp256k1(signature));
        if sponsored {
            let envelope = FeePayerEnvelope::new(tx.clone(), self.address(), signature);
            Ok((envelope.encode().into(), None, nonce_hash))
        } else {
            let signed = tx.clone().into_signed(signature);
            let hash = *signed.hash();
            Ok((signed.encoded_2718().into(), Some(hash), nonce_hash))
        }
    }

    fn check_channel(&self, channel: &SessionChannel) -> Result<(), SessionClientError> {
        if self.domain.protocol() == SessionProtocol::V2 && channel.descriptor.is_none() {
            return Err(SessionClientError::Channel(
                "a v2 channel needs its descriptor",
            ));
        }
        Ok(())
    }
}
