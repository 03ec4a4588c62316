//! Channel state: what was deposited, the highest voucher accepted, what was spent.
//!
//! One row per payment channel, keyed by its channel id. Every backend implements
//! [`ChannelStore`] with the same semantics, and every operation on a channel is atomic and
//! linearizable, also across server instances sharing one database:
//!
//! - [`MemoryChannelStore`]: one mutex over a map, for layer tests and examples;
//! - [`SqliteStore`](crate::store::SqliteStore): operations run inside `BEGIN IMMEDIATE`
//!   transactions (SQLite's database write lock, taken before any row is read), so two
//!   handles or processes on one file are serialized; a handle's concurrent operations
//!   share one transaction and one fsync (group commit), each still answered only once the
//!   transaction holding its write has committed;
//! - [`PgStore`](crate::store::PgStore): the hot operations ([`ChannelStore::charge`],
//!   [`ChannelStore::accept_voucher`]) are first tried as one conditional
//!   `UPDATE ... WHERE ... RETURNING` (one round trip); everything else on an existing row
//!   (and a hot operation whose condition did not hold) is first optimistic: a plain
//!   `SELECT`, the decision, and one autocommit `UPDATE ... WHERE version = <read>` (two
//!   round trips, atomic because the write applies only to the row as read: the version
//!   condition stands in for the lock). If a concurrent writer changed the row in between,
//!   or there is no row (an open), the operation runs again under `SELECT ... FOR UPDATE`
//!   and one `UPDATE` in a transaction (one optimistic try, never an unbounded retry).
//!
//! In every backend the decision is taken by the same pure functions (module `logic`) on a
//! copy of the row that nothing else can change before the write (locked, or written back
//! only if its version is unchanged): the Postgres one-statement fast paths are exactly
//! those functions' success conditions written in SQL, and when they do not hold the
//! general path decides.
//!
//! # Amounts and invariants
//!
//! Amounts are `u128` base units, stored exactly: Postgres `NUMERIC(39,0)` (39 digits hold
//! `u128::MAX`), SQLite `TEXT` of exactly 39 zero-padded decimal digits (so that SQL compares
//! them correctly as strings; SQLite's own numbers are `i64` or floats). For every channel:
//!
//! ```text
//! spent + reserved ≤ highest_voucher ≤ deposit      settled ≤ highest_voucher
//! ```
//!
//! and none of `deposit`, `highest_voucher`, `spent`, `settled` or `units` ever decreases.
//! `reserved` is the headroom held by open streams ([`ChannelStore::reserve`]): it is carved
//! out of the accepted voucher, so a reservation is always covered by a signed voucher, and
//! no charge nor other reservation can use it. Committing a reservation moves (part of) it to
//! `spent`; releasing it, or its expiry, gives it back.
//!
//! # Time
//!
//! Times are stored as unix milliseconds, taken from the clock of the process running the
//! operation. Each row carries a retention (chosen at [`ChannelStore::open`]); every change
//! pushes its expiry to `now + retention`, and [`ChannelStore::purge`] deletes only expired
//! rows that hold nothing unsettled (or are finalized) and nothing reserved.

use std::sync::Arc;
use std::time::Duration;

pub use alloy::primitives::Bytes;
use alloy::primitives::{Address, B256};
use mpp_core::BoxFuture;
use time::OffsetDateTime;

pub use crate::session::SessionProtocol;
use crate::store::StoreError;

mod logic;
pub mod memory;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod row;
#[cfg(feature = "sqlite")]
mod sqlite;

#[cfg(feature = "sqlite")]
pub(crate) use sqlite::ChannelWriter;

pub use memory::MemoryChannelStore;

/// The most reservations one channel holds at once ([`ReserveOutcome::TooManyReservations`]).
pub const MAX_RESERVATIONS: usize = 16;

/// The longest reservation id, in bytes.
pub const MAX_RESERVATION_ID_LEN: usize = 128;

