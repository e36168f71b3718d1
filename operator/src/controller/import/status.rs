//! What an import needs and where it stands, computed from the spec, the Secret and what the
//! engine reports: no I/O.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kubekms_crds::{
    condition as condition_type, ImportState, ImportedMaterialSpec, ImportedMaterialStatus,
    MaterialSecretReference,
};
use kubekms_engine::clock::Millis;
use kubekms_engine::KmsError;
use kubekms_proto::ops::ImportKeyMaterialRequest;
use kubekms_proto::vocab::{ExpirationModel, KeyState};
use kubekms_proto::Timestamp;
use zeroize::Zeroizing;

use super::super::{condition, time_from_millis};
use crate::error::{Error, Result};

use super::*;

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

pub(super) fn ready_condition(status: Option<&ImportedMaterialStatus>) -> Option<&Condition> {
    status.and_then(|s| {
        s.conditions
            .iter()
            .find(|c| c.type_ == condition_type::READY)
    })
}

pub(super) fn condition_is(
    status: Option<&ImportedMaterialStatus>,
    type_: &str,
    value: &str,
) -> bool {
    status.is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.type_ == type_ && c.status == value)
    })
}

pub(super) fn at(ms: Millis) -> String {
    time_from_millis(ms).0.to_string()
}

/// Replace the Ready condition in `status`, keeping the others.
pub fn set_ready(
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
