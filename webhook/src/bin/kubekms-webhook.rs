//! `kubekms-webhook`: the admission webhook the chart runs. Mutates Pods that opt in (their
//! KMS identity and data keys) and validates kubekms.io objects, over HTTPS with a certificate
//! it reloads when the Secret it comes from is renewed.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use clap::Parser;
use kubekms_proto::client::{ClientSettings, KmsClient};
use kubekms_proto::tls::{Reload, ReloadingCert};
use kubekms_webhook::admit::{EngineMaker, Injector};
use kubekms_webhook::cluster::{EngineService, KubeCluster};
use kubekms_webhook::mutate::{CaBundle, InjectorSettings, CA_CONFIG_MAP};
use kubekms_webhook::server;

#[derive(Parser)]
#[command(version, about)]
struct Args {
    #[arg(long, default_value = "0.0.0.0:8443")]
    listen: SocketAddr,
    /// PEM certificate chain (leaf first) and key; read again when they change.
    #[arg(long, default_value = "/etc/kubekms/tls/tls.crt")]
    tls_cert: PathBuf,
    #[arg(long, default_value = "/etc/kubekms/tls/tls.key")]
    tls_key: PathBuf,
    /// The image injected pods run the agent from (this project's image).
    #[arg(long)]
    image: String,
    /// The engine's KMS/STS URL as pods reach it. Default: the cluster IP of --engine-service.
    #[arg(long)]
    engine_url: Option<String>,
    /// The engine Service the operator makes, in --namespace.
    #[arg(long, default_value = "kubekms-engine")]
    engine_service: String,
    #[arg(long, default_value_t = 4599)]
    engine_port: u16,
    /// PEM CA certificates the engine's TLS certificate chains to: the engine is then reached
    /// over https://, and injected pods get the same bundle (AWS_CA_BUNDLE) from a ConfigMap
    /// the webhook keeps in their namespace.
    #[arg(long)]
    engine_ca_file: Option<PathBuf>,
    /// This pod's namespace (the release's).
    #[arg(long, env = "POD_NAMESPACE")]
    namespace: String,
    #[arg(long, default_value = "111122223333")]
    account: String,
    #[arg(long, default_value = "us-east-1")]
    region: String,
    /// The role injected pods name in AWS_ROLE_ARN. Default: arn:aws:iam::<account>:role/kubekms.
    #[arg(long)]
    pod_role_arn: Option<String>,
    /// This webhook's own projected token (audience kubekms); it is role/kubekms-webhook.
    #[arg(long, default_value = "/var/run/secrets/kubekms/token")]
    token_file: PathBuf,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // The Kubernetes client's rustls picks its provider from the process default.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let cert = ReloadingCert::load(&args.tls_cert, &args.tls_key)
        .context("loading the webhook's certificate")?;
    let tls = cert.server_config().context("TLS configuration")?;
    tokio::spawn(cert.clone().watch(|reload| match reload {
        Reload::Renewed(path) => eprintln!(
            "kubekms-webhook: serving the renewed certificate from {}",
            path.display()
        ),
        Reload::Kept(e) => eprintln!("kubekms-webhook: keeping the current certificate: {e}"),
    }));

    let client = kube::Client::try_default()
        .await
        .context("connecting to the API server")?;
    let ca = match &args.engine_ca_file {
        Some(path) => Some(CaBundle {
            config_map: CA_CONFIG_MAP.to_owned(),
            pem: std::fs::read_to_string(path)
                .with_context(|| format!("reading the engine's CA bundle {}", path.display()))?,
        }),
        None => None,
    };
    // With TLS and the engine found by its Service: reached at the cluster IP (there may be
    // no DNS), its certificate checked against the Service's name, which pods use too.
    let engine_server_name = match (&ca, &args.engine_url) {
        (Some(_), None) => Some(format!("{}.{}.svc", args.engine_service, args.namespace)),
        _ => None,
    };
    let engine = match &args.engine_url {
        Some(url) => EngineService::Url(url.clone()),
        None => EngineService::Service {
            namespace: args.namespace.clone(),
            name: args.engine_service.clone(),
            port: args.engine_port,
            tls: ca.is_some(),
        },
    };
    let (cluster, watch_records) = KubeCluster::new(client, engine);
    tokio::spawn(watch_records);
    let kms = KmsClient::new(ClientSettings {
        endpoint: args.engine_url.clone(),
        ca_bundle: args.engine_ca_file.clone(),
        server_name: engine_server_name.clone(),
        endpoint_fixed: args.engine_url.is_some(),
        token_file: args.token_file.clone(),
        region: args.region.clone(),
        role_arn: kubekms_engine_role(&args.account),
        session_name: "kubekms-webhook".to_owned(),
    })
    .context("the engine client")?;
    let injector = Injector {
        settings: InjectorSettings {
            image: args.image.clone(),
            engine_url: String::new(),
            region: args.region.clone(),
            role_arn: args
                .pod_role_arn
                .clone()
                .unwrap_or_else(|| format!("arn:aws:iam::{}:role/kubekms", args.account)),
            ca,
            engine_host_alias: None,
        },
        engine_name: engine_server_name,
        cluster: Arc::new(cluster),
        maker: Arc::new(EngineMaker(kms)),
    };
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    eprintln!(
        "kubekms-webhook: serving admission on https://{}",
        args.listen
    );
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("listening for SIGTERM")?;
    // A task of its own, so it keeps accepting through the drain below.
    let serving = tokio::spawn(server::serve_tls(listener, server::router(injector), tls));
    tokio::select! {
        _ = terminate.recv() => {
            // As PID 1 the process would otherwise ignore SIGTERM until the kubelet kills it.
            // Serve a little longer: the API server may still pick this pod until the
            // Service's endpoints drop it.
            eprintln!("kubekms-webhook: SIGTERM; stopping in {} s", DRAIN.as_secs());
            tokio::time::sleep(DRAIN).await;
        }
        _ = tokio::signal::ctrl_c() => {}
    }
    serving.abort();
    Ok(())
}

/// How long a terminating webhook keeps answering.
const DRAIN: std::time::Duration = std::time::Duration::from_secs(3);

/// The role the webhook's sessions name (the engine makes it role/kubekms-webhook whatever
/// role is named, by the token's ServiceAccount).
fn kubekms_engine_role(account: &str) -> String {
    format!("arn:aws:iam::{account}:role/kubekms-webhook")
}
