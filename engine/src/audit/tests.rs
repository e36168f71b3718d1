use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use super::*;

const EC_KEYS: &[&str] = &["tenant", "purpose"];

fn event<'a>(request_id: &'a str, error_code: Option<&'a str>) -> AuditEvent<'a> {
    AuditEvent {
        time: 1_714_564_800_123,
        request_id,
        principal: "arn:aws:iam::111122223333:user/app",
        operation: "Encrypt",
        key_arn: Some("arn:aws:kms:eu-west-1:111122223333:key/k1"),
        encryption_context_keys: EC_KEYS,
        error_code,
        source_ip: Some("10.0.0.7".parse().unwrap()),
    }
}

fn key() -> AuditKey {
    AuditKey::for_tests(7)
}

/// The line as the writer writes it, chained from the start of a log.
fn sealed(event: &AuditEvent<'_>) -> Vec<u8> {
    let mut out = Vec::new();
    chain::seal(&key(), &chain::GENESIS, &event.encode(), &mut out);
    out
}

fn lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// `count` events from a log that rotates at `max_bytes`, closed again; the request ids are
/// `{prefix}{i}`.
fn write_log(path: &Path, prefix: &str, count: usize, max_bytes: u64) {
    let log = AuditLog::to_file(path, key(), max_bytes).unwrap();
    for i in 0..count {
        let id = format!("{prefix}{i}");
        drop(log.record(event(&id, None)));
    }
    drop(log);
}

fn verify(path: &Path) -> Verification {
    verify_files(&key(), &log_files(path).unwrap()).unwrap()
}

fn intact(files: usize, lines: u64) -> Verification {
    Verification::Intact {
        files,
        lines,
        torn_tail: None,
    }
}

#[track_caller]
fn assert_broken_at(verification: Verification, file: &Path, line: u64) {
    match verification {
        Verification::Broken { path, line: l, .. } => {
            assert_eq!((path.as_path(), l), (file, line));
        }
        other => panic!(
            "expected a break at {}:{line}, got {other:?}",
            file.display()
        ),
    }
}

/// The file's lines, newlines included, to edit and write back.
fn raw_lines(path: &Path) -> Vec<Vec<u8>> {
    std::fs::read(path)
        .unwrap()
        .split_inclusive(|&b| b == b'\n')
        .map(<[u8]>::to_vec)
        .collect()
}

fn write_lines(path: &Path, lines: &[Vec<u8>]) {
    std::fs::write(path, lines.concat()).unwrap();
}

#[test]
fn line_has_exactly_the_documented_fields() {
    let line = sealed(&event("r1", None));
    assert_eq!(line.last(), Some(&b'\n'));
    let ok: Value = serde_json::from_slice(&line).unwrap();
    let mut keys: Vec<_> = ok.as_object().unwrap().keys().cloned().collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "chain",
            "encryptionContextKeys",
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
    assert_eq!(
        ok["encryptionContextKeys"],
        serde_json::json!(["tenant", "purpose"])
    );
    assert_eq!(ok["outcome"], "success");
    assert_eq!(ok["errorCode"], Value::Null);
    assert_eq!(ok["sourceIp"], "10.0.0.7");
    let chain = ok["chain"].as_str().unwrap();
    assert_eq!(chain.len(), 64);
    assert!(chain.bytes().all(|b| b.is_ascii_hexdigit()));

    let mut failed = event("r2", Some("NotFoundException"));
    failed.key_arn = None;
    failed.source_ip = None;
    failed.encryption_context_keys = &[];
    failed.time = 5; // 1970-01-01T00:00:00.005Z
    let bad: Value = serde_json::from_slice(&sealed(&failed)).unwrap();
    assert_eq!(bad["outcome"], "failure");
    assert_eq!(bad["errorCode"], "NotFoundException");
    assert_eq!(bad["keyArn"], Value::Null);
    assert_eq!(bad["encryptionContextKeys"], serde_json::json!([]));
    assert_eq!(bad["sourceIp"], Value::Null);
    assert_eq!(bad["time"], "1970-01-01T00:00:00.005Z");
}

