//! What the key store persists. Key material appears here only wrapped under the root key.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::clock::Millis;
use crate::model::{ExpirationModel, KeySpec, KeyState, KeyUsage, OriginType};

/// Keys live per (account, region), as in AWS.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Scope {
    pub account: String,
    pub region: String,
}

impl Scope {
    pub fn new(account: impl Into<String>, region: impl Into<String>) -> Self {
        Self {
            account: account.into(),
            region: region.into(),
        }
    }

    pub fn key_arn(&self, key_id: impl std::fmt::Display) -> String {
        format!(
            "arn:aws:kms:{}:{}:key/{}",
            self.region, self.account, key_id
        )
    }

    pub fn alias_arn(&self, alias_name: &str) -> String {
        format!(
            "arn:aws:kms:{}:{}:{}",
            self.region, self.account, alias_name
        )
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RotationType {
    Initial,
    Automatic,
    OnDemand,
    Imported,
}

/// One version of a key's material, wrapped (AEAD) under the root key with the key id and
/// version bound in as associated data.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyVersion {
    pub version: u32,
    pub created: Millis,
    pub rotation_type: RotationType,
    #[serde(with = "hex_bytes")]
    pub wrapped_material: Vec<u8>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RotationConfig {
    pub period_days: u32,
    pub next_rotation: Millis,
}

/// State of imported (EXTERNAL origin) key material.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportState {
    pub expiration_model: ExpirationModel,
    pub valid_to: Option<Millis>,
    /// A keyed digest of the first material imported: re-imports must match it.
    #[serde(with = "hex_bytes")]
    pub material_fingerprint: Vec<u8>,
}

/// A key's id: a UUID, written hyphenated and lowercase in records, ARNs and answers. Parsed
/// once where it enters (a record, a request, a ciphertext), never re-parsed from a string.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(Uuid);

impl KeyId {
    pub fn random() -> Self {
        KeyId(Uuid::new_v4())
    }

    pub fn from_uuid(id: Uuid) -> Self {
        KeyId(id)
    }

    pub fn uuid(self) -> Uuid {
        self.0
    }

    /// A key id as a client or a record writes it; `None` for anything but a UUID.
    pub fn parse(text: &str) -> Option<Self> {
        Uuid::parse_str(text).ok().map(KeyId)
    }
}

impl std::fmt::Display for KeyId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

impl Serialize for KeyId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(&self.0.hyphenated())
    }
}

impl<'de> Deserialize<'de> for KeyId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        KeyId::parse(&text).ok_or_else(|| serde::de::Error::custom("a key id is a UUID"))
    }
}

/// Equality is what a store watch needs to tell a replica's write from the echo of our own; the
/// record holds key material only wrapped, so comparing it leaks nothing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRecord {
    pub scope: Scope,
    pub key_id: KeyId,
    pub created: Millis,
    pub description: String,
    pub spec: KeySpec,
    pub usage: KeyUsage,
    pub origin: OriginType,
    /// The stored state. Enabled, Disabled, PendingDeletion or PendingImport.
    pub state: KeyState,
    pub deletion_date: Option<Millis>,
    pub pending_window_days: Option<u32>,
    pub rotation: Option<RotationConfig>,
    /// Oldest first; the last one is current. Empty for an EXTERNAL key before import.
    pub versions: Vec<KeyVersion>,
    pub import: Option<ImportState>,
    pub tags: BTreeMap<String, String>,
    pub policy: String,
    /// Counts the writes of this record (1 when created; 0 in records written before it was
    /// kept). Replicas write a record only over the version they read, so it only grows: a
    /// client told of revision n can tell an answer from a replica that has not seen it yet.
    #[serde(default)]
    pub revision: u64,
}

impl KeyRecord {
    pub fn arn(&self) -> String {
        self.scope.key_arn(self.key_id)
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AliasRecord {
    pub scope: Scope,
    /// Includes the `alias/` prefix, as AWS spells it.
    pub name: String,
    pub target_key_id: KeyId,
    pub created: Millis,
    pub updated: Millis,
}

mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        hex::decode(s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_ids_read_and_write_as_records_always_held_them() {
        let text = "1234abcd-0000-4000-8000-00000000beef";
        let json = format!(r#""{text}""#);
        let id: KeyId = serde_json::from_str(&json).unwrap();
        assert_eq!(id.to_string(), text);
        assert_eq!(serde_json::to_string(&id).unwrap(), json);
        // Upper case is read (a UUID is a UUID) and written back lower case, as ARNs use it.
        let upper: KeyId = serde_json::from_str(&json.to_uppercase()).unwrap();
        assert_eq!(upper, id);
        assert!(serde_json::from_str::<KeyId>(r#""k1""#).is_err());
        assert_eq!(
            Scope::new("111122223333", "eu-west-1").key_arn(id),
            format!("arn:aws:kms:eu-west-1:111122223333:key/{text}")
        );
    }
}
