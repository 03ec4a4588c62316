//! [`Meter`]: per-unit billing of a session route's response, and the metered SSE stream
//! (an adapter over axum's [`Sse`]/[`Event`], the way axum's keep-alive is one).
//!
//! A handler behind [`session`](crate::session()) takes a `Meter` and turns its stream of
//! items into a billed SSE response. Each item costs one unit unless it says otherwise; the
//! unit charged when the request was admitted pays for the first item; headroom is reserved
//! in blocks and what was sent is committed in batches, atomically in the channel store,
//! never more than was sent. When the payer's vouchers run out, one `payment-need-voucher`
//! event asks for the next, and the stream waits for it (woken when it arrives, on this
//! instance or, with Postgres, another), up to a deadline. Every end (the items ran out, the
//! deadline passed, the channel closed) sends a final `payment-receipt` event; a client that
//! goes away is charged nothing more, and the reservation is released.
//!
//! ```
//! use axum::{Router, routing::get, response::IntoResponse};
//! use futures_util::stream;
//! use mpp_axum::{Meter, Mpp};
//! # use mpp_core::testing::TestMethod;
//!
//! async fn tokens(meter: Meter) -> impl IntoResponse {
//!     let words = stream::iter(["Machine", "payments", "stream", "per", "token."]);
//!     meter.sse(words) // 5 units: one per word
//! }
//!
//! # fn main() -> Result<(), mpp_axum::ConfigError> {
//! # let mpp = Mpp::new("an-hmac-secret-of-at-least-32-bytes")?.method(TestMethod::new("tempo").intents(&["session"]));
//! let app: Router = Router::new()
//!     .route("/tokens", get(tokens).layer(mpp.session("0.0001")?.unit("token")));
//! # Ok(()) }
//! ```
//!
//! [`Sse`]: axum::response::sse::Sse
//! [`Event`]: axum::response::sse::Event

use crate::receipt::MissingPaymentLayer;
use axum_core::extract::FromRequestParts;
use mpp_core::metering::Metering;
use std::sync::Arc;
use std::time::Duration;

/// How long a stream waits for a voucher after asking for one, by default.
pub const DEFAULT_VOUCHER_WAIT: Duration = Duration::from_secs(30);

/// How often an idle stream sends a keep-alive comment, by default.
pub const DEFAULT_KEEP_ALIVE: Duration = Duration::from_secs(15);

/// The most units a stream reserves at once (blocks double from one up to this, capped by
/// the free headroom), so a fast stream writes to the store twice per block, not per item.
/// Each write waits for the store (an fsync on SQLite), so at 256 a stream of a hundred
/// thousand items per second spent half its time waiting; a slow stream commits every
/// second anyway, and what a crash can leave unbilled is at most one block.
pub const DEFAULT_MAX_BLOCK: u64 = 4096;

/// How a session route's streams are metered (set on the layer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct MeterConfig {
    pub(crate) voucher_wait: Duration,
    pub(crate) keep_alive: Duration,
    pub(crate) max_block: u64,
    pub(crate) commit_interval: Duration,
}

impl Default for MeterConfig {
    fn default() -> Self {
        Self {
            voucher_wait: DEFAULT_VOUCHER_WAIT,
            keep_alive: DEFAULT_KEEP_ALIVE,
            max_block: DEFAULT_MAX_BLOCK,
            commit_interval: Duration::from_secs(1),
        }
    }
}

/// Bills the units of a session request's response: an extractor, present on routes behind
/// a [`session`](crate::session()) layer (a `500` elsewhere, like
/// [`PaymentReceipt`](crate::PaymentReceipt)). See the [module docs](self).
#[derive(Clone)]
pub struct Meter {
    metering: Arc<dyn Metering>,
    config: MeterConfig,
}

impl std::fmt::Debug for Meter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Meter")
            .field("unit_price", &self.metering.unit_price())
            .field("config", &self.config)
            .finish()
    }
}

impl Meter {
    pub(crate) fn new(metering: Arc<dyn Metering>, config: MeterConfig) -> Self {
        Self { metering, config }
    }

    /// The price of one unit, in the currency's base units.
    pub fn unit_price(&self) -> u128 {
        self.metering.unit_price()
    }

