//! Graceful shutdown, told to every open connection. Each connection waits on a flag and a
//! waker of its own: a `watch` channel shared by all of them took its lock at every poll of
//! every connection (each request polls its connection at least twice), which showed in
//! profiles.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::task::Poll;

use futures_util::task::AtomicWaker;

/// The accept loop's end: it registers each connection it accepts, then stops them all.
#[derive(Default)]
pub(super) struct Stop {
    stopped: bool,
    signals: Vec<Weak<StopSignal>>,
}

impl Stop {
    /// A new connection's signal; already raised if the server is stopping.
    pub(super) fn register(&mut self) -> Arc<StopSignal> {
        let signal = Arc::new(StopSignal::default());
        if self.stopped {
            signal.raise();
            return signal;
        }
        // Connections come and go: forget the closed ones before the list would grow, and keep
        // room for as many again, so that a list of mostly open connections is not rescanned
        // at every accept.
        if self.signals.len() == self.signals.capacity() {
            self.signals.retain(|s| s.strong_count() > 0);
            self.signals.reserve(self.signals.len().max(16));
        }
        self.signals.push(Arc::downgrade(&signal));
        signal
    }

    /// Raise every open connection's signal, and those of connections registered from now on.
    pub(super) fn stop(&mut self) {
        self.stopped = true;
        for signal in self.signals.drain(..).filter_map(|s| s.upgrade()) {
            signal.raise();
        }
    }
}

/// One connection's view of [`Stop`].
#[derive(Default)]
pub(super) struct StopSignal {
    raised: AtomicBool,
    waker: AtomicWaker,
}

impl StopSignal {
    fn raise(&self) {
        self.raised.store(true, Ordering::Release);
        self.waker.wake();
    }

    pub(super) fn is_stopped(&self) -> bool {
        self.raised.load(Ordering::Acquire)
    }

    /// Completes once the signal is raised.
    pub(super) fn stopped(&self) -> impl Future<Output = ()> + '_ {
        std::future::poll_fn(move |cx| {
            if self.is_stopped() {
                return Poll::Ready(());
            }
            self.waker.register(cx.waker());
            // Raised between the check and the registration: its wake may have missed us.
            if self.is_stopped() {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn stop_raises_every_open_connection_and_every_later_one() {
        let mut stop = Stop::default();
        let first = stop.register();
        let second = stop.register();
        assert!(!first.is_stopped());
        let waiting = tokio::spawn({
            let first = first.clone();
            async move { first.stopped().await }
        });
        tokio::task::yield_now().await;
        stop.stop();
        tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("the waiting connection is woken")
            .unwrap();
        assert!(second.is_stopped());
        assert!(stop.register().is_stopped());
    }

    #[test]
    fn closed_connections_are_forgotten() {
        let mut stop = Stop::default();
        let open: Vec<_> = (0..100).map(|_| stop.register()).collect();
        for _ in 0..10_000 {
            drop(stop.register());
        }
        assert!(
            stop.signals.len() < 400,
            "{} signals kept",
            stop.signals.len()
        );
        stop.stop();
        assert!(open.iter().all(|s| s.is_stopped()));
    }

    #[test]
    fn mostly_open_connections_leave_room_to_grow() {
        let mut stop = Stop::default();
        let open: Vec<_> = (0..1000).map(|_| stop.register()).collect();
        // One connection closes and one opens, again and again: the list is rescanned only
        // when it is full, and after a rescan it has room for as many again.
        let mut rescans = 0;
        for _ in 0..1000 {
            let before = stop.signals.len();
            drop(stop.register());
            // A rescan forgets the closed ones: the list is no longer than before the push.
            if stop.signals.len() <= before {
                rescans += 1;
            }
        }
        assert!(rescans <= 2, "{rescans} rescans");
        drop(open);
    }
}
