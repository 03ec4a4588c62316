//! The channel operations as pure functions on a copy of the row.
//!
//! Every backend reads the row so that nothing else can change it before the write (a
//! mutex, `BEGIN IMMEDIATE`, `SELECT ... FOR UPDATE`, or a write conditional on the version
//! read), hands it to one of these functions, and writes the row back if the [`Step`] says
//! so. So the rules live here once, and the backends only differ in how they isolate and
//! persist.

use std::time::Duration;

use alloy::primitives::B256;
use time::OffsetDateTime;

use super::{
    AcceptReserveOutcome, CancelCloseOutcome, Channel, ChannelResult, ChannelState,
    ChannelStoreError, Charge, ChargeOutcome, CloseOutcome, Commit, CommitOutcome, DepositOutcome,
    FinalizeOutcome, LastSettlement, MAX_RESERVATION_ID_LEN, MAX_RESERVATIONS, MAX_RETENTION,
    NewChannel, OpenOutcome, Reservation, ReserveOutcome, SettlementOutcome, SettlementQuery,
    Voucher, VoucherOutcome,
};
use crate::store::{now_unix_ms, unix_ms_ceil};

/// What to do with the row after an operation decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Write {
    /// Nothing changed.
    None,
    /// The stored row changed (its `version` was bumped from the one read).
    Update,
    /// The row is new.
    Insert,
}

/// An operation's decision: its outcome, and what to persist.
#[derive(Debug)]
pub(super) struct Step<O> {
    pub(super) outcome: O,
    pub(super) write: Write,
}

impl<O> Step<O> {
    fn keep(outcome: O) -> Self {
        Self {
            outcome,
            write: Write::None,
        }
    }

    fn update(outcome: O) -> Self {
        Self {
            outcome,
            write: Write::Update,
        }
    }

    /// `outcome`, written if an earlier part of the operation (a sweep) changed the row.
    fn swept(outcome: O, swept: bool) -> Self {
        Self {
            outcome,
            write: if swept { Write::Update } else { Write::None },
        }
    }
}

/// The store's clock: now, at millisecond precision (what the rows hold).
pub(super) fn now() -> OffsetDateTime {
    ms_to_time(now_unix_ms()).unwrap_or_else(OffsetDateTime::now_utc)
}

/// Unix milliseconds to a time (`None` out of range).
pub(super) fn ms_to_time(ms: i64) -> Option<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).ok()
}

/// A time as unix milliseconds (rounded up; exact for the store's own times).
pub(super) fn time_to_ms(t: OffsetDateTime) -> i64 {
    unix_ms_ceil(t)
}

/// `t + d`, rounded up to the millisecond, saturating at the far future.
fn later(t: OffsetDateTime, d: Duration) -> OffsetDateTime {
    let far = OffsetDateTime::new_utc(time::Date::MAX, time::Time::MIDNIGHT);
    let sum = t.checked_add(time::Duration::try_from(d).unwrap_or(time::Duration::MAX));
    sum.and_then(|t| ms_to_time(unix_ms_ceil(t))).unwrap_or(far)
}

/// Records a change: bumps the version, the update time and the expiry.
fn touch(ch: &mut Channel, now: OffsetDateTime) {
    ch.updated_at = now;
    ch.expires_at = later(now, ch.retention);
    ch.version = ch.version.saturating_add(1);
}

/// Drops expired reservations (a change: the version is bumped, but not the update time,
/// which tracks the channel's own activity); `true` if any was.
fn sweep(ch: &mut Channel, now: OffsetDateTime) -> bool {
    let before = ch.reservations.len();
    ch.reservations.retain(|r| r.expires_at > now);
    if ch.reservations.len() == before {
        return false;
    }
    ch.reserved = ch.reservations.iter().map(|r| r.amount).sum();
    ch.version = ch.version.saturating_add(1);
    tracing::debug!(channel = %ch.id(), dropped = before - ch.reservations.len(), "expired reservations released");
    true
}

