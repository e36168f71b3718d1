//! The KMS operations as typed functions: one `async fn` per operation, taking the [`Caller`]
//! and the operation's request from `kubekms_proto::ops`, and answering an [`Outcome`]: the
//! typed response and the key(s) the request touched, for the audit log. Transports (the AWS
//! JSON API in `crate::api`, the operator's in-process client, later gRPC) only decode, call
//! and encode.
//!
//! Every operation passes through one authorization hook ([`Authorizer`]) with its action, the
//! resolved key and the encryption context, before it acts.
//!
//! Reads (the hot path: Encrypt, Decrypt, Sign…) only touch memory. Every change is made on a
//! copy of the record, persisted durably, and only then published in memory and acknowledged:
//! a crash at any point leaves either the old or the new record, never a half.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use futures_util::stream::{self, StreamExt};
use kubekms_proto::Action;
use parking_lot::{Mutex, RwLock};
use tokio::sync::mpsc::{self, UnboundedReceiver, UnboundedSender};
use uuid::Uuid;

use crate::blob::EncryptionContext;
use crate::clock::{Clock, Millis};
use crate::crypto::{AwsLcProvider, KeyHandle, KeyMaterial, KeyProvider, RootKey};
use crate::error::{KmsError, Result};
use crate::model::{KeyState, OriginType};
use crate::policy::{KeyPolicy, Subject};
use crate::record::{AliasRecord, KeyId, KeyRecord, KeyVersion, RotationType, Scope};
use crate::store::KeyStore;

mod aliases;
mod authorize;
mod catch_up;
mod changes;
pub mod checks;
mod crypto_ops;
mod import;
mod keys;

pub use authorize::{AccessRequest, AllowAll, Authorizer, KeyAccess, KeyPolicies};
pub use changes::{ChangeLog, CHANGE_LOG_CAPACITY};

/// The engine's pluggable parts, each behind its seam.
pub struct Backends {
    /// Decides whether each request may go ahead.
    pub authorizer: Arc<dyn Authorizer>,
    /// Makes and uses key material.
    pub key_provider: Arc<dyn KeyProvider>,
}

impl Default for Backends {
    /// Key policies enforced; keys in this process, crypto by aws-lc-rs.
    fn default() -> Self {
        Self {
            authorizer: Arc::new(KeyPolicies),
            key_provider: Arc::new(AwsLcProvider::new()),
        }
    }
}

/// Who is calling, and where: filled in by a transport once the caller is authenticated.
#[derive(Clone, Debug)]
pub struct Caller {
    /// The account and region the request is for.
    pub scope: Scope,
    pub principal: Principal,
    /// Echoed to the client and written in the audit log.
    pub request_id: String,
}

impl Caller {
    /// The caller as key policies see it.
    pub fn subject(&self) -> Subject<'_> {
        Subject {
            arn: self.principal.arn(),
            groups: self.principal.groups(),
            account: &self.scope.account,
            administrator: self.principal.role() == AccountRole::Administrator,
        }
    }
}

/// An authenticated identity: its ARN, the ARNs of its groups, and what it may do in the
/// account beyond what key policies grant it. Cheap to clone.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Principal {
    arn: Arc<str>,
    groups: Arc<[String]>,
    role: AccountRole,
}

/// What a principal may do in its account outside key policies (kubekms has no IAM: this is
/// the whole of its "identity-based policy").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AccountRole {
    /// Whatever key policies grant it; it may list keys it may describe, and generate random
    /// bytes.
    Member,
    /// A member that may also create keys (the operator).
    KeyCreator,
    /// Acts for the account: matches the account principal (`arn:aws:iam::<account>:root`)
    /// in key policies, may create keys and list every key.
    Administrator,
}

impl Principal {
    /// A principal without groups; the account's root ARN is its administrator, any other ARN
    /// a member.
    pub fn new(arn: impl Into<String>) -> Self {
        let arn = arn.into();
        let role = if kubekms_proto::principal::is_root_arn(&arn) {
            AccountRole::Administrator
        } else {
            AccountRole::Member
        };
        Self {
            arn: arn.into(),
            groups: Arc::from(Vec::new()),
            role,
        }
    }

    /// The same principal, a member of `groups` (their ARNs).
    pub fn with_groups(mut self, groups: Vec<String>) -> Self {
        self.groups = groups.into();
        self
    }

    pub fn with_role(mut self, role: AccountRole) -> Self {
        self.role = role;
        self
    }

