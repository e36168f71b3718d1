//! The root-key file: the one secret that unlocks every key in the store.
//!
//! Format: exactly 64 hexadecimal characters (32 bytes), upper or lower case, optionally
//! followed by one newline (`\n` or `\r\n`). Hex rather than raw bytes so that the file can be
//! produced and checked with ordinary tools (`openssl rand -hex 32 > root.key`, `kubectl create
//! secret generic --from-file`), and survives YAML and copy-paste, where raw bytes would not.
//!
//! Errors name the file but never quote its contents.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

use crate::crypto::RootKey;
use crate::error::{KmsError, Result};

pub const ROOT_KEY_LEN: usize = 32;
const HEX_LEN: usize = ROOT_KEY_LEN * 2;
/// Anything longer than the longest valid file is refused without reading it all.
const MAX_FILE_LEN: u64 = (HEX_LEN + 2) as u64;

/// Load the root key from `path`. If the file does not exist and `create` is set, generate a
/// fresh random key and write it crash-safely first; the key returned is always the one read
/// back from the file, so every process that starts against `path` uses the same key.
pub fn load_or_create_root_key(path: &Path, create: bool) -> Result<RootKey> {
    match File::open(path) {
        Ok(file) => read_root_key(path, file),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => {
            create_root_key_file(path)?;
            let file = File::open(path).map_err(io_error(path, "open"))?;
            read_root_key(path, file)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(KmsError::Internal(format!(
            "root key file {} does not exist",
            path.display()
        ))),
        Err(e) => Err(io_error(path, "open")(e)),
    }
}

fn read_root_key(path: &Path, mut file: File) -> Result<RootKey> {
    if let Ok(meta) = file.metadata() {
        // Kubernetes mounts Secrets 0644 unless told otherwise, so this is a warning, not a
        // refusal.
        if meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(
                path = %path.display(),
                "root key file is readable by group or others; restrict it to its owner (0600)"
            );
        }
    }
    let mut contents = Zeroizing::new(Vec::with_capacity(MAX_FILE_LEN as usize + 1));
    (&mut file)
        .take(MAX_FILE_LEN + 1)
        .read_to_end(&mut contents)
        .map_err(io_error(path, "read"))?;

    let hex_part = strip_newline(&contents);
    let mut key = Zeroizing::new([0u8; ROOT_KEY_LEN]);
    if hex_part.len() != HEX_LEN || hex::decode_to_slice(hex_part, &mut key[..]).is_err() {
        // hex's own error names the offending character: a secret byte.
        return Err(KmsError::Internal(format!(
            "root key file {} is malformed: it must hold exactly {HEX_LEN} hex characters \
             ({ROOT_KEY_LEN} bytes), optionally followed by a newline",
            path.display()
        )));
    }
    RootKey::from_bytes(&key[..])
}

fn strip_newline(bytes: &[u8]) -> &[u8] {
    bytes
        .strip_suffix(b"\r\n")
        .or_else(|| bytes.strip_suffix(b"\n"))
        .unwrap_or(bytes)
}

/// Write a fresh key to `path` without ever leaving a partial file there and without
/// clobbering a key another process created at the same moment.
fn create_root_key_file(path: &Path) -> Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path.file_name().ok_or_else(|| {
        KmsError::Internal(format!("root key path {} names no file", path.display()))
    })?;

    let key = RootKey::generate()?;
    // Encoding checks the length: a key of any other size fails here.
    let mut line = Zeroizing::new(vec![0u8; HEX_LEN + 1]);
    hex::encode_to_slice(&key[..], &mut line[..HEX_LEN])
        .map_err(|_| KmsError::internal("cannot encode a root key"))?;
    line[HEX_LEN] = b'\n';

    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        name.to_string_lossy(),
        uuid::Uuid::new_v4()
    ));
    let result = write_new_file(&tmp, &line).and_then(|()| {
        // A hard link, unlike rename, fails if `path` appeared meanwhile, so two processes
        // starting together cannot each believe their own key is the one on disk.
        match std::fs::hard_link(&tmp, path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let path = path.display();
                tracing::info!(%path, "root key file created concurrently; using it");
                Ok(())
            }
            Err(e) => Err(io_error(path, "create")(e)),
        }
    });
    // The temporary name is only a staging name; the key stays reachable through `path`.
    let _ = std::fs::remove_file(&tmp);
    result?;
    // Make the new directory entry itself durable.
    File::open(&dir)
        .and_then(|d| d.sync_all())
        .map_err(io_error(&dir, "sync directory"))?;
    tracing::info!(path = %path.display(), "generated a new root key");
    Ok(())
}

