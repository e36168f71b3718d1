//! Workload injection on the node, through the real API server: an opted-in Deployment's pods
//! get their identity and data key from the webhook and the agent, as `make run` shows users.
//! The app in them is the stock AWS SDK for Python with no AWS settings of its own
//! (`e2e/clients/injected_app.py`, the host's venv through read-only hostPath volumes); it
//! prints digests of its key, never the key.

use anyhow::{bail, ensure, Context, Result};
use aws_lc_rs::digest;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use kubekms_e2e::app::{self, AppIdentity};
use kubekms_e2e::node::{self, NAMESPACE};
use kubekms_e2e::{wait_for, Cluster};
use serde_json::{json, Value};

use super::READY;

const WEBHOOK: &str = "kubekms-webhook";
const RECORD: &str = "app.db";

pub async fn workload_injection(cluster: &Cluster, endpoint: &str) -> Result<()> {
    node::wait_rolled_out(cluster, WEBHOOK, READY).await?;
    untouched_and_refused(cluster).await?;

    // Two replicas share one data key, equal to Decrypt of the record's ciphertext as the
    // ServiceAccount.
    cluster
        .kubectl(&["apply", "-f", "-"], Some(&deployment(1).to_string()))
        .await?;
    let first = app_reports(cluster, 2, |r| {
        r["keyring"].as_object().is_some_and(|k| k.len() == 1)
    })
    .await?;
    for report in &first {
        ensure!(
            report["identity"]
                .as_str()
                .is_some_and(|arn| arn.contains("system:serviceaccount:default:app")),
            "the injected SDK is not the pod's ServiceAccount: {report}"
        );
        ensure!(
            report["encrypt"].is_null(),
            "Encrypt from the pod: {report}"
        );
        ensure!(report["keyLength"] == 32, "AES_256 by default: {report}");
        ensure!(
            report["env"]
                .as_array()
                .is_some_and(|env| env.iter().any(|e| e == "AWS_CA_BUNDLE")),
            "the injected SDK is not given the engine's CA: {report}"
        );
    }
    ensure!(
        first[0]["keySha256"] == first[1]["keySha256"],
        "two replicas, two keys: {first:?}"
    );
    let record = data_key_record(cluster).await?;
    let ciphertext = record["spec"]["generations"][0]["ciphertext"]
        .as_str()
        .context("the record's ciphertext")?
        .to_owned();
    let key_1 = decrypt_as(cluster, endpoint, "app", &ciphertext).await?;
    let key_1 = key_1.context("the ServiceAccount decrypts its own data key")?;
    ensure!(
        sha256_hex(&key_1) == first[0]["keySha256"].as_str().unwrap_or_default(),
        "the pod's key is not Decrypt of the record's ciphertext"
    );
    ensure!(
        decrypt_as(cluster, endpoint, "default", &ciphertext)
            .await?
            .is_none(),
        "another ServiceAccount decrypted the data key"
    );

    // A pod restarted (replaced) gets the same key.
    let pods = app_pods(cluster).await?;
    cluster
        .kubectl(
            &["-n", "default", "delete", "pod", &pods[0], "--wait=false"],
            None,
        )
        .await?;
    let replaced = wait_for("the replaced pod's report", READY, || async {
        let reports = app_reports_now(cluster).await?;
        Ok(reports
            .into_iter()
            .find(|(name, _)| !pods.contains(name))
            .map(|(_, r)| r))
    })
    .await?;
    ensure!(
        replaced["keySha256"] == first[0]["keySha256"],
        "a restarted pod got another key: {replaced}"
    );

    key_rotation_re_encrypts(cluster, endpoint, &record, &key_1).await?;

    // A sidecar pod, running at generation 1 through the data-key rotation below.
    let sidecar_pod = sidecar_serves(cluster, &ciphertext, &key_1).await?;

    // A data-key rotation: the new pods hold both generations, the newer one current.
    cluster
        .kubectl(&["apply", "-f", "-"], Some(&deployment(2).to_string()))
        .await?;
    let second = app_reports(cluster, 2, |r| {
        r["keyring"].as_object().is_some_and(|k| k.len() == 2)
    })
    .await?;
    let ring = second[0]["keyring"].as_object().context("keyring")?;
    ensure!(
        ring.get("db-1").and_then(Value::as_str) == Some(sha256_hex(&key_1).as_str()),
        "generation 1 kept in the keyring: {}",
        second[0]
    );
    ensure!(
        second[0]["current"] == "db-2" && second[0]["keySha256"] != first[0]["keySha256"],
        "generation 2 is current: {}",
        second[0]
    );
    let record = data_key_record(cluster).await?;
    let ciphertext_2 = record["spec"]["generations"][1]["ciphertext"]
        .as_str()
        .context("generation 2's ciphertext")?
        .to_owned();
    let key_2 = decrypt_as(cluster, endpoint, "app", &ciphertext_2)
        .await?
        .context("generation 2 decrypts")?;
    sidecar_refreshes(cluster, &sidecar_pod, &key_1, &key_2).await?;

    job_completes(cluster).await?;
    webhook_down_refuses_opted_in_pods_only(cluster).await?;
    no_plaintext_anywhere(cluster, &[key_1, key_2]).await?;
    cluster
        .kubectl(
            &[
                "-n",
                "default",
                "delete",
                "deployment",
                "injected",
                "sidecar",
            ],
            None,
        )
        .await?;
    Ok(())
}

