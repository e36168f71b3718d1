//! What access control costs, measured in process (no HTTP, no wrk), so the figures are the
//! core's own: symmetric Encrypt with key-policy evaluation against the same engine allowing
//! everything, and SigV4 verification with temporary (session) credentials against a plain
//! access key. Two threads each, for the run's duration.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use async_trait::async_trait;
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use kubekms_engine::clock::{Clock, SystemClock};
use kubekms_engine::config::{Credential, Credentials};
use kubekms_engine::crypto::RootKey;
use kubekms_engine::identity::session::{SessionCredentials, SessionIdentity, Sessions};
use kubekms_engine::identity::{IdentityMap, ReviewedToken, TokenReviewer, WebIdentity};
use kubekms_engine::service::{
    AllowAll, Authorizer, Backends, Caller, KeyPolicies, Kms, Principal,
};
use kubekms_engine::sigv4::{sign_request, SignedRequest, SigningInput, Verifier};
use kubekms_engine::store::memory::MemoryStore;
use kubekms_engine::KmsError;
use kubekms_proto::ops::{CreateKeyRequest, EncryptRequest};
use zeroize::Zeroizing;

const ACCOUNT: &str = "111122223333";
const THREADS: usize = 2;

/// Throughput of one way of doing the same work.
pub struct Rate {
    pub label: &'static str,
    pub per_sec: f64,
}

/// A key policy as the operator renders one: the two leading statements, then a namespace's
/// statements (groups, a Deny, a context condition), the caller matching the last.
fn realistic_policy() -> String {
    let sa =
        |name: &str| format!("arn:aws:iam::{ACCOUNT}:role/k8s/system:serviceaccount:shop:{name}");
    serde_json::json!({"Version": "2012-10-17", "Id": "kubekms.io/keypolicy", "Statement": [
        {"Sid": "Enable IAM User Permissions", "Effect": "Allow",
         "Principal": {"AWS": format!("arn:aws:iam::{ACCOUNT}:root")}, "Action": "kms:*", "Resource": "*"},
        {"Sid": "kubekms operator manages the key", "Effect": "Allow",
         "Principal": {"AWS": format!("arn:aws:iam::{ACCOUNT}:role/kubekms-operator")},
         "Action": ["kms:DescribeKey", "kms:PutKeyPolicy", "kms:ScheduleKeyDeletion"], "Resource": "*"},
        {"Sid": "p/Readers", "Effect": "Allow",
         "Principal": {"AWS": [sa("reports"), sa("audit")]}, "Action": ["kms:Decrypt"], "Resource": "*"},
        {"Sid": "p/NoCi", "Effect": "Deny",
         "Principal": {"AWS": [format!("arn:aws:iam::{ACCOUNT}:group/k8s/ci:runners")]},
         "Action": ["kms:Decrypt", "kms:ReEncrypt*"], "Resource": "*"},
        {"Sid": "p/AppUse", "Effect": "Allow",
         "Principal": {"AWS": [format!("arn:aws:iam::{ACCOUNT}:group/k8s/system:serviceaccounts:shop"),
                               format!("arn:aws:iam::{ACCOUNT}:user/k8s/bench")]},
         "Action": ["kms:Encrypt", "kms:Decrypt", "kms:GenerateDataKey*"], "Resource": "*",
         "Condition": {"StringEquals": {"kms:EncryptionContext:app": "orders"}}}
    ]})
    .to_string()
}

