//! The engine's Deployment and Service from `engine.json`: flags, ownership, labels, security,
//! replicas and anti-affinity; and `engine.json` errors that name the member at fault.

use super::config::{AntiAffinity, PullPolicy};
use super::render::*;
use super::*;
use k8s_openapi::api::core::v1::PodSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use std::collections::BTreeMap;

const FULL: &str = r#"{
  "image": "localhost/kubekms:0.1.0",
  "imagePullPolicy": "Never",
  "replicas": 3,
  "serviceAccountName": "kubekms-engine",
  "port": 4599,
  "account": "111122223333",
  "region": "eu-west-1",
  "adminGroups": ["system:masters", "kms-admins"],
  "operatorServiceAccount": "kubekms-operator",
  "audit": "-",
  "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"memory": "256Mi"}},
  "podAntiAffinity": "hard",
  "nodeSelector": {"kubernetes.io/os": "linux"},
  "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "kms", "effect": "NoSchedule"}],
  "podLabels": {"team": "security"},
  "podAnnotations": {"prometheus.io/scrape": "true"},
  "logLevel": "info,kubekms_engine=debug"
}"#;

const MINIMAL: &str = r#"{
  "image": "localhost/kubekms:0.1.0",
  "serviceAccountName": "kubekms-engine",
  "account": "111122223333",
  "region": "us-east-1",
  "operatorServiceAccount": "kubekms-operator"
}"#;

fn owner() -> Owner {
    Owner {
        name: "kubekms-engine-config".into(),
        namespace: "kubekms-system".into(),
        uid: "c0nf1g-uid".into(),
        instance: "kubekms".into(),
    }
}

fn pod_spec(d: &k8s_openapi::api::apps::v1::Deployment) -> &PodSpec {
    d.spec.as_ref().unwrap().template.spec.as_ref().unwrap()
}

#[test]
fn defaults_fill_what_engine_json_leaves_out() {
    let c = EngineConfig::parse(MINIMAL).unwrap();
    assert_eq!(c.replicas, 2);
    assert_eq!(c.port, 4599);
    assert_eq!(c.image_pull_policy, PullPolicy::IfNotPresent);
    assert_eq!(c.admin_groups, ["system:masters"]);
    assert_eq!(c.audit, "-");
    assert_eq!(c.pod_anti_affinity, AntiAffinity::Soft);
    assert_eq!(c.log_level, "info");
    assert!(c.resources.is_none() && c.tolerations.is_empty() && c.node_selector.is_empty());
}

#[test]
fn the_container_runs_the_engine_with_the_flags_of_the_config() {
    let c = EngineConfig::parse(FULL).unwrap();
    let d = deployment(&c, &owner());
    let pod = pod_spec(&d);
    assert_eq!(pod.containers.len(), 1);
    let container = &pod.containers[0];
    assert_eq!(container.image.as_deref(), Some("localhost/kubekms:0.1.0"));
    assert_eq!(container.image_pull_policy.as_deref(), Some("Never"));
    assert_eq!(
        container.command.as_deref(),
        Some(&["/usr/local/bin/kubekms-operator".to_owned()][..])
    );
    assert_eq!(
        container.args.as_deref().unwrap(),
        [
            "engine",
            "--listen=0.0.0.0:4599",
            "--account=111122223333",
            "--region=eu-west-1",
            "--admin-group=system:masters",
            "--admin-group=kms-admins",
            "--operator-service-account=kubekms-operator",
            "--audit-log=-",
            "--lease-name=kubekms-engine-scheduler",
        ]
    );
    // The namespace and the Lease identity come from the downward API.
    let env = container.env.as_ref().unwrap();
    let field = |name: &str| {
        env.iter()
            .find(|e| e.name == name)
            .and_then(|e| e.value_from.as_ref())
            .and_then(|v| v.field_ref.as_ref())
            .map(|f| f.field_path.clone())
    };
    assert_eq!(
        field("POD_NAMESPACE").as_deref(),
        Some("metadata.namespace")
    );
    assert_eq!(field("POD_NAME").as_deref(), Some("metadata.name"));
    let rust_log = env.iter().find(|e| e.name == "RUST_LOG").unwrap();
    assert_eq!(rust_log.value.as_deref(), Some("info,kubekms_engine=debug"));
    // The port, named, and probes on /healthz through it.
    let port = &container.ports.as_ref().unwrap()[0];
    assert_eq!(
        (port.name.as_deref(), port.container_port),
        (Some("kms"), 4599)
    );
    for probe in [&container.readiness_probe, &container.liveness_probe] {
        let get = probe.as_ref().unwrap().http_get.as_ref().unwrap();
        assert_eq!(get.path.as_deref(), Some("/healthz"));
        assert_eq!(get.port, IntOrString::String("kms".into()));
    }
    assert_eq!(container.resources, c.resources);
    assert_eq!(pod.service_account_name.as_deref(), Some("kubekms-engine"));
    assert_eq!(pod.automount_service_account_token, Some(true));
    assert_eq!(pod.node_selector, Some(c.node_selector.clone()));
    assert_eq!(pod.tolerations, Some(c.tolerations.clone()));
    assert_eq!(d.spec.as_ref().unwrap().replicas, Some(3));
}

