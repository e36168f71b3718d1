//! Durable storage of key records and aliases. The engine keeps every record in memory and
//! writes through to a store: a write returns only once it is durable, so an acknowledged
//! CreateKey, rotation or import survives `kill -9`.

use async_trait::async_trait;

use crate::error::Result;
use crate::record::{AliasRecord, KeyRecord, Scope};

pub mod embedded;
pub mod memory;
pub mod root_file;

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
    async fn delete_key(&self, scope: &Scope, key_id: &str) -> Result<()>;
    async fn put_alias(&self, alias: &AliasRecord) -> Result<()>;
    async fn delete_alias(&self, scope: &Scope, name: &str) -> Result<()>;
}
