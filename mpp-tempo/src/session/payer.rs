//! [`TempoSessionPayer`]: the payer side of Tempo sessions (feature `client`), as an
//! [`mpp_core::Payer`] and [`mpp_core::payer::SessionPayer`]. It opens one channel per
//! (chain, escrow, payee, token), pays each request with a cumulative voucher, answers the
//! `payment-need-voucher` events of metered streams (topping up first when the deposit is
//! short), closes, and keeps the totals the server's receipts report.
//!
//! What it sends is what the official clients send (sdk-behaviour.md §3.1, §3.3):
//!
//! - **open** (no channel for the challenge's terms yet): a signed `0x76` transaction with an
//!   expiring nonce (`validBefore = now + 25 s`, capped by the challenge's expiry) holding the
//!   escrow's open calls (v1: `approve` + `open`; v2: `open` on the precompile; the `0x78`
//!   fee-payer envelope when the request says `feePayer`), and a first voucher for the
//!   request's `amount`. The deposit is `min(suggestedDeposit, max_deposit)`, or
//!   `max_deposit` without a suggestion;
//! - **voucher** (a channel exists): `cumulative + amount`;
//! - for a need-voucher event ([`TempoSessionPayer::voucher_for`]): `max(cumulative,
//!   requiredCumulative)`, after a **topUp** when that exceeds the deposit and `max_deposit`
//!   allows it;
//! - **close** ([`TempoSessionPayer::close_credential`]): `max(spent, acceptedCumulative)` of
//!   the receipts seen.
//!
//! The escrow must be the protocol's default on the challenge's chain (the precompile for
//! v2, the deployed `TempoStreamChannel` on mainnet and Moderato for v1), the one pinned with
//! [`TempoSessionPayer::escrow`], or any with [`TempoSessionPayer::allow_custom_escrow`].
//!
//! ```no_run
//! use mpp_core::{Challenge, Payer};
//! use mpp_tempo::session::TempoSessionPayer;
//!
//! # async fn demo(www_authenticate: &str) -> Result<(), Box<dyn std::error::Error>> {
//! let signer = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d".parse()?;
//! let payer = TempoSessionPayer::new(signer, "http://127.0.0.1:8545", 1_000_000)? // 1.00 at most
//!     .escrow("0xe1c4d3dce17bc111181ddf716f75bae49e61a336".parse()?)
//!     .open_gas_limit(2_000_000); // anvil underestimates approve + open
//! let offered = Challenge::parse_all(www_authenticate)?;
//! if let Some(challenge) = payer.choose(&offered) {
//!     let credential = payer.pay(challenge).await?; // open, then one voucher per call
//!     println!("Authorization: {}", credential.to_authorization());
//! }
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::num::NonZeroU64;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use alloy::primitives::{Address, B256};
use alloy::signers::local::PrivateKeySigner;
use mpp_core::payer::{PayError, Payer, SessionPayer};
use mpp_core::{BoxFuture, Challenge, Credential, Receipt};
use serde_json::Value;
use tempo_primitives::transaction::{Call, TEMPO_EXPIRING_NONCE_KEY, TempoTransaction};
use time::OffsetDateTime;

use super::client::{
    OpenParams, SessionChannel, SessionSigner, SignedChannelTx, open_calls, top_up_calls,
};
use super::receipt::{SESSION_INTENT, SessionReceipt};
use super::terms::TempoSessionRequest;
use super::voucher::VoucherDomain;
use crate::METHOD_NAME;
use crate::chain::{ChainClient, DEFAULT_RPC_TIMEOUT};
use crate::hex::{parse_amount, parse_b256};

/// How long a signed open or top-up transaction stays valid (the SDKs' 25 s).
const TX_VALIDITY: Duration = Duration::from_secs(25);

/// The priority fee of channel transactions (1 gwei, or less if the maximum is lower).
const PRIORITY_FEE: u128 = 1_000_000_000;

/// Which channel a challenge pays into: one per (chain, escrow, payee, token).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct ChannelKey {
    chain_id: u64,
    escrow: Address,
    payee: Address,
    token: Address,
}

