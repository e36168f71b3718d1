//! `kubekms-pods-bench`: the scale and engine benchmarks against the product as users run it —
//! the image loaded into a one-node cluster (`e2e/scripts/cluster.sh`), the Helm chart
//! installed, the operator and two engine replicas as pods. In one run:
//!
//! 1. **Scale.** N Keys (SYMMETRIC_DEFAULT, rotation every 90 days) applied to namespace
//!    `bench` by server-side apply from concurrent tasks; the time from the first apply until
//!    a watch has seen every Key Ready for its current generation; the operator's and the
//!    engines' peak RSS (`VmHWM` of the containers' processes, which are the host's).
//! 2. **Steady state.** Once the operator's queued events are written, CPU over a quiet
//!    window: what the operator and the engines cost while nothing changes (the operator's
//!    long poll of changed keys, and its resync if `--resync-seconds` is short enough).
//! 3. **Engine throughput.** One Encrypt, pre-signed with an access key of group
//!    `system:masters`, replayed by `wrk` from inside the cluster's network namespace: once
//!    through the engine Service's cluster IP (kube-proxy's iptables rules spread connections
//!    over the replicas) and once straight to one engine pod.
//! 4. **Rotation wave.** Every engine pod's test clock moved 91 days on at once: the time until
//!    the engines' due work is done (each clock call answers after its replica ran it) and
//!    until every Key's status shows key version 2. The operator learns of rotations the
//!    engines made through their feed of changed keys (a long poll).
//!
//! The throughput comes before the wave because the wave moves the engines' clocks 91 days
//! ahead of the host's, and a SigV4 signature (the SDK's or the pre-signed one) is accepted
//! only within minutes of the engine's clock.
//!
//! Per phase it reports the CPU seconds of the operator, the engines, kube-apiserver, etcd,
//! kube-controller-manager, the bench and the rest of the machine (with its busiest
//! processes), the operator's Key reconciles and failures and the engines' requests and client
//! errors (from their metrics ports), so a missed target says where the time went. When not
//! every Key becomes Ready in `--timeout`, the throughput is still measured and the wave is
//! skipped. Prints one table with the issue's targets beside the figures; exits
//! non-zero when wrk saw an error or a phase timed out.
//!
//! `cargo run --release -p kubekms-bench --bin kubekms-pods-bench -- [--keys N] [--quick]`
//! (needs `make image` first; `make pods-bench` does both).

use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, ensure, Context, Result};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use clap::Parser;
use futures::stream::FuturesUnordered;
use futures::StreamExt;
use kube::api::PostParams;
use kube::Api;
use serde_json::json;

use kubekms_bench::apiserver::ApiCounters;
use kubekms_bench::keys::{apply_keys, count_above, count_ready, wait_all_ready, watch_keys, Seen};
use kubekms_bench::procfs::{
    busiest_since, cpu_seconds, find_processes, machine_busy_seconds, snapshot, vm_hwm_mb,
    wall_seconds, Cpu, Snapshot,
};
use kubekms_bench::report::{seconds, verdict};
use kubekms_bench::wrk::{check_wrk, parse_wrk, wrk_args, wrk_script, WrkResult};
use kubekms_crds::Key;
use kubekms_e2e::node::{self, NAMESPACE};
use kubekms_e2e::{wait_for, Cluster, REGION};
use kubekms_engine::crypto::random_bytes;
use kubekms_proto::sigv4::sign_kms_request;

const TARGET_KEYS: usize = 10_000;
const TARGET_READY: Duration = Duration::from_secs(60);
const AIM_READY: Duration = Duration::from_secs(45);
const TARGET_ROTATION: Duration = Duration::from_secs(60);
const AIM_ROTATION: Duration = Duration::from_secs(30);
const TARGET_RSS_MB: f64 = 100.0;
const QUICK_KEYS: usize = 500;
const KEY_NAMESPACE: &str = "bench";
const MANAGER: &str = "kubekms-pods-bench";
/// The chart's default engine replicas.
const ENGINE_REPLICAS: usize = 2;
/// The binary in the image; the operator runs `... run`, the engine pods `... engine`.
const BINARY: &str = "/usr/local/bin/kubekms-operator";
/// How far the wave moves the engines' clocks: past the 90-day rotation period.
const WAVE: Duration = Duration::from_secs(91 * 24 * 3600);
/// The access key the throughput phase signs with (an administrator: group system:masters).
const ACCESS_KEY_ID: &str = "AKIAPODSBENCHADMIN01";
const SECRET_ACCESS_KEY: &str = "kubekms-pods-bench-administrator-secret";
const PLAINTEXT_BYTES: usize = 64;
const ROLLOUT: Duration = Duration::from_secs(180);
/// The chart's `operator.metricsPort`.
const OPERATOR_METRICS_PORT: u16 = 9464;

/// API server series printed per phase.
const API_SERIES: usize = 14;

