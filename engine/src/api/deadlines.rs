//! Deadlines on a connection without a timer per request: a read that waits too long (an idle
//! keep-alive connection), a write that stalls (a client that stops reading its answers), a
//! request head that does not arrive in time (one trickled a byte at a time, so that no read
//! waits long) and a request body that does not arrive in time. The stream wrapper and the
//! handler only mark when they started waiting, in atomics; the connection's own watch, ticking a few times per
//! shortest limit, compares the marks with its tick count and closes the connection (or, for a
//! body, wakes the handler so it can answer 408). A timer per request costs a timer-wheel
//! insertion and often a wake-up of the runtime's driver; this costs none.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;

/// One connection's marks. A mark is the tick (plus one, so 0 means "not waiting") at which a
/// wait began.
#[derive(Default)]
pub struct ConnClock {
    ticks: AtomicU64,
    read_since: AtomicU64,
    write_since: AtomicU64,
    /// When the first bytes of a request head arrived (0: none is arriving).
    head_since: AtomicU64,
    /// A request is being served: bytes read now are its body, not a head.
    serving: AtomicBool,
    body_since: AtomicU64,
    body_expired: Notify,
}

/// The limits, in ticks of [`Limits::tick`].
#[derive(Clone, Copy)]
pub struct Limits {
    pub tick: Duration,
    read_idle: u64,
    write_stall: u64,
    head: u64,
    body: u64,
}

impl Limits {
    pub fn new(read_idle: Duration, write_stall: Duration, head: Duration, body: Duration) -> Self {
        // Four ticks per shortest limit, between 50 ms and 1 s: a deadline is kept within a
        // quarter of itself at a cost of a few wake-ups per second per connection.
        let shortest = read_idle.min(write_stall).min(head).min(body);
        let tick = (shortest / 4).clamp(Duration::from_millis(50), Duration::from_secs(1));
        let ticks = |d: Duration| (d.as_millis() / tick.as_millis().max(1)).max(1) as u64;
        Self {
            tick,
            read_idle: ticks(read_idle),
            write_stall: ticks(write_stall),
            head: ticks(head),
            body: ticks(body),
        }
    }
}

/// What a tick found.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Fine,
    /// A read or a write has waited past its limit: close the connection.
    Close(&'static str),
}

impl ConnClock {
    fn now(&self) -> u64 {
        self.ticks.load(Ordering::Relaxed) + 1
    }

    fn waiting(&self, mark: &AtomicU64) {
        if mark.load(Ordering::Relaxed) == 0 {
            mark.store(self.now(), Ordering::Relaxed);
        }
    }

    fn progressed(mark: &AtomicU64) {
        mark.store(0, Ordering::Relaxed);
    }

    /// Bytes were read: between requests, they start a request head.
    fn read_bytes(&self) {
        if !self.serving.load(Ordering::Relaxed) {
            self.waiting(&self.head_since);
        }
    }

    /// A request's head is complete and the request goes to its handler; until
    /// [`ConnClock::request_done`], what is read is its body.
    pub fn request_started(&self) {
        self.serving.store(true, Ordering::Relaxed);
        Self::progressed(&self.head_since);
    }

    pub fn request_done(&self) {
        self.serving.store(false, Ordering::Relaxed);
    }

    /// The handler starts reading a request body.
    pub fn body_started(&self) {
        self.body_since.store(self.now(), Ordering::Relaxed);
    }

    pub fn body_done(&self) {
        Self::progressed(&self.body_since);
    }

    /// Completes once the body read started with [`ConnClock::body_started`] is past its limit.
    pub async fn body_expired(&self) {
        self.body_expired.notified().await;
    }

