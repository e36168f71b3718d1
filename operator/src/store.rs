//! The cluster-backed key store: the engine's records kept as Secrets in the engine's namespace,
//! so they are covered by RBAC and encryption at rest, and outlive every pod.
//!
//! The store never calls into the engine: [`KubeStore::watch`] reports other replicas' writes
//! as a stream of [`StoreChange`]s that the engine follows (`Kms::follow`).
//!
//! Layout: one Secret per key, `kubekms-key-<key id>`, and one per alias,
//! `kubekms-alias-<first 40 hex of sha256(account NUL region NUL alias name)>` (an alias name
//! holds `/`, which a Secret name cannot). Both carry the labels
//! `app.kubernetes.io/managed-by=kubekms` and `kubekms.io/record=key|alias`, and hold the
//! record's JSON under `data.record`; key material in it is already wrapped under the root key.
//!
//! Durability: a write returns once the API server has answered, and the API server answers only
//! after etcd has committed the write.
//!
//! Concurrent writers. Every engine replica runs the same due work (rotations, ends of deletion
//! windows), so two replicas rotating one key at the same second is the normal case, not a corner
//! case. With last-writer-wins (server-side apply, `force`) the loser's new version would be
//! silently replaced by the winner's, and anything the loser had already encrypted under its own
//! new material could never be decrypted again. So writes are optimistic instead: a create fails
//! if the Secret exists, and a replace or delete is conditioned on the resourceVersion of the
//! record this replica last saw. A replica that loses the race gets a retryable
//! `KMSInternalException` (its engine then does not publish the change) and the store pulls the
//! winner's record into the engine at once, so a retry works on fresh state.
//!
//! Replicas learn each other's writes through [`KubeStore::watch`]. resourceVersions are compared
//! as integers (they are etcd revisions) only to skip events that are older than, or the echo
//! of, what this replica already holds; a version that is not an integer is always applied.
//!
//! One window is beyond the API server's check: a watch event applied between the engine reading
//! a record and writing its change moves the expected resourceVersion forward under the engine.
//! For key material this is caught here too (a write that gives a known version of a generated
//! key different material is refused); for metadata alone (description, tags, state) a change
//! made in that window is last-writer-wins. Closing it fully needs the engine to pass the
//! version it read.
//!
//! A Secret holds at most 1 MiB, which bounds the versions of one key (thousands for symmetric
//! keys, a few hundred for RSA-4096).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::ByteString;
use kube::api::{Api, DeleteParams, ListParams, PostParams, Preconditions};
use kube::runtime::utils::Backoff;
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::ResourceExt;
use kubekms_engine::crypto::RootKey;
use kubekms_engine::model::OriginType;
use kubekms_engine::record::{AliasRecord, KeyId, KeyRecord, Scope};
use kubekms_engine::store::{Followed, KeyStore, Snapshot, StoreChange};
use kubekms_engine::{KmsError, Result};
use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot};
use zeroize::{Zeroize, Zeroizing};

pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY: &str = "kubekms";
pub const RECORD_LABEL: &str = "kubekms.io/record";
pub const KEY_ID_LABEL: &str = "kubekms.io/key-id";
pub const ALIAS_ANNOTATION: &str = "kubekms.io/alias";
const KIND_KEY: &str = "key";
const KIND_ALIAS: &str = "alias";
const RECORD_DATA: &str = "record";

/// The default name of the root-key Secret, and the entry in it.
pub const ROOT_KEY_SECRET: &str = "kubekms-root-key";
pub const ROOT_KEY_DATA: &str = "root.key";
const ROOT_KEY_LEN: usize = 32;
const ROOT_KEY_HEX_LEN: usize = ROOT_KEY_LEN * 2;

/// The engine writes while holding its writer lock, so a hung API server must not hold it
/// longer than this; the watch catches up with a write that did land after all.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
const LIST_PAGE: u32 = 500;
/// Short enough that replicas reconverge within seconds of the API server coming back.
const RETRY_MIN: Duration = Duration::from_millis(250);
const RETRY_MAX: Duration = Duration::from_secs(5);

/// Selects the record Secrets and nothing else the operator may label as its own (such as the
/// root-key Secret).
pub fn record_selector() -> String {
    format!("{MANAGED_BY_LABEL}={MANAGED_BY},{RECORD_LABEL} in ({KIND_KEY},{KIND_ALIAS})")
}

