//! A cluster for tests of the web-identity exchange (this crate's, and the operator's remote
//! client's): it accepts exactly the tokens put into `known`, and counts the reviews it was
//! asked for, so tests can see what the review cache spared.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use base64::Engine as _;
use parking_lot::Mutex;

use super::{ReviewedToken, TokenReviewer};
use crate::error::{KmsError, Result};

#[derive(Default)]
pub struct FakeTokenReviewer {
    /// Token → what the cluster says about it; remove one to "delete its ServiceAccount".
    pub known: Mutex<HashMap<String, ReviewedToken>>,
    pub reviews: AtomicUsize,
}

#[async_trait]
impl TokenReviewer for FakeTokenReviewer {
    async fn review(&self, token: &str) -> Result<ReviewedToken> {
        self.reviews.fetch_add(1, Ordering::SeqCst);
        self.known
            .lock()
            .get(token)
            .cloned()
            .ok_or_else(|| KmsError::InvalidIdentityToken("token not accepted".into()))
    }
}

/// A JWT-shaped token (audience `kubekms`) expiring at `exp` (Unix seconds), distinct per
/// `n`. Only its claims are read before review; the signature is the cluster's business.
pub fn jwt(exp: u64, n: u32) -> String {
    let claims = format!(r#"{{"exp":{exp},"aud":["kubekms"],"n":{n}}}"#);
    format!("e30.{}.sig", B64URL.encode(claims))
}

/// A real engine for other crates' tests: a memory store, key policies enforced, the KMS and
/// STS API on a loopback port, and web identity reviewed by a [`FakeTokenReviewer`]. Serves
/// until dropped.
pub struct LoopbackEngine {
    pub kms: std::sync::Arc<crate::service::Kms>,
    pub cluster: std::sync::Arc<FakeTokenReviewer>,
    /// `http://127.0.0.1:PORT` (`https://` with TLS)
    pub url: String,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl LoopbackEngine {
    /// With ServiceAccounts mapped by `identities`, in `account`.
    pub async fn start(identities: super::IdentityMap, account: &str) -> Result<Self> {
        Self::start_with(identities, account, None).await
    }

    /// The same, serving TLS with `tls` (`url` is then `https://127.0.0.1:PORT`).
    pub async fn start_with(
        identities: super::IdentityMap,
        account: &str,
        tls: Option<std::sync::Arc<rustls::ServerConfig>>,
    ) -> Result<Self> {
        use std::sync::Arc;
        let clock = crate::clock::SystemClock::new();
        let root = crate::crypto::RootKey::from_bytes(&crate::crypto::RootKey::generate()?)?;
        let sessions = Arc::new(super::session::Sessions::new(&root)?);
        let kms = crate::service::Kms::open(
            Arc::new(crate::store::memory::MemoryStore::new()),
            root,
            clock.clone(),
        )
        .await?;
        let cluster = Arc::new(FakeTokenReviewer::default());
        let web = Arc::new(super::WebIdentity::new(
            cluster.clone(),
            sessions,
            identities,
            account,
            clock.clone(),
        ));
        let verifier =
            crate::sigv4::Verifier::new(crate::config::Credentials::default(), clock.clone())
                .with_sessions(web.clone());
        let bound = crate::runner::Engine {
            kms: kms.clone(),
            authenticator: Box::new(verifier),
            web_identity: Some(web),
            audit: crate::audit::AuditLog::disabled(),
            clock,
            config: Default::default(),
            tls,
        }
        .bind(std::net::SocketAddr::from(([127, 0, 0, 1], 0)))
        .await?;
        let url = bound.endpoint();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(bound.serve(async {
            let _ = stopped.await;
        }));
        Ok(Self {
            kms,
            cluster,
            url,
            _stop: stop,
        })
    }
}
