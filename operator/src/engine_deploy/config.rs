//! `engine.json`, the engine's settings the chart renders into the operator's ConfigMap, as a
//! type. Unknown members are refused (a misspelt setting must not be silently ignored), and
//! every error names the member at fault.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ResourceRequirements, Toleration};
use serde::Deserialize;

/// The ConfigMap entry that holds the settings.
pub const CONFIG_KEY: &str = "engine.json";
/// The port the engine serves on unless told otherwise.
pub const DEFAULT_PORT: u16 = 4599;

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EngineConfig {
    /// The image holding `/usr/local/bin/kubekms-operator`.
    pub image: String,
    #[serde(default)]
    pub image_pull_policy: PullPolicy,
    #[serde(default = "default_replicas")]
    pub replicas: i32,
    /// The engine pods' ServiceAccount (it needs Secrets, Leases and TokenReviews).
    pub service_account_name: String,
    #[serde(default = "default_port")]
    pub port: u16,
    pub account: String,
    pub region: String,
    /// Kubernetes groups whose members are the account's administrators.
    #[serde(default = "default_admin_groups")]
    pub admin_groups: Vec<String>,
    /// The operator's ServiceAccount (in the release namespace): its tokens are the
    /// operator's principal in the engine.
    pub operator_service_account: String,
    /// The injection webhook's ServiceAccount (in the release namespace), when the chart
    /// installs the webhook: its tokens are `role/kubekms-webhook` in the engine.
    #[serde(default)]
    pub webhook_service_account: Option<String>,
    /// `-` (stdout), `off`, or an absolute file path (on a volume of the pod).
    #[serde(default = "default_audit")]
    pub audit: String,
    #[serde(default)]
    pub resources: Option<ResourceRequirements>,
    #[serde(default)]
    pub pod_anti_affinity: AntiAffinity,
    #[serde(default)]
    pub node_selector: BTreeMap<String, String>,
    #[serde(default)]
    pub tolerations: Vec<Toleration>,
    #[serde(default)]
    pub pod_labels: BTreeMap<String, String>,
    #[serde(default)]
    pub pod_annotations: BTreeMap<String, String>,
    /// `RUST_LOG` of the engine pods.
    #[serde(default = "default_log_level")]
    pub log_level: String,
    /// TLS for the KMS API: the engine pods serve the certificate of this Secret
    /// (`tls.crt`, `tls.key`, in the ConfigMap's namespace), which names the engine Service.
    #[serde(default)]
    pub tls: Option<EngineTls>,
    /// For tests only: each engine pod's clock can be moved forward through an admin port
    /// ([`ADMIN_PORT`]) so that rotations, deletion windows and expiries fall due at once.
    #[serde(default)]
    pub test_clock: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EngineTls {
    pub secret_name: String,
}

/// The engine pods' admin port, open only with `testClock`.
pub const ADMIN_PORT: u16 = 4600;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
pub enum PullPolicy {
    Always,
    #[default]
    IfNotPresent,
    Never,
}

impl PullPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            PullPolicy::Always => "Always",
            PullPolicy::IfNotPresent => "IfNotPresent",
            PullPolicy::Never => "Never",
        }
    }
}

/// How engine replicas are kept off one node.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AntiAffinity {
    /// Preferred: spread if the nodes allow, run anyway if not.
    #[default]
    Soft,
    /// Required: a replica with no node of its own stays Pending.
    Hard,
    None,
}

fn default_replicas() -> i32 {
    2
}

fn default_port() -> u16 {
    DEFAULT_PORT
}

fn default_admin_groups() -> Vec<String> {
    vec!["system:masters".to_owned()]
}

fn default_audit() -> String {
    "-".to_owned()
}

fn default_log_level() -> String {
    "info".to_owned()
}

/// What is wrong with `engine.json`, and where.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{CONFIG_KEY}: {field}: {why}")]
pub struct ConfigError {
    /// The member at fault, as a path (`tolerations[0].effect`), or `.` for the whole.
    pub field: String,
    pub why: String,
}

impl ConfigError {
    fn new(field: &str, why: impl Into<String>) -> Self {
        Self {
            field: field.to_owned(),
            why: why.into(),
        }
    }
}

