//! Admission of a Pod that opted in, as a pure function: the pod, what its annotations asked
//! for ([`crate::annotations::Injection`]), the data keys' ciphertexts already found or made,
//! and the injector's settings go in; a JSON patch comes out. No I/O here: the HTTP layer
//! decodes the AdmissionReview and finds the ciphertexts, this decides what changes.
//!
//! What an opted-in pod gets:
//! - **Its identity for the stock AWS SDKs**: a projected ServiceAccount token (audience
//!   `kubekms`, renewed by the kubelet) mounted read-only in every container, and
//!   `AWS_WEB_IDENTITY_TOKEN_FILE`, `AWS_ROLE_ARN`, `AWS_ENDPOINT_URL_KMS`,
//!   `AWS_ENDPOINT_URL_STS`, `AWS_REGION` and `AWS_DEFAULT_REGION` (the one boto3 reads),
//!   except where the container sets them already.
//! - **Its data keys, as ciphertext only**: the agent as the first init container, given the
//!   ciphertexts (never a plaintext key) in its configuration; a memory-backed `emptyDir` it
//!   writes the keys to, mounted read-only in the app's containers; and
//!   `KUBEKMS_DATA_KEY_<NAME>` naming each key's file.
//! - In sidecar mode, for a pod that restarts its containers (not a Job's), the agent also as
//!   a container serving decryption on localhost (`KUBEKMS_AGENT_URL`). A pod that runs to
//!   completion gets the init container only, so the agent never keeps a Job from finishing.

use json_patch::Patch;
use k8s_openapi::api::core::v1::{Container, Pod, PodSpec};
use kubekms_crds::SealedGeneration;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::annotations::{Injection, Mode};
use crate::error::{Error, Result};
use kubekms_proto::principal::TOKEN_AUDIENCE;

/// Set on a pod once injected: a second admission of the same pod (a reinvocation) changes
/// nothing.
pub const INJECTED: &str = "kubekms.io/injected";
/// The token volume and where it is mounted.
pub const TOKEN_VOLUME: &str = "kubekms-token";
pub const TOKEN_DIR: &str = "/var/run/secrets/kubekms";
pub const TOKEN_FILE: &str = "token";
/// How long a projected token lives before the kubelet renews it.
pub const TOKEN_SECONDS: i64 = 3600;
/// The data-key volume and where it is mounted.
pub const DATA_KEY_VOLUME: &str = "kubekms-data-keys";
pub const DATA_KEY_DIR: &str = "/var/run/kubekms";
/// The sidecar's view of the records' mirror ConfigMaps (kept current by the kubelet).
pub const MIRROR_VOLUME: &str = "kubekms-data-key-mirrors";
pub const MIRROR_DIR: &str = "/var/run/kubekms-mirrors";
/// The agent's containers.
pub const AGENT_INIT: &str = "kubekms-agent-init";
pub const AGENT_SIDECAR: &str = "kubekms-agent";
/// Where the sidecar serves, inside the pod.
pub const AGENT_PORT: u16 = 4610;
/// The agent's configuration (JSON: [`AgentConfig`]).
pub const AGENT_CONFIG_ENV: &str = "KUBEKMS_AGENT_CONFIG";

/// How this injector is set up (from the chart).
#[derive(Clone, Debug)]
pub struct InjectorSettings {
    /// The project's image (it holds the agent).
    pub image: String,
    /// The engine's KMS and STS endpoint as pods reach it.
    pub engine_url: String,
    pub region: String,
    /// The role pods assume with their token (`arn:aws:iam::<account>:role/...`).
    pub role_arn: String,
    /// When the engine serves TLS: the CAs its certificate chains to, which pods get in the
    /// token's volume from a ConfigMap of their namespace.
    pub ca: Option<CaBundle>,
    /// Where the engine's name is not in DNS: the pod's `/etc/hosts` entry for it.
    pub engine_host_alias: Option<HostAlias>,
}

/// A `hostAliases` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostAlias {
    pub ip: String,
    pub hostname: String,
}

