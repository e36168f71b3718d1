//! Bring-your-own key material.

use serde::{Deserialize, Serialize};

use crate::codec::{base64, Timestamp};
use crate::vocab::{ExpirationModel, WrappingAlgorithm, WrappingKeySpec};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct GetParametersForImportRequest {
    pub key_id: String,
    pub wrapping_algorithm: WrappingAlgorithm,
    pub wrapping_key_spec: WrappingKeySpec,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct GetParametersForImportResponse {
    pub key_id: String,
    #[serde(with = "base64")]
    pub import_token: Vec<u8>,
    #[serde(with = "base64")]
    pub public_key: Vec<u8>,
    pub parameters_valid_to: Timestamp,
}

/// The material is wrapped (encrypted to the import public key), so it is not a secret here.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ImportKeyMaterialRequest {
    pub key_id: String,
    #[serde(with = "base64")]
    pub import_token: Vec<u8>,
    #[serde(with = "base64")]
    pub encrypted_key_material: Vec<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_to: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiration_model: Option<ExpirationModel>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ImportKeyMaterialResponse {
    pub key_id: String,
    pub key_material_id: String,
}
