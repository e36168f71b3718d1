//! The agent against a real engine on loopback, as in a pod: a ServiceAccount token exchanged
//! through the engine's STS, the data key's ciphertext decrypted under its encryption context,
//! the key written for the app; another ServiceAccount is refused the same ciphertext.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use kubekms_engine::clock::{Clock, SystemClock};
use kubekms_engine::identity::testing::{self, LoopbackEngine};
use kubekms_engine::identity::{IdentityMap, ReviewedToken};
use kubekms_engine::record::Scope;
use kubekms_engine::service::{Caller, Principal};
use kubekms_proto::ops::{CreateKeyRequest, DecryptRequest, GenerateDataKeyRequest};
use kubekms_proto::principal::service_account_arn;
use kubekms_proto::vocab::DataKeySpec;
use kubekms_webhook::agent::{init, AgentError, Config, DataKey, Entry, Environment};
use serde_json::json;

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
    BTreeMap::from([
        ("kubekms:namespace".to_owned(), "shop".to_owned()),
        ("kubekms:service-account".to_owned(), "app".to_owned()),
        ("kubekms:data-key".to_owned(), "db".to_owned()),
    ])
}

#[tokio::test]
async fn the_agent_decrypts_as_the_pods_service_account_and_writes_the_key() {
    let e = engine().await;
    let admin = administrator();
    let app = service_account_arn(ACCOUNT, "shop", "app");
    let policy = json!({ "Version": "2012-10-17", "Statement": [
        { "Effect": "Allow", "Principal": { "AWS": format!("arn:aws:iam::{ACCOUNT}:root") },
          "Action": "kms:*", "Resource": "*" },
        { "Effect": "Allow", "Principal": { "AWS": app }, "Action": "kms:Decrypt", "Resource": "*",
          "Condition": { "StringEquals": { "kms:EncryptionContext:kubekms:service-account": "app" } } },
    ] });
    let key = e
        .kms
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
        .key_id;
    let made = e
        .kms
        .generate_data_key(
            &admin,
            GenerateDataKeyRequest {
                key_id: key,
                encryption_context: Some(context()),
                key_spec: Some(DataKeySpec::Aes256),
                ..GenerateDataKeyRequest::default()
            },
            false,
        )
        .await
        .result
        .unwrap();
    let ciphertext = B64.encode(&made.ciphertext_blob);
    let expected = e
        .kms
        .decrypt(
            &admin,
            DecryptRequest {
                ciphertext_blob: made.ciphertext_blob.clone(),
                encryption_context: Some(context()),
                ..DecryptRequest::default()
            },
        )
        .await
        .result
        .unwrap()
        .plaintext;

    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    std::fs::create_dir(&keys).unwrap();
    let env = |token_file: PathBuf| Environment {
        config: Config {
            dir: keys.clone(),
            data_keys: vec![DataKey {
                name: "db".into(),
                file: "db.key".into(),
                keys: vec![Entry {
                    id: "db-1".into(),
                    generation: 1,
                    ciphertext: ciphertext.clone(),
                    encryption_context: context(),
                }],
            }],
        },
        token_file,
        role_arn: format!("arn:aws:iam::{ACCOUNT}:role/kubekms"),
        endpoint: e.url.clone(),
        region: REGION.into(),
    };

    let written = init(&env(token_file(&e, dir.path(), "app", 1)))
        .await
        .unwrap();
    assert_eq!(written, 1);
    assert_eq!(expected.len(), 32);
    assert_eq!(std::fs::read(keys.join("db.key")).unwrap(), *expected);

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
