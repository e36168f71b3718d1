//! The real `kubekms-operator` binary as a child process: started, SIGKILLed and started again
//! over the same data, with `aws-sdk-kms` clients pointed at its KMS API.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::{mpsc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use aws_sdk_kms::config::retry::RetryConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::cluster::{repo_root, Cluster};
use crate::env::file_tail;

pub const REGION: &str = "us-east-1";
pub const ACCOUNT: &str = "111122223333";

const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
/// Printed on stdout once the listeners are bound (`kubekms_operator::run::ready_line`).
const READY_PREFIX: &str = "kubekms operator: KMS API on ";

/// The operator binary, built once per process with the same profile and target directory as
/// the running binary (cargo builds only test targets' own binaries for them).
pub fn operator_binary() -> Result<&'static Path> {
    static BINARY: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    match BINARY.get_or_init(|| build_operator().map_err(|e| format!("{e:#}"))) {
        Ok(path) => Ok(path),
        Err(e) => bail!("cannot build kubekms-operator: {e}"),
    }
}

fn build_operator() -> Result<PathBuf> {
    // <target>/<profile dir>/deps/<test binary>, or <target>/<profile dir>/<binary> for a
    // binary such as the scale benchmark.
    let exe = std::env::current_exe().context("locating the running binary")?;
    let parent = exe
        .parent()
        .ok_or_else(|| anyhow!("unexpected binary path {}", exe.display()))?;
    let profile_dir = if parent.file_name().is_some_and(|n| n == "deps") {
        parent
            .parent()
            .ok_or_else(|| anyhow!("unexpected test binary path {}", exe.display()))?
    } else {
        parent
    };
    let target_dir = profile_dir
        .parent()
        .ok_or_else(|| anyhow!("unexpected test binary path {}", exe.display()))?;
    let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") | None => "dev".to_owned(),
        Some(other) => other.to_owned(),
    };
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(cargo)
        .args([
            "build",
            "--quiet",
            "-p",
            "kubekms-operator",
            "--bin",
            "kubekms-operator",
            "--profile",
            &profile,
            "--target-dir",
        ])
        .arg(target_dir)
        .current_dir(repo_root())
        .stdin(Stdio::null())
        .output()
        .context("running cargo build")?;
    if !out.status.success() {
        bail!(
            "cargo build -p kubekms-operator failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let binary = profile_dir.join("kubekms-operator");
    if !binary.is_file() {
        bail!("cargo build succeeded but {} is missing", binary.display());
    }
    Ok(binary)
}

/// Where the operator keeps its records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Store {
    /// Secrets in the operator's namespace, root key in a Secret there (as deployed).
    Kubernetes,
    /// A local database under the operator's data directory.
    Embedded,
}

/// One operator whose state (cluster records or data directory) outlives restarts; killed when
/// dropped.
pub struct Operator {
    cluster: &'static Cluster,
    binary: &'static Path,
    dir: PathBuf,
    namespace: String,
    store: Store,
    child: Option<Child>,
    starts: usize,
    /// The KMS API, `http://127.0.0.1:PORT`; the port changes on restart.
    pub endpoint: String,
    /// The admin API (test clock, metrics).
    pub admin_endpoint: String,
    pub access_key_id: String,
    pub secret_access_key: String,
}

impl Operator {
    /// Starts the operator with `store`, credentials in `dir/credentials.json`, the test
    /// clock, and free loopback ports. `namespace` is the operator's own namespace (where the
    /// cluster store keeps its records); the embedded store lives in `dir/data`.
    pub async fn start(
        cluster: &'static Cluster,
        dir: &Path,
        namespace: &str,
        store: Store,
    ) -> Result<Self> {
        let binary = tokio::task::spawn_blocking(operator_binary)
            .await
            .context("the build task")??;
        let (access_key_id, secret_access_key) = new_credentials();
        let credentials = serde_json::json!({
            "credentials": [{
                "accessKeyId": access_key_id,
                "secretAccessKey": secret_access_key,
                "accountId": ACCOUNT,
            }]
        });
        std::fs::write(dir.join("credentials.json"), credentials.to_string())
            .context("writing the credentials file")?;
        let mut operator = Self {
            cluster,
            binary,
            dir: dir.to_path_buf(),
            namespace: namespace.to_owned(),
            store,
            child: None,
            starts: 0,
            endpoint: String::new(),
            admin_endpoint: String::new(),
            access_key_id,
            secret_access_key,
        };
        operator.spawn().await?;
        Ok(operator)
    }

    /// Where the current process's stderr (its log) goes.
    pub fn log_path(&self) -> PathBuf {
        self.dir.join(format!("operator-{}.log", self.starts))
    }

