//! The Alias controller: `alias/<namespace>/<name>` in the engine, pointing at the engine key of
//! the Key the Alias names.

use std::sync::Arc;

use futures::channel::mpsc::UnboundedReceiver;
use futures::StreamExt;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{watcher, Controller};
use kube::{Api, ResourceExt};
use kubekms_crds::{condition as condition_type, Alias, AliasStatus, Key};
use kubekms_engine::KmsError;

use super::{
    backoff, condition, finalized, referring, write_status, Context, DEPENDENCY_REQUEUE,
    MAX_REQUEUE,
};
use crate::error::{Error, Result};

pub const FINALIZER: &str = "kubekms.io/alias";

pub mod reason {
    pub const CREATED: &str = "Created";
    pub const REPOINTED: &str = "Repointed";
    pub const READY: &str = "Ready";
    pub const DELETED: &str = "Deleted";
    pub const INVALID_SPEC: &str = "InvalidSpec";
    pub const KEY_NOT_READY: &str = "KeyNotReady";
}

/// The Key an Alias needs, if it is ready to be pointed at: its engine key id and ARN.
pub fn ready_target(key: Option<&Key>) -> Result<(String, String), String> {
    let Some(key) = key else {
        return Err("the Key does not exist".into());
    };
    let status = key.status.as_ref();
    let ready = status.is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.type_ == condition_type::READY && c.status == "True")
    });
    match (
        status.and_then(|s| s.key_id.clone()),
        status.and_then(|s| s.arn.clone()),
    ) {
        (Some(id), Some(arn)) if ready => Ok((id, arn)),
        _ => Err(format!("Key {} is not Ready yet", key.name_any())),
    }
}

/// The status to write.
pub fn compute_status(
    previous: Option<&AliasStatus>,
    generation: Option<i64>,
    alias_name: Option<String>,
    key_arn: Option<String>,
    ready: (bool, &str, String),
    now: kubekms_engine::clock::Millis,
) -> AliasStatus {
    let existing = previous
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    AliasStatus {
        key_arn,
        alias_name,
        conditions: vec![condition(
            existing,
            condition_type::READY,
            ready.0,
            ready.1,
            &ready.2,
            generation,
            now,
        )],
        observed_generation: generation,
    }
}

/// The Aliases that name `key`, for the Key watch: a Key becoming Ready wakes its Aliases.
pub fn aliases_of(store: &Store<Alias>, key: &Key) -> Vec<ObjectRef<Alias>> {
    referring(store, key, |a, name| a.spec.key_ref.name == name)
}

/// Runs the controller until the process stops. `trigger` re-reconciles every Alias; `keys`
/// is the operator's one Key watch, fanned out (see [`super::key::controller`]).
pub async fn run(ctx: Arc<Context>, trigger: UnboundedReceiver<()>, keys: UnboundedReceiver<Key>) {
    let aliases: Api<Alias> = Api::all(ctx.client.clone());
    let controller = Controller::new(aliases, watcher::Config::default().any_semantic());
    let store = controller.store();
    controller
        .watches_stream(keys.map(Ok), move |k: Key| aliases_of(&store, &k))
        .reconcile_all_on(trigger)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "Alias controller");
            }
        })
        .await;
}

pub async fn reconcile(alias: Arc<Alias>, ctx: Arc<Context>) -> Result<Action> {
    ctx.metrics
        .alias_reconciles
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let namespace = alias
        .namespace()
        .ok_or_else(|| Error::InvalidSpec("an Alias must be namespaced".into()))?;
    let api: Api<Alias> = Api::namespaced(ctx.client.clone(), &namespace);
    let result = finalized(
        &api,
        &*alias,
        FINALIZER,
        apply(&alias, &api, &ctx),
        cleanup(&alias, &ctx),
    )
    .await;
    if let Err(e) = &result {
        ctx.event(&*alias, EventType::Warning, e.reason(), e.chain())
            .await;
        if !matches!(e, Error::Kube(_)) {
            let status = compute_status(
                alias.status.as_ref(),
                alias.metadata.generation,
                alias.status.as_ref().and_then(|s| s.alias_name.clone()),
                alias.status.as_ref().and_then(|s| s.key_arn.clone()),
                (false, e.reason(), e.chain()),
                ctx.now(),
            );
            let _ = write_status(&api, &*alias, alias.status.as_ref(), &status).await;
        }
    }
    result
}

pub fn error_policy(alias: Arc<Alias>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics
        .alias_failures
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    tracing::warn!(alias = %alias.name_any(), namespace = ?alias.namespace(), error = %error.chain(), "reconcile failed");
    backoff(error)
}

