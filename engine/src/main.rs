//! `kubekms-engine standalone`: the key engine as a local AWS KMS endpoint, with its keys in a
//! data directory.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use kubekms_engine::api::{self, ServerConfig};
use kubekms_engine::audit::{self, AuditKey, AuditLog, Verification};
use kubekms_engine::clock::SystemClock;
use kubekms_engine::config;
use kubekms_engine::runner::{self, Engine};
use kubekms_engine::service::Kms;
use kubekms_engine::sigv4::Verifier;
use kubekms_engine::store::embedded::EmbeddedStore;
use kubekms_engine::store::root_file::load_or_create_root_key;
use kubekms_engine::store::KeyStore;

#[derive(Parser)]
#[command(
    name = "kubekms-engine",
    version,
    about = "An AWS KMS-compatible key engine"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the KMS API from a local data directory.
    Standalone(StandaloneArgs),
    /// Work with an audit log this engine wrote.
    #[command(subcommand)]
    Audit(AuditCommand),
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Check the chain of an audit log through its rotated files (LOG.1, LOG.2, …, then LOG);
    /// exit 1 naming the first line that does not chain.
    Verify(VerifyArgs),
}

#[derive(Args)]
struct VerifyArgs {
    /// The root key file the engine ran with.
    #[arg(
        long,
        required_unless_present = "data_dir",
        conflicts_with = "data_dir"
    )]
    root_key: Option<PathBuf>,
    /// The engine's data directory, for its root.key.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// The audit log: its current file (rotated ones are found next to it).
    log: PathBuf,
}

#[derive(Args)]
struct StandaloneArgs {
    /// Holds the key store, the root key (`root.key`) and generated credentials.
    #[arg(long)]
    data_dir: PathBuf,
    /// Address to listen on; port 0 picks a free port (printed on stdout).
    #[arg(long, default_value = "127.0.0.1:4599")]
    listen: SocketAddr,
    /// JSON file of access keys. Without it (and without KUBEKMS_ACCESS_KEY_ID), a key is
    /// generated on the first run into DATA_DIR/credentials.json.
    #[arg(long)]
    credentials: Option<PathBuf>,
    /// PEM certificate chain; serve HTTPS instead of HTTP.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Audit log file, `-` for stdout, or `off`. Default: DATA_DIR/audit.log.
    #[arg(long)]
    audit_log: Option<String>,
    /// Rotate the audit log file before it grows past this size (0: never).
    #[arg(long, value_name = "BYTES", default_value_t = audit::DEFAULT_MAX_BYTES)]
    audit_max_bytes: u64,
    /// Keep this many RSA_2048 key pairs ready, generated before serving, so bursts of
    /// GenerateDataKeyPair do not wait on RSA generation (about 0.1 s of CPU per pair).
    #[arg(long, value_name = "COUNT")]
    prewarm_key_pairs: Option<usize>,

    /// Region shown in the printed client settings (any region a client signs for works).
    #[arg(long, default_value = "us-east-1")]
    region: String,
}

fn main() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    let runtime = runner::init_process()?;
    match cli.command {
        Command::Standalone(args) => runtime.block_on(run(args)).map(|()| ExitCode::SUCCESS),
        Command::Audit(AuditCommand::Verify(args)) => verify_audit_log(&args),
    }
}

fn verify_audit_log(args: &VerifyArgs) -> anyhow::Result<ExitCode> {
    let root_file = match (&args.root_key, &args.data_dir) {
        (Some(file), _) => file.clone(),
        (None, Some(dir)) => dir.join("root.key"),
        (None, None) => bail!("--root-key or --data-dir is needed"),
    };
    let root = load_or_create_root_key(&root_file, false)?;
    let files = audit::log_files(&args.log)?;
    if files.is_empty() {
        bail!("no audit log at {}", args.log.display());
    }
    match audit::verify_files(&AuditKey::from_root(&root)?, &files)? {
        Verification::Intact {
            files,
            lines,
            torn_tail,
        } => {
            if let Some(bytes) = torn_tail {
                eprintln!(
                    "{}: ends with {bytes} bytes of a line a crash cut short (not chained; the \
                     engine cuts it off at its next start)",
                    args.log.display()
                );
            }
            println!("OK: {lines} lines in {files} files, chain intact");
            Ok(ExitCode::SUCCESS)
        }
        Verification::Broken { path, line, what } => {
            eprintln!("{}:{line}: {what}", path.display());
            Ok(ExitCode::FAILURE)
        }
    }
}

