//! The reconcilers and what they share: the engine handle, the clock, the event recorder, and
//! the condition and status helpers.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Client, Resource, ResourceExt};
use kubekms_engine::clock::{Clock, Millis};
use serde::de::DeserializeOwned;

use crate::engine::EngineClient;
use crate::error::{Error, Result};

pub mod alias;
pub mod datakey;
pub mod events;
pub mod import;
pub mod key;
pub mod policy;

/// The field manager of every status we write.
pub const FIELD_MANAGER: &str = "kubekms-operator";
/// The name events are reported under.
pub const REPORTER: &str = "kubekms-operator";
/// Even with nothing due, look again this often so drift in the engine is noticed.
pub const MAX_REQUEUE: Duration = Duration::from_secs(300);
/// Waiting on another object (a Key not Ready yet): look again soon.
pub const DEPENDENCY_REQUEUE: Duration = Duration::from_secs(2);
/// Longest event note the API server accepts.
const MAX_NOTE_BYTES: usize = 1024;

/// What every reconcile shares.
pub struct Context {
    pub client: Client,
    /// The engine, as the operator's principal in its account and region.
    pub engine: EngineClient,
    pub clock: Arc<dyn Clock>,
    pub events: events::EventPublisher,
    pub key_index: key::KeyIndex,
    /// Engine key revisions the change feed announced (see [`key::AwaitedRevisions`]).
    pub awaited: key::AwaitedRevisions,
    pub metrics: Metrics,
    /// Where ImportedMaterials' Secrets may be read; `None`: every namespace.
    pub import_namespaces: Option<Vec<String>>,
}

/// Reconcile counters, by controller.
#[derive(Default)]
pub struct Metrics {
    pub key_reconciles: AtomicU64,
    pub key_failures: AtomicU64,
    pub alias_reconciles: AtomicU64,
    pub alias_failures: AtomicU64,
    pub import_reconciles: AtomicU64,
    pub import_failures: AtomicU64,
    /// `kubekms_imported_material_expiry_seconds`, per Key.
    pub import_expiry: import::ExpiryGauge,
}

impl Metrics {
    /// The reconcile counters and the expiry gauge as they stand now, for one scrape.
    pub fn collectors(&self) -> Vec<Box<dyn prometheus_client::collector::Collector>> {
        vec![
            Box::new(self.snapshot()),
            Box::new(self.import_expiry.snapshot()),
        ]
    }

    fn snapshot(&self) -> ReconcileSnapshot {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        ReconcileSnapshot {
            reconciles: [
                ("Key", load(&self.key_reconciles)),
                ("Alias", load(&self.alias_reconciles)),
                ("ImportedMaterial", load(&self.import_reconciles)),
            ],
            failures: [
                ("Key", load(&self.key_failures)),
                ("Alias", load(&self.alias_failures)),
                ("ImportedMaterial", load(&self.import_failures)),
            ],
        }
    }
}

