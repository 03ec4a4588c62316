//! The payer side of a Tempo charge: [`TempoPayer`] answers a challenge with a credential.
//! Independent of HTTP: the input is a decoded [`Challenge`] and a signer.
//!
//! As an [`mpp_core::Payer`], it pays the way SDK clients do by default:
//!
//! ```no_run
//! use mpp_core::{Challenge, Payer};
//! use mpp_tempo::client::TempoPayer;
//!
//! # async fn demo(www_authenticate: &str) -> Result<(), Box<dyn std::error::Error>> {
//! let signer = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d".parse()?;
//! let payer = TempoPayer::new(signer, "http://127.0.0.1:8545")?;
//! let offered = Challenge::parse_all(www_authenticate)?;
//! if let Some(challenge) = payer.choose(&offered) {
//!     let credential = payer.pay(challenge).await?;
//!     println!("Authorization: {}", credential.to_authorization());
//! }
//! # Ok(()) }
//! ```
//!
//! The modes, also callable one by one (with [`TxOptions`] to build deliberately wrong
//! payments in tests):
//!
//! - **pull** ([`TempoPayer::pull`]): a signed `0x76` transaction with an expiring nonce
//!   (`nonceKey = U256::MAX`, `validBefore = min(now + 25 s, expires)`) and one
//!   `transferWithMemo` per expected transfer, the primary one carrying the attribution memo.
//!   When the request says `feePayer: true`, the `0x78` fee-payer envelope instead.
//! - **push** ([`TempoPayer::push`]): the same transaction, sent by the payer; the payload is
//!   its hash.
//! - **proof** ([`TempoPayer::proof`]): the EIP-712 proof for zero-amount charges.

use std::num::NonZeroU64;
use std::time::Duration;

use alloy::eips::eip2718::Encodable2718;
use alloy::network::ReceiptResponse;
use alloy::primitives::{Address, B256, Bytes, TxKind, U256};
use alloy::providers::Provider;
use alloy::signers::SignerSync;
use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::SolCall;
use mpp_core::did::PkhDid;
use mpp_core::payer::{PayError, Payer};
use mpp_core::{BoxFuture, Challenge, Credential};
use serde_json::{Value, json};
use tempo_alloy::contracts::precompiles::ITIP20;
use tempo_alloy::rpc::TempoTransactionRequest;
use tempo_primitives::transaction::{
    Call, FEE_PAYER_SIGNATURE_MARKER, PrimitiveSignature, TEMPO_EXPIRING_NONCE_KEY, TempoSignature,
    TempoTransaction,
};
use time::OffsetDateTime;

use crate::chain::{ChainClient, ChainError, DEFAULT_RPC_TIMEOUT, error_chain};
use crate::challenge::ChallengeView;
use crate::charge::settle::{Outcome, wait_for_outcome};
use crate::charge::{
    ChargeMode, FeePayerEnvelope, TempoChargeRequest, attribution_memo, proof_digest,
};
use crate::{CHARGE_INTENT, METHOD_NAME};

/// How long a signed pull transaction stays valid (the SDKs' 25 s).
pub const PULL_VALIDITY: Duration = Duration::from_secs(25);

/// What the payer sends: `payload` and `source` of the credential.
#[derive(Debug, Clone, PartialEq)]
pub struct PaymentCredential {
    /// The credential `payload`.
    pub payload: Value,
    /// The credential `source`: `did:pkh:eip155:<chainId>:<address>`.
    pub source: String,
    /// The hash of the transaction, when there is one (push: already mined; pull: the
    /// hash the server's broadcast will have unless it co-signs).
    pub tx_hash: Option<B256>,
}

impl PaymentCredential {
    /// The full credential answering `challenge` (echoed as is).
    pub fn into_credential(self, challenge: &Challenge) -> Credential {
        Credential::new(challenge.clone(), self.payload).with_source(self.source)
    }
}