pub fn key_secret_name(key_id: &str) -> String {
    format!("kubekms-key-{}", key_id.to_ascii_lowercase())
}

pub fn alias_secret_name(scope: &Scope, name: &str) -> String {
    let mut input = Vec::with_capacity(scope.account.len() + scope.region.len() + name.len() + 2);
    input.extend_from_slice(scope.account.as_bytes());
    input.push(0);
    input.extend_from_slice(scope.region.as_bytes());
    input.push(0);
    input.extend_from_slice(name.as_bytes());
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &input);
    let mut hex = hex::encode(digest.as_ref());
    hex.truncate(40);
    format!("kubekms-alias-{hex}")
}

/// Which record a Secret holds, known even after the Secret is gone.
#[derive(Clone)]
enum Identity {
    Key(KeyId),
    Alias(Scope, String),
}

impl Identity {
    /// The change that says this record is gone.
    fn gone(&self) -> StoreChange {
        match self {
            Identity::Key(key_id) => StoreChange::KeyGone { key_id: *key_id },
            Identity::Alias(scope, name) => StoreChange::AliasGone {
                scope: scope.clone(),
                name: name.clone(),
            },
        }
    }
}

/// The last version of a record Secret this replica holds in its engine.
struct Seen {
    identity: Identity,
    resource_version: String,
    /// Deleted by this replica; kept until the watch reports the deletion, so older events for
    /// the Secret still count as stale.
    deleted: bool,
    /// Digests of the wrapped material per key version (generated keys only), to refuse a
    /// write that would replace a version's material: see [`KubeStore::expected_version`].
    versions: Vec<(u32, [u8; 32])>,
}

/// A generated key's versions never change material once written, so a write that gives a
/// known version different material was computed from a record older than one already applied.
/// Imported keys re-wrap the same material on re-import, so they are not tracked.
fn version_digests(record: &KeyRecord) -> Vec<(u32, [u8; 32])> {
    if record.origin == OriginType::External {
        return Vec::new();
    }
    record
        .versions
        .iter()
        .map(|v| {
            let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &v.wrapped_material);
            let mut out = [0u8; 32];
            out.copy_from_slice(d.as_ref());
            (v.version, out)
        })
        .collect()
}

fn parsed_digests(parsed: &Parsed) -> Vec<(u32, [u8; 32])> {
    match parsed {
        Parsed::Key(record) => version_digests(record),
        Parsed::Alias(_) => Vec::new(),
    }
}

enum Parsed {
    Key(KeyRecord),
    Alias(AliasRecord),
}

impl Parsed {
    fn identity(&self) -> Identity {
        match self {
            Parsed::Key(r) => Identity::Key(r.key_id),
            Parsed::Alias(a) => Identity::Alias(a.scope.clone(), a.name.clone()),
        }
    }
}

/// A [`KeyStore`] in the cluster. See the module documentation.
pub struct KubeStore {
    api: Api<Secret>,
    namespace: String,
    /// Held while a change is reported and applied, so what is marked seen and what the
    /// engine holds move together.
    seen: tokio::sync::Mutex<HashMap<String, Seen>>,
    /// Where changes go once [`KubeStore::watch`] runs: the engine follows them.
    follower: Mutex<Option<mpsc::UnboundedSender<Followed>>>,
    synced: AtomicBool,
}