/// A Deployment in sidecar mode: its app asks the agent on localhost for the keyring and to
/// decrypt `ciphertext` (the record's generation 1, as the app might keep it with its data).
/// The pod's name once its app reports both.
async fn sidecar_serves(cluster: &Cluster, ciphertext: &str, key_1: &[u8]) -> Result<String> {
    let mut template = app_pod_template(1, true);
    template["metadata"]["labels"]["app"] = json!("sidecar");
    template["metadata"]["annotations"]["kubekms.io/inject-mode"] = json!("sidecar");
    let app = &mut template["spec"]["containers"][0];
    app["command"] = json!([app::python(), "/e2e/clients/sidecar_app.py"]);
    if let Some(env) = app["env"].as_array_mut() {
        env.push(json!({ "name": "APP_CIPHERTEXT", "value": ciphertext }));
    }
    let deployment = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": { "name": "sidecar", "namespace": "default" },
        "spec": {
            "replicas": 1,
            "selector": { "matchLabels": { "app": "sidecar" } },
            "template": template,
        },
    });
    cluster
        .kubectl(&["apply", "-f", "-"], Some(&deployment.to_string()))
        .await?;
    let digest = sha256_hex(key_1);
    let (pod, report) = wait_for("the sidecar's app reporting", READY, || async {
        let reports = reports_now(cluster, "sidecar").await?;
        Ok(reports
            .into_iter()
            .find(|(_, r)| r["keyringStatus"] == 200 && r["decryptStatus"] == 200))
    })
    .await
    .with_context(|| {
        let run = |args: &[&str]| cluster.kubectl_sync(args, None).unwrap_or_default();
        format!(
            "{}\n=== logs ===\n{}",
            run(&["-n", "default", "describe", "pods", "-l", "app=sidecar"]),
            run(&[
                "-n",
                "default",
                "logs",
                "-l",
                "app=sidecar",
                "--all-containers",
                "--tail=20"
            ]),
        )
    })?;
    ensure!(
        report["keyring"]["db-1"] == digest.as_str() && report["current"] == "db-1",
        "the sidecar's keyring is not generation 1: {report}"
    );
    ensure!(
        report["decryptSha256"] == digest.as_str(),
        "the sidecar decrypted the kept ciphertext to another key: {report}"
    );
    Ok(pod)
}

/// After the data-key rotation, the same sidecar pod (not restarted) holds generation 2 too,
/// as current: the operator mirrored the record, the kubelet updated the pod's view of it, the
/// agent decrypted the new generation.
async fn sidecar_refreshes(cluster: &Cluster, pod: &str, key_1: &[u8], key_2: &[u8]) -> Result<()> {
    let started = std::time::Instant::now();
    let report = wait_for("the sidecar to take in generation 2", READY, || async {
        let reports = reports_now(cluster, "sidecar").await?;
        Ok(reports
            .into_iter()
            .find(|(name, r)| name == pod && r["current"] == "db-2")
            .map(|(_, r)| r))
    })
    .await
    .with_context(|| {
        cluster
            .kubectl_sync(&["-n", "default", "logs", pod, "-c", "kubekms-agent"], None)
            .unwrap_or_default()
    })?;
    ensure!(
        report["keyring"]["db-1"] == sha256_hex(key_1).as_str()
            && report["keyring"]["db-2"] == sha256_hex(key_2).as_str(),
        "the refreshed keyring is not generations 1 and 2: {report}"
    );
    println!(
        "sidecar {pod}: generation 2 taken in {:.1} s after the rotated pods reported",
        started.elapsed().as_secs_f64()
    );
    let restarts = node::jsonpath(
        cluster,
        "default",
        &["pod", pod],
        "{.status.containerStatuses[*].restartCount}",
    )
    .await?;
    ensure!(
        restarts.split_whitespace().all(|n| n == "0"),
        "the sidecar pod's containers restarted: {restarts}"
    );
    Ok(())
}

