//! TLS from PEM files, with rustls on the aws-lc-rs provider; renewed files are served without
//! a restart.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use kubekms_proto::tls::{Reload, ReloadingCert, TlsError, RELOAD_EVERY};

use crate::error::{KmsError, Result};

/// A server configuration offering TLS 1.2/1.3 and HTTP/1.1 by ALPN, serving the PEM
/// certificate chain (leaf first) and PEM private key (PKCS#8, PKCS#1 or SEC1) in these files,
/// and the renewed ones once they change (looked at every
/// [`kubekms_proto::tls::RELOAD_EVERY`]; a pair that does not load leaves the served one in
/// place). Spawns that watch on the current tokio runtime.
pub fn load_server_config(cert_pem: &Path, key_pem: &Path) -> Result<Arc<rustls::ServerConfig>> {
    load_server_config_every(cert_pem, key_pem, RELOAD_EVERY)
}

/// [`load_server_config`], looking at the files every `period`.
pub fn load_server_config_every(
    cert_pem: &Path,
    key_pem: &Path,
    period: Duration,
) -> Result<Arc<rustls::ServerConfig>> {
    let failed = |e: TlsError| KmsError::dependency("the engine's TLS certificate", e);
    let cert = ReloadingCert::load(cert_pem, key_pem).map_err(failed)?;
    let config = cert.server_config().map_err(failed)?;
    tokio::spawn(cert.watch_every(period, |reload| match reload {
        Reload::Renewed(path) => {
            tracing::info!(path = %path.display(), "serving the renewed TLS certificate");
        }
        Reload::Kept(e) => {
            tracing::warn!(error = %e, "keeping the current TLS certificate");
        }
    }));
    Ok(config)
}

/// A server configuration for a fixed PEM certificate and key (tests).
#[cfg(test)]
pub(crate) fn server_config_from_pem(
    cert_pem: &[u8],
    key_pem: &[u8],
) -> Result<Arc<rustls::ServerConfig>> {
    let certs = rustls_pemfile::certs(&mut &cert_pem[..])
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| KmsError::dependency("invalid certificate PEM", e))?;
    if certs.is_empty() {
        return Err(KmsError::internal(
            "the certificate file holds no certificate",
        ));
    }
    let key = rustls_pemfile::private_key(&mut &key_pem[..])
        .map_err(|e| KmsError::dependency("invalid private key PEM", e))?
        .ok_or_else(|| KmsError::internal("the key file holds no private key"))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| KmsError::dependency("TLS configuration", e))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| KmsError::dependency("TLS certificate and key", e))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_empty_or_garbage_pem() {
        assert!(server_config_from_pem(b"", b"").is_err());
        assert!(server_config_from_pem(b"not a pem", b"not a pem").is_err());
    }
}
