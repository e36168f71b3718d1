//! Key lifecycle: create, describe, list, enable/disable, deletion windows, rotation, tags and
//! key policies.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::wire::{self, decode, encode, parse_enum, parse_opt_enum};
use super::{KeyEntry, Kms, RequestContext};
use crate::clock::{to_epoch_seconds, Millis, MILLIS_PER_DAY};
use crate::crypto::{self, KeyMaterial, PreparedKey};
use crate::error::{KmsError, Result};
use crate::model::{
    EncryptionAlgorithm, ExpirationModel, KeySpec, KeyState, KeyUsage, MacAlgorithm, OriginType,
    SigningAlgorithm,
};
use crate::record::{KeyRecord, RotationConfig, RotationType};

const MAX_ON_DEMAND_ROTATIONS: usize = 25;
const MAX_TAGS: usize = 50;
const MAX_POLICY_BYTES: usize = 32 * 1024;

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct KeyMetadata {
    #[serde(rename = "AWSAccountId")]
    aws_account_id: String,
    key_id: String,
    arn: String,
    creation_date: f64,
    enabled: bool,
    description: String,
    key_usage: KeyUsage,
    key_state: KeyState,
    #[serde(skip_serializing_if = "Option::is_none")]
    deletion_date: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pending_deletion_window_in_days: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    valid_to: Option<f64>,
    origin: OriginType,
    #[serde(skip_serializing_if = "Option::is_none")]
    expiration_model: Option<ExpirationModel>,
    key_manager: &'static str,
    customer_master_key_spec: KeySpec,
    key_spec: KeySpec,
    // The model's tables, serialized as their AWS names: nothing to collect per call.
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    encryption_algorithms: &'static [EncryptionAlgorithm],
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    signing_algorithms: &'static [SigningAlgorithm],
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    mac_algorithms: &'static [MacAlgorithm],
    multi_region: bool,
    /// Not in AWS: the current key-material version, so `kubectl get` can show it.
    #[serde(
        rename = "KubekmsCurrentKeyVersion",
        skip_serializing_if = "Option::is_none"
    )]
    current_version: Option<u32>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct KeyIdRequest {
    key_id: String,
}

#[derive(Deserialize, Serialize)]
pub(crate) struct Tag {
    #[serde(rename = "TagKey")]
    key: String,
    #[serde(rename = "TagValue")]
    value: String,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct KeyIdResponse<'a> {
    key_id: &'a str,
}

impl Kms {
    pub(crate) fn metadata(&self, entry: &KeyEntry) -> KeyMetadata {
        let r = &entry.record;
        let state = self.effective_state(r);
        let import = r.import.as_ref();
        KeyMetadata {
            aws_account_id: r.scope.account.clone(),
            key_id: r.key_id.clone(),
            arn: entry.arn().to_owned(),
            creation_date: to_epoch_seconds(r.created),
            enabled: state == KeyState::Enabled,
            description: r.description.clone(),
            key_usage: r.usage,
            key_state: state,
            deletion_date: r.deletion_date.map(to_epoch_seconds),
            pending_deletion_window_in_days: r
                .pending_window_days
                .filter(|_| r.deletion_date.is_some()),
            valid_to: import
                .and_then(|i| i.valid_to)
                .filter(|_| !r.versions.is_empty())
                .map(to_epoch_seconds),
            origin: r.origin,
            expiration_model: import
                .filter(|_| !r.versions.is_empty())
                .map(|i| i.expiration_model),
            key_manager: "CUSTOMER",
            customer_master_key_spec: r.spec,
            key_spec: r.spec,
            encryption_algorithms: r.spec.encryption_algorithms(r.usage),
            signing_algorithms: r.spec.signing_algorithms(r.usage),
            mac_algorithms: if r.usage == KeyUsage::GenerateVerifyMac {
                r.spec.mac_algorithms()
            } else {
                &[]
            },
            multi_region: false,
            current_version: r.versions.last().map(|v| v.version),
        }
    }