/// Pods that do not opt in pass as they are; bad annotations and invalid Keys are refused with
/// what to fix.
async fn untouched_and_refused(cluster: &Cluster) -> Result<()> {
    let plain = pause_pod("plain", json!({}), json!({}));
    cluster
        .kubectl(&["apply", "-f", "-"], Some(&plain.to_string()))
        .await?;
    let spec = cluster
        .kubectl(
            &["-n", "default", "get", "pod", "plain", "-o", "json"],
            None,
        )
        .await?;
    let pod: Value = serde_json::from_str(&spec)?;
    let touched = pod["metadata"]["annotations"]
        .get("kubekms.io/injected")
        .is_some()
        || spec.contains("AWS_")
        || spec.contains("kubekms-token")
        || spec.contains("kubekms-agent");
    ensure!(!touched, "a pod that did not opt in was changed: {spec}");
    cluster
        .kubectl(
            &["-n", "default", "delete", "pod", "plain", "--wait=false"],
            None,
        )
        .await?;

    let bad = pause_pod(
        "bad-annotations",
        json!({ "kubekms.io/inject": "true" }),
        json!({ "kubekms.io/data-key.Bad_Name": "orders", "kubekms.io/inject-mode": "daemon" }),
    );
    let refused = refusal(cluster, &bad).await?;
    for expected in [
        "kubekms.io/data-key.Bad_Name: a data key's name must be a DNS label",
        "kubekms.io/inject-mode must be \"init\" or \"sidecar\", not \"daemon\"",
    ] {
        ensure!(
            refused.contains(expected),
            "refusal {refused:?} lacks {expected:?}"
        );
    }
    let no_key = pause_pod(
        "no-such-key",
        json!({ "kubekms.io/inject": "true" }),
        json!({ "kubekms.io/data-key.db": "missing" }),
    );
    let refused = refusal(cluster, &no_key).await?;
    ensure!(
        refused.contains("kubectl get kmskey missing -n default"),
        "refusal of a data key under a missing Key: {refused}"
    );

    let invalid_key = json!({
        "apiVersion": "kubekms.io/v1alpha1", "kind": "Key",
        "metadata": { "name": "rotating-rsa", "namespace": "default" },
        "spec": { "keySpec": "RSA_2048", "keyUsage": "SIGN_VERIFY",
                  "rotation": { "enabled": true, "periodDays": 365 } },
    });
    let refused = refusal(cluster, &invalid_key).await?;
    ensure!(
        refused.contains("automatic rotation is only for SYMMETRIC_DEFAULT"),
        "an invalid Key: {refused}"
    );
    let changed = cluster
        .kubectl(
            &[
                "-n",
                "default",
                "patch",
                "kmskey",
                "orders",
                "--type=merge",
                "-p",
                r#"{"spec":{"keySpec":"RSA_2048"}}"#,
            ],
            None,
        )
        .await;
    match changed {
        Ok(out) => bail!("keySpec of a Key changed: {out}"),
        Err(e) => ensure!(
            format!("{e:#}").contains("spec.keySpec: cannot change from SYMMETRIC_DEFAULT"),
            "changing keySpec: {e:#}"
        ),
    }
    Ok(())
}

