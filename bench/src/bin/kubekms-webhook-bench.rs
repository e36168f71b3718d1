//! `kubekms-webhook-bench`: the injection webhook as the API server meets it, on the one-node
//! cluster with the chart installed (the image, two webhook replicas, two engine replicas).
//!
//! 1. **Admission latency.** AdmissionReviews of opted-in pods (one data key, AES_256) posted by
//!    `curl` from inside the cluster's network namespace to the webhook Service over HTTPS, one
//!    kept-alive connection, the time from request sent to answer received per request:
//!    - *new data key*: each pod of another ServiceAccount, so each admission makes a data key
//!      (GenerateDataKeyWithoutPlaintext at the engine as the webhook) and creates its record;
//!    - *existing data key*: the same pods again, each admission reading its record.
//! 2. **Scale-up.** A Deployment of 100 opted-in replicas (unschedulable, so only admission is
//!    measured) from apply until the API server has all 100 pods; the same without the opt-in
//!    label as the baseline (the ReplicaSet controller's own pace).
//!
//! Prints the figures with the target (p99 ≤ 10 ms). Needs `make image` first;
//! `make webhook-bench` does both.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use anyhow::{ensure, Result};
use clap::Parser;
use kube::api::{ListParams, PostParams};
use kube::Api;
use serde_json::{json, Value};

use kubekms_crds::Key;
use kubekms_e2e::node::{self, NAMESPACE};
use kubekms_e2e::{wait_for, Cluster};

const BENCH_NS: &str = "webhook-bench";
const ROLLOUT: Duration = Duration::from_secs(300);
const P99_TARGET_MS: f64 = 10.0;

#[derive(Parser)]
struct Args {
    /// Admissions per latency series (each of another ServiceAccount).
    #[arg(long, default_value_t = 200)]
    requests: usize,
    /// Replicas of the scale-up.
    #[arg(long, default_value_t = 100)]
    replicas: usize,
}

#[derive(Default)]
struct Figures {
    new_keys: Vec<f64>,
    existing_keys: Vec<f64>,
    record_creates: Vec<f64>,
    scale_injected: Option<Duration>,
    scale_plain: Option<Duration>,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let args = Args::parse();
    ensure!(
        args.requests > 0 && args.replicas > 0,
        "counts must be positive"
    );
    eprintln!("starting a one-node cluster and loading the image");
    let cluster = node::start_node_async().await?;
    let mut figures = Figures::default();
    let result = run(&cluster, &args, &mut figures).await;
    node::explain_failure(&cluster, &result);
    cluster.stop();
    print(&figures, &args);
    result
}

async fn run(cluster: &Cluster, args: &Args, figures: &mut Figures) -> Result<()> {
    eprintln!("helm install");
    node::install(cluster, &[], ROLLOUT).await?;
    node::wait_rolled_out(cluster, "kubekms-webhook", ROLLOUT).await?;
    let accounts: Vec<Value> = (0..args.requests)
        .map(|i| {
            json!({ "apiVersion": "v1", "kind": "ServiceAccount",
                         "metadata": { "name": format!("sa-{i}"), "namespace": BENCH_NS } })
        })
        .collect();
    let setup = json!({ "apiVersion": "v1", "kind": "List", "items": [
        { "apiVersion": "v1", "kind": "Namespace", "metadata": { "name": BENCH_NS } },
        { "apiVersion": "kubekms.io/v1alpha1", "kind": "Key",
          "metadata": { "name": "orders", "namespace": BENCH_NS }, "spec": {} },
    ] });
    cluster
        .kubectl(&["apply", "-f", "-"], Some(&setup.to_string()))
        .await?;
    cluster
        .kubectl(
            &["apply", "-f", "-"],
            Some(&json!({ "apiVersion": "v1", "kind": "List", "items": accounts }).to_string()),
        )
        .await?;
    let keys: Api<Key> = Api::namespaced(cluster.client().await?, BENCH_NS);
    wait_for("Key orders with an engine key", ROLLOUT, || async {
        let key = keys.get_opt("orders").await?;
        Ok(key.and_then(|k| k.status).and_then(|s| s.arn).map(drop))
    })
    .await?;

    let dir = tempfile::tempdir()?;
    let ca = cluster
        .kubectl(
            &[
                "-n",
                NAMESPACE,
                "get",
                "secret",
                "kubekms-webhook-tls",
                "-o",
                "jsonpath={.data.ca\\.crt}",
            ],
            None,
        )
        .await?;
    let ca_file = dir.path().join("ca.crt");
    std::fs::write(&ca_file, base64_decode(&ca)?)?;
    let ip = cluster
        .kubectl(
            &[
                "-n",
                NAMESPACE,
                "get",
                "service",
                "kubekms-webhook",
                "-o",
                "jsonpath={.spec.clusterIP}",
            ],
            None,
        )
        .await?;
    let bodies: Vec<std::path::PathBuf> = (0..args.requests)
        .map(|i| {
            let path = dir.path().join(format!("review-{i}.json"));
            std::fs::write(&path, review(i).to_string()).map(|()| path)
        })
        .collect::<std::io::Result<_>>()?;
    // One admission first, so the webhook has found the engine and holds a session.
    post(cluster, &ip, &ca_file, &bodies[..1]).await?;
    eprintln!("admission latency: {} new data keys", args.requests - 1);
    figures.new_keys = post(cluster, &ip, &ca_file, &bodies[1..]).await?;
    eprintln!("admission latency: {} existing data keys", args.requests);
    figures.existing_keys = post(cluster, &ip, &ca_file, &bodies).await?;
    eprintln!("record create alone: {} DataKey records", args.requests);
    figures.record_creates = record_creates(cluster, args.requests).await?;

    eprintln!(
        "scale-up: {} replicas without the opt-in label",
        args.replicas
    );
    figures.scale_plain = Some(scale_up(cluster, "plain", false, args.replicas).await?);
    eprintln!("scale-up: {} opted-in replicas", args.replicas);
    figures.scale_injected = Some(scale_up(cluster, "injected", true, args.replicas).await?);
    Ok(())
}