/// The engine's CA bundle as pods get it.
#[derive(Clone, Debug)]
pub struct CaBundle {
    /// The ConfigMap (in each pod's namespace) holding it under [`CA_FILE`].
    pub config_map: String,
    pub pem: String,
}

/// The ConfigMap the webhook keeps in the namespaces of injected pods.
pub const CA_CONFIG_MAP: &str = "kubekms-engine-ca";
/// Its key, and the file beside the token.
pub const CA_FILE: &str = "ca.crt";

/// A data key ready to inject: every generation's ciphertext, oldest first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DataKeyCiphertexts {
    pub name: String,
    pub file: String,
    pub keys: Vec<SealedGeneration>,
    /// The record's mirror ConfigMap ([`kubekms_crds::DataKey::mirror_name`]), mounted for the sidecar; the
    /// agent is not told it.
    #[serde(skip)]
    pub mirror: String,
}

/// What the agent is told (env [`AGENT_CONFIG_ENV`]): where to write and what to decrypt,
/// and for the sidecar, where the kubelet keeps the records' mirrors
/// ([`kubekms_crds::datakey::MIRROR_FILE`] as `<data key name>.json`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentConfig {
    pub dir: String,
    pub data_keys: Vec<DataKeyCiphertexts>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirror_dir: Option<String>,
}

/// The patch for `pod`, or `None` when it is to be admitted as it is (injected already, or
/// no spec to change).
pub fn mutate(
    pod: &Pod,
    injection: &Injection,
    data_keys: &[DataKeyCiphertexts],
    settings: &InjectorSettings,
) -> Result<Option<Patch>> {
    let annotations = pod.metadata.annotations.as_ref();
    if annotations.is_some_and(|a| a.contains_key(INJECTED)) {
        return Ok(None);
    }
    let Some(spec) = pod.spec.as_ref() else {
        return Ok(None);
    };
    let mut ops = Ops::default();
    let with_keys = !data_keys.is_empty();

    // Volumes.
    let mut volumes = vec![token_volume(settings)];
    if with_keys {
        volumes.push(json!({
            "name": DATA_KEY_VOLUME,
            "emptyDir": { "medium": "Memory", "sizeLimit": "1Mi" },
        }));
    }
    // The app's containers: identity, data-key mounts and their env.
    // Not in a pod on the node's network: its loopback would be the node's, and the agent's
    // keys every host-network process's.
    let sidecar = injection.mode == Mode::Sidecar
        && restarts(spec)
        && spec.host_network != Some(true)
        && with_keys;
    if sidecar {
        volumes.push(mirror_volume(data_keys));
    }
    ops.append("/spec/volumes", spec.volumes.is_some(), volumes);

    let mut extra_env = Vec::new();
    for key in data_keys {
        extra_env.push(env(
            &format!("KUBEKMS_DATA_KEY_{}", env_name(&key.name)),
            &format!("{DATA_KEY_DIR}/{}", key.file),
        ));
    }
    if sidecar {
        extra_env.push(env(
            "KUBEKMS_AGENT_URL",
            &format!("http://127.0.0.1:{AGENT_PORT}"),
        ));
    }
    for (i, container) in spec.containers.iter().enumerate() {
        let base = format!("/spec/containers/{i}");
        wire_container(&mut ops, &base, container, settings, &extra_env, with_keys);
    }
    // The user's own init containers too: the agent runs before them, so they may use the
    // keys as well.
    for (i, container) in spec.init_containers.iter().flatten().enumerate() {
        // Before the agent is put in front of them (operations apply in order).
        let base = format!("/spec/initContainers/{i}");
        wire_container(&mut ops, &base, container, settings, &extra_env, with_keys);
    }

    // The agent.
    if with_keys {
        let user = app_user(pod).ok_or(Error::NoRunAsUser)?;
        let mut config = AgentConfig {
            dir: DATA_KEY_DIR.to_owned(),
            data_keys: data_keys.to_vec(),
            mirror_dir: None,
        };
        let init = agent_container(AGENT_INIT, "init", &config, settings, user);
        match &spec.init_containers {
            // First, so the keys are there for every container after it.
            Some(_) => ops.add("/spec/initContainers/0", init),
            None => ops.add("/spec/initContainers", json!([init])),
        }
        if sidecar {
            config.mirror_dir = Some(MIRROR_DIR.to_owned());
            let mut serve = agent_container(AGENT_SIDECAR, "serve", &config, settings, user);
            serve["ports"] = json!([{ "name": "kubekms-agent", "containerPort": AGENT_PORT }]);
            if let Some(mounts) = serve["volumeMounts"].as_array_mut() {
                mounts.push(
                    json!({ "name": MIRROR_VOLUME, "mountPath": MIRROR_DIR, "readOnly": true }),
                );
            }
            ops.add("/spec/containers/-", serve);
        }
    }

    // The engine's name, for clusters without DNS (an entry of the pod's own is kept).
    if let Some(alias) = &settings.engine_host_alias {
        let aliased = spec
            .host_aliases
            .iter()
            .flatten()
            .any(|a| a.hostnames.iter().flatten().any(|h| *h == alias.hostname));
        if !aliased {
            ops.append(
                "/spec/hostAliases",
                spec.host_aliases.is_some(),
                vec![json!({ "ip": alias.ip, "hostnames": [alias.hostname] })],
            );
        }
    }

    // Marked, so a reinvocation leaves it.
    match annotations {
        Some(_) => ops.add(
            &format!("/metadata/annotations/{}", escape(INJECTED)),
            json!("true"),
        ),
        None => ops.add("/metadata/annotations", json!({ INJECTED: "true" })),
    }
    ops.into_patch().map(Some)
}