impl KubeStore {
    pub fn new(client: kube::Client, namespace: &str) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            namespace: namespace.to_string(),
            seen: tokio::sync::Mutex::new(HashMap::new()),
            follower: Mutex::new(None),
            synced: AtomicBool::new(false),
        }
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// True once the watch has listed every record at least once.
    pub fn has_synced(&self) -> bool {
        self.synced.load(Ordering::Acquire)
    }

    /// Watch the records in the cluster and report other replicas' writes and deletions as a
    /// stream of changes for the engine to follow (`Kms::follow`). The future runs until dropped;
    /// errors are retried with backoff while the engine goes on serving from memory. After every
    /// (re-)list, records that are no longer in the cluster are reported gone.
    pub fn watch(
        self: &Arc<Self>,
    ) -> (
        impl Future<Output = ()> + Send + 'static,
        mpsc::UnboundedReceiver<Followed>,
    ) {
        let store = Arc::clone(self);
        let (tx, rx) = mpsc::unbounded_channel();
        *store.follower.lock() = Some(tx);
        let watch = async move {
            let config = watcher::Config::default().labels(&record_selector());
            let mut events = watcher::watcher(store.api.clone(), config)
                .backoff(RetryBackoff::default())
                .boxed();
            let mut listed: Option<HashSet<String>> = None;
            while let Some(event) = events.next().await {
                match event {
                    Ok(Event::Apply(secret)) => store.apply_secret(&secret, false).await,
                    Ok(Event::Delete(secret)) => store.on_deleted(&secret).await,
                    Ok(Event::Init) => listed = Some(HashSet::new()),
                    Ok(Event::InitApply(secret)) => {
                        if let Some(listed) = listed.as_mut() {
                            listed.insert(secret.name_any());
                        }
                        // A re-list re-applies what it finds, which also repairs an engine
                        // that published its own write over a newer one.
                        store.apply_secret(&secret, true).await;
                    }
                    Ok(Event::InitDone) => {
                        let listed = listed.take().unwrap_or_default();
                        store.forget_unlisted(&listed).await;
                        store.synced.store(true, Ordering::Release);
                    }
                    Err(e) => tracing::warn!(
                        namespace = %store.namespace,
                        error = %e,
                        "watch on key record Secrets failed; serving from memory and retrying"
                    ),
                }
            }
        };
        (watch, rx)
    }

    /// Report `change` to the engine and wait until it is applied. `Err` when no engine
    /// follows (the watch is not running) or it could not load the record.
    async fn report(&self, change: StoreChange) -> Result<()> {
        let follower = self
            .follower
            .lock()
            .clone()
            .ok_or_else(|| KmsError::internal("no engine follows the key store"))?;
        let (applied, answer) = oneshot::channel();
        follower
            .send(Followed { change, applied })
            .map_err(|_| KmsError::internal("the engine stopped following the key store"))?;
        answer
            .await
            .map_err(|_| KmsError::internal("the engine stopped following the key store"))?
    }

    /// The resourceVersion a write must be conditioned on, or `Err` if the write is already
    /// known to be stale. The API server's check covers changes this replica has not seen; the
    /// digests cover one the watch applied after the engine read the record it changed.
    async fn expected_version(
        &self,
        name: &str,
        versions: &[(u32, [u8; 32])],
    ) -> std::result::Result<Option<String>, ()> {
        let seen = self.seen.lock().await;
        let Some(known) = seen.get(name).filter(|s| !s.deleted) else {
            return Ok(None);
        };
        let diverged = versions.iter().any(|(v, digest)| {
            known
                .versions
                .iter()
                .any(|(kv, kd)| kv == v && kd != digest)
        });
        if diverged {
            return Err(());
        }
        Ok(Some(known.resource_version.clone()).filter(|rv| !rv.is_empty()))
    }

    /// Publish a record Secret in the engine unless this replica already holds it or something
    /// newer. `relisted` also re-applies the version it already holds.
    async fn apply_secret(&self, secret: &Secret, relisted: bool) {
        let name = secret.name_any();
        let version = secret.resource_version().unwrap_or_default();
        let mut seen = self.seen.lock().await;
        if let Some(known) = seen.get(&name) {
            if is_older(&version, &known.resource_version, !relisted) {
                return;
            }
        }
        let parsed = match parse_record(secret) {
            Ok(parsed) => parsed,
            Err(reason) => {
                tracing::warn!(
                    secret = %format!("{}/{name}", self.namespace),
                    "ignoring malformed key record Secret: {reason}"
                );
                return;
            }
        };
        let identity = parsed.identity();
        let versions = parsed_digests(&parsed);
        let change = match parsed {
            Parsed::Key(record) => StoreChange::Key(record),
            Parsed::Alias(alias) => StoreChange::Alias(alias),
        };
        // Applied by the engine while `seen` is held, so the mark and the engine move together.
        if let Err(e) = self.report(change).await {
            // Not marked seen: a write based on the older version then conflicts rather than
            // overwriting this one.
            tracing::warn!(
                secret = %format!("{}/{name}", self.namespace),
                error = %e.chain(),
                "cannot load a record written by another replica"
            );
            return;
        }
        seen.insert(
            name,
            Seen {
                identity,
                resource_version: version,
                deleted: false,
                versions,
            },
        );
    }

    async fn on_deleted(&self, secret: &Secret) {
        let name = secret.name_any();
        let version = secret.resource_version().unwrap_or_default();
        let mut seen = self.seen.lock().await;
        let identity = match seen.get(&name) {
            // Written again (an alias re-created) after the deletion reported here.
            Some(known) if !known.deleted && is_older(&version, &known.resource_version, false) => {
                return;
            }
            Some(known) => Some(known.identity.clone()),
            None => parse_record(secret).ok().map(|p| p.identity()),
        };
        seen.remove(&name);
        if let Some(identity) = identity {
            let _ = self.report(identity.gone()).await;
        }
    }

    /// After a (re-)list: forget records this replica holds that the list no longer showed.
    /// The list is a snapshot, so a record missing from it is checked once more before it is
    /// forgotten: it may have been written after the snapshot.
    async fn forget_unlisted(&self, listed: &HashSet<String>) {
        let candidates: Vec<(String, String)> = {
            let mut seen = self.seen.lock().await;
            seen.retain(|name, s| !s.deleted || listed.contains(name));
            seen.iter()
                .filter(|(name, _)| !listed.contains(*name))
                .map(|(name, s)| (name.clone(), s.resource_version.clone()))
                .collect()
        };
        for (name, version) in candidates {
            match self.call(self.api.get_opt(&name)).await {
                Ok(None) => {
                    let mut seen = self.seen.lock().await;
                    if let Some(known) = seen.get(&name) {
                        if known.resource_version == version {
                            let _ = self.report(known.identity.gone()).await;
                            seen.remove(&name);
                        }
                    }
                }
                Ok(Some(_)) => {}
                Err(e) => tracing::warn!(
                    secret = %format!("{}/{name}", self.namespace),
                    error = %e,
                    "cannot check a record missing from the list; keeping it until the next list"
                ),
            }
        }
    }

    /// Load the cluster's version of record `name` into the engine (after a write lost a race,
    /// or to catch up with a record another replica just wrote).
    async fn refresh(&self, name: &str) {
        if self.follower.lock().is_none() {
            return;
        }
        match self.call(self.api.get_opt(name)).await {
            Ok(Some(secret)) => self.apply_secret(&secret, true).await,
            Ok(None) => {
                let mut seen = self.seen.lock().await;
                if let Some(known) = seen.remove(name) {
                    let _ = self.report(known.identity.gone()).await;
                }
            }
            Err(e) => tracing::warn!(
                secret = %format!("{}/{name}", self.namespace),
                error = %e,
                "cannot read a record from the cluster"
            ),
        }
    }

    async fn call<T>(
        &self,
        request: impl Future<Output = kube::Result<T>>,
    ) -> std::result::Result<T, CallError> {
        match tokio::time::timeout(CALL_TIMEOUT, request).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(CallError::Kube(e)),
            Err(_) => Err(CallError::Timeout),
        }
    }

    async fn write(
        &self,
        name: String,
        identity: Identity,
        versions: Vec<(u32, [u8; 32])>,
        mut labels: BTreeMap<String, String>,
        annotations: Option<BTreeMap<String, String>>,
        record: Vec<u8>,
    ) -> Result<()> {
        // The engine already holds the newer record (the watch applied it): it only has to
        // retry.
        let expected = self
            .expected_version(&name, &versions)
            .await
            .map_err(|()| self.raced(&name))?;
        labels.insert(MANAGED_BY_LABEL.to_string(), MANAGED_BY.to_string());
        let secret = Secret {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                labels: Some(labels),
                annotations,
                resource_version: expected.clone(),
                ..ObjectMeta::default()
            },
            type_: Some("Opaque".to_string()),
            data: Some(BTreeMap::from([(
                RECORD_DATA.to_string(),
                ByteString(record),
            )])),
            ..Secret::default()
        };
        let pp = PostParams::default();
        let result = match expected {
            Some(_) => self.call(self.api.replace(&name, &pp, &secret)).await,
            None => self.call(self.api.create(&pp, &secret)).await,
        };
        match result {
            Ok(written) => {
                // Unconditionally: the engine publishes exactly this version next.
                self.seen.lock().await.insert(
                    name,
                    Seen {
                        identity,
                        resource_version: written.resource_version().unwrap_or_default(),
                        deleted: false,
                        versions,
                    },
                );
                Ok(())
            }
            // 409: created or changed meanwhile; 404 on replace: deleted meanwhile.
            Err(CallError::Kube(e)) if matches!(status_code(&e), Some(409 | 404)) => {
                self.refresh(&name).await;
                Err(self.raced(&name))
            }
            Err(e) => Err(self.failed("write", &name, e)),
        }
    }

    async fn remove(&self, name: String, identity: Identity) -> Result<()> {
        let expected = self.expected_version(&name, &[]).await.unwrap_or(None);
        let dp = DeleteParams {
            preconditions: expected.map(|rv| Preconditions {
                resource_version: Some(rv),
                uid: None,
            }),
            ..DeleteParams::default()
        };
        match self.call(self.api.delete(&name, &dp)).await {
            Ok(_) => {}
            Err(CallError::Kube(e)) if status_code(&e) == Some(404) => {}
            Err(CallError::Kube(e)) if status_code(&e) == Some(409) => {
                self.refresh(&name).await;
                return Err(self.raced(&name));
            }
            Err(e) => return Err(self.failed("delete", &name, e)),
        }
        let mut seen = self.seen.lock().await;
        match seen.get_mut(&name) {
            Some(known) => known.deleted = true,
            None => {
                seen.insert(
                    name,
                    Seen {
                        identity,
                        resource_version: String::new(),
                        deleted: true,
                        versions: Vec::new(),
                    },
                );
            }
        }
        Ok(())
    }

    fn raced(&self, name: &str) -> KmsError {
        KmsError::Internal(format!(
            "Secret {}/{name} was changed by another kubekms replica at the same time; retry",
            self.namespace
        ))
    }

    fn failed(&self, what: &str, name: &str, e: CallError) -> KmsError {
        KmsError::dependency(format!("cannot {what} Secret {}/{name}", self.namespace), e)
    }

    async fn list_all(&self) -> Result<Vec<Secret>> {
        let mut out = Vec::new();
        let mut params = ListParams::default()
            .labels(&record_selector())
            .limit(LIST_PAGE);
        loop {
            let page = self
                .call(self.api.list(&params))
                .await
                .map_err(|e| self.failed("list", "kubekms-*", e))?;
            out.extend(page.items);
            match page.metadata.continue_ {
                Some(token) if !token.is_empty() => params = params.continue_token(&token),
                _ => return Ok(out),
            }
        }
    }
}