/// The longest retention a channel may ask for ([`NewChannel::retention`]): 100 years.
pub const MAX_RETENTION: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// What identifies a channel on chain. Never changes once the channel is stored.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ChannelIdentity {
    /// The channel id (bytes32), the row's key.
    pub channel_id: B256,
    /// The escrow protocol.
    pub protocol: SessionProtocol,
    /// The chain the channel lives on.
    pub chain_id: u64,
    /// The escrow contract (v1) or the channel precompile (v2).
    pub escrow: Address,
    /// Who deposited, and gets the rest back.
    pub payer: Address,
    /// Who is paid (the route's recipient).
    pub payee: Address,
    /// The TIP-20 token.
    pub token: Address,
    /// The operator allowed to settle and close besides the payee (v2; zero for v1 or none).
    pub operator: Address,
    /// The voucher signer named at open, as in the descriptor: zero means the payer signs
    /// (see [`ChannelIdentity::signer`]).
    pub authorized_signer: Address,
    /// The salt the payer chose at open.
    pub salt: B256,
    /// The hash of the expiring nonce of the open transaction (v2; zero for v1).
    pub expiring_nonce_hash: B256,
}

impl ChannelIdentity {
    /// Who signs vouchers: the authorized signer, or the payer when that is zero.
    pub fn signer(&self) -> Address {
        if self.authorized_signer.is_zero() {
            self.payer
        } else {
            self.authorized_signer
        }
    }

    /// The v2 descriptor of this channel (what v2 escrow calls take; meaningless for v1).
    pub fn descriptor(&self) -> crate::session::ChannelDescriptor {
        crate::session::ChannelDescriptor {
            payer: self.payer,
            payee: self.payee,
            operator: self.operator,
            token: self.token,
            salt: self.salt,
            authorized_signer: self.authorized_signer,
            expiring_nonce_hash: self.expiring_nonce_hash,
        }
    }
}

/// A channel to store, as verified on chain at open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewChannel {
    /// Its identity.
    pub descriptor: ChannelIdentity,
    /// The verified on-chain deposit.
    pub deposit: u128,
    /// The verified on-chain settled amount (zero for a fresh channel). A channel stored with
    /// `settled > 0` (resumed from the chain) starts with `highest_voucher = spent = settled`:
    /// that value was paid on chain before this store knew the channel, so it cannot be spent
    /// again, and needs no stored signature.
    pub settled: u128,
    /// How long the row is kept after its last change (at most [`MAX_RETENTION`]); see
    /// [`ChannelStore::purge`].
    pub retention: Duration,
}

/// Where a channel is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelState {
    /// Serving: vouchers, charges and reservations are accepted.
    Open,
    /// A close was requested (by the payer on chain, or by this server before sending
    /// `close`): nothing more is accepted or charged; settlement still runs.
    Closing {
        /// When the close was requested.
        requested_at: OffsetDateTime,
    },
    /// Closed on chain. Nothing changes any more.
    Finalized {
        /// When this store learnt it.
        at: OffsetDateTime,
        /// The closing transaction, when known.
        tx_hash: Option<B256>,
    },
}

impl ChannelState {
    /// Whether vouchers and charges are accepted.
    pub fn is_open(&self) -> bool {
        matches!(self, Self::Open)
    }

    /// Whether the channel is closed on chain.
    pub fn is_finalized(&self) -> bool {
        matches!(self, Self::Finalized { .. })
    }
}

/// Headroom held by one stream ([`ChannelStore::reserve`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    /// The caller's id for it (e.g. the stream's id).
    pub id: String,
    /// The amount held, in base units.
    pub amount: u128,
    /// When it lapses if not renewed: after this, its headroom is free again.
    pub expires_at: OffsetDateTime,
}

/// The last settlement recorded ([`ChannelStore::record_settlement`]), for settlement
/// schedules (progress since the last settlement).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LastSettlement {
    /// When it was recorded.
    pub at: OffsetDateTime,
    /// The channel's `spent` then.
    pub spent: u128,
    /// The channel's `units` then.
    pub units: u64,
    /// The settlement transaction, when known.
    pub tx_hash: Option<B256>,
}

