//! `kubekms-operator run`: the controllers, and where the engine is.
//!
//! - Embedded (no `--engine-config`): the key engine, its KMS API and its scheduled work in
//!   this process, called in-process; for tests and clusters without nodes for engine pods.
//! - Remote (`--engine-config NAME`): the engine runs in its own pods (`kubekms-operator
//!   engine`), which this operator deploys from ConfigMap NAME and calls over HTTP as its own
//!   ServiceAccount. Controllers run only on the holder of the Lease `--lease-name`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures::channel::mpsc;
use futures::stream::BoxStream;
use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client};
use kubekms_crds::Key;
use kubekms_engine::api;
use kubekms_engine::clock::SystemClock;
use kubekms_engine::config::{self, Credentials};
use kubekms_engine::identity::IdentityMap;
use kubekms_engine::record::Scope;
use kubekms_engine::runner;
use kubekms_engine::service::{Caller, Principal};
use kubekms_engine::store::embedded::EmbeddedStore;
use kubekms_engine::store::root_file::load_or_create_root_key;
use kubekms_engine::store::KeyStore;
use tokio::task::JoinHandle;

use crate::controller::{alias, key, Context};
use crate::engine::{EngineClient, KeyFeed};
use crate::engine_host::{self, EngineSettings, OpenedStore};
use crate::error::{Error, Result};
use crate::lease::{self, Leadership, LeaseSettings};
use crate::remote::{RemoteEngine, RemoteSettings, DEFAULT_TOKEN_FILE};

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
    /// Remote mode: the ConfigMap (in --namespace, entry `engine.json`) that describes the
    /// engine's Deployment. The operator keeps the Deployment and Service `kubekms-engine` and
    /// calls the engine there; account and region come from `engine.json`. Without it, the
    /// engine runs in this process (embedded mode).
    #[arg(long, value_name = "NAME", conflicts_with_all = ["test_clock", "data_dir", "root_key_file", "credentials"])]
    pub engine_config: Option<String>,
    /// Remote mode: call the engine here (`http://HOST:PORT`) instead of at the engine
    /// Service's cluster IP.
    #[arg(long, value_name = "URL", requires = "engine_config")]
    pub engine_url: Option<String>,
    /// Remote mode: the engine serves TLS; its certificate chains to a CA in this PEM file,
    /// and names the engine Service (`kubekms-engine.<namespace>.svc`), which is checked
    /// whatever address the engine is reached at.
    #[arg(long, value_name = "PATH", requires = "engine_config")]
    pub engine_ca_file: Option<PathBuf>,
    /// Remote mode: the operator's projected ServiceAccount token (audience `kubekms`),
    /// exchanged for engine credentials; read again for every exchange.
    #[arg(long, value_name = "PATH", default_value = DEFAULT_TOKEN_FILE)]
    pub token_file: PathBuf,
    /// Remote mode: reconcile every Key this often. The engine's feed of changed keys wakes a
    /// Key as soon as it changes (a rotation, an expiry, another client's request); the resync
    /// is the safety net for what the feed cannot promise (it says when it may have missed
    /// changes, and then every Key is reconciled at once).
    #[arg(long, value_name = "SECONDS", default_value_t = 600, value_parser = clap::value_parser!(u64).range(1..))]
    pub resync_seconds: u64,
    /// Remote mode: the coordination.k8s.io Lease whose holder runs the controllers.
    #[arg(long, default_value = "kubekms-operator")]
    pub lease_name: String,
    /// Namespaces whose Secrets ImportedMaterials may name (repeat for several). In remote mode
    /// (the operator as a pod) only these are read, none when none are given: the chart grants
    /// read access to exactly these. In embedded mode, none given means every namespace.
    #[arg(long = "import-namespace", value_name = "NAMESPACE")]
    pub import_namespaces: Vec<String>,
}

/// The principal the controllers act as in the engine.
pub fn operator_principal(account: &str) -> String {
    kubekms_engine::identity::operator_role_arn(account)
}

/// The operator as the engine's caller: its principal, which may create keys, in its account
/// and region.
pub fn operator_caller(account: &str, region: &str) -> Caller {
    let principal: Principal = IdentityMap::operator_principal(account);
    Caller {
        scope: Scope::new(account.to_owned(), region.to_owned()),
        principal,
        request_id: "kubekms-operator".into(),
    }
}

/// The line printed on stdout once the listeners are bound. Tests wait for it.
pub fn ready_line(api: &str, admin: Option<&str>) -> String {
    match admin {
        Some(admin) => format!("kubekms operator: KMS API on {api}, admin on {admin}"),
        None => format!("kubekms operator: KMS API on {api}"),
    }
}

