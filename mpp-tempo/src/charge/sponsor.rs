//! Fee sponsorship (charge.md §5, §6a.5): the rules a `0x78` envelope must meet before the
//! server pays its gas, and the co-signature that turns it into a broadcastable `0x76`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use alloy::network::ReceiptResponse;
use alloy::primitives::{Address, U256};
use alloy::signers::SignerSync;
use alloy::signers::local::PrivateKeySigner;
use tempo_primitives::transaction::{AASigned, TEMPO_EXPIRING_NONCE_KEY, TempoTransaction};
use time::OffsetDateTime;

use super::ChargeError;
use super::envelope::FeePayerEnvelope;
use super::settle::{CLAIM_MARGIN, Outcome, release, unix_time};
use crate::chain::{ChainClient, ChainError, GasCheck};
use crate::chains::TempoChain;
use crate::store::{Claim, ClaimState, FeeSpend, NewClaim, ReplayStore};
use crate::tokens::PATH_USD;

/// Limits a sponsored transaction must respect (defaults: the SDKs').
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SponsorPolicy {
    /// Highest `gasLimit`.
    pub max_gas_limit: u64,
    /// Highest `maxFeePerGas` (attodollars per gas).
    pub max_fee_per_gas: u128,
    /// Highest `maxPriorityFeePerGas`; `None`: the chain's cap
    /// ([`SponsorPolicy::priority_fee_cap`]: 50 gwei on Moderato, 10 gwei elsewhere).
    pub max_priority_fee_per_gas: Option<u128>,
    /// Highest `gasLimit × maxFeePerGas`.
    pub max_fee_budget: u128,
    /// Longest `validBefore − now`.
    pub max_validity: Duration,
    /// How far `validBefore` may pass the challenge expiry.
    pub expiry_grace: Duration,
    /// Fee tokens the sponsor pays with; a client-chosen fee token must be one of them.
    pub fee_tokens: Vec<Address>,
    /// The fee token used when the client leaves it empty (the usual case).
    pub default_fee_token: Address,
    /// What the fee payer may spend per sender and in total, per time window.
    pub budget: SponsorBudget,
}

/// Caps on sponsored fees over time, in attodollars (the unit of `gasLimit × maxFeePerGas`;
/// 10^18 is one dollar of fee token). Each sponsored transaction counts its most
/// (`gasLimit × maxFeePerGas`) before it is sent, and what it really cost once mined; one
/// that was never mined counts nothing. The spend is kept in the replay store, so the caps
/// hold across every instance sharing it.
///
/// Past a cap, sponsored payments are deferred (503 with `Retry-After` until the window
/// ends): a payer cannot make the fee payer spend without bound, even with transactions
/// that revert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SponsorBudget {
    /// The length of a window (windows are aligned to multiples of it since the epoch).
    pub window: Duration,
    /// Most one sender's sponsored transactions may cost in a window.
    pub per_sender: u128,
    /// Most all sponsored transactions may cost in a window.
    pub total: u128,
}

impl Default for SponsorBudget {
    /// One hour; one dollar per sender (hundreds of payments at typical fees) and a
    /// hundred dollars in total.
    fn default() -> Self {
        Self {
            window: Duration::from_secs(3600),
            per_sender: 1_000_000_000_000_000_000,
            total: 100_000_000_000_000_000_000,
        }
    }
}

impl Default for SponsorPolicy {
    fn default() -> Self {
        Self {
            max_gas_limit: 2_000_000,
            max_fee_per_gas: 100_000_000_000,
            max_priority_fee_per_gas: None,
            max_fee_budget: 50_000_000_000_000_000,
            max_validity: Duration::from_secs(900),
            expiry_grace: Duration::from_secs(60),
            fee_tokens: vec![PATH_USD],
            default_fee_token: PATH_USD,
            budget: SponsorBudget::default(),
        }
    }
}

impl SponsorPolicy {
    /// The highest `maxPriorityFeePerGas` sponsored on `chain_id`: the configured one, else
    /// the chain's (charge.md §6a.5: 50 gwei on Moderato, 10 gwei elsewhere).
    pub fn priority_fee_cap(&self, chain_id: u64) -> u128 {
        const GWEI: u128 = 1_000_000_000;
        self.max_priority_fee_per_gas
            .unwrap_or(if chain_id == TempoChain::Moderato.chain_id() {
                50 * GWEI
            } else {
                10 * GWEI
            })
    }
}

