//! `kubekms-bench`: load-test the release engine over real HTTP with `wrk`, next to `moto_server`
//! doing the same symmetric Encrypt, and print one table. In the same run it measures a floor
//! (`kubekms-floor`: hyper + serde + AES-GCM answering the same pre-signed Encrypt with no
//! authentication and no audit) and, with `--baseline-bin`, another engine build (the commit
//! before a change) on the symmetric scenarios, and prints the engine's ratio to each. Last, it
//! alternates the engine and the floor on Encrypt (`--floor-rounds`, 6 rounds by default) and
//! prints every ratio and their median: the figure the 0.8 target is judged on. Each round also
//! runs the same engine with its audit log off, so the same run shows what the log costs.
//!
//! Every request is SigV4-signed once, ahead of the run, and replayed by wrk: the engine accepts
//! a signature for five minutes either way, and verifies every replay in full, so the figures
//! include signature checking, JSON, crypto and the audit log (which is on, to a file).
//!
//!     cargo run --release -p kubekms-bench --bin kubekms-bench -- [--duration SECS] [--quick]

use std::cell::Cell;
use std::fmt::Write as _;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use clap::Parser;
use serde_json::{json, Value};

use kubekms_bench::wrk::{check_wrk, parse_wrk, wrk_args, wrk_script, WrkResult};
use kubekms_engine::clock::{Clock, SystemClock};
use kubekms_engine::config::{Credential, Credentials, DEFAULT_ACCOUNT_ID};
use kubekms_engine::crypto::random_bytes;
use kubekms_engine::sigv4::sign_kms_request;

const REGION: &str = "us-east-1";
/// The marker the engine prints once it accepts connections.
const LISTENING: &str = "listening on http://";
/// Plaintext size for Encrypt: a typical data-key-sized secret.
const PLAINTEXT_BYTES: usize = 64;
/// "other CPU %" above this during any run gets a warning.
const BUSY_MACHINE_PCT: f64 = 15.0;
/// Linux reports process CPU times in USER_HZ ticks, which is 100 on every mainstream arch.
const CLOCK_TICKS_PER_SEC: f64 = 100.0;

// Scenario names, known before the engine runs so `--only` can skip starting it.
const ENCRYPT: &str = "Encrypt SYMMETRIC_DEFAULT";
const DECRYPT: &str = "Decrypt SYMMETRIC_DEFAULT";
const GENERATE_DATA_KEY: &str = "GenerateDataKey AES_256";
const SIGN_RSA: &str = "Sign RSA_2048 PSS_SHA_256";
const SIGN_ECC: &str = "Sign ECC_NIST_P256";
const GENERATE_DATA_KEY_PAIR: &str = "GenerateDataKeyPair RSA_2048";
const MOTO_ENCRYPT: &str = "moto Encrypt SYMMETRIC_DEFAULT";
const FLOOR_ENCRYPT: &str = "floor Encrypt (no auth, no audit)";
/// The scenarios a baseline engine is measured on, and compared at concurrency 32.
const BASELINE_SCENARIOS: [&str; 3] = [ENCRYPT, DECRYPT, GENERATE_DATA_KEY];
const ENGINE_SCENARIOS: [&str; 6] = [
    ENCRYPT,
    DECRYPT,
    GENERATE_DATA_KEY,
    SIGN_RSA,
    SIGN_ECC,
    GENERATE_DATA_KEY_PAIR,
];

#[derive(Parser, Debug)]
#[command(
    name = "kubekms-bench",
    about = "Benchmark the kubekms engine (and moto_server) with wrk"
)]
struct Args {
    /// Seconds per wrk run.
    #[arg(long, default_value_t = 6)]
    duration: u64,
    /// One-second runs: a smoke test of the whole pipeline, not a measurement.
    #[arg(long)]
    quick: bool,
    /// The engine binary; by default the release build next to this one (built first when
    /// run through cargo).
    #[arg(long)]
    engine_bin: Option<PathBuf>,
    /// wrk threads at concurrency 32. One leaves the engine both cores minus wrk's one busy
    /// thread; two makes wrk compete with the engine's two tokio workers.
    #[arg(long, default_value_t = 1)]
    wrk_threads: u32,
    /// The Python venv holding `moto[server]`.
    #[arg(
        long,
        env = "KUBEKMS_VENV",
        default_value = "/root/.cache/kubekms-venv"
    )]
    venv: PathBuf,
    /// Leave out the moto comparison.
    #[arg(long)]
    skip_moto: bool,
    /// Leave out the floor server.
    #[arg(long)]
    skip_floor: bool,
    /// Another engine binary (for example one built from the commit before a change) to
    /// measure on the symmetric scenarios in the same run.
    #[arg(long)]
    baseline_bin: Option<PathBuf>,
    /// Run only scenarios whose name contains this text (case-insensitive).
    #[arg(long)]
    only: Option<String>,
    /// Alternated rounds of the engine, the engine without its audit log and the floor on
    /// Encrypt at c=32, after the scenarios, each ratio printed and their median (0: none).
    /// `--only rounds` runs only these. An even count puts the engine and the floor first
    /// equally often.
    #[arg(long, default_value_t = 6)]
    floor_rounds: u32,
    /// Keep the temporary directory (data dir, audit log, wrk scripts, server logs).
    #[arg(long)]
    keep: bool,
}

#[path = "../access_costs.rs"]
mod access_costs;

/// The scenario name of the access-control measurements (`--only access`).
const ACCESS_COSTS: &str = "access control";
/// The name `--only` matches for the alternated engine/floor rounds (`--only rounds`).
const FLOOR_ROUNDS: &str = "engine / floor rounds";

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("kubekms-bench: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// A throughput or latency goal shown beside a figure; reported, never asserted.
#[derive(Clone, Copy, Debug)]
enum Goal {
    AtLeast(f64),
    AtMost(f64),
    /// A reference point (moto's usual speed), not a goal.
    About(f64),
}

impl Goal {
    fn label(self, unit: &str) -> String {
        match self {
            Goal::AtLeast(v) => format!(">= {}{unit}", fmt_num(v)),
            Goal::AtMost(v) => format!("<= {}{unit}", fmt_num(v)),
            Goal::About(v) => format!("~ {}{unit}", fmt_num(v)),
        }
    }

    fn verdict(self, measured: f64) -> &'static str {
        match self {
            Goal::AtLeast(v) if measured >= v => "met",
            Goal::AtMost(v) if measured <= v => "met",
            Goal::About(_) => "ref",
            _ => "MISSED",
        }
    }
}

fn fmt_num(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v}")
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Server {
    Engine,
    Baseline,
    Floor,
    Moto,
}

impl Server {
    fn label(self) -> &'static str {
        match self {
            Server::Engine => "engine",
            Server::Baseline => "baseline",
            Server::Floor => "floor",
            Server::Moto => "moto",
        }
    }
}

/// Validates one answer's JSON.
type Check = Box<dyn Fn(&Value) -> Result<()>>;