/// JSON patch operations (RFC 6902), built in order.
#[derive(Default)]
struct Ops(Vec<Value>);

impl Ops {
    fn add(&mut self, path: &str, value: Value) {
        self.0
            .push(json!({ "op": "add", "path": path, "value": value }));
    }

    fn into_patch(self) -> Result<Patch> {
        serde_json::from_value(Value::Array(self.0)).map_err(Error::Patch)
    }

    /// Append `items` to the array at `path`, creating it when it is not there.
    fn append(&mut self, path: &str, exists: bool, items: Vec<Value>) {
        if items.is_empty() {
            return;
        }
        if exists {
            for item in items {
                self.add(&format!("{path}/-"), item);
            }
        } else {
            self.add(path, Value::Array(items));
        }
    }
}

/// Identity env and mounts for one of the app's containers (at JSON pointer `base`), leaving
/// whatever it sets itself.
fn wire_container(
    ops: &mut Ops,
    base: &str,
    container: &Container,
    settings: &InjectorSettings,
    extra_env: &[Value],
    with_keys: bool,
) {
    let has_env = |name: &str| container.env.iter().flatten().any(|e| e.name == name);
    let env: Vec<Value> = identity_env(settings)
        .into_iter()
        .chain(extra_env.iter().cloned())
        .filter(|e| e["name"].as_str().is_some_and(|name| !has_env(name)))
        .collect();
    ops.append(&format!("{base}/env"), container.env.is_some(), env);
    let mounted = |path: &str| {
        container
            .volume_mounts
            .iter()
            .flatten()
            .any(|m| m.mount_path == path)
    };
    let mut mounts = Vec::new();
    if !mounted(TOKEN_DIR) {
        mounts.push(json!({ "name": TOKEN_VOLUME, "mountPath": TOKEN_DIR, "readOnly": true }));
    }
    if with_keys && !mounted(DATA_KEY_DIR) {
        mounts
            .push(json!({ "name": DATA_KEY_VOLUME, "mountPath": DATA_KEY_DIR, "readOnly": true }));
    }
    ops.append(
        &format!("{base}/volumeMounts"),
        container.volume_mounts.is_some(),
        mounts,
    );
}

