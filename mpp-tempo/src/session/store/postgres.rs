//! [`ChannelStore`] for [`PgStore`]: the `session_channels` table in the same database as the
//! replay keys, shared by every instance.
//!
//! Three ways to change a row, all linearizable per channel:
//!
//! - the hot paths ([`ChannelStore::charge`], [`ChannelStore::accept_voucher`]) first try
//!   one statement: a conditional `UPDATE ... WHERE <the operation's success condition>
//!   RETURNING`. Postgres re-checks the `WHERE` against the latest
//!   committed row after waiting for a concurrent writer's lock, so the condition and the
//!   change are one atomic step, in one round trip. The `NUMERIC(39,0)` arithmetic is exact;
//! - every other operation on an existing row (and a fast path whose condition did not hold)
//!   is first optimistic, without a transaction: a plain `SELECT` of the row, the shared
//!   rules decide in Rust, and, if the row changes, one autocommit
//!   `UPDATE ... WHERE channel_id = $1 AND version = <the version read>`. That condition is
//!   re-checked the same way, so the write applies only if nothing changed the row since the
//!   read: read, decision and write are one atomic step, taking effect at the `UPDATE` (or at
//!   the read, for an outcome that writes nothing). Two round trips on one pool connection,
//!   against four for the transaction (`BEGIN`, `SELECT ... FOR UPDATE`, `UPDATE`,
//!   `COMMIT`). The `UPDATE` fires the change notification trigger like any other;
//! - when the conditional `UPDATE` matched no row (a concurrent writer won), or there was no
//!   row, a transaction locks the row with `SELECT ... FOR UPDATE`, the rules decide again,
//!   and one `UPDATE` writes the result. There is one optimistic try per operation, never an
//!   unbounded retry. Each transaction locks a single row, so they cannot deadlock. An open
//!   finds no row to lock: it inserts with `ON CONFLICT DO NOTHING` and, if a concurrent open
//!   won, runs again on its row.

use std::time::Duration;

use alloy::primitives::B256;
use mpp_core::BoxFuture;
use sqlx::PgConnection;
use time::OffsetDateTime;

use super::logic::{self, Step, Write, time_to_ms};
use super::row::{Encoded, RawChannel, channel_key, encode, plain_amount};
use super::{
    AcceptReserveOutcome, CancelCloseOutcome, ChangeCallback, ChangeWatch, Channel, ChannelResult,
    ChannelStore, Charge, ChargeOutcome, CloseOutcome, Commit, CommitOutcome, DepositOutcome,
    FinalizeOutcome, NewChannel, OpenOutcome, PurgeReport, ReserveOutcome, SettlementOutcome,
    SettlementQuery, Voucher, VoucherOutcome, with_deadline,
};
use crate::store::{PgStore, StoreError, one_row};

/// The select list, amounts as text (decoded exactly in Rust).
macro_rules! columns {
    () => {
        "channel_id, protocol, chain_id, escrow, payer, payee, token, operator, \
         authorized_signer, salt, expiring_nonce_hash, deposit::text AS deposit, \
         highest_voucher::text AS highest_voucher, voucher_signature, spent::text AS spent, \
         reserved::text AS reserved, reservations, settled::text AS settled, units, state, \
         close_requested_at, finalized_at, finalized_tx, last_settlement_at, \
         last_settlement_spent::text AS last_settlement_spent, last_settlement_units, \
         last_settlement_tx, created_at, updated_at, retention_ms, expires_at, version"
    };
}

const SELECT_SQL: &str = concat!(
    "SELECT ",
    columns!(),
    " FROM session_channels WHERE channel_id = $1"
);
const LOCK_SQL: &str = concat!(
    "SELECT ",
    columns!(),
    " FROM session_channels WHERE channel_id = $1 FOR UPDATE"
);
const INSERT_SQL: &str = "INSERT INTO session_channels (channel_id, protocol, chain_id, \
     escrow, payer, payee, token, operator, authorized_signer, salt, expiring_nonce_hash, \
     deposit, highest_voucher, voucher_signature, spent, reserved, reservations, \
     reservations_expire_at, settled, units, state, close_requested_at, finalized_at, \
     finalized_tx, last_settlement_at, last_settlement_spent, last_settlement_units, \
     last_settlement_tx, created_at, updated_at, retention_ms, expires_at, version) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12::numeric, $13::numeric, $14, \
     $15::numeric, $16::numeric, $17, $18, $19::numeric, $20, $21, $22, $23, $24, $25, \
     $26::numeric, $27, $28, $29, $30, $31, $32, $33) \
     ON CONFLICT (channel_id) DO NOTHING";