#[derive(Parser)]
#[command(
    name = "kubekms-pods-bench",
    about = "The operator at scale and the engine through its Service, on a one-node cluster"
)]
struct Args {
    /// Serve the engine's API in plain HTTP (`engine.tls.enabled=false`), as the figures
    /// before the engine had TLS were measured; without it, over TLS as the chart installs it.
    #[arg(long)]
    engine_plain_http: bool,
    /// Keys to apply [default: 10000; 500 with --quick].
    #[arg(long)]
    keys: Option<usize>,
    /// 500 Keys: a shake-out run, not the issue's measurement.
    #[arg(long)]
    quick: bool,
    /// Server-side applies in flight.
    #[arg(long, default_value_t = 32)]
    apply_concurrency: usize,
    /// Give up on a phase (Ready, rotated) after this many seconds.
    #[arg(long, default_value_t = 600)]
    timeout: u64,
    /// The operator's `--resync-seconds` (default: the chart's, 600): how often it reconciles
    /// every Key besides what the engines' change feed wakes.
    #[arg(long)]
    resync_seconds: Option<u64>,
    /// Seconds of the quiet window after Ready (CPU of the resync alone).
    #[arg(long, default_value_t = 10)]
    steady_seconds: u64,
    /// Seconds per wrk run.
    #[arg(long, default_value_t = 10)]
    wrk_seconds: u64,
    /// wrk threads.
    #[arg(long, default_value_t = 2)]
    wrk_threads: u32,
    /// wrk connections.
    #[arg(long, default_value_t = 32)]
    wrk_connections: u32,
}

/// Counters the operator and the engines publish on their metrics ports.
#[derive(Clone, Copy, Default)]
struct Counters {
    key_reconciles: f64,
    key_failures: f64,
    /// KMS and STS requests the engines answered (both replicas).
    engine_requests: f64,
    /// Of those, answered with a client error (NotFoundException among them).
    engine_client_errors: f64,
}

impl Counters {
    fn since(&self, earlier: &Counters) -> Counters {
        Counters {
            key_reconciles: self.key_reconciles - earlier.key_reconciles,
            key_failures: self.key_failures - earlier.key_failures,
            engine_requests: self.engine_requests - earlier.engine_requests,
            engine_client_errors: self.engine_client_errors - earlier.engine_client_errors,
        }
    }
}

/// A phase's CPU, the processes outside the columns that used the most of it, and what the
/// operator and the engines counted in it.
#[derive(Clone)]
struct Phase {
    cpu: Cpu,
    others: Vec<(String, f64)>,
    counters: Counters,
    /// The API server's requests and watch events in the phase, largest first.
    api: Vec<(String, f64)>,
}

/// Counters at one moment.
struct Sample {
    cpu: Cpu,
    procs: Snapshot,
    counters: Counters,
    api: ApiCounters,
}

/// The processes a run accounts.
struct Pids {
    operator: u32,
    operator_ip: String,
    /// (pod name, pod IP, pid)
    engines: Vec<(String, String, u32)>,
    apiserver: Option<u32>,
    etcd: Option<u32>,
    controller_manager: Option<u32>,
}

impl Pids {
    async fn sample(&self, cluster: &Cluster) -> Sample {
        let counters = self.counters(cluster).await;
        let api = match cluster.client().await {
            Ok(client) => ApiCounters::scrape(&client).await,
            Err(e) => Err(e),
        }
        .unwrap_or_else(|e| {
            eprintln!("  (API server metrics: {e:#})");
            ApiCounters::default()
        });
        let procs = snapshot();
        let cpu = Cpu {
            operator: cpu_seconds(self.operator),
            engines: self.engines.iter().map(|(_, _, p)| cpu_seconds(*p)).sum(),
            apiserver: self.apiserver.map_or(0.0, cpu_seconds),
            etcd: self.etcd.map_or(0.0, cpu_seconds),
            controller_manager: self.controller_manager.map_or(0.0, cpu_seconds),
            bench: cpu_seconds(std::process::id()),
            machine: machine_busy_seconds(),
            wall: wall_seconds(),
        };
        Sample {
            cpu,
            procs,
            counters,
            api,
        }
    }

    /// The operator's and the engines' counters (zero where a scrape failed: the figure is
    /// then missing, not the run).
    async fn counters(&self, cluster: &Cluster) -> Counters {
        let mut c = Counters::default();
        let url = format!(
            "http://{}:{OPERATOR_METRICS_PORT}/metrics",
            self.operator_ip
        );
        match scrape(cluster, &url).await {
            Ok(text) => {
                c.key_reconciles = sum_series(&text, "kubekms_operator_reconciles_total{", |l| {
                    l.contains("kind=\"Key\"")
                });
                c.key_failures =
                    sum_series(&text, "kubekms_operator_reconcile_failures_total{", |l| {
                        l.contains("kind=\"Key\"")
                    });
            }
            Err(e) => eprintln!("  (operator metrics: {e:#})"),
        }
        for (pod, ip, _) in &self.engines {
            match node::engine_metrics(cluster, ip).await {
                Ok(text) => {
                    c.engine_requests += sum_series(&text, "kubekms_requests_total{", |_| true);
                    c.engine_client_errors += sum_series(&text, "kubekms_requests_total{", |l| {
                        l.contains("outcome=\"client_error\"")
                    });
                }
                Err(e) => eprintln!("  (engine {pod} metrics: {e:#})"),
            }
        }
        c
    }

