//! The product as users get it: the container image loaded into a one-node cluster
//! (`e2e/scripts/cluster.sh`), the Helm chart installed with the real Helm engine
//! (`e2e/scripts/helm.py`), the operator and the key engine running as pods.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::app::python;
use crate::cluster::{repo_root, Cluster};
use crate::env::wait_for;

/// The release and namespace the tests install into.
pub const RELEASE: &str = "kubekms";
pub const NAMESPACE: &str = "kubekms-system";
/// Names the chart and the operator give (release `kubekms`).
pub const OPERATOR: &str = "kubekms-operator";
pub const ENGINE: &str = "kubekms-engine";
pub const ROOT_KEY_SECRET: &str = "kubekms-root-key";
/// The engine pods' admin port with the chart's `engine.testClock` (the operator's
/// `engine_deploy::config::ADMIN_PORT`).
pub const ENGINE_ADMIN_PORT: u16 = 4600;
/// The engine Service's name, as its TLS certificate holds it.
pub const ENGINE_HOST: &str = "kubekms-engine.kubekms-system.svc";
/// The chart's ConfigMap with the CA the engine's certificate chains to.
pub const ENGINE_CA_CONFIG_MAP: &str = "kubekms-engine-tls-ca";

/// The engine's CA as a file, once a release serving TLS is installed: the host's clients
/// trust it (AWS_CA_BUNDLE, the Rust SDK's trust store). `None`: plain HTTP.
static ENGINE_CA: std::sync::RwLock<Option<PathBuf>> = std::sync::RwLock::new(None);

pub fn engine_ca() -> Option<PathBuf> {
    ENGINE_CA.read().ok().and_then(|ca| ca.clone())
}

/// Reads the release's engine CA (if it serves TLS) into `cluster`'s directory.
pub async fn load_engine_ca(cluster: &Cluster) -> Result<Option<PathBuf>> {
    let pem = cluster
        .kubectl(
            &[
                "-n",
                NAMESPACE,
                "get",
                "configmap",
                ENGINE_CA_CONFIG_MAP,
                "--ignore-not-found",
                "-o",
                "jsonpath={.data.ca\\.crt}",
            ],
            None,
        )
        .await?;
    let ca = if pem.contains("BEGIN CERTIFICATE") {
        let path = cluster.dir().join("engine-ca.crt");
        std::fs::write(&path, pem).context("writing the engine's CA")?;
        Some(path)
    } else {
        None
    };
    if let Ok(mut slot) = ENGINE_CA.write() {
        slot.clone_from(&ca);
    }
    Ok(ca)
}

/// The engine Service (at cluster IP `ip`) forwarded to the host: `https://127.0.0.1:PORT`
/// when it serves TLS (the chart's certificate names 127.0.0.1 for this), else `http://`.
pub fn engine_endpoint(cluster: &Cluster, ip: &str) -> Result<String> {
    let url = forward(cluster, "kms", &format!("{ip}:4599"))?;
    Ok(match engine_ca() {
        Some(_) => url.replacen("http://", "https://", 1),
        None => url,
    })
}

/// The image archive `make image` (e2e/scripts/build-image.sh) writes: `KUBEKMS_IMAGE_TAR`,
/// else `$CARGO_TARGET_DIR/kubekms-image.tar`.
pub fn image_archive() -> Result<PathBuf> {
    let path = match std::env::var_os("KUBEKMS_IMAGE_TAR") {
        Some(p) => PathBuf::from(p),
        None => std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/root/.cache/kubekms-target"))
            .join("kubekms-image.tar"),
    };
    if !path.is_file() {
        bail!(
            "no image archive at {} (build it with `make image`, or set KUBEKMS_IMAGE_TAR)",
            path.display()
        );
    }
    Ok(path)
}

/// A one-node cluster in `/tmp/kubekms-node-e2e-<pid>` with the kubekms image loaded.
pub fn start_node() -> Result<Cluster> {
    let dir = PathBuf::from(format!("/tmp/kubekms-node-e2e-{}", std::process::id()));
    let keep = std::env::var("KUBEKMS_E2E_KEEP").is_ok_and(|v| !v.is_empty());
    let cluster = Cluster::start_node_in(dir, keep)?;
    let image = image_archive()?;
    cluster.node_script(&["load", &image.to_string_lossy()])?;
    Ok(cluster)
}

