//! The remote transport against a real engine on loopback: the operator's token exchanged for
//! a session that acts as the operator's principal, typed answers, refusals by variant; and the
//! pieces (STS XML, error bodies, retry rules) on their own.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use kubekms_engine::clock::{Clock, SystemClock};
use kubekms_engine::identity::testing::{self, FakeTokenReviewer as FakeCluster, LoopbackEngine};
use kubekms_engine::identity::{IdentityMap, ReviewedToken};
use kubekms_proto::ops::CreateKeyRequest;
use kubekms_proto::vocab::KeyState;

use super::*;
use crate::engine::EngineClient;
use crate::error::Error;

const ACCOUNT: &str = "111122223333";
const REGION: &str = "eu-west-1";
const OPERATOR_SA: &str = "system:serviceaccount:kubekms-system:kubekms-operator";

/// A JWT-shaped token valid for an hour, distinct per `n`.
fn jwt(n: u32) -> String {
    let now = u64::try_from(SystemClock::new().now_millis() / 1000).unwrap_or(0);
    testing::jwt(now + 3600, n)
}

struct Harness {
    /// Serves until the harness is dropped.
    _engine: LoopbackEngine,
    cluster: Arc<FakeCluster>,
    url: String,
    dir: tempfile::TempDir,
}

impl Harness {
    async fn start() -> Self {
        let engine = LoopbackEngine::start(
            IdentityMap {
                admin_groups: vec!["system:masters".into()],
                operator_service_account: Some(OPERATOR_SA.into()),
                webhook_service_account: None,
            },
            ACCOUNT,
        )
        .await
        .unwrap();
        Self {
            cluster: engine.cluster.clone(),
            url: engine.url.clone(),
            _engine: engine,
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// A token file holding a token the cluster knows as `username`.
    fn token_file(&self, n: u32, username: &str) -> PathBuf {
        let token = jwt(n);
        self.cluster.known.lock().insert(
            token.clone(),
            ReviewedToken {
                username: username.into(),
                groups: vec!["system:serviceaccounts".into()],
            },
        );
        let path = self.dir.path().join(format!("token-{n}"));
        std::fs::write(&path, format!("{token}\n")).unwrap();
        path
    }

    fn remote(&self, token_file: PathBuf) -> Arc<RemoteEngine> {
        Arc::new(
            RemoteEngine::new(RemoteSettings {
                ca_bundle: None,
                server_name: None,
                endpoint: Some(self.url.clone()),
                endpoint_fixed: true,
                token_file,
                account: ACCOUNT.into(),
                region: REGION.into(),
            })
            .unwrap(),
        )
    }

    fn client(&self, token_file: PathBuf) -> EngineClient {
        EngineClient::remote(
            self.remote(token_file),
            crate::run::operator_caller(ACCOUNT, REGION),
        )
    }
}

fn create_request(client: &EngineClient, description: &str) -> CreateKeyRequest {
    CreateKeyRequest {
        description: Some(description.into()),
        policy: Some(client.default_key_policy("shop").to_string()),
        ..CreateKeyRequest::default()
    }
}

#[tokio::test]
async fn the_operator_manages_keys_over_http_as_its_principal() {
    let h = Harness::start().await;
    let client = h.client(h.token_file(1, OPERATOR_SA));
    // Only the operator's principal (KeyCreator) may create a key: a member would be refused.
    let created = client
        .create_key(create_request(&client, "made remotely"))
        .await
        .unwrap();
    assert!(created
        .arn
        .starts_with("arn:aws:kms:eu-west-1:111122223333:key/"));
    let described = client.describe_key(&created.key_id).await.unwrap();
    assert_eq!(described.description, "made remotely");
    assert_eq!(described.key_state, KeyState::Enabled);
    client
        .tag(
            &created.key_id,
            vec![kubekms_proto::ops::Tag {
                key: "kubekms.io/name".into(),
                value: "k".into(),
            }],
        )
        .await
        .unwrap();
    assert_eq!(
        client.tags(&created.key_id).await.unwrap()["kubekms.io/name"],
        "k"
    );
    client.set_enabled(&created.key_id, false).await.unwrap();
    assert_eq!(
        client
            .describe_key(&created.key_id)
            .await
            .unwrap()
            .key_state,
        KeyState::Disabled
    );
    let listed = client.list_keys(None).await.unwrap();
    assert!(listed.keys.iter().any(|k| k.key_id == created.key_id));
    // One exchange for all those calls.
    assert_eq!(h.cluster.reviews.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn the_operator_hears_of_changed_keys_by_long_poll() {
    use crate::engine::KeyFeed;
    use futures::StreamExt;
    let h = Harness::start().await;
    let client = h.client(h.token_file(1, OPERATOR_SA));
    let key = client
        .create_key(create_request(&client, "watched"))
        .await
        .unwrap()
        .key_id;
    // Polled from now on, as the controller polls it: the first poll only takes a position.
    let (tx, mut feed) = tokio::sync::mpsc::unbounded_channel();
    let polling = tokio::spawn(client.key_changes().for_each(move |change| {
        let _ = tx.send(change);
        std::future::ready(())
    }));
    tokio::time::sleep(Duration::from_millis(300)).await;
    client.set_enabled(&key, false).await.unwrap();
    let heard = tokio::time::timeout(Duration::from_secs(10), feed.recv())
        .await
        .expect("the change arrives long before the poll's 20 s wait ends");
    // Revision 2: created, then disabled.
    let changed = |revision| KeyFeed::Changed {
        key_id: key.clone(),
        revision: Some(revision),
    };
    assert_eq!(heard, Some(changed(2)));
    client.set_enabled(&key, true).await.unwrap();
    let heard = tokio::time::timeout(Duration::from_secs(10), feed.recv())
        .await
        .unwrap();
    assert_eq!(heard, Some(changed(3)));
    polling.abort();
}

#[tokio::test]
async fn refusals_come_back_as_the_engines_variants() {
    let h = Harness::start().await;
    let client = h.client(h.token_file(2, OPERATOR_SA));
    let missing = client
        .describe_key("1234abcd-12ab-34cd-56ef-1234567890ab")
        .await
        .unwrap_err();
    assert!(missing.is_not_found(), "{missing}");
    assert!(matches!(
        missing,
        Error::Kms {
            op: Operation::DescribeKey,
            source: KmsError::NotFound(_)
        }
    ));
    let created = client
        .create_key(create_request(&client, "x"))
        .await
        .unwrap();
    client.schedule_deletion(&created.key_id, 7).await.unwrap();
    let refused = client.set_enabled(&created.key_id, true).await.unwrap_err();
    assert!(
        matches!(refused.engine_error(), Some(KmsError::InvalidState(_))),
        "{refused}"
    );
    let bad_alias = client
        .create_alias("not-an-alias", &created.key_id)
        .await
        .unwrap_err();
    assert!(
        matches!(
            bad_alias.engine_error(),
            Some(KmsError::InvalidAliasName(_) | KmsError::Validation(_))
        ),
        "{bad_alias}"
    );
}

#[tokio::test]
async fn another_service_account_is_not_the_operator() {
    let h = Harness::start().await;
    let client = h.client(h.token_file(3, "system:serviceaccount:shop:orders"));
    let refused = client
        .create_key(create_request(&client, "x"))
        .await
        .unwrap_err();
    assert!(
        matches!(refused.engine_error(), Some(KmsError::AccessDenied(_))),
        "{refused}"
    );
}

#[tokio::test]
async fn a_token_the_cluster_refuses_is_an_unreachable_engine_naming_why() {
    let h = Harness::start().await;
    let path = h.dir.path().join("unknown");
    std::fs::write(&path, jwt(4)).unwrap();
    let client = h.client(path.clone());
    let err = client.describe_key("k").await.unwrap_err();
    let Error::EngineUnreachable {
        source: RemoteError::Exchange { source },
        ..
    } = &err
    else {
        panic!("{err}");
    };
    assert!(
        matches!(refused(source.clone()), KmsError::InvalidIdentityToken(_)),
        "{err}"
    );
    assert_eq!(err.reason(), "EngineUnreachable");
    // Calls right after fail at once with it, without asking the cluster again...
    let again = client.describe_key("k").await.unwrap_err();
    assert!(
        matches!(
            again,
            Error::EngineUnreachable {
                source: RemoteError::RecentExchangeFailure(_),
                ..
            }
        ),
        "{again}"
    );
    assert_eq!(h.cluster.reviews.load(Ordering::SeqCst), 1);
    // ...and a little later the (now good) token is exchanged.
    let good = h.token_file(40, OPERATOR_SA);
    std::fs::rename(good, &path).unwrap();
    tokio::time::sleep(kubekms_proto::client::EXCHANGE_RETRY_AFTER).await;
    client.list_keys(None).await.unwrap();
    // A missing token file names the file.
    let err = h
        .client(h.dir.path().join("absent"))
        .describe_key("k")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("absent"), "{err}");
}

#[tokio::test]
async fn the_token_file_is_read_again_for_each_exchange() {
    let h = Harness::start().await;
    let path = h.token_file(5, OPERATOR_SA);
    let remote = h.remote(path.clone());
    let client = EngineClient::remote(remote.clone(), crate::run::operator_caller(ACCOUNT, REGION));
    client.list_keys(None).await.unwrap();
    // kubelet rotates the token; the old one stops being accepted.
    let old = std::fs::read_to_string(&path).unwrap();
    let rotated = h.token_file(6, OPERATOR_SA);
    std::fs::rename(&rotated, &path).unwrap();
    h.cluster.known.lock().remove(old.trim());
    // The session in hand goes on working until it is renewed; a renewal reads the new file.
    remote.forget_session().await;
    client.list_keys(None).await.unwrap();
    assert_eq!(h.cluster.reviews.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn an_unknown_or_unreachable_engine_is_reported_as_such() {
    let remote = RemoteEngine::new(RemoteSettings {
        ca_bundle: None,
        server_name: None,
        endpoint: None,
        endpoint_fixed: false,
        token_file: "/nonexistent".into(),
        account: ACCOUNT.into(),
        region: REGION.into(),
    })
    .unwrap();
    let answer: Result<kubekms_proto::ops::Empty, CallError> =
        remote.call(Operation::ListKeys, &()).await;
    assert!(matches!(
        answer,
        Err(CallError::Unreachable(RemoteError::NoEndpoint))
    ));

    // Nothing listens there: a connect error, never sent, so tried twice and reported.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    remote
        .set_endpoint(&format!("http://127.0.0.1:{port}"))
        .unwrap();
    // The exchange is what reaches the engine first; it needs a token.
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("t");
    std::fs::write(&token, jwt(7)).unwrap();
    let remote = RemoteEngine::new(RemoteSettings {
        ca_bundle: None,
        server_name: None,
        endpoint: Some(format!("http://127.0.0.1:{port}")),
        endpoint_fixed: true,
        token_file: token,
        account: ACCOUNT.into(),
        region: REGION.into(),
    })
    .unwrap();
    let answer: Result<kubekms_proto::ops::Empty, CallError> =
        remote.call(Operation::ListKeys, &()).await;
    let Err(CallError::Unreachable(e @ RemoteError::Transport { .. })) = answer else {
        panic!("expected a transport error");
    };
    assert!(e.never_sent(), "{e}");
}

#[test]
fn refusals_become_the_engines_errors_sts_names_included() {
    let refusal = |aws_type: &str| Refusal {
        aws_type: aws_type.into(),
        message: "m".into(),
    };
    assert!(matches!(
        refused(refusal("InvalidIdentityToken")),
        KmsError::InvalidIdentityToken(m) if m == "m"
    ));
    assert!(matches!(
        refused(refusal("ExpiredTokenException")),
        KmsError::ExpiredToken(_)
    ));
    assert!(matches!(
        refused(refusal("IDPCommunicationError")),
        KmsError::IdpCommunication(_)
    ));
    assert!(matches!(
        refused(refusal("ValidationError")),
        KmsError::Validation(_)
    ));
    assert!(matches!(
        refused(refusal("AccessDenied")),
        KmsError::AccessDenied(_)
    ));
    assert!(matches!(
        refused(refusal("InvalidAction")),
        KmsError::UnsupportedOperation(_)
    ));
    assert!(matches!(
        refused(refusal("com.amazonaws.kms#DisabledException")),
        KmsError::Disabled(_)
    ));
    assert!(matches!(
        refused(refusal("InternalFailure")),
        KmsError::Internal(_)
    ));
}
