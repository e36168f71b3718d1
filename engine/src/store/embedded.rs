//! The durable key store on local disk: one [redb](https://docs.rs/redb) file, `keys.redb`.
//!
//! # Ordering contract
//!
//! The service persists a record before it acknowledges or exposes it: it calls
//! [`KeyStore::put_key`] (or `put_alias`, `delete_*`) and waits for `Ok` before it updates its
//! in-memory table, answers the request, or lets any other request see the change. Every
//! method here returns only after its transaction has been committed with
//! [`Durability::Immediate`], that is after `fsync`, so an acknowledged CreateKey, rotation,
//! import or alias change survives `kill -9` and power loss. A write that fails leaves the
//! store as it was (each write is one atomic transaction), and the service then answers with an
//! error and leaves its memory untouched, so memory never runs ahead of disk.
//!
//! # Why redb
//!
//! * Pure Rust: no C or C++ toolchain in the build and no foreign code holding wrapped key
//!   material (RocksDB needs a long C++ build; LMDB and SQLite are C).
//! * ACID: data lives in copy-on-write B-trees, and a commit flips between two checksummed
//!   commit slots. After a crash the newest slot whose checksums verify wins, so there is no
//!   write-ahead log to replay and no half-written transaction to observe. We also enable
//!   quick-repair (which brings two-phase commit), so recovery after a crash is a near-instant
//!   slot check rather than a walk of the whole file, and the theoretical torn-commit attack on
//!   the single-fsync commit described in redb's design document does not apply.
//! * Actively maintained, with a stable file format since 1.0; sled, the other pure-Rust
//!   candidate, is an unmaintained beta whose on-disk format is not stable.
//! * Our load is tiny (control-plane writes, a full read at start-up), so its single-writer
//!   model costs nothing.
//!
//! Records are stored as JSON so the file can be inspected and migrated without this code.
//! Key material inside a [`KeyRecord`] is already wrapped under the root key.

use std::fs::OpenOptions;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition, TableHandle};

use super::{KeyStore, Snapshot};
use crate::error::{KmsError, Result};
use crate::record::{AliasRecord, KeyId, KeyRecord, Scope};

/// Key "account/region/key_id", value the JSON of a [`KeyRecord`].
const KEYS: Table = TableDefinition::new("keys");
/// Key "account/region/alias-name" (the name keeps its `alias/` prefix), value the JSON of an
/// [`AliasRecord`].
const ALIASES: Table = TableDefinition::new("aliases");

type Table = TableDefinition<'static, &'static str, &'static [u8]>;

pub const FILE_NAME: &str = "keys.redb";

/// redb defaults to a 1 GiB page cache; a key store is a few MiB at most and runs in a pod with
/// a memory limit.
const CACHE_BYTES: usize = 32 << 20;

pub struct EmbeddedStore {
    db: Arc<Database>,
    path: PathBuf,
}

impl EmbeddedStore {
    /// Open (or create) `dir/keys.redb`. Blocks on file I/O; call it at start-up.
    pub fn open(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| {
            KmsError::dependency(
                format!("cannot create key store directory {}", dir.display()),
                e,
            )
        })?;
        let path = dir.join(FILE_NAME);
        // The file holds wrapped key material: owner-only, even if it already existed.
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .and_then(|f| f.set_permissions(std::fs::Permissions::from_mode(0o600)));
        file.map_err(|e| {
            KmsError::dependency(format!("cannot open key store file {}", path.display()), e)
        })?;

        let db = Database::builder()
            .set_cache_size(CACHE_BYTES)
            // A plain open trusts the file and may panic if it was altered outside redb; this
            // turns such damage into an error instead. The store is small, so the check is cheap.
            .set_check_integrity_on_open(true)
            .create(&path)
            .map_err(storage_error("open the database"))?;

        // Create both tables up front so readers never meet a missing table.
        let txn = begin_durable_write(&db)?;
        txn.open_table(KEYS)
            .map_err(storage_error("create the keys table"))?;
        txn.open_table(ALIASES)
            .map_err(storage_error("create the aliases table"))?;
        txn.commit().map_err(storage_error("commit"))?;

