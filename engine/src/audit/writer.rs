//! The writer: chains each line and writes it to the sink on the recording request's own
//! thread, under one lock, so the request learns at once whether its line reached the OS.
//!
//! Why not a writer thread with group commit: every request then parks until the thread's next
//! batch and is woken from another thread, so the requests in flight move in lockstep with the
//! batches (measured: the audit log took 20–35% of Encrypt's throughput that way). An append of
//! one line to the page cache is a single short write(2); the lock is held for that, the
//! chain's HMAC and, once per file, a rotation.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use super::chain::{self, AuditKey, Link};
use super::sink::Sink;

/// What the writer tells everyone else, without its lock.
#[derive(Default)]
pub(crate) struct Shared {
    /// The last write failed: requests are refused before they act until a write succeeds.
    pub broken: AtomicBool,
    /// Lines that could not be written; each one's request was answered with an error.
    pub unwritten: AtomicU64,
}

pub(crate) struct Writer {
    sink: Sink,
    key: AuditKey,
    /// The link of the last line the sink took: the next line chains from it.
    written: Link,
    /// The line being written (kept to reuse its allocation).
    line: Vec<u8>,
}

impl Writer {
    pub(crate) fn new(sink: Sink, key: AuditKey, link: Link) -> Self {
        Self {
            sink,
            key,
            written: link,
            line: Vec::with_capacity(512),
        }
    }

    /// Chain `payload` (one event as a JSON object) and write it with its newline; whether the
    /// sink took it. A failed write leaves nothing in the log and the chain goes on from the
    /// last line written, so the log never holds a line whose request was answered with an
    /// error, nor a gap. Every later line tries the sink again, so the log recovers by itself
    /// when the disk has room again.
    pub(crate) fn append(&mut self, payload: &[u8], shared: &Shared) -> bool {
        // Rotate between lines, never inside one, so every file holds whole lines.
        if self
            .sink
            .should_rotate(payload.len() + chain::SEAL_OVERHEAD)
        {
            self.sink.rotate();
        }
        self.line.clear();
        let link = chain::seal(&self.key, &self.written, payload, &mut self.line);
        match self.sink.write(&self.line) {
            Ok(()) => {
                self.written = link;
                if shared.broken.swap(false, Ordering::Release) {
                    tracing::warn!("the audit log is writable again; serving requests");
                }
                true
            }
            Err(e) => {
                let lost_before = shared.unwritten.fetch_add(1, Ordering::Relaxed);
                if !shared.broken.swap(true, Ordering::Release) {
                    tracing::error!(
                        error = %e,
                        lost_before,
                        "audit log write failed; refusing requests until it can be written"
                    );
                } else {
                    tracing::debug!(error = %e, "audit log write failed again");
                }
                false
            }
        }
    }

    /// Make what was written durable (fsync for a file).
    pub(crate) fn sync(&mut self) {
        if let Err(e) = self.sink.sync() {
            tracing::error!(error = %e, "cannot sync the audit log");
        }
    }
}
