//! Settlement, in the background and never inside a request: a [`SettlementSchedule`]
//! (amount, units, interval, idle channels), an on-demand [`TempoSessions::settle`], and a
//! watcher that sees a payer's `requestClose` on chain and closes the channel before the
//! grace period ends, so a forced close cannot wipe vouchers this server accepted.
//!
//! What is paid out, per protocol:
//!
//! - A scheduled or on-demand settlement calls `settle` with the **highest accepted voucher**:
//!   both escrows pay `cumulativeAmount − settled` and have no capture limit on `settle`, so
//!   it can pay for headroom a stream reserved but did not consume yet (never more than the
//!   payer signed; later charges use that headroom without a new payment).
//! - A channel the payer asked to close is closed by this server with `close`: v2 captures
//!   exactly `max(spent, settled)` and refunds the rest at once; v1's `close` has no capture
//!   and pays the highest voucher.
//!
//! With several instances, one settles and watches at a time: a lease (a row in the replay
//! store, renewed every pass) that another instance takes over once it expires, e.g. after
//! a crash. A restart loses nothing: accepted vouchers are in the channel store.

use std::sync::Arc;
use std::time::Duration;

use alloy::primitives::{B256, Bytes};
use time::OffsetDateTime;

use super::SessionError;
use super::escrow::{Escrow, OnChainState};
use super::server::{TempoSessions, server_tx_error};
use super::store::{Channel, ChannelState, SettlementOutcome, SettlementQuery};
use crate::store::{Claim, ClaimState, NewClaim};

/// When a channel is settled: as soon as any threshold set here is reached (and anything is
/// unsettled). Closing channels are always settled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettlementSchedule {
    /// Unsettled value (`highest voucher − settled`) that triggers a settlement, in base units.
    pub amount: Option<u128>,
    /// Units charged since the last settlement.
    pub units: Option<u64>,
    /// Time since the last settlement (or the open).
    pub interval: Option<Duration>,
    /// Time without any change to the channel.
    pub idle: Option<Duration>,
}

impl Default for SettlementSchedule {
    /// Every hour, and channels idle for a day.
    fn default() -> Self {
        Self {
            amount: None,
            units: None,
            interval: Some(Duration::from_secs(3600)),
            idle: Some(Duration::from_secs(24 * 3600)),
        }
    }
}

/// Why a settlement ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SettlementTrigger {
    /// The schedule was due.
    Scheduled,
    /// [`TempoSessions::settle`] was called.
    OnDemand,
    /// The payer asked to close on chain: the channel was closed before the grace period
    /// ended.
    CloseRequested,
}

/// A settlement sent and confirmed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettlementReport {
    /// The channel.
    pub channel_id: B256,
    /// Why it ran.
    pub trigger: SettlementTrigger,
    /// The transaction.
    pub tx_hash: B256,
    /// What the escrow has paid the payee in total now.
    pub settled: u128,
    /// What this settlement paid.
    pub delta: u128,
    /// Whether the channel was closed (and the rest refunded to the payer).
    pub closed: bool,
}

/// Called with every settlement (errors are the hook's own business).
pub type SettlementHook = Arc<dyn Fn(&SettlementReport) + Send + Sync>;

/// How the background settler runs ([`TempoSessions::spawn_settler`]).
#[derive(Clone)]
pub struct SettlerConfig {
    /// When channels are settled.
    pub schedule: SettlementSchedule,
    /// How often it looks (default 5 s: far below the 900 s close grace period).
    pub poll: Duration,
    /// How long the lease lasts without renewal (default 30 s): another instance takes over
    /// this long after this one stops.
    pub lease: Duration,
    /// How many blocks back the watcher looks for close requests when it starts (default
    /// 4,000: more than the grace period at Tempo's block time).
    pub lookback_blocks: u64,
    /// Called after every settlement.
    pub hook: Option<SettlementHook>,
    /// How often the lease holder purges the channel store ([`ChannelStore::purge`]: lapsed
    /// reservations released, expired rows holding nothing unsettled deleted); default one
    /// minute, `None` when something else purges it.
    ///
    /// [`ChannelStore::purge`]: super::store::ChannelStore::purge
    pub purge_interval: Option<Duration>,
}