/// A channel as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Channel {
    /// Its identity.
    pub descriptor: ChannelIdentity,
    /// The latest verified on-chain deposit.
    pub deposit: u128,
    /// The highest cumulative voucher amount accepted (`acceptedCumulative`).
    pub highest_voucher: u128,
    /// The signature of the voucher for `highest_voucher`, needed to settle it. `None` while
    /// `highest_voucher` is only what was already settled on chain when the channel was
    /// stored (no voucher accepted since).
    pub voucher_signature: Option<Bytes>,
    /// The value charged for content delivered.
    pub spent: u128,
    /// The headroom held by reservations (the sum of `reservations`). A reservation whose
    /// expiry passed still counts here until an operation that needs the headroom (a charge
    /// that would not fit otherwise, a reservation, a commit, the purge) releases it.
    pub reserved: u128,
    /// The open reservations.
    pub reservations: Vec<Reservation>,
    /// The latest verified on-chain settled amount.
    pub settled: u128,
    /// The number of units charged (the running total receipts report).
    pub units: u64,
    /// Open, closing or finalized.
    pub state: ChannelState,
    /// The last settlement recorded, if any.
    pub last_settlement: Option<LastSettlement>,
    /// When the row was stored.
    pub created_at: OffsetDateTime,
    /// When the row last changed.
    pub updated_at: OffsetDateTime,
    /// How long the row is kept after its last change.
    pub retention: Duration,
    /// `updated_at + retention`: when [`ChannelStore::purge`] may delete it.
    pub expires_at: OffsetDateTime,
    /// Counts the row's changes (starts at 1); a reader can tell whether anything changed.
    pub version: u64,
}

impl Channel {
    /// The channel id.
    pub fn id(&self) -> B256 {
        self.descriptor.channel_id
    }

    /// Headroom a charge or a reservation can use: `highest_voucher − spent − reserved`.
    pub fn available(&self) -> u128 {
        self.highest_voucher
            .saturating_sub(self.spent)
            .saturating_sub(self.reserved)
    }

    /// The accepted value not settled on chain yet: `highest_voucher − settled`.
    pub fn unsettled(&self) -> u128 {
        self.highest_voucher.saturating_sub(self.settled)
    }

    /// The cumulative voucher amount needed to cover `cost` more: `spent + reserved + cost`
    /// (the `requiredCumulative` of a `payment-need-voucher` event), saturating.
    pub fn required_cumulative(&self, cost: u128) -> u128 {
        self.spent
            .saturating_add(self.reserved)
            .saturating_add(cost)
    }

    /// The reservation `id`, if it is held.
    pub fn reservation(&self, id: &str) -> Option<&Reservation> {
        self.reservations.iter().find(|r| r.id == id)
    }
}

/// A voucher to accept: a cumulative amount and the signature over it (already verified by
/// the caller against the channel's signer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Voucher {
    /// The cumulative amount it authorizes, in base units.
    pub cumulative_amount: u128,
    /// Its EIP-712 signature.
    pub signature: Bytes,
}

/// A charge of `units` × `price`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Charge {
    /// Base units per unit.
    pub price: u128,
    /// How many units (at least one).
    pub units: u64,
}

impl Charge {
    /// A charge of one unit at `price`.
    pub fn one(price: u128) -> Self {
        Self { price, units: 1 }
    }

    /// `price × units`, or `None` on overflow.
    pub fn cost(&self) -> Option<u128> {
        self.price.checked_mul(u128::from(self.units))
    }
}

/// What a stream used of its reservation ([`ChannelStore::commit`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Commit {
    /// The value to move from the reservation to `spent`.
    pub amount: u128,
    /// The units it paid for (added to the channel's `units`).
    pub units: u64,
    /// Whether to release what is left of the reservation (the stream ended).
    pub release_rest: bool,
}

/// Which channels [`ChannelStore::needing_settlement`] returns. Finalized channels never are;
/// closing channels always are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SettlementQuery {
    /// Channels whose unsettled value (`highest_voucher − settled`) is at least this (and
    /// above zero).
    pub min_unsettled: u128,
    /// Also channels with anything unsettled that have not changed since this instant.
    pub idle_since: Option<OffsetDateTime>,
    /// At most this many; closing channels first, then the most unsettled.
    pub limit: u32,
}

/// What [`ChannelStore::purge`] removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PurgeReport {
    /// Channels whose expired reservations were released.
    pub swept_channels: u64,
    /// Channel rows deleted.
    pub deleted_channels: u64,
}

/// The result of [`ChannelStore::open`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpenOutcome {
    /// The channel was new and is now stored.
    Opened(Channel),
    /// The channel was already stored with the same descriptor (an open retried, or
    /// re-verified). Its deposit was raised if the new one is higher; nothing else changed.
    AlreadyOpen(Channel),
    /// A channel with this id but another descriptor is stored: nothing changed.
    Conflict(Channel),
}