    /// What happened between `earlier` and `now`.
    fn phase(&self, earlier: &Sample, now: &Sample) -> Phase {
        let mut ours = vec![self.operator, std::process::id()];
        ours.extend(self.engines.iter().map(|(_, _, p)| *p));
        ours.extend(
            [self.apiserver, self.etcd, self.controller_manager]
                .into_iter()
                .flatten(),
        );
        Phase {
            cpu: now.cpu.since(&earlier.cpu),
            others: busiest_since(&earlier.procs, &now.procs, &ours),
            counters: now.counters.since(&earlier.counters),
            api: now.api.since(&earlier.api),
        }
    }

    /// From `earlier` until now.
    async fn phase_since(&self, cluster: &Cluster, earlier: &Sample) -> Phase {
        let now = self.sample(cluster).await;
        self.phase(earlier, &now)
    }

    /// Fails when a container's process is gone (restarted or killed): its peak RSS and CPU
    /// would no longer cover the run.
    fn ensure_alive(&self) -> Result<()> {
        let alive = |pid: u32| Path::new(&format!("/proc/{pid}")).exists();
        ensure!(
            alive(self.operator),
            "the operator's process {} is gone (container restarted?)",
            self.operator
        );
        for (pod, _, pid) in &self.engines {
            ensure!(
                alive(*pid),
                "engine pod {pod}'s process {pid} is gone (container restarted?)"
            );
        }
        Ok(())
    }
}

/// What the run measured; printed even when a later phase failed.
#[derive(Default)]
struct Figures {
    keys: usize,
    apply: Option<Duration>,
    ready: Option<Duration>,
    ready_count: usize,
    /// Until the operator's queue of events was empty, from the first apply.
    events_written: Option<Duration>,
    operator_rss_ready_mb: Option<f64>,
    operator_rss_peak_mb: Option<f64>,
    /// (pod, peak RSS MB) at the end.
    engine_rss_mb: Vec<(String, f64)>,
    cpu_ready: Option<Phase>,
    cpu_steady: Option<Phase>,
    wrk_service: Option<(WrkResult, Phase)>,
    wrk_direct: Option<(String, WrkResult, Phase)>,
    /// When each engine's clock call answered (its due work done), from the wave's start.
    due_work: Vec<(String, Duration)>,
    rotated: Option<Duration>,
    rotated_count: usize,
    over_rotated: usize,
    cpu_rotation: Option<Phase>,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let args = Args::parse();
    let n = args
        .keys
        .unwrap_or(if args.quick { QUICK_KEYS } else { TARGET_KEYS });
    ensure!(
        n > 0 && args.apply_concurrency > 0,
        "--keys and --apply-concurrency must be positive"
    );
    check_wrk()?;
    println!(
        "control plane GOGC: {} (KUBEKMS_CP_GOGC; e2e/scripts/control-plane.sh)",
        std::env::var("KUBEKMS_CP_GOGC").unwrap_or_else(|_| "400, the default".to_owned())
    );
    let image = node::image_archive()?;
    // Which build ran: the archive is rewritten by every `make image`.
    let built = std::process::Command::new("date")
        .args(["-u", "-r"])
        .arg(&image)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    println!("image: {} (written {built})", image.display());

    eprintln!("starting a one-node cluster and loading the image");
    let started = Instant::now();
    let cluster = node::start_node_async().await?;
    eprintln!(
        "  node Ready, image loaded in {:.1} s ({})",
        started.elapsed().as_secs_f64(),
        cluster.dir().display()
    );
    let mut figures = Figures {
        keys: n,
        ..Figures::default()
    };
    let result = run(&cluster, &args, &mut figures).await;
    node::explain_failure(&cluster, &result);
    cluster.stop();
    print_table(&figures, &args);
    result?;
    let wrk_errors = [
        figures.wrk_service.as_ref().map(|(w, _)| w),
        figures.wrk_direct.as_ref().map(|(_, w, _)| w),
    ]
    .into_iter()
    .flatten()
    .map(WrkResult::errors)
    .sum::<u64>();
    ensure!(wrk_errors == 0, "wrk saw {wrk_errors} errors");
    ensure!(
        figures.ready.is_some() && figures.rotated.is_some(),
        "a phase timed out"
    );
    Ok(())
}

