//! The HTTP layer: AWS JSON 1.1 over HTTP/1.1 (optionally TLS), the STS query protocol's
//! web-identity calls on the same `POST /`, plus `/healthz` and `/metrics`. Handlers live in [`handlers`], shared state in [`state`].

use std::sync::Arc;

use axum::routing::{get, post};
use axum::Router;

pub mod auth;
mod deadlines;
pub mod handlers;
pub mod json;
pub mod metrics;
mod request_id;
pub mod server;
pub mod state;
mod stop;
pub mod sts;
pub mod tls;

pub use server::serve;
pub use state::{AppState, ServerConfig};

/// The whole API as one service; tests call it in process with `tower::ServiceExt::oneshot`.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/", post(handlers::kms).fallback(handlers::not_found))
        .route("/healthz", get(handlers::healthz))
        .route("/metrics", get(handlers::metrics))
        .fallback(handlers::not_found)
        .with_state(state)
}

#[cfg(test)]
mod sts_tests;
#[cfg(test)]
mod tests;
