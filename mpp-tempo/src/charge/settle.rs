//! Taking the money of a verified charge, and learning the outcome of a transaction that was
//! sent (charge on success; charge.md §6a.6-8).
//!
//! A verified charge is a claim in the store ([`ClaimState::Held`]) and a [`TempoSettlement`]
//! that the payment gate settles once the service has answered with success:
//!
//! - a pull is broadcast: the claim becomes `Pending` *before* the transaction is sent, so a
//!   crash or a lost answer leaves a record with a deadline (`validBefore`), never a payment
//!   nobody looks for. The outcome is then looked up until the transaction is mined (settled)
//!   or the node's block time passes `validBefore` (released: nothing was charged). Only a
//!   node that cannot be asked at all leaves it `Pending` (503), to be resolved when the same
//!   credential comes back or by the background resolver ([`resolve_pending`]).
//! - a push or a proof is taken by moving its claim to `Serving`.
//!
//! [`Settle::finish`] then marks it `Served` (a 2xx answer went out), returns it to `Settled`
//! (paid but not served: the same credential may be served again without a second charge),
//! or releases a claim whose money was never taken.

use std::sync::Arc;
use std::time::{Duration, Instant};

use alloy::network::ReceiptResponse;
use alloy::primitives::{Address, B256};
use mpp_core::BoxFuture;
use mpp_core::method::{MethodError, Settle};
use tempo_alloy::rpc::TempoTransactionReceipt;
use time::OffsetDateTime;

use super::error::NODE_REFUSED_DETAIL;
use super::logs::transfers_from_logs;
use super::sponsor::{SponsorHold, SponsoredSend, refusal_cause};
use super::transfers::match_transfers;
use super::{ChargeError, ExpectedTransfer};
use crate::chain::{ChainClient, ChainError};
use crate::challenge::ChallengeView;
use crate::store::{ClaimState, ReplayStore};

/// How long a claim outlives what it protects (clock differences between instances).
pub(crate) const CLAIM_MARGIN: time::Duration = time::Duration::seconds(60);

/// How often a sent transaction's receipt is asked for while its outcome is unknown.
const RECEIPT_POLL: Duration = Duration::from_millis(250);

/// What a mined transaction's logs must show: the terms and the challenge it answers.
#[derive(Debug, Clone)]
pub(crate) struct ReceiptTerms {
    pub(crate) expected: Vec<ExpectedTransfer>,
    pub(crate) currency: Address,
    pub(crate) server_memo: bool,
    pub(crate) challenge_id: String,
    pub(crate) realm: String,
    pub(crate) expires: OffsetDateTime,
}

impl ReceiptTerms {
    /// The mined transaction succeeded and its logs, from `sender`, pay the terms
    /// (charge.md §6a.8, §6b).
    pub(crate) fn check(
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
        let challenge = ChallengeView::new(&self.challenge_id, &self.realm, self.expires);
        match_transfers(
            &self.expected,
            &transfers,
            self.currency,
            self.server_memo,
            challenge,
        )
        .map_err(|e| ChargeError::failed(format!("receipt logs: {e}")))?;
        Ok(())
    }
}

/// A pull transaction to broadcast, with what its outcome is checked against.
pub(crate) struct Broadcast {
    pub(crate) chain: ChainClient,
    pub(crate) raw: Vec<u8>,
    pub(crate) hash: B256,
    pub(crate) sender: Address,
    /// Unix seconds; the transaction cannot be mined after it.
    pub(crate) valid_before: u64,
    pub(crate) terms: ReceiptTerms,
    pub(crate) timeout: Duration,
    /// `Some` when the server pays the fee.
    pub(crate) sponsored: Option<SponsoredSend>,
}

/// A verified Tempo charge held in the store until the gate settles it.
pub(crate) struct TempoSettlement {
    pub(crate) store: Arc<dyn ReplayStore>,
    pub(crate) key: String,
    pub(crate) owner: String,
    /// Where the claim stands as far as this request knows.
    pub(crate) state: ClaimState,
    /// When a paid claim expires (it must block the payment from being presented again for
    /// as long as any challenge could accept it).
    pub(crate) paid_until: OffsetDateTime,
    /// `Some` for a pull not yet sent.
    pub(crate) broadcast: Option<Broadcast>,
    pub(crate) finished: bool,
}