/// Why a payment could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The challenge is not a Tempo charge this client can answer (method, intent, expiry).
    #[error("bad challenge: {0}")]
    Challenge(String),
    /// The challenge's request is not a valid Tempo charge request.
    #[error("bad charge request: {0}")]
    Request(String),
    /// The request does not allow this mode.
    #[error("not offered: {0}")]
    NotOffered(&'static str),
    /// The node failed or refused.
    #[error("tempo node: {0}")]
    Node(String),
    /// The payer cannot afford the payment or its fee (the message names the payer, the
    /// token and the amounts).
    #[error("insufficient funds: {0}")]
    InsufficientFunds(String),
    /// Signing failed.
    #[error("signing failed: {0}")]
    Signing(String),
    /// The payment transaction was sent and the node stopped answering before its outcome
    /// was known: it may still be mined until its `validBefore`. Do not pay again before
    /// then; look the hash up.
    #[error("payment transaction {0} sent, outcome unknown: do not pay again before it expires")]
    Uncertain(B256),
}

/// Overrides for building a pull/push transaction. The defaults are what SDK clients do;
/// the overrides exist to build deliberately wrong payments in tests.
#[derive(Debug, Clone, Default)]
pub struct TxOptions {
    /// `validBefore` as unix seconds (default `min(now + 25 s, expires)`).
    pub valid_before: Option<u64>,
    /// The primary transfer's memo (default: the request memo, else the attribution memo).
    /// `Some(None)` sends a plain `transfer`.
    pub primary_memo: Option<Option<B256>>,
    /// The chain id written into the transaction (default: the request's).
    pub chain_id: Option<u64>,
    /// The gas limit (default: estimate + margin).
    pub gas_limit: Option<u64>,
    /// A fee token (default: none, the node picks the sender's preference).
    pub fee_token: Option<Address>,
}

/// A payer: a signing key and a node to ask for gas prices (and, for push, to send through).
#[derive(Debug, Clone)]
pub struct TempoPayer {
    signer: PrivateKeySigner,
    chain: ChainClient,
}

impl TempoPayer {
    /// A payer signing with `signer`, talking to `rpc_url` (`http://` or `https://`; an
    /// https node must chain to a system root, or see [`TempoPayer::with_chain`]).
    pub fn new(signer: PrivateKeySigner, rpc_url: &str) -> Result<Self, ClientError> {
        let chain = ChainClient::new(rpc_url, DEFAULT_RPC_TIMEOUT)
            .map_err(|e| ClientError::Node(e.to_string()))?;
        Ok(Self { signer, chain })
    }

    /// A payer signing with `signer`, talking through `chain` (e.g. one made with
    /// [`ChainClient::with_root_certificates`] for a node behind a private CA).
    pub fn with_chain(signer: PrivateKeySigner, chain: ChainClient) -> Self {
        Self { signer, chain }
    }

    /// The payer's address.
    pub fn address(&self) -> Address {
        self.signer.address()
    }

    /// Pays the way SDK clients do by default: a proof for zero amounts, else pull (the
    /// `0x78` envelope when the server sponsors), else push if pull is not offered. What
    /// [`Payer::pay`] sends, with the typed error and the transaction hash.
    pub async fn pay_charge(
        &self,
        challenge: &Challenge,
    ) -> Result<PaymentCredential, ClientError> {
        let (_, req) = parse(challenge)?;
        if req.amount == 0 {
            return self.proof(challenge);
        }
        if req.allows(ChargeMode::Pull) {
            self.pull(challenge, &TxOptions::default()).await
        } else {
            self.push(challenge, &TxOptions::default()).await
        }
    }

