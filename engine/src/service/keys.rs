//! Key lifecycle: create, describe, list, enable/disable, deletion windows, rotation, tags and
//! key policies.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;

use kubekms_proto::ops::{
    CreateKeyRequest, DescribeExtra, DescribeKeyRequest, Empty, EnableKeyRotationRequest,
    GetKeyPolicyRequest, GetKeyPolicyResponse, GetKeyRotationStatusResponse, KeyIdRequest,
    KeyIdResponse, KeyListEntry, KeyMetadata, KeyMetadataResponse, ListKeyPoliciesRequest,
    ListKeyPoliciesResponse, ListKeyRotationsRequest, ListKeyRotationsResponse, ListKeysRequest,
    ListKeysResponse, ListResourceTagsRequest, ListResourceTagsResponse, PutKeyPolicyRequest,
    RotationState, RotationsListEntry, ScheduleKeyDeletionRequest, ScheduleKeyDeletionResponse,
    Tag, TagResourceRequest, UntagResourceRequest, UpdateKeyDescriptionRequest,
};
use kubekms_proto::{Action, Timestamp};

use super::checks;
use super::{attempt, Aliases, Caller, KeyEntry, Kms, Outcome, Refused};
use crate::clock::{Millis, MILLIS_PER_DAY};
use crate::error::{KmsError, Result};
use crate::model::{KeyManagerType, KeySpec, KeyState, KeyUsage, OriginType};
use crate::policy::{Decision, KeyPolicy, Request as PolicyRequest};
use crate::record::{KeyId, KeyRecord, RotationConfig, RotationType};

const MAX_ON_DEMAND_ROTATIONS: usize = 25;

/// What a part of `KubekmsInclude` the caller may not read does to the request.
#[derive(Clone, Copy)]
enum OnRefusal {
    /// The request fails with the refusal (DescribeKey).
    Fail,
    /// The part is left out (CreateKey, whose key exists by then).
    LeaveOut,
}
const MAX_TAGS: usize = 50;
const MAX_POLICY_BYTES: usize = 32 * 1024;

impl Kms {
    pub(crate) fn metadata(&self, entry: &KeyEntry) -> KeyMetadata {
        let r = &entry.record;
        let state = self.effective_state(r);
        let import = r.import.as_ref();
        KeyMetadata {
            aws_account_id: r.scope.account.clone(),
            key_id: r.key_id.to_string(),
            arn: entry.arn().to_owned(),
            creation_date: Timestamp(r.created),
            enabled: state == KeyState::Enabled,
            description: r.description.clone(),
            key_usage: r.usage,
            key_state: state,
            deletion_date: r.deletion_date.map(Timestamp),
            pending_deletion_window_in_days: r
                .pending_window_days
                .filter(|_| r.deletion_date.is_some()),
            valid_to: import
                .and_then(|i| i.valid_to)
                .filter(|_| !r.versions.is_empty())
                .map(Timestamp),
            origin: r.origin,
            expiration_model: import
                .filter(|_| !r.versions.is_empty())
                .map(|i| i.expiration_model),
            key_manager: KeyManagerType::Customer,
            customer_master_key_spec: r.spec,
            key_spec: r.spec,
            encryption_algorithms: Cow::Borrowed(r.spec.encryption_algorithms(r.usage)),
            signing_algorithms: Cow::Borrowed(r.spec.signing_algorithms(r.usage)),
            mac_algorithms: Cow::Borrowed(if r.usage == KeyUsage::GenerateVerifyMac {
                r.spec.mac_algorithms()
            } else {
                &[]
            }),
            multi_region: false,
            current_version: r.versions.last().map(|v| v.version),
            revision: Some(r.revision),
        }
    }