const UPDATE_SQL: &str = "UPDATE session_channels SET deposit = $2::numeric, \
     highest_voucher = $3::numeric, voucher_signature = $4, spent = $5::numeric, \
     reserved = $6::numeric, reservations = $7, reservations_expire_at = $8, \
     settled = $9::numeric, units = $10, state = $11, close_requested_at = $12, \
     finalized_at = $13, finalized_tx = $14, last_settlement_at = $15, \
     last_settlement_spent = $16::numeric, last_settlement_units = $17, \
     last_settlement_tx = $18, updated_at = $19, expires_at = $20, version = $21 \
     WHERE channel_id = $1 AND version = $22";
/// `logic::charge` when the free headroom covers the cost (no sweep needed).
const CHARGE_SQL: &str = concat!(
    "UPDATE session_channels SET spent = spent + $2::numeric, units = units + $3, \
     updated_at = $4, expires_at = $4 + retention_ms, version = version + 1 \
     WHERE channel_id = $1 AND state = 'open' \
     AND highest_voucher - spent - reserved >= $2::numeric \
     AND units <= 9223372036854775807 - $3 \
     RETURNING ",
    columns!()
);
/// `logic::accept_voucher`'s acceptance condition (`voucher_acceptable`).
const VOUCHER_SQL: &str = concat!(
    "UPDATE session_channels SET highest_voucher = $2::numeric, voucher_signature = $3, \
     updated_at = $4, expires_at = $4 + retention_ms, version = version + 1 \
     WHERE channel_id = $1 AND state = 'open' AND highest_voucher < $2::numeric \
     AND deposit >= $2::numeric AND $2::numeric - highest_voucher >= $5::numeric \
     RETURNING ",
    columns!()
);
const SETTLEMENT_SQL: &str = concat!(
    "SELECT ",
    columns!(),
    " FROM session_channels WHERE state = 'closing' \
     OR (state = 'open' AND unsettled > 0 AND (unsettled >= $1::numeric OR updated_at <= $2)) \
     ORDER BY state = 'closing' DESC, unsettled DESC, channel_id COLLATE \"C\" LIMIT $3"
);
const SWEEP_CANDIDATES_SQL: &str =
    "SELECT channel_id FROM session_channels WHERE reservations_expire_at <= $1";
const PURGE_SQL: &str = "DELETE FROM session_channels WHERE expires_at <= $1 AND reserved = 0 \
     AND (state = 'finalized' OR highest_voucher = settled)";

async fn insert(conn: &mut PgConnection, e: &Encoded) -> ChannelResult<bool> {
    let done = sqlx::query(INSERT_SQL)
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
    Ok(one_row(done.rows_affected(), "channel insert")?)
}

/// Writes `e` over the row if it still has `read_version`: one autocommit statement on a
/// pool connection, or part of a transaction. `false` if no row matched (the row changed or
/// went since it was read).
async fn update(conn: &mut PgConnection, e: &Encoded, read_version: i64) -> ChannelResult<bool> {
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
    Ok(one_row(done.rows_affected(), "channel update")?)
}

/// The row `op` left in `slot`, checked against the invariants and encoded for a write.
fn checked(key: &str, slot: Option<&Channel>) -> ChannelResult<Encoded> {
    let Some(ch) = slot else {
        return Err(StoreError::new("a channel operation lost its row").into());
    };
    logic::check_invariants(ch).map_err(|broken| {
        StoreError::new(format!(
            "channel {key}: refusing a write that breaks the invariants: {broken}"
        ))
    })?;
    Ok(encode(ch, plain_amount)?)
}

/// The version `ch` was read at, as stored.
fn stored_version(ch: &Channel) -> ChannelResult<i64> {
    Ok(i64::try_from(ch.version).map_err(StoreError::new)?)
}

