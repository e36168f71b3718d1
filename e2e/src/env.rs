//! One test's world: a fresh namespace on the shared control plane, a scratch directory, and
//! (when the test asks) an operator for that namespace. A test that does not reach
//! [`TestEnv::pass`] (an `Err` returned through `?` or a panic) dumps what it saw to stderr.

use std::future::Future;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use kube::Api;
use tempfile::TempDir;

use crate::cluster::{cluster, Cluster};

pub struct TestEnv {
    pub cluster: &'static Cluster,
    pub client: kube::Client,
    pub namespace: String,
    dir: TempDir,
    passed: bool,
    /// Extra text the test wants in the failure dump (for example an operator's log path).
    dump_hooks: Vec<Box<dyn Fn() -> String + Send + Sync>>,
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
            dir,
            passed: false,
            dump_hooks: Vec::new(),
        })
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
        out += "===== end of state =====\n";
        eprintln!("{out}");
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        if !self.passed {
            self.dump();
        }
        // Custom resources with finalizers may hold the namespace in Terminating once their
        // operator is gone; that is harmless, the control plane goes away with the run.
        let _ = self.cluster.kubectl_sync(
            &["delete", "namespace", &self.namespace, "--wait=false"],
            None,
        );
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
