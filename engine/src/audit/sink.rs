//! Where chained lines go: a file, rotated by size and recovered after a crash, or stdout.
//!
//! Rotation renames `audit.log` to `audit.log.<N>`, N one more than the highest existing, and
//! starts a new `audit.log`; the chain runs on into it. On open, a torn last line (a crash cut
//! a write short) is cut off and the chain continues from the last whole line, or from the
//! newest rotated file when the current one is empty.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::SyncSender;
use std::sync::Arc;

use super::chain::{self, Link, GENESIS};
use crate::error::{KmsError, Result};

/// The last line of a file is looked for in at most this many trailing bytes.
const MAX_TAIL: u64 = 16 * 1024 * 1024;
const TAIL_CHUNK: u64 = 64 * 1024;

/// Once this much is written since the last sync, a background thread syncs the file: the
/// `fdatasync` at rotation then finds little left to flush, instead of stalling the request
/// that rotates (and those waiting behind it) for the whole file.
const SYNC_EVERY: u64 = 8 * 1024 * 1024;

pub(crate) enum Sink {
    File(FileSink),
    Stdout(std::io::Stdout),
    /// A sink a test controls (one that fails on demand).
    #[cfg(test)]
    Test(Box<dyn Write + Send>),
}

impl Sink {
    /// All of `bytes`, or an error after which none of them is in the sink (for a regular
    /// file; a pipe or terminal cannot take back what it took).
    pub(crate) fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match self {
            Sink::File(f) => f.write(bytes),
            Sink::Stdout(s) => {
                let mut lock = s.lock();
                lock.write_all(bytes)?;
                lock.flush()
            }
            #[cfg(test)]
            Sink::Test(w) => w.write_all(bytes),
        }
    }

    pub(crate) fn sync(&mut self) -> std::io::Result<()> {
        match self {
            Sink::File(f) => f.sync(),
            Sink::Stdout(s) => s.flush(),
            #[cfg(test)]
            Sink::Test(w) => w.flush(),
        }
    }

    /// Whether appending a `line` of this many bytes after `batched` unwritten ones would take
    /// the current file past its size limit (never for stdout).
    pub(crate) fn should_rotate(&self, batched: usize, line: usize) -> bool {
        match self {
            Sink::File(f) => {
                f.regular
                    && f.max_bytes > 0
                    && f.len + batched as u64 > 0
                    && f.len + (batched + line) as u64 > f.max_bytes
            }
            Sink::Stdout(_) => false,
            #[cfg(test)]
            Sink::Test(_) => false,
        }
    }

    pub(crate) fn rotate(&mut self) {
        if let Sink::File(f) = self {
            f.rotate();
        }
    }
}

pub(crate) struct FileSink {
    path: PathBuf,
    /// `None` after a rotation could not open the new file; opening is retried at each write.
    file: Option<File>,
    /// Bytes of whole lines in the current file.
    len: u64,
    /// A write failed part-way and the fragment could not be cut off yet: it must be before
    /// anything else is appended, or the next line would be glued to it.
    torn: bool,
    /// A regular file; a device or a pipe (`/dev/stderr`, a FIFO) is neither rotated nor
    /// read back.
    regular: bool,
    /// 0: never rotate.
    max_bytes: u64,
    /// The number the next rotated file gets.
    next_index: u64,
    /// Bytes written since the last sync (ours or the background thread's).
    unsynced: u64,
    /// Hands a handle of the current file to the thread that syncs it; `None` if the OS
    /// refused the thread (the sync at rotation then does it all).
    syncer: Option<Syncer>,
}

/// The background sync thread's end of a file sink.
struct Syncer {
    files: SyncSender<File>,
    state: Arc<SyncState>,
}

#[derive(Default)]
struct SyncState {
    /// A sync is running: no handle is duplicated for another until it is done.
    busy: AtomicBool,
    /// A background sync failed. The kernel reports a writeback error once per open file, and
    /// the thread's handle shares ours, so the next sync of ours would not see it: it is kept
    /// here for [`Sink::sync`] to report.
    failed: AtomicBool,
}