        Ok(Self {
            db: Arc::new(db),
            path,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// One durable transaction that inserts (`Some`) or removes (`None`) one entry.
    async fn write(&self, table: Table, key: String, value: Option<Vec<u8>>) -> Result<()> {
        let db = Arc::clone(&self.db);
        blocking(move || {
            let txn = begin_durable_write(&db)?;
            {
                let mut t = txn
                    .open_table(table)
                    .map_err(storage_error("open a table"))?;
                match value {
                    Some(v) => {
                        t.insert(key.as_str(), v.as_slice())
                            .map_err(storage_error("insert"))?;
                    }
                    None => {
                        t.remove(key.as_str()).map_err(storage_error("remove"))?;
                    }
                }
            }
            txn.commit().map_err(storage_error("commit"))
        })
        .await
    }
}

#[async_trait]
impl KeyStore for EmbeddedStore {
    async fn load(&self) -> Result<Snapshot> {
        let db = Arc::clone(&self.db);
        blocking(move || {
            let txn = db.begin_read().map_err(storage_error("begin a read"))?;
            Ok(Snapshot {
                keys: read_table(&txn, KEYS, "key", |r: &KeyRecord| {
                    record_key(&r.scope, &r.key_id.to_string())
                })?,
                aliases: read_table(&txn, ALIASES, "alias", |r: &AliasRecord| {
                    record_key(&r.scope, &r.name)
                })?,
            })
        })
        .await
    }

    async fn put_key(&self, key: &KeyRecord) -> Result<()> {
        let value = encode(key)?;
        self.write(
            KEYS,
            record_key(&key.scope, &key.key_id.to_string()),
            Some(value),
        )
        .await
    }

    async fn delete_key(&self, scope: &Scope, key_id: KeyId) -> Result<()> {
        self.write(KEYS, record_key(scope, &key_id.to_string()), None)
            .await
    }

    async fn put_alias(&self, alias: &AliasRecord) -> Result<()> {
        let value = encode(alias)?;
        self.write(ALIASES, record_key(&alias.scope, &alias.name), Some(value))
            .await
    }

    async fn delete_alias(&self, scope: &Scope, name: &str) -> Result<()> {
        self.write(ALIASES, record_key(scope, name), None).await
    }
}

/// Every record of a table, each checked to be stored under the key it belongs under.
fn read_table<T: serde::de::DeserializeOwned>(
    txn: &redb::ReadTransaction,
    table: Table,
    kind: &'static str,
    key_of: impl Fn(&T) -> String,
) -> Result<Vec<T>> {
    let name = table.name();
    let table = txn
        .open_table(table)
        .map_err(storage_error(format!("open the {name} table")))?;
    let mut records = Vec::new();
    let unreadable = || storage_error(format!("read the {name} table"));
    for entry in table.iter().map_err(unreadable())? {
        let (k, v) = entry.map_err(unreadable())?;
        let record: T = decode(kind, k.value(), v.value())?;
        check_key(kind, k.value(), &key_of(&record))?;
        records.push(record);
    }
    Ok(records)
}

/// Account ids and region names contain no `/`, so the prefix is unambiguous even though alias
/// names (`alias/...`) do.
fn record_key(scope: &Scope, name: &str) -> String {
    format!("{}/{}/{}", scope.account, scope.region, name)
}

fn begin_durable_write(db: &Database) -> Result<redb::WriteTransaction> {
    let mut txn = db.begin_write().map_err(storage_error("begin a write"))?;
    // Immediate is redb's default; say so anyway, since the ordering contract rests on it.
    txn.set_durability(Durability::Immediate)
        .map_err(storage_error("set durability"))?;
    txn.set_quick_repair(true);
    Ok(txn)
}

/// redb calls block on disk I/O and fsync, which must not stall a runtime worker.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f).await.map_err(|e| {
        tracing::error!(error = %e, "key store task failed");
        KmsError::internal("key store task failed")
    })?
}

/// The client gets a fixed message; the database's error stays attached as the source.
fn storage_error<E>(what: impl std::fmt::Display) -> impl FnOnce(E) -> KmsError
where
    E: std::error::Error + Send + Sync + 'static,
{
    move |e| KmsError::dependency(format!("key store could not {what}"), e)
}

fn encode<T: serde::Serialize>(record: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(record).map_err(|e| {
        tracing::error!(error = %e, "cannot encode a record for the key store");
        KmsError::internal("cannot encode a record for the key store")
    })
}

fn decode<T: serde::de::DeserializeOwned>(kind: &str, key: &str, value: &[u8]) -> Result<T> {
    serde_json::from_slice(value).map_err(|e| {
        // serde_json messages can quote the input; log only where it broke.
        tracing::error!(
            kind,
            key,
            line = e.line(),
            column = e.column(),
            category = ?e.classify(),
            "unreadable record in the key store"
        );
        KmsError::Internal(format!(
            "key store holds an unreadable {kind} record under {key}"
        ))
    })
}

