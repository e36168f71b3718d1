//! The hash chain that makes the audit log tamper-evident, and its verification.
//!
//! Every line ends with `,"chain":"<64 hex digits>"}`: HMAC-SHA256, under a key derived from the
//! root key, of the previous line's chain (32 zero bytes before the first line of a log)
//! followed by this line as it would read without that field (the same JSON object, closed
//! right after its last other field). The chain runs on across rotated files and restarts.
//!
//! Removing, changing, reordering or inserting a line breaks the chain at (or right after) that
//! line, and mending it needs the key, which nobody who can merely edit the files holds. What a
//! chain cannot show is lines cut off its end (or whole newest files deleted): the last line has
//! no successor to break. Shipping lines off the host as they are written covers that.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use aws_lc_rs::{constant_time, hmac};

use crate::crypto::RootKey;
use crate::error::{KmsError, Result};

/// HKDF label of the audit key: independent of every other key the root key derives.
const LABEL: &[u8] = b"kubekms/v1/audit-chain";

const LINK_LEN: usize = 32;
/// What a line's chain continues from; the first line of a log continues from [`GENESIS`].
pub(crate) type Link = [u8; LINK_LEN];
pub(crate) const GENESIS: Link = [0; LINK_LEN];

const FIELD_OPEN: &[u8] = b",\"chain\":\"";
const FIELD_CLOSE: &[u8] = b"\"}";
/// The chain field and the closing brace: always the last bytes of a line (before its newline),
/// so a line splits into payload and chain by position, whatever its fields hold.
const SUFFIX_LEN: usize = FIELD_OPEN.len() + 2 * LINK_LEN + FIELD_CLOSE.len();
/// How much longer a line is than its payload: the suffix and the newline, less the payload's
/// closing brace.
pub(crate) const SEAL_OVERHEAD: usize = SUFFIX_LEN;

/// The key of the chain. No `Debug`: it is as secret as the root key for this purpose.
pub struct AuditKey(hmac::Key);

impl AuditKey {
    /// The same on every replica and every restart that holds this root key.
    pub fn from_root(root: &RootKey) -> Result<Self> {
        root.derive_hmac_key(LABEL).map(Self)
    }

    #[cfg(test)]
    pub(crate) fn for_tests(seed: u8) -> Self {
        Self(hmac::Key::new(hmac::HMAC_SHA256, &[seed; LINK_LEN]))
    }

    fn link(&self, prev: &Link, body: &[u8]) -> Link {
        let mut ctx = hmac::Context::with_key(&self.0);
        ctx.update(prev);
        ctx.update(body);
        ctx.update(b"}");
        let mut link = GENESIS;
        link.copy_from_slice(ctx.sign().as_ref());
        link
    }
}

/// Append `payload` (one JSON object, no newline) to `out` as a chained line, newline included,
/// and return its link.
pub(crate) fn seal(key: &AuditKey, prev: &Link, payload: &[u8], out: &mut Vec<u8>) -> Link {
    // Payloads are serialized objects, so they end with '}'; the field goes in front of it.
    let body = payload.strip_suffix(b"}").unwrap_or(payload);
    let link = key.link(prev, body);
    out.extend_from_slice(body);
    out.extend_from_slice(FIELD_OPEN);
    let mut text = [0u8; 2 * LINK_LEN];
    // Twice the link's length: the one thing `encode_to_slice` checks.
    let _ = hex::encode_to_slice(link, &mut text);
    out.extend_from_slice(&text);
    out.extend_from_slice(FIELD_CLOSE);
    out.push(b'\n');
    link
}

/// A line (without its newline) split into what its chain covers and the chain it carries.
fn split(line: &[u8]) -> Option<(&[u8], Link)> {
    let body_len = line.len().checked_sub(SUFFIX_LEN)?;
    let (body, suffix) = line.split_at(body_len);
    let hex = suffix.strip_prefix(FIELD_OPEN)?.strip_suffix(FIELD_CLOSE)?;
    let mut link = GENESIS;
    hex::decode_to_slice(hex, &mut link).ok()?;
    Some((body, link))
}

/// The chain a line carries, to continue from it after a restart.
pub(crate) fn link_of(line: &[u8]) -> Option<Link> {
    split(line).map(|(_, link)| link)
}

/// What [`verify_files`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Verification {
    /// Every line chains from the one before it, from the first line of the first file.
    Intact {
        files: usize,
        lines: u64,
        /// Bytes after the last newline of the last file: a line a crash cut short (which
        /// the engine cuts off when it next opens the log). They are not part of the chain and
        /// prove nothing; they are reported rather than refused because a crash leaves them
        /// legitimately, and accepting them hides no more than cutting lines off the end does.
        torn_tail: Option<u64>,
    },
    /// The first line that does not chain.
    Broken {
        path: PathBuf,
        /// 1-based, within `path`.
        line: u64,
        what: String,
    },
}

/// Recompute the chain through `paths` in order (oldest rotated file first, the current file
/// last; see [`super::log_files`]), from the start of a log.
pub fn verify_files(key: &AuditKey, paths: &[PathBuf]) -> Result<Verification> {
    let mut prev = GENESIS;
    let mut total = 0u64;
    let mut line = Vec::with_capacity(512);
    for (i, path) in paths.iter().enumerate() {
        let last_file = i + 1 == paths.len();
        let file = File::open(path).map_err(|e| read_error(path, e))?;
        let mut reader = BufReader::new(file);
        let mut number = 0u64;
        loop {
            line.clear();
            let n = reader
                .read_until(b'\n', &mut line)
                .map_err(|e| read_error(path, e))?;
            if n == 0 {
                break;
            }
            number += 1;
            let broken = |what: &str| Verification::Broken {
                path: path.clone(),
                line: number,
                what: what.to_owned(),
            };
            let Some(text) = line.strip_suffix(b"\n") else {
                if last_file {
                    return Ok(Verification::Intact {
                        files: paths.len(),
                        lines: total,
                        torn_tail: Some(n as u64),
                    });
                }
                return Ok(broken("unterminated line in a rotated file"));
            };
            let Some((body, carried)) = split(text) else {
                return Ok(broken("no chain field at the end of the line"));
            };
            let expected = key.link(&prev, body);
            if constant_time::verify_slices_are_equal(&expected, &carried).is_err() {
                return Ok(broken(
                    "chain mismatch: this line was changed, inserted or moved, or the line \
                     before it was removed",
                ));
            }
            prev = carried;
            total += 1;
        }
    }
    Ok(Verification::Intact {
        files: paths.len(),
        lines: total,
        torn_tail: None,
    })
}

fn read_error(path: &Path, e: std::io::Error) -> KmsError {
    KmsError::dependency(format!("cannot read audit log {}", path.display()), e)
}
