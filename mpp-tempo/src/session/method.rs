//! [`TempoSessions`] as a payment [`Method`] for the `session` intent: what the HTTP layers
//! (`mpp-axum`'s `session(..)`) and other transports drive.
//!
//! A credential on a **content** request (an `open` or a `voucher`) is applied, then one unit
//! of the route's price is held in the channel before the handler runs and taken when it
//! answers with success (charge on success: a `404` or a handler error takes nothing); the
//! response can bill more units through [`Metering`] (a metered stream). A **management**
//! request (a `topUp` or `close` anywhere, or an `open`/`voucher` on a bare `POST` or a
//! `HEAD`) is applied and answered `204` with the receipt; the handler never runs.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use alloy::primitives::B256;
use mpp_core::did::PkhDid;
use mpp_core::metering::{MeterError, Metering, Reserve};
use mpp_core::method::{Method, MethodError, PriceTerms, Settle, Verified, VerifyContext};
use mpp_core::{BoxFuture, Credential};
use serde_json::Value;
use time::OffsetDateTime;

use super::receipt::{NeedVoucher, SESSION_INTENT};
use super::server::{HoldRequest, TempoSessions, closed_error, store_fault};
use super::store::{
    Channel, ChannelStore, ChannelStoreError, Charge, ChargeOutcome, Commit, CommitOutcome,
    ReserveOutcome,
};
use super::wake::Signal;
use super::{SessionCredential, SessionError, SessionReceipt, TempoSessionRequest};
use crate::METHOD_NAME;
use crate::address::parse_address;

/// How long the unit held for a content request waits for the handler's answer before its
/// headroom is free again (a crashed instance's hold lapses on its own).
const ADMISSION_HOLD: Duration = Duration::from_secs(300);

/// How long a stream's reservation lives without being renewed (each reservation renews it).
const STREAM_HOLD: Duration = Duration::from_secs(120);

/// How often a stream waiting for a voucher re-reads its channel when no wake-up comes.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_millis(500);

impl Method for TempoSessions {
    fn name(&self) -> &str {
        METHOD_NAME
    }

    fn supports_intent(&self, intent: &str) -> bool {
        intent == SESSION_INTENT
    }

    fn request(&self, terms: &PriceTerms) -> Result<Value, MethodError> {
        if terms.intent != SESSION_INTENT {
            return Err(MethodError::config(format!(
                "tempo sessions serve `session`, not `{}`",
                terms.intent
            )));
        }
        let price = terms.amount.to_base_units(self.inner.decimals)?;
        if price == 0 {
            return Err(MethodError::config(
                "a session price must be above zero per unit",
            ));
        }
        let unit_type = terms.unit_type.as_deref().unwrap_or(DEFAULT_UNIT_TYPE);
        let mut request = self.request(price, unit_type);
        if let Some(currency) = &terms.currency {
            request.currency = parse_address(currency)
                .map_err(|e| MethodError::config(format!("currency: {e}")))?;
        }
        request.external_id.clone_from(&terms.external_id);
        request.validate().map_err(MethodError::config)?;
        Ok(request.to_json())
    }

    fn accepts_expired(&self, credential: &Credential) -> bool {
        // A stream outlives its challenge: its vouchers, top-ups and close still count. An
        // `open` needs a live challenge (verify then still requires the channel to be open).
        matches!(
            credential.payload.get("action").and_then(Value::as_str),
            Some("voucher" | "topUp" | "close")
        )
    }

    fn verify<'a>(
        &'a self,
        ctx: VerifyContext<'a>,
    ) -> BoxFuture<'a, Result<Verified, MethodError>> {
        Box::pin(async move {
            self.verify_for_transport(ctx)
                .await
                .map_err(MethodError::from)
        })
    }
}

/// What one unit is when the route does not say.
pub const DEFAULT_UNIT_TYPE: &str = "request";