async fn apply(alias: &Alias, api: &Api<Alias>, ctx: &Context) -> Result<Action> {
    let generation = alias.metadata.generation;
    let previous = alias.status.as_ref();
    let checked = alias
        .engine_alias_name()
        .and_then(|n| alias.spec.validate().map(|()| n).map_err(|e| e.join("; ")));
    let alias_name = match checked {
        Ok(n) => n,
        Err(message) => {
            ctx.event(
                alias,
                EventType::Warning,
                reason::INVALID_SPEC,
                message.clone(),
            )
            .await;
            let status = compute_status(
                previous,
                generation,
                None,
                None,
                (false, reason::INVALID_SPEC, message),
                ctx.now(),
            );
            write_status(api, alias, alias.status.as_ref(), &status).await?;
            return Ok(Action::await_change());
        }
    };

    let namespace = alias.namespace().unwrap_or_default();
    let keys: Api<Key> = Api::namespaced(ctx.client.clone(), &namespace);
    let key = keys.get_opt(&alias.spec.key_ref.name).await?;
    let (key_id, key_arn) = match ready_target(key.as_ref()) {
        Ok(t) => t,
        Err(message) => {
            let status = compute_status(
                previous,
                generation,
                Some(alias_name),
                previous.and_then(|s| s.key_arn.clone()),
                (false, reason::KEY_NOT_READY, message),
                ctx.now(),
            );
            write_status(api, alias, alias.status.as_ref(), &status).await?;
            return Ok(Action::requeue(DEPENDENCY_REQUEUE));
        }
    };

    let current = match ctx.engine.describe_key(&alias_name).await {
        Ok(md) => Some(md),
        Err(e) if e.is_not_found() => None,
        Err(e) => return Err(e),
    };
    match current {
        Some(t) if t.key_id == key_id => {}
        Some(t) => {
            ctx.engine.update_alias(&alias_name, &key_id).await?;
            ctx.event(
                alias,
                EventType::Normal,
                reason::REPOINTED,
                format!("{alias_name} now points at {key_arn} (was {})", t.arn),
            )
            .await;
        }
        None => {
            match ctx.engine.create_alias(&alias_name, &key_id).await {
                Ok(()) => {}
                // The alias exists but its key cannot be described (destroyed): re-point it.
                Err(e) if matches!(e.engine_error(), Some(KmsError::AlreadyExists(_))) => {
                    ctx.engine.update_alias(&alias_name, &key_id).await?;
                }
                Err(e) => return Err(e),
            }
            ctx.event(
                alias,
                EventType::Normal,
                reason::CREATED,
                format!("{alias_name} points at {key_arn}"),
            )
            .await;
        }
    }
    let status = compute_status(
        previous,
        generation,
        Some(alias_name.clone()),
        Some(key_arn.clone()),
        (
            true,
            reason::READY,
            format!("{alias_name} points at {key_arn}"),
        ),
        ctx.now(),
    );
    write_status(api, alias, alias.status.as_ref(), &status).await?;
    Ok(Action::requeue(MAX_REQUEUE))
}

async fn cleanup(alias: &Alias, ctx: &Context) -> Result<Action> {
    let Ok(alias_name) = alias.engine_alias_name() else {
        return Ok(Action::await_change());
    };
    match ctx.engine.delete_alias(&alias_name).await {
        Ok(()) => {
            ctx.event(
                alias,
                EventType::Normal,
                reason::DELETED,
                format!("deleted {alias_name}"),
            )
            .await;
        }
        Err(e) if e.is_not_found() => {}
        Err(e) => return Err(e),
    }
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
    use kubekms_crds::{KeySpec, KeyStatus};

    fn key(ready: bool, key_id: Option<&str>) -> Key {
        let mut k = Key::new("orders", KeySpec::default());
        k.metadata.namespace = Some("shop".into());
        k.status = Some(KeyStatus {
            key_id: key_id.map(str::to_owned),
            arn: key_id.map(|id| format!("arn:aws:kms:us-east-1:111122223333:key/{id}")),
            conditions: vec![Condition {
                type_: "Ready".into(),
                status: if ready { "True" } else { "False" }.into(),
                reason: "x".into(),
                message: "x".into(),
                observed_generation: None,
                last_transition_time: super::super::time_from_millis(0),
            }],
            ..KeyStatus::default()
        });
        k
    }

    #[test]
    fn only_a_ready_key_with_an_id_is_a_target() {
        assert!(ready_target(None).is_err());
        assert!(ready_target(Some(&key(false, Some("k1")))).is_err());
        assert!(ready_target(Some(&key(true, None))).is_err());
        let (id, arn) = ready_target(Some(&key(true, Some("k1")))).unwrap();
        assert_eq!(id, "k1");
        assert!(arn.ends_with(":key/k1"));
    }

    #[test]
    fn status_shows_the_resolved_arn() {
        let s = compute_status(
            None,
            Some(3),
            Some("alias/shop/orders".into()),
            Some("arn:k".into()),
            (true, reason::READY, "ok".into()),
            0,
        );
        assert_eq!(s.alias_name.as_deref(), Some("alias/shop/orders"));
        assert_eq!(s.key_arn.as_deref(), Some("arn:k"));
        assert_eq!(s.observed_generation, Some(3));
        assert_eq!(s.conditions[0].status, "True");
    }
}
