//! The operator's one way to the engine: typed calls made as the operator's own principal.
//! Requests and answers are the `kubekms_proto::ops` types; an engine refusal comes back as
//! [`Error::Kms`] with the engine's error, matched by variant.
//!
//! The engine runs in this process today, so a call is a function call; the controllers do
//! not depend on that.

use std::collections::BTreeMap;
use std::sync::Arc;

use kubekms_engine::service::{Caller, KeyChanged, Kms, Outcome};
use kubekms_proto::ops::{
    AliasTargetRequest, CreateKeyRequest, DeleteAliasRequest, DescribeKeyRequest,
    EnableKeyRotationRequest, GetKeyPolicyRequest, GetKeyRotationStatusResponse,
    GetParametersForImportRequest, GetParametersForImportResponse, ImportKeyMaterialRequest,
    KeyIdRequest, KeyMetadata, ListKeyRotationsRequest, ListKeysRequest, ListKeysResponse,
    ListResourceTagsRequest, PutKeyPolicyRequest, RotationsListEntry, ScheduleKeyDeletionRequest,
    Tag, TagResourceRequest, UntagResourceRequest, UpdateKeyDescriptionRequest,
};
use kubekms_proto::vocab::{WrappingAlgorithm, WrappingKeySpec};
use kubekms_proto::Operation;
use tokio::sync::mpsc::UnboundedReceiver;

use crate::error::{Error, Result};

/// The engine, as the operator's principal in the operator's account and region.
#[derive(Clone)]
pub struct EngineClient {
    kms: Arc<Kms>,
    caller: Caller,
}

/// The most keys, rotations or tags one List call returns.
const PAGE: i64 = 1000;

impl EngineClient {
    pub fn new(kms: Arc<Kms>, caller: Caller) -> Self {
        Self { kms, caller }
    }

    /// The engine's feed of changed keys (see [`KeyChanged`]).
    pub fn key_changes(&self) -> UnboundedReceiver<KeyChanged> {
        self.kms.subscribe_key_changes()
    }

    /// Who the operator is in the engine.
    pub fn caller(&self) -> &Caller {
        &self.caller
    }

    /// The key policy of a Key no KeyPolicy covers: the account's administrators and this
    /// operator (see `controller::policy`).
    pub fn default_key_policy(&self) -> serde_json::Value {
        crate::controller::policy::default_document(crate::controller::policy::Managers {
            account: &self.caller.scope.account,
            operator: self.caller.principal.arn(),
        })
    }

    pub async fn create_key(&self, request: CreateKeyRequest) -> Result<KeyMetadata> {
        let out = self.kms.create_key(&self.caller, request).await;
        done(Operation::CreateKey, out).map(|r| r.key_metadata)
    }

    pub async fn describe_key(&self, key_id: &str) -> Result<KeyMetadata> {
        let request = DescribeKeyRequest {
            key_id: key_id.to_owned(),
            grant_tokens: None,
        };
        let out = self.kms.describe_key(&self.caller, request).await;
        done(Operation::DescribeKey, out).map(|r| r.key_metadata)
    }

    /// One page of the operator's keys, from `marker` on.
    pub async fn list_keys(&self, marker: Option<String>) -> Result<ListKeysResponse> {
        let request = ListKeysRequest {
            limit: Some(PAGE),
            marker,
        };
        done(
            Operation::ListKeys,
            self.kms.list_keys(&self.caller, request).await,
        )
    }

    /// A key's tags (a key has at most 50).
    pub async fn tags(&self, key_id: &str) -> Result<BTreeMap<String, String>> {
        let request = ListResourceTagsRequest {
            key_id: key_id.to_owned(),
            limit: Some(50),
            marker: None,
        };
        let out = self.kms.list_resource_tags(&self.caller, request).await;
        done(Operation::ListResourceTags, out)
            .map(|r| r.tags.into_iter().map(|t| (t.key, t.value)).collect())
    }

    pub async fn tag(&self, key_id: &str, tags: Vec<Tag>) -> Result<()> {
        let request = TagResourceRequest {
            key_id: key_id.to_owned(),
            tags,
        };
        let out = self.kms.tag_resource(&self.caller, request).await;
        done(Operation::TagResource, out).map(drop)
    }

    pub async fn untag(&self, key_id: &str, tag_keys: Vec<String>) -> Result<()> {
        let request = UntagResourceRequest {
            key_id: key_id.to_owned(),
            tag_keys,
        };
        let out = self.kms.untag_resource(&self.caller, request).await;
        done(Operation::UntagResource, out).map(drop)
    }

    pub async fn update_description(&self, key_id: &str, description: String) -> Result<()> {
        let request = UpdateKeyDescriptionRequest {
            key_id: key_id.to_owned(),
            description,
        };
        let out = self.kms.update_key_description(&self.caller, request).await;
        done(Operation::UpdateKeyDescription, out).map(drop)
    }

    /// EnableKey (`enabled`) or DisableKey.
    pub async fn set_enabled(&self, key_id: &str, enabled: bool) -> Result<()> {
        let request = KeyIdRequest::new(key_id);
        if enabled {
            let out = self.kms.enable_key(&self.caller, request).await;
            done(Operation::EnableKey, out).map(drop)
        } else {
            let out = self.kms.disable_key(&self.caller, request).await;
            done(Operation::DisableKey, out).map(drop)
        }
    }

