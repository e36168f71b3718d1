//! The accept loop: HTTP/1.1 with keep-alive over plain TCP or rustls, and graceful shutdown
//! that lets in-flight requests finish.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use parking_lot::Mutex;

use axum::Router;
use futures_util::future::Either;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tower::Service;

use crate::api::deadlines::{ConnClock, Deadlines, Limits, Verdict};
use crate::api::handlers::{self, Conn};
use crate::api::router;
use crate::api::state::AppState;
use crate::api::stop::{Stop, StopSignal};
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
    let mut stop = Stop::default();
    // Each connection task holds a sender; `recv` returning None means all have finished.
    let (alive_tx, mut alive_rx) = mpsc::channel::<()>(1);
    // One permit per open connection: at the cap, new connections wait in the listen backlog
    // instead of each holding a task, buffers and possibly a body.
    let slots = Arc::new(Semaphore::new(state.config.max_connections));
    let per_ip = Arc::new(PerIp::default());
    let config = &state.config;
    let limits = Limits::new(
        config.idle_timeout,
        config.write_timeout,
        config.header_read_timeout,
        config.body_read_timeout,
    );
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
        let Some(ip_slot) = per_ip.take(peer.ip(), state.config.max_connections_per_ip) else {
            tracing::debug!(%peer, "refused: too many connections from this address");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let conn = Connection {
            app: app.clone(),
            state: state.clone(),
            peer,
            stop: stop.register(),
            _alive: alive_tx.clone(),
            limits,
            _slot: slot,
            _ip_slot: ip_slot,
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
    stop.stop();
    drop(alive_tx);
    if tokio::time::timeout(state.config.shutdown_grace, alive_rx.recv())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after the shutdown grace period");
    }
    Ok(())
}

/// The most a connection's read buffer holds; AWS requests have headers of a few KiB.
const MAX_CONNECTION_BUFFER: usize = 64 * 1024;

struct Connection {
    app: Router,
    state: Arc<AppState>,
    peer: SocketAddr,
    stop: Arc<StopSignal>,
    limits: Limits,
    _alive: mpsc::Sender<()>,
    /// Frees the connection's place under `ServerConfig::max_connections` when dropped.
    _slot: OwnedSemaphorePermit,
    _ip_slot: IpSlot,
}

/// A request between its complete head and its answer, for the connection's clock: bytes read
/// meanwhile are its body, not the next head. Ends when dropped (also when the request is
/// cancelled).
struct Serving(Arc<ConnClock>);

impl Serving {
    fn start(clock: &Arc<ConnClock>) -> Self {
        clock.request_started();
        Self(Arc::clone(clock))
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        self.0.request_done();
    }
}

/// Open connections per client address.
#[derive(Default)]
struct PerIp(Mutex<HashMap<IpAddr, usize>>);

impl PerIp {
    /// A place for one more connection from `ip`, unless it has `max` already.
    fn take(self: &Arc<Self>, ip: IpAddr, max: usize) -> Option<IpSlot> {
        let mut open = self.0.lock();
        let n = open.entry(ip).or_default();
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(IpSlot {
            ip,
            table: self.clone(),
        })
    }
}

/// One connection's place under `ServerConfig::max_connections_per_ip`, freed when dropped.
struct IpSlot {
    ip: IpAddr,
    table: Arc<PerIp>,
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut open = self.table.0.lock();
        if let Some(n) = open.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

impl Connection {
    async fn run<I>(self, io: I)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        self.state.metrics.connection_opened();
        let peer = self.peer;
        let app = self.app.clone();
        let limits = self.limits;
        let clock = Arc::new(ConnClock::default());
        let conn_info = Conn {
            peer,
            clock: clock.clone(),
        };
        let state = self.state.clone();
        let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
            let serving = Serving::start(&conn_info.clock);
            // The KMS API, nearly every request, goes straight to its handler.
            let response = if req.method() == hyper::Method::POST && req.uri().path() == "/" {
                let (state, conn) = (state.clone(), Some(conn_info.clone()));
                let req = req.map(axum::body::Body::new);
                Either::Left(async move {
                    Ok::<_, Infallible>(handlers::serve_kms(state, conn, req).await)
                })
            } else {
                req.extensions_mut().insert(conn_info.clone());
                Either::Right(app.clone().call(req.map(axum::body::Body::new)))
            };
            async move {
                let response = response.await;
                drop(serving);
                response
            }
        });
        // No timer for hyper: the head's deadline is kept by the connection's clock (hyper's
        // timer armed one per request, which showed in profiles).
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .header_read_timeout(None)
            // Bounds what one connection buffers ahead of the handler (headers included).
            .max_buf_size(MAX_CONNECTION_BUFFER)
            // Without this, hyper reads ahead while a request is being served, to notice a
            // client gone mid-request; that read needs room in the read buffer, which the
            // request's head still shares, so every request cost a fresh 8 KiB buffer (and
            // glibc's fastbin consolidation on allocating it). With it, a request whose client
            // went away runs to its end and is noticed at the answer's write: its waits are
            // the long poll's 20 s, the store and the audit log (a hung disk holds every
            // request alike); and a client leaving can no longer cut a request off between
            // its operation taking effect and its audit line.
            .half_close(true)
            .keep_alive(true);
        let conn =
            builder.serve_connection(TokioIo::new(Deadlines::new(io, clock.clone())), service);
        tokio::pin!(conn);
        let mut tick = tokio::time::interval(limits.tick);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut stopping = self.stop.is_stopped();
        if stopping {
            conn.as_mut().graceful_shutdown();
        }
        let result = loop {
            tokio::select! {
                result = conn.as_mut() => break Some(result),
                () = self.stop.stopped(), if !stopping => {
                    stopping = true;
                    conn.as_mut().graceful_shutdown();
                }
                _ = tick.tick() => {
                    if let Verdict::Close(why) = clock.tick(&limits) {
                        tracing::debug!(%peer, why, "connection closed");
                        break None;
                    }
                }
            }
        };
        if let Some(Err(e)) = result {
            tracing::debug!(%peer, error = %e, "connection ended with an error");
        }
        self.state.metrics.connection_closed();
    }
}

/// A bound listener, with the error mapped into ours.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| KmsError::dependency(format!("cannot listen on {addr}"), e))
}