/// What makes a stock AWS SDK act as the pod's ServiceAccount at the engine.
fn identity_env(settings: &InjectorSettings) -> Vec<Value> {
    let mut vars = vec![
        env(
            "AWS_WEB_IDENTITY_TOKEN_FILE",
            &format!("{TOKEN_DIR}/{TOKEN_FILE}"),
        ),
        env("AWS_ROLE_ARN", &settings.role_arn),
        env("AWS_ENDPOINT_URL_KMS", &settings.engine_url),
        env("AWS_ENDPOINT_URL_STS", &settings.engine_url),
        env("AWS_REGION", &settings.region),
        // boto3 and the AWS CLI read the region only from this one.
        env("AWS_DEFAULT_REGION", &settings.region),
    ];
    if settings.ca.is_some() {
        // The AWS SDKs (and the agent) trust the engine's CA through this.
        vars.push(env("AWS_CA_BUNDLE", &format!("{TOKEN_DIR}/{CA_FILE}")));
    }
    vars
}

fn env(name: &str, value: &str) -> Value {
    json!({ "name": name, "value": value })
}

/// The token, and the engine's CA bundle beside it when the engine serves TLS.
fn token_volume(settings: &InjectorSettings) -> Value {
    let mut sources = vec![json!({ "serviceAccountToken": {
        "audience": TOKEN_AUDIENCE,
        "expirationSeconds": TOKEN_SECONDS,
        "path": TOKEN_FILE,
    } })];
    if let Some(ca) = &settings.ca {
        sources.push(json!({ "configMap": {
            "name": ca.config_map,
            "items": [ { "key": CA_FILE, "path": CA_FILE } ],
        } }));
    }
    json!({ "name": TOKEN_VOLUME, "projected": { "sources": sources } })
}

/// The agent: the project's image, as the pod's identity, least privilege.
fn agent_container(
    name: &str,
    command: &str,
    config: &AgentConfig,
    settings: &InjectorSettings,
    user: i64,
) -> Value {
    // Strings and numbers only: it always encodes.
    let config = serde_json::to_value(config).unwrap_or_default().to_string();
    let mut env = identity_env(settings);
    env.push(json!({ "name": AGENT_CONFIG_ENV, "value": config }));
    json!({
        "name": name,
        "image": settings.image,
        "command": ["/usr/local/bin/kubekms-agent", command],
        "env": env,
        "volumeMounts": [
            { "name": TOKEN_VOLUME, "mountPath": TOKEN_DIR, "readOnly": true },
            { "name": DATA_KEY_VOLUME, "mountPath": DATA_KEY_DIR },
        ],
        "resources": {
            "requests": { "cpu": "10m", "memory": "16Mi" },
            "limits": { "memory": "64Mi" },
        },
        "securityContext": {
            "runAsUser": user,
            "runAsNonRoot": user != 0,
            "readOnlyRootFilesystem": true,
            "allowPrivilegeEscalation": false,
            "capabilities": { "drop": ["ALL"] },
        },
    })
}

/// Every data key's mirror ConfigMap as `<name>.json`, optional: the operator makes a mirror
/// shortly after its record, and the kubelet fills it in when it appears.
fn mirror_volume(data_keys: &[DataKeyCiphertexts]) -> Value {
    let sources: Vec<Value> = data_keys
        .iter()
        .map(|key| {
            json!({ "configMap": {
                "name": key.mirror,
                "optional": true,
                "items": [ { "key": kubekms_crds::datakey::MIRROR_FILE, "path": format!("{}.json", key.name) } ],
            } })
        })
        .collect();
    json!({ "name": MIRROR_VOLUME, "projected": { "sources": sources } })
}

/// The user the app's first container runs as (its own setting, else the pod's): the agent
/// runs as it, so the key files it writes (mode 0400) are the app's to read. `None` when the
/// spec does not say (the image's USER decides, which admission cannot see).
fn app_user(pod: &Pod) -> Option<i64> {
    let spec = pod.spec.as_ref();
    spec.and_then(|s| s.containers.first())
        .and_then(|c| c.security_context.as_ref())
        .and_then(|c| c.run_as_user)
        .or_else(|| {
            spec.and_then(|s| s.security_context.as_ref())
                .and_then(|c| c.run_as_user)
        })
}

