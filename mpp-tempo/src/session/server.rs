//! [`TempoSessions`]: the server side of the `session` intent on one escrow. It verifies every
//! action (session.md §7, v1 and v2), keeps channel state in a [`ChannelStore`], reads the
//! chain only when it must (open, top-up, close, and a voucher whose cached chain state is
//! older than the TTL), and charges channels atomically.
//!
//! ```no_run
//! # async fn demo(tempo: mpp_tempo::Tempo) -> Result<(), mpp_tempo::session::SessionError> {
//! use mpp_tempo::session::SessionConfig;
//! let escrow = "0xe1c4d3dce17bc111181ddf716f75bae49e61a336";
//! let sessions = SessionConfig::v1(escrow.parse().unwrap())
//!     .build(&tempo)
//!     .await?;
//! let terms = sessions.request(25, "llm_token"); // 25 base units per token
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use alloy::eips::eip2718::Encodable2718;
use alloy::network::ReceiptResponse;
use alloy::primitives::{Address, B256, Bytes, TxKind, U256};
use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::SolCall;
use serde_json::Value;
use tempo_alloy::contracts::precompiles::ITIP20;
use tempo_alloy::rpc::TempoTransactionReceipt;
use tempo_primitives::transaction::{Call, TEMPO_EXPIRING_NONCE_KEY, TempoTransaction};
use time::OffsetDateTime;

use super::abi::v1::ITempoStreamChannel as V1;
use super::abi::v2::ITIP20ChannelReserve as V2;
use super::escrow::{Escrow, OnChainState};
use super::server_key::{ServerKey, ServerTxError};
use super::store::{
    ChangeWatch, Channel, ChannelIdentity, ChannelStore, ChannelStoreError, Charge, ChargeOutcome,
    CloseOutcome, DepositOutcome, NewChannel, OpenOutcome, ReserveOutcome, Voucher, VoucherOutcome,
};
use super::wake::Wakeups;
use super::{
    ChannelDescriptor, SessionError, SessionPayload, SessionProtocol, SessionReceipt,
    TIP20_CHANNEL_RESERVE, TempoSessionRequest, V1Channel, VoucherDomain, VoucherState,
    check_descriptor, check_open_amounts, check_source, check_voucher, close_capture,
    expiring_nonce_hash,
};
use crate::chain::{ChainClient, ChainError};
use crate::charge::pull::{PullTransaction, check_swap_prefix, decode_pull, is_swap_pair};
use crate::charge::settle::{Outcome, wait_for_outcome};
use crate::charge::sponsor::{SponsorHold, SponsoredSend, check_gas};
use crate::charge::{ChargeError, Sponsor};
use crate::store::ReplayStore;

/// How long a channel's on-chain state read for a voucher is trusted (mppx's default).
pub const DEFAULT_CHANNEL_STATE_TTL: Duration = Duration::from_secs(5);

/// How long a channel row is kept after its last change when it holds nothing unsettled.
pub const DEFAULT_CHANNEL_RETENTION: Duration = Duration::from_secs(90 * 24 * 3600);

/// The most channels whose chain state is cached at once (a bound on memory, not a tuning
/// knob: past it the cache starts over).
const MAX_CACHED_CHANNELS: usize = 100_000;

/// Read-after-write: how often and how long the state of a fresh open is read again until the
/// node shows it.
const READBACK_TRIES: u32 = 5;
const READBACK_PAUSE: Duration = Duration::from_millis(250);

/// Sessions on one escrow, configured with [`SessionConfig`] and built against a
/// [`crate::Tempo`] (its node, recipient, currency, sponsor and store).
pub struct SessionConfig {
    protocol: SessionProtocol,
    escrow: Address,
    server_key: Option<PrivateKeySigner>,
    fee_token: Option<Address>,
    channel_store: Option<Arc<dyn ChannelStore>>,
    min_voucher_delta: u128,
    suggested_deposit: Option<u128>,
    channel_state_ttl: Duration,
    retention: Duration,
    sponsor: bool,
    poll_interval: Duration,
}

impl std::fmt::Debug for SessionConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionConfig")
            .field("protocol", &self.protocol)
            .field("escrow", &self.escrow)
            .field(
                "server_key",
                &self.server_key.as_ref().map(PrivateKeySigner::address),
            )
            .field("min_voucher_delta", &self.min_voucher_delta)
            .finish_non_exhaustive()
    }
}

impl SessionConfig {
    fn new(protocol: SessionProtocol, escrow: Address) -> Self {
        Self {
            protocol,
            escrow,
            server_key: None,
            fee_token: None,
            channel_store: None,
            min_voucher_delta: 0,
            suggested_deposit: None,
            channel_state_ttl: DEFAULT_CHANNEL_STATE_TTL,
            retention: DEFAULT_CHANNEL_RETENTION,
            sponsor: true,
            poll_interval: super::method::DEFAULT_POLL_INTERVAL,
        }
    }

    /// v2: the TIP-20 channel reserve precompile (what mppx serves and its clients require).
    /// [`build`](Self::build) fails when the node has no code there.
    pub fn v2() -> Self {
        Self::new(SessionProtocol::V2, TIP20_CHANNEL_RESERVE)
    }

    /// v1: a `TempoStreamChannel` escrow contract at `escrow`.
    pub fn v1(escrow: Address) -> Self {
        Self::new(SessionProtocol::V1, escrow)
    }

    /// The key that settles and closes channels: the payee's key for v1 (the escrow pays only
    /// the payee's own calls), an operator's for v2 (then advertised as `operator`). It pays
    /// its own fees in `fee_token`, and must hold some at start-up. Without a key, channels
    /// are served but never settled or closed by this server.
    pub fn server_key(mut self, signer: PrivateKeySigner, fee_token: Address) -> Self {
        self.server_key = Some(signer);
        self.fee_token = Some(fee_token);
        self
    }

    /// Where channel state lives (default: the method's store when it is the embedded SQLite
    /// one; otherwise required). Several instances must share one.
    pub fn channel_store(mut self, store: Arc<dyn ChannelStore>) -> Self {
        self.channel_store = Some(store);
        self
    }

    /// `minVoucherDelta`, in base units (default 0).
    pub fn min_voucher_delta(mut self, delta: u128) -> Self {
        self.min_voucher_delta = delta;
        self
    }

    /// `suggestedDeposit`, in base units (default: none; clients use their own).
    pub fn suggested_deposit(mut self, deposit: u128) -> Self {
        self.suggested_deposit = Some(deposit);
        self
    }

    /// How long a voucher may rely on the channel's chain state read earlier (default 5 s).
    pub fn channel_state_ttl(mut self, ttl: Duration) -> Self {
        self.channel_state_ttl = ttl;
        self
    }

    /// How long a settled channel's row is kept after its last change (default 90 days).
    pub fn retention(mut self, retention: Duration) -> Self {
        self.retention = retention;
        self
    }

    /// Whether the method's fee payer (if any) sponsors open and top-up transactions
    /// (default: yes, when the method has one).
    pub fn sponsor(mut self, sponsor: bool) -> Self {
        self.sponsor = sponsor;
        self
    }