    pub fn arn(&self) -> &str {
        &self.arn
    }

    pub fn groups(&self) -> &[String] {
        &self.groups
    }

    pub fn role(&self) -> AccountRole {
        self.role
    }
}

/// The ARNs of the keys a request touched. ReEncrypt touches two (source, then destination);
/// the others at most one.
pub type TouchedKeys = Vec<Arc<str>>;

/// One operation's answer, with the keys it touched, whether it succeeded or not.
pub struct Outcome<T> {
    pub result: Result<T>,
    pub keys: TouchedKeys,
}

impl<T> Outcome<T> {
    /// `result` of a request that acted on `entry`.
    fn on(entry: &KeyEntry, result: Result<T>) -> Self {
        Self {
            result,
            keys: vec![entry.arn.clone()],
        }
    }

    /// `result` of a request that touched no key.
    fn keyless(result: Result<T>) -> Self {
        Self {
            result,
            keys: Vec::new(),
        }
    }

    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Outcome<U> {
        Outcome {
            result: self.result.map(f),
            keys: self.keys,
        }
    }
}

impl<T> From<KmsError> for Outcome<T> {
    fn from(error: KmsError) -> Self {
        Outcome::keyless(Err(error))
    }
}

/// A request refused before it acted: by validation, key resolution or authorization. Names
/// the key when it was resolved, so the audit log says which key was refused.
pub(crate) struct Refused {
    error: KmsError,
    key: Option<Arc<str>>,
}

impl Refused {
    /// The error alone, for a refusal inside an operation whose key is already named.
    pub(crate) fn into_error(self) -> KmsError {
        self.error
    }
}

impl From<KmsError> for Refused {
    fn from(error: KmsError) -> Self {
        Refused { error, key: None }
    }
}

impl<T> From<Refused> for Outcome<T> {
    fn from(r: Refused) -> Self {
        Outcome {
            result: Err(r.error),
            keys: r.key.into_iter().collect(),
        }
    }
}

/// The value of a `Result`, or return the error from the enclosing operation as its
/// [`Outcome`] (through `From<KmsError>` or `From<Refused>`).
macro_rules! attempt {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(e) => return $crate::service::Outcome::from(e),
        }
    };
}
pub(crate) use attempt;

/// `DryRun`: called once the request is authorized (and checked), so that a dry run answers
/// DryRunOperationException exactly when the real request would have been allowed to act, and
/// changes nothing.
pub(crate) fn dry_run(flag: Option<bool>) -> Result<()> {
    if flag == Some(true) {
        Err(KmsError::DryRunOperation(
            "The request would have succeeded, but the DryRun option is set.".into(),
        ))
    } else {
        Ok(())
    }
}

/// Whether a KeyId parameter may name an alias (the model's `KeyIdType` for cryptographic
/// operations and DescribeKey) or must name the key itself (key management operations).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Aliases {
    Allowed,
    Refused,
}

/// The longest KeyId the model allows (`KeyIdType`: 1 to 2048 characters).
pub const MAX_KEY_ID_LEN: usize = 2048;

/// A key as served: its record plus every version's material, parsed once.
pub(crate) struct KeyEntry {
    pub record: KeyRecord,
    pub versions: BTreeMap<u32, Arc<dyn KeyHandle>>,
    /// Formatted once: every request on the key answers with it.
    arn: Arc<str>,
    /// The record's policy document, parsed once per change of the document.
    policy: Arc<KeyPolicy>,
}

impl KeyEntry {
    fn new(
        record: KeyRecord,
        versions: BTreeMap<u32, Arc<dyn KeyHandle>>,
        policy: Arc<KeyPolicy>,
    ) -> Self {
        Self {
            arn: record.arn().into(),
            record,
            versions,
            policy,
        }
    }

    /// The key as the authorization hook sees it.
    pub fn access(&self) -> KeyAccess<'_> {
        KeyAccess {
            record: &self.record,
            arn: &self.arn,
            policy: &self.policy,
        }
    }

    /// The key's id, as the key table and ciphertext headers hold it.
    pub fn uuid(&self) -> Uuid {
        self.record.key_id.uuid()
    }

    pub fn arn(&self) -> &str {
        &self.arn
    }

    pub fn current(&self) -> Result<(u32, &Arc<dyn KeyHandle>)> {
        self.versions
            .iter()
            .next_back()
            .map(|(v, k)| (*v, k))
            .ok_or_else(|| KmsError::InvalidState(self.state_message(KeyState::PendingImport)))
    }

    fn state_message(&self, state: KeyState) -> String {
        format!("{} is {}", self.arn(), state)
    }
}

