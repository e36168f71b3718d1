//! The agent against a real engine on loopback, as in a pod: a ServiceAccount token exchanged
//! through the engine's STS, the data key's ciphertext decrypted under its encryption context,
//! the key written for the app; another ServiceAccount is refused the same ciphertext. The
//! sidecar: a generation added to the record's mirror joins the keyring, and the app's
//! localhost API answers the keyring and decrypts data-key ciphertexts.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use kubekms_crds::SealedGeneration;
use kubekms_engine::clock::{Clock, SystemClock};
use kubekms_engine::identity::testing::{self, LoopbackEngine};
use kubekms_engine::identity::{IdentityMap, ReviewedToken};
use kubekms_engine::record::Scope;
use kubekms_engine::service::{Caller, Principal};
use kubekms_proto::ops::{CreateKeyRequest, DecryptRequest, GenerateDataKeyRequest};
use kubekms_proto::principal::service_account_arn;
use kubekms_proto::tls::testing::{openssl, self_signed};
use kubekms_proto::vocab::DataKeySpec;
use kubekms_webhook::agent::{init, AgentError, Environment};
use kubekms_webhook::mutate::{AgentConfig, DataKeyCiphertexts};
use kubekms_webhook::sidecar::{self, Sidecar};
use serde_json::{json, Value};
use tower::ServiceExt;

const ACCOUNT: &str = "111122223333";
const REGION: &str = "us-east-1";

async fn engine() -> LoopbackEngine {
    let identities = IdentityMap {
        admin_groups: vec!["system:masters".into()],
        operator_service_account: None,
        webhook_service_account: None,
    };
    LoopbackEngine::start(identities, ACCOUNT).await.unwrap()
}

/// A token file the cluster knows as ServiceAccount `shop/<name>`.
fn token_file(e: &LoopbackEngine, dir: &Path, name: &str, n: u32) -> PathBuf {
    let now = u64::try_from(SystemClock::new().now_millis() / 1000).unwrap();
    let token = testing::jwt(now + 3600, n);
    e.cluster.known.lock().insert(
        token.clone(),
        ReviewedToken {
            username: format!("system:serviceaccount:shop:{name}"),
            groups: vec!["system:serviceaccounts".into()],
        },
    );
    let path = dir.join(format!("token-{name}"));
    std::fs::write(&path, &token).unwrap();
    path
}

fn administrator() -> Caller {
    Caller {
        scope: Scope::new(ACCOUNT, REGION),
        principal: Principal::new(format!("arn:aws:iam::{ACCOUNT}:root")),
        request_id: "test".into(),
    }
}

fn context() -> BTreeMap<String, String> {
    context_for("app", "db")
}

fn context_for(service_account: &str, data_key: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("kubekms:namespace".to_owned(), "shop".to_owned()),
        (
            "kubekms:service-account".to_owned(),
            service_account.to_owned(),
        ),
        ("kubekms:data-key".to_owned(), data_key.to_owned()),
    ])
}

/// A Key whose policy lets ServiceAccount `shop/app` decrypt what was made for it.
async fn app_key(e: &LoopbackEngine) -> String {
    let admin = administrator();
    let app = service_account_arn(ACCOUNT, "shop", "app");
    let policy = json!({ "Version": "2012-10-17", "Statement": [
        { "Effect": "Allow", "Principal": { "AWS": format!("arn:aws:iam::{ACCOUNT}:root") },
          "Action": "kms:*", "Resource": "*" },
        { "Effect": "Allow", "Principal": { "AWS": app }, "Action": "kms:Decrypt", "Resource": "*",
          "Condition": { "StringEquals": { "kms:EncryptionContext:kubekms:service-account": "app" } } },
    ] });
    e.kms
        .create_key(
            &admin,
            CreateKeyRequest {
                policy: Some(policy.to_string()),
                ..CreateKeyRequest::default()
            },
        )
        .await
        .result
        .unwrap()
        .key_metadata
        .key_id
        .to_string()
}

/// A data key made under `context`: its ciphertext (base64) and its bytes.
async fn data_key(
    e: &LoopbackEngine,
    key: &str,
    context: BTreeMap<String, String>,
) -> (String, Vec<u8>) {
    let admin = administrator();
    let made = e
        .kms
        .generate_data_key(
            &admin,
            GenerateDataKeyRequest {
                key_id: key.parse().unwrap(),
                encryption_context: Some(context.clone()),
                key_spec: Some(DataKeySpec::Aes256),
                ..GenerateDataKeyRequest::default()
            },
            false,
        )
        .await
        .result
        .unwrap();
    let plaintext = e
        .kms
        .decrypt(
            &admin,
            DecryptRequest {
                ciphertext_blob: made.ciphertext_blob.clone(),
                encryption_context: Some(context),
                ..DecryptRequest::default()
            },
        )
        .await
        .result
        .unwrap()
        .plaintext;
    (B64.encode(&made.ciphertext_blob), plaintext.to_vec())
}

fn generation(n: u32, ciphertext: &str, context: BTreeMap<String, String>) -> SealedGeneration {
    SealedGeneration {
        id: format!("db-{n}"),
        generation: n,
        ciphertext: ciphertext.to_owned(),
        encryption_context: context,
    }
}

