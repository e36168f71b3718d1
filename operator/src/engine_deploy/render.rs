//! The engine's Deployment and Service, as a pure function of `engine.json` and the ConfigMap
//! that holds it: what the operator applies, and what the tests check, field by field.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{
    Affinity, Capabilities, ConfigMap, Container, ContainerPort, EmptyDirVolumeSource, EnvVar,
    EnvVarSource, HTTPGetAction, KeyToPath, ObjectFieldSelector, PodAffinityTerm, PodAntiAffinity,
    PodSecurityContext, PodSpec, PodTemplateSpec, Probe, SeccompProfile, SecretVolumeSource,
    SecurityContext, Service, ServicePort, ServiceSpec, Volume, VolumeMount,
    WeightedPodAffinityTerm,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;

use super::config::{audit_dir, AntiAffinity, EngineConfig, ADMIN_PORT};

/// The name of the engine's Deployment and Service.
pub const ENGINE_NAME: &str = "kubekms-engine";
/// The Lease whose holder runs the engine's due work.
pub const SCHEDULER_LEASE: &str = "kubekms-engine-scheduler";
/// The engine's port name, in the pod and the Service.
pub const PORT_NAME: &str = "kms";
pub const NAME_LABEL: &str = "app.kubernetes.io/name";
pub const COMPONENT_LABEL: &str = "app.kubernetes.io/component";
pub const INSTANCE_LABEL: &str = "app.kubernetes.io/instance";
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// The labels that select the engine's pods; nothing else may set them.
pub const SELECTOR_LABELS: [&str; 3] = [NAME_LABEL, COMPONENT_LABEL, INSTANCE_LABEL];
/// The release name when the ConfigMap carries none.
pub const DEFAULT_INSTANCE: &str = "kubekms";
/// The image's user and group (distroless `nonroot`).
pub const RUN_AS: i64 = 65532;
const BINARY: &str = "/usr/local/bin/kubekms-operator";
const CONTAINER: &str = "engine";
const AUDIT_VOLUME: &str = "audit";
const TLS_VOLUME: &str = "tls";
/// Where the engine pods find their certificate.
pub const TLS_DIR: &str = "/etc/kubekms/engine-tls";

/// The ConfigMap the objects belong to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owner {
    pub name: String,
    pub namespace: String,
    pub uid: String,
    /// The release (`app.kubernetes.io/instance` of the ConfigMap).
    pub instance: String,
}

impl Owner {
    /// `None` for a ConfigMap that is not stored yet (no uid or namespace).
    pub fn of(config_map: &ConfigMap) -> Option<Self> {
        Some(Self {
            name: config_map.metadata.name.clone()?,
            namespace: config_map.metadata.namespace.clone()?,
            uid: config_map.metadata.uid.clone()?,
            instance: config_map
                .labels()
                .get(INSTANCE_LABEL)
                .cloned()
                .unwrap_or_else(|| DEFAULT_INSTANCE.to_owned()),
        })
    }

    fn reference(&self) -> OwnerReference {
        OwnerReference {
            api_version: "v1".to_owned(),
            kind: "ConfigMap".to_owned(),
            name: self.name.clone(),
            uid: self.uid.clone(),
            controller: Some(true),
            // Setting it needs the right to update the ConfigMap's finalizers, which the
            // operator does not have; foreground deletion of the ConfigMap is not needed.
            block_owner_deletion: None,
        }
    }

    /// Whether `meta` names this ConfigMap as its controller.
    pub fn controls(&self, meta: &ObjectMeta) -> bool {
        meta.owner_references
            .iter()
            .flatten()
            .any(|r| r.controller == Some(true) && r.kind == "ConfigMap" && r.uid == self.uid)
    }
}

/// The labels that select the engine's pods.
pub fn selector_labels(owner: &Owner) -> BTreeMap<String, String> {
    BTreeMap::from([
        (NAME_LABEL.to_owned(), "kubekms".to_owned()),
        (COMPONENT_LABEL.to_owned(), "engine".to_owned()),
        (INSTANCE_LABEL.to_owned(), owner.instance.clone()),
    ])
}

/// The label selector of the objects the operator keeps (for its watches).
pub fn selector_string(owner_instance: &str) -> String {
    format!("{NAME_LABEL}=kubekms,{COMPONENT_LABEL}=engine,{INSTANCE_LABEL}={owner_instance}")
}