    /// A pull credential: the signed transaction (`0x78` envelope when `feePayer` is set).
    pub async fn pull(
        &self,
        challenge: &Challenge,
        options: &TxOptions,
    ) -> Result<PaymentCredential, ClientError> {
        let (view, req) = parse(challenge)?;
        if !req.allows(ChargeMode::Pull) {
            return Err(ClientError::NotOffered("pull"));
        }
        let sponsored = req.method_details.fee_payer;
        let (tx, signature) = self.signed_tx(view, &req, options, sponsored).await?;
        let (raw, tx_hash) = if sponsored {
            let envelope = FeePayerEnvelope::new(tx, self.address(), signature);
            (envelope.encode(), None)
        } else {
            let signed = tx.into_signed(signature);
            (signed.encoded_2718(), Some(*signed.hash()))
        };
        Ok(PaymentCredential {
            payload: json!({"type": "transaction", "signature": Bytes::from(raw).to_string()}),
            source: self.did(req.method_details.chain_id),
            tx_hash,
        })
    }

    /// A push credential: sends the transaction (`eth_sendRawTransactionSync`), then
    /// presents its hash. Fails if it reverted.
    pub async fn push(
        &self,
        challenge: &Challenge,
        options: &TxOptions,
    ) -> Result<PaymentCredential, ClientError> {
        let (view, req) = parse(challenge)?;
        if !req.allows(ChargeMode::Push) {
            return Err(ClientError::NotOffered("push"));
        }
        let (hash, succeeded) = self.send_tx(view, &req, options).await?;
        if !succeeded {
            return Err(ClientError::Node("the payment transaction reverted".into()));
        }
        Ok(PaymentCredential {
            payload: json!({"type": "hash", "hash": hash.to_string()}),
            source: self.did(req.method_details.chain_id),
            tx_hash: Some(hash),
        })
    }

    /// Signs and sends the payment transaction itself (`eth_sendRawTransactionSync`), without
    /// checking the outcome: returns the hash and whether it succeeded. [`Self::push`] is
    /// this plus the status check.
    pub async fn send_payment(
        &self,
        challenge: &Challenge,
        options: &TxOptions,
    ) -> Result<(B256, bool), ClientError> {
        let (view, req) = parse(challenge)?;
        self.send_tx(view, &req, options).await
    }

    async fn send_tx(
        &self,
        challenge: ChallengeView<'_>,
        req: &TempoChargeRequest,
        options: &TxOptions,
    ) -> Result<(B256, bool), ClientError> {
        let (tx, signature) = self.signed_tx(challenge, req, options, false).await?;
        let valid_before = tx.valid_before.map_or(0, |v| v.get());
        let signed = tx.into_signed(signature);
        let hash = *signed.hash();
        let sent = self
            .chain
            .send_raw_sync(&signed.encoded_2718(), Duration::from_secs(15))
            .await;
        let receipt = match sent {
            Ok(receipt) => receipt,
            Err(ChainError::Refused(reason)) => return Err(ClientError::Node(reason)),
            // Sent, outcome unknown (a lost answer, a timeout): paying again could pay twice,
            // so the transaction is looked up until it is mined or can no longer be.
            Err(e) => {
                tracing::warn!(tx = %hash, reason = %e, "payment sent, outcome unknown; looking it up");
                match wait_for_outcome(&self.chain, hash, valid_before).await {
                    Outcome::Mined(receipt) => *receipt,
                    Outcome::Refused(reason) => return Err(ClientError::Node(reason)),
                    Outcome::Expired => {
                        return Err(ClientError::Node(format!(
                            "the payment transaction {hash} was not mined before its \
                             validBefore; nothing was paid"
                        )));
                    }
                    Outcome::Unknown(_) => return Err(ClientError::Uncertain(hash)),
                }
            }
        };
        Ok((receipt.transaction_hash(), receipt.status()))
    }