    /// How often a stream waiting for a voucher re-reads its channel when no wake-up comes
    /// (default 500 ms). Vouchers accepted by this process wake it at once, and so do those
    /// accepted by another instance on a Postgres store (`LISTEN/NOTIFY`); this is the
    /// fallback for other stores shared between processes.
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval;
        self
    }

    /// Checks the configuration against the node and returns the session service: the
    /// escrow has code, the server key (when set) holds fee tokens. Fails clearly otherwise.
    pub async fn build(self, tempo: &crate::Tempo) -> Result<TempoSessions, SessionError> {
        let config = |m: String| SessionError::Config(format!("SessionConfig: {m}"));
        let chain = tempo.chain().clone();
        let escrow = Escrow {
            protocol: self.protocol,
            address: self.escrow,
        };
        let has_code = escrow.has_code(&chain).await.map_err(unavailable)?;
        if !has_code {
            return Err(config(match self.protocol {
                SessionProtocol::V2 => format!(
                    "the node (chain {}) has no TIP-20 channel reserve precompile at {}: it \
                     predates T5. Use SessionConfig::v1(<TempoStreamChannel address>) there",
                    tempo.chain_id(),
                    self.escrow
                ),
                SessionProtocol::V1 => format!(
                    "no contract at the escrow address {} on chain {}",
                    self.escrow,
                    tempo.chain_id()
                ),
            }));
        }
        let server_key = match (self.server_key, self.fee_token) {
            (Some(signer), Some(fee_token)) => {
                let key = ServerKey::new(signer, fee_token);
                if self.protocol == SessionProtocol::V1 && key.address() != tempo.recipient() {
                    return Err(config(format!(
                        "a v1 escrow pays only calls from the payee: the server key {} is not \
                         the recipient {}",
                        key.address(),
                        tempo.recipient()
                    )));
                }
                let balance = key.fee_balance(&chain).await.map_err(unavailable)?;
                if balance.is_zero() {
                    return Err(config(format!(
                        "the server key {} holds no fee token {fee_token}: fund it to pay for \
                         settlements and closes",
                        key.address()
                    )));
                }
                Some(key)
            }
            _ => None,
        };
        let operator = match (self.protocol, &server_key) {
            (SessionProtocol::V2, Some(key)) if key.address() != tempo.recipient() => key.address(),
            _ => Address::ZERO,
        };
        let store = match self.channel_store {
            Some(store) => store,
            None => tempo.default_channel_store().ok_or_else(|| {
                config(
                    "channel_store is required when the method's store is not the embedded \
                     SQLite default"
                        .into(),
                )
            })?,
        };
        let sponsor = if self.sponsor {
            tempo.sponsor().cloned()
        } else {
            None
        };
        let wakeups = Arc::new(Wakeups::default());
        let waker = Arc::clone(&wakeups);
        let watch = store.watch(Arc::new(move |id| waker.wake(id)));
        tracing::info!(
            protocol = %self.protocol,
            escrow = %self.escrow,
            cross_instance_wakeups = watch.is_some(),
            server_key = ?server_key.as_ref().map(ServerKey::address),
            "tempo sessions ready"
        );
        Ok(TempoSessions {
            inner: Arc::new(Inner {
                chain,
                chain_id: tempo.chain_id(),
                escrow,
                recipient: tempo.recipient(),
                currency: tempo.currency(),
                operator,
                store,
                replay: tempo.replay_store(),
                sponsor,
                server_key,
                min_voucher_delta: self.min_voucher_delta,
                suggested_deposit: self.suggested_deposit,
                state_ttl: self.channel_state_ttl,
                retention: self.retention,
                broadcast_timeout: tempo.broadcast_timeout(),
                cache: StateCache::default(),
                decimals: tempo.decimals(),
                wakeups,
                _watch: watch,
                poll_interval: self.poll_interval,
            }),
        })
    }
}

pub(crate) struct Inner {
    pub(crate) chain: ChainClient,
    pub(crate) chain_id: u64,
    pub(crate) escrow: Escrow,
    recipient: Address,
    currency: Address,
    operator: Address,
    pub(crate) store: Arc<dyn ChannelStore>,
    pub(crate) replay: Arc<dyn ReplayStore>,
    sponsor: Option<Sponsor>,
    pub(crate) server_key: Option<ServerKey>,
    min_voucher_delta: u128,
    suggested_deposit: Option<u128>,
    state_ttl: Duration,
    retention: Duration,
    pub(crate) broadcast_timeout: Duration,
    pub(crate) cache: StateCache,
    pub(crate) decimals: u8,
    pub(crate) wakeups: Arc<Wakeups>,
    pub(crate) poll_interval: Duration,
    /// Forwards other instances' channel changes to `wakeups` while the service lives.
    _watch: Option<ChangeWatch>,
}

/// The session service (cheap to clone). See the [session module](crate::session).
#[derive(Clone)]
pub struct TempoSessions {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for TempoSessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TempoSessions")
            .field("protocol", &self.inner.escrow.protocol)
            .field("escrow", &self.inner.escrow.address)
            .finish_non_exhaustive()
    }
}

/// What a credential did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionAction {
    /// Opened a channel (and accepted its first voucher).
    Open,
    /// Added to the deposit: answered `204`, never served.
    TopUp,
    /// Accepted a voucher (or recognized the highest one again).
    Voucher,
    /// Closed the channel on chain: answered `204`, never served.
    Close,
}

impl SessionAction {
    /// `topUp` and `close` are management: answered by the server, the handler never runs.
    pub fn is_management(self) -> bool {
        matches!(self, Self::TopUp | Self::Close)
    }
}

/// Headroom a content request holds for its first unit ([`TempoSessions::verify_holding`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct HoldRequest<'a> {
    /// The reservation's name.
    pub(crate) reservation: &'a str,
    /// How much to hold.
    pub(crate) amount: u128,
    /// For how long.
    pub(crate) ttl: Duration,
}

/// A verified session credential.
#[derive(Debug, Clone)]
pub struct SessionVerified {
    /// What it did.
    pub action: SessionAction,
    /// The channel after it (nothing charged yet: see [`TempoSessions::charge`]).
    pub channel: Channel,
    /// The amount the receipt reports as accepted (the close voucher's on `close`).
    pub accepted_cumulative: u128,
    /// The transaction this request sent (open, top-up, close).
    pub tx_hash: Option<B256>,
}

impl SessionVerified {
    /// The receipt for the credential's `challenge_id`, with the channel's totals.
    pub fn receipt(&self, challenge_id: &str, now: OffsetDateTime) -> SessionReceipt {
        let receipt = SessionReceipt::new(
            challenge_id,
            self.channel.id(),
            self.accepted_cumulative,
            self.channel.spent,
            now,
        )
        .with_units(self.channel.units);
        match self.tx_hash {
            Some(hash) => receipt.with_tx_hash(hash),
            None => receipt,
        }
    }
}

