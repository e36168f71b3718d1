//! TLS from PEM files, with rustls on the aws-lc-rs provider.

use std::path::Path;
use std::sync::Arc;

use crate::error::{KmsError, Result};

/// A server configuration offering TLS 1.2/1.3 and HTTP/1.1 by ALPN, from a PEM certificate
/// chain (leaf first) and a PEM private key (PKCS#8, PKCS#1 or SEC1).
pub fn load_server_config(cert_pem: &Path, key_pem: &Path) -> Result<Arc<rustls::ServerConfig>> {
    let read = |path: &Path| {
        std::fs::read(path)
            .map_err(|e| KmsError::dependency(format!("cannot read {}", path.display()), e))
    };
    let cert_bytes = read(cert_pem)?;
    let key_bytes = zeroize::Zeroizing::new(read(key_pem)?);
    server_config_from_pem(&cert_bytes, &key_bytes)
}

pub fn server_config_from_pem(
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
