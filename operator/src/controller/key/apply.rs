//! The steps a Key reconcile takes: create or adopt the engine key, bring it in line with the
//! spec, and write the status `status` computes; on deletion, schedule the key's deletion.

use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Api, ResourceExt};
use kubekms_crds::{condition as condition_type, Key, KeySpec, KeyState};
use kubekms_proto::ops::Tag;
use kubekms_proto::vocab::{OriginType, RotationType};
use serde_json::json;

use super::super::{condition, current, requeue_at, time_from_millis, write_status, Context};
use crate::engine::Described;
use crate::error::{Error, Result};

/// How soon a reconcile that read a key older than the change that woke it reads it again.
const STALE_READ_RETRY: std::time::Duration = std::time::Duration::from_millis(500);

use super::*;

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

pub(super) async fn apply(key: &Key, api: &Api<Key>, ctx: &Context) -> Result<Action> {
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
    // once, so a retry adopts it rather than making a second key. Read whole (metadata, tags,
    // rotation) in one call.
    // Set when this reconcile created the engine key: its tags and rotation are the ones asked
    // for, so they are not compared. CreateKey answers the key whole; if the engine left a part
    // out (the key's policy does not let the operator read it) the key is read whole at the
    // end, as before CreateKey could answer it, which needs the same permissions and so fails
    // the same way: the operator's default policy grants them.
    let mut just_created = false;
    let mut answered_whole = false;
    let described = match previous.and_then(|s| s.key_id.clone()) {
        Some(id) => match ctx.engine.describe_key_whole(&id).await {
            Ok(described) => described,
            Err(e) if e.is_not_found() => {
                ctx.awaited.forget(&id);
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
                return Ok(Action::requeue(super::super::MAX_REQUEUE));
            }
            Err(e) => return Err(e),
        },
        None => {
            let adopted = match ctx.key_index.lookup(ctx, &namespace, &name).await? {
                Some(id) => match ctx.engine.describe_key_whole(&id).await {
                    Ok(described) => Some(described),
                    Err(e) if e.is_not_found() => {
                        ctx.key_index.remove(&namespace, &name, &id).await;
                        None
                    }
                    Err(e) => return Err(e),
                },
                None => None,
            };
            match adopted {
                Some(described) => {
                    let md = &described.metadata;
                    ctx.event(
                        key,
                        EventType::Normal,
                        reason::ADOPTED,
                        format!("adopted engine key {} ({})", md.arn, md.key_state),
                    )
                    .await;
                    described
                }
                None => {
                    let policy = ctx.engine.default_key_policy(&namespace).to_string();
                    let created = ctx
                        .engine
                        .create_key_whole(create_key_request(spec, &namespace, &name, &uid, policy))
                        .await;
                    if let Err(Error::EngineUnreachable { .. }) = &created {
                        // The request may have been carried out with its answer lost (a
                        // timeout): the next reconcile scans the engine again, finds the key by
                        // its tags and adopts it instead of making a second one.
                        ctx.key_index.reset().await;
                    }
                    let (described, whole) = created?;
                    let md = &described.metadata;
                    // From here a retry finds the key in the index and adopts it, so the id
                    // need not reach status before the rest of this reconcile: one status
                    // write per new Key instead of two (the API server is what bounds a
                    // wave of new Keys).
                    ctx.key_index.insert(&namespace, &name, &md.key_id).await;
                    just_created = true;
                    answered_whole = whole;
                    let rotation = match spec.rotation.as_ref().filter(|r| r.enabled) {
                        Some(r) if rotatable(spec) => {
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
                    described
                }
            }
        }
    };
    let key_id = described.metadata.key_id.clone();
    // Woken by a change the replica that answered has not seen yet: its view is older than
    // the status may already show. Read again shortly rather than act on it.
    if ctx.awaited.behind(&key_id, described.metadata.revision) {
        return Ok(Action::requeue(STALE_READ_RETRY));
    }
    let mut md = described.metadata.clone();

    if let Some(problem) = immutable_mismatch(spec, &md) {
        ctx.event(
            key,
            EventType::Warning,
            reason::SPEC_MISMATCH,
            problem.clone(),
        )
        .await;
        let observed = observe(spec, &described);
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
    // Whether the key may no longer be what `described` shows (this reconcile changed it, or
    // created it without answering it whole), so the status needs a fresh read. A Key in step
    // with its engine key costs one DescribeKey, a new Key one CreateKey.
    let mut md_stale = just_created && !answered_whole;
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
        md_stale = true;
        md = ctx.engine.describe_key(&key_id).await?;
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
    let have_tags = &described.tags;
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
    // is enabled again. A key just created got its rotation with CreateKey.
    let mut rotated_on_demand = false;
    let rotation = described.rotation.as_ref().map(|r| &r.status);
    if let Some(rs) =
        rotation.filter(|_| rotatable(spec) && md.key_state == KeyState::Enabled && !just_created)
    {
        match spec.rotation.as_ref().filter(|r| r.enabled) {
            Some(r)
                if !rs.key_rotation_enabled
                    || rs.rotation_period_in_days.map(i64::from)
                        != Some(i64::from(r.period_days)) =>
            {
                ctx.engine
                    .enable_rotation(&key_id, i64::from(r.period_days))
                    .await?;
                md_stale = true;
                ctx.event(
                    key,
                    EventType::Normal,
                    reason::ROTATION_ENABLED,
                    format!("{} rotates every {} days", md.arn, r.period_days),
                )
                .await;
            }
            None if rs.key_rotation_enabled => {
                ctx.engine.disable_rotation(&key_id).await?;
                md_stale = true;
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

    let described = if md_stale {
        ctx.engine.describe_key_whole(&key_id).await?
    } else {
        described
    };
    let md = &described.metadata;
    let observed = observe(spec, &described);
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

/// The engine's view of a key, as status shows it.
fn observe(spec: &KeySpec, described: &Described) -> Observed {
    let md = &described.metadata;
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
    let rotation = described.rotation.as_ref().filter(|_| {
        rotatable(spec)
            && md.origin == OriginType::AwsKms
            && md.key_spec == kubekms_crds::KmsKeySpec::SymmetricDefault
    });
    if let Some(rotation) = rotation {
        let status = &rotation.status;
        observed.next_rotation = status
            .next_rotation_date
            .filter(|_| status.key_rotation_enabled)
            .map(|t| t.millis());
        if let Some(last) = &rotation.last_rotation {
            observed.last_rotation = Some(last.rotation_date.millis());
            observed.last_rotation_automatic = last.rotation_type == RotationType::Automatic;
        }
    }
    observed
}

pub(super) async fn cleanup(key: &Key, api: &Api<Key>, ctx: &Context) -> Result<Action> {
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
    let described = match ctx.engine.describe_key_whole(&key_id).await {
        Ok(described) => described,
        Err(e) if e.is_not_found() => {
            ctx.key_index.remove(&namespace, &name, &key_id).await;
            return Ok(Action::await_change());
        }
        Err(e) => return Err(e),
    };
    let described = if described.metadata.key_state == KeyState::PendingDeletion {
        described
    } else {
        let days = deletion_window(&key.spec);
        ctx.engine
            .schedule_deletion(&key_id, i64::from(days))
            .await?;
        ctx.engine.describe_key_whole(&key_id).await?
    };
    let md = &described.metadata;
    let observed = observe(&key.spec, &described);
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