/// A key whose record changed after it was created: by a request (imported material, enable,
/// disable, rotation, a deletion scheduled or cancelled...), by due work (automatic rotation,
/// material expiry, destruction at the end of the deletion window) or by another replica's
/// write seen through the store watch. Lets a controller reconcile that key at once rather than
/// at its next requeue, whoever made the change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyChanged {
    pub scope: Scope,
    pub key_id: KeyId,
}

/// How many due keys one pass works on at once: each is mostly a store write, and the cluster
/// store's writes are round trips to the API server.
pub const DUE_WORK_CONCURRENCY: usize = 32;

/// What has fallen due for a key.
enum Due {
    Deletion,
    Expiry,
    Rotation,
}

#[derive(Default)]
struct Tables {
    keys: HashMap<Uuid, Arc<KeyEntry>>,
    /// By scope, then name: resolving `alias/…` on the request path borrows the caller's scope
    /// and the name, with nothing to allocate for the lookup.
    aliases: HashMap<Scope, HashMap<String, AliasRecord>>,
}

impl Tables {
    fn alias(&self, scope: &Scope, name: &str) -> Option<&AliasRecord> {
        self.aliases.get(scope)?.get(name)
    }

    fn scope_aliases(&self, scope: &Scope) -> impl Iterator<Item = &AliasRecord> {
        self.aliases.get(scope).into_iter().flat_map(|m| m.values())
    }

    fn insert_alias(&mut self, alias: AliasRecord) {
        self.aliases
            .entry(alias.scope.clone())
            .or_default()
            .insert(alias.name.clone(), alias);
    }

    fn remove_alias(&mut self, scope: &Scope, name: &str) {
        if let Some(names) = self.aliases.get_mut(scope) {
            names.remove(name);
            if names.is_empty() {
                self.aliases.remove(scope);
            }
        }
    }
}

const KEY_LOCK_STRIPES: usize = 64;

pub struct Kms {
    store: Arc<dyn KeyStore>,
    /// The one authorization hook every operation passes through.
    authorizer: Arc<dyn Authorizer>,
    /// Where key material is made and used.
    keys: Arc<dyn KeyProvider>,
    root: RootKey,
    clock: Arc<dyn Clock>,
    tables: RwLock<Tables>,
    /// Serialise read-modify-write of a key's record so two changes to one key cannot
    /// interleave; striped by key id, so changes to different keys (a rotation wave, thousands
    /// of CreateKeys) reach the store in parallel.
    key_locks: Vec<tokio::sync::Mutex<()>>,
    /// Serialises alias changes (and a key's destruction, which removes its aliases).
    alias_lock: tokio::sync::Mutex<()>,
    due_work: tokio::sync::Mutex<()>,
    /// Subscribers to [`KeyChanged`]; closed ones are dropped when the next change is sent.
    key_watchers: Mutex<Vec<UnboundedSender<KeyChanged>>>,
    /// The same changes, kept for clients that poll for them over the network.
    change_log: ChangeLog,
    /// Store lookups for keys another replica may have just written, at most this many at once
    /// (see `catch_up`).
    catch_up_slots: tokio::sync::Semaphore,
    catch_up_budget: catch_up::LookupBudget,
}

/// Store lookups in flight at once for keys a request did not find (see `catch_up`).
const CATCH_UP_SLOTS: usize = 4;

impl Kms {
    /// Load every record from the store and prepare the keys, with the default [`Backends`]:
    /// every caller is allowed every operation, keys are aws-lc-rs keys in this process.
    pub async fn open(
        store: Arc<dyn KeyStore>,
        root: RootKey,
        clock: Arc<dyn Clock>,
    ) -> Result<Arc<Self>> {
        Self::open_with(store, root, clock, Backends::default()).await
    }