#[async_trait]
impl KeyStore for KubeStore {
    async fn load(&self) -> Result<Snapshot> {
        let secrets = self.list_all().await?;
        let mut snapshot = Snapshot::default();
        let mut seen = HashMap::with_capacity(secrets.len());
        for secret in &secrets {
            let name = secret.name_any();
            let parsed = parse_record(secret).map_err(|reason| {
                KmsError::Internal(format!(
                    "key record Secret {}/{name} is malformed: {reason}",
                    self.namespace
                ))
            })?;
            seen.insert(
                name,
                Seen {
                    identity: parsed.identity(),
                    resource_version: secret.resource_version().unwrap_or_default(),
                    deleted: false,
                    versions: parsed_digests(&parsed),
                },
            );
            match parsed {
                Parsed::Key(record) => snapshot.keys.push(record),
                Parsed::Alias(alias) => snapshot.aliases.push(alias),
            }
        }
        *self.seen.lock().await = seen;
        Ok(snapshot)
    }

    async fn put_key(&self, key: &KeyRecord) -> Result<()> {
        let record = serde_json::to_vec(key)
            .map_err(|_| KmsError::internal("cannot encode a key record"))?;
        let key_id = key.key_id.to_string();
        let name = key_secret_name(&key_id);
        let labels = BTreeMap::from([
            (RECORD_LABEL.to_string(), KIND_KEY.to_string()),
            (KEY_ID_LABEL.to_string(), key_id),
        ]);
        let identity = Identity::Key(key.key_id);
        self.write(name, identity, version_digests(key), labels, None, record)
            .await
    }

