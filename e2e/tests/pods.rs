//! The product on a node, as a user gets it: `make image`'s image loaded into a one-node
//! cluster, `helm install` of charts/kubekms, the operator running the key engine as pods,
//! `kubectl apply -f examples/`, and the stock AWS SDK for Python calling the engine through
//! its Service, from the host and from a pod. One test: the phases share one cluster and build
//! on each other, and a failure prints the pods' logs.

use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use kubekms_e2e::app::{self, AppIdentity};
use kubekms_e2e::node::{self, ENGINE, NAMESPACE, OPERATOR, RELEASE, ROOT_KEY_SECRET};
use kubekms_e2e::{repo_root, wait_for, Cluster, REGION};
use serde_json::json;

const READY: Duration = Duration::from_secs(180);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_chart_on_a_node() -> Result<()> {
    let cluster = tokio::task::spawn_blocking(node::start_node).await??;
    let result = phases(&cluster).await;
    if let Err(e) = &result {
        eprintln!(
            "{e:#}\n=== what the cluster saw ===\n{}",
            node::dump(&cluster)
        );
    }
    cluster.stop();
    result
}

async fn phases(cluster: &Cluster) -> Result<()> {
    install(cluster).await?;
    least_privilege(cluster).await?;
    schema_refuses_bad_values(cluster).await?;
    let endpoint = examples_ready(cluster).await?;
    let ciphertext = encrypt_from_host_and_pod(cluster, &endpoint).await?;
    upgrade_rolls_out(cluster).await?;
    uninstall_keeps_keys(cluster, &ciphertext).await?;
    Ok(())
}

async fn install(cluster: &Cluster) -> Result<()> {
    node::helm(
        cluster,
        &[
            "install",
            RELEASE,
            &node::chart(),
            "-n",
            NAMESPACE,
            "--create-namespace",
            "--set",
            "operator.importNamespaces={default}",
            "--wait",
            "--timeout",
            "180s",
        ],
    )
    .await
    .context("helm install")?;
    // The operator creates the engine's Deployment; Helm waited only for the operator.
    node::wait_rolled_out(cluster, OPERATOR, READY).await?;
    node::wait_rolled_out(cluster, ENGINE, READY).await?;
    let engines = node::pods_of(cluster, "engine").await?;
    ensure!(
        engines.len() == 2,
        "the chart's default is 2 engine pods; running: {engines:?}"
    );
    Ok(())
}

/// Only the engine may read the root key; the operator reads no Secret of its namespace.
async fn least_privilege(cluster: &Cluster) -> Result<()> {
    let sa = |name: &str| format!("system:serviceaccount:{NAMESPACE}:{name}");
    let root_key = format!("secret/{ROOT_KEY_SECRET}");
    ensure!(
        node::can_i(cluster, &sa(ENGINE), "get", &root_key).await?,
        "the engine's ServiceAccount cannot read the root key"
    );
    for verb in ["get", "list", "watch"] {
        ensure!(
            !node::can_i(cluster, &sa(OPERATOR), verb, &root_key).await?,
            "the operator's ServiceAccount can {verb} the root key Secret"
        );
    }
    ensure!(
        !node::can_i(cluster, &sa(OPERATOR), "list", "secrets").await?,
        "the operator's ServiceAccount can list Secrets in {NAMESPACE}"
    );
    ensure!(
        !node::can_i(cluster, &sa("default"), "get", &root_key).await?,
        "the namespace's default ServiceAccount can read the root key"
    );
    Ok(())
}

async fn schema_refuses_bad_values(cluster: &Cluster) -> Result<()> {
    for (set, says) in [
        ("engine.replicas=0", "minimum"),
        ("region=Mars-1", "does not match pattern"),
        ("engnie.replicas=3", "additional properties"),
    ] {
        let out = node::helm(
            cluster,
            &[
                "upgrade",
                RELEASE,
                &node::chart(),
                "-n",
                NAMESPACE,
                "--reuse-values",
                "--set",
                set,
            ],
        )
        .await;
        match out {
            Ok(_) => bail!("helm upgrade --set {set} was accepted"),
            Err(e) if format!("{e:#}").contains(says) => {}
            Err(e) => bail!("helm upgrade --set {set} failed without saying {says:?}: {e:#}"),
        }
    }
    Ok(())
}

