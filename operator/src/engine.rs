//! The operator's one way to the engine: typed calls made as the operator's own principal.
//! Requests and answers are the `kubekms_proto::ops` types; an engine refusal comes back as
//! [`Error::Kms`] with the engine's error, matched by variant.
//!
//! Two transports behind one seam: the engine in this process (`kubekms-operator run` without
//! `--engine-config`), where a call is a function call, and the engine in its own pods
//! ([`crate::remote`]), where a call is a signed HTTP request whose answer and refusal decode
//! into the same types. The controllers do not know which.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::stream::{BoxStream, Stream, StreamExt};
use kubekms_engine::service::{Caller, KeyChanged, Kms, Outcome};
use kubekms_proto::changes::{ListKeyChangesRequest, MAX_WAIT_SECONDS};
use kubekms_proto::ops::{
    AliasTargetRequest, CreateKeyRequest, DeleteAliasRequest, DescribeExtra, DescribeKeyRequest,
    EnableKeyRotationRequest, GetKeyPolicyRequest, GetParametersForImportRequest,
    GetParametersForImportResponse, ImportKeyMaterialRequest, KeyIdRequest, KeyMetadata,
    ListKeysRequest, ListKeysResponse, ListResourceTagsRequest, PutKeyPolicyRequest,
    ReEncryptRequest, RotationState, ScheduleKeyDeletionRequest, Tag, TagResourceRequest,
    UntagResourceRequest, UpdateKeyDescriptionRequest,
};
use kubekms_proto::vocab::{WrappingAlgorithm, WrappingKeySpec};
use kubekms_proto::Operation;

use crate::error::{Error, Result};
use crate::remote::{CallError, RemoteEngine};

/// The engine, as the operator's principal in the operator's account and region.
#[derive(Clone)]
pub struct EngineClient {
    transport: Transport,
    /// Who the operator is in the engine. In-process it is the caller of every call; remotely
    /// the engine derives the same principal from the operator's session, and this copy is
    /// what the operator writes into key policies.
    caller: Caller,
}

#[derive(Clone)]
enum Transport {
    InProcess(Arc<Kms>),
    Remote(Arc<RemoteEngine>),
}

/// One engine operation through whichever transport the client has: `$method` on the
/// in-process engine, or `Operation::$op` over HTTP with the same request, whose answer decodes
/// into the type the in-process method returns.
macro_rules! call {
    ($self:ident, $op:ident, $method:ident, $request:expr) => {{
        let request = $request;
        match &$self.transport {
            Transport::InProcess(kms) => {
                done(Operation::$op, kms.$method(&$self.caller, request).await)
            }
            Transport::Remote(remote) => remote
                .call(Operation::$op, &request)
                .await
                .map_err(|e| failed(Operation::$op, e)),
        }
    }};
}

/// The most keys, rotations or tags one List call returns.
const PAGE: i64 = 1000;

impl EngineClient {
    /// The engine in this process.
    pub fn new(kms: Arc<Kms>, caller: Caller) -> Self {
        Self {
            transport: Transport::InProcess(kms),
            caller,
        }
    }

    /// The engine in its own pods.
    pub fn remote(remote: Arc<RemoteEngine>, caller: Caller) -> Self {
        Self {
            transport: Transport::Remote(remote),
            caller,
        }
    }

