//! A client of the engine's HTTP API for the project's own programs (the operator, the
//! webhook, the agent): the AWS JSON 1.1 protocol every client speaks (`POST /`,
//! `X-Amz-Target`, a JSON body of a [`crate::ops`] type, SigV4 with temporary credentials), the
//! credentials obtained for a projected ServiceAccount token through STS
//! `AssumeRoleWithWebIdentity` at the same address, as the AWS SDKs do with
//! `AWS_WEB_IDENTITY_TOKEN_FILE`.
//!
//! Requests and answers are typed end to end; a refusal comes back as a [`Refusal`] (its AWS
//! error type and message), which the caller maps to its own error type. Behind the `client`
//! feature, so crates that only need the vocabulary do not build an HTTP client.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::changes::{ListKeyChangesRequest, ListKeyChangesResponse, LIST_KEY_CHANGES_TARGET};
use crate::sigv4::{sign_json_request, Millis, TARGET_PREFIX};
use crate::Operation;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{HeaderValue, CONTENT_TYPE, HOST};
use hyper::{Method, Request, StatusCode, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use parking_lot::RwLock;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

/// A whole request (connect, send, answer read) takes at most this long. Engine writes are
/// bounded by the cluster store's 10 s call timeout; queueing behind other writes adds some.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Below the engine's 60 s idle timeout, so the pool drops a connection before the server
/// closes it under a request.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
const POOL_MAX_IDLE: usize = 32;
/// The largest answer read (ListKeys pages of 1,000 keys are about 100 KiB).
const MAX_RESPONSE_BYTES: usize = 8 * 1024 * 1024;
/// How long the sessions asked for last; the engine ends them no later than the token.
const SESSION_SECONDS: u64 = 3600;
/// A session is renewed this long before it expires (or halfway through, if it is short).
const REFRESH_BEFORE_MILLIS: Millis = 5 * 60 * 1000;
const FORM_CONTENT_TYPE: &str = "application/x-www-form-urlencoded; charset=utf-8";

/// The engine's refusal of a request: the AWS error type (`NotFoundException`, or STS's
/// `InvalidIdentityToken`) and its message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{aws_type}: {message}")]
pub struct Refusal {
    pub aws_type: String,
    pub message: String,
}

impl Refusal {
    /// Whether this is the error `name`, however the type is decorated (botocore's
    /// `namespace#` prefix, a gateway's `:` suffix).
    pub fn is(&self, name: &str) -> bool {
        let bare = self.aws_type.rsplit('#').next().unwrap_or_default();
        bare.split(':').next() == Some(name)
    }
}

/// Why a call did not get the engine's answer. The engine's refusals are not among these:
/// they are [`Refusal`]s.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("the engine's address is not known yet (none was given, and the engine Service has no cluster IP yet)")]
    NoEndpoint,
    #[error("engine URL {url:?}: {why}")]
    BadUrl { url: String, why: String },
    #[error("the CA bundle {}: {why}", path.display())]
    CaBundle { path: PathBuf, why: String },
    #[error("cannot read the ServiceAccount token {}: {source}", path.display())]
    Token {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the ServiceAccount token file {} is empty", path.display())]
    EmptyToken { path: PathBuf },
    #[error("request to the engine at {endpoint}: {source}")]
    Transport {
        endpoint: String,
        #[source]
        source: hyper_util::client::legacy::Error,
    },
    #[error("reading the engine's answer: {0}")]
    Body(String),
    #[error("no answer from the engine within {}s", REQUEST_TIMEOUT.as_secs())]
    Timeout,
    #[error("the engine answered {status} with a body that is not {expected}: {detail}")]
    Undecodable {
        status: u16,
        expected: &'static str,
        detail: String,
    },
    /// The web-identity exchange refused the token.
    #[error("AssumeRoleWithWebIdentity at the engine: {source}")]
    Exchange {
        #[source]
        source: Refusal,
    },
    #[error("cannot build the request: {0}")]
    Request(String),
    /// Calls waiting for a session while an exchange failed fail with it, rather than each
    /// trying (and perhaps timing out) in turn.
    #[error("getting an engine session failed moments ago: {0}")]
    RecentExchangeFailure(String),
}

impl TransportError {
    /// Failures where the request certainly never reached the engine, so sending it again
    /// cannot do anything twice.
    pub fn never_sent(&self) -> bool {
        matches!(self, TransportError::Transport { source, .. } if source.is_connect())
    }

    /// Failures of the connection rather than of the engine: worth one more try when the
    /// operation may run twice.
    pub fn is_transport(&self) -> bool {
        matches!(
            self,
            TransportError::Transport { .. } | TransportError::Timeout | TransportError::Body(_)
        )
    }

    /// The engine's TLS certificate was not accepted (another CA, another name, expired):
    /// trying again will not help.
    pub fn is_untrusted_certificate(&self) -> bool {
        let TransportError::Transport { source, .. } = self else {
            return false;
        };
        let mut next: Option<&(dyn std::error::Error + 'static)> = Some(source);
        while let Some(error) = next {
            // An io::Error's `source` skips the error it wraps (itself perhaps an io::Error
            // around rustls's): look inside each.
            let mut inner = Some(error);
            while let Some(candidate) = inner {
                if let Some(rustls::Error::InvalidCertificate(_)) =
                    candidate.downcast_ref::<rustls::Error>()
                {
                    return true;
                }
                inner = candidate
                    .downcast_ref::<std::io::Error>()
                    .and_then(|io| io.get_ref())
                    .map(|e| e as &(dyn std::error::Error + 'static));
            }
            next = error.source();
        }
        false
    }
}

/// One call's failure: the engine refused it, or it could not be asked.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("the engine refused: {0}")]
    Refused(Refusal),
    #[error(transparent)]
    Unreachable(TransportError),
}

impl From<TransportError> for CallError {
    fn from(e: TransportError) -> Self {
        CallError::Unreachable(e)
    }
}

/// How to reach the engine and who to be there.
pub struct ClientSettings {
    /// `http://host:port` or `https://host:port`; `None` until the address is known
    /// ([`KmsClient::set_endpoint`]).
    pub endpoint: Option<String>,
    /// PEM certificates of the CAs an `https://` engine's certificate must chain to (what
    /// `AWS_CA_BUNDLE` names for the AWS SDKs). Without it only `http://` is reached.
    pub ca_bundle: Option<PathBuf>,
    /// The name the engine's certificate is checked against, whatever address is connected
    /// to: the engine Service's DNS name, when the engine is reached at its cluster IP in a
    /// cluster without DNS. `None`: the endpoint's own host.
    pub server_name: Option<String>,
    /// The address was given by the user: [`KmsClient::set_endpoint`] never replaces it.
    pub endpoint_fixed: bool,
    /// The projected ServiceAccount token (audience `kubekms`), read again for every exchange.
    pub token_file: PathBuf,
    pub region: String,
    /// The role to assume (`arn:aws:iam::<account>:role/<name>`).
    pub role_arn: String,
    /// The session name the engine records.
    pub session_name: String,
}

#[derive(Clone)]
struct Endpoint {
    /// `scheme://authority/`
    uri: Uri,
    /// The `Host` header, signed.
    host: String,
}

/// The engine's URL at a Service's cluster IP (`None` for a headless or unassigned one), as
/// pods reach it without DNS; `https://` when the engine serves TLS.
pub fn cluster_ip_url(ip: &str, port: u16, tls: bool) -> Option<String> {
    if ip.is_empty() || ip == "None" {
        return None;
    }
    let scheme = if tls { "https" } else { "http" };
    Some(if ip.contains(':') {
        format!("{scheme}://[{ip}]:{port}")
    } else {
        format!("{scheme}://{ip}:{port}")
    })
}

impl Endpoint {
    fn parse(url: &str, tls: bool) -> Result<Self, TransportError> {
        let bad = |why: &str| TransportError::BadUrl {
            url: url.to_owned(),
            why: why.to_owned(),
        };
        let uri: Uri = url.parse().map_err(|_| bad("not a URL"))?;
        let scheme = match uri.scheme_str() {
            // Given a CA, the engine serves TLS: never send a token or credentials in the clear.
            Some("http") if tls => {
                return Err(bad(
                    "a CA bundle is given, so the engine serves TLS: use https://",
                ))
            }
            Some("http") => "http",
            Some("https") if tls => "https",
            Some("https") => {
                return Err(bad(
                    "https:// needs the CA bundle the engine's certificate chains to",
                ))
            }
            _ => return Err(bad("the engine is reached over http:// or https://")),
        };
        if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
            return Err(bad("give only SCHEME://HOST:PORT"));
        }
        let authority = uri.authority().ok_or_else(|| bad("no host"))?.clone();
        let host = authority.as_str().to_owned();
        let uri = Uri::builder()
            .scheme(scheme)
            .authority(authority)
            .path_and_query("/")
            .build()
            .map_err(|e| bad(&e.to_string()))?;
        Ok(Self { uri, host })
    }
}

/// A TLS client configuration trusting only the CAs in the PEM file `path` (none: it is
/// never used, since an https:// endpoint is refused without a bundle).
fn tls_config(path: Option<&std::path::Path>) -> Result<rustls::ClientConfig, TransportError> {
    let bad = |why: String| TransportError::CaBundle {
        path: path.map(std::path::Path::to_owned).unwrap_or_default(),
        why,
    };
    let mut roots = rustls::RootCertStore::empty();
    if let Some(path) = path {
        let pem = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
        for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
            let cert = cert.map_err(|e| bad(e.to_string()))?;
            roots.add(cert).map_err(|e| bad(e.to_string()))?;
        }
        if roots.is_empty() {
            return Err(bad("it holds no PEM certificate".to_owned()));
        }
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// Temporary credentials from the engine. No `Debug`: it holds a secret.
struct Session {
    access_key_id: String,
    secret_access_key: Zeroizing<String>,
    session_token: Zeroizing<String>,
    expiration: Millis,
    /// When to exchange the token again.
    refresh_at: Millis,
}

type HttpClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

/// The engine over HTTP. Cheap to share; one connection pool for the calls, and one
/// connection of its own for the long poll of changed keys.
pub struct KmsClient {
    http: HttpClient,
    /// The long poll's: it keeps one idle connection, so successive polls reach the same
    /// engine replica (behind a Service, a connection stays with the pod it reached), whose
    /// positions mean something only to itself.
    feed_http: HttpClient,
    /// Whether https:// endpoints may be used (a CA bundle was given).
    tls: bool,
    endpoint: RwLock<Option<Endpoint>>,
    endpoint_fixed: bool,
    token_file: PathBuf,
    region: String,
    role_arn: String,
    session_name: String,
    session: tokio::sync::Mutex<SessionSlot>,
}

/// The session in hand, and the last failure to get one.
#[derive(Default)]
struct SessionSlot {
    current: Option<Arc<Session>>,
    failed: Option<(std::time::Instant, String)>,
}

/// After a failed exchange, calls fail at once for this long instead of trying again each.
pub const EXCHANGE_RETRY_AFTER: Duration = Duration::from_secs(2);

impl KmsClient {
    pub fn new(settings: ClientSettings) -> Result<Self, TransportError> {
        let tls = settings.ca_bundle.is_some();
        let endpoint = settings
            .endpoint
            .as_deref()
            .map(|url| Endpoint::parse(url, tls))
            .transpose()?;
        let tls_config = Arc::new(tls_config(settings.ca_bundle.as_deref())?);
        let resolver: Arc<dyn hyper_rustls::ResolveServerName + Send + Sync> =
            match &settings.server_name {
                Some(name) => Arc::new(hyper_rustls::FixedServerNameResolver::new(
                    rustls::pki_types::ServerName::try_from(name.clone()).map_err(|e| {
                        TransportError::BadUrl {
                            url: name.clone(),
                            why: format!("not a server name: {e}"),
                        }
                    })?,
                )),
                None => Arc::new(hyper_rustls::DefaultServerNameResolver::default()),
            };
        let http_client = |max_idle: usize| {
            let mut connector = HttpConnector::new();
            connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
            connector.set_nodelay(true);
            // Both schemes: which one is the endpoint's to say.
            connector.enforce_http(false);
            let connector = hyper_rustls::HttpsConnector::new(
                connector,
                tls_config.clone(),
                false,
                resolver.clone(),
            );
            Client::builder(TokioExecutor::new())
                .pool_idle_timeout(POOL_IDLE_TIMEOUT)
                .pool_max_idle_per_host(max_idle)
                .pool_timer(TokioTimer::new())
                .timer(TokioTimer::new())
                .build(connector)
        };
        Ok(Self {
            http: http_client(POOL_MAX_IDLE),
            feed_http: http_client(1),
            tls,
            endpoint: RwLock::new(endpoint),
            endpoint_fixed: settings.endpoint_fixed,
            token_file: settings.token_file,
            role_arn: settings.role_arn,
            session_name: settings.session_name,
            region: settings.region,
            session: tokio::sync::Mutex::new(SessionSlot::default()),
        })
    }

    /// Point at `url` (`http[s]://HOST:PORT`), unless `--engine-url` fixed the address.
    pub fn set_endpoint(&self, url: &str) -> Result<(), TransportError> {
        if self.endpoint_fixed {
            return Ok(());
        }
        let endpoint = Endpoint::parse(url, self.tls)?;
        let mut current = self.endpoint.write();
        if current.as_ref().map(|e| &e.uri) != Some(&endpoint.uri) {
            tracing::info!(engine = %endpoint.uri, "engine address");
        }
        *current = Some(endpoint);
        Ok(())
    }

    /// The address calls go to, if known.
    pub fn endpoint(&self) -> Option<String> {
        self.endpoint.read().as_ref().map(|e| e.uri.to_string())
    }

    /// Call `op` with `request`; the answer decoded as `Resp`. An expired session is renewed
    /// and the call made again; a connection failure is tried once more if the request never
    /// left, or if `op` does the same when done twice.
    pub async fn call<Req, Resp>(&self, op: Operation, request: &Req) -> Result<Resp, CallError>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
    {
        let target = format!("{TARGET_PREFIX}{op}");
        self.call_target(&self.http, &target, idempotent(op), request)
            .await
    }

    /// kubekms's long poll for changed keys (`kubekms_proto::changes`), on its own connection.
    pub async fn list_key_changes(
        &self,
        request: &ListKeyChangesRequest,
    ) -> Result<ListKeyChangesResponse, CallError> {
        self.call_target(&self.feed_http, LIST_KEY_CHANGES_TARGET, true, request)
            .await
    }

    /// [`KmsClient::call`] for the whole `X-Amz-Target` `target`, over `http`;
    /// `idempotent`: whether the request may be sent again when it may have arrived.
    async fn call_target<Req, Resp>(
        &self,
        http: &HttpClient,
        target: &str,
        idempotent: bool,
        request: &Req,
    ) -> Result<Resp, CallError>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
    {
        let body = Bytes::from(
            serde_json::to_vec(request).map_err(|e| TransportError::Request(e.to_string()))?,
        );
        let mut retried_session = false;
        let mut retried_transport = false;
        loop {
            let session = self.session().await?;
            match self.send(http, target, body.clone(), &session).await {
                Ok(answer) => return answer.decode(),
                Err(CallError::Refused(r)) if r.is("ExpiredTokenException") && !retried_session => {
                    retried_session = true;
                    self.forget(&session).await;
                }
                Err(CallError::Unreachable(e))
                    if !retried_transport && e.is_transport() && (e.never_sent() || idempotent) =>
                {
                    retried_transport = true;
                    tracing::debug!(%target, error = %e, "engine call failed; trying once more");
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// One signed request; a refusal comes back as `Refused`.
    async fn send(
        &self,
        http: &HttpClient,
        target: &str,
        body: Bytes,
        session: &Session,
    ) -> Result<Answer, CallError> {
        let endpoint = self
            .endpoint
            .read()
            .clone()
            .ok_or(TransportError::NoEndpoint)?;
        let headers = sign_json_request(
            &session.access_key_id,
            &session.secret_access_key,
            Some(&session.session_token),
            &self.region,
            &endpoint.host,
            target,
            &body,
            now_millis(),
        );
        let mut builder = Request::builder()
            .method(Method::POST)
            .uri(endpoint.uri.clone());
        for (name, value) in &headers {
            builder = builder.header(name.as_str(), value.as_str());
        }
        let request = builder
            .body(Full::new(body))
            .map_err(|e| TransportError::Request(e.to_string()))?;
        let answer = self.exchange_http(http, &endpoint, request).await?;
        if answer.status == StatusCode::OK {
            return Ok(answer);
        }
        Err(answer.refusal())
    }

    /// Send `request` and read the whole answer, within [`REQUEST_TIMEOUT`].
    async fn exchange_http(
        &self,
        http: &HttpClient,
        endpoint: &Endpoint,
        request: Request<Full<Bytes>>,
    ) -> Result<Answer, TransportError> {
        let work = async {
            let response =
                http.request(request)
                    .await
                    .map_err(|source| TransportError::Transport {
                        endpoint: endpoint.uri.to_string(),
                        source,
                    })?;
            let status = response.status();
            let body = Limited::new(response.into_body(), MAX_RESPONSE_BYTES)
                .collect()
                .await
                .map_err(|e| TransportError::Body(e.to_string()))?
                .to_bytes();
            Ok(Answer { status, body })
        };
        tokio::time::timeout(REQUEST_TIMEOUT, work)
            .await
            .map_err(|_| TransportError::Timeout)?
    }

    /// The current session, exchanged for a fresh one when due.
    async fn session(&self) -> Result<Arc<Session>, TransportError> {
        let mut slot = self.session.lock().await;
        let now = now_millis();
        if let Some(session) = slot.current.as_ref().filter(|s| now < s.refresh_at) {
            return Ok(session.clone());
        }
        if let Some((at, why)) = &slot.failed {
            if at.elapsed() < EXCHANGE_RETRY_AFTER {
                return match slot.current.as_ref().filter(|s| now < s.expiration) {
                    Some(still_valid) => Ok(still_valid.clone()),
                    None => Err(TransportError::RecentExchangeFailure(why.clone())),
                };
            }
        }
        match self.assume_role().await {
            Ok(fresh) => {
                let fresh = Arc::new(fresh);
                tracing::info!(
                    access_key_id = %fresh.access_key_id,
                    expires_in_seconds = (fresh.expiration - now) / 1000,
                    session = %self.session_name,
                    "new engine session"
                );
                slot.current = Some(fresh.clone());
                slot.failed = None;
                Ok(fresh)
            }
            Err(e) => {
                slot.failed = Some((std::time::Instant::now(), e.to_string()));
                // A refresh that failed (a TokenReview hiccup) leaves the current session in
                // use while it has time left; the next call past the retry pause tries again.
                match slot.current.as_ref().filter(|s| now < s.expiration) {
                    Some(still_valid) => {
                        tracing::warn!(error = %e, "refreshing the engine session failed; using the current one");
                        Ok(still_valid.clone())
                    }
                    None => Err(e),
                }
            }
        }
    }

    /// Drop the session in hand: the next call exchanges the token file as it is then.
    pub async fn forget_session(&self) {
        self.session.lock().await.current = None;
    }

    /// Drop `session` (the engine said it expired), unless another call replaced it already.
    async fn forget(&self, session: &Arc<Session>) {
        let mut slot = self.session.lock().await;
        if slot
            .current
            .as_ref()
            .is_some_and(|s| Arc::ptr_eq(s, session))
        {
            slot.current = None;
        }
    }

    /// STS AssumeRoleWithWebIdentity at the engine with the token file as it is now (kubelet
    /// rotates it, so it is read for every exchange).
    async fn assume_role(&self) -> Result<Session, TransportError> {
        let endpoint = self
            .endpoint
            .read()
            .clone()
            .ok_or(TransportError::NoEndpoint)?;
        let token = Zeroizing::new(tokio::fs::read_to_string(&self.token_file).await.map_err(
            |source| TransportError::Token {
                path: self.token_file.clone(),
                source,
            },
        )?);
        let token = token.trim();
        if token.is_empty() {
            return Err(TransportError::EmptyToken {
                path: self.token_file.clone(),
            });
        }
        let form = Zeroizing::new(
            form_urlencoded::Serializer::new(String::new())
                .append_pair("Action", "AssumeRoleWithWebIdentity")
                .append_pair("Version", "2011-06-15")
                .append_pair("RoleArn", &self.role_arn)
                .append_pair("RoleSessionName", &self.session_name)
                .append_pair("DurationSeconds", &SESSION_SECONDS.to_string())
                .append_pair("WebIdentityToken", token)
                .finish(),
        );
        let request = Request::builder()
            .method(Method::POST)
            .uri(endpoint.uri.clone())
            .header(
                HOST,
                HeaderValue::from_str(&endpoint.host)
                    .map_err(|e| TransportError::Request(e.to_string()))?,
            )
            .header(CONTENT_TYPE, FORM_CONTENT_TYPE)
            .body(Full::new(Bytes::from(form.as_bytes().to_vec())))
            .map_err(|e| TransportError::Request(e.to_string()))?;
        let answer = self.exchange_http(&self.http, &endpoint, request).await?;
        let issued = now_millis();
        let text = std::str::from_utf8(&answer.body).map_err(|_| TransportError::Undecodable {
            status: answer.status.as_u16(),
            expected: "XML",
            detail: "not UTF-8".into(),
        })?;
        if answer.status != StatusCode::OK {
            // Only an STS error document is the engine's refusal; anything else (a proxy's
            // page, another server at that address) means the engine was not reached.
            return Err(match sts_error(text) {
                Some(source) => TransportError::Exchange { source },
                None => TransportError::Undecodable {
                    status: answer.status.as_u16(),
                    expected: "an STS answer",
                    detail: text.chars().take(200).collect(),
                },
            });
        }
        parse_assumed(text, issued).map_err(|detail| TransportError::Undecodable {
            status: answer.status.as_u16(),
            expected: "an AssumeRoleWithWebIdentityResponse",
            detail,
        })
    }
}

/// Whether doing `op` twice leaves the same result as doing it once, so a request that may or
/// may not have arrived can be sent again. Creating keys or aliases, rotating, scheduling or
/// cancelling a deletion, importing and deleting an alias are not: their second run fails or
/// acts again, and the reconcile that asked sorts that out itself.
fn idempotent(op: Operation) -> bool {
    use Operation::*;
    matches!(
        op,
        DescribeKey
            | ListKeys
            | ListAliases
            | ListResourceTags
            | ListKeyRotations
            | ListKeyPolicies
            | GetKeyPolicy
            | GetKeyRotationStatus
            | GetParametersForImport
            | TagResource
            | UntagResource
            | UpdateKeyDescription
            | EnableKey
            | DisableKey
            | EnableKeyRotation
            | DisableKeyRotation
            | PutKeyPolicy
            | UpdateAlias
    )
}

/// An HTTP answer, read whole.
struct Answer {
    status: StatusCode,
    body: Bytes,
}

/// The AWS JSON error body.
#[derive(Deserialize)]
struct ErrorBody {
    #[serde(rename = "__type")]
    type_: String,
    #[serde(default, alias = "Message")]
    message: String,
}

impl Answer {
    fn decode<T: DeserializeOwned>(self) -> Result<T, CallError> {
        serde_json::from_slice(&self.body).map_err(|e| {
            CallError::Unreachable(TransportError::Undecodable {
                status: self.status.as_u16(),
                expected: "the operation's answer",
                detail: e.to_string(),
            })
        })
    }

    /// A non-200 answer: the engine's refusal, or (a proxy's page, say) a failure to reach it.
    fn refusal(self) -> CallError {
        match serde_json::from_slice::<ErrorBody>(&self.body) {
            Ok(e) => CallError::Refused(Refusal {
                aws_type: e.type_,
                message: e.message,
            }),
            Err(_) => CallError::Unreachable(TransportError::Undecodable {
                status: self.status.as_u16(),
                expected: "an AWS JSON error",
                detail: String::from_utf8_lossy(&self.body[..self.body.len().min(200)])
                    .into_owned(),
            }),
        }
    }
}

/// The credentials of an `AssumeRoleWithWebIdentityResponse`, renewed at `refresh_at`.
fn parse_assumed(xml: &str, issued: Millis) -> Result<Session, String> {
    let field = |name: &str| xml_text(xml, name).ok_or_else(|| format!("it has no <{name}>"));
    let expiration_text = field("Expiration")?;
    let expiration = time::OffsetDateTime::parse(
        &expiration_text,
        &time::format_description::well_known::Rfc3339,
    )
    .map_err(|_| format!("<Expiration> {expiration_text:?} is not an RFC 3339 time"))?;
    let expiration = (expiration.unix_timestamp_nanos() / 1_000_000) as Millis;
    let lifetime = expiration.saturating_sub(issued).max(0);
    Ok(Session {
        access_key_id: field("AccessKeyId")?,
        secret_access_key: Zeroizing::new(field("SecretAccessKey")?),
        session_token: Zeroizing::new(field("SessionToken")?),
        expiration,
        refresh_at: expiration - REFRESH_BEFORE_MILLIS.min(lifetime / 2),
    })
}

/// The engine's refusal of an exchange; `None` if `xml` is no STS error document.
fn sts_error(xml: &str) -> Option<Refusal> {
    let code = xml_text(xml, "Code").filter(|c| !c.is_empty())?;
    Some(Refusal {
        aws_type: code,
        message: xml_text(xml, "Message").unwrap_or_default(),
    })
}

/// Milliseconds since the Unix epoch, now.
fn now_millis() -> Millis {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| {
            Millis::try_from(d.as_millis()).unwrap_or(Millis::MAX)
        })
}

/// The text of the first `<name>` element, unescaped. The engine's STS answers are flat, fixed
/// documents without attributes on these elements or CDATA, so this is all the XML they need.
fn xml_text(xml: &str, name: &str) -> Option<String> {
    let open = format!("<{name}>");
    let close = format!("</{name}>");
    let start = xml.find(&open)? + open.len();
    let len = xml[start..].find(&close)?;
    Some(unescape(&xml[start..start + len]))
}

fn unescape(text: &str) -> String {
    if !text.contains('&') {
        return text.to_owned();
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('&') {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        let entity = [
            ("&lt;", '<'),
            ("&gt;", '>'),
            ("&amp;", '&'),
            ("&quot;", '"'),
            ("&apos;", '\''),
        ]
        .into_iter()
        .find(|(e, _)| rest.starts_with(e));
        match entity {
            Some((e, c)) => {
                out.push(c);
                rest = &rest[e.len()..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests;
