//! The product on a node, as a user gets it: `make image`'s image loaded into a one-node
//! cluster, `helm install` of charts/kubekms, the operator running the key engine as pods,
//! `kubectl apply -f examples/`, and the stock AWS SDK for Python calling the engine through
//! its Service, from the host and from a pod. One test: the phases share one cluster and build
//! on each other, and a failure prints the pods' logs.

use std::time::Duration;

#[path = "pods/injection.rs"]
mod injection;
#[path = "pods/renewal.rs"]
mod renewal;

use anyhow::{bail, ensure, Context, Result};
use kubekms_e2e::app::{self, AppIdentity};
use kubekms_e2e::node::{self, ENGINE, NAMESPACE, OPERATOR, RELEASE, ROOT_KEY_SECRET};
use kubekms_e2e::{repo_root, wait_for, Cluster, REGION};
use serde_json::json;

const READY: Duration = Duration::from_secs(180);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_chart_on_a_node() -> Result<()> {
    let before = MachineState::read(None)?;
    let cluster = node::start_node_async().await?;
    let result = phases(&cluster).await;
    node::explain_failure(&cluster, &result);
    cluster.stop();
    result?;
    // The stop put the machine back as it found it.
    let after = MachineState::read(Some(cluster.dir()))?;
    ensure!(
        after.sysctls == before.sysctls,
        "kernel settings before {:?}, after the stop {:?}",
        before.sysctls,
        after.sysctls
    );
    ensure!(after.mounts.is_empty(), "left mounted: {:?}", after.mounts);
    ensure!(
        after.processes.is_empty(),
        "left running: {:?}",
        after.processes
    );
    ensure!(
        after.netns_gone,
        "the cluster's network namespace still exists after the stop"
    );
    Ok(())
}

/// What a cluster's stop must leave as it was.
struct MachineState {
    sysctls: Vec<String>,
    /// Mounts under the cluster's directory.
    mounts: Vec<String>,
    /// Processes whose command line names the cluster's directory.
    processes: Vec<String>,
    /// This test process's network namespace no longer exists.
    netns_gone: bool,
}

impl MachineState {
    fn read(dir: Option<&std::path::Path>) -> Result<Self> {
        let sysctls = [
            "kernel/panic",
            "kernel/panic_on_oops",
            "vm/overcommit_memory",
        ]
        .iter()
        .map(|k| {
            std::fs::read_to_string(format!("/proc/sys/{k}"))
                .map(|v| format!("{k}={}", v.trim()))
                .with_context(|| format!("reading /proc/sys/{k}"))
        })
        .collect::<Result<Vec<_>>>()?;
        let (mut mounts, mut processes) = (Vec::new(), Vec::new());
        if let Some(dir) = dir {
            let dir = format!("{}/", dir.display());
            let table = std::fs::read_to_string("/proc/self/mounts")?;
            mounts = table
                .lines()
                .filter_map(|l| l.split(' ').nth(1))
                .filter(|m| m.starts_with(&dir))
                .map(str::to_owned)
                .collect();
            for entry in std::fs::read_dir("/proc")?.flatten() {
                let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
                let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
                if cmdline.contains(&dir) {
                    processes.push(cmdline);
                }
            }
        }
        let netns = format!("kubekms-e2e-{}", std::process::id());
        let netns_gone = !std::path::Path::new("/var/run/netns").join(netns).exists();
        Ok(Self {
            sysctls,
            mounts,
            processes,
            netns_gone,
        })
    }
}

async fn phases(cluster: &Cluster) -> Result<()> {
    install(cluster).await?;
    least_privilege(cluster).await?;
    schema_refuses_bad_values(cluster).await?;
    let endpoint = examples_ready(cluster).await?;
    let ciphertext = encrypt_from_host_and_pod(cluster, &endpoint).await?;
    engine_pod_killed_during_a_stream(cluster, &endpoint).await?;
    upgrade_rolls_out(cluster).await?;
    operator_fails_over(cluster).await?;
    rotation_wave_rotates_each_key_once(cluster, &endpoint).await?;
    injection::workload_injection(cluster, &endpoint).await?;
    // Last before the re-install, which gives the operator and the webhook the new CA.
    renewal::engine_certificate_renewed_in_place(cluster).await?;
    uninstall_keeps_keys(cluster, &ciphertext).await?;
    Ok(())
}

