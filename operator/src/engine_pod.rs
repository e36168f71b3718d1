//! `kubekms-operator engine`: the key engine in its own pods, with its records in the cluster
//! (Secrets in `--namespace`), serving the KMS and STS API to applications and to the operator.
//! Replicas share everything through the cluster store; the one thing only one of them does is
//! the due work (scheduled rotations, ends of deletion windows, expiry of imported material),
//! run by the holder of the Lease `--lease-name`.
//!
//! # Exactly once
//!
//! The Lease is not what makes due work happen once: two replicas can overlap briefly (a
//! paused leader, a Lease that expired under a slow API server). What does is the store. Every
//! write of a record is a replace conditioned on the resourceVersion of the record the engine
//! changed (or a create that fails if the record exists, or a delete with a resourceVersion
//! precondition), and the engine publishes a change in memory only after its write succeeded
//! (`Kms::commit_key`). Of two replicas rotating the same key from the same record, the API
//! server accepts one write; the other gets 409 Conflict, its new material is never published
//! or used, and the store loads the winner's record into that replica at once, whose next pass
//! then finds nothing due. A write computed from a record older than one the replica's watch
//! already applied is refused before it is sent (a key version whose material would change).
//! See `crate::store` for the details. The Lease only spares the losing writes.

use std::net::SocketAddr;
use std::path::PathBuf;

use kubekms_engine::clock::SystemClock;
use kubekms_engine::config;
use kubekms_engine::runner;
use kubekms_proto::principal::SERVICE_ACCOUNT_USER_PREFIX;

use crate::engine_deploy::config::is_dns_subdomain;
use crate::engine_deploy::render::SCHEDULER_LEASE;
use crate::engine_host::{self, EngineSettings};
use crate::error::{Error, Result};
use crate::lease::{self, Leadership, LeaseSettings};

#[derive(Clone, Debug, clap::Args)]
pub struct EngineArgs {
    /// Where the records, the root key Secret, the access-key Secrets and the Lease live.
    #[arg(long, env = "POD_NAMESPACE")]
    pub namespace: String,
    /// KMS and STS API; also GET /healthz and GET /metrics. Port 0 picks a free port (printed
    /// on stdout).
    #[arg(long, default_value = "0.0.0.0:4599")]
    pub listen: SocketAddr,
    /// Kubeconfig to use; default: in-cluster config or $KUBECONFIG.
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// The AWS account the keys live in.
    #[arg(long, default_value = config::DEFAULT_ACCOUNT_ID)]
    pub account: String,
    /// The region the keys live in.
    #[arg(long, default_value = "us-east-1")]
    pub region: String,
    /// Kubernetes groups whose members act as the account's administrators. Repeat for
    /// several.
    #[arg(
        long = "admin-group",
        value_name = "GROUP",
        default_value = "system:masters"
    )]
    pub admin_groups: Vec<String>,
    /// The ServiceAccount (in --namespace) whose web identity is the operator's principal,
    /// arn:aws:iam::<account>:role/kubekms-operator, which may create keys.
    #[arg(long, value_name = "NAME")]
    pub operator_service_account: Option<String>,
    /// The ServiceAccount (in --namespace) of the injection webhook: its web identity is
    /// arn:aws:iam::<account>:role/kubekms-webhook, which key policies let make data keys.
    #[arg(long, value_name = "NAME")]
    pub webhook_service_account: Option<String>,
    /// Audit log: a file, `-` for stdout, or `off`.
    #[arg(long, default_value = "-")]
    pub audit_log: String,
    /// Rotate the audit log file before it grows past this size (0: never).
    #[arg(long, value_name = "BYTES", default_value_t = kubekms_engine::audit::DEFAULT_MAX_BYTES)]
    pub audit_max_bytes: u64,
    /// The coordination.k8s.io Lease whose holder runs the due work.
    #[arg(long, default_value = SCHEDULER_LEASE)]
    pub lease_name: String,
    /// For tests: let POST /admin/clock/advance on --admin-listen move this replica's clock
    /// forward (and run its due work at once, Lease or not, so tests can make replicas race).
    #[arg(long)]
    pub test_clock: bool,
    /// Address of the admin API; needs --test-clock.
    #[arg(long, requires = "test_clock")]
    pub admin_listen: Option<SocketAddr>,
    /// Serve the KMS API over TLS with this PEM certificate chain (leaf first).
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
}