fn environment(
    e: &LoopbackEngine,
    keys: &Path,
    mirror_dir: Option<&Path>,
    ciphertext: &str,
    token_file: PathBuf,
) -> Environment {
    Environment {
        config: AgentConfig {
            dir: keys.display().to_string(),
            data_keys: vec![DataKeyCiphertexts {
                name: "db".into(),
                file: "db.key".into(),
                keys: vec![generation(1, ciphertext, context())],
                mirror: String::new(),
            }],
            mirror_dir: mirror_dir.map(|d| d.display().to_string()),
        },
        token_file,
        role_arn: format!("arn:aws:iam::{ACCOUNT}:role/kubekms"),
        endpoint: e.url.clone(),
        region: REGION.into(),
        ca_bundle: None,
    }
}

#[tokio::test]
async fn the_agent_decrypts_as_the_pods_service_account_and_writes_the_key() {
    let e = engine().await;
    let key = app_key(&e).await;
    let (ciphertext, expected) = data_key(&e, &key, context()).await;

    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    std::fs::create_dir(&keys).unwrap();
    let env = |token_file: PathBuf| environment(&e, &keys, None, &ciphertext, token_file);

    let written = init(&env(token_file(&e, dir.path(), "app", 1)))
        .await
        .unwrap();
    assert_eq!(written, 1);
    assert_eq!(expected.len(), 32);
    assert_eq!(std::fs::read(keys.join("db.key")).unwrap(), expected);

    // Another ServiceAccount of the namespace holds the same ciphertext in vain.
    let refused = init(&env(token_file(&e, dir.path(), "intruder", 2)))
        .await
        .unwrap_err();
    let AgentError::Refused { refusal, name, .. } = &refused else {
        panic!("{refused}");
    };
    assert_eq!(name, "db");
    assert_eq!(refusal.aws_type, "AccessDeniedException", "{refused}");
}

async fn call(router: &axum::Router, request: Request<Body>) -> (StatusCode, Value) {
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let body = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    (status, serde_json::from_slice(&body).unwrap())
}

fn decrypt_request(body: Value) -> Request<Body> {
    Request::post("/v1/decrypt")
        .body(Body::from(body.to_string()))
        .unwrap()
}