impl TempoSettlement {
    /// Takes the money: see [`Settle::settle`].
    pub(crate) async fn take(&mut self) -> Result<(), ChargeError> {
        match self.state {
            ClaimState::Serving => Ok(()),
            ClaimState::Held => match self.broadcast.take() {
                None => {
                    self.advance(ClaimState::Held, ClaimState::Serving, self.paid_until)
                        .await
                }
                Some(broadcast) => self.send(broadcast).await,
            },
            other => Err(ChargeError::Config(format!(
                "a settlement in state {other:?} cannot be taken"
            ))),
        }
    }

    /// Moves this request's held claim on. Only this request moves a claim it holds, so a
    /// claim no longer held means its hold expired while the request ran (a handler slower
    /// than the payment's deadline): nothing was taken, and the payer is told so.
    async fn advance(
        &mut self,
        from: ClaimState,
        to: ClaimState,
        expires_at: OffsetDateTime,
    ) -> Result<(), ChargeError> {
        if self
            .store
            .advance(&self.key, &self.owner, from, to, expires_at)
            .await?
        {
            self.state = to;
            Ok(())
        } else {
            Err(ChargeError::failed(
                "the payment's hold expired before it could be taken; nothing was charged",
            ))
        }
    }

    /// charge.md §6a.6-8: marks the claim pending, sends, and learns the outcome.
    async fn send(&mut self, broadcast: Broadcast) -> Result<(), ChargeError> {
        let hold = match &broadcast.sponsored {
            Some(sponsored) => Some(
                SponsorHold::take(
                    self.store.clone(),
                    &broadcast.chain,
                    sponsored,
                    broadcast.sender,
                    &self.key,
                    broadcast.valid_before,
                )
                .await?,
            ),
            None => None,
        };
        let pending_until = unix_time(broadcast.valid_before) + CLAIM_MARGIN;
        if let Err(e) = self
            .advance(ClaimState::Held, ClaimState::Pending, pending_until)
            .await
        {
            if let Some(hold) = hold {
                hold.end(&Outcome::Expired).await;
            }
            return Err(e);
        }
        let sent = broadcast
            .chain
            .send_raw_sync(&broadcast.raw, broadcast.timeout)
            .await;
        let outcome = match sent {
            Ok(receipt) => Outcome::Mined(Box::new(receipt)),
            // A definite refusal at admission: the transaction is not in the pool.
            Err(ChainError::Refused(reason)) => Outcome::Refused(reason),
            Err(e) => {
                tracing::warn!(tx = %broadcast.hash, reason = %e, "broadcast outcome unknown; looking for the transaction until validBefore");
                wait_for_outcome(&broadcast.chain, broadcast.hash, broadcast.valid_before).await
            }
        };
        if let Some(hold) = hold {
            hold.end(&outcome).await;
        }
        match outcome {
            Outcome::Mined(receipt) => {
                let checked = broadcast
                    .terms
                    .check(&receipt, broadcast.hash, broadcast.sender);
                if let Err(e) = checked {
                    // Mined but not paying (reverted): this hash can never pay again.
                    self.release(ClaimState::Pending).await;
                    return Err(e);
                }
                // Paid. If the store fails now, the claim stays pending and is settled later
                // (the same credential, the resolver): the payer must hear that it was paid,
                // never "nothing was charged".
                let key = self.key.clone();
                let unrecorded =
                    |e: crate::store::StoreError| ChargeError::paid_not_recorded(&key, &e);
                for from in [ClaimState::Pending, ClaimState::Settled] {
                    // Settled: the same credential, sent again meanwhile, resolved it first.
                    if self
                        .store
                        .advance(
                            &self.key,
                            &self.owner,
                            from,
                            ClaimState::Serving,
                            self.paid_until,
                        )
                        .await
                        .map_err(unrecorded)?
                    {
                        self.state = ClaimState::Serving;
                        return Ok(());
                    }
                }
                self.state = ClaimState::Settled;
                Err(ChargeError::Replayed(
                    "this payment is being used by another request".into(),
                ))
            }
            Outcome::Refused(reason) => {
                self.release(ClaimState::Pending).await;
                // The node's text is logged, not sent: the payer hears fixed words.
                let refused = ChargeError::node_refused(NODE_REFUSED_DETAIL, &reason);
                Err(match &broadcast.sponsored {
                    // The fee payer's part may be what the node refused (a 503, logged with
                    // the node's text); otherwise it is the payer's.
                    Some(s) => match refusal_cause(
                        &broadcast.chain,
                        s.fee_payer,
                        s.fee_token,
                        &s.tx,
                        format!("the node refused the transaction: {reason}"),
                    )
                    .await
                    {
                        ChargeError::VerificationFailed(_) => refused,
                        other => other,
                    },
                    None => refused,
                })
            }
            Outcome::Expired => {
                self.release(ClaimState::Pending).await;
                Err(ChargeError::failed(
                    "the transaction was not mined before its validBefore; nothing was charged",
                ))
            }
            Outcome::Unknown(e) => Err(ChargeError::Pending(format!(
                "the transaction {:#x} was sent and its outcome is not known yet ({e}); \
                 present the same credential again",
                broadcast.hash
            ))),
        }
    }

