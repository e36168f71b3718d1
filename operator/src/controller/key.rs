//! The Key controller: one engine key per Key object, kept in step with its spec, and its state
//! reported in status.
//!
//! The engine key carries the tags `kubekms.io/namespace`, `kubekms.io/name` and
//! `kubekms.io/uid`. A Key without `status.keyId` first looks for an engine key tagged with its
//! namespace and name and adopts it: that recovers a key whose id was never written to status,
//! and it is how deleting a Key and applying it again within the deletion window brings back
//! the same key (same ARN, same material).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::{reflector, watcher, Controller, WatchStreamExt};
use kube::{Api, ResourceExt};
use kubekms_crds::key::{MAX_DELETION_WINDOW_DAYS, MIN_DELETION_WINDOW_DAYS};
use kubekms_crds::{condition as condition_type, Key, KeyOrigin, KeySpec, KeyState, KeyStatus};
use kubekms_engine::clock::Millis;
use kubekms_proto::ops::{CreateKeyRequest, Tag};
use kubekms_proto::vocab::{OriginType, RotationType};
use serde_json::json;

use super::{
    backoff, condition, current, finalized, requeue_at, time_from_millis, write_status, Context,
};
use crate::error::{Error, Result};

pub const FINALIZER: &str = "kubekms.io/key";
/// Set to any new value to rotate the key once (symmetric keys with generated material).
pub const ROTATE_ANNOTATION: &str = "kubekms.io/rotate";
/// The last value of [`ROTATE_ANNOTATION`] the operator acted on.
pub const ROTATE_HANDLED_ANNOTATION: &str = "kubekms.io/rotate-handled";
pub const TAG_NAMESPACE: &str = "kubekms.io/namespace";
pub const TAG_NAME: &str = "kubekms.io/name";
pub const TAG_UID: &str = "kubekms.io/uid";
/// Key reconciles in flight at once. The engine serialises its store writes, so beyond a few
/// more buys nothing for a wave of new or due Keys, while each reconcile in flight holds its
/// object, futures and responses: unbounded, a wave of 10,000 Keys holds 10,000 at once (and
/// the engine's fair writer lock makes every Key wait for all the others' first write before
/// its second, so none is Ready until nearly all are). Enough stay in flight to overlap the
/// API calls (status, events) of some with the engine writes of others.
pub const CONCURRENCY: u16 = 32;

/// The Key controller's settings.
pub fn controller_config() -> kube::runtime::controller::Config {
    kube::runtime::controller::Config::default().concurrency(CONCURRENCY)
}

/// The one watch of Keys in the operator. The Key controller caches what it sees, without
/// `managedFields`: the operator never reads them, and with three field managers (the user's
/// apply, the finalizer, the status) they are about two thirds of a Key's size, so of what a
/// cache of every Key costs in RSS. Every Key it sees (changed, listed or deleted) is also
/// sent to each of `dependents` (the Alias, ImportedMaterial and KeyPolicy controllers), so
/// the API server sends each Key write to one watch of ours, not four.
///
/// The Key controller itself is woken only by changes it must act on (see
/// [`reconcile_trigger`]); its own status writes come back through the watch and would
/// otherwise cost a reconcile each.
pub fn controller(
    client: kube::Client,
    dependents: Vec<futures::channel::mpsc::UnboundedSender<Key>>,
) -> Controller<Key> {
    use futures::TryStreamExt;
    let (reader, writer) = reflector::store();
    let keys = watcher(
        Api::<Key>::all(client),
        watcher::Config::default().any_semantic(),
    )
    .default_backoff()
    .modify(|key| key.managed_fields_mut().clear())
    .reflect(writer)
    .inspect_ok(move |event| {
        let touched = match event {
            watcher::Event::Apply(k) | watcher::Event::InitApply(k) | watcher::Event::Delete(k) => {
                k
            }
            watcher::Event::Init | watcher::Event::InitDone => return,
        };
        for dependent in &dependents {
            // A dependent that stopped is not a reason to stop the others.
            let _ = dependent.unbounded_send(touched.clone());
        }
    })
    .applied_objects()
    .predicate_filter(reconcile_trigger, Default::default());
    Controller::for_stream(keys, reader).with_config(controller_config())
}

/// What a Key reconcile acts on: its spec (generation), its deletion and the on-demand
/// rotation annotation. A change to anything else (above all the status and the finalizer the
/// Key controller itself just wrote) does not start a reconcile; due work is covered by
/// requeues and the engine's change feed, and a finalizer someone removed is put back by the
/// next reconcile (at the latest at [`super::MAX_REQUEUE`]).
pub fn reconcile_trigger(key: &Key) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    key.metadata.generation.hash(&mut hasher);
    key.metadata.deletion_timestamp.is_some().hash(&mut hasher);
    key.annotations().get(ROTATE_ANNOTATION).hash(&mut hasher);
    Some(hasher.finish())
}

