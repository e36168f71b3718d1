//! The one way to run an engine, used by every binary that serves it (`kubekms-engine
//! standalone`, the operator): process set-up (tracing, the rustls provider, the runtime),
//! the audit log chosen by a flag, the KMS API listener with optional TLS, the due-work loop
//! (optionally gated, so that of several replicas only a lease holder runs it), shutdown on
//! SIGINT/SIGTERM, and the audit log flushed at the end.

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::api::auth::Authenticator;
use crate::api::{self, AppState, ServerConfig};
use crate::audit::{AuditKey, AuditLog};
use crate::clock::Clock;
use crate::error::{KmsError, Result};
use crate::identity::WebIdentity;
use crate::service::Kms;

/// How often due work (rotations, deletion windows, material expiry) is looked for.
pub const DUE_WORK_INTERVAL: Duration = Duration::from_secs(1);

/// Logs to stderr, filtered by `RUST_LOG` (default `info`); installs aws-lc-rs as rustls's
/// process-wide provider; and builds the multi-threaded runtime the engine runs on.
pub fn init_process() -> Result<tokio::runtime::Runtime> {
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        // Colour codes only for a person at a terminal, not in a pod's log or a file.
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    // rustls picks its provider from the process default when a config does not name one.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| KmsError::dependency("cannot start the async runtime", e))
}

/// The audit log a `--audit-log` value names: a file (rotated at `max_bytes`), `-` for stdout,
/// or `off`; chained under `key`.
pub fn audit_log(arg: &str, key: AuditKey, max_bytes: u64) -> Result<AuditLog> {
    match arg {
        "off" => Ok(AuditLog::disabled()),
        "-" => Ok(AuditLog::to_stdout(key)),
        path => AuditLog::to_file(Path::new(path), key, max_bytes),
    }
}

/// A data directory only its owner can read, created if missing.
pub fn create_private_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| {
                KmsError::dependency(format!("cannot create data directory {}", dir.display()), e)
            })?;
    }
    Ok(())
}

