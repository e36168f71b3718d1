//! `kubekms-scale-bench`: the operator at scale, on the local control plane.
//!
//! For each key count N (default 1,000 then 10,000; `--keys N` repeats; `--quick` is 200): a
//! fresh control plane in its own directory, the CRDs, the release operator (cluster store,
//! `--test-clock`), then N Key manifests (SYMMETRIC_DEFAULT, rotation every 90 days) applied by
//! server-side apply from concurrent tasks. It measures, from a watch on the Keys:
//!
//! - the time from the first apply until every Key is Ready (observedGeneration current);
//! - the operator's peak RSS (VmHWM in `/proc/PID/status`);
//! - after moving the test clock 91 days on, the time until every Key's status shows key
//!   material version 2 (the whole wave falls due at once).
//!
//! and, per phase, the CPU seconds of the operator, kube-apiserver and etcd (from `/proc`), so
//! a missed target says where the time went. Prints one table with the targets beside.
//!
//! `cargo run --release -p kubekms-e2e --bin kubekms-scale-bench -- [--keys N]... [--quick]
//! [--apply-concurrency C] [--timeout SECS] [--operator-bin PATH] [--keep]`

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use kube::api::PostParams;
use kube::Api;
use kubekms_bench::keys::{apply_keys, count_above, count_ready, wait_all_ready, watch_keys, Seen};
use kubekms_bench::procfs::{cpu_seconds, vm_hwm_mb, wall_seconds, Cpu};
use kubekms_bench::report::{seconds, verdict};
use kubekms_crds::Key;
use kubekms_e2e::cluster::Cluster;
use kubekms_e2e::operator::{http_request, operator_binary, wait_ready};

const TARGET_KEYS: usize = 10_000;
const TARGET_READY: Duration = Duration::from_secs(60);
const TARGET_RSS_MB: f64 = 150.0;
const TARGET_ROTATION: Duration = Duration::from_secs(60);
const KEY_NAMESPACE: &str = "bench";
const BASELINE_NAMESPACE: &str = "bench-alone";
const OPERATOR_NAMESPACE: &str = "kubekms";
const ACCOUNT: &str = "111122223333";
const DAY_MS: u64 = 86_400_000;
/// The field manager of the bench's applies.
const MANAGER: &str = "kubekms-scale-bench";

struct Options {
    keys: Vec<usize>,
    apply_concurrency: usize,
    timeout: Duration,
    operator_bin: Option<PathBuf>,
    keep: bool,
    baseline: bool,
}

fn parse_args() -> Result<Options> {
    let mut opts = Options {
        keys: Vec::new(),
        apply_concurrency: 32,
        timeout: Duration::from_secs(900),
        operator_bin: None,
        keep: false,
        baseline: true,
    };
    let mut quick = false;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or_else(|| anyhow!("{name} needs a value"));
        match arg.as_str() {
            "--keys" => opts
                .keys
                .push(value("--keys")?.parse().context("--keys N")?),
            "--quick" => quick = true,
            "--apply-concurrency" => {
                opts.apply_concurrency = value("--apply-concurrency")?
                    .parse()
                    .context("--apply-concurrency C")?;
            }
            "--timeout" => {
                opts.timeout =
                    Duration::from_secs(value("--timeout")?.parse().context("--timeout SECS")?);
            }
            "--operator-bin" => opts.operator_bin = Some(value("--operator-bin")?.into()),
            "--keep" => opts.keep = true,
            "--no-baseline" => opts.baseline = false,
            "-h" | "--help" => {
                println!(
                    "kubekms-scale-bench [--keys N]... [--quick] [--apply-concurrency C] \
                     [--timeout SECS] [--operator-bin PATH] [--keep] [--no-baseline]\n\
                     Default: --keys 1000 --keys 10000; --quick: 200 keys. After each run the\n\
                     operator is stopped and N more Keys are applied to another namespace: the\n\
                     time the API server alone takes for them (--no-baseline skips it)."
                );
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?} (try --help)"),
        }
    }
    if opts.keys.is_empty() {
        opts.keys = if quick {
            vec![200]
        } else {
            vec![1_000, TARGET_KEYS]
        };
    }
    if opts.apply_concurrency == 0 || opts.keys.contains(&0) {
        bail!("--keys and --apply-concurrency must be positive");
    }
    Ok(opts)
}