/// What the payer knows about one of its channels.
#[derive(Debug, Clone)]
struct Entry {
    channel: SessionChannel,
    domain: VoucherDomain,
    token: Address,
    /// The first deposit (the size of a top-up, at least).
    initial_deposit: u128,
    deposit: u128,
    /// The highest voucher signed.
    cumulative: u128,
    /// The highest `spent` a receipt reported.
    spent: u128,
    /// The highest `acceptedCumulative` a receipt reported.
    accepted: u128,
    /// A receipt for the channel was seen (the open went through).
    confirmed: bool,
    /// A close was signed: the next receipt with a transaction ends the channel.
    closing: bool,
    last_receipt: Option<SessionReceipt>,
}

/// A payer's view of one of its channels ([`TempoSessionPayer::channel`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelSnapshot {
    /// The channel id.
    pub channel_id: B256,
    /// The deposit, as this payer funded it (open and top-ups signed).
    pub deposit: u128,
    /// The highest voucher this payer signed.
    pub cumulative: u128,
    /// The highest `spent` a receipt reported.
    pub spent: u128,
    /// The highest `acceptedCumulative` a receipt reported.
    pub accepted: u128,
    /// The last receipt seen for the channel.
    pub last_receipt: Option<SessionReceipt>,
}

/// The credentials that answer a `payment-need-voucher` event, to send in this order.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionVoucher {
    /// A `topUp` to send first, when the voucher exceeds the deposit.
    pub top_up: Option<Credential>,
    /// The `voucher`.
    pub voucher: Credential,
}

impl SessionVoucher {
    /// The credentials in sending order.
    pub fn into_credentials(self) -> Vec<Credential> {
        self.top_up.into_iter().chain(Some(self.voucher)).collect()
    }
}

/// Pays Tempo `session` challenges (v1 and v2) from one key; see the
/// [session module](crate::session).
/// Share one per payer (behind an `Arc`): it holds the channels.
pub struct TempoSessionPayer {
    signer: PrivateKeySigner,
    chain: ChainClient,
    max_deposit: u128,
    escrow: Option<Address>,
    allow_custom_escrow: bool,
    open_gas_limit: Option<u64>,
    top_up_gas_limit: Option<u64>,
    fee_token: Option<Address>,
    node_chain_id: tokio::sync::OnceCell<u64>,
    /// Serializes opens and top-ups (each waits for the node); vouchers never wait for it.
    funding: tokio::sync::Mutex<()>,
    channels: Mutex<HashMap<ChannelKey, Entry>>,
}

impl std::fmt::Debug for TempoSessionPayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TempoSessionPayer")
            .field("address", &self.signer.address())
            .field("max_deposit", &self.max_deposit)
            .field("escrow", &self.escrow)
            .field("allow_custom_escrow", &self.allow_custom_escrow)
            .finish_non_exhaustive()
    }
}

impl TempoSessionPayer {
    /// A payer signing with `signer`, talking to the node at `rpc_url` (`http://` or
    /// `https://`), locking at most `max_deposit` base units in a channel.
    pub fn new(
        signer: PrivateKeySigner,
        rpc_url: &str,
        max_deposit: u128,
    ) -> Result<Self, PayError> {
        let chain = ChainClient::new(rpc_url, DEFAULT_RPC_TIMEOUT)
            .map_err(|e| PayError::new(format!("tempo node {rpc_url}: {e}")))?;
        Ok(Self::with_chain(signer, chain, max_deposit))
    }

    /// A payer talking through `chain` (e.g. one trusting a private CA).
    pub fn with_chain(signer: PrivateKeySigner, chain: ChainClient, max_deposit: u128) -> Self {
        Self {
            signer,
            chain,
            max_deposit,
            escrow: None,
            allow_custom_escrow: false,
            open_gas_limit: None,
            top_up_gas_limit: None,
            fee_token: None,
            node_chain_id: tokio::sync::OnceCell::new(),
            funding: tokio::sync::Mutex::new(()),
            channels: Mutex::new(HashMap::new()),
        }
    }

    /// Pays only into the escrow at `escrow` (a challenge naming another is not supported).
    /// Wins over [`allow_custom_escrow`](Self::allow_custom_escrow).
    #[must_use]
    pub fn escrow(mut self, escrow: Address) -> Self {
        self.escrow = Some(escrow);
        self
    }

