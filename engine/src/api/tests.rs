//! In-process tests of the HTTP layer (the router called with `oneshot`), and a few end-to-end
//! ones over a socket with the real AWS SDK.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::response::Response;
use kubekms_proto::tls::testing::{der_of, self_signed};
use tower::ServiceExt;
use zeroize::Zeroizing;

use super::*;
use crate::audit::{AuditKey, AuditLog, DEFAULT_MAX_BYTES};
use crate::clock::{Clock, SystemClock};
use crate::config::{Credential, Credentials};
use crate::crypto::RootKey;
use crate::service::Kms;
use crate::sigv4::{sign_kms_request, Verifier};
use crate::store::memory::MemoryStore;

const AKID: &str = "AKIDTESTALICE";
const SECRET: &str = "alice-secret-access-key";
const PRINCIPAL: &str = "arn:aws:iam::111122223333:root";

struct Harness {
    state: Arc<AppState>,
    clock: Arc<SystemClock>,
    cred: Credential,
    _dir: tempfile::TempDir,
    audit_path: std::path::PathBuf,
}

async fn harness() -> Harness {
    harness_with(ServerConfig {
        max_body_bytes: 64 * 1024,
        ..ServerConfig::default()
    })
    .await
}

async fn harness_with(config: ServerConfig) -> Harness {
    harness_auditing_to(config, None).await
}

/// With the audit log at `audit_path` (default: a file in the harness's directory).
async fn harness_auditing_to(
    config: ServerConfig,
    audit_path: Option<std::path::PathBuf>,
) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let clock = SystemClock::new();
    let root = RootKey::from_bytes(&RootKey::generate().unwrap()).unwrap();
    let audit_key = AuditKey::from_root(&root).unwrap();
    let kms = Kms::open(Arc::new(MemoryStore::new()), root, clock.clone())
        .await
        .unwrap();
    let cred = Credential::new(
        AKID,
        Zeroizing::new(SECRET.into()),
        "111122223333",
        Some(PRINCIPAL.into()),
    )
    .unwrap();
    let verifier = Verifier::new(Credentials::new([cred.clone()]).unwrap(), clock.clone());
    let audit_path = audit_path.unwrap_or_else(|| dir.path().join("audit.log"));
    let audit = AuditLog::to_file(&audit_path, audit_key, DEFAULT_MAX_BYTES).unwrap();
    let state = AppState::new(kms, verifier, audit, clock.clone(), config);
    Harness {
        state,
        clock,
        cred,
        _dir: dir,
        audit_path,
    }
}

impl Harness {
    fn signed_with(&self, cred: &Credential, operation: &str, body: &[u8]) -> Request<Body> {
        let headers = sign_kms_request(
            cred,
            "us-east-1",
            "localhost",
            operation,
            body,
            self.clock.now_millis(),
        );
        let mut req = Request::post("/");
        for (k, v) in headers {
            req = req.header(k, v);
        }
        req.body(Body::from(body.to_vec())).unwrap()
    }

    fn signed(&self, operation: &str, body: &[u8]) -> Request<Body> {
        self.signed_with(&self.cred, operation, body)
    }

    /// [`Harness::signed`] with the body sent in 1000-byte frames and no Content-Length.
    fn signed_chunked(&self, operation: &str, body: &[u8]) -> Request<Body> {
        let (mut parts, _) = self.signed(operation, body).into_parts();
        parts.headers.remove("content-length");
        let chunks: Vec<axum::body::Bytes> = body
            .chunks(1000)
            .map(axum::body::Bytes::copy_from_slice)
            .collect();
        Request::from_parts(parts, Body::new(Chunked(chunks.into())))
    }

    async fn call(&self, req: Request<Body>) -> (StatusCode, String, serde_json::Value) {
        let response: Response = router(self.state.clone()).oneshot(req).await.unwrap();
        let status = response.status();
        let id = response
            .headers()
            .get("x-amzn-requestid")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        let json = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
        (status, id, json)
    }