/// What one run measured.
#[derive(Default)]
struct Figures {
    keys: usize,
    apply: Option<Duration>,
    ready: Option<Duration>,
    ready_count: usize,
    rss_ready_mb: f64,
    rss_peak_mb: f64,
    due_work: Option<Duration>,
    rotated: Option<Duration>,
    rotated_count: usize,
    over_rotated: usize,
    reconciles_ready: u64,
    reconciles_rotation: u64,
    cpu_ready: Cpu,
    cpu_rotation: Cpu,
    /// Until the operator's queued events were all written, from the start of the phase.
    events_ready: Option<Duration>,
    events_rotation: Option<Duration>,
    /// The same applies with no operator running: what the control plane alone takes.
    apply_alone: Option<Duration>,
    cpu_apply_alone: Cpu,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let opts = parse_args()?;
    let operator_bin = match &opts.operator_bin {
        Some(p) => p.clone(),
        None => operator_binary()?.to_path_buf(),
    };
    eprintln!("operator: {}", operator_bin.display());
    // The control plane's garbage collector setting moves the figures; say which one ran.
    println!(
        "control plane GOGC: {} (KUBEKMS_CP_GOGC; e2e/scripts/control-plane.sh)",
        std::env::var("KUBEKMS_CP_GOGC").unwrap_or_else(|_| "400, the default".to_owned())
    );
    let base = PathBuf::from(format!("/tmp/kubekms-scale-bench-{}", std::process::id()));
    std::fs::create_dir_all(&base).with_context(|| format!("creating {}", base.display()))?;
    let mut results = Vec::new();
    for &n in &opts.keys {
        let dir = base.join(format!("n{n}"));
        eprintln!("== {n} keys (control plane in {})", dir.display());
        // Kept by the watchdog either way: a failed run's logs are named in its error, and the
        // bench removes `base` itself after a run that passed (unless --keep).
        let cp = Cluster::start_in(dir.clone(), true)?;
        let figures = run_one(&cp, &operator_bin, n, &opts).await;
        cp.stop();
        match figures {
            Ok(f) => results.push(f),
            Err(e) => {
                print_table(&results);
                return Err(e.context(format!("the run with {n} keys (logs in {})", dir.display())));
            }
        }
    }
    print_table(&results);
    if !opts.keep {
        let _ = std::fs::remove_dir_all(&base);
    } else {
        eprintln!("kept {}", base.display());
    }
    Ok(())
}