impl Default for SettlerConfig {
    fn default() -> Self {
        Self {
            schedule: SettlementSchedule::default(),
            poll: Duration::from_secs(5),
            lease: Duration::from_secs(30),
            lookback_blocks: 4_000,
            hook: None,
            purge_interval: Some(Duration::from_secs(60)),
        }
    }
}

impl std::fmt::Debug for SettlerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SettlerConfig")
            .field("schedule", &self.schedule)
            .field("poll", &self.poll)
            .field("lease", &self.lease)
            .field("hook", &self.hook.is_some())
            .field("purge_interval", &self.purge_interval)
            .finish_non_exhaustive()
    }
}

/// The running settler; stops when dropped.
#[derive(Debug)]
pub struct SettlerHandle {
    task: tokio::task::JoinHandle<()>,
}

impl Drop for SettlerHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Most blocks asked for in one `eth_getLogs`.
const LOG_RANGE: u64 = 2_000;
/// Most channels looked at per pass.
const PASS_LIMIT: u32 = 256;
/// A local "closing" marker this old, with no close request on chain, is a close this server
/// started and never finished (a crash): the channel is served again.
const STALE_LOCAL_CLOSE: time::Duration = time::Duration::seconds(120);

impl TempoSessions {
    /// Settles `channel_id` now with its highest voucher (or closes it, when the payer asked
    /// to close). `None` when there is nothing to settle.
    pub async fn settle(&self, channel_id: B256) -> Result<Option<SettlementReport>, SessionError> {
        let channel = self
            .inner
            .store
            .get(channel_id)
            .await
            .map_err(|e| SessionError::Unavailable(e.to_string()))?
            .ok_or_else(|| SessionError::ChannelNotFound("no such channel".into()))?;
        if !self.owns(&channel) {
            return Err(SessionError::ChannelNotFound(
                "the channel belongs to another escrow or chain".into(),
            ));
        }
        self.settle_channel(&channel, SettlementTrigger::OnDemand)
            .await
    }

    /// Whether `channel` is on this service's escrow, protocol and chain: a store may be
    /// shared by services on other escrows, whose channels this one must never read (from
    /// its own escrow they would look closed) or settle.
    pub(crate) fn owns(&self, channel: &Channel) -> bool {
        let id = &channel.descriptor;
        id.escrow == self.inner.escrow.address
            && id.protocol == self.inner.escrow.protocol
            && id.chain_id == self.inner.chain_id
    }