/// The sponsor: a fee-payer key and its policy.
#[derive(Debug, Clone)]
pub struct Sponsor {
    signer: PrivateKeySigner,
    policy: SponsorPolicy,
}

impl Sponsor {
    /// A sponsor paying with `signer` under `policy`.
    pub fn new(signer: PrivateKeySigner, policy: SponsorPolicy) -> Self {
        Self { signer, policy }
    }

    /// The fee payer's address.
    pub fn address(&self) -> Address {
        self.signer.address()
    }

    /// The policy.
    pub fn policy(&self) -> &SponsorPolicy {
        &self.policy
    }

    /// Applies the policy to `envelope` (for a challenge expiring at `expires`), and returns
    /// the fee token to pay with.
    ///
    /// What every pull transaction must meet, sponsored or not, is checked once by the charge
    /// verifier before this runs, not here: the chain id, and `validBefore` later than `now`.
    pub fn check(
        &self,
        envelope: &FeePayerEnvelope,
        now: OffsetDateTime,
        expires: OffsetDateTime,
    ) -> Result<Address, ChargeError> {
        let p = &self.policy;
        let tx = &envelope.tx;
        let refuse = |m: String| {
            Err(ChargeError::VerificationFailed(format!(
                "sponsor policy: {m}"
            )))
        };
        let fee_token = match tx.fee_token {
            None => p.default_fee_token,
            Some(t) if p.fee_tokens.contains(&t) => t,
            Some(t) => return refuse(format!("fee token {t} is not allowed")),
        };
        if tx.nonce_key != TEMPO_EXPIRING_NONCE_KEY {
            return refuse("must use the expiring nonce key".into());
        }
        let Some(valid_before) = tx.valid_before.map(|v| v.get()) else {
            return refuse("validBefore is required".into());
        };
        let valid_before = i64::try_from(valid_before).unwrap_or(i64::MAX);
        if valid_before.saturating_sub(now.unix_timestamp()) > secs(p.max_validity) {
            return refuse("validity window too long".into());
        }
        if valid_before
            > expires
                .unix_timestamp()
                .saturating_add(secs(p.expiry_grace))
        {
            return refuse("validBefore is past the challenge expiry".into());
        }
        if tx.gas_limit > p.max_gas_limit {
            return refuse(format!(
                "gas limit {} above {}",
                tx.gas_limit, p.max_gas_limit
            ));
        }
        if tx.max_fee_per_gas > p.max_fee_per_gas {
            return refuse(format!(
                "maxFeePerGas {} above {}",
                tx.max_fee_per_gas, p.max_fee_per_gas
            ));
        }
        let priority_cap = p.priority_fee_cap(tx.chain_id);
        if tx.max_priority_fee_per_gas > priority_cap
            || tx.max_priority_fee_per_gas > tx.max_fee_per_gas
        {
            return refuse(format!(
                "maxPriorityFeePerGas {} above {}",
                tx.max_priority_fee_per_gas,
                priority_cap.min(tx.max_fee_per_gas)
            ));
        }
        if u128::from(tx.gas_limit).saturating_mul(tx.max_fee_per_gas) > p.max_fee_budget {
            return refuse(format!(
                "gas budget {} × {} above {}",
                tx.gas_limit, tx.max_fee_per_gas, p.max_fee_budget
            ));
        }
        if !tx.access_list.is_empty() {
            return refuse("access list is not allowed".into());
        }
        if !tx.tempo_authorization_list.is_empty() || tx.key_authorization.is_some() {
            return refuse("authorizations are not allowed".into());
        }
        Ok(fee_token)
    }