    /// The tail of every run's log, oldest first, for failure dumps.
    pub fn log_tails(&self, lines: usize) -> String {
        let mut out = String::new();
        for n in 1..=self.starts {
            let path = self.dir.join(format!("operator-{n}.log"));
            out += &format!(
                "----- operator log, run {n} ({}) -----\n{}\n",
                path.display(),
                file_tail(&path, lines)
            );
        }
        out
    }

    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// SIGKILL: no shutdown code runs.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
            self.cluster.unregister_pid(child.id());
        }
    }

    /// Kill (if running) and start again over the same data; the ports change.
    pub async fn restart(&mut self) -> Result<()> {
        self.kill();
        self.spawn().await
    }

    /// A KMS client signed with the operator's credentials. Retries are off so every failure
    /// shows as it happened.
    pub fn kms(&self) -> aws_sdk_kms::Client {
        crate::node::kms_client(
            &self.endpoint,
            &self.access_key_id,
            &self.secret_access_key,
            None,
            Some(RetryConfig::disabled()),
        )
    }

    /// Moves the operator's clock (engine and controllers) forward. The operator runs the due
    /// work before answering and reconciles every object again.
    pub async fn advance_clock(&self, by: Duration) -> Result<()> {
        let millis = by.as_millis().to_string();
        let (status, body) = self
            .admin_request("POST", "/admin/clock/advance", &millis)
            .await
            .context("POST /admin/clock/advance")?;
        if status != 200 {
            bail!("POST /admin/clock/advance answered {status}: {body}");
        }
        Ok(())
    }

    /// The admin listener's Prometheus text.
    pub async fn metrics(&self) -> Result<String> {
        let (status, body) = self.admin_request("GET", "/metrics", "").await?;
        if status != 200 {
            bail!("GET /metrics answered {status}: {body}");
        }
        Ok(body)
    }

    /// [`http_request`] to the admin listener, answered within a minute so a wedged operator
    /// fails the test rather than hanging it.
    async fn admin_request(&self, method: &str, path: &str, body: &str) -> Result<(u16, String)> {
        tokio::time::timeout(
            Duration::from_secs(60),
            http_request(&self.admin_endpoint, method, path, body),
        )
        .await
        .context("response timed out")?
    }

    async fn spawn(&mut self) -> Result<()> {
        self.starts += 1;
        let log_path = self.log_path();
        let log = std::fs::File::create(&log_path)
            .with_context(|| format!("creating {}", log_path.display()))?;
        let mut command = Command::new(self.binary);
        command.arg("run");
        match self.store {
            Store::Kubernetes => command.args(["--store", "kubernetes"]),
            Store::Embedded => command
                .args(["--store", "embedded", "--data-dir"])
                .arg(self.dir.join("data")),
        };
        let mut child = command
            .arg("--namespace")
            .arg(&self.namespace)
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--kubeconfig")
            .arg(self.cluster.kubeconfig())
            .arg("--credentials")
            .arg(self.dir.join("credentials.json"))
            .arg("--account")
            .arg(ACCOUNT)
            .arg("--region")
            .arg(REGION)
            .arg("--test-clock")
            .arg("--admin-listen")
            .arg("127.0.0.1:0")
            .arg("--metrics-listen")
            .arg("127.0.0.1:0")
            .env_remove("KUBECONFIG")
            .env_remove("KUBEKMS_ACCESS_KEY_ID")
            .env_remove("KUBEKMS_SECRET_ACCESS_KEY")
            .env_remove("KUBEKMS_ACCOUNT_ID")
            .env("RUST_LOG", "info,kubekms_operator=debug")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .with_context(|| format!("spawning {}", self.binary.display()))?;
        self.cluster.register_pid(child.id());
        let stdout = child.stdout.take().context("the operator's stdout")?;
        self.child = Some(child);

        let ready = tokio::task::spawn_blocking(move || wait_ready(stdout, STARTUP_TIMEOUT))
            .await
            .context("the startup task")?;
        let (api, admin) = match ready {
            Ok(found) => found,
            Err(e) => {
                let status = self
                    .child
                    .as_mut()
                    .and_then(|c| c.try_wait().ok().flatten());
                self.kill();
                bail!(
                    "{e:#} (exit status {status:?}); log:\n{}",
                    file_tail(&log_path, 40)
                );
            }
        };
        self.endpoint = api;
        self.admin_endpoint = admin;
        Ok(())
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `(KMS API endpoint, admin endpoint)` from the operator's ready line, waited for up to
/// `timeout` (blocking). `stdout` is drained on a thread for the life of the process, so the
/// operator never blocks on a full pipe.
pub fn wait_ready(stdout: ChildStdout, timeout: Duration) -> Result<(String, String)> {
    let (tx, rx) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + timeout;
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                if let Some(rest) = line.strip_prefix(READY_PREFIX) {
                    let (api, admin) = rest
                        .split_once(", admin on ")
                        .ok_or_else(|| anyhow!("ready line without the admin listener: {line}"))?;
                    return Ok((api.trim().to_owned(), admin.trim().to_owned()));
                }
                seen.push(line);
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                bail!("the operator printed no ready line within {timeout:?}; stdout: {seen:?}")
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                bail!("the operator exited during startup; stdout: {seen:?}")
            }
        }
    }
}

fn new_credentials() -> (String, String) {
    use std::sync::atomic::{AtomicU32, Ordering};
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    (
        format!("AKIAE2E{}X{n}", std::process::id()),
        format!("e2e{nanos:x}{:x}", std::process::id()),
    )
}

/// A one-shot HTTP/1.1 request over loopback: `(status, body)`. The admin API is plain HTTP and
/// this avoids an HTTP client dependency for a few calls. The answer may take as long as it
/// takes (a clock advance over thousands of Keys runs minutes of due work); callers that want a
/// limit add one.
pub async fn http_request(
    endpoint: &str,
    method: &str,
    path: &str,
    body: &str,
) -> Result<(u16, String)> {
    let authority = endpoint
        .strip_prefix("http://")
        .ok_or_else(|| anyhow!("not an http endpoint: {endpoint}"))?
        .trim_end_matches('/');
    let mut stream = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::net::TcpStream::connect(authority),
    )
    .await
    .context("connect timed out")?
    .with_context(|| format!("connecting to {authority}"))?;
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {authority}\r\nContent-Type: text/plain\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await?;
    let response = String::from_utf8_lossy(&response);
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| anyhow!("malformed HTTP response: {response:.200}"))?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}
