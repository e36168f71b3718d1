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

/// Waits until Deployment `name` exists and all its wanted replicas run the current template
/// and are Ready.
pub async fn wait_rolled_out(cluster: &Cluster, name: &str, timeout: Duration) -> Result<()> {
    wait_for(
        &format!("Deployment {name} rolled out"),
        timeout,
        || async {
            let out = cluster
            .kubectl(
                &[
                    "-n",
                    NAMESPACE,
                    "get",
                    "deployment",
                    name,
                    "-o",
                    "jsonpath={.spec.replicas} {.status.updatedReplicas} {.status.readyReplicas} \
                     {.status.replicas} {.metadata.generation} {.status.observedGeneration}",
                ],
                None,
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

/// The names of the Running pods of a component (`engine` or `operator`).
pub async fn pods_of(cluster: &Cluster, component: &str) -> Result<Vec<String>> {
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
                "jsonpath={range .items[*]}{.metadata.name}{\"\\n\"}{end}",
            ],
            None,
        )
        .await?;
    Ok(out.lines().map(str::to_owned).collect())
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
    let ip = cluster
        .kubectl(
            &[
                "-n",
                NAMESPACE,
                "get",
                "service",
                ENGINE,
                "-o",
                "jsonpath={.spec.clusterIP}",
            ],
            None,
        )
        .await?;
    if ip.trim().is_empty() {
        bail!("Service {ENGINE} has no cluster IP");
    }
    Ok(ip.trim().to_owned())
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