/// Event and condition reasons: stable, so alerts and tests can match them.
pub mod reason {
    pub const CREATED: &str = "Created";
    pub const ADOPTED: &str = "Adopted";
    pub const DELETION_CANCELLED: &str = "DeletionCancelled";
    pub const DELETION_SCHEDULED: &str = "DeletionScheduled";
    pub const ENABLED: &str = "Enabled";
    pub const DISABLED: &str = "Disabled";
    pub const ROTATION_ENABLED: &str = "RotationEnabled";
    pub const ROTATION_DISABLED: &str = "RotationDisabled";
    pub const ROTATED: &str = "Rotated";
    pub const ROTATED_AUTOMATICALLY: &str = "RotatedAutomatically";
    pub const ROTATION_REFUSED: &str = "RotationRefused";
    pub const STATE_CHANGED: &str = "StateChanged";
    pub const UPDATED: &str = "Updated";
    pub const INVALID_SPEC: &str = "InvalidSpec";
    pub const SPEC_MISMATCH: &str = "SpecMismatch";
    pub const KEY_MISSING: &str = "KeyMissing";
    pub const PENDING_IMPORT: &str = "PendingImport";
    pub const PENDING_DELETION: &str = "PendingDeletion";
}

/// Engine keys by the namespace and name of the Key that made them, from their tags. Built on
/// first use with one scan of the engine (ListKeys + ListResourceTags), then kept up to date by
/// this controller, so finding a key to adopt costs no scan per Key.
#[derive(Default)]
pub struct KeyIndex {
    inner: tokio::sync::Mutex<Option<HashMap<(String, String), String>>>,
}

impl KeyIndex {
    pub async fn lookup(
        &self,
        ctx: &Context,
        namespace: &str,
        name: &str,
    ) -> Result<Option<String>> {
        let mut guard = self.inner.lock().await;
        if guard.is_none() {
            *guard = Some(scan(ctx).await?);
        }
        Ok(guard
            .as_ref()
            .and_then(|m| m.get(&(namespace.to_owned(), name.to_owned())).cloned()))
    }

    pub async fn insert(&self, namespace: &str, name: &str, key_id: &str) {
        if let Some(map) = self.inner.lock().await.as_mut() {
            map.insert((namespace.to_owned(), name.to_owned()), key_id.to_owned());
        }
    }

    pub async fn remove(&self, namespace: &str, name: &str, key_id: &str) {
        if let Some(map) = self.inner.lock().await.as_mut() {
            let k = (namespace.to_owned(), name.to_owned());
            if map.get(&k).is_some_and(|id| id == key_id) {
                map.remove(&k);
            }
        }
    }
}

async fn scan(ctx: &Context) -> Result<HashMap<(String, String), String>> {
    let mut out = HashMap::new();
    let mut marker: Option<String> = None;
    loop {
        let page = ctx.engine.list_keys(marker.take()).await?;
        for k in page.keys {
            let tags = match ctx.engine.tags(&k.key_id).await {
                Ok(t) => t,
                // Destroyed between the two calls.
                Err(e) if e.is_not_found() => continue,
                Err(e) => return Err(e),
            };
            if let (Some(ns), Some(name)) = (tags.get(TAG_NAMESPACE), tags.get(TAG_NAME)) {
                out.insert((ns.clone(), name.clone()), k.key_id);
            }
        }
        match page.next_marker {
            Some(m) => marker = Some(m),
            None => break,
        }
    }
    tracing::info!(keys = out.len(), "indexed engine keys made by Key objects");
    Ok(out)
}

/// The engine's view of a key (DescribeKey's KeyMetadata).
pub use kubekms_proto::ops::KeyMetadata as Metadata;

/// What the operator observed of an engine key, in engine milliseconds.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Observed {
    pub key_id: String,
    pub arn: String,
    pub state: Option<KeyState>,
    pub current_version: Option<u32>,
    pub last_rotation: Option<Millis>,
    /// The engine rotated the key on its schedule last (not on request).
    pub last_rotation_automatic: bool,
    pub next_rotation: Option<Millis>,
    pub deletion_date: Option<Millis>,
    pub valid_to: Option<Millis>,
}

/// The tags an engine key for this Key carries: the user's plus where it came from.
pub fn desired_tags(
    spec: &KeySpec,
    namespace: &str,
    name: &str,
    uid: &str,
) -> BTreeMap<String, String> {
    let mut tags = spec.tags.clone();
    tags.insert(TAG_NAMESPACE.into(), namespace.into());
    tags.insert(TAG_NAME.into(), name.into());
    tags.insert(TAG_UID.into(), uid.into());
    tags
}

