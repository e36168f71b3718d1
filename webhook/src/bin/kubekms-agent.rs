//! `kubekms-agent init`: run by the injector as a pod's first init container; decrypts the
//! pod's data keys as its ServiceAccount, writes them to the pod's memory-backed volume, exits.
//! `kubekms-agent serve`: the sidecar; the same, then refreshes after data-key rotations and
//! serves the app on localhost until the pod stops.

use std::process::ExitCode;
use std::sync::Arc;

use kubekms_webhook::agent::{init, AgentError, Environment};
use kubekms_webhook::error::chain;
use kubekms_webhook::sidecar::{self, Sidecar};

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let command = std::env::args().nth(1);
    let outcome = match command.as_deref() {
        Some("init") => run_init().await,
        Some("serve") => serve().await,
        _ => {
            eprintln!("usage: kubekms-agent init|serve   (the injector's containers run it)");
            return ExitCode::from(2);
        }
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kubekms-agent: {}", chain(&e));
            ExitCode::FAILURE
        }
    }
}

async fn run_init() -> Result<(), AgentError> {
    let env = Environment::from_env()?;
    let n = init(&env).await?;
    eprintln!(
        "kubekms-agent: {n} data key(s) written to {}",
        env.config.dir
    );
    Ok(())
}

async fn serve() -> Result<(), AgentError> {
    let env = Environment::from_env()?;
    let sidecar = Arc::new(Sidecar::start(&env).await?);
    let listener = tokio::net::TcpListener::bind(sidecar::address())
        .await
        .map_err(AgentError::Listen)?;
    eprintln!(
        "kubekms-agent: data keys written to {}; serving on {}",
        env.config.dir,
        sidecar::address()
    );
    tokio::spawn(sidecar::refresh_loop(Arc::clone(&sidecar)));
    let app = axum::serve(listener, sidecar::router(sidecar));
    // The pod is stopping: nothing to hand over (the keyring files stay until the pod goes).
    tokio::select! {
        served = app => served.map_err(AgentError::Listen),
        () = terminated() => Ok(()),
    }
}

/// SIGTERM (the kubelet stopping the pod) or Ctrl-C.
async fn terminated() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