    /// The engine's feed of changed keys in the operator's scope, whoever changed them (a
    /// request from any client, due work, another engine replica). In-process it is the
    /// engine's subscription; remotely a long poll (`kubekms_proto::changes`) that says
    /// [`KeyFeed::Resync`] when it may have missed changes. Runs until dropped.
    pub fn key_changes(&self) -> BoxStream<'static, KeyFeed> {
        let scope = self.caller.scope.clone();
        match &self.transport {
            Transport::InProcess(kms) => {
                let changes = kms.subscribe_key_changes();
                futures::stream::unfold(changes, |mut rx| async {
                    rx.recv().await.map(|change| (change, rx))
                })
                .filter(move |change: &KeyChanged| std::future::ready(change.scope == scope))
                // One engine: every answer after the change shows it.
                .map(|change| KeyFeed::Changed {
                    key_id: change.key_id.to_string(),
                    revision: None,
                })
                .boxed()
            }
            Transport::Remote(remote) => poll_key_changes(remote.clone()).boxed(),
        }
    }

    /// Who the operator is in the engine.
    pub fn caller(&self) -> &Caller {
        &self.caller
    }

    /// The key policy of a Key in `namespace` no KeyPolicy covers: the account's
    /// administrators, this operator and the namespace's injected data keys (see
    /// `controller::policy`).
    pub fn default_key_policy(&self, namespace: &str) -> serde_json::Value {
        crate::controller::policy::default_document(crate::controller::policy::Managers {
            account: &self.caller.scope.account,
            operator: self.caller.principal.arn(),
            namespace,
        })
    }

    pub async fn create_key(&self, request: CreateKeyRequest) -> Result<KeyMetadata> {
        call!(self, CreateKey, create_key, request).map(|r| r.key_metadata)
    }

    /// CreateKey answering the new key whole (`KubekmsInclude`: tags and rotation with the
    /// metadata), so a new Key costs one engine call; and whether the engine answered every
    /// part. A part left out (the key's policy does not let the operator read it) is taken
    /// from the request: the tags asked for, no rotation.
    pub async fn create_key_whole(
        &self,
        mut request: CreateKeyRequest,
    ) -> Result<(Described, bool)> {
        request.include = Some(vec![DescribeExtra::Tags, DescribeExtra::Rotation]);
        let asked_tags = request.tags.clone().unwrap_or_default();
        let asked_rotation = request.rotation_period_in_days.is_some();
        let r = call!(self, CreateKey, create_key, request)?;
        // A key created without rotation has none, whether or not the engine said so.
        let whole = r.tags.is_some() && (r.rotation.is_some() || !asked_rotation);
        let described = Described {
            metadata: r.key_metadata,
            tags: r
                .tags
                .unwrap_or(asked_tags)
                .into_iter()
                .map(|t| (t.key, t.value))
                .collect(),
            rotation: r.rotation,
        };
        Ok((described, whole))
    }

    pub async fn describe_key(&self, key_id: &str) -> Result<KeyMetadata> {
        let request = DescribeKeyRequest {
            key_id: key_id.to_owned(),
            grant_tokens: None,
            include: None,
        };
        call!(self, DescribeKey, describe_key, request).map(|r| r.key_metadata)
    }

    /// A key's metadata, tags and rotation state in one DescribeKey (the engine's
    /// `KubekmsInclude`): read from one record on one replica, so they agree with each other
    /// and with the record's revision.
    pub async fn describe_key_whole(&self, key_id: &str) -> Result<Described> {
        let request = DescribeKeyRequest {
            key_id: key_id.to_owned(),
            grant_tokens: None,
            include: Some(vec![DescribeExtra::Tags, DescribeExtra::Rotation]),
        };
        call!(self, DescribeKey, describe_key, request).map(|r| Described {
            metadata: r.key_metadata,
            tags: r
                .tags
                .unwrap_or_default()
                .into_iter()
                .map(|t| (t.key, t.value))
                .collect(),
            rotation: r.rotation,
        })
    }

    /// One page of the operator's keys, from `marker` on.
    pub async fn list_keys(&self, marker: Option<String>) -> Result<ListKeysResponse> {
        let request = ListKeysRequest {
            limit: Some(PAGE),
            marker,
        };
        call!(self, ListKeys, list_keys, request)
    }

    /// A key's tags (a key has at most 50).
    pub async fn tags(&self, key_id: &str) -> Result<BTreeMap<String, String>> {
        let request = ListResourceTagsRequest {
            key_id: key_id.to_owned(),
            limit: Some(50),
            marker: None,
        };
        call!(self, ListResourceTags, list_resource_tags, request)
            .map(|r| r.tags.into_iter().map(|t| (t.key, t.value)).collect())
    }

    pub async fn tag(&self, key_id: &str, tags: Vec<Tag>) -> Result<()> {
        let request = TagResourceRequest {
            key_id: key_id.to_owned(),
            tags,
        };
        call!(self, TagResource, tag_resource, request).map(drop)
    }

    pub async fn untag(&self, key_id: &str, tag_keys: Vec<String>) -> Result<()> {
        let request = UntagResourceRequest {
            key_id: key_id.to_owned(),
            tag_keys,
        };
        call!(self, UntagResource, untag_resource, request).map(drop)
    }

    pub async fn update_description(&self, key_id: &str, description: String) -> Result<()> {
        let request = UpdateKeyDescriptionRequest {
            key_id: key_id.to_owned(),
            description,
        };
        call!(self, UpdateKeyDescription, update_key_description, request).map(drop)
    }

    /// EnableKey (`enabled`) or DisableKey.
    pub async fn set_enabled(&self, key_id: &str, enabled: bool) -> Result<()> {
        let request = KeyIdRequest::new(key_id);
        if enabled {
            call!(self, EnableKey, enable_key, request).map(drop)
        } else {
            call!(self, DisableKey, disable_key, request).map(drop)
        }
    }

    pub async fn schedule_deletion(&self, key_id: &str, days: i64) -> Result<()> {
        let request = ScheduleKeyDeletionRequest {
            key_id: key_id.to_owned(),
            pending_window_in_days: Some(days),
        };
        call!(self, ScheduleKeyDeletion, schedule_key_deletion, request).map(drop)
    }

    pub async fn cancel_deletion(&self, key_id: &str) -> Result<()> {
        call!(
            self,
            CancelKeyDeletion,
            cancel_key_deletion,
            KeyIdRequest::new(key_id)
        )
        .map(drop)
    }

    pub async fn enable_rotation(&self, key_id: &str, period_days: i64) -> Result<()> {
        let request = EnableKeyRotationRequest {
            key_id: key_id.to_owned(),
            rotation_period_in_days: Some(period_days),
        };
        call!(self, EnableKeyRotation, enable_key_rotation, request).map(drop)
    }

    pub async fn disable_rotation(&self, key_id: &str) -> Result<()> {
        call!(
            self,
            DisableKeyRotation,
            disable_key_rotation,
            KeyIdRequest::new(key_id)
        )
        .map(drop)
    }

    pub async fn rotate_on_demand(&self, key_id: &str) -> Result<()> {
        call!(
            self,
            RotateKeyOnDemand,
            rotate_key_on_demand,
            KeyIdRequest::new(key_id)
        )
        .map(drop)
    }

    pub async fn create_alias(&self, alias_name: &str, key_id: &str) -> Result<()> {
        call!(
            self,
            CreateAlias,
            create_alias,
            alias_target(alias_name, key_id)
        )
        .map(drop)
    }

    pub async fn update_alias(&self, alias_name: &str, key_id: &str) -> Result<()> {
        call!(
            self,
            UpdateAlias,
            update_alias,
            alias_target(alias_name, key_id)
        )
        .map(drop)
    }

    pub async fn delete_alias(&self, alias_name: &str) -> Result<()> {
        let request = DeleteAliasRequest {
            alias_name: alias_name.to_owned(),
        };
        call!(self, DeleteAlias, delete_alias, request).map(drop)
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
        call!(
            self,
            GetParametersForImport,
            get_parameters_for_import,
            request
        )
    }

    /// `ciphertext` (made under `context`) re-encrypted to the newest version of `key_id`'s
    /// material, under the same context. Inside the engine: the plaintext never leaves it.
    pub async fn re_encrypt(
        &self,
        ciphertext: Vec<u8>,
        key_id: &str,
        context: &BTreeMap<String, String>,
    ) -> Result<Vec<u8>> {
        let request = ReEncryptRequest {
            ciphertext_blob: ciphertext,
            source_encryption_context: Some(context.clone()),
            source_key_id: Some(key_id.to_owned()),
            destination_key_id: key_id.to_owned(),
            destination_encryption_context: Some(context.clone()),
            ..ReEncryptRequest::default()
        };
        call!(self, ReEncrypt, re_encrypt, request).map(|r| r.ciphertext_blob)
    }

    pub async fn import_key_material(&self, request: ImportKeyMaterialRequest) -> Result<()> {
        call!(self, ImportKeyMaterial, import_key_material, request).map(drop)
    }

    pub async fn key_policy(&self, key_id: &str) -> Result<String> {
        let request = GetKeyPolicyRequest {
            key_id: key_id.to_owned(),
            policy_name: None,
        };
        call!(self, GetKeyPolicy, get_key_policy, request).map(|r| r.policy)
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
        call!(self, PutKeyPolicy, put_key_policy, request).map(drop)
    }
}