/// Whether the pod's containers are restarted when they end (not a Job's pod).
fn restarts(spec: &PodSpec) -> bool {
    spec.restart_policy.as_deref().is_none_or(|p| p == "Always")
}

/// `db-main` → `DB_MAIN`.
fn env_name(name: &str) -> String {
    name.to_ascii_uppercase().replace('-', "_")
}

/// A JSON pointer token (RFC 6901).
fn escape(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::annotations::parse;
    use std::collections::BTreeMap;

    fn settings() -> InjectorSettings {
        InjectorSettings {
            image: "localhost/kubekms:0.1.0".into(),
            engine_url: "http://10.0.0.10:4599".into(),
            region: "us-east-1".into(),
            role_arn: "arn:aws:iam::111122223333:role/kubekms".into(),
            ca: None,
            engine_host_alias: None,
        }
    }

    fn pod(json: Value) -> Pod {
        serde_json::from_value(json).unwrap()
    }

    fn injection(pod: &Pod) -> Injection {
        let labels = BTreeMap::from([("kubekms.io/inject".to_owned(), "true".to_owned())]);
        let mut annotations = pod.metadata.annotations.clone().unwrap_or_default();
        annotations.remove("kubekms.io/inject");
        parse(&labels, &annotations).unwrap().unwrap()
    }

    fn data_key(name: &str, file: &str, generations: u32) -> DataKeyCiphertexts {
        DataKeyCiphertexts {
            name: name.into(),
            file: file.into(),
            keys: (1..=generations)
                .map(|g| SealedGeneration {
                    id: format!("{name}-{g}"),
                    generation: g,
                    ciphertext: format!("Y2lwaGVy{g}"),
                    encryption_context: BTreeMap::from([(
                        "kubekms:data-key".to_owned(),
                        name.to_owned(),
                    )]),
                })
                .collect(),
            mirror: kubekms_crds::DataKey::mirror_name(&format!("app.{name}")),
        }
    }

    /// The pod after the patch.
    fn patched(pod: &Pod, patch: &Patch) -> Value {
        let mut doc = serde_json::to_value(pod).unwrap();
        json_patch::patch(&mut doc, patch).unwrap();
        doc
    }

    fn env_of(container: &Value) -> BTreeMap<String, String> {
        container["env"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| {
                (
                    e["name"].as_str().unwrap().to_owned(),
                    e["value"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect()
    }

    #[test]
    fn identity_only_wires_every_container_and_keeps_what_it_sets() {
        let pod = pod(json!({
            "metadata": { "name": "app", "annotations": { "kubekms.io/inject": "true" } },
            "spec": { "containers": [
                { "name": "app", "image": "app", "env": [ { "name": "AWS_REGION", "value": "eu-west-1" } ] },
                { "name": "helper", "image": "helper",
                  "volumeMounts": [ { "name": "data", "mountPath": "/data" } ] },
            ] },
        }));
        let patch = mutate(&pod, &injection(&pod), &[], &settings())
            .unwrap()
            .unwrap();
        let out = patched(&pod, &patch);
        assert_eq!(out["metadata"]["annotations"][INJECTED], "true");
        assert_eq!(out["spec"]["volumes"][0]["name"], TOKEN_VOLUME);
        let token = &out["spec"]["volumes"][0]["projected"]["sources"][0]["serviceAccountToken"];
        assert_eq!(token["audience"], "kubekms");
        assert_eq!(token["expirationSeconds"], TOKEN_SECONDS);
        let app = env_of(&out["spec"]["containers"][0]);
        assert_eq!(
            app["AWS_REGION"], "eu-west-1",
            "the pod's own value is kept"
        );
        assert_eq!(
            app["AWS_WEB_IDENTITY_TOKEN_FILE"],
            "/var/run/secrets/kubekms/token"
        );
        assert_eq!(app["AWS_ENDPOINT_URL_KMS"], "http://10.0.0.10:4599");
        assert_eq!(app["AWS_ENDPOINT_URL_STS"], "http://10.0.0.10:4599");
        assert_eq!(
            app["AWS_ROLE_ARN"],
            "arn:aws:iam::111122223333:role/kubekms"
        );
        let helper = &out["spec"]["containers"][1];
        assert_eq!(env_of(helper)["AWS_REGION"], "us-east-1");
        assert_eq!(helper["volumeMounts"][0]["mountPath"], "/data");
        assert_eq!(helper["volumeMounts"][1]["mountPath"], TOKEN_DIR);
        assert_eq!(helper["volumeMounts"][1]["readOnly"], true);
        assert!(
            out["spec"]["initContainers"].is_null(),
            "no data keys, no agent"
        );
        // A second admission of the patched pod changes nothing.
        let again: Pod = serde_json::from_value(out).unwrap();
        assert!(mutate(&again, &injection(&again), &[], &settings())
            .unwrap()
            .is_none());
    }

    #[test]
    fn data_keys_reach_the_pod_as_ciphertext_through_the_agent_first_of_the_init_containers() {
        let pod = pod(json!({
            "metadata": { "name": "app", "annotations": {
                "kubekms.io/inject": "true",
                "kubekms.io/data-key.db-main": "orders; file=db.key; generation=2",
            } },
            "spec": {
                "securityContext": { "runAsUser": 1000 },
                "initContainers": [ { "name": "migrate", "image": "app" } ],
                "containers": [ { "name": "app", "image": "app" } ],
                "volumes": [ { "name": "data", "emptyDir": {} } ],
            },
        }));
        let keys = [data_key("db-main", "db.key", 2)];
        let patch = mutate(&pod, &injection(&pod), &keys, &settings())
            .unwrap()
            .unwrap();
        let out = patched(&pod, &patch);
        let volumes = out["spec"]["volumes"].as_array().unwrap();
        assert_eq!(volumes.len(), 3);
        assert_eq!(volumes[2]["name"], DATA_KEY_VOLUME);
        assert_eq!(volumes[2]["emptyDir"]["medium"], "Memory");

        let init = out["spec"]["initContainers"].as_array().unwrap();
        assert_eq!(init[0]["name"], AGENT_INIT, "the agent runs first");
        assert_eq!(init[1]["name"], "migrate");
        assert_eq!(
            init[0]["command"],
            json!(["/usr/local/bin/kubekms-agent", "init"])
        );
        assert_eq!(
            init[0]["securityContext"]["runAsUser"], 1000,
            "the app's user"
        );
        assert_eq!(init[0]["securityContext"]["readOnlyRootFilesystem"], true);
        let config: Value = serde_json::from_str(&env_of(&init[0])[AGENT_CONFIG_ENV]).unwrap();
        assert_eq!(config["dir"], DATA_KEY_DIR);
        assert_eq!(config["dataKeys"][0]["keys"][1]["id"], "db-main-2");
        assert_eq!(config["dataKeys"][0]["keys"][1]["ciphertext"], "Y2lwaGVy2");
        assert_eq!(
            env_of(&init[1])["KUBEKMS_DATA_KEY_DB_MAIN"],
            "/var/run/kubekms/db.key"
        );

        let app = &out["spec"]["containers"][0];
        assert_eq!(
            env_of(app)["KUBEKMS_DATA_KEY_DB_MAIN"],
            "/var/run/kubekms/db.key"
        );
        let mounts = app["volumeMounts"].as_array().unwrap();
        assert!(mounts
            .iter()
            .any(|m| m["mountPath"] == DATA_KEY_DIR && m["readOnly"] == true));
        assert_eq!(
            out["spec"]["containers"].as_array().unwrap().len(),
            1,
            "init mode: no sidecar"
        );
    }

    fn sidecar() -> Injection {
        let injection = parse(
            &BTreeMap::from([("kubekms.io/inject".to_owned(), "true".to_owned())]),
            &BTreeMap::from([
                ("kubekms.io/data-key.db".to_owned(), "orders".to_owned()),
                ("kubekms.io/inject-mode".to_owned(), "sidecar".to_owned()),
            ]),
        )
        .unwrap()
        .unwrap();
        assert_eq!(injection.mode, Mode::Sidecar);
        injection
    }

    #[test]
    fn a_sidecar_serves_only_in_pods_that_restart_their_containers() {
        let annotations = json!({ "kubekms.io/inject": "true" });
        let long_running = pod(json!({
            "metadata": { "annotations": annotations },
            "spec": { "securityContext": { "runAsUser": 1000 },
                      "containers": [ { "name": "app", "image": "app" } ] },
        }));
        let keys = [data_key("db", "db", 1)];
        let out = patched(
            &long_running,
            &mutate(&long_running, &sidecar(), &keys, &settings())
                .unwrap()
                .unwrap(),
        );
        let containers = out["spec"]["containers"].as_array().unwrap();
        assert_eq!(containers[1]["name"], AGENT_SIDECAR);
        assert_eq!(containers[1]["ports"][0]["containerPort"], AGENT_PORT);
        assert_eq!(containers[1]["command"][1], "serve");
        // The sidecar reads the record's mirror, kept current by the kubelet; the init
        // container is not told about it.
        let mirror = out["spec"]["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == MIRROR_VOLUME)
            .unwrap();
        let source = &mirror["projected"]["sources"][0]["configMap"];
        assert_eq!(source["name"], "kubekms-datakey.app.db");
        assert_eq!(source["optional"], true);
        assert_eq!(source["items"][0]["path"], "db.json");
        assert!(containers[1]["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["name"] == MIRROR_VOLUME && m["readOnly"] == true));
        let config = |c: &Value| -> Value {
            let env = env_of(c);
            serde_json::from_str(&env[AGENT_CONFIG_ENV]).unwrap()
        };
        assert_eq!(config(&containers[1])["mirrorDir"], MIRROR_DIR);
        assert!(config(&out["spec"]["initContainers"][0])
            .get("mirrorDir")
            .is_none());
        assert!(config(&containers[1])["dataKeys"][0]
            .get("mirror")
            .is_none());
        assert_eq!(
            env_of(&containers[0])["KUBEKMS_AGENT_URL"],
            "http://127.0.0.1:4610"
        );
        assert_eq!(out["spec"]["initContainers"][0]["name"], AGENT_INIT);

        let job = pod(json!({
            "metadata": { "annotations": annotations },
            "spec": { "restartPolicy": "Never", "securityContext": { "runAsUser": 1000 },
                      "containers": [ { "name": "app", "image": "app" } ] },
        }));
        let out = patched(
            &job,
            &mutate(&job, &sidecar(), &keys, &settings())
                .unwrap()
                .unwrap(),
        );
        assert_eq!(out["spec"]["containers"].as_array().unwrap().len(), 1);
        assert_eq!(out["spec"]["initContainers"][0]["name"], AGENT_INIT);
        let host_network = pod(json!({
            "metadata": { "annotations": annotations },
            "spec": { "hostNetwork": true, "securityContext": { "runAsUser": 1000 },
                      "containers": [ { "name": "app", "image": "app" } ] },
        }));
        let on_node = patched(
            &host_network,
            &mutate(&host_network, &sidecar(), &keys, &settings())
                .unwrap()
                .unwrap(),
        );
        assert_eq!(
            on_node["spec"]["containers"].as_array().unwrap().len(),
            1,
            "no localhost server on the node's network"
        );
        assert!(!out["spec"]["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v["name"] == MIRROR_VOLUME));
        assert!(!env_of(&out["spec"]["containers"][0]).contains_key("KUBEKMS_AGENT_URL"));
    }

    #[test]
    fn with_tls_every_container_trusts_the_engines_ca_beside_the_token() {
        let pod = pod(json!({
            "metadata": { "name": "app" },
            "spec": { "securityContext": { "runAsUser": 1000 },
                      "containers": [ { "name": "app", "image": "app" } ] },
        }));
        let mut tls = settings();
        tls.engine_url = "https://kubekms-engine.kubekms.svc:4599".into();
        tls.engine_host_alias = Some(HostAlias {
            ip: "10.0.0.10".into(),
            hostname: "kubekms-engine.kubekms.svc".into(),
        });
        tls.ca = Some(CaBundle {
            config_map: CA_CONFIG_MAP.into(),
            pem: "pem".into(),
        });
        let keys = [data_key("db", "db", 1)];
        let out = patched(
            &pod,
            &mutate(&pod, &injection(&pod), &keys, &tls)
                .unwrap()
                .unwrap(),
        );
        let sources = &out["spec"]["volumes"][0]["projected"]["sources"];
        assert_eq!(sources[1]["configMap"]["name"], CA_CONFIG_MAP);
        assert_eq!(sources[1]["configMap"]["items"][0]["path"], CA_FILE);
        for container in [
            &out["spec"]["containers"][0],
            &out["spec"]["initContainers"][0],
        ] {
            let env = env_of(container);
            assert_eq!(env["AWS_CA_BUNDLE"], "/var/run/secrets/kubekms/ca.crt");
            assert_eq!(
                env["AWS_ENDPOINT_URL_KMS"],
                "https://kubekms-engine.kubekms.svc:4599"
            );
        }
        assert_eq!(out["spec"]["hostAliases"][0]["ip"], "10.0.0.10");
        assert_eq!(
            out["spec"]["hostAliases"][0]["hostnames"][0],
            "kubekms-engine.kubekms.svc"
        );
        // Without TLS, nothing about a CA.
        let out = patched(
            &pod,
            &mutate(&pod, &injection(&pod), &keys, &settings())
                .unwrap()
                .unwrap(),
        );
        assert!(!env_of(&out["spec"]["containers"][0]).contains_key("AWS_CA_BUNDLE"));
        assert_eq!(
            out["spec"]["volumes"][0]["projected"]["sources"]
                .as_array()
                .unwrap()
                .len(),
            1
        );
    }

    #[test]
    fn no_plaintext_and_the_agent_runs_as_the_apps_user_or_the_pod_is_refused() {
        let annotations = json!({
            "kubekms.io/inject": "true", "kubekms.io/data-key.db": "orders" });
        let unknown_user = pod(json!({
            "metadata": { "annotations": annotations },
            "spec": { "containers": [ { "name": "app", "image": "app" } ] },
        }));
        let keys = [data_key("db", "db", 1)];
        let refused = mutate(&unknown_user, &injection(&unknown_user), &keys, &settings());
        assert!(matches!(refused, Err(Error::NoRunAsUser)));
        let pod = pod(json!({
            "metadata": { "annotations": annotations },
            "spec": { "containers": [ { "name": "app", "image": "app",
                "securityContext": { "runAsUser": 2000 } } ] },
        }));
        let out = patched(
            &pod,
            &mutate(&pod, &injection(&pod), &keys, &settings())
                .unwrap()
                .unwrap(),
        );
        let agent = &out["spec"]["initContainers"][0];
        assert_eq!(agent["securityContext"]["runAsUser"], 2000);
        assert_eq!(agent["securityContext"]["runAsNonRoot"], true);
        // The agent's configuration names ciphertexts and files, and nothing else.
        let config: Value = serde_json::from_str(&env_of(agent)[AGENT_CONFIG_ENV]).unwrap();
        let entry = config["dataKeys"][0]["keys"][0].as_object().unwrap();
        let mut fields: Vec<&str> = entry.keys().map(String::as_str).collect();
        fields.sort_unstable();
        assert_eq!(
            fields,
            ["ciphertext", "encryptionContext", "generation", "id"]
        );
    }
}