/// One request replayed by wrk, with what a correct answer must contain.
struct Scenario {
    name: &'static str,
    server: Server,
    operation: &'static str,
    body: String,
    /// Checked on one request before the run, so a 200 with a wrong body is caught too.
    check: Check,
    /// Requests per second at concurrency 32.
    rps_goal_c32: Option<Goal>,
    /// Median latency in milliseconds at concurrency 1.
    p50_goal_c1_ms: Option<Goal>,
}

struct Measurement {
    scenario: &'static str,
    server: Server,
    concurrency: u32,
    threads: u32,
    wrk: WrkResult,
    rps_goal: Option<Goal>,
    p50_goal_ms: Option<Goal>,
    cpu: Option<CpuUse>,
    /// Server CPU time per completed request, in microseconds.
    server_cpu_us_per_req: Option<f64>,
}

fn run(args: &Args) -> Result<bool> {
    let secs = if args.quick { 1 } else { args.duration.max(1) };
    check_wrk()?;
    if cfg!(debug_assertions) {
        eprintln!("kubekms-bench: WARNING: built without --release; figures are not meaningful");
    }

    let dir = TempDir::new()?;
    let credential = Credential::generate(DEFAULT_ACCOUNT_ID).map_err(|e| anyhow!("{e}"))?;
    let filter = args.only.as_deref().map(str::to_ascii_lowercase);
    let wanted = |name: &str| {
        filter
            .as_deref()
            .is_none_or(|f| name.to_ascii_lowercase().contains(f))
    };

    let mut measurements = Vec::new();
    let mut failures = Vec::new();
    let mut engine_summary = None;
    if ENGINE_SCENARIOS.iter().any(|name| wanted(name)) {
        let engine_bin = match &args.engine_bin {
            Some(p) => p.clone(),
            None => default_engine_bin()?,
        };
        let run = run_engine(&engine_bin, &credential, args, secs, dir.path(), &wanted)?;
        for m in run.measurements {
            report_errors(&m, &mut failures);
            measurements.push(m);
        }
        if let Err(e) = &run.audit_lines {
            failures.push(format!("audit log: {e:#}"));
        }
        engine_summary = Some((run.peak_rss_kib, run.audit_lines.ok(), run.requests));
    }

    if let Some(baseline_bin) = &args.baseline_bin {
        let baseline_dir = dir.path().join("baseline");
        fs::create_dir_all(&baseline_dir)?;
        let wanted_baseline = |name: &str| BASELINE_SCENARIOS.contains(&name) && wanted(name);
        let run = run_engine(
            baseline_bin,
            &credential,
            args,
            secs,
            &baseline_dir,
            &wanted_baseline,
        )?;
        for mut m in run.measurements {
            m.server = Server::Baseline;
            report_errors(&m, &mut failures);
            measurements.push(m);
        }
    }

    if !args.skip_floor && wanted(FLOOR_ENCRYPT) {
        for m in run_floor(args, &credential, secs, dir.path())? {
            report_errors(&m, &mut failures);
            measurements.push(m);
        }
    }

    let mut moto_peak = None;
    if !args.skip_moto && wanted(MOTO_ENCRYPT) {
        let moto_measurements = run_moto(args, &credential, secs, dir.path(), &mut moto_peak)?;
        for m in moto_measurements {
            report_errors(&m, &mut failures);
            measurements.push(m);
        }
    }

    let rounds = args.floor_rounds > 0 && !args.skip_floor && wanted(FLOOR_ROUNDS);
    if !measurements.is_empty() {
        print_table(&measurements);
        println!();
        print_ratios(&measurements, rounds);
    }
    let mut rounds_busiest = 0.0f64;
    if rounds {
        let (round_failures, busiest) = run_floor_rounds(args, &credential, secs, dir.path())?;
        failures.extend(round_failures);
        rounds_busiest = busiest;
    }
    if wanted(ACCESS_COSTS) {
        println!();
        failures.extend(print_access_costs(args, secs, dir.path())?);
    }
    let busiest = measurements
        .iter()
        .filter_map(|m| m.cpu.map(|c| c.other_pct))
        .fold(rounds_busiest, f64::max);
    if busiest > BUSY_MACHINE_PCT {
        println!(
            "WARNING: other processes used up to {busiest:.0}% of a core during a run: the \
             machine was not idle and the figures are lower than it can do"
        );
    }
    if let Some((peak, audit_lines, requests)) = engine_summary {
        match peak {
            Some(kib) => println!("engine peak RSS (VmHWM): {:.1} MiB", kib as f64 / 1024.0),
            None => println!("engine peak RSS (VmHWM): unavailable"),
        }
        if let Some(lines) = audit_lines {
            println!("audit log: {lines} lines for {requests} requests counted by the bench");
        }
    }
    if let Some(kib) = moto_peak {
        println!(
            "moto_server peak RSS (VmHWM): {:.1} MiB",
            kib as f64 / 1024.0
        );
    }
    println!(
        "wrk: -t1 -c1 at concurrency 1, -t{} -c32 at concurrency 32, {secs} s per run, \
         --timeout 30s; server CPU is in % of one core (2 cores in all)",
        args.wrk_threads
    );

    if args.keep {
        println!("kept {}", dir.keep().display());
    }
    if failures.is_empty() {
        Ok(true)
    } else {
        eprintln!();
        for f in &failures {
            eprintln!("kubekms-bench: FAILED: {f}");
        }
        Ok(false)
    }
}

/// Key-policy evaluation against allow-all, session credentials against a plain key: each pair
/// measured back to back, first through the KMS API under wrk (an engine served in this
/// process per configuration, c=32), then in process without HTTP (the core's own cost).
fn print_access_costs(args: &Args, secs: u64, dir: &Path) -> Result<Vec<String>> {
    use access_costs::InProcessEngine;
    use kubekms_engine::service::{AllowAll, Authorizer, KeyPolicies};

    let mut failures = Vec::new();
    let configurations: [(&str, Arc<dyn Authorizer>, bool); 3] = [
        (
            "Encrypt, key policy, plain key",
            Arc::new(KeyPolicies),
            false,
        ),
        ("Encrypt, allow-all, plain key", Arc::new(AllowAll), false),
        (
            "Encrypt, key policy, session credentials",
            Arc::new(KeyPolicies),
            true,
        ),
    ];
    let mut http = Vec::new();
    for (i, (label, authorizer, session)) in configurations.into_iter().enumerate() {
        let engine =
            InProcessEngine::start(authorizer, &dir.join(format!("access-audit-{i}.log")))?;
        let body = format!(
            r#"{{"KeyId":"{}","Plaintext":"aGVsbG8=","EncryptionContext":{{"app":"orders"}}}}"#,
            engine.key_id
        );
        let headers = engine.signed_encrypt(body.as_bytes(), session);
        let answer =
            Client::new(engine.addr, &engine.plain).send_signed(&headers, body.as_bytes())?;
        if answer.status != 200 {
            bail!(
                "{label}: HTTP {}: {}",
                answer.status,
                String::from_utf8_lossy(&answer.body)
            );
        }
        let script = dir.join(format!("access-{i}.lua"));
        fs::write(&script, wrk_script(&headers, &body))?;
        eprintln!("kubekms-bench: {label} c=32 for {secs} s (in-process engine)");
        let wrk = run_wrk(engine.addr, &script, args.wrk_threads, 32, secs)?;
        if wrk.errors() > 0 {
            failures.push(format!("{label}: {} errors", wrk.errors()));
        }
        http.push((label, wrk.rps()));
    }
    let (encrypt, verify) = access_costs::measure(secs)?;
    println!("{ACCESS_COSTS}, {secs} s per figure");
    println!("  through the KMS API (wrk c=32, the engine in the bench's process, 2 workers):");
    for (label, rps) in &http {
        println!("    {label:<42} {:>10} req/s", fmt_num(*rps));
    }
    let verdict = |ratio: f64, goal: f64| if ratio >= goal { "met" } else { "MISSED" };
    let policy = http[0].1 / http[1].1;
    let session = http[2].1 / http[0].1;
    println!(
        "    key policy / allow-all: {policy:.2} (goal >= 0.90: {})",
        verdict(policy, 0.9)
    );
    println!(
        "    session / plain key: {session:.2} (goal: no more costly, >= 0.97 with 3% noise: {})",
        verdict(session, 0.97)
    );
    println!("  in process, no HTTP (2 threads): what the checks themselves cost");
    for pair in [&encrypt, &verify] {
        for rate in pair.iter() {
            println!("    {:<42} {:>10} /s", rate.label, fmt_num(rate.per_sec));
        }
        if let [a, b] = &pair[..] {
            let extra_ns = (1e9 / a.per_sec - 1e9 / b.per_sec) * 2.0;
            println!(
                "    ratio {:.2}: {extra_ns:+.0} ns per call on one thread (noisy at this scale)",
                a.per_sec / b.per_sec
            );
        }
    }
    Ok(failures)
}

