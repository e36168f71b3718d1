//! `kubekms-agent init`: run by the injector as a pod's first init container; decrypts the
//! pod's data keys as its ServiceAccount, writes them to the pod's memory-backed volume, exits.

use std::process::ExitCode;

use kubekms_webhook::agent::{init, Environment};
use kubekms_webhook::error::chain;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let command = std::env::args().nth(1);
    if command.as_deref() != Some("init") {
        eprintln!("usage: kubekms-agent init   (the injector's init container runs it)");
        return ExitCode::from(2);
    }
    let written = match Environment::from_env() {
        Ok(env) => init(&env).await.map(|n| (n, env)),
        Err(e) => Err(e),
    };
    match written {
        Ok((n, env)) => {
            eprintln!(
                "kubekms-agent: {n} data key(s) written to {}",
                env.config.dir.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("kubekms-agent: {}", chain(&e));
            ExitCode::FAILURE
        }
    }
}