/// The invariants every stored row satisfies; a row that breaks them is corrupt.
pub(super) fn check_invariants(ch: &Channel) -> Result<(), String> {
    let committed = ch
        .spent
        .checked_add(ch.reserved)
        .ok_or("spent + reserved overflows")?;
    if committed > ch.highest_voucher {
        return Err(format!(
            "spent {} + reserved {} exceed the highest voucher {}",
            ch.spent, ch.reserved, ch.highest_voucher
        ));
    }
    if ch.highest_voucher > ch.deposit {
        return Err(format!(
            "highest voucher {} exceeds the deposit {}",
            ch.highest_voucher, ch.deposit
        ));
    }
    if ch.settled > ch.highest_voucher {
        return Err(format!(
            "settled {} exceeds the highest voucher {}",
            ch.settled, ch.highest_voucher
        ));
    }
    let mut sum: u128 = 0;
    for r in &ch.reservations {
        sum = sum.checked_add(r.amount).ok_or("reservations overflow")?;
    }
    if sum != ch.reserved {
        return Err(format!(
            "reserved {} is not the sum of the reservations {sum}",
            ch.reserved
        ));
    }
    if i64::try_from(ch.units).is_err() {
        return Err(format!("units {} out of range", ch.units));
    }
    if ch.version == 0 {
        return Err("version 0".to_owned());
    }
    Ok(())
}

/// Rejects a descriptor or retention the SQL columns cannot hold.
fn validate_new(new: &NewChannel) -> ChannelResult<()> {
    if i64::try_from(new.descriptor.chain_id).is_err() {
        return Err(ChannelStoreError::Invalid(format!(
            "chain id {} out of range",
            new.descriptor.chain_id
        )));
    }
    if new.settled > new.deposit {
        return Err(ChannelStoreError::Invalid(format!(
            "settled {} exceeds the deposit {}",
            new.settled, new.deposit
        )));
    }
    if new.retention > MAX_RETENTION {
        return Err(ChannelStoreError::Invalid(format!(
            "retention {:?} is longer than {MAX_RETENTION:?}",
            new.retention
        )));
    }
    Ok(())
}

/// The row for a new channel.
pub(super) fn new_channel(new: &NewChannel, now: OffsetDateTime) -> Channel {
    // Rows hold milliseconds: round up, so a row is never kept shorter than asked.
    let ms = new.retention.as_millis()
        + u128::from(!new.retention.subsec_nanos().is_multiple_of(1_000_000));
    let retention = Duration::from_millis(u64::try_from(ms).unwrap_or(u64::MAX));
    Channel {
        descriptor: new.descriptor.clone(),
        deposit: new.deposit,
        highest_voucher: new.settled,
        voucher_signature: None,
        spent: new.settled,
        reserved: 0,
        reservations: Vec::new(),
        settled: new.settled,
        units: 0,
        state: ChannelState::Open,
        last_settlement: None,
        created_at: now,
        updated_at: now,
        retention,
        expires_at: later(now, retention),
        version: 1,
    }
}

/// [`super::ChannelStore::open`].
pub(super) fn open(
    slot: &mut Option<Channel>,
    new: &NewChannel,
    now: OffsetDateTime,
) -> ChannelResult<Step<OpenOutcome>> {
    validate_new(new)?;
    let Some(ch) = slot else {
        let ch = new_channel(new, now);
        *slot = Some(ch.clone());
        tracing::info!(channel = %ch.id(), deposit = ch.deposit, "channel opened");
        return Ok(Step {
            outcome: OpenOutcome::Opened(ch),
            write: Write::Insert,
        });
    };
    if ch.descriptor != new.descriptor {
        tracing::warn!(channel = %ch.id(), "open of a stored channel with another descriptor");
        return Ok(Step::keep(OpenOutcome::Conflict(ch.clone())));
    }
    if new.deposit > ch.deposit && !ch.state.is_finalized() {
        ch.deposit = new.deposit;
        touch(ch, now);
        return Ok(Step::update(OpenOutcome::AlreadyOpen(ch.clone())));
    }
    Ok(Step::keep(OpenOutcome::AlreadyOpen(ch.clone())))
}

