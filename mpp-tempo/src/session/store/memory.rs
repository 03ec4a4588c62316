//! [`MemoryChannelStore`]: channel rows in process memory, for layer tests and examples.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use alloy::primitives::B256;
use mpp_core::BoxFuture;
use time::OffsetDateTime;

use super::logic::{self, Step, Write};
use super::{
    AcceptReserveOutcome, CancelCloseOutcome, Channel, ChannelResult, ChannelStore, Charge,
    ChargeOutcome, CloseOutcome, Commit, CommitOutcome, DepositOutcome, FinalizeOutcome,
    NewChannel, OpenOutcome, PurgeReport, ReserveOutcome, SettlementOutcome, SettlementQuery,
    Voucher, VoucherOutcome,
};
use crate::store::StoreError;

/// The default bound on channels held ([`MemoryChannelStore::with_capacity`]).
pub const DEFAULT_CAPACITY: usize = 100_000;

/// An in-process [`ChannelStore`].
///
/// Every operation runs under one mutex, so it is atomic within this process; clones share
/// the same channels. Memory is bounded: when `capacity` channels are held, opening another
/// first purges what [`ChannelStore::purge`] may, and fails as a store fault (503) if that
/// frees nothing, rather than dropping a channel that may hold unsettled vouchers. Nothing is
/// persisted or shared with other processes: use [`crate::store::SqliteStore`] or
/// [`crate::store::PgStore`] for anything that takes real money.
#[derive(Debug, Clone)]
pub struct MemoryChannelStore {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Debug)]
struct Inner {
    channels: HashMap<B256, Channel>,
    capacity: usize,
}

impl Inner {
    fn purge(&mut self, now: OffsetDateTime) -> PurgeReport {
        let mut report = PurgeReport::default();
        for ch in self.channels.values_mut() {
            let mut slot = Some(ch.clone());
            if logic::purge_sweep(&mut slot, now).outcome
                && let Some(swept) = slot
            {
                *ch = swept;
                report.swept_channels += 1;
            }
        }
        let before = self.channels.len();
        self.channels.retain(|_, ch| !logic::purgeable(ch, now));
        report.deleted_channels = (before - self.channels.len()) as u64;
        report
    }
}

impl Default for MemoryChannelStore {
    fn default() -> Self {
        Self::with_capacity(DEFAULT_CAPACITY)
    }
}

impl MemoryChannelStore {
    /// An empty store holding at most [`DEFAULT_CAPACITY`] channels.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty store holding at most `capacity` channels.
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            inner: Arc::new(Mutex::new(Inner {
                channels: HashMap::new(),
                capacity,
            })),
        }
    }

    /// The number of channels held.
    pub fn len(&self) -> usize {
        self.lock().channels.len()
    }

    /// Whether no channel is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Every critical section leaves the map consistent (a row is replaced whole, after
        // the decision), so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs one operation on a copy of the row under the lock, and stores the copy back if
    /// the operation changed it.
    fn with<O>(
        &self,
        channel_id: B256,
        op: impl FnOnce(&mut Option<Channel>, OffsetDateTime) -> ChannelResult<Step<O>>,
    ) -> ChannelResult<O> {
        let mut inner = self.lock();
        // Read under the lock: each operation's time is in the order operations take effect.
        let now = logic::now();
        let mut slot = inner.channels.get(&channel_id).cloned();
        let step = op(&mut slot, now)?;
        if step.write != Write::None {
            let Some(ch) = slot else {
                return Err(StoreError::new("a channel operation lost its row").into());
            };
            if let Err(broken) = logic::check_invariants(&ch) {
                return Err(StoreError::new(format!(
                    "channel {channel_id}: refusing a write that breaks the invariants: {broken}"
                ))
                .into());
            }
            if step.write == Write::Insert
                && inner.channels.len() >= inner.capacity
                && inner.purge(now).deleted_channels == 0
            {
                return Err(StoreError::new(format!(
                    "the memory channel store holds its capacity of {} channels",
                    inner.capacity
                ))
                .into());
            }
            inner.channels.insert(channel_id, ch);
        }
        Ok(step.outcome)
    }

    fn ready<T: Send + 'static>(result: T) -> BoxFuture<'static, T> {
        Box::pin(std::future::ready(result))
    }
}

impl ChannelStore for MemoryChannelStore {
    fn open<'a>(&'a self, channel: &'a NewChannel) -> BoxFuture<'a, ChannelResult<OpenOutcome>> {
        Self::ready(self.with(channel.descriptor.channel_id, |slot, now| {
            logic::open(slot, channel, now)
        }))
    }

