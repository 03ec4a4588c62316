//! Verifying one charge credential (charge.md §6): pull (§6a), push (§6b) and zero-amount
//! proofs (§6c). A verified charge is claimed in the store and held; the money is taken by
//! its [`TempoSettlement`] (`settle.rs`) once the service has answered with success.
//!
//! Every check is taken once, in this order: the request is validated (its expected
//! transfers computed), the payload parsed, the request's chain compared with the node's,
//! then the payload type's own checks. Time comes from the [`ChargeContext`] (the server's
//! one clock), never from the system clock.
//!
//! Outcomes are not logged here: the payment gate logs each one once. Only what no outcome
//! reports is logged (a claim that could not be released, a broadcast whose answer was lost).

use std::sync::Arc;
use std::time::Duration;

use alloy::eips::eip2718::Encodable2718;
use alloy::primitives::{Address, B256, keccak256};
use mpp_core::did::PkhDid;
use serde_json::Value;
use tempo_primitives::transaction::{AASigned, TEMPO_EXPIRING_NONCE_KEY};
use time::OffsetDateTime;

use super::error::WOULD_FAIL_DETAIL;
use super::proof::{proof_digest, recover_proof_signer};
use super::pull::{PullTransaction, check_pull_calls, decode_pull};
use super::settle::{
    Broadcast, CLAIM_MARGIN, Outcome, ReceiptTerms, TempoSettlement, release, unix_time,
    wait_for_outcome,
};
use super::sponsor::{SponsoredSend, check_gas};
use super::{ChargeError, ChargeMode, ChargePayload, Sponsor, TempoChargeRequest};
use crate::chain::{ChainClient, ChainError};
use crate::challenge::ChallengeView;
use crate::store::{Claim, ClaimRecord, ClaimState, NewClaim, ReplayStore};

/// The longest `validBefore − now` a pull transaction may have: every sent transaction has a
/// deadline, and its claim is kept only that long. The official clients send 25 s.
pub const MAX_PULL_VALIDITY: Duration = Duration::from_secs(900);

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
    /// The longest challenge lifetime the gate accepts (see
    /// [`mpp_core::VerifyContext::max_lifetime`]).
    pub max_lifetime: Duration,
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
            max_lifetime: mpp_core::expiry::DEFAULT_CHALLENGE_TTL
                + mpp_core::expiry::DEFAULT_CLOCK_SKEW,
        }
    }

    /// Sets [`ChargeContext::max_lifetime`].
    pub fn with_max_lifetime(mut self, max_lifetime: Duration) -> Self {
        self.max_lifetime = max_lifetime;
        self
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
    pub(crate) store: &'a Arc<dyn ReplayStore>,
    pub(crate) sponsor: Option<&'a Sponsor>,
    pub(crate) broadcast_timeout: Duration,
}

impl ChargeVerifier<'_> {
    /// Verifies a credential `payload` (with optional `source` DID) for `ctx` and holds it:
    /// the returned settlement takes the money.
    pub(crate) async fn verify(
        &self,
        ctx: ChargeContext<'_>,
        source: Option<&str>,
        payload: &Value,
    ) -> Result<(SettledCharge, TempoSettlement), ChargeError> {
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
            terms: ReceiptTerms {
                expected,
                currency: ctx.request.currency,
                server_memo: ctx.request.method_details.memo.is_some(),
                challenge_id: ctx.challenge.id.to_owned(),
                realm: ctx.challenge.realm.to_owned(),
                expires: ctx.challenge.expires,
            },
            challenge: ctx.challenge,
            now: ctx.now,
            max_lifetime: time::Duration::try_from(ctx.max_lifetime)
                .unwrap_or(time::Duration::days(1)),
        };
        tracing::debug!(
            challenge_id = ctx.challenge.id,
            kind = payload.kind(),
            "verifying a tempo charge"
        );
        let (mut settled, settlement) = match payload {
            ChargePayload::Transaction { raw } => charge.pull(&raw).await?,
            ChargePayload::Hash { hash } => charge.push(hash, source).await?,
            ChargePayload::Proof { signature } => charge.proof(&signature, source).await?,
        };
        settled.external_id = ctx.request.external_id.clone();
        Ok((settled, settlement))
    }
}