    pub async fn create_key(
        &self,
        caller: &Caller,
        mut req: CreateKeyRequest,
    ) -> Outcome<KeyMetadataResponse> {
        let include = req.include.take().unwrap_or_default();
        let record = attempt!(self.new_key_record(caller, req));
        let arn: Arc<str> = record.arn().into();
        let result = async {
            let spec = record.spec;
            let mut record = record;
            let initial = if record.origin == OriginType::AwsKms {
                let (material, prepared) = self.generate_prepared(spec).await?;
                let version = self.add_version(&mut record, &material, RotationType::Initial)?;
                Some((version, prepared))
            } else {
                None
            };
            let _guard = self.key_lock(record.key_id).lock().await;
            let entry = self.commit_key(None, record, initial).await?;
            let mut response = KeyMetadataResponse::metadata(self.metadata(&entry));
            // The key exists now: a part the caller may not read is left out, not an error.
            self.include(caller, &entry, &include, &mut response, OnRefusal::LeaveOut)
                .map_err(Refused::into_error)?;
            Ok(response)
        }
        .await;
        // The new key is named in the audit log once its request is valid and allowed.
        Outcome {
            result,
            keys: vec![arn],
        }
    }

    /// CreateKey's request, checked and authorized, as the record of the key to create (with
    /// no material yet).
    fn new_key_record(&self, caller: &Caller, req: CreateKeyRequest) -> Result<KeyRecord> {
        self.authorize_keyless(caller, Action::CreateKey)?;
        let rotation_days = req
            .rotation_period_in_days
            .map(|days| rotation_period("kubekmsRotationPeriodInDays", Some(days)))
            .transpose()?;
        if req.custom_key_store_id.is_some() || req.xks_key_id.is_some() {
            return Err(KmsError::UnsupportedOperation(
                "Custom key stores are not supported".into(),
            ));
        }
        if req.multi_region == Some(true) {
            return Err(KmsError::UnsupportedOperation(
                "Multi-Region keys are not supported".into(),
            ));
        }
        let spec = match (req.key_spec, req.customer_master_key_spec) {
            (Some(_), Some(_)) => {
                return Err(KmsError::validation(
                    "You cannot specify KeySpec and CustomerMasterKeySpec in the same request",
                ))
            }
            (Some(s), None) | (None, Some(s)) => s,
            (None, None) => KeySpec::SymmetricDefault,
        };
        let usage = req.key_usage.unwrap_or(spec.default_usage());
        if !spec.allowed_usages().contains(&usage) {
            return Err(KmsError::validation(format!(
                "KeyUsage {usage} is not compatible with KeySpec {spec}"
            )));
        }
        let origin = match req.origin {
            None => OriginType::AwsKms,
            Some(OriginType::AwsCloudhsm | OriginType::ExternalKeyStore) => {
                return Err(KmsError::UnsupportedOperation(
                    "Custom key stores are not supported".into(),
                ))
            }
            Some(o) => o,
        };
        let description = req.description.unwrap_or_default();
        checks::check_len("description", description.len(), 0, 8192)?;
        let tags = validate_tags(req.tags.unwrap_or_default(), BTreeMap::new())?;
        // The default document too: a key creator that is not an administrator would be
        // locked out of a key with the account-only default.
        let policy = checked_policy(
            caller,
            req.policy
                .unwrap_or_else(|| default_policy(&caller.scope.account)),
            req.bypass_policy_lockout_safety_check,
        )?;

        let now = self.now();
        let mut record = KeyRecord {
            scope: caller.scope.clone(),
            key_id: KeyId::random(),
            created: now,
            description,
            spec,
            usage,
            origin,
            state: if origin == OriginType::External {
                KeyState::PendingImport
            } else {
                KeyState::Enabled
            },
            deletion_date: None,
            pending_window_days: None,
            rotation: None,
            versions: Vec::new(),
            import: None,
            tags,
            policy,
            revision: 0,
        };
        // Before the (slow) material generation.
        if let Some(days) = rotation_days {
            self.enable_rotation(&mut record, days, now)?;
        }
        Ok(record)
    }

    pub async fn describe_key(
        &self,
        caller: &Caller,
        req: DescribeKeyRequest,
    ) -> Outcome<KeyMetadataResponse> {
        attempt!(checks::grant_tokens(req.grant_tokens.as_deref()));
        let entry = attempt!(self.authorized(
            caller,
            Action::DescribeKey,
            &req.key_id,
            Aliases::Allowed,
            None
        ));
        let mut response = KeyMetadataResponse::metadata(self.metadata(&entry));
        let include = req.include.unwrap_or_default();
        attempt!(self.include(caller, &entry, &include, &mut response, OnRefusal::Fail));
        Outcome::on(&entry, Ok(response))
    }