impl TempoSessions {
    async fn verify_for_transport(&self, ctx: VerifyContext<'_>) -> Result<Verified, SessionError> {
        let request = TempoSessionRequest::from_map(ctx.request)?;
        let credential = SessionCredential {
            request: &request,
            payload: &ctx.credential.payload,
            source: ctx.credential.source.as_deref(),
            expires: ctx.expires,
            now: ctx.now,
        };
        let price = request.amount;
        // A content request holds its first unit; with a new voucher, in the same store step
        // that accepts it.
        let hold = ctx.content.then(|| Hold::new(self, "request"));
        let hold_request = hold.as_ref().map(|hold| HoldRequest {
            reservation: &hold.reservation,
            amount: price,
            ttl: ADMISSION_HOLD,
        });
        let (verified, held) = self.verify_holding(credential, hold_request).await?;
        let challenge_id = ctx.credential.challenge.id.as_str();
        let channel = &verified.channel;
        let payer = PkhDid {
            chain_id: self.inner.chain_id,
            address: channel.descriptor.payer.to_checksum(None),
        }
        .to_string();
        let hold = match hold {
            Some(hold) if !verified.action.is_management() => hold.on(channel.id()),
            _ => {
                let receipt = verified.receipt(challenge_id, ctx.now).to_receipt();
                return Ok(Verified::respond(204, receipt).with_payer(payer));
            }
        };
        // Content: hold one unit now (unless the voucher's step did), take it when the
        // handler has answered with success.
        let held = match held {
            Some(held) => held,
            None => self
                .inner
                .store
                .reserve(channel.id(), &hold.reservation, price, ADMISSION_HOLD)
                .await
                .map_err(store_fault)?,
        };
        let held = match held {
            ReserveOutcome::Reserved { channel, .. } => channel,
            ReserveOutcome::Insufficient(channel) => {
                return Err(SessionError::InsufficientBalance {
                    requested: price,
                    available: channel.available(),
                });
            }
            ReserveOutcome::TooManyReservations(_) => {
                return Err(SessionError::Deferred {
                    detail: "too many requests are using this channel at once".into(),
                    retry_after: 1,
                });
            }
            ReserveOutcome::Closed(channel) => return Err(closed_error(&channel)),
            ReserveOutcome::NotFound => {
                return Err(SessionError::ChannelNotFound("no such channel".into()));
            }
        };
        // The receipt shows the unit as taken: it is sent only once it is.
        let mut receipt = SessionReceipt::new(
            challenge_id,
            held.id(),
            verified.accepted_cumulative,
            held.spent.saturating_add(price),
            ctx.now,
        )
        .with_units(held.units.saturating_add(1));
        if let Some(tx) = verified.tx_hash {
            receipt = receipt.with_tx_hash(tx);
        }
        let meter = TempoMeter {
            sessions: self.clone(),
            channel_id: held.id(),
            challenge_id: challenge_id.to_owned(),
            price,
            stream: Hold::new(self, "stream").reservation,
            signal: self.inner.wakeups.signal(held.id()),
            seen: AtomicU64::new(0),
            poll: self.inner.poll_interval,
        };
        Ok(Verified::serve(receipt.to_receipt())
            .with_payer(payer)
            .with_amount(price)
            .with_decimals(self.inner.decimals)
            .settle_later(AdmissionCharge {
                hold,
                price,
                taken: false,
            })
            .with_metering(Arc::new(meter)))
    }
}

fn meter_fault(e: ChannelStoreError) -> MeterError {
    MeterError::Unavailable(e.to_string())
}

/// A reservation of this request on one channel, named uniquely.
struct Hold {
    store: Arc<dyn ChannelStore>,
    channel_id: B256,
    reservation: String,
}

impl Hold {
    /// A new reservation name of `kind`, on no channel yet ([`Hold::on`]).
    fn new(sessions: &TempoSessions, kind: &str) -> Self {
        Self {
            store: Arc::clone(&sessions.inner.store),
            channel_id: B256::ZERO,
            reservation: format!("{kind}:{}", alloy::hex::encode(&B256::random()[..12])),
        }
    }

    /// The hold, on `channel_id`.
    fn on(self, channel_id: B256) -> Self {
        Self { channel_id, ..self }
    }
}

/// The first unit of a content request: held at admission, taken on success.
struct AdmissionCharge {
    hold: Hold,
    price: u128,
    taken: bool,
}

