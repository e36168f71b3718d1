//! The ImportedMaterial controller: publishes import parameters for a Key with origin External,
//! imports the wrapped material from the referenced Secret whenever it changes, and reports the
//! material's expiry (conditions, events, and the `kubekms_imported_material_expiry_seconds`
//! gauge).
//!
//! What was imported is remembered as a digest in the annotation [`IMPORTED_ANNOTATION`]
//! (engine key id, wrapped material, import token and validTo), never the material itself, so
//! a Secret is imported once per change and a re-created Key gets the material again. The
//! engine deletes expired material itself (its due work); this controller only shows it and
//! publishes fresh parameters for the re-import.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{watcher, Controller};
use kube::{Api, ResourceExt};
use kubekms_crds::{
    condition as condition_type, ImportState, ImportedMaterial, ImportedMaterialSpec,
    ImportedMaterialStatus, Key, MaterialSecretReference,
};
use kubekms_engine::clock::{Clock, Millis};
use kubekms_engine::KmsError;
use kubekms_proto::ops::ImportKeyMaterialRequest;
use kubekms_proto::vocab::{ExpirationModel, KeyState};
use kubekms_proto::Timestamp;
use serde_json::json;
use zeroize::Zeroizing;

use super::key::Metadata;
use super::{
    backoff, condition, current, finalized, referring, requeue_at, time_from_millis, write_status,
    Context, DEPENDENCY_REQUEUE, MAX_REQUEUE,
};
use crate::error::{Error, Result};

pub const FINALIZER: &str = "kubekms.io/imported-material";
/// `<engine key id>/<sha256 hex>` of the last Secret contents (with validTo) imported.
pub const IMPORTED_ANNOTATION: &str = "kubekms.io/imported-material-digest";
/// The same digest for Secret contents the engine refused, so they are not retried until
/// they change.
pub const REJECTED_ANNOTATION: &str = "kubekms.io/rejected-material-digest";
/// Condition type: the material expires within spec.renewBefore.
pub const RENEWAL_DUE: &str = "RenewalDue";
/// Import parameters this close to their end are replaced.
const PARAMETERS_MARGIN: Millis = 3_600_000;
/// Record Secrets of the cluster store carry this label; they never hold material to import.
const STORE_RECORD_LABEL: &str = "kubekms.io/record";

/// Event and condition reasons: stable, so alerts and tests can match them.
pub mod reason {
    pub const PARAMETERS_PUBLISHED: &str = "ParametersPublished";
    pub const IMPORTED: &str = "Imported";
    pub const IMPORT_REJECTED: &str = "ImportRejected";
    pub const AWAITING_MATERIAL: &str = "AwaitingMaterial";
    pub const SECRET_INCOMPLETE: &str = "SecretIncomplete";
    pub const EXPIRING_SOON: &str = "ExpiringSoon";
    pub const EXPIRED: &str = "Expired";
    pub const VALID_TO_PASSED: &str = "ValidToPassed";
    pub const NOT_DUE: &str = "NotDue";
    pub const DOES_NOT_EXPIRE: &str = "DoesNotExpire";
    pub const NOT_IMPORTED: &str = "NotImported";
    pub const INVALID_SPEC: &str = "InvalidSpec";
    pub const KEY_NOT_FOUND: &str = "KeyNotFound";
    pub const KEY_NOT_READY: &str = "KeyNotReady";
    pub const KEY_MISSING: &str = "KeyMissing";
    pub const KEY_PENDING_DELETION: &str = "KeyPendingDeletion";
}

/// Seconds until imported material expires, by namespace and Key, read at scrape time from
/// the operator's clock (so a moved test clock shows at once).
#[derive(Default)]
pub struct ExpiryGauge {
    clock: OnceLock<Arc<dyn Clock>>,
    expiries: parking_lot::Mutex<BTreeMap<(String, String), Millis>>,
}

impl ExpiryGauge {
    /// Record when the material of Key `namespace/key` expires; `None` removes it.
    pub fn set(&self, clock: &Arc<dyn Clock>, namespace: &str, key: &str, expiry: Option<Millis>) {
        let _ = self.clock.get_or_init(|| clock.clone());
        let mut map = self.expiries.lock();
        let k = (namespace.to_owned(), key.to_owned());
        match expiry {
            Some(at) => {
                map.insert(k, at);
            }
            None => {
                map.remove(&k);
            }
        }
    }

    /// Prometheus text format.
    pub fn render(&self) -> String {
        match self.clock.get() {
            Some(clock) => self.render_at(clock.now_millis()),
            None => self.render_at(0),
        }
    }

    fn render_at(&self, now: Millis) -> String {
        let mut out = String::from(
            "# HELP kubekms_imported_material_expiry_seconds Seconds until the imported key \
             material of a Key expires (0 once expired).\n\
             # TYPE kubekms_imported_material_expiry_seconds gauge\n",
        );
        for ((namespace, key), at) in self.expiries.lock().iter() {
            let seconds = (at.saturating_sub(now).max(0)) as f64 / 1000.0;
            out.push_str(&format!(
                "kubekms_imported_material_expiry_seconds{{namespace=\"{namespace}\",key=\"{key}\"}} \
                 {seconds}\n"
            ));
        }
        out
    }
}