    /// A zero-amount proof credential.
    pub fn proof(&self, challenge: &Challenge) -> Result<PaymentCredential, ClientError> {
        let (view, req) = parse(challenge)?;
        let chain_id = req.method_details.chain_id;
        let digest = proof_digest(chain_id, self.address(), view.id, view.realm);
        let signature = self
            .signer
            .sign_hash_sync(&digest)
            .map_err(|e| ClientError::Signing(e.to_string()))?;
        Ok(PaymentCredential {
            payload: json!({"type": "proof", "signature": Bytes::from(signature.as_bytes()).to_string()}),
            source: self.did(chain_id),
            tx_hash: None,
        })
    }

    fn did(&self, chain_id: u64) -> String {
        PkhDid {
            chain_id,
            address: self.address().to_checksum(None),
        }
        .to_string()
    }

    /// The calls SDK clients make: one `transferWithMemo` (or `transfer` for memo-less splits)
    /// per expected transfer.
    fn calls(
        challenge: ChallengeView<'_>,
        req: &TempoChargeRequest,
        options: &TxOptions,
    ) -> Result<Vec<Call>, ClientError> {
        let expected = req
            .expected_transfers()
            .map_err(|e| ClientError::Request(e.to_string()))?;
        let attribution = attribution_memo(challenge.realm, challenge.id, None);
        Ok(expected
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let memo = if i == 0 {
                    options
                        .primary_memo
                        .unwrap_or(Some(t.memo.unwrap_or(attribution)))
                } else {
                    t.memo
                };
                let input = match memo {
                    Some(memo) => ITIP20::transferWithMemoCall {
                        to: t.recipient,
                        amount: U256::from(t.amount),
                        memo,
                    }
                    .abi_encode(),
                    None => ITIP20::transferCall {
                        to: t.recipient,
                        amount: U256::from(t.amount),
                    }
                    .abi_encode(),
                };
                Call {
                    to: TxKind::Call(req.currency),
                    value: U256::ZERO,
                    input: input.into(),
                }
            })
            .collect())
    }

    async fn signed_tx(
        &self,
        challenge: ChallengeView<'_>,
        req: &TempoChargeRequest,
        options: &TxOptions,
        sponsored: bool,
    ) -> Result<(TempoTransaction, TempoSignature), ClientError> {
        let calls = Self::calls(challenge, req, options)?;
        // The payer's own clock: the server checks validBefore against its clock.
        let now = OffsetDateTime::now_utc().unix_timestamp();
        let default_valid_before =
            (now + PULL_VALIDITY.as_secs() as i64).min(challenge.expires.unix_timestamp());
        let valid_before = options
            .valid_before
            .unwrap_or(u64::try_from(default_valid_before).unwrap_or(0));
        let max_fee_per_gas = self
            .chain
            .suggested_max_fee_per_gas()
            .await
            .map_err(|e| ClientError::Node(e.to_string()))?;
        let max_priority_fee_per_gas = 1_000_000_000u128.min(max_fee_per_gas);
        let mut tx = TempoTransaction {
            chain_id: options.chain_id.unwrap_or(req.method_details.chain_id),
            fee_token: if sponsored { None } else { options.fee_token },
            max_priority_fee_per_gas,
            max_fee_per_gas,
            gas_limit: 0,
            calls,
            nonce_key: TEMPO_EXPIRING_NONCE_KEY,
            nonce: 0,
            valid_before: NonZeroU64::new(valid_before),
            ..Default::default()
        };
        tx.gas_limit = match options.gas_limit {
            Some(limit) => limit,
            // Sponsored: the sender pays no fee, so the estimate must not ask it to (an
            // account holding only the price is a valid payer). The flag is what matters:
            // the payer does not know the fee payer's address.
            None if sponsored => {
                let gas = self
                    .chain
                    .estimate_gas(self.address(), &tx, Some(Address::ZERO))
                    .await
                    .map_err(|e| ClientError::Node(e.to_string()))?;
                gas.saturating_mul(5) / 4 + 50_000
            }
            None => {
                let mut estimate = TempoTransactionRequest::from(tx.clone());
                estimate.inner.from = Some(self.address());
                // `gas_limit: 0` above would cap the estimate itself at zero.
                estimate.inner.gas = None;
                let gas = match self.chain.provider().estimate_gas(estimate).await {
                    Ok(gas) => gas,
                    Err(e) => return Err(self.explain_estimate_failure(req, e).await),
                };
                // The estimate does not cover a fee-payer signature; leave headroom.
                gas.saturating_mul(5) / 4 + 50_000
            }
        };
        if sponsored {
            // The placeholder makes the sender's signing hash skip `fee_token`.
            tx.fee_payer_signature = Some(FEE_PAYER_SIGNATURE_MARKER);
        }
        let signature = self
            .signer
            .sign_hash_sync(&tx.signature_hash())
            .map_err(|e| ClientError::Signing(e.to_string()))?;
        Ok((
            tx,
            TempoSignature::Primitive(PrimitiveSignature::Secp256k1(signature)),
        ))
    }
}