fn object_meta(owner: &Owner) -> ObjectMeta {
    let mut labels = selector_labels(owner);
    labels.insert(MANAGED_BY_LABEL.to_owned(), "kubekms-operator".to_owned());
    ObjectMeta {
        name: Some(ENGINE_NAME.to_owned()),
        namespace: Some(owner.namespace.clone()),
        labels: Some(labels),
        owner_references: Some(vec![owner.reference()]),
        ..ObjectMeta::default()
    }
}

/// The engine's command line (after the binary).
pub fn engine_args(config: &EngineConfig) -> Vec<String> {
    let mut args = vec![
        "engine".to_owned(),
        format!("--listen=0.0.0.0:{}", config.port),
        format!("--account={}", config.account),
        format!("--region={}", config.region),
    ];
    args.extend(
        config
            .admin_groups
            .iter()
            .map(|g| format!("--admin-group={g}")),
    );
    args.push(format!(
        "--operator-service-account={}",
        config.operator_service_account
    ));
    if let Some(webhook) = &config.webhook_service_account {
        args.push(format!("--webhook-service-account={webhook}"));
    }
    args.push(format!("--audit-log={}", config.audit));
    args.push(format!("--lease-name={SCHEDULER_LEASE}"));
    if config.tls.is_some() {
        args.push(format!("--tls-cert={TLS_DIR}/tls.crt"));
        args.push(format!("--tls-key={TLS_DIR}/tls.key"));
    }
    if config.test_clock {
        args.push("--test-clock".to_owned());
        args.push(format!("--admin-listen=0.0.0.0:{ADMIN_PORT}"));
    }
    args
}

fn field_env(name: &str, path: &str) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                api_version: Some("v1".to_owned()),
                field_path: path.to_owned(),
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }
}

fn healthz(initial_delay: i32, period: i32, tls: bool) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some("/healthz".to_owned()),
            port: IntOrString::String(PORT_NAME.to_owned()),
            scheme: Some(if tls { "HTTPS" } else { "HTTP" }.to_owned()),
            ..HTTPGetAction::default()
        }),
        initial_delay_seconds: Some(initial_delay),
        period_seconds: Some(period),
        timeout_seconds: Some(2),
        failure_threshold: Some(3),
        ..Probe::default()
    }
}

fn anti_affinity(kind: AntiAffinity, owner: &Owner) -> Option<Affinity> {
    let term = || PodAffinityTerm {
        label_selector: Some(LabelSelector {
            match_labels: Some(selector_labels(owner)),
            ..LabelSelector::default()
        }),
        topology_key: "kubernetes.io/hostname".to_owned(),
        ..PodAffinityTerm::default()
    };
    let pod_anti_affinity = match kind {
        AntiAffinity::None => return None,
        AntiAffinity::Soft => PodAntiAffinity {
            preferred_during_scheduling_ignored_during_execution: Some(vec![
                WeightedPodAffinityTerm {
                    weight: 100,
                    pod_affinity_term: term(),
                },
            ]),
            ..PodAntiAffinity::default()
        },
        AntiAffinity::Hard => PodAntiAffinity {
            required_during_scheduling_ignored_during_execution: Some(vec![term()]),
            ..PodAntiAffinity::default()
        },
    };
    Some(Affinity {
        pod_anti_affinity: Some(pod_anti_affinity),
        ..Affinity::default()
    })
}

fn runtime_default_seccomp() -> SeccompProfile {
    SeccompProfile {
        type_: "RuntimeDefault".to_owned(),
        ..SeccompProfile::default()
    }
}