/// A DER SubjectPublicKeyInfo as PEM, as `openssl pkeyutl -pubin -inkey` reads it.
pub fn public_key_pem(der: &[u8]) -> String {
    let body = B64.encode(der);
    let mut pem = String::from("-----BEGIN PUBLIC KEY-----\n");
    for line in body.as_bytes().chunks(64) {
        pem.push_str(&String::from_utf8_lossy(line));
        pem.push('\n');
    }
    pem.push_str("-----END PUBLIC KEY-----\n");
    pem
}

/// The digest that identifies one import: into which engine key, of which wrapped material
/// and token, valid until when. Length-prefixed so no two inputs share an encoding.
pub fn import_digest(
    key_id: &str,
    material: &[u8],
    token: &[u8],
    valid_to: Option<Millis>,
) -> String {
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    let valid_to = valid_to.map(|t| t.to_string()).unwrap_or_default();
    for part in [
        b"kubekms-import-v1".as_slice(),
        key_id.as_bytes(),
        material,
        token,
        valid_to.as_bytes(),
    ] {
        ctx.update(&(part.len() as u64).to_be_bytes());
        ctx.update(part);
    }
    format!("{key_id}/{}", hex::encode(ctx.finish().as_ref()))
}

/// Whether `annotation` (an [`import_digest`]) records an import into `key_id`.
pub fn imported_into(annotation: Option<&String>, key_id: &str) -> bool {
    annotation.is_some_and(|a| a.split_once('/').is_some_and(|(id, _)| id == key_id))
}

/// The wrapped material and the import token from the Secret: `Ok(None)` when there is no
/// Secret, `Err` (a message for the user) when it lacks an entry.
#[allow(clippy::type_complexity)]
pub fn secret_contents(
    secret: Option<&Secret>,
    reference: &MaterialSecretReference,
) -> Result<Option<(Zeroizing<Vec<u8>>, Zeroizing<Vec<u8>>)>, String> {
    let Some(secret) = secret else {
        return Ok(None);
    };
    let entry = |key: &str| {
        secret
            .data
            .as_ref()
            .and_then(|d| d.get(key))
            .filter(|v| !v.0.is_empty())
            .map(|v| Zeroizing::new(v.0.clone()))
    };
    match (entry(&reference.key), entry(&reference.token_key)) {
        (Some(material), Some(token)) => Ok(Some((material, token))),
        (material, token) => {
            let missing: Vec<&str> = [
                (material.is_none(), reference.key.as_str()),
                (token.is_none(), reference.token_key.as_str()),
            ]
            .into_iter()
            .filter_map(|(missing, key)| missing.then_some(key))
            .collect();
            Err(format!(
                "Secret {} has no (or an empty) {}; it needs the wrapped material under {:?} \
                 and the import token under {:?}",
                reference.name,
                missing.join(" and "),
                reference.key,
                reference.token_key
            ))
        }
    }
}

/// The ImportKeyMaterial request for material wrapped by the user (ciphertext: the material
/// itself never leaves the user's hands unwrapped).
pub fn import_request(
    key_id: &str,
    material: &[u8],
    token: &[u8],
    valid_to: Option<Millis>,
) -> ImportKeyMaterialRequest {
    ImportKeyMaterialRequest {
        key_id: key_id.to_owned(),
        import_token: token.to_vec(),
        encrypted_key_material: material.to_vec(),
        valid_to: valid_to.map(Timestamp),
        expiration_model: Some(match valid_to {
            Some(_) => ExpirationModel::KeyMaterialExpires,
            None => ExpirationModel::KeyMaterialDoesNotExpire,
        }),
    }
}

/// Whether the engine refused the import because of what the user supplied (wrong token,
/// material, wrapping or validTo): retrying the same Secret cannot succeed.
pub fn is_refusal(error: &Error) -> bool {
    matches!(
        error.engine_error(),
        Some(
            KmsError::InvalidImportToken(_)
                | KmsError::ExpiredImportToken(_)
                | KmsError::IncorrectKeyMaterial(_)
                | KmsError::InvalidCiphertext
                | KmsError::Validation(_)
                | KmsError::IncorrectKey(_)
        )
    )
}

/// Where the import stands, from the engine key's state.
pub fn import_state(key_state: KeyState, ever_imported: bool) -> ImportState {
    match key_state {
        KeyState::Enabled | KeyState::Disabled => ImportState::Imported,
        _ if ever_imported => ImportState::Expired,
        _ => ImportState::AwaitingMaterial,
    }
}

/// From when on the material is due for renewal.
pub fn renewal_point(spec: &ImportedMaterialSpec, expires_at: Option<Millis>) -> Option<Millis> {
    let before = std::time::Duration::from(spec.renew_before?);
    Some(expires_at?.saturating_sub(i64::try_from(before.as_millis()).unwrap_or(i64::MAX)))
}

