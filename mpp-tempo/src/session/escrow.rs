//! The escrow on chain, for either protocol: a channel's state as the escrow reports it, the
//! events a transaction left for a channel, and the calls the server sends (`settle`,
//! `close`). Everything protocol-specific about talking to the escrow is here; the verifier
//! and the settler above it speak only [`OnChainState`] and [`ChannelIdentity`].

use alloy::primitives::{Address, B256, Bytes, TxKind, U256, aliases::U96};
use alloy::rpc::types::Log;
use alloy::sol_types::{SolCall, SolEvent};
use tempo_alloy::rpc::TempoTransactionReceipt;
use tempo_primitives::transaction::Call;

use super::SessionProtocol;
use super::abi::v1::ITempoStreamChannel as V1;
use super::abi::v2::ITIP20ChannelReserve as V2;
use super::store::ChannelIdentity;
use crate::chain::{ChainClient, ChainError};

/// A channel's state as the escrow reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OnChainState {
    /// What is locked (0 for an unknown, closed or withdrawn v2 channel).
    pub deposit: u128,
    /// What the escrow already paid the payee.
    pub settled: u128,
    /// When the payer asked to close (unix seconds); 0 = no request.
    pub close_requested_at: u64,
    /// Closed for good (v1's flag; a v2 channel that is gone reads `deposit == 0`).
    pub finalized: bool,
}

impl OnChainState {
    /// Whether the channel exists and can still pay: funded, not finalized.
    pub fn is_live(&self) -> bool {
        self.deposit > 0 && !self.finalized
    }
}

/// What a `ChannelOpened` event says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Opened {
    pub(crate) payer: Address,
    pub(crate) payee: Address,
    pub(crate) token: Address,
    pub(crate) authorized_signer: Address,
    pub(crate) salt: B256,
    /// v2 only (zero for v1).
    pub(crate) operator: Address,
    /// v2 only (zero for v1).
    pub(crate) expiring_nonce_hash: B256,
    pub(crate) deposit: u128,
}

/// One escrow: its protocol, its address, its chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Escrow {
    pub(crate) protocol: SessionProtocol,
    pub(crate) address: Address,
}

fn u96(value: u128) -> Result<U96, ChainError> {
    U96::try_from(value)
        .map_err(|_| ChainError::Refused(format!("{value} does not fit the v2 escrow's uint96")))
}

fn call(to: Address, input: Vec<u8>) -> Call {
    Call {
        to: TxKind::Call(to),
        value: U256::ZERO,
        input: input.into(),
    }
}

impl Escrow {
    /// Whether the node has code at the escrow's address (start-up check).
    pub(crate) async fn has_code(&self, chain: &ChainClient) -> Result<bool, ChainError> {
        Ok(!chain.code(self.address).await?.is_empty())
    }

    /// The channel's state now (one `eth_call`).
    pub(crate) async fn read(
        &self,
        chain: &ChainClient,
        channel_id: B256,
    ) -> Result<OnChainState, ChainError> {
        let shape = |what: &str, e: alloy::sol_types::Error| {
            ChainError::Unavailable(format!("the escrow's {what} answer is unreadable: {e}"))
        };
        match self.protocol {
            SessionProtocol::V1 => {
                let input = V1::getChannelCall {
                    channelId: channel_id,
                }
                .abi_encode();
                let output = chain.call(self.address, input.into()).await?;
                let c = V1::getChannelCall::abi_decode_returns(&output)
                    .map_err(|e| shape("getChannel", e))?;
                Ok(OnChainState {
                    deposit: c.deposit,
                    settled: c.settled,
                    close_requested_at: c.closeRequestedAt,
                    finalized: c.finalized,
                })
            }
            SessionProtocol::V2 => {
                let input = V2::getChannelStateCall {
                    channelId: channel_id,
                }
                .abi_encode();
                let output = chain.call(self.address, input.into()).await?;
                let s = V2::getChannelStateCall::abi_decode_returns(&output)
                    .map_err(|e| shape("getChannelState", e))?;
                Ok(OnChainState {
                    deposit: s.deposit.to::<u128>(),
                    settled: s.settled.to::<u128>(),
                    close_requested_at: u64::from(s.closeRequestedAt),
                    finalized: false,
                })
            }
        }
    }