    /// Pays into whatever escrow a challenge names, not only the protocol's default on its
    /// chain (default `false`; a local chain has no default v1 escrow).
    #[must_use]
    pub fn allow_custom_escrow(mut self, allow: bool) -> Self {
        self.allow_custom_escrow = allow;
        self
    }

    /// The gas limit of open transactions (default: the node's estimate + 25 % + 50 000).
    /// anvil estimates only the last call of a batch: a v1 open (approve + open, about
    /// 1.6 M gas) needs an explicit limit there, e.g. 2 000 000.
    #[must_use]
    pub fn open_gas_limit(mut self, gas: u64) -> Self {
        self.open_gas_limit = Some(gas);
        self
    }

    /// The gas limit of top-up transactions (default: estimate + 25 % + 50 000; on anvil
    /// e.g. 1 000 000).
    #[must_use]
    pub fn top_up_gas_limit(mut self, gas: u64) -> Self {
        self.top_up_gas_limit = Some(gas);
        self
    }

    /// The token the payer's own open and top-up transactions pay fees in (default: the
    /// request's `methodDetails.feeToken`, else its `currency`, as the mppx client does).
    /// Ignored when the server sponsors fees.
    #[must_use]
    pub fn fee_token(mut self, token: Address) -> Self {
        self.fee_token = Some(token);
        self
    }

    /// The payer's address.
    pub fn address(&self) -> Address {
        self.signer.address()
    }

    /// The channel `challenge` would pay into, if this payer has one.
    pub fn channel(&self, challenge: &Challenge) -> Option<ChannelSnapshot> {
        let terms = self.terms(challenge).ok()?;
        let channels = self.channels().ok()?;
        channels.get(&terms.key).map(|e| ChannelSnapshot {
            channel_id: e.channel.channel_id,
            deposit: e.deposit,
            cumulative: e.cumulative,
            spent: e.spent,
            accepted: e.accepted,
            last_receipt: e.last_receipt.clone(),
        })
    }

    /// What [`Payer::pay`] sends: an `open` when there is no channel for the challenge's
    /// terms, a `voucher` for `cumulative + amount` otherwise. Fails when that voucher would
    /// exceed the deposit (a stream's [`voucher_for`](Self::voucher_for) tops up; a request
    /// does not).
    pub async fn pay_session(&self, challenge: &Challenge) -> Result<Credential, PayError> {
        let terms = self.terms(challenge)?;
        if let Some(credential) = self.next_voucher(challenge, &terms)? {
            return Ok(credential);
        }
        let _funding = self.funding.lock().await;
        // Another call may have opened it while this one waited.
        if let Some(credential) = self.next_voucher(challenge, &terms)? {
            return Ok(credential);
        }
        self.open(challenge, &terms).await
    }

    /// Answers a `payment-need-voucher` event asking for `required_cumulative` on the
    /// channel of `challenge`: a voucher for `max(cumulative signed, required)`, and first a
    /// top-up when that exceeds the deposit (by at least the first deposit, within
    /// `max_deposit`). Fails when `max_deposit` does not allow it.
    pub async fn voucher_for(
        &self,
        challenge: &Challenge,
        required_cumulative: u128,
    ) -> Result<SessionVoucher, PayError> {
        let terms = self.terms(challenge)?;
        let _funding = self.funding.lock().await;
        let entry = self
            .entry(&terms.key)?
            .ok_or_else(|| no_channel(challenge))?;
        let target = entry.cumulative.max(required_cumulative);
        let top_up = if target > entry.deposit {
            if target > self.max_deposit {
                return Err(PayError::new(format!(
                    "the server asks for a voucher of {target} on channel {:#x}, above this \
                     payer's max_deposit of {} (deposit {})",
                    entry.channel.channel_id, self.max_deposit, entry.deposit
                )));
            }
            let room = self.max_deposit - entry.deposit;
            let additional = (target - entry.deposit)
                .max(entry.initial_deposit)
                .min(room);
            Some(self.top_up(challenge, &terms, &entry, additional).await?)
        } else {
            None
        };
        let mut channels = self.channels()?;
        let entry = channels
            .get_mut(&terms.key)
            .filter(|e| e.channel.channel_id == entry.channel.channel_id)
            .ok_or_else(|| no_channel(challenge))?;
        if let Some((_, additional)) = &top_up {
            entry.deposit = entry.deposit.saturating_add(*additional);
        }
        let target = entry.cumulative.max(required_cumulative);
        let signer = SessionSigner::new(self.signer.clone(), entry.domain);
        let payload = signer
            .voucher(&entry.channel, target)
            .map_err(PayError::new)?;
        entry.cumulative = target;
        Ok(SessionVoucher {
            top_up: top_up.map(|(credential, _)| credential),
            voucher: credential(challenge, &signer, &payload),
        })
    }

