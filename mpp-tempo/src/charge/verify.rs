//! Verifying and settling one charge credential (charge.md §6): pull (§6a), push (§6b) and
//! zero-amount proofs (§6c), with replay keys claimed before anything is broadcast.
//!
//! Every check is taken once, in this order: the request is validated (its expected
//! transfers computed), the payload parsed, the request's chain compared with the node's,
//! then the payload type's own checks. Time comes from the [`ChargeContext`] (the server's
//! one clock), never from the system clock.
//!
//! Outcomes are not logged here: the payment gate logs each one once. Only what no outcome
//! reports is logged (a claim that could not be released, a broadcast whose answer was lost).

use std::time::{Duration, Instant};

use alloy::eips::eip2718::Encodable2718;
use alloy::network::ReceiptResponse;
use alloy::primitives::{Address, B256, keccak256};
use mpp_core::did::PkhDid;
use serde_json::Value;
use tempo_alloy::rpc::TempoTransactionReceipt;
use tempo_primitives::transaction::AASigned;
use time::OffsetDateTime;

use super::logs::transfers_from_logs;
use super::proof::{proof_digest, recover_proof_signer};
use super::pull::{PullTransaction, check_pull_calls, decode_pull};
use super::transfers::match_transfers;
use super::{
    ChargeError, ChargeMode, ChargePayload, ExpectedTransfer, Sponsor, TempoChargeRequest,
};
use crate::chain::{ChainClient, ChainError};
use crate::challenge::ChallengeView;
use crate::store::{Claim, ReplayStore};

/// How long replay keys are kept. Tx hashes and proof ids are single-use forever; the
/// store needs some expiry, so take one far beyond any challenge lifetime.
const REPLAY_RETENTION: time::Duration = time::Duration::days(3650);

/// After a broadcast whose answer was lost, how long to look for its receipt.
const RECEIPT_RECHECK: Duration = Duration::from_secs(3);

/// How often to ask for that receipt.
const RECEIPT_POLL: Duration = Duration::from_millis(250);

/// What one charge is verified against: its terms, the challenge it answers, and the time.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct ChargeContext<'a> {
    /// The terms being paid (the route's; the gate pins the echo to the offer).
    pub request: &'a TempoChargeRequest,
    /// The challenge the credential answers.
    pub challenge: ChallengeView<'a>,
    /// The current time, from the server's clock.
    pub now: OffsetDateTime,
}

impl<'a> ChargeContext<'a> {
    /// A context for paying `request` in answer to `challenge`, at `now`.
    pub fn new(
        request: &'a TempoChargeRequest,
        challenge: ChallengeView<'a>,
        now: OffsetDateTime,
    ) -> Self {
        Self {
            request,
            challenge,
            now,
        }
    }
}

/// A verified, settled Tempo charge: the method's record of it (the HTTP receipt is built
/// from it).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SettledCharge {
    /// The receipt reference: the lowercase `0x` tx hash, or the challenge id for proofs.
    pub reference: String,
    /// The payer's address (transaction sender, or the proof's `source` account).
    pub payer: Address,
    /// The chain the payment happened on.
    pub chain_id: u64,
    /// Base units paid (0 for proofs).
    pub amount: u128,
    /// Which payload type paid.
    pub kind: ChargeKind,
    /// The merchant reference of the request, to echo in the receipt.
    pub external_id: Option<String>,
}

impl SettledCharge {
    /// The payer as a `did:pkh:eip155` identifier (checksummed address).
    pub fn payer_did(&self) -> PkhDid {
        PkhDid {
            chain_id: self.chain_id,
            address: self.payer.to_checksum(None),
        }
    }
}

/// The payload type of a settled charge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ChargeKind {
    /// Server-broadcast signed transaction (pull).
    Transaction,
    /// Server-broadcast sponsored transaction (pull, server paid gas).
    SponsoredTransaction,
    /// Payer-broadcast transaction hash (push).
    Hash,
    /// Zero-amount proof.
    Proof,
}

