//! What every handler shares.

use std::sync::Arc;
use std::time::Duration;

use crate::api::metrics::Metrics;
use crate::audit::AuditLog;
use crate::clock::Clock;
use crate::service::Kms;
use crate::sigv4::Verifier;

/// Limits of the HTTP layer.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Larger request bodies are refused with 413 (KMS's largest inputs are 64 KiB).
    pub max_body_bytes: usize,
    /// A client must send its request headers within this long (slow-loris protection).
    pub header_read_timeout: Duration,
    /// How long shutdown waits for in-flight requests before closing connections anyway.
    pub shutdown_grace: Duration,
    /// How long a TLS handshake may take.
    pub tls_handshake_timeout: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: 1024 * 1024,
            header_read_timeout: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(10),
            tls_handshake_timeout: Duration::from_secs(10),
        }
    }
}

pub struct AppState {
    pub kms: Arc<Kms>,
    pub verifier: Verifier,
    pub audit: AuditLog,
    pub metrics: Metrics,
    pub clock: Arc<dyn Clock>,
    pub config: ServerConfig,
}

impl AppState {
    pub fn new(
        kms: Arc<Kms>,
        verifier: Verifier,
        audit: AuditLog,
        clock: Arc<dyn Clock>,
        config: ServerConfig,
    ) -> Arc<Self> {
        Arc::new(Self {
            kms,
            verifier,
            audit,
            metrics: Metrics::default(),
            clock,
            config,
        })
    }
}