#[test]
fn a_port_other_than_the_default_goes_everywhere() {
    let mut c = EngineConfig::parse(MINIMAL).unwrap();
    c.port = 8443;
    let d = deployment(&c, &owner());
    let container = &pod_spec(&d).containers[0];
    assert!(container
        .args
        .as_ref()
        .unwrap()
        .contains(&"--listen=0.0.0.0:8443".to_owned()));
    assert_eq!(container.ports.as_ref().unwrap()[0].container_port, 8443);
    let s = service(&c, &owner());
    let port = &s.spec.as_ref().unwrap().ports.as_ref().unwrap()[0];
    assert_eq!(port.port, 8443);
    assert_eq!(port.name.as_deref(), Some("kms"));
    assert_eq!(port.target_port, Some(IntOrString::String("kms".into())));
    let spec = s.spec.as_ref().unwrap();
    assert_eq!(spec.session_affinity.as_deref(), Some("ClientIP"));
}

#[test]
fn both_objects_belong_to_the_config_map_and_carry_the_labels() {
    let c = EngineConfig::parse(FULL).unwrap();
    let d = deployment(&c, &owner());
    let s = service(&c, &owner());
    let selector = BTreeMap::from([
        ("app.kubernetes.io/name".to_owned(), "kubekms".to_owned()),
        (
            "app.kubernetes.io/component".to_owned(),
            "engine".to_owned(),
        ),
        (
            "app.kubernetes.io/instance".to_owned(),
            "kubekms".to_owned(),
        ),
    ]);
    for meta in [&d.metadata, &s.metadata] {
        assert_eq!(meta.name.as_deref(), Some("kubekms-engine"));
        assert_eq!(meta.namespace.as_deref(), Some("kubekms-system"));
        let refs = meta.owner_references.as_ref().unwrap();
        assert_eq!(refs.len(), 1);
        assert_eq!(refs[0].api_version, "v1");
        assert_eq!(refs[0].kind, "ConfigMap");
        assert_eq!(refs[0].name, "kubekms-engine-config");
        assert_eq!(refs[0].uid, "c0nf1g-uid");
        assert_eq!(refs[0].controller, Some(true));
        assert!(owner().controls(meta));
        let labels = meta.labels.as_ref().unwrap();
        for (k, v) in &selector {
            assert_eq!(labels.get(k), Some(v), "{k}");
        }
    }
    let spec = d.spec.as_ref().unwrap();
    assert_eq!(spec.selector.match_labels.as_ref(), Some(&selector));
    let template = spec.template.metadata.as_ref().unwrap();
    let pod_labels = template.labels.as_ref().unwrap();
    assert_eq!(pod_labels.get("team").map(String::as_str), Some("security"));
    for (k, v) in &selector {
        assert_eq!(pod_labels.get(k), Some(v), "{k}");
    }
    assert_eq!(
        template.annotations.as_ref().unwrap()["prometheus.io/scrape"],
        "true"
    );
    let svc = s.spec.as_ref().unwrap();
    assert_eq!(svc.type_.as_deref(), Some("ClusterIP"));
    assert_eq!(svc.selector.as_ref(), Some(&selector));
    // Another release's ConfigMap does not control them.
    let other = Owner {
        uid: "other".into(),
        ..owner()
    };
    assert!(!other.controls(&d.metadata));
    assert!(!owner().controls(&ObjectMeta::default()));
}