/// The CreateKey request for a Key.
pub fn create_key_request(
    spec: &KeySpec,
    namespace: &str,
    name: &str,
    uid: &str,
) -> CreateKeyRequest {
    let tags = desired_tags(spec, namespace, name, uid)
        .into_iter()
        .map(|(key, value)| Tag { key, value })
        .collect();
    CreateKeyRequest {
        key_spec: Some(spec.key_spec),
        key_usage: Some(spec.effective_usage()),
        origin: Some(spec.origin.origin_type()),
        tags: Some(tags),
        description: spec.description.clone().filter(|d| !d.is_empty()),
        // The engine's extension: rotation enabled in the same store write as the key itself,
        // one write per new Key instead of two.
        rotation_period_in_days: spec
            .rotation
            .as_ref()
            .filter(|r| r.enabled && rotatable(spec))
            .map(|r| i64::from(r.period_days)),
        ..CreateKeyRequest::default()
    }
}

/// The Key that made the engine key `key_id`, from the key's tags; `None` for a key no Key
/// made (or one that is gone).
pub async fn key_of_engine_key(ctx: &Context, key_id: &str) -> Option<reflector::ObjectRef<Key>> {
    let tags = ctx.engine.tags(key_id).await.ok()?;
    let namespace = tags.get(TAG_NAMESPACE)?;
    let name = tags.get(TAG_NAME)?;
    Some(reflector::ObjectRef::new(name).within(namespace))
}

/// Whether the engine rotates this kind of key (symmetric, generated material).
pub fn rotatable(spec: &KeySpec) -> bool {
    spec.key_spec == kubekms_crds::KmsKeySpec::SymmetricDefault
        && spec.origin == KeyOrigin::Generated
}

/// The fields the engine key was created with that a Key cannot change, if they differ.
pub fn immutable_mismatch(spec: &KeySpec, md: &Metadata) -> Option<String> {
    let mut diffs = Vec::new();
    if md.key_spec != spec.key_spec {
        diffs.push(format!(
            "keySpec is {} in the engine, {} in spec",
            md.key_spec, spec.key_spec
        ));
    }
    if md.key_usage != spec.effective_usage() {
        diffs.push(format!(
            "keyUsage is {} in the engine, {} in spec",
            md.key_usage,
            spec.effective_usage()
        ));
    }
    if md.origin != spec.origin.origin_type() {
        diffs.push(format!(
            "origin is {} in the engine, {} in spec",
            md.origin,
            spec.origin.origin_type()
        ));
    }
    if diffs.is_empty() {
        None
    } else {
        Some(format!(
            "{}; these cannot change: create a new Key instead",
            diffs.join("; ")
        ))
    }
}

/// Ready, with its reason and message, for a key in `state` whose spec asks for `spec`.
pub fn readiness(spec: &KeySpec, observed: &Observed) -> (bool, &'static str, String) {
    let arn = &observed.arn;
    match observed.state {
        Some(KeyState::Enabled) if spec.enabled => {
            (true, reason::ENABLED, format!("{arn} is enabled"))
        }
        Some(KeyState::Disabled) if !spec.enabled => (
            true,
            reason::DISABLED,
            format!("{arn} is disabled, as spec.enabled asks"),
        ),
        Some(KeyState::PendingImport) => (
            false,
            reason::PENDING_IMPORT,
            format!("{arn} waits for key material: create an ImportedMaterial for this Key"),
        ),
        Some(KeyState::PendingDeletion) => (
            false,
            reason::PENDING_DELETION,
            format!("{arn} is pending deletion"),
        ),
        Some(state) => (
            false,
            reason::STATE_CHANGED,
            format!(
                "{arn} is {state}, spec asks for {}",
                if spec.enabled { "Enabled" } else { "Disabled" }
            ),
        ),
        None => (
            false,
            reason::STATE_CHANGED,
            format!("{arn} is in an unknown state"),
        ),
    }
}

