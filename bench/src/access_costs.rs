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
use kubekms_engine::identity::session::{SessionIdentity, Sessions};
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

/// Symmetric Encrypt through the typed API, with `authorizer`.
async fn encrypt_rate(
    label: &'static str,
    authorizer: Arc<dyn Authorizer>,
    secs: u64,
) -> Result<Rate> {
    let clock = SystemClock::new();
    let kms = Kms::open_with(
        Arc::new(MemoryStore::new()),
        RootKey::from_bytes(&[1u8; 32]).map_err(|e| anyhow!("{e}"))?,
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

/// Headers of one signed Encrypt request, as an SDK sends them.
fn signed(id: &str, secret: &str, token: Option<&str>, body: &[u8], now: i64) -> HeaderMap {
    let mut pairs = vec![
        ("host", "127.0.0.1:4599"),
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
    let mut map = HeaderMap::new();
    let owned = pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .chain(signature);
    for (k, v) in owned {
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
    let plain = Credential::new(
        "AKIABENCHPLAIN01",
        Zeroizing::new("plain-secret-0123456789".into()),
        ACCOUNT,
        Some(format!("arn:aws:iam::{ACCOUNT}:user/bench")),
    )
    .map_err(|e| anyhow!("{e}"))?;
    let root = RootKey::from_bytes(&[2u8; 32]).map_err(|e| anyhow!("{e}"))?;
    let sessions = Arc::new(Sessions::new(&root).map_err(|e| anyhow!("{e}"))?);
    let session = sessions
        .issue(
            &SessionIdentity {
                account: ACCOUNT.into(),
                username: "system:serviceaccount:shop:orders".into(),
                groups: vec![
                    "system:serviceaccounts".into(),
                    "system:serviceaccounts:shop".into(),
                    "system:authenticated".into(),
                ],
            },
            now + 3_600_000,
        )
        .map_err(|e| anyhow!("{e}"))?;
    let web = Arc::new(WebIdentity::new(
        Arc::new(NoCluster),
        sessions,
        IdentityMap::default(),
        ACCOUNT,
        clock.clone(),
    ));
    let verifier = Arc::new(
        Verifier::new(
            Credentials::new([plain.clone()]).map_err(|e| anyhow!("{e}"))?,
            clock,
        )
        .with_sessions(web),
    );
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
    pub session: kubekms_engine::identity::session::SessionCredentials,
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
        let sessions = Arc::new(Sessions::new(&root()?).map_err(|e| anyhow!("{e}"))?);
        let groups = vec![
            "system:serviceaccounts".to_owned(),
            "system:serviceaccounts:shop".to_owned(),
            "system:authenticated".to_owned(),
        ];
        let session = sessions
            .issue(
                &SessionIdentity {
                    account: ACCOUNT.into(),
                    username: "system:serviceaccount:shop:orders".into(),
                    groups,
                },
                clock.now_millis() + 3_600_000,
            )
            .map_err(|e| anyhow!("{e}"))?;
        let plain = Credential::new(
            "AKIABENCHPLAIN01",
            Zeroizing::new("plain-secret-0123456789".into()),
            ACCOUNT,
            Some(format!("arn:aws:iam::{ACCOUNT}:user/k8s/bench")),
        )
        .map_err(|e| anyhow!("{e}"))?
        .with_principal(
            Principal::new(format!("arn:aws:iam::{ACCOUNT}:user/k8s/bench")).with_groups(vec![
                format!("arn:aws:iam::{ACCOUNT}:group/k8s/system:serviceaccounts:shop"),
            ]),
        );
        let web = Arc::new(WebIdentity::new(
            Arc::new(NoCluster),
            sessions,
            IdentityMap::default(),
            ACCOUNT,
            clock.clone(),
        ));
        let verifier = Verifier::new(
            Credentials::new([plain.clone()]).map_err(|e| anyhow!("{e}"))?,
            clock.clone(),
        )
        .with_sessions(web.clone());
        let audit_key =
            kubekms_engine::audit::AuditKey::from_root(&root()?).map_err(|e| anyhow!("{e}"))?;
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (addr, key_id) = runtime.block_on(async {
            let kms = Kms::open_with(
                Arc::new(MemoryStore::new()),
                root()?,
                clock.clone(),
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
            let key_id = kms
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
        let host = self.addr.to_string();
        let mut pairs: Vec<(&str, &str)> = vec![
            ("host", &host),
            ("content-type", "application/x-amz-json-1.1"),
            ("x-amz-target", "TrentService.Encrypt"),
        ];
        let (id, secret) = if with_session {
            pairs.push(("x-amz-security-token", &self.session.session_token));
            (
                self.session.access_key_id.as_str(),
                self.session.secret_access_key.as_str(),
            )
        } else {
            (
                self.plain.access_key_id.as_str(),
                self.plain.secret_access_key(),
            )
        };
        let input = SigningInput {
            method: "POST",
            path: "/",
            query: None,
            headers: &pairs,
            body,
        };
        let signature = sign_request(
            id,
            secret,
            "us-east-1",
            "kms",
            &input,
            SystemClock::new().now_millis(),
        );
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .chain(signature)
            .collect()
    }
}
