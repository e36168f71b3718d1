//! The DataKey controller: after a Key rotates, each injected data key made under it is
//! re-encrypted to the Key's newest version (ReEncrypt, inside the engine: the operator never
//! sees a data key's plaintext), so new pods get ciphertexts under current material while
//! running pods, whose older ciphertexts still decrypt, keep working. The record's status says
//! whether every generation is current.
//!
//! Each record is also mirrored to a ConfigMap ([`DataKey::mirror_name`], ciphertext only,
//! owned by the record): sidecar agents mount it, so a running pod learns of a generation
//! another pod's admission added without any access to the Kubernetes API.

use std::collections::BTreeMap;
use std::sync::Arc;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use futures::channel::mpsc::UnboundedReceiver;
use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{watcher, Controller};
use kube::{Api, Resource, ResourceExt};
use kubekms_crds::datakey::MIRROR_FILE;
use kubekms_crds::{condition as condition_type, DataKey, DataKeyStatus, Key, SealedGeneration};

use super::{backoff, condition, write_status, Context, DEPENDENCY_REQUEUE, FIELD_MANAGER};
use crate::error::{Error, Result};

pub mod reason {
    /// Ready: every generation is under the Key's newest version.
    pub const CURRENT: &str = "Current";
    /// Event: generations were re-encrypted after a rotation.
    pub const RE_ENCRYPTED: &str = "ReEncrypted";
    /// Not Ready: the Key it was made under is gone or has no engine key.
    pub const KEY_NOT_FOUND: &str = "KeyNotFound";
}

/// What one pass found for a generation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Plan {
    /// Under the newest version already.
    Current,
    /// To be re-encrypted to `version`.
    ReEncrypt { version: i32 },
    /// No Key in the namespace has this ARN.
    NoKey,
}

/// Per generation, what to do: pure, from the record and the namespace's Keys (ARN → newest
/// key version).
pub fn plan(record: &DataKey, versions: &BTreeMap<String, i32>) -> Vec<Plan> {
    record
        .spec
        .generations
        .iter()
        .map(|g| match versions.get(&g.key_arn) {
            None => Plan::NoKey,
            Some(&newest) if g.key_version < newest => Plan::ReEncrypt { version: newest },
            Some(_) => Plan::Current,
        })
        .collect()
}

/// The DataKeys of `key`'s namespace that hold a generation under it, for the Key watch: a
/// rotated Key wakes them.
pub fn data_keys_of(store: &Store<DataKey>, key: &Key) -> Vec<ObjectRef<DataKey>> {
    let Some(arn) = key.status.as_ref().and_then(|s| s.arn.as_deref()) else {
        return Vec::new();
    };
    let namespace = key.namespace();
    store
        .state()
        .iter()
        .filter(|d| d.namespace() == namespace)
        .filter(|d| d.spec.generations.iter().any(|g| g.key_arn == arn))
        .map(|d| ObjectRef::from_obj(&**d))
        .collect()
}

/// Runs the controller until the process stops; `keys` is the operator's one Key watch.
pub async fn run(ctx: Arc<Context>, trigger: UnboundedReceiver<()>, keys: UnboundedReceiver<Key>) {
    let records: Api<DataKey> = Api::all(ctx.client.clone());
    let controller = Controller::new(records, watcher::Config::default().any_semantic());
    let store = controller.store();
    controller
        .watches_stream(keys.map(Ok), move |k: Key| data_keys_of(&store, &k))
        .reconcile_all_on(trigger)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "DataKey controller");
            }
        })
        .await;
}

pub fn error_policy(record: Arc<DataKey>, error: &Error, _ctx: Arc<Context>) -> Action {
    tracing::warn!(datakey = %record.name_any(), namespace = ?record.namespace(), error = %error.chain(), "reconcile failed");
    backoff(error)
}

