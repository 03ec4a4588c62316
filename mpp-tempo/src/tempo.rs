//! [`Tempo`]: the Tempo payment method, configured once and shared by every route.
//!
//! ```no_run
//! # async fn demo(store: std::sync::Arc<dyn mpp_tempo::store::ReplayStore>) -> Result<(), mpp_tempo::charge::ChargeError> {
//! use mpp_tempo::Tempo;
//! let tempo = Tempo::builder()
//!     .rpc_url("http://127.0.0.1:8545")
//!     .recipient("0x742d35Cc6634C0532925a3b844Bc9e7595f8fE00".parse().unwrap())
//!     .store(store)
//!     .build()
//!     .await?;
//! let terms = tempo.charge_request(10_000); // 0.01 pathUSD
//! # Ok(()) }
//! ```

use std::sync::Arc;
use std::time::{Duration, Instant};

use alloy::eips::eip2718::Encodable2718;
use alloy::network::ReceiptResponse;
use alloy::primitives::{Address, B256, keccak256};
use alloy::signers::local::PrivateKeySigner;
use mpp_core::did::PkhDid;
use mpp_core::method::{Method, MethodError, PriceTerms, Verified, VerifyContext};
use mpp_core::{BoxFuture, Receipt, expiry::format_timestamp};
use serde_json::Value;
use tempo_alloy::rpc::TempoTransactionReceipt;
use tempo_primitives::transaction::AASigned;
use time::OffsetDateTime;

use crate::chain::{ChainClient, DEFAULT_BROADCAST_TIMEOUT, DEFAULT_RPC_TIMEOUT, NodeRefusal};
use crate::charge::hash::transfers_from_logs;
use crate::charge::proof::{proof_digest, recover_proof_signer};
use crate::charge::sponsor::{PATH_USD, Sponsor, SponsorPolicy};
use crate::charge::transaction::{PullTransaction, check_pull_calls, decode_pull};
use crate::charge::transfers::{ChallengeBinding, match_transfers};
use crate::charge::{
    ChargeError, ChargeMode, ChargePayload, ExpectedTransfer, MethodDetails, Split,
    TempoChargeRequest,
};
use crate::store::{Claim, ReplayStore};

/// How long replay keys are kept. Tx hashes and proof ids are single-use forever; the
/// store needs some expiry, so take one far beyond any challenge lifetime.
const REPLAY_RETENTION: time::Duration = time::Duration::days(3650);

/// After a broadcast whose answer was lost, how long to look for its receipt.
const RECEIPT_RECHECK: Duration = Duration::from_secs(3);

/// A verified, settled Tempo charge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChargeReceipt {
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

impl ChargeReceipt {
    /// The payer as a `did:pkh:eip155` identifier.
    pub fn payer_did(&self) -> String {
        format!(
            "did:pkh:eip155:{}:{}",
            self.chain_id,
            self.payer.to_checksum(None)
        )
    }
}

/// The payload type of a settled charge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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

/// Builds a [`Tempo`].
#[derive(Default)]
pub struct TempoBuilder {
    rpc_url: Option<String>,
    recipient: Option<Address>,
    currency: Option<Address>,
    decimals: Option<u8>,
    chain_id: Option<u64>,
    memo: Option<B256>,
    splits: Vec<Split>,
    supported_modes: Option<Vec<ChargeMode>>,
    sponsor: Option<Sponsor>,
    store: Option<Arc<dyn ReplayStore>>,
    rpc_timeout: Option<Duration>,
    broadcast_timeout: Option<Duration>,
}

impl std::fmt::Debug for TempoBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TempoBuilder")
            .field("rpc_url", &self.rpc_url)
            .field("recipient", &self.recipient)
            .field("currency", &self.currency)
            .field("chain_id", &self.chain_id)
            .field("sponsor", &self.sponsor.as_ref().map(Sponsor::address))
            .finish_non_exhaustive()
    }
}

impl TempoBuilder {
    /// The node's JSON-RPC URL (required).
    pub fn rpc_url(mut self, url: impl Into<String>) -> Self {
        self.rpc_url = Some(url.into());
        self
    }

    /// Who gets paid (required).
    pub fn recipient(mut self, recipient: Address) -> Self {
        self.recipient = Some(recipient);
        self
    }

    /// The TIP-20 token charged (default pathUSD).
    pub fn currency(mut self, currency: Address) -> Self {
        self.currency = Some(currency);
        self
    }

    /// The token's decimals, for display prices (default 6).
    pub fn decimals(mut self, decimals: u8) -> Self {
        self.decimals = Some(decimals);
        self
    }

