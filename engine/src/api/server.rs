//! The accept loop: HTTP/1.1 with keep-alive over plain TCP or rustls, and graceful shutdown
//! that lets in-flight requests finish.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};
use tower::Service;

use crate::api::handlers::PeerAddr;
use crate::api::router;
use crate::api::state::AppState;
use crate::error::{KmsError, Result};

/// Serve the KMS API on `listener` until `shutdown` completes, then stop accepting, let open
/// requests finish (up to `ServerConfig::shutdown_grace`) and return.
pub async fn serve(
    listener: TcpListener,
    state: Arc<AppState>,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<()> {
    let app = router(state.clone());
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let (stop_tx, stop_rx) = watch::channel(false);
    // Each connection task holds a sender; `recv` returning None means all have finished.
    let (alive_tx, mut alive_rx) = mpsc::channel::<()>(1);
    // One permit per open connection: at the cap, new connections wait in the listen backlog
    // instead of each holding a task, buffers and possibly a body.
    let slots = Arc::new(Semaphore::new(state.config.max_connections));
    tokio::pin!(shutdown);

    loop {
        let slot = tokio::select! {
            () = &mut shutdown => break,
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Usually out of file descriptors: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let conn = Connection {
            app: app.clone(),
            state: state.clone(),
            peer,
            stop: stop_rx.clone(),
            _alive: alive_tx.clone(),
            _slot: slot,
        };
        match &acceptor {
            None => {
                tokio::spawn(conn.run(stream));
            }
            Some(acceptor) => {
                let acceptor = acceptor.clone();
                let timeout = state.config.tls_handshake_timeout;
                tokio::spawn(async move {
                    match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => conn.run(tls).await,
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        }
    }

    drop(listener);
    let _ = stop_tx.send(true);
    drop(alive_tx);
    if tokio::time::timeout(state.config.shutdown_grace, alive_rx.recv())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after the shutdown grace period");
    }
    Ok(())
}

struct Connection {
    app: Router,
    state: Arc<AppState>,
    peer: SocketAddr,
    stop: watch::Receiver<bool>,
    _alive: mpsc::Sender<()>,
    /// Frees the connection's place under `ServerConfig::max_connections` when dropped.
    _slot: OwnedSemaphorePermit,
}

impl Connection {
    async fn run<I>(mut self, io: I)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        self.state.metrics.connection_opened();
        let peer = self.peer;
        let app = self.app.clone();
        let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
            req.extensions_mut().insert(PeerAddr(peer));
            let mut app = app.clone();
            app.call(req.map(axum::body::Body::new))
        });
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(self.state.config.header_read_timeout)
            .keep_alive(true);
        let conn = builder.serve_connection(TokioIo::new(io), service);
        tokio::pin!(conn);
        let stopping = *self.stop.borrow();
        let result = if stopping {
            conn.as_mut().graceful_shutdown();
            conn.await
        } else {
            tokio::select! {
                result = conn.as_mut() => result,
                _ = self.stop.changed() => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            }
        };
        if let Err(e) = result {
            tracing::debug!(%peer, error = %e, "connection ended with an error");
        }
        self.state.metrics.connection_closed();
    }
}

/// A bound listener, with the error mapped into ours.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| KmsError::internal(format!("cannot listen on {addr}: {e}")))
}