/// The result of [`ChannelStore::record_deposit`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DepositOutcome {
    /// The deposit grew to the new value.
    Raised(Channel),
    /// The deposit already had that value.
    Unchanged(Channel),
    /// The stored deposit is higher (the read was older): nothing changed.
    Stale(Channel),
    /// The channel is finalized: nothing changed.
    Finalized(Channel),
    /// No such channel.
    NotFound,
}

/// The result of [`ChannelStore::accept_voucher`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VoucherOutcome {
    /// The voucher is the new highest.
    Accepted(Channel),
    /// Its amount equals the highest accepted: an idempotent retry, nothing changed (the
    /// stored signature is kept).
    AlreadyAccepted(Channel),
    /// Its amount is below the highest accepted: refused.
    BelowHighest(Channel),
    /// Its amount is above the deposit: refused.
    ExceedsDeposit(Channel),
    /// It raises the highest by less than the minimum delta: refused.
    DeltaTooSmall(Channel),
    /// The channel is closing or finalized (see `state`): refused.
    Closed(Channel),
    /// No such channel.
    NotFound,
}

/// The result of [`ChannelStore::charge`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChargeOutcome {
    /// `spent` and `units` grew by the charge.
    Charged(Channel),
    /// The headroom (`highest − spent − reserved`) is below the cost: nothing charged.
    Insufficient {
        /// What the charge would have cost.
        cost: u128,
        /// The channel as it is.
        channel: Channel,
    },
    /// The channel is closing or finalized: nothing charged.
    Closed(Channel),
    /// No such channel.
    NotFound,
}

/// The result of [`ChannelStore::reserve`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReserveOutcome {
    /// The headroom is held (added to the reservation if it already existed, whose expiry
    /// is then the later of the two).
    Reserved {
        /// The reservation's total now.
        held: u128,
        /// The channel after the change.
        channel: Channel,
    },
    /// Not enough headroom: nothing reserved. A voucher for
    /// [`Channel::required_cumulative`]`(amount)` would cover it.
    Insufficient(Channel),
    /// The channel already holds [`MAX_RESERVATIONS`] other reservations.
    TooManyReservations(Channel),
    /// The channel is closing or finalized: nothing reserved.
    Closed(Channel),
    /// No such channel.
    NotFound,
}

/// The result of [`ChannelStore::accept_and_reserve`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcceptReserveOutcome {
    /// What became of the voucher.
    pub voucher: VoucherOutcome,
    /// What became of the hold: `None` when the voucher was refused (nothing held).
    pub reserve: Option<ReserveOutcome>,
}

/// The result of [`ChannelStore::commit`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommitOutcome {
    /// `spent` and `units` grew by the commit; `released` went back to the free headroom.
    Committed {
        /// The part of the reservation released (not spent).
        released: u128,
        /// The channel after the change.
        channel: Channel,
    },
    /// The commit is larger than the reservation: nothing changed.
    ExceedsReservation {
        /// What the reservation holds.
        held: u128,
        /// The channel as it is.
        channel: Channel,
    },
    /// No such reservation (never made, already released, or expired).
    ReservationNotFound(Channel),
    /// The channel is closing or finalized: nothing charged, and the reservation was released.
    Closed {
        /// What the reservation held.
        released: u128,
        /// The channel after the release.
        channel: Channel,
    },
    /// No such channel.
    NotFound,
}

/// The result of [`ChannelStore::mark_closing`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseOutcome {
    /// The channel was open and is now closing.
    Marked(Channel),
    /// The channel was already closing (its first request time is kept).
    AlreadyClosing(Channel),
    /// The channel is finalized.
    Finalized(Channel),
    /// No such channel.
    NotFound,
}

/// The result of [`ChannelStore::cancel_closing`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CancelCloseOutcome {
    /// The channel was closing with that request time and is open again.
    Reopened(Channel),
    /// The channel is open, finalized, or closing with another request time: nothing changed.
    NotClosing(Channel),
    /// No such channel.
    NotFound,
}

/// The result of [`ChannelStore::record_settlement`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SettlementOutcome {
    /// `settled` grew and the last settlement was recorded.
    Recorded(Channel),
    /// `settled` already had that value: nothing changed.
    Unchanged(Channel),
    /// The stored `settled` is higher (the read was older): nothing changed.
    Stale(Channel),
    /// The amount is above the highest voucher accepted, which this store cannot explain:
    /// nothing changed.
    AboveHighest(Channel),
    /// The channel is finalized: nothing changed.
    Finalized(Channel),
    /// No such channel.
    NotFound,
}