/// The credential and its context, for [`TempoSessions::verify`].
#[derive(Debug, Clone, Copy)]
pub struct SessionCredential<'a> {
    /// The echoed request (already checked by the payment gate: HMAC, pinning, expiry).
    pub request: &'a TempoSessionRequest,
    /// The credential's `payload`.
    pub payload: &'a Value,
    /// The credential's `source` DID, when present.
    pub source: Option<&'a str>,
    /// The challenge's expiry (bounds a sponsored transaction's validity).
    pub expires: OffsetDateTime,
    /// Now, from the server's clock.
    pub now: OffsetDateTime,
}

fn unavailable(e: ChainError) -> SessionError {
    match e {
        ChainError::Uncertain(m) => SessionError::Pending(m),
        other => SessionError::Unavailable(other.to_string()),
    }
}

pub(crate) fn store_fault(e: ChannelStoreError) -> SessionError {
    match e {
        ChannelStoreError::Store(e) => SessionError::Unavailable(e.to_string()),
        ChannelStoreError::Invalid(m) => SessionError::Config(m),
    }
}

fn charge_error(e: ChargeError) -> SessionError {
    match e {
        ChargeError::VerificationFailed(m) if m.starts_with("sponsor policy") => {
            SessionError::BadRequest(m)
        }
        ChargeError::VerificationFailed(m) => SessionError::VerificationFailed(m),
        ChargeError::Deferred {
            detail,
            retry_after,
        } => SessionError::Deferred {
            detail,
            retry_after,
        },
        ChargeError::Pending(m) => SessionError::Pending(m),
        ChargeError::Config(m) => SessionError::Config(m),
        other => SessionError::Unavailable(other.to_string()),
    }
}

pub(crate) fn closed_error(channel: &Channel) -> SessionError {
    if channel.state.is_finalized() {
        SessionError::ChannelFinalized("the channel is finalized".into())
    } else {
        SessionError::ChannelFinalized("the channel is closing".into())
    }
}

/// Channel chain state read for vouchers, trusted for the TTL.
#[derive(Default)]
pub(crate) struct StateCache {
    entries: Mutex<HashMap<B256, (Instant, OnChainState)>>,
}

impl StateCache {
    fn fresh(&self, channel_id: B256, ttl: Duration) -> Option<OnChainState> {
        let entries = self.entries.lock().ok()?;
        entries
            .get(&channel_id)
            .filter(|(at, _)| at.elapsed() < ttl)
            .map(|(_, state)| *state)
    }

    pub(crate) fn put(&self, channel_id: B256, state: OnChainState) {
        if let Ok(mut entries) = self.entries.lock() {
            if entries.len() >= MAX_CACHED_CHANNELS {
                entries.clear();
            }
            entries.insert(channel_id, (Instant::now(), state));
        }
    }

    pub(crate) fn forget(&self, channel_id: B256) {
        if let Ok(mut entries) = self.entries.lock() {
            entries.remove(&channel_id);
        }
    }
}

/// A payer's open or top-up transaction, decoded and checked, ready to send.
struct PayerTx {
    raw: Vec<u8>,
    hash: B256,
    sender: Address,
    valid_before: u64,
    sponsored: Option<SponsoredSend>,
}

impl TempoSessions {
    /// The terms of a `session` challenge at `price` base units per `unit_type`.
    pub fn request(&self, price: u128, unit_type: &str) -> TempoSessionRequest {
        let i = &self.inner;
        let request = match i.escrow.protocol {
            SessionProtocol::V2 => {
                TempoSessionRequest::v2(i.chain_id, price, unit_type, i.currency, i.recipient)
            }
            SessionProtocol::V1 => TempoSessionRequest::v1(
                i.chain_id,
                i.escrow.address,
                price,
                unit_type,
                i.currency,
                i.recipient,
            ),
        };
        let mut request = request
            .with_min_voucher_delta(i.min_voucher_delta)
            .with_fee_payer(i.sponsor.is_some());
        if let Some(deposit) = i.suggested_deposit {
            request = request.with_suggested_deposit(deposit);
        }
        if !i.operator.is_zero() {
            request = request.with_operator(i.operator);
        }
        request
    }

    /// The channel store.
    pub fn store(&self) -> &Arc<dyn ChannelStore> {
        &self.inner.store
    }

    /// The escrow address.
    pub fn escrow(&self) -> Address {
        self.inner.escrow.address
    }

    /// The protocol version.
    pub fn protocol(&self) -> SessionProtocol {
        self.inner.escrow.protocol
    }

    /// The server key's address, when configured.
    pub fn server_key(&self) -> Option<Address> {
        self.inner.server_key.as_ref().map(ServerKey::address)
    }

    /// Verifies a session credential and applies it: opens the channel, adds the top-up,
    /// accepts the voucher, or closes the channel. Nothing is charged here: a content request
    /// then calls [`TempoSessions::charge`].
    pub async fn verify(
        &self,
        credential: SessionCredential<'_>,
    ) -> Result<SessionVerified, SessionError> {
        Ok(self.verify_holding(credential, None).await?.0)
    }

    /// [`Self::verify`], and for a new voucher also `hold` in the same store step: a content
    /// request paying with a voucher then writes once before its handler runs. The hold's
    /// outcome is `None` when nothing was held here (another action, an equal voucher): the
    /// caller reserves on its own then.
    pub(crate) async fn verify_holding(
        &self,
        credential: SessionCredential<'_>,
        hold: Option<HoldRequest<'_>>,
    ) -> Result<(SessionVerified, Option<ReserveOutcome>), SessionError> {
        let request = credential.request;
        request.validate()?;
        let i = &self.inner;
        let domain = request.voucher_domain();
        if domain.protocol() != i.escrow.protocol
            || domain.escrow() != i.escrow.address
            || domain.chain_id() != i.chain_id
        {
            return Err(SessionError::failed(
                "the request names another escrow, protocol or chain than this server's",
            ));
        }
        let payload = SessionPayload::from_json(credential.payload, domain.protocol())?;
        let descriptor = match domain.protocol() {
            SessionProtocol::V2 => Some(check_descriptor(
                &payload,
                i.escrow.address,
                i.chain_id,
                request.recipient,
                request.currency,
                request.operator(),
            )?),
            SessionProtocol::V1 => None,
        };
        let verified = match &payload {
            SessionPayload::Open(open) => self.open(&credential, &domain, open, descriptor).await,
            SessionPayload::TopUp(top_up) => self.top_up(&credential, top_up).await,
            SessionPayload::Voucher(voucher) => {
                let (verified, held) = self
                    .voucher(
                        &credential,
                        &domain,
                        voucher.channel_id,
                        voucher.cumulative_amount,
                        &voucher.signature,
                        hold,
                    )
                    .await?;
                // Streams of this process waiting on the channel re-check it now.
                i.wakeups.wake(verified.channel.id());
                return Ok((verified, held));
            }
            SessionPayload::Close(close) => self.close(&domain, close).await,
        }?;
        i.wakeups.wake(verified.channel.id());
        Ok((verified, None))
    }