#[test]
fn the_release_name_comes_from_the_config_map() {
    let mut cm = ConfigMap::default();
    cm.metadata.name = Some("cfg".into());
    cm.metadata.namespace = Some("ns".into());
    assert_eq!(Owner::of(&cm), None, "not stored yet: no uid");
    cm.metadata.uid = Some("u".into());
    assert_eq!(Owner::of(&cm).unwrap().instance, "kubekms");
    cm.metadata.labels = Some(BTreeMap::from([(
        "app.kubernetes.io/instance".into(),
        "prod-kms".into(),
    )]));
    let owner = Owner::of(&cm).unwrap();
    assert_eq!(owner.instance, "prod-kms");
    let c = EngineConfig::parse(MINIMAL).unwrap();
    let d = deployment(&c, &owner);
    assert_eq!(
        d.spec
            .as_ref()
            .unwrap()
            .selector
            .match_labels
            .as_ref()
            .unwrap()["app.kubernetes.io/instance"],
        "prod-kms"
    );
}

#[test]
fn pods_run_locked_down() {
    let c = EngineConfig::parse(MINIMAL).unwrap();
    let d = deployment(&c, &owner());
    let pod = pod_spec(&d);
    let psc = pod.security_context.as_ref().unwrap();
    assert_eq!(psc.run_as_non_root, Some(true));
    assert_eq!(psc.run_as_user, Some(65532));
    assert_eq!(
        psc.seccomp_profile.as_ref().map(|p| p.type_.as_str()),
        Some("RuntimeDefault")
    );
    let sc = pod.containers[0].security_context.as_ref().unwrap();
    assert_eq!(sc.run_as_non_root, Some(true));
    assert_eq!(sc.run_as_user, Some(65532));
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_eq!(
        sc.capabilities.as_ref().unwrap().drop.as_deref(),
        Some(&["ALL".to_owned()][..])
    );
    assert_eq!(
        sc.seccomp_profile.as_ref().map(|p| p.type_.as_str()),
        Some("RuntimeDefault")
    );
    assert!(pod.volumes.is_none(), "stdout audit needs no volume");
}

#[test]
fn an_audit_file_gets_a_writable_volume() {
    let mut c = EngineConfig::parse(MINIMAL).unwrap();
    c.audit = "/var/log/kubekms/audit.log".into();
    let d = deployment(&c, &owner());
    let pod = pod_spec(&d);
    let volume = &pod.volumes.as_ref().unwrap()[0];
    assert!(volume.empty_dir.is_some());
    let mount = &pod.containers[0].volume_mounts.as_ref().unwrap()[0];
    assert_eq!(mount.name, volume.name);
    assert_eq!(mount.mount_path, "/var/log/kubekms");
    assert!(pod.containers[0]
        .args
        .as_ref()
        .unwrap()
        .contains(&"--audit-log=/var/log/kubekms/audit.log".to_owned()));
}

#[test]
fn anti_affinity_variants() {
    let mut c = EngineConfig::parse(MINIMAL).unwrap();
    let affinity = |c: &EngineConfig| {
        pod_spec(&deployment(c, &owner()))
            .affinity
            .as_ref()
            .and_then(|a| a.pod_anti_affinity.clone())
    };
    let soft = affinity(&c).unwrap();
    assert!(soft
        .required_during_scheduling_ignored_during_execution
        .is_none());
    let preferred = &soft
        .preferred_during_scheduling_ignored_during_execution
        .unwrap()[0];
    assert_eq!(preferred.weight, 100);
    assert_eq!(
        preferred.pod_affinity_term.topology_key,
        "kubernetes.io/hostname"
    );
    assert_eq!(
        preferred
            .pod_affinity_term
            .label_selector
            .as_ref()
            .unwrap()
            .match_labels
            .as_ref(),
        Some(&selector_labels(&owner()))
    );

    c.pod_anti_affinity = AntiAffinity::Hard;
    let hard = affinity(&c).unwrap();
    assert!(hard
        .preferred_during_scheduling_ignored_during_execution
        .is_none());
    let required = &hard
        .required_during_scheduling_ignored_during_execution
        .unwrap()[0];
    assert_eq!(required.topology_key, "kubernetes.io/hostname");

    c.pod_anti_affinity = AntiAffinity::None;
    assert!(pod_spec(&deployment(&c, &owner())).affinity.is_none());
}