/// The status to write for what was observed. `ready` overrides the readiness computed from
/// the state (for a spec the engine key cannot follow).
pub fn compute_status(
    previous: Option<&KeyStatus>,
    spec: &KeySpec,
    generation: Option<i64>,
    observed: &Observed,
    ready: Option<(bool, &'static str, String)>,
    now: Millis,
) -> KeyStatus {
    let existing = previous
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    let (ok, why, message) = ready.unwrap_or_else(|| readiness(spec, observed));
    KeyStatus {
        key_id: Some(observed.key_id.clone()),
        arn: Some(observed.arn.clone()),
        state: observed.state,
        current_key_version: observed.current_version.and_then(|v| i32::try_from(v).ok()),
        last_rotation: observed.last_rotation.map(time_from_millis),
        next_rotation: observed.next_rotation.map(time_from_millis),
        deletion_date: observed.deletion_date.map(time_from_millis),
        conditions: vec![condition(
            existing,
            condition_type::READY,
            ok,
            why,
            &message,
            generation,
            now,
        )],
        observed_generation: generation,
    }
}

/// When the engine will next change this key on its own: a rotation, the end of a deletion
/// window, or imported material expiring.
pub fn next_due(observed: &Observed) -> Option<Millis> {
    [
        observed.next_rotation,
        observed.deletion_date,
        observed.valid_to,
    ]
    .into_iter()
    .flatten()
    .min()
}

fn deletion_window(spec: &KeySpec) -> i32 {
    spec.deletion_window_days
        .clamp(MIN_DELETION_WINDOW_DAYS, MAX_DELETION_WINDOW_DAYS)
}

pub async fn reconcile(key: Arc<Key>, ctx: Arc<Context>) -> Result<Action> {
    ctx.metrics
        .key_reconciles
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let namespace = key
        .namespace()
        .ok_or_else(|| Error::InvalidSpec("a Key must be namespaced".into()))?;
    let api: Api<Key> = Api::namespaced(ctx.client.clone(), &namespace);
    let result = finalized(
        &api,
        &*key,
        FINALIZER,
        apply(&key, &api, &ctx),
        cleanup(&key, &api, &ctx),
    )
    .await;
    if let Err(e) = &result {
        ctx.event(&*key, EventType::Warning, e.reason(), e.chain())
            .await;
        report_failure(&key, &api, &ctx, e).await;
    }
    result
}

pub fn error_policy(key: Arc<Key>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics
        .key_failures
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    tracing::warn!(key = %key.name_any(), namespace = ?key.namespace(), error = %error.chain(), "reconcile failed");
    backoff(error)
}

/// Show a failure in the Ready condition (when the API server is there to take it).
async fn report_failure(key: &Key, api: &Api<Key>, ctx: &Context, error: &Error) {
    if matches!(error, Error::Kube(_)) {
        return;
    }
    let Some(mut status) = key.status.clone() else {
        return;
    };
    status.conditions = vec![condition(
        &status.conditions,
        condition_type::READY,
        false,
        error.reason(),
        &error.chain(),
        key.metadata.generation,
        ctx.now(),
    )];
    let _ = write_status(api, key, key.status.as_ref(), &status).await;
}

async fn describe(ctx: &Context, key_id: &str) -> Result<Metadata> {
    ctx.engine.describe_key(key_id).await
}

/// The on-demand rotation request (`kubekms.io/rotate`) not acted on yet, if any.
///
/// The watched copy of a Key can trail this controller's own write of the handled annotation:
/// the rotation itself wakes the Key again through the engine's change feed, possibly before the
/// watch has delivered that write. So a request that looks new is confirmed on a fresh read
/// before a key is rotated for it, and one request rotates a key once.
async fn pending_rotate_request(key: &Key, api: &Api<Key>) -> Result<Option<String>> {
    fn pending(key: &Key) -> Option<String> {
        let annotations = key.annotations();
        annotations
            .get(ROTATE_ANNOTATION)
            .filter(|request| annotations.get(ROTATE_HANDLED_ANNOTATION) != Some(*request))
            .cloned()
    }
    if pending(key).is_none() {
        return Ok(None);
    }
    Ok(current(api, key).await?.as_ref().and_then(pending))
}

async fn apply(key: &Key, api: &Api<Key>, ctx: &Context) -> Result<Action> {
    let namespace = key.namespace().unwrap_or_default();
    let name = key.name_any();
    let uid = key.uid().unwrap_or_default();
    let spec = &key.spec;
    let generation = key.metadata.generation;
    let previous = key.status.as_ref();

    if let Err(errors) = spec.validate() {
        let message = errors.join("; ");
        ctx.event(
            key,
            EventType::Warning,
            reason::INVALID_SPEC,
            message.clone(),
        )
        .await;
        let mut status = previous.cloned().unwrap_or_default();
        status.conditions = vec![condition(
            &status.conditions,
            condition_type::READY,
            false,
            reason::INVALID_SPEC,
            &message,
            generation,
            ctx.now(),
        )];
        status.observed_generation = generation;
        write_status(api, key, previous, &status).await?;
        return Ok(Action::await_change());
    }

    // The engine key: recorded, adopted, or created. A created key is in the key index at
    // once, so a retry adopts it rather than making a second key.
    // Set when the Created event already announced the rotation this reconcile enables.
    let mut just_created_rotation = false;
    let mut md = match previous.and_then(|s| s.key_id.clone()) {
        Some(id) => match describe(ctx, &id).await {
            Ok(md) => md,
            Err(e) if e.is_not_found() => {
                let message = format!(
                    "engine key {id} no longer exists (its deletion window ended or it was \
                     deleted outside Kubernetes); delete and re-create this Key for a new one"
                );
                ctx.event(
                    key,
                    EventType::Warning,
                    reason::KEY_MISSING,
                    message.clone(),
                )
                .await;
                let mut status = previous.cloned().unwrap_or_default();
                status.state = None;
                status.conditions = vec![condition(
                    &status.conditions,
                    condition_type::READY,
                    false,
                    reason::KEY_MISSING,
                    &message,
                    generation,
                    ctx.now(),
                )];
                status.observed_generation = generation;
                write_status(api, key, previous, &status).await?;
                return Ok(Action::requeue(super::MAX_REQUEUE));
            }
            Err(e) => return Err(e),
        },
        None => {
            let adopted = match ctx.key_index.lookup(ctx, &namespace, &name).await? {
                Some(id) => match describe(ctx, &id).await {
                    Ok(md) => Some(md),
                    Err(e) if e.is_not_found() => {
                        ctx.key_index.remove(&namespace, &name, &id).await;
                        None
                    }
                    Err(e) => return Err(e),
                },
                None => None,
            };
            let md = match adopted {
                Some(md) => {
                    ctx.event(
                        key,
                        EventType::Normal,
                        reason::ADOPTED,
                        format!("adopted engine key {} ({})", md.arn, md.key_state),
                    )
                    .await;
                    md
                }
                None => {
                    let md = ctx
                        .engine
                        .create_key(create_key_request(spec, &namespace, &name, &uid))
                        .await?;
                    // From here a retry finds the key in the index and adopts it, so the id
                    // need not reach status before the rest of this reconcile: one status
                    // write per new Key instead of two (the API server is what bounds a
                    // wave of new Keys).
                    ctx.key_index.insert(&namespace, &name, &md.key_id).await;
                    let rotation = match spec.rotation.as_ref().filter(|r| r.enabled) {
                        Some(r) if rotatable(spec) => {
                            just_created_rotation = true;
                            format!(", rotating every {} days", r.period_days)
                        }
                        _ => String::new(),
                    };
                    ctx.event(
                        key,
                        EventType::Normal,
                        reason::CREATED,
                        format!(
                            "created engine key {} ({}){rotation}",
                            md.arn, spec.key_spec
                        ),
                    )
                    .await;
                    md
                }
            };
            md
        }
    };
    let key_id = md.key_id.clone();

    if let Some(problem) = immutable_mismatch(spec, &md) {
        ctx.event(
            key,
            EventType::Warning,
            reason::SPEC_MISMATCH,
            problem.clone(),
        )
        .await;
        let observed = observe(ctx, spec, &md).await?;
        let status = compute_status(
            previous,
            spec,
            generation,
            &observed,
            Some((false, reason::SPEC_MISMATCH, problem)),
            ctx.now(),
        );
        write_status(api, key, previous, &status).await?;
        return Ok(Action::await_change());
    }

    let mut acted = false;
    // Whether `md` may no longer be what the engine holds (this reconcile changed the key), so
    // the status needs a fresh DescribeKey. A Key in step with its engine key costs one.
    let mut md_stale = false;
    if md.key_state == KeyState::PendingDeletion {
        ctx.engine.cancel_deletion(&key_id).await?;
        ctx.event(
            key,
            EventType::Normal,
            reason::DELETION_CANCELLED,
            format!("cancelled the scheduled deletion of {}", md.arn),
        )
        .await;
        acted = true;
        md = describe(ctx, &key_id).await?;
    }

    let mut updated = Vec::new();
    let description = spec.description.clone().unwrap_or_default();
    if md.description != description {
        ctx.engine
            .update_description(&key_id, description.clone())
            .await?;
        md.description = description;
        updated.push("description");
    }
    let want_tags = desired_tags(spec, &namespace, &name, &uid);
    let have_tags = ctx.engine.tags(&key_id).await?;
    let stale: Vec<String> = have_tags
        .keys()
        .filter(|k| !want_tags.contains_key(*k))
        .cloned()
        .collect();
    if !stale.is_empty() {
        ctx.engine.untag(&key_id, stale.clone()).await?;
    }
    let changed: Vec<Tag> = want_tags
        .iter()
        .filter(|(k, v)| have_tags.get(*k) != Some(*v))
        .map(|(k, v)| Tag {
            key: k.clone(),
            value: v.clone(),
        })
        .collect();
    let tags_changed = !changed.is_empty();
    if tags_changed {
        ctx.engine.tag(&key_id, changed).await?;
    }
    if !stale.is_empty() || tags_changed {
        updated.push("tags");
    }
    if !updated.is_empty() {
        ctx.event(
            key,
            EventType::Normal,
            reason::UPDATED,
            format!("updated the {} of {}", updated.join(" and "), md.arn),
        )
        .await;
    }

    let toggle = match (spec.enabled, md.key_state) {
        (true, KeyState::Disabled) => Some((reason::ENABLED, "enabled", KeyState::Enabled)),
        (false, KeyState::Enabled) => Some((reason::DISABLED, "disabled", KeyState::Disabled)),
        _ => None,
    };
    if let Some((event_reason, verb, new_state)) = toggle {
        ctx.engine.set_enabled(&key_id, spec.enabled).await?;
        ctx.event(
            key,
            EventType::Normal,
            event_reason,
            format!("{verb} {}", md.arn),
        )
        .await;
        acted = true;
        md_stale = true;
        md.key_state = new_state;
    }

    // The engine changes rotation only on an Enabled key; a Disabled one catches up once it
    // is enabled again.
    let mut rotated_on_demand = false;
    if rotatable(spec) && md.key_state == KeyState::Enabled {
        let rs = ctx.engine.rotation_status(&key_id).await?;
        match spec.rotation.as_ref().filter(|r| r.enabled) {
            Some(r)
                if !rs.key_rotation_enabled
                    || rs.rotation_period_in_days.map(i64::from)
                        != Some(i64::from(r.period_days)) =>
            {
                ctx.engine
                    .enable_rotation(&key_id, i64::from(r.period_days))
                    .await?;
                // A new key's Created event said so already: one event write fewer per Key.
                if !just_created_rotation {
                    ctx.event(
                        key,
                        EventType::Normal,
                        reason::ROTATION_ENABLED,
                        format!("{} rotates every {} days", md.arn, r.period_days),
                    )
                    .await;
                }
            }
            None if rs.key_rotation_enabled => {
                ctx.engine.disable_rotation(&key_id).await?;
                ctx.event(
                    key,
                    EventType::Normal,
                    reason::ROTATION_DISABLED,
                    format!("automatic rotation of {} is off", md.arn),
                )
                .await;
            }
            _ => {}
        }
    }

    if let Some(request) = pending_rotate_request(key, api).await? {
        if rotatable(spec) && md.key_state == KeyState::Enabled {
            ctx.engine.rotate_on_demand(&key_id).await?;
            rotated_on_demand = true;
            md_stale = true;
            ctx.event(
                key,
                EventType::Normal,
                reason::ROTATED,
                format!("rotated {} on request {request:?}", md.arn),
            )
            .await;
        } else {
            ctx.event(
                key,
                EventType::Warning,
                reason::ROTATION_REFUSED,
                format!(
                    "cannot rotate {} on request {request:?}: only Enabled SYMMETRIC_DEFAULT \
                     keys with generated material rotate (the key is {})",
                    md.arn, md.key_state
                ),
            )
            .await;
        }
        // Remembered either way, so one request is acted on (or refused) once.
        api.patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({
                "metadata": { "annotations": { ROTATE_HANDLED_ANNOTATION: &request } }
            })),
        )
        .await?;
    }

    let md = if md_stale {
        describe(ctx, &key_id).await?
    } else {
        md
    };
    let observed = observe(ctx, spec, &md).await?;
    let now = ctx.now();
    let status = compute_status(previous, spec, generation, &observed, None, now);
    if let Some(prev) = previous {
        if !acted && prev.state.is_some() && prev.state != status.state {
            ctx.event(
                key,
                EventType::Normal,
                reason::STATE_CHANGED,
                format!(
                    "{} is now {}",
                    md.arn,
                    status.state.map_or("unknown", |s| s.as_str())
                ),
            )
            .await;
        }
        if !rotated_on_demand
            && observed.last_rotation_automatic
            && prev.current_key_version.is_some()
            && status.current_key_version > prev.current_key_version
        {
            ctx.event(
                key,
                EventType::Normal,
                reason::ROTATED_AUTOMATICALLY,
                format!(
                    "{} rotated to version {}",
                    md.arn,
                    status.current_key_version.unwrap_or_default()
                ),
            )
            .await;
        }
    }
    write_status(api, key, previous, &status).await?;
    // Imported material arriving (or expiring) is an engine change that wakes this Key through
    // the engine's change feed; only due times need a requeue.
    Ok(Action::requeue(requeue_at(next_due(&observed), now)))
}

