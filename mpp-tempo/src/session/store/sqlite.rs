//! [`ChannelStore`] for [`SqliteStore`]: the `session_channels` table in the same file as the
//! replay keys.
//!
//! Every change runs inside a `BEGIN IMMEDIATE` transaction: it takes SQLite's database
//! write lock before reading the row, so the read, the decision (in Rust: SQLite cannot do
//! `u128` arithmetic) and the write are one atomic step, serialized with every other writer
//! on the file, whichever connection, pool or process it comes from. The `UPDATE` is still
//! conditional on the row's `version` as read, and a write that matches no row fails closed.
//! Concurrent writers wait for the lock up to the pool's busy timeout.
//!
//! A durable commit costs an fsync (about a millisecond), far more than the operation. So
//! each store handle has one writer task ([`ChannelWriter`]) that runs every operation queued
//! while the previous transaction committed in the next one, in order, and commits once:
//! under load, one fsync serves dozens of operations instead of one.

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use alloy::primitives::B256;
use mpp_core::BoxFuture;
use sqlx::{SqliteConnection, SqlitePool};
use time::OffsetDateTime;
use tokio::sync::{mpsc, oneshot};

use super::logic::{self, Step, Write, time_to_ms};
use super::row::{Encoded, RawChannel, channel_key, encode, padded_amount};
use super::{
    AcceptReserveOutcome, CancelCloseOutcome, Channel, ChannelResult, ChannelStore,
    ChannelStoreError, Charge, ChargeOutcome, CloseOutcome, Commit, CommitOutcome, DepositOutcome,
    FinalizeOutcome, NewChannel, OpenOutcome, PurgeReport, ReserveOutcome, SettlementOutcome,
    SettlementQuery, Voucher, VoucherOutcome, with_deadline,
};
use crate::store::{SqliteStore, StoreError, one_row};

macro_rules! columns {
    () => {
        "channel_id, protocol, chain_id, escrow, payer, payee, token, operator, \
         authorized_signer, salt, expiring_nonce_hash, deposit, highest_voucher, \
         voucher_signature, spent, reserved, reservations, settled, units, state, \
         close_requested_at, finalized_at, finalized_tx, last_settlement_at, \
         last_settlement_spent, last_settlement_units, last_settlement_tx, created_at, \
         updated_at, retention_ms, expires_at, version"
    };
}

const SELECT_SQL: &str = concat!(
    "SELECT ",
    columns!(),
    " FROM session_channels WHERE channel_id = ?1"
);
const INSERT_SQL: &str = "INSERT INTO session_channels (channel_id, protocol, chain_id, \
     escrow, payer, payee, token, operator, authorized_signer, salt, expiring_nonce_hash, \
     deposit, highest_voucher, voucher_signature, spent, reserved, reservations, \
     reservations_expire_at, settled, unsettled, units, state, close_requested_at, \
     finalized_at, finalized_tx, last_settlement_at, last_settlement_spent, \
     last_settlement_units, last_settlement_tx, created_at, updated_at, retention_ms, \
     expires_at, version) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, \
     ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22, ?23, ?24, ?25, ?26, ?27, ?28, ?29, ?30, \
     ?31, ?32, ?33, ?34)";
const UPDATE_SQL: &str = "UPDATE session_channels SET deposit = ?2, highest_voucher = ?3, \
     voucher_signature = ?4, spent = ?5, reserved = ?6, reservations = ?7, \
     reservations_expire_at = ?8, settled = ?9, unsettled = ?10, units = ?11, state = ?12, \
     close_requested_at = ?13, finalized_at = ?14, finalized_tx = ?15, \
     last_settlement_at = ?16, last_settlement_spent = ?17, last_settlement_units = ?18, \
     last_settlement_tx = ?19, updated_at = ?20, expires_at = ?21, version = ?22 \
     WHERE channel_id = ?1 AND version = ?23";
const SETTLEMENT_SQL: &str = concat!(
    "SELECT ",
    columns!(),
    " FROM session_channels WHERE state = 'closing' \
     OR (state = 'open' AND unsettled > ?1 AND (unsettled >= ?2 OR updated_at <= ?3)) \
     ORDER BY state = 'closing' DESC, unsettled DESC, channel_id LIMIT ?4"
);
const SWEEP_CANDIDATES_SQL: &str =
    "SELECT channel_id FROM session_channels WHERE reservations_expire_at <= ?1";