    /// The chain the node must serve; `build` fails if it serves another. Default: whatever
    /// the node reports.
    pub fn chain_id(mut self, chain_id: u64) -> Self {
        self.chain_id = Some(chain_id);
        self
    }

    /// A fixed memo the primary transfer must carry (replaces the attribution memo rule).
    pub fn memo(mut self, memo: B256) -> Self {
        self.memo = Some(memo);
        self
    }

    /// Splits paid out of every charge (base units each).
    pub fn splits(mut self, splits: Vec<Split>) -> Self {
        self.splits = splits;
        self
    }

    /// Restricts the credential modes offered (default: both, or pull only when sponsoring).
    pub fn supported_modes(mut self, modes: Vec<ChargeMode>) -> Self {
        self.supported_modes = Some(modes);
        self
    }

    /// Pays gas for pull transactions with `signer`, under `policy`.
    pub fn fee_payer(mut self, signer: PrivateKeySigner, policy: SponsorPolicy) -> Self {
        self.sponsor = Some(Sponsor::new(signer, policy));
        self
    }

    /// Where replay keys are claimed (required).
    pub fn store(mut self, store: Arc<dyn ReplayStore>) -> Self {
        self.store = Some(store);
        self
    }

    /// Timeout of each RPC call (default 5 s).
    pub fn rpc_timeout(mut self, timeout: Duration) -> Self {
        self.rpc_timeout = Some(timeout);
        self
    }

    /// Timeout of `eth_sendRawTransactionSync` (default 10 s).
    pub fn broadcast_timeout(mut self, timeout: Duration) -> Self {
        self.broadcast_timeout = Some(timeout);
        self
    }

    /// Connects to the node, reads (and checks) its chain id.
    pub async fn build(self) -> Result<Tempo, ChargeError> {
        let missing =
            |what: &str| ChargeError::Config(format!("Tempo::builder(): {what} is required"));
        let rpc_url = self.rpc_url.ok_or_else(|| missing("rpc_url"))?;
        let recipient = self.recipient.ok_or_else(|| missing("recipient"))?;
        let store = self.store.ok_or_else(|| missing("store"))?;
        let chain = ChainClient::new(&rpc_url, self.rpc_timeout.unwrap_or(DEFAULT_RPC_TIMEOUT))?;
        let node_chain_id = chain.chain_id().await?;
        if let Some(configured) = self.chain_id
            && configured != node_chain_id
        {
            return Err(ChargeError::Config(format!(
                "the node at {rpc_url} serves chain {node_chain_id}, not {configured}"
            )));
        }
        let supported_modes = self.supported_modes.or_else(|| {
            // The draft forbids hash credentials with feePayer: advertise pull only.
            self.sponsor.as_ref().map(|_| vec![ChargeMode::Pull])
        });
        Ok(Tempo {
            inner: Arc::new(Inner {
                chain,
                chain_id: node_chain_id,
                recipient,
                currency: self.currency.unwrap_or(PATH_USD),
                decimals: self.decimals.unwrap_or(6),
                memo: self.memo,
                splits: self.splits,
                supported_modes,
                sponsor: self.sponsor,
                store,
                broadcast_timeout: self.broadcast_timeout.unwrap_or(DEFAULT_BROADCAST_TIMEOUT),
            }),
        })
    }
}

struct Inner {
    chain: ChainClient,
    chain_id: u64,
    recipient: Address,
    currency: Address,
    decimals: u8,
    memo: Option<B256>,
    splits: Vec<Split>,
    supported_modes: Option<Vec<ChargeMode>>,
    sponsor: Option<Sponsor>,
    store: Arc<dyn ReplayStore>,
    broadcast_timeout: Duration,
}

/// The Tempo payment method (cheap to clone).
#[derive(Clone)]
pub struct Tempo {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Tempo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tempo")
            .field("chain_id", &self.inner.chain_id)
            .field("recipient", &self.inner.recipient)
            .field("currency", &self.inner.currency)
            .finish_non_exhaustive()
    }
}

/// The challenge a credential answers.
#[derive(Debug, Clone, Copy)]
struct ChallengeRef<'a> {
    id: &'a str,
    realm: &'a str,
    expires: OffsetDateTime,
}

impl Tempo {
    /// Starts a builder.
    pub fn builder() -> TempoBuilder {
        TempoBuilder::default()
    }

    /// The chain id read from the node at build time.
    pub fn chain_id(&self) -> u64 {
        self.inner.chain_id
    }

    /// The token charged.
    pub fn currency(&self) -> Address {
        self.inner.currency
    }

