//! `kubekms-operator run`: parse arguments, install providers, call [`run`].

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use kubekms_operator::run::{run, RunArgs};

#[derive(Parser)]
#[command(
    name = "kubekms-operator",
    version,
    about = "Reconciles kubekms.io Keys and Aliases and serves the KMS API"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the engine, its KMS API and the controllers.
    Run(Box<RunArgs>),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    match cli.command {
        Command::Run(args) => runtime.block_on(run(*args)).map_err(anyhow::Error::from),
    }
}