/// The line printed on stdout by a remote-mode operator once its metrics listener is bound.
pub fn remote_ready_line(config: &str, metrics: &str) -> String {
    format!("kubekms operator: engine from ConfigMap {config}, metrics on {metrics}")
}

pub async fn run(args: RunArgs) -> Result<()> {
    match args.engine_config.clone() {
        Some(config) => run_remote(args, config).await,
        None => run_embedded(args).await,
    }
}

/// The engine in this process.
async fn run_embedded(args: RunArgs) -> Result<()> {
    engine_host::check_scope(&args.account, &args.region)?;
    let client = kube_client(args.kubeconfig.as_deref()).await?;
    let clock = SystemClock::new();
    let opened = open_store(&args, &client).await?;
    let settings = EngineSettings {
        namespace: args.namespace.clone(),
        account: args.account.clone(),
        admin_groups: args.admin_groups.clone(),
        // The operator calls the engine in-process, not with a token.
        operator_service_account: None,
        webhook_service_account: None,
        audit_log: args.audit_log.clone(),
        audit_max_bytes: args.audit_max_bytes,
        credentials: load_credentials(&args)?,
        listen: args.listen,
        tls: None,
    };
    let engine = engine_host::host_engine(&client, settings, opened, clock.clone()).await?;
    let kms = engine.kms.clone();
    let api_addr = engine.bound.addr();
    let admin_listener = match args.admin_listen {
        Some(addr) => Some(api::server::bind(addr).await?),
        None => None,
    };
    let admin_addr = admin_listener.as_ref().map(local_addr).transpose()?;
    let metrics_listener = api::server::bind(args.metrics_listen).await?;
    let metrics_addr = local_addr(&metrics_listener)?;

    let ctx = Context::new(
        client.clone(),
        EngineClient::new(kms.clone(), operator_caller(&args.account, &args.region)),
        clock.clone(),
        (!args.import_namespaces.is_empty()).then(|| args.import_namespaces.clone()),
    );
    // Reconcile-everything triggers, fired when the test clock moves.
    let (triggers, receivers) = Triggers::new();
    let admin = admin_listener.map(|listener| {
        let admin = crate::admin::AdminState {
            clock: clock.clone(),
            kms: kms.clone(),
            ctx: ctx.clone(),
            triggers: triggers.all(),
        };
        tokio::spawn(crate::admin::serve(listener, admin))
    });
    let key_trigger = receivers.key.boxed();
    let controllers = spawn_controllers(&ctx, key_trigger, receivers.rest);

    {
        use std::io::Write;
        let api_url = engine.bound.endpoint();
        let admin_url = admin_addr.map(|a| format!("http://{a}"));
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{}", ready_line(&api_url, admin_url.as_deref()));
        let _ = out.flush();
    }
    let metrics = tokio::spawn(crate::admin::serve_metrics(metrics_listener, ctx.clone()));
    tracing::info!(api = %api_addr, metrics = %metrics_addr, namespace = %args.namespace, "operator running");

    // The engine's runner: the KMS API, due work, the audit log flushed at the end.
    let served = engine.serve(None, runner::shutdown_signal()).await;
    for task in controllers {
        task.abort();
    }
    metrics.abort();
    if let Some(admin) = admin {
        admin.abort();
    }
    drop(triggers);
    served
}