    /// Charges `units` at `price` base units each against the channel: atomically, only if
    /// the accepted vouchers cover it (`session/insufficient-balance` otherwise).
    pub async fn charge(
        &self,
        channel_id: B256,
        units: u64,
        price: u128,
    ) -> Result<Channel, SessionError> {
        let outcome = self
            .inner
            .store
            .charge(channel_id, Charge { price, units })
            .await
            .map_err(store_fault)?;
        match outcome {
            ChargeOutcome::Charged(channel) => Ok(channel),
            ChargeOutcome::Insufficient { cost, channel } => {
                Err(SessionError::InsufficientBalance {
                    requested: cost,
                    available: channel.available(),
                })
            }
            ChargeOutcome::Closed(channel) => Err(closed_error(&channel)),
            ChargeOutcome::NotFound => Err(SessionError::ChannelNotFound("no such channel".into())),
        }
    }

    /// A stored channel, 410 `channel-not-found` when unknown; v2: its descriptor must be the
    /// credential's.
    async fn stored(
        &self,
        channel_id: B256,
        descriptor: Option<&ChannelDescriptor>,
    ) -> Result<Channel, SessionError> {
        let channel = self
            .inner
            .store
            .get(channel_id)
            .await
            .map_err(store_fault)?
            .ok_or_else(|| {
                SessionError::ChannelNotFound("this server knows no such channel".into())
            })?;
        if !self.owns(&channel) {
            // Another service's channel in a shared store: not one this server knows.
            return Err(SessionError::ChannelNotFound(
                "this server knows no such channel".into(),
            ));
        }
        if let Some(descriptor) = descriptor
            && *descriptor != channel.descriptor.descriptor()
        {
            return Err(SessionError::failed(
                "the descriptor differs from the channel's",
            ));
        }
        Ok(channel)
    }

    /// The channel's chain state: the cached read when younger than the TTL, else a new one.
    async fn chain_state(
        &self,
        channel_id: B256,
        fresh: bool,
    ) -> Result<OnChainState, SessionError> {
        let i = &self.inner;
        if !fresh && let Some(state) = i.cache.fresh(channel_id, i.state_ttl) {
            return Ok(state);
        }
        let state = i
            .escrow
            .read(&i.chain, channel_id)
            .await
            .map_err(unavailable)?;
        i.cache.put(channel_id, state);
        Ok(state)
    }

    /// Brings the stored channel up to what the chain says: a grown deposit is recorded, a
    /// close request marks the channel closing (410 from then on), a channel gone from chain
    /// is finalized.
    async fn merge_chain_state(
        &self,
        channel: Channel,
        state: &OnChainState,
    ) -> Result<Channel, SessionError> {
        let store = &self.inner.store;
        let id = channel.id();
        if state.finalized || (state.deposit == 0 && channel.deposit > 0) {
            let settled = (state.settled >= channel.settled
                && state.settled <= channel.highest_voucher)
                .then_some(state.settled);
            store
                .finalize(id, settled, None)
                .await
                .map_err(store_fault)?;
            return Err(SessionError::ChannelFinalized(
                "the channel was closed on chain".into(),
            ));
        }
        if state.close_requested_at != 0 && channel.state.is_open() {
            let at = OffsetDateTime::from_unix_timestamp(
                i64::try_from(state.close_requested_at).unwrap_or(i64::MAX),
            )
            .unwrap_or_else(|_| OffsetDateTime::now_utc());
            store.mark_closing(id, at).await.map_err(store_fault)?;
            tracing::info!(channel = %id, "the payer requested a close on chain; channel closing");
            return Err(SessionError::ChannelFinalized(
                "the channel has a pending close request".into(),
            ));
        }
        if state.deposit > channel.deposit {
            return match store
                .record_deposit(id, state.deposit)
                .await
                .map_err(store_fault)?
            {
                DepositOutcome::Raised(c)
                | DepositOutcome::Unchanged(c)
                | DepositOutcome::Stale(c) => Ok(c),
                DepositOutcome::Finalized(c) => Err(closed_error(&c)),
                DepositOutcome::NotFound => {
                    Err(SessionError::ChannelNotFound("no such channel".into()))
                }
            };
        }
        Ok(channel)
    }

    async fn voucher(
        &self,
        credential: &SessionCredential<'_>,
        domain: &VoucherDomain,
        channel_id: B256,
        cumulative_amount: u128,
        signature: &super::VoucherSignature,
        hold: Option<HoldRequest<'_>>,
    ) -> Result<(SessionVerified, Option<ReserveOutcome>), SessionError> {
        let i = &self.inner;
        let channel = self.stored(channel_id, None).await?;
        if !channel.state.is_open() {
            return Err(closed_error(&channel));
        }
        let identity = channel.descriptor.clone();
        if domain.protocol() == SessionProtocol::V2 {
            // mppx's rule: only the payer or its signer speaks for the channel.
            check_source(
                credential.source,
                i.chain_id,
                identity.payer,
                identity.signer(),
            )?;
        }
        // The cheap refusal first: a lower voucher costs no chain read and no ECDSA.
        if cumulative_amount < channel.highest_voucher {
            return Err(SessionError::failed(format!(
                "voucher amount {cumulative_amount} is below the highest accepted {}",
                channel.highest_voucher
            )));
        }
        let state = self.chain_state(channel_id, false).await?;
        let channel = self.merge_chain_state(channel, &state).await?;
        let stored_signature = channel
            .voucher_signature
            .as_ref()
            .and_then(|s| super::VoucherSignature::from_bytes(s).ok());
        let outcome = check_voucher(
            domain,
            channel_id,
            cumulative_amount,
            signature,
            &VoucherState {
                signer: identity.signer(),
                deposit: channel.deposit,
                settled: channel.settled.max(state.settled),
                highest: channel.highest_voucher,
                highest_signature: stored_signature.as_ref(),
                min_voucher_delta: i.min_voucher_delta,
                finalized: false,
                close_requested: false,
            },
        )?;
        let (channel, held) = match outcome {
            super::VoucherOutcome::AlreadyAccepted => (channel, None),
            super::VoucherOutcome::Accepted { .. } => {
                self.accept(channel_id, cumulative_amount, signature, hold)
                    .await?
            }
        };
        let verified = SessionVerified {
            action: SessionAction::Voucher,
            accepted_cumulative: channel.highest_voucher,
            channel,
            tx_hash: None,
        };
        Ok((verified, held))
    }

    /// Stores a verified voucher (compare-and-set in the store), with `hold` in the same
    /// step when given.
    async fn accept(
        &self,
        channel_id: B256,
        cumulative_amount: u128,
        signature: &super::VoucherSignature,
        hold: Option<HoldRequest<'_>>,
    ) -> Result<(Channel, Option<ReserveOutcome>), SessionError> {
        let voucher = Voucher {
            cumulative_amount,
            signature: Bytes::copy_from_slice(signature.as_bytes()),
        };
        let (store, min_delta) = (&self.inner.store, self.inner.min_voucher_delta);
        let (outcome, held) = match hold {
            Some(hold) => {
                let both = store
                    .accept_and_reserve(
                        channel_id,
                        &voucher,
                        min_delta,
                        hold.reservation,
                        (hold.amount, hold.ttl),
                    )
                    .await
                    .map_err(store_fault)?;
                (both.voucher, both.reserve)
            }
            None => (
                store
                    .accept_voucher(channel_id, &voucher, min_delta)
                    .await
                    .map_err(store_fault)?,
                None,
            ),
        };
        let channel = self.accepted(outcome, cumulative_amount)?;
        Ok((channel, held))
    }