    /// Completes the envelope: sets `fee_token`, signs the fee-payer hash, and returns the
    /// broadcastable `0x76` transaction.
    pub fn co_sign(
        &self,
        envelope: &FeePayerEnvelope,
        fee_token: Address,
    ) -> Result<AASigned, ChargeError> {
        let mut tx = envelope.recoverable().strip_signature();
        tx.fee_token = Some(fee_token);
        let hash = tx.fee_payer_signature_hash(envelope.sender);
        let signature = self
            .signer
            .sign_hash_sync(&hash)
            .map_err(|e| ChargeError::Config(format!("fee payer signing failed: {e}")))?;
        tx.fee_payer_signature = Some(signature);
        Ok(AASigned::new_unhashed(tx, envelope.signature.clone()))
    }
}

fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

/// Fee-token base units (6 decimals) of a fee in attodollars (18), rounded up.
pub(crate) fn fee_units(attodollars: u128) -> u64 {
    const PER_UNIT: u128 = 1_000_000_000_000;
    u64::try_from(attodollars.div_ceil(PER_UNIT)).unwrap_or(u64::MAX)
}

/// The payer's text when the node refused a sponsored transaction (its own text is logged):
/// true of a refused broadcast and of a refused check alike.
const REFUSED_DETAIL: &str = "the node refused the sponsored transaction (it is invalid or \
     would fail on chain); nothing was charged";

/// The payer's text when the node's check of a sponsored transaction before sending it
/// failed (its own text is logged).
const WOULD_FAIL_DETAIL: &str = "sponsor policy: the node's check of the transaction failed \
     (it is invalid or would fail on chain); nothing was charged";

/// The payer's text when a batch's gas could not be shown to fit in its gas limit.
const UNPROVEN_GAS_DETAIL: &str = "sponsor policy: the server could not confirm that the gas \
     limit covers every call of this transaction, so it will not pay its fee; nothing was \
     charged. Sign it again with a higher gas limit, or pay the fee yourself if the server \
     offers that";

/// Why a sponsored transaction was refused (`reason`: the node's text): the fee payer's
/// fault when its fee-token balance cannot cover the transaction's most (503, the
/// operator's), else the payer's. The node's text goes to the log, never to the payer.
pub(crate) async fn refusal_cause(
    chain: &ChainClient,
    fee_payer: Address,
    fee_token: Address,
    tx: &TempoTransaction,
    reason: String,
) -> ChargeError {
    refusal_cause_with(chain, fee_payer, fee_token, tx, &reason, REFUSED_DETAIL).await
}

/// [`refusal_cause`] with the payer's text `detail`.
async fn refusal_cause_with(
    chain: &ChainClient,
    fee_payer: Address,
    fee_token: Address,
    tx: &TempoTransaction,
    reason: &str,
    detail: &'static str,
) -> ChargeError {
    let most = fee_units(u128::from(tx.gas_limit).saturating_mul(tx.max_fee_per_gas));
    match chain.token_balance(fee_token, fee_payer).await {
        Ok(balance) if balance < U256::from(most) => {
            tracing::warn!(
                %fee_payer,
                %fee_token,
                %balance,
                most,
                reason,
                "the node refused a sponsored transaction the fee payer cannot pay for"
            );
            ChargeError::FeePayer(format!(
                "the fee payer {fee_payer} holds {balance} of fee token {fee_token}, \
                 below the {most} this transaction may cost"
            ))
        }
        Ok(_) => {
            tracing::info!(
                reason,
                detail,
                "the tempo node refused a sponsored transaction"
            );
            ChargeError::failed(detail)
        }
        Err(e) => {
            tracing::info!(reason, "the tempo node refused a sponsored transaction");
            e.into()
        }
    }
}