    pub(super) async fn create_key(
        &self,
        ctx: &RequestContext,
        body: &[u8],
        touched: &mut Option<String>,
    ) -> Result<Vec<u8>> {
        #[derive(Deserialize)]
        #[serde(rename_all = "PascalCase")]
        struct Req {
            policy: Option<String>,
            description: Option<String>,
            key_usage: Option<String>,
            customer_master_key_spec: Option<String>,
            key_spec: Option<String>,
            origin: Option<String>,
            custom_key_store_id: Option<String>,
            tags: Option<Vec<Tag>>,
            multi_region: Option<bool>,
            #[serde(rename = "XksKeyId")]
            xks_key_id: Option<String>,
            /// Not in AWS: create the key with automatic rotation already enabled at this
            /// period, in the same record and the same store write, so a controller needs no
            /// EnableKeyRotation call (one write per key instead of two). EnableKeyRotation's
            /// rules apply: 90 to 2560 days, and only SYMMETRIC_DEFAULT keys with AWS_KMS origin.
            #[serde(rename = "KubekmsRotationPeriodInDays")]
            rotation_period_in_days: Option<i64>,
        }
        let req: Req = decode(body)?;
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
        let spec = match (&req.key_spec, &req.customer_master_key_spec) {
            (Some(_), Some(_)) => {
                return Err(KmsError::validation(
                    "You cannot specify KeySpec and CustomerMasterKeySpec in the same request",
                ))
            }
            (Some(s), None) => parse_enum::<KeySpec>(s, "keySpec")?,
            (None, Some(s)) => parse_enum::<KeySpec>(s, "customerMasterKeySpec")?,
            (None, None) => KeySpec::SymmetricDefault,
        };
        let usage =
            parse_opt_enum::<KeyUsage>(&req.key_usage, "keyUsage")?.unwrap_or(spec.default_usage());
        if !spec.allowed_usages().contains(&usage) {
            return Err(KmsError::validation(format!(
                "KeyUsage {usage} is not compatible with KeySpec {spec}"
            )));
        }
        let origin = match req.origin.as_deref() {
            None => OriginType::AwsKms,
            Some("AWS_CLOUDHSM") | Some("EXTERNAL_KEY_STORE") => {
                return Err(KmsError::UnsupportedOperation(
                    "Custom key stores are not supported".into(),
                ))
            }
            Some(o) => parse_enum::<OriginType>(o, "origin")?,
        };
        let description = req.description.unwrap_or_default();
        wire::check_len("description", description.len(), 0, 8192)?;
        let tags = validate_tags(req.tags.unwrap_or_default(), BTreeMap::new())?;
        let policy = match req.policy {
            Some(p) => validate_policy(p)?,
            None => default_policy(&ctx.scope.account),
        };

        let key_id = Uuid::new_v4().to_string();
        let now = self.now();
        let mut record = KeyRecord {
            scope: ctx.scope.clone(),
            key_id: key_id.clone(),
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
        };
        // Before the (slow) material generation, and before the key is named in the audit log.
        if let Some(days) = rotation_days {
            self.enable_rotation(&mut record, days, now)?;
        }
        *touched = Some(record.arn());
        let initial = if origin == OriginType::AwsKms {
            let (material, prepared) = generate_prepared(spec).await?;
            let version = self.add_version(&mut record, &material, RotationType::Initial)?;
            Some((version, prepared))
        } else {
            None
        };
        let _guard = self.key_lock(&record.key_id).lock().await;
        let entry = self.commit_key(None, record, initial).await?;
        encode(&serde_json::json!({ "KeyMetadata": self.metadata(&entry) }))
    }

    pub(super) fn describe_key(
        &self,
        ctx: &RequestContext,
        body: &[u8],
        touched: &mut Option<String>,
    ) -> Result<Vec<u8>> {
        let req: KeyIdRequest = decode(body)?;
        let entry = self.resolve_touched(ctx, &req.key_id, true, touched)?;
        encode(&serde_json::json!({ "KeyMetadata": self.metadata(&entry) }))
    }