    /// The token's decimals.
    pub fn decimals(&self) -> u8 {
        self.inner.decimals
    }

    /// The primary recipient.
    pub fn recipient(&self) -> Address {
        self.inner.recipient
    }

    /// The fee payer's address, when sponsoring.
    pub fn fee_payer(&self) -> Option<Address> {
        self.inner.sponsor.as_ref().map(Sponsor::address)
    }

    /// The RPC client.
    pub fn chain(&self) -> &ChainClient {
        &self.inner.chain
    }

    /// The terms of a challenge for `amount_base_units`. With configured splits whose sum is
    /// not below the amount, the result fails [`TempoChargeRequest::validate`].
    pub fn charge_request(&self, amount_base_units: u128) -> TempoChargeRequest {
        let i = &self.inner;
        TempoChargeRequest {
            amount: amount_base_units,
            currency: i.currency,
            recipient: i.recipient,
            description: None,
            external_id: None,
            method_details: MethodDetails {
                chain_id: i.chain_id,
                fee_payer: i.sponsor.is_some() && amount_base_units > 0,
                memo: i.memo,
                splits: (!i.splits.is_empty()).then(|| i.splits.clone()),
                supported_modes: i.supported_modes.clone(),
            },
        }
    }

    /// Verifies and settles a credential `payload` (with optional `source` DID) for the
    /// challenge `challenge_id` of `realm`, expiring at `expires`, whose terms are `req`.
    ///
    /// `req` must be this route's terms (the HTTP layer pins the echo to the offer). Payer
    /// faults and infrastructure faults are distinct [`ChargeError`]s; replay keys are
    /// claimed before anything is broadcast.
    pub async fn verify_charge(
        &self,
        req: &TempoChargeRequest,
        challenge_id: &str,
        realm: &str,
        expires: OffsetDateTime,
        source: Option<&str>,
        payload: &Value,
    ) -> Result<ChargeReceipt, ChargeError> {
        let started = Instant::now();
        let challenge = ChallengeRef {
            id: challenge_id,
            realm,
            expires,
        };
        let kind = payload.get("type").and_then(Value::as_str).unwrap_or("?");
        let result = self.verify_inner(req, challenge, source, payload).await;
        let elapsed_ms = started.elapsed().as_millis() as u64;
        match &result {
            Ok(r) => tracing::info!(
                challenge_id, kind, reference = %r.reference, payer = %r.payer,
                amount = r.amount, elapsed_ms, "tempo charge settled"
            ),
            Err(e) if e.is_payer_fault() => tracing::warn!(
                challenge_id, kind, reason = %e, elapsed_ms, "tempo charge refused"
            ),
            Err(e) => tracing::error!(
                challenge_id, kind, reason = %e, elapsed_ms, "tempo charge could not be verified"
            ),
        }
        result
    }

    async fn verify_inner(
        &self,
        req: &TempoChargeRequest,
        challenge: ChallengeRef<'_>,
        source: Option<&str>,
        payload: &Value,
    ) -> Result<ChargeReceipt, ChargeError> {
        req.validate()
            .map_err(|e| ChargeError::InvalidRequest(e.to_string()))?;
        let payload = ChargePayload::from_json(payload)?;
        let now = OffsetDateTime::now_utc();
        if now >= challenge.expires {
            return Err(ChargeError::failed("the challenge has expired"));
        }
        let node = self.inner.chain.chain_id().await?;
        let requested = req.method_details.chain_id;
        if requested != node {
            return Err(ChargeError::ChainMismatch { requested, node });
        }
        match (&payload, req.amount) {
            (ChargePayload::Proof { .. }, 0) => {}
            (_, 0) => return Err(ChargeError::failed("a zero-amount charge needs a proof")),
            (ChargePayload::Proof { .. }, _) => {
                return Err(ChargeError::failed("a proof cannot pay a non-zero amount"));
            }
            _ => {}
        }
        let mut receipt = match payload {
            ChargePayload::Transaction { raw } => {
                self.verify_pull(req, challenge, &raw, now).await?
            }
            ChargePayload::Hash { hash } => self.verify_push(req, challenge, hash, source).await?,
            ChargePayload::Proof { signature } => {
                self.verify_proof(req, challenge, &signature, source)
                    .await?
            }
        };
        receipt.external_id = req.external_id.clone();
        Ok(receipt)
    }

