//! The audit log: one JSON line per request, chained, e.g.
//!
//! ```json
//! {"time":"2024-05-01T12:00:00.123Z","requestId":"…","principal":"arn:aws:iam::111122223333:user/app","operation":"Encrypt","keyArn":"arn:aws:kms:…:key/…","encryptionContextKeys":["tenant"],"outcome":"success","errorCode":null,"sourceIp":"10.0.0.7","chain":"5f0c…"}
//! ```
//!
//! [`AuditEvent`] has no field that could carry plaintext, key material, ciphertext, an
//! encryption context value or a request body, so none can reach the log.
//!
//! **Tamper-evident.** `chain` links every line to the one before it under a key derived from
//! the root key, across restarts and rotated files (`chain.rs` says how, and what it cannot
//! show); [`verify_files`] checks it (`kubekms-engine audit verify`).
//!
//! **Audit or nothing.** A request is answered only once its line is written to the OS
//! ([`AuditLog::record`] returns a [`Pending`] the handler awaits); if the write fails, the
//! request is answered with an error instead of its result. Once a write has failed, requests
//! are refused before they act ([`AuditLog::check`]) until a write succeeds again: the refusals'
//! own lines are the retries, so the log recovers by itself when the disk has room again. An
//! operation can still act unaudited when the sink fails between its check and its line (its
//! client then gets an error, not the result).
//!
//! **Cheap on the request path.** A request formats its line and hands it to a bounded channel;
//! one writer thread owns the sink, chains and batches whatever is queued into one `write`, and
//! wakes each waiting request once (group commit). A full queue blocks the caller: the writer
//! drains tens of thousands of lines between blocks, so a block only happens when the sink
//! itself stalls (a hung disk), in which case we prefer to stop serving over serving unaudited.
//!
//! Lines are written to the OS (surviving `kill -9` of this process) but fsynced only by
//! [`AuditLog::flush`] and at rotation; fsyncing each batch would cost more than the requests it
//! records. A file sink rotates by size (`audit.log` → `audit.log.<N>`); stdout is chained from
//! zero at each start and never rotated.

mod chain;
mod sink;
mod writer;

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::mpsc::SyncSender;
use std::sync::Arc;
use std::thread::JoinHandle;

use serde::Serialize;
use time::format_description::FormatItem;
use time::macros::format_description;
use time::OffsetDateTime;
use tokio::sync::oneshot;

pub use self::chain::{verify_files, AuditKey, Verification};
use self::sink::{FileSink, Sink};
use self::writer::{Message, Shared};
use crate::clock::Millis;
use crate::error::{KmsError, Result};

/// Lines the queue holds before `record` blocks: about a second of traffic at full load.
const QUEUE_LINES: usize = 32_768;

/// Size at which a file sink is rotated unless told otherwise (`--audit-max-bytes`).
pub const DEFAULT_MAX_BYTES: u64 = 100 * 1024 * 1024;

/// What a client is told when its request's line cannot be written.
const UNWRITABLE: &str = "the audit log cannot be written";

const TIME_FORMAT: &[FormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");

/// What one request did. Borrowed, so building one costs nothing.
#[derive(Clone, Copy, Debug)]
pub struct AuditEvent<'a> {
    /// When the request was received.
    pub time: Millis,
    pub request_id: &'a str,
    /// The caller's ARN (empty when the request failed before authentication).
    pub principal: &'a str,
    /// The operation name, e.g. `Encrypt` (as the client sent it, for unknown operations).
    pub operation: &'a str,
    pub key_arn: Option<&'a str>,
    /// The keys, never the values, of the request's encryption context: which context a
    /// request used is worth auditing, its values may be sensitive. Empty until the handler
    /// passes them (it does not decode the operation's body itself).
    pub encryption_context_keys: &'a [&'a str],
    /// The AWS error name (`KmsError::aws_type`) when the request failed; `None` means success.
    pub error_code: Option<&'a str>,
    pub source_ip: Option<IpAddr>,
}

/// The fields in the order they appear; `chain` is appended after them when the line is
/// written.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Line<'a> {
    time: &'a str,
    request_id: &'a str,
    principal: &'a str,
    operation: &'a str,
    key_arn: Option<&'a str>,
    encryption_context_keys: &'a [&'a str],
    outcome: &'static str,
    error_code: Option<&'a str>,
    source_ip: Option<IpAddr>,
}

impl AuditEvent<'_> {
    /// The JSON object, without the chain and the newline the writer adds.
    fn encode(&self) -> Vec<u8> {
        let time = format_time(self.time);
        let line = Line {
            time: &time,
            request_id: self.request_id,
            principal: self.principal,
            operation: self.operation,
            key_arn: self.key_arn,
            encryption_context_keys: self.encryption_context_keys,
            outcome: if self.error_code.is_none() {
                "success"
            } else {
                "failure"
            },
            error_code: self.error_code,
            source_ip: self.source_ip,
        };
        let mut out = Vec::with_capacity(400);
        // Serializing borrowed strings and an IpAddr into a Vec cannot fail.
        if serde_json::to_writer(&mut out, &line).is_err() {
            out.clear();
            out.extend_from_slice(b"{\"outcome\":\"unformattable\"}");
        }
        out
    }
}

fn format_time(millis: Millis) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(millis) * 1_000_000)
        .ok()
        .and_then(|t| t.format(TIME_FORMAT).ok())
        // Only reachable with a clock beyond year 9999; keep the line, mark the time.
        .unwrap_or_else(|| format!("invalid-time:{millis}"))
}

