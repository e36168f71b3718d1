//! Keys at scale: N Key manifests applied by server-side apply from concurrent tasks, and a
//! watch that keeps, for every Key, whether it is Ready for its current generation and its
//! current key material version.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use futures::{StreamExt, TryStreamExt};
use kube::api::{Patch, PatchParams};
use kube::runtime::watcher;
use kube::Api;
use kubekms_crds::Key;

/// Key name → (Ready for the current generation, current key version; 0 before the first).
pub type Seen = Arc<Mutex<HashMap<String, (bool, i32)>>>;

/// Server-side apply (field manager `manager`) of `n` Key manifests (`bench-00000`...):
/// SYMMETRIC_DEFAULT, rotation every 90 days; `concurrency` at a time.
pub async fn apply_keys(
    keys: &Api<Key>,
    n: usize,
    concurrency: usize,
    manager: &str,
) -> Result<()> {
    let params = PatchParams::apply(manager).force();
    let applied: Vec<Result<()>> = futures::stream::iter(0..n)
        .map(|i| {
            let keys = keys.clone();
            let params = params.clone();
            async move {
                let name = format!("bench-{i:05}");
                let manifest = serde_json::json!({
                    "apiVersion": "kubekms.io/v1alpha1",
                    "kind": "Key",
                    "metadata": { "name": name },
                    "spec": {
                        "keySpec": "SYMMETRIC_DEFAULT",
                        "rotation": { "enabled": true, "periodDays": 90 },
                    },
                });
                keys.patch(&name, &params, &Patch::Apply(&manifest))
                    .await
                    .map(|_| ())
                    .with_context(|| format!("applying Key {name}"))
            }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    applied.into_iter().collect::<Result<Vec<()>>>()?;
    Ok(())
}

/// Keeps `seen` in step with the cluster's Keys until the watch ends (abort the task to stop).
pub async fn watch_keys(keys: Api<Key>, seen: Seen) {
    let stream = watcher(keys, watcher::Config::default().any_semantic());
    futures::pin_mut!(stream);
    loop {
        let event = match stream.try_next().await {
            Ok(Some(e)) => e,
            Ok(None) => return,
            Err(e) => {
                eprintln!("  (watch: {e}; retrying)");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        let Ok(mut seen) = seen.lock() else { return };
        match event {
            watcher::Event::Apply(k) | watcher::Event::InitApply(k) => {
                let ready = k.status.as_ref().is_some_and(|s| {
                    s.observed_generation == k.metadata.generation
                        && s.conditions
                            .iter()
                            .any(|c| c.type_ == "Ready" && c.status == "True")
                });
                let version = k
                    .status
                    .as_ref()
                    .and_then(|s| s.current_key_version)
                    .unwrap_or(0);
                seen.insert(k.metadata.name.unwrap_or_default(), (ready, version));
            }
            watcher::Event::Delete(k) => {
                seen.remove(k.metadata.name.as_deref().unwrap_or_default());
            }
            watcher::Event::Init | watcher::Event::InitDone => {}
        }
    }
}

/// Keys seen Ready with key version `min_version` or later.
pub fn count_ready(seen: &Seen, min_version: i32) -> Result<usize> {
    let seen = seen.lock().map_err(|_| anyhow!("watch state poisoned"))?;
    Ok(seen
        .values()
        .filter(|(ready, v)| *ready && *v >= min_version)
        .count())
}

/// Keys seen above key version `version`.
pub fn count_above(seen: &Seen, version: i32) -> Result<usize> {
    let seen = seen.lock().map_err(|_| anyhow!("watch state poisoned"))?;
    Ok(seen.values().filter(|(_, v)| *v > version).count())
}

/// Waits until `n` Keys are seen Ready (version 1 or later), counting from `started`, with a
/// progress line every 10 s; `alive` fails the wait when a process under test died. Returns
/// the Ready count and, if all became Ready before `timeout`, how long it took.
pub async fn wait_all_ready(
    seen: &Seen,
    n: usize,
    started: Instant,
    timeout: Duration,
    mut alive: impl FnMut() -> Result<()>,
) -> Result<(usize, Option<Duration>)> {
    let mut last_report = Instant::now();
    loop {
        let ready = count_ready(seen, 1)?;
        if ready >= n {
            return Ok((ready, Some(started.elapsed())));
        }
        alive()?;
        if started.elapsed() > timeout {
            eprintln!("  timed out: {ready}/{n} Ready");
            return Ok((ready, None));
        }
        if last_report.elapsed() > Duration::from_secs(10) {
            eprintln!(
                "  {ready}/{n} Ready after {:.0} s",
                started.elapsed().as_secs_f64()
            );
            last_report = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