impl Settle for AdmissionCharge {
    fn settle(&mut self) -> BoxFuture<'_, Result<(), MethodError>> {
        Box::pin(async move {
            let Hold {
                store,
                channel_id,
                reservation,
            } = &self.hold;
            let commit = Commit {
                amount: self.price,
                units: 1,
                release_rest: true,
            };
            let outcome = store
                .commit(*channel_id, reservation, commit)
                .await
                .map_err(|e| MethodError::from(store_fault(e)))?;
            let result = match outcome {
                CommitOutcome::Committed { .. } => Ok(()),
                // The hold lapsed (a handler slower than the hold): charge it outright.
                CommitOutcome::ReservationNotFound(_)
                | CommitOutcome::ExceedsReservation { .. } => {
                    charge_outright(store.as_ref(), *channel_id, self.price).await
                }
                CommitOutcome::Closed { channel, .. } => Err(closed_error(&channel)),
                CommitOutcome::NotFound => {
                    Err(SessionError::ChannelNotFound("no such channel".into()))
                }
            };
            self.taken = result.is_ok();
            result.map_err(MethodError::from)
        })
    }

    fn finish(mut self: Box<Self>, _served: bool) -> BoxFuture<'static, ()> {
        let release = !self.taken;
        // Marked so `Drop` does not release a second time.
        self.taken = true;
        let store = Arc::clone(&self.hold.store);
        let channel_id = self.hold.channel_id;
        let reservation = std::mem::take(&mut self.hold.reservation);
        Box::pin(async move {
            if release && let Err(e) = store.release(channel_id, &reservation).await {
                // The hold lapses on its own after ADMISSION_HOLD.
                tracing::warn!(error = %e, "releasing an unused hold failed");
            }
        })
    }
}

impl Drop for AdmissionCharge {
    fn drop(&mut self) {
        if self.taken {
            return;
        }
        // Dropped without `finish` (a handler that panicked): release in the background.
        let store = Arc::clone(&self.hold.store);
        let channel_id = self.hold.channel_id;
        let reservation = std::mem::take(&mut self.hold.reservation);
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let _ = store.release(channel_id, &reservation).await;
            });
        }
    }
}

async fn charge_outright(
    store: &dyn ChannelStore,
    channel_id: B256,
    price: u128,
) -> Result<(), SessionError> {
    match store
        .charge(channel_id, Charge::one(price))
        .await
        .map_err(store_fault)?
    {
        ChargeOutcome::Charged(_) => Ok(()),
        ChargeOutcome::Insufficient { cost, channel } => Err(SessionError::InsufficientBalance {
            requested: cost,
            available: channel.available(),
        }),
        ChargeOutcome::Closed(channel) => Err(closed_error(&channel)),
        ChargeOutcome::NotFound => Err(SessionError::ChannelNotFound("no such channel".into())),
    }
}

/// The [`Metering`] of one admitted content request.
struct TempoMeter {
    sessions: TempoSessions,
    channel_id: B256,
    challenge_id: String,
    price: u128,
    /// The stream's reservation name.
    stream: String,
    signal: Arc<Signal>,
    /// The signal's version when the last reservation was tried.
    seen: AtomicU64,
    poll: Duration,
}

impl TempoMeter {
    fn store(&self) -> &dyn ChannelStore {
        self.sessions.inner.store.as_ref()
    }

    fn cost(&self, units: u64) -> Result<u128, MeterError> {
        self.price
            .checked_mul(u128::from(units))
            .ok_or_else(|| MeterError::Unavailable("the amount overflows".into()))
    }

    async fn try_reserve(&self, units: u64) -> Result<Result<u64, Channel>, MeterError> {
        let amount = self.cost(units)?;
        match self
            .store()
            .reserve(self.channel_id, &self.stream, amount, STREAM_HOLD)
            .await
            .map_err(meter_fault)?
        {
            ReserveOutcome::Reserved { .. } => Ok(Ok(units)),
            ReserveOutcome::Insufficient(channel) => Ok(Err(channel)),
            ReserveOutcome::TooManyReservations(_) => Err(MeterError::Unavailable(
                "too many streams on this channel".into(),
            )),
            ReserveOutcome::Closed(channel) => Err(closed(&channel)),
            ReserveOutcome::NotFound => Err(MeterError::Closed("no such channel".into())),
        }
    }
}

fn closed(channel: &Channel) -> MeterError {
    MeterError::Closed(closed_error(channel).to_string())
}

impl Metering for TempoMeter {
    fn unit_price(&self) -> u128 {
        self.price
    }

    fn prepaid_units(&self) -> u64 {
        1
    }

