//! A server's certificate and key read from files (a Secret's volume: the chart's generated CA
//! or cert-manager's Certificate) and read again when they change, so a renewed certificate is
//! served without a restart. The webhook and the engine serve theirs this way; every replica
//! mounts the same Secret, so all of them serve one certificate, the one their clients' CA
//! bundle vouches for.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

#[cfg(feature = "test-certs")]
#[path = "tls_testing.rs"]
pub mod testing;

use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// How often the files are looked at.
pub const RELOAD_EVERY: Duration = Duration::from_secs(10);

/// Why a certificate could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} holds no PEM certificate")]
    NoCertificate { path: PathBuf },
    #[error("{path} holds no PEM private key")]
    NoKey { path: PathBuf },
    #[error("{path} is not PEM")]
    Pem {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the certificate and key do not go together, or the key is not supported")]
    Pair(#[source] rustls::Error),
    #[error("TLS configuration")]
    Config(#[source] rustls::Error),
}

/// What [`ReloadingCert::watch`] saw.
#[derive(Debug)]
pub enum Reload<'a> {
    /// A renewed certificate, from this file, is served from now on.
    Renewed(&'a Path),
    /// The files changed but do not load (caught mid-update, or broken): the served
    /// certificate stays.
    Kept(&'a TlsError),
}

/// The served certificate, replaced when the files change.
pub struct ReloadingCert {
    cert_path: PathBuf,
    key_path: PathBuf,
    provider: Arc<CryptoProvider>,
    current: RwLock<Loaded>,
}

struct Loaded {
    /// The certificate file as last loaded: a change of it is what triggers a reload.
    cert_pem: Vec<u8>,
    key: Arc<CertifiedKey>,
}

impl std::fmt::Debug for ReloadingCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReloadingCert")
            .field("cert_path", &self.cert_path)
            .finish_non_exhaustive()
    }
}

impl ReloadingCert {
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<Arc<Self>, TlsError> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let loaded = load(cert_path, key_path, &provider)?;
        Ok(Arc::new(Self {
            cert_path: cert_path.to_owned(),
            key_path: key_path.to_owned(),
            provider,
            current: RwLock::new(loaded),
        }))
    }

    /// Load the files again if the certificate changed; whether it did. A pair that does not
    /// load (caught mid-update) leaves the served one in place.
    pub fn reload_if_changed(&self) -> Result<bool, TlsError> {
        let cert_pem = read(&self.cert_path)?;
        let unchanged = self
            .current
            .read()
            .map(|c| c.cert_pem == cert_pem)
            .unwrap_or(false);
        if unchanged {
            return Ok(false);
        }
        let loaded = load(&self.cert_path, &self.key_path, &self.provider)?;
        if let Ok(mut current) = self.current.write() {
            *current = loaded;
        }
        Ok(true)
    }

    /// The served leaf certificate (DER).
    pub fn leaf(&self) -> Vec<u8> {
        self.current
            .read()
            .ok()
            .and_then(|c| c.key.cert.first().map(|der| der.as_ref().to_vec()))
            .unwrap_or_default()
    }

    /// Looks at the files every [`RELOAD_EVERY`], for as long as the process runs, and tells
    /// `report` of each renewal served and each failed reload.
    pub async fn watch(self: Arc<Self>, report: impl Fn(Reload<'_>) + Send + 'static) {
        self.watch_every(RELOAD_EVERY, report).await;
    }

    /// [`ReloadingCert::watch`], looking every `period`.
    pub async fn watch_every(
        self: Arc<Self>,
        period: Duration,
        report: impl Fn(Reload<'_>) + Send + 'static,
    ) {
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match self.reload_if_changed() {
                Ok(true) => report(Reload::Renewed(&self.cert_path)),
                Ok(false) => {}
                Err(e) => report(Reload::Kept(&e)),
            }
        }
    }

    /// A server configuration serving this certificate (HTTP/1.1).
    pub fn server_config(self: &Arc<Self>) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let mut config = rustls::ServerConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(TlsError::Config)?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current.read().ok().map(|c| c.key.clone())
    }
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

fn load(cert_path: &Path, key_path: &Path, provider: &CryptoProvider) -> Result<Loaded, TlsError> {
    let cert_pem = read(cert_path)?;
    let key_pem = zeroize::Zeroizing::new(read(key_path)?);
    let certs = rustls_pemfile::certs(&mut &cert_pem[..])
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::Pem {
            path: cert_path.to_owned(),
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: cert_path.to_owned(),
        });
    }
    let key = rustls_pemfile::private_key(&mut &key_pem[..])
        .map_err(|source| TlsError::Pem {
            path: key_path.to_owned(),
            source,
        })?
        .ok_or_else(|| TlsError::NoKey {
            path: key_path.to_owned(),
        })?;
    let key = CertifiedKey::from_der(certs, key, provider).map_err(TlsError::Pair)?;
    Ok(Loaded {
        cert_pem,
        key: Arc::new(key),
    })
}
