//! The AWS JSON 1.1 protocol: `POST /` with `X-Amz-Target: TrentService.<Operation>`, a SigV4
//! signature, and a JSON body; answers are JSON, errors `{"__type", "message"}`.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::Span;

use kubekms_proto::changes::LIST_KEY_CHANGES_TARGET;
pub use kubekms_proto::sigv4::CONTENT_TYPE_JSON;
use kubekms_proto::sigv4::TARGET_PREFIX;
use kubekms_proto::Operation;

use crate::api::deadlines::ConnClock;
use crate::api::metrics::Outcome;
use crate::api::state::AppState;
use crate::api::{json, sts};
use crate::audit::AuditEvent;
use crate::error::{shown, KmsError};
use crate::service::{Caller, Principal};
use crate::sigv4::{Service, SignedRequest, X_AMZ_TARGET};

pub const REQUEST_ID_HEADER: &str = "x-amzn-requestid";

/// The connection a request came on: the client's address (for the audit log) and the
/// connection's deadline marks (so a body read is bounded without a timer of its own). The
/// server passes it to [`serve_kms`] directly, and to other routes in the request's extensions.
#[derive(Clone)]
pub struct Conn {
    pub peer: SocketAddr,
    pub clock: Arc<ConnClock>,
}

/// `POST /` through the router (in-process tests): the connection, if any, from the
/// request's extensions.
pub async fn kms(State(state): State<Arc<AppState>>, req: Request) -> Response {
    let conn = req.extensions().get::<Conn>().cloned();
    serve_kms(state, conn, req).await
}