/// A Key rotation: the operator re-encrypts the record's ciphertext to the new version, which
/// still yields the same key bytes.
async fn key_rotation_re_encrypts(
    cluster: &Cluster,
    endpoint: &str,
    record: &Value,
    key_1: &[u8],
) -> Result<()> {
    let before = &record["spec"]["generations"][0];
    let version = before["keyVersion"].as_i64().unwrap_or_default();
    let admin = node::administrator(
        cluster,
        "injection-admin",
        "AKIAINJECTIONADMIN01",
        "injection-admin-secret-key-0000000000000",
        endpoint,
        READY,
    )
    .await?;
    admin
        .rotate_key_on_demand()
        // RotateKeyOnDemand takes a key id or ARN, not an alias (as in AWS).
        .key_id(before["keyArn"].as_str().unwrap_or_default())
        .send()
        .await
        .context("RotateKeyOnDemand")?;
    let after = wait_for(
        "the data key re-encrypted after the rotation",
        READY,
        || async {
            let record = data_key_record(cluster).await?;
            let g = record["spec"]["generations"][0].clone();
            Ok((g["keyVersion"].as_i64().unwrap_or_default() > version).then_some(g))
        },
    )
    .await?;
    let ciphertext = after["ciphertext"].as_str().context("ciphertext")?;
    ensure!(
        ciphertext != before["ciphertext"].as_str().unwrap_or_default(),
        "re-encrypted but the ciphertext did not change"
    );
    let key = decrypt_as(cluster, endpoint, "app", ciphertext)
        .await?
        .context("the re-encrypted data key decrypts")?;
    ensure!(key == key_1, "re-encryption changed the data key's bytes");
    Ok(())
}

/// A Job's injected pod runs to completion, sidecar mode asked for or not: the agent is an
/// init container only.
async fn job_completes(cluster: &Cluster) -> Result<()> {
    let mut pod = app_pod_template(1, false);
    pod["spec"]["restartPolicy"] = json!("Never");
    pod["metadata"]["annotations"]["kubekms.io/inject-mode"] = json!("sidecar");
    pod["metadata"]["labels"]["app"] = json!("injected-job");
    let job = json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": { "name": "injected-job", "namespace": "default" },
        "spec": { "backoffLimit": 0, "template": pod },
    });
    cluster
        .kubectl(&["apply", "-f", "-"], Some(&job.to_string()))
        .await?;
    wait_for("the injected Job to complete", READY, || async {
        let done = node::jsonpath(
            cluster,
            "default",
            &["job", "injected-job"],
            "{.status.succeeded}",
        )
        .await?;
        let failed = node::jsonpath(
            cluster,
            "default",
            &["job", "injected-job"],
            "{.status.failed}",
        )
        .await?;
        if failed == "1" {
            bail!("the injected Job failed");
        }
        Ok((done == "1").then_some(()))
    })
    .await
}

/// With the webhook down and failure policy Fail, opted-in pods are refused and others start.
async fn webhook_down_refuses_opted_in_pods_only(cluster: &Cluster) -> Result<()> {
    let scale = |n: &'static str| async move {
        cluster
            .kubectl(
                &[
                    "-n",
                    NAMESPACE,
                    "scale",
                    "deployment",
                    WEBHOOK,
                    "--replicas",
                    n,
                ],
                None,
            )
            .await
    };
    scale("0").await?;
    // Gone, not only terminating (a terminating pod may still answer).
    wait_for("no webhook pod", READY, || async {
        let left = cluster
            .kubectl(
                &[
                    "-n",
                    NAMESPACE,
                    "get",
                    "pods",
                    "-l",
                    "app.kubernetes.io/component=webhook",
                    "-o",
                    "name",
                ],
                None,
            )
            .await?;
        Ok(left.trim().is_empty().then_some(()))
    })
    .await?;
    let opted_in = pause_pod(
        "opted-in",
        json!({ "kubekms.io/inject": "true" }),
        json!({}),
    );
    let refused = refusal(cluster, &opted_in).await;
    let plain = pause_pod("plain-2", json!({}), json!({}));
    let plain_created = cluster
        .kubectl(&["apply", "-f", "-"], Some(&plain.to_string()))
        .await;
    scale("2").await?;
    node::wait_rolled_out(cluster, WEBHOOK, READY).await?;
    let refused = refused?;
    ensure!(
        refused.contains("failed calling webhook") || refused.contains("pods.kubekms.io"),
        "an opted-in pod with the webhook down: {refused}"
    );
    plain_created.context("a pod that did not opt in, with the webhook down")?;
    cluster
        .kubectl(
            &["-n", "default", "delete", "pod", "plain-2", "--wait=false"],
            None,
        )
        .await?;
    Ok(())
}

