//! The Key controller: one engine key per Key object, kept in step with its spec, and its state
//! reported in status.
//!
//! The engine key carries the tags `kubekms.io/namespace`, `kubekms.io/name` and
//! `kubekms.io/uid`. A Key without `status.keyId` first looks for an engine key tagged with its
//! namespace and name and adopts it: that recovers a key whose id was never written to status,
//! and it is how deleting a Key and applying it again within the deletion window brings back
//! the same key (same ARN, same material).

//!
//! The controller's wiring and reconcile entry points are here; the pure status computation is
//! in `status`, the steps that act on the engine and the API server in `apply`.

use std::collections::HashMap;
use std::sync::Arc;

use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::{reflector, watcher, Controller, WatchStreamExt};
use kube::{Api, ResourceExt};
use kubekms_crds::{condition as condition_type, Key};

use super::{backoff, condition, finalized, write_status, Context};
use crate::error::{Error, Result};

mod apply;
mod status;

pub use status::*;

use apply::{apply, cleanup};

pub const FINALIZER: &str = kubekms_crds::key::KEY_FINALIZER;
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
    refs: KeyRefs,
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
        refs.observe(event);
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

/// The Key whose `status.keyId` is each engine key id, kept from the operator's one Key
/// watch: a change the engine reports by key id wakes its Key without asking the engine whose
/// key it is.
#[derive(Clone, Default)]
pub struct KeyRefs(Arc<parking_lot::RwLock<Refs>>);

#[derive(Default)]
struct Refs {
    by_key_id: HashMap<String, reflector::ObjectRef<Key>>,
    /// The other way, so a Key whose id changed or that was deleted leaves no stale entry.
    key_id_of: HashMap<reflector::ObjectRef<Key>, String>,
    /// Filled during a (re)list and swapped in when it is done, so Keys deleted while the
    /// watch was down drop out.
    relisting: Option<Box<Refs>>,
}

impl Refs {
    fn set(&mut self, this: reflector::ObjectRef<Key>, key_id: Option<&str>) {
        if let Some(old) = self.key_id_of.remove(&this) {
            self.by_key_id.remove(&old);
        }
        if let Some(key_id) = key_id {
            self.by_key_id.insert(key_id.to_owned(), this.clone());
            self.key_id_of.insert(this, key_id.to_owned());
        }
    }
}

impl KeyRefs {
    /// The Key that holds engine key `key_id`, if one does.
    pub fn get(&self, key_id: &str) -> Option<reflector::ObjectRef<Key>> {
        self.0.read().by_key_id.get(key_id).cloned()
    }

    fn observe(&self, event: &watcher::Event<Key>) {
        let key_id = |k: &Key| k.status.as_ref().and_then(|s| s.key_id.clone());
        let mut refs = self.0.write();
        match event {
            watcher::Event::Init => refs.relisting = Some(Box::default()),
            watcher::Event::InitApply(k) => {
                let this = reflector::ObjectRef::from_obj(k);
                let id = key_id(k);
                match refs.relisting.as_mut() {
                    Some(fresh) => fresh.set(this, id.as_deref()),
                    None => refs.set(this, id.as_deref()),
                }
            }
            watcher::Event::InitDone => {
                if let Some(fresh) = refs.relisting.take() {
                    *refs = *fresh;
                }
            }
            watcher::Event::Apply(k) => {
                let id = key_id(k);
                refs.set(reflector::ObjectRef::from_obj(k), id.as_deref());
            }
            watcher::Event::Delete(k) => refs.set(reflector::ObjectRef::from_obj(k), None),
        }
    }
}

/// Revisions the engine's change feed announced that a Key's reconcile has not yet seen. The
/// reads of a reconcile go through the engine Service to any replica, and a replica follows
/// the others' writes a moment late: a reconcile woken by a change can read the key as it was
/// before it. It then tries again shortly instead of writing that older state.
#[derive(Default)]
pub struct AwaitedRevisions(parking_lot::Mutex<HashMap<String, (u64, std::time::Instant)>>);

/// How long a reconcile waits for an announced revision before it takes what it reads: a
/// replica's watch catches up in well under a second; one that never does (it cannot load the
/// record) must not keep a Key requeueing forever.
pub const AWAIT_REVISION_FOR: std::time::Duration = std::time::Duration::from_secs(30);

impl AwaitedRevisions {
    /// The feed said engine key `key_id` is at `revision` or later.
    pub fn announce(&self, key_id: &str, revision: u64) {
        let mut awaited = self.0.lock();
        let now = std::time::Instant::now();
        let entry = awaited.entry(key_id.to_owned()).or_insert((revision, now));
        if revision > entry.0 {
            *entry = (revision, now);
        }
    }

