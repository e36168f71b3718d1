//! The STS web-identity calls in process: a token exchanged for temporary credentials, those
//! credentials used on the KMS API as the token's identity, and STS's own error answers.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use base64::engine::general_purpose::{STANDARD as B64, URL_SAFE_NO_PAD as B64URL};
use base64::Engine as _;
use parking_lot::Mutex;
use tower::ServiceExt;
use zeroize::Zeroizing;

use super::*;
use crate::audit::{AuditKey, AuditLog, DEFAULT_MAX_BYTES};
use crate::clock::{Clock, SystemClock};
use crate::config::{Credential, Credentials};
use crate::crypto::RootKey;
use crate::error::{KmsError, Result};
use crate::identity::session::Sessions;
use crate::identity::{IdentityMap, ReviewedToken, TokenReviewer, WebIdentity};
use crate::service::Kms;
use crate::sigv4::{sign_kms_request, sign_request, SigningInput, Verifier};
use crate::store::memory::MemoryStore;

const ACCOUNT: &str = "111122223333";
const ORDERS: &str = "arn:aws:iam::111122223333:role/k8s/system:serviceaccount:shop:orders";

#[derive(Default)]
struct Cluster(Mutex<HashMap<String, ReviewedToken>>);

#[async_trait]
impl TokenReviewer for Cluster {
    async fn review(&self, token: &str) -> Result<ReviewedToken> {
        self.0
            .lock()
            .get(token)
            .cloned()
            .ok_or_else(|| KmsError::InvalidIdentityToken("the token was not accepted".into()))
    }
}

struct Harness {
    state: Arc<AppState>,
    cluster: Arc<Cluster>,
    clock: Arc<SystemClock>,
    admin: Credential,
    _dir: tempfile::TempDir,
}

async fn harness() -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let clock = SystemClock::new();
    let root = RootKey::from_bytes(&[4u8; 32]).unwrap();
    let audit_key = AuditKey::from_root(&root).unwrap();
    let sessions = Arc::new(Sessions::new(&root).unwrap());
    let kms = Kms::open(Arc::new(MemoryStore::new()), root, clock.clone())
        .await
        .unwrap();
    let cluster = Arc::new(Cluster::default());
    let web = Arc::new(WebIdentity::new(
        cluster.clone(),
        sessions,
        IdentityMap::default(),
        ACCOUNT,
        clock.clone(),
    ));
    let admin = Credential::new(
        "AKIDADMIN",
        Zeroizing::new("admin-secret".into()),
        ACCOUNT,
        None,
    )
    .unwrap();
    let verifier = Verifier::new(Credentials::new([admin.clone()]).unwrap(), clock.clone())
        .with_sessions(web.clone());
    let audit =
        AuditLog::to_file(&dir.path().join("audit.log"), audit_key, DEFAULT_MAX_BYTES).unwrap();
    let state = AppState::with_authenticator(
        kms,
        Box::new(verifier),
        Some(web),
        audit,
        clock.clone(),
        ServerConfig::default(),
    );
    Harness {
        state,
        cluster,
        clock,
        admin,
        _dir: dir,
    }
}

fn encrypt(key: &str, plaintext: &str) -> serde_json::Value {
    serde_json::json!({"KeyId": key, "Plaintext": plaintext})
}

/// An unsigned form-encoded POST, as STS calls without credentials are sent.
fn form(body: &'static str) -> Request<Body> {
    Request::post("/")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Body::from(body))
        .unwrap()
}

/// Temporary credentials as the SDK reads them from the XML answer.
struct Temporary {
    access_key_id: String,
    secret: String,
    token: String,
}

fn tag<'a>(xml: &'a str, name: &str) -> Option<&'a str> {
    let open = format!("<{name}>");
    let start = xml.find(&open)? + open.len();
    let end = xml[start..].find(&format!("</{name}>"))? + start;
    Some(&xml[start..end])
}

impl Harness {
    async fn send(&self, req: Request<Body>) -> (StatusCode, String) {
        let response = router(self.state.clone()).oneshot(req).await.unwrap();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        (status, String::from_utf8(bytes.to_vec()).unwrap())
    }

    fn jwt(&self, subject: &str) -> String {
        let exp = self.clock.now_millis() / 1000 + 3600;
        let claims = serde_json::json!({"exp": exp, "sub": subject});
        format!("e30.{}.sig", B64URL.encode(claims.to_string()))
    }

    async fn assume(&self, token: &str) -> (StatusCode, String) {
        let body = form_urlencoded::Serializer::new(String::new())
            .append_pair("Action", "AssumeRoleWithWebIdentity")
            .append_pair("Version", "2011-06-15")
            .append_pair("RoleArn", "arn:aws:iam::111122223333:role/kubekms")
            .append_pair("RoleSessionName", "test")
            .append_pair("WebIdentityToken", token)
            .finish();
        let req = Request::post("/")
            .header(
                "content-type",
                "application/x-www-form-urlencoded; charset=utf-8",
            )
            .body(Body::from(body))
            .unwrap();
        self.send(req).await
    }

    async fn temporary(&self, token: &str) -> Temporary {
        let (status, xml) = self.assume(token).await;
        assert_eq!(status, StatusCode::OK, "{xml}");
        Temporary {
            access_key_id: tag(&xml, "AccessKeyId").unwrap().to_owned(),
            secret: tag(&xml, "SecretAccessKey").unwrap().to_owned(),
            token: tag(&xml, "SessionToken").unwrap().to_owned(),
        }
    }