const PURGE_SQL: &str = "DELETE FROM session_channels WHERE expires_at <= ?1 AND reserved = ?2 \
     AND (state = 'finalized' OR highest_voucher = settled)";

async fn insert(conn: &mut SqliteConnection, e: &Encoded) -> ChannelResult<()> {
    sqlx::query(INSERT_SQL)
        .bind(&e.channel_id)
        .bind(e.protocol)
        .bind(e.chain_id)
        .bind(&e.escrow)
        .bind(&e.payer)
        .bind(&e.payee)
        .bind(&e.token)
        .bind(&e.operator)
        .bind(&e.authorized_signer)
        .bind(&e.salt)
        .bind(&e.expiring_nonce_hash)
        .bind(&e.deposit)
        .bind(&e.highest_voucher)
        .bind(&e.voucher_signature)
        .bind(&e.spent)
        .bind(&e.reserved)
        .bind(&e.reservations)
        .bind(e.reservations_expire_at)
        .bind(&e.settled)
        .bind(&e.unsettled)
        .bind(e.units)
        .bind(e.state)
        .bind(e.close_requested_at)
        .bind(e.finalized_at)
        .bind(&e.finalized_tx)
        .bind(e.last_settlement_at)
        .bind(&e.last_settlement_spent)
        .bind(e.last_settlement_units)
        .bind(&e.last_settlement_tx)
        .bind(e.created_at)
        .bind(e.updated_at)
        .bind(e.retention_ms)
        .bind(e.expires_at)
        .bind(e.version)
        .execute(conn)
        .await?;
    Ok(())
}

async fn update(conn: &mut SqliteConnection, e: &Encoded, read_version: i64) -> ChannelResult<()> {
    let done = sqlx::query(UPDATE_SQL)
        .bind(&e.channel_id)
        .bind(&e.deposit)
        .bind(&e.highest_voucher)
        .bind(&e.voucher_signature)
        .bind(&e.spent)
        .bind(&e.reserved)
        .bind(&e.reservations)
        .bind(e.reservations_expire_at)
        .bind(&e.settled)
        .bind(&e.unsettled)
        .bind(e.units)
        .bind(e.state)
        .bind(e.close_requested_at)
        .bind(e.finalized_at)
        .bind(&e.finalized_tx)
        .bind(e.last_settlement_at)
        .bind(&e.last_settlement_spent)
        .bind(e.last_settlement_units)
        .bind(&e.last_settlement_tx)
        .bind(e.updated_at)
        .bind(e.expires_at)
        .bind(e.version)
        .bind(read_version)
        .execute(conn)
        .await?;
    if one_row(done.rows_affected(), "channel update")? {
        Ok(())
    } else {
        // Impossible under the write lock: something wrote the row outside this protocol.
        Err(StoreError::new(format!(
            "channel {} changed under the write lock; refusing to trust it",
            e.channel_id
        ))
        .into())
    }
}

/// Most operations committed together.
const MAX_BATCH: usize = 64;

/// A store handle's channel writer: operations queue here, and one task runs everything
/// queued so far in one `BEGIN IMMEDIATE` transaction, each operation reading its row,
/// deciding and writing in turn, then commits once (group commit). One fsync then serves
/// many operations; each still sees every operation before it, and answers only once the
/// transaction holding its write has committed.
#[derive(Debug, Default)]
pub(crate) struct ChannelWriter {
    queue: Mutex<Option<mpsc::UnboundedSender<Box<dyn Job>>>>,
}

impl ChannelWriter {
    /// Queues `job`, starting the writer task when there is none (or it stopped with the
    /// runtime it ran on). A job that cannot be queued is dropped, which answers its caller
    /// with an error.
    fn submit(&self, pool: &SqlitePool, job: Box<dyn Job>) {
        let mut queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
        let job = match queue.as_ref().filter(|q| !q.is_closed()) {
            Some(q) => match q.send(job) {
                Ok(()) => return,
                Err(mpsc::error::SendError(job)) => job,
            },
            None => job,
        };
        let (sender, receiver) = mpsc::unbounded_channel();
        tokio::spawn(write_loop(pool.clone(), receiver));
        // The receiver lives in the task just spawned.
        let _ = sender.send(job);
        *queue = Some(sender);
    }
}