/// No data key, in any encoding, in a Pod spec, a Secret, etcd's files or any log.
async fn no_plaintext_anywhere(cluster: &Cluster, keys: &[Vec<u8>]) -> Result<()> {
    let needles: Vec<(String, Vec<u8>)> = keys
        .iter()
        .enumerate()
        .flat_map(|(i, k)| {
            [
                (format!("key {i} raw"), k.clone()),
                (format!("key {i} base64"), B64.encode(k).into_bytes()),
                (format!("key {i} hex"), hex(k).into_bytes()),
            ]
        })
        .collect();
    // One pass per file, comparing only where a needle's first byte is (etcd's WAL files are
    // 64 MB each).
    let mut by_first: Vec<Vec<usize>> = vec![Vec::new(); 256];
    for (i, (_, needle)) in needles.iter().enumerate() {
        by_first[usize::from(needle[0])].push(i);
    }
    let mut found = Vec::new();
    let mut search = |what: &str, haystack: &[u8]| {
        for (at, byte) in haystack.iter().enumerate() {
            for &i in &by_first[usize::from(*byte)] {
                let (name, needle) = &needles[i];
                if haystack[at..].starts_with(needle) {
                    found.push(format!("{name} in {what}"));
                }
            }
        }
    };
    let pods = cluster
        .kubectl(&["get", "pods", "-A", "-o", "json"], None)
        .await?;
    search("the Pod specs", pods.as_bytes());
    let secrets: Value = serde_json::from_str(
        &cluster
            .kubectl(&["get", "secrets", "-A", "-o", "json"], None)
            .await?,
    )?;
    for secret in secrets["items"].as_array().into_iter().flatten() {
        for value in secret["data"]
            .as_object()
            .into_iter()
            .flat_map(|d| d.values())
        {
            let bytes = B64
                .decode(value.as_str().unwrap_or_default())
                .unwrap_or_default();
            search("a Secret", &bytes);
        }
    }
    let mut files = 0;
    for dir in [
        cluster.dir().join("etcd"),
        cluster.dir().join("logs"),
        std::path::PathBuf::from("/var/log/pods"),
    ] {
        for file in walk(&dir) {
            if let Ok(bytes) = std::fs::read(&file) {
                files += 1;
                search(&file.display().to_string(), &bytes);
            }
        }
    }
    ensure!(
        files > 10,
        "searched only {files} files of etcd and the logs"
    );
    ensure!(found.is_empty(), "plaintext data keys found: {found:?}");
    Ok(())
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            match entry.file_type() {
                Ok(t) if t.is_dir() => stack.push(path),
                Ok(t) if t.is_file() => out.push(path),
                _ => {}
            }
        }
    }
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex(digest::digest(&digest::SHA256, bytes).as_ref())
}

/// Decrypt `ciphertext` (a data key of `app.db`) from the host as ServiceAccount
/// `default/<service_account>`: the key bytes, or `None` when refused with AccessDenied.
async fn decrypt_as(
    cluster: &Cluster,
    endpoint: &str,
    service_account: &str,
    ciphertext: &str,
) -> Result<Option<Vec<u8>>> {
    let dir = tempfile::tempdir()?;
    let token = app::token_file(cluster, dir.path(), "default", service_account, "kubekms").await?;
    let answer = app::run_as(
        &AppIdentity::WebIdentity { token_file: token },
        endpoint,
        &json!([{ "op": "decrypt", "keep": "key", "field": "Plaintext", "args": {
            "CiphertextBlob": format!("b64:{ciphertext}"),
            "EncryptionContext": {
                "kubekms:namespace": "default",
                "kubekms:service-account": "app",
                "kubekms:data-key": "db",
            } } }]),
    )
    .await?;
    match answer.results.first() {
        Some(None) => Ok(Some(
            B64.decode(answer.kept.get("key").context("no Plaintext kept")?)?,
        )),
        Some(Some(code)) if code == "AccessDeniedException" => Ok(None),
        other => bail!("Decrypt as {service_account}: {other:?}"),
    }
}

async fn data_key_record(cluster: &Cluster) -> Result<Value> {
    let text = cluster
        .kubectl(
            &["-n", "default", "get", "kmsdatakey", RECORD, "-o", "json"],
            None,
        )
        .await?;
    Ok(serde_json::from_str(&text)?)
}

/// The API server's refusal of `object` (an error if it was accepted).
async fn refusal(cluster: &Cluster, object: &Value) -> Result<String> {
    match cluster
        .kubectl(&["apply", "-f", "-"], Some(&object.to_string()))
        .await
    {
        Ok(out) => bail!("accepted: {out}"),
        Err(e) => Ok(format!("{e:#}")),
    }
}

