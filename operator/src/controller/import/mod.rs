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
//!
//! The controller's wiring and reconcile entry points are here; the pure computations (what
//! to import, what state the import is in, when it is due) are in `status`, the steps that act
//! on the engine and the API server in `apply`.

use std::collections::BTreeMap;

use kubekms_engine::api::metrics;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use std::sync::{Arc, OnceLock};

use k8s_openapi::api::core::v1::Secret;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{watcher, Controller};
use kube::{Api, ResourceExt};
use kubekms_crds::{ImportedMaterial, Key};
use kubekms_engine::clock::{Clock, Millis};

use super::{backoff, finalized, referring, write_status, Context};
use crate::error::{Error, Result};

mod apply;
mod status;

pub use status::*;

use apply::{apply, cleanup};

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
    /// The operator may not read Secrets in the ImportedMaterial's namespace.
    pub const SECRET_NOT_READABLE: &str = "SecretNotReadable";
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

    #[cfg(test)]
    fn render(&self) -> String {
        metrics::encode(vec![Box::new(self.snapshot())])
    }

    /// The gauge as it stands now, for a scrape.
    pub fn snapshot(&self) -> ExpirySnapshot {
        self.snapshot_at(self.clock.get().map_or(0, |clock| clock.now_millis()))
    }

    fn snapshot_at(&self, now: Millis) -> ExpirySnapshot {
        ExpirySnapshot(
            self.expiries
                .lock()
                .iter()
                .map(|((namespace, key), at)| {
                    let seconds = (at.saturating_sub(now).max(0)) as f64 / 1000.0;
                    (namespace.clone(), key.clone(), seconds)
                })
                .collect(),
        )
    }

    #[cfg(test)]
    fn render_at(&self, now: Millis) -> String {
        metrics::encode(vec![Box::new(self.snapshot_at(now))])
    }
}

/// Seconds until expiry per (namespace, Key), as one scrape saw them.
#[derive(Debug)]
pub struct ExpirySnapshot(Vec<(String, String, f64)>);

impl Collector for ExpirySnapshot {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> std::fmt::Result {
        metrics::encode_gauges(
            &mut encoder,
            "kubekms_imported_material_expiry_seconds",
            "Seconds until the imported key material of a Key expires (0 once expired).",
            self.0.iter().map(|(namespace, key, seconds)| {
                (
                    vec![("namespace", namespace.as_str()), ("key", key.as_str())],
                    metrics::Seconds(*seconds),
                )
            }),
        )
    }
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
    use kube::runtime::WatchStreamExt;
    let imports: Api<ImportedMaterial> = Api::all(ctx.client.clone());
    // One watch of every namespace's Secrets, or one per namespace the operator may read.
    let secret_apis: Vec<Api<Secret>> = match &ctx.import_namespaces {
        None => vec![Api::all(ctx.client.clone())],
        Some(namespaces) => namespaces
            .iter()
            .map(|ns| Api::namespaced(ctx.client.clone(), ns))
            .collect(),
    };
    let secrets = futures::stream::select_all(
        secret_apis
            .into_iter()
            .map(|api| {
                watcher::watcher(api, secret_watch_config())
                    .touched_objects()
                    .boxed()
            })
            // No namespace to watch: a stream that never ends, like a quiet watch.
            .chain(std::iter::once(futures::stream::pending().boxed())),
    );
    let controller = Controller::new(imports, watcher::Config::default().any_semantic());
    let by_key = controller.store();
    let by_secret = controller.store();
    controller
        .watches_stream(keys.map(Ok), move |k: Key| imports_of_key(&by_key, &k))
        .watches_stream(secrets, move |s: Secret| imports_of_secret(&by_secret, &s))
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
#[cfg(test)]
mod tests {
    use super::super::{condition, time_from_millis};
    use super::*;
    use base64::engine::general_purpose::STANDARD as B64;
    use base64::Engine as _;
    use k8s_openapi::ByteString;
    use kubekms_crds::{
        ImportState, ImportedMaterialSpec, ImportedMaterialStatus, KeyReference,
        MaterialSecretReference,
    };
    use kubekms_engine::KmsError;
    use kubekms_proto::vocab::{ExpirationModel, KeyState};
    use kubekms_proto::Timestamp;

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