    fn audit_lines(&self) -> Vec<serde_json::Value> {
        self.state.audit.flush();
        std::fs::read_to_string(&self.audit_path)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

fn assert_error(json: &serde_json::Value, aws_type: &str) {
    assert_eq!(json["__type"], aws_type, "{json}");
    assert!(json["message"].is_string(), "{json}");
    assert_eq!(json.as_object().unwrap().len(), 2, "{json}");
}

fn is_uuid(s: &str) -> bool {
    uuid::Uuid::parse_str(s).is_ok()
}

#[tokio::test]
async fn healthz_says_ok() {
    let h = harness().await;
    let response = router(h.state.clone())
        .oneshot(Request::get("/healthz").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body = axum::body::to_bytes(response.into_body(), 100)
        .await
        .unwrap();
    assert_eq!(&body[..], b"ok");
}

#[tokio::test]
async fn unsigned_request_is_refused_with_aws_error_json_and_request_id() {
    let h = harness().await;
    let req = Request::post("/")
        .header("x-amz-target", "TrentService.ListKeys")
        .header("content-type", "application/x-amz-json-1.1")
        .body(Body::from("{}"))
        .unwrap();
    let response = router(h.state.clone()).oneshot(req).await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        response.headers()["content-type"],
        "application/x-amz-json-1.1"
    );
    let id = response.headers()["x-amzn-requestid"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(is_uuid(&id), "{id}");
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    assert_error(&json, "MissingAuthenticationTokenException");

    let lines = h.audit_lines();
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["requestId"], id.as_str());
    assert_eq!(lines[0]["operation"], "ListKeys");
    assert_eq!(lines[0]["outcome"], "failure");
    assert_eq!(lines[0]["errorCode"], "MissingAuthenticationTokenException");
    assert_eq!(lines[0]["principal"], "");
}

#[tokio::test]
async fn request_ids_differ_per_request() {
    let h = harness().await;
    let (_, a, _) = h.call(h.signed("NoSuchOp", b"{}")).await;
    let (_, b, _) = h.call(h.signed("NoSuchOp", b"{}")).await;
    assert!(is_uuid(&a) && is_uuid(&b));
    assert_ne!(a, b);
}

#[tokio::test]
async fn wrong_secret_and_unknown_key_are_refused() {
    let h = harness().await;
    let wrong =
        Credential::new(AKID, Zeroizing::new("guess".into()), "111122223333", None).unwrap();
    let (status, _, json) = h.call(h.signed_with(&wrong, "ListKeys", b"{}")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_error(&json, "InvalidSignatureException");

    let stranger = Credential::new(
        "AKIDSTRANGER",
        Zeroizing::new(SECRET.into()),
        "111122223333",
        None,
    )
    .unwrap();
    let (status, _, json) = h.call(h.signed_with(&stranger, "ListKeys", b"{}")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_error(&json, "UnrecognizedClientException");
    assert_eq!(
        json["message"],
        "The security token included in the request is invalid."
    );
}

#[tokio::test]
async fn tampered_body_is_refused() {
    let h = harness().await;
    let req = h.signed("ListKeys", br#"{"Limit":10}"#);
    let (parts, _) = req.into_parts();
    let req = Request::from_parts(parts, Body::from(r#"{"Limit":11}"#));
    let (status, _, json) = h.call(req).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_error(&json, "InvalidSignatureException");
}

#[tokio::test]
async fn expired_signature_is_refused() {
    let h = harness().await;
    let req = h.signed("ListKeys", b"{}");
    h.clock.advance(6 * 60 * 1000);
    let (status, _, json) = h.call(req).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_error(&json, "InvalidSignatureException");
    assert!(
        json["message"]
            .as_str()
            .unwrap()
            .starts_with("Signature expired"),
        "{json}"
    );
}

#[tokio::test]
async fn missing_or_unknown_target_is_unknown_operation() {
    let h = harness().await;
    let (status, _, json) = h.call(h.signed("FrobnicateKey", b"{}")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_error(&json, "UnknownOperationException");

    // A signed request without any target.
    let headers = crate::sigv4::sign_request(
        AKID,
        SECRET,
        "us-east-1",
        "kms",
        &crate::sigv4::SigningInput {
            method: "POST",
            path: "/",
            query: None,
            headers: &[("host", "localhost")],
            body: b"{}",
        },
        h.clock.now_millis(),
    );
    let mut req = Request::post("/").header("host", "localhost");
    for (k, v) in headers {
        req = req.header(k, v);
    }
    let (status, _, json) = h.call(req.body(Body::from("{}")).unwrap()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_error(&json, "UnknownOperationException");

    let lines = h.audit_lines();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["operation"], "FrobnicateKey");
    assert_eq!(lines[0]["principal"], PRINCIPAL);
    assert_eq!(lines[1]["errorCode"], "UnknownOperationException");
}

#[tokio::test]
async fn oversized_body_is_413() {
    let h = harness().await;
    let big = vec![b' '; 64 * 1024 + 1];
    let (status, _, json) = h.call(h.signed("ListKeys", &big)).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_error(&json, "ValidationException");

    // Chunked (no Content-Length): the limit holds while reading.
    let (status, _, json) = h.call(h.signed_chunked("ListKeys", &big)).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_error(&json, "ValidationException");
}

/// A body that arrives in several frames without a length.
struct Chunked(std::collections::VecDeque<axum::body::Bytes>);

impl axum::body::HttpBody for Chunked {
    type Data = axum::body::Bytes;
    type Error = std::io::Error;
    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        std::task::Poll::Ready(self.0.pop_front().map(|c| Ok(hyper::body::Frame::data(c))))
    }
}

#[tokio::test]
async fn other_paths_and_methods_are_refused() {
    let h = harness().await;
    for req in [
        Request::get("/").body(Body::empty()).unwrap(),
        Request::post("/nope").body(Body::empty()).unwrap(),
    ] {
        let (status, id, json) = h.call(req).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(is_uuid(&id));
        assert_error(&json, "UnknownOperationException");
    }
}

#[tokio::test]
async fn signed_request_reaches_the_service_and_is_audited() {
    let h = harness().await;
    let (status, id, json) = h
        .call(h.signed("CreateKey", br#"{"Description":"from the api test"}"#))
        .await;
    assert_eq!(status, StatusCode::OK, "{json}");
    let arn = json["KeyMetadata"]["Arn"].as_str().unwrap().to_owned();
    assert!(
        arn.starts_with("arn:aws:kms:us-east-1:111122223333:key/"),
        "{arn}"
    );

    let (status, _, json) = h.call(h.signed("ListKeys", b"{}")).await;
    assert_eq!(status, StatusCode::OK, "{json}");
    assert_eq!(json["Keys"][0]["KeyArn"], arn.as_str());

    let lines = h.audit_lines();
    assert_eq!(lines[0]["requestId"], id.as_str());
    assert_eq!(lines[0]["operation"], "CreateKey");
    assert_eq!(lines[0]["outcome"], "success");
    assert_eq!(lines[0]["principal"], PRINCIPAL);
    assert_eq!(lines[0]["keyArn"], arn.as_str());

    let response = router(h.state.clone())
        .oneshot(Request::get("/metrics").body(Body::empty()).unwrap())
        .await
        .unwrap();
    let text = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    let text = std::str::from_utf8(&text).unwrap();
    assert!(
        text.contains("kubekms_requests_total{operation=\"CreateKey\",outcome=\"success\"} 1\n"),
        "{text}"
    );
    assert!(
        text.contains("kubekms_requests_total{operation=\"ListKeys\",outcome=\"success\"} 1\n"),
        "{text}"
    );
}

/// Start a real server on an ephemeral port; returns its URL and the shutdown trigger.
async fn start(
    h: &Harness,
) -> (
    String,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let state = h.state.clone();
    let task = tokio::spawn(async move {
        serve(listener, state, None, async {
            let _ = rx.await;
        })
        .await
        .unwrap();
    });
    (url, tx, task)
}

#[tokio::test]
async fn aws_sdk_round_trip_over_a_socket() {
    let h = harness().await;
    let (url, stop, task) = start(&h).await;
    let creds = aws_credential_types::Credentials::from_keys(AKID, SECRET, None);
    let config = aws_sdk_kms::Config::builder()
        .behavior_version(aws_sdk_kms::config::BehaviorVersion::latest())
        .region(aws_sdk_kms::config::Region::new("eu-central-1"))
        .endpoint_url(&url)
        .credentials_provider(creds)
        .build();
    let client = aws_sdk_kms::Client::from_conf(config);
    let created = client.create_key().description("sdk").send().await.unwrap();
    let key_id = created.key_metadata().unwrap().key_id().to_owned();
    assert!(created
        .key_metadata()
        .unwrap()
        .arn()
        .unwrap()
        .contains(":eu-central-1:111122223333:"));
    let ct = client
        .encrypt()
        .key_id(&key_id)
        .plaintext(aws_sdk_kms::primitives::Blob::new(
            b"over the wire".to_vec(),
        ))
        .send()
        .await
        .unwrap();
    let pt = client
        .decrypt()
        .ciphertext_blob(ct.ciphertext_blob().unwrap().clone())
        .send()
        .await
        .unwrap();
    assert_eq!(pt.plaintext().unwrap().as_ref(), b"over the wire");

    // An SDK error carries the AWS code and our request id.
    let err = client
        .describe_key()
        .key_id("alias/does-not-exist")
        .send()
        .await
        .unwrap_err();
    let service_err = err.into_service_error();
    assert!(service_err.is_not_found_exception(), "{service_err:?}");

    let peer_ip = {
        let lines = h.audit_lines();
        lines[0]["sourceIp"].as_str().unwrap().to_owned()
    };
    assert_eq!(peer_ip, "127.0.0.1");
    // Keep-alive: the SDK's four calls shared one connection.
    let metrics = h.state.metrics.render();
    assert!(
        metrics.contains("kubekms_connections_total 1\n"),
        "{metrics}"
    );

    stop.send(()).unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(15), task)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn shutdown_closes_idle_connections_at_once() {
    let h = harness().await;
    let (url, stop, task) = start(&h).await;
    let addr = url.trim_start_matches("http://").to_owned();
    let mut idle = tokio::net::TcpStream::connect(&addr).await.unwrap();
    // Let the server take the connection before it is told to stop.
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    stop.send(()).unwrap();
    // Well within the shutdown grace (10 s), which a connection left open would wait out.
    tokio::time::timeout(std::time::Duration::from_secs(3), task)
        .await
        .expect("serve returns once its idle connection is closed")
        .unwrap();
    let mut byte = [0u8; 1];
    let read = tokio::io::AsyncReadExt::read(&mut idle, &mut byte).await;
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
}

#[tokio::test]
async fn shutdown_stops_accepting() {
    let h = harness().await;
    let (url, stop, task) = start(&h).await;
    let addr = url.trim_start_matches("http://").to_owned();
    tokio::net::TcpStream::connect(&addr).await.unwrap();
    stop.send(()).unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(15), task)
        .await
        .unwrap()
        .unwrap();
    assert!(tokio::net::TcpStream::connect(&addr).await.is_err());
}

/// A self-signed P-256 certificate for `localhost`/127.0.0.1, valid until 2126 (test only).
const TEST_CERT: &str = "\
-----BEGIN CERTIFICATE-----\n\
MIIBlzCCAT6gAwIBAgIUZbMmDKZV8WjdZiFYtWpE+MC4F6MwCgYIKoZIzj0EAwIw\n\
FDESMBAGA1UEAwwJbG9jYWxob3N0MCAXDTI2MTEyMjIyNDUwN1oYDzIxMjYxMDI5\n\
MjI0NTA3WjAUMRIwEAYDVQQDDAlsb2NhbGhvc3QwWTATBgcqhkjOPQIBBggqhkjO\n\
PQMBBwNCAARxw3auZayrI2+i+NuN5Z0BcKXQ7KdKZtaBPBM1b9U1lH7dRTqBTKOE\n\
XGi9AFFiGB7ndlbQWLE0BbyBjP0LYePDo2wwajAdBgNVHQ4EFgQU0RTTmPysFUaL\n\
R8rkLCWQdk2/SGswHwYDVR0jBBgwFoAU0RTTmPysFUaLR8rkLCWQdk2/SGswGgYD\n\
VR0RBBMwEYIJbG9jYWxob3N0hwR/AAABMAwGA1UdEwEB/wQCMAAwCgYIKoZIzj0E\n\
AwIDRwAwRAIgdqVBWzMhDEedxvZuSRfhsGmjxGrtFBpE93fnOKsEuooCIHxJiOKD\n\
1XcrqZXP5RLhTKaJw3dKmlndAtYuflvOc75T\n\
-----END CERTIFICATE-----\n\
";
const TEST_KEY: &str = "\
-----BEGIN PRIVATE KEY-----\n\
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgGzFibuhO7uRJkLNh\n\
ydlU40+BzavUJPcz9A887L0memehRANCAARxw3auZayrI2+i+NuN5Z0BcKXQ7KdK\n\
ZtaBPBM1b9U1lH7dRTqBTKOEXGi9AFFiGB7ndlbQWLE0BbyBjP0LYePD\n\
-----END PRIVATE KEY-----\n\
";

#[tokio::test]
async fn serves_https_with_a_pem_certificate() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let h = harness().await;
    let tls = tls::server_config_from_pem(TEST_CERT.as_bytes(), TEST_KEY.as_bytes()).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(serve(listener, h.state.clone(), Some(tls), async {
        let _ = rx.await;
    }));

    let connector = tls_client(&[TEST_CERT.as_bytes()]);
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut stream = connector.connect(name, tcp).await.unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
    assert!(response.ends_with("\r\n\r\nok"), "{response}");

    // Plain HTTP to the TLS port gets no HTTP answer.
    let mut plain = tokio::net::TcpStream::connect(addr).await.unwrap();
    plain
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let _ = plain.read_to_end(&mut buf).await;
    assert!(!buf.starts_with(b"HTTP/1.1 200"));

    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
}

/// A self-signed certificate for `localhost` and its key as PEM bytes, and the certificate's
/// DER.
fn openssl_pair(dir: &std::path::Path, name: &str) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let (cert, key) = self_signed(dir, name, Some(&["DNS:localhost"]));
    let cert_pem = std::fs::read(cert).unwrap();
    let der = der_of(&cert_pem);
    (cert_pem, std::fs::read(key).unwrap(), der)
}

/// A TLS client trusting only the certificates in `pems`.
fn tls_client(pems: &[&[u8]]) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for pem in pems {
        for cert in rustls_pemfile::certs(&mut &pem[..]) {
            roots.add(cert.unwrap()).unwrap();
        }
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(client))
}

#[tokio::test]
async fn serves_a_renewed_certificate_without_a_restart() {
    let h = harness().await;
    let dir = tempfile::tempdir().unwrap();
    let (cert_a, key_a, der_a) = openssl_pair(dir.path(), "a");
    let (cert_b, key_b, der_b) = openssl_pair(dir.path(), "b");
    let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    std::fs::write(&cert, &cert_a).unwrap();
    std::fs::write(&key, &key_a).unwrap();
    let period = std::time::Duration::from_millis(50);
    let tls = tls::load_server_config_every(&cert, &key, period).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(serve(listener, h.state.clone(), Some(tls), async {
        let _ = rx.await;
    }));

    // A client trusting both certificates, telling which one the server presented.
    let connector = tls_client(&[&cert_a, &cert_b]);
    let presented = || async {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let stream = connector.connect(name, tcp).await.unwrap();
        let (_, session) = stream.get_ref();
        session.peer_certificates().unwrap()[0].as_ref().to_vec()
    };
    assert_eq!(presented().await, der_a);

    // Renewed the way a Secret volume is: new files in place, the key with its certificate.
    std::fs::write(&key, &key_b).unwrap();
    std::fs::write(&cert, &cert_b).unwrap();
    let mut served = Vec::new();
    for _ in 0..100 {
        tokio::time::sleep(period).await;
        served = presented().await;
        if served == der_b {
            break;
        }
    }
    assert_eq!(served, der_b, "the renewed certificate is served");

    // Broken files leave the served certificate in place.
    std::fs::write(&cert, b"not a certificate").unwrap();
    tokio::time::sleep(period * 4).await;
    assert_eq!(presented().await, der_b);

    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_body_of_exactly_the_limit_is_accepted_in_several_frames() {
    let h = harness().await;
    // Valid JSON padded with spaces to exactly the limit.
    let mut body = b"{}".to_vec();
    body.resize(64 * 1024, b' ');
    let (status, _, json) = h.call(h.signed_chunked("ListKeys", &body)).await;
    assert_eq!(status, StatusCode::OK, "{json}");
}

/// A body whose bytes never come.
struct Endless;

impl axum::body::HttpBody for Endless {
    type Data = axum::body::Bytes;
    type Error = std::io::Error;
    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        std::task::Poll::Pending
    }
}

#[tokio::test]
async fn a_request_that_cannot_authenticate_is_answered_before_its_body() {
    let h = harness().await;
    let unsigned = Request::post("/")
        .header("x-amz-target", "TrentService.ListKeys")
        .header("content-length", "60000")
        .body(Body::new(Endless))
        .unwrap();
    let signed = h.signed("ListKeys", b"{}");
    let (mut unknown_key, _) = signed.into_parts();
    let auth = unknown_key.headers["authorization"]
        .to_str()
        .unwrap()
        .replace(AKID, "AKIDNOBODY");
    unknown_key
        .headers
        .insert("authorization", auth.parse().unwrap());
    for (req, code) in [
        (unsigned, "MissingAuthenticationTokenException"),
        (
            Request::from_parts(unknown_key, Body::new(Endless)),
            "UnrecognizedClientException",
        ),
    ] {
        let (status, _, json) =
            tokio::time::timeout(std::time::Duration::from_secs(5), h.call(req))
                .await
                .expect("answered without waiting for the body");
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_error(&json, code);
    }
}

#[tokio::test]
async fn a_body_that_does_not_arrive_in_time_is_408() {
    let h = harness_with(ServerConfig {
        body_read_timeout: std::time::Duration::from_millis(200),
        ..ServerConfig::default()
    })
    .await;
    let (parts, _) = h.signed("ListKeys", b"{}").into_parts();
    let (status, _, json) = h.call(Request::from_parts(parts, Body::new(Endless))).await;
    assert_eq!(status, StatusCode::REQUEST_TIMEOUT);
    assert_error(&json, "RequestTimeoutException");
    // Nothing stays held.
    assert_eq!(
        h.state.body_budget.available_permits(),
        h.state.config.max_buffered_body_bytes
    );
}

async fn connect(url: &str) -> tokio::net::TcpStream {
    tokio::net::TcpStream::connect(url.trim_start_matches("http://"))
        .await
        .unwrap()
}

/// Write a signed request head for a body of `declared` bytes and the first `sent` of them.
async fn slow_request(
    url: &str,
    h: &Harness,
    declared: usize,
    sent: usize,
) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let body = vec![b' '; declared];
    let headers = sign_kms_request(
        &h.cred,
        "us-east-1",
        "localhost",
        "ListKeys",
        &body,
        h.clock.now_millis(),
    );
    let mut head = String::from("POST / HTTP/1.1\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str(&format!("content-length: {declared}\r\n\r\n"));
    let mut stream = connect(url).await;
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&body[..sent]).await.unwrap();
    stream
}

/// Everything the server sends until it closes the connection (within `limit`).
async fn read_to_close(stream: &mut tokio::net::TcpStream, limit: std::time::Duration) -> String {
    use tokio::io::AsyncReadExt;
    let mut out = Vec::new();
    tokio::time::timeout(limit, stream.read_to_end(&mut out))
        .await
        .expect("the server closed the connection")
        .unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

/// A client may close its sending side once its request is out (half-close) and still read
/// the answer: the server does not take the end of its input for a client gone.
#[tokio::test]
async fn a_client_that_closes_its_sending_side_gets_its_answer() {
    use tokio::io::AsyncWriteExt;
    let h = harness().await;
    let (url, _stop, _task) = start(&h).await;
    let body = b"{}";
    let headers = sign_kms_request(
        &h.cred,
        "us-east-1",
        "localhost",
        "ListKeys",
        body,
        h.clock.now_millis(),
    );
    let mut request = String::from("POST / HTTP/1.1\r\n");
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str("content-length: 2\r\n\r\n{}");
    let mut stream = connect(&url).await;
    stream.write_all(request.as_bytes()).await.unwrap();
    stream.shutdown().await.unwrap();
    let answer = read_to_close(&mut stream, std::time::Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
    assert!(answer.contains("\"Keys\":[]"), "{answer}");
}

#[tokio::test]
async fn a_head_trickled_a_byte_at_a_time_is_cut_at_its_deadline() {
    use tokio::io::AsyncWriteExt;
    let h = harness_with(ServerConfig {
        header_read_timeout: std::time::Duration::from_millis(400),
        ..ServerConfig::default()
    })
    .await;
    let (url, stop, task) = start(&h).await;
    let stream = connect(&url).await;
    let (mut read, mut write) = stream.into_split();
    // Each byte comes well within the idle timeout (60 s); the head never completes.
    let trickle = tokio::spawn(async move {
        write
            .write_all(b"POST / HTTP/1.1\r\nx-slow: ")
            .await
            .unwrap();
        for _ in 0..100 {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            if write.write_all(b"a").await.is_err() {
                return;
            }
        }
    });
    let started = std::time::Instant::now();
    let mut answer = Vec::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(5),
        tokio::io::AsyncReadExt::read_to_end(&mut read, &mut answer),
    )
    .await
    .expect("the server closed the connection")
    .ok();
    assert!(
        started.elapsed() < std::time::Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    trickle.abort();
    stop.send(()).unwrap();
    task.await.unwrap();
}

#[tokio::test]
async fn slow_bodies_are_cut_and_their_memory_is_bounded() {
    let budget = 2_000;
    let h = harness_with(ServerConfig {
        body_read_timeout: std::time::Duration::from_millis(700),
        max_buffered_body_bytes: budget,
        ..ServerConfig::default()
    })
    .await;
    let (url, stop, task) = start(&h).await;
    // Five clients each send 900 bytes of a 1,000-byte body and stall: the budget holds two of
    // them; the others wait for it, and all are cut at the timeout.
    let mut streams = Vec::new();
    for _ in 0..5 {
        streams.push(slow_request(&url, &h, 1_000, 900).await);
    }
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let held = budget - h.state.body_budget.available_permits();
    assert!(held <= budget, "{held} bytes held");
    assert!(
        held < 5 * 900,
        "every stalled body was buffered: {held} bytes"
    );
    for stream in &mut streams {
        let answer = read_to_close(stream, std::time::Duration::from_secs(5)).await;
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
        assert!(answer.contains("RequestTimeoutException"), "{answer}");
    }
    assert_eq!(h.state.body_budget.available_permits(), budget);
    stop.send(()).unwrap();
    task.await.unwrap();
}

#[tokio::test]
async fn connections_beyond_the_cap_wait_for_a_free_place() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let h = harness_with(ServerConfig {
        max_connections: 2,
        ..ServerConfig::default()
    })
    .await;
    let (url, stop, task) = start(&h).await;
    let addr = url.trim_start_matches("http://").to_owned();
    let first = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let _second = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let mut third = tokio::net::TcpStream::connect(&addr).await.unwrap();
    third
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 256];
    let waited =
        tokio::time::timeout(std::time::Duration::from_millis(500), third.read(&mut buf)).await;
    assert!(
        waited.is_err(),
        "a third connection was served at a cap of two"
    );
    drop(first);
    let n = tokio::time::timeout(std::time::Duration::from_secs(5), third.read(&mut buf))
        .await
        .expect("served once a place was free")
        .unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    stop.send(()).unwrap();
    task.await.unwrap();
}

#[tokio::test]
async fn an_unknown_target_is_logged_and_echoed_only_in_part() {
    let h = harness().await;
    let target = "X".repeat(300_000);
    let (status, _, json) = h.call(h.signed(&target, b"{}")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_error(&json, "UnknownOperationException");
    assert!(
        json.to_string().len() < 1_000,
        "{} bytes",
        json.to_string().len()
    );
    let unsigned = Request::post("/")
        .header(
            "x-amz-target",
            format!("TrentService.{}", "x y:z/\"".repeat(10_000)),
        )
        .body(Body::from("{}"))
        .unwrap();
    let (status, _, _) = h.call(unsigned).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let lines = h.audit_lines();
    assert_eq!(lines.len(), 2);
    for line in &lines {
        let op = line["operation"].as_str().unwrap();
        assert!(op.len() <= 80, "{} characters logged", op.len());
        assert!(op.chars().all(|c| c.is_ascii_graphic()), "{op:?}");
    }
    assert!(lines[0]["operation"].as_str().unwrap().starts_with("XXXX"));
}

#[tokio::test]
async fn a_client_that_stops_reading_its_answers_is_cut() {
    use tokio::io::AsyncWriteExt;
    let h = harness_with(ServerConfig {
        write_timeout: std::time::Duration::from_millis(300),
        ..ServerConfig::default()
    })
    .await;
    let (url, stop, task) = start(&h).await;
    let mut stream = connect(&url).await;
    // Pipelined requests whose answers are never read: the server's writes stall once the
    // socket buffers are full.
    let request = b"GET /metrics HTTP/1.1\r\nhost: x\r\n\r\n".repeat(64);
    let writer = tokio::spawn(async move {
        for _ in 0..2_000 {
            if stream.write_all(&request).await.is_err() {
                return true;
            }
        }
        false
    });
    let gauge = |name: &str| {
        h.state
            .metrics
            .render()
            .lines()
            .find_map(|l| l.strip_prefix(name).map(str::to_owned))
            .unwrap_or_default()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !(gauge("kubekms_connections_total ") == "1" && gauge("kubekms_connections_open ") == "0")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the stalled connection is still open"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), writer).await;
    stop.send(()).unwrap();
    task.await.unwrap();
}

#[tokio::test]
async fn idle_connections_and_extra_ones_from_one_address_are_closed() {
    let h = harness_with(ServerConfig {
        idle_timeout: std::time::Duration::from_millis(300),
        max_connections_per_ip: 2,
        ..ServerConfig::default()
    })
    .await;
    let (url, stop, task) = start(&h).await;
    let addr = url.trim_start_matches("http://").to_owned();
    let mut first = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let _second = tokio::net::TcpStream::connect(&addr).await.unwrap();
    // A third from the same address is closed without an answer.
    let mut third = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let answer = read_to_close(&mut third, std::time::Duration::from_secs(5)).await;
    assert_eq!(answer, "");
    // An idle one is closed after the idle timeout.
    let started = std::time::Instant::now();
    read_to_close(&mut first, std::time::Duration::from_secs(5)).await;
    assert!(started.elapsed() >= std::time::Duration::from_millis(200));
    stop.send(()).unwrap();
    task.await.unwrap();
}

/// Audit or nothing: with the audit log on a full disk, no result is given out, and once the
/// log is known to be unwritable, operations are refused before they act.
#[tokio::test]
async fn an_unwritable_audit_log_fails_requests_and_refuses_them_before_they_act() {
    let h = harness_auditing_to(
        ServerConfig::default(),
        Some("/dev/full".into()), // every write fails with ENOSPC
    )
    .await;
    let key_count = || async {
        let caller = crate::service::Caller {
            scope: crate::record::Scope::new("111122223333", "us-east-1"),
            principal: crate::service::Principal::new(PRINCIPAL),
            request_id: "test".into(),
        };
        let answer = json::dispatch(
            &h.state.kms,
            &caller,
            kubekms_proto::Operation::ListKeys,
            b"{}",
        )
        .await;
        let listed: serde_json::Value = serde_json::from_slice(&answer.result.unwrap()).unwrap();
        listed["Keys"].as_array().unwrap().len()
    };

    // Not yet known broken: the key is created (the window fail-closed cannot close), but its
    // result is withheld because its line could not be written.
    let (status, _, json) = h.call(h.signed("CreateKey", b"{}")).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{json}");
    assert_error(&json, "KMSInternalException");
    assert_eq!(json["message"], "the audit log cannot be written");
    assert_eq!(key_count().await, 1);

    // Now known broken: refused before acting.
    for _ in 0..3 {
        let (status, _, json) = h.call(h.signed("CreateKey", b"{}")).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{json}");
        assert_eq!(json["message"], "the audit log cannot be written");
    }
    assert_eq!(key_count().await, 1, "a refused CreateKey created a key");
}

#[tokio::test]
async fn changed_keys_are_answered_to_a_long_poll_signed_like_any_request() {
    use kubekms_proto::changes::LIST_KEY_CHANGES_TARGET;
    let h = harness().await;
    let poll = |body: String| {
        let headers = kubekms_proto::sigv4::sign_json_request(
            AKID,
            SECRET,
            None,
            "us-east-1",
            "localhost",
            LIST_KEY_CHANGES_TARGET,
            body.as_bytes(),
            h.clock.now_millis(),
        );
        let mut req = Request::post("/");
        for (k, v) in headers {
            req = req.header(k, v);
        }
        req.body(Body::from(body)).unwrap()
    };
    let (_, _, created) = h.call(h.signed("CreateKey", b"{}")).await;
    let key_id = created["KeyMetadata"]["KeyId"].as_str().unwrap().to_owned();

    let (status, _, first) = h.call(poll("{}".into())).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    assert_eq!(first["Complete"], false, "no position: start from here");
    let position = first["Position"].as_str().unwrap().to_owned();

    // A poll that waits, answered by a change made while it waits.
    let waiting = {
        let state = h.state.clone();
        let req = poll(serde_json::json!({ "Position": position, "WaitSeconds": 20 }).to_string());
        tokio::spawn(async move { router(state).oneshot(req).await.unwrap() })
    };
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let disable = format!(r#"{{"KeyId":"{key_id}"}}"#);
    let (status, _, _) = h.call(h.signed("DisableKey", disable.as_bytes())).await;
    assert_eq!(status, StatusCode::OK);
    let response = tokio::time::timeout(std::time::Duration::from_secs(5), waiting)
        .await
        .expect("answered at the change, not after 20 s")
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    let page: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(page["Complete"], true, "{page}");
    // Revision 2: created, then disabled.
    let changed = serde_json::json!([{ "KeyId": key_id, "Revision": 2 }]);
    assert_eq!(page["Changes"], changed, "{page}");

    let (status, _, refused) = h.call(poll(r#"{"WaitSeconds":21}"#.into())).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_error(&refused, "ValidationException");
    let operations: Vec<String> = h
        .audit_lines()
        .iter()
        .map(|l| l["operation"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert!(
        operations.iter().filter(|o| *o == "ListKeyChanges").count() == 3,
        "{operations:?}"
    );
}

/// hyper and the server move a request's future (a copy of its whole size) several times per
/// request; the operations whose futures are large (those that write a key's record, STS, the
/// long poll) are boxed so that it stays small. The limit catches a large future added to the
/// request path unboxed (with rustc 1.95, 4,040 bytes before the boxing, 2,520 after).
#[tokio::test]
async fn the_future_of_a_kms_request_stays_small() {
    let h = harness().await;
    // Created, never polled: its size is its type's.
    let request = handlers::serve_kms(h.state.clone(), None, h.signed("Encrypt", b"{}"));
    let size = std::mem::size_of_val(&request);
    assert!(size <= 3072, "serve_kms's future is {size} bytes");
}