/// A sponsored transaction that runs out of gas or reverts is paid for by the fee payer, so
/// it is co-signed only when its gas limit is proven to cover what *all* its calls need
/// ([`ChainClient::gas_check`]: the estimate of the very transaction when it has one call;
/// for a batch, the very transaction run with its gas limit, or, on a node without
/// `tempo_simulateV1`, a bound from its calls each run with a gas limit). A gas limit below
/// the need, or one that cannot be shown to cover it, is refused, as is a transaction the
/// node would not run (the payer's fault unless the fee payer cannot pay).
pub(crate) async fn check_gas(
    chain: &ChainClient,
    sponsored: &SponsoredSend,
    sender: Address,
) -> Result<(), ChargeError> {
    let tx = &sponsored.tx;
    match chain.gas_check(sender, tx, Some(sponsored.fee_payer)).await {
        Ok(GasCheck::Covered { .. }) => Ok(()),
        Ok(GasCheck::Short { needed }) => Err(ChargeError::failed(format!(
            "sponsor policy: gas limit {} is below the {needed} the transaction needs",
            tx.gas_limit
        ))),
        Ok(GasCheck::Unproven) => {
            tracing::info!(
                %sender,
                calls = tx.calls.len(),
                gas_limit = tx.gas_limit,
                "sponsorship refused: the batch's gas could not be proven to fit its gas limit"
            );
            Err(ChargeError::failed(UNPROVEN_GAS_DETAIL))
        }
        Err(ChainError::Refused(reason)) => Err(refusal_cause_with(
            chain,
            sponsored.fee_payer,
            sponsored.fee_token,
            tx,
            &reason,
            WOULD_FAIL_DETAIL,
        )
        .await),
        Err(e) => Err(e.into()),
    }
}

/// What a sponsored broadcast needs beyond a plain one: who pays, with what, the very
/// transaction (to estimate it again just before it is sent), and the budget.
pub(crate) struct SponsoredSend {
    pub(crate) fee_payer: Address,
    pub(crate) fee_token: Address,
    pub(crate) tx: TempoTransaction,
    pub(crate) budget: SponsorBudget,
}

/// How long a sponsored settlement waits for another one of the same sender to finish.
const SENDER_WAIT: Duration = Duration::from_secs(10);
/// How often it looks.
const SENDER_POLL: Duration = Duration::from_millis(25);

/// A sponsored transaction about to be sent: the sender's turn (one sponsored settlement
/// per sender at a time, across every instance sharing the store) and its fee counted
/// against the budgets.
///
/// Serializing per sender is what lets the estimate that runs inside the turn see the
/// sender's balance after the previous transaction: of concurrent payments from an account
/// that can pay once, one is sent and the others are refused before the fee payer signs
/// anything away.
pub(crate) struct SponsorHold {
    store: Arc<dyn ReplayStore>,
    turn_key: String,
    owner: String,
    scopes: [(String, u64); 2],
    window_start: i64,
    window_end: OffsetDateTime,
    reserved: u64,
}

impl SponsorHold {
    /// Takes the sender's turn, estimates the transaction again, and counts its most against
    /// the budgets. `owner` is the transaction's claim key; the turn lasts at most until the
    /// transaction cannot be mined (`valid_before`), so a crash frees it by then.
    pub(crate) async fn take(
        store: Arc<dyn ReplayStore>,
        chain: &ChainClient,
        sponsored: &SponsoredSend,
        sender: Address,
        owner: &str,
        valid_before: u64,
    ) -> Result<Self, ChargeError> {
        let turn_key = format!("sponsor-turn:{sender:#x}");
        let claim = || NewClaim {
            key: &turn_key,
            owner,
            state: ClaimState::Held,
            expires_at: unix_time(valid_before) + CLAIM_MARGIN,
            valid_before: Some(valid_before),
        };
        let waited = Instant::now();
        while let Claim::Existing(_) = store.claim(claim()).await? {
            if waited.elapsed() >= SENDER_WAIT {
                return Err(ChargeError::Deferred {
                    detail: "Another sponsored payment from this account is being settled; \
                             nothing was charged. Retry shortly."
                        .into(),
                    retry_after: 1,
                });
            }
            tokio::time::sleep(SENDER_POLL).await;
        }
        let mut hold = Self {
            store,
            turn_key,
            owner: owner.to_owned(),
            scopes: [(format!("sender:{sender:#x}"), 0), ("total".to_owned(), 0)],
            window_start: 0,
            window_end: OffsetDateTime::UNIX_EPOCH,
            reserved: 0,
        };
        match hold.admit(chain, sponsored, sender).await {
            Ok(()) => Ok(hold),
            Err(e) => {
                hold.release_turn().await;
                Err(e)
            }
        }
    }

