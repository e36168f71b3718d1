//! `kubekms-operator run | engine`: parse arguments, install providers, call [`run`] or
//! [`engine`].

use clap::{Parser, Subcommand};
use kubekms_operator::engine_pod::{engine, EngineArgs};
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
    /// Run the controllers, with the engine in this process or (--engine-config) in its own
    /// pods.
    Run(Box<RunArgs>),
    /// Run the key engine with its records in the cluster (the engine pods).
    Engine(Box<EngineArgs>),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = kubekms_engine::runner::init_process()?;
    match cli.command {
        Command::Run(args) => runtime.block_on(run(*args)).map_err(anyhow::Error::from),
        Command::Engine(args) => runtime.block_on(engine(*args)).map_err(anyhow::Error::from),
    }
}
