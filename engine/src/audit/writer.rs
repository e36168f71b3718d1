//! Group commit without a writer thread: requests queue their lines, and one of them, the
//! leader, chains and writes whatever is queued in one `write(2)`, then tells each request of
//! the batch whether its line reached the OS.
//!
//! Why not a thread of its own: handing each line to a thread and parking until it wakes the
//! request costs two cross-thread wake-ups per request, and the thread competes with the
//! runtime's workers for the same cores. Why not each request writing its own line: a pipe
//! sink (stdout in a pod) wakes its reader, the container runtime, once per `write(2)`; one line
//! per write cut Encrypt in pods to a third. Here the leader first yields to the runtime, so the
//! requests already runnable on its thread add their lines before the batch is taken: batches
//! grow with the load, and a lone request writes at once.
//!
//! The leader role moves on: after writing one batch, a leader hands it to the oldest request
//! still queued, so no request waits behind more than one batch of others' lines. A request
//! dropped while it holds the role (its client went away) writes the batch as it is dropped,
//! so no line is left without a leader.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use tokio::sync::oneshot;

use super::chain::{self, AuditKey, Link};
use super::sink::Sink;

/// Write out once this much is batched even if more is queued, to bound memory.
const BATCH_BYTES: usize = 256 * 1024;

/// Lines queued before a request writes the queue itself instead of leaving it to the leader:
/// about a second of traffic at full load. Reached only when the sink stalls (a hung disk, a
/// pipe nobody reads), and then requests block rather than pile up unaudited work.
pub(crate) const QUEUE_LINES: usize = 32_768;

/// What a queued request learns.
pub(crate) enum Outcome {
    /// Whether its line reached the OS.
    Written(bool),
    /// It now leads: it writes the queue (its own line included) and learns its own outcome
    /// from this receiver.
    Lead(oneshot::Receiver<Outcome>),
}

/// What everyone can read without a lock.
#[derive(Default)]
pub(crate) struct Shared {
    /// The last write failed: requests are refused before they act until a write succeeds.
    pub broken: AtomicBool,
    /// Lines that could not be written; each one's request was answered with an error.
    pub unwritten: AtomicU64,
}

struct Queue {
    /// Lines as JSON objects (no chain, no newline), each with who waits for it.
    lines: Vec<(Vec<u8>, oneshot::Sender<Outcome>)>,
    /// Some request is responsible for writing what is queued.
    led: bool,
}

/// The sink and the chain: only whoever holds this lock writes.
struct Chain {
    sink: Sink,
    key: AuditKey,
    /// The link of the last line the sink took.
    written: Link,
    /// The link of the last line batched, to chain the next one from.
    batched: Link,
    bytes: Vec<u8>,
    waiting: Vec<oneshot::Sender<Outcome>>,
    /// The queue's previous allocation, swapped back in when a batch is taken, so that taking
    /// a batch does not leave the queue to grow a new one line by line.
    spare: Vec<(Vec<u8>, oneshot::Sender<Outcome>)>,
}

pub(crate) struct Writer {
    queue: Mutex<Queue>,
    chain: Mutex<Chain>,
    pub(crate) shared: Shared,
}

/// A queued line: whether its request leads, and where its outcome arrives.
pub(crate) struct Queued {
    pub(crate) leads: bool,
    pub(crate) outcome: oneshot::Receiver<Outcome>,
}