impl FileSink {
    /// Open (creating) `path` for appending and find the link its chain continues from.
    pub(crate) fn open(path: &Path, max_bytes: u64) -> Result<(Self, Link)> {
        let failed = |what: &str, e: std::io::Error| {
            KmsError::dependency(format!("cannot {what} audit log {}", path.display()), e)
        };
        let file = open_append(path).map_err(|e| failed("open", e))?;
        let meta = file.metadata().map_err(|e| failed("inspect", e))?;
        let regular = meta.is_file();
        let mut sink = Self {
            path: path.to_owned(),
            file: None,
            len: meta.len(),
            torn: false,
            regular,
            max_bytes,
            next_index: 1,
            unsynced: 0,
            syncer: None,
        };
        if !regular {
            sink.file = Some(file);
            return Ok((sink, GENESIS));
        }
        let tail = read_tail(&file, sink.len).map_err(|e| failed("read the end of", e))?;
        if tail.complete < sink.len {
            // Only a crash during a write leaves this (a failed write is cut off at once). The
            // request of that line was never answered, since answers wait for their line; and a
            // line appended after the fragment would be glued to it, breaking the chain.
            tracing::warn!(
                path = %path.display(),
                bytes = sink.len - tail.complete,
                "the audit log ends with a line cut short by a crash; cutting it off"
            );
            file.set_len(tail.complete)
                .map_err(|e| failed("cut the torn line off", e))?;
            sink.len = tail.complete;
        }
        let rotated = rotated_files(path).map_err(|e| failed("list the rotated files of", e))?;
        if let Some((n, _)) = rotated.last() {
            sink.next_index = n + 1;
        }
        let link = match (tail.last_line, rotated.last()) {
            (Some(line), _) => Some(continue_from(path, &line)?),
            // Empty after a rotation: the chain goes on from the newest rotated file.
            (None, Some((_, newest))) => {
                let newest_file = File::open(newest).map_err(|e| failed("open", e))?;
                let len = newest_file
                    .metadata()
                    .map_err(|e| failed("inspect", e))?
                    .len();
                let tail = read_tail(&newest_file, len).map_err(|e| failed("read", e))?;
                match tail.last_line {
                    Some(line) => Some(continue_from(newest, &line)?),
                    None => None,
                }
            }
            (None, None) => None,
        };
        sink.file = Some(file);
        sink.syncer = start_syncer();
        Ok((sink, link.unwrap_or(GENESIS)))
    }

    fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        let mut file = match self.file.take() {
            Some(f) => f,
            None => {
                let f = open_append(&self.path)?;
                self.len = f.metadata()?.len();
                f
            }
        };
        let result = self.append(&mut file, bytes);
        self.file = Some(file);
        result
    }

    fn append(&mut self, file: &mut File, bytes: &[u8]) -> std::io::Result<()> {
        if self.torn {
            file.set_len(self.len)?;
            self.torn = false;
        }
        let mut written = 0;
        while written < bytes.len() {
            match file.write(&bytes[written..]) {
                Ok(0) => {
                    return Err(self.undo(file, written, std::io::ErrorKind::WriteZero.into()))
                }
                Ok(n) => written += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.undo(file, written, e)),
            }
        }
        self.len += bytes.len() as u64;
        self.unsynced += bytes.len() as u64;
        if self.unsynced >= SYNC_EVERY {
            self.sync_in_background(file);
        }
        Ok(())
    }

    fn sync_in_background(&mut self, file: &File) {
        let Some(syncer) = &self.syncer else { return };
        // Still syncing the last handle: the next write asks again.
        if syncer.state.busy.load(Ordering::Acquire) {
            return;
        }
        let Ok(handle) = file.try_clone() else { return };
        syncer.state.busy.store(true, Ordering::Release);
        if syncer.files.try_send(handle).is_ok() {
            self.unsynced = 0;
        } else {
            // The thread is gone; the sync at rotation does it all.
            self.syncer = None;
        }
    }

    /// Sync the current file, and report a background sync's failure since the last call.
    fn sync(&mut self) -> std::io::Result<()> {
        let result = self.file.as_ref().map_or(Ok(()), File::sync_data);
        let failed_before = self
            .syncer
            .as_ref()
            .is_some_and(|s| s.state.failed.swap(false, Ordering::AcqRel));
        match result {
            Ok(()) if failed_before => Err(std::io::Error::other(
                "a background sync of the audit log failed",
            )),
            other => other,
        }
    }

    /// A write failed after `written` bytes: cut them off (a full disk often takes part of a
    /// batch), so that the file only ever holds whole, chained lines.
    fn undo(&mut self, file: &File, written: usize, e: std::io::Error) -> std::io::Error {
        if written > 0 && self.regular {
            self.torn = file.set_len(self.len).is_err();
        }
        e
    }

    fn rotate(&mut self) {
        if !self.regular || self.len == 0 {
            return;
        }
        // Never overwrite a rotated file, even one that appeared since we counted.
        let mut target = rotated_name(&self.path, self.next_index);
        while target.exists() {
            self.next_index += 1;
            target = rotated_name(&self.path, self.next_index);
        }
        // Rotated files are never written again: make them durable once, here. Off the
        // runtime's worker if there is one: the background syncs leave a few MiB at most, but a
        // slow disk can still take a while.
        if let Err(e) = blocking(|| self.sync()) {
            tracing::warn!(error = %e, "cannot sync the audit log before rotating it");
        }
        if let Err(e) = std::fs::rename(&self.path, &target) {
            // Retrying at every line would cost a sync per line (a file mounted on its own, as
            // a Kubernetes subPath is, cannot be renamed): keep writing to this one file.
            self.max_bytes = 0;
            tracing::error!(
                error = %e,
                path = %self.path.display(),
                "cannot rotate the audit log; writing on to the current file, without rotating, \
                 until the engine restarts"
            );
            return;
        }
        self.next_index += 1;
        self.len = 0;
        self.unsynced = 0;
        self.torn = false;
        self.file = match open_append(&self.path) {
            Ok(f) => Some(f),
            Err(e) => {
                tracing::error!(
                    error = %e,
                    path = %self.path.display(),
                    "cannot create a new audit log file after rotating; retrying at each write"
                );
                None
            }
        };
        tracing::info!(rotated_to = %target.display(), "audit log rotated");
    }
}

