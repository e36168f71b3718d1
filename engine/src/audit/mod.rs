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
//! **Cheap on the request path.** A request formats its line and queues it; one queued request
//! at a time, the leader, chains whatever is queued and writes it in one `write` (group commit
//! without a writer thread: `writer.rs` says why and how the role moves on). A queue that grows
//! past about a second of traffic means the sink has stalled (a hung disk); requests then write
//! it themselves and block, as we prefer to stop serving over serving unaudited.
//!
//! Lines are written to the OS (surviving `kill -9` of this process) but fsynced only by
//! [`AuditLog::flush`], at rotation and, for a file, by a background thread after every few
//! MiB; fsyncing each batch would cost more than the requests it records. A file sink rotates by size (`audit.log` → `audit.log.<N>`); stdout is chained from
//! zero at each start and never rotated.

mod chain;
mod sink;
mod writer;

use std::cell::RefCell;
use std::io::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use time::format_description::FormatItem;
use time::macros::format_description;
use time::OffsetDateTime;
use tokio::sync::oneshot;

pub use self::chain::{verify_files, AuditKey, Verification};
use self::sink::{FileSink, Sink};
use self::writer::{Outcome, Queued, Writer};
use crate::clock::Millis;
use crate::error::{KmsError, Result};

/// Size at which a file sink is rotated unless told otherwise (`--audit-max-bytes`).
pub const DEFAULT_MAX_BYTES: u64 = 100 * 1024 * 1024;

/// What a client is told when its request's line cannot be written.
const UNWRITABLE: &str = "the audit log cannot be written";

const SECOND_FORMAT: &[FormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]");

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

impl AuditEvent<'_> {
    /// The JSON object, without the chain and the newline the writer adds: the fields in the
    /// order documented above. Written by hand rather than by serde_json, which escapes every
    /// string byte by byte (that showed in profiles): a string is copied whole unless it needs
    /// escaping, and then serde_json escapes it, so the bytes are the same either way (a test
    /// checks them against serde_json's encoding of the same fields).
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(400);
        out.extend_from_slice(b"{\"time\":\"");
        push_time(&mut out, self.time);
        out.extend_from_slice(b"\",\"requestId\":");
        push_string(&mut out, self.request_id);
        out.extend_from_slice(b",\"principal\":");
        push_string(&mut out, self.principal);
        out.extend_from_slice(b",\"operation\":");
        push_string(&mut out, self.operation);
        out.extend_from_slice(b",\"keyArn\":");
        push_optional_string(&mut out, self.key_arn);
        out.extend_from_slice(b",\"encryptionContextKeys\":[");
        for (i, key) in self.encryption_context_keys.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            push_string(&mut out, key);
        }
        out.extend_from_slice(match self.error_code {
            None => b"],\"outcome\":\"success\",\"errorCode\":",
            Some(_) => b"],\"outcome\":\"failure\",\"errorCode\":",
        });
        push_optional_string(&mut out, self.error_code);
        out.extend_from_slice(b",\"sourceIp\":");
        match self.source_ip {
            // An address's text has nothing to escape; writing to a Vec cannot fail.
            Some(ip) => {
                out.push(b'"');
                let _ = write!(out, "{ip}");
                out.push(b'"');
            }
            None => out.extend_from_slice(b"null"),
        }
        out.push(b'}');
        out
    }
}

/// `s` as a JSON string, escaped as serde_json escapes it.
fn push_string(out: &mut Vec<u8>, s: &str) {
    // What serde_json escapes: the two that end a string or an escape, and control characters.
    // A fold without an early exit, which the compiler turns into a vector loop.
    let plain = s.bytes().fold(true, |plain, b| {
        plain & (b >= 0x20) & (b != b'"') & (b != b'\\')
    });
    if plain {
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    } else if serde_json::to_writer(&mut *out, s).is_err() {
        // Serializing a string into a Vec cannot fail; were it to, the field stays valid JSON.
        out.extend_from_slice(b"\"\"");
    }
}

fn push_optional_string(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => push_string(out, s),
        None => out.extend_from_slice(b"null"),
    }
}

/// `2024-05-01T12:00:00.123Z`. The date and time of day are formatted once per second per
/// thread: formatting them for every line showed in profiles.
fn push_time(out: &mut Vec<u8>, millis: Millis) {
    thread_local! {
        static SECOND: RefCell<(i64, String)> = const { RefCell::new((i64::MIN, String::new())) };
    }
    let (second, milli) = (millis.div_euclid(1000), millis.rem_euclid(1000));
    SECOND.with_borrow_mut(|(cached, text)| {
        if *cached != second {
            match OffsetDateTime::from_unix_timestamp(second)
                .ok()
                .and_then(|t| t.format(SECOND_FORMAT).ok())
            {
                Some(formatted) => (*cached, *text) = (second, formatted),
                // Only reachable with a clock beyond year 9999; keep the line, mark the time.
                None => {
                    let _ = write!(out, "invalid-time:{millis}");
                    return;
                }
            }
        }
        out.extend_from_slice(text.as_bytes());
        out.push(b'.');
        for digit in [milli / 100, milli / 10 % 10, milli % 10] {
            out.push(b'0' + digit as u8);
        }
        out.push(b'Z');
    })
}