    /// [`Kms::open`] with other backends.
    pub async fn open_with(
        store: Arc<dyn KeyStore>,
        root: RootKey,
        clock: Arc<dyn Clock>,
        backends: Backends,
    ) -> Result<Arc<Self>> {
        let Backends {
            authorizer,
            key_provider: keys,
        } = backends;
        let snapshot = store.load().await?;
        let mut tables = Tables::default();
        for record in snapshot.keys {
            let entry = prepare_entry(&root, &*keys, record, None)?;
            tables.keys.insert(entry.uuid(), Arc::new(entry));
        }
        for alias in snapshot.aliases {
            tables.insert_alias(alias);
        }
        Ok(Arc::new(Self {
            store,
            authorizer,
            keys,
            root,
            clock,
            tables: RwLock::new(tables),
            key_locks: (0..KEY_LOCK_STRIPES)
                .map(|_| tokio::sync::Mutex::new(()))
                .collect(),
            alias_lock: tokio::sync::Mutex::new(()),
            due_work: tokio::sync::Mutex::new(()),
            key_watchers: Mutex::new(Vec::new()),
            change_log: ChangeLog::new(CHANGE_LOG_CAPACITY),
            catch_up_slots: tokio::sync::Semaphore::new(CATCH_UP_SLOTS),
            catch_up_budget: catch_up::LookupBudget::new(),
        }))
    }

    /// The key backend.
    pub fn key_provider(&self) -> &Arc<dyn KeyProvider> {
        &self.keys
    }

    /// Fresh material for `spec` from the key backend, prepared for use. Generation (RSA
    /// especially) and preparation are slow: both run off the async workers.
    pub(crate) async fn generate_prepared(
        &self,
        spec: crate::model::KeySpec,
    ) -> Result<(KeyMaterial, Arc<dyn KeyHandle>)> {
        let keys = self.keys.clone();
        tokio::task::spawn_blocking(move || {
            let material = keys.generate(spec)?;
            let prepared = keys.prepare(spec, &material)?;
            Ok((material, prepared))
        })
        .await
        .map_err(|_| KmsError::internal("key generation was interrupted"))?
    }

    /// The lock that serialises changes to `key_id`'s record.
    pub(crate) fn key_lock(&self, key_id: KeyId) -> &tokio::sync::Mutex<()> {
        // Random UUIDs: their low bits spread as well as any hash would.
        let stripe = (key_id.uuid().as_u128() % self.key_locks.len() as u128) as usize;
        &self.key_locks[stripe]
    }

    pub fn now(&self) -> Millis {
        self.clock.now_millis()
    }