/// The engine in its own pods.
async fn run_remote(args: RunArgs, config_name: String) -> Result<()> {
    let client = kube_client(args.kubeconfig.as_deref()).await?;
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), &args.namespace);
    let config = crate::engine_deploy::wait_for_config(&config_maps, &config_name).await;
    engine_host::check_scope(&config.account, &config.region)?;
    let remote = Arc::new(
        RemoteEngine::new(RemoteSettings {
            endpoint: args.engine_url.clone(),
            endpoint_fixed: args.engine_url.is_some(),
            ca_bundle: args.engine_ca_file.clone(),
            server_name: args.engine_ca_file.as_ref().map(|_| {
                format!(
                    "{}.{}.svc",
                    crate::engine_deploy::render::ENGINE_NAME,
                    args.namespace
                )
            }),
            token_file: args.token_file.clone(),
            account: config.account.clone(),
            region: config.region.clone(),
        })
        .map_err(|e| Error::Config(e.to_string()))?,
    );
    let ctx = Context::new(
        client.clone(),
        EngineClient::remote(
            remote.clone(),
            operator_caller(&config.account, &config.region),
        ),
        SystemClock::new(),
        Some(args.import_namespaces.clone()),
    );
    let metrics_listener = api::server::bind(args.metrics_listen).await?;
    let metrics_addr = local_addr(&metrics_listener)?;
    let metrics = tokio::spawn(crate::admin::serve_metrics(metrics_listener, ctx.clone()));
    let leadership = Leadership::spawn(
        client.clone(),
        LeaseSettings {
            namespace: args.namespace.clone(),
            name: args.lease_name.clone(),
            identity: lease::identity(),
        },
    );
    {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        let _ = writeln!(
            out,
            "{}",
            remote_ready_line(&config_name, &format!("http://{metrics_addr}"))
        );
        let _ = out.flush();
    }
    tracing::info!(
        namespace = %args.namespace,
        engine_config = %config_name,
        engine = ?remote.endpoint(),
        account = %config.account,
        region = %config.region,
        "operator running; controllers start once it leads"
    );

    let mut leader = leadership.subscribe();
    let shutdown = runner::shutdown_signal();
    tokio::pin!(shutdown);
    let resync = Duration::from_secs(args.resync_seconds);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            led = leader.wait_for(|leads| *leads) => if led.is_err() {
                return Err(Error::ElectionStopped);
            },
        }
        tracing::info!("leading: starting the controllers");
        // Another operator led meanwhile: what this one knew about engine keys may be stale.
        ctx.key_index.reset().await;
        let (triggers, receivers) = Triggers::new();
        let mut term = spawn_controllers(&ctx, resync_every(resync), receivers.rest);
        term.push(tokio::spawn(crate::engine_deploy::run(
            ctx.clone(),
            remote.clone(),
            args.namespace.clone(),
            config_name.clone(),
            config.account.clone(),
            config.region.clone(),
        )));
        let stop = tokio::select! {
            () = &mut shutdown => Ok(true),
            lost = leader.wait_for(|leads| !*leads) => lost.map(|_| false),
        };
        for task in term {
            task.abort();
        }
        drop(triggers);
        match stop {
            Ok(true) => break,
            Ok(false) => {}
            Err(_) => return Err(Error::ElectionStopped),
        }
        tracing::warn!("no longer leading: controllers stopped");
    }
    leadership.release().await;
    metrics.abort();
    Ok(())
}

/// A tick every `period`, from one period from now.
fn resync_every(period: Duration) -> BoxStream<'static, ()> {
    let tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    futures::stream::unfold(tick, |mut tick| async move {
        tick.tick().await;
        Some(((), tick))
    })
    .boxed()
}

/// Reconcile-everything triggers, one per controller.
struct Triggers {
    key: mpsc::UnboundedSender<()>,
    alias: mpsc::UnboundedSender<()>,
    import: mpsc::UnboundedSender<()>,
    policy: mpsc::UnboundedSender<()>,
    datakey: mpsc::UnboundedSender<()>,
}

struct TriggerReceivers {
    key: mpsc::UnboundedReceiver<()>,
    rest: OtherTriggers,
}

/// The triggers of the controllers that follow Keys.
struct OtherTriggers {
    alias: mpsc::UnboundedReceiver<()>,
    import: mpsc::UnboundedReceiver<()>,
    policy: mpsc::UnboundedReceiver<()>,
    datakey: mpsc::UnboundedReceiver<()>,
}

impl Triggers {
    fn new() -> (Self, TriggerReceivers) {
        let (key, key_rx) = mpsc::unbounded();
        let (alias, alias_rx) = mpsc::unbounded();
        let (import, import_rx) = mpsc::unbounded();
        let (policy, policy_rx) = mpsc::unbounded();
        let (datakey, datakey_rx) = mpsc::unbounded();
        (
            Self {
                key,
                alias,
                import,
                policy,
                datakey,
            },
            TriggerReceivers {
                key: key_rx,
                rest: OtherTriggers {
                    alias: alias_rx,
                    import: import_rx,
                    policy: policy_rx,
                    datakey: datakey_rx,
                },
            },
        )
    }

    fn all(&self) -> Vec<mpsc::UnboundedSender<()>> {
        vec![
            self.key.clone(),
            self.alias.clone(),
            self.policy.clone(),
            self.import.clone(),
            self.datakey.clone(),
        ]
    }
}

/// The five controllers, with one watch of Keys fanned out to those whose objects depend on
/// Keys. `key_trigger` reconciles every Key when it fires.
fn spawn_controllers(
    ctx: &Arc<Context>,
    key_trigger: BoxStream<'static, ()>,
    triggers: OtherTriggers,
) -> Vec<JoinHandle<()>> {
    let (alias_keys_tx, alias_keys) = mpsc::unbounded::<Key>();
    let (import_keys_tx, import_keys) = mpsc::unbounded::<Key>();
    let (policy_keys_tx, policy_keys) = mpsc::unbounded::<Key>();
    let (datakey_keys_tx, datakey_keys) = mpsc::unbounded::<Key>();
    vec![
        tokio::spawn(run_key_controller(
            ctx.clone(),
            key_trigger,
            vec![
                alias_keys_tx,
                import_keys_tx,
                policy_keys_tx,
                datakey_keys_tx,
            ],
        )),
        tokio::spawn(alias::run(ctx.clone(), triggers.alias, alias_keys)),
        tokio::spawn(crate::controller::import::run(
            ctx.clone(),
            triggers.import,
            import_keys,
        )),
        tokio::spawn(crate::controller::policy::run(
            ctx.clone(),
            triggers.policy,
            policy_keys,
        )),
        tokio::spawn(crate::controller::datakey::run(
            ctx.clone(),
            triggers.datakey,
            datakey_keys,
        )),
    ]
}