    async fn release(&mut self, from: ClaimState) {
        release(self.store.as_ref(), &self.key, &self.owner, from).await;
    }
}

/// Frees a claim whose money was not taken. A failure only delays the payer until the claim
/// expires, and no outcome reports it, so it is logged here.
pub(crate) async fn release(store: &dyn ReplayStore, key: &str, owner: &str, from: ClaimState) {
    if let Err(e) = store.release(key, owner, from).await {
        tracing::warn!(key, reason = %e, "could not release a payment claim");
    }
}

impl Settle for TempoSettlement {
    fn settle(&mut self) -> BoxFuture<'_, Result<(), MethodError>> {
        Box::pin(async move { self.take().await.map_err(MethodError::from) })
    }

    fn finish(mut self: Box<Self>, served: bool) -> BoxFuture<'static, ()> {
        self.finished = true;
        let store = self.store.clone();
        let (key, owner, state, paid_until) = (
            std::mem::take(&mut self.key),
            std::mem::take(&mut self.owner),
            self.state,
            self.paid_until,
        );
        Box::pin(async move { end(store.as_ref(), &key, &owner, state, paid_until, served).await })
    }
}

impl Drop for TempoSettlement {
    fn drop(&mut self) {
        if self.finished || matches!(self.state, ClaimState::Pending) {
            return;
        }
        // Dropped mid-request (a panicking handler, a client that hung up): end it as not
        // served, in the background if there is a runtime; otherwise the claim expires.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let store = self.store.clone();
        let (key, owner, state, paid_until) = (
            std::mem::take(&mut self.key),
            std::mem::take(&mut self.owner),
            self.state,
            self.paid_until,
        );
        runtime.spawn(async move {
            end(store.as_ref(), &key, &owner, state, paid_until, false).await;
        });
    }
}

/// Ends a request's hold on a claim.
async fn end(
    store: &dyn ReplayStore,
    key: &str,
    owner: &str,
    state: ClaimState,
    paid_until: OffsetDateTime,
    served: bool,
) {
    let result = match (state, served) {
        (ClaimState::Serving, true) => {
            store
                .advance(
                    key,
                    owner,
                    ClaimState::Serving,
                    ClaimState::Served,
                    paid_until,
                )
                .await
        }
        (ClaimState::Serving, false) => {
            store
                .advance(
                    key,
                    owner,
                    ClaimState::Serving,
                    ClaimState::Settled,
                    paid_until,
                )
                .await
        }
        (ClaimState::Held, _) => store.release(key, owner, ClaimState::Held).await,
        // Pending: the resolver or the same credential settles it. Nothing else is held.
        _ => Ok(true),
    };
    match result {
        Ok(true) => {}
        Ok(false) => tracing::warn!(key, ?state, "payment claim changed under its holder"),
        Err(e) => tracing::warn!(key, ?state, reason = %e, "could not end a payment claim"),
    }
}