/// An engine on a memory store with one symmetric key under [`realistic_policy`]; its
/// administrator caller.
async fn engine_with_key(
    authorizer: Arc<dyn Authorizer>,
    root: [u8; 32],
    clock: Arc<SystemClock>,
) -> Result<(Arc<Kms>, String, Caller)> {
    let kms = Kms::open_with(
        Arc::new(MemoryStore::new()),
        RootKey::from_bytes(&root).map_err(|e| anyhow!("{e}"))?,
        clock,
        Backends {
            authorizer,
            ..Backends::default()
        },
    )
    .await
    .map_err(|e| anyhow!("{e}"))?;
    let admin = Caller {
        scope: kubekms_engine::record::Scope::new(ACCOUNT, "us-east-1"),
        principal: Principal::new(format!("arn:aws:iam::{ACCOUNT}:root")),
        request_id: "bench".into(),
    };
    let key = kms
        .create_key(
            &admin,
            CreateKeyRequest {
                policy: Some(realistic_policy()),
                ..CreateKeyRequest::default()
            },
        )
        .await
        .result
        .map_err(|e| anyhow!("CreateKey: {e}"))?
        .key_metadata
        .key_id;
    Ok((kms, key, admin))
}

/// The app's identity (a service account of `shop`), as a session would carry it.
fn app_identity() -> SessionIdentity {
    SessionIdentity {
        account: ACCOUNT.into(),
        username: "system:serviceaccount:shop:orders".into(),
        groups: vec![
            "system:serviceaccounts".into(),
            "system:serviceaccounts:shop".into(),
            "system:authenticated".into(),
        ],
    }
}

/// The plain access key of the measurements, a user in the `shop` group.
fn plain_key() -> Result<Credential> {
    Ok(Credential::new(
        "AKIABENCHPLAIN01",
        Zeroizing::new("plain-secret-0123456789".into()),
        ACCOUNT,
        None,
    )
    .map_err(|e| anyhow!("{e}"))?
    .with_principal(
        Principal::new(format!("arn:aws:iam::{ACCOUNT}:user/k8s/bench")).with_groups(vec![
            format!("arn:aws:iam::{ACCOUNT}:group/k8s/system:serviceaccounts:shop"),
        ]),
    ))
}

/// What requests authenticate against: the plain key, and a session for the app.
struct Authentication {
    verifier: Verifier,
    web: Arc<WebIdentity>,
    session: SessionCredentials,
    plain: Credential,
}

fn authentication(root: [u8; 32], clock: Arc<SystemClock>) -> Result<Authentication> {
    let root = RootKey::from_bytes(&root).map_err(|e| anyhow!("{e}"))?;
    let sessions = Arc::new(Sessions::new(&root).map_err(|e| anyhow!("{e}"))?);
    let session = sessions
        .issue(&app_identity(), clock.now_millis() + 3_600_000)
        .map_err(|e| anyhow!("{e}"))?;
    let plain = plain_key()?;
    let web = Arc::new(WebIdentity::new(
        Arc::new(NoCluster),
        sessions,
        IdentityMap::default(),
        ACCOUNT,
        clock.clone(),
    ));
    let verifier = Verifier::new(
        Credentials::new([plain.clone()]).map_err(|e| anyhow!("{e}"))?,
        clock,
    )
    .with_sessions(web.clone());
    Ok(Authentication {
        verifier,
        web,
        session,
        plain,
    })
}

/// Symmetric Encrypt through the typed API, with `authorizer`.
async fn encrypt_rate(
    label: &'static str,
    authorizer: Arc<dyn Authorizer>,
    secs: u64,
) -> Result<Rate> {
    let (kms, key, admin) = engine_with_key(authorizer, [1u8; 32], SystemClock::new()).await?;
    let app = Caller {
        principal: Principal::new(format!(
            "arn:aws:iam::{ACCOUNT}:role/k8s/system:serviceaccount:shop:orders"
        ))
        .with_groups(vec![
            format!("arn:aws:iam::{ACCOUNT}:group/k8s/system:serviceaccounts"),
            format!("arn:aws:iam::{ACCOUNT}:group/k8s/system:serviceaccounts:shop"),
            format!("arn:aws:iam::{ACCOUNT}:group/k8s/system:authenticated"),
        ]),
        ..admin
    };
    let request = move || EncryptRequest {
        key_id: key.clone(),
        plaintext: Zeroizing::new(vec![7u8; 64]),
        encryption_context: Some(BTreeMap::from([("app".to_owned(), "orders".to_owned())])),
        ..EncryptRequest::default()
    };
    // One call first: a refusal would make every figure meaningless.
    kms.encrypt(&app, request())
        .await
        .result
        .map_err(|e| anyhow!("Encrypt as the app: {e}"))?;
    let done = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..THREADS {
        let (kms, app, done, count, request) = (
            kms.clone(),
            app.clone(),
            done.clone(),
            count.clone(),
            request.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            while !done.load(Ordering::Relaxed) {
                if kms.encrypt(&app, request()).await.result.is_ok() {
                    n += 1;
                }
            }
            count.fetch_add(n, Ordering::Relaxed);
        }));
    }
    let started = Instant::now();
    // A blocking sleep on purpose: this future runs on the thread that called `block_on`, not
    // on a worker, and the workers never park while the loops spin, so tokio's timer would
    // not be driven.
    std::thread::sleep(Duration::from_secs(secs));
    done.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.context("encrypt task")?;
    }
    Ok(Rate {
        label,
        per_sec: count.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64(),
    })
}