/// Whether new import parameters must be fetched: they are wanted (material awaited, expired,
/// or due for renewal) and the published ones are missing, about to end, or were made for an
/// earlier spec.
pub fn parameters_needed(
    wanted: bool,
    previous: Option<&ImportedMaterialStatus>,
    generation: Option<i64>,
    now: Millis,
) -> bool {
    if !wanted {
        return false;
    }
    let Some(p) = previous else {
        return true;
    };
    let fresh = p.wrapping_public_key.is_some()
        && p.import_token.is_some()
        && p.parameters_valid_to
            .as_ref()
            .is_some_and(|t| t.0.as_millisecond() - PARAMETERS_MARGIN > now);
    !fresh || p.observed_generation != generation
}

/// The next time something changes on its own: renewal becomes due, the material expires, or
/// the published parameters must be replaced.
pub fn next_due(
    state: ImportState,
    expires_at: Option<Millis>,
    renew_from: Option<Millis>,
    parameters_wanted: bool,
    parameters_valid_to: Option<Millis>,
    now: Millis,
) -> Option<Millis> {
    let mut due = Vec::new();
    if state == ImportState::Imported {
        due.extend(expires_at);
        due.extend(renew_from.filter(|r| *r > now));
    }
    if parameters_wanted {
        due.extend(parameters_valid_to.map(|t| t - PARAMETERS_MARGIN));
    }
    due.into_iter().min()
}

fn ready_condition(status: Option<&ImportedMaterialStatus>) -> Option<&Condition> {
    status.and_then(|s| {
        s.conditions
            .iter()
            .find(|c| c.type_ == condition_type::READY)
    })
}

fn condition_is(status: Option<&ImportedMaterialStatus>, type_: &str, value: &str) -> bool {
    status.is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.type_ == type_ && c.status == value)
    })
}

fn at(ms: Millis) -> String {
    time_from_millis(ms).0.to_string()
}

/// The ImportedMaterials that refer to Key `key` (for the Key watch).
pub fn imports_of_key(
    store: &Store<ImportedMaterial>,
    key: &Key,
) -> Vec<ObjectRef<ImportedMaterial>> {
    referring(store, key, |i, name| i.spec.key_ref.name == name)
}

/// The ImportedMaterials that read Secret `secret` (for the Secret watch).
pub fn imports_of_secret(
    store: &Store<ImportedMaterial>,
    secret: &Secret,
) -> Vec<ObjectRef<ImportedMaterial>> {
    referring(store, secret, |i, name| {
        i.spec.material_secret_ref.name == name
    })
}

/// The Secret watch: every Secret except the cluster store's records.
pub fn secret_watch_config() -> kube::runtime::watcher::Config {
    kube::runtime::watcher::Config::default()
        .labels(&format!("!{STORE_RECORD_LABEL}"))
        .any_semantic()
}

/// Runs the controller: ImportedMaterials, woken by their Keys and Secrets and by `trigger`
/// (the test clock moving).
/// `keys` is the operator's one Key watch, fanned out (see [`super::key::controller`]).
pub async fn run(
    ctx: Arc<Context>,
    trigger: futures::channel::mpsc::UnboundedReceiver<()>,
    keys: futures::channel::mpsc::UnboundedReceiver<Key>,
) {
    use futures::StreamExt;
    let imports: Api<ImportedMaterial> = Api::all(ctx.client.clone());
    let secrets: Api<Secret> = Api::all(ctx.client.clone());
    let controller = Controller::new(imports, watcher::Config::default().any_semantic());
    let by_key = controller.store();
    let by_secret = controller.store();
    controller
        .watches_stream(keys.map(Ok), move |k: Key| imports_of_key(&by_key, &k))
        .watches(secrets, secret_watch_config(), move |s: Secret| {
            imports_of_secret(&by_secret, &s)
        })
        .reconcile_all_on(trigger)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "ImportedMaterial controller");
            }
        })
        .await;
}

pub async fn reconcile(im: Arc<ImportedMaterial>, ctx: Arc<Context>) -> Result<Action> {
    ctx.metrics
        .import_reconciles
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let namespace = im
        .namespace()
        .ok_or_else(|| Error::InvalidSpec("an ImportedMaterial must be namespaced".into()))?;
    let api: Api<ImportedMaterial> = Api::namespaced(ctx.client.clone(), &namespace);
    let result = finalized(
        &api,
        &*im,
        FINALIZER,
        apply(&im, &api, &ctx),
        cleanup(&im, &ctx),
    )
    .await;
    if let Err(e) = &result {
        ctx.event(&*im, EventType::Warning, e.reason(), e.chain())
            .await;
        if !matches!(e, Error::Kube(_)) {
            let mut status = im.status.clone().unwrap_or_default();
            set_ready(
                &mut status,
                (false, e.reason(), e.chain()),
                im.metadata.generation,
                ctx.now(),
            );
            let _ = write_status(&api, &*im, im.status.as_ref(), &status).await;
        }
    }
    result
}