#[tokio::test]
async fn the_sidecar_takes_in_a_rotated_generation_and_serves_the_app() {
    let e = engine().await;
    let key = app_key(&e).await;
    let (first, first_bytes) = data_key(&e, &key, context()).await;
    let (second, second_bytes) = data_key(&e, &key, context()).await;
    // Made for another ServiceAccount: a mirror that claims it is ours gets nothing.
    let (foreign, _) = data_key(&e, &key, context_for("intruder", "db")).await;

    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    let mirrors = dir.path().join("mirrors");
    std::fs::create_dir(&keys).unwrap();
    std::fs::create_dir(&mirrors).unwrap();
    let token = token_file(&e, dir.path(), "app", 1);
    let env = environment(&e, &keys, Some(&mirrors), &first, token);
    let sidecar = std::sync::Arc::new(Sidecar::start(&env).await.unwrap());
    assert_eq!(std::fs::read(keys.join("db.key")).unwrap(), first_bytes);

    // No mirror yet (the operator has not made it): nothing changes.
    assert!(sidecar.refresh().await.is_empty());

    // The mirror gains generation 2 (another pod asked for it) and a tampered generation 3.
    let mirror = vec![
        generation(1, &first, context()),
        generation(2, &second, context()),
        generation(3, &foreign, context_for("intruder", "db")),
    ];
    std::fs::write(
        mirrors.join("db.json"),
        serde_json::to_vec(&mirror[..2]).unwrap(),
    )
    .unwrap();
    assert_eq!(sidecar.refresh().await, ["db-2"]);
    assert!(sidecar.refresh().await.is_empty(), "held already");
    assert_eq!(
        std::fs::read(keys.join("db.key")).unwrap(),
        second_bytes,
        "the newest generation is current"
    );
    let keyring: Value =
        serde_json::from_slice(&std::fs::read(keys.join("db.key.keyring.json")).unwrap()).unwrap();
    assert_eq!(keyring["current"], "db-2");
    assert_eq!(keyring["keys"].as_array().unwrap().len(), 2);
    assert_eq!(keyring["keys"][0]["key"], B64.encode(&first_bytes));

    std::fs::write(
        mirrors.join("db.json"),
        serde_json::to_vec(&mirror).unwrap(),
    )
    .unwrap();
    assert!(
        sidecar.refresh().await.is_empty(),
        "decrypted under the pod's own context, another's ciphertext is refused"
    );

    let router = sidecar::router(std::sync::Arc::clone(&sidecar));
    let (status, document) = call(
        &router,
        Request::get("/v1/data-keys/db")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(document, keyring);
    let (status, _) = call(
        &router,
        Request::get("/v1/data-keys/other")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // The app decrypts a data-key ciphertext it kept with its data.
    let (kept, kept_bytes) = data_key(&e, &key, context()).await;
    let (status, answer) = call(
        &router,
        decrypt_request(json!({ "dataKey": "db", "ciphertext": kept })),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["key"], B64.encode(&kept_bytes));
    let (status, answer) = call(
        &router,
        decrypt_request(json!({ "dataKey": "db", "ciphertext": foreign })),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert_eq!(answer["__type"], "InvalidCiphertextException", "{answer}");
    let (status, answer) = call(
        &router,
        decrypt_request(json!({ "dataKey": "db", "ciphertext": "not base64!" })),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    let (status, answer) = call(&router, decrypt_request(json!({ "dataKey": "db" }))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert!(
        answer["message"].as_str().unwrap().contains("ciphertext"),
        "{answer}"
    );
    let (status, _) = call(
        &router,
        decrypt_request(json!({ "dataKey": "cache", "ciphertext": kept })),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

/// A certificate for `san` (`DNS:…,IP:…`) signed by the CA `dir/<ca>.crt` (made by
/// [`self_signed`]), as `dir/leaf.crt` and `dir/leaf.key`.
fn make_leaf(dir: &Path, ca: &str, san: &str) -> (PathBuf, PathBuf) {
    std::fs::write(dir.join("leaf.ext"), format!("subjectAltName={san}\n")).unwrap();
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-subj",
            "/CN=kubekms-engine",
            "-keyout",
            "leaf.key",
            "-out",
            "leaf.csr",
        ],
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "leaf.csr",
            "-CA",
            &format!("{ca}.crt"),
            "-CAkey",
            &format!("{ca}.key"),
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            "leaf.ext",
            "-out",
            "leaf.crt",
        ],
    );
    (dir.join("leaf.crt"), dir.join("leaf.key"))
}

#[tokio::test]
async fn over_tls_the_agent_trusts_the_ca_bundle_and_checks_the_name() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let (ca, _) = self_signed(dir.path(), "engine-ca", None);
    let (other_ca, _) = self_signed(dir.path(), "other-ca", None);
    let (cert, key) = make_leaf(
        dir.path(),
        "engine-ca",
        "DNS:kubekms-engine.kubekms.svc,IP:127.0.0.1",
    );
    let tls = kubekms_engine::api::tls::load_server_config(&cert, &key).unwrap();
    let identities = IdentityMap {
        admin_groups: vec!["system:masters".into()],
        operator_service_account: None,
        webhook_service_account: None,
    };
    let e = LoopbackEngine::start_with(identities, ACCOUNT, Some(tls))
        .await
        .unwrap();
    assert!(e.url.starts_with("https://127.0.0.1:"), "{}", e.url);
    let key = app_key(&e).await;
    let (ciphertext, expected) = data_key(&e, &key, context()).await;
    let keys = dir.path().join("keys");
    std::fs::create_dir(&keys).unwrap();
    let token = token_file(&e, dir.path(), "app", 7);

    // The agent as an injected pod runs it: AWS_CA_BUNDLE names the engine's CA.
    let mut env = environment(&e, &keys, None, &ciphertext, token.clone());
    env.ca_bundle = Some(ca.clone());
    assert_eq!(init(&env).await.unwrap(), 1);
    assert_eq!(std::fs::read(keys.join("db.key")).unwrap(), expected);

    // The operator's and the webhook's way in a cluster without DNS: the cluster IP, the
    // certificate checked against the Service's name.
    let client = |server_name: &str| {
        kubekms_proto::client::KmsClient::new(kubekms_proto::client::ClientSettings {
            endpoint: Some(e.url.clone()),
            ca_bundle: Some(ca.clone()),
            server_name: Some(server_name.to_owned()),
            endpoint_fixed: true,
            token_file: token.clone(),
            region: REGION.into(),
            role_arn: format!("arn:aws:iam::{ACCOUNT}:role/kubekms"),
            session_name: "test".into(),
        })
        .unwrap()
    };
    let request = DecryptRequest {
        ciphertext_blob: B64.decode(&ciphertext).unwrap(),
        encryption_context: Some(context()),
        ..DecryptRequest::default()
    };
    let answer: kubekms_proto::ops::DecryptResponse = client("kubekms-engine.kubekms.svc")
        .call(kubekms_proto::Operation::Decrypt, &request)
        .await
        .unwrap();
    assert_eq!(*answer.plaintext, expected[..]);
    let wrong_name: Result<kubekms_proto::ops::DecryptResponse, _> = client("elsewhere.example")
        .call(kubekms_proto::Operation::Decrypt, &request)
        .await;
    assert!(
        matches!(&wrong_name, Err(kubekms_proto::client::CallError::Unreachable(e)) if e.is_untrusted_certificate()),
        "a certificate for another name is not accepted"
    );

    // Another CA: the engine is not trusted, nothing is decrypted, and the agent stops at
    // once (a certificate does not get better by waiting).
    env.ca_bundle = Some(other_ca);
    let started = std::time::Instant::now();
    let refused = init(&env).await.err().unwrap();
    let AgentError::Unreachable { source, .. } = &refused else {
        panic!("{refused}");
    };
    assert!(source.is_untrusted_certificate(), "{refused}");
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
}