struct NoCluster;

#[async_trait]
impl TokenReviewer for NoCluster {
    async fn review(&self, _: &str) -> kubekms_engine::error::Result<ReviewedToken> {
        Err(KmsError::IdpCommunication(
            "no cluster in the benchmark".into(),
        ))
    }
}

/// Headers of one Encrypt request to `host`, signed at `now` as an SDK signs it (with the
/// session token when there is one).
fn signed_pairs(
    id: &str,
    secret: &str,
    token: Option<&str>,
    host: &str,
    body: &[u8],
    now: i64,
) -> Vec<(String, String)> {
    let mut pairs = vec![
        ("host", host),
        ("content-type", "application/x-amz-json-1.1"),
        ("x-amz-target", "TrentService.Encrypt"),
    ];
    if let Some(token) = token {
        pairs.push(("x-amz-security-token", token));
    }
    let input = SigningInput {
        method: "POST",
        path: "/",
        query: None,
        headers: &pairs,
        body,
    };
    let signature = sign_request(id, secret, "us-east-1", "kms", &input, now);
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .chain(signature)
        .collect()
}

/// [`signed_pairs`] as a header map, for the verifier.
fn signed(id: &str, secret: &str, token: Option<&str>, body: &[u8], now: i64) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (k, v) in signed_pairs(id, secret, token, "127.0.0.1:4599", body, now) {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(k.as_bytes()),
            HeaderValue::from_str(&v),
        ) {
            map.append(name, value);
        }
    }
    map
}

fn verify_rate(
    label: &'static str,
    verifier: Arc<Verifier>,
    headers: HeaderMap,
    body: Vec<u8>,
    secs: u64,
) -> Result<Rate> {
    let check = |v: &Verifier| {
        v.verify(&SignedRequest {
            method: "POST",
            path: "/",
            query: None,
            headers: &headers,
            body: &body,
        })
        .map(drop)
    };
    check(&verifier).map_err(|e| anyhow!("{label}: {e}"))?;
    let done = AtomicBool::new(false);
    let count = AtomicU64::new(0);
    let started = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..THREADS {
            scope.spawn(|| {
                let mut n = 0u64;
                while !done.load(Ordering::Relaxed) {
                    if check(&verifier).is_ok() {
                        n += 1;
                    }
                }
                count.fetch_add(n, Ordering::Relaxed);
            });
        }
        std::thread::sleep(Duration::from_secs(secs));
        done.store(true, Ordering::Relaxed);
    });
    Ok(Rate {
        label,
        per_sec: count.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64(),
    })
}