/// Read the rest of the engine's view of a key.
async fn observe(ctx: &Context, spec: &KeySpec, md: &Metadata) -> Result<Observed> {
    let mut observed = Observed {
        key_id: md.key_id.clone(),
        arn: md.arn.clone(),
        state: Some(md.key_state),
        current_version: md.current_version,
        last_rotation: None,
        last_rotation_automatic: false,
        next_rotation: None,
        deletion_date: md.deletion_date.map(|t| t.millis()),
        valid_to: md.valid_to.map(|t| t.millis()),
    };
    if rotatable(spec)
        && md.origin == OriginType::AwsKms
        && md.key_spec == kubekms_crds::KmsKeySpec::SymmetricDefault
    {
        let rs = ctx.engine.rotation_status(&md.key_id).await?;
        observed.next_rotation = rs
            .next_rotation_date
            .filter(|_| rs.key_rotation_enabled)
            .map(|t| t.millis());
        if let Some(last) = ctx.engine.rotations(&md.key_id).await?.last() {
            observed.last_rotation = Some(last.rotation_date.millis());
            observed.last_rotation_automatic = last.rotation_type == RotationType::Automatic;
        }
    }
    Ok(observed)
}

async fn cleanup(key: &Key, api: &Api<Key>, ctx: &Context) -> Result<Action> {
    let namespace = key.namespace().unwrap_or_default();
    let name = key.name_any();
    // Apply may have created a key whose id never reached status.
    let key_id = match key.status.as_ref().and_then(|s| s.key_id.clone()) {
        Some(id) => id,
        None => match ctx.key_index.lookup(ctx, &namespace, &name).await? {
            Some(id) => id,
            None => return Ok(Action::await_change()),
        },
    };
    let md = match describe(ctx, &key_id).await {
        Ok(md) => md,
        Err(e) if e.is_not_found() => {
            ctx.key_index.remove(&namespace, &name, &key_id).await;
            return Ok(Action::await_change());
        }
        Err(e) => return Err(e),
    };
    if md.key_state != KeyState::PendingDeletion {
        let days = deletion_window(&key.spec);
        ctx.engine
            .schedule_deletion(&key_id, i64::from(days))
            .await?;
    }
    let md = describe(ctx, &key_id).await?;
    let observed = observe(ctx, &key.spec, &md).await?;
    let when = observed
        .deletion_date
        .map(|d| time_from_millis(d).0.to_string())
        .unwrap_or_else(|| "the end of its window".into());
    ctx.event(
        key,
        EventType::Normal,
        reason::DELETION_SCHEDULED,
        format!(
            "{} is pending deletion until {when}; apply this Key again before then to cancel",
            md.arn
        ),
    )
    .await;
    let status = compute_status(
        key.status.as_ref(),
        &key.spec,
        key.metadata.generation,
        &observed,
        None,
        ctx.now(),
    );
    // The object is on its way out: a status it never shows is no reason to keep it.
    if let Err(e) = write_status(api, key, key.status.as_ref(), &status).await {
        tracing::debug!(error = %e, key = %name, "status of a deleted Key not written");
    }
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kubekms_crds::{KeyUsage, KmsKeySpec, RotationSpec};

    const DAY: Millis = 86_400_000;
    const NOW: Millis = 1_700_000_000_000;

    fn observed(state: KeyState) -> Observed {
        Observed {
            key_id: "1234abcd-12ab-34cd-56ef-1234567890ab".into(),
            arn: "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"
                .into(),
            state: Some(state),
            current_version: Some(1),
            ..Observed::default()
        }
    }

    #[test]
    fn create_request_carries_spec_and_origin_tags() {
        let mut spec = KeySpec {
            key_spec: KmsKeySpec::EccNistP256,
            description: Some("orders signing".into()),
            ..KeySpec::default()
        };
        spec.tags.insert("team".into(), "payments".into());
        let req = create_key_request(&spec, "shop", "orders", "uid-1");
        assert_eq!(req.key_spec, Some(KmsKeySpec::EccNistP256));
        assert_eq!(req.key_usage, Some(KeyUsage::SignVerify));
        assert_eq!(req.origin, Some(OriginType::AwsKms));
        assert_eq!(req.description.as_deref(), Some("orders signing"));
        let tags = req.tags.unwrap();
        let get = |k: &str| tags.iter().find(|t| t.key == k).map(|t| t.value.clone());
        assert_eq!(get("team").as_deref(), Some("payments"));
        assert_eq!(get(TAG_NAMESPACE).as_deref(), Some("shop"));
        assert_eq!(get(TAG_NAME).as_deref(), Some("orders"));
        assert_eq!(get(TAG_UID).as_deref(), Some("uid-1"));
    }

    #[test]
    fn rotation_is_requested_with_the_key_only_for_keys_that_rotate() {
        let mut spec = KeySpec {
            rotation: Some(RotationSpec {
                enabled: true,
                period_days: 120,
            }),
            ..KeySpec::default()
        };
        let req = create_key_request(&spec, "ns", "k", "u");
        assert_eq!(req.rotation_period_in_days, Some(120));
        spec.rotation = Some(RotationSpec {
            enabled: false,
            period_days: 120,
        });
        let req = create_key_request(&spec, "ns", "k", "u");
        assert!(req.rotation_period_in_days.is_none());
        spec.rotation = Some(RotationSpec {
            enabled: true,
            period_days: 120,
        });
        spec.key_spec = KmsKeySpec::EccNistP256;
        let req = create_key_request(&spec, "ns", "k", "u");
        assert!(req.rotation_period_in_days.is_none());
    }

    #[test]
    fn external_keys_are_created_for_import_without_a_description_when_none() {
        let spec = KeySpec {
            origin: KeyOrigin::External,
            key_usage: Some(KeyUsage::EncryptDecrypt),
            ..KeySpec::default()
        };
        let req = create_key_request(&spec, "ns", "byok", "u");
        assert_eq!(req.origin, Some(OriginType::External));
        assert_eq!(req.key_spec, Some(KmsKeySpec::SymmetricDefault));
        assert!(req.description.is_none());
        assert!(!rotatable(&spec));
    }

    #[test]
    fn readiness_follows_spec_enabled() {
        let enabled = KeySpec::default();
        let disabled = KeySpec {
            enabled: false,
            ..KeySpec::default()
        };
        assert!(readiness(&enabled, &observed(KeyState::Enabled)).0);
        assert!(!readiness(&enabled, &observed(KeyState::Disabled)).0);
        assert!(readiness(&disabled, &observed(KeyState::Disabled)).0);
        assert!(!readiness(&disabled, &observed(KeyState::Enabled)).0);
        let (ok, why, _) = readiness(&enabled, &observed(KeyState::PendingImport));
        assert!(!ok);
        assert_eq!(why, reason::PENDING_IMPORT);
        assert!(!readiness(&enabled, &observed(KeyState::PendingDeletion)).0);
    }

    #[test]
    fn status_reports_the_engine_and_keeps_transition_times() {
        let spec = KeySpec::default();
        let mut seen = observed(KeyState::Enabled);
        seen.next_rotation = Some(NOW + 365 * DAY);
        let first = compute_status(None, &spec, Some(1), &seen, None, NOW);
        assert_eq!(first.key_id.as_deref(), Some(seen.key_id.as_str()));
        assert_eq!(first.state, Some(KeyState::Enabled));
        assert_eq!(first.current_key_version, Some(1));
        assert_eq!(first.next_rotation, Some(time_from_millis(NOW + 365 * DAY)));
        assert_eq!(first.observed_generation, Some(1));
        assert_eq!(first.conditions.len(), 1);
        assert_eq!(first.conditions[0].status, "True");

        // Nothing changed a day later: the same status, so no write.
        let again = compute_status(Some(&first), &spec, Some(1), &seen, None, NOW + DAY);
        assert_eq!(again, first);

        seen.state = Some(KeyState::Disabled);
        let flipped = compute_status(Some(&first), &spec, Some(1), &seen, None, NOW + DAY);
        assert_eq!(flipped.conditions[0].status, "False");
        assert_eq!(
            flipped.conditions[0].last_transition_time,
            time_from_millis(NOW + DAY)
        );
    }

    #[test]
    fn next_due_is_the_earliest_engine_deadline() {
        let mut seen = observed(KeyState::Enabled);
        assert_eq!(next_due(&seen), None);
        seen.next_rotation = Some(NOW + 90 * DAY);
        seen.valid_to = Some(NOW + 3 * DAY);
        assert_eq!(next_due(&seen), Some(NOW + 3 * DAY));
        seen.deletion_date = Some(NOW + DAY);
        assert_eq!(next_due(&seen), Some(NOW + DAY));
    }

    #[test]
    fn immutable_fields_are_checked_against_the_engine() {
        let spec = KeySpec {
            rotation: Some(RotationSpec {
                enabled: true,
                period_days: 90,
            }),
            ..KeySpec::default()
        };
        let md = Metadata {
            aws_account_id: "111122223333".into(),
            key_id: "k".into(),
            arn: "a".into(),
            creation_date: kubekms_proto::Timestamp(0),
            enabled: true,
            key_state: KeyState::Enabled,
            description: String::new(),
            key_spec: KmsKeySpec::SymmetricDefault,
            customer_master_key_spec: KmsKeySpec::SymmetricDefault,
            key_usage: KeyUsage::EncryptDecrypt,
            origin: OriginType::AwsKms,
            key_manager: kubekms_proto::vocab::KeyManagerType::Customer,
            deletion_date: None,
            pending_deletion_window_in_days: None,
            valid_to: None,
            expiration_model: None,
            encryption_algorithms: Default::default(),
            signing_algorithms: Default::default(),
            mac_algorithms: Default::default(),
            multi_region: false,
            current_version: Some(1),
        };
        assert_eq!(immutable_mismatch(&spec, &md), None);
        let ecc = Metadata {
            key_spec: KmsKeySpec::EccNistP256,
            key_usage: KeyUsage::SignVerify,
            ..md
        };
        let problem = immutable_mismatch(&spec, &ecc).unwrap();
        assert!(problem.contains("keySpec is ECC_NIST_P256"), "{problem}");
        assert!(problem.contains("keyUsage"), "{problem}");
    }

    #[test]
    fn only_changes_a_reconcile_acts_on_trigger_one() {
        let mut key = Key::new("k", KeySpec::default());
        key.metadata.generation = Some(1);
        let base = reconcile_trigger(&key);
        let mut echoed = key.clone();
        echoed.metadata.finalizers = Some(vec![FINALIZER.into()]);
        echoed.status = Some(KeyStatus {
            key_id: Some("id".into()),
            ..KeyStatus::default()
        });
        echoed.metadata.resource_version = Some("2".into());
        assert_eq!(reconcile_trigger(&echoed), base, "our own writes");
        let mut changed = key.clone();
        changed.metadata.generation = Some(2);
        assert_ne!(reconcile_trigger(&changed), base, "a spec change");
        let mut deleted = key.clone();
        deleted.metadata.deletion_timestamp = Some(time_from_millis(NOW));
        assert_ne!(reconcile_trigger(&deleted), base, "a deletion");
        let mut rotate = key.clone();
        rotate
            .annotations_mut()
            .insert(ROTATE_ANNOTATION.into(), "now".into());
        assert_ne!(reconcile_trigger(&rotate), base, "a rotation request");
    }

    #[test]
    fn deletion_window_stays_within_what_the_engine_takes() {
        let mut spec = KeySpec::default();
        assert_eq!(deletion_window(&spec), 30);
        spec.deletion_window_days = 3;
        assert_eq!(deletion_window(&spec), 7);
        spec.deletion_window_days = 7;
        assert_eq!(deletion_window(&spec), 7);
    }
}