struct EngineRun {
    measurements: Vec<Measurement>,
    peak_rss_kib: Option<u64>,
    audit_lines: Result<u64>,
    /// Requests the bench saw answered: its own plus wrk's.
    requests: u64,
}

/// An engine process started with the bench's credential.
struct StartedEngine {
    process: ServerProcess,
    client: Client,
    /// Where its audit log is; written only with [`Audit::File`].
    audit_log: PathBuf,
}

/// What a started engine does with its audit log.
#[derive(Clone, Copy)]
enum Audit {
    /// To a file, as a deployment keeps it.
    File,
    /// None (`--audit-log off`): the alternated rounds measure what the log costs with it.
    Off,
}

fn start_engine(
    engine_bin: &Path,
    credential: &Credential,
    dir: &Path,
    audit: Audit,
) -> Result<StartedEngine> {
    let cred_file = dir.join("credentials.json");
    Credentials::new([credential.clone()])
        .and_then(|c| c.save_file(&cred_file))
        .map_err(|e| anyhow!("{e}"))?;
    let audit_log = dir.join("audit.log");
    let data_dir = dir.join("data");
    fs::create_dir_all(&data_dir)?;

    let name = match audit {
        Audit::File => "engine",
        Audit::Off => "engine without audit",
    };
    eprintln!("kubekms-bench: {name} {}", engine_bin.display());
    let mut process = ServerProcess::spawn(
        name,
        Command::new(engine_bin)
            .arg("standalone")
            .arg("--data-dir")
            .arg(&data_dir)
            .args(["--listen", "127.0.0.1:0"])
            .arg("--credentials")
            .arg(&cred_file)
            .arg("--audit-log")
            .arg(match audit {
                Audit::File => audit_log.as_os_str(),
                Audit::Off => "off".as_ref(),
            })
            // As a production deployment would: a pool deep enough for bursts of
            // GenerateDataKeyPair (sustained rate is bounded by RSA generation, ~10/s per core).
            .args(["--prewarm-key-pairs", "128"]),
        &dir.join("engine.log"),
    )?;
    let addr = process.wait_for_listen_line(Duration::from_secs(60))?;
    eprintln!("kubekms-bench: {name} pid {} on {addr}", process.pid());
    Ok(StartedEngine {
        process,
        client: Client::new(addr, credential),
        audit_log,
    })
}

/// Start the engine, create the keys, run every wanted scenario at both concurrencies.
fn run_engine(
    engine_bin: &Path,
    credential: &Credential,
    args: &Args,
    secs: u64,
    dir: &Path,
    wanted: &dyn Fn(&str) -> bool,
) -> Result<EngineRun> {
    let StartedEngine {
        process: mut engine,
        client,
        audit_log,
    } = start_engine(engine_bin, credential, dir, Audit::File)?;

    let mut measurements = Vec::new();
    let mut wrk_requests = 0u64;
    let mut slack = 0u64;
    for scenario in engine_scenarios(&client)?.iter().filter(|s| wanted(s.name)) {
        for (conc, threads) in [(1, 1), (32, args.wrk_threads)] {
            let m = measure(&client, &mut engine, scenario, conc, threads, secs, dir)?;
            wrk_requests += m.wrk.requests;
            slack += u64::from(conc);
            measurements.push(m);
        }
    }
    engine.ensure_running()?;
    let peak_rss_kib = engine.peak_rss_kib();
    let requests = client.sent.get() + wrk_requests;
    let audit_lines = check_audit_log(&audit_log, requests, slack);
    engine.stop();
    Ok(EngineRun {
        measurements,
        peak_rss_kib,
        audit_lines,
        requests,
    })
}

fn report_errors(m: &Measurement, failures: &mut Vec<String>) {
    let w = &m.wrk;
    if w.errors() > 0 || w.requests == 0 || w.ok != w.requests {
        failures.push(format!(
            "{} c={}: {} requests, {} ok, {} non-200, {} socket errors{}",
            m.scenario,
            m.concurrency,
            w.requests,
            w.ok,
            w.non200,
            w.socket_errors,
            w.first_bad
                .as_deref()
                .map(|b| format!("; first bad response: {b}"))
                .unwrap_or_default()
        ));
    }
}

/// Pre-sign, check once by hand, write the wrk script, run wrk, and account the server's CPU.
fn measure(
    client: &Client,
    server: &mut ServerProcess,
    scenario: &Scenario,
    concurrency: u32,
    threads: u32,
    secs: u64,
    dir: &Path,
) -> Result<Measurement> {
    let headers = client.sign(scenario.operation, scenario.body.as_bytes());
    let answer = client
        .send_signed(&headers, scenario.body.as_bytes())
        .with_context(|| format!("{}: checking the pre-signed request", scenario.name))?;
    if answer.status != 200 {
        bail!(
            "{}: the pre-signed request got HTTP {}: {}",
            scenario.name,
            answer.status,
            String::from_utf8_lossy(&answer.body)
        );
    }
    let json: Value = serde_json::from_slice(&answer.body)
        .with_context(|| format!("{}: the answer is not JSON", scenario.name))?;
    (scenario.check)(&json).with_context(|| format!("{}: wrong answer", scenario.name))?;

    let script = dir.join(format!(
        "{}-c{concurrency}.lua",
        scenario
            .name
            .replace(|c: char| !c.is_ascii_alphanumeric(), "_")
    ));
    fs::write(&script, wrk_script(&headers, &scenario.body))?;

    eprintln!(
        "kubekms-bench: {} c={concurrency} for {secs} s",
        scenario.name
    );
    let before = CpuSnapshot::take(server);
    let started = Instant::now();
    let wrk = run_wrk(client.addr, &script, threads, concurrency, secs)
        .with_context(|| format!("{} c={concurrency}", scenario.name))?;
    let wall = started.elapsed().as_secs_f64();
    let cpu = CpuSnapshot::take(server).since(&before, wall);
    server.ensure_running()?;

    Ok(Measurement {
        scenario: scenario.name,
        server: scenario.server,
        concurrency,
        threads,
        rps_goal: if concurrency >= 32 {
            scenario.rps_goal_c32
        } else {
            None
        },
        p50_goal_ms: if concurrency == 1 {
            scenario.p50_goal_c1_ms
        } else {
            None
        },
        server_cpu_us_per_req: cpu
            .as_ref()
            .filter(|_| wrk.requests > 0)
            .map(|c| c.server_pct / 100.0 * wall * 1e6 / wrk.requests as f64),
        cpu,
        wrk,
    })
}