/// A pause pod with `labels` and `annotations`, running as root (the agent runs as the app's
/// user, which must be set when data keys are named).
fn pause_pod(name: &str, labels: Value, annotations: Value) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": { "name": name, "namespace": "default", "labels": labels,
                      "annotations": annotations },
        "spec": {
            "serviceAccountName": "app",
            "containers": [{ "name": "pause", "image": "localhost/kubekms-pause:3.4",
                             "imagePullPolicy": "Never",
                             "securityContext": { "runAsUser": 0 } }],
        },
    })
}

/// The opted-in app's pod template: data key `db` under Key `orders`, at `generation`.
fn app_pod_template(generation: u32, stay: bool) -> Value {
    let venv = app::python();
    let (mounts, volumes) = app::host_python_volumes();
    json!({
        "metadata": {
            "labels": { "app": "injected", "kubekms.io/inject": "true" },
            "annotations": {
                "kubekms.io/data-key.db": format!("orders; generation={generation}"),
            },
        },
        "spec": {
            "serviceAccountName": "app",
            "containers": [{
                "name": "app",
                "image": "localhost/kubekms-pause:3.4",
                "imagePullPolicy": "Never",
                "command": [venv, "/e2e/clients/injected_app.py"],
                "securityContext": { "runAsUser": 0 },
                // Nothing about identity, endpoints or region: the webhook brings those.
                // These keep the host's own AWS files (under the mounted /root) out.
                "env": [
                    { "name": "APP_KEY", "value": "alias/default/orders" },
                    { "name": "APP_STAY", "value": if stay { "1" } else { "0" } },
                    { "name": "AWS_CONFIG_FILE", "value": "/dev/null" },
                    { "name": "AWS_SHARED_CREDENTIALS_FILE", "value": "/dev/null" },
                    { "name": "AWS_EC2_METADATA_DISABLED", "value": "true" },
                ],
                "volumeMounts": mounts,
            }],
            "volumes": volumes,
        },
    })
}

fn deployment(generation: u32) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": { "name": "injected", "namespace": "default" },
        "spec": {
            "replicas": 2,
            "selector": { "matchLabels": { "app": "injected" } },
            "template": app_pod_template(generation, true),
        },
    })
}

/// The running app pods' names.
async fn app_pods(cluster: &Cluster) -> Result<Vec<String>> {
    pods_of(cluster, "injected").await
}

/// The running pods labelled `app=<app>`.
async fn pods_of(cluster: &Cluster, app: &str) -> Result<Vec<String>> {
    let selector = format!("app={app}");
    let names = cluster
        .kubectl(
            &[
                "-n",
                "default",
                "get",
                "pods",
                "-l",
                &selector,
                "--field-selector=status.phase=Running",
                "-o",
                "jsonpath={.items[*].metadata.name}",
            ],
            None,
        )
        .await?;
    Ok(names.split_whitespace().map(str::to_owned).collect())
}

/// Each running app pod's report, by pod name (pods that have printed nothing yet left out).
async fn app_reports_now(cluster: &Cluster) -> Result<Vec<(String, Value)>> {
    reports_now(cluster, "injected").await
}

/// The last report of each running pod labelled `app=<app>`.
async fn reports_now(cluster: &Cluster, app: &str) -> Result<Vec<(String, Value)>> {
    let mut out = Vec::new();
    for pod in pods_of(cluster, app).await? {
        let log = cluster
            .kubectl(&["-n", "default", "logs", &pod, "-c", "app"], None)
            .await
            .unwrap_or_default();
        if let Some(line) = log.lines().rev().find(|l| l.starts_with('{')) {
            out.push((pod, serde_json::from_str(line)?));
        }
    }
    Ok(out)
}

/// The reports of `n` running app pods that all pass `done` (a rollout finished).
async fn app_reports(cluster: &Cluster, n: usize, done: fn(&Value) -> bool) -> Result<Vec<Value>> {
    let waited = wait_for(&format!("{n} injected pods reporting"), READY, || async {
        let reports = app_reports_now(cluster).await?;
        let ready: Vec<Value> = reports.into_iter().map(|(_, r)| r).filter(done).collect();
        Ok((ready.len() == n).then_some(ready))
    })
    .await;
    waited.with_context(|| {
        let run = |args: &[&str]| cluster.kubectl_sync(args, None).unwrap_or_default();
        format!(
            "the injected pods: {}\n=== their app containers' logs ===\n{}",
            run(&["-n", "default", "describe", "pods", "-l", "app=injected"]),
            run(&[
                "-n",
                "default",
                "logs",
                "-l",
                "app=injected",
                "-c",
                "app",
                "--tail=30"
            ]),
        )
    })
}