    async fn delete_key(&self, _scope: &Scope, key_id: KeyId) -> Result<()> {
        self.remove(key_secret_name(&key_id.to_string()), Identity::Key(key_id))
            .await
    }

    fn shared(&self) -> bool {
        true
    }

    async fn catch_up_key(&self, key_id: KeyId) -> Result<bool> {
        let name = key_secret_name(&key_id.to_string());
        self.refresh(&name).await;
        Ok(self
            .seen
            .lock()
            .await
            .get(&name)
            .is_some_and(|s| !s.deleted))
    }

    async fn put_alias(&self, alias: &AliasRecord) -> Result<()> {
        let record = serde_json::to_vec(alias)
            .map_err(|_| KmsError::internal("cannot encode an alias record"))?;
        let labels = BTreeMap::from([(RECORD_LABEL.to_string(), KIND_ALIAS.to_string())]);
        // For people reading `kubectl get secrets -o yaml`; the record is what counts.
        let annotations = BTreeMap::from([(
            ALIAS_ANNOTATION.to_string(),
            format!(
                "{}/{}/{}",
                alias.scope.account, alias.scope.region, alias.name
            ),
        )]);
        let identity = Identity::Alias(alias.scope.clone(), alias.name.clone());
        let name = alias_secret_name(&alias.scope, &alias.name);
        self.write(
            name,
            identity,
            Vec::new(),
            labels,
            Some(annotations),
            record,
        )
        .await
    }

