//! `kubekms-operator run`: the key engine, its KMS API, its scheduled work and the controllers,
//! in one process.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::channel::mpsc;
use futures::StreamExt;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::Client;
use kubekms_crds::Key;
use kubekms_engine::api::{self, ServerConfig};
use kubekms_engine::clock::SystemClock;
use kubekms_engine::config::{self, Credentials};
use kubekms_engine::identity::session::Sessions;
use kubekms_engine::identity::{IdentityMap, WebIdentity};
use kubekms_engine::record::Scope;
use kubekms_engine::runner::{self, Engine};
use kubekms_engine::service::{AccountRole, Caller, Kms, Principal};
use kubekms_engine::sigv4::Verifier;
use kubekms_engine::store::embedded::EmbeddedStore;
use kubekms_engine::store::root_file::load_or_create_root_key;
use kubekms_engine::store::KeyStore;

use crate::controller::{alias, key, Context};
use crate::engine::EngineClient;
use crate::error::{Error, Result};
use crate::identity::KubeTokenReviewer;
use crate::store::{root_key_from_secret, KubeStore, ROOT_KEY_SECRET};

/// Where the engine keeps its records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum StoreKind {
    /// In the cluster (Secrets in --namespace); several replicas share it.
    Kubernetes,
    /// A local database under --data-dir (one replica; for development and tests).
    Embedded,
}

#[derive(Clone, Debug, clap::Args)]
pub struct RunArgs {
    /// The operator's own namespace (where the cluster store keeps its records).
    #[arg(long, default_value = "kubekms", env = "POD_NAMESPACE")]
    pub namespace: String,
    /// Address of the KMS API; port 0 picks a free port (printed on stdout).
    #[arg(long, default_value = "127.0.0.1:4599")]
    pub listen: SocketAddr,
    /// Kubeconfig to use; default: in-cluster config or $KUBECONFIG.
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    #[arg(long, value_enum, default_value = "kubernetes")]
    pub store: StoreKind,
    /// Root key file (64 hex characters) for --store kubernetes. Default: the Secret
    /// `kubekms-root-key` in --namespace, created with a fresh key on the first start.
    #[arg(long)]
    pub root_key_file: Option<PathBuf>,
    /// Data directory of the embedded store (also holds root.key and, when no credentials are
    /// given, a generated credentials.json).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// The AWS account the operator's keys live in.
    #[arg(long, default_value = config::DEFAULT_ACCOUNT_ID)]
    pub account: String,
    /// The region the operator's keys live in.
    #[arg(long, default_value = "us-east-1")]
    pub region: String,
    /// JSON file of access keys the KMS API accepts (the engine's format), besides the
    /// access-key Secrets of --namespace and ServiceAccount tokens.
    #[arg(long)]
    pub credentials: Option<PathBuf>,
    /// Kubernetes groups whose members act as the account's administrators (the account
    /// principal of key policies; may create and list every key). Repeat for several.
    #[arg(
        long = "admin-group",
        value_name = "GROUP",
        default_value = "system:masters"
    )]
    pub admin_groups: Vec<String>,
    /// Audit log of the KMS API: a file, `-` for stdout, or `off`.
    #[arg(long, default_value = "off")]
    pub audit_log: String,
    /// Rotate the audit log file before it grows past this size (0: never).
    #[arg(long, value_name = "BYTES", default_value_t = kubekms_engine::audit::DEFAULT_MAX_BYTES)]
    pub audit_max_bytes: u64,
    /// Where the operator's own metrics (reconciles, events) are served: GET /metrics. The
    /// engine's request metrics are on the KMS API's port (GET /metrics).
    #[arg(long, default_value = "127.0.0.1:9464")]
    pub metrics_listen: SocketAddr,
    /// Let tests move the clock forward (POST /admin/clock/advance on --admin-listen).
    #[arg(long)]
    pub test_clock: bool,
    /// Address of the admin API (clock control, operator metrics); needs --test-clock.
    #[arg(long, requires = "test_clock")]
    pub admin_listen: Option<SocketAddr>,
}

/// The principal the controllers act as in the engine.
pub fn operator_principal(account: &str) -> String {
    format!("arn:aws:iam::{account}:role/kubekms-operator")
}

/// The line printed on stdout once the listeners are bound. Tests wait for it.
pub fn ready_line(api: &str, admin: Option<&str>) -> String {
    match admin {
        Some(admin) => format!("kubekms operator: KMS API on {api}, admin on {admin}"),
        None => format!("kubekms operator: KMS API on {api}"),
    }
}

