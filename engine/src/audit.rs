//! The audit log: one JSON line per request, e.g.
//!
//! ```json
//! {"time":"2024-05-01T12:00:00.123Z","requestId":"…","principal":"arn:aws:iam::111122223333:user/app","operation":"Encrypt","keyArn":"arn:aws:kms:…:key/…","outcome":"success","errorCode":null,"sourceIp":"10.0.0.7"}
//! ```
//!
//! [`AuditEvent`] has no field that could carry plaintext, key material, ciphertext or a request
//! body, so none can reach the log.
//!
//! The request path only formats its line and hands it to a bounded channel; one writer thread
//! owns the sink, batches whatever is queued into one `write`, and pushes it out as soon as the
//! queue is momentarily empty, so under light load a line reaches the file within a
//! millisecond or so, and under heavy load lines go out in large batches.
//!
//! A full queue blocks the caller rather than dropping the event: an audit log that silently
//! loses entries under load is worse than a request that waits, and the writer drains tens of
//! thousands of lines between blocks, so a block only happens when the sink itself stalls (a
//! full or hung disk), in which case we prefer to stop serving over serving unaudited. Lines are
//! lost only if the sink fails to take them (a write error) or the writer thread is gone; both
//! are counted in [`AuditLog::dropped`] and logged.
//!
//! Lines are written to the OS (surviving `kill -9` of this process) but fsynced only by
//! [`AuditLog::flush`]; fsyncing each batch would cost more than the requests it records.

use std::fs::OpenOptions;
use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;

use serde::Serialize;
use time::format_description::FormatItem;
use time::macros::format_description;
use time::OffsetDateTime;

use crate::clock::Millis;
use crate::error::{KmsError, Result};

/// Lines the queue holds before `record` blocks: about a second of traffic at full load.
const QUEUE_LINES: usize = 32_768;
/// Write out once this much is batched even if more is queued, to bound memory.
const BATCH_BYTES: usize = 256 * 1024;

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
    /// The AWS error name (`KmsError::aws_type`) when the request failed; `None` means success.
    pub error_code: Option<&'a str>,
    pub source_ip: Option<IpAddr>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Line<'a> {
    time: &'a str,
    request_id: &'a str,
    principal: &'a str,
    operation: &'a str,
    key_arn: Option<&'a str>,
    outcome: &'static str,
    error_code: Option<&'a str>,
    source_ip: Option<IpAddr>,
}

impl AuditEvent<'_> {
    /// The JSON line, newline included.
    pub fn to_line(&self) -> Vec<u8> {
        let time = format_time(self.time);
        let line = Line {
            time: &time,
            request_id: self.request_id,
            principal: self.principal,
            operation: self.operation,
            key_arn: self.key_arn,
            outcome: if self.error_code.is_none() {
                "success"
            } else {
                "failure"
            },
            error_code: self.error_code,
            source_ip: self.source_ip,
        };
        let mut out = Vec::with_capacity(320);
        // Serializing borrowed strings and an IpAddr into a Vec cannot fail.
        if serde_json::to_writer(&mut out, &line).is_err() {
            out.clear();
            out.extend_from_slice(b"{\"outcome\":\"unformattable\"}");
        }
        out.push(b'\n');
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

enum Message {
    Line(Vec<u8>),
    /// Write out and sync everything queued before this, then answer.
    Flush(SyncSender<()>),
}

enum Sink {
    File(std::fs::File),
    Stdout(std::io::Stdout),
}

impl Sink {
    fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match self {
            Sink::File(f) => f.write_all(bytes),
            Sink::Stdout(s) => {
                let mut lock = s.lock();
                lock.write_all(bytes)?;
                lock.flush()
            }
        }
    }

    fn sync(&mut self) -> std::io::Result<()> {
        match self {
            Sink::File(f) => f.sync_data(),
            Sink::Stdout(s) => s.flush(),
        }
    }
}

struct Writer {
    sender: SyncSender<Message>,
    thread: JoinHandle<()>,
}

pub struct AuditLog {
    writer: Option<Writer>,
    /// Set when the log is meant to be on; `record` on a log whose writer is gone counts drops.
    enabled: bool,
    dropped: Arc<AtomicU64>,
}