/// Runs `op` on channel `key` without a lock: a plain `SELECT` (autocommit), the decision,
/// and, if the row changed, one `UPDATE ... WHERE channel_id = $1 AND version = <read>`.
///
/// Linearizable: an outcome that writes nothing takes effect at the read (a committed row);
/// a write takes effect at its `UPDATE`, which Postgres applies only if the row is still the
/// version read (re-checked against the latest committed row after waiting for any concurrent
/// writer's lock), so no change can fall between the read and the write. `None` when this
/// path cannot finish the operation: there is no row (an open inserts it), or another writer
/// changed the row first (its version moved on). The caller then runs the locked transaction.
async fn optimistic<O>(
    conn: &mut PgConnection,
    key: &str,
    op: &(impl Fn(&mut Option<Channel>, OffsetDateTime) -> ChannelResult<Step<O>> + Sync),
) -> ChannelResult<Option<O>> {
    let raw: Option<RawChannel> = sqlx::query_as(SELECT_SQL)
        .bind(key)
        .fetch_optional(&mut *conn)
        .await?;
    let Some(raw) = raw else { return Ok(None) };
    let read = raw.decode()?;
    let read_version = stored_version(&read)?;
    let mut slot = Some(read);
    // The clock is read after the row, and the write applies only if no operation took effect
    // since: times still follow the order operations take effect.
    let step = op(&mut slot, logic::now())?;
    match step.write {
        Write::None => Ok(Some(step.outcome)),
        Write::Update => {
            let encoded = checked(key, slot.as_ref())?;
            Ok(update(conn, &encoded, read_version)
                .await?
                .then_some(step.outcome))
        }
        // Only an open inserts, and only where it found no row: let the locked path decide.
        Write::Insert => Ok(None),
    }
}

/// What one locked attempt came to.
enum Attempt<O> {
    Done(O),
    /// There was no row to lock, and a concurrent open inserted it before this one could.
    LostInsertRace,
}

/// Runs one operation on channel `key` in a transaction holding its row lock: read the row
/// `FOR UPDATE`, let `op` decide, write what it changed, commit.
async fn attempt<O>(
    conn: &mut PgConnection,
    key: &str,
    op: &(impl Fn(&mut Option<Channel>, OffsetDateTime) -> ChannelResult<Step<O>> + Sync),
) -> ChannelResult<Attempt<O>> {
    let mut tx = sqlx::Connection::begin(conn).await?;
    let raw: Option<RawChannel> = sqlx::query_as(LOCK_SQL)
        .bind(key)
        .fetch_optional(&mut *tx)
        .await?;
    let mut slot = raw.map(RawChannel::decode).transpose()?;
    let read_version = slot.as_ref().map(stored_version).transpose()?;
    // Read under the lock: each operation's time is in the order operations take effect.
    let step = op(&mut slot, logic::now())?;
    if step.write == Write::None {
        tx.rollback().await?;
        return Ok(Attempt::Done(step.outcome));
    }
    let encoded = checked(key, slot.as_ref())?;
    match (step.write, read_version) {
        (Write::Insert, _) => {
            // There was no row to lock: a concurrent open may have inserted it since, and
            // then this insert does nothing.
            if !insert(&mut tx, &encoded).await? {
                tx.rollback().await?;
                return Ok(Attempt::LostInsertRace);
            }
        }
        (_, Some(read)) => {
            if !update(&mut tx, &encoded, read).await? {
                // Impossible under the row lock: something wrote the row outside this
                // protocol.
                return Err(StoreError::new(format!(
                    "channel {key} changed under its row lock; refusing to trust it"
                ))
                .into());
            }
        }
        (_, None) => return Err(StoreError::new("a channel update without a row read").into()),
    }
    tx.commit().await?;
    Ok(Attempt::Done(step.outcome))
}

/// Runs `op` on channel `channel_id`, atomically, on one pool connection: first
/// [`optimistic`]ally (one read, at most one conditional write); if that cannot finish it,
/// [`attempt`] under the row lock, once more if it lost an insert race (the second attempt
/// finds the row). At most one optimistic try, so a busy row costs one wasted read and write,
/// never an unbounded retry loop.
async fn locked<O>(
    store: &PgStore,
    channel_id: B256,
    op: impl Fn(&mut Option<Channel>, OffsetDateTime) -> ChannelResult<Step<O>> + Sync,
) -> ChannelResult<O> {
    let key = channel_key(channel_id);
    let mut conn = store.pool().acquire().await?;
    if let Some(outcome) = optimistic(&mut conn, &key, &op).await? {
        return Ok(outcome);
    }
    for _ in 0..2 {
        if let Attempt::Done(outcome) = attempt(&mut conn, &key, &op).await? {
            return Ok(outcome);
        }
    }
    Err(StoreError::new(format!("channel {key}: insert kept racing")).into())
}