    /// Advance one tick and judge the marks.
    pub fn tick(&self, limits: &Limits) -> Verdict {
        let now = self.ticks.fetch_add(1, Ordering::Relaxed) + 2;
        let over = |mark: &AtomicU64, limit: u64| {
            let since = mark.load(Ordering::Relaxed);
            since != 0 && now.saturating_sub(since) > limit
        };
        if over(&self.body_since, limits.body) {
            // Repeated each tick until the handler gives up on the body.
            self.body_expired.notify_waiters();
        }
        if over(&self.head_since, limits.head) {
            return Verdict::Close("its request head did not arrive in time");
        }
        if over(&self.write_since, limits.write_stall) {
            return Verdict::Close("its answers were not read in time");
        }
        if over(&self.read_since, limits.read_idle) {
            return Verdict::Close("it was idle too long");
        }
        Verdict::Fine
    }
}

/// The connection's stream, marking reads and writes that wait.
pub struct Deadlines<I> {
    io: I,
    clock: Arc<ConnClock>,
}

impl<I> Deadlines<I> {
    pub fn new(io: I, clock: Arc<ConnClock>) -> Self {
        Self { io, clock }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Deadlines<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.io).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.clock.read_bytes();
        }
        mark(&this.clock, &this.clock.read_since, polled)
    }
}

fn mark<T>(clock: &ConnClock, slot: &AtomicU64, polled: Poll<T>) -> Poll<T> {
    match &polled {
        Poll::Ready(_) => ConnClock::progressed(slot),
        Poll::Pending => clock.waiting(slot),
    }
    polled
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Deadlines<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.io).poll_write(cx, buf);
        mark(&this.clock, &this.clock.write_since, polled)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        mark(&this.clock, &this.clock.write_since, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.io).poll_flush(cx);
        mark(&this.clock, &this.clock.write_since, polled)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.io).poll_shutdown(cx);
        mark(&this.clock, &this.clock.write_since, polled)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_expire_after_their_limits_and_progress_clears_them() {
        let limits = Limits::new(
            Duration::from_secs(4),
            Duration::from_secs(2),
            Duration::from_secs(3),
            Duration::from_secs(1),
        );
        assert_eq!(limits.tick, Duration::from_millis(250));
        let clock = ConnClock::default();
        clock.waiting(&clock.read_since);
        for _ in 0..16 {
            assert_eq!(clock.tick(&limits), Verdict::Fine);
        }
        assert!(matches!(clock.tick(&limits), Verdict::Close(_)));
        ConnClock::progressed(&clock.read_since);
        assert_eq!(clock.tick(&limits), Verdict::Fine);
        clock.waiting(&clock.write_since);
        for _ in 0..8 {
            assert_eq!(clock.tick(&limits), Verdict::Fine);
        }
        assert!(matches!(clock.tick(&limits), Verdict::Close(_)));
    }

    #[test]
    fn a_head_must_arrive_within_its_limit_however_its_bytes_trickle() {
        let limits = Limits::new(
            Duration::from_secs(60),
            Duration::from_secs(60),
            Duration::from_secs(1),
            Duration::from_secs(60),
        );
        assert_eq!(limits.tick, Duration::from_millis(250));
        let clock = ConnClock::default();
        // A byte per tick: every read makes progress, the head never completes.
        for _ in 0..4 {
            clock.read_bytes();
            assert_eq!(clock.tick(&limits), Verdict::Fine);
        }
        clock.read_bytes();
        assert_eq!(
            clock.tick(&limits),
            Verdict::Close("its request head did not arrive in time")
        );

        // A head that completes is not timed, nor is its body, however long it takes.
        let clock = ConnClock::default();
        clock.read_bytes();
        clock.request_started();
        for _ in 0..20 {
            clock.read_bytes();
            assert_eq!(clock.tick(&limits), Verdict::Fine);
        }
        // The next request's head is timed from its first bytes.
        clock.request_done();
        for _ in 0..20 {
            assert_eq!(clock.tick(&limits), Verdict::Fine);
        }
        clock.read_bytes();
        for _ in 0..4 {
            assert_eq!(clock.tick(&limits), Verdict::Fine);
        }
        assert!(matches!(clock.tick(&limits), Verdict::Close(_)));
    }
}
