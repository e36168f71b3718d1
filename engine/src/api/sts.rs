//! The STS query protocol, for the two calls AWS SDKs make to get and check an identity:
//! `AssumeRoleWithWebIdentity` (unsigned: the web identity token is the credential) and
//! `GetCallerIdentity` (SigV4 scoped to `sts`). A form-encoded `POST /` with an `Action`;
//! answers are XML, errors `<ErrorResponse>` as STS sends them. The exchange itself is
//! [`crate::identity::WebIdentity`]; this layer only decodes and encodes.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::http::{header, request::Parts, StatusCode};
use axum::response::Response;

use super::handlers::{read_body, response, signed, Conn, HttpError};
use super::metrics::Outcome;
use super::state::AppState;
use crate::audit::AuditEvent;
use crate::clock::format_iso8601;
use crate::error::{shown, KmsError};
use crate::identity::{AssumeRequest, Assumed, AUDIENCE};
use crate::service::Principal;
use crate::sigv4::Service;

const XMLNS: &str = "https://sts.amazonaws.com/doc/2011-06-15/";
const CONTENT_TYPE_XML: &str = "text/xml";
/// What the exchange reports as the token's issuer.
const PROVIDER: &str = "kubernetes";

/// Whether a request without an `X-Amz-Target` is an STS query (form-encoded body).
pub fn is_sts_request(parts: &Parts) -> bool {
    parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"))
}

/// One STS call: decode, exchange or authenticate, encode, audit.
pub async fn sts(
    state: Arc<AppState>,
    conn: Option<&Conn>,
    parts: Parts,
    body: Body,
    request_id: String,
) -> Response {
    let started = Instant::now();
    let received = state.clock.now_millis();
    let source_ip = conn.map(|c| c.peer.ip());
    let clock = conn.map(|c| &*c.clock);

    let mut action = Cow::Borrowed("");
    let mut principal: Option<Principal> = None;
    let result: Result<String, HttpError> = async {
        let (body, _held) = read_body(&state, &parts.headers, body, clock).await?;
        let form: Vec<(Cow<'_, str>, Cow<'_, str>)> = form_urlencoded::parse(&body).collect();
        let field = |name: &str| {
            form.iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_ref())
        };
        action = Cow::Owned(shown(field("Action").unwrap_or("")).into_owned());
        match field("Action") {
            Some("AssumeRoleWithWebIdentity") => {
                // Not an authenticated request: the token is the credential, checked by the
                // exchange. The audit log still refuses to let it through unrecorded.
                state.audit.check()?;
                let exchange = state.web_identity.as_ref().ok_or_else(|| {
                    KmsError::UnsupportedOperation(
                        "This endpoint has no web identity exchange configured".into(),
                    )
                })?;
                let required = |name: &str| {
                    field(name).ok_or_else(|| {
                        KmsError::validation(format!(
                            "1 validation error detected: Value null at '{name}' failed to \
                             satisfy constraint: Member must not be null"
                        ))
                    })
                };
                let duration_seconds = match field("DurationSeconds") {
                    None => None,
                    Some(d) => Some(d.parse::<u64>().map_err(|_| {
                        KmsError::validation("DurationSeconds must be a whole number of seconds")
                    })?),
                };
                let assumed = exchange
                    .assume(AssumeRequest {
                        role_arn: required("RoleArn")?,
                        role_session_name: required("RoleSessionName")?,
                        web_identity_token: required("WebIdentityToken")?,
                        duration_seconds,
                    })
                    .await?;
                principal = Some(assumed.principal.clone());
                Ok(assume_response(&assumed, &request_id))
            }
            Some("GetCallerIdentity") => {
                let who = state.authenticator.authenticate(&signed(&parts, &body))?;
                if who.service != Service::Sts {
                    return Err(KmsError::InvalidSignature(
                        "Credential should be scoped to correct service: 'sts'.".into(),
                    )
                    .into());
                }
                state.audit.check()?;
                let response =
                    caller_identity_response(&who.principal, &who.scope.account, &request_id);
                principal = Some(who.principal);
                Ok(response)
            }
            Some(other) => Err(KmsError::UnknownOperation(format!(
                "Could not find operation {}",
                shown(other)
            ))
            .into()),
            None => Err(KmsError::UnknownOperation("Missing Action".into()).into()),
        }
    }
    .await;

    let (response, error_code) = match result {
        Ok(xml) => (xml_response(StatusCode::OK, xml, &request_id), None),
        Err(e) => {
            let code = sts_code(&e.error);
            tracing::debug!(error = %e.error, code, "STS request refused");
            (
                xml_response(
                    sts_status(&e.error),
                    error_xml(&e.error, &request_id),
                    &request_id,
                ),
                Some(code),
            )
        }
    };
    let audited = state.audit.record(AuditEvent {
        time: received,
        request_id: &request_id,
        principal: principal.as_ref().map_or("", Principal::arn),
        operation: &action,
        key_arn: None,
        encryption_context_keys: &[],
        error_code,
        source_ip,
    });
    let response = match audited.written().await {
        Ok(()) => response,
        Err(e) => xml_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            error_xml(&e, &request_id),
            &request_id,
        ),
    };
    state.metrics.record(
        None,
        Outcome::from_status(response.status().as_u16()),
        started.elapsed(),
    );
    response
}

