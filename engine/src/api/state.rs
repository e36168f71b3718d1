//! What every handler shares.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;

use crate::api::auth::Authenticator;
use crate::api::metrics::Metrics;
use crate::api::request_id::RequestIds;
use crate::audit::AuditLog;
use crate::clock::Clock;
use crate::identity::WebIdentity;
use crate::service::Kms;

/// Limits of the HTTP layer.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Larger request bodies are refused with 413 (KMS's largest inputs are 64 KiB).
    pub max_body_bytes: usize,
    /// A client must send its request headers within this long (slow-loris protection).
    pub header_read_timeout: Duration,
    /// ... and then its body within this long; a slower request is answered 408 and its
    /// connection closed.
    pub body_read_timeout: Duration,
    /// At most this many bytes of request bodies are held at once, across all connections;
    /// a body that does not fit waits (within `body_read_timeout`) for others to finish.
    pub max_buffered_body_bytes: usize,
    /// Open client connections at most; further ones wait in the listen backlog.
    pub max_connections: usize,
    /// Open connections from one client address at most; more are closed at once.
    pub max_connections_per_ip: usize,
    /// A connection on which nothing arrives for this long is closed (idle keep-alive).
    pub idle_timeout: Duration,
    /// A connection whose answers the client stops reading for this long is closed.
    pub write_timeout: Duration,
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
            body_read_timeout: Duration::from_secs(10),
            max_buffered_body_bytes: 64 * 1024 * 1024,
            max_connections: 1024,
            max_connections_per_ip: 256,
            idle_timeout: Duration::from_secs(60),
            write_timeout: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(10),
            tls_handshake_timeout: Duration::from_secs(10),
        }
    }
}

pub struct AppState {
    pub kms: Arc<Kms>,
    pub authenticator: Box<dyn Authenticator>,
    /// Ids for the requests this server answers.
    pub request_ids: RequestIds,
    /// One permit per byte of request body held (see `ServerConfig::max_buffered_body_bytes`).
    pub body_budget: Arc<Semaphore>,
    pub audit: AuditLog,
    pub metrics: Metrics,
    pub clock: Arc<dyn Clock>,
    pub config: ServerConfig,
    /// Answers STS AssumeRoleWithWebIdentity, when configured.
    pub web_identity: Option<Arc<WebIdentity>>,
}

impl AppState {
    pub fn new(
        kms: Arc<Kms>,
        authenticator: impl Authenticator,
        audit: AuditLog,
        clock: Arc<dyn Clock>,
        config: ServerConfig,
    ) -> Arc<Self> {
        Self::with_authenticator(kms, Box::new(authenticator), None, audit, clock, config)
    }

    pub fn with_authenticator(
        kms: Arc<Kms>,
        authenticator: Box<dyn Authenticator>,
        web_identity: Option<Arc<WebIdentity>>,
        audit: AuditLog,
        clock: Arc<dyn Clock>,
        config: ServerConfig,
    ) -> Arc<Self> {
        Arc::new(Self {
            kms,
            authenticator,
            request_ids: RequestIds::new(),
            body_budget: Arc::new(Semaphore::new(config.max_buffered_body_bytes)),
            audit,
            metrics: Metrics::default(),
            clock,
            config,
            web_identity,
        })
    }
}