    /// A `close` credential for the channel of `challenge`, for `max(spent,
    /// acceptedCumulative)` of the receipts seen (what the server may capture). The channel
    /// is forgotten once a receipt with the close transaction is acknowledged.
    pub async fn close_credential(&self, challenge: &Challenge) -> Result<Credential, PayError> {
        let terms = self.terms(challenge)?;
        let mut channels = self.channels()?;
        let entry = channels
            .get_mut(&terms.key)
            .ok_or_else(|| no_channel(challenge))?;
        let amount = entry.spent.max(entry.accepted);
        let signer = SessionSigner::new(self.signer.clone(), entry.domain);
        // v2 also carries the `closeSignature` newer servers require.
        let payload = signer
            .close(&entry.channel, amount, true)
            .map_err(PayError::new)?;
        entry.closing = true;
        Ok(credential(challenge, &signer, &payload))
    }

    /// Records a receipt (a `Payment-Receipt` header or a `payment-receipt` event): the
    /// channel's `spent` and `acceptedCumulative` (each only ever grows). Fails when the
    /// receipt claims more was accepted than this payer ever signed. A receipt for a
    /// channel this payer does not know is ignored.
    pub fn acknowledge(&self, receipt: &SessionReceipt) -> Result<(), PayError> {
        let mut channels = self.channels()?;
        let Some((key, entry)) = channels
            .iter_mut()
            .find(|(_, e)| e.channel.channel_id == receipt.channel_id)
        else {
            tracing::debug!(channel = %receipt.channel_id, "receipt for an unknown channel ignored");
            return Ok(());
        };
        if receipt.accepted_cumulative > entry.cumulative {
            return Err(PayError::new(format!(
                "the server's receipt says {} was accepted on channel {:#x}, but this payer \
                 signed only {}",
                receipt.accepted_cumulative, receipt.channel_id, entry.cumulative
            )));
        }
        entry.spent = entry.spent.max(receipt.spent);
        entry.accepted = entry.accepted.max(receipt.accepted_cumulative);
        entry.confirmed = true;
        entry.last_receipt = Some(receipt.clone());
        if entry.closing && receipt.tx_hash.is_some() {
            let key = *key;
            channels.remove(&key);
            tracing::debug!(channel = %receipt.channel_id, "channel closed");
        }
        Ok(())
    }

    /// Forgets the channel `challenge` pays into (the next payment opens a new one).
    pub fn forget(&self, challenge: &Challenge) {
        if let (Ok(terms), Ok(mut channels)) = (self.terms(challenge), self.channels()) {
            channels.remove(&terms.key);
        }
    }