    async fn delete_alias(&self, scope: &Scope, name: &str) -> Result<()> {
        let identity = Identity::Alias(scope.clone(), name.to_string());
        self.remove(alias_secret_name(scope, name), identity).await
    }
}

/// Parse a record Secret. The reason never quotes the Secret's data.
fn parse_record(secret: &Secret) -> std::result::Result<Parsed, String> {
    let name = secret.metadata.name.as_deref().unwrap_or_default();
    let data = secret
        .data
        .as_ref()
        .and_then(|d| d.get(RECORD_DATA))
        .ok_or_else(|| format!("it has no `{RECORD_DATA}` entry"))?;
    match secret.labels().get(RECORD_LABEL).map(String::as_str) {
        Some(KIND_KEY) => {
            let record: KeyRecord = serde_json::from_slice(&data.0).map_err(json_reason)?;
            if name != key_secret_name(&record.key_id.to_string()) {
                return Err("its name does not match the key id in its record".to_string());
            }
            Ok(Parsed::Key(record))
        }
        Some(KIND_ALIAS) => {
            let alias: AliasRecord = serde_json::from_slice(&data.0).map_err(json_reason)?;
            if name != alias_secret_name(&alias.scope, &alias.name) {
                return Err("its name does not match the alias in its record".to_string());
            }
            Ok(Parsed::Alias(alias))
        }
        _ => Err(format!(
            "its {RECORD_LABEL} label is neither `{KIND_KEY}` nor `{KIND_ALIAS}`"
        )),
    }
}

/// serde_json's own message quotes the offending value; only its position is safe to show.
fn json_reason(e: serde_json::Error) -> String {
    format!(
        "its record is not a valid record ({:?} error at line {}, column {})",
        e.classify(),
        e.line(),
        e.column()
    )
}

/// Whether `candidate` is older than `known` (or, with `or_equal`, the same). Versions that
/// are not integers are never considered older, so they are applied.
fn is_older(candidate: &str, known: &str, or_equal: bool) -> bool {
    match (candidate.parse::<u64>(), known.parse::<u64>()) {
        (Ok(c), Ok(k)) => c < k || (or_equal && c == k),
        _ => false,
    }
}

fn status_code(e: &kube::Error) -> Option<u16> {
    match e {
        kube::Error::Api(status) => Some(status.code),
        _ => None,
    }
}

#[derive(Debug)]
enum CallError {
    Kube(kube::Error),
    Timeout,
}

impl std::error::Error for CallError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            CallError::Kube(e) => Some(e),
            CallError::Timeout => None,
        }
    }
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Kube(kube::Error::Api(s)) => {
                write!(f, "{} {}: {}", s.code, s.reason, s.message)
            }
            CallError::Kube(e) => write!(f, "{e}"),
            CallError::Timeout => write!(
                f,
                "no answer from the API server within {}s",
                CALL_TIMEOUT.as_secs()
            ),
        }
    }
}

/// Exponential from [`RETRY_MIN`] to [`RETRY_MAX`]; reset by the watcher on success.
struct RetryBackoff {
    next: Duration,
}