    /// Adds the parts of `include` to `response`, each only if `caller` may do the operations
    /// that would read it alone.
    fn include(
        &self,
        caller: &Caller,
        entry: &KeyEntry,
        include: &[DescribeExtra],
        response: &mut KeyMetadataResponse,
        on_refusal: OnRefusal,
    ) -> Result<(), Refused> {
        let allowed = |actions: &[Action]| -> Result<bool, Refused> {
            for action in actions {
                if let Err(refusal) = self.authorize_entry(caller, *action, entry, None) {
                    return match on_refusal {
                        OnRefusal::Fail => Err(refusal),
                        OnRefusal::LeaveOut => Ok(false),
                    };
                }
            }
            Ok(true)
        };
        if include.contains(&DescribeExtra::Tags) && allowed(&[Action::ListResourceTags])? {
            response.tags = Some(tags_of(&entry.record));
        }
        if include.contains(&DescribeExtra::Rotation)
            && allowed(&[Action::GetKeyRotationStatus, Action::ListKeyRotations])?
        {
            response.rotation = rotates(&entry.record).then(|| RotationState {
                status: rotation_status(entry),
                last_rotation: rotations(entry).pop().map(|(_, r)| r),
            });
        }
        Ok(())
    }

    pub async fn list_keys(
        &self,
        caller: &Caller,
        req: ListKeysRequest,
    ) -> Outcome<ListKeysResponse> {
        let result = (|| {
            self.authorize_keyless(caller, Action::ListKeys)?;
            let mut items: Vec<KeyListEntry> = {
                let tables = self.tables.read();
                tables
                    .keys
                    .values()
                    .filter(|e| e.record.scope == caller.scope && !self.deletion_due(&e.record))
                    .filter(|e| self.lists(caller, e))
                    .map(|e| KeyListEntry {
                        key_id: e.record.key_id.to_string(),
                        key_arn: e.arn().to_owned(),
                    })
                    .collect()
            };
            items.sort_by(|a, b| a.key_id.cmp(&b.key_id));
            let (keys, next_marker) =
                checks::paginate(items, req.limit, req.marker.as_deref(), 100, 1000, |i| {
                    i.key_id.clone()
                })?;
            Ok(ListKeysResponse {
                keys,
                truncated: next_marker.is_some(),
                next_marker,
            })
        })();
        Outcome::keyless(result)
    }

    pub async fn update_key_description(
        &self,
        caller: &Caller,
        req: UpdateKeyDescriptionRequest,
    ) -> Outcome<Empty> {
        attempt!(checks::check_len(
            "description",
            req.description.len(),
            0,
            8192
        ));
        self.modify(
            caller,
            Action::UpdateKeyDescription,
            &req.key_id,
            |_, record| {
                record.description = req.description.clone();
                Ok(())
            },
        )
        .await
        .map(|_| Empty {})
    }

    pub async fn enable_key(&self, caller: &Caller, req: KeyIdRequest) -> Outcome<Empty> {
        self.set_enabled(caller, Action::EnableKey, req, true).await
    }

    pub async fn disable_key(&self, caller: &Caller, req: KeyIdRequest) -> Outcome<Empty> {
        self.set_enabled(caller, Action::DisableKey, req, false)
            .await
    }

    /// EnableKey and DisableKey: only between those two states.
    async fn set_enabled(
        &self,
        caller: &Caller,
        action: Action,
        req: KeyIdRequest,
        enabled: bool,
    ) -> Outcome<Empty> {
        self.modify(caller, action, &req.key_id, |kms, record| {
            match kms.effective_state(record) {
                KeyState::Enabled | KeyState::Disabled => {
                    record.state = if enabled {
                        KeyState::Enabled
                    } else {
                        KeyState::Disabled
                    };
                    Ok(())
                }
                state => Err(KmsError::InvalidState(format!(
                    "{} is {state}",
                    record.arn()
                ))),
            }
        })
        .await
        .map(|_| Empty {})
    }