/// The files of the log whose current file is `path`, in chain order: `path.1`, `path.2`, …
/// (by number), then `path` itself if it exists.
pub fn log_files(path: &Path) -> Result<Vec<PathBuf>> {
    let rotated = sink::rotated_files(path).map_err(|e| {
        KmsError::dependency(
            format!("cannot list the rotated files of {}", path.display()),
            e,
        )
    })?;
    let mut files: Vec<PathBuf> = rotated.into_iter().map(|(_, p)| p).collect();
    if path.exists() {
        files.push(path.to_owned());
    }
    Ok(files)
}

/// A request's line on its way to the sink.
#[must_use = "a request is answered only once its audit line is written"]
pub struct Pending(PendingState);

enum PendingState {
    Settled(bool),
    Queued(oneshot::Receiver<bool>),
}

impl Pending {
    /// Completes once the line is written to the OS; fails if it cannot be.
    pub async fn written(self) -> Result<()> {
        let ok = match self.0 {
            PendingState::Settled(ok) => ok,
            // A dropped sender means the writer thread is gone: the line was not written.
            PendingState::Queued(rx) => rx.await.unwrap_or(false),
        };
        if ok {
            Ok(())
        } else {
            Err(KmsError::internal(UNWRITABLE))
        }
    }
}

struct Writer {
    sender: SyncSender<Message>,
    thread: JoinHandle<()>,
}

pub struct AuditLog {
    writer: Option<Writer>,
    /// Set when the log is meant to be on; with no writer it then refuses everything.
    enabled: bool,
    shared: Arc<Shared>,
}

impl AuditLog {
    /// Append to `path` (created 0640 if absent), continuing its chain; rotate it when it would
    /// grow past `max_bytes` (0: never).
    pub fn to_file(path: &Path, key: AuditKey, max_bytes: u64) -> Result<Self> {
        let (sink, link) = FileSink::open(path, max_bytes)?;
        Self::start(Sink::File(sink), key, link)
            .map_err(|e| KmsError::dependency("cannot start the audit log writer thread", e))
    }

    pub fn to_stdout(key: AuditKey) -> Self {
        match Self::start(Sink::Stdout(std::io::stdout()), key, chain::GENESIS) {
            Ok(log) => log,
            Err(e) => {
                // Only when the OS refuses a thread at start-up; every request is then refused
                // rather than served unaudited.
                tracing::error!(error = %e, "cannot start the audit log writer thread");
                Self {
                    writer: None,
                    enabled: true,
                    shared: Arc::default(),
                }
            }
        }
    }

    #[cfg(test)]
    fn to_writer(writer: impl std::io::Write + Send + 'static, key: AuditKey) -> Self {
        match Self::start(Sink::Test(Box::new(writer)), key, chain::GENESIS) {
            Ok(log) => log,
            Err(e) => panic!("writer thread: {e}"),
        }
    }

    pub fn disabled() -> Self {
        Self {
            writer: None,
            enabled: false,
            shared: Arc::default(),
        }
    }

    fn start(sink: Sink, key: AuditKey, link: chain::Link) -> std::io::Result<Self> {
        let (sender, receiver) = std::sync::mpsc::sync_channel(QUEUE_LINES);
        let shared = Arc::new(Shared::default());
        let thread_shared = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("kubekms-audit".into())
            .spawn(move || writer::run(sink, key, link, &receiver, &thread_shared))?;
        Ok(Self {
            writer: Some(Writer { sender, thread }),
            enabled: true,
            shared,
        })
    }

    pub fn is_enabled(&self) -> bool {
        self.enabled
    }

    /// Fails when the log is known to be unwritable (the last write failed): a request is then
    /// refused before it acts. One atomic load.
    pub fn check(&self) -> Result<()> {
        if !self.enabled {
            return Ok(());
        }
        if self.writer.is_none() || self.shared.broken.load(Ordering::Acquire) {
            return Err(KmsError::internal(UNWRITABLE));
        }
        Ok(())
    }

    /// Queue one event; await the result to know it is written. Formats on the caller's
    /// thread; blocks only if the queue is full.
    pub fn record(&self, event: AuditEvent<'_>) -> Pending {
        if !self.enabled {
            return Pending(PendingState::Settled(true));
        }
        let Some(writer) = &self.writer else {
            self.shared.unwritten.fetch_add(1, Ordering::Relaxed);
            return Pending(PendingState::Settled(false));
        };
        let (written, rx) = oneshot::channel();
        let message = Message::Line {
            payload: event.encode(),
            written,
        };
        if writer.sender.send(message).is_err() {
            if self.shared.unwritten.fetch_add(1, Ordering::Relaxed) == 0 {
                tracing::error!("the audit log writer is gone; refusing requests");
            }
            return Pending(PendingState::Settled(false));
        }
        Pending(PendingState::Queued(rx))
    }

    /// Wait until every event recorded before this call (by any thread) is written and synced.
    pub fn flush(&self) {
        let Some(writer) = &self.writer else { return };
        let (ack, done) = std::sync::mpsc::sync_channel(1);
        if writer.sender.send(Message::Flush(ack)).is_ok() {
            // An error here means the writer thread is gone; its requests were refused.
            let _ = done.recv();
        }
    }

    /// Lines that could not be written (sink errors, or a writer thread that is gone); the
    /// request of each was answered with an error, not its result.
    pub fn unwritten(&self) -> u64 {
        self.shared.unwritten.load(Ordering::Relaxed)
    }
}

impl Drop for AuditLog {
    /// Closing the queue lets the writer drain it and exit; waiting for it means nothing
    /// recorded before shutdown is lost.
    fn drop(&mut self) {
        if let Some(Writer { sender, thread }) = self.writer.take() {
            drop(sender);
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests;