/// The line as serde_json writes the same fields in the same order (how lines were encoded
/// before `AuditEvent::encode` wrote them by hand).
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct SerdeLine<'a> {
    time: String,
    request_id: &'a str,
    principal: &'a str,
    operation: &'a str,
    key_arn: Option<&'a str>,
    encryption_context_keys: &'a [&'a str],
    outcome: &'static str,
    error_code: Option<&'a str>,
    source_ip: Option<IpAddr>,
}

#[test]
fn lines_are_byte_for_byte_what_serde_json_writes() {
    // DEL and non-ASCII are not escaped by serde_json: alone, they take the copy-whole path.
    let hostile = [
        "a\",\"chain\":\"00",
        "b\n{}",
        "\\",
        "\u{1}\u{1f}\u{7f}",
        "\u{7f}",
        "a\u{7f}b",
        "é ü 鍵",
    ];
    let mut events = vec![
        event("r1", None),
        AuditEvent {
            key_arn: None,
            source_ip: None,
            encryption_context_keys: &[],
            time: 5,
            ..event("r2", Some("NotFoundException"))
        },
        AuditEvent {
            principal: "",
            operation: "Encrypt\n{\"outcome\":\"success\"}\t\r",
            encryption_context_keys: &hostile,
            source_ip: Some("2001:db8::7".parse().unwrap()),
            ..event("r\"3\\", Some("AccessDeniedException"))
        },
        AuditEvent {
            time: i64::MAX,
            encryption_context_keys: &["only"],
            ..event("r4", None)
        },
    ];
    for text in hostile {
        events.push(AuditEvent {
            request_id: text,
            principal: text,
            key_arn: Some(text),
            error_code: Some(text),
            ..event("r5", None)
        });
    }
    for e in &events {
        let reference = serde_json::to_vec(&SerdeLine {
            time: format_time(e.time),
            request_id: e.request_id,
            principal: e.principal,
            operation: e.operation,
            key_arn: e.key_arn,
            encryption_context_keys: e.encryption_context_keys,
            outcome: if e.error_code.is_none() {
                "success"
            } else {
                "failure"
            },
            error_code: e.error_code,
            source_ip: e.source_ip,
        })
        .unwrap();
        assert_eq!(
            String::from_utf8(e.encode()).unwrap(),
            String::from_utf8(reference).unwrap()
        );
    }
}

#[test]
fn times_are_formatted_to_the_millisecond_across_seconds() {
    assert_eq!(format_time(1_714_564_800_123), "2024-05-01T12:00:00.123Z");
    assert_eq!(format_time(1_714_564_800_999), "2024-05-01T12:00:00.999Z");
    assert_eq!(format_time(1_714_564_801_005), "2024-05-01T12:00:01.005Z");
    // Back to an earlier second (another request's clock reading): not the cached one.
    assert_eq!(format_time(1_714_564_800_040), "2024-05-01T12:00:00.040Z");
    assert_eq!(format_time(0), "1970-01-01T00:00:00.000Z");
    assert!(format_time(i64::MAX).starts_with("invalid-time:"));
}

#[test]
fn hostile_strings_stay_inside_their_field() {
    let hostile = ["a\",\"chain\":\"00", "b\n{}"];
    let line = sealed(&AuditEvent {
        operation: "Encrypt\n{\"outcome\":\"success\"}",
        encryption_context_keys: &hostile,
        ..event("r\"1", Some("AccessDeniedException"))
    });
    assert_eq!(line.iter().filter(|&&b| b == b'\n').count(), 1);
    let v: Value = serde_json::from_slice(&line).unwrap();
    assert_eq!(v["requestId"], "r\"1");
    assert_eq!(v["outcome"], "failure");
    assert_eq!(v["encryptionContextKeys"][0], hostile[0]);
    assert_eq!(v["chain"].as_str().unwrap().len(), 64);
}