/// One queued operation with its own outcome type.
trait Job: Send {
    fn channel_id(&self) -> B256;
    /// Decides on the row read under the write lock; the outcome waits in the job.
    fn decide(&mut self, slot: &mut Option<Channel>, now: OffsetDateTime) -> Write;
    /// This operation failed on its own (its write is not made; the others go on).
    fn fail(&mut self, error: ChannelStoreError);
    /// Answers the caller: its outcome, or `batch_error` when the transaction failed.
    fn answer(self: Box<Self>, batch_error: Option<&str>);
}

struct Queued<O, F> {
    channel_id: B256,
    op: Option<F>,
    outcome: Option<ChannelResult<O>>,
    reply: oneshot::Sender<ChannelResult<O>>,
}

impl<O, F> Job for Queued<O, F>
where
    O: Send,
    F: FnOnce(&mut Option<Channel>, OffsetDateTime) -> ChannelResult<Step<O>> + Send,
{
    fn channel_id(&self) -> B256 {
        self.channel_id
    }

    fn decide(&mut self, slot: &mut Option<Channel>, now: OffsetDateTime) -> Write {
        let Some(op) = self.op.take() else {
            return Write::None;
        };
        match op(slot, now) {
            Ok(step) => {
                self.outcome = Some(Ok(step.outcome));
                step.write
            }
            Err(e) => {
                self.outcome = Some(Err(e));
                Write::None
            }
        }
    }

    fn fail(&mut self, error: ChannelStoreError) {
        self.outcome = Some(Err(error));
    }

    fn answer(self: Box<Self>, batch_error: Option<&str>) {
        let result = match (batch_error, self.outcome) {
            (Some(reason), _) => Err(StoreError::new(reason).into()),
            (None, Some(outcome)) => outcome,
            (None, None) => Err(StoreError::new("a channel operation was never run").into()),
        };
        // A caller that gave up (its deadline passed) no longer listens.
        let _ = self.reply.send(result);
    }
}

async fn write_loop(pool: SqlitePool, mut queue: mpsc::UnboundedReceiver<Box<dyn Job>>) {
    let mut jobs = Vec::with_capacity(MAX_BATCH);
    while queue.recv_many(&mut jobs, MAX_BATCH).await > 0 {
        let failed = run_batch(&pool, &mut jobs)
            .await
            .err()
            .map(|e| e.to_string());
        if let Some(reason) = &failed {
            tracing::debug!(%reason, operations = jobs.len(), "SQLite channel batch failed");
        }
        for job in jobs.drain(..) {
            job.answer(failed.as_deref());
        }
    }
}

/// Runs `jobs` in one `BEGIN IMMEDIATE` transaction: SQLite's database write lock is taken
/// before any row is read, so each read, decision and write is one atomic step, serialized
/// with every other writer on the file, whichever connection, pool or process it comes
/// from. An `Err` fails every job (nothing of the batch is known to be written).
async fn run_batch(pool: &SqlitePool, jobs: &mut [Box<dyn Job>]) -> ChannelResult<()> {
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    let mut wrote = false;
    for job in jobs.iter_mut() {
        let key = channel_key(job.channel_id());
        let raw: Option<RawChannel> = sqlx::query_as(SELECT_SQL)
            .bind(&key)
            .fetch_optional(&mut *tx)
            .await?;
        let mut slot = match raw.map(RawChannel::decode).transpose() {
            Ok(slot) => slot,
            Err(e) => {
                job.fail(e.into());
                continue;
            }
        };
        let read_version = slot.as_ref().map(|c| c.version);
        // Read under the lock: each operation's time is in the order operations take effect.
        let write = job.decide(&mut slot, logic::now());
        match (write, &slot, read_version) {
            (Write::None, _, _) => {}
            (_, None, _) => job.fail(StoreError::new("a channel operation lost its row").into()),
            (write, Some(ch), read) => {
                let encoded = logic::check_invariants(ch)
                    .map_err(|broken| {
                        StoreError::new(format!(
                            "channel {key}: refusing a write that breaks the invariants: {broken}"
                        ))
                    })
                    .and_then(|()| encode(ch, padded_amount));
                let encoded = match encoded {
                    Ok(encoded) => encoded,
                    Err(e) => {
                        job.fail(e.into());
                        continue;
                    }
                };
                match (write, read) {
                    (Write::Insert, _) => insert(&mut tx, &encoded).await?,
                    (_, Some(read)) => {
                        let read = i64::try_from(read).map_err(StoreError::new)?;
                        update(&mut tx, &encoded, read).await?;
                    }
                    (_, None) => {
                        job.fail(StoreError::new("a channel update without a row read").into());
                        continue;
                    }
                }
                wrote = true;
            }
        }
    }
    if wrote {
        tx.commit().await?;
    } else {
        tx.rollback().await?;
    }
    Ok(())
}

