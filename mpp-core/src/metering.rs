//! [`Metering`]: how a transport bills more units of an admitted session request (an SSE
//! stream of tokens) without knowing the payment method.
//!
//! A session method that admits a content request (and charges its first unit) hands the
//! transport a [`Metering`] for it in [`Verified::metering`](crate::Verified::metering). A
//! stream then bills against the payer's channel in three steps, all atomic in the method's
//! store:
//!
//! 1. [`reserve`](Metering::reserve) holds headroom (accepted vouchers not yet spent) for
//!    the items about to be sent, in blocks, so two streams on one channel never count on
//!    the same money;
//! 2. [`commit`](Metering::commit) moves what was sent from the reservation to `spent`, in
//!    batches, and at the end releases the rest;
//! 3. when the headroom runs out, [`Reserve::NeedVoucher`] carries the event that asks the
//!    client for a voucher, and [`changed`](Metering::changed) wakes the stream when the
//!    channel may have changed (a voucher arrived, on this instance or another).
//!
//! The transport counts units (one per item by default); the method turns them into money at
//! the route's price, so the transport never does arithmetic on amounts.

use crate::BoxFuture;

/// The result of [`Metering::reserve`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reserve {
    /// Headroom for this many more units (at least the minimum asked for) is now held for
    /// the request, on top of what it held.
    Held(u64),
    /// The accepted vouchers do not cover the minimum: nothing was reserved. The text is the
    /// JSON of the `payment-need-voucher` event that asks the client for a voucher.
    NeedVoucher(String),
}

/// Why metering cannot go on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MeterError {
    /// The channel is closing or closed: nothing more can be billed, the stream ends.
    #[error("the channel is closed: {0}")]
    Closed(String),
    /// The store or node cannot be reached: the stream ends (nothing unbilled is sent).
    #[error("metering unavailable: {0}")]
    Unavailable(String),
}

/// Bills the units of one admitted session request (see the [module docs](self)).
///
/// One value per request: it owns that request's reservation. Implementations must be
/// atomic in their store (two streams never reserve the same headroom) and must never bill
/// more than [`commit`](Metering::commit) is told was sent.
pub trait Metering: Send + Sync + 'static {
    /// The price of one unit, in base units (the route's per-unit amount).
    fn unit_price(&self) -> u128;

    /// The units the admission already charged (the first unit of a content request), which
    /// pay for the first items of the response. Zero when nothing was charged.
    fn prepaid_units(&self) -> u64;

    /// Holds headroom for at least `min` and at most `want` (≥ `min`) more units.
    fn reserve(&self, min: u64, want: u64) -> BoxFuture<'_, Result<Reserve, MeterError>>;

    /// Moves `units` of this request's reservation to `spent` (they were sent). With `end`,
    /// what is left of the reservation is released (the response is complete).
    fn commit(&self, units: u64, end: bool) -> BoxFuture<'_, Result<(), MeterError>>;

    /// Resolves when the channel may have changed since the last [`reserve`](Self::reserve)
    /// (a voucher or top-up was accepted, the channel is closing), or after the method's
    /// polling interval at the latest.
    fn changed(&self) -> BoxFuture<'_, ()>;

    /// The receipt of the request as it stands (JSON text, for a final `payment-receipt`
    /// event): the channel's totals after what was committed.
    fn receipt(&self) -> BoxFuture<'_, Result<String, MeterError>>;

    /// Ends the request without waiting (the client went away, or the stream was dropped):
    /// commits the `units` that were sent and releases the rest of the reservation, in the
    /// background.
    fn end_detached(&self, units: u64);
}

impl std::fmt::Debug for dyn Metering {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metering")
            .field("unit_price", &self.unit_price())
            .finish_non_exhaustive()
    }
}