    /// charge.md §6a.
    async fn verify_pull(
        &self,
        req: &TempoChargeRequest,
        challenge: ChallengeRef<'_>,
        raw: &[u8],
        now: OffsetDateTime,
    ) -> Result<ChargeReceipt, ChargeError> {
        if !req.allows(ChargeMode::Pull) {
            return Err(ChargeError::failed(
                "pull (transaction) credentials are not offered",
            ));
        }
        let decoded = decode_pull(raw)?;
        let fields = decoded.fields();
        let chain_id = req.method_details.chain_id;
        if fields.chain_id != chain_id {
            return Err(ChargeError::failed(format!(
                "the transaction is for chain {}, not {chain_id}",
                fields.chain_id
            )));
        }
        if let Some(valid_before) = fields.valid_before
            && i64::try_from(valid_before.get()).unwrap_or(i64::MAX) <= now.unix_timestamp()
        {
            return Err(ChargeError::failed(
                "the transaction has expired (validBefore passed)",
            ));
        }
        check_pull_calls(&decoded, req, challenge.id, challenge.realm)?;

        let sender = decoded.sender;
        let (final_tx, kind): (AASigned, ChargeKind) = match decoded.tx {
            PullTransaction::Signed(signed) => (signed, ChargeKind::Transaction),
            PullTransaction::Sponsored(envelope) => {
                if !req.method_details.fee_payer {
                    return Err(ChargeError::failed(
                        "a fee payer envelope was sent but the request does not offer sponsorship",
                    ));
                }
                let Some(sponsor) = &self.inner.sponsor else {
                    return Err(ChargeError::failed("this server does not sponsor fees"));
                };
                let fee_token = sponsor.check(&envelope, chain_id, now, challenge.expires)?;
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

        match self.inner.chain.simulate(sender, final_tx.tx()).await {
            Ok(()) => {}
            Err(NodeRefusal::Refused(reason)) => {
                self.release(&claims).await;
                return Err(ChargeError::failed(format!(
                    "the transaction would fail: {reason}"
                )));
            }
            Err(NodeRefusal::Unavailable(e)) => {
                self.release(&claims).await;
                return Err(e);
            }
        }

        // From here on the transaction may be on chain: the claims stay.
        let receipt = match self
            .inner
            .chain
            .send_raw_sync(&final_raw, self.inner.broadcast_timeout)
            .await
        {
            Ok(receipt) => receipt,
            Err(NodeRefusal::Refused(reason)) => {
                return Err(ChargeError::failed(format!(
                    "the node refused the transaction: {reason}"
                )));
            }
            Err(NodeRefusal::Unavailable(e)) => {
                tracing::warn!(tx = %final_hash, reason = %e, "broadcast outcome unknown; looking for a receipt");
                self.recheck_receipt(final_hash).await.ok_or(e)?
            }
        };
        self.check_receipt(req, challenge, &receipt, final_hash, sender)?;
        Ok(ChargeReceipt {
            reference: hash_key,
            payer: sender,
            chain_id,
            amount: req.amount,
            kind,
            external_id: None,
        })
    }

    /// After a lost broadcast answer: the receipt, if the node shows one within a few seconds.
    async fn recheck_receipt(&self, hash: B256) -> Option<TempoTransactionReceipt> {
        let deadline = Instant::now() + RECEIPT_RECHECK;
        while Instant::now() < deadline {
            if let Ok(Some(receipt)) = self.inner.chain.receipt(hash).await {
                return Some(receipt);
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        None
    }

    /// The mined transaction succeeded and its logs pay the request (charge.md §6a.8, §6b).
    fn check_receipt(
        &self,
        req: &TempoChargeRequest,
        challenge: ChallengeRef<'_>,
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
            &expected_transfers(req)?,
            &transfers,
            req.currency,
            req.method_details.memo.is_some(),
            binding(challenge),
        )
        .map_err(|e| ChargeError::failed(format!("receipt logs: {e}")))?;
        Ok(())
    }

    /// charge.md §6b.
    async fn verify_push(
        &self,
        req: &TempoChargeRequest,
        challenge: ChallengeRef<'_>,
        hash: B256,
        source: Option<&str>,
    ) -> Result<ChargeReceipt, ChargeError> {
        if !req.allows(ChargeMode::Push) {
            return Err(ChargeError::failed(
                "push (hash) credentials are not offered",
            ));
        }
        let chain_id = req.method_details.chain_id;
        let declared = match source {
            None => None,
            Some(source) => Some(
                source_address(source, chain_id)
                    .ok_or_else(|| ChargeError::failed("Hash credential source is invalid"))?,
            ),
        };
        let receipt = self
            .inner
            .chain
            .receipt(hash)
            .await?
            .ok_or_else(|| ChargeError::failed("the transaction was not found"))?;
        let sender = declared.unwrap_or(receipt.from);
        self.check_receipt(req, challenge, &receipt, hash, sender)?;
        let key = tx_hash_key(&hash);
        self.claim(&key, "Transaction hash has already been used")
            .await?;
        Ok(ChargeReceipt {
            reference: key,
            payer: sender,
            chain_id,
            amount: req.amount,
            kind: ChargeKind::Hash,
            external_id: None,
        })
    }

    /// charge.md §6c.
    async fn verify_proof(
        &self,
        req: &TempoChargeRequest,
        challenge: ChallengeRef<'_>,
        signature: &[u8],
        source: Option<&str>,
    ) -> Result<ChargeReceipt, ChargeError> {
        let chain_id = req.method_details.chain_id;
        let source = source.ok_or_else(|| ChargeError::failed("a proof needs a source DID"))?;
        let account = source_address(source, chain_id).ok_or_else(|| {
            ChargeError::failed("the proof source is not a did:pkh on this chain")
        })?;
        let digest = proof_digest(chain_id, account, challenge.id, challenge.realm);
        let signer = recover_proof_signer(&digest, signature)
            .ok_or_else(|| ChargeError::failed("the proof signature does not recover"))?;
        if signer != account {
            return Err(ChargeError::failed(format!(
                "the proof was signed by {signer}, not by the source account {account}"
            )));
        }
        let key = format!("tempo:charge:proof:{}", challenge.id);
        self.claim(&key, "this proof has already been used").await?;
        Ok(ChargeReceipt {
            reference: challenge.id.to_owned(),
            payer: account,
            chain_id,
            amount: 0,
            kind: ChargeKind::Proof,
            external_id: None,
        })
    }

    async fn claim(&self, key: &str, used: &str) -> Result<(), ChargeError> {
        let expires_at = OffsetDateTime::now_utc() + REPLAY_RETENTION;
        match self.inner.store.claim(key, expires_at).await? {
            Claim::Claimed => Ok(()),
            Claim::AlreadyClaimed => Err(ChargeError::Replayed(used.to_owned())),
        }
    }

    /// Frees claims of a payment that was never broadcast. A failure here only costs the
    /// payer a retry with a fresh credential, so it is logged, not returned.
    async fn release(&self, keys: &[&str]) {
        for key in keys {
            if let Err(e) = self.inner.store.release(key).await {
                tracing::error!(key, reason = %e, "could not release a replay claim");
            }
        }
    }
}

fn expected_transfers(req: &TempoChargeRequest) -> Result<Vec<ExpectedTransfer>, ChargeError> {
    req.expected_transfers()
        .map_err(|e| ChargeError::InvalidRequest(e.to_string()))
}

fn binding(challenge: ChallengeRef<'_>) -> ChallengeBinding<'_> {
    ChallengeBinding {
        realm: challenge.realm,
        challenge_id: challenge.id,
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

impl Method for Tempo {
    fn name(&self) -> &str {
        "tempo"
    }

    fn supports_intent(&self, intent: &str) -> bool {
        intent == "charge"
    }

    fn request(&self, terms: &PriceTerms) -> Result<Value, MethodError> {
        if terms.intent != "charge" {
            return Err(MethodError::config(format!(
                "the tempo method does not serve `{}` yet",
                terms.intent
            )));
        }
        let amount = terms.amount.to_base_units(self.inner.decimals)?;
        let mut request = self.charge_request(amount);
        if let Some(currency) = &terms.currency {
            request.currency = currency
                .parse()
                .map_err(|_| MethodError::config(format!("`{currency}` is not a token address")))?;
        }
        request.external_id = terms.external_id.clone();
        request.validate().map_err(MethodError::config)?;
        Ok(request.to_json())
    }

    fn verify<'a>(
        &'a self,
        ctx: VerifyContext<'a>,
    ) -> BoxFuture<'a, Result<Verified, MethodError>> {
        Box::pin(async move {
            let req = TempoChargeRequest::from_json(&Value::Object(ctx.request.clone()))
                .map_err(|e| MethodError::verification_failed(e.to_string()))?;
            let credential = ctx.credential;
            let paid = self
                .verify_charge(
                    &req,
                    &credential.challenge.id,
                    ctx.realm,
                    ctx.expires,
                    credential.source.as_deref(),
                    &credential.payload,
                )
                .await?;
            let mut receipt =
                Receipt::success("tempo", paid.reference.clone(), format_timestamp(ctx.now));
            receipt.external_id = paid.external_id.clone();
            Ok(Verified::serve(receipt)
                .with_payer(paid.payer_did())
                .with_amount(paid.amount))
        })
    }
}