impl TempoPayer {
    /// Turns a failed gas estimate into a message about the payer's funds when they are the
    /// cause: a node answers an unfunded sender with "gas required exceeds allowance: 0",
    /// which says nothing about the token.
    async fn explain_estimate_failure(
        &self,
        req: &TempoChargeRequest,
        e: alloy::transports::TransportError,
    ) -> ClientError {
        let original = error_chain(&e);
        let Ok(needed) = req
            .expected_transfers()
            .map(|t| t.iter().map(|t| t.amount).sum::<u128>())
        else {
            return ClientError::Node(original);
        };
        let token = ITIP20::new(req.currency, self.chain.provider());
        let balance = match tokio::time::timeout(
            self.chain.rpc_timeout(),
            token.balanceOf(self.address()).call(),
        )
        .await
        {
            Ok(Ok(balance)) => balance,
            // The balance is only a diagnosis: keep the node's own error.
            _ => return ClientError::Node(original),
        };
        let payer = self.address();
        let currency = req.currency;
        if balance < U256::from(needed) {
            ClientError::InsufficientFunds(format!(
                "the payer {payer} has {balance} base units of the token {currency}; this \
                 payment needs {needed} plus the transaction fee. Fund the payer (node said: \
                 {original})"
            ))
        } else if original.contains("exceeds allowance") || original.contains("insufficient") {
            ClientError::InsufficientFunds(format!(
                "the payer {payer} holds enough of {currency} ({balance} base units) but cannot \
                 pay the transaction fee: fund it with its fee token (node said: {original})"
            ))
        } else {
            ClientError::Node(original)
        }
    }
}

impl Payer for TempoPayer {
    fn supports(&self, challenge: &Challenge) -> bool {
        challenge.method == METHOD_NAME
            && challenge.intent == CHARGE_INTENT
            && TempoChargeRequest::from_map(challenge.request.value()).is_ok()
    }

    fn pay<'a>(&'a self, challenge: &'a Challenge) -> BoxFuture<'a, Result<Credential, PayError>> {
        Box::pin(async move {
            let paid = self.pay_charge(challenge).await.map_err(PayError::new)?;
            Ok(paid.into_credential(challenge))
        })
    }
}

/// The challenge view and the validated terms of a Tempo charge challenge.
fn parse(challenge: &Challenge) -> Result<(ChallengeView<'_>, TempoChargeRequest), ClientError> {
    if challenge.method != METHOD_NAME || challenge.intent != CHARGE_INTENT {
        return Err(ClientError::Challenge(format!(
            "a `{}`/`{}` challenge is not a tempo charge",
            challenge.method, challenge.intent
        )));
    }
    let view = ChallengeView::from_challenge(challenge)
        .map_err(|e| ClientError::Challenge(e.to_string()))?;
    let request = TempoChargeRequest::from_map(challenge.request.value())
        .map_err(|e| ClientError::Request(e.to_string()))?;
    Ok((view, request))
}