    fn channels(&self) -> Result<MutexGuard<'_, HashMap<ChannelKey, Entry>>, PayError> {
        self.channels
            .lock()
            .map_err(|_| PayError::new("the session payer's state is poisoned"))
    }

    fn entry(&self, key: &ChannelKey) -> Result<Option<Entry>, PayError> {
        Ok(self.channels()?.get(key).filter(|e| !e.closing).cloned())
    }

    /// The next request's voucher on an existing channel, `None` without one.
    fn next_voucher(
        &self,
        challenge: &Challenge,
        terms: &Terms,
    ) -> Result<Option<Credential>, PayError> {
        let mut channels = self.channels()?;
        let Some(entry) = channels.get_mut(&terms.key).filter(|e| !e.closing) else {
            return Ok(None);
        };
        let amount = terms.request.amount;
        let target = entry
            .cumulative
            .checked_add(amount)
            .ok_or_else(|| PayError::new("the channel's cumulative amount overflows: close it"))?;
        if target > entry.deposit {
            return Err(PayError::new(format!(
                "channel {:#x} is exhausted: a voucher for {target} exceeds its deposit of {}; \
                 close it (the next payment opens a new channel)",
                entry.channel.channel_id, entry.deposit
            )));
        }
        let signer = SessionSigner::new(self.signer.clone(), entry.domain);
        let payload = signer
            .voucher(&entry.channel, target)
            .map_err(PayError::new)?;
        entry.cumulative = target;
        Ok(Some(credential(challenge, &signer, &payload)))
    }

    async fn open(&self, challenge: &Challenge, terms: &Terms) -> Result<Credential, PayError> {
        let request = &terms.request;
        self.check_chain(terms.domain.chain_id()).await?;
        let deposit = request
            .suggested_deposit
            .map_or(self.max_deposit, |s| s.min(self.max_deposit));
        if deposit < request.amount {
            return Err(PayError::new(format!(
                "a deposit of {deposit} (max_deposit {}) cannot pay one unit of {}",
                self.max_deposit, request.amount
            )));
        }
        let params = OpenParams {
            payee: request.recipient,
            operator: request.operator(),
            token: request.currency,
            deposit,
            salt: B256::random(),
            authorized_signer: self.address(),
        };
        let calls = open_calls(&terms.domain, &params).map_err(PayError::new)?;
        let sponsored = request.method_details.fee_payer;
        let now = OffsetDateTime::now_utc().unix_timestamp();
        let mut valid_before = now.saturating_add(TX_VALIDITY.as_secs() as i64);
        if let Some(expires) = expires(challenge)
            && expires > now
        {
            valid_before = valid_before.min(expires);
        }
        let tx = self
            .channel_tx(request, calls, self.open_gas_limit, valid_before)
            .await?;
        let signer = SessionSigner::new(self.signer.clone(), terms.domain);
        let SignedChannelTx {
            channel, payload, ..
        } = signer
            .open(tx, &params, request.amount, sponsored)
            .map_err(PayError::new)?;
        tracing::debug!(channel = %channel.channel_id, deposit, "opening a channel");
        self.channels()?.insert(
            terms.key,
            Entry {
                channel,
                domain: terms.domain,
                token: request.currency,
                initial_deposit: deposit,
                deposit,
                cumulative: request.amount,
                spent: 0,
                accepted: 0,
                confirmed: false,
                closing: false,
                last_receipt: None,
            },
        );
        Ok(credential(challenge, &signer, &payload))
    }

    /// A signed `topUp` of `additional` (the caller holds `funding`).
    async fn top_up(
        &self,
        challenge: &Challenge,
        terms: &Terms,
        entry: &Entry,
        additional: u128,
    ) -> Result<(Credential, u128), PayError> {
        self.check_chain(terms.domain.chain_id()).await?;
        let calls = top_up_calls(&entry.domain, &entry.channel, entry.token, additional)
            .map_err(PayError::new)?;
        // Not capped by the challenge's expiry: a stream's challenge may have expired.
        let valid_before = OffsetDateTime::now_utc()
            .unix_timestamp()
            .saturating_add(TX_VALIDITY.as_secs() as i64);
        let tx = self
            .channel_tx(&terms.request, calls, self.top_up_gas_limit, valid_before)
            .await?;
        let signer = SessionSigner::new(self.signer.clone(), entry.domain);
        let sponsored = terms.request.method_details.fee_payer;
        let signed = signer
            .top_up(tx, &entry.channel, additional, sponsored)
            .map_err(PayError::new)?;
        tracing::debug!(channel = %entry.channel.channel_id, additional, "topping up a channel");
        Ok((credential(challenge, &signer, &signed.payload), additional))
    }

    /// An unsigned channel transaction with an expiring nonce.
    async fn channel_tx(
        &self,
        request: &TempoSessionRequest,
        calls: Vec<Call>,
        gas_limit: Option<u64>,
        valid_before: i64,
    ) -> Result<TempoTransaction, PayError> {
        let sponsored = request.method_details.fee_payer;
        let max_fee_per_gas = self
            .chain
            .suggested_max_fee_per_gas()
            .await
            .map_err(|e| PayError::new(format!("tempo node: {e}")))?;
        let fee_token = self
            .fee_token
            .or(request.method_details.fee_token)
            .unwrap_or(request.currency);
        let mut tx = TempoTransaction {
            chain_id: request.method_details.chain_id,
            fee_token: (!sponsored).then_some(fee_token),
            max_priority_fee_per_gas: PRIORITY_FEE.min(max_fee_per_gas),
            max_fee_per_gas,
            gas_limit: 0,
            calls,
            nonce_key: TEMPO_EXPIRING_NONCE_KEY,
            nonce: 0,
            valid_before: u64::try_from(valid_before).ok().and_then(NonZeroU64::new),
            ..Default::default()
        };
        tx.gas_limit = match gas_limit {
            Some(gas) => gas,
            None => {
                // Sponsored: the sender pays no fee, so the estimate must not ask it to.
                let fee_payer = sponsored.then_some(Address::ZERO);
                let gas = self
                    .chain
                    .estimate_gas(self.address(), &tx, fee_payer)
                    .await
                    .map_err(|e| {
                        PayError::new(format!(
                            "the channel transaction cannot be estimated (is the payer \
                             funded in {}?): {e}",
                            request.currency
                        ))
                    })?;
                gas.saturating_mul(5) / 4 + 50_000
            }
        };
        Ok(tx)
    }

    /// Refuses to sign for a chain the node does not serve.
    async fn check_chain(&self, chain_id: u64) -> Result<(), PayError> {
        let node = self
            .node_chain_id
            .get_or_try_init(|| self.chain.chain_id())
            .await
            .map_err(|e| PayError::new(format!("tempo node: {e}")))?;
        if *node != chain_id {
            return Err(PayError::new(format!(
                "the challenge is for chain {chain_id}, but the payer's node serves chain {node}"
            )));
        }
        Ok(())
    }

    /// The terms of a Tempo session challenge this payer may pay.
    fn terms(&self, challenge: &Challenge) -> Result<Terms, PayError> {
        if challenge.method != METHOD_NAME || challenge.intent != SESSION_INTENT {
            return Err(PayError::new(format!(
                "a `{}`/`{}` challenge is not a tempo session",
                challenge.method, challenge.intent
            )));
        }
        let request = TempoSessionRequest::from_map(challenge.request.value())
            .map_err(|e| PayError::new(format!("bad session request: {e}")))?;
        let details = &request.method_details;
        let advertised = details.escrow_contract;
        let allowed = match self.escrow {
            Some(pinned) => pinned == advertised,
            None => {
                self.allow_custom_escrow
                    || request.protocol().default_escrow(details.chain_id) == Some(advertised)
            }
        };
        if !allowed {
            return Err(PayError::new(format!(
                "the escrow {advertised} on chain {} is not one this payer uses: pin it with \
                 `escrow(..)` or `allow_custom_escrow(true)`",
                details.chain_id
            )));
        }
        if request.amount > self.max_deposit {
            return Err(PayError::new(format!(
                "one unit costs {}, above this payer's max_deposit of {}",
                request.amount, self.max_deposit
            )));
        }
        let key = ChannelKey {
            chain_id: details.chain_id,
            escrow: advertised,
            payee: request.recipient,
            token: request.currency,
        };
        let domain = request.voucher_domain();
        Ok(Terms {
            request,
            key,
            domain,
        })
    }
}