/// A key as [`EngineClient::describe_key_whole`] reads it.
#[derive(Clone, Debug)]
pub struct Described {
    pub metadata: KeyMetadata,
    pub tags: BTreeMap<String, String>,
    /// `None` for a key that does not rotate.
    pub rotation: Option<RotationState>,
}

/// What the engine's feed of changed keys says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyFeed {
    /// The engine key `key_id` changed; its record is at `revision` or later (`None`: not
    /// known, or the key is gone). An answer about the key from a replica that shows an
    /// older revision has not seen the change yet.
    Changed {
        key_id: String,
        revision: Option<u64>,
    },
    /// Changes may have been missed (the poll reached another engine replica, or fell further
    /// behind than the engine keeps): every Key should be read again.
    Resync,
}

/// After a failed poll, the next one waits this long (the engine restarting, say).
const FEED_RETRY: std::time::Duration = std::time::Duration::from_secs(2);

/// The remote engine's changed keys, by long poll. The first answer only sets the position:
/// the controllers read every Key when they start anyway.
fn poll_key_changes(remote: Arc<RemoteEngine>) -> impl Stream<Item = KeyFeed> + Send {
    struct Poll {
        remote: Arc<RemoteEngine>,
        position: Option<String>,
    }
    let start = Poll {
        remote,
        position: None,
    };
    futures::stream::unfold(start, |mut poll| async move {
        loop {
            let request = ListKeyChangesRequest {
                position: poll.position.clone(),
                wait_seconds: Some(MAX_WAIT_SECONDS),
                limit: None,
            };
            match poll.remote.list_key_changes(&request).await {
                Ok(answer) => {
                    let first = poll.position.is_none();
                    poll.position = Some(answer.position);
                    let mut feed: Vec<KeyFeed> = answer
                        .changes
                        .into_iter()
                        .map(|c| KeyFeed::Changed {
                            key_id: c.key_id,
                            revision: c.revision,
                        })
                        .collect();
                    if !answer.complete && !first {
                        tracing::info!("the engine's change feed may have skipped changes: reading every Key again");
                        feed.insert(0, KeyFeed::Resync);
                        // Polls that keep reaching other replicas (no affinity on the way)
                        // would otherwise reconcile every Key in a tight loop.
                        tokio::time::sleep(FEED_RETRY).await;
                    }
                    if !feed.is_empty() {
                        return Some((futures::stream::iter(feed), poll));
                    }
                }
                Err(CallError::Refused(e)) => {
                    // Policy or identity trouble: the resync still covers what it misses.
                    tracing::warn!(error = %e, "the engine refused the poll for changed keys");
                    tokio::time::sleep(FEED_RETRY).await;
                }
                Err(CallError::Unreachable(e)) => {
                    tracing::debug!(error = %e, "polling the engine for changed keys");
                    tokio::time::sleep(FEED_RETRY).await;
                }
            }
        }
    })
    .flatten()
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

/// A remote call's failure: the engine's refusal as [`Error::Kms`], as in-process, or the
/// engine out of reach.
fn failed(op: Operation, error: CallError) -> Error {
    match error {
        CallError::Refused(source) => Error::Kms { op, source },
        CallError::Unreachable(source) => Error::EngineUnreachable { op, source },
    }
}
