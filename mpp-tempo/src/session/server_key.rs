//! The server's own transactions (`settle`, `close`), signed with the payee's key (v1) or the
//! operator's (v2), paid in a fee token by that key, and sent with an **expiring nonce**:
//! every transaction is its own replay protection with a 25-second deadline, so instances
//! sending at once never race for a nonce, and a transaction whose answer was lost has a
//! definite outcome once its `validBefore` has passed.

use std::num::NonZeroU64;
use std::time::Duration;

use alloy::network::ReceiptResponse;
use alloy::primitives::{Address, B256, U256};
use alloy::signers::SignerSync;
use alloy::signers::local::PrivateKeySigner;
use tempo_alloy::rpc::TempoTransactionReceipt;
use tempo_primitives::transaction::{
    Call, PrimitiveSignature, TEMPO_EXPIRING_NONCE_KEY, TempoSignature, TempoTransaction,
};
use time::OffsetDateTime;

use crate::chain::{ChainClient, ChainError};
use crate::charge::settle::{Outcome, wait_for_outcome};

/// How far ahead a server transaction's `validBefore` is set.
const VALIDITY: Duration = Duration::from_secs(25);

/// The key that settles and closes channels, with the token it pays fees in.
#[derive(Clone)]
pub struct ServerKey {
    signer: PrivateKeySigner,
    fee_token: Address,
}

impl std::fmt::Debug for ServerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerKey")
            .field("address", &self.signer.address())
            .field("fee_token", &self.fee_token)
            .finish_non_exhaustive()
    }
}

/// Why a server transaction did not go through.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ServerTxError {
    /// The node refused it, or it was mined and reverted (the node's reason).
    #[error("the transaction failed: {0}")]
    Failed(String),
    /// The node could not be asked (nothing was sent, or the outcome was learned to be "not
    /// mined").
    #[error(transparent)]
    Chain(#[from] ChainError),
    /// Sent, and the outcome is unknown: the node stopped answering before `validBefore`
    /// passed. It may still be mined until then.
    #[error("transaction {0} sent, outcome unknown")]
    Unknown(B256),
}

impl ServerKey {
    /// `signer` pays its own fees in `fee_token` (a TIP-20 token it holds).
    pub fn new(signer: PrivateKeySigner, fee_token: Address) -> Self {
        Self { signer, fee_token }
    }

    /// The key's address (the payee for v1, the operator for v2).
    pub fn address(&self) -> Address {
        self.signer.address()
    }

    /// The token it pays fees in.
    pub fn fee_token(&self) -> Address {
        self.fee_token
    }

    /// Signs `calls` into one transaction and sends it; waits for the outcome (at most
    /// `timeout` for the node's synchronous answer, then looks the transaction up until its
    /// `validBefore` has passed). `Ok` is the receipt of a successful transaction.
    pub(crate) async fn send(
        &self,
        chain: &ChainClient,
        calls: Vec<Call>,
        timeout: Duration,
    ) -> Result<TempoTransactionReceipt, ServerTxError> {
        let chain_id = chain.chain_id().await?;
        let max_fee_per_gas = chain.suggested_max_fee_per_gas().await?;
        let now = u64::try_from(OffsetDateTime::now_utc().unix_timestamp()).unwrap_or(0);
        let valid_before = now + VALIDITY.as_secs();
        let mut tx = TempoTransaction {
            chain_id,
            fee_token: Some(self.fee_token),
            max_priority_fee_per_gas: 1_000_000_000u128.min(max_fee_per_gas),
            max_fee_per_gas,
            gas_limit: 0,
            calls,
            nonce_key: TEMPO_EXPIRING_NONCE_KEY,
            nonce: 0,
            valid_before: NonZeroU64::new(valid_before),
            ..Default::default()
        };
        let estimate = chain
            .estimate_gas(self.address(), &tx, None)
            .await
            .map_err(|e| match e {
                ChainError::Refused(reason) => ServerTxError::Failed(reason),
                other => ServerTxError::Chain(other),
            })?;
        tx.gas_limit = estimate.saturating_mul(5) / 4 + 50_000;
        let signature = self
            .signer
            .sign_hash_sync(&tx.signature_hash())
            .map_err(|e| ServerTxError::Failed(format!("signing failed: {e}")))?;
        let signed = tx.into_signed(TempoSignature::Primitive(PrimitiveSignature::Secp256k1(
            signature,
        )));
        let hash = *signed.hash();
        let raw = alloy::eips::eip2718::Encodable2718::encoded_2718(&signed);
        let receipt = match chain.send_raw_sync(&raw, timeout).await {
            Ok(receipt) => receipt,
            Err(ChainError::Refused(reason)) => return Err(ServerTxError::Failed(reason)),
            Err(ChainError::Uncertain(why)) => {
                tracing::warn!(tx = %hash, reason = %why, "server transaction outcome unknown; looking it up");
                match wait_for_outcome(chain, hash, valid_before).await {
                    Outcome::Mined(receipt) => *receipt,
                    Outcome::Refused(reason) => return Err(ServerTxError::Failed(reason)),
                    Outcome::Expired => {
                        return Err(ServerTxError::Failed(format!(
                            "transaction {hash} expired unmined"
                        )));
                    }
                    Outcome::Unknown(_) => return Err(ServerTxError::Unknown(hash)),
                }
            }
            Err(other) => return Err(other.into()),
        };
        if !receipt.status() {
            return Err(ServerTxError::Failed(format!(
                "transaction {hash} reverted"
            )));
        }
        Ok(receipt)
    }

    /// The key's balance of its fee token.
    pub(crate) async fn fee_balance(&self, chain: &ChainClient) -> Result<U256, ChainError> {
        chain.token_balance(self.fee_token, self.address()).await
    }
}