    /// A feed of the keys that changed (see [`KeyChanged`]); a new key is not a change.
    /// Unbounded so a sender never waits on a slow subscriber; drop the receiver to leave.
    pub fn subscribe_key_changes(&self) -> UnboundedReceiver<KeyChanged> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.key_watchers.lock().push(tx);
        rx
    }

    /// `revision`: the changed record's, none for a key that is gone.
    fn key_changed(&self, scope: &Scope, key_id: KeyId, revision: Option<u64>) {
        let change = KeyChanged {
            scope: scope.clone(),
            key_id,
        };
        self.key_watchers
            .lock()
            .retain(|tx| tx.send(change.clone()).is_ok());
        self.change_log.push(change, revision);
    }

    /// Resolve a KeyId parameter: key id, key ARN, and (when `allow_alias`) alias name or alias
    /// ARN, within the caller's account and region. Keys whose deletion date has passed are gone.
    pub(crate) fn resolve(
        &self,
        ctx: &Caller,
        key_id: &str,
        aliases: Aliases,
    ) -> Result<Arc<KeyEntry>> {
        // Before the lookup, and never echoed: a KeyId of any length would otherwise come back
        // whole in the NotFoundException.
        // The model counts characters; a byte length within the limit is within it too.
        let len = if key_id.len() <= MAX_KEY_ID_LEN {
            key_id.len()
        } else {
            key_id.chars().count()
        };
        checks::check_len("keyId", len, 1, MAX_KEY_ID_LEN)?;
        let allow_alias = aliases == Aliases::Allowed;
        let not_found = || KmsError::NotFound(format!("Key '{key_id}' does not exist"));
        let tables = self.tables.read();
        let id = if let Some(rest) = key_id.strip_prefix("arn:") {
            let (account, region, resource) = parse_kms_arn(rest).ok_or_else(|| {
                KmsError::InvalidArn(format!("'{key_id}' is not a valid KMS ARN"))
            })?;
            if account != ctx.scope.account || region != ctx.scope.region {
                return Err(not_found());
            }
            if let Some(uuid) = resource.strip_prefix("key/") {
                Uuid::parse_str(uuid).map_err(|_| not_found())?
            } else if resource.starts_with("alias/") && allow_alias {
                alias_target(&tables, &ctx.scope, resource).ok_or_else(not_found)?
            } else {
                return Err(not_found());
            }
        } else if key_id.starts_with("alias/") {
            if !allow_alias {
                return Err(not_found());
            }
            alias_target(&tables, &ctx.scope, key_id).ok_or_else(not_found)?
        } else {
            Uuid::parse_str(key_id).map_err(|_| not_found())?
        };
        let Some(entry) = tables.keys.get(&id) else {
            catch_up::missed(id);
            return Err(not_found());
        };
        if entry.record.scope != ctx.scope {
            return Err(not_found());
        }
        if self.deletion_due(&entry.record) {
            return Err(not_found());
        }
        Ok(entry.clone())
    }

    /// [`Kms::resolve`] the key a request acts on and pass it through the authorization hook
    /// for `action`; a refusal after resolution names the key. A key that does not exist is
    /// reported as the hook says (see [`Authorizer::absent`]).
    pub(crate) fn authorized(
        &self,
        caller: &Caller,
        action: Action,
        key_id: &str,
        aliases: Aliases,
        context: Option<&EncryptionContext>,
    ) -> Result<Arc<KeyEntry>, Refused> {
        let entry = self
            .resolve(caller, key_id, aliases)
            .map_err(|e| self.absent(caller, action, key_id, e))?;
        self.authorize_named(caller, action, &entry, Some(key_id), context)?;
        Ok(entry)
    }

    /// A resolution error as the caller may see it: a missing key reads as the hook says.
    pub(crate) fn absent(
        &self,
        caller: &Caller,
        action: Action,
        requested: &str,
        error: KmsError,
    ) -> KmsError {
        match error {
            KmsError::NotFound(_) => self.hidden(caller, action, requested, error),
            other => other,
        }
    }

    /// What the hook tells `caller` about a key it named that does not exist; `truth` is the
    /// error for callers that may know.
    pub(crate) fn hidden(
        &self,
        caller: &Caller,
        action: Action,
        requested: &str,
        truth: KmsError,
    ) -> KmsError {
        self.authorizer.absent(caller, action, requested, truth)
    }

    /// The authorization hook for a key already resolved (a ciphertext's key, an alias's
    /// target).
    pub(crate) fn authorize_entry(
        &self,
        caller: &Caller,
        action: Action,
        entry: &KeyEntry,
        context: Option<&EncryptionContext>,
    ) -> Result<(), Refused> {
        self.authorize_named(caller, action, entry, None, context)
    }

    /// The authorization hook for `entry`, named in a refusal as the caller named it
    /// (`requested`: a key id, ARN or alias), so a refusal reads as it would for a key or alias
    /// that does not exist.
    pub(crate) fn authorize_named(
        &self,
        caller: &Caller,
        action: Action,
        entry: &KeyEntry,
        requested: Option<&str>,
        context: Option<&EncryptionContext>,
    ) -> Result<(), Refused> {
        self.authorizer
            .authorize(&AccessRequest {
                caller,
                action,
                key: Some(entry.access()),
                requested,
                encryption_context: context,
            })
            .map_err(|error| Refused {
                error,
                key: Some(entry.arn.clone()),
            })
    }

    /// Whether `caller` may see `entry` in a listing (ListKeys, ListAliases), as the hook
    /// says.
    pub(crate) fn lists(&self, caller: &Caller, entry: &KeyEntry) -> bool {
        self.authorizer.lists(caller, entry.access())
    }

    /// The authorization hook for an operation that acts on no existing key (CreateKey,
    /// ListKeys, ListAliases, GenerateRandom).
    pub(crate) fn authorize_keyless(&self, caller: &Caller, action: Action) -> Result<()> {
        self.authorizer.authorize(&AccessRequest {
            caller,
            action,
            key: None,
            requested: None,
            encryption_context: None,
        })
    }

    /// Look a key up by the id inside a ciphertext blob.
    pub(crate) fn by_uuid(&self, ctx: &Caller, id: &Uuid) -> Option<Arc<KeyEntry>> {
        let tables = self.tables.read();
        let Some(entry) = tables.keys.get(id) else {
            catch_up::missed(*id);
            return None;
        };
        Some(entry)
            .filter(|e| e.record.scope == ctx.scope && !self.deletion_due(&e.record))
            .cloned()
    }

    /// A key by id in the caller's scope, even one whose deletion window has ended but which
    /// due work has not destroyed yet (so an alias still pointing at it can be authorized).
    pub(crate) fn by_uuid_any(&self, ctx: &Caller, id: &Uuid) -> Option<Arc<KeyEntry>> {
        let tables = self.tables.read();
        tables
            .keys
            .get(id)
            .filter(|e| e.record.scope == ctx.scope)
            .cloned()
    }

    fn deletion_due(&self, record: &KeyRecord) -> bool {
        record.state == KeyState::PendingDeletion
            && record.deletion_date.is_some_and(|d| d <= self.now())
    }

    /// The state a key is in right now, counting material that has expired but not yet been
    /// swept by [`Kms::run_due_work`].
    pub(crate) fn effective_state(&self, record: &KeyRecord) -> KeyState {
        // The origin is checked first so that the request path reads the clock only for
        // imported keys.
        if record.origin == OriginType::External
            && matches!(record.state, KeyState::Enabled | KeyState::Disabled)
            && material_expired(record, self.now())
        {
            return KeyState::PendingImport;
        }
        record.state
    }

    /// Cryptographic operations need an Enabled key.
    pub(crate) fn require_enabled(&self, entry: &KeyEntry) -> Result<()> {
        match self.effective_state(&entry.record) {
            KeyState::Enabled => Ok(()),
            KeyState::Disabled => Err(KmsError::Disabled(format!("{} is disabled.", entry.arn()))),
            state => Err(KmsError::InvalidState(format!(
                "{} is pending {}.",
                entry.arn(),
                match state {
                    KeyState::PendingDeletion => "deletion",
                    KeyState::PendingImport => "import",
                    _ => "creation",
                }
            ))),
        }
    }

    /// Key-management operations are refused while a deletion is pending.
    pub(crate) fn require_not_pending_deletion(&self, record: &KeyRecord) -> Result<()> {
        if record.state == KeyState::PendingDeletion {
            return Err(KmsError::InvalidState(format!(
                "{} is pending deletion.",
                record.arn()
            )));
        }
        Ok(())
    }

    /// Persist a changed record, then publish it. `base` is the entry it was derived from
    /// (its parsed versions are reused); `new_version` is a version added by this change, already
    /// parsed by the caller (off the async workers, or while validating imported material).
    pub(crate) async fn commit_key(
        &self,
        base: Option<&KeyEntry>,
        mut record: KeyRecord,
        new_version: Option<(u32, Arc<dyn KeyHandle>)>,
    ) -> Result<Arc<KeyEntry>> {
        // Every record committed was cloned from the one it changes (a new key's starts at 0).
        record.revision += 1;
        let mut versions = base.map(|b| b.versions.clone()).unwrap_or_default();
        versions.retain(|v, _| record.versions.iter().any(|kv| kv.version == *v));
        if let Some((version, prepared)) = new_version {
            versions.insert(version, prepared);
        }
        let policy = policy_of(base, &record);
        self.store.put_key(&record).await?;
        let entry = Arc::new(KeyEntry::new(record, versions, policy));
        let replaced = self.tables.write().keys.insert(entry.uuid(), entry.clone());
        if replaced.is_some() {
            self.key_changed(
                &entry.record.scope,
                entry.record.key_id,
                Some(entry.record.revision),
            );
        }
        Ok(entry)
    }

    /// Wrap material as a new version of `record` (appended, so it becomes current).
    pub(crate) fn add_version(
        &self,
        record: &mut KeyRecord,
        material: &KeyMaterial,
        rotation_type: RotationType,
    ) -> Result<u32> {
        let version = record.versions.last().map_or(1, |v| v.version + 1);
        let wrapped = self
            .root
            .wrap(&material_aad(record.key_id, version), material)?;
        record.versions.push(KeyVersion {
            version,
            created: self.now(),
            rotation_type,
            wrapped_material: wrapped,
        });
        Ok(version)
    }

    /// Take `entry`'s key lock and re-read the entry under it, so a change is made on the latest
    /// record and no other change to the key interleaves until the guard is dropped.
    pub(crate) async fn lock_fresh(
        &self,
        entry: &KeyEntry,
    ) -> Result<(tokio::sync::MutexGuard<'_, ()>, Arc<KeyEntry>)> {
        let guard = self.key_lock(entry.record.key_id).lock().await;
        let fresh = self
            .tables
            .read()
            .keys
            .get(&entry.uuid())
            .cloned()
            .ok_or_else(|| KmsError::NotFound(format!("Key '{}' does not exist", entry.arn())))?;
        Ok((guard, fresh))
    }

    /// Apply what has fallen due: deletions whose window ended, automatic rotations, and
    /// imported material past its ValidTo.
    pub async fn run_due_work(&self) -> Result<()> {
        // One pass at a time: a timer tick and a moved test clock must not both act on a key.
        let _pass = self.due_work.lock().await;
        let now = self.now();
        let due: Vec<Arc<KeyEntry>> = {
            let tables = self.tables.read();
            tables
                .keys
                .values()
                .filter(|e| self.due(&e.record, now).is_some())
                .cloned()
                .collect()
        };
        // One key's failure (a store conflict, say) must not hold back the others; the first
        // error is reported once every key has had its turn.
        stream::iter(due)
            .map(|entry| self.run_due_key(entry, now))
            .buffer_unordered(DUE_WORK_CONCURRENCY)
            .fold(Ok(()), |first, outcome| async move { first.and(outcome) })
            .await
    }

    /// Due work for one key, under its key lock.
    async fn run_due_key(&self, entry: Arc<KeyEntry>, now: Millis) -> Result<()> {
        let Ok((_guard, entry)) = self.lock_fresh(&entry).await else {
            return Ok(());
        };
        // Another replica (through the store watch) may have done it meanwhile. Each change is
        // published to the change feed where it is committed (or the key destroyed).
        let outcome = match self.due(&entry.record, now) {
            None => return Ok(()),
            Some(Due::Deletion) => self.destroy_key(&entry.record).await,
            Some(Due::Expiry) => self.expire_material(&entry).await,
            Some(Due::Rotation) => self
                .rotate(&entry, RotationType::Automatic)
                .await
                .map(|_| ()),
        };
        outcome.inspect_err(|e| {
            tracing::warn!(key = %entry.arn(), error = %e, "due work failed; retried on the next pass");
        })
    }

    fn due(&self, r: &KeyRecord, now: Millis) -> Option<Due> {
        if self.deletion_due(r) {
            Some(Due::Deletion)
        } else if !r.versions.is_empty() && material_expired(r, now) {
            Some(Due::Expiry)
        } else if r.state == KeyState::Enabled
            && r.origin == OriginType::AwsKms
            && r.rotation
                .as_ref()
                .is_some_and(|rot| rot.next_rotation <= now)
        {
            Some(Due::Rotation)
        } else {
            None
        }
    }

    /// The end of a deletion window: the material is gone for good, with the key's aliases.
    async fn destroy_key(&self, record: &KeyRecord) -> Result<()> {
        let _aliases = self.alias_lock.lock().await;
        let aliases: Vec<String> = {
            let tables = self.tables.read();
            tables
                .scope_aliases(&record.scope)
                .filter(|a| a.target_key_id == record.key_id)
                .map(|a| a.name.clone())
                .collect()
        };
        for name in aliases {
            self.store.delete_alias(&record.scope, &name).await?;
            self.tables.write().remove_alias(&record.scope, &name);
        }
        self.store.delete_key(&record.scope, record.key_id).await?;
        let id = record.key_id.uuid();
        self.tables.write().keys.remove(&id);
        self.key_changed(&record.scope, record.key_id, None);
        tracing::info!(key = %record.arn(), "key deleted at the end of its waiting period");
        Ok(())
    }

    /// Follow a store's changes (another replica's writes and deletions) until the store stops
    /// sending them, answering each once it is applied.
    pub async fn follow(
        self: Arc<Self>,
        mut changes: tokio::sync::mpsc::UnboundedReceiver<crate::store::Followed>,
    ) {
        while let Some(followed) = changes.recv().await {
            let result = self.apply_change(followed.change);
            // A store that stopped waiting has nothing to learn.
            let _ = followed.applied.send(result);
        }
    }

    fn apply_change(&self, change: crate::store::StoreChange) -> Result<()> {
        use crate::store::StoreChange;
        match change {
            StoreChange::Key(record) => self.apply_stored_key(record),
            StoreChange::KeyGone { key_id } => {
                self.forget_key(key_id);
                Ok(())
            }
            StoreChange::Alias(alias) => {
                self.apply_stored_alias(alias);
                Ok(())
            }
            StoreChange::AliasGone { scope, name } => {
                self.forget_alias(&scope, &name);
                Ok(())
            }
        }
    }

    /// A record another engine replica wrote (seen through a store watch): publish it here
    /// too. Versions already parsed are kept; new ones are unwrapped. A record identical to the
    /// one held (the echo of this engine's own write, or a relist) changes nothing and is not
    /// reported as a [`KeyChanged`].
    pub fn apply_stored_key(&self, record: KeyRecord) -> Result<()> {
        let id = record.key_id.uuid();
        let existing = self.tables.read().keys.get(&id).cloned();
        if existing.as_ref().is_some_and(|e| e.record == record) {
            return Ok(());
        }
        let entry = Arc::new(prepare_entry(
            &self.root,
            &*self.keys,
            record,
            existing.as_deref(),
        )?);
        self.tables.write().keys.insert(id, entry.clone());
        let revision = Some(entry.record.revision);
        self.key_changed(&entry.record.scope, entry.record.key_id, revision);
        Ok(())
    }

    /// A key another replica removed from the store. Reported as a [`KeyChanged`] only if this
    /// engine still held it (it no longer does after destroying the key itself).
    pub fn forget_key(&self, key_id: KeyId) {
        let removed = self.tables.write().keys.remove(&key_id.uuid());
        if let Some(entry) = removed {
            self.key_changed(&entry.record.scope, entry.record.key_id, None);
        }
    }

    /// An alias another replica wrote.
    pub fn apply_stored_alias(&self, alias: AliasRecord) {
        self.tables.write().insert_alias(alias);
    }

    /// An alias another replica removed.
    pub fn forget_alias(&self, scope: &Scope, name: &str) {
        self.tables.write().remove_alias(scope, name);
    }
}

