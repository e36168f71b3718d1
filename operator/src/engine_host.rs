//! The engine as this binary hosts it, set up one way for both places it runs: inside the
//! operator (`kubekms-operator run` without `--engine-config`) and in the engine's own pods
//! (`kubekms-operator engine`). The store and root key, the web-identity sessions, the
//! signature verifier with the access keys of the namespace's Secrets, the audit log, and the
//! engine runner bound to its listener.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use kube::Client;
use kubekms_engine::api::ServerConfig;
use kubekms_engine::clock::SystemClock;
use kubekms_engine::config::Credentials;
use kubekms_engine::crypto::RootKey;
use kubekms_engine::identity::session::Sessions;
use kubekms_engine::identity::{IdentityMap, WebIdentity};
use kubekms_engine::runner::{self, Bound, Engine};
use kubekms_engine::service::Kms;
use kubekms_engine::sigv4::Verifier;
use kubekms_engine::store::root_file::load_or_create_root_key;
use kubekms_engine::store::KeyStore;
use tokio::task::JoinHandle;

use crate::error::{Error, Result};
use crate::identity::KubeTokenReviewer;
use crate::store::{root_key_from_secret, KubeStore, ROOT_KEY_SECRET};

/// What the engine is, apart from its store.
pub struct EngineSettings {
    /// Where the access-key Secrets are read.
    pub namespace: String,
    pub account: String,
    pub admin_groups: Vec<String>,
    /// The Kubernetes user name of the operator's ServiceAccount, when the operator runs apart.
    pub operator_service_account: Option<String>,
    /// The Kubernetes user name of the injection webhook's ServiceAccount.
    pub webhook_service_account: Option<String>,
    /// `--audit-log`: a file, `-` or `off`.
    pub audit_log: String,
    pub audit_max_bytes: u64,
    /// Access keys from a file or the environment, besides the Secrets.
    pub credentials: Credentials,
    pub listen: SocketAddr,
    /// TLS for the KMS API, when it has a certificate.
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

/// The engine's records and the key they are wrapped under.
pub struct OpenedStore {
    pub store: Arc<dyn KeyStore>,
    pub root: RootKey,
    /// The cluster store, whose watch the engine follows (other replicas' writes).
    pub kube: Option<Arc<KubeStore>>,
}

/// The cluster store in `namespace`: records in Secrets, the root key from `root_key_file` or
/// the Secret `kubekms-root-key` (created with a fresh key on the first start).
pub async fn kubernetes_store(
    client: &Client,
    namespace: &str,
    root_key_file: Option<&Path>,
) -> Result<OpenedStore> {
    let root = match root_key_file {
        Some(path) => load_or_create_root_key(path, false)?,
        None => root_key_from_secret(client.clone(), namespace, ROOT_KEY_SECRET, true).await?,
    };
    let store = Arc::new(KubeStore::new(client.clone(), namespace));
    Ok(OpenedStore {
        store: store.clone(),
        root,
        kube: Some(store),
    })
}

/// A hosted engine, bound and ready to serve.
pub struct HostedEngine {
    pub kms: Arc<Kms>,
    pub bound: Bound,
    /// What runs beside the engine (the store watch, the access-key watch); stopped when it
    /// stops serving.
    tasks: Vec<JoinHandle<()>>,
}

impl HostedEngine {
    /// Serve until `shutdown`, then stop what runs beside the engine. `gate`: run due work
    /// only while it reads `true`.
    pub async fn serve(
        mut self,
        gate: Option<tokio::sync::watch::Receiver<bool>>,
        shutdown: impl std::future::Future<Output = ()> + Send,
    ) -> Result<()> {
        let bound = match gate {
            Some(gate) => self.bound.gate_due_work(gate),
            None => self.bound,
        };
        let served = bound.serve(shutdown).await;
        for task in self.tasks.drain(..) {
            task.abort();
        }
        Ok(served?)
    }
}

/// `--account` and `--region` as the engine takes them.
pub fn check_scope(account: &str, region: &str) -> Result<()> {
    if account.len() != 12 || !account.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Error::Config(format!(
            "--account {account:?} is not 12 digits"
        )));
    }
    if !kubekms_engine::sigv4::is_region_name(region) {
        return Err(Error::Config(format!(
            "--region {region:?} is not a region name (such as us-east-1)"
        )));
    }
    Ok(())
}

/// Open the engine over `opened` and bind its listener. `clock` is the keys' clock (a test
/// clock can move it); signatures, tokens and sessions are checked against the wall clock.
pub async fn host_engine(
    client: &Client,
    settings: EngineSettings,
    opened: OpenedStore,
    clock: Arc<SystemClock>,
) -> Result<HostedEngine> {
    let OpenedStore { store, root, kube } = opened;
    let audit_key = kubekms_engine::audit::AuditKey::from_root(&root)?;
    let sessions = Arc::new(Sessions::new(&root)?);
    let kms = Kms::open(store, root, clock.clone()).await?;
    let mut tasks = Vec::new();
    // Other replicas' writes reach this engine through the watch, as changes the engine follows.
    if let Some(kube) = kube {
        let (watch, changes) = kube.watch();
        tasks.push(tokio::spawn(kms.clone().follow(changes)));
        tasks.push(tokio::spawn(watch));
    }
    let audit = runner::audit_log(&settings.audit_log, audit_key, settings.audit_max_bytes)?;

    // A client signs with its own time, and moving the keys' clock forward must not make every
    // request "expired".
    let wall_clock = SystemClock::new();
    let identities = IdentityMap {
        admin_groups: settings.admin_groups,
        operator_service_account: settings.operator_service_account,
        webhook_service_account: settings.webhook_service_account,
    };
    let web_identity = Arc::new(WebIdentity::new(
        Arc::new(KubeTokenReviewer::new(client.clone())),
        sessions,
        identities.clone(),
        settings.account.clone(),
        wall_clock.clone(),
    ));
    let verifier = Arc::new(
        Verifier::new(settings.credentials, wall_clock).with_sessions(web_identity.clone()),
    );
    tasks.push(tokio::spawn(crate::identity::watch_access_keys(
        client.clone(),
        settings.namespace,
        verifier.clone(),
        identities,
        settings.account,
    )));
    let bound = Engine {
        kms: kms.clone(),
        authenticator: Box::new(verifier),
        web_identity: Some(web_identity),
        audit,
        clock,
        config: ServerConfig::default(),
        tls: settings.tls,
    }
    .bind(settings.listen)
    .await;
    let bound = match bound {
        Ok(bound) => bound,
        Err(e) => {
            for task in tasks {
                task.abort();
            }
            return Err(e.into());
        }
    };
    Ok(HostedEngine { kms, bound, tasks })
}

/// Access keys from `--credentials` and the environment (`KUBEKMS_ACCESS_KEY_ID`, …). None is
/// fine: callers then come with ServiceAccount tokens or access-key Secrets.
pub fn credentials(file: Option<&Path>) -> Result<Credentials> {
    let mut credentials = match file {
        Some(path) => Credentials::load_file(path)?,
        None => Credentials::default(),
    };
    if let Some(c) = Credentials::from_env()? {
        credentials.insert(c)?;
    }
    Ok(credentials)
}