    pub async fn schedule_key_deletion(
        &self,
        caller: &Caller,
        req: ScheduleKeyDeletionRequest,
    ) -> Outcome<ScheduleKeyDeletionResponse> {
        let days = attempt!(checks::check_range(
            "pendingWindowInDays",
            req.pending_window_in_days.unwrap_or(30),
            7,
            30,
        ));
        let now = self.now();
        // `modify` already refuses a key that is pending deletion.
        self.modify(
            caller,
            Action::ScheduleKeyDeletion,
            &req.key_id,
            |_, record| {
                record.state = KeyState::PendingDeletion;
                record.deletion_date = Some(now + days * MILLIS_PER_DAY);
                record.pending_window_days = Some(days as u32);
                Ok(())
            },
        )
        .await
        .map(|entry| ScheduleKeyDeletionResponse {
            key_id: entry.arn().to_owned(),
            deletion_date: entry.record.deletion_date.map(Timestamp),
            key_state: KeyState::PendingDeletion,
            pending_window_in_days: days,
        })
    }

    pub async fn cancel_key_deletion(
        &self,
        caller: &Caller,
        req: KeyIdRequest,
    ) -> Outcome<KeyIdResponse> {
        self.modify_any_state(
            caller,
            Action::CancelKeyDeletion,
            &req.key_id,
            |_, record| {
                if record.state != KeyState::PendingDeletion {
                    return Err(KmsError::InvalidState(format!(
                        "{} is not pending deletion.",
                        record.arn()
                    )));
                }
                // As in AWS, a key whose deletion is cancelled comes back Disabled (or still
                // waiting for its material).
                record.state =
                    if record.origin == OriginType::External && record.versions.is_empty() {
                        KeyState::PendingImport
                    } else {
                        KeyState::Disabled
                    };
                record.deletion_date = None;
                record.pending_window_days = None;
                Ok(())
            },
        )
        .await
        .map(|entry| KeyIdResponse {
            key_id: entry.arn().to_owned(),
        })
    }

    pub async fn enable_key_rotation(
        &self,
        caller: &Caller,
        req: EnableKeyRotationRequest,
    ) -> Outcome<Empty> {
        let days = attempt!(rotation_period(
            "rotationPeriodInDays",
            req.rotation_period_in_days
        ));
        let now = self.now();
        self.modify(
            caller,
            Action::EnableKeyRotation,
            &req.key_id,
            |kms, record| kms.enable_rotation(record, days, now),
        )
        .await
        .map(|_| Empty {})
    }

    /// Turn automatic rotation on in `record` (EnableKeyRotation, and CreateKey's
    /// KubekmsRotationPeriodInDays): the first rotation is one period from `now`.
    fn enable_rotation(&self, record: &mut KeyRecord, days: i64, now: Millis) -> Result<()> {
        self.require_rotatable(record)?;
        record.rotation = Some(RotationConfig {
            period_days: days as u32,
            next_rotation: now + days * MILLIS_PER_DAY,
        });
        Ok(())
    }

    pub async fn disable_key_rotation(&self, caller: &Caller, req: KeyIdRequest) -> Outcome<Empty> {
        self.modify(
            caller,
            Action::DisableKeyRotation,
            &req.key_id,
            |kms, record| {
                kms.require_rotatable(record)?;
                record.rotation = None;
                Ok(())
            },
        )
        .await
        .map(|_| Empty {})
    }

    fn require_rotatable(&self, record: &KeyRecord) -> Result<()> {
        if !rotates(record) {
            return Err(KmsError::UnsupportedOperation(format!(
                "{} does not support automatic rotation: only symmetric keys with AWS_KMS origin rotate",
                record.arn()
            )));
        }
        match self.effective_state(record) {
            KeyState::Enabled => Ok(()),
            KeyState::Disabled => Err(KmsError::Disabled(format!("{} is disabled.", record.arn()))),
            state => Err(KmsError::InvalidState(format!(
                "{} is {state}",
                record.arn()
            ))),
        }
    }

    pub async fn get_key_rotation_status(
        &self,
        caller: &Caller,
        req: KeyIdRequest,
    ) -> Outcome<GetKeyRotationStatusResponse> {
        let entry = attempt!(self.authorized(
            caller,
            Action::GetKeyRotationStatus,
            &req.key_id,
            Aliases::Refused,
            None
        ));
        let result = if rotates(&entry.record) {
            Ok(rotation_status(&entry))
        } else {
            Err(KmsError::UnsupportedOperation(format!(
                "{} does not support automatic rotation",
                entry.arn()
            )))
        };
        Outcome::on(&entry, result)
    }