    /// One pass of the schedule: settles every channel that is due, closes those the payer
    /// asked to close, and returns what it did. The background settler calls this; a
    /// deployment without one can call it from its own scheduler.
    pub async fn settle_due(
        &self,
        schedule: &SettlementSchedule,
    ) -> Result<Vec<SettlementReport>, SessionError> {
        let now = OffsetDateTime::now_utc();
        let candidates = self
            .inner
            .store
            .needing_settlement(SettlementQuery {
                min_unsettled: 1,
                idle_since: None,
                limit: PASS_LIMIT,
            })
            .await
            .map_err(|e| SessionError::Unavailable(e.to_string()))?;
        let mut reports = Vec::new();
        for channel in candidates.into_iter().filter(|c| self.owns(c)) {
            let trigger = if matches!(channel.state, ChannelState::Closing { .. }) {
                SettlementTrigger::CloseRequested
            } else if is_due(&channel, schedule, now) {
                SettlementTrigger::Scheduled
            } else {
                continue;
            };
            match self.settle_channel(&channel, trigger).await {
                Ok(Some(report)) => reports.push(report),
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(channel = %channel.id(), reason = %e, "settlement failed; retried next pass");
                }
            }
        }
        Ok(reports)
    }

    /// Looks for `CloseRequested` events in blocks `from..=to` and marks those channels
    /// closing (the next settlement pass closes them). Returns how many it marked.
    pub async fn watch_close_requests(&self, from: u64, to: u64) -> Result<usize, SessionError> {
        let i = &self.inner;
        let mut marked = 0;
        let mut start = from;
        while start <= to {
            let end = to.min(start.saturating_add(LOG_RANGE - 1));
            let logs = i
                .chain
                .logs(
                    i.escrow.address,
                    i.escrow.close_requested_topic(),
                    start,
                    end,
                )
                .await
                .map_err(|e| SessionError::Unavailable(e.to_string()))?;
            for log in &logs {
                let Some(channel_id) = Escrow::log_channel(log) else {
                    continue;
                };
                let known = i
                    .store
                    .get(channel_id)
                    .await
                    .map_err(|e| SessionError::Unavailable(e.to_string()))?;
                if known.is_some_and(|c| c.state.is_open()) {
                    i.cache.forget(channel_id);
                    i.store
                        .mark_closing(channel_id, OffsetDateTime::now_utc())
                        .await
                        .map_err(|e| SessionError::Unavailable(e.to_string()))?;
                    // Streams on it stop waiting for vouchers and end.
                    i.wakeups.wake(channel_id);
                    tracing::info!(channel = %channel_id, "the payer requested a close on chain; closing before the grace period ends");
                    marked += 1;
                }
            }
            start = end.saturating_add(1);
        }
        Ok(marked)
    }

    /// Starts the background settler: every `config.poll`, if this instance holds the lease,
    /// it watches for close requests and runs [`TempoSessions::settle_due`].
    pub fn spawn_settler(&self, config: SettlerConfig) -> SettlerHandle {
        let sessions = self.clone();
        let task = tokio::spawn(async move { sessions.run_settler(config).await });
        SettlerHandle { task }
    }

    async fn run_settler(self, config: SettlerConfig) {
        let i = &self.inner;
        let lease_key = format!("session-settler:{}:{:#x}", i.chain_id, i.escrow.address);
        let owner = format!(
            "{}-{}",
            std::process::id(),
            OffsetDateTime::now_utc().unix_timestamp_nanos()
        );
        let mut cursor: Option<u64> = None;
        let mut purged_at: Option<tokio::time::Instant> = None;
        let mut ticks = tokio::time::interval(config.poll);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            match self.hold_lease(&lease_key, &owner, config.lease).await {
                Ok(true) => {}
                Ok(false) => continue,
                Err(e) => {
                    tracing::warn!(reason = %e, "settler lease unavailable");
                    continue;
                }
            }
            match i.chain.block_number().await {
                Ok(latest) => {
                    let from =
                        cursor.map_or(latest.saturating_sub(config.lookback_blocks), |c| c + 1);
                    if from <= latest {
                        match self.watch_close_requests(from, latest).await {
                            Ok(_) => cursor = Some(latest),
                            Err(e) => tracing::warn!(reason = %e, "close request watch failed"),
                        }
                    }
                }
                Err(e) => tracing::warn!(reason = %e, "close request watch: node unavailable"),
            }
            match self.settle_due(&config.schedule).await {
                Ok(reports) => {
                    if let Some(hook) = &config.hook {
                        for report in &reports {
                            hook(report);
                        }
                    }
                }
                Err(e) => tracing::warn!(reason = %e, "settlement pass failed"),
            }
            if let Some(every) = config.purge_interval
                && purged_at.is_none_or(|at| at.elapsed() >= every)
            {
                purged_at = Some(tokio::time::Instant::now());
                match i.store.purge().await {
                    Ok(report) => tracing::debug!(?report, "channel store purged"),
                    Err(e) => tracing::warn!(reason = %e, "channel store purge failed"),
                }
            }
        }
    }

    /// Renews this instance's lease, or takes it if it is free. `true` while held.
    async fn hold_lease(
        &self,
        key: &str,
        owner: &str,
        lease: Duration,
    ) -> Result<bool, SessionError> {
        let replay = &self.inner.replay;
        let until = OffsetDateTime::now_utc() + lease;
        let fault = |e: crate::store::StoreError| SessionError::Unavailable(e.to_string());
        if replay
            .advance(key, owner, ClaimState::Held, ClaimState::Held, until)
            .await
            .map_err(fault)?
        {
            return Ok(true);
        }
        let claimed = replay
            .claim(NewClaim {
                key,
                owner,
                state: ClaimState::Held,
                expires_at: until,
                valid_before: None,
            })
            .await
            .map_err(fault)?;
        if matches!(claimed, Claim::Claimed) {
            tracing::info!(owner, "this instance now settles and watches channels");
        }
        Ok(matches!(claimed, Claim::Claimed))
    }

    async fn settle_channel(
        &self,
        channel: &Channel,
        trigger: SettlementTrigger,
    ) -> Result<Option<SettlementReport>, SessionError> {
        let i = &self.inner;
        let id = channel.id();
        let Some(key) = &i.server_key else {
            return Err(SessionError::Config(
                "this server has no key to settle with (SessionConfig::server_key)".into(),
            ));
        };
        let fault = |e: super::store::ChannelStoreError| SessionError::Unavailable(e.to_string());
        let state: OnChainState = i
            .escrow
            .read(&i.chain, id)
            .await
            .map_err(|e| SessionError::Unavailable(e.to_string()))?;
        if state.finalized || (state.deposit == 0 && channel.deposit > 0) {
            // Closed on chain already (a withdrawal, or a close whose answer was lost).
            let settled = (state.settled >= channel.settled
                && state.settled <= channel.highest_voucher)
                .then_some(state.settled);
            i.store.finalize(id, settled, None).await.map_err(fault)?;
            return Ok(None);
        }
        let closing = match channel.state {
            ChannelState::Closing { requested_at } => {
                if state.close_requested_at == 0 {
                    // This server's own close marker, not the payer's request.
                    if OffsetDateTime::now_utc() - requested_at > STALE_LOCAL_CLOSE {
                        let _ = i
                            .store
                            .cancel_closing(id, requested_at)
                            .await
                            .map_err(fault)?;
                    }
                    return Ok(None);
                }
                true
            }
            ChannelState::Open => trigger == SettlementTrigger::CloseRequested,
            ChannelState::Finalized { .. } => return Ok(None),
        };
        let settled = channel.settled.max(state.settled);
        let Some(signature) = channel
            .voucher_signature
            .as_ref()
            .filter(|_| channel.highest_voucher > settled)
        else {
            return Ok(None);
        };
        let signature: &Bytes = signature;
        let (call, paid) = if closing {
            let capture = match i.escrow.protocol {
                super::SessionProtocol::V2 => channel.spent.max(settled),
                super::SessionProtocol::V1 => channel.highest_voucher,
            };
            let call = i
                .escrow
                .close_call(
                    &channel.descriptor,
                    channel.highest_voucher,
                    capture,
                    signature,
                )
                .map_err(|e| SessionError::Unavailable(e.to_string()))?;
            (call, capture)
        } else {
            let call = i
                .escrow
                .settle_call(&channel.descriptor, channel.highest_voucher, signature)
                .map_err(|e| SessionError::Unavailable(e.to_string()))?;
            (call, channel.highest_voucher)
        };
        let receipt = key
            .send(&i.chain, vec![call], i.broadcast_timeout)
            .await
            .map_err(server_tx_error)?;
        let tx_hash = receipt.transaction_hash;
        i.cache.forget(id);
        let new_settled = if closing {
            i.store
                .finalize(id, Some(paid), Some(tx_hash))
                .await
                .map_err(fault)?;
            paid
        } else {
            let new_settled = i.escrow.settled(&receipt, id).unwrap_or(paid);
            match i
                .store
                .record_settlement(id, new_settled, Some(tx_hash))
                .await
                .map_err(fault)?
            {
                SettlementOutcome::Recorded(_)
                | SettlementOutcome::Unchanged(_)
                | SettlementOutcome::Stale(_) => {}
                other => tracing::warn!(channel = %id, ?other, "settlement could not be recorded"),
            }
            new_settled
        };
        let report = SettlementReport {
            channel_id: id,
            trigger: if closing {
                SettlementTrigger::CloseRequested
            } else {
                trigger
            },
            tx_hash,
            settled: new_settled,
            delta: new_settled.saturating_sub(settled),
            closed: closing,
        };
        tracing::info!(channel = %id, trigger = ?report.trigger, settled = report.settled, delta = report.delta, tx = %tx_hash, closed = closing, "channel settled");
        Ok(Some(report))
    }
}