/// One KMS API call: authenticate, dispatch, audit, count. The server calls this for every
/// `POST /` without going through the router, which on this path cost an extensions map and
/// a boxed route per request.
#[tracing::instrument(
    name = "kms_request",
    level = "debug",
    skip_all,
    fields(request_id = tracing::field::Empty, operation = tracing::field::Empty)
)]
pub async fn serve_kms(state: Arc<AppState>, conn: Option<Conn>, req: Request) -> Response {
    let started = Instant::now();
    let received = state.clock.now_millis();
    let request_id = state.request_ids.next_id();
    let span = Span::current();
    span.record("request_id", request_id.as_str());

    let (parts, body) = req.into_parts();
    let target = parts.headers.get(&X_AMZ_TARGET);
    if target.is_none() && sts::is_sts_request(&parts) {
        span.record("operation", "sts");
        // Boxed, like the operations that write the store: rare here, and its future would
        // otherwise size that of every request (see `json::call!`).
        return Box::pin(sts::sts(state, conn.as_ref(), parts, body, request_id)).await;
    }
    let target = target.and_then(|v| v.to_str().ok()).unwrap_or("");
    let named = if target == LIST_KEY_CHANGES_TARGET {
        Some(Named::KeyChanges)
    } else {
        target
            .strip_prefix(TARGET_PREFIX)
            .and_then(Operation::from_name)
            .map(Named::Kms)
    };
    // The target is the client's, unauthenticated: logged (and echoed) only in a bounded,
    // printable form.
    let operation: Cow<'_, str> = match named {
        Some(Named::Kms(op)) => Cow::Borrowed(op.name()),
        Some(Named::KeyChanges) => Cow::Borrowed(KEY_CHANGES_OPERATION),
        None => shown(target.strip_prefix(TARGET_PREFIX).unwrap_or(target)),
    };
    span.record("operation", &*operation);
    let conn = conn.as_ref();
    let source_ip = conn.map(|c| c.peer.ip());

    let mut principal: Option<Principal> = None;
    let mut keys = Vec::new();
    let mut context_keys: Vec<String> = Vec::new();
    let result = async {
        // Before the body is read: a request that cannot authenticate holds no body. A small
        // body of declared length usually arrives with the head and sits in hyper's buffer
        // already, so its head is checked once, with the signature.
        if content_length(&parts.headers).is_none_or(|n| n > CHECK_HEAD_FIRST_ABOVE) {
            state.authenticator.check_head(&parts.headers)?;
        }
        let clock = conn.map(|c| &*c.clock);
        let (body, _held) = read_body(&state, &parts.headers, body, clock).await?;
        let who = state.authenticator.authenticate(&signed(&parts, &body))?;
        if who.service != Service::Kms {
            principal = Some(who.principal);
            return Err(HttpError::from(KmsError::InvalidSignature(
                "Credential should be scoped to correct service: 'kms'.".into(),
            )));
        }
        let Some(named) = named else {
            principal = Some(who.principal);
            return Err(HttpError::from(KmsError::UnknownOperation(
                if target.is_empty() {
                    "Missing X-Amz-Target header".into()
                } else {
                    format!("Unknown operation {operation}")
                },
            )));
        };
        // Audit or nothing: while the log is known to be unwritable, refuse before acting, so
        // that no operation (a CreateKey, a ScheduleKeyDeletion) takes effect unaudited. This
        // request's own line, below, is what retries the log.
        if let Err(e) = state.audit.check() {
            principal = Some(who.principal);
            return Err(HttpError::from(e));
        }
        let caller = Caller {
            scope: who.scope,
            principal: who.principal,
            request_id: request_id.clone(),
        };
        let answer = match named {
            Named::Kms(op) => {
                let dispatch = || json::dispatch(&state.kms, &caller, op, &body);
                state
                    .kms
                    .with_catch_up(dispatch, |answer| answer.result.is_err())
                    .await
            }
            Named::KeyChanges => json::list_key_changes(&state.kms, &caller, &body).await,
        };
        principal = Some(caller.principal);
        keys = answer.keys;
        context_keys = answer.context_keys;
        answer.result.map_err(HttpError::from)
    }
    .await;

    let (response, error_code) = match result {
        Ok(json) => (json_response(StatusCode::OK, json, &request_id), None),
        Err(e) => {
            let code = e.error.aws_type();
            if e.status.is_server_error() {
                tracing::warn!(error = %e.error.chain(), code, "request failed");
            } else {
                tracing::debug!(error = %e.error, code, "request refused");
            }
            (error_response(e.status, &e.error, &request_id), Some(code))
        }
    };
    let context_key_refs: Vec<&str> = context_keys.iter().map(String::as_str).collect();
    let audited = state.audit.record(AuditEvent {
        time: received,
        request_id: &request_id,
        principal: principal.as_ref().map_or("", Principal::arn),
        operation: &operation,
        // ReEncrypt touches its source and then its destination: the latter is the key it
        // acted on.
        key_arn: keys.last().map(|k| &**k),
        encryption_context_keys: &context_key_refs,
        error_code,
        source_ip,
    });
    // Answered only once its line is written: a result the log cannot show is not given out.
    let response = match audited.written().await {
        Ok(()) => response,
        Err(e) => {
            tracing::debug!(error = %e, "request answered with an error: no audit line");
            error_response(StatusCode::INTERNAL_SERVER_ERROR, &e, &request_id)
        }
    };
    // A long poll's time is its wait, not the engine's: not in the latency figures.
    if named != Some(Named::KeyChanges) {
        state.metrics.record(
            named.and_then(Named::operation),
            Outcome::from_status(response.status().as_u16()),
            started.elapsed(),
        );
    }
    if error_code == Some("AccessDeniedException") {
        state
            .metrics
            .record_denied(principal.as_ref().map_or("", Principal::arn));
    }
    response
}

/// What a request's `X-Amz-Target` names: an AWS KMS operation, or kubekms's own long poll for
/// changed keys (`kubekms_proto::changes`).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Named {
    Kms(Operation),
    KeyChanges,
}

impl Named {
    fn operation(self) -> Option<Operation> {
        match self {
            Named::Kms(op) => Some(op),
            Named::KeyChanges => None,
        }
    }
}

/// The audit log's name for the long poll.
const KEY_CHANGES_OPERATION: &str = "ListKeyChanges";

/// What SigV4 covers of a request whose body has been read.
pub(super) fn signed<'a>(
    parts: &'a axum::http::request::Parts,
    body: &'a [u8],
) -> SignedRequest<'a> {
    SignedRequest {
        method: parts.method.as_str(),
        path: parts.uri.path(),
        query: parts.uri.query(),
        headers: &parts.headers,
        body,
    }
}