/// Everything an engine serves with.
pub struct Engine {
    pub kms: Arc<Kms>,
    pub authenticator: Box<dyn Authenticator>,
    /// The STS web-identity exchange, when the engine runs where tokens can be reviewed.
    pub web_identity: Option<Arc<WebIdentity>>,
    pub audit: AuditLog,
    pub clock: Arc<dyn Clock>,
    pub config: ServerConfig,
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

/// An engine whose listener is bound: its address is known before it serves.
pub struct Bound {
    engine: Engine,
    listener: TcpListener,
    addr: SocketAddr,
    due_work_gate: Option<watch::Receiver<bool>>,
}

impl Engine {
    pub async fn bind(self, addr: SocketAddr) -> Result<Bound> {
        let listener = api::server::bind(addr).await?;
        let addr = listener
            .local_addr()
            .map_err(|e| KmsError::dependency("listener address", e))?;
        Ok(Bound {
            engine: self,
            listener,
            addr,
            due_work_gate: None,
        })
    }
}

impl Bound {
    /// Run due work only while `gate` reads `true` (this replica holds the scheduler lease).
    /// Without a gate every replica runs it; that is still safe where the store refuses
    /// conflicting writes, the gate only spares the losing writes.
    pub fn gate_due_work(mut self, gate: watch::Receiver<bool>) -> Self {
        self.due_work_gate = Some(gate);
        self
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The endpoint clients use: `http(s)://ADDR`.
    pub fn endpoint(&self) -> String {
        let scheme = if self.engine.tls.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{}", self.addr)
    }

    /// Serve until `shutdown` completes, running due work every [`DUE_WORK_INTERVAL`]; then let
    /// open requests finish and flush the audit log.
    pub async fn serve(self, shutdown: impl Future<Output = ()> + Send) -> Result<()> {
        let Engine {
            kms,
            authenticator,
            web_identity,
            audit,
            clock,
            config,
            tls,
        } = self.engine;
        let due_kms = kms.clone();
        let gate = self.due_work_gate;
        let due_work = tokio::spawn(async move {
            let mut tick = tokio::time::interval(DUE_WORK_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if gate.as_ref().is_some_and(|g| !*g.borrow()) {
                    continue;
                }
                if let Err(e) = due_kms.run_due_work().await {
                    tracing::warn!(error = %e, "scheduled key work failed; retrying next tick");
                }
            }
        });
        let state =
            AppState::with_authenticator(kms, authenticator, web_identity, audit, clock, config);
        let served = api::serve(self.listener, state.clone(), tls, shutdown).await;
        due_work.abort();
        let flushed = state.clone();
        tokio::task::spawn_blocking(move || flushed.audit.flush())
            .await
            .map_err(|_| KmsError::internal("flushing the audit log was interrupted"))?;
        tracing::info!("stopped");
        served
    }
}

/// Completes on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let term = async {
        match signal(SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: shutting down"),
        () = term => tracing::info!("SIGTERM: shutting down"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{SystemClock, MILLIS_PER_DAY};
    use crate::config::Credentials;
    use crate::crypto::RootKey;
    use crate::record::Scope;
    use crate::service::{Caller, Principal};
    use crate::sigv4::Verifier;
    use crate::store::memory::MemoryStore;
    use kubekms_proto::ops::{CreateKeyRequest, KeyIdRequest};

    /// Due work waits for the gate: a key whose rotation is due is rotated only once the gate
    /// opens (this replica holds the scheduler lease).
    #[tokio::test]
    async fn due_work_runs_only_through_an_open_gate() {
        let clock = SystemClock::new();
        let kms = Kms::open(
            Arc::new(MemoryStore::new()),
            RootKey::from_bytes(&[9u8; 32]).unwrap(),
            clock.clone(),
        )
        .await
        .unwrap();
        let caller = Caller {
            scope: Scope::new("111122223333", "us-east-1"),
            principal: Principal::new("arn:aws:iam::111122223333:root"),
            request_id: "test".into(),
        };
        let key = kms
            .create_key(
                &caller,
                CreateKeyRequest {
                    rotation_period_in_days: Some(90),
                    ..CreateKeyRequest::default()
                },
            )
            .await
            .result
            .unwrap()
            .key_metadata
            .key_id;
        let rotations = |kms: Arc<Kms>, key: String, caller: Caller| async move {
            kms.list_key_rotations(
                &caller,
                kubekms_proto::ops::ListKeyRotationsRequest {
                    key_id: key,
                    limit: None,
                    marker: None,
                },
            )
            .await
            .result
            .unwrap()
            .rotations
            .len()
        };
        clock.advance(91 * MILLIS_PER_DAY);
        let (open, gate) = watch::channel(false);
        let bound = Engine {
            kms: kms.clone(),
            authenticator: Box::new(Verifier::new(Credentials::default(), clock.clone())),
            web_identity: None,
            audit: AuditLog::disabled(),
            clock: clock.clone(),
            config: ServerConfig::default(),
            tls: None,
        }
        .bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
        .gate_due_work(gate);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let served = tokio::spawn(bound.serve(async {
            let _ = stopped.await;
        }));
        tokio::time::sleep(DUE_WORK_INTERVAL * 2 + Duration::from_millis(500)).await;
        assert_eq!(rotations(kms.clone(), key.clone(), caller.clone()).await, 0);
        open.send(true).unwrap();
        let deadline = std::time::Instant::now() + DUE_WORK_INTERVAL * 5;
        while rotations(kms.clone(), key.clone(), caller.clone()).await == 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "not rotated through the open gate"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let status = kms
            .get_key_rotation_status(&caller, KeyIdRequest::new(key))
            .await
            .result
            .unwrap();
        assert!(status.key_rotation_enabled);
        let _ = stop.send(());
        served.await.unwrap().unwrap();
    }
}