/// The result of [`ChannelStore::finalize`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FinalizeOutcome {
    /// The channel is now finalized; its reservations were dropped.
    Finalized(Channel),
    /// It was already finalized: nothing changed.
    AlreadyFinalized(Channel),
    /// The final settled amount is above the highest voucher accepted: nothing changed.
    AboveHighest(Channel),
    /// No such channel.
    NotFound,
}

/// Why a channel operation failed (as opposed to being refused, which is an outcome).
#[derive(Debug, thiserror::Error)]
pub enum ChannelStoreError {
    /// The database failed, timed out, or returned a row that breaks the invariants. Callers
    /// map it to "service unavailable" (503), never to success.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The request itself is invalid (a cost that overflows, an empty reservation id, a
    /// deposit below the settled amount, ...): a caller bug, nothing was changed.
    #[error("invalid channel operation: {0}")]
    Invalid(String),
}

#[cfg(any(feature = "sqlite", feature = "postgres"))]
impl From<sqlx::Error> for ChannelStoreError {
    fn from(error: sqlx::Error) -> Self {
        Self::Store(error.into())
    }
}

/// The result of a channel operation.
pub type ChannelResult<T> = Result<T, ChannelStoreError>;

/// Runs a SQL channel operation within the store's deadline (its `with_timeout`, by default
/// [`crate::store::DEFAULT_OPERATION_TIMEOUT`]); running out of time is a store fault, and
/// the transaction it interrupted is rolled back.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
async fn with_deadline<T>(
    timeout: std::time::Duration,
    op: &'static str,
    fut: impl Future<Output = ChannelResult<T>>,
) -> ChannelResult<T> {
    match tokio::time::timeout(timeout, fut).await {
        Ok(result) => result,
        Err(_) => Err(StoreError::new(format!(
            "{op} did not finish within {} ms",
            timeout.as_millis()
        ))
        .into()),
    }
}