    pub(super) fn list_keys(&self, ctx: &RequestContext, body: &[u8]) -> Result<Vec<u8>> {
        #[derive(Deserialize)]
        #[serde(rename_all = "PascalCase")]
        struct Req {
            limit: Option<i64>,
            marker: Option<String>,
        }
        #[derive(Serialize)]
        struct Item {
            #[serde(rename = "KeyId")]
            key_id: String,
            #[serde(rename = "KeyArn")]
            key_arn: String,
        }
        let req: Req = decode(body)?;
        let mut items: Vec<Item> = {
            let tables = self.tables.read();
            tables
                .keys
                .values()
                .filter(|e| e.record.scope == ctx.scope && !self.deletion_due(&e.record))
                .map(|e| Item {
                    key_id: e.record.key_id.clone(),
                    key_arn: e.arn().to_owned(),
                })
                .collect()
        };
        items.sort_by(|a, b| a.key_id.cmp(&b.key_id));
        let (page, next) =
            wire::paginate(items, req.limit, req.marker.as_deref(), 100, 1000, |i| {
                i.key_id.clone()
            })?;
        encode(&page_response("Keys", page, next))
    }

    pub(super) async fn update_key_description(
        &self,
        ctx: &RequestContext,
        body: &[u8],
        touched: &mut Option<String>,
    ) -> Result<Vec<u8>> {
        #[derive(Deserialize)]
        #[serde(rename_all = "PascalCase")]
        struct Req {
            key_id: String,
            description: String,
        }
        let req: Req = decode(body)?;
        wire::check_len("description", req.description.len(), 0, 8192)?;
        self.modify(ctx, &req.key_id, touched, |_, record| {
            record.description = req.description.clone();
            Ok(())
        })
        .await?;
        Ok(b"{}".to_vec())
    }