/// The floor under a new data key's admission: creating a DataKey record (the API server, the
/// validating webhook it calls for DataKeys, etcd's write), timed one at a time from the host
/// (through the cluster's API forwarder).
async fn record_creates(cluster: &Cluster, n: usize) -> Result<Vec<f64>> {
    use kubekms_crds::{DataKey, DataKeyGeneration, DataKeySpec};
    let records: Api<DataKey> = Api::namespaced(cluster.client().await?, BENCH_NS);
    let mut times = Vec::with_capacity(n);
    for i in 0..n {
        let record = DataKey::new(
            &DataKey::record_name(&format!("floor-{i}"), "db"),
            DataKeySpec {
                service_account: format!("floor-{i}"),
                name: "db".into(),
                key: "orders".into(),
                number_of_bytes: 32,
                generations: vec![DataKeyGeneration {
                    generation: 1,
                    // The size of a real data key's ciphertext (about 180 bytes), in base64.
                    ciphertext: "A".repeat(240),
                    key_arn: "arn:aws:kms:us-east-1:111122223333:key/floor".into(),
                    key_version: 1,
                }],
            },
        );
        let started = Instant::now();
        records.create(&PostParams::default(), &record).await?;
        times.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    Ok(times)
}

fn base64_decode(text: &str) -> Result<Vec<u8>> {
    use base64::Engine as _;
    Ok(base64::engine::general_purpose::STANDARD.decode(text.trim())?)
}

/// The AdmissionReview the API server sends for an opted-in pod of ServiceAccount `sa-<i>`.
fn review(i: usize) -> Value {
    json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": format!("00000000-0000-0000-0000-{i:012}"),
            "kind": { "group": "", "version": "v1", "kind": "Pod" },
            "resource": { "group": "", "version": "v1", "resource": "pods" },
            "namespace": BENCH_NS,
            "operation": "CREATE",
            "userInfo": { "username": "system:serviceaccount:kube-system:replicaset-controller" },
            "object": pod(&format!("sa-{i}"), true),
        },
    })
}

fn pod(service_account: &str, opted_in: bool) -> Value {
    let labels = if opted_in {
        json!({ "app": "bench", "kubekms.io/inject": "true" })
    } else {
        json!({ "app": "bench" })
    };
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": { "generateName": "bench-", "namespace": BENCH_NS, "labels": labels,
                      "annotations": { "kubekms.io/data-key.db": "orders" } },
        "spec": {
            "serviceAccountName": service_account,
            "containers": [{ "name": "app", "image": "localhost/kubekms-pause:3.4",
                             "securityContext": { "runAsUser": 65532 } }],
        },
    })
}