/// The line printed on stdout once the listener is bound. Tests wait for it.
pub fn ready_line(api: &str) -> String {
    format!("kubekms engine: KMS API on {api}")
}

/// The Kubernetes user name of ServiceAccount `name` in `namespace`.
pub fn service_account_user(flag: &str, namespace: &str, name: &str) -> Result<String> {
    if !is_dns_subdomain(name) {
        return Err(Error::Config(format!(
            "--{flag} {name:?} is not a ServiceAccount name (give the name only; it is in \
             --namespace)"
        )));
    }
    Ok(format!("{SERVICE_ACCOUNT_USER_PREFIX}{namespace}:{name}"))
}

pub async fn engine(args: EngineArgs) -> Result<()> {
    engine_host::check_scope(&args.account, &args.region)?;
    if args.namespace.is_empty() {
        return Err(Error::Config(
            "--namespace (or POD_NAMESPACE) must name the engine's namespace".into(),
        ));
    }
    let operator = args
        .operator_service_account
        .as_deref()
        .map(|name| service_account_user("operator-service-account", &args.namespace, name))
        .transpose()?;
    let webhook = args
        .webhook_service_account
        .as_deref()
        .map(|name| service_account_user("webhook-service-account", &args.namespace, name))
        .transpose()?;
    let client = crate::run::kube_client(args.kubeconfig.as_deref()).await?;
    let opened = engine_host::kubernetes_store(&client, &args.namespace, None).await?;
    let settings = EngineSettings {
        namespace: args.namespace.clone(),
        account: args.account.clone(),
        admin_groups: args.admin_groups.clone(),
        operator_service_account: operator.clone(),
        webhook_service_account: webhook,
        audit_log: args.audit_log.clone(),
        audit_max_bytes: args.audit_max_bytes,
        credentials: engine_host::credentials(None)?,
        listen: args.listen,
        tls: match (&args.tls_cert, &args.tls_key) {
            (Some(cert), Some(key)) => {
                Some(kubekms_engine::api::tls::load_server_config(cert, key)?)
            }
            _ => None,
        },
    };
    let clock = SystemClock::new();
    let hosted = engine_host::host_engine(&client, settings, opened, clock.clone()).await?;
    let admin = match (args.test_clock, args.admin_listen) {
        (true, Some(addr)) => {
            let listener = kubekms_engine::api::server::bind(addr).await?;
            let router = crate::admin::clock_router(clock.clone(), hosted.kms.clone());
            Some(tokio::spawn(async move {
                if let Err(e) = axum::serve(listener, router).await {
                    tracing::warn!(error = %e, "admin listener stopped");
                }
            }))
        }
        _ => None,
    };
    let leadership = Leadership::spawn(
        client,
        LeaseSettings {
            namespace: args.namespace.clone(),
            name: args.lease_name.clone(),
            identity: lease::identity(),
        },
    );
    {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{}", ready_line(&hosted.bound.endpoint()));
        let _ = out.flush();
    }
    tracing::info!(
        api = %hosted.bound.addr(),
        namespace = %args.namespace,
        operator = ?operator,
        lease = %args.lease_name,
        "engine running"
    );
    let served = hosted
        .serve(Some(leadership.subscribe()), runner::shutdown_signal())
        .await;
    if let Some(admin) = admin {
        admin.abort();
    }
    leadership.release().await;
    served
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_operator_service_account_is_a_name_in_the_namespace() {
        assert_eq!(
            service_account_user(
                "operator-service-account",
                "kubekms-system",
                "kubekms-operator"
            )
            .unwrap(),
            "system:serviceaccount:kubekms-system:kubekms-operator"
        );
        for bad in [
            "",
            "system:serviceaccount:kubekms-system:kubekms-operator",
            "Op",
        ] {
            assert!(
                service_account_user("operator-service-account", "ns", bad).is_err(),
                "{bad}"
            );
        }
        assert_eq!(
            ready_line("http://127.0.0.1:1"),
            "kubekms engine: KMS API on http://127.0.0.1:1"
        );
    }
}