    /// EnableKey and DisableKey: only between those two states.
    pub(super) async fn set_enabled(
        &self,
        ctx: &RequestContext,
        body: &[u8],
        touched: &mut Option<String>,
        enabled: bool,
    ) -> Result<Vec<u8>> {
        let req: KeyIdRequest = decode(body)?;
        self.modify(ctx, &req.key_id, touched, |kms, record| {
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
        .await?;
        Ok(b"{}".to_vec())
    }

    pub(super) async fn schedule_key_deletion(
        &self,
        ctx: &RequestContext,
        body: &[u8],
        touched: &mut Option<String>,
    ) -> Result<Vec<u8>> {
        #[derive(Deserialize)]
        #[serde(rename_all = "PascalCase")]
        struct Req {
            key_id: String,
            pending_window_in_days: Option<i64>,
        }
        let req: Req = decode(body)?;
        let days = wire::check_range(
            "pendingWindowInDays",
            req.pending_window_in_days.unwrap_or(30),
            7,
            30,
        )?;
        let now = self.now();
        let entry = self
            // `modify` already refuses a key that is pending deletion.
            .modify(ctx, &req.key_id, touched, |_, record| {
                record.state = KeyState::PendingDeletion;
                record.deletion_date = Some(now + days * MILLIS_PER_DAY);
                record.pending_window_days = Some(days as u32);
                Ok(())
            })
            .await?;
        encode(&serde_json::json!({
            "KeyId": entry.arn(),
            "DeletionDate": entry.record.deletion_date.map(to_epoch_seconds),
            "KeyState": "PendingDeletion",
            "PendingWindowInDays": days,
        }))
    }

    pub(super) async fn cancel_key_deletion(
        &self,
        ctx: &RequestContext,
        body: &[u8],
        touched: &mut Option<String>,
    ) -> Result<Vec<u8>> {
        let req: KeyIdRequest = decode(body)?;
        let entry = self
            .modify_any_state(ctx, &req.key_id, touched, |_, record| {
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
            })
            .await?;
        encode(&KeyIdResponse {
            key_id: entry.arn(),
        })
    }

    pub(super) async fn enable_key_rotation(
        &self,
        ctx: &RequestContext,
        body: &[u8],
        touched: &mut Option<String>,
    ) -> Result<Vec<u8>> {
        #[derive(Deserialize)]
        #[serde(rename_all = "PascalCase")]
        struct Req {
            key_id: String,
            rotation_period_in_days: Option<i64>,
        }
        let req: Req = decode(body)?;
        let days = rotation_period("rotationPeriodInDays", req.rotation_period_in_days)?;
        let now = self.now();
        self.modify(ctx, &req.key_id, touched, |kms, record| {
            kms.enable_rotation(record, days, now)
        })
        .await?;
        Ok(b"{}".to_vec())
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

    pub(super) async fn disable_key_rotation(
        &self,
        ctx: &RequestContext,
        body: &[u8],
        touched: &mut Option<String>,
    ) -> Result<Vec<u8>> {
        let req: KeyIdRequest = decode(body)?;
        self.modify(ctx, &req.key_id, touched, |kms, record| {
            kms.require_rotatable(record)?;
            record.rotation = None;
            Ok(())
        })
        .await?;
        Ok(b"{}".to_vec())
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

    pub(super) fn get_key_rotation_status(
        &self,
        ctx: &RequestContext,
        body: &[u8],
        touched: &mut Option<String>,
    ) -> Result<Vec<u8>> {
        let req: KeyIdRequest = decode(body)?;
        let entry = self.resolve_touched(ctx, &req.key_id, false, touched)?;
        let r = &entry.record;
        if !rotates(r) {
            return Err(KmsError::UnsupportedOperation(format!(
                "{} does not support automatic rotation",
                entry.arn()
            )));
        }
        let mut out = serde_json::json!({
            "KeyId": entry.arn(),
            "KeyRotationEnabled": r.rotation.is_some(),
        });
        if let Some(rot) = &r.rotation {
            out["RotationPeriodInDays"] = rot.period_days.into();
            out["NextRotationDate"] = to_epoch_seconds(rot.next_rotation).into();
        }
        encode(&out)
    }

    pub(super) async fn rotate_key_on_demand(
        &self,
        ctx: &RequestContext,
        body: &[u8],
        touched: &mut Option<String>,
    ) -> Result<Vec<u8>> {
        let req: KeyIdRequest = decode(body)?;
        let entry = self.resolve_touched(ctx, &req.key_id, false, touched)?;
        let (_guard, entry) = self.lock_fresh(&entry).await?;
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
        encode(&KeyIdResponse {
            key_id: entry.arn(),
        })
    }

    /// Add a fresh version; the caller holds the key lock. Automatic rotations move the next
    /// rotation date one period on.
    pub(super) async fn rotate(
        &self,
        entry: &KeyEntry,
        kind: RotationType,
    ) -> Result<Arc<KeyEntry>> {
        let mut record = entry.record.clone();
        let (material, prepared) = generate_prepared(record.spec).await?;
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

    pub(super) fn list_key_rotations(
        &self,
        ctx: &RequestContext,
        body: &[u8],
        touched: &mut Option<String>,
    ) -> Result<Vec<u8>> {
        #[derive(Deserialize)]
        #[serde(rename_all = "PascalCase")]
        struct Req {
            key_id: String,
            limit: Option<i64>,
            marker: Option<String>,
        }
        let req: Req = decode(body)?;
        let entry = self.resolve_touched(ctx, &req.key_id, false, touched)?;
        let r = &entry.record;
        if !rotates(r) {
            return Err(KmsError::UnsupportedOperation(format!(
                "{} does not support rotation",
                entry.arn()
            )));
        }
        let rotations: Vec<(u32, serde_json::Value)> = r
            .versions
            .iter()
            .filter(|v| v.rotation_type != RotationType::Initial)
            .map(|v| {
                (
                    v.version,
                    serde_json::json!({
                        "KeyId": entry.arn(),
                        "RotationDate": to_epoch_seconds(v.created),
                        "RotationType": if v.rotation_type == RotationType::OnDemand { "ON_DEMAND" } else { "AUTOMATIC" },
                        "KeyMaterialId": format!("{:08}", v.version),
                    }),
                )
            })
            .collect();
        let (page, next) = wire::paginate(
            rotations,
            req.limit,
            req.marker.as_deref(),
            100,
            1000,
            |(v, _)| format!("{v:010}"),
        )?;
        let page: Vec<serde_json::Value> = page.into_iter().map(|(_, j)| j).collect();
        encode(&page_response("Rotations", page, next))
    }

    pub(super) async fn tag_resource(
        &self,
        ctx: &RequestContext,
        body: &[u8],
        touched: &mut Option<String>,
    ) -> Result<Vec<u8>> {
        #[derive(Deserialize)]
        #[serde(rename_all = "PascalCase")]
        struct Req {
            key_id: String,
            tags: Vec<Tag>,
        }
        let Req { key_id, tags } = decode(body)?;
        self.modify(ctx, &key_id, touched, |_, record| {
            record.tags = validate_tags(tags, std::mem::take(&mut record.tags))?;
            Ok(())
        })
        .await?;
        Ok(b"{}".to_vec())
    }

    pub(super) async fn untag_resource(
        &self,
        ctx: &RequestContext,
        body: &[u8],
        touched: &mut Option<String>,
    ) -> Result<Vec<u8>> {
        #[derive(Deserialize)]
        #[serde(rename_all = "PascalCase")]
        struct Req {
            key_id: String,
            tag_keys: Vec<String>,
        }
        let req: Req = decode(body)?;
        self.modify(ctx, &req.key_id, touched, |_, record| {
            for k in &req.tag_keys {
                record.tags.remove(k);
            }
            Ok(())
        })
        .await?;
        Ok(b"{}".to_vec())
    }

    pub(super) fn list_resource_tags(
        &self,
        ctx: &RequestContext,
        body: &[u8],
        touched: &mut Option<String>,
    ) -> Result<Vec<u8>> {
        #[derive(Deserialize)]
        #[serde(rename_all = "PascalCase")]
        struct Req {
            key_id: String,
            limit: Option<i64>,
            marker: Option<String>,
        }
        let req: Req = decode(body)?;
        let entry = self.resolve_touched(ctx, &req.key_id, false, touched)?;
        let tags: Vec<Tag> = entry
            .record
            .tags
            .iter()
            .map(|(k, v)| Tag {
                key: k.clone(),
                value: v.clone(),
            })
            .collect();
        let (page, next) = wire::paginate(tags, req.limit, req.marker.as_deref(), 50, 50, |t| {
            t.key.clone()
        })?;
        encode(&page_response("Tags", page, next))
    }

    pub(super) fn get_key_policy(
        &self,
        ctx: &RequestContext,
        body: &[u8],
        touched: &mut Option<String>,
    ) -> Result<Vec<u8>> {
        #[derive(Deserialize)]
        #[serde(rename_all = "PascalCase")]
        struct Req {
            key_id: String,
            policy_name: Option<String>,
        }
        let req: Req = decode(body)?;
        check_policy_name(req.policy_name.as_deref())?;
        let entry = self.resolve_touched(ctx, &req.key_id, false, touched)?;
        encode(&serde_json::json!({ "Policy": entry.record.policy, "PolicyName": "default" }))
    }

    pub(super) async fn put_key_policy(
        &self,
        ctx: &RequestContext,
        body: &[u8],
        touched: &mut Option<String>,
    ) -> Result<Vec<u8>> {
        #[derive(Deserialize)]
        #[serde(rename_all = "PascalCase")]
        struct Req {
            key_id: String,
            policy_name: Option<String>,
            policy: String,
        }
        let req: Req = decode(body)?;
        check_policy_name(req.policy_name.as_deref())?;
        let policy = validate_policy(req.policy)?;
        self.modify(ctx, &req.key_id, touched, |_, record| {
            record.policy = policy.clone();
            Ok(())
        })
        .await?;
        Ok(b"{}".to_vec())
    }

    pub(super) fn list_key_policies(
        &self,
        ctx: &RequestContext,
        body: &[u8],
        touched: &mut Option<String>,
    ) -> Result<Vec<u8>> {
        let req: KeyIdRequest = decode(body)?;
        self.resolve_touched(ctx, &req.key_id, false, touched)?;
        encode(&serde_json::json!({ "PolicyNames": ["default"], "Truncated": false }))
    }

    /// Read-modify-write of one key's record under its key lock; refused while the key is
    /// pending deletion.
    pub(super) async fn modify<F>(
        &self,
        ctx: &RequestContext,
        key_id: &str,
        touched: &mut Option<String>,
        change: F,
    ) -> Result<Arc<KeyEntry>>
    where
        F: FnOnce(&Kms, &mut KeyRecord) -> Result<()>,
    {
        self.modify_any_state(ctx, key_id, touched, |kms, record| {
            kms.require_not_pending_deletion(record)?;
            change(kms, record)
        })
        .await
    }

    pub(super) async fn modify_any_state<F>(
        &self,
        ctx: &RequestContext,
        key_id: &str,
        touched: &mut Option<String>,
        change: F,
    ) -> Result<Arc<KeyEntry>>
    where
        F: FnOnce(&Kms, &mut KeyRecord) -> Result<()>,
    {
        let entry = self.resolve_touched(ctx, key_id, false, touched)?;
        let (_guard, entry) = self.lock_fresh(&entry).await?;
        let mut record = entry.record.clone();
        change(self, &mut record)?;
        self.commit_key(Some(&entry), record, None).await
    }
}

/// Fresh material for `spec`, parsed for use. Generation (RSA especially) and parsing are slow:
/// both run off the async workers.
async fn generate_prepared(spec: KeySpec) -> Result<(KeyMaterial, PreparedKey)> {
    tokio::task::spawn_blocking(move || {
        let material = crypto::generate_material(spec)?;
        let prepared = PreparedKey::new(spec, &material)?;
        Ok((material, prepared))
    })
    .await
    .map_err(|_| KmsError::internal("key generation was interrupted"))?
}

/// As in AWS, only symmetric encryption keys with AWS_KMS origin rotate.
fn rotates(record: &KeyRecord) -> bool {
    record.spec == KeySpec::SymmetricDefault && record.origin == OriginType::AwsKms
}

/// A rotation period in days as EnableKeyRotation accepts it (365 when absent); `field` names
/// the request member in the error.
fn rotation_period(field: &str, requested: Option<i64>) -> Result<i64> {
    wire::check_range(field, requested.unwrap_or(365), 90, 2560)
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

fn validate_policy(policy: String) -> Result<String> {
    if policy.is_empty() || policy.len() > MAX_POLICY_BYTES {
        return Err(KmsError::MalformedPolicyDocument(format!(
            "The key policy must be between 1 and {MAX_POLICY_BYTES} bytes"
        )));
    }
    let doc: serde_json::Value = serde_json::from_str(&policy).map_err(|_| {
        KmsError::MalformedPolicyDocument("The key policy is not valid JSON".into())
    })?;
    if !doc
        .get("Statement")
        .is_some_and(|s| s.is_array() || s.is_object())
    {
        return Err(KmsError::MalformedPolicyDocument(
            "The key policy must contain a Statement".into(),
        ));
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

pub(super) fn page_response<T: Serialize>(
    field: &str,
    page: Vec<T>,
    next: Option<String>,
) -> serde_json::Value {
    let mut out = serde_json::Map::new();
    out.insert(
        field.to_string(),
        serde_json::to_value(page).unwrap_or_default(),
    );
    out.insert("Truncated".into(), next.is_some().into());
    if let Some(m) = next {
        out.insert("NextMarker".into(), m.into());
    }
    serde_json::Value::Object(out)
}