pub fn error_policy(im: Arc<ImportedMaterial>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics
        .import_failures
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    tracing::warn!(imported_material = %im.name_any(), namespace = ?im.namespace(), error = %error.chain(), "reconcile failed");
    backoff(error)
}

/// Replace the Ready condition in `status`, keeping the others.
fn set_ready(
    status: &mut ImportedMaterialStatus,
    (ok, why, message): (bool, &str, String),
    generation: Option<i64>,
    now: Millis,
) {
    let ready = condition(
        &status.conditions,
        condition_type::READY,
        ok,
        why,
        &message,
        generation,
        now,
    );
    status
        .conditions
        .retain(|c| c.type_ != condition_type::READY);
    status.conditions.insert(0, ready);
    status.observed_generation = generation;
}

/// The import cannot go on until something else changes: say why in Ready (and in a Warning
/// event when the reason is new, unless it is a wait that resolves itself), keep the rest of
/// the status.
async fn blocked(
    im: &ImportedMaterial,
    api: &Api<ImportedMaterial>,
    ctx: &Context,
    why: &'static str,
    message: String,
    then: Action,
) -> Result<Action> {
    let previous = im.status.as_ref();
    let transient = why == reason::KEY_NOT_READY;
    if !transient && ready_condition(previous).is_none_or(|c| c.reason != why) {
        ctx.event(im, EventType::Warning, why, message.clone())
            .await;
    }
    let mut status = previous.cloned().unwrap_or_default();
    set_ready(
        &mut status,
        (false, why, message),
        im.metadata.generation,
        ctx.now(),
    );
    write_status(api, im, im.status.as_ref(), &status).await?;
    Ok(then)
}

async fn annotate(
    api: &Api<ImportedMaterial>,
    im: &ImportedMaterial,
    imported: Option<&str>,
    rejected: Option<&str>,
) -> Result<()> {
    api.patch(
        &im.name_any(),
        &PatchParams::default(),
        &Patch::Merge(json!({
            "metadata": { "annotations": {
                IMPORTED_ANNOTATION: imported,
                REJECTED_ANNOTATION: rejected,
            } }
        })),
    )
    .await?;
    Ok(())
}

async fn describe(ctx: &Context, key_id: &str) -> Result<Metadata> {
    ctx.engine.describe_key(key_id).await
}

/// The digests of the Secret contents last imported and last refused (see
/// [`IMPORTED_ANNOTATION`] and [`REJECTED_ANNOTATION`]).
fn import_marks(im: &ImportedMaterial) -> (Option<String>, Option<String>) {
    let annotations = im.annotations();
    (
        annotations.get(IMPORTED_ANNOTATION).cloned(),
        annotations.get(REJECTED_ANNOTATION).cloned(),
    )
}