/// Posts each body on one kept-alive connection; the milliseconds from each request sent to
/// its answer received. Fails on any answer that is not an allowed admission with a patch.
async fn post(
    cluster: &Cluster,
    ip: &str,
    ca: &std::path::Path,
    bodies: &[std::path::PathBuf],
) -> Result<Vec<f64>> {
    let host = "kubekms-webhook.kubekms-system.svc";
    let resolve = format!("{host}:443:{ip}");
    let url = format!("https://{host}/mutate-pods");
    let ca = ca.to_string_lossy().into_owned();
    let data: Vec<String> = bodies.iter().map(|b| format!("@{}", b.display())).collect();
    let mut argv: Vec<&str> = vec!["exec", "curl", "-sS"];
    for (i, body) in data.iter().enumerate() {
        if i > 0 {
            argv.push("--next");
        }
        argv.extend([
            "--cacert",
            &ca,
            "--resolve",
            &resolve,
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            body,
            "-w",
            "\n%{http_code} %{time_pretransfer} %{time_starttransfer}\n",
            &url,
        ]);
    }
    let out = cluster.node_script_async(&argv).await?;
    let mut times = Vec::new();
    let mut answers = 0;
    for line in out.lines() {
        if line.starts_with('{') {
            let answer: Value = serde_json::from_str(line)?;
            let response = &answer["response"];
            ensure!(
                // kube-rs writes the patch as an array of bytes, which the API server's decoder
                // takes as well as base64.
                response["allowed"] == true
                    && (response["patch"].is_string() || response["patch"].is_array()),
                "the webhook answered {line}"
            );
            answers += 1;
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        if let [code, sent, first_byte] = fields[..] {
            ensure!(code == "200", "HTTP {code}");
            let sent: f64 = sent.parse()?;
            let first_byte: f64 = first_byte.parse()?;
            times.push((first_byte - sent) * 1000.0);
        }
    }
    ensure!(
        answers == bodies.len() && times.len() == bodies.len(),
        "{answers} answers and {} timings for {} requests",
        times.len(),
        bodies.len()
    );
    Ok(times)
}

/// A Deployment of `replicas` (unschedulable) from apply until all its pods exist.
async fn scale_up(
    cluster: &Cluster,
    name: &str,
    opted_in: bool,
    replicas: usize,
) -> Result<Duration> {
    let mut template = pod("sa-0", opted_in);
    template["metadata"]["labels"]["app"] = json!(name);
    // Admitted, never run: the figure is admission, not the node starting 100 pods.
    template["spec"]["nodeSelector"] = json!({ "kubekms.io/bench": "never" });
    let deployment = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": { "name": name, "namespace": BENCH_NS },
        "spec": { "replicas": replicas, "selector": { "matchLabels": { "app": name } },
                  "template": template },
    });
    let pods: Api<k8s_openapi::api::core::v1::Pod> =
        Api::namespaced(cluster.client().await?, BENCH_NS);
    let deployments: Api<k8s_openapi::api::apps::v1::Deployment> =
        Api::namespaced(cluster.client().await?, BENCH_NS);
    let started = Instant::now();
    deployments
        .create(&PostParams::default(), &serde_json::from_value(deployment)?)
        .await?;
    let selector = format!("app={name}");
    wait_for(&format!("{replicas} pods of {name}"), ROLLOUT, || async {
        let n = pods
            .list_metadata(&ListParams::default().labels(&selector))
            .await?
            .items
            .len();
        Ok((n >= replicas).then_some(()))
    })
    .await?;
    let elapsed = started.elapsed();
    if opted_in {
        let injected = pods
            .list(&ListParams::default().labels(&selector))
            .await?
            .items
            .iter()
            .filter(|p| {
                p.metadata
                    .annotations
                    .as_ref()
                    .is_some_and(|a| a.contains_key("kubekms.io/injected"))
            })
            .count();
        ensure!(
            injected == replicas,
            "{injected} of {replicas} pods injected"
        );
    }
    Ok(elapsed)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn print(f: &Figures, args: &Args) {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\nkubekms-webhook-bench (2 webhook and 2 engine replicas, one node)"
    );
    for (what, series) in [
        (
            "admission, new data key (engine call + record create)",
            &f.new_keys,
        ),
        (
            "admission, existing data key (record read)",
            &f.existing_keys,
        ),
        (
            "the floor: a DataKey record created alone (API server, validating webhook, etcd)",
            &f.record_creates,
        ),
    ] {
        let mut sorted = series.clone();
        sorted.sort_by(f64::total_cmp);
        let p99 = percentile(&sorted, 99.0);
        let _ = writeln!(
            out,
            "  {what}: n={} p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms (target p99 <= {P99_TARGET_MS} ms: {})",
            sorted.len(),
            percentile(&sorted, 50.0),
            p99,
            sorted.last().copied().unwrap_or(f64::NAN),
            if p99 <= P99_TARGET_MS { "met" } else { "MISSED" }
        );
    }
    for (what, d) in [
        ("scale-up, opted-in", f.scale_injected),
        ("scale-up, baseline without the label", f.scale_plain),
    ] {
        if let Some(d) = d {
            let _ = writeln!(
                out,
                "  {what}: {} pods in {:.2} s, {:.1} pods/s",
                args.replicas,
                d.as_secs_f64(),
                args.replicas as f64 / d.as_secs_f64()
            );
        }
    }
    print!("{out}");
}