pub async fn run(args: RunArgs) -> Result<()> {
    if args.account.len() != 12 || !args.account.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Error::Config(format!(
            "--account {:?} is not 12 digits",
            args.account
        )));
    }
    if !kubekms_engine::sigv4::is_region_name(&args.region) {
        return Err(Error::Config(format!(
            "--region {:?} is not a region name (such as us-east-1)",
            args.region
        )));
    }
    let client = kube_client(args.kubeconfig.as_deref()).await?;
    let clock = SystemClock::new();
    let (store, root, kube_store) = open_store(&args, &client).await?;
    let audit_key = kubekms_engine::audit::AuditKey::from_root(&root)?;
    let sessions = Arc::new(Sessions::new(&root)?);
    let kms = Kms::open(store, root, clock.clone()).await?;
    // Other replicas' writes reach this engine through the watch, as changes the engine follows.
    let store_watch = kube_store.map(|s| {
        let (watch, changes) = s.watch();
        tokio::spawn(kms.clone().follow(changes));
        tokio::spawn(watch)
    });
    let credentials = load_credentials(&args)?;
    let audit = runner::audit_log(&args.audit_log, audit_key, args.audit_max_bytes)?;

    // Signatures, tokens and sessions are checked against the wall clock, not the test clock:
    // a client signs with its own time, and moving the keys' clock forward must not make every
    // request "expired".
    let wall_clock = SystemClock::new();
    let identities = IdentityMap {
        admin_groups: args.admin_groups.clone(),
    };
    let web_identity = Arc::new(WebIdentity::new(
        Arc::new(KubeTokenReviewer::new(client.clone())),
        sessions,
        identities.clone(),
        args.account.clone(),
        wall_clock.clone(),
    ));
    let verifier =
        Arc::new(Verifier::new(credentials, wall_clock).with_sessions(web_identity.clone()));
    let access_keys = tokio::spawn(crate::identity::watch_access_keys(
        client.clone(),
        args.namespace.clone(),
        verifier.clone(),
        identities,
        args.account.clone(),
    ));
    let engine = Engine {
        kms: kms.clone(),
        authenticator: Box::new(verifier),
        web_identity: Some(web_identity),
        audit,
        clock: clock.clone(),
        config: ServerConfig::default(),
        tls: None,
    }
    .bind(args.listen)
    .await?;
    let api_addr = engine.addr();
    let admin_listener = match args.admin_listen {
        Some(addr) => Some(api::server::bind(addr).await?),
        None => None,
    };
    let admin_addr = admin_listener.as_ref().map(local_addr).transpose()?;
    let metrics_listener = api::server::bind(args.metrics_listen).await?;
    let metrics_addr = local_addr(&metrics_listener)?;

    let caller = Caller {
        scope: Scope::new(args.account.clone(), args.region.clone()),
        // Creates the keys of Key resources; manages them through the documents it writes.
        principal: Principal::new(operator_principal(&args.account))
            .with_role(AccountRole::KeyCreator),
        request_id: "kubekms-operator".into(),
    };
    let ctx = Context::new(
        client.clone(),
        EngineClient::new(kms.clone(), caller),
        clock.clone(),
    );

    // Reconcile-everything triggers, fired when the test clock moves.
    let (key_tx, key_rx) = mpsc::unbounded::<()>();
    let (alias_tx, alias_rx) = mpsc::unbounded::<()>();
    let (import_tx, import_rx) = mpsc::unbounded::<()>();
    let (policy_tx, policy_rx) = mpsc::unbounded::<()>();

    let admin = admin_listener.map(|listener| {
        let admin = crate::admin::AdminState {
            clock: clock.clone(),
            kms: kms.clone(),
            ctx: ctx.clone(),
            triggers: vec![
                key_tx.clone(),
                alias_tx.clone(),
                policy_tx.clone(),
                import_tx.clone(),
            ],
        };
        tokio::spawn(crate::admin::serve(listener, admin))
    });

    // One watch of Keys, fanned out to the controllers whose objects depend on Keys.
    let (alias_keys_tx, alias_keys) = mpsc::unbounded::<Key>();
    let (import_keys_tx, import_keys) = mpsc::unbounded::<Key>();
    let (policy_keys_tx, policy_keys) = mpsc::unbounded::<Key>();
    let keys = tokio::spawn(run_key_controller(
        ctx.clone(),
        key_rx,
        vec![alias_keys_tx, import_keys_tx, policy_keys_tx],
    ));
    let aliases = tokio::spawn(alias::run(ctx.clone(), alias_rx, alias_keys));
    let imports = tokio::spawn(crate::controller::import::run(
        ctx.clone(),
        import_rx,
        import_keys,
    ));
    let policies = tokio::spawn(crate::controller::policy::run(
        ctx.clone(),
        policy_rx,
        policy_keys,
    ));

    {
        use std::io::Write;
        let api_url = engine.endpoint();
        let admin_url = admin_addr.map(|a| format!("http://{a}"));
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{}", ready_line(&api_url, admin_url.as_deref()));
        let _ = out.flush();
    }
    let metrics = tokio::spawn(crate::admin::serve_metrics(metrics_listener, ctx.clone()));
    tracing::info!(api = %api_addr, metrics = %metrics_addr, namespace = %args.namespace, "operator running");

    // The engine's runner: the KMS API, due work, the audit log flushed at the end.
    engine.serve(runner::shutdown_signal()).await?;
    keys.abort();
    access_keys.abort();
    metrics.abort();
    aliases.abort();
    imports.abort();
    policies.abort();
    if let Some(w) = store_watch {
        w.abort();
    }
    if let Some(admin) = admin {
        admin.abort();
    }
    drop((key_tx, alias_tx, policy_tx, import_tx));
    Ok(())
}