#[test]
fn file_gets_every_line_in_order_after_flush() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let log = AuditLog::to_file(&path, key(), DEFAULT_MAX_BYTES).unwrap();
    let ids: Vec<String> = (0..5_000).map(|i| format!("req-{i}")).collect();
    // The first line's request leads and is kept waiting, so only the flush writes.
    let mut leader = None;
    for (i, id) in ids.iter().enumerate() {
        let code = (i % 7 == 0).then_some("DisabledException");
        let pending = log.record(event(id, code));
        if i == 0 {
            leader = Some(pending);
        }
    }
    assert!(lines(&path).is_empty(), "written before the flush");
    log.flush();
    let got = lines(&path);
    assert_eq!(got.len(), ids.len());
    for (i, (line, id)) in got.iter().zip(&ids).enumerate() {
        assert_eq!(line["requestId"], id.as_str());
        let failed = i % 7 == 0;
        assert_eq!(line["outcome"], if failed { "failure" } else { "success" });
    }
    assert_eq!(log.unwritten(), 0);
    assert_eq!(verify(&path), intact(1, 5_000));
    drop(leader);
}

#[tokio::test]
async fn a_recorded_line_is_in_the_file_once_written_completes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let log = AuditLog::to_file(&path, key(), DEFAULT_MAX_BYTES).unwrap();
    for id in ["one", "two", "three"] {
        log.record(event(id, None)).written().await.unwrap();
        // No flush: the answer itself promises the line reached the OS.
        let last = lines(&path).pop().unwrap();
        assert_eq!(last["requestId"], id);
    }
    assert!(log.check().is_ok());
}

#[test]
fn dropping_the_log_writes_everything_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let log = AuditLog::to_file(&path, key(), DEFAULT_MAX_BYTES).unwrap();
    // The leader never writes (as if its task were stuck): only dropping the log does.
    let leader = log.record(event("r0", None));
    for i in 1..1_000 {
        drop(log.record(event(&format!("r{i}"), None)));
    }
    std::mem::forget(leader);
    assert!(
        lines(&path).is_empty(),
        "written before the log was dropped"
    );
    drop(log);
    assert_eq!(lines(&path).len(), 1_000);
    assert_eq!(verify(&path), intact(1, 1_000));
}

#[test]
fn a_full_queue_is_written_by_the_request_that_fills_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let log = AuditLog::to_file(&path, key(), DEFAULT_MAX_BYTES).unwrap();
    // A leader that never gets to run (a stalled sink looks the same to the others).
    let leader = log.record(event("leader", None));
    for i in 1..writer::QUEUE_LINES {
        drop(log.record(event(&format!("r{i}"), None)));
    }
    assert_eq!(lines(&path).len(), writer::QUEUE_LINES);
    drop(leader);
    assert_eq!(verify(&path), intact(1, writer::QUEUE_LINES as u64));
}