    /// The channel after a stored voucher, or why the store refused it.
    fn accepted(
        &self,
        outcome: VoucherOutcome,
        cumulative_amount: u128,
    ) -> Result<Channel, SessionError> {
        match outcome {
            VoucherOutcome::Accepted(c) | VoucherOutcome::AlreadyAccepted(c) => Ok(c),
            VoucherOutcome::BelowHighest(c) => Err(SessionError::failed(format!(
                "voucher amount {cumulative_amount} is below the highest accepted {}",
                c.highest_voucher
            ))),
            VoucherOutcome::ExceedsDeposit(c) => Err(SessionError::AmountExceedsDeposit {
                amount: cumulative_amount,
                deposit: c.deposit,
            }),
            VoucherOutcome::DeltaTooSmall(c) => Err(SessionError::DeltaTooSmall {
                delta: cumulative_amount.saturating_sub(c.highest_voucher),
                min: self.inner.min_voucher_delta,
            }),
            VoucherOutcome::Closed(c) => Err(closed_error(&c)),
            VoucherOutcome::NotFound => {
                Err(SessionError::ChannelNotFound("no such channel".into()))
            }
        }
    }

    /// Decodes a payer's open or top-up transaction, applies the sponsor policy or simulates
    /// it, and returns the bytes to send.
    async fn payer_tx(
        &self,
        credential: &SessionCredential<'_>,
        raw: &[u8],
        expected: impl FnOnce(&TempoTransaction, Address) -> Result<(), SessionError>,
    ) -> Result<PayerTx, SessionError> {
        let i = &self.inner;
        let decoded = decode_pull(raw).map_err(charge_error)?;
        let sender = decoded.sender;
        let fields = decoded.fields();
        if fields.chain_id != i.chain_id {
            return Err(SessionError::failed("the transaction is for another chain"));
        }
        expected(fields, sender)?;
        let valid_before = fields.valid_before.map(|v| v.get());
        if fields.nonce_key == TEMPO_EXPIRING_NONCE_KEY && valid_before.is_none() {
            return Err(SessionError::failed(
                "an expiring nonce needs a validBefore",
            ));
        }
        let now = u64::try_from(credential.now.unix_timestamp()).unwrap_or(0);
        if valid_before.is_some_and(|v| v <= now) {
            return Err(SessionError::failed(
                "the transaction's validBefore has passed",
            ));
        }
        match decoded.tx {
            PullTransaction::Signed(signed) => {
                i.chain
                    .simulate(sender, signed.tx())
                    .await
                    .map_err(|e| match e {
                        ChainError::Refused(reason) => {
                            tracing::info!(%reason, "session transaction refused by the node's simulation");
                            SessionError::failed(
                                "the transaction would fail on chain (the node's simulation \
                                 rejected it); nothing was charged",
                            )
                        }
                        other => unavailable(other),
                    })?;
                Ok(PayerTx {
                    raw: signed.encoded_2718(),
                    hash: *signed.hash(),
                    sender,
                    // Without an expiring nonce there is no deadline: look for it for a while.
                    valid_before: valid_before.unwrap_or(now + 30),
                    sponsored: None,
                })
            }
            PullTransaction::Sponsored(envelope) => {
                if !credential.request.method_details.fee_payer {
                    return Err(SessionError::BadRequest(
                        "a fee payer envelope was sent but the request does not offer sponsorship"
                            .into(),
                    ));
                }
                let Some(sponsor) = &i.sponsor else {
                    return Err(SessionError::BadRequest(
                        "this server does not sponsor fees".into(),
                    ));
                };
                let fee_token = sponsor
                    .check(&envelope, credential.now, credential.expires)
                    .map_err(|e| match e {
                        ChargeError::VerificationFailed(m) => SessionError::BadRequest(m),
                        other => charge_error(other),
                    })?;
                let signed = sponsor
                    .co_sign(&envelope, fee_token)
                    .map_err(charge_error)?;
                let send = SponsoredSend {
                    fee_payer: sponsor.address(),
                    fee_token,
                    tx: signed.tx().clone(),
                    budget: sponsor.policy().budget.clone(),
                };
                check_gas(&i.chain, &send, sender)
                    .await
                    .map_err(|e| match e {
                        ChargeError::VerificationFailed(m) => SessionError::BadRequest(m),
                        other => charge_error(other),
                    })?;
                Ok(PayerTx {
                    raw: signed.encoded_2718(),
                    hash: *signed.hash(),
                    sender,
                    valid_before: valid_before.unwrap_or(now + 30),
                    sponsored: Some(send),
                })
            }
        }
    }

    /// Sends a payer's transaction (inside the sender's sponsor turn when sponsored) and
    /// returns its successful receipt.
    async fn send_payer_tx(&self, tx: &PayerTx) -> Result<TempoTransactionReceipt, SessionError> {
        let i = &self.inner;
        let owner = format!("{:#x}", tx.hash);
        let hold = match &tx.sponsored {
            Some(send) => Some(
                SponsorHold::take(
                    i.replay.clone(),
                    &i.chain,
                    send,
                    tx.sender,
                    &owner,
                    tx.valid_before,
                )
                .await
                .map_err(charge_error)?,
            ),
            None => None,
        };
        let outcome = match i.chain.send_raw_sync(&tx.raw, i.broadcast_timeout).await {
            Ok(receipt) => Outcome::Mined(Box::new(receipt)),
            Err(ChainError::Refused(reason)) => Outcome::Refused(reason),
            Err(e) => {
                tracing::warn!(tx = %tx.hash, reason = %e, "channel transaction outcome unknown; looking it up");
                wait_for_outcome(&i.chain, tx.hash, tx.valid_before).await
            }
        };
        if let Some(hold) = hold {
            hold.end(&outcome).await;
        }
        match outcome {
            Outcome::Mined(receipt) if receipt.status() => Ok(*receipt),
            Outcome::Mined(_) => Err(SessionError::failed(format!(
                "the transaction {:#x} reverted",
                tx.hash
            ))),
            Outcome::Refused(reason) => {
                tracing::info!(%reason, tx = %tx.hash, "session transaction refused by the node");
                Err(SessionError::failed(
                    "the node refused the transaction; nothing was charged",
                ))
            }
            Outcome::Expired => Err(SessionError::failed(
                "the transaction was not mined before its validBefore",
            )),
            Outcome::Unknown(e) => Err(SessionError::Pending(format!(
                "the transaction {:#x} was sent and its outcome is not known yet ({e}); present the same credential again",
                tx.hash
            ))),
        }
    }