/// Reconciles and failures per kind, as one scrape saw them.
#[derive(Debug)]
pub struct ReconcileSnapshot {
    reconciles: [(&'static str, u64); 3],
    failures: [(&'static str, u64); 3],
}

impl prometheus_client::collector::Collector for ReconcileSnapshot {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder<'_>,
    ) -> std::fmt::Result {
        use kubekms_engine::api::metrics::encode_counters;
        encode_counters(
            &mut encoder,
            "kubekms_operator_reconciles",
            "Reconciles by kind of object.",
            self.reconciles
                .iter()
                .map(|(kind, n)| (vec![("kind", *kind)], *n)),
        )?;
        encode_counters(
            &mut encoder,
            "kubekms_operator_reconcile_failures",
            "Failed reconciles by kind of object.",
            self.failures
                .iter()
                .map(|(kind, n)| (vec![("kind", *kind)], *n)),
        )
    }
}

impl Context {
    pub fn new(
        client: Client,
        engine: EngineClient,
        clock: Arc<dyn Clock>,
        import_namespaces: Option<Vec<String>>,
    ) -> Arc<Self> {
        let (events, writer) =
            events::EventPublisher::new(client.clone(), REPORTER, std::env::var("POD_NAME").ok());
        tokio::spawn(writer);
        Arc::new(Self {
            client,
            engine,
            clock,
            events,
            key_index: key::KeyIndex::default(),
            awaited: key::AwaitedRevisions::default(),
            metrics: Metrics::default(),
            import_namespaces,
        })
    }

    pub fn now(&self) -> Millis {
        self.clock.now_millis()
    }

    /// Publish an event about `obj`. Queued, not awaited (see [`events`]): a lost event must
    /// not fail or hold up the reconcile.
    pub async fn event<K>(&self, obj: &K, type_: EventType, reason: &str, note: String)
    where
        K: Resource<DynamicType = ()>,
    {
        self.events.publish(
            obj.object_ref(&()),
            type_,
            reason,
            cut(note, MAX_NOTE_BYTES),
        );
    }
}

/// `text` cut to at most `max` bytes on a character boundary.
fn cut(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

/// A Kubernetes timestamp from engine milliseconds, at the second precision the API server
/// keeps (so a status read back compares equal to the one computed).
pub fn time_from_millis(ms: Millis) -> Time {
    Time(Timestamp::from_second(ms.div_euclid(1000)).unwrap_or(Timestamp::UNIX_EPOCH))
}

/// AWS JSON timestamps (epoch seconds with a fraction) as engine milliseconds.
pub fn millis_from_epoch_seconds(seconds: f64) -> Millis {
    (seconds * 1000.0).round() as Millis
}

/// A condition as it should now read: `lastTransitionTime` is kept from `existing` unless the
/// status flips, so `kubectl` shows how long the object has been in its present state.
pub fn condition(
    existing: &[Condition],
    type_: &str,
    status: bool,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    now: Millis,
) -> Condition {
    let status = if status { "True" } else { "False" };
    let last_transition_time = existing
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| time_from_millis(now));
    Condition {
        type_: type_.to_owned(),
        status: status.to_owned(),
        reason: reason.to_owned(),
        // Kubernetes 1.20 rejects an empty string in a custom resource as null.
        message: if message.is_empty() {
            "ok".to_owned()
        } else {
            message.to_owned()
        },
        observed_generation: generation,
        last_transition_time,
    }
}

/// Write `status` unless `previous` (the status the watch last delivered) says it already:
/// most reconciles change nothing, and an unchanged status costs no API call.
pub async fn write_status<K, S>(
    api: &Api<K>,
    obj: &K,
    previous: Option<&S>,
    status: &S,
) -> Result<()>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + serde::Serialize + std::fmt::Debug,
    S: serde::Serialize + PartialEq,
{
    if previous == Some(status) {
        return Ok(());
    }
    let status = serde_json::to_value(status).map_err(|source| Error::Json {
        what: "status",
        source,
    })?;
    apply_status(api, obj, status).await
}

/// Write `status` on the status subresource: a JSON merge patch from the status `obj` has (as
/// the watch last delivered it) to `status`, so fields no longer reported are removed.
///
/// Not server-side apply: the status belongs to this controller alone, so apply's field
/// ownership buys nothing, while parsing and merging an apply patch is among the costliest
/// things the API server does per write, and a wave of Keys is bound by the API server.
async fn apply_status<K>(api: &Api<K>, obj: &K, status: serde_json::Value) -> Result<()>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let current = serde_json::to_value(obj)
        .ok()
        .and_then(|mut v| v.get_mut("status").map(serde_json::Value::take))
        .unwrap_or(serde_json::Value::Null);
    let patch = serde_json::json!({ "status": merge_patch(&current, &status) });
    api.patch_status(
        &obj.name_any(),
        &PatchParams {
            field_manager: Some(FIELD_MANAGER.to_owned()),
            ..PatchParams::default()
        },
        &Patch::Merge(&patch),
    )
    .await?;
    Ok(())
}

/// The JSON merge patch (RFC 7386) that turns `from` into `to`: changed members, `null` for
/// removed ones, objects diffed member by member, anything else replaced whole.
pub fn merge_patch(from: &serde_json::Value, to: &serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match (from, to) {
        (Value::Object(old), Value::Object(new)) => {
            let mut patch = serde_json::Map::new();
            for (name, value) in new {
                match old.get(name) {
                    Some(previous) if previous == value => {}
                    Some(previous) => {
                        patch.insert(name.clone(), merge_patch(previous, value));
                    }
                    None => {
                        patch.insert(name.clone(), value.clone());
                    }
                }
            }
            for name in old.keys().filter(|name| !new.contains_key(*name)) {
                patch.insert(name.clone(), Value::Null);
            }
            Value::Object(patch)
        }
        _ => to.clone(),
    }
}

/// One reconcile of `obj` behind our `finalizer`: `apply` while the object lives, `cleanup`
/// once it is being deleted, then the finalizer removed. Only the future that fits is awaited.
///
/// Unlike kube-runtime's `finalizer()`, a new object's finalizer is added in the pass that
/// applies it rather than in a pass of its own that waits for the update to come back: one
/// reconcile per new object, not two (and the Key controller ignores its own finalizer write,
/// see [`key::reconcile_trigger`]). Apply still starts only once the finalizer is stored.
pub async fn finalized<K>(
    api: &Api<K>,
    obj: &K,
    finalizer: &str,
    apply: impl Future<Output = Result<Action>>,
    cleanup: impl Future<Output = Result<Action>>,
) -> Result<Action>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
{
    if obj.meta().deletion_timestamp.is_none() {
        ensure_finalizer(api, obj, finalizer).await?;
        return apply.await;
    }
    if !obj.finalizers().iter().any(|f| f == finalizer) {
        // Cleaned up already; the object waits only for others' finalizers.
        return Ok(Action::await_change());
    }
    let action = cleanup.await?;
    remove_finalizer(api, obj, finalizer).await?;
    Ok(action)
}

/// Add `finalizer` to `obj` unless it has it. A JSON patch that tests the finalizers it saw,
/// so a concurrent change to them makes it fail (and the reconcile retry) instead of being
/// overwritten.
async fn ensure_finalizer<K>(api: &Api<K>, obj: &K, finalizer: &str) -> Result<()>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
{
    let present = obj.finalizers();
    if present.iter().any(|f| f == finalizer) {
        return Ok(());
    }
    let operations = if present.is_empty() {
        serde_json::json!([
            { "op": "test", "path": "/metadata/finalizers", "value": null },
            { "op": "add", "path": "/metadata/finalizers", "value": [finalizer] },
        ])
    } else {
        serde_json::json!([
            { "op": "test", "path": "/metadata/finalizers", "value": present },
            { "op": "add", "path": "/metadata/finalizers/-", "value": finalizer },
        ])
    };
    json_patch(api, obj, operations).await
}

/// Remove `finalizer` from `obj`; done already if the object is gone (a second cleanup raced
/// the first).
async fn remove_finalizer<K>(api: &Api<K>, obj: &K, finalizer: &str) -> Result<()>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
{
    let Some(index) = obj.finalizers().iter().position(|f| f == finalizer) else {
        return Ok(());
    };
    let path = format!("/metadata/finalizers/{index}");
    let operations = serde_json::json!([
        { "op": "test", "path": path, "value": finalizer },
        { "op": "remove", "path": path },
    ]);
    match json_patch(api, obj, operations).await {
        Err(Error::Kube(kube::Error::Api(status))) if status.is_not_found() => Ok(()),
        other => other,
    }
}

async fn json_patch<K>(api: &Api<K>, obj: &K, operations: serde_json::Value) -> Result<()>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
{
    let patch: json_patch::Patch =
        serde_json::from_value(operations).map_err(|source| Error::Json {
            what: "finalizer patch",
            source,
        })?;
    api.patch(
        &obj.name_any(),
        &PatchParams::default(),
        &Patch::Json::<()>(patch),
    )
    .await?;
    Ok(())
}

/// The objects in `store` in `of`'s namespace that `refers` (given `of`'s name) says depend on
/// `of`: what a change to `of` should wake.
pub fn referring<K, O>(
    store: &Store<K>,
    of: &O,
    refers: impl Fn(&K, &str) -> bool,
) -> Vec<ObjectRef<K>>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
    O: Resource,
{
    let namespace = of.namespace();
    let name = of.name_any();
    store
        .state()
        .iter()
        .filter(|o| o.namespace() == namespace && refers(o, &name))
        .map(|o| ObjectRef::from_obj(o.as_ref()))
        .collect()
}

/// `obj` as the API server has it now, if it still exists (the same object, not a namesake
/// created since). For a controller about to act once on something its watched copy says is
/// new: that copy can trail the controller's own write recording it was done.
pub async fn current<K>(api: &Api<K>, obj: &K) -> Result<Option<K>>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
{
    Ok(api
        .get_opt(&obj.name_any())
        .await?
        .filter(|fresh| fresh.meta().uid == obj.meta().uid))
}

/// Requeue when `due` (engine milliseconds) arrives, within [1 s, [`MAX_REQUEUE`]].
pub fn requeue_at(due: Option<Millis>, now: Millis) -> Duration {
    match due {
        None => MAX_REQUEUE,
        Some(due) => {
            let wait = Duration::from_millis(u64::try_from(due.saturating_sub(now)).unwrap_or(0));
            wait.clamp(Duration::from_secs(1), MAX_REQUEUE)
        }
    }
}

/// Back off on failure; the failure is counted by the caller and reported as an event by the
/// reconcile itself.
pub fn backoff(error: &Error) -> Action {
    match error {
        // Waits for the user to change the object; a slow retry notices a fixed dependency.
        Error::InvalidSpec(_) => Action::requeue(MAX_REQUEUE),
        _ => Action::requeue(Duration::from_secs(5)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Millis = 86_400_000;

    #[test]
    fn requeue_waits_for_the_due_time_within_bounds() {
        let now = 1_700_000_000_000;
        assert_eq!(requeue_at(Some(now + 30_000), now), Duration::from_secs(30));
        assert_eq!(requeue_at(Some(now + 90 * DAY), now), MAX_REQUEUE);
        assert_eq!(requeue_at(Some(now - DAY), now), Duration::from_secs(1));
        assert_eq!(requeue_at(None, now), MAX_REQUEUE);
    }

    #[test]
    fn transition_time_is_kept_until_the_status_flips() {
        let t0 = 1_700_000_000_000;
        let first = condition(&[], "Ready", true, "Enabled", "", Some(1), t0);
        assert_eq!(first.message, "ok");
        assert_eq!(first.last_transition_time, time_from_millis(t0));
        let same = condition(
            std::slice::from_ref(&first),
            "Ready",
            true,
            "Enabled",
            "m",
            Some(2),
            t0 + DAY,
        );
        assert_eq!(same.last_transition_time, first.last_transition_time);
        assert_eq!(same.observed_generation, Some(2));
        let flipped = condition(&[same], "Ready", false, "Disabled", "m", Some(2), t0 + DAY);
        assert_eq!(flipped.last_transition_time, time_from_millis(t0 + DAY));
        assert_eq!(flipped.status, "False");
    }

    #[test]
    fn times_are_whole_seconds() {
        let t = time_from_millis(1_700_000_000_999);
        assert_eq!(t.0.as_second(), 1_700_000_000);
        assert_eq!(
            millis_from_epoch_seconds(1_700_000_000.5),
            1_700_000_000_500
        );
    }

    /// RFC 7386's merge, to check that a computed patch really turns one value into the other.
    fn apply_merge(target: &serde_json::Value, patch: &serde_json::Value) -> serde_json::Value {
        use serde_json::Value;
        match patch {
            Value::Object(members) => {
                let mut out = match target {
                    Value::Object(t) => t.clone(),
                    _ => serde_json::Map::new(),
                };
                for (name, value) in members {
                    if value.is_null() {
                        out.remove(name);
                    } else {
                        let merged = apply_merge(out.get(name).unwrap_or(&Value::Null), value);
                        out.insert(name.clone(), merged);
                    }
                }
                Value::Object(out)
            }
            other => other.clone(),
        }
    }

    #[test]
    fn merge_patches_turn_the_old_status_into_the_new_one() {
        use serde_json::json;
        let old = json!({
            "keyId": "k", "state": "PendingDeletion", "deletionDate": "2026-01-01T00:00:00Z",
            "conditions": [{"type": "Ready", "status": "False"}],
            "nested": {"a": 1, "b": 2},
        });
        let new = json!({
            "keyId": "k", "state": "Enabled",
            "conditions": [{"type": "Ready", "status": "True"}],
            "nested": {"a": 1, "c": 3},
        });
        let patch = merge_patch(&old, &new);
        assert_eq!(patch["deletionDate"], serde_json::Value::Null);
        assert!(
            patch.get("keyId").is_none(),
            "unchanged members are left out: {patch}"
        );
        assert_eq!(patch["nested"], json!({"b": null, "c": 3}));
        assert_eq!(apply_merge(&old, &patch), new);
        // From nothing: the whole status.
        assert_eq!(merge_patch(&serde_json::Value::Null, &new), new);
        assert_eq!(merge_patch(&new, &new), json!({}));
    }

    #[test]
    fn long_notes_are_cut_on_a_character_boundary() {
        let note = "é".repeat(600);
        let cut = cut(note, MAX_NOTE_BYTES);
        assert!(cut.len() <= MAX_NOTE_BYTES);
        assert!(cut.chars().all(|c| c == 'é'));
    }
}