    /// Whether an answer at `revision` (`None`: the engine keeps none) is older than what
    /// the feed announced for `key_id`; once it is not (or the wait is over), the
    /// announcement is forgotten.
    pub fn behind(&self, key_id: &str, revision: Option<u64>) -> bool {
        let mut awaited = self.0.lock();
        let Some(&(want, since)) = awaited.get(key_id) else {
            return false;
        };
        if revision.is_some_and(|seen| seen < want) && since.elapsed() < AWAIT_REVISION_FOR {
            return true;
        }
        awaited.remove(key_id);
        false
    }

    /// Forget what was announced for a key that is gone.
    pub fn forget(&self, key_id: &str) {
        self.0.lock().remove(key_id);
    }
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

    /// Forget everything: the next lookup scans the engine again (after another operator may
    /// have made keys).
    pub async fn reset(&self) {
        *self.inner.lock().await = None;
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

#[cfg(test)]
mod tests {
    use super::super::time_from_millis;
    use super::*;
    use kubekms_crds::{
        KeyOrigin, KeySpec, KeyState, KeyStatus, KeyUsage, KmsKeySpec, RotationSpec,
    };
    use kubekms_engine::clock::Millis;
    use kubekms_proto::vocab::OriginType;

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
        let req = create_key_request(&spec, "shop", "orders", "uid-1", "{}".into());
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
        let req = create_key_request(&spec, "ns", "k", "u", "{}".into());
        assert_eq!(req.rotation_period_in_days, Some(120));
        spec.rotation = Some(RotationSpec {
            enabled: false,
            period_days: 120,
        });
        let req = create_key_request(&spec, "ns", "k", "u", "{}".into());
        assert!(req.rotation_period_in_days.is_none());
        spec.rotation = Some(RotationSpec {
            enabled: true,
            period_days: 120,
        });
        spec.key_spec = KmsKeySpec::EccNistP256;
        let req = create_key_request(&spec, "ns", "k", "u", "{}".into());
        assert!(req.rotation_period_in_days.is_none());
    }

    #[test]
    fn external_keys_are_created_for_import_without_a_description_when_none() {
        let spec = KeySpec {
            origin: KeyOrigin::External,
            key_usage: Some(KeyUsage::EncryptDecrypt),
            ..KeySpec::default()
        };
        let req = create_key_request(&spec, "ns", "byok", "u", "{}".into());
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
            revision: Some(1),
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
    fn key_refs_follow_the_status_key_id_and_deletions() {
        let refs = KeyRefs::default();
        let mut key = Key::new("orders", KeySpec::default());
        key.metadata.namespace = Some("shop".into());
        refs.observe(&watcher::Event::Apply(key.clone()));
        assert!(
            refs.0.read().by_key_id.is_empty(),
            "no key id in status yet"
        );
        key.status = Some(KeyStatus {
            key_id: Some("id-1".into()),
            ..KeyStatus::default()
        });
        refs.observe(&watcher::Event::InitApply(key.clone()));
        let found = refs.get("id-1").unwrap();
        assert_eq!(found.name, "orders");
        assert_eq!(found.namespace.as_deref(), Some("shop"));
        // Another Key deleted with a stale copy naming the same id leaves the holder alone.
        let mut other = key.clone();
        other.metadata.name = Some("old".into());
        refs.observe(&watcher::Event::Delete(other));
        assert!(refs.get("id-1").is_some());
        // A new id replaces the old one.
        let mut moved = key.clone();
        moved.status.as_mut().unwrap().key_id = Some("id-2".into());
        refs.observe(&watcher::Event::Apply(moved.clone()));
        assert!(refs.get("id-1").is_none());
        assert_eq!(refs.get("id-2").unwrap().name, "orders");
        refs.observe(&watcher::Event::Delete(moved.clone()));
        assert!(refs.get("id-2").is_none());
        // A relist that no longer shows a Key drops it once the list is done.
        refs.observe(&watcher::Event::Apply(moved.clone()));
        refs.observe(&watcher::Event::Init);
        assert!(refs.get("id-2").is_some(), "kept while relisting");
        refs.observe(&watcher::Event::InitApply(key.clone()));
        refs.observe(&watcher::Event::InitDone);
        assert!(
            refs.get("id-2").is_none(),
            "deleted while the watch was down"
        );
        assert!(refs.get("id-1").is_some());
    }

    #[test]
    fn a_read_older_than_the_announced_revision_is_behind_until_one_catches_up() {
        let awaited = AwaitedRevisions::default();
        assert!(!awaited.behind("k", Some(1)), "nothing announced");
        awaited.announce("k", 3);
        awaited.announce("k", 2);
        assert!(awaited.behind("k", Some(2)));
        assert!(!awaited.behind("k", Some(3)));
        assert!(!awaited.behind("k", Some(1)), "forgotten once seen");
        awaited.announce("k", 5);
        assert!(!awaited.behind("k", None), "an engine without revisions");
        awaited.announce("k", 7);
        awaited.forget("k");
        assert!(!awaited.behind("k", Some(1)), "forgotten with its key");
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
