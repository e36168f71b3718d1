//! The engine's TLS certificate renewed in its Secret (as cert-manager renews it, or an
//! operator of the cluster by hand): every engine pod serves the new certificate, with no pod
//! restarted.

use std::path::Path;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use kubekms_e2e::node::{self, RunningPod, ENGINE_HOST, NAMESPACE};
use kubekms_e2e::{wait_for, Cluster};
use kubekms_proto::tls::testing::self_signed;

/// The chart's name for the engine's TLS Secret.
const ENGINE_TLS_SECRET: &str = "kubekms-engine-tls";
/// The kubelet refreshes a Secret volume on its periodic pod sync (about a minute here); the
/// engine looks at its files every 10 s.
const RENEWED: Duration = Duration::from_secs(180);

/// After this phase the engine serves a certificate only a client given it trusts: the
/// operator and the webhook trust the chart's CA until the release is installed again.
pub async fn engine_certificate_renewed_in_place(cluster: &Cluster) -> Result<()> {
    let pods = node::running_pods(cluster, "engine").await?;
    ensure!(!pods.is_empty(), "no engine pod running");
    let mut before = Vec::new();
    for pod in &pods {
        before.push(identity(cluster, pod).await?);
    }

    let dir = tempfile::tempdir()?;
    let (cert_pem, key_pem) = renewed_pair(dir.path())?;
    let renewed = dir.path().join("renewed.crt");
    std::fs::write(&renewed, &cert_pem)?;
    let renewed_path = renewed.to_string_lossy().into_owned();
    // The check below can fail: the certificate served now is not the renewed one.
    ensure!(
        !verifies_with(cluster, &pods[0], &renewed_path).await,
        "engine pod {} already verifies against a certificate made just now",
        pods[0].name
    );
    // A merge patch of the data: Helm's labels and annotations stay, so `helm uninstall`
    // still removes the Secret.
    let patch = serde_json::json!({ "data": {
        "tls.crt": B64.encode(&cert_pem),
        "tls.key": B64.encode(&key_pem),
        "ca.crt": B64.encode(&cert_pem),
    }});
    cluster
        .kubectl(
            &[
                "-n",
                NAMESPACE,
                "patch",
                "secret",
                ENGINE_TLS_SECRET,
                "--type",
                "merge",
                "-p",
                &patch.to_string(),
            ],
            None,
        )
        .await
        .context("replacing the engine's certificate")?;

    let renewed_at = std::time::Instant::now();
    for pod in &pods {
        wait_for(
            &format!("engine pod {} serving the renewed certificate", pod.name),
            RENEWED,
            || async {
                Ok(verifies_with(cluster, pod, &renewed_path)
                    .await
                    .then_some(()))
            },
        )
        .await?;
        eprintln!(
            "engine pod {} serves the renewed certificate {:.1} s after the Secret changed",
            pod.name,
            renewed_at.elapsed().as_secs_f64()
        );
    }
    for (pod, then) in pods.iter().zip(before) {
        let now = identity(cluster, pod).await?;
        ensure!(
            now == then,
            "engine pod {} was restarted or replaced (uid, restarts: {then:?} -> {now:?})",
            pod.name
        );
    }
    Ok(())
}

/// The pod's UID and its container's restart count.
async fn identity(cluster: &Cluster, pod: &RunningPod) -> Result<String> {
    node::jsonpath(
        cluster,
        NAMESPACE,
        &["pod", &pod.name],
        "{.metadata.uid} {.status.containerStatuses[0].restartCount}",
    )
    .await
}

/// Whether the engine pod's certificate, asked for by the Service's name, verifies against
/// `ca` alone (checked with openssl from inside the cluster's network namespace).
async fn verifies_with(cluster: &Cluster, pod: &RunningPod, ca: &str) -> bool {
    let connect = format!("{}:4599", pod.ip);
    let script = format!(
        "openssl s_client -connect {connect} -servername {ENGINE_HOST} -verify_hostname \
         {ENGINE_HOST} -CAfile {ca} -verify_return_error </dev/null"
    );
    match cluster
        .node_script_async(&["exec", "sh", "-c", &script])
        .await
    {
        Ok(out) => out.contains("Verify return code: 0 (ok)"),
        Err(_) => false,
    }
}

/// A self-signed certificate (not a CA) for the engine Service's names and 127.0.0.1, as the
/// chart's names it, and its key.
fn renewed_pair(dir: &Path) -> Result<(Vec<u8>, Vec<u8>)> {
    let names = [
        "DNS:kubekms-engine".to_owned(),
        format!("DNS:kubekms-engine.{NAMESPACE}"),
        format!("DNS:{ENGINE_HOST}"),
        format!("DNS:{ENGINE_HOST}.cluster.local"),
        "IP:127.0.0.1".to_owned(),
    ];
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let (cert, key) = self_signed(dir, "renewed-engine", Some(&names));
    Ok((std::fs::read(cert)?, std::fs::read(key)?))
}