fn decode_all(rows: Vec<RawChannel>) -> ChannelResult<Vec<Channel>> {
    rows.into_iter()
        .map(|r| r.decode().map_err(Into::into))
        .collect()
}

impl ChannelStore for PgStore {
    fn open<'a>(&'a self, channel: &'a NewChannel) -> BoxFuture<'a, ChannelResult<OpenOutcome>> {
        Box::pin(with_deadline(
            self.operation_timeout(),
            "Postgres channel open",
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
            "Postgres channel read",
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
            "Postgres channel deposit",
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
            "Postgres voucher",
            async move {
                let raw: Option<RawChannel> = sqlx::query_as(VOUCHER_SQL)
                    .bind(channel_key(channel_id))
                    .bind(plain_amount(voucher.cumulative_amount))
                    .bind(alloy::hex::encode_prefixed(&voucher.signature))
                    .bind(time_to_ms(logic::now()))
                    .bind(plain_amount(min_delta))
                    .fetch_optional(self.pool())
                    .await?;
                if let Some(raw) = raw {
                    tracing::debug!(channel = %channel_id, amount = voucher.cumulative_amount,
                    "voucher accepted");
                    return Ok(VoucherOutcome::Accepted(raw.decode()?));
                }
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
            "Postgres charge",
            async move {
                let cost = logic::charge_cost(charge)?;
                if let Ok(units) = i64::try_from(charge.units) {
                    let raw: Option<RawChannel> = sqlx::query_as(CHARGE_SQL)
                        .bind(channel_key(channel_id))
                        .bind(plain_amount(cost))
                        .bind(units)
                        .bind(time_to_ms(logic::now()))
                        .fetch_optional(self.pool())
                        .await?;
                    if let Some(raw) = raw {
                        tracing::debug!(channel = %channel_id, cost, "channel charged");
                        return Ok(ChargeOutcome::Charged(raw.decode()?));
                    }
                }
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
            "Postgres reserve",
            async move {
                locked(self, channel_id, |slot, now| {
                    logic::reserve(slot, reservation, amount, ttl, now)
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
            "Postgres voucher and hold",
            async move {
                locked(self, channel_id, |slot, now| {
                    logic::accept_and_reserve(slot, voucher, min_delta, reservation, hold, now)
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
            "Postgres commit",
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
            "Postgres mark closing",
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
            "Postgres cancel closing",
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
            "Postgres settlement",
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
            "Postgres finalize",
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
            "Postgres settlement scan",
            async move {
                let rows: Vec<RawChannel> = sqlx::query_as(SETTLEMENT_SQL)
                    .bind(plain_amount(query.min_unsettled))
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
            "Postgres channel purge",
            async move {
                let candidates: Vec<(String,)> = sqlx::query_as(SWEEP_CANDIDATES_SQL)
                    .bind(time_to_ms(logic::now()))
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
                    .execute(self.pool())
                    .await?;
                report.deleted_channels = done.rows_affected();
                tracing::debug!(?report, "Postgres channels purged");
                Ok(report)
            },
        ))
    }

    fn watch(&self, on_change: ChangeCallback) -> Option<ChangeWatch> {
        let pool = self.pool().clone();
        Some(ChangeWatch::new(tokio::spawn(listen(pool, on_change))))
    }
}

/// The channel `0005_channel_notify.sql` notifies.
const NOTIFY_CHANNEL: &str = "mpp_session_channels";

/// Forwards the ids `LISTEN mpp_session_channels` receives, reconnecting after a failure
/// (waiting streams poll meanwhile, so a lost notification only delays one).
async fn listen(pool: sqlx::PgPool, on_change: ChangeCallback) {
    let mut pause = Duration::from_millis(250);
    loop {
        let mut listener = match sqlx::postgres::PgListener::connect_with(&pool).await {
            Ok(listener) => listener,
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for channel changes; retrying");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(10));
                continue;
            }
        };
        if let Err(e) = listener.listen(NOTIFY_CHANNEL).await {
            tracing::warn!(error = %e, "cannot listen for channel changes; retrying");
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(10));
            continue;
        }
        tracing::debug!("listening for channel changes");
        pause = Duration::from_millis(250);
        loop {
            match listener.recv().await {
                Ok(notification) => match crate::hex::parse_b256(notification.payload()) {
                    Some(id) => on_change(id),
                    None => tracing::warn!("a channel change names no channel id"),
                },
                Err(e) => {
                    tracing::warn!(error = %e, "channel change listener failed; reconnecting");
                    break;
                }
            }
        }
    }
}