    async fn open(
        &self,
        credential: &SessionCredential<'_>,
        domain: &VoucherDomain,
        open: &super::OpenPayload,
        descriptor: Option<ChannelDescriptor>,
    ) -> Result<SessionVerified, SessionError> {
        let i = &self.inner;
        let request = credential.request;
        // An open sent again (a retry after a lost answer): the channel is known, so this is
        // its first voucher again.
        if let Some(channel) = i.store.get(open.channel_id).await.map_err(store_fault)? {
            if descriptor.is_some_and(|d| d != channel.descriptor.descriptor()) {
                return Err(SessionError::failed(
                    "the descriptor differs from the channel's",
                ));
            }
            let mut verified = self
                .voucher(
                    credential,
                    domain,
                    open.channel_id,
                    open.cumulative_amount,
                    &open.signature,
                    None,
                )
                .await?
                .0;
            verified.action = SessionAction::Open;
            return Ok(verified);
        }
        let escrow = i.escrow.address;
        let mut opened_args = None;
        let tx = self
            .payer_tx(credential, &open.transaction, |tx, sender| {
                let args = open_args(&tx.calls, escrow, i.escrow.protocol)?;
                let nonce_hash = expiring_nonce_hash(tx, sender);
                opened_args = Some((args, sender, nonce_hash));
                Ok(())
            })
            .await?;
        let Some((args, sender, nonce_hash)) = opened_args else {
            return Err(SessionError::failed(
                "the transaction does not open a channel",
            ));
        };
        if args.payee != request.recipient || args.token != request.currency {
            return Err(SessionError::failed(
                "the channel does not pay this recipient in this currency",
            ));
        }
        let identity = match i.escrow.protocol {
            SessionProtocol::V1 => {
                let channel = V1Channel {
                    payer: sender,
                    payee: args.payee,
                    token: args.token,
                    salt: args.salt,
                    authorized_signer: args.authorized_signer,
                };
                if let Some(declared) = open.authorized_signer
                    && declared != args.authorized_signer
                {
                    return Err(SessionError::failed(
                        "authorizedSigner differs from the open call's",
                    ));
                }
                ChannelIdentity {
                    channel_id: channel.channel_id(escrow, i.chain_id),
                    protocol: SessionProtocol::V1,
                    chain_id: i.chain_id,
                    escrow,
                    payer: sender,
                    payee: args.payee,
                    token: args.token,
                    operator: Address::ZERO,
                    authorized_signer: args.authorized_signer,
                    salt: args.salt,
                    expiring_nonce_hash: B256::ZERO,
                }
            }
            SessionProtocol::V2 => {
                let Some(d) = descriptor else {
                    return Err(SessionError::payload("a v2 open needs its descriptor"));
                };
                if d.payer != sender
                    || d.payee != args.payee
                    || d.token != args.token
                    || d.salt != args.salt
                    || d.authorized_signer != args.authorized_signer
                    || d.operator != args.operator
                    || d.expiring_nonce_hash != nonce_hash
                {
                    return Err(SessionError::failed(
                        "the open transaction does not match the descriptor",
                    ));
                }
                let mut identity = channel_identity(&d, escrow, i.chain_id);
                identity.channel_id = d.channel_id(escrow, i.chain_id);
                identity
            }
        };
        if identity.channel_id != open.channel_id {
            return Err(SessionError::failed(
                "channelId does not match the open transaction",
            ));
        }
        check_open_amounts(request.amount, args.deposit, open.cumulative_amount)?;
        if open.cumulative_amount > i.escrow.protocol.max_amount() {
            return Err(SessionError::failed(
                "the voucher amount does not fit the escrow",
            ));
        }
        domain.verify_voucher(
            open.channel_id,
            open.cumulative_amount,
            &open.signature,
            identity.signer(),
        )?;

        let receipt = self.send_payer_tx(&tx).await?;
        let event = i
            .escrow
            .opened(&receipt, identity.channel_id)
            .map_err(SessionError::failed)?;
        if event.deposit != args.deposit
            || event.payer != identity.payer
            || event.payee != identity.payee
            || event.token != identity.token
            || event.salt != identity.salt
            || event.expiring_nonce_hash != identity.expiring_nonce_hash
        {
            return Err(SessionError::failed(
                "the ChannelOpened event does not match the open call",
            ));
        }
        let state = self.read_back(identity.channel_id).await?;
        if state.deposit != event.deposit || state.close_requested_at != 0 || state.finalized {
            return Err(SessionError::failed(
                "the channel's state on chain does not match its open",
            ));
        }
        if state.deposit.saturating_sub(state.settled) < request.amount {
            return Err(SessionError::failed("the channel cannot pay one unit"));
        }
        let new = NewChannel {
            descriptor: identity,
            deposit: state.deposit,
            settled: state.settled,
            retention: i.retention,
        };
        match i.store.open(&new).await.map_err(store_fault)? {
            OpenOutcome::Opened(_) | OpenOutcome::AlreadyOpen(_) => {}
            OpenOutcome::Conflict(_) => {
                return Err(SessionError::failed(
                    "another channel with this id is stored",
                ));
            }
        }
        let (channel, _) = self
            .accept(
                new.descriptor.channel_id,
                open.cumulative_amount,
                &open.signature,
                None,
            )
            .await?;
        tracing::info!(channel = %channel.id(), payer = %channel.descriptor.payer, deposit = channel.deposit, tx = %receipt.transaction_hash, "channel opened");
        Ok(SessionVerified {
            action: SessionAction::Open,
            accepted_cumulative: channel.highest_voucher,
            channel,
            tx_hash: Some(receipt.transaction_hash),
        })
    }

    /// Reads a channel just opened until the node shows it (read-after-write lag).
    async fn read_back(&self, channel_id: B256) -> Result<OnChainState, SessionError> {
        let mut tries = 0;
        loop {
            let state = self.chain_state(channel_id, true).await?;
            tries += 1;
            if state.deposit > 0 || tries >= READBACK_TRIES {
                return Ok(state);
            }
            tokio::time::sleep(READBACK_PAUSE).await;
        }
    }