/// [`super::ChannelStore::record_deposit`].
pub(super) fn record_deposit(
    slot: &mut Option<Channel>,
    deposit: u128,
    now: OffsetDateTime,
) -> Step<DepositOutcome> {
    let Some(ch) = slot else {
        return Step::keep(DepositOutcome::NotFound);
    };
    if ch.state.is_finalized() {
        return Step::keep(DepositOutcome::Finalized(ch.clone()));
    }
    match deposit.cmp(&ch.deposit) {
        std::cmp::Ordering::Less => Step::keep(DepositOutcome::Stale(ch.clone())),
        std::cmp::Ordering::Equal => Step::keep(DepositOutcome::Unchanged(ch.clone())),
        std::cmp::Ordering::Greater => {
            tracing::debug!(channel = %ch.id(), from = ch.deposit, to = deposit, "deposit raised");
            ch.deposit = deposit;
            touch(ch, now);
            Step::update(DepositOutcome::Raised(ch.clone()))
        }
    }
}

/// Whether [`accept_voucher`] accepts `amount` on `ch`. The Postgres fast path is exactly this
/// condition in SQL.
fn voucher_acceptable(ch: &Channel, amount: u128, min_delta: u128) -> bool {
    ch.state.is_open()
        && amount > ch.highest_voucher
        && amount <= ch.deposit
        && amount - ch.highest_voucher >= min_delta
}

/// [`super::ChannelStore::accept_voucher`].
pub(super) fn accept_voucher(
    slot: &mut Option<Channel>,
    voucher: &Voucher,
    min_delta: u128,
    now: OffsetDateTime,
) -> Step<VoucherOutcome> {
    let Some(ch) = slot else {
        return Step::keep(VoucherOutcome::NotFound);
    };
    let amount = voucher.cumulative_amount;
    if voucher_acceptable(ch, amount, min_delta) {
        ch.highest_voucher = amount;
        ch.voucher_signature = Some(voucher.signature.clone());
        touch(ch, now);
        tracing::debug!(channel = %ch.id(), amount, "voucher accepted");
        return Step::update(VoucherOutcome::Accepted(ch.clone()));
    }
    let outcome = if !ch.state.is_open() {
        VoucherOutcome::Closed(ch.clone())
    } else if amount < ch.highest_voucher {
        VoucherOutcome::BelowHighest(ch.clone())
    } else if amount == ch.highest_voucher {
        VoucherOutcome::AlreadyAccepted(ch.clone())
    } else if amount > ch.deposit {
        VoucherOutcome::ExceedsDeposit(ch.clone())
    } else {
        VoucherOutcome::DeltaTooSmall(ch.clone())
    };
    Step::keep(outcome)
}

/// [`super::ChannelStore::accept_and_reserve`]: both steps on one locked row, written once.
pub(super) fn accept_and_reserve(
    slot: &mut Option<Channel>,
    voucher: &Voucher,
    min_delta: u128,
    reservation: &str,
    (amount, ttl): (u128, Duration),
    now: OffsetDateTime,
) -> ChannelResult<Step<AcceptReserveOutcome>> {
    let accepted = accept_voucher(slot, voucher, min_delta, now);
    let held = match accepted.outcome {
        VoucherOutcome::Accepted(_) | VoucherOutcome::AlreadyAccepted(_) => {
            Some(reserve(slot, reservation, amount, ttl, now)?)
        }
        _ => None,
    };
    let write = match (accepted.write, held.as_ref().map(|h| h.write)) {
        (Write::None, None | Some(Write::None)) => Write::None,
        _ => Write::Update,
    };
    Ok(Step {
        outcome: AcceptReserveOutcome {
            voucher: accepted.outcome,
            reserve: held.map(|h| h.outcome),
        },
        write,
    })
}