    pub async fn schedule_deletion(&self, key_id: &str, days: i64) -> Result<()> {
        let request = ScheduleKeyDeletionRequest {
            key_id: key_id.to_owned(),
            pending_window_in_days: Some(days),
        };
        let out = self.kms.schedule_key_deletion(&self.caller, request).await;
        done(Operation::ScheduleKeyDeletion, out).map(drop)
    }

    pub async fn cancel_deletion(&self, key_id: &str) -> Result<()> {
        let out = self
            .kms
            .cancel_key_deletion(&self.caller, KeyIdRequest::new(key_id))
            .await;
        done(Operation::CancelKeyDeletion, out).map(drop)
    }

    pub async fn rotation_status(&self, key_id: &str) -> Result<GetKeyRotationStatusResponse> {
        let out = self
            .kms
            .get_key_rotation_status(&self.caller, KeyIdRequest::new(key_id))
            .await;
        done(Operation::GetKeyRotationStatus, out)
    }

    pub async fn enable_rotation(&self, key_id: &str, period_days: i64) -> Result<()> {
        let request = EnableKeyRotationRequest {
            key_id: key_id.to_owned(),
            rotation_period_in_days: Some(period_days),
        };
        let out = self.kms.enable_key_rotation(&self.caller, request).await;
        done(Operation::EnableKeyRotation, out).map(drop)
    }

    pub async fn disable_rotation(&self, key_id: &str) -> Result<()> {
        let out = self
            .kms
            .disable_key_rotation(&self.caller, KeyIdRequest::new(key_id))
            .await;
        done(Operation::DisableKeyRotation, out).map(drop)
    }

    pub async fn rotate_on_demand(&self, key_id: &str) -> Result<()> {
        let out = self
            .kms
            .rotate_key_on_demand(&self.caller, KeyIdRequest::new(key_id))
            .await;
        done(Operation::RotateKeyOnDemand, out).map(drop)
    }

    /// The key's rotations, oldest first (the first page: at most 1,000, more than a key can
    /// have in its on-demand limit plus decades of yearly rotations).
    pub async fn rotations(&self, key_id: &str) -> Result<Vec<RotationsListEntry>> {
        let request = ListKeyRotationsRequest {
            key_id: key_id.to_owned(),
            limit: Some(PAGE),
            marker: None,
        };
        let out = self.kms.list_key_rotations(&self.caller, request).await;
        done(Operation::ListKeyRotations, out).map(|r| r.rotations)
    }

    pub async fn create_alias(&self, alias_name: &str, key_id: &str) -> Result<()> {
        let out = self
            .kms
            .create_alias(&self.caller, alias_target(alias_name, key_id))
            .await;
        done(Operation::CreateAlias, out).map(drop)
    }

    pub async fn update_alias(&self, alias_name: &str, key_id: &str) -> Result<()> {
        let out = self
            .kms
            .update_alias(&self.caller, alias_target(alias_name, key_id))
            .await;
        done(Operation::UpdateAlias, out).map(drop)
    }

    pub async fn delete_alias(&self, alias_name: &str) -> Result<()> {
        let request = DeleteAliasRequest {
            alias_name: alias_name.to_owned(),
        };
        let out = self.kms.delete_alias(&self.caller, request).await;
        done(Operation::DeleteAlias, out).map(drop)
    }

    pub async fn parameters_for_import(
        &self,
        key_id: &str,
        wrapping_algorithm: WrappingAlgorithm,
        wrapping_key_spec: WrappingKeySpec,
    ) -> Result<GetParametersForImportResponse> {
        let request = GetParametersForImportRequest {
            key_id: key_id.to_owned(),
            wrapping_algorithm,
            wrapping_key_spec,
        };
        let out = self
            .kms
            .get_parameters_for_import(&self.caller, request)
            .await;
        done(Operation::GetParametersForImport, out)
    }

    pub async fn import_key_material(&self, request: ImportKeyMaterialRequest) -> Result<()> {
        let out = self.kms.import_key_material(&self.caller, request).await;
        done(Operation::ImportKeyMaterial, out).map(drop)
    }

    pub async fn key_policy(&self, key_id: &str) -> Result<String> {
        let request = GetKeyPolicyRequest {
            key_id: key_id.to_owned(),
            policy_name: None,
        };
        let out = self.kms.get_key_policy(&self.caller, request).await;
        done(Operation::GetKeyPolicy, out).map(|r| r.policy)
    }

    /// `bypass`: skip the engine's check that the operator can still put the key's policy
    /// afterwards (a KeyPolicy that asked for it).
    pub async fn put_key_policy(&self, key_id: &str, policy: String, bypass: bool) -> Result<()> {
        let request = PutKeyPolicyRequest {
            key_id: key_id.to_owned(),
            policy_name: Some("default".to_owned()),
            policy,
            bypass_policy_lockout_safety_check: bypass.then_some(true),
        };
        let out = self.kms.put_key_policy(&self.caller, request).await;
        done(Operation::PutKeyPolicy, out).map(drop)
    }
}

fn alias_target(alias_name: &str, key_id: &str) -> AliasTargetRequest {
    AliasTargetRequest {
        alias_name: alias_name.to_owned(),
        target_key_id: key_id.to_owned(),
    }
}

/// An operation's answer, or the engine's refusal as [`Error::Kms`].
fn done<T>(op: Operation, outcome: Outcome<T>) -> Result<T> {
    outcome.result.map_err(|source| Error::Kms { op, source })
}