#[cfg(test)]
fn format_time(millis: Millis) -> String {
    let mut out = Vec::new();
    push_time(&mut out, millis);
    String::from_utf8_lossy(&out).into_owned()
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
pub struct Pending<'a>(PendingState<'a>);

enum PendingState<'a> {
    Settled(bool),
    /// In the queue; `leads` when this request is the one to write it.
    Queued {
        writer: &'a Writer,
        leads: bool,
        outcome: oneshot::Receiver<Outcome>,
    },
}

impl Pending<'_> {
    /// Completes once the line is written to the OS; fails if it cannot be.
    pub async fn written(mut self) -> Result<()> {
        let ok = match &mut self.0 {
            PendingState::Settled(ok) => *ok,
            PendingState::Queued {
                writer,
                leads,
                outcome,
            } => loop {
                if *leads {
                    // Let the requests already runnable on this thread queue their lines
                    // first, so they share this write. If this future is dropped meanwhile,
                    // `Drop` writes.
                    tokio::task::yield_now().await;
                    writer.lead();
                    *leads = false;
                }
                match (&mut *outcome).await {
                    Ok(Outcome::Written(ok)) => break ok,
                    Ok(Outcome::Lead(next)) => (*outcome, *leads) = (next, true),
                    // The writer dropped the line unanswered: it was not written.
                    Err(_) => break false,
                }
            },
        };
        self.0 = PendingState::Settled(ok);
        if ok {
            Ok(())
        } else {
            Err(KmsError::internal(UNWRITABLE))
        }
    }
}

impl Drop for Pending<'_> {
    /// A request that holds the leader's role when it stops waiting (its client went away, or
    /// the caller never awaited) writes the queue now, so no line is left without a leader.
    fn drop(&mut self) {
        let PendingState::Queued {
            writer,
            leads,
            outcome,
        } = &mut self.0
        else {
            return;
        };
        // Unwinding from a leader's panic: its guard has freed the role already.
        if std::thread::panicking() {
            return;
        }
        // Closed first: a hand-off sent after this fails and its sender keeps the role; one
        // sent before is read here.
        outcome.close();
        if *leads || matches!(outcome.try_recv(), Ok(Outcome::Lead(_))) {
            writer.lead();
        }
    }
}

/// The audit log, or none (`disabled`: every request is served without a line).
pub struct AuditLog {
    writer: Option<Writer>,
}

impl AuditLog {
    /// Append to `path` (created 0640 if absent), continuing its chain; rotate it when it would
    /// grow past `max_bytes` (0: never).
    pub fn to_file(path: &Path, key: AuditKey, max_bytes: u64) -> Result<Self> {
        let (sink, link) = FileSink::open(path, max_bytes)?;
        Ok(Self::start(Sink::File(sink), key, link))
    }

    pub fn to_stdout(key: AuditKey) -> Self {
        Self::start(Sink::Stdout(std::io::stdout()), key, chain::GENESIS)
    }

    #[cfg(test)]
    fn to_writer(writer: impl std::io::Write + Send + 'static, key: AuditKey) -> Self {
        Self::start(Sink::Test(Box::new(writer)), key, chain::GENESIS)
    }

    pub fn disabled() -> Self {
        Self { writer: None }
    }

    fn start(sink: Sink, key: AuditKey, link: chain::Link) -> Self {
        Self {
            writer: Some(Writer::new(sink, key, link)),
        }
    }

    pub fn is_enabled(&self) -> bool {
        self.writer.is_some()
    }

    /// Fails when the log is known to be unwritable (the last write failed): a request is then
    /// refused before it acts. One atomic load.
    pub fn check(&self) -> Result<()> {
        match &self.writer {
            Some(w) if w.shared.broken.load(Ordering::Acquire) => {
                Err(KmsError::internal(UNWRITABLE))
            }
            _ => Ok(()),
        }
    }

    /// Queue one event; await the result to know it is written. Formats on the caller's
    /// thread; writes on it only when the queue is full (the sink has stalled).
    pub fn record(&self, event: AuditEvent<'_>) -> Pending<'_> {
        let Some(writer) = &self.writer else {
            return Pending(PendingState::Settled(true));
        };
        let Queued { leads, outcome } = writer.enqueue(event.encode());
        Pending(PendingState::Queued {
            writer,
            leads,
            outcome,
        })
    }

    /// Wait until every event recorded before this call (by any thread) is written and synced.
    pub fn flush(&self) {
        if let Some(writer) = &self.writer {
            writer.flush();
        }
    }

    /// Lines that could not be written (sink errors); the request of each was answered with an
    /// error, not its result.
    pub fn unwritten(&self) -> u64 {
        self.writer
            .as_ref()
            .map_or(0, |w| w.shared.unwritten.load(Ordering::Relaxed))
    }
}

impl Drop for AuditLog {
    /// Nothing recorded before shutdown is lost.
    fn drop(&mut self) {
        self.flush();
    }
}

#[cfg(test)]
mod tests;