    async fn admit(
        &mut self,
        chain: &ChainClient,
        sponsored: &SponsoredSend,
        sender: Address,
    ) -> Result<(), ChargeError> {
        let tx = &sponsored.tx;
        // Inside the turn, the estimate sees what the sender's earlier payments left.
        check_gas(chain, sponsored, sender).await?;
        let budget = &sponsored.budget;
        let window = i64::try_from(budget.window.as_secs().max(1)).unwrap_or(i64::MAX);
        let now = OffsetDateTime::now_utc().unix_timestamp();
        self.window_start = now - now.rem_euclid(window);
        self.window_end = OffsetDateTime::from_unix_timestamp(self.window_start + window)
            .unwrap_or(OffsetDateTime::UNIX_EPOCH);
        self.scopes[0].1 = fee_units(budget.per_sender);
        self.scopes[1].1 = fee_units(budget.total);
        self.reserved = fee_units(u128::from(tx.gas_limit).saturating_mul(tx.max_fee_per_gas));
        let scopes = self.scope_refs();
        let spend = FeeSpend {
            scopes: &scopes,
            window_start: self.window_start,
            window_end: self.window_end,
            amount: self.reserved,
        };
        if self.store.spend(spend).await? {
            return Ok(());
        }
        let retry_after = u32::try_from(self.window_start + window - now).unwrap_or(u32::MAX);
        tracing::warn!(%sender, reserved = self.reserved, retry_after, "sponsored fee budget spent for this window");
        Err(ChargeError::Deferred {
            detail: format!(
                "Fee sponsorship is at its limit for now; nothing was charged. Retry in \
                 {retry_after} s, or pay the fee yourself if the server offers it."
            ),
            retry_after,
        })
    }

    fn scope_refs(&self) -> [(&str, u64); 2] {
        [
            (self.scopes[0].0.as_str(), self.scopes[0].1),
            (self.scopes[1].0.as_str(), self.scopes[1].1),
        ]
    }

    /// Ends the hold with the transaction's outcome: the budgets keep what it really cost
    /// (nothing if it was never mined), and the sender's turn passes on. An unknown outcome
    /// keeps both until the transaction can no longer be mined.
    pub(crate) async fn end(self, outcome: &Outcome) {
        let refund = match outcome {
            Outcome::Mined(receipt) => {
                let cost =
                    u128::from(receipt.gas_used()).saturating_mul(receipt.effective_gas_price());
                self.reserved.saturating_sub(fee_units(cost))
            }
            Outcome::Refused(_) | Outcome::Expired => self.reserved,
            Outcome::Unknown(_) => return,
        };
        if refund > 0 {
            let scopes = self.scope_refs();
            let spend = FeeSpend {
                scopes: &scopes,
                window_start: self.window_start,
                window_end: self.window_end,
                amount: self.reserved,
            };
            if let Err(e) = self.store.refund(spend, refund).await {
                // The budget counts more than was spent until its window ends: safe.
                tracing::warn!(reason = %e, "could not return unspent sponsored fees to the budget");
            }
        }
        self.release_turn().await;
    }

    async fn release_turn(&self) {
        release(
            self.store.as_ref(),
            &self.turn_key,
            &self.owner,
            ClaimState::Held,
        )
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_priority_fee_cap_follows_the_chain() {
        let policy = SponsorPolicy::default();
        assert_eq!(policy.priority_fee_cap(42431), 50_000_000_000, "Moderato");
        assert_eq!(policy.priority_fee_cap(4217), 10_000_000_000, "mainnet");
        assert_eq!(policy.priority_fee_cap(31337), 10_000_000_000, "local");
        let set = SponsorPolicy {
            max_priority_fee_per_gas: Some(7),
            ..SponsorPolicy::default()
        };
        assert_eq!(set.priority_fee_cap(42431), 7, "a configured cap wins");
    }

    #[test]
    fn fees_count_in_fee_token_units_rounded_up() {
        assert_eq!(fee_units(0), 0);
        assert_eq!(fee_units(1), 1);
        assert_eq!(fee_units(1_000_000_000_000), 1);
        assert_eq!(fee_units(1_000_000_000_001), 2);
        assert_eq!(fee_units(u128::MAX), u64::MAX);
    }
}