/// `[(key policy, allow-all)], [(session, plain key)]` rates.
pub fn measure(secs: u64) -> Result<(Vec<Rate>, Vec<Rate>)> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(THREADS)
        .enable_all()
        .build()?;
    let encrypt = runtime.block_on(async {
        Ok::<_, anyhow::Error>(vec![
            encrypt_rate("Encrypt, key policy enforced", Arc::new(KeyPolicies), secs).await?,
            encrypt_rate("Encrypt, allow-all", Arc::new(AllowAll), secs).await?,
        ])
    })?;

    let clock = SystemClock::new();
    let now = clock.now_millis();
    let body = br#"{"KeyId":"alias/bench","Plaintext":"aGVsbG8="}"#.to_vec();
    let auth = authentication([2u8; 32], clock)?;
    let (plain, session) = (auth.plain, auth.session);
    let verifier = Arc::new(auth.verifier);
    let verify = vec![
        verify_rate(
            "SigV4, session credentials",
            verifier.clone(),
            signed(
                &session.access_key_id,
                &session.secret_access_key,
                Some(&session.session_token),
                &body,
                now,
            ),
            body.clone(),
            secs,
        )?,
        verify_rate(
            "SigV4, plain access key",
            verifier,
            signed(
                &plain.access_key_id,
                plain.secret_access_key(),
                None,
                &body,
                now,
            ),
            body.clone(),
            secs,
        )?,
    ];
    Ok((encrypt, verify))
}

/// An engine served in this process on a free loopback port, for wrk: one symmetric key under
/// [`realistic_policy`] (which also lets `user` encrypt), `authorizer` deciding, temporary
/// credentials accepted. Dropping it stops the server.
pub struct InProcessEngine {
    pub addr: std::net::SocketAddr,
    pub key_id: String,
    pub plain: Credential,
    pub session: SessionCredentials,
    runtime: Option<tokio::runtime::Runtime>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for InProcessEngine {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_timeout(Duration::from_secs(5));
        }
    }
}

impl InProcessEngine {
    pub fn start(authorizer: Arc<dyn Authorizer>, audit: &std::path::Path) -> Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(THREADS)
            .enable_all()
            .build()?;
        let clock = SystemClock::new();
        let root_bytes = [3u8; 32];
        let root = || RootKey::from_bytes(&root_bytes).map_err(|e| anyhow!("{e}"));
        let Authentication {
            verifier,
            web,
            session,
            plain,
        } = authentication(root_bytes, clock.clone())?;
        let audit_key =
            kubekms_engine::audit::AuditKey::from_root(&root()?).map_err(|e| anyhow!("{e}"))?;
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (addr, key_id) = runtime.block_on(async {
            let (kms, key_id, _) = engine_with_key(authorizer, root_bytes, clock.clone()).await?;
            let audit = kubekms_engine::audit::AuditLog::to_file(
                audit,
                audit_key,
                kubekms_engine::audit::DEFAULT_MAX_BYTES,
            )
            .map_err(|e| anyhow!("{e}"))?;
            let bound = kubekms_engine::runner::Engine {
                kms,
                authenticator: Box::new(verifier),
                web_identity: Some(web),
                audit,
                clock,
                config: kubekms_engine::api::ServerConfig::default(),
                tls: None,
            }
            .bind("127.0.0.1:0".parse()?)
            .await
            .map_err(|e| anyhow!("{e}"))?;
            let addr = bound.addr();
            tokio::spawn(async move {
                let _ = bound
                    .serve(async {
                        let _ = stop_rx.await;
                    })
                    .await;
            });
            Ok::<_, anyhow::Error>((addr, key_id))
        })?;
        Ok(Self {
            addr,
            key_id,
            plain,
            session,
            runtime: Some(runtime),
            stop: Some(stop_tx),
        })
    }

    /// The headers of one Encrypt of `body`, signed now with the plain key or the session.
    pub fn signed_encrypt(&self, body: &[u8], with_session: bool) -> Vec<(String, String)> {
        let now = SystemClock::new().now_millis();
        let host = self.addr.to_string();
        if with_session {
            let s = &self.session;
            signed_pairs(
                &s.access_key_id,
                &s.secret_access_key,
                Some(&s.session_token),
                &host,
                body,
                now,
            )
        } else {
            let p = &self.plain;
            signed_pairs(
                &p.access_key_id,
                p.secret_access_key(),
                None,
                &host,
                body,
                now,
            )
        }
    }
}
