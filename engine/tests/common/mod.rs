//! Runs the real `kubekms-engine` binary in standalone mode for integration tests and builds
//! `aws-sdk-kms` clients pointed at it.
//!
//! Every integration test file compiles this module on its own and uses only part of it.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use aws_sdk_kms::config::retry::RetryConfig;
use aws_sdk_kms::config::timeout::TimeoutConfig;
use aws_sdk_kms::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_kms::Client;
use tempfile::TempDir;

pub const REGION: &str = "us-east-1";
/// The account standalone mode uses when none is configured.
pub const ACCOUNT: &str = "111122223333";

const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

/// One engine process over a data directory that outlives restarts. The process is killed when
/// the handle is dropped.
pub struct Engine {
    dir: TempDir,
    child: Option<Child>,
    starts: usize,
    pub endpoint: String,
    pub access_key_id: String,
    pub secret_access_key: String,
}

impl Engine {
    /// A new engine on a fresh data directory, listening on a free loopback port.
    pub fn start() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("kubekms-it-")
            .tempdir()
            .expect("temp dir");
        std::fs::create_dir(dir.path().join("data")).expect("data dir");
        let mut engine = Self {
            dir,
            child: None,
            starts: 0,
            endpoint: String::new(),
            access_key_id: String::new(),
            secret_access_key: String::new(),
        };
        engine.spawn();
        engine
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Where the current process's stderr goes (its logs).
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join(format!("engine-{}.log", self.starts))
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// SIGKILL: no shutdown code runs, exactly like a power cut for the process.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("SIGKILL the engine");
            child.wait().expect("reap the engine");
        }
    }

    /// Kill (if running) and start again on the same data directory. The port changes.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// A client signed with the engine's own credentials.
    pub fn client(&self) -> Client {
        client_for(&self.endpoint, &self.access_key_id, &self.secret_access_key)
    }

    /// A client with other credentials, to test authentication failures.
    pub fn client_with(&self, access_key_id: &str, secret_access_key: &str) -> Client {
        client_for(&self.endpoint, access_key_id, secret_access_key)
    }

    pub fn key_arn(&self, key_id: &str) -> String {
        format!("arn:aws:kms:{REGION}:{ACCOUNT}:key/{key_id}")
    }

    fn spawn(&mut self) {
        self.starts += 1;
        let log_path = self.log_path();
        let log = std::fs::File::create(&log_path).expect("engine log file");
        let mut child = Command::new(env!("CARGO_BIN_EXE_kubekms-engine"))
            .arg("standalone")
            .arg("--data-dir")
            .arg(self.data_dir())
            .arg("--listen")
            .arg("127.0.0.1:0")
            .env_remove("KUBEKMS_ACCESS_KEY_ID")
            .env_remove("KUBEKMS_SECRET_ACCESS_KEY")
            .env_remove("KUBEKMS_ACCOUNT_ID")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn kubekms-engine");
        let stdout = child.stdout.take().expect("piped stdout");
        // The reader keeps draining stdout for the life of the process so it never blocks on a
        // full pipe; the test only needs the first lines.
        let (tx, rx) = mpsc::channel::<String>();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    // Nobody listens any more; keep draining.
                    continue;
                }
            }
        });
        self.child = Some(child);

        let deadline = Instant::now() + STARTUP_TIMEOUT;
        let mut endpoint = None;
        let mut key_id = None;
        let mut secret = None;
        let mut seen = Vec::new();
        // After the listening line, give the credential lines a moment before falling back to
        // the data directory's credentials file (a restart may not print them).
        let mut creds_deadline = None;
        loop {
            let now = Instant::now();
            let wait_until = creds_deadline.unwrap_or(deadline).min(deadline);
            if now >= wait_until {
                break;
            }
            match rx.recv_timeout(wait_until - now) {
                Ok(line) => {
                    if let Some(rest) = line.split("listening on ").nth(1) {
                        let url = rest.split_whitespace().next().unwrap_or_default();
                        endpoint = Some(url.trim_end_matches('/').to_string());
                        creds_deadline = Some(Instant::now() + Duration::from_millis(500));
                    }
                    for word in line.split_whitespace() {
                        if let Some(v) = word.strip_prefix("AWS_ACCESS_KEY_ID=") {
                            key_id = Some(unquote(v));
                        }
                        if let Some(v) = word.strip_prefix("AWS_SECRET_ACCESS_KEY=") {
                            secret = Some(unquote(v));
                        }
                    }
                    seen.push(line);
                    if endpoint.is_some() && key_id.is_some() && secret.is_some() {
                        break;
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => break,
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = self
                        .child
                        .as_mut()
                        .and_then(|c| c.try_wait().ok().flatten());
                    panic!(
                        "kubekms-engine exited during startup ({status:?}); stdout:\n{}\nlog:\n{}",
                        seen.join("\n"),
                        self.log_tail()
                    );
                }
            }
        }
        let Some(endpoint) = endpoint else {
            panic!(
                "kubekms-engine did not say where it listens within {STARTUP_TIMEOUT:?}; \
                 stdout:\n{}\nlog:\n{}",
                seen.join("\n"),
                self.log_tail()
            );
        };
        let (key_id, secret) = match (key_id, secret) {
            (Some(k), Some(s)) => (k, s),
            _ => read_credentials_file(&self.data_dir().join("credentials.json")),
        };
        assert!(
            endpoint.starts_with("http://127.0.0.1:"),
            "unexpected endpoint {endpoint}"
        );
        self.endpoint = endpoint;
        self.access_key_id = key_id;
        self.secret_access_key = secret;
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn unquote(v: &str) -> String {
    v.trim_matches(|c| c == '\'' || c == '"' || c == ';')
        .to_string()
}

/// The first credential of the standalone credentials file, read by the engine's own parser.
fn read_credentials_file(path: &Path) -> (String, String) {
    let creds = kubekms_engine::config::Credentials::load_file(path)
        .unwrap_or_else(|e| panic!("no credentials printed and {}: {e}", path.display()));
    let first = creds
        .iter()
        .min_by(|a, b| a.access_key_id.cmp(&b.access_key_id))
        .expect("a credential");
    (
        first.access_key_id.clone(),
        first.secret_access_key().to_owned(),
    )
}

/// Retries off so every failure is seen as it happened; timeouts so a dead engine never hangs
/// a test.
pub fn client_for(endpoint: &str, access_key_id: &str, secret_access_key: &str) -> Client {
    let config = aws_sdk_kms::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(REGION))
        .endpoint_url(endpoint)
        .credentials_provider(Credentials::new(
            access_key_id,
            secret_access_key,
            None,
            None,
            "kubekms-test",
        ))
        .retry_config(RetryConfig::disabled())
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(5))
                .operation_timeout(Duration::from_secs(60))
                .build(),
        )
        .build();
    Client::from_conf(config)
}