/// `kubectl apply -f examples/`: the keys that need nothing else become Ready. The engine's
/// KMS endpoint, forwarded to the host.
async fn examples_ready(cluster: &Cluster) -> Result<String> {
    cluster
        .kubectl(&["create", "serviceaccount", "app", "-n", "default"], None)
        .await?;
    let examples = repo_root().join("examples");
    cluster
        .kubectl(
            &["apply", "-n", "default", "-f", &examples.to_string_lossy()],
            None,
        )
        .await?;
    for key in ["orders", "release-signing"] {
        wait_for(&format!("Key {key} Ready"), READY, || async move {
            let status = cluster
                .kubectl(
                    &[
                        "-n",
                        "default",
                        "get",
                        "kmskey",
                        key,
                        "-o",
                        "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
                    ],
                    None,
                )
                .await?;
            Ok((status.trim() == "True").then_some(()))
        })
        .await?;
    }
    let ip = node::engine_service_ip(cluster).await?;
    node::forward(cluster, "kms", &format!("{ip}:4599"))
}

/// The ServiceAccount `app` (examples/keypolicy.yaml lets it use `orders` with app=orders)
/// encrypts from the host, through the engine Service, and a pod decrypts that ciphertext
/// with its own projected token. Returns the ciphertext.
async fn encrypt_from_host_and_pod(cluster: &Cluster, endpoint: &str) -> Result<String> {
    let dir = tempfile::tempdir()?;
    let token = app::token_file(cluster, dir.path(), "default", "app", "kubekms").await?;
    let identity = AppIdentity::WebIdentity { token_file: token };
    let plaintext = "b64:aGVsbG8gZnJvbSB0aGUgaG9zdA==";
    let answer = app::run_as(
        &identity,
        endpoint,
        &json!([{ "op": "encrypt", "args": {
            "KeyId": "alias/default/orders", "Plaintext": plaintext,
            "EncryptionContext": {"app": "orders"}}, "keep": "ciphertext" }]),
    )
    .await?;
    ensure!(
        answer
            .identity
            .as_deref()
            .is_some_and(|arn| arn.contains("system:serviceaccount:default:app")),
        "the host's client is {:?} ({:?})",
        answer.identity,
        answer.identity_error
    );
    ensure!(
        answer.results == vec![None],
        "encrypt from the host: {:?}",
        answer.results
    );
    let ciphertext = answer
        .kept
        .get("ciphertext")
        .cloned()
        .context("kms_calls.py kept no ciphertext")?;

    // The pod borrows the host's Python (the project's venv) through read-only hostPath
    // volumes: the client is the same boto3, configured only by the pod's environment and
    // its projected ServiceAccount token, on the pod network.
    let ip = node::engine_service_ip(cluster).await?;
    let calls = json!([
        { "op": "decrypt", "args": { "CiphertextBlob": format!("b64:{ciphertext}"),
            "EncryptionContext": {"app": "orders"} } },
        { "op": "decrypt", "args": { "CiphertextBlob": format!("b64:{ciphertext}"),
            "EncryptionContext": {"app": "billing"} } },
    ]);
    let venv = app::python();
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": { "name": "app-client", "namespace": "default" },
        "spec": {
            "serviceAccountName": "app",
            "restartPolicy": "Never",
            "containers": [{
                "name": "app",
                "image": "localhost/kubekms-pause:3.4",
                "imagePullPolicy": "Never",
                "command": [venv, "/e2e/clients/kms_calls.py"],
                "securityContext": { "runAsUser": 0 },
                "env": [
                    { "name": "KMS_CALLS", "value": calls.to_string() },
                    { "name": "AWS_ROLE_ARN", "value": app::role_arn() },
                    { "name": "AWS_ROLE_SESSION_NAME", "value": "in-a-pod" },
                    { "name": "AWS_WEB_IDENTITY_TOKEN_FILE", "value": "/var/run/secrets/kubekms/token" },
                    { "name": "AWS_REGION", "value": REGION },
                    { "name": "AWS_DEFAULT_REGION", "value": REGION },
                    { "name": "AWS_ENDPOINT_URL_KMS", "value": format!("http://{ip}:4599") },
                    { "name": "AWS_ENDPOINT_URL_STS", "value": format!("http://{ip}:4599") },
                    { "name": "AWS_CONFIG_FILE", "value": "/dev/null" },
                    { "name": "AWS_SHARED_CREDENTIALS_FILE", "value": "/dev/null" },
                    { "name": "AWS_EC2_METADATA_DISABLED", "value": "true" },
                ],
                "volumeMounts": [
                    { "name": "token", "mountPath": "/var/run/secrets/kubekms", "readOnly": true },
                    { "name": "usr", "mountPath": "/usr", "readOnly": true },
                    { "name": "lib", "mountPath": "/lib", "readOnly": true },
                    { "name": "lib64", "mountPath": "/lib64", "readOnly": true },
                    { "name": "root", "mountPath": "/root", "readOnly": true },
                    { "name": "e2e", "mountPath": "/e2e", "readOnly": true },
                ],
            }],
            "volumes": [
                { "name": "token", "projected": { "sources": [{ "serviceAccountToken": {
                    "audience": "kubekms", "expirationSeconds": 3600, "path": "token" } }] } },
                { "name": "usr", "hostPath": { "path": "/usr" } },
                { "name": "lib", "hostPath": { "path": "/lib" } },
                { "name": "lib64", "hostPath": { "path": "/lib64" } },
                { "name": "root", "hostPath": { "path": "/root" } },
                { "name": "e2e", "hostPath": { "path": repo_root().join("e2e").to_string_lossy() } },
            ],
        }
    });
    cluster
        .kubectl(&["apply", "-f", "-"], Some(&pod.to_string()))
        .await?;
    let phase = wait_for("pod app-client finished", READY, || async {
        let phase = cluster
            .kubectl(
                &[
                    "-n",
                    "default",
                    "get",
                    "pod",
                    "app-client",
                    "-o",
                    "jsonpath={.status.phase}",
                ],
                None,
            )
            .await?;
        let phase = phase.trim().to_owned();
        Ok(matches!(phase.as_str(), "Succeeded" | "Failed").then_some(phase))
    })
    .await?;
    let log = cluster
        .kubectl(&["-n", "default", "logs", "app-client"], None)
        .await?;
    ensure!(phase == "Succeeded", "the app pod {phase}: {log}");
    let answer = app::parse_answer(log.trim().as_bytes())?;
    ensure!(
        answer
            .identity
            .as_deref()
            .is_some_and(|arn| arn.contains("system:serviceaccount:default:app")),
        "the pod is {:?} ({:?})",
        answer.identity,
        answer.identity_error
    );
    ensure!(
        answer.results == vec![None, Some("AccessDeniedException".to_owned())],
        "decrypt in a pod with app=orders, then app=billing: {:?}",
        answer.results
    );
    Ok(ciphertext)
}