fn check_key(kind: &str, stored_under: &str, expected: &str) -> Result<()> {
    if stored_under == expected {
        Ok(())
    } else {
        tracing::error!(
            kind,
            stored_under,
            expected,
            "key store record under the wrong key"
        );
        Err(KmsError::Internal(format!(
            "key store holds a {kind} record under {stored_under} that belongs under {expected}"
        )))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};

    use super::*;
    use crate::model::{KeySpec, KeyState, KeyUsage, OriginType};
    use crate::record::{KeyVersion, RotationType};

    fn scope() -> Scope {
        Scope::new("111122223333", "eu-west-1")
    }

    /// Test keys by short name, as the UUIDs records hold.
    fn id(name: &str) -> KeyId {
        let n = name.bytes().fold(0x1000u128, |h, b| {
            h.wrapping_mul(131).wrapping_add(u128::from(b))
        });
        KeyId::from_uuid(uuid::Uuid::from_u128(n))
    }

    /// The short name of a test key's id.
    fn name_of(key_id: KeyId) -> String {
        ["k1", "k2", "good", "after", "survivor"]
            .into_iter()
            .find(|n| id(n) == key_id)
            .map_or_else(|| key_id.to_string(), str::to_owned)
    }

    fn key(name: &str, description: &str) -> KeyRecord {
        KeyRecord {
            scope: scope(),
            key_id: id(name),
            created: 1_700_000_000_000,
            description: description.to_string(),
            spec: KeySpec::SymmetricDefault,
            usage: KeyUsage::EncryptDecrypt,
            origin: OriginType::AwsKms,
            state: KeyState::Enabled,
            deletion_date: None,
            pending_window_days: None,
            rotation: None,
            versions: vec![KeyVersion {
                version: 1,
                created: 1_700_000_000_000,
                rotation_type: RotationType::Initial,
                wrapped_material: vec![0xde, 0xad, 0xbe, 0xef],
            }],
            import: None,
            tags: BTreeMap::from([("team".to_string(), "a".to_string())]),
            policy: "{}".to_string(),
            revision: 1,
        }
    }

    fn alias(name: &str, target: &str) -> AliasRecord {
        AliasRecord {
            scope: scope(),
            name: name.to_string(),
            target_key_id: id(target),
            created: 1,
            updated: 2,
        }
    }

    fn key_ids(s: &Snapshot) -> Vec<(String, String)> {
        let mut v: Vec<_> = s
            .keys
            .iter()
            .map(|k| (name_of(k.key_id), k.description.clone()))
            .collect();
        v.sort();
        v
    }

    fn alias_names(s: &Snapshot) -> Vec<(String, String)> {
        let mut v: Vec<_> = s
            .aliases
            .iter()
            .map(|a| (a.name.clone(), name_of(a.target_key_id)))
            .collect();
        v.sort();
        v
    }

    #[tokio::test]
    async fn put_replace_delete_round_trip_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = EmbeddedStore::open(dir.path()).unwrap();
            assert!(store.load().await.unwrap().keys.is_empty());
            store.put_key(&key("k1", "first")).await.unwrap();
            store.put_key(&key("k2", "second")).await.unwrap();
            store.put_alias(&alias("alias/app", "k1")).await.unwrap();
            store.put_alias(&alias("alias/other", "k2")).await.unwrap();
        }
        {
            let store = EmbeddedStore::open(dir.path()).unwrap();
            let s = store.load().await.unwrap();
            assert_eq!(
                key_ids(&s),
                vec![
                    ("k1".into(), "first".into()),
                    ("k2".into(), "second".into())
                ]
            );
            assert_eq!(
                alias_names(&s),
                vec![
                    ("alias/app".into(), "k1".into()),
                    ("alias/other".into(), "k2".into())
                ]
            );
            let k1 = s.keys.iter().find(|k| k.key_id == id("k1")).unwrap();
            assert_eq!(
                k1.versions[0].wrapped_material,
                vec![0xde, 0xad, 0xbe, 0xef]
            );
            assert_eq!(k1.tags.get("team").map(String::as_str), Some("a"));

            // Replace, and delete (including something absent, which is not an error).
            store.put_key(&key("k1", "renamed")).await.unwrap();
            store.delete_key(&scope(), id("k2")).await.unwrap();
            store
                .delete_key(&scope(), id("never-existed"))
                .await
                .unwrap();
            store.put_alias(&alias("alias/app", "k2")).await.unwrap();
            store.delete_alias(&scope(), "alias/other").await.unwrap();
        }
        let store = EmbeddedStore::open(dir.path()).unwrap();
        let s = store.load().await.unwrap();
        assert_eq!(key_ids(&s), vec![("k1".into(), "renamed".into())]);
        assert_eq!(alias_names(&s), vec![("alias/app".into(), "k2".into())]);
    }

    #[tokio::test]
    async fn scopes_are_kept_apart() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path()).unwrap();
        let mut other = key("k1", "other region");
        other.scope = Scope::new("111122223333", "us-east-1");
        store.put_key(&key("k1", "home")).await.unwrap();
        store.put_key(&other).await.unwrap();
        store.delete_key(&scope(), id("k1")).await.unwrap();
        let s = store.load().await.unwrap();
        assert_eq!(s.keys.len(), 1);
        assert_eq!(s.keys[0].scope.region, "us-east-1");
    }

    #[tokio::test]
    async fn file_is_owner_only() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path()).unwrap();
        let mode = std::fs::metadata(store.path())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[tokio::test]
    async fn a_second_open_of_the_same_store_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let _first = EmbeddedStore::open(dir.path()).unwrap();
        // The database's own error is kept as the source.
        let err = EmbeddedStore::open(dir.path()).err().unwrap();
        assert!(matches!(err, KmsError::Dependency { .. }), "{err:?}");
        assert!(std::error::Error::source(&err).is_some());
    }

    #[tokio::test]
    async fn garbage_value_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path()).unwrap();
        store.put_key(&key("good", "fine")).await.unwrap();
        store
            .write(
                KEYS,
                record_key(&scope(), "bad"),
                Some(b"{\"not\": a record".to_vec()),
            )
            .await
            .unwrap();
        match store.load().await {
            Err(KmsError::Internal(msg)) => {
                assert!(msg.contains("111122223333/eu-west-1/bad"), "{msg}");
                assert!(
                    !msg.contains("not"),
                    "message must not quote the stored bytes: {msg}"
                );
            }
            Err(other) => panic!("wrong error: {other:?}"),
            Ok(_) => panic!("a garbage record loaded"),
        }

        // Valid JSON of the wrong shape is refused too.
        store
            .write(KEYS, record_key(&scope(), "bad"), Some(b"[1,2,3]".to_vec()))
            .await
            .unwrap();
        assert!(matches!(store.load().await, Err(KmsError::Internal(_))));
    }

    #[tokio::test]
    async fn record_under_the_wrong_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path()).unwrap();
        let value = encode(&key("k1", "moved")).unwrap();
        store
            .write(
                KEYS,
                record_key(&scope(), &id("k2").to_string()),
                Some(value),
            )
            .await
            .unwrap();
        assert!(matches!(store.load().await, Err(KmsError::Internal(_))));
    }

    #[test]
    fn a_file_that_is_not_a_database_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE_NAME), vec![0x5a; 8192]).unwrap();
        assert!(matches!(
            EmbeddedStore::open(dir.path()),
            Err(KmsError::Dependency { .. })
        ));
    }

    const CRASH_DIR_ENV: &str = "KUBEKMS_STORE_CRASH_DIR";
    const WRITTEN_MARKER: &str = "KUBEKMS-STORE-WRITE-ACKNOWLEDGED";

    /// Run in a child process by `acknowledged_write_survives_kill_9`: writes, reports the
    /// acknowledgement, and waits to be killed.
    #[tokio::test]
    #[ignore = "helper: run in a child process by acknowledged_write_survives_kill_9"]
    async fn crash_child_writes_then_waits() {
        let Ok(dir) = std::env::var(CRASH_DIR_ENV) else {
            return;
        };
        let store = EmbeddedStore::open(Path::new(&dir)).unwrap();
        store
            .put_key(&key("survivor", "written before kill -9"))
            .await
            .unwrap();
        store
            .put_alias(&alias("alias/survivor", "survivor"))
            .await
            .unwrap();
        println!("{WRITTEN_MARKER}");
        std::thread::sleep(std::time::Duration::from_secs(300));
    }

    /// A real `kill -9`: the child process never drops the database or closes the file.
    #[tokio::test]
    async fn acknowledged_write_survives_kill_9() {
        let dir = tempfile::tempdir().unwrap();
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "store::embedded::tests::crash_child_writes_then_waits",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CRASH_DIR_ENV, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        // libtest prints the test's name on the same line as its output.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let seen = BufReader::new(stdout)
                .lines()
                .map_while(|l| l.ok())
                .any(|l| l.contains(WRITTEN_MARKER));
            let _ = tx.send(seen);
        });
        let acknowledged = rx
            .recv_timeout(std::time::Duration::from_secs(120))
            .unwrap_or(false);
        child.kill().unwrap(); // SIGKILL on Unix
        child.wait().unwrap();
        assert!(acknowledged, "the child never acknowledged its write");

        let store = EmbeddedStore::open(dir.path()).unwrap();
        let s = store.load().await.unwrap();
        assert_eq!(
            key_ids(&s),
            vec![("survivor".into(), "written before kill -9".into())]
        );
        assert_eq!(
            alias_names(&s),
            vec![("alias/survivor".into(), "survivor".into())]
        );
        // And the recovered store takes writes.
        store
            .put_key(&key("after", "after recovery"))
            .await
            .unwrap();
        assert_eq!(store.load().await.unwrap().keys.len(), 2);
    }
}