    /// Waits at most `wait` for a voucher after asking for one (default 30 s); then the
    /// stream ends with its receipt.
    #[must_use]
    pub fn voucher_wait(mut self, wait: Duration) -> Self {
        self.config.voucher_wait = wait;
        self
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Meter {
    type Rejection = MissingPaymentLayer;

    async fn from_request_parts(
        parts: &mut http::request::Parts,
        _state: &S,
    ) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Meter>()
            .cloned()
            .ok_or(MissingPaymentLayer)
    }
}

#[cfg(feature = "sse")]
mod sse {
    use super::{Meter, MeterConfig};
    use axum::response::sse::{Event, KeepAlive, KeepAliveStream, Sse};
    use futures_util::{Stream, StreamExt as _};
    use mpp_core::metering::{MeterError, Metering, Reserve};
    use std::convert::Infallible;
    use std::pin::Pin;
    use std::sync::Arc;
    use std::task::{Context, Poll};
    use tokio::time::Instant;

    /// One item of a metered stream: an SSE event and the units it costs (one by default,
    /// zero for a free event).
    #[derive(Debug, Clone)]
    pub struct MeteredEvent {
        event: Event,
        units: u64,
    }

    impl MeteredEvent {
        /// A `message` event carrying `text` (its lines become `data:` lines; `\r\n` and `\r`
        /// end lines too, so every client reads the same lines).
        pub fn data(text: impl AsRef<str>) -> Self {
            Self::new(
                Event::default()
                    .event("message")
                    .data(normalize(text.as_ref())),
            )
        }

        /// An event of the application's own making (its name, id, data).
        pub fn new(event: Event) -> Self {
            Self { event, units: 1 }
        }

        /// What the event costs, in units (default one).
        #[must_use]
        pub fn units(mut self, units: u64) -> Self {
            self.units = units;
            self
        }
    }

    impl From<String> for MeteredEvent {
        fn from(text: String) -> Self {
            Self::data(text)
        }
    }

    impl From<&str> for MeteredEvent {
        fn from(text: &str) -> Self {
            Self::data(text)
        }
    }

    impl From<Event> for MeteredEvent {
        fn from(event: Event) -> Self {
            Self::new(event)
        }
    }

    impl From<MeteredEvent> for Event {
        fn from(event: MeteredEvent) -> Self {
            event.event
        }
    }

    /// Line ends as LF only: axum splits data on `\n` and on `\r` separately, so a `\r\n`
    /// would become an empty line that some clients read as data.
    fn normalize(text: &str) -> std::borrow::Cow<'_, str> {
        if text.contains('\r') {
            std::borrow::Cow::Owned(text.replace("\r\n", "\n").replace('\r', "\n"))
        } else {
            std::borrow::Cow::Borrowed(text)
        }
    }

    impl Meter {
        /// The billed SSE response of `items`, with keep-alive comments (`: keep-alive`)
        /// every 15 s of silence. See the [module docs](super).
        pub fn sse<S, T>(self, items: S) -> Sse<KeepAliveStream<MeteredStream>>
        where
            S: Stream<Item = T> + Send + 'static,
            T: Into<MeteredEvent> + 'static,
        {
            let keep_alive = KeepAlive::new()
                .interval(self.config.keep_alive)
                .text("keep-alive");
            Sse::new(self.stream(items)).keep_alive(keep_alive)
        }

        /// The billed event stream of `items`, for an [`Sse`] configured by the caller.
        pub fn stream<S, T>(self, items: S) -> MeteredStream
        where
            S: Stream<Item = T> + Send + 'static,
            T: Into<MeteredEvent> + 'static,
        {
            let run = Run {
                items: items.map(Into::into).boxed(),
                prepaid: self.metering.prepaid_units(),
                metering: self.metering,
                config: self.config,
                held: 0,
                sent: 0,
                block: 1,
                last_commit: Instant::now(),
                waiting: None,
                asked: None,
                pending: None,
                ended: false,
            };
            MeteredStream {
                inner: futures_util::stream::unfold(run, Run::next).boxed(),
            }
        }
    }

    /// The events of a metered response: the application's items as they are paid for, a
    /// `payment-need-voucher` event when the vouchers run out, and a final
    /// `payment-receipt` event. Built by [`Meter::stream`].
    pub struct MeteredStream {
        inner: Pin<Box<dyn Stream<Item = Result<Event, Infallible>> + Send>>,
    }