    pub async fn rotate_key_on_demand(
        &self,
        caller: &Caller,
        req: KeyIdRequest,
    ) -> Outcome<KeyIdResponse> {
        let entry = attempt!(self
            .resolve(caller, &req.key_id, Aliases::Refused)
            .map_err(|e| self.absent(caller, Action::RotateKeyOnDemand, &req.key_id, e)));
        let result = async {
            let (_guard, entry) = self.lock_fresh(&entry).await?;
            self.authorize_entry(caller, Action::RotateKeyOnDemand, &entry, None)
                .map_err(Refused::into_error)?;
            self.require_rotatable(&entry.record)?;
            let on_demand = entry
                .record
                .versions
                .iter()
                .filter(|v| v.rotation_type == RotationType::OnDemand)
                .count();
            if on_demand >= MAX_ON_DEMAND_ROTATIONS {
                return Err(KmsError::LimitExceeded(format!(
                    "{} has reached the limit of {MAX_ON_DEMAND_ROTATIONS} on-demand rotations",
                    entry.arn()
                )));
            }
            let entry = self.rotate(&entry, RotationType::OnDemand).await?;
            Ok(KeyIdResponse {
                key_id: entry.arn().to_owned(),
            })
        }
        .await;
        Outcome::on(&entry, result)
    }

    /// Add a fresh version; the caller holds the key lock. Automatic rotations move the next
    /// rotation date one period on.
    pub(super) async fn rotate(
        &self,
        entry: &KeyEntry,
        kind: RotationType,
    ) -> Result<Arc<KeyEntry>> {
        let mut record = entry.record.clone();
        let (material, prepared) = self.generate_prepared(record.spec).await?;
        let version = self.add_version(&mut record, &material, kind)?;
        if let Some(rot) = record.rotation.as_mut() {
            let period = i64::from(rot.period_days) * MILLIS_PER_DAY;
            rot.next_rotation = match kind {
                // One rotation per period even if the engine was down for several.
                RotationType::Automatic => self.now() + period,
                _ => rot.next_rotation,
            };
        }
        let entry = self
            .commit_key(Some(entry), record, Some((version, prepared)))
            .await?;
        tracing::info!(key = %entry.arn(), version, ?kind, "key rotated");
        Ok(entry)
    }

    pub async fn list_key_rotations(
        &self,
        caller: &Caller,
        req: ListKeyRotationsRequest,
    ) -> Outcome<ListKeyRotationsResponse> {
        let entry = attempt!(self.authorized(
            caller,
            Action::ListKeyRotations,
            &req.key_id,
            Aliases::Refused,
            None
        ));
        let result = (|| {
            let r = &entry.record;
            if !rotates(r) {
                return Err(KmsError::UnsupportedOperation(format!(
                    "{} does not support rotation",
                    entry.arn()
                )));
            }
            let rotations = rotations(&entry);
            let (page, next_marker) = checks::paginate(
                rotations,
                req.limit,
                req.marker.as_deref(),
                100,
                1000,
                |(v, _)| format!("{v:010}"),
            )?;
            Ok(ListKeyRotationsResponse {
                rotations: page.into_iter().map(|(_, r)| r).collect(),
                truncated: next_marker.is_some(),
                next_marker,
            })
        })();
        Outcome::on(&entry, result)
    }

    pub async fn tag_resource(&self, caller: &Caller, req: TagResourceRequest) -> Outcome<Empty> {
        let TagResourceRequest { key_id, tags } = req;
        self.modify(caller, Action::TagResource, &key_id, |_, record| {
            record.tags = validate_tags(tags, std::mem::take(&mut record.tags))?;
            Ok(())
        })
        .await
        .map(|_| Empty {})
    }

    pub async fn untag_resource(
        &self,
        caller: &Caller,
        req: UntagResourceRequest,
    ) -> Outcome<Empty> {
        self.modify(caller, Action::UntagResource, &req.key_id, |_, record| {
            for k in &req.tag_keys {
                record.tags.remove(k);
            }
            Ok(())
        })
        .await
        .map(|_| Empty {})
    }