async fn run(args: StandaloneArgs) -> anyhow::Result<()> {
    runner::create_private_dir(&args.data_dir)?;
    let dir = args.data_dir.as_path();
    let store: Arc<dyn KeyStore> = Arc::new(EmbeddedStore::open(dir)?);
    let root = load_or_create_root_key(&dir.join("root.key"), true)?;
    let audit_key = AuditKey::from_root(&root)?;
    let clock = SystemClock::new();
    let kms = Kms::open(store, root, clock.clone()).await?;
    let creds = config::load_standalone(args.credentials.as_deref(), dir)?;
    let audit = match args.audit_log.as_deref() {
        None => AuditLog::to_file(&dir.join("audit.log"), audit_key, args.audit_max_bytes)?,
        Some(arg) => runner::audit_log(arg, audit_key, args.audit_max_bytes)?,
    };
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(api::tls::load_server_config(cert, key)?),
        (None, None) => None,
        _ => bail!("--tls-cert and --tls-key go together"),
    };

    if let Some(count) = args.prewarm_key_pairs {
        let keys = kms.key_provider().clone();
        tokio::task::spawn_blocking(move || keys.prewarm_key_pairs(count))
            .await
            .context("key pair pool")??;
    }

    let engine = Engine {
        kms,
        authenticator: Box::new(Verifier::new(creds.credentials.clone(), clock.clone())),
        // Standalone: no cluster to review tokens with.
        web_identity: None,
        audit,
        clock,
        config: ServerConfig::default(),
        tls,
    }
    .bind(args.listen)
    .await?;
    let endpoint = engine.endpoint();
    print_ready(&endpoint, &args, &creds);
    tracing::info!(%endpoint, data_dir = %dir.display(), "serving");
    engine.serve(runner::shutdown_signal()).await?;
    Ok(())
}

/// The endpoint and the lines a user pastes into a shell to talk to it.
fn print_ready(endpoint: &str, args: &StandaloneArgs, creds: &config::StandaloneCredentials) {
    use std::fmt::Write as _;
    use std::io::Write as _;
    let first = creds
        .credentials
        .iter()
        .min_by(|a, b| a.access_key_id.cmp(&b.access_key_id));
    // May hold the secret access key, so it is wiped once printed.
    let mut out = zeroize::Zeroizing::new(String::with_capacity(512));
    let _ = writeln!(out, "kubekms engine listening on {endpoint}");
    match (first, &creds.saved_to) {
        // Our own file in the data directory: showing its secret is the point of generating it.
        (Some(c), Some(path)) => {
            let _ = writeln!(
                out,
                "export AWS_ACCESS_KEY_ID={} AWS_SECRET_ACCESS_KEY={} AWS_DEFAULT_REGION={}",
                c.access_key_id,
                c.secret_access_key(),
                args.region
            );
            if creds.generated {
                let _ = writeln!(out, "# credentials generated into {}", path.display());
            }
        }
        // Supplied by the user: they have the secret; do not echo it.
        (Some(c), None) => {
            let _ = writeln!(
                out,
                "export AWS_ACCESS_KEY_ID={} AWS_DEFAULT_REGION={}  # and its configured secret",
                c.access_key_id, args.region
            );
        }
        (None, _) => {}
    }
    if let Some(cert) = &args.tls_cert {
        let _ = writeln!(out, "export AWS_CA_BUNDLE={}", cert.display());
    }
    let _ = writeln!(out, "aws kms create-key --endpoint-url {endpoint}");
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(out.as_bytes());
    let _ = stdout.flush();
}
