//! [`ChannelStore`] for [`SqliteStore`]: the `session_channels` table in the same file as the
//! replay keys.
//!
//! Every change is one `BEGIN IMMEDIATE` transaction: it takes SQLite's database write lock
//! before reading the row, so the read, the decision (in Rust: SQLite cannot do `u128`
//! arithmetic) and the write are one atomic step, serialized with every other writer on the
//! file, whichever connection, pool or process it comes from. The `UPDATE` is still
//! conditional on the row's `version` as read, and a write that matches no row fails closed.
//! Concurrent writers wait for the lock up to the pool's busy timeout.

use std::time::Duration;

use alloy::primitives::B256;
use mpp_core::BoxFuture;
use sqlx::SqliteConnection;
use time::OffsetDateTime;

use super::logic::{self, Step, Write, time_to_ms};
use super::row::{Encoded, RawChannel, channel_key, encode, padded_amount};
use super::{
    CancelCloseOutcome, Channel, ChannelResult, ChannelStore, Charge, ChargeOutcome, CloseOutcome,
    Commit, CommitOutcome, DepositOutcome, FinalizeOutcome, NewChannel, OpenOutcome, PurgeReport,
    ReserveOutcome, SettlementOutcome, SettlementQuery, Voucher, VoucherOutcome, with_deadline,
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

/// Runs one operation on channel `channel_id` inside `BEGIN IMMEDIATE`: read the row, let
/// `op` decide, write what it changed, commit.
async fn locked<O>(
    store: &SqliteStore,
    channel_id: B256,
    op: impl FnOnce(&mut Option<Channel>, OffsetDateTime) -> ChannelResult<Step<O>> + Send,
) -> ChannelResult<O> {
    let key = channel_key(channel_id);
    let mut tx = store.pool().begin_with("BEGIN IMMEDIATE").await?;
    let raw: Option<RawChannel> = sqlx::query_as(SELECT_SQL)
        .bind(&key)
        .fetch_optional(&mut *tx)
        .await?;
    let mut slot = raw.map(RawChannel::decode).transpose()?;
    let read_version = slot.as_ref().map(|c| c.version);
    // Read under the lock: each operation's time is in the order operations take effect.
    let step = op(&mut slot, logic::now())?;
    let written = match (step.write, &slot) {
        (Write::None, _) => None,
        (_, None) => return Err(StoreError::new("a channel operation lost its row").into()),
        (write, Some(ch)) => {
            logic::check_invariants(ch).map_err(|broken| {
                StoreError::new(format!(
                    "channel {key}: refusing a write that breaks the invariants: {broken}"
                ))
            })?;
            Some((write, encode(ch, padded_amount)?))
        }
    };
    match (written, read_version) {
        (None, _) => tx.rollback().await?,
        (Some((Write::Insert, e)), _) => {
            insert(&mut tx, &e).await?;
            tx.commit().await?;
        }
        (Some((_, e)), Some(read)) => {
            let read = i64::try_from(read).map_err(StoreError::new)?;
            update(&mut tx, &e, read).await?;
            tx.commit().await?;
        }
        (Some(_), None) => {
            return Err(StoreError::new("a channel update without a row read").into());
        }
    }
    Ok(step.outcome)
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
                locked(self, channel.descriptor.channel_id, |slot, now| {
                    logic::open(slot, channel, now)
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
                locked(self, channel_id, |slot, now| {
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
                locked(self, channel_id, |slot, now| {
                    Ok(logic::accept_voucher(slot, voucher, min_delta, now))
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
                locked(self, channel_id, |slot, now| {
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
                locked(self, channel_id, |slot, now| {
                    logic::reserve(slot, reservation, amount, ttl, now)
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
                locked(self, channel_id, |slot, now| {
                    logic::commit(slot, reservation, commit, now)
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
                locked(self, channel_id, |slot, now| {
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
                locked(self, channel_id, |slot, now| {
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
                locked(self, channel_id, |slot, now| {
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
                locked(self, channel_id, |slot, now| {
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
