//! The sender-signed fee-payer envelope (`0x78 || rlp([...])`) that SDK clients send when the
//! server sponsors gas (charge.md §5). It is not a broadcastable transaction: the server turns
//! it back into a `0x76` Tempo transaction, picks the fee token and adds its own signature.
//!
//! List layout: `chainId, maxPriorityFeePerGas, maxFeePerGas, gasLimit, calls, accessList,
//! nonceKey, nonce, validBefore?, validAfter?, feeToken?, sender, authorizationList,
//! keyAuthorization?, senderSignature`. Every field goes through the RLP codecs of alloy and
//! tempo-primitives; only the list framing lives here.

use std::num::NonZeroU64;

use alloy::eips::eip2930::AccessList;
use alloy::primitives::{Address, U256};
use alloy::rlp::{Buf, BufMut, Decodable, EMPTY_STRING_CODE, Encodable, Header};
use tempo_primitives::transaction::{
    AASigned, Call, FEE_PAYER_SIGNATURE_MARKER, SignedKeyAuthorization, TempoSignature,
    TempoSignedAuthorization, TempoTransaction,
};

/// The envelope's leading byte (the fee-payer signature domain byte).
pub const FEE_PAYER_ENVELOPE_TYPE: u8 =
    tempo_primitives::transaction::tempo_transaction::FEE_PAYER_SIGNATURE_MAGIC_BYTE;

/// A decoded `0x78` envelope: the transaction as the sender signed it, plus the sender.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeePayerEnvelope {
    /// The transaction. `fee_payer_signature` is the placeholder marker (so the sender's
    /// signing hash skips `fee_token`), and the access list is whatever the wire said.
    pub tx: TempoTransaction,
    /// The sender address the envelope declares.
    pub sender: Address,
    /// The sender's signature.
    pub signature: TempoSignature,
}

impl FeePayerEnvelope {
    /// Wraps a transaction the sender signed in fee-payer form.
    pub fn new(mut tx: TempoTransaction, sender: Address, signature: TempoSignature) -> Self {
        tx.fee_payer_signature = Some(FEE_PAYER_SIGNATURE_MARKER);
        Self {
            tx,
            sender,
            signature,
        }
    }

    /// Decodes `0x78 || rlp(list)`; trailing bytes are an error.
    pub fn decode(bytes: &[u8]) -> alloy::rlp::Result<Self> {
        let mut buf = match bytes.split_first() {
            Some((&FEE_PAYER_ENVELOPE_TYPE, rest)) => rest,
            Some(_) => return Err(alloy::rlp::Error::Custom("not a 0x78 fee payer envelope")),
            None => return Err(alloy::rlp::Error::InputTooShort),
        };
        let header = Header::decode(&mut buf)?;
        if !header.list {
            return Err(alloy::rlp::Error::UnexpectedString);
        }
        if header.payload_length != buf.len() {
            return Err(alloy::rlp::Error::UnexpectedLength);
        }
        let chain_id = u64::decode(&mut buf)?;
        let max_priority_fee_per_gas = u128::decode(&mut buf)?;
        let max_fee_per_gas = u128::decode(&mut buf)?;
        let gas_limit = u64::decode(&mut buf)?;
        let calls = Vec::<Call>::decode(&mut buf)?;
        let access_list = AccessList::decode(&mut buf)?;
        let nonce_key = U256::decode(&mut buf)?;
        let nonce = u64::decode(&mut buf)?;
        // An absent optional is the empty string, which the integer codec reads as 0.
        let valid_before = NonZeroU64::new(u64::decode(&mut buf)?);
        let valid_after = NonZeroU64::new(u64::decode(&mut buf)?);
        let fee_token = decode_optional::<Address>(&mut buf)?;
        let sender = Address::decode(&mut buf)?;
        let tempo_authorization_list = Vec::<TempoSignedAuthorization>::decode(&mut buf)?;
        // The key authorization is present only when the next item is a list; the signature
        // that always ends the envelope is a byte string.
        let key_authorization = match buf.first() {
            Some(&b) if b >= 0xc0 => Some(SignedKeyAuthorization::decode(&mut buf)?),
            _ => None,
        };
        let signature_bytes = alloy::primitives::Bytes::decode(&mut buf)?;
        if !buf.is_empty() {
            return Err(alloy::rlp::Error::UnexpectedLength);
        }
        let signature =
            TempoSignature::from_bytes(&signature_bytes).map_err(alloy::rlp::Error::Custom)?;
        let tx = TempoTransaction {
            chain_id,
            fee_token,
            max_priority_fee_per_gas,
            max_fee_per_gas,
            gas_limit,
            calls,
            access_list,
            nonce_key,
            nonce,
            fee_payer_signature: Some(FEE_PAYER_SIGNATURE_MARKER),
            valid_before,
            valid_after,
            key_authorization,
            tempo_authorization_list,
        };
        tx.validate().map_err(alloy::rlp::Error::Custom)?;
        Ok(Self {
            tx,
            sender,
            signature,
        })
    }

    /// Encodes `0x78 || rlp(list)`.
    pub fn encode(&self) -> Vec<u8> {
        let mut fields = Vec::new();
        let tx = &self.tx;
        tx.chain_id.encode(&mut fields);
        tx.max_priority_fee_per_gas.encode(&mut fields);
        tx.max_fee_per_gas.encode(&mut fields);
        tx.gas_limit.encode(&mut fields);
        tx.calls.encode(&mut fields);
        tx.access_list.encode(&mut fields);
        tx.nonce_key.encode(&mut fields);
        tx.nonce.encode(&mut fields);
        tx.valid_before
            .map_or(0, NonZeroU64::get)
            .encode(&mut fields);
        tx.valid_after
            .map_or(0, NonZeroU64::get)
            .encode(&mut fields);
        match tx.fee_token {
            Some(token) => token.encode(&mut fields),
            None => fields.put_u8(EMPTY_STRING_CODE),
        }
        self.sender.encode(&mut fields);
        tx.tempo_authorization_list.encode(&mut fields);
        if let Some(key_authorization) = &tx.key_authorization {
            key_authorization.encode(&mut fields);
        }
        self.signature.encode(&mut fields);
        let mut out = Vec::with_capacity(fields.len() + 10);
        out.put_u8(FEE_PAYER_ENVELOPE_TYPE);
        Header {
            list: true,
            payload_length: fields.len(),
        }
        .encode(&mut out);
        out.extend_from_slice(&fields);
        out
    }

    /// The transaction whose signing hash the sender signed: the placeholder fee-payer
    /// signature (so `fee_token` is not committed to) and an **empty access list** (honest
    /// clients sign that shape; a tampered wire access list then fails recovery).
    pub fn recoverable(&self) -> AASigned {
        let mut tx = self.tx.clone();
        tx.access_list = AccessList::default();
        tx.fee_payer_signature = Some(FEE_PAYER_SIGNATURE_MARKER);
        AASigned::new_unhashed(tx, self.signature.clone())
    }
}

fn decode_optional<T: Decodable>(buf: &mut &[u8]) -> alloy::rlp::Result<Option<T>> {
    match buf.first() {
        Some(&EMPTY_STRING_CODE) => {
            buf.advance(1);
            Ok(None)
        }
        Some(_) => T::decode(buf).map(Some),
        None => Err(alloy::rlp::Error::InputTooShort),
    }
}