/// The engine's Deployment.
pub fn deployment(config: &EngineConfig, owner: &Owner) -> Deployment {
    let selector = selector_labels(owner);
    let mut pod_labels = config.pod_labels.clone();
    pod_labels.extend(selector.clone());
    let mut volumes = Vec::new();
    let mut mounts = Vec::new();
    if let Some(dir) =
        audit_dir(&config.audit).filter(|_| !matches!(config.audit.as_str(), "-" | "off"))
    {
        volumes.push(Volume {
            name: AUDIT_VOLUME.to_owned(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Volume::default()
        });
        mounts.push(VolumeMount {
            name: AUDIT_VOLUME.to_owned(),
            mount_path: dir.to_owned(),
            ..VolumeMount::default()
        });
    }
    if let Some(tls) = &config.tls {
        volumes.push(Volume {
            name: TLS_VOLUME.to_owned(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(tls.secret_name.clone()),
                items: Some(vec![
                    KeyToPath {
                        key: "tls.crt".to_owned(),
                        path: "tls.crt".to_owned(),
                        ..KeyToPath::default()
                    },
                    KeyToPath {
                        key: "tls.key".to_owned(),
                        path: "tls.key".to_owned(),
                        ..KeyToPath::default()
                    },
                ]),
                ..SecretVolumeSource::default()
            }),
            ..Volume::default()
        });
        mounts.push(VolumeMount {
            name: TLS_VOLUME.to_owned(),
            mount_path: TLS_DIR.to_owned(),
            read_only: Some(true),
            ..VolumeMount::default()
        });
    }
    let (volumes, mounts) = (
        (!volumes.is_empty()).then_some(volumes),
        (!mounts.is_empty()).then_some(mounts),
    );
    let container = Container {
        name: CONTAINER.to_owned(),
        image: Some(config.image.clone()),
        image_pull_policy: Some(config.image_pull_policy.as_str().to_owned()),
        command: Some(vec![BINARY.to_owned()]),
        args: Some(engine_args(config)),
        env: Some(vec![
            field_env("POD_NAMESPACE", "metadata.namespace"),
            field_env("POD_NAME", "metadata.name"),
            EnvVar {
                name: "RUST_LOG".to_owned(),
                value: Some(config.log_level.clone()),
                ..EnvVar::default()
            },
        ]),
        ports: Some(
            std::iter::once(ContainerPort {
                name: Some(PORT_NAME.to_owned()),
                container_port: i32::from(config.port),
                protocol: Some("TCP".to_owned()),
                ..ContainerPort::default()
            })
            .chain(config.test_clock.then(|| ContainerPort {
                name: Some("admin".to_owned()),
                container_port: i32::from(ADMIN_PORT),
                protocol: Some("TCP".to_owned()),
                ..ContainerPort::default()
            }))
            .collect(),
        ),
        readiness_probe: Some(healthz(0, 5, config.tls.is_some())),
        liveness_probe: Some(healthz(10, 10, config.tls.is_some())),
        resources: config.resources.clone(),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            run_as_user: Some(RUN_AS),
            run_as_group: Some(RUN_AS),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".to_owned()]),
                ..Capabilities::default()
            }),
            seccomp_profile: Some(runtime_default_seccomp()),
            ..SecurityContext::default()
        }),
        volume_mounts: mounts,
        ..Container::default()
    };
    Deployment {
        metadata: object_meta(owner),
        spec: Some(DeploymentSpec {
            replicas: Some(config.replicas),
            selector: LabelSelector {
                match_labels: Some(selector),
                ..LabelSelector::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    annotations: (!config.pod_annotations.is_empty())
                        .then(|| config.pod_annotations.clone()),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    service_account_name: Some(config.service_account_name.clone()),
                    // The engine talks to the API server (records, root key, Lease,
                    // TokenReview) with this token.
                    automount_service_account_token: Some(true),
                    security_context: Some(PodSecurityContext {
                        run_as_non_root: Some(true),
                        run_as_user: Some(RUN_AS),
                        run_as_group: Some(RUN_AS),
                        fs_group: Some(RUN_AS),
                        seccomp_profile: Some(runtime_default_seccomp()),
                        ..PodSecurityContext::default()
                    }),
                    containers: vec![container],
                    node_selector: (!config.node_selector.is_empty())
                        .then(|| config.node_selector.clone()),
                    tolerations: (!config.tolerations.is_empty())
                        .then(|| config.tolerations.clone()),
                    affinity: anti_affinity(config.pod_anti_affinity, owner),
                    volumes,
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        }),
        ..Deployment::default()
    }
}

/// The engine's Service: a cluster IP in front of every ready replica, each client staying
/// with one replica. Replicas follow each other's writes a moment late; with client-IP
/// affinity a client (the operator above all, whose change feed and reads must come from the
/// same view) sees one replica's view, which only moves forward, until that replica goes.
pub fn service(config: &EngineConfig, owner: &Owner) -> Service {
    Service {
        metadata: object_meta(owner),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".to_owned()),
            session_affinity: Some("ClientIP".to_owned()),
            selector: Some(selector_labels(owner)),
            ports: Some(vec![ServicePort {
                name: Some(PORT_NAME.to_owned()),
                port: i32::from(config.port),
                target_port: Some(IntOrString::String(PORT_NAME.to_owned())),
                protocol: Some("TCP".to_owned()),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

/// The engine's URL at a Service's cluster IP, if it has one (`https://` when it serves TLS).
pub fn service_url(service: &Service, port: u16, tls: bool) -> Option<String> {
    let ip = service.spec.as_ref()?.cluster_ip.as_deref()?;
    kubekms_proto::client::cluster_ip_url(ip, port, tls)
}