    fn reserve(&self, min: u64, want: u64) -> BoxFuture<'_, Result<Reserve, MeterError>> {
        Box::pin(async move {
            let min = min.max(1);
            let want = want.max(min);
            self.seen.store(self.signal.version(), Ordering::Release);
            let channel = match self.try_reserve(want).await? {
                Ok(units) => return Ok(Reserve::Held(units)),
                Err(channel) => channel,
            };
            // Less than a block is free: take what there is, if it covers the minimum.
            let free = u64::try_from(channel.available() / self.price).unwrap_or(u64::MAX);
            // (If another stream took it meanwhile, ask for a voucher.)
            if free >= min
                && let Ok(units) = self.try_reserve(free.min(want)).await?
            {
                return Ok(Reserve::Held(units));
            }
            let need = NeedVoucher {
                channel_id: self.channel_id,
                required_cumulative: channel.required_cumulative(self.cost(min)?),
                accepted_cumulative: channel.highest_voucher,
                deposit: channel.deposit,
            };
            Ok(Reserve::NeedVoucher(need.to_json_string()))
        })
    }

    fn commit(&self, units: u64, end: bool) -> BoxFuture<'_, Result<(), MeterError>> {
        Box::pin(async move {
            if units == 0 && !end {
                return Ok(());
            }
            let commit = Commit {
                amount: self.cost(units)?,
                units,
                release_rest: end,
            };
            match self
                .store()
                .commit(self.channel_id, &self.stream, commit)
                .await
                .map_err(meter_fault)?
            {
                CommitOutcome::Committed { .. } => Ok(()),
                CommitOutcome::ReservationNotFound(_)
                | CommitOutcome::ExceedsReservation { .. }
                    if units == 0 =>
                {
                    Ok(())
                }
                // The reservation lapsed while the stream was slow: what was sent is still
                // owed, so charge it outright if the vouchers cover it.
                CommitOutcome::ReservationNotFound(_)
                | CommitOutcome::ExceedsReservation { .. } => {
                    match self
                        .store()
                        .charge(
                            self.channel_id,
                            Charge {
                                price: self.price,
                                units,
                            },
                        )
                        .await
                        .map_err(meter_fault)?
                    {
                        ChargeOutcome::Charged(_) => Ok(()),
                        ChargeOutcome::Closed(channel) => Err(closed(&channel)),
                        ChargeOutcome::NotFound => {
                            Err(MeterError::Closed("no such channel".into()))
                        }
                        ChargeOutcome::Insufficient { .. } => {
                            tracing::warn!(
                                channel_id = %self.channel_id,
                                units,
                                "a lapsed stream reservation could not be charged"
                            );
                            Err(MeterError::Unavailable(
                                "the stream's reservation lapsed".into(),
                            ))
                        }
                    }
                }
                CommitOutcome::Closed { channel, .. } => Err(closed(&channel)),
                CommitOutcome::NotFound => Err(MeterError::Closed("no such channel".into())),
            }
        })
    }

    fn changed(&self) -> BoxFuture<'_, ()> {
        Box::pin(
            self.signal
                .changed_since(self.seen.load(Ordering::Acquire), self.poll),
        )
    }

    fn receipt(&self) -> BoxFuture<'_, Result<String, MeterError>> {
        Box::pin(async move {
            let channel = self
                .store()
                .get(self.channel_id)
                .await
                .map_err(meter_fault)?
                .ok_or_else(|| MeterError::Closed("no such channel".into()))?;
            let receipt = SessionReceipt::new(
                &self.challenge_id,
                self.channel_id,
                channel.highest_voucher,
                channel.spent,
                OffsetDateTime::now_utc(),
            )
            .with_units(channel.units);
            Ok(receipt.to_json_string())
        })
    }

    fn end_detached(&self, units: u64) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return; // no runtime left: the reservation lapses on its own
        };
        let store = Arc::clone(&self.sessions.inner.store);
        let channel_id = self.channel_id;
        let reservation = self.stream.clone();
        let Ok(amount) = self.cost(units) else {
            return;
        };
        runtime.spawn(async move {
            let commit = Commit {
                amount,
                units,
                release_rest: true,
            };
            match store.commit(channel_id, &reservation, commit).await {
                Ok(CommitOutcome::Committed { .. }) => {}
                Ok(other) if units > 0 => {
                    tracing::warn!(%channel_id, units, outcome = ?other, "units sent by a dropped stream were not committed");
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(%channel_id, units, error = %e, "committing a dropped stream failed");
                }
            }
        });
    }
}
