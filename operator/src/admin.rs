//! The admin listener (only with `--test-clock`): move the shared clock forward so tests can
//! prove rotation, expiry and deletion windows without waiting days, and read the operator's
//! reconcile metrics. The metrics alone are also served on the metrics listener, always.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::Router;
use futures::channel::mpsc::UnboundedSender;
use kubekms_engine::clock::{Clock, SystemClock};
use kubekms_engine::service::Kms;

use crate::controller::Context;

#[derive(Clone)]
pub struct AdminState {
    pub clock: Arc<SystemClock>,
    pub kms: Arc<Kms>,
    pub ctx: Arc<Context>,
    /// Each controller reconciles everything when one of these fires.
    pub triggers: Vec<UnboundedSender<()>>,
}

pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/admin/clock", get(show_clock))
        .route("/admin/clock/advance", post(advance_clock))
        .route("/metrics", get(metrics))
        .with_state(state)
}

pub async fn serve(listener: tokio::net::TcpListener, state: AdminState) {
    if let Err(e) = axum::serve(listener, router(state)).await {
        tracing::warn!(error = %e, "admin listener stopped");
    }
}

/// The engine pods' admin API (`kubekms-operator engine --test-clock`): the clock, and moving
/// it forward with this replica's due work run at once.
pub fn clock_router(clock: Arc<SystemClock>, kms: Arc<Kms>) -> Router {
    Router::new()
        .route(
            "/admin/clock",
            get(|State((clock, _)): State<(Arc<SystemClock>, Arc<Kms>)>| async move {
                json_answer(clock_json(&clock))
            }),
        )
        .route(
            "/admin/clock/advance",
            post(
                |State((clock, kms)): State<(Arc<SystemClock>, Arc<Kms>)>, body: String| async move {
                    advance(&clock, &kms, &body).await
                },
            ),
        )
        .with_state((clock, kms))
}

fn json_answer(body: String) -> axum::response::Response {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
}

fn clock_json(clock: &SystemClock) -> String {
    format!(
        "{{\"nowMillis\":{},\"offsetMillis\":{}}}\n",
        clock.now_millis(),
        clock.offset()
    )
}

async fn show_clock(State(state): State<AdminState>) -> axum::response::Response {
    json_answer(clock_json(&state.clock))
}

/// Body: the milliseconds to move forward. The engine's due work (deletions, rotations,
/// expiries) runs before this answers, and every object is reconciled again, so the effect
/// shows in the cluster within moments.
async fn advance_clock(State(state): State<AdminState>, body: String) -> axum::response::Response {
    let answer = advance(&state.clock, &state.kms, &body).await;
    if answer.status().is_success() {
        for trigger in &state.triggers {
            let _ = trigger.unbounded_send(());
        }
    }
    answer
}

/// Moves `clock` forward by `body` milliseconds and runs `kms`'s due work before answering.
async fn advance(clock: &SystemClock, kms: &Kms, body: &str) -> axum::response::Response {
    let by: i64 = match body.trim().parse() {
        Ok(ms) if ms >= 0 => ms,
        _ => {
            return (
                StatusCode::BAD_REQUEST,
                "body must be a non-negative number of milliseconds\n",
            )
                .into_response()
        }
    };
    clock.advance(by);
    if let Err(e) = kms.run_due_work().await {
        tracing::warn!(error = %e, "due work after a clock advance failed; the next tick retries");
    }
    tracing::info!(
        by_millis = by,
        offset = clock.offset(),
        "test clock advanced"
    );
    json_answer(clock_json(clock))
}

async fn metrics(State(state): State<AdminState>) -> impl IntoResponse {
    operator_metrics(&state.ctx)
}

/// The operator's metrics (reconciles, events), in OpenMetrics text.
fn operator_metrics(ctx: &Context) -> impl IntoResponse {
    let mut collectors = ctx.metrics.collectors();
    collectors.push(Box::new(ctx.events.stats().snapshot()));
    (
        [(
            axum::http::header::CONTENT_TYPE,
            kubekms_engine::api::metrics::CONTENT_TYPE,
        )],
        kubekms_engine::api::metrics::encode(collectors),
    )
}

/// The metrics listener (`--metrics-listen`, always on): `GET /metrics` only.
pub async fn serve_metrics(listener: tokio::net::TcpListener, ctx: Arc<Context>) {
    let router = Router::new()
        .route(
            "/metrics",
            get(|State(ctx): State<Arc<Context>>| async move { operator_metrics(&ctx) }),
        )
        .with_state(ctx);
    if let Err(e) = axum::serve(listener, router).await {
        tracing::warn!(error = %e, "metrics listener stopped");
    }
}
