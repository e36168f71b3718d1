//! One local control plane per test binary, torn down when the process ends however it ends.

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use kube::config::{KubeConfigOptions, Kubeconfig};

/// The e2e crate's directory. Cargo sets `CARGO_MANIFEST_DIR` when it runs a test or a binary,
/// and that is preferred over the path compiled in: a shared `CARGO_TARGET_DIR` may hold a
/// binary built from another checkout, whose path need not exist any more.
fn crate_dir() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .filter(|dir| dir.join("scripts/control-plane.sh").is_file())
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}

/// Where the workspace lives: the harness runs scripts and reads manifests from it.
pub fn repo_root() -> PathBuf {
    let dir = crate_dir();
    dir.parent().map(Path::to_path_buf).unwrap_or(dir)
}

fn control_plane_script() -> PathBuf {
    crate_dir().join("scripts/control-plane.sh")
}

fn node_cluster_script() -> PathBuf {
    crate_dir().join("scripts/cluster.sh")
}

/// Runs in its own process group so a Ctrl-C aimed at the test run does not kill it before it
/// has cleaned up. It blocks on a pipe whose only writer is the test process: the kernel closes
/// that pipe when the process exits (normally, by panic, abort or SIGKILL), and then the
/// operators left running are killed and the control plane is stopped.
const WATCHDOG: &str = r#"
dir="$1"; script="$2"; keep="$3"
read -r _ || true
for f in "$dir"/operators/*.pid; do
    [ -f "$f" ] || continue
    pid=$(cat "$f")
    # Only a pid that still names an operator: the kernel may have reused it.
    if tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q kubekms-operator; then
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$f"
done
"$script" stop "$dir" >/dev/null 2>&1 || true
# --one-file-system: never follow a mount the stop could not undo.
[ -n "$keep" ] || rm -rf --one-file-system "$dir"
"#;

/// The local control plane (etcd, kube-apiserver, kube-controller-manager) with the kubekms
/// CRDs installed. Get it with [`cluster`].
pub struct Cluster {
    dir: PathBuf,
    /// `control-plane.sh` (no node) or `cluster.sh` (a node that runs pods).
    script: PathBuf,
    kubeconfig: PathBuf,
    // Never written to and never closed by us: its closing at process exit is the watchdog's
    // signal.
    _watchdog: Mutex<ChildStdin>,
}

static CLUSTER: OnceLock<Result<Cluster, String>> = OnceLock::new();

/// The control plane of this test binary, started on first use (about ten seconds) in
/// `/tmp/kubekms-cp-e2e-<pid>`. Set `KUBEKMS_E2E_KEEP=1` to keep that directory (logs, etcd
/// data) after the run. A control plane that cannot start fails every test that asks for it.
pub fn cluster() -> Result<&'static Cluster> {
    match CLUSTER.get_or_init(|| Cluster::start().map_err(|e| format!("{e:#}"))) {
        Ok(cluster) => Ok(cluster),
        Err(e) => bail!("the local control plane is not available: {e}"),
    }
}

impl Cluster {
    fn start() -> Result<Self> {
        let dir = PathBuf::from(format!("/tmp/kubekms-cp-e2e-{}", std::process::id()));
        let keep = std::env::var("KUBEKMS_E2E_KEEP").is_ok_and(|v| !v.is_empty());
        Self::start_in(dir, keep)
    }

    /// A control plane of its own in `dir` (the test harness's is [`cluster`]), stopped by
    /// [`Cluster::stop`] or when this process ends however it ends; `dir` is removed then
    /// unless `keep`.
    pub fn start_in(dir: PathBuf, keep: bool) -> Result<Self> {
        Self::start_with(control_plane_script(), dir, keep, &[])
    }

    /// A one-node cluster that runs pods (`e2e/scripts/cluster.sh`) in `dir`, in a network
    /// namespace named after this process, its API server forwarded to a free port of the
    /// host's loopback; stopped like [`Cluster::start_in`]'s. The CRDs are not installed: the
    /// chart brings them.
    pub fn start_node_in(dir: PathBuf, keep: bool) -> Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .context("picking a free port for the API server's forwarder")?
            .port()
            .to_string();
        let netns = format!("kubekms-e2e-{}", std::process::id());
        Self::start_with(
            node_cluster_script(),
            dir,
            keep,
            &[
                ("KUBEKMS_NETNS", netns.as_str()),
                ("KUBEKMS_CLUSTER_API_PORT", port.as_str()),
            ],
        )
    }

    fn start_with(script: PathBuf, dir: PathBuf, keep: bool, env: &[(&str, &str)]) -> Result<Self> {
        std::fs::create_dir_all(dir.join("operators"))
            .with_context(|| format!("creating {}", dir.display()))?;
        let keep = if keep { "1" } else { "" };

        // The watchdog comes first, so even a start that hangs and gets killed is cleaned up.
        let mut watchdog = Command::new("bash")
            .arg("-c")
            .arg(WATCHDOG)
            .arg("kubekms-e2e-watchdog")
            .arg(&dir)
            .arg(&script)
            .arg(keep)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .context("spawning the control-plane watchdog")?;
        let watchdog_stdin = watchdog
            .stdin
            .take()
            .context("the watchdog's stdin is not piped")?;
        // Reaping is left to init once we exit; the watchdog must outlive us.
        drop(watchdog);
        let cluster = Self {
            kubeconfig: dir.join("kubeconfig"),
            dir,
            script,
            _watchdog: Mutex::new(watchdog_stdin),
        };

        let out = Command::new(&cluster.script)
            .arg("start")
            .arg(&cluster.dir)
            .env_remove("KUBEKMS_CP_DIR")
            .env_remove("KUBEKMS_CLUSTER_DIR")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running {}", cluster.script.display()))?;
        if !out.status.success() {
            bail!(
                "`{} start {}` failed ({}); was `make setup` run?\n{}",
                cluster.script.display(),
                cluster.dir.display(),
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }

        if cluster.script == control_plane_script() {
            install_crds(|args| cluster.kubectl_sync(args, None))?;
        }
        Ok(cluster)
    }

    /// The control plane's directory (`logs/`, `kubeconfig`, `env`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The admin kubeconfig (token in `system:masters`).
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// A new client. Make one per test: a client is bound to the Tokio runtime it was made on,
    /// and each `#[tokio::test]` has its own.
    pub async fn client(&self) -> Result<kube::Client> {
        let kubeconfig = Kubeconfig::read_from(&self.kubeconfig)
            .with_context(|| format!("reading {}", self.kubeconfig.display()))?;
        let config =
            kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
                .await
                .context("loading the kubeconfig")?;
        kube::Client::try_from(config).context("building the Kubernetes client")
    }

    /// `kubectl --kubeconfig <ours>` with the caller's own configuration kept out.
    pub fn kubectl_command(&self) -> Command {
        let mut cmd = Command::new("kubectl");
        cmd.arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .env_remove("KUBECONFIG")
            .stdin(Stdio::null());
        cmd
    }

    /// Runs kubectl to completion; its stdout, or an error carrying its stderr.
    pub async fn kubectl(&self, args: &[&str], stdin: Option<&str>) -> Result<String> {
        let mut cmd = tokio::process::Command::from(self.kubectl_command());
        cmd.args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if stdin.is_some() {
            cmd.stdin(Stdio::piped());
        }
        let mut child = cmd.spawn().context("spawning kubectl")?;
        if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
            use tokio::io::AsyncWriteExt;
            pipe.write_all(input.as_bytes())
                .await
                .context("writing kubectl's stdin")?;
        }
        let out = child
            .wait_with_output()
            .await
            .context("waiting for kubectl")?;
        kubectl_result(args, out)
    }

    /// [`Cluster::kubectl`] for places that cannot await (setup, `Drop`).
    pub fn kubectl_sync(&self, args: &[&str], stdin: Option<&str>) -> Result<String> {
        let mut cmd = self.kubectl_command();
        cmd.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
        if stdin.is_some() {
            cmd.stdin(Stdio::piped());
        }
        let mut child = cmd.spawn().context("spawning kubectl")?;
        if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
            pipe.write_all(input.as_bytes())
                .context("writing kubectl's stdin")?;
        }
        let out = child.wait_with_output().context("waiting for kubectl")?;
        kubectl_result(args, out)
    }

    /// The pid of a control-plane process (`etcd`, `kube-apiserver`,
    /// `kube-controller-manager`), from the script's pid files.
    pub fn pid_of(&self, name: &str) -> Option<u32> {
        let run = if self.script == control_plane_script() {
            self.dir.join("run")
        } else {
            self.dir.join("cp/run")
        };
        std::fs::read_to_string(run.join(format!("{name}.pid")))
            .ok()
            .and_then(|s| s.trim().parse().ok())
    }

    /// [`Cluster::node_script`] without blocking the runtime.
    pub async fn node_script_async(&self, args: &[&str]) -> Result<String> {
        let out = tokio::process::Command::new(node_cluster_script())
            .args(args)
            .env("KUBEKMS_CLUSTER_DIR", &self.dir)
            .env_remove("KUBEKMS_NETNS")
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output()
            .await
            .context("running e2e/scripts/cluster.sh")?;
        script_result(args, out)
    }

    /// `e2e/scripts/cluster.sh SUBCOMMAND ARGS...` for this cluster (a node cluster's `exec`,
    /// `load`, `forward`): its stdout, or an error carrying its stderr.
    pub fn node_script(&self, args: &[&str]) -> Result<String> {
        let out = Command::new(node_cluster_script())
            .args(args)
            .env("KUBEKMS_CLUSTER_DIR", &self.dir)
            .env_remove("KUBEKMS_NETNS")
            .stdin(Stdio::null())
            .output()
            .context("running e2e/scripts/cluster.sh")?;
        script_result(args, out)
    }

    /// Stop the control plane now (the watchdog's stop at exit then finds nothing to do).
    pub fn stop(&self) {
        let _ = Command::new(&self.script)
            .arg("stop")
            .arg(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }

    /// Registers a process for the watchdog to kill should the test binary die without
    /// dropping its handle.
    pub fn register_pid(&self, pid: u32) {
        let _ = std::fs::write(
            self.dir.join("operators").join(format!("{pid}.pid")),
            pid.to_string(),
        );
    }

    pub fn unregister_pid(&self, pid: u32) {
        let _ = std::fs::remove_file(self.dir.join("operators").join(format!("{pid}.pid")));
    }
}

/// Applies `crds/kubekms.io.yaml` with `kubectl` (run against the control plane at hand) and
/// waits until every kubekms kind is served.
pub fn install_crds(kubectl: impl Fn(&[&str]) -> Result<String>) -> Result<()> {
    let manifest = repo_root().join("crds/kubekms.io.yaml");
    kubectl(&["apply", "-f", &manifest.to_string_lossy()])?;
    let names: Vec<String> = kubekms_crds::crds()
        .into_iter()
        .filter_map(|crd| crd.metadata.name)
        .collect();
    let crds: Vec<String> = names.iter().map(|name| format!("crd/{name}")).collect();
    let mut wait = vec!["wait", "--for=condition=Established", "--timeout=60s"];
    wait.extend(crds.iter().map(String::as_str));
    kubectl(&wait)?;
    // Established is not yet discoverable: kubectl (and clients that discover) may still not
    // know the kinds for a moment.
    let kinds = names.join(",");
    let mut attempts = 0;
    loop {
        attempts += 1;
        match kubectl(&["get", &kinds, "-A", "-o", "name"]) {
            Ok(_) => return Ok(()),
            Err(e) if attempts == 100 => {
                return Err(e.context("the kubekms kinds never became discoverable"))
            }
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

fn kubectl_result(args: &[&str], out: std::process::Output) -> Result<String> {
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        bail!(
            "kubectl {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )
    }
}

fn script_result(args: &[&str], out: std::process::Output) -> Result<String> {
    if !out.status.success() {
        bail!(
            "`cluster.sh {}` failed ({}): {}{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