fn write_new_file(tmp: &Path, contents: &[u8]) -> Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(tmp)
        .map_err(io_error(tmp, "create"))?;
    file.write_all(contents).map_err(io_error(tmp, "write"))?;
    file.sync_all().map_err(io_error(tmp, "sync"))
}

fn io_error<'a>(
    path: &'a Path,
    what: &'static str,
) -> impl FnOnce(std::io::Error) -> KmsError + 'a {
    move |e| {
        KmsError::Internal(format!(
            "cannot {what} root key file {}: {e}",
            path.display()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(r: Result<RootKey>) -> String {
        match r {
            Err(KmsError::Internal(m)) => m,
            Err(other) => panic!("wrong error kind: {other:?}"),
            Ok(_) => panic!("expected an error"),
        }
    }

    fn file_hex(path: &Path) -> String {
        std::fs::read_to_string(path).unwrap()
    }

    #[test]
    fn creates_a_fresh_key_once_and_then_reuses_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("root.key");
        load_or_create_root_key(&path, true).unwrap();
        let first = file_hex(&path);
        assert_eq!(first.len(), HEX_LEN + 1);
        assert!(first.ends_with('\n'));
        assert!(first[..HEX_LEN].bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(&first[..HEX_LEN], &"0".repeat(HEX_LEN));
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );

        load_or_create_root_key(&path, true).unwrap();
        assert_eq!(
            file_hex(&path),
            first,
            "an existing key must never be replaced"
        );

        // No staging files left behind.
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("root.key")]);
    }

    #[test]
    fn two_creations_give_different_keys() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a.key"), dir.path().join("b.key"));
        load_or_create_root_key(&a, true).unwrap();
        load_or_create_root_key(&b, true).unwrap();
        assert_ne!(file_hex(&a), file_hex(&b));
    }

    #[test]
    fn missing_file_without_create_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("absent.key");
        let msg = message(load_or_create_root_key(&path, false));
        assert!(
            msg.contains("absent.key") && msg.contains("does not exist"),
            "{msg}"
        );
        assert!(!path.exists());
    }

    #[test]
    fn accepts_hex_with_or_without_newline_in_either_case() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("root.key");
        let hex = "00112233445566778899aabbccddeeff00112233445566778899AABBCCDDEEFF";
        for contents in [hex.to_string(), format!("{hex}\n"), format!("{hex}\r\n")] {
            std::fs::write(&path, contents).unwrap();
            load_or_create_root_key(&path, false).unwrap();
        }
    }

    #[test]
    fn malformed_files_are_refused_without_quoting_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.key");
        let secretish = "q".repeat(HEX_LEN);
        let cases: Vec<Vec<u8>> = vec![
            Vec::new(),
            b"abcd\n".to_vec(),
            "a".repeat(HEX_LEN - 1).into_bytes(),
            "a".repeat(HEX_LEN + 2).into_bytes(),
            format!("{}\n\n", "a".repeat(HEX_LEN)).into_bytes(),
            format!(" {}", "a".repeat(HEX_LEN - 1)).into_bytes(),
            secretish.clone().into_bytes(),
            vec![0x42; ROOT_KEY_LEN], // raw bytes are not the format
            vec![b'a'; 10_000],
        ];
        for contents in cases {
            std::fs::write(&path, &contents).unwrap();
            let msg = message(load_or_create_root_key(&path, true));
            assert!(
                msg.contains("bad.key") && msg.contains("malformed"),
                "{msg}"
            );
            assert!(
                !msg.contains(&secretish[..4]) && !msg.contains("aaaa"),
                "{msg}"
            );
            // `create` never overwrites a file that exists but is bad.
            assert_eq!(std::fs::read(&path).unwrap(), contents);
        }
    }

    #[test]
    fn unwritable_directory_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("no-such-dir").join("root.key");
        let msg = message(load_or_create_root_key(&path, true));
        assert!(
            msg.contains("root.key") || msg.contains("no-such-dir"),
            "{msg}"
        );
    }
}