    fn get(&self, channel_id: B256) -> BoxFuture<'_, ChannelResult<Option<Channel>>> {
        Self::ready(Ok(self.lock().channels.get(&channel_id).cloned()))
    }

    fn record_deposit(
        &self,
        channel_id: B256,
        deposit: u128,
    ) -> BoxFuture<'_, ChannelResult<DepositOutcome>> {
        Self::ready(self.with(channel_id, |slot, now| {
            Ok(logic::record_deposit(slot, deposit, now))
        }))
    }

    fn accept_voucher<'a>(
        &'a self,
        channel_id: B256,
        voucher: &'a Voucher,
        min_delta: u128,
    ) -> BoxFuture<'a, ChannelResult<VoucherOutcome>> {
        Self::ready(self.with(channel_id, |slot, now| {
            Ok(logic::accept_voucher(slot, voucher, min_delta, now))
        }))
    }

    fn charge(
        &self,
        channel_id: B256,
        charge: Charge,
    ) -> BoxFuture<'_, ChannelResult<ChargeOutcome>> {
        Self::ready(self.with(channel_id, |slot, now| logic::charge(slot, charge, now)))
    }

    fn reserve<'a>(
        &'a self,
        channel_id: B256,
        reservation: &'a str,
        amount: u128,
        ttl: Duration,
    ) -> BoxFuture<'a, ChannelResult<ReserveOutcome>> {
        Self::ready(self.with(channel_id, |slot, now| {
            logic::reserve(slot, reservation, amount, ttl, now)
        }))
    }

    fn accept_and_reserve<'a>(
        &'a self,
        channel_id: B256,
        voucher: &'a Voucher,
        min_delta: u128,
        reservation: &'a str,
        hold: (u128, Duration),
    ) -> BoxFuture<'a, ChannelResult<AcceptReserveOutcome>> {
        Self::ready(self.with(channel_id, |slot, now| {
            logic::accept_and_reserve(slot, voucher, min_delta, reservation, hold, now)
        }))
    }

    fn commit<'a>(
        &'a self,
        channel_id: B256,
        reservation: &'a str,
        commit: Commit,
    ) -> BoxFuture<'a, ChannelResult<CommitOutcome>> {
        Self::ready(self.with(channel_id, |slot, now| {
            logic::commit(slot, reservation, commit, now)
        }))
    }

    fn mark_closing(
        &self,
        channel_id: B256,
        requested_at: OffsetDateTime,
    ) -> BoxFuture<'_, ChannelResult<CloseOutcome>> {
        Self::ready(self.with(channel_id, |slot, now| {
            Ok(logic::mark_closing(slot, requested_at, now))
        }))
    }

    fn cancel_closing(
        &self,
        channel_id: B256,
        requested_at: OffsetDateTime,
    ) -> BoxFuture<'_, ChannelResult<CancelCloseOutcome>> {
        Self::ready(self.with(channel_id, |slot, now| {
            Ok(logic::cancel_closing(slot, requested_at, now))
        }))
    }

    fn record_settlement(
        &self,
        channel_id: B256,
        settled: u128,
        tx_hash: Option<B256>,
    ) -> BoxFuture<'_, ChannelResult<SettlementOutcome>> {
        Self::ready(self.with(channel_id, |slot, now| {
            Ok(logic::record_settlement(slot, settled, tx_hash, now))
        }))
    }

    fn finalize(
        &self,
        channel_id: B256,
        settled: Option<u128>,
        tx_hash: Option<B256>,
    ) -> BoxFuture<'_, ChannelResult<FinalizeOutcome>> {
        Self::ready(self.with(channel_id, |slot, now| {
            Ok(logic::finalize(slot, settled, tx_hash, now))
        }))
    }

    fn needing_settlement(
        &self,
        query: SettlementQuery,
    ) -> BoxFuture<'_, ChannelResult<Vec<Channel>>> {
        let mut due: Vec<Channel> = self
            .lock()
            .channels
            .values()
            .filter(|ch| logic::needs_settlement(ch, &query))
            .cloned()
            .collect();
        due.sort_by(logic::settlement_order);
        due.truncate(usize::try_from(query.limit).unwrap_or(usize::MAX));
        Self::ready(Ok(due))
    }

    fn purge(&self) -> BoxFuture<'_, ChannelResult<PurgeReport>> {
        let report = self.lock().purge(logic::now());
        tracing::debug!(?report, "memory channel store purged");
        Self::ready(Ok(report))
    }
}
