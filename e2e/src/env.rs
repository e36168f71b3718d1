//! One test's world: a fresh namespace on the shared control plane, a scratch directory, and
//! (when the test asks) an operator for that namespace. A test that does not reach
//! [`TestEnv::pass`] (an `Err` returned through `?` or a panic) dumps what it saw to stderr.

use std::future::Future;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use kube::Api;
use tempfile::TempDir;

use crate::cluster::{cluster, Cluster};
use crate::operator::{Operator, Store};

/// Operator log lines shown when a test fails.
const LOG_TAIL_LINES: usize = 80;

/// The operator watches every namespace, so two at once would both act on each other's Keys:
/// tests that run one take turns.
fn operator_turn() -> Arc<tokio::sync::Mutex<()>> {
    static TURN: OnceLock<Arc<tokio::sync::Mutex<()>>> = OnceLock::new();
    TURN.get_or_init(|| Arc::new(tokio::sync::Mutex::new(())))
        .clone()
}

pub struct TestEnv {
    pub cluster: &'static Cluster,
    pub client: kube::Client,
    pub namespace: String,
    // Declared before `dir`: fields drop in order, and the operator must die before its data
    // directory goes.
    operator: Option<Operator>,
    dir: TempDir,
    passed: bool,
    /// Extra text the test wants in the failure dump.
    dump_hooks: Vec<Box<dyn Fn() -> String + Send + Sync>>,
    /// Held while this test's operator may run; released last.
    _turn: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl TestEnv {
    /// Starts (or joins) the control plane and creates a namespace named after the test,
    /// unique within the run.
    pub async fn new(test: &str) -> Result<Self> {
        let cluster = cluster()?;
        let client = cluster.client().await?;
        let namespace = unique_namespace(test);
        cluster
            .kubectl(&["create", "namespace", &namespace], None)
            .await?;
        let dir = tempfile::Builder::new()
            .prefix(&format!("kubekms-e2e-{test}-"))
            .tempdir()
            .context("creating the test's scratch directory")?;
        Ok(Self {
            cluster,
            client,
            namespace,
            operator: None,
            dir,
            passed: false,
            dump_hooks: Vec::new(),
            _turn: None,
        })
    }

    /// [`TestEnv::new`] plus a running operator with the cluster store, its records in the
    /// test's namespace (waiting for other tests' operators to finish first).
    pub async fn with_operator(test: &str) -> Result<Self> {
        Self::with_operator_store(test, Store::Kubernetes).await
    }

    /// [`TestEnv::with_operator`] with a choice of store.
    pub async fn with_operator_store(test: &str, store: Store) -> Result<Self> {
        let turn = operator_turn().lock_owned().await;
        let mut env = Self::new(test).await?;
        env._turn = Some(turn);
        let dir = env.dir.path().join("operator");
        std::fs::create_dir_all(&dir).context("creating the operator's directory")?;
        env.operator = Some(Operator::start(env.cluster, &dir, &env.namespace, store).await?);
        Ok(env)
    }

    /// The operator of [`TestEnv::with_operator`].
    pub fn operator(&self) -> Result<&Operator> {
        self.operator
            .as_ref()
            .context("this test has no operator; use TestEnv::with_operator")
    }

    pub fn operator_mut(&mut self) -> Result<&mut Operator> {
        self.operator
            .as_mut()
            .context("this test has no operator; use TestEnv::with_operator")
    }

    /// A KMS client for the operator's API (as it listens now).
    pub fn kms(&self) -> Result<aws_sdk_kms::Client> {
        Ok(self.operator()?.kms())
    }

    /// The test's scratch directory, removed when the test ends.
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// A typed API for a namespaced kind in the test's namespace.
    pub fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as kube::Resource>::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// kubectl in the test's namespace.
    pub async fn kubectl(&self, args: &[&str]) -> Result<String> {
        let mut all = vec!["-n", self.namespace.as_str()];
        all.extend_from_slice(args);
        self.cluster.kubectl(&all, None).await
    }

    /// `kubectl apply -f -` of `manifest` in the test's namespace.
    pub async fn apply(&self, manifest: &str) -> Result<String> {
        self.cluster
            .kubectl(&["-n", &self.namespace, "apply", "-f", "-"], Some(manifest))
            .await
    }

    /// Adds text to the failure dump, computed when the dump happens.
    pub fn on_failure_dump(&mut self, hook: impl Fn() -> String + Send + Sync + 'static) {
        self.dump_hooks.push(Box::new(hook));
    }

    /// The test passed: no dump, and the namespace is deleted (without waiting for it to go).
    pub fn pass(mut self) {
        self.passed = true;
    }

    fn dump(&self) {
        let ns = self.namespace.as_str();
        let mut out = format!("\n===== kubekms e2e: state of namespace {ns} =====\n");
        let show = |title: &str, args: &[&str]| -> String {
            let text = match self.cluster.kubectl_sync(args, None) {
                Ok(text) => text,
                Err(e) => format!("({e:#})"),
            };
            format!("----- {title} -----\n{text}\n")
        };
        out += &show(
            "kubekms resources",
            &["get", "-n", ns, "kubekms", "-o", "yaml"],
        );
        out += &show(
            "events",
            &[
                "get",
                "-n",
                ns,
                "events",
                "--sort-by=.metadata.creationTimestamp",
            ],
        );
        for hook in &self.dump_hooks {
            out += &hook();
        }
        if let Some(operator) = &self.operator {
            out += &operator.log_tails(LOG_TAIL_LINES);
        }
        out += "===== end of state =====\n";
        eprintln!("{out}");
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        if !self.passed {
            self.dump();
        }
        let had_operator = self.operator.is_some();
        self.operator = None;
        let ns = self.namespace.as_str();
        if had_operator {
            // With its operator gone nobody would remove the finalizers, and the next test's
            // operator (they watch every namespace) would pick these objects up: delete them
            // for good now.
            let _ = self.cluster.kubectl_sync(
                &["delete", "-n", ns, "kubekms", "--all", "--wait=false"],
                None,
            );
            if let Ok(names) = self
                .cluster
                .kubectl_sync(&["get", "-n", ns, "kubekms", "-o", "name"], None)
            {
                for name in names.lines().filter(|l| !l.is_empty()) {
                    let _ = self.cluster.kubectl_sync(
                        &[
                            "patch",
                            "-n",
                            ns,
                            name,
                            "--type=merge",
                            "-p",
                            r#"{"metadata":{"finalizers":null}}"#,
                        ],
                        None,
                    );
                }
            }
        }
        let _ = self
            .cluster
            .kubectl_sync(&["delete", "namespace", ns, "--wait=false"], None);
    }
}

/// The last `n` lines of a text file, for failure dumps.
pub fn file_tail(path: &std::path::Path, n: usize) -> String {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(n)..].join("\n")
        }
        Err(e) => format!("({}: {e})", path.display()),
    }
}

fn unique_namespace(test: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let mut name: String = test
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    name.truncate(40);
    let name = name.trim_matches('-');
    format!("e2e-{name}-{n}-{:05x}", nanos & 0xfffff)
}

/// Polls `check` every 100 ms until it returns `Ok(Some(value))`. `Ok(None)` means "not yet";
/// an `Err` is remembered and retried (the API server or the operator may be restarting). On
/// timeout the error says what was awaited and what was last seen.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>>>,
{
    let deadline = Instant::now() + timeout;
    let mut last_error = None;
    loop {
        match check().await {
            Ok(Some(value)) => return Ok(value),
            Ok(None) => {}
            Err(e) => last_error = Some(e),
        }
        if Instant::now() >= deadline {
            match last_error {
                Some(e) => {
                    bail!("timed out after {timeout:?} waiting for {what}; last error: {e:#}")
                }
                None => bail!("timed out after {timeout:?} waiting for {what}"),
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
