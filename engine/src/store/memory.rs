//! A store that keeps nothing across restarts: for unit tests and throwaway engines.

use std::collections::BTreeMap;

use async_trait::async_trait;
use parking_lot::Mutex;

use super::{KeyStore, Snapshot};
use crate::error::Result;
use crate::record::{AliasRecord, KeyId, KeyRecord, Scope};

#[derive(Default)]
pub struct MemoryStore {
    keys: Mutex<BTreeMap<(Scope, KeyId), KeyRecord>>,
    aliases: Mutex<BTreeMap<(Scope, String), AliasRecord>>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl KeyStore for MemoryStore {
    async fn load(&self) -> Result<Snapshot> {
        Ok(Snapshot {
            keys: self.keys.lock().values().cloned().collect(),
            aliases: self.aliases.lock().values().cloned().collect(),
        })
    }

    async fn put_key(&self, key: &KeyRecord) -> Result<()> {
        self.keys
            .lock()
            .insert((key.scope.clone(), key.key_id), key.clone());
        Ok(())
    }

    async fn delete_key(&self, scope: &Scope, key_id: KeyId) -> Result<()> {
        self.keys.lock().remove(&(scope.clone(), key_id));
        Ok(())
    }

    async fn put_alias(&self, alias: &AliasRecord) -> Result<()> {
        self.aliases
            .lock()
            .insert((alias.scope.clone(), alias.name.clone()), alias.clone());
        Ok(())
    }

    async fn delete_alias(&self, scope: &Scope, name: &str) -> Result<()> {
        self.aliases
            .lock()
            .remove(&(scope.clone(), name.to_string()));
        Ok(())
    }
}
