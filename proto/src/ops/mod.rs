//! The typed requests and responses of the operations the engine serves, one struct per
//! botocore input and output shape, with botocore's member names on the wire. The JSON codec
//! is derived from these types; a transport only decodes, calls the engine and encodes.
//!
//! Types that carry plaintext or key material hold it in zeroizing memory and implement
//! neither `Debug` nor `Clone`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

mod aliases;
mod crypto;
mod import;
mod keys;

pub use aliases::*;
pub use crypto::*;
pub use import::*;
pub use keys::*;

/// An encryption context as it appears in a request: string keys and values.
pub type EncryptionContextMap = BTreeMap<String, String>;

/// The `GrantTokens` member. Grants are not supported yet; the tokens are checked for shape
/// (at most 10, each 1 to 8192 characters) as the model says.
pub type GrantTokens = Vec<String>;

/// The `Recipient` member (a Nitro Enclaves attestation document), which the engine refuses:
/// kept opaque.
pub type Recipient = serde_json::Value;

/// The answer of operations that return nothing: `{}`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Empty {}

/// A request that names only a key: EnableKey, DisableKey, CancelKeyDeletion,
/// DisableKeyRotation, GetKeyRotationStatus, RotateKeyOnDemand, DeleteImportedKeyMaterial.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct KeyIdRequest {
    pub key_id: String,
}

impl KeyIdRequest {
    pub fn new(key_id: impl Into<String>) -> Self {
        Self {
            key_id: key_id.into(),
        }
    }
}

/// An answer that names only the key (as its ARN): CancelKeyDeletion, RotateKeyOnDemand.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct KeyIdResponse {
    pub key_id: String,
}