/// A parsed challenge's terms and the channel they select.
struct Terms {
    request: TempoSessionRequest,
    key: ChannelKey,
    domain: VoucherDomain,
}

fn no_channel(challenge: &Challenge) -> PayError {
    PayError::new(format!(
        "no open channel for the terms of challenge {} (pay a request first)",
        challenge.id
    ))
}

fn expires(challenge: &Challenge) -> Option<i64> {
    let expires = challenge.expires.as_deref()?;
    mpp_core::expiry::parse_timestamp(expires)
        .ok()
        .map(OffsetDateTime::unix_timestamp)
}

fn credential(
    challenge: &Challenge,
    signer: &SessionSigner,
    payload: &super::SessionPayload,
) -> Credential {
    Credential::new(challenge.clone(), payload.to_json()).with_source(signer.source())
}

/// `requiredCumulative` and `channelId` of a `payment-need-voucher` event's data.
fn parse_need_voucher(event: &str) -> Result<(u128, Option<B256>), PayError> {
    let bad = |what: &str| PayError::new(format!("malformed payment-need-voucher event: {what}"));
    let json: Value = serde_json::from_str(event).map_err(|_| bad("not JSON"))?;
    let required = match json.get("requiredCumulative") {
        Some(Value::String(s)) => parse_amount(s),
        Some(Value::Number(n)) => n.as_u64().map(u128::from),
        _ => None,
    }
    .ok_or_else(|| bad("requiredCumulative"))?;
    let channel_id = match json.get("channelId") {
        None => None,
        Some(v) => Some(
            v.as_str()
                .and_then(parse_b256)
                .ok_or_else(|| bad("channelId"))?,
        ),
    };
    Ok((required, channel_id))
}