/// Runs one operation on channel `channel_id` through the store's [`ChannelWriter`]: read
/// the row under the write lock, let `op` decide, write what it changed, commit.
async fn locked<O, F>(store: &SqliteStore, channel_id: B256, op: F) -> ChannelResult<O>
where
    O: Send + 'static,
    F: FnOnce(&mut Option<Channel>, OffsetDateTime) -> ChannelResult<Step<O>> + Send + 'static,
{
    let (reply, answer) = oneshot::channel();
    let job = Queued {
        channel_id,
        op: Some(op),
        outcome: None,
        reply,
    };
    store.channel_writer().submit(store.pool(), Box::new(job));
    answer
        .await
        .map_err(|_| StoreError::new("the channel writer stopped before answering"))?
}

fn decode_all(rows: Vec<RawChannel>) -> ChannelResult<Vec<Channel>> {
    rows.into_iter()
        .map(|r| r.decode().map_err(Into::into))
        .collect()
}

impl ChannelStore for SqliteStore {
    fn open<'a>(&'a self, channel: &'a NewChannel) -> BoxFuture<'a, ChannelResult<OpenOutcome>> {
        Box::pin(with_deadline(
            self.operation_timeout(),
            "SQLite channel open",
            async move {
                let channel = channel.clone();
                locked(self, channel.descriptor.channel_id, move |slot, now| {
                    logic::open(slot, &channel, now)
                })
                .await
            },
        ))
    }