pub async fn reconcile(record: Arc<DataKey>, ctx: Arc<Context>) -> Result<Action> {
    let namespace = record
        .namespace()
        .ok_or_else(|| Error::InvalidSpec("a DataKey must be namespaced".into()))?;
    let api: Api<DataKey> = Api::namespaced(ctx.client.clone(), &namespace);
    let keys: Api<Key> = Api::namespaced(ctx.client.clone(), &namespace);
    let versions: BTreeMap<String, i32> = keys
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter_map(|k| {
            let s = k.status?;
            Some((s.arn?, s.current_key_version.unwrap_or(0)))
        })
        .collect();
    let plans = plan(&record, &versions);
    let context =
        DataKey::encryption_context(&namespace, &record.spec.service_account, &record.spec.name);
    let mut updated = (*record).clone();
    let mut re_encrypted = Vec::new();
    for (g, p) in updated.spec.generations.iter_mut().zip(&plans) {
        let Plan::ReEncrypt { version } = p else {
            continue;
        };
        let ciphertext = B64
            .decode(&g.ciphertext)
            .map_err(|_| Error::InvalidSpec(format!("generation {}: not base64", g.generation)))?;
        let fresh = ctx
            .engine
            .re_encrypt(ciphertext, &g.key_arn, &context)
            .await?;
        g.ciphertext = B64.encode(fresh);
        g.key_version = *version;
        re_encrypted.push(g.generation);
    }
    if !re_encrypted.is_empty() {
        // At the resourceVersion read: a generation the webhook added meanwhile is not lost;
        // the next pass picks this up again.
        match api
            .replace(&record.name_any(), &PostParams::default(), &updated)
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 409 => {
                return Ok(Action::requeue(DEPENDENCY_REQUEUE))
            }
            Err(e) => return Err(e.into()),
        }
        ctx.event(
            &*record,
            EventType::Normal,
            reason::RE_ENCRYPTED,
            format!("generation(s) {re_encrypted:?} re-encrypted to the Key's newest version"),
        )
        .await;
    }
    let missing: Vec<u32> = record
        .spec
        .generations
        .iter()
        .zip(&plans)
        .filter(|(_, p)| **p == Plan::NoKey)
        .map(|(g, _)| g.generation)
        .collect();
    let (ready, why, message) = if missing.is_empty() {
        (
            true,
            reason::CURRENT,
            "every generation is under its Key's newest version".to_owned(),
        )
    } else {
        (
            false,
            reason::KEY_NOT_FOUND,
            format!("no Key of this namespace holds the key of generation(s) {missing:?}"),
        )
    };
    let existing = record
        .status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    let status = DataKeyStatus {
        conditions: vec![condition(
            existing,
            condition_type::READY,
            ready,
            why,
            &message,
            record.metadata.generation,
            ctx.now(),
        )],
        observed_generation: record.metadata.generation,
    };
    if re_encrypted.is_empty() {
        disown(&api, &record).await?;
        apply_mirror(&ctx, &record, &namespace).await?;
        write_status(&api, &*record, record.status.as_ref(), &status).await?;
    }
    // After a replace the watch brings the new object, whose pass writes the status. Passes
    // come back now and then anyway, so a mirror deleted by hand is made again.
    Ok(Action::requeue(MIRROR_RECHECK))
}

/// How often a record's mirror is applied again when nothing changed.
const MIRROR_RECHECK: std::time::Duration = std::time::Duration::from_secs(1800);