fn engine_scenarios(client: &Client) -> Result<Vec<Scenario>> {
    let create = |spec: &str, usage: &str| -> Result<String> {
        let out = client.call(
            "CreateKey",
            &json!({"KeySpec": spec, "KeyUsage": usage, "Description": "kubekms-bench"}),
        )?;
        key_id_of(&out).with_context(|| format!("CreateKey {spec}"))
    };
    let sym = create("SYMMETRIC_DEFAULT", "ENCRYPT_DECRYPT")?;
    let rsa = create("RSA_2048", "SIGN_VERIFY")?;
    let ecc = create("ECC_NIST_P256", "SIGN_VERIFY")?;

    let plaintext = B64.encode(&*random_bytes(PLAINTEXT_BYTES)?);
    let encrypted = client.call("Encrypt", &json!({"KeyId": sym, "Plaintext": plaintext}))?;
    let blob = str_field(&encrypted, "CiphertextBlob")?.to_owned();
    let message = B64.encode(&*random_bytes(256)?);

    let expect_plaintext = plaintext.clone();
    let scenarios = vec![
        Scenario {
            name: ENCRYPT,
            server: Server::Engine,
            operation: "Encrypt",
            body: json!({"KeyId": sym, "Plaintext": plaintext}).to_string(),
            check: Box::new(|v| str_field(v, "CiphertextBlob").map(drop)),
            rps_goal_c32: Some(Goal::AtLeast(20_000.0)),
            p50_goal_c1_ms: Some(Goal::AtMost(0.3)),
        },
        Scenario {
            name: DECRYPT,
            server: Server::Engine,
            operation: "Decrypt",
            body: json!({ "CiphertextBlob": blob }).to_string(),
            check: Box::new(move |v| {
                if str_field(v, "Plaintext")? == expect_plaintext {
                    Ok(())
                } else {
                    bail!("Decrypt returned a different plaintext")
                }
            }),
            rps_goal_c32: None,
            p50_goal_c1_ms: Some(Goal::AtMost(0.3)),
        },
        Scenario {
            name: GENERATE_DATA_KEY,
            server: Server::Engine,
            operation: "GenerateDataKey",
            body: json!({"KeyId": sym, "KeySpec": "AES_256"}).to_string(),
            check: Box::new(|v| {
                str_field(v, "CiphertextBlob")?;
                let key = B64.decode(str_field(v, "Plaintext")?)?;
                if key.len() == 32 {
                    Ok(())
                } else {
                    bail!("data key of {} bytes", key.len())
                }
            }),
            rps_goal_c32: None,
            p50_goal_c1_ms: Some(Goal::AtMost(0.3)),
        },
        Scenario {
            name: SIGN_RSA,
            server: Server::Engine,
            operation: "Sign",
            body: json!({"KeyId": rsa, "Message": message, "MessageType": "RAW",
                         "SigningAlgorithm": "RSASSA_PSS_SHA_256"})
            .to_string(),
            check: Box::new(|v| signature_len(v, 256..=256)),
            rps_goal_c32: Some(Goal::AtLeast(2_000.0)),
            p50_goal_c1_ms: None,
        },
        Scenario {
            name: SIGN_ECC,
            server: Server::Engine,
            operation: "Sign",
            body: json!({"KeyId": ecc, "Message": message, "MessageType": "RAW",
                         "SigningAlgorithm": "ECDSA_SHA_256"})
            .to_string(),
            // DER-encoded (r, s): 8 to 72 bytes.
            check: Box::new(|v| signature_len(v, 8..=72)),
            rps_goal_c32: None,
            p50_goal_c1_ms: None,
        },
        Scenario {
            name: GENERATE_DATA_KEY_PAIR,
            server: Server::Engine,
            operation: "GenerateDataKeyPair",
            body: json!({"KeyId": sym, "KeyPairSpec": "RSA_2048"}).to_string(),
            check: Box::new(|v| {
                str_field(v, "PublicKey")?;
                str_field(v, "PrivateKeyCiphertextBlob")?;
                str_field(v, "PrivateKeyPlaintext").map(drop)
            }),
            rps_goal_c32: Some(Goal::AtLeast(20.0)),
            p50_goal_c1_ms: None,
        },
    ];
    Ok(scenarios)
}

fn run_moto(
    args: &Args,
    credential: &Credential,
    secs: u64,
    dir: &Path,
    peak: &mut Option<u64>,
) -> Result<Vec<Measurement>> {
    let python = args.venv.join("bin/python");
    if !python.exists() {
        bail!(
            "no {} (run e2e/scripts/setup.sh, set KUBEKMS_VENV, or pass --skip-moto)",
            python.display()
        );
    }
    let port = free_port()?;
    let mut moto = ServerProcess::spawn(
        "moto_server",
        Command::new(&python)
            .args(["-m", "moto.server", "-H", "127.0.0.1", "-p"])
            .arg(port.to_string()),
        &dir.join("moto.log"),
    )?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    moto.wait_for_port(addr, Duration::from_secs(60))?;
    eprintln!("kubekms-bench: moto_server pid {} on {addr}", moto.pid());
    let client = Client::new(addr, credential);
    let created = client.call(
        "CreateKey",
        &json!({"KeySpec": "SYMMETRIC_DEFAULT", "KeyUsage": "ENCRYPT_DECRYPT"}),
    )?;
    let key = key_id_of(&created).context("moto CreateKey")?;
    let scenario = Scenario {
        name: MOTO_ENCRYPT,
        server: Server::Moto,
        operation: "Encrypt",
        body: json!({"KeyId": key, "Plaintext": B64.encode(&*random_bytes(PLAINTEXT_BYTES)?)})
            .to_string(),
        check: Box::new(|v| str_field(v, "CiphertextBlob").map(drop)),
        rps_goal_c32: Some(Goal::About(450.0)),
        p50_goal_c1_ms: None,
    };
    let mut out = Vec::new();
    for (conc, threads) in [(1, 1), (32, args.wrk_threads)] {
        out.push(measure(
            &client, &mut moto, &scenario, conc, threads, secs, dir,
        )?);
    }
    *peak = moto.peak_rss_kib();
    moto.stop();
    Ok(out)
}