    fn get(&self, channel_id: B256) -> BoxFuture<'_, ChannelResult<Option<Channel>>> {
        Box::pin(with_deadline(
            self.operation_timeout(),
            "SQLite channel read",
            async move {
                let raw: Option<RawChannel> = sqlx::query_as(SELECT_SQL)
                    .bind(channel_key(channel_id))
                    .fetch_optional(self.pool())
                    .await?;
                Ok(raw.map(RawChannel::decode).transpose()?)
            },
        ))
    }

    fn record_deposit(
        &self,
        channel_id: B256,
        deposit: u128,
    ) -> BoxFuture<'_, ChannelResult<DepositOutcome>> {
        Box::pin(with_deadline(
            self.operation_timeout(),
            "SQLite channel deposit",
            async move {
                locked(self, channel_id, move |slot, now| {
                    Ok(logic::record_deposit(slot, deposit, now))
                })
                .await
            },
        ))
    }

    fn accept_voucher<'a>(
        &'a self,
        channel_id: B256,
        voucher: &'a Voucher,
        min_delta: u128,
    ) -> BoxFuture<'a, ChannelResult<VoucherOutcome>> {
        Box::pin(with_deadline(
            self.operation_timeout(),
            "SQLite voucher",
            async move {
                let voucher = voucher.clone();
                locked(self, channel_id, move |slot, now| {
                    Ok(logic::accept_voucher(slot, &voucher, min_delta, now))
                })
                .await
            },
        ))
    }

    fn charge(
        &self,
        channel_id: B256,
        charge: Charge,
    ) -> BoxFuture<'_, ChannelResult<ChargeOutcome>> {
        Box::pin(with_deadline(
            self.operation_timeout(),
            "SQLite charge",
            async move {
                logic::charge_cost(charge)?;
                locked(self, channel_id, move |slot, now| {
                    logic::charge(slot, charge, now)
                })
                .await
            },
        ))
    }

    fn reserve<'a>(
        &'a self,
        channel_id: B256,
        reservation: &'a str,
        amount: u128,
        ttl: Duration,
    ) -> BoxFuture<'a, ChannelResult<ReserveOutcome>> {
        Box::pin(with_deadline(
            self.operation_timeout(),
            "SQLite reserve",
            async move {
                let reservation = reservation.to_owned();
                locked(self, channel_id, move |slot, now| {
                    logic::reserve(slot, &reservation, amount, ttl, now)
                })
                .await
            },
        ))
    }

    fn accept_and_reserve<'a>(
        &'a self,
        channel_id: B256,
        voucher: &'a Voucher,
        min_delta: u128,
        reservation: &'a str,
        hold: (u128, Duration),
    ) -> BoxFuture<'a, ChannelResult<AcceptReserveOutcome>> {
        Box::pin(with_deadline(
            self.operation_timeout(),
            "SQLite voucher and hold",
            async move {
                let (voucher, reservation) = (voucher.clone(), reservation.to_owned());
                locked(self, channel_id, move |slot, now| {
                    logic::accept_and_reserve(slot, &voucher, min_delta, &reservation, hold, now)
                })
                .await
            },
        ))
    }

    fn commit<'a>(
        &'a self,
        channel_id: B256,
        reservation: &'a str,
        commit: Commit,
    ) -> BoxFuture<'a, ChannelResult<CommitOutcome>> {
        Box::pin(with_deadline(
            self.operation_timeout(),
            "SQLite commit",
            async move {
                let reservation = reservation.to_owned();
                locked(self, channel_id, move |slot, now| {
                    logic::commit(slot, &reservation, commit, now)
                })
                .await
            },
        ))
    }

    fn mark_closing(
        &self,
        channel_id: B256,
        requested_at: OffsetDateTime,
    ) -> BoxFuture<'_, ChannelResult<CloseOutcome>> {
        Box::pin(with_deadline(
            self.operation_timeout(),
            "SQLite mark closing",
            async move {
                locked(self, channel_id, move |slot, now| {
                    Ok(logic::mark_closing(slot, requested_at, now))
                })
                .await
            },
        ))
    }

    fn cancel_closing(
        &self,
        channel_id: B256,
        requested_at: OffsetDateTime,
    ) -> BoxFuture<'_, ChannelResult<CancelCloseOutcome>> {
        Box::pin(with_deadline(
            self.operation_timeout(),
            "SQLite cancel closing",
            async move {
                locked(self, channel_id, move |slot, now| {
                    Ok(logic::cancel_closing(slot, requested_at, now))
                })
                .await
            },
        ))
    }

    fn record_settlement(
        &self,
        channel_id: B256,
        settled: u128,
        tx_hash: Option<B256>,
    ) -> BoxFuture<'_, ChannelResult<SettlementOutcome>> {
        Box::pin(with_deadline(
            self.operation_timeout(),
            "SQLite settlement",
            async move {
                locked(self, channel_id, move |slot, now| {
                    Ok(logic::record_settlement(slot, settled, tx_hash, now))
                })
                .await
            },
        ))
    }

    fn finalize(
        &self,
        channel_id: B256,
        settled: Option<u128>,
        tx_hash: Option<B256>,
    ) -> BoxFuture<'_, ChannelResult<FinalizeOutcome>> {
        Box::pin(with_deadline(
            self.operation_timeout(),
            "SQLite finalize",
            async move {
                locked(self, channel_id, move |slot, now| {
                    Ok(logic::finalize(slot, settled, tx_hash, now))
                })
                .await
            },
        ))
    }

    fn needing_settlement(
        &self,
        query: SettlementQuery,
    ) -> BoxFuture<'_, ChannelResult<Vec<Channel>>> {
        Box::pin(with_deadline(
            self.operation_timeout(),
            "SQLite settlement scan",
            async move {
                let rows: Vec<RawChannel> = sqlx::query_as(SETTLEMENT_SQL)
                    .bind(padded_amount(0))
                    .bind(padded_amount(query.min_unsettled))
                    .bind(query.idle_since.map(time_to_ms))
                    .bind(i64::from(query.limit))
                    .fetch_all(self.pool())
                    .await?;
                decode_all(rows)
            },
        ))
    }

    fn purge(&self) -> BoxFuture<'_, ChannelResult<PurgeReport>> {
        Box::pin(with_deadline(
            self.operation_timeout(),
            "SQLite channel purge",
            async move {
                let now = time_to_ms(logic::now());
                let candidates: Vec<(String,)> = sqlx::query_as(SWEEP_CANDIDATES_SQL)
                    .bind(now)
                    .fetch_all(self.pool())
                    .await?;
                let mut report = PurgeReport::default();
                for (key,) in candidates {
                    let id = crate::hex::parse_b256(&key)
                        .ok_or_else(|| StoreError::new(format!("channel id `{key}` is corrupt")))?;
                    if locked(self, id, |slot, now| Ok(logic::purge_sweep(slot, now))).await? {
                        report.swept_channels += 1;
                    }
                }
                let done = sqlx::query(PURGE_SQL)
                    .bind(time_to_ms(logic::now()))
                    .bind(padded_amount(0))
                    .execute(self.pool())
                    .await?;
                report.deleted_channels = done.rows_affected();
                tracing::debug!(?report, "SQLite channels purged");
                Ok(report)
            },
        ))
    }
}
