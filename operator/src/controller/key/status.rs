//! What a Key's status should be, computed from its spec and what the engine reports: no I/O.

use std::collections::BTreeMap;

use kubekms_crds::key::{MAX_DELETION_WINDOW_DAYS, MIN_DELETION_WINDOW_DAYS};
use kubekms_crds::{condition as condition_type, KeyOrigin, KeySpec, KeyState, KeyStatus};
use kubekms_engine::clock::Millis;
use kubekms_proto::ops::{CreateKeyRequest, Tag};

use super::super::{condition, time_from_millis};

use super::{reason, TAG_NAME, TAG_NAMESPACE, TAG_UID};

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

/// The CreateKey request for a Key, with `policy` as its first key policy (the document of a
/// Key no KeyPolicy covers yet, so the operator can manage the key from its first moment).
pub fn create_key_request(
    spec: &KeySpec,
    namespace: &str,
    name: &str,
    uid: &str,
    policy: String,
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
        policy: Some(policy),
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

pub(super) fn deletion_window(spec: &KeySpec) -> i32 {
    spec.deletion_window_days
        .clamp(MIN_DELETION_WINDOW_DAYS, MAX_DELETION_WINDOW_DAYS)
}