impl EngineConfig {
    /// Parse and check `engine.json`.
    pub fn parse(json: &str) -> Result<Self, ConfigError> {
        let mut de = serde_json::Deserializer::from_str(json);
        let config: EngineConfig = serde_path_to_error::deserialize(&mut de).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            let message = inner.to_string();
            // A missing or unknown member is reported at its parent; name it instead.
            let field = match named_member(&message) {
                Some(name) if path == "." => name.to_owned(),
                Some(name) if !path.ends_with(name) => format!("{path}.{name}"),
                _ => path,
            };
            ConfigError {
                field,
                why: message,
            }
        })?;
        config.check()?;
        Ok(config)
    }

    fn check(&self) -> Result<(), ConfigError> {
        if self.image.trim().is_empty() {
            return Err(ConfigError::new("image", "must name an image"));
        }
        if self.replicas < 1 {
            return Err(ConfigError::new("replicas", "must be at least 1"));
        }
        if !is_dns_subdomain(&self.service_account_name) {
            return Err(ConfigError::new(
                "serviceAccountName",
                "must be a ServiceAccount name (lowercase letters, digits, '-' and '.')",
            ));
        }
        if self.port == 0 {
            return Err(ConfigError::new("port", "must be 1 to 65535"));
        }
        if self.account.len() != 12 || !self.account.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ConfigError::new("account", "must be 12 digits"));
        }
        if !kubekms_engine::sigv4::is_region_name(&self.region) {
            return Err(ConfigError::new(
                "region",
                "must be a region name such as us-east-1",
            ));
        }
        if self.admin_groups.is_empty() {
            // The engine would otherwise fall back on its default group.
            return Err(ConfigError::new(
                "adminGroups",
                "must name at least one group (the account's administrators)",
            ));
        }
        if let Some(i) = self.admin_groups.iter().position(|g| g.trim().is_empty()) {
            return Err(ConfigError::new(
                &format!("adminGroups[{i}]"),
                "must not be empty",
            ));
        }
        if !is_dns_subdomain(&self.operator_service_account) {
            return Err(ConfigError::new(
                "operatorServiceAccount",
                "must be a ServiceAccount name (lowercase letters, digits, '-' and '.')",
            ));
        }
        if let Some(name) = &self.webhook_service_account {
            if !is_dns_subdomain(name) {
                return Err(ConfigError::new(
                    "webhookServiceAccount",
                    "must be a ServiceAccount name (lowercase letters, digits, '-' and '.')",
                ));
            }
        }
        match self.audit.as_str() {
            "-" | "off" => {}
            path if audit_dir(path).is_some() => {}
            _ => {
                return Err(ConfigError::new(
                    "audit",
                    "must be '-' (stdout), 'off', or a file path under /var/log/",
                ))
            }
        }
        if self.log_level.trim().is_empty() {
            return Err(ConfigError::new("logLevel", "must not be empty"));
        }
        for name in super::render::SELECTOR_LABELS {
            if self.pod_labels.contains_key(name) {
                return Err(ConfigError::new(
                    &format!("podLabels.{name}"),
                    "is set by the operator (it selects the engine pods)",
                ));
            }
        }
        Ok(())
    }
}

/// The directory an audit log file path is in (mounted as a volume: the root filesystem is
/// read-only), if the path is under `/var/log/`: a volume mounted anywhere else could hide the
/// image's own files (`/usr/local/bin`, `/etc`).
pub fn audit_dir(path: &str) -> Option<&str> {
    if !path.starts_with("/var/log/") || path.ends_with('/') || path.contains("/../") {
        return None;
    }
    let (dir, file) = path.rsplit_once('/')?;
    (!dir.is_empty() && !file.is_empty() && file != "..").then_some(dir)
}

/// `missing field `x`` or `unknown field `x`, expected …` → `x`.
fn named_member(message: &str) -> Option<&str> {
    let rest = message
        .strip_prefix("missing field `")
        .or_else(|| message.strip_prefix("unknown field `"))?;
    rest.split('`').next()
}

/// RFC 1123 subdomain, as Kubernetes object names.
pub fn is_dns_subdomain(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|part| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !part.starts_with('-')
                && !part.ends_with('-')
        })
}
