//! The engine's Deployment and Service, kept by the operator in remote mode from the ConfigMap
//! the chart renders (`--engine-config NAME`, entry `engine.json`): both owned by the
//! ConfigMap, written with server-side apply under the operator's field manager, and applied
//! again when the ConfigMap changes or someone changes or deletes them. The Service's cluster
//! IP is where the operator then calls the engine (unless `--engine-url` says otherwise).

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::{watcher, Controller};
use kube::{Api, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::controller::{Context, FIELD_MANAGER, MAX_REQUEUE};
use crate::error::{Error, Result};
use crate::remote::RemoteEngine;

pub mod config;
pub mod render;

pub use config::{ConfigError, EngineConfig, CONFIG_KEY};
pub use render::{deployment, service, service_url, Owner, ENGINE_NAME};

/// Event reasons.
pub mod reason {
    pub const INVALID_ENGINE_CONFIG: &str = "InvalidEngineConfig";
    pub const NOT_OWNED: &str = "EngineObjectNotOwned";
    pub const APPLY_FAILED: &str = "EngineApplyFailed";
}

/// The settings in a ConfigMap.
pub fn config_of(config_map: &ConfigMap) -> std::result::Result<EngineConfig, ConfigError> {
    let json = config_map
        .data
        .as_ref()
        .and_then(|d| d.get(CONFIG_KEY))
        .ok_or_else(|| ConfigError {
            field: ".".to_owned(),
            why: format!("the ConfigMap has no `{CONFIG_KEY}` entry"),
        })?;
    EngineConfig::parse(json)
}

/// Read the ConfigMap until it exists and holds valid settings (the chart creates it with the
/// operator, so on a fresh install it may trail by moments; a broken one is logged and waited
/// on until fixed).
pub async fn wait_for_config(api: &Api<ConfigMap>, name: &str) -> EngineConfig {
    let mut logged = String::new();
    loop {
        let why = match api.get_opt(name).await {
            Ok(Some(cm)) => match config_of(&cm) {
                Ok(config) => return config,
                Err(e) => e.to_string(),
            },
            Ok(None) => format!("ConfigMap {name} does not exist"),
            Err(e) => format!("cannot read ConfigMap {name}: {e}"),
        };
        if why != logged {
            tracing::warn!(configmap = %name, error = %why, "waiting for the engine settings");
            logged = why;
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
}

struct DeployContext {
    ctx: Arc<Context>,
    remote: Arc<RemoteEngine>,
    /// The account and region the operator started with (its principal and key policies).
    account: String,
    region: String,
}

/// Keep the engine's Deployment and Service in step with ConfigMap `name` in `namespace`, until
/// dropped.
pub async fn run(
    ctx: Arc<Context>,
    remote: Arc<RemoteEngine>,
    namespace: String,
    name: String,
    account: String,
    region: String,
) {
    let client = ctx.client.clone();
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), &namespace);
    // Only objects that name an owner are mapped back to it; a label selector would miss one
    // whose labels someone edited.
    let owned = watcher::Config::default().fields(&format!("metadata.name={ENGINE_NAME}"));
    let deploy = Arc::new(DeployContext {
        ctx,
        remote,
        account,
        region,
    });
    Controller::new(
        config_maps,
        watcher::Config::default().fields(&format!("metadata.name={name}")),
    )
    .owns(
        Api::<Deployment>::namespaced(client.clone(), &namespace),
        owned.clone(),
    )
    .owns(Api::<Service>::namespaced(client, &namespace), owned)
    .run(reconcile, error_policy, deploy)
    .for_each(|result| async move {
        if let Err(e) = result {
            tracing::debug!(error = %e, "engine Deployment controller");
        }
    })
    .await;
}

async fn reconcile(config_map: Arc<ConfigMap>, deploy: Arc<DeployContext>) -> Result<Action> {
    let result = apply(&config_map, &deploy).await;
    if let Err(e) = &result {
        let reason = match e {
            Error::InvalidSpec(_) => reason::INVALID_ENGINE_CONFIG,
            Error::Config(_) => reason::NOT_OWNED,
            _ => reason::APPLY_FAILED,
        };
        deploy
            .ctx
            .event(&*config_map, EventType::Warning, reason, e.chain())
            .await;
    }
    result
}

fn error_policy(config_map: Arc<ConfigMap>, error: &Error, _: Arc<DeployContext>) -> Action {
    tracing::warn!(configmap = %config_map.name_any(), error = %error.chain(), "engine Deployment not applied");
    match error {
        // Wait for the ConfigMap (or the foreign object) to change; look again now and then.
        Error::InvalidSpec(_) | Error::Config(_) => Action::requeue(MAX_REQUEUE),
        _ => Action::requeue(Duration::from_secs(5)),
    }
}

async fn apply(config_map: &ConfigMap, deploy: &DeployContext) -> Result<Action> {
    let config = config_of(config_map).map_err(|e| Error::InvalidSpec(e.to_string()))?;
    if config.account != deploy.account || config.region != deploy.region {
        tracing::warn!(
            account = %config.account,
            region = %config.region,
            running_account = %deploy.account,
            running_region = %deploy.region,
            "the engine's account or region changed; restart the operator to act in the new one"
        );
    }
    let owner = Owner::of(config_map)
        .ok_or_else(|| Error::InvalidSpec("the ConfigMap has no uid or namespace yet".into()))?;
    let client = deploy.ctx.client.clone();
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &owner.namespace);
    let services: Api<Service> = Api::namespaced(client, &owner.namespace);
    apply_owned(&deployments, &owner, &deployment(&config, &owner)).await?;
    let applied = apply_owned(&services, &owner, &service(&config, &owner)).await?;
    if let Some(url) = service_url(&applied, config.port, config.tls.is_some()) {
        deploy
            .remote
            .set_endpoint(&url)
            .map_err(|e| Error::Config(e.to_string()))?;
    }
    Ok(Action::requeue(MAX_REQUEUE))
}

/// Server-side apply `object`, unless an object of that name exists that this ConfigMap does
/// not control: that one is someone else's and is left alone.
async fn apply_owned<K>(api: &Api<K>, owner: &Owner, object: &K) -> Result<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Serialize + std::fmt::Debug,
{
    let name = object.name_any();
    if let Some(existing) = api.get_opt(&name).await? {
        if !owner.controls(existing.meta()) {
            return Err(Error::Config(format!(
                "{} {}/{name} exists and is not controlled by ConfigMap {}; not changing it",
                K::kind(&()),
                owner.namespace,
                owner.name
            )));
        }
    }
    let params = PatchParams::apply(FIELD_MANAGER).force();
    Ok(api.patch(&name, &params, &Patch::Apply(object)).await?)
}

#[cfg(test)]
mod tests;