async fn run_one(cp: &Cluster, operator_bin: &Path, n: usize, opts: &Options) -> Result<Figures> {
    let client = cp.client().await?;
    for ns in [OPERATOR_NAMESPACE, KEY_NAMESPACE] {
        let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
        let mut obj = k8s_openapi::api::core::v1::Namespace::default();
        obj.metadata.name = Some(ns.into());
        namespaces.create(&PostParams::default(), &obj).await?;
    }
    let mut operator = OperatorProcess::start(cp, operator_bin)?;
    let pid = operator.pid();
    let mut figures = Figures {
        keys: n,
        ..Figures::default()
    };

    let keys: Api<Key> = Api::namespaced(client.clone(), KEY_NAMESPACE);
    let seen = Seen::default();
    let watch = tokio::spawn(watch_keys(keys.clone(), seen.clone()));
    let count = |min_version: i32| count_ready(&seen, min_version);

    // Apply.
    let procs = pids(cp, pid);
    let cpu0 = cpu_sample(&procs);
    let started = Instant::now();
    apply_keys(&keys, n, opts.apply_concurrency, MANAGER).await?;
    figures.apply = Some(started.elapsed());
    eprintln!(
        "  applied {n} Keys in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    // Ready.
    let alive = || {
        if operator.is_running() {
            Ok(())
        } else {
            Err(anyhow!(
                "the operator died; log: {}",
                operator.log.display()
            ))
        }
    };
    (figures.ready_count, figures.ready) =
        wait_all_ready(&seen, n, started, opts.timeout, alive).await?;
    figures.cpu_ready = cpu_sample(&procs).since(&cpu0);
    figures.rss_ready_mb = vm_hwm_mb(pid)?;
    figures.reconciles_ready = operator.key_reconciles().await.unwrap_or(0);
    eprintln!(
        "  {}/{n} Ready after {:.1} s; operator VmHWM {:.1} MB",
        figures.ready_count,
        started.elapsed().as_secs_f64(),
        figures.rss_ready_mb
    );

    figures.events_ready = operator.events_drained(started, opts.timeout).await;
    eprintln!("  events written after {}", seconds(figures.events_ready));

    // The rotation wave: every key falls due at the same moment.
    if figures.ready.is_some() {
        let cpu1 = cpu_sample(&procs);
        let started = Instant::now();
        let admin = operator.admin.clone();
        let advance = tokio::spawn(async move {
            let millis = (91 * DAY_MS).to_string();
            let r = http_request(&admin, "POST", "/admin/clock/advance", &millis).await;
            (r, started.elapsed())
        });
        let mut advance = Some(advance);
        let mut last_report = Instant::now();
        loop {
            if advance.as_ref().is_some_and(|a| a.is_finished()) {
                if let Some(a) = advance.take() {
                    let (result, took) = a.await.context("the clock task")?;
                    let (status, body) = result.context("POST /admin/clock/advance")?;
                    if status != 200 {
                        bail!("POST /admin/clock/advance answered {status}: {body}");
                    }
                    figures.due_work = Some(took);
                    eprintln!(
                        "  clock advanced; due work done in {:.1} s",
                        took.as_secs_f64()
                    );
                }
            }
            let rotated = count(2)?;
            figures.rotated_count = rotated;
            if rotated >= n {
                figures.rotated = Some(started.elapsed());
                break;
            }
            if !operator.is_running() {
                bail!("the operator died; log: {}", operator.log.display());
            }
            if started.elapsed() > opts.timeout {
                eprintln!("  timed out: {rotated}/{n} rotated");
                break;
            }
            if last_report.elapsed() > Duration::from_secs(10) {
                eprintln!(
                    "  {rotated}/{n} rotated after {:.0} s",
                    started.elapsed().as_secs_f64()
                );
                last_report = Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        figures.cpu_rotation = cpu_sample(&procs).since(&cpu1);
        figures.over_rotated = count_above(&seen, 2)?;
        figures.reconciles_rotation = operator
            .key_reconciles()
            .await
            .unwrap_or(0)
            .saturating_sub(figures.reconciles_ready);
        if let Some(a) = advance {
            if let Ok((_, took)) = a.await {
                figures.due_work = Some(took);
            }
        }
        eprintln!(
            "  {}/{n} rotated after {:.1} s",
            figures.rotated_count,
            started.elapsed().as_secs_f64()
        );
        figures.events_rotation = operator.events_drained(started, opts.timeout).await;
        eprintln!(
            "  events written after {}",
            seconds(figures.events_rotation)
        );
    }
    figures.rss_peak_mb = vm_hwm_mb(pid)?;
    watch.abort();
    operator.kill();
    match writes_by_resource(&client).await {
        Ok(writes) => {
            eprintln!("  writes the API server served (Ready and rotation phases, all clients):");
            for (what, count) in writes.iter().filter(|(_, c)| *c >= (n as u64) / 10) {
                eprintln!("    {count:>7}  {what}");
            }
        }
        Err(e) => eprintln!("  (cannot read the API server's request counts: {e:#})"),
    }

    if opts.baseline {
        // The floor under "all Ready": the same applies with nothing reacting to them but the
        // control plane itself (its controller manager included).
        let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
        let mut obj = k8s_openapi::api::core::v1::Namespace::default();
        obj.metadata.name = Some(BASELINE_NAMESPACE.into());
        namespaces.create(&PostParams::default(), &obj).await?;
        let alone: Api<Key> = Api::namespaced(client.clone(), BASELINE_NAMESPACE);
        let cpu0 = cpu_sample(&procs);
        let started = Instant::now();
        apply_keys(&alone, n, opts.apply_concurrency, MANAGER).await?;
        figures.apply_alone = Some(started.elapsed());
        figures.cpu_apply_alone = cpu_sample(&procs).since(&cpu0);
        eprintln!(
            "  with no operator running, {n} more Keys applied in {:.1} s",
            started.elapsed().as_secs_f64()
        );
    }
    Ok(figures)
}

/// The API server's count of write requests by verb and resource, most first.
async fn writes_by_resource(client: &kube::Client) -> Result<Vec<(String, u64)>> {
    let request = http::Request::get("/metrics")
        .body(Vec::new())
        .context("building GET /metrics")?;
    let text = client.request_text(request).await?;
    let mut counts: HashMap<String, u64> = HashMap::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("apiserver_request_total{") else {
            continue;
        };
        let Some((labels, value)) = rest.rsplit_once("} ") else {
            continue;
        };
        let label = |name: &str| {
            labels
                .split(',')
                .find_map(|kv| kv.strip_prefix(&format!("{name}=\"")))
                .map(|v| v.trim_end_matches('"').to_owned())
                .unwrap_or_default()
        };
        let verb = label("verb");
        if !matches!(verb.as_str(), "POST" | "PUT" | "PATCH" | "APPLY" | "DELETE") {
            continue;
        }
        let mut what = format!("{verb} {}", label("resource"));
        let sub = label("subresource");
        if !sub.is_empty() {
            what.push('/');
            what.push_str(&sub);
        }
        let count: f64 = value.trim().parse().unwrap_or(0.0);
        *counts.entry(what).or_default() += count as u64;
    }
    let mut sorted: Vec<(String, u64)> = counts.into_iter().collect();
    sorted.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    Ok(sorted)
}

struct Pids {
    operator: u32,
    apiserver: Option<u32>,
    etcd: Option<u32>,
    controller_manager: Option<u32>,
}

fn cpu_sample(p: &Pids) -> Cpu {
    Cpu {
        operator: cpu_seconds(p.operator),
        apiserver: p.apiserver.map_or(0.0, cpu_seconds),
        etcd: p.etcd.map_or(0.0, cpu_seconds),
        controller_manager: p.controller_manager.map_or(0.0, cpu_seconds),
        bench: cpu_seconds(std::process::id()),
        wall: wall_seconds(),
        ..Cpu::default()
    }
}

/// How this benchmark prints a phase's CPU.
trait ShowCpu {
    fn show_control_plane(&self) -> String;
    fn show(&self) -> String;
}

impl ShowCpu for Cpu {
    fn show_control_plane(&self) -> String {
        format!(
            "{:.0}/{:.0}/{:.0} of {:.0}",
            self.apiserver, self.etcd, self.controller_manager, self.wall
        )
    }

    fn show(&self) -> String {
        format!(
            "{:.0}/{:.0}/{:.0}/{:.0}/{:.0} of {:.0}",
            self.operator,
            self.apiserver,
            self.etcd,
            self.controller_manager,
            self.bench,
            self.wall
        )
    }
}

fn print_table(results: &[Figures]) {
    if results.is_empty() {
        return;
    }
    println!();
    println!(
        "| keys | apply s | all Ready s | Ready target | peak RSS MB (at Ready) | RSS target | \
         due work s | all rotated s | rotation target | >v2 | events written s ready/rotation | \
         Key reconciles ready/rotation | \
         CPU s ready: op/apiserver/etcd/kcm/bench of wall | CPU s rotation | \
         apply with no operator s | CPU s of that: apiserver/etcd/kcm of wall |"
    );
    println!("|---:|---:|---:|---|---:|---|---:|---:|---|---:|---|---:|---|---|---:|---|");
    for f in results {
        let at_target = f.keys >= TARGET_KEYS;
        let target = |limit: String, met: bool| {
            if at_target {
                format!("{limit} ({})", verdict(met))
            } else {
                format!("{limit} at 10,000")
            }
        };
        let ready_met = f.ready.is_some_and(|d| d <= TARGET_READY);
        let rotation_met = f.rotated.is_some_and(|d| d <= TARGET_ROTATION);
        println!(
            "| {} | {} | {}{} | {} | {:.1} ({:.1}) | {} | {} | {}{} | {} | {} | {}/{} | {}/{} | {} | {} | {} | {} |",
            f.keys,
            seconds(f.apply),
            seconds(f.ready),
            if f.ready.is_none() {
                format!(" ({}/{})", f.ready_count, f.keys)
            } else {
                String::new()
            },
            target(format!("≤ {} s", TARGET_READY.as_secs()), ready_met),
            f.rss_peak_mb,
            f.rss_ready_mb,
            target(
                format!("≤ {TARGET_RSS_MB:.0} MB"),
                f.rss_peak_mb <= TARGET_RSS_MB
            ),
            seconds(f.due_work),
            seconds(f.rotated),
            if f.rotated.is_none() {
                format!(" ({}/{})", f.rotated_count, f.keys)
            } else {
                String::new()
            },
            target(format!("≤ {} s", TARGET_ROTATION.as_secs()), rotation_met),
            f.over_rotated,
            seconds(f.events_ready),
            seconds(f.events_rotation),
            f.reconciles_ready,
            f.reconciles_rotation,
            f.cpu_ready.show(),
            f.cpu_rotation.show(),
            seconds(f.apply_alone),
            if f.apply_alone.is_some() {
                f.cpu_apply_alone.show_control_plane()
            } else {
                "-".to_owned()
            },
        );
    }
}

/// The processes whose CPU a run accounts.
fn pids(cp: &Cluster, operator: u32) -> Pids {
    Pids {
        operator,
        apiserver: cp.pid_of("kube-apiserver"),
        etcd: cp.pid_of("etcd"),
        controller_manager: cp.pid_of("kube-controller-manager"),
    }
}

/// The release operator as a child process; killed when dropped.
struct OperatorProcess {
    child: Child,
    admin: String,
    log: PathBuf,
}

impl OperatorProcess {
    fn start(cp: &Cluster, binary: &Path) -> Result<Self> {
        let credentials = cp.dir().join("credentials.json");
        std::fs::write(
            &credentials,
            serde_json::json!({ "credentials": [{
                "accessKeyId": "AKIASCALEBENCH",
                "secretAccessKey": "scale-bench-secret",
                "accountId": ACCOUNT,
            }]})
            .to_string(),
        )?;
        let log = cp.dir().join("operator.log");
        let mut child = Command::new(binary)
            .args([
                "run",
                "--store",
                "kubernetes",
                "--namespace",
                OPERATOR_NAMESPACE,
            ])
            .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
            .args(["--metrics-listen", "127.0.0.1:0"])
            .arg("--kubeconfig")
            .arg(cp.kubeconfig())
            .arg("--credentials")
            .arg(&credentials)
            .args(["--account", ACCOUNT, "--test-clock"])
            .env_remove("KUBECONFIG")
            .env(
                "RUST_LOG",
                std::env::var("KUBEKMS_BENCH_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(std::fs::File::create(&log)?))
            .spawn()
            .with_context(|| format!("spawning {}", binary.display()))?;
        let stdout = child.stdout.take().context("the operator's stdout")?;
        // Owned before the wait, so a failed start is killed on drop.
        let mut op = Self {
            child,
            admin: String::new(),
            log,
        };
        let (_, admin) = wait_ready(stdout, Duration::from_secs(60))
            .with_context(|| format!("starting the operator; log: {}", op.log.display()))?;
        op.admin = admin;
        Ok(op)
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The value of one series (name and labels) in the admin listener's /metrics.
    async fn metric(&self, series: &str) -> Result<u64> {
        let (_, body) = http_request(&self.admin, "GET", "/metrics", "").await?;
        body.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
            .ok_or_else(|| anyhow!("no {series} in /metrics"))
    }

    /// Events the operator has queued but not written yet.
    async fn events_pending(&self) -> Result<u64> {
        self.metric("kubekms_operator_events_pending").await
    }

    /// Waits (up to `limit`) until the operator's event queue is empty; how long that took
    /// from `since`.
    async fn events_drained(&self, since: Instant, limit: Duration) -> Option<Duration> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if self.events_pending().await.ok()? == 0 {
                return Some(since.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        None
    }

    async fn key_reconciles(&self) -> Result<u64> {
        self.metric("kubekms_operator_reconciles_total{kind=\"Key\"}")
            .await
    }
}

impl Drop for OperatorProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
