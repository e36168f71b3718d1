//! The webhook's HTTPS server: it decodes AdmissionReviews, hands the typed requests to
//! [`Injector::admit`] (Pods) or [`validate::review`] (kubekms.io objects), and encodes the
//! answers. Nothing is decided here.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use k8s_openapi::api::core::v1::Pod;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview};
use kube::core::DynamicObject;
use serde::de::DeserializeOwned;
use tokio::net::TcpListener;
use tower::Service;

use crate::admit::Injector;
use crate::validate;

/// Paths the webhook configurations call.
pub const MUTATE_PODS_PATH: &str = "/mutate-pods";
pub const MUTATE_KEYS_PATH: &str = "/mutate-keys";
pub const VALIDATE_PATH: &str = "/validate";
/// The API server's admission timeout is at most 30 s and the chart sets 5 s; a handshake or
/// request that takes longer is someone else's.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);

struct App {
    injector: Injector,
}

/// The routes, over any transport (tests call them without TLS).
pub fn router(injector: Injector) -> Router {
    Router::new()
        .route(MUTATE_PODS_PATH, post(mutate_pods))
        .route(MUTATE_KEYS_PATH, post(mutate_keys))
        .route(VALIDATE_PATH, post(validate_objects))
        .route("/healthz", get(|| async { "ok" }))
        .with_state(Arc::new(App { injector }))
}

async fn mutate_pods(State(app): State<Arc<App>>, body: Bytes) -> Response {
    let started = Instant::now();
    let request: AdmissionRequest<Pod> = match decode(&body) {
        Ok(r) => r,
        Err(why) => return (StatusCode::BAD_REQUEST, why).into_response(),
    };
    let response = app.injector.admit(&request).await;
    if !response.allowed {
        eprintln!(
            "kubekms-webhook: refused pod {}/{} ({} ms): {}",
            request.namespace.as_deref().unwrap_or_default(),
            request.name,
            started.elapsed().as_millis(),
            response.result.message
        );
    }
    encode(response)
}

async fn mutate_keys(body: Bytes) -> Response {
    let request: AdmissionRequest<DynamicObject> = match decode(&body) {
        Ok(r) => r,
        Err(why) => return (StatusCode::BAD_REQUEST, why).into_response(),
    };
    encode(crate::finalize::admit_key(&request))
}

async fn validate_objects(body: Bytes) -> Response {
    let request: AdmissionRequest<DynamicObject> = match decode(&body) {
        Ok(r) => r,
        Err(why) => return (StatusCode::BAD_REQUEST, why).into_response(),
    };
    encode(validate::review(&request))
}

/// The request inside an AdmissionReview, or why the body is not one (answered 400).
fn decode<T>(body: &[u8]) -> Result<AdmissionRequest<T>, String>
where
    T: kube::Resource + DeserializeOwned,
{
    let review: AdmissionReview<T> =
        serde_json::from_slice(body).map_err(|e| format!("not an AdmissionReview: {e}"))?;
    review
        .try_into()
        .map_err(|e: kube::core::admission::ConvertAdmissionReviewError| {
            format!("no request in the AdmissionReview: {e}")
        })
}

fn encode(response: AdmissionResponse) -> Response {
    match serde_json::to_vec(&response.into_review()) {
        Ok(body) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// Serve `router` over TLS on `listener` until the process ends.
pub async fn serve_tls(listener: TcpListener, router: Router, tls: Arc<rustls::ServerConfig>) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(pair) => pair,
            Err(e) => {
                eprintln!("kubekms-webhook: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let acceptor = acceptor.clone();
        let router = router.clone();
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(_)) | Err(_) => return,
            };
            serve_connection(tls, router, peer).await;
        });
    }
}

async fn serve_connection<I>(io: I, router: Router, peer: SocketAddr)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
        let mut router = router.clone();
        router.call(req.map(axum::body::Body::new))
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .keep_alive(true);
    if let Err(e) = builder.serve_connection(TokioIo::new(io), service).await {
        eprintln!("kubekms-webhook: connection from {peer}: {e}");
    }
}