impl AuditLog {
    /// Append to `path` (created 0640 if absent: no secrets, but not for every local user).
    pub fn to_file(path: &Path) -> Result<Self> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o640)
            .open(path)
            .map_err(|e| {
                KmsError::dependency(format!("cannot open audit log {}", path.display()), e)
            })?;
        Self::start(Sink::File(file))
            .map_err(|e| KmsError::dependency("cannot start the audit log writer thread", e))
    }

    pub fn to_stdout() -> Self {
        match Self::start(Sink::Stdout(std::io::stdout())) {
            Ok(log) => log,
            Err(e) => {
                // Only when the OS refuses a thread at start-up; every event is then counted
                // as dropped rather than written on the request path.
                tracing::error!(error = %e, "cannot start the audit log writer thread");
                Self {
                    writer: None,
                    enabled: true,
                    dropped: Arc::default(),
                }
            }
        }
    }

    pub fn disabled() -> Self {
        Self {
            writer: None,
            enabled: false,
            dropped: Arc::default(),
        }
    }

    fn start(sink: Sink) -> std::io::Result<Self> {
        let (sender, receiver) = std::sync::mpsc::sync_channel(QUEUE_LINES);
        let dropped = Arc::new(AtomicU64::new(0));
        let thread_dropped = Arc::clone(&dropped);
        let thread = std::thread::Builder::new()
            .name("kubekms-audit".into())
            .spawn(move || write_loop(sink, receiver, &thread_dropped))?;
        Ok(Self {
            writer: Some(Writer { sender, thread }),
            enabled: true,
            dropped,
        })
    }

    pub fn is_enabled(&self) -> bool {
        self.enabled
    }

    /// Queue one event. Formats on the caller's thread; blocks only if the queue is full.
    pub fn record(&self, event: AuditEvent<'_>) {
        if !self.enabled {
            return;
        }
        let Some(writer) = &self.writer else {
            self.count_drop(1);
            return;
        };
        if writer.sender.send(Message::Line(event.to_line())).is_err() {
            self.count_drop(1);
        }
    }

    /// Wait until every event recorded before this call (by any thread) is written and synced.
    pub fn flush(&self) {
        let Some(writer) = &self.writer else { return };
        let (ack, done) = std::sync::mpsc::sync_channel(1);
        if writer.sender.send(Message::Flush(ack)).is_ok() {
            // An error here means the writer thread is gone; its losses are already counted.
            let _ = done.recv();
        }
    }

    /// Events that could not be written (sink errors, or a writer thread that is gone).
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    fn count_drop(&self, n: u64) {
        if self.dropped.fetch_add(n, Ordering::Relaxed) == 0 {
            tracing::error!("audit log writer is gone; audit events are being lost");
        }
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

const COALESCE: std::time::Duration = std::time::Duration::from_millis(1);

fn write_loop(mut sink: Sink, receiver: Receiver<Message>, dropped: &AtomicU64) {
    let mut batch = Batch {
        bytes: Vec::with_capacity(BATCH_BYTES),
        lines: 0,
    };
    // Block for the first message, then take whatever else is already queued without waiting.
    while let Ok(first) = receiver.recv() {
        let mut next = Some(first);
        while let Some(message) = next {
            match message {
                Message::Line(line) => {
                    batch.bytes.extend_from_slice(&line);
                    batch.lines += 1;
                    if batch.bytes.len() >= BATCH_BYTES {
                        batch.write_out(&mut sink, dropped);
                    }
                }
                Message::Flush(ack) => {
                    batch.write_out(&mut sink, dropped);
                    if let Err(e) = sink.sync() {
                        tracing::error!(error = %e, "cannot sync the audit log");
                    }
                    let _ = ack.send(());
                }
            }
            // Empty or disconnected: write out what we have either way.
            next = receiver.try_recv().ok();
        }
        batch.write_out(&mut sink, dropped);
        // Under load, waking this thread for every line costs more than formatting it. A short
        // pause lets lines gather, so one wake-up and one write(2) serve many requests; a line
        // still reaches the file within about a millisecond.
        std::thread::sleep(COALESCE);
    }
    batch.write_out(&mut sink, dropped);
    let _ = sink.sync();
}

/// Our own batch rather than a `BufWriter`: on a write error we know exactly how many lines
/// were lost and can count them.
struct Batch {
    bytes: Vec<u8>,
    lines: u64,
}

impl Batch {
    fn write_out(&mut self, sink: &mut Sink, dropped: &AtomicU64) {
        if self.bytes.is_empty() {
            return;
        }
        if let Err(e) = sink.write_all(&self.bytes) {
            let lost_before = dropped.fetch_add(self.lines, Ordering::Relaxed);
            let lost = self.lines;
            tracing::error!(error = %e, lost, lost_before, "audit log write failed");
        }
        self.bytes.clear();
        self.lines = 0;
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use serde_json::Value;

    use super::*;

    fn event<'a>(request_id: &'a str, error_code: Option<&'a str>) -> AuditEvent<'a> {
        AuditEvent {
            time: 1_714_564_800_123,
            request_id,
            principal: "arn:aws:iam::111122223333:user/app",
            operation: "Encrypt",
            key_arn: Some("arn:aws:kms:eu-west-1:111122223333:key/k1"),
            error_code,
            source_ip: Some("10.0.0.7".parse().unwrap()),
        }
    }

    fn lines(path: &Path) -> Vec<Value> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[test]
    fn line_has_exactly_the_documented_fields() {
        let ok: Value = serde_json::from_slice(&event("r1", None).to_line()).unwrap();
        let mut keys: Vec<_> = ok.as_object().unwrap().keys().cloned().collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                "errorCode",
                "keyArn",
                "operation",
                "outcome",
                "principal",
                "requestId",
                "sourceIp",
                "time"
            ]
        );
        assert_eq!(ok["time"], "2024-05-01T12:00:00.123Z");
        assert_eq!(ok["requestId"], "r1");
        assert_eq!(ok["principal"], "arn:aws:iam::111122223333:user/app");
        assert_eq!(ok["operation"], "Encrypt");
        assert_eq!(ok["keyArn"], "arn:aws:kms:eu-west-1:111122223333:key/k1");
        assert_eq!(ok["outcome"], "success");
        assert_eq!(ok["errorCode"], Value::Null);
        assert_eq!(ok["sourceIp"], "10.0.0.7");

        let mut failed = event("r2", Some("NotFoundException"));
        failed.key_arn = None;
        failed.source_ip = None;
        failed.time = 5; // 1970-01-01T00:00:00.005Z
        let bad: Value = serde_json::from_slice(&failed.to_line()).unwrap();
        assert_eq!(bad["outcome"], "failure");
        assert_eq!(bad["errorCode"], "NotFoundException");
        assert_eq!(bad["keyArn"], Value::Null);
        assert_eq!(bad["sourceIp"], Value::Null);
        assert_eq!(bad["time"], "1970-01-01T00:00:00.005Z");
    }

    #[test]
    fn hostile_strings_stay_inside_their_field() {
        let line = AuditEvent {
            operation: "Encrypt\n{\"outcome\":\"success\"}",
            ..event("r\"1", Some("AccessDeniedException"))
        }
        .to_line();
        assert_eq!(line.iter().filter(|&&b| b == b'\n').count(), 1);
        let v: Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(v["requestId"], "r\"1");
        assert_eq!(v["outcome"], "failure");
    }

    #[test]
    fn file_gets_every_line_in_order_after_flush() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let log = AuditLog::to_file(&path).unwrap();
        let ids: Vec<String> = (0..5_000).map(|i| format!("req-{i}")).collect();
        for (i, id) in ids.iter().enumerate() {
            let code = (i % 7 == 0).then_some("DisabledException");
            log.record(event(id, code));
        }
        log.flush();
        let got = lines(&path);
        assert_eq!(got.len(), ids.len());
        for (i, (line, id)) in got.iter().zip(&ids).enumerate() {
            assert_eq!(line["requestId"], id.as_str());
            let failed = i % 7 == 0;
            assert_eq!(line["outcome"], if failed { "failure" } else { "success" });
        }
        assert_eq!(log.dropped(), 0);
    }

    #[test]
    fn appends_to_an_existing_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        {
            let log = AuditLog::to_file(&path).unwrap();
            log.record(event("first", None));
        }
        let log = AuditLog::to_file(&path).unwrap();
        log.record(event("second", None));
        log.flush();
        let ids: Vec<_> = lines(&path)
            .iter()
            .map(|l| l["requestId"].clone())
            .collect();
        assert_eq!(ids, ["first", "second"]);
    }

    #[test]
    fn lines_reach_the_file_without_an_explicit_flush() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let log = AuditLog::to_file(&path).unwrap();
        log.record(event("lonely", None));
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let text = std::fs::read_to_string(&path).unwrap();
            if text.ends_with('\n') {
                let v: Value = serde_json::from_str(text.trim_end()).unwrap();
                assert_eq!(v["requestId"], "lonely");
                break;
            }
            assert!(Instant::now() < deadline, "line never reached the file");
            std::thread::sleep(Duration::from_millis(1));
        }
        drop(log);
    }

    #[test]
    fn dropping_the_log_writes_everything_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let log = AuditLog::to_file(&path).unwrap();
        for i in 0..1_000 {
            log.record(event(&format!("r{i}"), None));
        }
        drop(log);
        assert_eq!(lines(&path).len(), 1_000);
    }

    #[test]
    fn concurrent_writers_keep_their_own_order_and_lose_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let log = Arc::new(AuditLog::to_file(&path).unwrap());
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let log = Arc::clone(&log);
                std::thread::spawn(move || {
                    for i in 0..20_000 {
                        log.record(event(&format!("{t}-{i}"), None));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        log.flush();
        let mut next = [0usize; 4];
        let got = lines(&path);
        assert_eq!(got.len(), 80_000);
        for line in got {
            let id = line["requestId"].as_str().unwrap();
            let (t, i) = id.split_once('-').unwrap();
            let (t, i): (usize, usize) = (t.parse().unwrap(), i.parse().unwrap());
            assert_eq!(i, next[t], "thread {t} out of order");
            next[t] += 1;
        }
        assert_eq!(log.dropped(), 0);
    }

    #[test]
    fn disabled_log_accepts_and_ignores_everything() {
        let log = AuditLog::disabled();
        assert!(!log.is_enabled());
        log.record(event("r", None));
        log.flush();
        assert_eq!(log.dropped(), 0);
    }

    #[test]
    fn write_errors_are_counted_not_hidden() {
        // /dev/full accepts the open and fails every write with ENOSPC.
        let Ok(log) = AuditLog::to_file(Path::new("/dev/full")) else {
            return;
        };
        for i in 0..10 {
            log.record(event(&format!("r{i}"), None));
        }
        log.flush();
        assert_eq!(log.dropped(), 10);
    }
}