    /// A request signed with temporary credentials, as an SDK sends it.
    fn signed_as(
        &self,
        t: &Temporary,
        service: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Request<Body> {
        let mut all: Vec<(&str, &str)> =
            vec![("host", "localhost"), ("x-amz-security-token", &t.token)];
        all.extend_from_slice(headers);
        let input = SigningInput {
            method: "POST",
            path: "/",
            query: None,
            headers: &all,
            body,
        };
        let signature = sign_request(
            &t.access_key_id,
            &t.secret,
            "us-east-1",
            service,
            &input,
            self.clock.now_millis(),
        );
        let mut req = Request::post("/");
        for (k, v) in all {
            req = req.header(k, v);
        }
        for (k, v) in signature {
            req = req.header(k, v);
        }
        req.body(Body::from(body.to_vec())).unwrap()
    }

    fn kms_as(&self, t: &Temporary, operation: &str, body: &serde_json::Value) -> Request<Body> {
        let target = format!("TrentService.{operation}");
        self.signed_as(
            t,
            "kms",
            &[
                ("content-type", "application/x-amz-json-1.1"),
                ("x-amz-target", &target),
            ],
            body.to_string().as_bytes(),
        )
    }

    async fn admin_call(&self, operation: &str, body: serde_json::Value) -> serde_json::Value {
        let body = body.to_string();
        let headers = sign_kms_request(
            &self.admin,
            "us-east-1",
            "localhost",
            operation,
            body.as_bytes(),
            self.clock.now_millis(),
        );
        let mut req = Request::post("/");
        for (k, v) in headers {
            req = req.header(k, v);
        }
        let (status, text) = self.send(req.body(Body::from(body)).unwrap()).await;
        assert_eq!(status, StatusCode::OK, "{text}");
        serde_json::from_str(&text).unwrap()
    }
}

#[tokio::test]
async fn a_service_account_token_becomes_credentials_that_act_as_it() {
    let h = harness().await;
    let token = h.jwt("orders");
    h.cluster.0.lock().insert(
        token.clone(),
        ReviewedToken {
            username: "system:serviceaccount:shop:orders".into(),
            groups: vec!["system:serviceaccounts".into()],
        },
    );
    let policy = serde_json::json!({"Statement": [
        {"Effect": "Allow", "Principal": {"AWS": ACCOUNT}, "Action": "kms:*", "Resource": "*"},
        {"Effect": "Allow", "Principal": {"AWS": ORDERS}, "Action": "kms:Encrypt", "Resource": "*"}
    ]});
    let allowed = h
        .admin_call(
            "CreateKey",
            serde_json::json!({"Policy": policy.to_string()}),
        )
        .await["KeyMetadata"]["KeyId"]
        .as_str()
        .unwrap()
        .to_owned();
    let other = h.admin_call("CreateKey", serde_json::json!({})).await["KeyMetadata"]["KeyId"]
        .as_str()
        .unwrap()
        .to_owned();

    let (status, xml) = h.assume(&token).await;
    assert_eq!(status, StatusCode::OK, "{xml}");
    assert_eq!(
        tag(&xml, "SubjectFromWebIdentityToken"),
        Some("system:serviceaccount:shop:orders")
    );
    assert_eq!(tag(&xml, "Audience"), Some("kubekms"));
    assert!(tag(&xml, "Expiration").unwrap().ends_with('Z'), "{xml}");
    let t = h.temporary(&token).await;
    assert!(t.access_key_id.starts_with("ASIA"));

    let plaintext = B64.encode(b"for orders");
    let (status, text) = h
        .send(h.kms_as(&t, "Encrypt", &encrypt(&allowed, &plaintext)))
        .await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let (status, text) = h
        .send(h.kms_as(&t, "Encrypt", &encrypt(&other, &plaintext)))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{text}");
    assert!(
        text.contains("AccessDeniedException") && text.contains(ORDERS),
        "{text}"
    );

    // GetCallerIdentity, signed for sts with the same credentials.
    let body = b"Action=GetCallerIdentity&Version=2011-06-15";
    let (status, xml) = h
        .send(h.signed_as(
            &t,
            "sts",
            &[("content-type", "application/x-www-form-urlencoded")],
            body,
        ))
        .await;
    assert_eq!(status, StatusCode::OK, "{xml}");
    assert_eq!(tag(&xml, "Arn"), Some(ORDERS));
    assert_eq!(tag(&xml, "Account"), Some(ACCOUNT));

    // A KMS request signed for sts is refused, and the other way round.
    let (status, _) = h
        .send(h.signed_as(
            &t,
            "kms",
            &[("content-type", "application/x-www-form-urlencoded")],
            body,
        ))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // An hour later (the default duration), the same credentials are expired.
    h.clock.advance(3_600_000);
    let (status, text) = h
        .send(h.kms_as(&t, "Encrypt", &encrypt(&allowed, &plaintext)))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{text}");
    assert!(text.contains("ExpiredTokenException"), "{text}");
}

#[tokio::test]
async fn refusals_are_sts_error_documents() {
    let h = harness().await;
    let (status, xml) = h.assume(&h.jwt("nobody")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{xml}");
    assert!(xml.starts_with("<ErrorResponse"), "{xml}");
    assert_eq!(tag(&xml, "Code"), Some("InvalidIdentityToken"));
    assert_eq!(tag(&xml, "Type"), Some("Sender"));

    let expired = format!(
        "e30.{}.sig",
        B64URL.encode(serde_json::json!({"exp": 1}).to_string())
    );
    let (_, xml) = h.assume(&expired).await;
    assert_eq!(tag(&xml, "Code"), Some("ExpiredTokenException"), "{xml}");

    let (status, xml) = h.send(form("Action=AssumeRole&Version=2011-06-15")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(tag(&xml, "Code"), Some("InvalidAction"), "{xml}");

    let (status, xml) = h
        .send(form("Action=GetCallerIdentity&Version=2011-06-15"))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(
        tag(&xml, "Code"),
        Some("MissingAuthenticationToken"),
        "{xml}"
    );
}