/// What charge verification uses of the configured method: the node (and the chain id it
/// reported when the method was built), the replay store, the optional fee sponsor, and the
/// broadcast timeout.
pub(crate) struct ChargeVerifier<'a> {
    pub(crate) chain: &'a ChainClient,
    pub(crate) chain_id: u64,
    pub(crate) store: &'a dyn ReplayStore,
    pub(crate) sponsor: Option<&'a Sponsor>,
    pub(crate) broadcast_timeout: Duration,
}

impl ChargeVerifier<'_> {
    /// Verifies and settles a credential `payload` (with optional `source` DID) for `ctx`.
    pub(crate) async fn verify(
        &self,
        ctx: ChargeContext<'_>,
        source: Option<&str>,
        payload: &Value,
    ) -> Result<SettledCharge, ChargeError> {
        // The one validation of the request: everything below reuses `expected`.
        let expected = ctx
            .request
            .expected_transfers()
            .map_err(|e| ChargeError::InvalidRequest(e.to_string()))?;
        let payload = ChargePayload::from_json(payload)?;
        let requested = ctx.request.method_details.chain_id;
        if requested != self.chain_id {
            return Err(ChargeError::ChainMismatch {
                requested,
                node: self.chain_id,
            });
        }
        match (&payload, ctx.request.amount) {
            (ChargePayload::Proof { .. }, 0) => {}
            (_, 0) => return Err(ChargeError::failed("a zero-amount charge needs a proof")),
            (ChargePayload::Proof { .. }, _) => {
                return Err(ChargeError::failed("a proof cannot pay a non-zero amount"));
            }
            _ => {}
        }
        let charge = Charge {
            verifier: self,
            request: ctx.request,
            expected,
            challenge: ctx.challenge,
            now: ctx.now,
        };
        tracing::debug!(
            challenge_id = ctx.challenge.id,
            kind = payload.kind(),
            "verifying a tempo charge"
        );
        let mut settled = match payload {
            ChargePayload::Transaction { raw } => charge.pull(&raw).await?,
            ChargePayload::Hash { hash } => charge.push(hash, source).await?,
            ChargePayload::Proof { signature } => charge.proof(&signature, source).await?,
        };
        settled.external_id = ctx.request.external_id.clone();
        Ok(settled)
    }
}

/// One charge under verification, its request already validated.
struct Charge<'a> {
    verifier: &'a ChargeVerifier<'a>,
    request: &'a TempoChargeRequest,
    expected: Vec<ExpectedTransfer>,
    challenge: ChallengeView<'a>,
    now: OffsetDateTime,
}