/// A poisoned lock only means a thread panicked while holding it; the queue and the chain are
/// consistent between statements, so go on with them.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Writer {
    pub(crate) fn new(sink: Sink, key: AuditKey, link: Link) -> Self {
        Self {
            queue: Mutex::new(Queue {
                lines: Vec::new(),
                led: false,
            }),
            chain: Mutex::new(Chain {
                sink,
                key,
                written: link,
                batched: link,
                bytes: Vec::with_capacity(BATCH_BYTES),
                waiting: Vec::new(),
                spare: Vec::new(),
            }),
            shared: Shared::default(),
        }
    }

    /// Queue one line. The first request to find nobody leading leads.
    pub(crate) fn enqueue(&self, payload: Vec<u8>) -> Queued {
        let (sender, outcome) = oneshot::channel();
        let (leads, full) = {
            let mut queue = lock(&self.queue);
            queue.lines.push((payload, sender));
            let leads = !std::mem::replace(&mut queue.led, true);
            (leads, queue.lines.len() >= QUEUE_LINES)
        };
        if full && !leads {
            drop(self.write_queued());
        }
        Queued { leads, outcome }
    }

    /// The leader's turn: write what is queued, then hand the role to the oldest request still
    /// queued, or leave it free when nothing is.
    pub(crate) fn lead(&self) {
        let _unwinding = LeaderGuard(self);
        loop {
            drop(self.write_queued());
            let mut queue = lock(&self.queue);
            let Some((_, waiter)) = queue.lines.first_mut() else {
                queue.led = false;
                return;
            };
            let (sender, receiver) = oneshot::channel();
            let previous = std::mem::replace(waiter, sender);
            if previous.send(Outcome::Lead(receiver)).is_ok() {
                return;
            }
            // That request is gone; its line is still queued, and this leader writes it.
        }
    }

    /// Write out and sync everything queued, then return.
    pub(crate) fn flush(&self) {
        let mut chain = self.write_queued();
        if let Err(e) = chain.sink.sync() {
            tracing::error!(error = %e, "cannot sync the audit log");
        }
    }

    /// Take the queue under the chain's lock (so that a flush waits for a batch already taken)
    /// and write it.
    fn write_queued(&self) -> MutexGuard<'_, Chain> {
        let mut chain = lock(&self.chain);
        let mut lines = std::mem::take(&mut chain.spare);
        std::mem::swap(&mut lines, &mut lock(&self.queue).lines);
        for (payload, waiter) in lines.drain(..) {
            chain.push(&payload, waiter, &self.shared);
        }
        chain.spare = lines;
        chain.write_out(&self.shared);
        chain
    }
}

/// Should a leader panic, the role must not stay taken with nobody to fill it: the lines
/// queued are answered as unwritten (their requests get an error, as for a failed write) and
/// the next request to queue leads.
struct LeaderGuard<'a>(&'a Writer);

impl Drop for LeaderGuard<'_> {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        let mut queue = lock(&self.0.queue);
        let lost = queue.lines.len() as u64;
        for (_, waiter) in queue.lines.drain(..) {
            let _ = waiter.send(Outcome::Written(false));
        }
        queue.led = false;
        self.0.shared.unwritten.fetch_add(lost, Ordering::Relaxed);
    }
}

impl Chain {
    fn push(&mut self, payload: &[u8], waiter: oneshot::Sender<Outcome>, shared: &Shared) {
        // Rotate between lines, never inside one, so every file holds whole lines.
        if self
            .sink
            .should_rotate(self.bytes.len(), payload.len() + chain::SEAL_OVERHEAD)
        {
            self.write_out(shared);
            self.sink.rotate();
        }
        self.batched = chain::seal(&self.key, &self.batched, payload, &mut self.bytes);
        self.waiting.push(waiter);
        if self.bytes.len() >= BATCH_BYTES {
            self.write_out(shared);
        }
    }

    /// Write the batch; every line's request learns the outcome. A failed batch is dropped
    /// whole and the chain goes on from the last line written, so the log never holds a line
    /// whose request was answered with an error, nor a gap. Each later batch tries the sink
    /// again, so the log recovers by itself when the disk has room again.
    fn write_out(&mut self, shared: &Shared) {
        if self.waiting.is_empty() {
            return;
        }
        let ok = match self.sink.write(&self.bytes) {
            Ok(()) => {
                self.written = self.batched;
                if shared.broken.swap(false, Ordering::Release) {
                    tracing::warn!("the audit log is writable again; serving requests");
                }
                true
            }
            Err(e) => {
                self.batched = self.written;
                let lost = self.waiting.len() as u64;
                let lost_before = shared.unwritten.fetch_add(lost, Ordering::Relaxed);
                if !shared.broken.swap(true, Ordering::Release) {
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
            let _ = waiter.send(Outcome::Written(ok));
        }
        self.bytes.clear();
    }
}