async fn run(cluster: &Cluster, args: &Args, figures: &mut Figures) -> Result<()> {
    install(cluster, args).await?;
    let pids = find_pids(cluster).await?;
    eprintln!(
        "  operator pid {}, engine pods {}",
        pids.operator,
        pids.engines
            .iter()
            .map(|(pod, ip, pid)| format!("{pod} ({ip}, pid {pid})"))
            .collect::<Vec<_>>()
            .join(", ")
    );

    let client = cluster.client().await?;
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    let mut ns = k8s_openapi::api::core::v1::Namespace::default();
    ns.metadata.name = Some(KEY_NAMESPACE.into());
    namespaces.create(&PostParams::default(), &ns).await?;
    let keys: Api<Key> = Api::namespaced(client, KEY_NAMESPACE);
    let seen = Seen::default();
    let watch = tokio::spawn(watch_keys(keys.clone(), seen.clone()));
    let result = phases(cluster, args, &pids, &keys, &seen, figures).await;
    watch.abort();
    // Peak RSS over the whole run, whatever phase it ended in.
    figures.operator_rss_peak_mb = vm_hwm_mb(pids.operator).ok();
    figures.engine_rss_mb = pids
        .engines
        .iter()
        .filter_map(|(pod, _, pid)| Some((pod.clone(), vm_hwm_mb(*pid).ok()?)))
        .collect();
    result
}

