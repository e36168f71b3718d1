//! Key lifecycle: create, describe, list, enable/disable, deletion windows, rotation, tags and
//! key policies.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use super::GrantTokens;
use crate::codec::Timestamp;
use crate::vocab::{
    EncryptionAlgorithm, ExpirationModel, KeyManagerType, KeySpec, KeyState, KeyUsage,
    MacAlgorithm, OriginType, RotationType, SigningAlgorithm,
};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tag {
    #[serde(rename = "TagKey")]
    pub key: String,
    #[serde(rename = "TagValue")]
    pub value: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CreateKeyRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_usage: Option<KeyUsage>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer_master_key_spec: Option<KeySpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_spec: Option<KeySpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<OriginType>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_key_store_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bypass_policy_lockout_safety_check: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<Tag>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multi_region: Option<bool>,
    #[serde(rename = "XksKeyId", default, skip_serializing_if = "Option::is_none")]
    pub xks_key_id: Option<String>,
    /// Not in AWS: create the key with automatic rotation already enabled at this period, in
    /// the same record and the same store write, so a controller needs no EnableKeyRotation
    /// call (one write per key instead of two). EnableKeyRotation's rules apply: 90 to 2560
    /// days, and only SYMMETRIC_DEFAULT keys with AWS_KMS origin.
    #[serde(
        rename = "KubekmsRotationPeriodInDays",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub rotation_period_in_days: Option<i64>,
    /// Not in AWS: answer these with the new key's metadata, as DescribeKey's `KubekmsInclude`
    /// does, so a controller needs no DescribeKey after creating a key. A part the caller may
    /// not read on the new key (its policy decides) is left out rather than failing the
    /// request: the key exists either way.
    #[serde(
        rename = "KubekmsInclude",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub include: Option<Vec<DescribeExtra>>,
}

/// CreateKey's and DescribeKey's answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct KeyMetadataResponse {
    pub key_metadata: KeyMetadata,
    /// Not in AWS: the key's tags, when `KubekmsInclude` asked for them.
    #[serde(
        rename = "KubekmsTags",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub tags: Option<Vec<Tag>>,
    /// Not in AWS: the key's rotation state, when `KubekmsInclude` asked for it (absent for a
    /// key that does not rotate).
    #[serde(
        rename = "KubekmsRotation",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub rotation: Option<RotationState>,
}

impl KeyMetadataResponse {
    /// An answer with the metadata only (CreateKey's, a plain DescribeKey's).
    pub fn metadata(key_metadata: KeyMetadata) -> Self {
        Self {
            key_metadata,
            tags: None,
            rotation: None,
        }
    }
}

/// What DescribeKey's (or CreateKey's) `KubekmsInclude` may ask for besides the metadata, read
/// with it from one record: a client keeping resources in step with the engine gets a consistent view in one
/// call. Each part needs the permission of the operation that would read it on its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DescribeExtra {
    /// The tags (`kms:ListResourceTags`).
    Tags,
    /// The rotation status and the latest rotation (`kms:GetKeyRotationStatus` and
    /// `kms:ListKeyRotations`).
    Rotation,
}

/// GetKeyRotationStatus's answer and ListKeyRotations's last entry, together.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RotationState {
    pub status: GetKeyRotationStatusResponse,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_rotation: Option<RotationsListEntry>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct KeyMetadata {
    #[serde(rename = "AWSAccountId")]
    pub aws_account_id: String,
    pub key_id: String,
    pub arn: String,
    pub creation_date: Timestamp,
    pub enabled: bool,
    pub description: String,
    pub key_usage: KeyUsage,
    pub key_state: KeyState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_date: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_deletion_window_in_days: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_to: Option<Timestamp>,
    pub origin: OriginType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiration_model: Option<ExpirationModel>,
    pub key_manager: KeyManagerType,
    pub customer_master_key_spec: KeySpec,
    pub key_spec: KeySpec,
    // Borrowed from the vocabulary's static tables when the engine answers: nothing to collect
    // per call.
    #[serde(default, skip_serializing_if = "<[_]>::is_empty")]
    pub encryption_algorithms: Cow<'static, [EncryptionAlgorithm]>,
    #[serde(default, skip_serializing_if = "<[_]>::is_empty")]
    pub signing_algorithms: Cow<'static, [SigningAlgorithm]>,
    #[serde(default, skip_serializing_if = "<[_]>::is_empty")]
    pub mac_algorithms: Cow<'static, [MacAlgorithm]>,
    pub multi_region: bool,
    /// Not in AWS: the current key-material version, so `kubectl get` can show it.
    #[serde(
        rename = "KubekmsCurrentKeyVersion",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub current_version: Option<u32>,
    /// Not in AWS: how many times the key's record was written (`kubekms_proto::changes`).
    #[serde(
        rename = "KubekmsRevision",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub revision: Option<u64>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DescribeKeyRequest {
    pub key_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant_tokens: Option<GrantTokens>,
    /// Not in AWS: also answer these (see [`DescribeExtra`]).
    #[serde(
        rename = "KubekmsInclude",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub include: Option<Vec<DescribeExtra>>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ListKeysRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub marker: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct KeyListEntry {
    pub key_id: String,
    pub key_arn: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ListKeysResponse {
    pub keys: Vec<KeyListEntry>,
    pub truncated: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_marker: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct UpdateKeyDescriptionRequest {
    pub key_id: String,
    pub description: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ScheduleKeyDeletionRequest {
    pub key_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_window_in_days: Option<i64>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ScheduleKeyDeletionResponse {
    pub key_id: String,
    pub deletion_date: Option<Timestamp>,
    pub key_state: KeyState,
    pub pending_window_in_days: i64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct EnableKeyRotationRequest {
    pub key_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotation_period_in_days: Option<i64>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct GetKeyRotationStatusResponse {
    pub key_id: String,
    pub key_rotation_enabled: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotation_period_in_days: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_rotation_date: Option<Timestamp>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ListKeyRotationsRequest {
    pub key_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub marker: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RotationsListEntry {
    pub key_id: String,
    pub rotation_date: Timestamp,
    pub rotation_type: RotationType,
    pub key_material_id: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ListKeyRotationsResponse {
    pub rotations: Vec<RotationsListEntry>,
    pub truncated: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_marker: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TagResourceRequest {
    pub key_id: String,
    pub tags: Vec<Tag>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct UntagResourceRequest {
    pub key_id: String,
    pub tag_keys: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ListResourceTagsRequest {
    pub key_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub marker: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ListResourceTagsResponse {
    pub tags: Vec<Tag>,
    pub truncated: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_marker: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct GetKeyPolicyRequest {
    pub key_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_name: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct GetKeyPolicyResponse {
    pub policy: String,
    pub policy_name: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PutKeyPolicyRequest {
    pub key_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_name: Option<String>,
    pub policy: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bypass_policy_lockout_safety_check: Option<bool>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ListKeyPoliciesRequest {
    pub key_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub marker: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ListKeyPoliciesResponse {
    pub policy_names: Vec<String>,
    pub truncated: bool,
}
