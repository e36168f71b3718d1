//! Durable storage of key records and aliases. The engine keeps every record in memory and
//! writes through to a store: a write returns only once it is durable, so an acknowledged
//! CreateKey, rotation or import survives `kill -9`.

use async_trait::async_trait;

use crate::error::Result;
use crate::record::{AliasRecord, KeyId, KeyRecord, Scope};

pub mod embedded;
pub mod memory;
pub mod root_file;

/// A change another writer (another engine replica) made to the records a store holds. A store
/// shared between replicas reports these as a stream the engine follows ([`Kms::follow`]); the
/// store never calls into the engine.
///
/// [`Kms::follow`]: crate::service::Kms::follow
#[derive(Clone, Debug)]
pub enum StoreChange {
    /// A key record written (or listed again).
    Key(KeyRecord),
    /// A key record removed.
    KeyGone {
        key_id: KeyId,
    },
    Alias(AliasRecord),
    AliasGone {
        scope: Scope,
        name: String,
    },
}

/// A [`StoreChange`] and where the engine answers once it holds it: `Err` when it cannot load
/// the record (the store then does not count it as applied, so a write based on the older
/// record conflicts rather than overwriting it).
pub struct Followed {
    pub change: StoreChange,
    pub applied: tokio::sync::oneshot::Sender<Result<()>>,
}

/// Everything a store holds, read once at start-up.
#[derive(Default)]
pub struct Snapshot {
    pub keys: Vec<KeyRecord>,
    pub aliases: Vec<AliasRecord>,
}

#[async_trait]
pub trait KeyStore: Send + Sync + 'static {
    async fn load(&self) -> Result<Snapshot>;
    /// Insert or replace; durable when this returns Ok.
    async fn put_key(&self, key: &KeyRecord) -> Result<()>;
    async fn delete_key(&self, scope: &Scope, key_id: KeyId) -> Result<()>;
    async fn put_alias(&self, alias: &AliasRecord) -> Result<()>;
    async fn delete_alias(&self, scope: &Scope, name: &str) -> Result<()>;

    /// Whether other engine replicas write this store too, so this engine may not hold yet
    /// what they wrote (see [`KeyStore::catch_up_key`]). A store only this engine writes says
    /// no, and its requests skip the catch-up bookkeeping altogether.
    fn shared(&self) -> bool {
        false
    }

    /// Look in the store for a key this engine does not hold: another replica may have
    /// written it a moment ago, before this replica's watch brought it. True when the store
    /// had it and the engine now holds it (a shared store reports it through its change stream
    /// and returns once the engine has applied it). A store only this engine writes has nothing
    /// the engine lacks.
    async fn catch_up_key(&self, key_id: KeyId) -> Result<bool> {
        let _ = key_id;
        Ok(false)
    }
}