/// `helm upgrade` with more engine replicas rolls out; the keys stay.
async fn upgrade_rolls_out(cluster: &Cluster) -> Result<()> {
    node::helm(
        cluster,
        &[
            "upgrade",
            RELEASE,
            &node::chart(),
            "-n",
            NAMESPACE,
            "--reuse-values",
            "--set",
            "engine.replicas=3",
        ],
    )
    .await?;
    wait_for("3 engine replicas wanted", READY, || async {
        let wanted = cluster
            .kubectl(
                &[
                    "-n",
                    NAMESPACE,
                    "get",
                    "deployment",
                    ENGINE,
                    "-o",
                    "jsonpath={.spec.replicas}",
                ],
                None,
            )
            .await?;
        Ok((wanted.trim() == "3").then_some(()))
    })
    .await?;
    node::wait_rolled_out(cluster, ENGINE, READY).await
}

/// `helm uninstall` keeps the CRDs and the keys' Secrets; installing again serves the same
/// keys: the ciphertext made before decrypts.
async fn uninstall_keeps_keys(cluster: &Cluster, ciphertext: &str) -> Result<()> {
    node::helm(cluster, &["uninstall", RELEASE, "-n", NAMESPACE, "--wait"]).await?;
    wait_for("the engine Deployment gone", READY, || async {
        let out = cluster
            .kubectl(&["-n", NAMESPACE, "get", "deployments", "-o", "name"], None)
            .await?;
        Ok(out.trim().is_empty().then_some(()))
    })
    .await?;
    cluster
        .kubectl(&["get", "crd", "keys.kubekms.io"], None)
        .await
        .context("the Key CRD did not survive helm uninstall")?;
    cluster
        .kubectl(&["-n", NAMESPACE, "get", "secret", ROOT_KEY_SECRET], None)
        .await
        .context("the root key did not survive helm uninstall")?;

    install(cluster).await?;
    let ip = node::engine_service_ip(cluster).await?;
    let endpoint = node::forward(cluster, "kms", &format!("{ip}:4599"))?;
    let dir = tempfile::tempdir()?;
    let token = app::token_file(cluster, dir.path(), "default", "app", "kubekms").await?;
    let answer = app::run_as(
        &AppIdentity::WebIdentity { token_file: token },
        &endpoint,
        &json!([{ "op": "decrypt", "args": { "CiphertextBlob": format!("b64:{ciphertext}"),
            "EncryptionContext": {"app": "orders"} } }]),
    )
    .await?;
    ensure!(
        answer.results == vec![None],
        "decrypting after a re-install: {:?} ({:?})",
        answer.results,
        answer.identity_error
    );
    Ok(())
}