fn key_id_of(v: &Value) -> Result<String> {
    v.get("KeyMetadata")
        .and_then(|m| m.get("KeyId"))
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| anyhow!("no KeyMetadata.KeyId in {v}"))
}

fn str_field<'a>(v: &'a Value, name: &str) -> Result<&'a str> {
    v.get(name)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| anyhow!("no {name} in the answer"))
}

fn signature_len(v: &Value, range: std::ops::RangeInclusive<usize>) -> Result<()> {
    let sig = B64.decode(str_field(v, "Signature")?)?;
    if range.contains(&sig.len()) {
        Ok(())
    } else {
        bail!("signature of {} bytes, expected {range:?}", sig.len())
    }
}

// ---- HTTP client ---------------------------------------------------------------------------

/// A minimal blocking HTTP/1.1 client: one connection per request, which is all setup needs.
struct Client {
    addr: SocketAddr,
    credential: Credential,
    /// Requests sent, for matching against the audit log.
    sent: Cell<u64>,
}

struct HttpResponse {
    status: u16,
    body: Vec<u8>,
}

impl Client {
    fn host(&self) -> String {
        self.addr.to_string()
    }

    /// Every header of the request, signed now.
    fn sign(&self, operation: &str, body: &[u8]) -> Vec<(String, String)> {
        sign_kms_request(
            &self.credential,
            REGION,
            &self.host(),
            operation,
            body,
            SystemClock::default().now_millis(),
        )
    }

    fn new(addr: SocketAddr, credential: &Credential) -> Self {
        Self {
            addr,
            credential: credential.clone(),
            sent: Cell::new(0),
        }
    }

    fn call(&self, operation: &str, body: &Value) -> Result<Value> {
        let body = body.to_string();
        let headers = self.sign(operation, body.as_bytes());
        let answer = self.send_signed(&headers, body.as_bytes())?;
        let text = String::from_utf8_lossy(&answer.body);
        if answer.status != 200 {
            bail!("{operation}: HTTP {}: {text}", answer.status);
        }
        serde_json::from_slice(&answer.body)
            .with_context(|| format!("{operation}: the answer is not JSON: {text}"))
    }

    fn send_signed(&self, headers: &[(String, String)], body: &[u8]) -> Result<HttpResponse> {
        self.sent.set(self.sent.get() + 1);
        let mut request = String::from("POST / HTTP/1.1\r\n");
        for (name, value) in headers {
            let _ = write!(request, "{name}: {value}\r\n");
        }
        let _ = write!(
            request,
            "content-length: {}\r\nconnection: close\r\n\r\n",
            body.len()
        );
        let mut stream = TcpStream::connect_timeout(&self.addr, Duration::from_secs(10))
            .with_context(|| format!("connecting to {}", self.addr))?;
        stream.set_read_timeout(Some(Duration::from_secs(60)))?;
        stream.write_all(request.as_bytes())?;
        stream.write_all(body)?;
        let mut raw = Vec::new();
        stream
            .read_to_end(&mut raw)
            .with_context(|| format!("reading the answer from {}", self.addr))?;
        parse_response(&raw)
    }
}

fn parse_response(raw: &[u8]) -> Result<HttpResponse> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| anyhow!("incomplete HTTP response ({} bytes)", raw.len()))?;
    let head = std::str::from_utf8(&raw[..end]).context("HTTP head is not UTF-8")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("bad status line {status_line:?}"))?;
    let mut chunked = false;
    let mut length = None;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.to_ascii_lowercase().contains("chunked");
        } else if name.eq_ignore_ascii_case("content-length") {
            length = value.parse::<usize>().ok();
        }
    }
    let rest = &raw[end + 4..];
    let body = if chunked {
        dechunk(rest)?
    } else if let Some(n) = length {
        rest.get(..n)
            .ok_or_else(|| anyhow!("body shorter than content-length {n}"))?
            .to_vec()
    } else {
        rest.to_vec()
    };
    Ok(HttpResponse { status, body })
}

fn dechunk(mut data: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or_else(|| anyhow!("truncated chunk size"))?;
        let size_text = std::str::from_utf8(&data[..eol])?;
        let size_text = size_text.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_text, 16)
            .with_context(|| format!("bad chunk size {size_text:?}"))?;
        data = &data[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        let chunk = data.get(..size).ok_or_else(|| anyhow!("truncated chunk"))?;
        out.extend_from_slice(chunk);
        data = data.get(size + 2..).unwrap_or(&[]);
    }
}

// ---- wrk -----------------------------------------------------------------------------------