async fn apply(
    im: &ImportedMaterial,
    api: &Api<ImportedMaterial>,
    ctx: &Context,
) -> Result<Action> {
    let namespace = im.namespace().unwrap_or_default();
    let spec = &im.spec;
    let generation = im.metadata.generation;
    let previous = im.status.as_ref();
    let key_name = spec.key_ref.name.as_str();

    if let Err(errors) = spec.validate() {
        return blocked(
            im,
            api,
            ctx,
            reason::INVALID_SPEC,
            errors.join("; "),
            Action::await_change(),
        )
        .await;
    }
    let keys: Api<Key> = Api::namespaced(ctx.client.clone(), &namespace);
    let Some(key) = keys.get_opt(key_name).await? else {
        return blocked(
            im,
            api,
            ctx,
            reason::KEY_NOT_FOUND,
            format!("Key {key_name} does not exist in namespace {namespace}"),
            Action::requeue(MAX_REQUEUE),
        )
        .await;
    };
    if let Err(errors) = spec.validate_for_key(&key.spec) {
        return blocked(
            im,
            api,
            ctx,
            reason::INVALID_SPEC,
            errors.join("; "),
            Action::await_change(),
        )
        .await;
    }
    let Some(key_id) = key.status.as_ref().and_then(|s| s.key_id.clone()) else {
        return blocked(
            im,
            api,
            ctx,
            reason::KEY_NOT_READY,
            format!("Key {key_name} has no engine key yet"),
            Action::requeue(DEPENDENCY_REQUEUE),
        )
        .await;
    };
    let mut md = match describe(ctx, &key_id).await {
        Ok(md) => md,
        Err(e) if e.is_not_found() => {
            return blocked(
                im,
                api,
                ctx,
                reason::KEY_MISSING,
                format!("engine key {key_id} of Key {key_name} no longer exists"),
                Action::requeue(MAX_REQUEUE),
            )
            .await
        }
        Err(e) => return Err(e),
    };
    if md.key_state == KeyState::PendingDeletion {
        return blocked(
            im,
            api,
            ctx,
            reason::KEY_PENDING_DELETION,
            format!(
                "{} is pending deletion; apply Key {key_name} again to cancel it",
                md.arn
            ),
            Action::requeue(MAX_REQUEUE),
        )
        .await;
    }

    let now = ctx.now();
    let (mut last_import, mut rejected) = import_marks(im);
    let valid_to = spec.valid_to.as_ref().map(|t| t.0.as_millisecond());
    let reference = &spec.material_secret_ref;
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &namespace);
    let secret = secrets.get_opt(&reference.name).await?;

    // Ready as the Secret makes it, when that overrides what the key's state says.
    let mut override_ready: Option<(bool, &'static str, String)> = None;
    match secret_contents(secret.as_ref(), reference) {
        Ok(None) => {}
        Err(message) => override_ready = Some((false, reason::SECRET_INCOMPLETE, message)),
        Ok(Some((material, token))) => {
            let digest = import_digest(&key_id, &material, &token, valid_to);
            if last_import.as_ref() != Some(&digest) && rejected.as_ref() != Some(&digest) {
                // The watched copy can trail this controller's own write of the marks: an
                // import wakes the Key through the engine's change feed, and the Key's new
                // status wakes this object again, possibly before the watch has the mark. New
                // contents are confirmed on a fresh read, so they are imported once.
                if let Some(fresh) = current(api, im).await? {
                    (last_import, rejected) = import_marks(&fresh);
                }
            }
            if last_import.as_ref() == Some(&digest) {
                // Imported already; an expiry since then waits for new contents.
            } else if rejected.as_ref() == Some(&digest) {
                let message = ready_condition(previous)
                    .filter(|c| c.reason == reason::IMPORT_REJECTED)
                    .map(|c| c.message.clone())
                    .unwrap_or_else(|| {
                        format!(
                            "the engine refused the material in Secret {}; see the {} events",
                            reference.name,
                            reason::IMPORT_REJECTED
                        )
                    });
                override_ready = Some((false, reason::IMPORT_REJECTED, message));
            } else if let Some(t) = valid_to.filter(|t| *t <= now) {
                override_ready = Some((
                    false,
                    reason::VALID_TO_PASSED,
                    format!(
                        "spec.validTo ({}) has passed: set a later validTo, or remove it for \
                         material that does not expire",
                        at(t)
                    ),
                ));
            } else {
                let req = import_request(&key_id, &material, &token, valid_to);
                match ctx.engine.import_key_material(req).await {
                    Ok(()) => {
                        annotate(api, im, Some(&digest), None).await?;
                        last_import = Some(digest);
                        let until = valid_to
                            .map(|t| format!("valid until {}", at(t)))
                            .unwrap_or_else(|| "which does not expire".into());
                        ctx.event(
                            im,
                            EventType::Normal,
                            reason::IMPORTED,
                            format!(
                                "imported the material in Secret {} into {}, {until}",
                                reference.name, md.arn
                            ),
                        )
                        .await;
                        md = describe(ctx, &key_id).await?;
                    }
                    Err(e) if is_refusal(&e) => {
                        annotate(api, im, last_import.as_deref(), Some(&digest)).await?;
                        let message = format!(
                            "the engine refused the material in Secret {}: {}; wrap it again \
                             with status.wrappingPublicKey and store it with status.importToken",
                            reference.name,
                            e.chain()
                        );
                        ctx.event(
                            im,
                            EventType::Warning,
                            reason::IMPORT_REJECTED,
                            message.clone(),
                        )
                        .await;
                        override_ready = Some((false, reason::IMPORT_REJECTED, message));
                    }
                    Err(e) => return Err(e),
                }
            }
        }
    }

    let now = ctx.now();
    let state = import_state(md.key_state, imported_into(last_import.as_ref(), &key_id));
    let previous_state = previous.and_then(|s| s.import_state);
    let expires_at = match state {
        ImportState::Imported => md.valid_to.map(Timestamp::millis),
        // When it expired stays visible until new material comes.
        ImportState::Expired => previous
            .and_then(|s| s.expires_at.as_ref())
            .map(|t| t.0.as_millisecond()),
        ImportState::AwaitingMaterial => None,
    };
    if state == ImportState::Expired && previous_state == Some(ImportState::Imported) {
        ctx.event(
            im,
            EventType::Warning,
            reason::EXPIRED,
            format!(
                "the imported material of {} expired and was deleted; {} is PendingImport \
                 until the material is imported again",
                md.arn, key_name
            ),
        )
        .await;
    }

    let renew_from = renewal_point(spec, expires_at);
    let renewal_due = state == ImportState::Imported && renew_from.is_some_and(|r| now >= r);
    let existing = previous
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    let renewal = match (state, expires_at, renew_from) {
        (ImportState::Imported, Some(exp), Some(_)) if renewal_due => (
            true,
            reason::EXPIRING_SOON,
            format!(
                "the material of {} expires at {}: wrap it again with status.wrappingPublicKey, \
                 store it with status.importToken in Secret {} and set a later validTo",
                md.arn,
                at(exp),
                reference.name
            ),
        ),
        (ImportState::Imported, Some(exp), Some(from)) => (
            false,
            reason::NOT_DUE,
            format!("expires at {}; renewal is due from {}", at(exp), at(from)),
        ),
        (ImportState::Imported, None, _) => (
            false,
            reason::DOES_NOT_EXPIRE,
            "the imported material does not expire".to_owned(),
        ),
        (ImportState::Imported, Some(exp), None) => (
            false,
            reason::NOT_DUE,
            format!("expires at {}; spec.renewBefore is not set", at(exp)),
        ),
        _ => (
            false,
            reason::NOT_IMPORTED,
            "no material is imported".to_owned(),
        ),
    };
    if renewal_due && !condition_is(previous, RENEWAL_DUE, "True") {
        ctx.event(
            im,
            EventType::Warning,
            reason::EXPIRING_SOON,
            renewal.2.clone(),
        )
        .await;
    }

    // Parameters: wanted while material is awaited, expired, or due for renewal.
    let wanted = state != ImportState::Imported || renewal_due;
    let mut params = (
        previous.and_then(|s| s.wrapping_public_key.clone()),
        previous.and_then(|s| s.import_token.clone()),
        previous.and_then(|s| s.parameters_valid_to.clone()),
    );
    if parameters_needed(wanted, previous, generation, now) {
        let out = ctx
            .engine
            .parameters_for_import(&key_id, spec.wrapping_algorithm, spec.wrapping_key_spec)
            .await?;
        let until = out.parameters_valid_to.millis();
        params = (
            Some(public_key_pem(&out.public_key)),
            Some(B64.encode(&out.import_token)),
            Some(time_from_millis(until)),
        );
        ctx.event(
            im,
            EventType::Normal,
            reason::PARAMETERS_PUBLISHED,
            format!(
                "published a {} wrapping key and import token for {} ({}), valid until {}",
                spec.wrapping_key_spec,
                md.arn,
                spec.wrapping_algorithm,
                at(until)
            ),
        )
        .await;
    }

    let how = format!(
        "wrap the key material with status.wrappingPublicKey ({}) and store it with the decoded \
         status.importToken in Secret {} (entries {:?} and {:?})",
        spec.wrapping_algorithm, reference.name, reference.key, reference.token_key
    );
    let ready = override_ready.unwrap_or_else(|| match state {
        ImportState::Imported => (
            true,
            reason::IMPORTED,
            match expires_at {
                Some(exp) => format!("material imported into {}; expires at {}", md.arn, at(exp)),
                None => format!("material imported into {}; it does not expire", md.arn),
            },
        ),
        ImportState::AwaitingMaterial => (false, reason::AWAITING_MATERIAL, how.clone()),
        ImportState::Expired => (
            false,
            reason::EXPIRED,
            format!(
                "the material expired{}; set a later spec.validTo, then {how}",
                expires_at
                    .map(|t| format!(" at {}", at(t)))
                    .unwrap_or_default()
            ),
        ),
    });

    let status = ImportedMaterialStatus {
        wrapping_public_key: params.0,
        import_token: params.1,
        parameters_valid_to: params.2.clone(),
        import_state: Some(state),
        expires_at: expires_at.map(time_from_millis),
        conditions: vec![
            condition(
                existing,
                condition_type::READY,
                ready.0,
                ready.1,
                &ready.2,
                generation,
                now,
            ),
            condition(
                existing,
                RENEWAL_DUE,
                renewal.0,
                renewal.1,
                &renewal.2,
                generation,
                now,
            ),
        ],
        observed_generation: generation,
    };
    ctx.metrics.import_expiry.set(
        &ctx.clock,
        &namespace,
        key_name,
        match state {
            ImportState::AwaitingMaterial => None,
            _ => expires_at,
        },
    );
    write_status(api, im, im.status.as_ref(), &status).await?;

    let due = next_due(
        state,
        expires_at,
        renew_from,
        wanted,
        params.2.map(|t| t.0.as_millisecond()),
        now,
    );
    Ok(Action::requeue(requeue_at(due, now)))
}