    async fn top_up(
        &self,
        credential: &SessionCredential<'_>,
        top_up: &super::TopUpPayload,
    ) -> Result<SessionVerified, SessionError> {
        let i = &self.inner;
        let channel = self
            .stored(top_up.channel_id, top_up.descriptor.as_ref())
            .await?;
        if channel.state.is_finalized() {
            return Err(closed_error(&channel));
        }
        let identity = channel.descriptor.clone();
        let escrow = i.escrow.address;
        let protocol = i.escrow.protocol;
        let additional = top_up.additional_deposit;
        let tx = self
            .payer_tx(credential, &top_up.transaction, |tx, sender| {
                if sender != identity.payer {
                    return Err(SessionError::failed("only the payer tops up its channel"));
                }
                check_top_up_calls(&tx.calls, escrow, protocol, &identity, additional)
            })
            .await?;
        let receipt = self.send_payer_tx(&tx).await?;
        let Some(new_deposit) = i.escrow.topped_up(&receipt, identity.channel_id) else {
            return Err(SessionError::failed(
                "the top-up emitted no TopUp event for this channel",
            ));
        };
        let state = self.chain_state(identity.channel_id, true).await?;
        if state.deposit < new_deposit {
            return Err(SessionError::failed(
                "the channel's deposit on chain did not grow",
            ));
        }
        let mut channel = match i
            .store
            .record_deposit(identity.channel_id, state.deposit)
            .await
            .map_err(store_fault)?
        {
            DepositOutcome::Raised(c)
            | DepositOutcome::Unchanged(c)
            | DepositOutcome::Stale(c)
            | DepositOutcome::Finalized(c) => c,
            DepositOutcome::NotFound => {
                return Err(SessionError::ChannelNotFound("no such channel".into()));
            }
        };
        // A top-up cancels the payer's close request on chain: serve the channel again.
        if let super::store::ChannelState::Closing { requested_at } = channel.state
            && state.close_requested_at == 0
            && !state.finalized
            && let super::store::CancelCloseOutcome::Reopened(c) = i
                .store
                .cancel_closing(identity.channel_id, requested_at)
                .await
                .map_err(store_fault)?
        {
            channel = c;
        }
        Ok(SessionVerified {
            action: SessionAction::TopUp,
            accepted_cumulative: channel.highest_voucher,
            channel,
            tx_hash: Some(receipt.transaction_hash),
        })
    }

    async fn close(
        &self,
        domain: &VoucherDomain,
        close: &super::ClosePayload,
    ) -> Result<SessionVerified, SessionError> {
        let i = &self.inner;
        let channel = self
            .stored(close.channel_id, close.descriptor.as_ref())
            .await?;
        if !channel.state.is_open() {
            return Err(closed_error(&channel));
        }
        let Some(key) = &i.server_key else {
            return Err(SessionError::Config(
                "this server has no key to close channels with (SessionConfig::server_key)".into(),
            ));
        };
        let state = self.chain_state(close.channel_id, true).await?;
        let channel = self.merge_chain_state(channel, &state).await?;
        let signer = channel.descriptor.signer();
        domain.verify_voucher(
            close.channel_id,
            close.cumulative_amount,
            &close.signature,
            signer,
        )?;
        if let Some(close_signature) = &close.close_signature {
            let digest =
                domain.close_authorization_digest(close.channel_id, close.cumulative_amount)?;
            close_signature.verify(domain.protocol(), &digest, signer)?;
        }
        let settled = channel.settled.max(state.settled);
        let capture = close_capture(
            close.cumulative_amount,
            channel.spent,
            settled,
            channel.deposit,
        )?;
        // The store must hold the voucher the close pays (v1 pays all of it).
        let channel = if close.cumulative_amount > channel.highest_voucher {
            self.accept(
                close.channel_id,
                close.cumulative_amount,
                &close.signature,
                None,
            )
            .await?
            .0
        } else {
            channel
        };
        let marked_at = OffsetDateTime::now_utc();
        match i
            .store
            .mark_closing(close.channel_id, marked_at)
            .await
            .map_err(store_fault)?
        {
            CloseOutcome::Marked(_) => {}
            CloseOutcome::AlreadyClosing(c) | CloseOutcome::Finalized(c) => {
                return Err(closed_error(&c));
            }
            CloseOutcome::NotFound => {
                return Err(SessionError::ChannelNotFound("no such channel".into()));
            }
        }
        let call = i
            .escrow
            .close_call(
                &channel.descriptor,
                close.cumulative_amount,
                capture,
                &Bytes::copy_from_slice(close.signature.as_bytes()),
            )
            .map_err(unavailable)?;
        let receipt = match key.send(&i.chain, vec![call], i.broadcast_timeout).await {
            Ok(receipt) => receipt,
            Err(e) => {
                if !matches!(e, ServerTxError::Unknown(_)) {
                    // Not sent, or sent and failed: serve the channel again.
                    let _ = i.store.cancel_closing(close.channel_id, marked_at).await;
                }
                return Err(server_tx_error(e));
            }
        };
        let paid = match i.escrow.protocol {
            SessionProtocol::V2 => capture,
            SessionProtocol::V1 => close.cumulative_amount,
        };
        if let Some((to_payee, refunded)) = i.escrow.closed(&receipt, close.channel_id)
            // `settledToPayee` is the channel's final settled total, not this close's payment.
            && (to_payee > paid || to_payee.saturating_add(refunded) > channel.deposit)
        {
            tracing::error!(channel = %close.channel_id, to_payee, refunded, "the escrow's close paid other amounts than expected");
        }
        i.cache.forget(close.channel_id);
        let channel = match i
            .store
            .finalize(close.channel_id, Some(paid), Some(receipt.transaction_hash))
            .await
            .map_err(store_fault)?
        {
            super::store::FinalizeOutcome::Finalized(c)
            | super::store::FinalizeOutcome::AlreadyFinalized(c)
            | super::store::FinalizeOutcome::AboveHighest(c) => c,
            super::store::FinalizeOutcome::NotFound => {
                return Err(SessionError::ChannelNotFound("no such channel".into()));
            }
        };
        tracing::info!(channel = %close.channel_id, paid, tx = %receipt.transaction_hash, "channel closed");
        Ok(SessionVerified {
            action: SessionAction::Close,
            accepted_cumulative: close.cumulative_amount,
            channel,
            tx_hash: Some(receipt.transaction_hash),
        })
    }
}

pub(crate) fn server_tx_error(e: ServerTxError) -> SessionError {
    match e {
        ServerTxError::Failed(m) => {
            SessionError::Unavailable(format!("server transaction failed: {m}"))
        }
        ServerTxError::Chain(e) => unavailable(e),
        ServerTxError::Unknown(hash) => {
            SessionError::Pending(format!("server transaction {hash:#x} outcome unknown"))
        }
    }
}

fn channel_identity(d: &ChannelDescriptor, escrow: Address, chain_id: u64) -> ChannelIdentity {
    ChannelIdentity {
        channel_id: B256::ZERO,
        protocol: SessionProtocol::V2,
        chain_id,
        escrow,
        payer: d.payer,
        payee: d.payee,
        token: d.token,
        operator: d.operator,
        authorized_signer: d.authorized_signer,
        salt: d.salt,
        expiring_nonce_hash: d.expiring_nonce_hash,
    }
}

/// The arguments of the escrow's `open`.
#[derive(Debug, Clone, Copy)]
struct OpenArgs {
    payee: Address,
    operator: Address,
    token: Address,
    deposit: u128,
    salt: B256,
    authorized_signer: Address,
}