/// Whether the schedule asks for a settlement of `channel` at `now`.
fn is_due(channel: &Channel, schedule: &SettlementSchedule, now: OffsetDateTime) -> bool {
    let unsettled = channel.unsettled();
    if unsettled == 0 || channel.voucher_signature.is_none() {
        return false;
    }
    let last_units = channel.last_settlement.map_or(0, |l| l.units);
    let since = channel.last_settlement.map_or(channel.created_at, |l| l.at);
    schedule.amount.is_some_and(|a| unsettled >= a)
        || schedule
            .units
            .is_some_and(|u| channel.units.saturating_sub(last_units) >= u)
        || schedule.interval.is_some_and(|d| now - since >= d)
        || schedule.idle.is_some_and(|d| now - channel.updated_at >= d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::store::{ChannelIdentity, SessionProtocol};
    use alloy::primitives::Address;

    fn channel(highest: u128, settled: u128, units: u64, age: time::Duration) -> Channel {
        let now = OffsetDateTime::now_utc();
        Channel {
            descriptor: ChannelIdentity {
                channel_id: B256::repeat_byte(1),
                protocol: SessionProtocol::V1,
                chain_id: 1,
                escrow: Address::ZERO,
                payer: Address::ZERO,
                payee: Address::ZERO,
                token: Address::ZERO,
                operator: Address::ZERO,
                authorized_signer: Address::ZERO,
                salt: B256::ZERO,
                expiring_nonce_hash: B256::ZERO,
            },
            deposit: 1_000,
            highest_voucher: highest,
            voucher_signature: Some(Bytes::from_static(&[1; 65])),
            spent: highest,
            reserved: 0,
            reservations: Vec::new(),
            settled,
            units,
            state: ChannelState::Open,
            last_settlement: None,
            created_at: now - age,
            updated_at: now - age,
            retention: Duration::from_secs(60),
            expires_at: now,
            version: 1,
        }
    }

    #[test]
    fn any_threshold_makes_a_channel_due_and_nothing_unsettled_never_does() {
        let now = OffsetDateTime::now_utc();
        let none = SettlementSchedule {
            amount: None,
            units: None,
            interval: None,
            idle: None,
        };
        assert!(!is_due(
            &channel(100, 0, 3, time::Duration::ZERO),
            &none,
            now
        ));
        let by_amount = SettlementSchedule {
            amount: Some(100),
            ..none.clone()
        };
        assert!(is_due(
            &channel(100, 0, 1, time::Duration::ZERO),
            &by_amount,
            now
        ));
        assert!(
            !is_due(&channel(100, 1, 1, time::Duration::ZERO), &by_amount, now),
            "99 unsettled"
        );
        let by_units = SettlementSchedule {
            units: Some(3),
            ..none.clone()
        };
        assert!(is_due(
            &channel(10, 0, 3, time::Duration::ZERO),
            &by_units,
            now
        ));
        assert!(!is_due(
            &channel(10, 0, 2, time::Duration::ZERO),
            &by_units,
            now
        ));
        let by_time = SettlementSchedule {
            interval: Some(Duration::from_secs(60)),
            ..none.clone()
        };
        assert!(is_due(
            &channel(10, 0, 0, time::Duration::seconds(61)),
            &by_time,
            now
        ));
        assert!(!is_due(
            &channel(10, 0, 0, time::Duration::seconds(5)),
            &by_time,
            now
        ));
        let everything = SettlementSchedule {
            amount: Some(1),
            units: Some(1),
            interval: Some(Duration::ZERO),
            idle: Some(Duration::ZERO),
        };
        assert!(
            !is_due(
                &channel(10, 10, 5, time::Duration::hours(1)),
                &everything,
                now
            ),
            "all settled"
        );
    }
}