fn run_wrk(
    addr: SocketAddr,
    script: &Path,
    threads: u32,
    connections: u32,
    secs: u64,
) -> Result<WrkResult> {
    let output = Command::new("wrk")
        .args(wrk_args(
            threads,
            connections,
            secs,
            script,
            &format!("http://{addr}/"),
        ))
        .output()
        .context("running wrk")?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!(
            "wrk exited with {}: {}{}",
            output.status,
            stdout,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    parse_wrk(&stdout).with_context(|| format!("wrk output:\n{stdout}"))
}

// ---- processes -----------------------------------------------------------------------------

/// A server we started; killed when dropped, so an error path never leaves one behind.
struct ServerProcess {
    name: &'static str,
    child: Child,
    lines: mpsc::Receiver<String>,
    log: PathBuf,
}

impl ServerProcess {
    /// Both output streams go to `log`, and line by line to `lines` for the startup banner.
    fn spawn(name: &'static str, cmd: &mut Command, log: &Path) -> Result<Self> {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {name} ({cmd:?})"))?;
        let (tx, rx) = mpsc::channel();
        let file = fs::File::create(log)?;
        let streams: [Option<Box<dyn Read + Send>>; 2] = [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
        ];
        for stream in streams.into_iter().flatten() {
            let tx = tx.clone();
            let mut file = file.try_clone()?;
            // Drained for the process's whole life so a chatty server never blocks on a full
            // pipe.
            thread::spawn(move || {
                for line in BufReader::new(stream).lines() {
                    let Ok(line) = line else { break };
                    let _ = writeln!(file, "{line}");
                    let _ = tx.send(line);
                }
            });
        }
        Ok(Self {
            name,
            child,
            lines: rx,
            log: log.to_owned(),
        })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn wait_for_listen_line(&mut self, timeout: Duration) -> Result<SocketAddr> {
        let deadline = Instant::now() + timeout;
        loop {
            self.ensure_running()?;
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                bail!(
                    "{} printed no {LISTENING:?} line within {timeout:?}; see {}",
                    self.name,
                    self.log.display()
                );
            }
            match self
                .lines
                .recv_timeout(left.min(Duration::from_millis(200)))
            {
                Ok(line) => {
                    if let Some(rest) = line.split(LISTENING).nth(1) {
                        let addr = rest.split(['/', ' ']).next().unwrap_or("");
                        return addr
                            .parse()
                            .with_context(|| format!("bad address in {line:?}"));
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    thread::sleep(Duration::from_millis(100));
                    self.ensure_running()?;
                    bail!("{} closed its output before listening", self.name);
                }
            }
        }
    }

    fn wait_for_port(&mut self, addr: SocketAddr, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            self.ensure_running()?;
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "{} did not listen on {addr} within {timeout:?}; see {}",
                    self.name,
                    self.log.display()
                );
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    fn ensure_running(&mut self) -> Result<()> {
        match self.child.try_wait()? {
            None => Ok(()),
            Some(status) => bail!(
                "{} exited ({status}); last output:\n{}",
                self.name,
                tail(&self.log, 20)
            ),
        }
    }

    fn proc_file(&self, name: &str) -> Option<String> {
        fs::read_to_string(format!("/proc/{}/{name}", self.pid())).ok()
    }

    /// User plus system CPU time so far, in clock ticks, over all threads.
    fn cpu_ticks(&self) -> Option<u64> {
        parse_cpu_ticks(&self.proc_file("stat")?)
    }

    fn peak_rss_kib(&self) -> Option<u64> {
        parse_vm_hwm(&self.proc_file("status")?)
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

/// CPU counters read before and after a run.
struct CpuSnapshot {
    server: Option<u64>,
    /// Our waited-for children (wrk; the servers are waited for only at the end).
    children: Option<u64>,
    machine_busy: Option<u64>,
}

/// Where the CPU went during one run, each in percent of one core (the machine has two).
#[derive(Clone, Copy, Debug)]
struct CpuUse {
    server_pct: f64,
    wrk_pct: f64,
    /// Everything else on the machine: anything much above zero means the figures were taken
    /// on a machine that was not idle.
    other_pct: f64,
}

impl CpuSnapshot {
    fn take(server: &ServerProcess) -> Self {
        let own = fs::read_to_string("/proc/self/stat").ok();
        Self {
            server: server.cpu_ticks(),
            children: own.as_deref().and_then(parse_children_ticks),
            machine_busy: fs::read_to_string("/proc/stat")
                .ok()
                .as_deref()
                .and_then(parse_machine_busy),
        }
    }

    fn since(&self, before: &Self, wall_secs: f64) -> Option<CpuUse> {
        let pct = |after: Option<u64>, before: Option<u64>| -> Option<f64> {
            let ticks = after?.checked_sub(before?)?;
            Some(ticks as f64 / CLOCK_TICKS_PER_SEC / wall_secs * 100.0)
        };
        let server_pct = pct(self.server, before.server)?;
        let wrk_pct = pct(self.children, before.children)?;
        let machine = pct(self.machine_busy, before.machine_busy)?;
        Some(CpuUse {
            server_pct,
            wrk_pct,
            other_pct: (machine - server_pct - wrk_pct).max(0.0),
        })
    }
}

/// Fields after the command name of /proc/PID/stat, which may itself hold spaces and
/// parentheses; index 0 is field 3 (`state`) of proc_pid_stat(5).
fn stat_fields(stat: &str) -> Option<Vec<&str>> {
    Some(stat[stat.rfind(')')? + 1..].split_whitespace().collect())
}

fn sum_fields(fields: &[&str], indexes: &[usize]) -> Option<u64> {
    indexes
        .iter()
        .map(|&i| fields.get(i)?.parse::<u64>().ok())
        .sum()
}

/// utime + stime (fields 14 and 15).
fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    sum_fields(&stat_fields(stat)?, &[11, 12])
}

/// cutime + cstime (fields 16 and 17).
fn parse_children_ticks(stat: &str) -> Option<u64> {
    sum_fields(&stat_fields(stat)?, &[13, 14])
}

/// user + nice + system + irq + softirq + steal over all cores, from /proc/stat.
fn parse_machine_busy(stat: &str) -> Option<u64> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let fields: Vec<&str> = line.split_whitespace().skip(1).collect();
    sum_fields(&fields, &[0, 1, 2, 5, 6, 7])
}

fn parse_vm_hwm(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

fn tail(path: &Path, n: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn free_port() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

fn default_engine_bin() -> Result<PathBuf> {
    sibling_bin("kubekms-engine", "kubekms-engine")
}

/// `name` from `package`, built next to this binary in the same profile.
fn sibling_bin(package: &str, name: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe
        .parent()
        .ok_or_else(|| anyhow!("{} has no parent directory", exe.display()))?;
    let bin = dir.join(name);
    // `cargo run --bin kubekms-bench` builds only this binary: build the other one too, in the
    // same profile, so the figures are never from a stale or missing build.
    if let Some(cargo) = std::env::var_os("CARGO") {
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "-p", package, "--bin", name]);
        if !cfg!(debug_assertions) {
            cmd.arg("--release");
        }
        eprintln!("kubekms-bench: building {name} ({cmd:?})");
        let status = cmd.status().context("running cargo build")?;
        if !status.success() {
            bail!("building {name} failed ({status})");
        }
    }
    if !bin.exists() {
        bail!(
            "no binary at {}; build it (cargo build --release -p {package} --bin {name})",
            bin.display()
        );
    }
    Ok(bin)
}

/// The floor server, and its Encrypt scenario (the same body as the engine's: a key id and a
/// plaintext of the same size).
fn start_floor(credential: &Credential, dir: &Path) -> Result<(ServerProcess, Client, Scenario)> {
    let bin = sibling_bin("kubekms-bench", "kubekms-floor")?;
    let mut floor = ServerProcess::spawn(
        "floor",
        Command::new(&bin).args(["--listen", "127.0.0.1:0"]),
        &dir.join("floor.log"),
    )?;
    let addr = floor.wait_for_listen_line(Duration::from_secs(30))?;
    let client = Client::new(addr, credential);
    let scenario = Scenario {
        name: FLOOR_ENCRYPT,
        server: Server::Floor,
        operation: "Encrypt",
        body: json!({
            "KeyId": "floor",
            "Plaintext": B64.encode(random_bytes(PLAINTEXT_BYTES).map_err(|e| anyhow!("{e}"))?.as_slice()),
        })
        .to_string(),
        check: Box::new(|v| {
            str_field(v, "CiphertextBlob")?;
            Ok(())
        }),
        rps_goal_c32: None,
        p50_goal_c1_ms: None,
    };
    Ok((floor, client, scenario))
}

/// The floor server answering the same pre-signed Encrypt, at both concurrencies.
fn run_floor(
    args: &Args,
    credential: &Credential,
    secs: u64,
    dir: &Path,
) -> Result<Vec<Measurement>> {
    let (mut floor, client, scenario) = start_floor(credential, dir)?;
    let mut out = Vec::new();
    for (conc, threads) in [(1, 1), (32, args.wrk_threads)] {
        out.push(measure(
            &client, &mut floor, &scenario, conc, threads, secs, dir,
        )?);
    }
    floor.stop();
    Ok(out)
}

/// The engine against the floor on Encrypt at c=32, alternated: the servers started once, then
/// `rounds` rounds in ABBA order (engine first in odd rounds, floor first in even ones), so a
/// change in what else the machine runs falls on both alike. Between the two, each round also
/// runs the same engine without its audit log, to show how much of the gap the log is. One
/// round on a shared machine is not a figure; the median of several is. Returns the failures
/// seen (errors in a run, audit lines missing) and the most CPU other processes used during a
/// run.
fn run_floor_rounds(
    args: &Args,
    credential: &Credential,
    secs: u64,
    dir: &Path,
) -> Result<(Vec<String>, f64)> {
    let engine_bin = match &args.engine_bin {
        Some(p) => p.clone(),
        None => default_engine_bin()?,
    };
    let engine_dir = dir.join("rounds");
    let unaudited_dir = engine_dir.join("without-audit");
    fs::create_dir_all(&unaudited_dir)?;
    let StartedEngine {
        process: mut engine,
        client,
        audit_log,
    } = start_engine(&engine_bin, credential, &engine_dir, Audit::File)?;
    let scenario = encrypt_scenario(&client)?;
    let StartedEngine {
        process: mut unaudited,
        client: unaudited_client,
        ..
    } = start_engine(&engine_bin, credential, &unaudited_dir, Audit::Off)?;
    let unaudited_scenario = encrypt_scenario(&unaudited_client)?;
    let (mut floor, floor_client, floor_scenario) = start_floor(credential, &engine_dir)?;

    let mut failures = Vec::new();
    let mut ratios = Vec::new();
    let mut unaudited_ratios = Vec::new();
    let mut audit_costs = Vec::new();
    let mut busiest = 0.0f64;
    let mut wrk_requests = 0u64;
    let threads = args.wrk_threads;
    let run = |client: &Client, server: &mut ServerProcess, scenario: &Scenario, dir: &Path| {
        measure(client, server, scenario, 32, threads, secs, dir)
    };
    let mut lines = Vec::new();
    for round in 1..=args.floor_rounds {
        let mut run_unaudited = || {
            run(
                &unaudited_client,
                &mut unaudited,
                &unaudited_scenario,
                &unaudited_dir,
            )
        };
        let (e, u, f) = if round % 2 == 1 {
            let e = run(&client, &mut engine, &scenario, &engine_dir)?;
            let u = run_unaudited()?;
            (
                e,
                u,
                run(&floor_client, &mut floor, &floor_scenario, &engine_dir)?,
            )
        } else {
            let f = run(&floor_client, &mut floor, &floor_scenario, &engine_dir)?;
            let u = run_unaudited()?;
            (run(&client, &mut engine, &scenario, &engine_dir)?, u, f)
        };
        report_errors(&e, &mut failures);
        report_errors(&f, &mut failures);
        // Named like the audited engine's run (the same scenario): say which engine it was.
        let before = failures.len();
        report_errors(&u, &mut failures);
        for failure in &mut failures[before..] {
            failure.insert_str(0, "without audit: ");
        }
        wrk_requests += e.wrk.requests;
        let ratio = e.wrk.rps() / f.wrk.rps();
        let unaudited_ratio = u.wrk.rps() / f.wrk.rps();
        if let (Some(with), Some(without)) = (e.server_cpu_us_per_req, u.server_cpu_us_per_req) {
            audit_costs.push(with - without);
        }
        let busy = [&e, &u, &f]
            .iter()
            .flat_map(|m| m.cpu.iter())
            .map(|c| c.other_pct)
            .fold(0.0f64, f64::max);
        busiest = busiest.max(busy);
        lines.push(format!(
            "  round {round}: engine {}, without audit {}, floor {}: {ratio:.2} \
             ({unaudited_ratio:.2} without audit); other processes up to {busy:.0}% of a core",
            rate_and_cpu(&e),
            rate_and_cpu(&u),
            rate_and_cpu(&f),
        ));
        ratios.push(ratio);
        unaudited_ratios.push(unaudited_ratio);
    }
    engine.ensure_running()?;
    unaudited.ensure_running()?;
    // One signed request per round is checked by hand before wrk runs, plus the key set-up.
    let requests = client.sent.get() + wrk_requests;
    if let Err(e) = check_audit_log(&audit_log, requests, 32 * u64::from(args.floor_rounds)) {
        failures.push(format!("audit log (rounds): {e:#}"));
    }
    engine.stop();
    unaudited.stop();
    floor.stop();

    for values in [&mut ratios, &mut unaudited_ratios, &mut audit_costs] {
        values.sort_by(f64::total_cmp);
    }
    println!(
        "engine / floor, {ENCRYPT} at c=32, {} alternated rounds ({secs} s runs; the engine \
         without its audit log runs between the two):",
        ratios.len()
    );
    for line in &lines {
        println!("{line}");
    }
    if let Some((med, min, max)) = median_and_range(&ratios) {
        println!(
            "  median {med:.2} (min {min:.2}, max {max:.2}; target >= 0.8: {})",
            if med >= 0.8 { "met" } else { "MISSED" }
        );
    }
    if let Some((med, min, max)) = median_and_range(&unaudited_ratios) {
        println!("  without the audit log: median {med:.2} (min {min:.2}, max {max:.2})");
    }
    if !audit_costs.is_empty() {
        // The engine's own CPU only: the kernel's writeback of the log runs in other threads.
        let over = if audit_costs.len() < ratios.len() {
            format!(" (over the {} rounds with CPU figures)", audit_costs.len())
        } else {
            String::new()
        };
        println!(
            "  the audit log's CPU per request, in the engine's process: median {:.1} us{over}",
            median(&audit_costs)
        );
    }
    println!();
    Ok((failures, busiest))
}

/// The symmetric Encrypt scenario, on the key `client`'s engine was set up with.
fn encrypt_scenario(client: &Client) -> Result<Scenario> {
    engine_scenarios(client)?
        .into_iter()
        .find(|s| s.name == ENCRYPT)
        .ok_or_else(|| anyhow!("no {ENCRYPT} scenario"))
}

/// "42036 req/s (21.6 us CPU/req)": a run's throughput and its server's CPU per request.
fn rate_and_cpu(m: &Measurement) -> String {
    let cpu = m
        .server_cpu_us_per_req
        .map_or_else(|| "?".to_owned(), |us| format!("{us:.1}"));
    format!("{:>7.0} req/s ({cpu} us CPU/req)", m.wrk.rps())
}

/// The median, least and greatest of sorted values; none for none.
fn median_and_range(sorted: &[f64]) -> Option<(f64, f64, f64)> {
    Some((median(sorted), *sorted.first()?, *sorted.last()?))
}

/// The median of sorted values (the mean of the middle two for an even count).
fn median(sorted: &[f64]) -> f64 {
    let n = sorted.len();
    match n {
        0 => f64::NAN,
        _ if n % 2 == 1 => sorted[n / 2],
        _ => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

/// The engine's throughput at concurrency 32 against the floor and the baseline. `rounds`:
/// the alternated rounds follow, and the target is judged on them.
fn print_ratios(rows: &[Measurement], rounds: bool) {
    let rps = |server: Server, scenario: &str| {
        rows.iter()
            .find(|m| m.server == server && m.scenario == scenario && m.concurrency == 32)
            .map(|m| m.wrk.rps())
    };
    let mut printed = false;
    if let (Some(engine), Some(floor)) = (
        rps(Server::Engine, ENCRYPT),
        rps(Server::Floor, FLOOR_ENCRYPT),
    ) {
        let judged = if rounds {
            "the target, >= 0.8, is judged on the alternated rounds' median below"
        } else {
            "target >= 0.8; one pair of runs swings by 15%"
        };
        println!(
            "engine / floor, {ENCRYPT} at c=32, one pair of runs: {engine:.0} / {floor:.0} = \
             {:.2} ({judged})",
            engine / floor
        );
        printed = true;
    }
    for scenario in BASELINE_SCENARIOS {
        if let (Some(engine), Some(base)) = (
            rps(Server::Engine, scenario),
            rps(Server::Baseline, scenario),
        ) {
            println!(
                "engine / baseline, {scenario} at c=32: {engine:.0} / {base:.0} = {:.2}",
                engine / base
            );
            printed = true;
        }
    }
    if printed {
        println!();
    }
}

/// Every engine request leaves exactly one audit line. wrk stops counting at its deadline with
/// up to one request per connection still in flight, which the engine may still answer and log:
/// `slack` is that allowance. A long run rotates the log, so its rotated files count too.
fn check_audit_log(path: &Path, requests: u64, slack: u64) -> Result<u64> {
    // The writer thread flushes within a millisecond or so of going idle.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut lines = 0u64;
        for file in kubekms_engine::audit::log_files(path).map_err(|e| anyhow!("{e}"))? {
            let text = fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            lines += text.iter().filter(|&&b| b == b'\n').count() as u64;
        }
        if lines >= requests {
            if lines > requests + slack {
                bail!("{lines} lines for {requests} requests (+{slack} in flight at most)");
            }
            return Ok(lines);
        }
        if Instant::now() > deadline {
            bail!("only {lines} lines for {requests} requests");
        }
        thread::sleep(Duration::from_millis(100));
    }
}

// ---- output --------------------------------------------------------------------------------

fn print_table(rows: &[Measurement]) {
    let header = [
        "scenario",
        "server",
        "conc",
        "wrk -t",
        "req/s",
        "target req/s",
        "p50 ms",
        "target p50",
        "p99 ms",
        "errors",
        "server CPU %",
        "wrk CPU %",
        "other CPU %",
        "server CPU us/req",
    ];
    let mut table: Vec<Vec<String>> = vec![header.iter().map(|s| (*s).to_owned()).collect()];
    for m in rows {
        let rps = m.wrk.rps();
        let p50_ms = m.wrk.p50_us as f64 / 1000.0;
        table.push(vec![
            m.scenario.to_owned(),
            m.server.label().to_owned(),
            m.concurrency.to_string(),
            m.threads.to_string(),
            format!("{rps:.0}"),
            m.rps_goal
                .map(|g| format!("{} ({})", g.label(""), g.verdict(rps)))
                .unwrap_or_default(),
            format!("{p50_ms:.3}"),
            m.p50_goal_ms
                .map(|g| format!("{} ({})", g.label(" ms"), g.verdict(p50_ms)))
                .unwrap_or_default(),
            format!("{:.3}", m.wrk.p99_us as f64 / 1000.0),
            m.wrk.errors().to_string(),
            m.cpu
                .map(|c| format!("{:.0}", c.server_pct))
                .unwrap_or_default(),
            m.cpu
                .map(|c| format!("{:.0}", c.wrk_pct))
                .unwrap_or_default(),
            m.cpu
                .map(|c| format!("{:.0}", c.other_pct))
                .unwrap_or_default(),
            m.server_cpu_us_per_req
                .map(|c| format!("{c:.1}"))
                .unwrap_or_default(),
        ]);
    }
    let widths: Vec<usize> = (0..header.len())
        .map(|i| table.iter().map(|r| r[i].len()).max().unwrap_or(0))
        .collect();
    for (n, row) in table.iter().enumerate() {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(i, (cell, w))| {
                if i <= 1 {
                    format!("{cell:<w$}")
                } else {
                    format!("{cell:>w$}")
                }
            })
            .collect();
        println!("| {} |", cells.join(" | "));
        if n == 0 {
            let rule: Vec<String> = widths
                .iter()
                .enumerate()
                .map(|(i, w)| {
                    if i <= 1 {
                        format!(":{}", "-".repeat(w.saturating_sub(1)))
                    } else {
                        format!("{}:", "-".repeat(w.saturating_sub(1)))
                    }
                })
                .collect();
            println!("| {} |", rule.join(" | "));
        }
    }
}

// ---- temp dir ------------------------------------------------------------------------------

/// A private scratch directory, removed when dropped unless kept.
struct TempDir {
    path: Option<PathBuf>,
}

impl TempDir {
    fn new() -> Result<Self> {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let path =
            std::env::temp_dir().join(format!("kubekms-bench-{}-{nanos:09}", std::process::id()));
        fs::create_dir(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(Self { path: Some(path) })
    }

    fn path(&self) -> &Path {
        self.path.as_deref().unwrap_or(Path::new("."))
    }

    fn keep(mut self) -> PathBuf {
        self.path.take().unwrap_or_default()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if let Some(path) = &self.path {
            let _ = fs::remove_dir_all(path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_http_responses() {
        let r = parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}trailing").unwrap();
        assert_eq!((r.status, r.body.as_slice()), (200, b"{}".as_slice()));
        let r = parse_response(
            b"HTTP/1.1 400 Bad Request\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n",
        )
        .unwrap();
        assert_eq!((r.status, r.body.as_slice()), (400, b"abcde".as_slice()));
        assert!(parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n{}").is_err());
        assert!(parse_response(b"HTTP/1.1 200 OK\r\n").is_err());
    }

    #[test]
    fn reads_proc_files() {
        let stat = "4242 (kubekms (x) engine) S 1 2 3 4 5 6 7 8 9 10 150 25 0 0 20 0 4";
        assert_eq!(parse_cpu_ticks(stat), Some(175));
        assert_eq!(parse_children_ticks(stat), Some(0));
        let stat = "7 (bench) R 1 2 3 4 5 6 7 8 9 10 1 2 30 12 20 0 4";
        assert_eq!(parse_children_ticks(stat), Some(42));
        assert_eq!(parse_cpu_ticks("garbage"), None);
        let machine = "cpu  100 5 20 9000 7 1 2 3 0 0\ncpu0 50 2 10 4500 3 0 1 1 0 0\n";
        assert_eq!(parse_machine_busy(machine), Some(131));
        let status = "Name:\tkubekms-engine\nVmPeak:\t  99999 kB\nVmHWM:\t   12345 kB\n";
        assert_eq!(parse_vm_hwm(status), Some(12345));
        assert_eq!(parse_vm_hwm("Name: x\n"), None);
    }

    #[test]
    fn goals_report_met_and_missed() {
        assert_eq!(Goal::AtLeast(20_000.0).verdict(25_000.0), "met");
        assert_eq!(Goal::AtLeast(20_000.0).verdict(19_999.0), "MISSED");
        assert_eq!(Goal::AtMost(0.3).verdict(0.31), "MISSED");
        assert_eq!(Goal::AtMost(0.3).label(" ms"), "<= 0.3 ms");
        assert_eq!(Goal::About(450.0).verdict(1.0), "ref");
    }
}