/// An error with the HTTP status it is answered with (normally `KmsError::http_status`).
pub(super) struct HttpError {
    pub(super) status: StatusCode,
    pub(super) error: KmsError,
}

impl From<KmsError> for HttpError {
    fn from(error: KmsError) -> Self {
        let status =
            StatusCode::from_u16(error.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        Self { status, error }
    }
}

/// Bodies larger than this (or of unknown length) are read only once their head authenticates.
const CHECK_HEAD_FIRST_ABOVE: u64 = 16 * 1024;

fn content_length(headers: &axum::http::HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
}

/// Collect the body within `ServerConfig::body_read_timeout`, refusing more than
/// `max_body_bytes` (by Content-Length before reading, and while reading for chunked bodies).
/// The bytes held count against the server's body budget until the returned permit is dropped.
pub(super) async fn read_body(
    state: &AppState,
    headers: &axum::http::HeaderMap,
    body: Body,
    clock: Option<&ConnClock>,
) -> Result<(Bytes, Option<OwnedSemaphorePermit>), HttpError> {
    let timeout = state.config.body_read_timeout;
    let limit = state.config.max_body_bytes;
    let late = || {
        HttpError::from(KmsError::RequestTimeout(format!(
            "The request body was not received within {} ms",
            timeout.as_millis()
        )))
    };
    let collect = collect_body(headers, body, limit, &state.body_budget);
    match clock {
        // Served by our server: the connection's watch says when the body is late.
        Some(clock) => {
            clock.body_started();
            let result = tokio::select! {
                result = collect => result,
                () = clock.body_expired() => Err(late()),
            };
            clock.body_done();
            result
        }
        // Called without a connection (in-process tests): a timer of its own.
        None => tokio::time::timeout(timeout, collect)
            .await
            .unwrap_or_else(|_| Err(late())),
    }
}

async fn collect_body(
    headers: &axum::http::HeaderMap,
    mut body: Body,
    limit: usize,
    budget: &Arc<Semaphore>,
) -> Result<(Bytes, Option<OwnedSemaphorePermit>), HttpError> {
    let too_large = || HttpError {
        status: StatusCode::PAYLOAD_TOO_LARGE,
        error: KmsError::validation(format!("Request body must be at most {limit} bytes")),
    };
    let declared = content_length(headers);
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    // A declared length is reserved before a byte of the body is read; a chunked body reserves
    // what each frame brings. Either way a body waits (within the read timeout) while others
    // hold the budget.
    let reserve = |bytes: usize| {
        budget
            .clone()
            .acquire_many_owned(u32::try_from(bytes).unwrap_or(u32::MAX))
    };
    let mut held: Option<OwnedSemaphorePermit> = match declared {
        Some(n) if n > 0 => Some(
            reserve(n as usize)
                .await
                .map_err(|_| KmsError::internal("the body budget is closed"))?,
        ),
        _ => None,
    };
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
        let have = if rest.is_empty() {
            first.as_ref().map_or(0, Bytes::len)
        } else {
            rest.len()
        };
        if have + data.len() > limit {
            return Err(too_large());
        }
        if declared.is_none() {
            let permit = reserve(data.len())
                .await
                .map_err(|_| KmsError::internal("the body budget is closed"))?;
            match held.as_mut() {
                Some(h) => h.merge(permit),
                None => held = Some(permit),
            }
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
    let bytes = if rest.is_empty() {
        first.unwrap_or_default()
    } else {
        Bytes::from(rest)
    };
    Ok((bytes, held))
}

fn json_response(status: StatusCode, body: Vec<u8>, request_id: &str) -> Response {
    response(status, body.into(), CONTENT_TYPE_JSON, request_id)
}

/// An answer with its content type and the request id header.
pub(super) fn response(
    status: StatusCode,
    body: Body,
    content_type: &'static str,
    request_id: &str,
) -> Response {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
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
        HeaderValue::from_static(crate::api::metrics::CONTENT_TYPE),
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
