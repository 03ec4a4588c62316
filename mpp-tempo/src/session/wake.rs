//! Wake-ups for streams waiting on a channel: a stream out of headroom sleeps until a voucher
//! or top-up for its channel is accepted, by this process ([`Wakeups::wake`] after every
//! accepted action) or by another instance (the Postgres store's `LISTEN/NOTIFY`, forwarded
//! here), with polling as the fallback.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use alloy::primitives::B256;
use tokio::sync::Notify;

/// Past this many entries, dead ones are swept before a new one is added.
const SWEEP_AT: usize = 1024;

/// One channel's change signal: a counter bumped on every change, and a notifier.
#[derive(Debug, Default)]
pub(crate) struct Signal {
    version: AtomicU64,
    notify: Notify,
}

impl Signal {
    /// The number of changes seen so far.
    pub(crate) fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    /// Resolves when the version moves past `seen`, or after `poll` at the latest.
    pub(crate) async fn changed_since(&self, seen: u64, poll: Duration) {
        // Created before the check: `notify_waiters` reaches a `Notified` from its creation
        // on, so a change between the check and the wait is not missed.
        let notified = self.notify.notified();
        if self.version() != seen {
            return;
        }
        let _ = tokio::time::timeout(poll, notified).await;
    }

    fn bump(&self) {
        self.version.fetch_add(1, Ordering::AcqRel);
        self.notify.notify_waiters();
    }
}

/// The signals of the channels that have waiters, by channel id.
#[derive(Debug, Default)]
pub(crate) struct Wakeups {
    signals: Mutex<HashMap<B256, Weak<Signal>>>,
}

impl Wakeups {
    /// The signal of `channel_id` (held while waiting on it).
    pub(crate) fn signal(&self, channel_id: B256) -> Arc<Signal> {
        let Ok(mut signals) = self.signals.lock() else {
            // A poisoned map still lets the caller wait: it falls back to polling.
            return Arc::default();
        };
        if let Some(signal) = signals.get(&channel_id).and_then(Weak::upgrade) {
            return signal;
        }
        if signals.len() >= SWEEP_AT {
            signals.retain(|_, s| s.strong_count() > 0);
        }
        let signal = Arc::new(Signal::default());
        signals.insert(channel_id, Arc::downgrade(&signal));
        signal
    }

    /// Wakes the streams waiting on `channel_id`, if any.
    pub(crate) fn wake(&self, channel_id: B256) {
        let signal = self
            .signals
            .lock()
            .ok()
            .and_then(|s| s.get(&channel_id).and_then(Weak::upgrade));
        if let Some(signal) = signal {
            signal.bump();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_wake_between_check_and_wait_is_not_missed() {
        let wakeups = Wakeups::default();
        let id = B256::repeat_byte(7);
        let signal = wakeups.signal(id);
        let seen = signal.version();
        wakeups.wake(id);
        // Already moved: returns at once, long before the poll interval.
        tokio::time::timeout(
            Duration::from_secs(1),
            signal.changed_since(seen, Duration::from_secs(60)),
        )
        .await
        .expect("a change already seen returns at once");
    }

    #[tokio::test]
    async fn a_waiter_is_woken_by_a_later_change() {
        let wakeups = Arc::new(Wakeups::default());
        let id = B256::repeat_byte(9);
        let signal = wakeups.signal(id);
        let seen = signal.version();
        let waker = Arc::clone(&wakeups);
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            waker.wake(id);
        });
        tokio::time::timeout(
            Duration::from_secs(5),
            signal.changed_since(seen, Duration::from_secs(60)),
        )
        .await
        .expect("woken by the change, not the poll");
        assert_eq!(signal.version(), seen + 1);
    }

    #[test]
    fn channels_without_waiters_hold_nothing() {
        let wakeups = Wakeups::default();
        let id = B256::repeat_byte(1);
        drop(wakeups.signal(id));
        wakeups.wake(id); // no waiter: nothing to do, nothing kept alive
        let signals = wakeups.signals.lock().expect("not poisoned");
        assert!(signals.get(&id).and_then(Weak::upgrade).is_none());
    }
}