/// `helm.py SUBCOMMAND ARGS... --kubeconfig <the cluster's>`: stdout, or an error carrying
/// stderr (Helm's own message).
pub async fn helm(cluster: &Cluster, args: &[&str]) -> Result<String> {
    let script = repo_root().join("e2e/scripts/helm.py");
    let out = tokio::process::Command::new(python())
        .arg(&script)
        .args(args)
        .arg("--kubeconfig")
        .arg(cluster.kubeconfig())
        .env_remove("KUBECONFIG")
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .context("running e2e/scripts/helm.py")?;
    if !out.status.success() {
        bail!(
            "helm {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The chart in the repository.
pub fn chart() -> String {
    repo_root()
        .join("charts/kubekms")
        .to_string_lossy()
        .into_owned()
}

/// `kubectl -n NAMESPACE get RESOURCE... -o jsonpath=PATH`, trimmed.
pub async fn jsonpath(
    cluster: &Cluster,
    namespace: &str,
    resource: &[&str],
    path: &str,
) -> Result<String> {
    let output = format!("jsonpath={path}");
    let mut args = vec!["-n", namespace, "get"];
    args.extend_from_slice(resource);
    args.extend(["-o", output.as_str()]);
    Ok(cluster.kubectl(&args, None).await?.trim().to_owned())
}

/// Waits until Deployment `name` exists and all its wanted replicas run the current template
/// and are Ready.
pub async fn wait_rolled_out(cluster: &Cluster, name: &str, timeout: Duration) -> Result<()> {
    wait_for(
        &format!("Deployment {name} rolled out"),
        timeout,
        || async {
            let out = jsonpath(
                cluster,
                NAMESPACE,
                &["deployment", name],
                "{.spec.replicas} {.status.updatedReplicas} {.status.readyReplicas} \
             {.status.replicas} {.metadata.generation} {.status.observedGeneration}",
            )
            .await?;
            let f: Vec<&str> = out.split_whitespace().collect();
            Ok(
                (f.len() == 6 && f[0] == f[1] && f[0] == f[2] && f[0] == f[3] && f[4] == f[5])
                    .then_some(()),
            )
        },
    )
    .await
}

/// A Running pod that is not being deleted.
pub struct RunningPod {
    pub name: String,
    pub ip: String,
}

/// The Running pods of a component (`engine` or `operator`) that are not being deleted.
pub async fn running_pods(cluster: &Cluster, component: &str) -> Result<Vec<RunningPod>> {
    let out = cluster
        .kubectl(
            &[
                "-n",
                NAMESPACE,
                "get",
                "pods",
                "-l",
                &format!("app.kubernetes.io/component={component}"),
                "--field-selector",
                "status.phase=Running",
                "-o",
                "json",
            ],
            None,
        )
        .await?;
    let list: serde_json::Value = serde_json::from_str(&out).context("kubectl get pods -o json")?;
    Ok(list["items"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .filter(|pod| pod["metadata"]["deletionTimestamp"].is_null())
        .filter_map(|pod| {
            Some(RunningPod {
                name: pod["metadata"]["name"].as_str()?.to_owned(),
                ip: pod["status"]["podIP"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            })
        })
        .collect())
}

/// The names of [`running_pods`].
pub async fn pods_of(cluster: &Cluster, component: &str) -> Result<Vec<String>> {
    Ok(running_pods(cluster, component)
        .await?
        .into_iter()
        .map(|p| p.name)
        .collect())
}

/// `kubectl auth can-i VERB RESOURCE --as IDENTITY` in the release namespace.
pub async fn can_i(cluster: &Cluster, identity: &str, verb: &str, resource: &str) -> Result<bool> {
    let out = cluster
        .kubectl_command()
        .args([
            "-n", NAMESPACE, "auth", "can-i", verb, resource, "--as", identity,
        ])
        .output()
        .context("running kubectl auth can-i")?;
    match String::from_utf8_lossy(&out.stdout).trim() {
        "yes" => Ok(true),
        "no" => Ok(false),
        other => bail!(
            "kubectl auth can-i {verb} {resource} --as {identity}: {other:?} {}",
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

/// The engine Service's cluster IP (reachable only inside the cluster's network namespace).
pub async fn engine_service_ip(cluster: &Cluster) -> Result<String> {
    let ip = jsonpath(
        cluster,
        NAMESPACE,
        &["service", ENGINE],
        "{.spec.clusterIP}",
    )
    .await?;
    if ip.is_empty() {
        bail!("Service {ENGINE} has no cluster IP");
    }
    Ok(ip)
}

/// Serves `target` (an address inside the cluster's namespace) on a free port of the host's
/// loopback; the URL to use.
pub fn forward(cluster: &Cluster, name: &str, target: &str) -> Result<String> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .context("picking a free port")?
        .port();
    cluster.node_script(&["forward", name, &port.to_string(), target])?;
    Ok(format!("http://127.0.0.1:{port}"))
}

/// A one-node cluster started off the async runtime (it blocks for seconds).
pub async fn start_node_async() -> Result<Cluster> {
    tokio::task::spawn_blocking(start_node)
        .await
        .context("the cluster's start task")?
}

/// On failure, prints the error and what the cluster saw ([`dump`]).
pub fn explain_failure<T>(cluster: &Cluster, result: &Result<T>) {
    if let Err(e) = result {
        eprintln!("{e:#}\n=== what the cluster saw ===\n{}", dump(cluster));
    }
}

/// What the release's pods said last, for a failing test's output.
pub fn dump(cluster: &Cluster) -> String {
    let run = |args: &[&str]| {
        cluster
            .kubectl_sync(args, None)
            .unwrap_or_else(|e| format!("{e:#}"))
    };
    let mut out = String::new();
    out += &run(&["get", "pods,deploy,svc,kmskey", "-A", "-o", "wide"]);
    for component in ["operator", "engine"] {
        out += &format!("\n--- {component} logs ---\n");
        out += &run(&[
            "-n",
            NAMESPACE,
            "logs",
            "-l",
            &format!("app.kubernetes.io/component={component}"),
            "--tail",
            "40",
            "--prefix",
        ]);
    }
    out += "\n--- events ---\n";
    out += &run(&["-n", NAMESPACE, "get", "events", "--sort-by=.lastTimestamp"]);
    out
}

/// An `aws-sdk-kms` client for `endpoint` with static or session credentials. `retry`:
/// `None` for the SDK's standard retries (what an application gets by default).
pub fn kms_client(
    endpoint: &str,
    access_key_id: &str,
    secret_access_key: &str,
    session_token: Option<String>,
    retry: Option<aws_sdk_kms::config::retry::RetryConfig>,
) -> aws_sdk_kms::Client {
    use aws_sdk_kms::config::timeout::TimeoutConfig;
    use aws_sdk_kms::config::{BehaviorVersion, Credentials, Region};
    let mut config = aws_sdk_kms::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(crate::REGION))
        .endpoint_url(endpoint)
        .credentials_provider(Credentials::new(
            access_key_id,
            secret_access_key,
            session_token,
            None,
            "kubekms-e2e",
        ))
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(5))
                .operation_timeout(Duration::from_secs(30))
                .build(),
        );
    if let Some(retry) = retry {
        config = config.retry_config(retry);
    }
    if let (Some(ca), true) = (engine_ca(), endpoint.starts_with("https://")) {
        config = config.http_client(https_client_trusting(&ca));
    }
    aws_sdk_kms::Client::from_conf(config.build())
}

/// The SDK's HTTPS client trusting only the CA in `ca` (what AWS_CA_BUNDLE does for the other
/// SDKs).
fn https_client_trusting(ca: &std::path::Path) -> aws_sdk_kms::config::SharedHttpClient {
    use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode, TlsContext, TrustStore};
    let pem = std::fs::read(ca).unwrap_or_default();
    let context = TlsContext::builder()
        .with_trust_store(TrustStore::empty().with_pem_certificate(pem))
        .build()
        .unwrap_or_default();
    aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(CryptoMode::AwsLc))
        .tls_context(context)
        .build_https()
}

/// An administrator (group `system:masters`) by an access-key Secret in the release's
/// namespace, in the shape the engine reads (`type: kubekms.io/access-key`): a client for
/// `endpoint` signing with it, returned once the engines accept it.
pub async fn administrator(
    cluster: &Cluster,
    name: &str,
    access_key_id: &str,
    secret_access_key: &str,
    endpoint: &str,
    timeout: Duration,
) -> Result<aws_sdk_kms::Client> {
    let secret = serde_json::json!({
        "apiVersion": "v1", "kind": "Secret", "type": "kubekms.io/access-key",
        "metadata": { "name": name, "namespace": NAMESPACE },
        "stringData": { "accessKeyId": access_key_id, "secretAccessKey": secret_access_key,
            "user": name, "groups": "system:masters" },
    });
    cluster
        .kubectl(&["apply", "-f", "-"], Some(&secret.to_string()))
        .await?;
    let client = kms_client(endpoint, access_key_id, secret_access_key, None, None);
    wait_for(
        &format!("the engines accepting access key {access_key_id}"),
        timeout,
        || async { Ok(client.list_keys().send().await.ok().map(drop)) },
    )
    .await?;
    Ok(client)
}

/// `helm install` of the release with `sets` (`KEY=VALUE` each), waiting for the operator,
/// and then for the engine Deployment the operator creates (Helm waits only for its own).
pub async fn install(cluster: &Cluster, sets: &[&str], timeout: Duration) -> Result<()> {
    let chart = chart();
    let wait = format!("{}s", timeout.as_secs());
    let mut args = vec![
        "install",
        RELEASE,
        chart.as_str(),
        "-n",
        NAMESPACE,
        "--create-namespace",
    ];
    // The host reaches the engine through a forwarded local port: its certificate names
    // 127.0.0.1 too.
    args.extend(["--set", "engine.tls.ipAddresses={127.0.0.1}"]);
    for set in sets {
        args.extend(["--set", set]);
    }
    args.extend(["--wait", "--timeout", wait.as_str()]);
    helm(cluster, &args).await.context("helm install")?;
    load_engine_ca(cluster).await?;
    wait_rolled_out(cluster, OPERATOR, timeout).await?;
    wait_rolled_out(cluster, ENGINE, timeout).await
}

/// The engine pod's count of successful `operation` calls, from its `/metrics` (read from
/// inside the cluster's network namespace).
pub async fn engine_successes(cluster: &Cluster, ip: &str, operation: &str) -> Result<u64> {
    let text = engine_metrics(cluster, ip).await?;
    let series =
        format!("kubekms_requests_total{{operation=\"{operation}\",outcome=\"success\"}} ");
    Ok(text
        .lines()
        .find_map(|l| l.strip_prefix(series.as_str()))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map_or(0, |v| v as u64))
}

/// The `/metrics` of the engine pod at `ip`, read from inside the cluster's network namespace;
/// over TLS, the pod's certificate checked under the Service name it holds.
pub async fn engine_metrics(cluster: &Cluster, ip: &str) -> Result<String> {
    let mut argv = vec!["exec", "curl", "-sS", "--fail", "--max-time", "10"];
    let (ca, resolve, url);
    match engine_ca() {
        Some(path) => {
            ca = path.to_string_lossy().into_owned();
            resolve = format!("{ENGINE_HOST}:4599:{ip}");
            url = format!("https://{ENGINE_HOST}:4599/metrics");
            argv.extend(["--cacert", &ca, "--resolve", &resolve]);
        }
        None => url = format!("http://{ip}:4599/metrics"),
    }
    argv.push(&url);
    cluster.node_script_async(&argv).await
}

/// The engine pod whose `operation` count grows over `window` while a client calls through
/// the Service (client-IP affinity keeps a client with one replica): the one serving it.
pub async fn engine_serving(
    cluster: &Cluster,
    operation: &str,
    window: Duration,
) -> Result<RunningPod> {
    let pods = running_pods(cluster, "engine").await?;
    let mut before = Vec::new();
    for pod in &pods {
        before.push(engine_successes(cluster, &pod.ip, operation).await?);
    }
    tokio::time::sleep(window).await;
    let mut serving = Vec::new();
    for (pod, then) in pods.into_iter().zip(before) {
        if engine_successes(cluster, &pod.ip, operation).await? > then {
            serving.push(pod);
        }
    }
    match serving.len() {
        1 => serving.pop().context("one pod"),
        n => bail!("{n} engine pods answered {operation} calls in {window:?}; expected one"),
    }
}

/// Moves the clock of the engine pod at `ip` forward by `by` (engine.testClock); the pod runs
/// its due work before answering. Called from inside the cluster's network namespace.
pub async fn advance_engine_clock(cluster: &Cluster, ip: &str, by: Duration) -> Result<String> {
    let url = format!("http://{ip}:{ENGINE_ADMIN_PORT}/admin/clock/advance");
    let millis = by.as_millis().to_string();
    let out = cluster
        .node_script_async(&[
            "exec",
            "curl",
            "-sS",
            "--fail-with-body",
            "-X",
            "POST",
            "--data",
            &millis,
            &url,
        ])
        .await?;
    Ok(out)
}