fn assume_response(assumed: &Assumed, request_id: &str) -> String {
    let c = &assumed.credentials;
    let mut xml = String::with_capacity(1024 + c.session_token.len());
    let _ = write!(
        xml,
        "<AssumeRoleWithWebIdentityResponse xmlns=\"{XMLNS}\">\
         <AssumeRoleWithWebIdentityResult>\
         <SubjectFromWebIdentityToken>{}</SubjectFromWebIdentityToken>\
         <Audience>{AUDIENCE}</Audience>\
         <AssumedRoleUser><Arn>{}</Arn><AssumedRoleId>{}</AssumedRoleId></AssumedRoleUser>\
         <Credentials>\
         <SessionToken>{}</SessionToken>\
         <SecretAccessKey>{}</SecretAccessKey>\
         <Expiration>{}</Expiration>\
         <AccessKeyId>{}</AccessKeyId>\
         </Credentials>\
         <Provider>{PROVIDER}</Provider>\
         </AssumeRoleWithWebIdentityResult>\
         <ResponseMetadata><RequestId>{}</RequestId></ResponseMetadata>\
         </AssumeRoleWithWebIdentityResponse>",
        escape(&assumed.subject),
        escape(&assumed.assumed_role_arn),
        escape(&assumed.assumed_role_id),
        escape(&c.session_token),
        escape(&c.secret_access_key),
        format_iso8601(c.expiration),
        escape(&c.access_key_id),
        escape(request_id),
    );
    xml
}

fn caller_identity_response(principal: &Principal, account: &str, request_id: &str) -> String {
    format!(
        "<GetCallerIdentityResponse xmlns=\"{XMLNS}\">\
         <GetCallerIdentityResult>\
         <Arn>{}</Arn><UserId>{}</UserId><Account>{}</Account>\
         </GetCallerIdentityResult>\
         <ResponseMetadata><RequestId>{}</RequestId></ResponseMetadata>\
         </GetCallerIdentityResponse>",
        escape(principal.arn()),
        escape(principal.arn()),
        escape(account),
        escape(request_id)
    )
}

fn error_xml(error: &KmsError, request_id: &str) -> String {
    let kind = if sts_status(error).is_server_error() {
        "Receiver"
    } else {
        "Sender"
    };
    format!(
        "<ErrorResponse xmlns=\"{XMLNS}\">\
         <Error><Type>{kind}</Type><Code>{}</Code><Message>{}</Message></Error>\
         <RequestId>{}</RequestId>\
         </ErrorResponse>",
        sts_code(error),
        escape(&error.to_string()),
        escape(request_id)
    )
}

/// STS's error codes, which differ from KMS's for the same faults.
fn sts_code(error: &KmsError) -> &'static str {
    match error {
        KmsError::InvalidIdentityToken(_) => "InvalidIdentityToken",
        KmsError::ExpiredToken(_) => "ExpiredTokenException",
        KmsError::IdpCommunication(_) => "IDPCommunicationError",
        KmsError::Validation(_) => "ValidationError",
        KmsError::AccessDenied(_) => "AccessDenied",
        KmsError::UnrecognizedClient(_) => "InvalidClientTokenId",
        KmsError::InvalidSignature(_) => "SignatureDoesNotMatch",
        KmsError::IncompleteSignature(_) => "IncompleteSignature",
        KmsError::MissingAuthenticationToken(_) => "MissingAuthenticationToken",
        KmsError::UnknownOperation(_) | KmsError::UnsupportedOperation(_) => "InvalidAction",
        KmsError::RequestTimeout(_) => "RequestTimeout",
        _ => "InternalFailure",
    }
}

fn sts_status(error: &KmsError) -> StatusCode {
    match error {
        KmsError::UnrecognizedClient(_)
        | KmsError::InvalidSignature(_)
        | KmsError::MissingAuthenticationToken(_)
        | KmsError::AccessDenied(_) => StatusCode::FORBIDDEN,
        other => {
            StatusCode::from_u16(other.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
        }
    }
}

fn xml_response(status: StatusCode, body: String, request_id: &str) -> Response {
    response(status, body.into(), CONTENT_TYPE_XML, request_id)
}

/// XML text and attribute escaping.
fn escape(text: &str) -> Cow<'_, str> {
    if !text.contains(['<', '>', '&', '"', '\'']) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}