/// The calls of an open: an optional DEX swap prefix (approve + swap producing exactly the
/// deposit), then v1 `approve(escrow, deposit)` on the token and `open(...)`, or v2 `open(...)`
/// alone. Nothing else: a payer must not make the server broadcast (or sponsor) other calls.
fn open_args(
    calls: &[Call],
    escrow: Address,
    protocol: SessionProtocol,
) -> Result<OpenArgs, SessionError> {
    let failed = |m: &str| SessionError::failed(format!("open transaction: {m}"));
    let Some(last) = calls.last() else {
        return Err(failed("no calls"));
    };
    if last.to != TxKind::Call(escrow) || !last.value.is_zero() {
        return Err(failed("the last call is not the escrow's open"));
    }
    let args = match protocol {
        SessionProtocol::V1 => {
            let c = V1::openCall::abi_decode(&last.input)
                .map_err(|_| failed("the last call is not open(...)"))?;
            OpenArgs {
                payee: c.payee,
                operator: Address::ZERO,
                token: c.token,
                deposit: c.deposit,
                salt: c.salt,
                authorized_signer: c.authorizedSigner,
            }
        }
        SessionProtocol::V2 => {
            let c = V2::openCall::abi_decode(&last.input)
                .map_err(|_| failed("the last call is not open(...)"))?;
            OpenArgs {
                payee: c.payee,
                operator: c.operator,
                token: c.token,
                deposit: c.deposit.to::<u128>(),
                salt: c.salt,
                authorized_signer: c.authorizedSigner,
            }
        }
    };
    let rest = &calls[..calls.len() - 1];
    let rest = match protocol {
        SessionProtocol::V1 => {
            let Some((approve, before)) = rest.split_last() else {
                return Err(failed("the escrow must be approved for the deposit"));
            };
            check_approve(approve, args.token, escrow, args.deposit)?;
            before
        }
        SessionProtocol::V2 => rest,
    };
    check_prefix(rest, args.token, args.deposit)?;
    Ok(args)
}

/// The calls of a top-up: optional swap prefix, then v1 `approve` + `topUp(channelId, n)`, or
/// v2 `topUp(descriptor, n)`, with the stored channel and the payload's amount.
fn check_top_up_calls(
    calls: &[Call],
    escrow: Address,
    protocol: SessionProtocol,
    channel: &ChannelIdentity,
    additional: u128,
) -> Result<(), SessionError> {
    let failed = |m: &str| SessionError::failed(format!("top-up transaction: {m}"));
    let Some((last, rest)) = calls.split_last() else {
        return Err(failed("no calls"));
    };
    if last.to != TxKind::Call(escrow) || !last.value.is_zero() {
        return Err(failed("the last call is not the escrow's topUp"));
    }
    let rest = match protocol {
        SessionProtocol::V1 => {
            let c = V1::topUpCall::abi_decode(&last.input)
                .map_err(|_| failed("the last call is not topUp(...)"))?;
            if c.channelId != channel.channel_id || c.additionalDeposit != U256::from(additional) {
                return Err(failed("topUp names another channel or amount"));
            }
            let Some((approve, before)) = rest.split_last() else {
                return Err(failed("the escrow must be approved for the top-up"));
            };
            check_approve(approve, channel.token, escrow, additional)?;
            before
        }
        SessionProtocol::V2 => {
            let c = V2::topUpCall::abi_decode(&last.input)
                .map_err(|_| failed("the last call is not topUp(...)"))?;
            if ChannelDescriptor::from_abi(&c.descriptor) != channel.descriptor()
                || c.additionalDeposit.to::<u128>() != additional
            {
                return Err(failed("topUp names another channel or amount"));
            }
            rest
        }
    };
    check_prefix(rest, channel.token, additional)
}

fn check_approve(
    call: &Call,
    token: Address,
    escrow: Address,
    amount: u128,
) -> Result<(), SessionError> {
    let failed = || {
        SessionError::failed(format!(
            "the call before the escrow's must be approve({escrow}, {amount}) on the token"
        ))
    };
    if call.to != TxKind::Call(token) || !call.value.is_zero() {
        return Err(failed());
    }
    let approve = ITIP20::approveCall::abi_decode(&call.input).map_err(|_| failed())?;
    if approve.spender != escrow || approve.amount != U256::from(amount) {
        return Err(failed());
    }
    Ok(())
}

/// Nothing, or an approve + swap prefix producing exactly `amount` of `token`.
fn check_prefix(prefix: &[Call], token: Address, amount: u128) -> Result<(), SessionError> {
    match prefix.len() {
        0 => Ok(()),
        2 if is_swap_pair(prefix) => check_swap_prefix(prefix, token, amount).map_err(charge_error),
        _ => Err(SessionError::failed(
            "the transaction makes calls other than the channel's",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn approve(token: Address, spender: Address, amount: u128) -> Call {
        Call {
            to: TxKind::Call(token),
            value: U256::ZERO,
            input: ITIP20::approveCall {
                spender,
                amount: U256::from(amount),
            }
            .abi_encode()
            .into(),
        }
    }

    fn v1_open(escrow: Address, token: Address, deposit: u128) -> Call {
        Call {
            to: TxKind::Call(escrow),
            value: U256::ZERO,
            input: V1::openCall {
                payee: Address::repeat_byte(2),
                token,
                deposit,
                salt: B256::repeat_byte(3),
                authorizedSigner: Address::ZERO,
            }
            .abi_encode()
            .into(),
        }
    }

    #[test]
    fn v1_opens_approve_exactly_the_deposit_and_call_nothing_else() {
        let (escrow, token) = (Address::repeat_byte(0xee), Address::repeat_byte(0x20));
        let good = [approve(token, escrow, 100), v1_open(escrow, token, 100)];
        assert_eq!(
            open_args(&good, escrow, SessionProtocol::V1)
                .map(|a| a.deposit)
                .ok(),
            Some(100)
        );
        let short = [approve(token, escrow, 99), v1_open(escrow, token, 100)];
        assert!(
            open_args(&short, escrow, SessionProtocol::V1).is_err(),
            "approve below the deposit"
        );
        let missing = [v1_open(escrow, token, 100)];
        assert!(
            open_args(&missing, escrow, SessionProtocol::V1).is_err(),
            "no approve"
        );
        let extra = [
            approve(token, Address::repeat_byte(9), 5),
            approve(token, escrow, 100),
            v1_open(escrow, token, 100),
        ];
        assert!(
            open_args(&extra, escrow, SessionProtocol::V1).is_err(),
            "an unrelated call before"
        );
        let elsewhere = [
            approve(token, escrow, 100),
            v1_open(Address::repeat_byte(1), token, 100),
        ];
        assert!(
            open_args(&elsewhere, escrow, SessionProtocol::V1).is_err(),
            "open on another contract"
        );
        assert!(open_args(&[], escrow, SessionProtocol::V1).is_err());
    }

    #[test]
    fn the_state_cache_expires() {
        let cache = StateCache::default();
        let id = B256::repeat_byte(1);
        cache.put(
            id,
            OnChainState {
                deposit: 5,
                ..Default::default()
            },
        );
        assert_eq!(
            cache.fresh(id, Duration::from_secs(60)).map(|s| s.deposit),
            Some(5)
        );
        assert_eq!(cache.fresh(id, Duration::ZERO), None);
        cache.forget(id);
        assert_eq!(cache.fresh(id, Duration::from_secs(60)), None);
    }
}