    pub async fn list_resource_tags(
        &self,
        caller: &Caller,
        req: ListResourceTagsRequest,
    ) -> Outcome<ListResourceTagsResponse> {
        let entry = attempt!(self.authorized(
            caller,
            Action::ListResourceTags,
            &req.key_id,
            Aliases::Refused,
            None
        ));
        let tags = tags_of(&entry.record);
        let result = checks::paginate(tags, req.limit, req.marker.as_deref(), 50, 50, |t| {
            t.key.clone()
        })
        .map(|(tags, next_marker)| ListResourceTagsResponse {
            tags,
            truncated: next_marker.is_some(),
            next_marker,
        });
        Outcome::on(&entry, result)
    }

    pub async fn get_key_policy(
        &self,
        caller: &Caller,
        req: GetKeyPolicyRequest,
    ) -> Outcome<GetKeyPolicyResponse> {
        attempt!(check_policy_name(req.policy_name.as_deref()));
        let entry = attempt!(self.authorized(
            caller,
            Action::GetKeyPolicy,
            &req.key_id,
            Aliases::Refused,
            None
        ));
        let response = GetKeyPolicyResponse {
            policy: entry.record.policy.clone(),
            policy_name: "default".to_owned(),
        };
        Outcome::on(&entry, Ok(response))
    }

    pub async fn put_key_policy(
        &self,
        caller: &Caller,
        req: PutKeyPolicyRequest,
    ) -> Outcome<Empty> {
        attempt!(check_policy_name(req.policy_name.as_deref()));
        // The document is judged once the caller may put one: a caller without the right is
        // told so, not what is wrong with its document.
        let bypass = req.bypass_policy_lockout_safety_check;
        self.modify(caller, Action::PutKeyPolicy, &req.key_id, |_, record| {
            record.policy = checked_policy(caller, req.policy, bypass)?;
            Ok(())
        })
        .await
        .map(|_| Empty {})
    }

    pub async fn list_key_policies(
        &self,
        caller: &Caller,
        req: ListKeyPoliciesRequest,
    ) -> Outcome<ListKeyPoliciesResponse> {
        let entry = attempt!(self.authorized(
            caller,
            Action::ListKeyPolicies,
            &req.key_id,
            Aliases::Refused,
            None
        ));
        let response = ListKeyPoliciesResponse {
            policy_names: vec!["default".to_owned()],
            truncated: false,
        };
        Outcome::on(&entry, Ok(response))
    }

    /// Read-modify-write of one key's record under its key lock, for `action`; refused while
    /// the key is pending deletion.
    pub(super) async fn modify<F>(
        &self,
        caller: &Caller,
        action: Action,
        key_id: &str,
        change: F,
    ) -> Outcome<Arc<KeyEntry>>
    where
        F: FnOnce(&Kms, &mut KeyRecord) -> Result<()>,
    {
        self.modify_any_state(caller, action, key_id, |kms, record| {
            kms.require_not_pending_deletion(record)?;
            change(kms, record)
        })
        .await
    }

    pub(super) async fn modify_any_state<F>(
        &self,
        caller: &Caller,
        action: Action,
        key_id: &str,
        change: F,
    ) -> Outcome<Arc<KeyEntry>>
    where
        F: FnOnce(&Kms, &mut KeyRecord) -> Result<()>,
    {
        let entry = attempt!(self
            .resolve(caller, key_id, Aliases::Refused)
            .map_err(|e| self.absent(caller, action, key_id, e)));
        let result = async {
            let (_guard, fresh) = self.lock_fresh(&entry).await?;
            // On the record the change is made to, under its lock.
            self.authorize_entry(caller, action, &fresh, None)
                .map_err(Refused::into_error)?;
            let mut record = fresh.record.clone();
            change(self, &mut record)?;
            self.commit_key(Some(&fresh), record, None).await
        }
        .await;
        Outcome::on(&entry, result)
    }
}

/// As in AWS, only symmetric encryption keys with AWS_KMS origin rotate.
fn rotates(record: &KeyRecord) -> bool {
    record.spec == KeySpec::SymmetricDefault && record.origin == OriginType::AwsKms
}

/// A rotation period in days as EnableKeyRotation accepts it (365 when absent); `field` names
/// the request member in the error.
fn rotation_period(field: &str, requested: Option<i64>) -> Result<i64> {
    checks::check_range(field, requested.unwrap_or(365), 90, 2560)
}