impl Charge<'_> {
    /// charge.md §6a.
    async fn pull(&self, raw: &[u8]) -> Result<SettledCharge, ChargeError> {
        if !self.request.allows(ChargeMode::Pull) {
            return Err(ChargeError::failed(
                "pull (transaction) credentials are not offered",
            ));
        }
        let decoded = decode_pull(raw)?;
        let fields = decoded.fields();
        let chain_id = self.request.method_details.chain_id;
        // Checked here for signed and sponsored transactions alike; the sponsor policy relies
        // on both.
        if fields.chain_id != chain_id {
            return Err(ChargeError::failed(format!(
                "the transaction is for chain {}, not {chain_id}",
                fields.chain_id
            )));
        }
        if let Some(valid_before) = fields.valid_before
            && i64::try_from(valid_before.get()).unwrap_or(i64::MAX) <= self.now.unix_timestamp()
        {
            return Err(ChargeError::failed(
                "the transaction has expired (validBefore passed)",
            ));
        }
        // The calls must pay the request before anything is broadcast (§6a.3); the receipt
        // logs are matched again after (§6a.8). Both on purpose: the calls tell us what the
        // payer signed, the logs what the chain did.
        check_pull_calls(&decoded, self.request, &self.expected, self.challenge)?;

        let sender = decoded.sender;
        let (final_tx, kind): (AASigned, ChargeKind) = match decoded.tx {
            PullTransaction::Signed(signed) => (signed, ChargeKind::Transaction),
            PullTransaction::Sponsored(envelope) => {
                if !self.request.method_details.fee_payer {
                    return Err(ChargeError::failed(
                        "a fee payer envelope was sent but the request does not offer sponsorship",
                    ));
                }
                let Some(sponsor) = self.verifier.sponsor else {
                    return Err(ChargeError::failed("this server does not sponsor fees"));
                };
                let fee_token = sponsor.check(&envelope, self.now, self.challenge.expires)?;
                (
                    sponsor.co_sign(&envelope, fee_token)?,
                    ChargeKind::SponsoredTransaction,
                )
            }
        };
        let final_raw = final_tx.encoded_2718();
        let final_hash = *final_tx.hash();
        let credential_key = format!("tempo:charge:credential:{}", keccak256(raw));
        let hash_key = tx_hash_key(&final_hash);

        // Claim before anything is sent: of concurrent identical credentials, one proceeds.
        self.claim(
            &credential_key,
            "this transaction credential has already been used",
        )
        .await?;
        if let Err(e) = self
            .claim(&hash_key, "this transaction has already been used")
            .await
        {
            self.release(&[&credential_key]).await;
            return Err(e);
        }
        let claims = [credential_key.as_str(), hash_key.as_str()];

        if let Err(e) = self.verifier.chain.simulate(sender, final_tx.tx()).await {
            self.release(&claims).await;
            return Err(match e {
                ChainError::Refused(reason) => {
                    ChargeError::failed(format!("the transaction would fail: {reason}"))
                }
                other => other.into(),
            });
        }

        // From here on the transaction may be on chain: the claims stay.
        let receipt = match self
            .verifier
            .chain
            .send_raw_sync(&final_raw, self.verifier.broadcast_timeout)
            .await
        {
            Ok(receipt) => receipt,
            Err(ChainError::Refused(reason)) => {
                return Err(ChargeError::failed(format!(
                    "the node refused the transaction: {reason}"
                )));
            }
            Err(e) => {
                tracing::warn!(tx = %final_hash, reason = %e, "broadcast outcome unknown; looking for a receipt");
                self.recheck_receipt(final_hash).await.ok_or(e)?
            }
        };
        self.check_receipt(&receipt, final_hash, sender)?;
        Ok(SettledCharge {
            reference: hash_key,
            payer: sender,
            chain_id,
            amount: self.request.amount,
            kind,
            external_id: None,
        })
    }

    /// After a lost broadcast answer: the receipt, if the node shows one within a few seconds.
    async fn recheck_receipt(&self, hash: B256) -> Option<TempoTransactionReceipt> {
        let deadline = Instant::now() + RECEIPT_RECHECK;
        while Instant::now() < deadline {
            match self.verifier.chain.receipt(hash).await {
                Ok(Some(receipt)) => return Some(receipt),
                Ok(None) => tracing::debug!(tx = %hash, "no receipt yet"),
                Err(e) => tracing::debug!(tx = %hash, reason = %e, "receipt lookup failed"),
            }
            tokio::time::sleep(RECEIPT_POLL).await;
        }
        None
    }

    /// The mined transaction succeeded and its logs pay the request (charge.md §6a.8, §6b).
    fn check_receipt(
        &self,
        receipt: &TempoTransactionReceipt,
        hash: B256,
        sender: Address,
    ) -> Result<(), ChargeError> {
        if receipt.transaction_hash != hash {
            return Err(ChargeError::failed(
                "the receipt is for another transaction",
            ));
        }
        if !receipt.status() {
            return Err(ChargeError::failed("the transaction reverted"));
        }
        let logs = receipt.inner.logs().iter().map(|l| &l.inner);
        let transfers: Vec<_> = transfers_from_logs(logs)
            .into_iter()
            .filter(|t| t.from == Some(sender))
            .collect();
        match_transfers(
            &self.expected,
            &transfers,
            self.request.currency,
            self.request.method_details.memo.is_some(),
            self.challenge,
        )
        .map_err(|e| ChargeError::failed(format!("receipt logs: {e}")))?;
        Ok(())
    }

    /// charge.md §6b.
    async fn push(&self, hash: B256, source: Option<&str>) -> Result<SettledCharge, ChargeError> {
        if !self.request.allows(ChargeMode::Push) {
            return Err(ChargeError::failed(
                "push (hash) credentials are not offered",
            ));
        }
        let chain_id = self.request.method_details.chain_id;
        let declared = match source {
            None => None,
            Some(source) => Some(
                source_address(source, chain_id)
                    .ok_or_else(|| ChargeError::failed("Hash credential source is invalid"))?,
            ),
        };
        let receipt = self
            .verifier
            .chain
            .receipt(hash)
            .await?
            .ok_or_else(|| ChargeError::failed("the transaction was not found"))?;
        let sender = declared.unwrap_or(receipt.from);
        self.check_receipt(&receipt, hash, sender)?;
        let key = tx_hash_key(&hash);
        self.claim(&key, "Transaction hash has already been used")
            .await?;
        Ok(SettledCharge {
            reference: key,
            payer: sender,
            chain_id,
            amount: self.request.amount,
            kind: ChargeKind::Hash,
            external_id: None,
        })
    }

    /// charge.md §6c.
    async fn proof(
        &self,
        signature: &[u8],
        source: Option<&str>,
    ) -> Result<SettledCharge, ChargeError> {
        let chain_id = self.request.method_details.chain_id;
        let source = source.ok_or_else(|| ChargeError::failed("a proof needs a source DID"))?;
        let account = source_address(source, chain_id).ok_or_else(|| {
            ChargeError::failed("the proof source is not a did:pkh on this chain")
        })?;
        let digest = proof_digest(chain_id, account, self.challenge.id, self.challenge.realm);
        let signer = recover_proof_signer(&digest, signature)
            .ok_or_else(|| ChargeError::failed("the proof signature does not recover"))?;
        if signer != account {
            return Err(ChargeError::failed(format!(
                "the proof was signed by {signer}, not by the source account {account}"
            )));
        }
        let key = format!("tempo:charge:proof:{}", self.challenge.id);
        self.claim(&key, "this proof has already been used").await?;
        Ok(SettledCharge {
            reference: self.challenge.id.to_owned(),
            payer: account,
            chain_id,
            amount: 0,
            kind: ChargeKind::Proof,
            external_id: None,
        })
    }

    async fn claim(&self, key: &str, used: &str) -> Result<(), ChargeError> {
        let expires_at = self.now + REPLAY_RETENTION;
        match self.verifier.store.claim(key, expires_at).await? {
            Claim::Claimed => Ok(()),
            Claim::AlreadyClaimed => Err(ChargeError::Replayed(used.to_owned())),
        }
    }

    /// Frees claims of a payment that was never broadcast. A failure here only costs the
    /// payer a retry with a fresh credential, and no outcome reports it, so it is logged
    /// here, not returned.
    async fn release(&self, keys: &[&str]) {
        for key in keys {
            if let Err(e) = self.verifier.store.release(key).await {
                tracing::warn!(key, reason = %e, "could not release a replay claim");
            }
        }
    }
}

/// The replay key of a transaction hash: lowercase `0x` hex, shared by pull and push so a
/// pulled transaction cannot be presented again as a push.
fn tx_hash_key(hash: &B256) -> String {
    format!("{hash:#x}")
}

/// The account of a `did:pkh:eip155:<chainId>:<address>` on `chain_id`.
fn source_address(source: &str, chain_id: u64) -> Option<Address> {
    let did: PkhDid = source.parse().ok()?;
    (did.chain_id == chain_id).then(|| Address::from(did.address_bytes()))
}