impl Default for RetryBackoff {
    fn default() -> Self {
        Self { next: RETRY_MIN }
    }
}

impl Iterator for RetryBackoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let delay = self.next;
        self.next = (delay * 2).min(RETRY_MAX);
        Some(delay)
    }
}

impl Backoff for RetryBackoff {
    fn reset(&mut self) {
        self.next = RETRY_MIN;
    }
}

/// The root key from the Secret `namespace/name` (entry `root.key`: 64 hex characters, as in
/// the engine's root-key file). With `create`, a missing Secret is created once with a fresh
/// key; the create is atomic, so of replicas starting together exactly one key wins, and every
/// replica returns the key read back from the Secret. An existing Secret is never replaced.
pub async fn root_key_from_secret(
    client: kube::Client,
    namespace: &str,
    name: &str,
    create: bool,
) -> crate::Result<RootKey> {
    let api: Api<Secret> = Api::namespaced(client, namespace);
    let secret = match api.get_opt(name).await? {
        Some(secret) => secret,
        None if create => {
            create_root_key_secret(&api, namespace, name).await?;
            api.get(name).await?
        }
        None => {
            return Err(crate::Error::Config(format!(
                "root key Secret {namespace}/{name} does not exist"
            )))
        }
    };
    parse_root_key(secret, namespace, name)
}