/// `helm install` with the engines' test clock and the operator's resync period; both
/// Deployments rolled out.
async fn install(cluster: &Cluster, args: &Args) -> Result<()> {
    eprintln!("helm install");
    let started = Instant::now();
    let resync = args
        .resync_seconds
        .map(|s| format!("operator.extraArgs={{--resync-seconds={s}}}"));
    let mut sets = vec!["engine.testClock=true"];
    if args.engine_plain_http {
        sets.push("engine.tls.enabled=false");
    }
    sets.extend(resync.as_deref());
    node::install(cluster, &sets, ROLLOUT).await?;
    wait_for(
        &format!("{ENGINE_REPLICAS} engine pods running"),
        ROLLOUT,
        || async {
            Ok((node::pods_of(cluster, "engine").await?.len() == ENGINE_REPLICAS).then_some(()))
        },
    )
    .await?;
    eprintln!(
        "  operator and engine pods Ready in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The pid of the only process of `argv` in pod `name` (found by the pod's UID in the
/// process's cgroup).
async fn pod_process(cluster: &Cluster, pod: &str, argv: &[&str]) -> Result<u32> {
    let uid = cluster
        .kubectl(
            &[
                "-n",
                NAMESPACE,
                "get",
                "pod",
                pod,
                "-o",
                "jsonpath={.metadata.uid}",
            ],
            None,
        )
        .await?;
    let uid = uid.trim();
    ensure!(!uid.is_empty(), "pod {pod} has no UID");
    let pids = find_processes(argv, uid);
    match pids.as_slice() {
        [pid] => Ok(*pid),
        _ => bail!(
            "pod {pod} (UID {uid}): expected one process `{}`, found {pids:?}",
            argv.join(" ")
        ),
    }
}

async fn find_pids(cluster: &Cluster) -> Result<Pids> {
    let operators = node::running_pods(cluster, "operator").await?;
    let [operator] = operators.as_slice() else {
        bail!("expected one operator pod, found {}", operators.len());
    };
    let operator_ip = operator.ip.clone();
    let operator = pod_process(cluster, &operator.name, &[BINARY, "run"]).await?;
    let mut engines = Vec::new();
    for pod in node::running_pods(cluster, "engine").await? {
        let pid = pod_process(cluster, &pod.name, &[BINARY, "engine"]).await?;
        engines.push((pod.name, pod.ip, pid));
    }
    ensure!(
        engines.len() == ENGINE_REPLICAS,
        "expected {ENGINE_REPLICAS} engine pods, found {}",
        engines.len()
    );
    Ok(Pids {
        operator,
        operator_ip,
        engines,
        apiserver: cluster.pid_of("kube-apiserver"),
        etcd: cluster.pid_of("etcd"),
        controller_manager: cluster.pid_of("kube-controller-manager"),
    })
}

async fn phases(
    cluster: &Cluster,
    args: &Args,
    pids: &Pids,
    keys: &Api<Key>,
    seen: &Seen,
    figures: &mut Figures,
) -> Result<()> {
    let n = figures.keys;
    let timeout = Duration::from_secs(args.timeout);

    // 1. Scale: applied until Ready.
    eprintln!("applying {n} Keys ({} at a time)", args.apply_concurrency);
    let cpu0 = pids.sample(cluster).await;
    let started = Instant::now();
    apply_keys(keys, n, args.apply_concurrency, MANAGER).await?;
    figures.apply = Some(started.elapsed());
    eprintln!(
        "  applied {n} Keys in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    (figures.ready_count, figures.ready) =
        wait_all_ready(seen, n, started, timeout, || pids.ensure_alive()).await?;
    figures.cpu_ready = Some(pids.phase_since(cluster, &cpu0).await);
    figures.operator_rss_ready_mb = Some(vm_hwm_mb(pids.operator)?);
    pids.ensure_alive()?;
    eprintln!(
        "  {}/{n} Ready after {:.1} s; operator VmHWM {:.1} MB",
        figures.ready_count,
        started.elapsed().as_secs_f64(),
        figures.operator_rss_ready_mb.unwrap_or_default()
    );

    if figures.ready.is_none() {
        print_not_ready(keys).await;
    }
    // The operator writes its events one at a time after the status (as client-go's
    // broadcaster does); the API server is busy with them until the queue is empty, so the
    // quiet window and the throughput wait for that.
    figures.events_written = events_drained(cluster, pids, started, timeout).await;
    eprintln!(
        "  the operator's events written after {}",
        secs(figures.events_written)
    );

    // 2. Steady state: nothing changes; the operator's resync runs.
    eprintln!("quiet for {} s", args.steady_seconds);
    let cpu0 = pids.sample(cluster).await;
    tokio::time::sleep(Duration::from_secs(args.steady_seconds)).await;
    figures.cpu_steady = Some(pids.phase_since(cluster, &cpu0).await);

    // 3. Encrypt through the Service and straight to one engine pod.
    throughput(cluster, args, pids, figures).await?;
    pids.ensure_alive()?;

    // 4. The rotation wave, if there is a whole wave to wait for.
    if figures.ready.is_none() {
        bail!("not every Key became Ready: no rotation wave");
    }
    rotation_wave(cluster, pids, seen, timeout, figures).await?;
    pids.ensure_alive()?;
    Ok(())
}

/// An administrator's access key, one key made with `aws-sdk-kms`, then one Encrypt of it
/// pre-signed and replayed by wrk inside the cluster's network namespace: through the
/// Service, then to one engine pod.
async fn throughput(
    cluster: &Cluster,
    args: &Args,
    pids: &Pids,
    figures: &mut Figures,
) -> Result<()> {
    let service_ip = node::engine_service_ip(cluster).await?;
    let service = format!("{service_ip}:4599");
    let endpoint = node::engine_endpoint(cluster, &service_ip)?;
    let admin = node::administrator(
        cluster,
        "pods-bench-admin",
        ACCESS_KEY_ID,
        SECRET_ACCESS_KEY,
        &endpoint,
        ROLLOUT,
    )
    .await?;
    let key_id = admin
        .create_key()
        .description("kubekms-pods-bench")
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("{}", aws_sdk_kms::error::DisplayErrorContext(e)))
        .context("CreateKey")?
        .key_metadata
        .map(|m| m.key_id)
        .context("CreateKey answered no KeyMetadata")?;

    let plaintext = B64.encode(&*random_bytes(PLAINTEXT_BYTES)?);
    let body = json!({ "KeyId": key_id, "Plaintext": plaintext }).to_string();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .context("the clock is before 1970")?
        .as_millis();
    // Signed for the Service's address; the pod gets the same bytes (the engine checks the
    // signature over the Host header it receives, not its own address).
    let headers = sign_kms_request(
        ACCESS_KEY_ID,
        SECRET_ACCESS_KEY,
        REGION,
        &service,
        "Encrypt",
        body.as_bytes(),
        i64::try_from(now).context("milliseconds since 1970")?,
    );
    let script = cluster.dir().join("encrypt.lua");
    std::fs::write(&script, wrk_script(&headers, &body))
        .with_context(|| format!("writing {}", script.display()))?;

    let (pod, pod_ip, _) = pids.engines.first().cloned().context("no engine pod")?;
    let scheme = engine_scheme();
    let service_url = format!("{scheme}://{service}/");
    let direct_url = format!("{scheme}://{pod_ip}:4599/");
    for url in [&service_url, &direct_url] {
        check_presigned(cluster, &headers, &body, url).await?;
    }
    eprintln!(
        "wrk -t{} -c{} -d{}s: Encrypt through the Service {service_url}",
        args.wrk_threads, args.wrk_connections, args.wrk_seconds
    );
    figures.wrk_service = Some(run_wrk(cluster, args, pids, &script, &service_url).await?);
    eprintln!("wrk: Encrypt straight to engine pod {pod} {direct_url}");
    let (wrk, cpu) = run_wrk(cluster, args, pids, &script, &direct_url).await?;
    figures.wrk_direct = Some((pod, wrk, cpu));
    Ok(())
}

/// Sends the pre-signed request once with curl inside the cluster's network namespace and
/// checks the answer, so a refused signature or a wrong body stops the bench before wrk.
async fn check_presigned(
    cluster: &Cluster,
    headers: &[(String, String)],
    body: &str,
    url: &str,
) -> Result<()> {
    let mut argv: Vec<String> = ["exec", "curl", "-sS", "-X", "POST", "-w", "\n%{http_code}"]
        .map(str::to_owned)
        .to_vec();
    // The bench reaches engine pods by IP, which their certificate does not name, and
    // measures rather than authenticates (wrk does not verify either).
    if url.starts_with("https://") {
        argv.push("--insecure".to_owned());
    }
    for (name, value) in headers {
        argv.push("-H".to_owned());
        argv.push(format!("{name}: {value}"));
    }
    argv.extend(["--data-binary".to_owned(), body.to_owned(), url.to_owned()]);
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    let out = cluster.node_script_async(&argv).await?;
    let (answer, status) = out.trim_end().rsplit_once('\n').unwrap_or(("", &out));
    ensure!(
        status.trim() == "200" && answer.contains("\"CiphertextBlob\""),
        "the pre-signed Encrypt to {url} got HTTP {status}: {answer}"
    );
    Ok(())
}

async fn run_wrk(
    cluster: &Cluster,
    args: &Args,
    pids: &Pids,
    script: &Path,
    url: &str,
) -> Result<(WrkResult, Phase)> {
    let mut argv = vec!["exec".to_owned(), "wrk".to_owned()];
    argv.extend(wrk_args(
        args.wrk_threads,
        args.wrk_connections,
        args.wrk_seconds,
        script,
        url,
    ));
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    let cpu0 = pids.sample(cluster).await;
    let out = cluster
        .node_script_async(&argv)
        .await
        .with_context(|| format!("wrk against {url}"))?;
    let cpu = pids.phase_since(cluster, &cpu0).await;
    let wrk = parse_wrk(&out).with_context(|| format!("wrk output:\n{out}"))?;
    eprintln!(
        "  {:.0} req/s, p50 {:.2} ms, p99 {:.2} ms, {} errors{}",
        wrk.rps(),
        wrk.p50_us as f64 / 1000.0,
        wrk.p99_us as f64 / 1000.0,
        wrk.errors(),
        wrk.first_bad
            .as_deref()
            .map(|b| format!(" (first: {b})"))
            .unwrap_or_default()
    );
    Ok((wrk, cpu))
}

/// Every engine pod's clock 91 days on at once; until each has run its due work, and until
/// every Key shows key version 2.
async fn rotation_wave(
    cluster: &Cluster,
    pids: &Pids,
    seen: &Seen,
    timeout: Duration,
    figures: &mut Figures,
) -> Result<()> {
    let n = figures.keys;
    eprintln!(
        "rotation wave: {} engine clocks 91 days on",
        pids.engines.len()
    );
    let cpu0 = pids.sample(cluster).await;
    let started = Instant::now();
    let mut advances: FuturesUnordered<_> = pids
        .engines
        .iter()
        .map(|(pod, ip, _)| async move {
            let answer = node::advance_engine_clock(cluster, ip, WAVE).await;
            (pod.clone(), answer, started.elapsed())
        })
        .collect();
    let mut last_report = Instant::now();
    loop {
        tokio::select! {
            Some((pod, answer, took)) = advances.next(), if !advances.is_empty() => {
                answer.with_context(|| format!("advancing the clock of engine pod {pod}"))?;
                eprintln!("  {pod}: due work done after {:.1} s", took.as_secs_f64());
                figures.due_work.push((pod, took));
            }
            () = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
        figures.rotated_count = count_ready(seen, 2)?;
        if figures.rotated.is_none() && figures.rotated_count >= n {
            figures.rotated = Some(started.elapsed());
        }
        if figures.rotated.is_some() && advances.is_empty() {
            break;
        }
        if started.elapsed() > timeout {
            eprintln!("  timed out: {}/{n} show version 2", figures.rotated_count);
            break;
        }
        if last_report.elapsed() > Duration::from_secs(10) {
            pids.ensure_alive()?;
            eprintln!(
                "  {}/{n} show version 2 after {:.0} s",
                figures.rotated_count,
                started.elapsed().as_secs_f64()
            );
            last_report = Instant::now();
        }
    }
    figures.cpu_rotation = Some(pids.phase_since(cluster, &cpu0).await);
    figures.over_rotated = count_above(seen, 2)?;
    eprintln!(
        "  {}/{n} show version 2 after {}",
        figures.rotated_count,
        secs(figures.rotated)
    );
    Ok(())
}

/// Waits (up to `limit`) until the operator has no event queued; how long that took from
/// `since`. None when it never emptied or its metrics could not be read.
async fn events_drained(
    cluster: &Cluster,
    pids: &Pids,
    since: Instant,
    limit: Duration,
) -> Option<Duration> {
    let url = format!(
        "http://{}:{OPERATOR_METRICS_PORT}/metrics",
        pids.operator_ip
    );
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        let text = scrape(cluster, &url).await.ok()?;
        let pending = text
            .lines()
            .find_map(|l| l.strip_prefix("kubekms_operator_events_pending "))?;
        if pending.trim().parse::<f64>().ok()? == 0.0 {
            return Some(since.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    None
}

/// A few Keys that are not Ready, with what their status says, for a run that timed out.
async fn print_not_ready(keys: &Api<Key>) {
    let list = match keys.list(&Default::default()).await {
        Ok(list) => list,
        Err(e) => {
            eprintln!("  (cannot list the Keys: {e})");
            return;
        }
    };
    let not_ready: Vec<&Key> = list
        .items
        .iter()
        .filter(|k| {
            !k.status.as_ref().is_some_and(|s| {
                s.observed_generation == k.metadata.generation
                    && s.conditions
                        .iter()
                        .any(|c| c.type_ == "Ready" && c.status == "True")
            })
        })
        .collect();
    let no_status = not_ready.iter().filter(|k| k.status.is_none()).count();
    let no_key_id = not_ready
        .iter()
        .filter(|k| k.status.as_ref().is_some_and(|s| s.key_id.is_none()))
        .count();
    eprintln!(
        "  {} Keys not Ready: {no_status} without any status, {no_key_id} with a status but no \
         key id; for example:",
        not_ready.len()
    );
    for k in not_ready.iter().take(5) {
        eprintln!(
            "    {} generation {:?}: {}",
            k.metadata.name.as_deref().unwrap_or_default(),
            k.metadata.generation,
            k.status
                .as_ref()
                .map(|s| serde_json::to_string(s).unwrap_or_default())
                .unwrap_or_else(|| "no status".to_owned())
        );
    }
}

/// GET `url` from inside the cluster's network namespace.
async fn scrape(cluster: &Cluster, url: &str) -> Result<String> {
    cluster
        .node_script_async(&["exec", "curl", "-sS", "--fail", "--max-time", "10", url])
        .await
}

/// `https` when the installed release's engine serves TLS.
fn engine_scheme() -> &'static str {
    if node::engine_ca().is_some() {
        "https"
    } else {
        "http"
    }
}

/// The sum of the series whose line starts with `prefix` (a name and `{`) and passes `keep`.
fn sum_series(text: &str, prefix: &str, keep: impl Fn(&str) -> bool) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(prefix) && keep(l))
        .filter_map(|l| l.rsplit_once(' ')?.1.trim().parse::<f64>().ok())
        .sum()
}

/// A duration with its unit ("12.3 s"), or "not reached".
fn secs(d: Option<Duration>) -> String {
    match d {
        Some(_) => format!("{} s", seconds(d)),
        None => seconds(d),
    }
}

/// "≤ 60 s (met), aim 45 s (missed)", or only the limits below the target's key count.
fn against(measured: Option<Duration>, target: Duration, aim: Duration, keys: usize) -> String {
    let (t, a) = (target.as_secs(), aim.as_secs());
    if keys < TARGET_KEYS {
        return format!("≤ {t} s, aim {a} s (at 10,000 Keys)");
    }
    format!(
        "≤ {t} s ({}), aim {a} s ({})",
        verdict(measured.is_some_and(|d| d <= target)),
        verdict(measured.is_some_and(|d| d <= aim)).to_lowercase()
    )
}

fn mb(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| format!("{v:.1}"))
}

/// The operator's resync period as the run set it.
fn resync_shown(args: &Args) -> String {
    args.resync_seconds
        .map_or_else(|| "600 (the default)".to_owned(), |s| s.to_string())
}

fn print_table(f: &Figures, args: &Args) {
    println!();
    println!(
        "kubekms-pods-bench: {} Keys, one node (operator 1 pod, engine {ENGINE_REPLICAS} pods), \
         operator --resync-seconds={}, the engine's API {}",
        f.keys,
        resync_shown(args),
        if args.engine_plain_http {
            "in plain HTTP"
        } else {
            "over TLS (the chart's default)"
        }
    );
    println!();
    println!("| measure | target (issue 9) | measured |");
    println!("|---|---|---:|");
    println!("| apply {} Keys | | {} |", f.keys, secs(f.apply));
    println!(
        "| all Ready | {} | {}{} |",
        against(f.ready, TARGET_READY, AIM_READY, f.keys),
        secs(f.ready),
        if f.ready.is_none() {
            format!(" ({}/{})", f.ready_count, f.keys)
        } else {
            String::new()
        }
    );
    println!(
        "| the operator's events written (from the first apply) | | {} |",
        secs(f.events_written)
    );
    let rss_target = if f.keys < TARGET_KEYS {
        format!("≤ {TARGET_RSS_MB:.0} MB (at 10,000 Keys)")
    } else {
        format!(
            "≤ {TARGET_RSS_MB:.0} MB ({})",
            verdict(f.operator_rss_peak_mb.is_some_and(|v| v <= TARGET_RSS_MB))
        )
    };
    println!(
        "| operator peak RSS MB (at Ready) | {rss_target} | {} ({}) |",
        mb(f.operator_rss_peak_mb),
        mb(f.operator_rss_ready_mb)
    );
    for (pod, rss) in &f.engine_rss_mb {
        println!("| engine {pod} peak RSS MB | | {rss:.1} |");
    }
    for (pod, took) in &f.due_work {
        println!(
            "| wave: engine {pod} due work done (its clock call answered) | | {} |",
            secs(Some(*took))
        );
    }
    println!(
        "| wave: every Key's status at version 2 (operator resync {}) | {} | {}{} |",
        resync_shown(args),
        against(f.rotated, TARGET_ROTATION, AIM_ROTATION, f.keys),
        secs(f.rotated),
        if f.rotated.is_none() {
            format!(" ({}/{})", f.rotated_count, f.keys)
        } else {
            String::new()
        }
    );
    println!(
        "| Keys above version 2 (each rotates once) | 0 | {} |",
        f.over_rotated
    );

    println!();
    println!(
        "CPU seconds per phase (utime+stime from /proc; \"other\" = the machine's busy time \
         not in a column: kubelet, containerd, kube-proxy, forwarders, wrk):"
    );
    println!();
    println!(
        "| phase | wall s | operator | engines | kube-apiserver | etcd | kube-controller-manager \
         | bench | other | machine (of 2 × wall) | busiest others | Key reconciles (failed) \
         | engine requests (client errors) |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|");
    let wrk_service = f.wrk_service.as_ref().map(|(_, c)| c.clone());
    let wrk_direct = f.wrk_direct.as_ref().map(|(_, _, c)| c.clone());
    for (phase, cpu) in [
        ("apply → all Ready", f.cpu_ready.clone()),
        ("after the Ready phase, no changes", f.cpu_steady.clone()),
        ("wrk through the Service", wrk_service),
        ("wrk straight to a pod", wrk_direct),
        ("rotation wave", f.cpu_rotation.clone()),
    ] {
        let Some(Phase {
            cpu: c,
            others,
            counters: n,
            ..
        }) = cpu
        else {
            continue;
        };
        let others = others
            .iter()
            .take(4)
            .filter(|(_, s)| *s >= 0.1)
            .map(|(name, s)| format!("{name} {s:.1}"))
            .collect::<Vec<_>>()
            .join(", ");
        println!(
            "| {phase} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | \
             {others} | {:.0} ({:.0}) | {:.0} ({:.0}) |",
            c.wall,
            c.operator,
            c.engines,
            c.apiserver,
            c.etcd,
            c.controller_manager,
            c.bench,
            c.other(),
            c.machine,
            n.key_reconciles,
            n.key_failures,
            n.engine_requests,
            n.engine_client_errors,
        );
    }

    println!();
    println!(
        "Encrypt (SYMMETRIC_DEFAULT, {PLAINTEXT_BYTES}-byte plaintext, one pre-signed request \
         replayed), wrk -t{} -c{} -d{}s inside the cluster's network namespace:",
        args.wrk_threads, args.wrk_connections, args.wrk_seconds
    );
    println!();
    println!("| target | req/s | p50 ms | p99 ms | max ms | requests | errors |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    let row = |what: String, w: &WrkResult| {
        println!(
            "| {what} | {:.0} | {:.2} | {:.2} | {:.1} | {} | {} |",
            w.rps(),
            w.p50_us as f64 / 1000.0,
            w.p99_us as f64 / 1000.0,
            w.max_us as f64 / 1000.0,
            w.requests,
            w.errors()
        );
    };
    if let Some((w, _)) = &f.wrk_service {
        row("the engine Service (cluster IP)".to_owned(), w);
    }
    if let Some((pod, w, _)) = &f.wrk_direct {
        row(format!("one engine pod directly ({pod})"), w);
    }
    if let (Some((s, _)), Some((_, d, _))) = (&f.wrk_service, &f.wrk_direct) {
        if d.rps() > 0.0 {
            println!();
            println!(
                "Service / direct: {:.2} of the requests per second",
                s.rps() / d.rps()
            );
        }
    }

    for (phase, cpu) in [
        ("apply → all Ready", &f.cpu_ready),
        ("rotation wave", &f.cpu_rotation),
    ] {
        let Some(Phase { api, .. }) = cpu else {
            continue;
        };
        if api.is_empty() {
            continue;
        }
        println!();
        println!(
            "The API server in the phase \"{phase}\" (requests by verb and resource, watch \
             events sent by kind; the {API_SERIES} largest):"
        );
        println!();
        println!("| series | count | per Key |");
        println!("|---|---:|---:|");
        for (series, count) in api.iter().take(API_SERIES) {
            println!(
                "| {series} | {count:.0} | {:.2} |",
                count / f.keys.max(1) as f64
            );
        }
    }
}