impl Payer for TempoSessionPayer {
    fn supports(&self, challenge: &Challenge) -> bool {
        self.terms(challenge).is_ok()
    }

    fn pay<'a>(&'a self, challenge: &'a Challenge) -> BoxFuture<'a, Result<Credential, PayError>> {
        Box::pin(self.pay_session(challenge))
    }
}

impl SessionPayer for TempoSessionPayer {
    fn need_voucher<'a>(
        &'a self,
        challenge: &'a Challenge,
        event: &'a str,
    ) -> BoxFuture<'a, Result<Vec<Credential>, PayError>> {
        Box::pin(async move {
            let (required, channel_id) = parse_need_voucher(event)?;
            if let (Some(asked), Some(ours)) = (channel_id, self.channel(challenge))
                && asked != ours.channel_id
            {
                return Err(PayError::new(format!(
                    "the server asks for a voucher on channel {asked:#x}, but this stream pays \
                     into {:#x}",
                    ours.channel_id
                )));
            }
            Ok(self
                .voucher_for(challenge, required)
                .await?
                .into_credentials())
        })
    }

    fn close<'a>(
        &'a self,
        challenge: &'a Challenge,
    ) -> BoxFuture<'a, Result<Credential, PayError>> {
        Box::pin(self.close_credential(challenge))
    }

    fn record_receipt(&self, _challenge: &Challenge, receipt: &Receipt) -> Result<(), PayError> {
        if receipt.extra.get("intent").and_then(Value::as_str) != Some(SESSION_INTENT) {
            return Ok(());
        }
        let json = serde_json::to_value(receipt)
            .map_err(|e| PayError::new(format!("unreadable session receipt: {e}")))?;
        let receipt = SessionReceipt::from_json(&json).map_err(PayError::new)?;
        self.acknowledge(&receipt)
    }

    fn refused(&self, challenge: &Challenge, status: u16) {
        let Ok(terms) = self.terms(challenge) else {
            return;
        };
        let Ok(mut channels) = self.channels() else {
            return;
        };
        // 410: the server has no such channel (or it is closed). 402 before any receipt: the
        // open itself was refused.
        let drop = channels
            .get(&terms.key)
            .is_some_and(|e| status == 410 || (status == 402 && !e.confirmed));
        if drop && let Some(entry) = channels.remove(&terms.key) {
            tracing::info!(channel = %entry.channel.channel_id, status, "channel dropped after a refusal");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn need_voucher_events_parse_leniently_and_refuse_garbage() {
        let id = format!("0x{}", "ab".repeat(32));
        let event = format!(
            r#"{{"channelId":"{id}","requiredCumulative":"250025","acceptedCumulative":"250000","deposit":"500000"}}"#
        );
        let (required, channel) = parse_need_voucher(&event).unwrap();
        assert_eq!(required, 250_025);
        assert_eq!(channel, Some(B256::repeat_byte(0xab)));
        assert_eq!(
            parse_need_voucher(r#"{"requiredCumulative":7}"#).unwrap(),
            (7, None)
        );
        for bad in [
            "",
            "null",
            r#"{"requiredCumulative":"-1"}"#,
            r#"{"requiredCumulative":"1e9"}"#,
            r#"{"requiredCumulative":"5","channelId":"0x12"}"#,
            r#"{"channelId":"0x00"}"#,
        ] {
            assert!(parse_need_voucher(bad).is_err(), "{bad}");
        }
    }
}
