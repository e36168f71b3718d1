//! The one way to run an engine, used by every binary that serves it (`kubekms-engine
//! standalone`, the operator): process set-up (tracing, the rustls provider, the runtime),
//! the audit log chosen by a flag, the KMS API listener with optional TLS, the due-work loop,
//! shutdown on SIGINT/SIGTERM, and the audit log flushed at the end.

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

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
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
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
        })
    }
}

impl Bound {
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
        let due_work = tokio::spawn(async move {
            let mut tick = tokio::time::interval(DUE_WORK_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
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
