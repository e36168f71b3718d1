//! What the agent writes for the app: per data key, the current key's raw bytes in its file,
//! and beside it `<file>.keyring.json` with every generation the pod holds, by id, so data
//! encrypted under an earlier generation stays decryptable after a data-key rotation.
//!
//! Both files are written whole or not at all (a temporary file in the same directory, synced,
//! then renamed over the old one), readable by their owner only (mode 0400), the keyring
//! before the current key: a reader never sees half a file, and a current key it reads is in
//! the keyring it reads after. Key bytes live
//! in zeroizing buffers and are never formatted into anything but these files.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use zeroize::Zeroizing;

/// The keyring file's suffix after the data key's file name.
pub const KEYRING_SUFFIX: &str = ".keyring.json";
/// Owner read only.
pub const FILE_MODE: u32 = 0o400;

/// One generation of a data key, decrypted. No `Debug`: it holds key bytes.
pub struct HeldKey {
    pub id: String,
    pub generation: u32,
    pub key: Zeroizing<Vec<u8>>,
}

/// Why a keyring could not be written.
#[derive(Debug, thiserror::Error)]
pub enum KeyringError {
    #[error("data key {file:?} has no key to write")]
    Empty { file: String },
    #[error("writing {path}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// Write data key `file`'s keys into `dir`: the highest generation as the current key, all of
/// them in the keyring.
pub fn write(dir: &Path, file: &str, keys: &[HeldKey]) -> Result<(), KeyringError> {
    let current = current(keys).ok_or_else(|| KeyringError::Empty {
        file: file.to_owned(),
    })?;
    // The keyring first: a reader that sees the new current key finds it in the keyring.
    replace(
        dir,
        &format!("{file}{KEYRING_SUFFIX}"),
        keyring_json(current, keys).as_bytes(),
    )?;
    replace(dir, file, &current.key)
}

/// The keyring document of `keys` (as in the keyring file), `None` when there are none.
pub fn document(keys: &[HeldKey]) -> Option<Zeroizing<String>> {
    current(keys).map(|current| keyring_json(current, keys))
}

/// The current key: the highest generation.
fn current(keys: &[HeldKey]) -> Option<&HeldKey> {
    keys.iter().max_by_key(|k| k.generation)
}

/// `{"current": id, "keys": [{"id", "generation", "key": base64}, ...]}`, oldest first.
/// Built by hand into a zeroizing buffer, so no copy of a key outlives the call.
fn keyring_json(current: &HeldKey, keys: &[HeldKey]) -> Zeroizing<String> {
    let mut sorted: Vec<&HeldKey> = keys.iter().collect();
    sorted.sort_by_key(|k| k.generation);
    let mut out = Zeroizing::new(String::new());
    out.push_str("{\"current\":");
    out.push_str(&json_string(&current.id));
    out.push_str(",\"keys\":[");
    for (i, key) in sorted.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str("{\"id\":");
        out.push_str(&json_string(&key.id));
        out.push_str(&format!(",\"generation\":{},\"key\":\"", key.generation));
        let encoded = Zeroizing::new(B64.encode(&*key.key));
        out.push_str(&encoded);
        out.push_str("\"}");
    }
    out.push_str("]}\n");
    out
}

/// An id as a JSON string (ids are `<name>-<n>`, but quote whatever comes).
fn json_string(s: &str) -> String {
    serde_json::Value::String(s.to_owned()).to_string()
}

/// Put `bytes` at `dir/name` whole: a temporary file beside it, synced, renamed over it.
fn replace(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), KeyringError> {
    let path = dir.join(name);
    let io = |source| KeyringError::Io {
        path: path.display().to_string(),
        source,
    };
    let temporary = dir.join(format!(".{name}.tmp"));
    // A temporary file left by a write that died: owner read-only, so remove it first.
    match std::fs::remove_file(&temporary) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(e)),
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temporary)
        .map_err(io)?;
    file.write_all(bytes).map_err(io)?;
    file.set_permissions(std::fs::Permissions::from_mode(FILE_MODE))
        .map_err(io)?;
    file.sync_all().map_err(io)?;
    std::fs::rename(&temporary, &path).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(generation: u32, byte: u8) -> HeldKey {
        HeldKey {
            id: format!("db-{generation}"),
            generation,
            key: Zeroizing::new(vec![byte; 32]),
        }
    }

    #[test]
    fn the_current_key_and_the_keyring_are_written_owner_read_only() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "db.key", &[held(2, 0xbb), held(1, 0xaa)]).unwrap();
        let current = std::fs::read(dir.path().join("db.key")).unwrap();
        assert_eq!(current, vec![0xbb; 32], "the highest generation");
        let ring: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.path().join("db.key.keyring.json")).unwrap())
                .unwrap();
        assert_eq!(ring["current"], "db-2");
        assert_eq!(ring["keys"][0]["id"], "db-1");
        assert_eq!(ring["keys"][0]["generation"], 1);
        assert_eq!(
            B64.decode(ring["keys"][0]["key"].as_str().unwrap())
                .unwrap(),
            vec![0xaa; 32]
        );
        for name in ["db.key", "db.key.keyring.json"] {
            let mode = std::fs::metadata(dir.path().join(name))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, FILE_MODE, "{name}");
        }
        // No temporary file left behind.
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
    }

    #[test]
    fn a_second_write_replaces_the_first_and_a_leftover_temporary_is_cleared() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "db.key", &[held(1, 0xaa)]).unwrap();
        std::fs::write(dir.path().join(".db.key.tmp"), b"half").unwrap();
        write(dir.path(), "db.key", &[held(1, 0xaa), held(2, 0xbb)]).unwrap();
        assert_eq!(
            std::fs::read(dir.path().join("db.key")).unwrap(),
            vec![0xbb; 32]
        );
        assert!(!dir.path().join(".db.key.tmp").exists());
    }

    #[test]
    fn nothing_to_write_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            write(dir.path(), "db.key", &[]),
            Err(KeyringError::Empty { .. })
        ));
    }
}