/// Channel rows, each changed only by atomic, linearizable operations.
///
/// Every method is one atomic step on one channel: of concurrent operations (in this process
/// or on other instances sharing the database) each sees the result of those before it, and
/// the invariants in the [module docs](self) hold after each. Refusals are outcomes, not
/// errors. An `Err` is a fault whose outcome is unknown (the database may have committed the
/// change before the connection failed): the caller answers 503 and serves nothing. So a
/// fault can cost a payer a charge it was not served, never serve content unpaid.
pub trait ChannelStore: Send + Sync + 'static {
    /// Stores a new channel, or recognizes the same one stored before (idempotent).
    fn open<'a>(&'a self, channel: &'a NewChannel) -> BoxFuture<'a, ChannelResult<OpenOutcome>>;

    /// Reads a channel.
    fn get(&self, channel_id: B256) -> BoxFuture<'_, ChannelResult<Option<Channel>>>;

    /// Records a verified on-chain deposit (after a top-up). Never lowers it.
    fn record_deposit(
        &self,
        channel_id: B256,
        deposit: u128,
    ) -> BoxFuture<'_, ChannelResult<DepositOutcome>>;

    /// Accepts a voucher whose signature the caller verified: a higher cumulative amount (by
    /// at least `min_delta`, and within the deposit) becomes the highest; an equal one is
    /// [`VoucherOutcome::AlreadyAccepted`]; a lower one is refused. Only while open.
    fn accept_voucher<'a>(
        &'a self,
        channel_id: B256,
        voucher: &'a Voucher,
        min_delta: u128,
    ) -> BoxFuture<'a, ChannelResult<VoucherOutcome>>;

    /// Charges `charge.units × charge.price` if the free headroom covers it, adding the units
    /// to the counter. Only while open. Errors if the cost is zero or overflows.
    fn charge(
        &self,
        channel_id: B256,
        charge: Charge,
    ) -> BoxFuture<'_, ChannelResult<ChargeOutcome>>;

    /// Holds `amount` of free headroom for the stream `reservation` until `ttl` from now (or
    /// adds to its reservation, which is then renewed). `amount` may be zero to renew only.
    /// Two reservations never hold the same headroom, and charges cannot use it.
    fn reserve<'a>(
        &'a self,
        channel_id: B256,
        reservation: &'a str,
        amount: u128,
        ttl: Duration,
    ) -> BoxFuture<'a, ChannelResult<ReserveOutcome>>;

    /// [`accept_voucher`](Self::accept_voucher), then, when the voucher is accepted or equals
    /// the highest, [`reserve`](Self::reserve) of `amount` for `reservation`: what a content
    /// request paying with a new voucher does before its handler runs. The backends here do
    /// both in one atomic step with one write; this default runs the two operations in turn
    /// (each atomic) for stores that have no combined form.
    fn accept_and_reserve<'a>(
        &'a self,
        channel_id: B256,
        voucher: &'a Voucher,
        min_delta: u128,
        reservation: &'a str,
        hold: (u128, Duration),
    ) -> BoxFuture<'a, ChannelResult<AcceptReserveOutcome>> {
        Box::pin(async move {
            let voucher = self.accept_voucher(channel_id, voucher, min_delta).await?;
            let reserve = match voucher {
                VoucherOutcome::Accepted(_) | VoucherOutcome::AlreadyAccepted(_) => Some(
                    self.reserve(channel_id, reservation, hold.0, hold.1)
                        .await?,
                ),
                _ => None,
            };
            Ok(AcceptReserveOutcome { voucher, reserve })
        })
    }

    /// Moves `commit.amount` of the reservation to `spent` (and adds `commit.units`),
    /// releasing the rest if `commit.release_rest` or nothing is left. Only while open;
    /// on a closing or finalized channel the reservation is released and nothing is charged.
    fn commit<'a>(
        &'a self,
        channel_id: B256,
        reservation: &'a str,
        commit: Commit,
    ) -> BoxFuture<'a, ChannelResult<CommitOutcome>>;

    /// Releases a reservation without charging anything (a stream that ended early).
    fn release<'a>(
        &'a self,
        channel_id: B256,
        reservation: &'a str,
    ) -> BoxFuture<'a, ChannelResult<CommitOutcome>> {
        self.commit(
            channel_id,
            reservation,
            Commit {
                amount: 0,
                units: 0,
                release_rest: true,
            },
        )
    }

    /// Marks an open channel closing (a close requested on chain, or this server about to
    /// close it): vouchers, charges, reservations and commits stop.
    fn mark_closing(
        &self,
        channel_id: B256,
        requested_at: OffsetDateTime,
    ) -> BoxFuture<'_, ChannelResult<CloseOutcome>>;

    /// Reopens a channel marked closing at `requested_at` (a close that failed to send, or a
    /// close request cancelled on chain by a top-up). A later or other marker is left alone.
    fn cancel_closing(
        &self,
        channel_id: B256,
        requested_at: OffsetDateTime,
    ) -> BoxFuture<'_, ChannelResult<CancelCloseOutcome>>;

    /// Records a verified on-chain settlement: `settled` grows to `settled`, and the last
    /// settlement (now, the current `spent` and `units`, `tx_hash`) is recorded.
    fn record_settlement(
        &self,
        channel_id: B256,
        settled: u128,
        tx_hash: Option<B256>,
    ) -> BoxFuture<'_, ChannelResult<SettlementOutcome>>;

    /// Marks the channel closed on chain, with its final settled amount when known. Drops
    /// its reservations. Idempotent.
    fn finalize(
        &self,
        channel_id: B256,
        settled: Option<u128>,
        tx_hash: Option<B256>,
    ) -> BoxFuture<'_, ChannelResult<FinalizeOutcome>>;

    /// Channels that need the settler's attention: closing ones, and those with enough
    /// unsettled value or idle with anything unsettled (see [`SettlementQuery`]).
    fn needing_settlement(
        &self,
        query: SettlementQuery,
    ) -> BoxFuture<'_, ChannelResult<Vec<Channel>>>;

    /// Releases expired reservations, then deletes expired rows that are finalized or hold
    /// nothing unsettled (`highest_voucher == settled`), and nothing reserved. A row holding
    /// an unsettled voucher is never deleted, however old.
    fn purge(&self) -> BoxFuture<'_, ChannelResult<PurgeReport>>;

    /// Starts telling `on_change` the ids of channels that any process sharing this store
    /// changed in a way that can unblock a waiting stream (a higher voucher, a larger
    /// deposit, a state change, released headroom), when the store can push them (Postgres:
    /// `LISTEN/NOTIFY`). `None` (the default): it cannot, and waiting streams poll.
    fn watch(&self, on_change: ChangeCallback) -> Option<ChangeWatch> {
        let _ = on_change;
        None
    }
}