/// Run `f`, which blocks on the disk, without holding up the tasks queued on this runtime
/// worker (tokio moves them to another thread). Outside a runtime, or on a current-thread one
/// (tests), `f` just runs.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

/// The thread that syncs the file in the background; it ends when the sink is dropped.
fn start_syncer() -> Option<Syncer> {
    let (files, receiver) = std::sync::mpsc::sync_channel::<File>(1);
    let state = Arc::new(SyncState::default());
    let thread_state = Arc::clone(&state);
    let spawned = std::thread::Builder::new()
        .name("kubekms-audit-sync".into())
        .spawn(move || {
            while let Ok(file) = receiver.recv() {
                if let Err(e) = file.sync_data() {
                    tracing::warn!(error = %e, "cannot sync the audit log");
                    thread_state.failed.store(true, Ordering::Release);
                }
                thread_state.busy.store(false, Ordering::Release);
            }
        });
    match spawned {
        Ok(_) => Some(Syncer { files, state }),
        Err(e) => {
            tracing::warn!(error = %e, "no thread to sync the audit log in the background");
            None
        }
    }
}

/// Created 0640: no secrets in it, but not for every local user either.
fn open_append(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .create(true)
        .read(true)
        .append(true)
        .mode(0o640)
        .open(path)
}

fn continue_from(path: &Path, line: &[u8]) -> Result<Link> {
    chain::link_of(line).ok_or_else(|| {
        KmsError::internal(format!(
            "audit log {} ends with a line without a chain field (written by an older \
             version, or edited); move it aside to start a new log",
            path.display()
        ))
    })
}

struct Tail {
    /// Length of the file up to and including its last newline.
    complete: u64,
    /// The line that newline ends, without it.
    last_line: Option<Vec<u8>>,
}

/// The last whole line of a file of `len` bytes, reading backwards from its end.
fn read_tail(file: &File, len: u64) -> std::io::Result<Tail> {
    let mut start = len;
    let mut buf: Vec<u8> = Vec::new();
    loop {
        if let Some(end) = buf.iter().rposition(|&b| b == b'\n') {
            let line_start = buf[..end].iter().rposition(|&b| b == b'\n');
            if line_start.is_some() || start == 0 {
                let from = line_start.map_or(0, |s| s + 1);
                return Ok(Tail {
                    complete: start + end as u64 + 1,
                    last_line: Some(buf[from..end].to_vec()),
                });
            }
        } else if start == 0 {
            return Ok(Tail {
                complete: 0,
                last_line: None,
            });
        }
        if len - start >= MAX_TAIL {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("no line break in the last {MAX_TAIL} bytes"),
            ));
        }
        // Doubling: a long line costs a few reads, not one per chunk.
        let step = TAIL_CHUNK.max(len - start).min(start);
        let mut chunk = vec![0; step as usize];
        file.read_exact_at(&mut chunk, start - step)?;
        chunk.extend_from_slice(&buf);
        buf = chunk;
        start -= step;
    }
}

fn rotated_name(path: &Path, n: u64) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

/// `path.<N>` files next to `path`, by N.
pub(crate) fn rotated_files(path: &Path) -> std::io::Result<Vec<(u64, PathBuf)>> {
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        return Ok(Vec::new());
    };
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let file_name = entry.file_name();
        let Some(index) = file_name
            .to_str()
            .and_then(|s| s.strip_prefix(name))
            .and_then(|s| s.strip_prefix('.'))
        else {
            continue;
        };
        // Exactly the names rotation makes: `audit.log.01` or `audit.log.1.bak` are not ours.
        match index.parse::<u64>() {
            Ok(n) if n.to_string() == index => found.push((n, entry.path())),
            _ => {}
        }
    }
    found.sort_unstable_by_key(|(n, _)| *n);
    Ok(found)
}