    impl std::fmt::Debug for MeteredStream {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("MeteredStream").finish_non_exhaustive()
        }
    }

    impl Stream for MeteredStream {
        type Item = Result<Event, Infallible>;

        fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
            self.inner.as_mut().poll_next(cx)
        }
    }

    /// The state of one metered stream.
    struct Run {
        items: Pin<Box<dyn Stream<Item = MeteredEvent> + Send>>,
        metering: Arc<dyn Metering>,
        config: MeterConfig,
        /// Units the admission paid for, not used yet.
        prepaid: u64,
        /// Units reserved and not used yet.
        held: u64,
        /// Units used from the reservation (sent) and not committed yet.
        sent: u64,
        /// The next reservation's size.
        block: u64,
        last_commit: Instant,
        /// Since a voucher was asked for: until when to wait for it.
        waiting: Option<Instant>,
        /// The last `payment-need-voucher` event sent (its JSON).
        asked: Option<String>,
        /// An item waiting for headroom, with the units still to pay for it.
        pending: Option<(MeteredEvent, u64)>,
        /// The end was committed (or there is nothing to commit): `Drop` has nothing to do.
        ended: bool,
    }

    impl Drop for Run {
        fn drop(&mut self) {
            if !self.ended {
                // The client went away: bill what was sent, release the rest.
                self.metering.end_detached(self.sent);
            }
        }
    }

    enum Step {
        Send(Event),
        Finish,
        Done,
    }

    impl Run {
        async fn next(mut self) -> Option<(Result<Event, Infallible>, Self)> {
            match self.step().await {
                Step::Send(event) => Some((Ok(event), self)),
                Step::Finish => {
                    let receipt = self.finish().await;
                    receipt.map(|event| (Ok(event), self))
                }
                Step::Done => None,
            }
        }

        async fn step(&mut self) -> Step {
            if self.ended {
                return Step::Done;
            }
            loop {
                let (item, mut owed) = match self.pending.take() {
                    Some(pending) => pending,
                    None => match self.items.next().await {
                        Some(item) => {
                            let units = item.units;
                            (item, units)
                        }
                        None => return Step::Finish,
                    },
                };
                let from_prepaid = owed.min(self.prepaid);
                self.prepaid -= from_prepaid;
                owed -= from_prepaid;
                let from_held = owed.min(self.held);
                self.held -= from_held;
                self.sent += from_held;
                owed -= from_held;
                if owed == 0 {
                    self.waiting = None;
                    let due = self.sent >= self.block
                        || self.last_commit.elapsed() >= self.config.commit_interval;
                    if due && let Err(e) = self.commit(false).await {
                        // Paid by the reservation: send it, then end.
                        tracing::info!(reason = %e, "metered stream ends");
                        self.pending = None;
                        self.items = Box::pin(futures_util::stream::empty());
                    }
                    return Step::Send(item.event);
                }
                let want = owed.max(self.block);
                match self.metering.reserve(owed, want).await {
                    Ok(Reserve::Held(units)) => {
                        self.held += units;
                        self.block = self.block.saturating_mul(2).min(self.config.max_block);
                        self.pending = Some((item, owed));
                    }
                    Ok(Reserve::NeedVoucher(json)) => {
                        self.pending = Some((item, owed));
                        if self.sent > 0
                            && let Err(e) = self.commit(false).await
                        {
                            tracing::info!(reason = %e, "metered stream ends");
                            return Step::Finish;
                        }
                        let deadline = match self.waiting {
                            Some(deadline) if self.asked.as_deref() == Some(json.as_str()) => {
                                deadline
                            }
                            // First ask, or the ask changed while waiting (another request on
                            // the channel took the headroom a voucher brought): ask again, or
                            // this stream would wait out its deadline for a voucher the client
                            // believes it already sent.
                            _ => {
                                let deadline = Instant::now() + self.config.voucher_wait;
                                self.waiting = Some(deadline);
                                self.asked = Some(json.clone());
                                tracing::debug!("metered stream needs a voucher");
                                return Step::Send(
                                    Event::default().event("payment-need-voucher").data(json),
                                );
                            }
                        };
                        if tokio::time::timeout_at(deadline, self.metering.changed())
                            .await
                            .is_err()
                        {
                            tracing::info!("no voucher came before the deadline; stream ends");
                            return Step::Finish;
                        }
                    }
                    Err(e) => {
                        tracing::info!(reason = %e, "metered stream ends");
                        return Step::Finish;
                    }
                }
            }
        }

        async fn commit(&mut self, end: bool) -> Result<(), MeterError> {
            let units = std::mem::take(&mut self.sent);
            self.last_commit = Instant::now();
            if end {
                self.held = 0;
            }
            self.metering.commit(units, end).await
        }

        /// Commits the end and makes the final receipt event (none if it cannot be read).
        async fn finish(&mut self) -> Option<Event> {
            let committed = self.commit(true).await;
            self.ended = true;
            if let Err(e) = committed {
                tracing::warn!(reason = %e, "committing the end of a metered stream failed");
            }
            match self.metering.receipt().await {
                Ok(json) => Some(Event::default().event("payment-receipt").data(json)),
                Err(e) => {
                    tracing::warn!(reason = %e, "no final receipt for a metered stream");
                    None
                }
            }
        }
    }
}

#[cfg(feature = "sse")]
pub use sse::{MeteredEvent, MeteredStream};
