//! The steps an ImportedMaterial reconcile takes: publish import parameters, import the
//! wrapped material from its Secret, and write the status; on deletion, nothing to undo.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Api, ResourceExt};
use kubekms_crds::{
    condition as condition_type, ImportState, ImportedMaterial, ImportedMaterialStatus, Key,
};
use kubekms_proto::vocab::KeyState;
use kubekms_proto::Timestamp;
use serde_json::json;

use super::super::{
    condition, current, requeue_at, time_from_millis, write_status, Context, DEPENDENCY_REQUEUE,
    MAX_REQUEUE,
};
use crate::error::Result;

use super::*;

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

/// The digests of the Secret contents last imported and last refused (see
/// [`IMPORTED_ANNOTATION`] and [`REJECTED_ANNOTATION`]).
fn import_marks(im: &ImportedMaterial) -> (Option<String>, Option<String>) {
    let annotations = im.annotations();
    (
        annotations.get(IMPORTED_ANNOTATION).cloned(),
        annotations.get(REJECTED_ANNOTATION).cloned(),
    )
}

pub(super) async fn apply(
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
    let mut md = match ctx.engine.describe_key(&key_id).await {
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
    // Ready as the Secret makes it, when that overrides what the key's state says.
    let mut override_ready: Option<(bool, &'static str, String)> = None;
    let secret = if readable(ctx.import_namespaces.as_deref(), &namespace) {
        let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &namespace);
        secrets.get_opt(&reference.name).await?
    } else {
        override_ready = Some((
            false,
            reason::SECRET_NOT_READABLE,
            format!(
                "the operator may not read Secrets in namespace {namespace}: list it in the \
                 chart's operator.importNamespaces (--import-namespace)"
            ),
        ));
        None
    };
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
                        md = ctx.engine.describe_key(&key_id).await?;
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
pub(super) async fn cleanup(im: &ImportedMaterial, ctx: &Context) -> Result<Action> {
    if let Some(namespace) = im.namespace() {
        ctx.metrics
            .import_expiry
            .set(&ctx.clock, &namespace, &im.spec.key_ref.name, None);
    }
    Ok(Action::await_change())
}

/// Whether the operator reads Secrets in `namespace` (`allowed` `None`: in every namespace).
fn readable(allowed: Option<&[String]>, namespace: &str) -> bool {
    allowed.is_none_or(|allowed| allowed.iter().any(|ns| ns == namespace))
}