/// `helm install` with the engine pods' test clock (the rotation wave moves it) and import
/// Secrets readable in `default`.
async fn install(cluster: &Cluster) -> Result<()> {
    node::install(
        cluster,
        &[
            "operator.importNamespaces={default}",
            "engine.testClock=true",
        ],
        READY,
    )
    .await?;
    // The chart's default is two engine pods (those of an earlier install may still be
    // terminating).
    wait_for("2 engine pods running", READY, || async {
        Ok((node::pods_of(cluster, "engine").await?.len() == 2).then_some(()))
    })
    .await
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
    // It changes only the engine's own Deployment and Service, never deletes them, and cannot
    // take the engine's scheduling Lease.
    for (verb, resource, allowed) in [
        ("patch", "deployment/kubekms-engine", true),
        ("patch", "deployment/another", false),
        ("delete", "deployment/kubekms-engine", false),
        ("patch", "service/another", false),
        ("update", "lease/kubekms-operator", true),
        ("update", "lease/kubekms-engine-scheduler", false),
    ] {
        ensure!(
            node::can_i(cluster, &sa(OPERATOR), verb, resource).await? == allowed,
            "the operator's ServiceAccount {} {verb} {resource}",
            if allowed { "cannot" } else { "can" }
        );
    }
    ensure!(
        !node::can_i(cluster, &sa(ENGINE), "update", "lease/kubekms-operator").await?,
        "the engine's ServiceAccount can take the operator's Lease"
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
        let out = upgrade(cluster, set, false).await;
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
        key_ready(cluster, "default", key).await?;
    }
    // What the next phase uses: the alias, and the policy that lets `app` use the key.
    object_ready(cluster, "default", "kmsalias", "orders").await?;
    object_ready(cluster, "default", "kmspolicy", "orders-app").await?;
    let ip = node::engine_service_ip(cluster).await?;
    let endpoint = node::engine_endpoint(cluster, &ip)?;
    // The chart's default: the engine serves TLS, and every client here trusts its CA.
    ensure!(
        endpoint.starts_with("https://") && node::engine_ca().is_some(),
        "the engine does not serve TLS by default ({endpoint})"
    );
    Ok(endpoint)
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
    let (mut mounts, mut volumes) = app::host_python_volumes();
    mounts.push(
        json!({ "name": "token", "mountPath": "/var/run/secrets/kubekms", "readOnly": true }),
    );
    let mut sources = vec![json!({ "serviceAccountToken": {
        "audience": "kubekms", "expirationSeconds": 3600, "path": "token" } })];
    // With TLS, as the webhook would set it up: the CA beside the token (a ConfigMap of the
    // pod's namespace), the engine by the name its certificate holds, aliased to its IP.
    let mut env = vec![
        json!({ "name": "AWS_ENDPOINT_URL_KMS", "value": format!("http://{ip}:4599") }),
        json!({ "name": "AWS_ENDPOINT_URL_STS", "value": format!("http://{ip}:4599") }),
    ];
    let mut host_aliases = json!([]);
    if let Some(ca) = node::engine_ca() {
        let ca = ca.to_string_lossy().into_owned();
        cluster
            .kubectl(
                &[
                    "-n",
                    "default",
                    "create",
                    "configmap",
                    "app-client-ca",
                    &format!("--from-file=ca.crt={ca}"),
                ],
                None,
            )
            .await?;
        sources.push(json!({ "configMap": { "name": "app-client-ca" } }));
        let url = format!("https://{}:4599", node::ENGINE_HOST);
        env = vec![
            json!({ "name": "AWS_ENDPOINT_URL_KMS", "value": url }),
            json!({ "name": "AWS_ENDPOINT_URL_STS", "value": url }),
            json!({ "name": "AWS_CA_BUNDLE", "value": "/var/run/secrets/kubekms/ca.crt" }),
        ];
        host_aliases = json!([{ "ip": ip, "hostnames": [node::ENGINE_HOST] }]);
    }
    volumes.push(json!({ "name": "token", "projected": { "sources": sources } }));
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
                    { "name": "AWS_CONFIG_FILE", "value": "/dev/null" },
                    { "name": "AWS_SHARED_CREDENTIALS_FILE", "value": "/dev/null" },
                    { "name": "AWS_EC2_METADATA_DISABLED", "value": "true" },
                ],
                "volumeMounts": mounts,
            }],
            "volumes": volumes,
            "hostAliases": host_aliases,
        }
    });
    let mut pod = pod;
    if let Some(list) = pod["spec"]["containers"][0]["env"].as_array_mut() {
        list.extend(env);
    }
    cluster
        .kubectl(&["apply", "-f", "-"], Some(&pod.to_string()))
        .await?;
    let phase = wait_for("pod app-client finished", READY, || async {
        let phase = node::jsonpath(
            cluster,
            "default",
            &["pod", "app-client"],
            "{.status.phase}",
        )
        .await?;
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

/// A stream of Encrypt and Decrypt calls from four clients while the engine pod serving them
/// (client-IP affinity keeps them with one) is deleted: the Service keeps answering from the
/// other, at most the killed pod's in-flight calls fail (the SDK retries what it may), and
/// every acknowledged ciphertext decrypts afterwards.
async fn engine_pod_killed_during_a_stream(cluster: &Cluster, endpoint: &str) -> Result<()> {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    // The session credentials default/app's SDK holds after its web-identity exchange.
    let dir = tempfile::tempdir()?;
    let token = app::token_file(cluster, dir.path(), "default", "app", "kubekms").await?;
    let answer = app::run_as(
        &AppIdentity::WebIdentity { token_file: token },
        endpoint,
        &json!([{ "op": "__credentials__" }]),
    )
    .await?;
    let creds = answer.credentials.context("no session credentials")?;
    let text = |k: &str| creds[k].as_str().map(str::to_owned).context(k.to_owned());
    let kms = node::kms_client(
        endpoint,
        &text("accessKeyId")?,
        &text("secretAccessKey")?,
        Some(text("sessionToken")?),
        None,
    );
    let engines = node::pods_of(cluster, "engine").await?;
    ensure!(engines.len() >= 2, "engine pods: {engines:?}");

    const WORKERS: usize = 4;
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for w in 0..WORKERS {
        let (kms, stop) = (kms.clone(), stop.clone());
        workers.push(tokio::spawn(async move {
            let (mut acked, mut failed) = (Vec::new(), Vec::new());
            let (mut i, mut decrypted) = (0u64, 0usize);
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let plaintext = format!("record {w}-{i}").into_bytes();
                let out = kms
                    .encrypt()
                    .key_id("alias/default/orders")
                    .plaintext(aws_sdk_kms::primitives::Blob::new(plaintext.clone()))
                    .encryption_context("app", "orders")
                    .send()
                    .await;
                match out.map(|o| o.ciphertext_blob) {
                    Ok(Some(blob)) => acked.push((plaintext, blob)),
                    Ok(None) => failed.push("an answer without CiphertextBlob".to_owned()),
                    Err(e) => {
                        failed.push(format!("{}", aws_sdk_kms::error::DisplayErrorContext(e)))
                    }
                }
                // Every other call a Decrypt of the last acknowledged ciphertext, so the
                // stream is of both.
                if let Some((expected, blob)) = acked.last().filter(|_| i % 2 == 0) {
                    let out = kms
                        .decrypt()
                        .ciphertext_blob(blob.clone())
                        .encryption_context("app", "orders")
                        .send()
                        .await;
                    match out.map(|o| o.plaintext) {
                        Ok(Some(p)) if p.as_ref() == expected.as_slice() => decrypted += 1,
                        Ok(_) => failed.push("Decrypt answered another plaintext".to_owned()),
                        Err(e) => {
                            failed.push(format!("{}", aws_sdk_kms::error::DisplayErrorContext(e)))
                        }
                    }
                }
            }
            (acked, failed, decrypted)
        }));
    }
    let serving = node::engine_serving(cluster, "Encrypt", Duration::from_millis(1500)).await?;
    cluster
        .kubectl(
            &[
                "-n",
                NAMESPACE,
                "delete",
                "pod",
                &serving.name,
                "--wait=false",
            ],
            None,
        )
        .await?;
    tokio::time::sleep(Duration::from_secs(6)).await;
    stop.store(true, Ordering::Relaxed);
    let (mut acked, mut failed, mut decrypted) = (Vec::new(), Vec::new(), 0);
    for worker in workers {
        let (a, f, d) = worker.await?;
        acked.extend(a);
        failed.extend(f);
        decrypted += d;
    }
    eprintln!(
        "stream across the deletion of {}: {} encrypted, {decrypted} decrypted, {} failed",
        serving.name,
        acked.len(),
        failed.len()
    );
    ensure!(
        decrypted >= 50,
        "only {decrypted} Decrypt calls succeeded in the stream"
    );
    ensure!(
        acked.len() >= 100,
        "only {} calls were acknowledged in 7.5 s",
        acked.len()
    );
    ensure!(
        failed.len() <= WORKERS,
        "{} calls failed (at most the {WORKERS} in flight may): {:?}",
        failed.len(),
        &failed[..failed.len().min(5)]
    );
    for (plaintext, blob) in &acked {
        let out = kms
            .decrypt()
            .ciphertext_blob(blob.clone())
            .encryption_context("app", "orders")
            .send()
            .await
            .map_err(|e| anyhow::anyhow!("{}", aws_sdk_kms::error::DisplayErrorContext(e)))
            .context("decrypting an acknowledged ciphertext")?;
        ensure!(
            out.plaintext.as_ref().map(|p| p.as_ref()) == Some(plaintext.as_slice()),
            "an acknowledged ciphertext decrypted to something else"
        );
    }
    node::wait_rolled_out(cluster, ENGINE, READY).await
}

/// `helm upgrade` with more engine replicas rolls out; the keys stay.
async fn upgrade_rolls_out(cluster: &Cluster) -> Result<()> {
    upgrade(cluster, "engine.replicas=3", false).await?;
    wait_for("3 engine replicas wanted", READY, || async {
        let wanted = node::jsonpath(
            cluster,
            NAMESPACE,
            &["deployment", ENGINE],
            "{.spec.replicas}",
        )
        .await?;
        Ok((wanted == "3").then_some(()))
    })
    .await?;
    node::wait_rolled_out(cluster, ENGINE, READY).await
}

/// Two operator replicas: one holds the Lease and acts; when its pod is deleted the other
/// takes over, and a Key applied afterwards becomes Ready.
async fn operator_fails_over(cluster: &Cluster) -> Result<()> {
    upgrade(cluster, "operator.replicas=2", true).await?;
    node::wait_rolled_out(cluster, OPERATOR, READY).await?;
    let leader = wait_for("an operator holding the Lease", READY, || async {
        let who = node::jsonpath(
            cluster,
            NAMESPACE,
            &["lease", OPERATOR],
            "{.spec.holderIdentity}",
        )
        .await?;
        let running = node::pods_of(cluster, "operator").await?;
        Ok(running.contains(&who).then_some(who))
    })
    .await?;
    cluster
        .kubectl(
            &["-n", NAMESPACE, "delete", "pod", &leader, "--wait=false"],
            None,
        )
        .await?;
    let next = wait_for("another operator taking the Lease", READY, || async {
        let who = node::jsonpath(
            cluster,
            NAMESPACE,
            &["lease", OPERATOR],
            "{.spec.holderIdentity}",
        )
        .await?;
        Ok((!who.is_empty() && who != leader).then_some(who))
    })
    .await?;
    eprintln!("operator Lease: {leader} -> {next}");
    let key = json!({
        "apiVersion": "kubekms.io/v1alpha1", "kind": "Key",
        "metadata": { "name": "after-failover", "namespace": "default" },
        "spec": { "keySpec": "SYMMETRIC_DEFAULT", "enabled": true },
    });
    cluster
        .kubectl(&["apply", "-f", "-"], Some(&key.to_string()))
        .await?;
    key_ready(cluster, "default", "after-failover").await
}

/// Waits until Key `namespace/name` is Ready.
async fn key_ready(cluster: &Cluster, namespace: &str, name: &str) -> Result<()> {
    object_ready(cluster, namespace, "kmskey", name).await
}

/// A kubekms.io object (by short name) whose Ready condition is True.
async fn object_ready(cluster: &Cluster, namespace: &str, kind: &str, name: &str) -> Result<()> {
    wait_for(
        &format!("{kind} {namespace}/{name} Ready"),
        READY,
        || async {
            let status = node::jsonpath(
                cluster,
                namespace,
                &[kind, name],
                "{.status.conditions[?(@.type==\"Ready\")].status}",
            )
            .await?;
            Ok((status == "True").then_some(()))
        },
    )
    .await
}

/// Twelve Keys with yearly rotation; then every engine replica's clock moves past their
/// rotation date at the same moment, so all three run the due work at once (and the Lease
/// holder's loop too): each key is rotated exactly once.
async fn rotation_wave_rotates_each_key_once(cluster: &Cluster, endpoint: &str) -> Result<()> {
    const KEYS: usize = 12;
    let (akid, secret) = ("AKIAE2EWAVEADMIN0001", "e2e-wave-administrator-secret");
    cluster
        .kubectl(&["create", "namespace", "wave"], None)
        .await?;
    let keys: Vec<serde_json::Value> = (0..KEYS)
        .map(|i| {
            json!({
                "apiVersion": "kubekms.io/v1alpha1", "kind": "Key",
                "metadata": { "name": format!("wave-{i}"), "namespace": "wave" },
                "spec": { "keySpec": "SYMMETRIC_DEFAULT", "enabled": true,
                    "rotation": { "enabled": true, "periodDays": 365 } },
            })
        })
        .collect();
    let list = json!({ "apiVersion": "v1", "kind": "List", "items": keys });
    cluster
        .kubectl(&["apply", "-f", "-"], Some(&list.to_string()))
        .await?;
    let key_ids = wait_for("the wave's Keys Ready", READY, || async {
        let out = node::jsonpath(
            cluster,
            "wave",
            &["kmskey"],
            "{range .items[*]}{.status.keyId} \
             {.status.conditions[?(@.type==\"Ready\")].status}{\"\\n\"}{end}",
        )
        .await?;
        let ready: Vec<String> = out
            .lines()
            .filter_map(|l| l.strip_suffix(" True").map(str::to_owned))
            .filter(|id| !id.is_empty())
            .collect();
        Ok((ready.len() == KEYS).then_some(ready))
    })
    .await?;

    let admin =
        node::administrator(cluster, "e2e-wave-admin", akid, secret, endpoint, READY).await?;
    let ips: Vec<String> = node::running_pods(cluster, "engine")
        .await?
        .into_iter()
        .map(|p| p.ip)
        .collect();
    ensure!(ips.len() == 3, "engine pods: {ips:?}");
    let year_and_a_day = Duration::from_secs(366 * 24 * 3600);
    let advanced = futures::future::join_all(
        ips.iter()
            .map(|ip| node::advance_engine_clock(cluster, ip, year_and_a_day)),
    )
    .await;
    for (ip, result) in ips.iter().zip(advanced) {
        result.with_context(|| format!("advancing the clock of the engine pod at {ip}"))?;
    }
    // Each replica ran its due work before answering; the Lease holder's loop may still be
    // mid-pass, so give it a second pass before counting.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut counts = Vec::new();
    for id in &key_ids {
        let rotations = admin
            .list_key_rotations()
            .key_id(id)
            .send()
            .await
            .map_err(|e| anyhow::anyhow!("{}", aws_sdk_kms::error::DisplayErrorContext(e)))?
            .rotations
            .unwrap_or_default();
        counts.push(rotations.len());
    }
    ensure!(
        counts.iter().all(|&n| n == 1),
        "rotations per key after one due date passed on three replicas at once: {counts:?}"
    );
    Ok(())
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
    let endpoint = node::engine_endpoint(cluster, &ip)?;
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

/// `helm upgrade` of the release with its values kept and `set` changed; `wait` for its
/// Deployments to be Ready.
async fn upgrade(cluster: &Cluster, set: &str, wait: bool) -> Result<String> {
    let chart = node::chart();
    let mut args = vec![
        "upgrade",
        RELEASE,
        chart.as_str(),
        "-n",
        NAMESPACE,
        "--reuse-values",
        "--set",
        set,
    ];
    if wait {
        args.extend(["--wait", "--timeout", "180s"]);
    }
    node::helm(cluster, &args).await
}