#[test]
fn replicas_follow_the_config() {
    for n in [1, 2, 5] {
        let mut c = EngineConfig::parse(MINIMAL).unwrap();
        c.replicas = n;
        assert_eq!(
            deployment(&c, &owner()).spec.as_ref().unwrap().replicas,
            Some(n)
        );
    }
}

#[test]
fn the_service_url_is_its_cluster_ip() {
    let c = EngineConfig::parse(MINIMAL).unwrap();
    let mut s = service(&c, &owner());
    assert_eq!(
        service_url(&s, 4599, false),
        None,
        "no IP before the API server assigns one"
    );
    s.spec.as_mut().unwrap().cluster_ip = Some("10.0.0.7".into());
    assert_eq!(
        service_url(&s, 4599, false).as_deref(),
        Some("http://10.0.0.7:4599")
    );
    s.spec.as_mut().unwrap().cluster_ip = Some("fd00::7".into());
    assert_eq!(
        service_url(&s, 4599, false).as_deref(),
        Some("http://[fd00::7]:4599")
    );
    s.spec.as_mut().unwrap().cluster_ip = Some("None".into());
    assert_eq!(service_url(&s, 4599, false), None);
}

/// `engine.json` with `member` replaced (or removed, for `None`).
fn with(member: &str, value: Option<serde_json::Value>) -> String {
    let mut v: serde_json::Value = serde_json::from_str(FULL).unwrap();
    let object = v.as_object_mut().unwrap();
    match value {
        Some(value) => object.insert(member.to_owned(), value),
        None => object.remove(member),
    };
    v.to_string()
}

#[test]
fn bad_settings_are_errors_naming_the_member() {
    use serde_json::json;
    let cases: Vec<(String, &str)> = vec![
        ("not json".into(), "."),
        ("[]".into(), "."),
        (with("image", None), "image"),
        (with("image", Some(json!(""))), "image"),
        (with("image", Some(json!(5))), "image"),
        (
            with("imagePullPolicy", Some(json!("Sometimes"))),
            "imagePullPolicy",
        ),
        (with("replicas", Some(json!(0))), "replicas"),
        (with("replicas", Some(json!("two"))), "replicas"),
        (with("serviceAccountName", None), "serviceAccountName"),
        (
            with("serviceAccountName", Some(json!("Not_A_Name"))),
            "serviceAccountName",
        ),
        (with("port", Some(json!(0))), "port"),
        (with("port", Some(json!(70000))), "port"),
        (with("account", Some(json!("12345"))), "account"),
        (with("region", Some(json!("mars"))), "region"),
        (with("adminGroups", Some(json!([]))), "adminGroups"),
        (
            with("adminGroups", Some(json!(["ok", " "]))),
            "adminGroups[1]",
        ),
        (
            with("operatorServiceAccount", None),
            "operatorServiceAccount",
        ),
        (
            with("operatorServiceAccount", Some(json!("a:b"))),
            "operatorServiceAccount",
        ),
        (with("audit", Some(json!("relative.log"))), "audit"),
        (with("audit", Some(json!("/audit.log"))), "audit"),
        (
            with("audit", Some(json!("/usr/local/bin/audit.log"))),
            "audit",
        ),
        (with("audit", Some(json!("/var/log/../etc/x"))), "audit"),
        (
            with("podAntiAffinity", Some(json!("sometimes"))),
            "podAntiAffinity",
        ),
        (
            with("tolerations", Some(json!([{"tolerationSeconds": "x"}]))),
            "tolerations[0].tolerationSeconds",
        ),
        (
            with("resources", Some(json!({"requests": {"cpu": true}}))),
            "resources.requests.cpu",
        ),
        (
            with(
                "podLabels",
                Some(json!({"app.kubernetes.io/instance": "x"})),
            ),
            "podLabels.app.kubernetes.io/instance",
        ),
        (with("logLevel", Some(json!(""))), "logLevel"),
        (with("replcas", Some(json!(2))), "replcas"),
    ];
    for (json, field) in cases {
        let err = EngineConfig::parse(&json).expect_err(&json);
        assert_eq!(err.field, field, "{json}: {err}");
        assert!(err.to_string().starts_with("engine.json: "), "{err}");
    }
}