/// The cost of `charge`, or why it cannot be charged.
pub(super) fn charge_cost(charge: Charge) -> ChannelResult<u128> {
    match charge.cost() {
        None => Err(ChannelStoreError::Invalid(format!(
            "{} units at {} overflow",
            charge.units, charge.price
        ))),
        Some(0) => Err(ChannelStoreError::Invalid("a charge of nothing".to_owned())),
        Some(cost) => Ok(cost),
    }
}

/// `units + more`, within the SQL columns' `i64` range.
fn add_units(units: u64, more: u64) -> ChannelResult<u64> {
    units
        .checked_add(more)
        .filter(|u| i64::try_from(*u).is_ok())
        .ok_or_else(|| ChannelStoreError::Invalid(format!("units {units} + {more} overflow")))
}

/// [`super::ChannelStore::charge`]. Expired reservations are swept only when the headroom
/// would not do otherwise (the Postgres fast path never sweeps).
pub(super) fn charge(
    slot: &mut Option<Channel>,
    charge: Charge,
    now: OffsetDateTime,
) -> ChannelResult<Step<ChargeOutcome>> {
    let cost = charge_cost(charge)?;
    let Some(ch) = slot else {
        return Ok(Step::keep(ChargeOutcome::NotFound));
    };
    if !ch.state.is_open() {
        return Ok(Step::keep(ChargeOutcome::Closed(ch.clone())));
    }
    let swept = ch.available() < cost && sweep(ch, now);
    if ch.available() < cost {
        return Ok(Step::swept(
            ChargeOutcome::Insufficient {
                cost,
                channel: ch.clone(),
            },
            swept,
        ));
    }
    ch.units = add_units(ch.units, charge.units)?;
    ch.spent += cost;
    touch(ch, now);
    tracing::debug!(channel = %ch.id(), cost, spent = ch.spent, "channel charged");
    Ok(Step::update(ChargeOutcome::Charged(ch.clone())))
}

fn validate_reservation_id(id: &str) -> ChannelResult<()> {
    if id.is_empty() || id.len() > MAX_RESERVATION_ID_LEN {
        return Err(ChannelStoreError::Invalid(format!(
            "a reservation id has 1 to {MAX_RESERVATION_ID_LEN} bytes, not {}",
            id.len()
        )));
    }
    Ok(())
}

/// [`super::ChannelStore::reserve`].
pub(super) fn reserve(
    slot: &mut Option<Channel>,
    id: &str,
    amount: u128,
    ttl: Duration,
    now: OffsetDateTime,
) -> ChannelResult<Step<ReserveOutcome>> {
    validate_reservation_id(id)?;
    if ttl > MAX_RETENTION {
        return Err(ChannelStoreError::Invalid(format!(
            "reservation ttl {ttl:?} is longer than {MAX_RETENTION:?}"
        )));
    }
    let Some(ch) = slot else {
        return Ok(Step::keep(ReserveOutcome::NotFound));
    };
    if !ch.state.is_open() {
        return Ok(Step::keep(ReserveOutcome::Closed(ch.clone())));
    }
    let swept = sweep(ch, now);
    let existing = ch.reservations.iter().position(|r| r.id == id);
    if existing.is_none() && ch.reservations.len() >= MAX_RESERVATIONS {
        return Ok(Step::swept(
            ReserveOutcome::TooManyReservations(ch.clone()),
            swept,
        ));
    }
    if ch.available() < amount {
        return Ok(Step::swept(ReserveOutcome::Insufficient(ch.clone()), swept));
    }
    let expires_at = later(now, ttl);
    let held = match existing {
        Some(i) => {
            let r = &mut ch.reservations[i];
            r.amount += amount;
            r.expires_at = r.expires_at.max(expires_at);
            r.amount
        }
        None => {
            ch.reservations.push(Reservation {
                id: id.to_owned(),
                amount,
                expires_at,
            });
            amount
        }
    };
    ch.reserved += amount;
    touch(ch, now);
    tracing::debug!(channel = %ch.id(), reservation = id, amount, held, "headroom reserved");
    Ok(Step::update(ReserveOutcome::Reserved {
        held,
        channel: ch.clone(),
    }))
}