#[test]
fn concurrent_writers_keep_their_own_order_and_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let log = Arc::new(AuditLog::to_file(&path, key(), DEFAULT_MAX_BYTES).unwrap());
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let log = Arc::clone(&log);
            std::thread::spawn(move || {
                for i in 0..20_000 {
                    drop(log.record(event(&format!("{t}-{i}"), None)));
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
    assert_eq!(log.unwritten(), 0);
    assert_eq!(verify(&path), intact(1, 80_000));
}

/// Appends to a shared buffer, or fails like a full disk while `full` is set. A gated disk's
/// first write waits at its gate, met twice: "in the write", then "go on".
#[derive(Clone, Default)]
struct Disk {
    full: Arc<std::sync::atomic::AtomicBool>,
    bytes: Arc<std::sync::Mutex<Vec<u8>>>,
    /// Calls to `write`, failed ones included.
    writes: Arc<std::sync::atomic::AtomicUsize>,
    gate: Option<Arc<std::sync::Barrier>>,
}

impl Disk {
    fn gated(gate: &Arc<std::sync::Barrier>) -> Self {
        Self {
            gate: Some(Arc::clone(gate)),
            ..Self::default()
        }
    }

    /// What was written, as a log file (in a directory removed when the first is dropped).
    fn saved(&self) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        std::fs::write(&path, &*self.bytes.lock().unwrap()).unwrap();
        (dir, path)
    }
}

impl std::io::Write for Disk {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.writes.fetch_add(1, Ordering::SeqCst) == 0 {
            if let Some(gate) = &self.gate {
                gate.wait();
                gate.wait();
            }
        }
        if self.full.load(Ordering::SeqCst) {
            return Err(std::io::Error::from_raw_os_error(28)); // ENOSPC
        }
        self.bytes.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn request_ids(path: &Path) -> Vec<Value> {
    lines(path).iter().map(|l| l["requestId"].clone()).collect()
}

// ---- group commit without a writer thread --------------------------------------------------

#[tokio::test]
async fn a_dropped_leader_still_writes_the_queue() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let log = AuditLog::to_file(&path, key(), DEFAULT_MAX_BYTES).unwrap();
    let leader = log.record(event("leader", None));
    let follower = log.record(event("follower", None));
    // The leader's client went away before its line was written.
    drop(leader);
    tokio::time::timeout(Duration::from_secs(10), follower.written())
        .await
        .expect("a line left without a leader")
        .unwrap();
    assert_eq!(request_ids(&path), ["leader", "follower"]);
}

#[tokio::test]
async fn the_role_passes_over_a_request_that_went_away() {
    let gate = Arc::new(std::sync::Barrier::new(2));
    let disk = Disk::gated(&gate);
    let log = Arc::new(AuditLog::to_writer(disk.clone(), key()));
    let leading = {
        let log = Arc::clone(&log);
        // Dropped at once: leads, and writes its line as it is dropped, held in the write.
        std::thread::spawn(move || drop(log.record(event("a", None))))
    };
    gate.wait();
    // Queued while the leader writes: the role goes to the oldest, which has gone away.
    let gone = log.record(event("b", None));
    let waiting = log.record(event("c", None));
    drop(gone);
    gate.wait();
    leading.join().unwrap();
    tokio::time::timeout(Duration::from_secs(10), waiting.written())
        .await
        .expect("a line left without a leader")
        .unwrap();
    let (_dir, path) = disk.saved();
    assert_eq!(request_ids(&path), ["a", "b", "c"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_share_writes_and_cancelled_ones_leave_no_line_behind() {
    const TASKS: usize = 64;
    const EACH: usize = 300;
    let disk = Disk::default();
    let log = Arc::new(AuditLog::to_writer(disk.clone(), key()));
    let tasks: Vec<_> = (0..TASKS)
        .map(|t| {
            let log = Arc::clone(&log);
            tokio::spawn(async move {
                for i in 0..EACH {
                    let id = format!("{t}-{i}");
                    let pending = log.record(event(&id, None));
                    if i % 3 == 0 {
                        // Polled once, then dropped: as when a client disconnects while its
                        // request waits for its line (as the leader or behind one).
                        let _ = tokio::time::timeout(Duration::ZERO, pending.written()).await;
                    } else {
                        pending.written().await.unwrap();
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        tokio::time::timeout(Duration::from_secs(60), task)
            .await
            .expect("a request waits for a line nobody writes")
            .unwrap();
    }
    // No flush: every line, the cancelled requests' too, was written by some leader.
    let writes = disk.writes.load(Ordering::SeqCst);
    let (_dir, path) = disk.saved();
    let got = lines(&path);
    assert_eq!(got.len(), TASKS * EACH);
    let mut next = [0usize; TASKS];
    for line in &got {
        let (t, i) = line["requestId"].as_str().unwrap().split_once('-').unwrap();
        let (t, i): (usize, usize) = (t.parse().unwrap(), i.parse().unwrap());
        assert_eq!(i, next[t], "task {t} out of order");
        next[t] += 1;
    }
    assert_eq!(verify(&path), intact(1, (TASKS * EACH) as u64));
    assert_eq!(log.unwritten(), 0);
    // Requests that wait together share one write(2).
    assert!(
        writes < got.len() / 2,
        "{writes} writes for {} lines",
        got.len()
    );
}

#[tokio::test]
async fn disabled_log_accepts_and_ignores_everything() {
    let log = AuditLog::disabled();
    assert!(!log.is_enabled());
    assert!(log.check().is_ok());
    log.record(event("r", None)).written().await.unwrap();
    log.flush();
    assert_eq!(log.unwritten(), 0);
}

// ---- the chain ----------------------------------------------------------------------------

#[test]
fn an_untouched_log_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    write_log(&path, "r", 50, DEFAULT_MAX_BYTES);
    assert_eq!(verify(&path), intact(1, 50));
}

#[test]
fn another_key_does_not_verify() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    write_log(&path, "r", 3, DEFAULT_MAX_BYTES);
    let other = verify_files(&AuditKey::for_tests(8), std::slice::from_ref(&path)).unwrap();
    assert_broken_at(other, &path, 1);
}

#[test]
fn a_removed_line_is_caught_at_the_next_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    write_log(&path, "r", 10, DEFAULT_MAX_BYTES);
    let mut lines = raw_lines(&path);
    lines.remove(4);
    write_lines(&path, &lines);
    assert_broken_at(verify(&path), &path, 5);
}

#[test]
fn the_first_line_removed_is_caught() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    write_log(&path, "r", 10, DEFAULT_MAX_BYTES);
    let mut lines = raw_lines(&path);
    lines.remove(0);
    write_lines(&path, &lines);
    assert_broken_at(verify(&path), &path, 1);
}

#[test]
fn any_changed_byte_is_caught() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    write_log(&path, "r", 5, DEFAULT_MAX_BYTES);
    let original = raw_lines(&path);
    // Every byte of the third line but its newline (which would split the line in two: also
    // caught, but at a line number of its own).
    for at in 0..original[2].len() - 1 {
        let mut lines = original.clone();
        lines[2][at] ^= 0x01;
        write_lines(&path, &lines);
        assert_broken_at(verify(&path), &path, 3);
    }
    write_lines(&path, &original);
    assert_eq!(verify(&path), intact(1, 5));
}

#[test]
fn swapped_lines_are_caught() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    write_log(&path, "r", 10, DEFAULT_MAX_BYTES);
    let mut lines = raw_lines(&path);
    lines.swap(6, 7);
    write_lines(&path, &lines);
    assert_broken_at(verify(&path), &path, 7);
}

#[test]
fn an_inserted_line_is_caught_even_a_copy_of_a_genuine_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    write_log(&path, "r", 10, DEFAULT_MAX_BYTES);
    let original = raw_lines(&path);
    let mut lines = original.clone();
    lines.insert(3, original[8].clone());
    write_lines(&path, &lines);
    assert_broken_at(verify(&path), &path, 4);

    // A line from another log with the same key: it does not chain here either.
    let other = dir.path().join("other.log");
    write_log(&other, "x", 3, DEFAULT_MAX_BYTES);
    let mut lines = original;
    lines.insert(9, raw_lines(&other)[1].clone());
    write_lines(&path, &lines);
    assert_broken_at(verify(&path), &path, 10);
}

#[test]
fn a_line_without_chain_is_caught() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    write_log(&path, "r", 3, DEFAULT_MAX_BYTES);
    let mut lines = raw_lines(&path);
    lines.insert(1, b"{\"requestId\":\"forged\"}\n".to_vec());
    write_lines(&path, &lines);
    match verify(&path) {
        Verification::Broken { line, what, .. } => {
            assert_eq!(line, 2);
            assert!(what.contains("no chain"), "{what}");
        }
        other => panic!("{other:?}"),
    }
}

// ---- rotation and restarts ----------------------------------------------------------------

/// Lines of `event` are about 330 bytes: 1000 bytes hold three.
const SMALL: u64 = 1_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_syncs_and_rotation_on_a_runtime_keep_one_chain() {
    // More than the background sync's threshold per file, rotated on a runtime's worker.
    const MAX: u64 = 12 * 1024 * 1024;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let log = Arc::new(AuditLog::to_file(&path, key(), MAX).unwrap());
    let tasks: Vec<_> = (0..8)
        .map(|t| {
            let log = Arc::clone(&log);
            tokio::spawn(async move {
                for i in 0..9_000 {
                    let id = format!("{t}-{i}");
                    log.record(event(&id, None)).written().await.unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    log.flush();
    let files = log_files(&path).unwrap();
    assert!(files.len() >= 2, "{files:?}");
    assert_eq!(verify(&path), intact(files.len(), 72_000));
}

#[test]
fn rotation_keeps_whole_lines_and_one_chain_across_files() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    write_log(&path, "r", 20, SMALL);
    let files = log_files(&path).unwrap();
    assert!(files.len() >= 3, "{files:?}");
    let names: Vec<String> = files
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    let mut expected: Vec<String> = (1..files.len()).map(|n| format!("audit.log.{n}")).collect();
    expected.push("audit.log".into());
    assert_eq!(names, expected);
    let mut ids = Vec::new();
    for f in &files {
        let text = std::fs::read(f).unwrap();
        assert!(
            text.len() as u64 <= SMALL,
            "{} is {} bytes",
            f.display(),
            text.len()
        );
        assert_eq!(text.last(), Some(&b'\n'));
        ids.extend(lines(f).into_iter().map(|l| l["requestId"].clone()));
    }
    let want: Vec<Value> = (0..20).map(|i| Value::from(format!("r{i}"))).collect();
    assert_eq!(ids, want);
    assert_eq!(verify(&path), intact(files.len(), 20));
}

#[test]
fn a_line_removed_at_a_rotation_boundary_is_caught() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    write_log(&path, "r", 20, SMALL);
    let files = log_files(&path).unwrap();

    // The last line of the first file: the break shows at the first line of the second.
    let mut lines = raw_lines(&files[0]);
    let last = lines.pop().unwrap();
    write_lines(&files[0], &lines);
    assert_broken_at(verify(&path), &files[1], 1);
    lines.push(last);
    write_lines(&files[0], &lines);
    assert_eq!(verify(&path), intact(files.len(), 20));

    // The first line of the second file.
    let mut lines = raw_lines(&files[1]);
    lines.remove(0);
    write_lines(&files[1], &lines);
    assert_broken_at(verify(&path), &files[1], 1);
}

#[test]
fn a_missing_rotated_file_is_caught() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    write_log(&path, "r", 20, SMALL);
    let files = log_files(&path).unwrap();
    std::fs::remove_file(&files[1]).unwrap();
    assert_broken_at(verify(&path), &files[2], 1);
}

#[test]
fn a_restart_appends_and_continues_the_chain() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    write_log(&path, "first-", 3, DEFAULT_MAX_BYTES);
    write_log(&path, "second-", 3, DEFAULT_MAX_BYTES);
    assert_eq!(
        request_ids(&path),
        ["first-0", "first-1", "first-2", "second-0", "second-1", "second-2"]
    );
    assert_eq!(verify(&path), intact(1, 6));
}

#[test]
fn a_restart_after_rotation_continues_numbering_and_chain() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    write_log(&path, "a", 10, SMALL);
    let before = log_files(&path).unwrap().len();
    // An empty current file, as a crash right after a rotation leaves it: the chain goes on
    // from the newest rotated file.
    std::fs::rename(&path, dir.path().join(format!("audit.log.{before}"))).unwrap();
    std::fs::write(&path, b"").unwrap();
    write_log(&path, "b", 10, SMALL);
    let files = log_files(&path).unwrap();
    assert!(files.len() > before + 1, "{files:?}");
    assert_eq!(verify(&path), intact(files.len(), 20));
}

#[test]
fn a_torn_last_line_is_reported_then_cut_off_at_the_next_start() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    write_log(&path, "r", 4, DEFAULT_MAX_BYTES);
    let whole = std::fs::read(&path).unwrap();
    let torn = br#"{"time":"2024-05-01T12:00:00.123Z","requestId":"cut sh"#;
    std::fs::write(&path, [&whole[..], &torn[..]].concat()).unwrap();
    assert_eq!(
        verify(&path),
        Verification::Intact {
            files: 1,
            lines: 4,
            torn_tail: Some(torn.len() as u64)
        }
    );

    write_log(&path, "after", 2, DEFAULT_MAX_BYTES);
    let text = std::fs::read(&path).unwrap();
    assert_eq!(&text[..whole.len()], &whole[..]);
    assert_eq!(verify(&path), intact(1, 6));
}