async fn run_key_controller(
    ctx: Arc<Context>,
    trigger: BoxStream<'static, ()>,
    dependents: Vec<mpsc::UnboundedSender<Key>>,
) {
    // Keys changed in the engine by anyone (imported material, a request made with the AWS
    // CLI, scheduled rotation, expiry, the end of a deletion window, another replica):
    // reconciled as soon as the engine reports each change, not when their requeue comes or
    // a whole pass of due work is over. When the feed may have missed changes, every Key is
    // reconciled, as at a resync (`trigger`).
    let refs = key::KeyRefs::default();
    let (missed_tx, missed) = mpsc::unbounded::<()>();
    let lookup = refs.clone();
    let feed_ctx = ctx.clone();
    let changed_keys = ctx.engine.key_changes().filter_map(move |feed| {
        let found = match feed {
            KeyFeed::Changed { key_id, revision } => {
                let found = lookup.get(&key_id);
                if let (Some(_), Some(revision)) = (&found, revision) {
                    feed_ctx.awaited.announce(&key_id, revision);
                }
                found
            }
            KeyFeed::Resync => {
                let _ = missed_tx.unbounded_send(());
                None
            }
        };
        std::future::ready(found)
    });
    let trigger = futures::stream::select(trigger, missed);
    key::controller(ctx.client.clone(), refs, dependents)
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

pub(crate) async fn kube_client(kubeconfig: Option<&Path>) -> Result<Client> {
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
            Ok(OpenedStore {
                store,
                root,
                kube: None,
            })
        }
        StoreKind::Kubernetes => {
            engine_host::kubernetes_store(client, &args.namespace, args.root_key_file.as_deref())
                .await
        }
    }
}

fn load_credentials(args: &RunArgs) -> Result<Credentials> {
    if let Some(dir) = &args.data_dir {
        return Ok(config::load_standalone(args.credentials.as_deref(), dir)?.credentials);
    }
    engine_host::credentials(args.credentials.as_deref())
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
        assert_eq!(
            remote_ready_line("cfg", "http://127.0.0.1:3"),
            "kubekms operator: engine from ConfigMap cfg, metrics on http://127.0.0.1:3"
        );
    }

    #[test]
    fn the_operator_caller_is_the_engine_operator_principal() {
        let caller = operator_caller("111122223333", "eu-west-1");
        assert_eq!(caller.scope, Scope::new("111122223333", "eu-west-1"));
        assert_eq!(
            caller.principal.arn(),
            "arn:aws:iam::111122223333:role/kubekms-operator"
        );
        assert_eq!(
            caller.principal.role(),
            kubekms_engine::service::AccountRole::KeyCreator
        );
        assert!(caller.principal.groups().is_empty());
    }

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        run: RunArgs,
    }

    fn parse(args: &[&str]) -> std::result::Result<RunArgs, clap::Error> {
        use clap::Parser;
        Cli::try_parse_from(std::iter::once("run").chain(args.iter().copied())).map(|c| c.run)
    }

    #[test]
    fn remote_mode_flags() {
        let embedded = parse(&[]).unwrap();
        assert_eq!(embedded.engine_config, None);
        assert_eq!(embedded.resync_seconds, 600);
        assert_eq!(
            embedded.token_file,
            Path::new("/var/run/secrets/kubekms/token")
        );
        assert_eq!(embedded.lease_name, "kubekms-operator");
        let remote = parse(&[
            "--engine-config",
            "kubekms-engine",
            "--engine-url",
            "http://127.0.0.1:4599",
            "--token-file",
            "/tmp/t",
            "--resync-seconds",
            "5",
        ])
        .unwrap();
        assert_eq!(remote.engine_config.as_deref(), Some("kubekms-engine"));
        assert_eq!(remote.engine_url.as_deref(), Some("http://127.0.0.1:4599"));
        assert_eq!(remote.resync_seconds, 5);
        // An engine URL means nothing without remote mode; the admin API and the store
        // settings nothing with it.
        for bad in [
            &["--engine-url", "http://x:1"][..],
            &["--engine-config", "c", "--test-clock"],
            &["--engine-config", "c", "--data-dir", "/tmp/d"],
            &["--engine-config", "c", "--resync-seconds", "0"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }
}