/// Nothing to destroy: the material stays in the engine key, which the Key owns.
async fn cleanup(im: &ImportedMaterial, ctx: &Context) -> Result<Action> {
    if let Some(namespace) = im.namespace() {
        ctx.metrics
            .import_expiry
            .set(&ctx.clock, &namespace, &im.spec.key_ref.name, None);
    }
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;
    use kubekms_crds::KeyReference;

    const HOUR: Millis = 3_600_000;
    const DAY: Millis = 24 * HOUR;
    const NOW: Millis = 1_700_000_000_000;

    fn spec(renew_before: Option<&str>) -> ImportedMaterialSpec {
        ImportedMaterialSpec {
            key_ref: KeyReference::new("byok"),
            wrapping_algorithm: kubekms_crds::import::default_wrapping_algorithm(),
            wrapping_key_spec: kubekms_crds::import::default_wrapping_key_spec(),
            material_secret_ref: MaterialSecretReference::new("byok-material"),
            valid_to: Some(time_from_millis(NOW + 30 * DAY)),
            renew_before: renew_before.map(|d| d.parse().unwrap()),
        }
    }

    fn secret(entries: &[(&str, &[u8])]) -> Secret {
        Secret {
            data: Some(
                entries
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), ByteString(v.to_vec())))
                    .collect(),
            ),
            ..Secret::default()
        }
    }

    #[test]
    fn pem_wraps_the_der_at_64_columns_and_round_trips() {
        let der: Vec<u8> = (0..=255u8).cycle().take(294).collect();
        let pem = public_key_pem(&der);
        let lines: Vec<&str> = pem.lines().collect();
        assert_eq!(lines[0], "-----BEGIN PUBLIC KEY-----");
        assert_eq!(*lines.last().unwrap(), "-----END PUBLIC KEY-----");
        let body = &lines[1..lines.len() - 1];
        assert!(body[..body.len() - 1].iter().all(|l| l.len() == 64));
        assert!(body.last().unwrap().len() <= 64);
        assert_eq!(B64.decode(body.concat()).unwrap(), der);
    }

    #[test]
    fn digest_changes_with_every_input_and_names_the_key() {
        let d = import_digest("k1", b"material", b"token", Some(NOW));
        assert!(d.starts_with("k1/"));
        assert_eq!(d.len(), 3 + 64);
        assert_eq!(d, import_digest("k1", b"material", b"token", Some(NOW)));
        assert_ne!(d, import_digest("k2", b"material", b"token", Some(NOW)));
        assert_ne!(d, import_digest("k1", b"materiaX", b"token", Some(NOW)));
        assert_ne!(d, import_digest("k1", b"material", b"tokeX", Some(NOW)));
        assert_ne!(d, import_digest("k1", b"material", b"token", Some(NOW + 1)));
        assert_ne!(d, import_digest("k1", b"material", b"token", None));
        // Length prefixes: moving a byte from one field to the next is another import.
        assert_ne!(
            import_digest("k1", b"ab", b"c", None),
            import_digest("k1", b"a", b"bc", None)
        );
        assert!(!d.contains(&hex::encode(b"material")));
        assert!(imported_into(Some(&d), "k1"));
        assert!(!imported_into(Some(&d), "k2"));
        assert!(!imported_into(None, "k1"));
    }

    #[test]
    fn secret_needs_both_entries() {
        let reference = MaterialSecretReference::new("byok-material");
        assert!(secret_contents(None, &reference).unwrap().is_none());
        let full = secret(&[("material", b"wrapped"), ("importToken", b"tok")]);
        let (m, t) = secret_contents(Some(&full), &reference).unwrap().unwrap();
        assert_eq!(m.as_slice(), b"wrapped");
        assert_eq!(t.as_slice(), b"tok");
        let no_token = secret(&[("material", b"wrapped")]);
        let err = secret_contents(Some(&no_token), &reference).unwrap_err();
        assert!(err.contains("no (or an empty) importToken"), "{err}");
        let empty = secret(&[("material", b""), ("importToken", b"tok")]);
        let err = secret_contents(Some(&empty), &reference).unwrap_err();
        assert!(err.contains("empty) material"), "{err}");
        let err = secret_contents(Some(&Secret::default()), &reference).unwrap_err();
        assert!(err.contains("material and importToken"), "{err}");
    }

    #[test]
    fn import_request_carries_the_expiration_model() {
        let req = import_request("k1", b"wrapped", b"tok", Some(NOW + 1500));
        assert_eq!(req.key_id, "k1");
        assert_eq!(
            req.expiration_model,
            Some(ExpirationModel::KeyMaterialExpires)
        );
        assert_eq!(req.valid_to, Some(Timestamp(NOW + 1500)));
        assert_eq!(req.import_token, b"tok");
        assert_eq!(req.encrypted_key_material, b"wrapped");
        let forever = import_request("k1", b"wrapped", b"tok", None);
        assert_eq!(
            forever.expiration_model,
            Some(ExpirationModel::KeyMaterialDoesNotExpire)
        );
        assert!(forever.valid_to.is_none());
    }

    #[test]
    fn refusals_are_the_users_to_fix() {
        let err = |source| Error::Kms {
            op: kubekms_proto::Operation::ImportKeyMaterial,
            source,
        };
        assert!(is_refusal(&err(KmsError::ExpiredImportToken("x".into()))));
        assert!(is_refusal(&err(KmsError::IncorrectKeyMaterial("x".into()))));
        assert!(is_refusal(&err(KmsError::InvalidCiphertext)));
        assert!(!is_refusal(&err(KmsError::internal("disk"))));
        assert!(!is_refusal(&Error::InvalidSpec("x".into())));
    }

    #[test]
    fn state_follows_the_engine_key() {
        assert_eq!(
            import_state(KeyState::Enabled, false),
            ImportState::Imported
        );
        assert_eq!(
            import_state(KeyState::Disabled, true),
            ImportState::Imported
        );
        assert_eq!(
            import_state(KeyState::PendingImport, false),
            ImportState::AwaitingMaterial
        );
        assert_eq!(
            import_state(KeyState::PendingImport, true),
            ImportState::Expired
        );
    }

    #[test]
    fn renewal_starts_renew_before_the_expiry() {
        let expiry = NOW + 30 * DAY;
        assert_eq!(
            renewal_point(&spec(Some("240h")), Some(expiry)),
            Some(expiry - 10 * DAY)
        );
        assert_eq!(renewal_point(&spec(None), Some(expiry)), None);
        assert_eq!(renewal_point(&spec(Some("1h")), None), None);
    }

    #[test]
    fn parameters_are_fetched_when_wanted_and_stale() {
        let fresh = ImportedMaterialStatus {
            wrapping_public_key: Some("pem".into()),
            import_token: Some("tok".into()),
            parameters_valid_to: Some(time_from_millis(NOW + DAY)),
            observed_generation: Some(1),
            ..ImportedMaterialStatus::default()
        };
        assert!(!parameters_needed(false, None, Some(1), NOW));
        assert!(parameters_needed(true, None, Some(1), NOW));
        assert!(!parameters_needed(true, Some(&fresh), Some(1), NOW));
        // A new spec may ask for another wrapping key.
        assert!(parameters_needed(true, Some(&fresh), Some(2), NOW));
        // Within the last hour of their validity they are replaced.
        assert!(parameters_needed(
            true,
            Some(&fresh),
            Some(1),
            NOW + DAY - HOUR
        ));
        assert!(!parameters_needed(
            true,
            Some(&fresh),
            Some(1),
            NOW + DAY - HOUR - 1000
        ));
        let no_token = ImportedMaterialStatus {
            import_token: None,
            ..fresh
        };
        assert!(parameters_needed(true, Some(&no_token), Some(1), NOW));
    }

    #[test]
    fn next_due_is_the_earliest_change() {
        let expiry = NOW + 30 * DAY;
        let renew = expiry - 10 * DAY;
        let imported = ImportState::Imported;
        assert_eq!(
            next_due(imported, Some(expiry), Some(renew), false, None, NOW),
            Some(renew)
        );
        // Once renewal is due, the expiry and the parameters' end are what comes next.
        assert_eq!(
            next_due(
                imported,
                Some(expiry),
                Some(renew),
                true,
                Some(renew + 2 * DAY),
                renew + DAY
            ),
            Some(renew + 2 * DAY - HOUR)
        );
        assert_eq!(
            next_due(
                imported,
                Some(expiry),
                Some(renew),
                false,
                None,
                renew + DAY
            ),
            Some(expiry)
        );
        assert_eq!(
            next_due(
                ImportState::AwaitingMaterial,
                None,
                None,
                true,
                Some(NOW + DAY),
                NOW
            ),
            Some(NOW + DAY - HOUR)
        );
        assert_eq!(
            next_due(ImportState::Imported, None, None, false, None, NOW),
            None
        );
    }

    #[test]
    fn gauge_counts_down_on_the_clock_and_stops_at_zero() {
        let gauge = ExpiryGauge::default();
        let clock: Arc<dyn Clock> = kubekms_engine::clock::SystemClock::new();
        gauge.set(&clock, "shop", "byok", Some(NOW + 90_500));
        gauge.set(&clock, "shop", "other", Some(NOW - 1000));
        let text = gauge.render_at(NOW);
        assert!(text.contains("# TYPE kubekms_imported_material_expiry_seconds gauge"));
        assert!(
            text.contains(
                "kubekms_imported_material_expiry_seconds{namespace=\"shop\",key=\"byok\"} 90.5\n"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "kubekms_imported_material_expiry_seconds{namespace=\"shop\",key=\"other\"} 0\n"
            ),
            "{text}"
        );
        gauge.set(&clock, "shop", "other", None);
        assert!(!gauge.render_at(NOW).contains("other"));
        // Rendered against the real clock, the far-future expiry is positive.
        gauge.set(&clock, "shop", "byok", Some(clock.now_millis() + DAY));
        let line = gauge
            .render()
            .lines()
            .find(|l| l.contains("byok"))
            .unwrap()
            .to_owned();
        let value: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
        assert!(value > 86_000.0 && value <= 86_400.0, "{line}");
    }

    #[test]
    fn ready_is_replaced_and_the_other_conditions_kept() {
        let mut status = ImportedMaterialStatus::default();
        status.conditions.push(condition(
            &[],
            RENEWAL_DUE,
            true,
            reason::EXPIRING_SOON,
            "soon",
            Some(1),
            NOW,
        ));
        set_ready(
            &mut status,
            (false, reason::KEY_NOT_FOUND, "gone".into()),
            Some(2),
            NOW,
        );
        set_ready(
            &mut status,
            (false, reason::KEY_NOT_READY, "wait".into()),
            Some(2),
            NOW,
        );
        assert_eq!(status.conditions.len(), 2);
        assert_eq!(status.conditions[0].type_, "Ready");
        assert_eq!(status.conditions[0].reason, reason::KEY_NOT_READY);
        assert_eq!(status.conditions[1].type_, RENEWAL_DUE);
        assert_eq!(status.observed_generation, Some(2));
    }
}
