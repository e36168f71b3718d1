//! The writer thread: chains queued lines, writes them in batches, and tells each request
//! whether its line reached the OS (group commit).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender};
use std::time::Duration;

use tokio::sync::oneshot;

use super::chain::{self, AuditKey, Link};
use super::sink::Sink;

/// Write out once this much is batched even if more is queued, to bound memory.
const BATCH_BYTES: usize = 256 * 1024;

/// After a batch of several lines, wait this long before taking the next: lines that arrive
/// meanwhile share one wake-up and one write(2). Not after a batch of one line, since then the
/// load is light and the pause would only add to the next request's latency.
const COALESCE: Duration = Duration::from_micros(200);

pub(crate) enum Message {
    /// One event as a JSON object (no chain, no newline), and who waits for it.
    Line {
        payload: Vec<u8>,
        written: oneshot::Sender<bool>,
    },
    /// Write out and sync everything queued before this, then answer.
    Flush(SyncSender<()>),
}

/// What the writer thread tells everyone else.
#[derive(Default)]
pub(crate) struct Shared {
    /// The last write failed: requests are refused before they act until a write succeeds.
    pub broken: AtomicBool,
    /// Lines that could not be written; each one's request was answered with an error.
    pub unwritten: AtomicU64,
}

struct Writer<'a> {
    sink: Sink,
    key: AuditKey,
    /// The link of the last line the sink took.
    written: Link,
    /// The link of the last line batched, to chain the next one from.
    batched: Link,
    bytes: Vec<u8>,
    waiting: Vec<oneshot::Sender<bool>>,
    shared: &'a Shared,
}

pub(crate) fn run(
    sink: Sink,
    key: AuditKey,
    link: Link,
    receiver: &Receiver<Message>,
    shared: &Shared,
) {
    let mut w = Writer {
        sink,
        key,
        written: link,
        batched: link,
        bytes: Vec::with_capacity(BATCH_BYTES),
        waiting: Vec::new(),
        shared,
    };
    // Block for the first message, then take whatever else is already queued without waiting.
    while let Ok(first) = receiver.recv() {
        let mut lines = 0usize;
        let mut next = Some(first);
        while let Some(message) = next {
            match message {
                Message::Line { payload, written } => {
                    w.push(&payload, written);
                    lines += 1;
                }
                Message::Flush(ack) => {
                    w.write_out();
                    if let Err(e) = w.sink.sync() {
                        tracing::error!(error = %e, "cannot sync the audit log");
                    }
                    let _ = ack.send(());
                }
            }
            // Empty or disconnected: write out what we have either way.
            next = receiver.try_recv().ok();
        }
        w.write_out();
        if lines > 1 {
            std::thread::sleep(COALESCE);
        }
    }
    w.write_out();
    let _ = w.sink.sync();
}

impl Writer<'_> {
    fn push(&mut self, payload: &[u8], written: oneshot::Sender<bool>) {
        // Rotate between lines, never inside one, so every file holds whole lines.
        if self
            .sink
            .should_rotate(self.bytes.len(), payload.len() + chain::SEAL_OVERHEAD)
        {
            self.write_out();
            self.sink.rotate();
        }
        self.batched = chain::seal(&self.key, &self.batched, payload, &mut self.bytes);
        self.waiting.push(written);
        if self.bytes.len() >= BATCH_BYTES {
            self.write_out();
        }
    }

    /// Write the batch; every line's request learns the outcome. A failed batch is dropped
    /// whole and the chain goes on from the last line written, so the log never holds a line
    /// whose request was answered with an error, nor a gap. Each later batch tries the sink
    /// again, so the log recovers by itself when the disk has room again.
    fn write_out(&mut self) {
        if self.waiting.is_empty() {
            return;
        }
        let ok = match self.sink.write(&self.bytes) {
            Ok(()) => {
                self.written = self.batched;
                if self.shared.broken.swap(false, Ordering::Release) {
                    tracing::warn!("the audit log is writable again; serving requests");
                }
                true
            }
            Err(e) => {
                self.batched = self.written;
                let lost = self.waiting.len() as u64;
                let lost_before = self.shared.unwritten.fetch_add(lost, Ordering::Relaxed);
                if !self.shared.broken.swap(true, Ordering::Release) {
                    tracing::error!(
                        error = %e,
                        lost,
                        lost_before,
                        "audit log write failed; refusing requests until it can be written"
                    );
                } else {
                    tracing::debug!(error = %e, lost, "audit log write failed again");
                }
                false
            }
        };
        for waiter in self.waiting.drain(..) {
            // A request that stopped waiting (its client went away) needs no answer.
            let _ = waiter.send(ok);
        }
        self.bytes.clear();
    }
}