/// [`super::ChannelStore::commit`].
pub(super) fn commit(
    slot: &mut Option<Channel>,
    id: &str,
    commit: Commit,
    now: OffsetDateTime,
) -> ChannelResult<Step<CommitOutcome>> {
    validate_reservation_id(id)?;
    let Some(ch) = slot else {
        return Ok(Step::keep(CommitOutcome::NotFound));
    };
    let swept = sweep(ch, now);
    let Some(i) = ch.reservations.iter().position(|r| r.id == id) else {
        return Ok(Step::swept(
            CommitOutcome::ReservationNotFound(ch.clone()),
            swept,
        ));
    };
    let held = ch.reservations[i].amount;
    if !ch.state.is_open() {
        ch.reservations.remove(i);
        ch.reserved -= held;
        touch(ch, now);
        return Ok(Step::update(CommitOutcome::Closed {
            released: held,
            channel: ch.clone(),
        }));
    }
    if commit.amount > held {
        return Ok(Step::swept(
            CommitOutcome::ExceedsReservation {
                held,
                channel: ch.clone(),
            },
            swept,
        ));
    }
    ch.units = add_units(ch.units, commit.units)?;
    let rest = held - commit.amount;
    let released = if commit.release_rest || rest == 0 {
        ch.reservations.remove(i);
        rest
    } else {
        ch.reservations[i].amount = rest;
        0
    };
    ch.spent += commit.amount;
    ch.reserved -= commit.amount + released;
    touch(ch, now);
    tracing::debug!(channel = %ch.id(), reservation = id, amount = commit.amount, released, "reservation committed");
    Ok(Step::update(CommitOutcome::Committed {
        released,
        channel: ch.clone(),
    }))
}

/// [`super::ChannelStore::mark_closing`].
pub(super) fn mark_closing(
    slot: &mut Option<Channel>,
    requested_at: OffsetDateTime,
    now: OffsetDateTime,
) -> Step<CloseOutcome> {
    let Some(ch) = slot else {
        return Step::keep(CloseOutcome::NotFound);
    };
    match ch.state {
        ChannelState::Open => {
            // The row holds milliseconds.
            let requested_at = ms_to_time(time_to_ms(requested_at)).unwrap_or(now);
            ch.state = ChannelState::Closing { requested_at };
            touch(ch, now);
            tracing::info!(channel = %ch.id(), %requested_at, "channel closing");
            Step::update(CloseOutcome::Marked(ch.clone()))
        }
        ChannelState::Closing { .. } => Step::keep(CloseOutcome::AlreadyClosing(ch.clone())),
        ChannelState::Finalized { .. } => Step::keep(CloseOutcome::Finalized(ch.clone())),
    }
}

/// [`super::ChannelStore::cancel_closing`].
pub(super) fn cancel_closing(
    slot: &mut Option<Channel>,
    requested_at: OffsetDateTime,
    now: OffsetDateTime,
) -> Step<CancelCloseOutcome> {
    let Some(ch) = slot else {
        return Step::keep(CancelCloseOutcome::NotFound);
    };
    match ch.state {
        ChannelState::Closing { requested_at: at }
            if time_to_ms(at) == time_to_ms(requested_at) =>
        {
            ch.state = ChannelState::Open;
            touch(ch, now);
            tracing::info!(channel = %ch.id(), "channel closing cancelled");
            Step::update(CancelCloseOutcome::Reopened(ch.clone()))
        }
        _ => Step::keep(CancelCloseOutcome::NotClosing(ch.clone())),
    }
}