    /// This escrow's logs in `receipt` whose first indexed argument is `channel_id`.
    fn channel_logs<'r>(
        &self,
        receipt: &'r TempoTransactionReceipt,
        topic0: B256,
        channel_id: B256,
    ) -> impl Iterator<Item = &'r Log> {
        let address = self.address;
        receipt.inner.logs().iter().filter(move |log| {
            let topics = log.topics();
            log.address() == address
                && topics.first() == Some(&topic0)
                && topics.get(1) == Some(&channel_id)
        })
    }

    /// The one `ChannelOpened` event for `channel_id` in `receipt`; `Err` (the reason) when
    /// there is none, more than one, or it does not decode.
    pub(crate) fn opened(
        &self,
        receipt: &TempoTransactionReceipt,
        channel_id: B256,
    ) -> Result<Opened, String> {
        let topic = match self.protocol {
            SessionProtocol::V1 => V1::ChannelOpened::SIGNATURE_HASH,
            SessionProtocol::V2 => V2::ChannelOpened::SIGNATURE_HASH,
        };
        let mut logs = self.channel_logs(receipt, topic, channel_id);
        let (Some(log), None) = (logs.next(), logs.next()) else {
            return Err("the open transaction did not emit exactly one ChannelOpened event for this channel".into());
        };
        let bad = |e: alloy::sol_types::Error| format!("undecodable ChannelOpened event: {e}");
        match self.protocol {
            SessionProtocol::V1 => {
                let e = V1::ChannelOpened::decode_log_data(log.data()).map_err(bad)?;
                Ok(Opened {
                    payer: e.payer,
                    payee: e.payee,
                    token: e.token,
                    authorized_signer: e.authorizedSigner,
                    salt: e.salt,
                    operator: Address::ZERO,
                    expiring_nonce_hash: B256::ZERO,
                    deposit: u128::try_from(e.deposit)
                        .map_err(|_| "ChannelOpened deposit above u128".to_owned())?,
                })
            }
            SessionProtocol::V2 => {
                let e = V2::ChannelOpened::decode_log_data(log.data()).map_err(bad)?;
                Ok(Opened {
                    payer: e.payer,
                    payee: e.payee,
                    token: e.token,
                    authorized_signer: e.authorizedSigner,
                    salt: e.salt,
                    operator: e.operator,
                    expiring_nonce_hash: e.expiringNonceHash,
                    deposit: e.deposit.to::<u128>(),
                })
            }
        }
    }

    /// The new deposit of the `TopUp` event for `channel_id` in `receipt` (the last one).
    pub(crate) fn topped_up(
        &self,
        receipt: &TempoTransactionReceipt,
        channel_id: B256,
    ) -> Option<u128> {
        match self.protocol {
            SessionProtocol::V1 => self
                .channel_logs(receipt, V1::TopUp::SIGNATURE_HASH, channel_id)
                .filter_map(|l| V1::TopUp::decode_log_data(l.data()).ok())
                .filter_map(|e| u128::try_from(e.newDeposit).ok())
                .last(),
            SessionProtocol::V2 => self
                .channel_logs(receipt, V2::TopUp::SIGNATURE_HASH, channel_id)
                .filter_map(|l| V2::TopUp::decode_log_data(l.data()).ok())
                .map(|e| e.newDeposit.to::<u128>())
                .last(),
        }
    }

    /// The new settled amount of the `Settled` event for `channel_id` in `receipt`.
    pub(crate) fn settled(
        &self,
        receipt: &TempoTransactionReceipt,
        channel_id: B256,
    ) -> Option<u128> {
        match self.protocol {
            SessionProtocol::V1 => self
                .channel_logs(receipt, V1::Settled::SIGNATURE_HASH, channel_id)
                .filter_map(|l| V1::Settled::decode_log_data(l.data()).ok())
                .filter_map(|e| u128::try_from(e.newSettled).ok())
                .last(),
            SessionProtocol::V2 => self
                .channel_logs(receipt, V2::Settled::SIGNATURE_HASH, channel_id)
                .filter_map(|l| V2::Settled::decode_log_data(l.data()).ok())
                .map(|e| e.newSettled.to::<u128>())
                .last(),
        }
    }

    /// `(settledToPayee, refundedToPayer)` of the `ChannelClosed` event for `channel_id`:
    /// `settledToPayee` is the channel's final settled total, not what the close paid.
    pub(crate) fn closed(
        &self,
        receipt: &TempoTransactionReceipt,
        channel_id: B256,
    ) -> Option<(u128, u128)> {
        match self.protocol {
            SessionProtocol::V1 => self
                .channel_logs(receipt, V1::ChannelClosed::SIGNATURE_HASH, channel_id)
                .filter_map(|l| V1::ChannelClosed::decode_log_data(l.data()).ok())
                .filter_map(|e| {
                    Some((
                        u128::try_from(e.settledToPayee).ok()?,
                        u128::try_from(e.refundedToPayer).ok()?,
                    ))
                })
                .last(),
            SessionProtocol::V2 => self
                .channel_logs(receipt, V2::ChannelClosed::SIGNATURE_HASH, channel_id)
                .filter_map(|l| V2::ChannelClosed::decode_log_data(l.data()).ok())
                .map(|e| {
                    (
                        e.settledToPayee.to::<u128>(),
                        e.refundedToPayer.to::<u128>(),
                    )
                })
                .last(),
        }
    }

    /// The topic of the `CloseRequested` event (the settler's watcher asks for these logs).
    pub(crate) fn close_requested_topic(&self) -> B256 {
        match self.protocol {
            SessionProtocol::V1 => V1::CloseRequested::SIGNATURE_HASH,
            SessionProtocol::V2 => V2::CloseRequested::SIGNATURE_HASH,
        }
    }

    /// The channel id a `CloseRequested` log is about.
    pub(crate) fn log_channel(log: &Log) -> Option<B256> {
        log.topics().get(1).copied()
    }

    /// `settle(channel, cumulativeAmount, signature)`: pays the payee
    /// `cumulativeAmount − settled` (both versions).
    pub(crate) fn settle_call(
        &self,
        channel: &ChannelIdentity,
        cumulative_amount: u128,
        signature: &Bytes,
    ) -> Result<Call, ChainError> {
        let input = match self.protocol {
            SessionProtocol::V1 => V1::settleCall {
                channelId: channel.channel_id,
                cumulativeAmount: cumulative_amount,
                signature: signature.clone(),
            }
            .abi_encode(),
            SessionProtocol::V2 => V2::settleCall {
                descriptor: channel.descriptor().to_abi(),
                cumulativeAmount: u96(cumulative_amount)?,
                signature: signature.clone(),
            }
            .abi_encode(),
        };
        Ok(call(self.address, input))
    }

    /// `close`: v2 `close(descriptor, cumulativeAmount, captureAmount, signature)` pays the
    /// payee `captureAmount − settled` and refunds the rest; v1 `close(channelId,
    /// cumulativeAmount, signature)` has no capture and pays `cumulativeAmount − settled`
    /// (`capture` is ignored: the caller passes a voucher for exactly what it may take).
    pub(crate) fn close_call(
        &self,
        channel: &ChannelIdentity,
        cumulative_amount: u128,
        capture: u128,
        signature: &Bytes,
    ) -> Result<Call, ChainError> {
        let input = match self.protocol {
            SessionProtocol::V1 => V1::closeCall {
                channelId: channel.channel_id,
                cumulativeAmount: cumulative_amount,
                signature: signature.clone(),
            }
            .abi_encode(),
            SessionProtocol::V2 => V2::closeCall {
                descriptor: channel.descriptor().to_abi(),
                cumulativeAmount: u96(cumulative_amount)?,
                captureAmount: u96(capture)?,
                signature: signature.clone(),
            }
            .abi_encode(),
        };
        Ok(call(self.address, input))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v2_amounts_above_uint96_are_refused() {
        assert!(u96(super::super::MAX_V2_AMOUNT).is_ok());
        assert!(u96(super::super::MAX_V2_AMOUNT + 1).is_err());
    }
}
