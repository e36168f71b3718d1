//! `kubekms-operator run`: parse arguments, install providers, call [`run`].

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
    let runtime = kubekms_engine::runner::init_process()?;
    match cli.command {
        Command::Run(args) => runtime.block_on(run(*args)).map_err(anyhow::Error::from),
    }
}