/// [`super::ChannelStore::record_settlement`].
pub(super) fn record_settlement(
    slot: &mut Option<Channel>,
    settled: u128,
    tx_hash: Option<B256>,
    now: OffsetDateTime,
) -> Step<SettlementOutcome> {
    let Some(ch) = slot else {
        return Step::keep(SettlementOutcome::NotFound);
    };
    if ch.state.is_finalized() {
        return Step::keep(SettlementOutcome::Finalized(ch.clone()));
    }
    if settled > ch.highest_voucher {
        tracing::warn!(channel = %ch.id(), settled, highest = ch.highest_voucher,
            "settled amount above the highest voucher accepted");
        return Step::keep(SettlementOutcome::AboveHighest(ch.clone()));
    }
    match settled.cmp(&ch.settled) {
        std::cmp::Ordering::Less => Step::keep(SettlementOutcome::Stale(ch.clone())),
        std::cmp::Ordering::Equal => Step::keep(SettlementOutcome::Unchanged(ch.clone())),
        std::cmp::Ordering::Greater => {
            ch.settled = settled;
            ch.last_settlement = Some(LastSettlement {
                at: now,
                spent: ch.spent,
                units: ch.units,
                tx_hash,
            });
            touch(ch, now);
            tracing::info!(channel = %ch.id(), settled, "settlement recorded");
            Step::update(SettlementOutcome::Recorded(ch.clone()))
        }
    }
}

/// [`super::ChannelStore::finalize`].
pub(super) fn finalize(
    slot: &mut Option<Channel>,
    settled: Option<u128>,
    tx_hash: Option<B256>,
    now: OffsetDateTime,
) -> Step<FinalizeOutcome> {
    let Some(ch) = slot else {
        return Step::keep(FinalizeOutcome::NotFound);
    };
    if ch.state.is_finalized() {
        return Step::keep(FinalizeOutcome::AlreadyFinalized(ch.clone()));
    }
    if let Some(settled) = settled {
        if settled > ch.highest_voucher {
            tracing::warn!(channel = %ch.id(), settled, highest = ch.highest_voucher,
                "final settled amount above the highest voucher accepted");
            return Step::keep(FinalizeOutcome::AboveHighest(ch.clone()));
        }
        if settled > ch.settled {
            ch.settled = settled;
            ch.last_settlement = Some(LastSettlement {
                at: now,
                spent: ch.spent,
                units: ch.units,
                tx_hash,
            });
        }
    }
    ch.reservations.clear();
    ch.reserved = 0;
    ch.state = ChannelState::Finalized { at: now, tx_hash };
    touch(ch, now);
    tracing::info!(channel = %ch.id(), settled = ch.settled, spent = ch.spent, "channel finalized");
    Step::update(FinalizeOutcome::Finalized(ch.clone()))
}

/// Whether [`super::ChannelStore::needing_settlement`] returns `ch` (the SQL backends say the
/// same in their `WHERE`).
pub(super) fn needs_settlement(ch: &Channel, query: &SettlementQuery) -> bool {
    match ch.state {
        ChannelState::Finalized { .. } => false,
        ChannelState::Closing { .. } => true,
        ChannelState::Open => {
            let unsettled = ch.unsettled();
            unsettled > 0
                && (unsettled >= query.min_unsettled
                    || query.idle_since.is_some_and(|t| ch.updated_at <= t))
        }
    }
}

/// The order [`super::ChannelStore::needing_settlement`] returns channels in.
pub(super) fn settlement_order(a: &Channel, b: &Channel) -> std::cmp::Ordering {
    let closing = |c: &Channel| matches!(c.state, ChannelState::Closing { .. });
    closing(b)
        .cmp(&closing(a))
        .then(b.unsettled().cmp(&a.unsettled()))
        .then(a.id().cmp(&b.id()))
}

/// Sweeps `ch`'s expired reservations for [`super::ChannelStore::purge`].
pub(super) fn purge_sweep(slot: &mut Option<Channel>, now: OffsetDateTime) -> Step<bool> {
    let swept = slot.as_mut().is_some_and(|ch| sweep(ch, now));
    Step::swept(swept, swept)
}

/// Whether [`super::ChannelStore::purge`] deletes `ch` (after its sweep).
pub(super) fn purgeable(ch: &Channel, now: OffsetDateTime) -> bool {
    ch.expires_at <= now
        && ch.reserved == 0
        && (ch.state.is_finalized() || ch.highest_voucher == ch.settled)
}