/// One charge under verification, its request already validated.
struct Charge<'a> {
    verifier: &'a ChargeVerifier<'a>,
    request: &'a TempoChargeRequest,
    terms: ReceiptTerms,
    challenge: ChallengeView<'a>,
    now: OffsetDateTime,
    max_lifetime: time::Duration,
}

impl Charge<'_> {
    /// charge.md §6a.
    async fn pull(&self, raw: &[u8]) -> Result<(SettledCharge, TempoSettlement), ChargeError> {
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
        let valid_before = self.deadline(fields)?;
        // A passed `validBefore` refuses a new payment, but not the same credential coming
        // back to its own claim (sent before, perhaps mined): that is looked up first.
        let now = u64::try_from(self.now.unix_timestamp()).unwrap_or(0);
        let passed = valid_before <= now;
        // The calls must pay the request before anything is broadcast (§6a.3); the receipt
        // logs are matched again after (§6a.8). Both on purpose: the calls tell us what the
        // payer signed, the logs what the chain did.
        check_pull_calls(&decoded, self.request, &self.terms.expected, self.challenge)?;

        let sender = decoded.sender;
        let mut fee_token = None;
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
                let token = sponsor.check(&envelope, self.now, self.challenge.expires)?;
                fee_token = Some(token);
                (
                    sponsor.co_sign(&envelope, token)?,
                    ChargeKind::SponsoredTransaction,
                )
            }
        };
        let final_raw = final_tx.encoded_2718();
        let final_hash = *final_tx.hash();
        let key = tx_hash_key(&final_hash);
        // The credential is the signed bytes: the same credential sent again is this owner.
        let owner = format!("{:#x}", keccak256(raw));
        let settled = SettledCharge {
            reference: key.clone(),
            payer: sender,
            chain_id,
            amount: self.request.amount,
            kind,
            external_id: None,
        };

        // Claim before anything is sent: of concurrent identical credentials, one proceeds.
        let claim = NewClaim {
            key: &key,
            owner: &owner,
            state: ClaimState::Held,
            expires_at: unix_time(valid_before) + CLAIM_MARGIN,
            valid_before: Some(valid_before),
        };
        match self.verifier.store.claim(claim).await? {
            Claim::Claimed if passed => {
                release(self.verifier.store.as_ref(), &key, &owner, ClaimState::Held).await;
                return Err(ChargeError::failed(
                    "the transaction has expired (validBefore passed)",
                ));
            }
            Claim::Claimed => {}
            Claim::Existing(existing) => {
                let settlement = self.resume(existing, &owner).await?;
                return Ok((settled, settlement));
            }
        }
        if let Err(e) = self.verifier.chain.simulate(sender, final_tx.tx()).await {
            release(self.verifier.store.as_ref(), &key, &owner, ClaimState::Held).await;
            return Err(match e {
                // The node's text is logged, not sent: the payer hears fixed words.
                ChainError::Refused(reason) => {
                    ChargeError::node_refused(WOULD_FAIL_DETAIL, &reason)
                }
                other => other.into(),
            });
        }
        // Checked now, before the handler runs, and again inside the sender's turn just
        // before it is sent (SponsorHold).
        let mut sponsored = None;
        if let (Some(sponsor), Some(fee_token)) = (self.verifier.sponsor, fee_token) {
            let send = SponsoredSend {
                fee_payer: sponsor.address(),
                fee_token,
                tx: final_tx.tx().clone(),
                budget: sponsor.policy().budget.clone(),
            };
            if let Err(refusal) = check_gas(self.verifier.chain, &send, sender).await {
                release(self.verifier.store.as_ref(), &key, &owner, ClaimState::Held).await;
                return Err(refusal);
            }
            sponsored = Some(send);
        }
        let mut settlement = self.settlement(key, owner, ClaimState::Held);
        settlement.broadcast = Some(Broadcast {
            chain: self.verifier.chain.clone(),
            raw: final_raw,
            hash: final_hash,
            sender,
            valid_before,
            terms: self.terms.clone(),
            timeout: self.verifier.broadcast_timeout,
            sponsored,
        });
        Ok((settled, settlement))
    }

    /// Every pull has a deadline: an expiring nonce with `validBefore` not too far ahead, and
    /// no `validAfter` in the future (a transaction the node would queue). Whether
    /// `validBefore` has passed is for the caller: a new payment is then refused, the same
    /// credential coming back to its claim is not.
    fn deadline(
        &self,
        fields: &tempo_primitives::transaction::TempoTransaction,
    ) -> Result<u64, ChargeError> {
        if fields.nonce_key != TEMPO_EXPIRING_NONCE_KEY {
            return Err(ChargeError::failed(
                "the transaction must use the expiring nonce (nonceKey = 2^256-1) with validBefore",
            ));
        }
        let Some(valid_before) = fields.valid_before.map(|v| v.get()) else {
            return Err(ChargeError::failed("the transaction has no validBefore"));
        };
        let now = u64::try_from(self.now.unix_timestamp()).unwrap_or(0);
        if valid_before.saturating_sub(now) > MAX_PULL_VALIDITY.as_secs() {
            return Err(ChargeError::failed(format!(
                "validBefore is more than {} s ahead",
                MAX_PULL_VALIDITY.as_secs()
            )));
        }
        if fields.valid_after.is_some_and(|after| after.get() > now) {
            return Err(ChargeError::failed("validAfter is in the future"));
        }
        Ok(valid_before)
    }

    /// A held settlement of claim `key` (in `state`, owned by `owner`).
    fn settlement(&self, key: String, owner: String, state: ClaimState) -> TempoSettlement {
        TempoSettlement {
            store: self.verifier.store.clone(),
            key,
            owner,
            state,
            paid_until: self.now + self.max_lifetime + CLAIM_MARGIN,
            broadcast: None,
            finished: false,
        }
    }

    /// The same credential came back to a live claim: a paid one not yet served is served
    /// again (no second charge), a pending one is resolved first; anything else is refused.
    async fn resume(
        &self,
        existing: ClaimRecord,
        owner: &str,
    ) -> Result<TempoSettlement, ChargeError> {
        if existing.owner != owner {
            return Err(ChargeError::Replayed(
                "this payment has already been used".into(),
            ));
        }
        let store = self.verifier.store.as_ref();
        let key = existing.key.as_str();
        let mut state = existing.state;
        if state == ClaimState::Pending {
            let hash: B256 = key
                .parse()
                .map_err(|_| ChargeError::Config(format!("pending claim {key} is not a hash")))?;
            let valid_before = existing.valid_before.unwrap_or(0);
            match wait_for_outcome(self.verifier.chain, hash, valid_before).await {
                Outcome::Mined(receipt) => {
                    if let Err(e) = self.terms.check(&receipt, hash, receipt.from) {
                        release(store, key, owner, ClaimState::Pending).await;
                        return Err(e);
                    }
                    state = ClaimState::Settled;
                    let until = self.now + self.max_lifetime + CLAIM_MARGIN;
                    // Whoever moves it first (this request, another, the resolver) wins;
                    // the next step re-reads the state through its condition. Paid: a store
                    // failure from here on is never "nothing was charged".
                    store
                        .advance(key, owner, ClaimState::Pending, ClaimState::Settled, until)
                        .await
                        .map_err(|e| ChargeError::paid_not_recorded(key, &e))?;
                }
                Outcome::Refused(_) | Outcome::Expired => {
                    release(store, key, owner, ClaimState::Pending).await;
                    return Err(ChargeError::failed(
                        "the transaction was not mined before its validBefore; nothing was charged",
                    ));
                }
                Outcome::Unknown(e) => {
                    return Err(ChargeError::Pending(format!(
                        "the outcome of {key} is still unknown: {e}"
                    )));
                }
            }
        }
        match state {
            ClaimState::Settled => {
                let until = self.now + self.max_lifetime + CLAIM_MARGIN;
                if store
                    .advance(key, owner, ClaimState::Settled, ClaimState::Serving, until)
                    .await
                    .map_err(|e| ChargeError::paid_not_recorded(key, &e))?
                {
                    tracing::info!(key, "serving a payment that was settled but not served");
                    Ok(self.settlement(key.to_owned(), owner.to_owned(), ClaimState::Serving))
                } else {
                    Err(ChargeError::Replayed(
                        "this payment is being used by another request".into(),
                    ))
                }
            }
            ClaimState::Held | ClaimState::Serving | ClaimState::Pending => Err(
                ChargeError::Replayed("this payment is being used by another request".into()),
            ),
            _ => Err(ChargeError::Replayed(
                "this payment has already been used".into(),
            )),
        }
    }

    /// charge.md §6b.
    async fn push(
        &self,
        hash: B256,
        source: Option<&str>,
    ) -> Result<(SettledCharge, TempoSettlement), ChargeError> {
        if !self.request.allows(ChargeMode::Push) {
            return Err(ChargeError::failed(
                "push (hash) credentials are not offered",
            ));
        }
        // §6b.1: the payer broadcast it, so there was no fee to sponsor.
        if self.request.method_details.fee_payer {
            return Err(ChargeError::failed(
                "a hash credential cannot answer a request that offers fee sponsorship",
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
        self.terms.check(&receipt, hash, sender)?;
        // Mined after the challenge could have been issued: an old payment cannot answer a
        // new challenge, so its claim need only outlive the challenges that could accept it.
        let number = receipt
            .block_number
            .ok_or_else(|| ChargeError::NodeUnavailable("receipt without a block".into()))?;
        let mined_at = self.verifier.chain.block_timestamp(number).await?;
        let earliest_issue = self.challenge.expires - self.max_lifetime;
        if i64::try_from(mined_at).unwrap_or(i64::MAX) < earliest_issue.unix_timestamp() {
            return Err(ChargeError::failed(
                "the transaction was mined before this challenge was issued",
            ));
        }
        let key = tx_hash_key(&hash);
        // The payment answers one challenge: that challenge's credential is its owner.
        let owner = self.challenge.id.to_owned();
        let claim = NewClaim {
            key: &key,
            owner: &owner,
            state: ClaimState::Held,
            expires_at: unix_time(mined_at) + self.max_lifetime + CLAIM_MARGIN,
            valid_before: None,
        };
        let settlement = match self.verifier.store.claim(claim).await? {
            Claim::Claimed => self.settlement(key.clone(), owner, ClaimState::Held),
            Claim::Existing(existing) => self.resume(existing, &owner).await?,
        };
        Ok((
            SettledCharge {
                reference: key,
                payer: sender,
                chain_id,
                amount: self.request.amount,
                kind: ChargeKind::Hash,
                external_id: None,
            },
            settlement,
        ))
    }

    /// charge.md §6c.
    async fn proof(
        &self,
        signature: &[u8],
        source: Option<&str>,
    ) -> Result<(SettledCharge, TempoSettlement), ChargeError> {
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
        let owner = format!("{:#x}", keccak256(signature));
        // Useless once its challenge has expired: kept only that long.
        let claim = NewClaim {
            key: &key,
            owner: &owner,
            state: ClaimState::Held,
            expires_at: self.challenge.expires + CLAIM_MARGIN,
            valid_before: None,
        };
        let mut settlement = match self.verifier.store.claim(claim).await? {
            Claim::Claimed => self.settlement(key, owner, ClaimState::Held),
            Claim::Existing(existing) => self.resume(existing, &owner).await?,
        };
        settlement.paid_until = self.challenge.expires + CLAIM_MARGIN;
        Ok((
            SettledCharge {
                reference: self.challenge.id.to_owned(),
                payer: account,
                chain_id,
                amount: 0,
                kind: ChargeKind::Proof,
                external_id: None,
            },
            settlement,
        ))
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