/// Records made by an earlier webhook were owned by their ServiceAccount, and so deleted with
/// it (an app reinstalled lost its data keys): that owner is taken off.
async fn disown(api: &Api<DataKey>, record: &DataKey) -> Result<()> {
    let owners = record
        .metadata
        .owner_references
        .as_deref()
        .unwrap_or_default();
    if !owners.iter().any(|o| o.kind == "ServiceAccount") {
        return Ok(());
    }
    let kept: Vec<_> = owners
        .iter()
        .filter(|o| o.kind != "ServiceAccount")
        .cloned()
        .collect();
    let patch = serde_json::json!({ "metadata": {
        "ownerReferences": kept,
        "resourceVersion": record.metadata.resource_version,
    } });
    api.patch(
        &record.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await?;
    Ok(())
}

/// The record's mirror ConfigMap, as it should be: every generation, sealed.
pub fn mirror(record: &DataKey, namespace: &str) -> Result<ConfigMap> {
    let generations: Vec<SealedGeneration> = record
        .spec
        .generations
        .iter()
        .map(|g| DataKey::sealed(namespace, &record.spec, g))
        .collect();
    let text = serde_json::to_string(&generations).map_err(|source| Error::Json {
        what: "a DataKey mirror",
        source,
    })?;
    Ok(ConfigMap {
        metadata: ObjectMeta {
            name: Some(DataKey::mirror_name(&record.name_any())),
            namespace: Some(namespace.to_owned()),
            labels: Some(BTreeMap::from([(
                "app.kubernetes.io/managed-by".to_owned(),
                FIELD_MANAGER.to_owned(),
            )])),
            // Goes with its record (the garbage collector deletes it).
            owner_references: record.controller_owner_ref(&()).map(|o| vec![o]),
            ..ObjectMeta::default()
        },
        data: Some(BTreeMap::from([(MIRROR_FILE.to_owned(), text)])),
        ..ConfigMap::default()
    })
}

async fn apply_mirror(ctx: &Context, record: &DataKey, namespace: &str) -> Result<()> {
    let wanted = mirror(record, namespace)?;
    let name = wanted.metadata.name.clone().unwrap_or_default();
    // A server-side apply of unchanged content writes nothing.
    Api::<ConfigMap>::namespaced(ctx.client.clone(), namespace)
        .patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&wanted),
        )
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kubekms_crds::{DataKeyGeneration, DataKeySpec};

    fn generation(n: u32, arn: &str, version: i32) -> DataKeyGeneration {
        DataKeyGeneration {
            generation: n,
            ciphertext: "AA==".into(),
            key_arn: arn.into(),
            key_version: version,
        }
    }

    #[test]
    fn the_mirror_holds_every_generation_sealed_and_goes_with_its_record() {
        let mut record = DataKey::new(
            "app.db",
            DataKeySpec {
                service_account: "app".into(),
                name: "db".into(),
                key: "orders".into(),
                number_of_bytes: 32,
                generations: vec![generation(1, "arn:a", 1), generation(2, "arn:a", 2)],
            },
        );
        record.metadata.uid = Some("uid-1".into());
        let mirror = mirror(&record, "shop").unwrap();
        assert_eq!(
            mirror.metadata.name.as_deref(),
            Some("kubekms-datakey.app.db")
        );
        let owner = &mirror.metadata.owner_references.unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str()),
            ("DataKey", "uid-1")
        );
        let data = mirror.data.unwrap();
        let sealed: Vec<SealedGeneration> = serde_json::from_str(&data[MIRROR_FILE]).unwrap();
        assert_eq!(sealed.len(), 2);
        assert_eq!(sealed[1].id, "db-2");
        assert_eq!(
            sealed[1].encryption_context,
            DataKey::encryption_context("shop", "app", "db")
        );
    }

    #[test]
    fn only_generations_behind_their_key_are_re_encrypted() {
        let record = DataKey::new(
            "app.db",
            DataKeySpec {
                service_account: "app".into(),
                name: "db".into(),
                key: "orders".into(),
                number_of_bytes: 32,
                generations: vec![
                    generation(1, "arn:a", 1),
                    generation(2, "arn:a", 2),
                    generation(3, "arn:gone", 1),
                ],
            },
        );
        let versions = BTreeMap::from([("arn:a".to_owned(), 2)]);
        assert_eq!(
            plan(&record, &versions),
            [Plan::ReEncrypt { version: 2 }, Plan::Current, Plan::NoKey]
        );
    }
}