async fn run_key_controller(
    ctx: Arc<Context>,
    trigger: mpsc::UnboundedReceiver<()>,
    dependents: Vec<mpsc::UnboundedSender<Key>>,
) {
    // Keys changed in the engine by anyone (imported material, a request made with the AWS
    // CLI, scheduled rotation, expiry, the end of a deletion window, another replica):
    // reconciled as soon as each change is stored, not when their requeue comes or a whole pass
    // of due work is over.
    let scope = ctx.engine.caller().scope.clone();
    let changes = futures::stream::unfold(ctx.engine.key_changes(), |mut rx| async {
        rx.recv().await.map(|change| (change, rx))
    });
    let lookup = ctx.clone();
    let changed_keys = changes
        .filter(move |change| std::future::ready(change.scope == scope))
        .filter_map(move |change| {
            let ctx = lookup.clone();
            async move { key::key_of_engine_key(&ctx, &change.key_id.to_string()).await }
        });
    key::controller(ctx.client.clone(), dependents)
        .reconcile_all_on(trigger)
        .reconcile_on(changed_keys)
        .run(key::reconcile, key::error_policy, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "Key controller");
            }
        })
        .await;
}

fn local_addr(listener: &tokio::net::TcpListener) -> Result<SocketAddr> {
    listener.local_addr().map_err(|source| Error::Io {
        context: "listener address".into(),
        source,
    })
}

async fn kube_client(kubeconfig: Option<&Path>) -> Result<Client> {
    match kubeconfig {
        Some(path) => {
            let kc = Kubeconfig::read_from(path)
                .map_err(|e| Error::Config(format!("kubeconfig {}: {e}", path.display())))?;
            let config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
                .await
                .map_err(|e| Error::Config(format!("kubeconfig {}: {e}", path.display())))?;
            Ok(Client::try_from(config)?)
        }
        None => Ok(Client::try_default().await?),
    }
}

type OpenedStore = (
    Arc<dyn KeyStore>,
    kubekms_engine::crypto::RootKey,
    Option<Arc<KubeStore>>,
);

async fn open_store(args: &RunArgs, client: &Client) -> Result<OpenedStore> {
    match args.store {
        StoreKind::Embedded => {
            let dir = args
                .data_dir
                .as_deref()
                .ok_or_else(|| Error::Config("--store embedded needs --data-dir".into()))?;
            runner::create_private_dir(dir)?;
            let store: Arc<dyn KeyStore> = Arc::new(EmbeddedStore::open(dir)?);
            let root = load_or_create_root_key(&dir.join("root.key"), true)?;
            Ok((store, root, None))
        }
        StoreKind::Kubernetes => {
            let root = match &args.root_key_file {
                Some(path) => load_or_create_root_key(path, false)?,
                None => {
                    root_key_from_secret(client.clone(), &args.namespace, ROOT_KEY_SECRET, true)
                        .await?
                }
            };
            let store = Arc::new(KubeStore::new(client.clone(), &args.namespace));
            Ok((store.clone(), root, Some(store)))
        }
    }
}

fn load_credentials(args: &RunArgs) -> Result<Credentials> {
    if let Some(dir) = &args.data_dir {
        return Ok(config::load_standalone(args.credentials.as_deref(), dir)?.credentials);
    }
    let mut credentials = match &args.credentials {
        Some(path) => Credentials::load_file(path)?,
        None => Credentials::default(),
    };
    if let Some(c) = Credentials::from_env()? {
        credentials.insert(c)?;
    }
    // None is fine: callers then come with ServiceAccount tokens or access-key Secrets.
    Ok(credentials)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_line_is_stable() {
        assert_eq!(
            ready_line("http://127.0.0.1:1", Some("http://127.0.0.1:2")),
            "kubekms operator: KMS API on http://127.0.0.1:1, admin on http://127.0.0.1:2"
        );
        assert_eq!(
            ready_line("http://127.0.0.1:1", None),
            "kubekms operator: KMS API on http://127.0.0.1:1"
        );
        assert_eq!(
            operator_principal("111122223333"),
            "arn:aws:iam::111122223333:role/kubekms-operator"
        );
    }
}