#[test]
fn a_config_map_without_the_entry_is_an_error() {
    let cm = ConfigMap::default();
    let err = config_of(&cm).unwrap_err();
    assert!(err.to_string().contains("engine.json"), "{err}");
    let cm = ConfigMap {
        data: Some(BTreeMap::from([(
            CONFIG_KEY.to_owned(),
            MINIMAL.to_owned(),
        )])),
        ..ConfigMap::default()
    };
    assert_eq!(config_of(&cm).unwrap().account, "111122223333");
}

#[test]
fn the_test_clock_is_off_unless_asked_for_and_then_opens_the_admin_port() {
    let off = deployment(&EngineConfig::parse(MINIMAL).unwrap(), &owner());
    let container = &pod_spec(&off).containers[0];
    assert!(!container
        .args
        .as_ref()
        .unwrap()
        .iter()
        .any(|a| a == "--test-clock" || a.starts_with("--admin-listen")));
    assert_eq!(container.ports.as_ref().unwrap().len(), 1);

    let with = MINIMAL.replace('}', ", \"testClock\": true}");
    let on = deployment(&EngineConfig::parse(&with).unwrap(), &owner());
    let container = &pod_spec(&on).containers[0];
    let args = container.args.as_ref().unwrap();
    assert!(args.contains(&"--test-clock".to_owned()), "{args:?}");
    assert!(
        args.contains(&format!("--admin-listen=0.0.0.0:{}", config::ADMIN_PORT)),
        "{args:?}"
    );
    let ports: Vec<i32> = container
        .ports
        .as_ref()
        .unwrap()
        .iter()
        .map(|p| p.container_port)
        .collect();
    assert_eq!(ports, [4599, i32::from(config::ADMIN_PORT)]);
}

#[test]
fn with_tls_the_engine_serves_its_secrets_certificate() {
    let mut c = EngineConfig::parse(MINIMAL).unwrap();
    assert!(!engine_args(&c).iter().any(|a| a.starts_with("--tls")));
    c.tls = Some(super::config::EngineTls {
        secret_name: "kubekms-engine-tls".into(),
    });
    let args = engine_args(&c);
    assert!(
        args.contains(&format!("--tls-cert={TLS_DIR}/tls.crt")),
        "{args:?}"
    );
    assert!(
        args.contains(&format!("--tls-key={TLS_DIR}/tls.key")),
        "{args:?}"
    );
    let d = deployment(&c, &owner());
    let pod = d.spec.unwrap().template.spec.unwrap();
    let volume = pod
        .volumes
        .unwrap()
        .into_iter()
        .find(|v| v.name == "tls")
        .unwrap();
    assert_eq!(
        volume.secret.unwrap().secret_name.as_deref(),
        Some("kubekms-engine-tls")
    );
    let container = &pod.containers[0];
    assert!(container
        .volume_mounts
        .iter()
        .flatten()
        .any(|m| m.mount_path == TLS_DIR && m.read_only == Some(true)));
    let probe = container.readiness_probe.as_ref().unwrap();
    assert_eq!(
        probe.http_get.as_ref().unwrap().scheme.as_deref(),
        Some("HTTPS")
    );
    let mut s = service(&c, &owner());
    s.spec.as_mut().unwrap().cluster_ip = Some("10.0.0.7".into());
    assert_eq!(
        service_url(&s, 4599, true).as_deref(),
        Some("https://10.0.0.7:4599")
    );
    let parsed = EngineConfig::parse(
        r#"{"image": "i", "serviceAccountName": "e", "account": "111122223333",
            "region": "us-east-1", "operatorServiceAccount": "o",
            "tls": {"secretName": "kubekms-engine-tls"}}"#,
    )
    .unwrap();
    assert_eq!(parsed.tls, c.tls);
}