async fn create_root_key_secret(
    api: &Api<Secret>,
    namespace: &str,
    name: &str,
) -> crate::Result<()> {
    let key = RootKey::generate()?;
    if key.len() != ROOT_KEY_LEN {
        return Err(KmsError::internal("generated root key has the wrong length").into());
    }
    let mut line = Zeroizing::new(vec![0u8; ROOT_KEY_HEX_LEN + 1]);
    hex::encode_to_slice(&key[..], &mut line[..ROOT_KEY_HEX_LEN])
        .map_err(|_| KmsError::internal("cannot encode a root key"))?;
    line[ROOT_KEY_HEX_LEN] = b'\n';
    let mut secret = Secret {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            labels: Some(BTreeMap::from([(
                MANAGED_BY_LABEL.to_string(),
                MANAGED_BY.to_string(),
            )])),
            ..ObjectMeta::default()
        },
        type_: Some("Opaque".to_string()),
        // Nobody, not even this operator, can later swap the key under existing records.
        immutable: Some(true),
        data: Some(BTreeMap::from([(
            ROOT_KEY_DATA.to_string(),
            ByteString(line.to_vec()),
        )])),
        ..Secret::default()
    };
    let result = api.create(&PostParams::default(), &secret).await;
    // The request body kube serialised is out of reach; this copy at least is wiped.
    if let Some(mut data) = secret.data.take() {
        data.values_mut().for_each(|v| v.0.zeroize());
    }
    match result {
        Ok(_) => {
            tracing::info!(secret = %format!("{namespace}/{name}"), "generated a new root key");
            Ok(())
        }
        Err(e) if status_code(&e) == Some(409) => {
            tracing::info!(
                secret = %format!("{namespace}/{name}"),
                "root key Secret created concurrently; using it"
            );
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

/// Errors name the Secret and never quote its contents.
fn parse_root_key(mut secret: Secret, namespace: &str, name: &str) -> crate::Result<RootKey> {
    let bytes = secret
        .data
        .as_mut()
        .and_then(|d| d.remove(ROOT_KEY_DATA))
        .map(|b| Zeroizing::new(b.0))
        .ok_or_else(|| {
            crate::Error::Config(format!(
                "root key Secret {namespace}/{name} has no `{ROOT_KEY_DATA}` entry"
            ))
        })?;
    let hex_part = bytes
        .strip_suffix(b"\r\n")
        .or_else(|| bytes.strip_suffix(b"\n"))
        .unwrap_or(&bytes[..]);
    let mut key = Zeroizing::new([0u8; ROOT_KEY_LEN]);
    if hex_part.len() != ROOT_KEY_HEX_LEN || hex::decode_to_slice(hex_part, &mut key[..]).is_err() {
        // hex's own error names the offending character: a secret byte.
        return Err(crate::Error::Config(format!(
            "root key Secret {namespace}/{name} is malformed: `{ROOT_KEY_DATA}` must hold exactly \
             {ROOT_KEY_HEX_LEN} hex characters ({ROOT_KEY_LEN} bytes), optionally followed by a \
             newline"
        )));
    }
    Ok(RootKey::from_bytes(&key[..])?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(name: &str, kind: &str, data: &[u8]) -> Secret {
        Secret {
            metadata: ObjectMeta {
                name: Some(name.to_string()),
                labels: Some(BTreeMap::from([(
                    RECORD_LABEL.to_string(),
                    kind.to_string(),
                )])),
                ..ObjectMeta::default()
            },
            data: Some(BTreeMap::from([(
                RECORD_DATA.to_string(),
                ByteString(data.to_vec()),
            )])),
            ..Secret::default()
        }
    }

    #[test]
    fn alias_names_are_valid_distinct_and_stable() {
        let a = Scope::new("111122223333", "us-east-1");
        let b = Scope::new("111122223333", "us-west-2");
        let n1 = alias_secret_name(&a, "alias/ns/one");
        assert_eq!(n1, alias_secret_name(&a, "alias/ns/one"));
        assert_ne!(n1, alias_secret_name(&b, "alias/ns/one"));
        assert_ne!(n1, alias_secret_name(&a, "alias/ns/two"));
        // The separator keeps ("ab","c") and ("a","bc") apart.
        assert_ne!(
            alias_secret_name(&Scope::new("ab", "c"), "x"),
            alias_secret_name(&Scope::new("a", "bc"), "x")
        );
        assert_eq!(n1.len(), "kubekms-alias-".len() + 40);
        assert!(n1
            .bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-'));
    }

    #[test]
    fn malformed_records_are_named_without_quoting_data() {
        let secretish = "SECRETVALUE0123456789";
        let cases = [
            secret(
                "kubekms-key-x",
                KIND_KEY,
                format!("{{\"key_id\": 5, \"x\": \"{secretish}\"}}").as_bytes(),
            ),
            secret(
                "kubekms-key-x",
                KIND_KEY,
                format!("\"{secretish}\"").as_bytes(),
            ),
            secret("kubekms-alias-x", KIND_ALIAS, secretish.as_bytes()),
            secret("kubekms-key-x", "other", b"{}"),
        ];
        for s in &cases {
            let Err(reason) = parse_record(s) else {
                panic!("accepted a malformed record");
            };
            assert!(!reason.contains(secretish), "{reason}");
        }
        let mut no_data = secret("kubekms-key-x", KIND_KEY, b"{}");
        no_data.data = None;
        assert!(parse_record(&no_data).is_err());
    }

    #[test]
    fn versions_compare_as_integers_and_unknown_ones_apply() {
        assert!(is_older("9", "10", false));
        assert!(!is_older("10", "10", false));
        assert!(is_older("10", "10", true));
        assert!(!is_older("11", "10", true));
        assert!(!is_older("", "10", true));
        assert!(!is_older("abc", "10", true));
    }

    #[test]
    fn root_key_entries_are_checked() {
        let good = "00112233445566778899aabbccddeeff00112233445566778899AABBCCDDEEFF";
        let make = |data: &[u8]| Secret {
            data: Some(BTreeMap::from([(
                ROOT_KEY_DATA.to_string(),
                ByteString(data.to_vec()),
            )])),
            ..Secret::default()
        };
        for ok in [good.to_string(), format!("{good}\n"), format!("{good}\r\n")] {
            assert!(parse_root_key(make(ok.as_bytes()), "ns", "rk").is_ok());
        }
        let secretish = "q".repeat(ROOT_KEY_HEX_LEN);
        for bad in [
            secretish.clone(),
            good[..ROOT_KEY_HEX_LEN - 2].to_string(),
            format!("{good}\n\n"),
            String::new(),
        ] {
            let Err(crate::Error::Config(msg)) = parse_root_key(make(bad.as_bytes()), "ns", "rk")
            else {
                panic!("accepted a malformed root key");
            };
            assert!(msg.contains("ns/rk") && msg.contains("malformed"), "{msg}");
            assert!(!msg.contains("qqqq"), "{msg}");
        }
        let Err(crate::Error::Config(msg)) = parse_root_key(Secret::default(), "ns", "rk") else {
            panic!("accepted a Secret without the entry");
        };
        assert!(msg.contains(ROOT_KEY_DATA), "{msg}");
    }
}
