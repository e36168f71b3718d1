//! The AWS JSON 1.1 protocol: `POST /` with `X-Amz-Target: TrentService.<Operation>`, a SigV4
//! signature, and a JSON body; answers are JSON, errors `{"__type", "message"}`.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use tracing::Span;

pub use kubekms_proto::sigv4::CONTENT_TYPE_JSON;
use kubekms_proto::sigv4::TARGET_PREFIX;
use kubekms_proto::Operation;

use crate::api::json;
use crate::api::metrics::Outcome;
use crate::api::state::AppState;
use crate::audit::AuditEvent;
use crate::error::KmsError;
use crate::service::{Caller, Principal};
use crate::sigv4::SignedRequest;

pub const REQUEST_ID_HEADER: &str = "x-amzn-requestid";

/// The client's address, put into request extensions by the server for the audit log.
#[derive(Clone, Copy, Debug)]
pub struct PeerAddr(pub SocketAddr);

/// One KMS API call: authenticate, dispatch, audit, count.
#[tracing::instrument(
    name = "kms_request",
    level = "debug",
    skip_all,
    fields(request_id = tracing::field::Empty, operation = tracing::field::Empty)
)]
pub async fn kms(State(state): State<Arc<AppState>>, req: Request) -> Response {
    let started = Instant::now();
    let received = state.clock.now_millis();
    let request_id = uuid::Uuid::new_v4().to_string();
    let span = Span::current();
    span.record("request_id", request_id.as_str());

    let (parts, body) = req.into_parts();
    let target = parts
        .headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let operation = target.strip_prefix(TARGET_PREFIX).unwrap_or(target);
    span.record("operation", operation);
    let op = Operation::from_name(operation).filter(|_| target.starts_with(TARGET_PREFIX));
    let source_ip = parts.extensions.get::<PeerAddr>().map(|p| p.0.ip());

    let mut principal = "";
    let mut keys = Vec::new();
    let result = async {
        let body = read_body(&parts.headers, body, state.config.max_body_bytes).await?;
        let verified = state.verifier.verify(&SignedRequest {
            method: parts.method.as_str(),
            path: parts.uri.path(),
            query: parts.uri.query(),
            headers: &parts.headers,
            body: &body,
        })?;
        principal = verified.principal;
        if target.is_empty() {
            return Err(HttpError::from(KmsError::UnknownOperation(
                "Missing X-Amz-Target header".into(),
            )));
        }
        let Some(op) = op else {
            return Err(HttpError::from(KmsError::UnknownOperation(format!(
                "Unknown operation {target}"
            ))));
        };
        let caller = Caller {
            scope: verified.scope,
            principal: Principal::new(principal),
            request_id: request_id.clone(),
        };
        let answer = json::dispatch(&state.kms, &caller, op, &body).await;
        keys = answer.keys;
        answer.result.map_err(HttpError::from)
    }
    .await;

    let (response, error_code) = match result {
        Ok(json) => (json_response(StatusCode::OK, json, &request_id), None),
        Err(e) => {
            let code = e.error.aws_type();
            if e.status.is_server_error() {
                tracing::warn!(error = %e.error, code, "request failed");
            } else {
                tracing::debug!(error = %e.error, code, "request refused");
            }
            (error_response(e.status, &e.error, &request_id), Some(code))
        }
    };
    state.audit.record(AuditEvent {
        time: received,
        request_id: &request_id,
        principal,
        operation,
        // ReEncrypt touches its source and then its destination: the latter is the key it
        // acted on.
        key_arn: keys.last().map(|k| &**k),
        error_code,
        source_ip,
    });
    state.metrics.record(
        op,
        Outcome::from_status(response.status().as_u16()),
        started.elapsed(),
    );
    response
}

/// An error with the HTTP status it is answered with (normally `KmsError::http_status`).
struct HttpError {
    status: StatusCode,
    error: KmsError,
}

impl From<KmsError> for HttpError {
    fn from(error: KmsError) -> Self {
        let status =
            StatusCode::from_u16(error.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        Self { status, error }
    }
}

/// Collect the body, refusing more than `limit` bytes (by Content-Length before reading, and
/// while reading for chunked bodies).
async fn read_body(
    headers: &axum::http::HeaderMap,
    mut body: Body,
    limit: usize,
) -> Result<Bytes, HttpError> {
    let too_large = || HttpError {
        status: StatusCode::PAYLOAD_TOO_LARGE,
        error: KmsError::validation(format!("Request body must be at most {limit} bytes")),
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    let mut first: Option<Bytes> = None;
    let mut rest: Vec<u8> = Vec::new();
    while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
        let frame = frame.map_err(|_| {
            HttpError::from(KmsError::SerializationFailure(
                "Could not read the request body".into(),
            ))
        })?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        let have = first.as_ref().map_or(0, Bytes::len) + rest.len();
        if have + data.len() > limit {
            return Err(too_large());
        }
        // A body nearly always arrives in one frame; keep it without copying.
        match &first {
            None => first = Some(data),
            Some(f) => {
                if rest.is_empty() {
                    rest.extend_from_slice(f);
                }
                rest.extend_from_slice(&data);
            }
        }
    }
    Ok(if rest.is_empty() {
        first.unwrap_or_default()
    } else {
        Bytes::from(rest)
    })
}

fn json_response(status: StatusCode, body: Vec<u8>, request_id: &str) -> Response {
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(CONTENT_TYPE_JSON),
    );
    if let Ok(id) = HeaderValue::from_str(request_id) {
        headers.insert(REQUEST_ID_HEADER, id);
    }
    response
}

/// `{"__type": "...", "message": "..."}`, as botocore and the SDKs parse AWS JSON errors.
pub fn error_response(status: StatusCode, error: &KmsError, request_id: &str) -> Response {
    let body = serde_json::json!({ "__type": error.aws_type(), "message": error.to_string() });
    let mut response = json_response(status, body.to_string().into_bytes(), request_id);
    response.headers_mut().insert(
        "x-amzn-errortype",
        HeaderValue::from_static(error.aws_type()),
    );
    response
}

pub async fn healthz() -> &'static str {
    "ok"
}

pub async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let mut response = Response::new(Body::from(state.metrics.render()));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}

/// Any other path or method.
pub async fn not_found(req: Request) -> Response {
    let request_id = uuid::Uuid::new_v4().to_string();
    let error = KmsError::UnknownOperation(format!(
        "No such resource: {} {}",
        req.method(),
        req.uri().path()
    ));
    error_response(StatusCode::NOT_FOUND, &error, &request_id)
}