/// Imported material whose ValidTo has passed (swept or not).
fn material_expired(record: &KeyRecord, now: Millis) -> bool {
    record.origin == OriginType::External
        && record
            .import
            .as_ref()
            .and_then(|i| i.valid_to)
            .is_some_and(|t| t <= now)
}

fn alias_target(tables: &Tables, scope: &Scope, name: &str) -> Option<Uuid> {
    tables.alias(scope, name).map(|a| a.target_key_id.uuid())
}

/// `aws:kms:<region>:<account>:<resource>` (after the `arn:` prefix): account, region and
/// resource, borrowed so that matching the caller's scope allocates nothing.
fn parse_kms_arn(rest: &str) -> Option<(&str, &str, &str)> {
    let mut parts = rest.splitn(5, ':');
    let (partition, service, region, account, resource) = (
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
    );
    if !partition.starts_with("aws") || service != "kms" || region.is_empty() || account.is_empty()
    {
        return None;
    }
    Some((account, region, resource))
}

/// Associated data that binds wrapped material to its key and version.
pub(crate) fn material_aad(key_id: KeyId, version: u32) -> Vec<u8> {
    let mut aad = b"kubekms-key-material:".to_vec();
    // The id as records have always written it: hyphenated, lowercase.
    aad.extend_from_slice(key_id.to_string().as_bytes());
    aad.extend_from_slice(&version.to_be_bytes());
    aad
}