/// Merge `new` into `existing` with AWS's tag rules.
fn validate_tags(
    new: Vec<Tag>,
    mut existing: BTreeMap<String, String>,
) -> Result<BTreeMap<String, String>> {
    for tag in new {
        if tag.key.is_empty() || tag.key.chars().count() > 128 {
            return Err(KmsError::Tag(
                "Tag keys must be 1 to 128 characters long".into(),
            ));
        }
        if tag.value.chars().count() > 256 {
            return Err(KmsError::Tag(
                "Tag values must be at most 256 characters long".into(),
            ));
        }
        if tag.key.starts_with("aws:") {
            return Err(KmsError::Tag(
                "Tag keys beginning with 'aws:' are reserved".into(),
            ));
        }
        existing.insert(tag.key, tag.value);
    }
    if existing.len() > MAX_TAGS {
        return Err(KmsError::Tag(format!(
            "A key can have at most {MAX_TAGS} tags"
        )));
    }
    Ok(existing)
}

fn check_policy_name(name: Option<&str>) -> Result<()> {
    match name {
        None | Some("default") => Ok(()),
        Some(_) => Err(KmsError::NotFound(
            "The only key policy name is 'default'".into(),
        )),
    }
}

/// A key policy document as CreateKey and PutKeyPolicy accept it: within the size limit,
/// enforceable as written (see [`crate::policy`]), and, unless `bypass` (AWS's
/// BypassPolicyLockoutSafetyCheck), still letting `caller` put the key's policy afterwards, so
/// that nobody locks themselves out of a key by mistake.
fn checked_policy(caller: &Caller, policy: String, bypass: Option<bool>) -> Result<String> {
    if policy.is_empty() || policy.len() > MAX_POLICY_BYTES {
        return Err(KmsError::MalformedPolicyDocument(format!(
            "The key policy must be between 1 and {MAX_POLICY_BYTES} bytes"
        )));
    }
    let parsed = KeyPolicy::parse(&policy).map_err(KmsError::MalformedPolicyDocument)?;
    if bypass != Some(true) {
        let decision = parsed.evaluate(&PolicyRequest {
            subject: caller.subject(),
            action: Action::PutKeyPolicy,
            context: None,
            resource: None,
        });
        if decision != Decision::Allow {
            return Err(KmsError::MalformedPolicyDocument(
                "The new key policy will not allow you to update the key policy in the future."
                    .into(),
            ));
        }
    }
    Ok(policy)
}

pub(super) fn default_policy(account: &str) -> String {
    serde_json::json!({
        "Version": "2012-10-17",
        "Id": "key-default-1",
        "Statement": [{
            "Sid": "Enable IAM User Permissions",
            "Effect": "Allow",
            "Principal": { "AWS": format!("arn:aws:iam::{account}:root") },
            "Action": "kms:*",
            "Resource": "*"
        }]
    })
    .to_string()
}

/// GetKeyRotationStatus's answer for a key that rotates.
fn rotation_status(entry: &KeyEntry) -> GetKeyRotationStatusResponse {
    let rotation = entry.record.rotation.as_ref();
    GetKeyRotationStatusResponse {
        key_id: entry.arn().to_owned(),
        key_rotation_enabled: rotation.is_some(),
        rotation_period_in_days: rotation.map(|rot| rot.period_days),
        next_rotation_date: rotation.map(|rot| Timestamp(rot.next_rotation)),
    }
}

/// The key's rotations, oldest first, with the version each made.
fn rotations(entry: &KeyEntry) -> Vec<(u32, RotationsListEntry)> {
    entry
        .record
        .versions
        .iter()
        .filter(|v| v.rotation_type != RotationType::Initial)
        .map(|v| {
            (
                v.version,
                RotationsListEntry {
                    key_id: entry.arn().to_owned(),
                    rotation_date: Timestamp(v.created),
                    rotation_type: if v.rotation_type == RotationType::OnDemand {
                        kubekms_proto::vocab::RotationType::OnDemand
                    } else {
                        kubekms_proto::vocab::RotationType::Automatic
                    },
                    key_material_id: format!("{:08}", v.version),
                },
            )
        })
        .collect()
}

/// A key's tags as the API lists them.
fn tags_of(record: &KeyRecord) -> Vec<Tag> {
    record
        .tags
        .iter()
        .map(|(k, v)| Tag {
            key: k.clone(),
            value: v.clone(),
        })
        .collect()
}