#[test]
fn a_torn_line_in_a_rotated_file_is_a_break() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    write_log(&path, "r", 20, SMALL);
    let files = log_files(&path).unwrap();
    let text = std::fs::read(&files[0]).unwrap();
    std::fs::write(&files[0], &text[..text.len() - 1]).unwrap();
    match verify(&path) {
        Verification::Broken { path: p, what, .. } => {
            assert_eq!(p, files[0]);
            assert!(what.contains("unterminated"), "{what}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_log_that_does_not_end_with_a_chained_line_is_not_continued() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    std::fs::write(&path, b"{\"requestId\":\"from an older version\"}\n").unwrap();
    let Err(e) = AuditLog::to_file(&path, key(), DEFAULT_MAX_BYTES) else {
        panic!("opened a log whose chain it cannot continue");
    };
    assert!(e.to_string().contains("without a chain"), "{e}");
}

#[test]
fn only_rotation_names_count_as_rotated_files() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    for name in [
        "audit.log.2",
        "audit.log.10",
        "audit.log.01",
        "audit.log.3.bak",
        "x.log.4",
    ] {
        std::fs::write(dir.path().join(name), b"").unwrap();
    }
    let files: Vec<PathBuf> = log_files(&path).unwrap();
    let names: Vec<_> = files.iter().map(|p| p.file_name().unwrap()).collect();
    assert_eq!(names, ["audit.log.2", "audit.log.10"]);
}

// ---- failing closed -----------------------------------------------------------------------

#[tokio::test]
async fn a_failed_write_fails_the_request_and_refuses_the_next_ones() {
    // /dev/full accepts the open and fails every write with ENOSPC: a full disk.
    let log = AuditLog::to_file(Path::new("/dev/full"), key(), DEFAULT_MAX_BYTES).unwrap();
    assert!(log.check().is_ok(), "nothing is known to be wrong yet");
    let e = log.record(event("r0", None)).written().await.unwrap_err();
    assert_eq!(e.aws_type(), "KMSInternalException");
    assert_eq!(e.to_string(), "the audit log cannot be written");
    let refused = log.check().unwrap_err();
    assert_eq!(refused.to_string(), "the audit log cannot be written");
    // Each later line retries the sink, and fails again here.
    for i in 1..10 {
        let id = format!("r{i}");
        assert!(log.record(event(&id, None)).written().await.is_err());
    }
    assert!(log.check().is_err());
    assert_eq!(log.unwritten(), 10);
}

#[tokio::test]
async fn the_log_recovers_when_the_disk_has_room_again_without_a_gap_in_the_chain() {
    let disk = Disk::default();
    let log = AuditLog::to_writer(disk.clone(), key());
    log.record(event("before", None)).written().await.unwrap();

    disk.full.store(true, Ordering::SeqCst);
    assert!(log.record(event("lost", None)).written().await.is_err());
    assert!(log.check().is_err());
    // A refused request's own line is the retry.
    assert!(log
        .record(event("refused", Some("KMSInternalException")))
        .written()
        .await
        .is_err());

    disk.full.store(false, Ordering::SeqCst);
    log.record(event("refused-too", Some("KMSInternalException")))
        .written()
        .await
        .unwrap();
    assert!(log.check().is_ok());
    log.record(event("after", None)).written().await.unwrap();
    assert_eq!(log.unwritten(), 2);

    let (_dir, path) = disk.saved();
    assert_eq!(request_ids(&path), ["before", "refused-too", "after"]);
    assert_eq!(verify(&path), intact(1, 3));
}