/// Unwrap and parse every version of a stored record; versions `existing` already holds parsed
/// are reused.
fn prepare_entry(
    root: &RootKey,
    keys: &dyn KeyProvider,
    record: KeyRecord,
    existing: Option<&KeyEntry>,
) -> Result<KeyEntry> {
    let mut versions = BTreeMap::new();
    for v in &record.versions {
        let prepared = match existing.and_then(|e| e.versions.get(&v.version)) {
            Some(p) => p.clone(),
            None => {
                let aad = material_aad(record.key_id, v.version);
                let material = root.unwrap(&aad, &v.wrapped_material)?;
                keys.prepare(record.spec, &material)?
            }
        };
        versions.insert(v.version, prepared);
    }
    let policy = policy_of(existing, &record);
    Ok(KeyEntry::new(record, versions, policy))
}

/// `record`'s parsed policy: `base`'s when the document did not change.
fn policy_of(base: Option<&KeyEntry>, record: &KeyRecord) -> Arc<KeyPolicy> {
    match base.filter(|e| e.record.policy == record.policy) {
        Some(e) => e.policy.clone(),
        None => Arc::new(parse_stored_policy(record)),
    }
}

/// A stored document is checked when it is put, so it parses; one that does not (written by
/// an older engine that accepted more) allows nothing rather than failing the whole load.
fn parse_stored_policy(record: &KeyRecord) -> KeyPolicy {
    KeyPolicy::parse(&record.policy).unwrap_or_else(|reason| {
        tracing::error!(key = %record.arn(), %reason, "stored key policy cannot be enforced: it allows nothing until a valid one is put");
        KeyPolicy::deny_all()
    })
}

#[cfg(test)]
mod access_tests;
#[cfg(test)]
mod tests;