/// What became of a sent transaction.
pub(crate) enum Outcome {
    /// Mined (successfully or not): its receipt.
    Mined(Box<TempoTransactionReceipt>),
    /// Refused at admission: never in the pool.
    Refused(String),
    /// The node's block time passed `validBefore` and it was not mined: it never will be.
    Expired,
    /// The node could not be asked.
    Unknown(ChainError),
}

/// Looks the transaction up until it is mined or the node's latest block is past
/// `valid_before`. Gives up with [`Outcome::Unknown`] only when the node stops answering.
pub(crate) async fn wait_for_outcome(
    chain: &ChainClient,
    hash: B256,
    valid_before: u64,
) -> Outcome {
    // A node that does not answer for this long is not going to answer this request.
    const GIVE_UP: Duration = Duration::from_secs(15);
    let mut last_answer = Instant::now();
    loop {
        match look_up(chain, hash, valid_before).await {
            Ok(Some(outcome)) => return outcome,
            Ok(None) => last_answer = Instant::now(),
            Err(e) if last_answer.elapsed() >= GIVE_UP => return Outcome::Unknown(e),
            Err(e) => tracing::debug!(tx = %hash, reason = %e, "receipt lookup failed"),
        }
        tokio::time::sleep(RECEIPT_POLL).await;
    }
}

/// One look: `Some` when the outcome is final, `None` while it may still be mined.
pub(crate) async fn look_up(
    chain: &ChainClient,
    hash: B256,
    valid_before: u64,
) -> Result<Option<Outcome>, ChainError> {
    if let Some(receipt) = chain.receipt(hash).await? {
        return Ok(Some(Outcome::Mined(Box::new(receipt))));
    }
    // Not mined: final only once a block past `validBefore` exists (by the node's time,
    // which is what decides whether it can still be included). Looked up after the
    // receipt, so a transaction mined in between is not missed.
    let latest = chain.latest_block_timestamp().await?;
    if latest > valid_before {
        if let Some(receipt) = chain.receipt(hash).await? {
            return Ok(Some(Outcome::Mined(Box::new(receipt))));
        }
        return Ok(Some(Outcome::Expired));
    }
    Ok(None)
}

/// Resolves pending claims (sent transactions whose outcome nobody learned: a lost answer,
/// a crash, a restart): mined and successful → `Settled` (the same credential is then
/// served without a second charge); reverted or expired unmined → released. Returns how
/// many were resolved. Run in the background by the method, and after a restart.
pub(crate) async fn resolve_pending(
    store: &dyn ReplayStore,
    chain: &ChainClient,
    limit: u32,
    paid_for: time::Duration,
) -> Result<usize, ChargeError> {
    let mut resolved = 0;
    for claim in store.in_state(ClaimState::Pending, limit).await? {
        let Ok(hash) = claim.key.parse::<B256>() else {
            continue;
        };
        let Some(valid_before) = claim.valid_before else {
            continue;
        };
        let outcome = match look_up(chain, hash, valid_before).await {
            Ok(Some(outcome)) => outcome,
            Ok(None) => continue,
            Err(e) => return Err(e.into()),
        };
        let done = match outcome {
            Outcome::Mined(receipt) if receipt.status() => {
                // The calls were checked to pay the terms before the transaction was sent,
                // and a Tempo batch succeeds whole: a successful receipt is the payment.
                let until = OffsetDateTime::now_utc() + paid_for + CLAIM_MARGIN;
                store
                    .advance(
                        &claim.key,
                        &claim.owner,
                        ClaimState::Pending,
                        ClaimState::Settled,
                        until,
                    )
                    .await?
            }
            _ => {
                store
                    .release(&claim.key, &claim.owner, ClaimState::Pending)
                    .await?
            }
        };
        if done {
            tracing::info!(tx = %claim.key, "resolved a pending payment");
            resolved += 1;
        }
    }
    Ok(resolved)
}

/// Unix seconds as a time, capped in the year 9000 (so adding a margin cannot overflow).
pub(crate) fn unix_time(secs: u64) -> OffsetDateTime {
    const YEAR_9000: i64 = 221_845_392_000;
    let secs = i64::try_from(secs).unwrap_or(YEAR_9000).min(YEAR_9000);
    OffsetDateTime::from_unix_timestamp(secs).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}
