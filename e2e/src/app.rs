//! Clients that behave like an application in a pod: the stock AWS SDK for Python (boto3),
//! configured only through the environment a pod would have (`e2e/clients/kms_calls.py`).

use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::{bail, Context, Result};
use serde_json::Value;
use tokio::io::AsyncWriteExt;

use crate::cluster::repo_root;
use crate::operator::{ACCOUNT, REGION};

/// How the application authenticates.
pub enum AppIdentity {
    /// A projected ServiceAccount token in a file (AWS_WEB_IDENTITY_TOKEN_FILE).
    WebIdentity { token_file: PathBuf },
    /// An access key (and, for temporary credentials, a session token) in the environment.
    AccessKey {
        id: String,
        secret: String,
        session_token: Option<String>,
    },
}

/// One run's answer: the identity STS reports, and one result per call (`None`: success).
#[derive(Debug)]
pub struct AppAnswer {
    pub identity: Option<String>,
    pub identity_error: Option<String>,
    pub results: Vec<Option<String>>,
    /// The session's credentials, when a call asked for them (`__credentials__`).
    pub credentials: Option<Value>,
    /// Answers' fields the calls asked to keep (`"keep": NAME`), as text (bytes in base64).
    pub kept: std::collections::BTreeMap<String, String>,
}

/// The Python of the project's venv (`KUBEKMS_VENV`, default /root/.cache/kubekms-venv).
pub fn python() -> PathBuf {
    let venv = std::env::var_os("KUBEKMS_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/root/.cache/kubekms-venv"));
    venv.join("bin/python")
}

/// What lets a pod run the host's Python (the project's venv, with boto3) and the clients in
/// `e2e/`: read-only hostPath mounts of /usr, /lib, /lib64, /root and the repository's `e2e`
/// at /e2e, as `(volumeMounts, volumes)`.
pub fn host_python_volumes() -> (Vec<Value>, Vec<Value>) {
    let e2e = repo_root().join("e2e");
    let paths = [
        ("usr", "/usr".to_owned(), "/usr"),
        ("lib", "/lib".to_owned(), "/lib"),
        ("lib64", "/lib64".to_owned(), "/lib64"),
        ("root", "/root".to_owned(), "/root"),
        ("e2e", e2e.to_string_lossy().into_owned(), "/e2e"),
    ];
    paths
        .into_iter()
        .map(|(name, host, at)| {
            (
                serde_json::json!({ "name": name, "mountPath": at, "readOnly": true }),
                serde_json::json!({ "name": name, "hostPath": { "path": host } }),
            )
        })
        .unzip()
}

/// The role ARN apps put in AWS_ROLE_ARN: any role of the account; the identity is the token's.
pub fn role_arn() -> String {
    format!("arn:aws:iam::{ACCOUNT}:role/kubekms")
}

/// Runs `calls` (see `kms_calls.py`) against `endpoint` as `identity`.
pub async fn run_as(identity: &AppIdentity, endpoint: &str, calls: &Value) -> Result<AppAnswer> {
    let script = repo_root().join("e2e/clients/kms_calls.py");
    let mut command = tokio::process::Command::new(python());
    command
        .arg(&script)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_REGION", REGION)
        .env("AWS_DEFAULT_REGION", REGION)
        .env("AWS_ENDPOINT_URL_KMS", endpoint)
        .env("AWS_ENDPOINT_URL_STS", endpoint)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(ca) = crate::node::engine_ca() {
        command.env("AWS_CA_BUNDLE", ca);
    }
    match identity {
        AppIdentity::WebIdentity { token_file } => {
            command
                .env("AWS_ROLE_ARN", role_arn())
                .env("AWS_ROLE_SESSION_NAME", "e2e-app")
                .env("AWS_WEB_IDENTITY_TOKEN_FILE", token_file);
        }
        AppIdentity::AccessKey {
            id,
            secret,
            session_token,
        } => {
            command
                .env("AWS_ACCESS_KEY_ID", id)
                .env("AWS_SECRET_ACCESS_KEY", secret);
            if let Some(token) = session_token {
                command.env("AWS_SESSION_TOKEN", token);
            }
        }
    }
    let mut child = command
        .spawn()
        .with_context(|| format!("running {} {}", python().display(), script.display()))?;
    let mut stdin = child.stdin.take().context("the client's stdin")?;
    stdin.write_all(calls.to_string().as_bytes()).await?;
    drop(stdin);
    let out = child.wait_with_output().await?;
    if !out.status.success() {
        bail!(
            "kms_calls.py failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    parse_answer(&out.stdout)
}

/// What `kms_calls.py` printed, read (a pod's log holds the same line).
pub fn parse_answer(stdout: &[u8]) -> Result<AppAnswer> {
    let v: Value = serde_json::from_slice(stdout)
        .with_context(|| format!("kms_calls.py printed {:?}", String::from_utf8_lossy(stdout)))?;
    let text = |name: &str| v[name].as_str().map(str::to_owned);
    Ok(AppAnswer {
        identity: text("identity"),
        identity_error: text("identityError"),
        results: v["results"]
            .as_array()
            .context("results")?
            .iter()
            .map(|r| r.as_str().map(str::to_owned))
            .collect(),
        credentials: Some(v["credentials"].clone()).filter(|c| !c.is_null()),
        kept: v["kept"]
            .as_object()
            .map(|kept| {
                kept.iter()
                    .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                    .collect()
            })
            .unwrap_or_default(),
    })
}

/// A token for ServiceAccount `namespace/name` with audience `audience`, from the TokenRequest
/// API (`kubectl create token`), written to `dir` as a pod's projected token would be.
pub async fn token_file(
    cluster: &crate::cluster::Cluster,
    dir: &Path,
    namespace: &str,
    name: &str,
    audience: &str,
) -> Result<PathBuf> {
    let token = cluster
        .kubectl(
            &[
                "-n",
                namespace,
                "create",
                "token",
                name,
                "--audience",
                audience,
            ],
            None,
        )
        .await?;
    let path = dir.join(format!("{namespace}.{name}.{audience}.token"));
    std::fs::write(&path, token.trim()).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}