/// What [`ChannelStore::watch`] calls with each changed channel's id.
pub type ChangeCallback = std::sync::Arc<dyn Fn(B256) + Send + Sync>;

/// A running [`ChannelStore::watch`]: stops when dropped.
#[derive(Debug)]
pub struct ChangeWatch(tokio::task::JoinHandle<()>);

impl ChangeWatch {
    /// Watches with `task` until dropped.
    pub fn new(task: tokio::task::JoinHandle<()>) -> Self {
        Self(task)
    }
}

impl Drop for ChangeWatch {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl<T: ChannelStore + ?Sized> ChannelStore for Arc<T> {
    fn open<'a>(&'a self, channel: &'a NewChannel) -> BoxFuture<'a, ChannelResult<OpenOutcome>> {
        (**self).open(channel)
    }

    fn get(&self, channel_id: B256) -> BoxFuture<'_, ChannelResult<Option<Channel>>> {
        (**self).get(channel_id)
    }

    fn record_deposit(
        &self,
        channel_id: B256,
        deposit: u128,
    ) -> BoxFuture<'_, ChannelResult<DepositOutcome>> {
        (**self).record_deposit(channel_id, deposit)
    }

    fn accept_voucher<'a>(
        &'a self,
        channel_id: B256,
        voucher: &'a Voucher,
        min_delta: u128,
    ) -> BoxFuture<'a, ChannelResult<VoucherOutcome>> {
        (**self).accept_voucher(channel_id, voucher, min_delta)
    }

    fn charge(
        &self,
        channel_id: B256,
        charge: Charge,
    ) -> BoxFuture<'_, ChannelResult<ChargeOutcome>> {
        (**self).charge(channel_id, charge)
    }

    fn reserve<'a>(
        &'a self,
        channel_id: B256,
        reservation: &'a str,
        amount: u128,
        ttl: Duration,
    ) -> BoxFuture<'a, ChannelResult<ReserveOutcome>> {
        (**self).reserve(channel_id, reservation, amount, ttl)
    }

    fn accept_and_reserve<'a>(
        &'a self,
        channel_id: B256,
        voucher: &'a Voucher,
        min_delta: u128,
        reservation: &'a str,
        hold: (u128, Duration),
    ) -> BoxFuture<'a, ChannelResult<AcceptReserveOutcome>> {
        (**self).accept_and_reserve(channel_id, voucher, min_delta, reservation, hold)
    }

    fn commit<'a>(
        &'a self,
        channel_id: B256,
        reservation: &'a str,
        commit: Commit,
    ) -> BoxFuture<'a, ChannelResult<CommitOutcome>> {
        (**self).commit(channel_id, reservation, commit)
    }

    fn release<'a>(
        &'a self,
        channel_id: B256,
        reservation: &'a str,
    ) -> BoxFuture<'a, ChannelResult<CommitOutcome>> {
        (**self).release(channel_id, reservation)
    }

    fn mark_closing(
        &self,
        channel_id: B256,
        requested_at: OffsetDateTime,
    ) -> BoxFuture<'_, ChannelResult<CloseOutcome>> {
        (**self).mark_closing(channel_id, requested_at)
    }

    fn cancel_closing(
        &self,
        channel_id: B256,
        requested_at: OffsetDateTime,
    ) -> BoxFuture<'_, ChannelResult<CancelCloseOutcome>> {
        (**self).cancel_closing(channel_id, requested_at)
    }

    fn record_settlement(
        &self,
        channel_id: B256,
        settled: u128,
        tx_hash: Option<B256>,
    ) -> BoxFuture<'_, ChannelResult<SettlementOutcome>> {
        (**self).record_settlement(channel_id, settled, tx_hash)
    }

    fn finalize(
        &self,
        channel_id: B256,
        settled: Option<u128>,
        tx_hash: Option<B256>,
    ) -> BoxFuture<'_, ChannelResult<FinalizeOutcome>> {
        (**self).finalize(channel_id, settled, tx_hash)
    }

    fn needing_settlement(
        &self,
        query: SettlementQuery,
    ) -> BoxFuture<'_, ChannelResult<Vec<Channel>>> {
        (**self).needing_settlement(query)
    }

    fn purge(&self) -> BoxFuture<'_, ChannelResult<PurgeReport>> {
        (**self).purge()
    }

    fn watch(&self, on_change: ChangeCallback) -> Option<ChangeWatch> {
        (**self).watch(on_change)
    }
}
