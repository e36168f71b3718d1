//! The cluster-backed key store against a real API server: the local control plane from
//! `e2e/scripts/control-plane.sh`, started here and stopped when the test ends, pass or fail.
//!
//! One test function runs the scenarios in turn, each in its own namespace, so the control
//! plane starts once (about 10 s) and is always stopped by the guard.

// Test code: a panic is how a failed expectation is reported.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::ByteString;
use kube::api::{Api, DeleteParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::Client;
use kubekms_engine::clock::{SystemClock, MILLIS_PER_DAY};
use kubekms_engine::crypto::{KeyMaterial, RootKey};
use kubekms_engine::record::{AliasRecord, KeyId, Scope};
use kubekms_engine::service::{Caller, Kms, Principal};
use kubekms_engine::store::KeyStore;
use kubekms_operator::store::{
    alias_secret_name, key_secret_name, root_key_from_secret, KubeStore,
};
use kubekms_proto::Operation;
use serde_json::{json, Value};
use tokio::task::JoinHandle;

/// Through the `CARGO_MANIFEST_DIR` cargo sets when it runs the test: a binary reused from
/// another checkout's build must not run that checkout's script.
fn script() -> PathBuf {
    let dir = std::env::var("CARGO_MANIFEST_DIR")
        .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_owned());
    Path::new(&dir).join("../e2e/scripts/control-plane.sh")
}
const CP_DIR: &str = "/tmp/kubekms-cp-store";
/// How long another replica may take to see a change before the test fails.
const PROPAGATION: Duration = Duration::from_secs(10);
const ROOT: [u8; 32] = [0x5a; 32];
const ACCOUNT: &str = "111122223333";
const REGION: &str = "eu-west-1";

/// Stops the control plane however the test ends.
struct ControlPlane {
    dir: PathBuf,
}

impl ControlPlane {
    fn start(dir: &str) -> Self {
        let guard = ControlPlane {
            dir: PathBuf::from(dir),
        };
        guard.run("start");
        guard
    }

    fn run(&self, command: &str) {
        let out = Command::new(script())
            .arg(command)
            .arg(&self.dir)
            .output()
            .expect("run control-plane.sh");
        assert!(
            out.status.success(),
            "`control-plane.sh {command} {}` failed (was `make setup` run?):\n{}",
            self.dir.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// SIGKILL the kube-apiserver this guard started, by its pid file.
    fn kill_apiserver(&self) {
        let pid = std::fs::read_to_string(self.dir.join("run/kube-apiserver.pid")).unwrap();
        let status = Command::new("kill")
            .args(["-KILL", pid.trim()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    fn kubeconfig(&self) -> PathBuf {
        self.dir.join("kubeconfig")
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        let _ = Command::new(script()).arg("stop").arg(&self.dir).output();
    }
}

async fn client(kubeconfig: &Path) -> Client {
    let kc = Kubeconfig::read_from(kubeconfig).expect("read kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .expect("kubeconfig");
    Client::try_from(config).expect("client")
}

async fn namespace(client: &Client, prefix: &str) -> String {
    let name = format!(
        "{prefix}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    };
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .expect("create namespace");
    name
}

async fn drop_namespace(client: &Client, name: &str) {
    let _ = Api::<Namespace>::all(client.clone())
        .delete(name, &DeleteParams::default())
        .await;
}

fn root() -> RootKey {
    RootKey::from_bytes(&ROOT).unwrap()
}

fn ctx() -> Caller {
    Caller {
        scope: Scope::new(ACCOUNT, REGION),
        principal: Principal::new(kubekms_proto::principal::root_arn(ACCOUNT)),
        request_id: "store-test".into(),
    }
}

/// An engine over its own `KubeStore`, as one replica would run it.
struct Replica {
    store: Arc<KubeStore>,
    kms: Arc<Kms>,
    clock: Arc<SystemClock>,
    watch: Option<JoinHandle<()>>,
}

impl Replica {
    async fn open(client: &Client, ns: &str, watch: bool) -> Self {
        let store = Arc::new(KubeStore::new(client.clone(), ns));
        let clock = SystemClock::new();
        let kms = Kms::open(store.clone(), root(), clock.clone())
            .await
            .expect("open engine over the cluster store");
        let mut replica = Replica {
            store,
            kms,
            clock,
            watch: None,
        };
        if watch {
            replica.start_watch();
        }
        replica
    }

    fn start_watch(&mut self) {
        let (watch, changes) = self.store.watch();
        tokio::spawn(self.kms.clone().follow(changes));
        self.watch = Some(tokio::spawn(watch));
    }

    async fn call(&self, op: &str, body: Value) -> Result<Value, String> {
        let op = Operation::from_name(op).expect("a KMS operation");
        let resp =
            kubekms_engine::api::json::dispatch(&self.kms, &ctx(), op, body.to_string().as_bytes())
                .await;
        match resp.result {
            Ok(bytes) => Ok(serde_json::from_slice(&bytes).expect("response JSON")),
            Err(e) => Err(e.aws_type().to_string()),
        }
    }

    async fn ok(&self, op: &str, body: Value) -> Value {
        match self.call(op, body.clone()).await {
            Ok(v) => v,
            Err(e) => panic!("{op} {body} failed: {e}"),
        }
    }

    async fn create_key(&self, description: &str) -> String {
        let out = self
            .ok("CreateKey", json!({"Description": description}))
            .await;
        out["KeyMetadata"]["KeyId"].as_str().unwrap().to_string()
    }

    async fn encrypt(&self, key: &str, plaintext: &[u8]) -> String {
        let out = self
            .ok(
                "Encrypt",
                json!({"KeyId": key, "Plaintext": B64.encode(plaintext)}),
            )
            .await;
        out["CiphertextBlob"].as_str().unwrap().to_string()
    }

    async fn decrypt(&self, blob: &str) -> Result<Vec<u8>, String> {
        let out = self
            .call("Decrypt", json!({"CiphertextBlob": blob}))
            .await?;
        Ok(B64.decode(out["Plaintext"].as_str().unwrap()).unwrap())
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        if let Some(watch) = self.watch.take() {
            watch.abort();
        }
    }
}

/// Poll `check` until it returns `Some`, failing after [`PROPAGATION`].
async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            start.elapsed() < PROPAGATION,
            "not within {PROPAGATION:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[test]
fn cluster_key_store() {
    let cp = ControlPlane::start(CP_DIR);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let client = client(&cp.kubeconfig()).await;
        let t = Instant::now();
        round_trips(&client).await;
        eprintln!("round trips: {:?}", t.elapsed());
        let t = Instant::now();
        replicas_share_keys(&client).await;
        eprintln!("replicas share keys: {:?}", t.elapsed());
        let t = Instant::now();
        writes_from_a_stale_replica_conflict(&client).await;
        eprintln!("conflicting writes: {:?}", t.elapsed());
        let t = Instant::now();
        root_key_creation_race(&client).await;
        eprintln!("root key race: {:?}", t.elapsed());
        let t = Instant::now();
        reopened_engine_keeps_keys(&client).await;
        eprintln!("reopen: {:?}", t.elapsed());
        let t = Instant::now();
        a_new_watch_forgets_what_went_away(&client).await;
        eprintln!("re-list: {:?}", t.elapsed());
        let t = Instant::now();
        engine_serves_through_an_outage(&cp, &client).await;
        eprintln!("outage: {:?}", t.elapsed());
    });
}

async fn round_trips(client: &Client) {
    let ns = namespace(client, "store-rt").await;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let a = Replica::open(client, &ns, false).await;
    let scope = Scope::new(ACCOUNT, REGION);

    let key = a.create_key("first").await;
    let secret = secrets.get(&key_secret_name(&key)).await.unwrap();
    let labels = secret.metadata.labels.clone().unwrap();
    assert_eq!(labels["app.kubernetes.io/managed-by"], "kubekms");
    assert_eq!(labels["kubekms.io/record"], "key");
    let stored: Value = serde_json::from_slice(&secret.data.as_ref().unwrap()["record"].0).unwrap();
    assert_eq!(stored["key_id"], key.as_str());
    assert_eq!(stored["versions"].as_array().unwrap().len(), 1);

    // A second store reads what the first wrote.
    let reader = KubeStore::new(client.clone(), &ns);
    let snapshot = reader.load().await.unwrap();
    assert_eq!(snapshot.keys.len(), 1);
    assert_eq!(snapshot.keys[0].key_id.to_string(), key);
    assert_eq!(snapshot.keys[0].description, "first");
    assert!(snapshot.aliases.is_empty());

    // Replace.
    a.ok(
        "UpdateKeyDescription",
        json!({"KeyId": key, "Description": "second"}),
    )
    .await;
    let snapshot = reader.load().await.unwrap();
    assert_eq!(snapshot.keys.len(), 1);
    assert_eq!(snapshot.keys[0].description, "second");

    // Aliases: create, re-point, delete.
    let alias = |target: &str| AliasRecord {
        scope: scope.clone(),
        name: "alias/team/app".into(),
        target_key_id: KeyId::parse(target).expect("a key id"),
        created: 1,
        updated: 2,
    };
    a.store.put_alias(&alias(&key)).await.unwrap();
    let alias_secret = secrets
        .get(&alias_secret_name(&scope, "alias/team/app"))
        .await
        .unwrap();
    assert_eq!(
        alias_secret.metadata.labels.unwrap()["kubekms.io/record"],
        "alias"
    );
    let snapshot = reader.load().await.unwrap();
    assert_eq!(snapshot.aliases.len(), 1);
    assert_eq!(snapshot.aliases[0].name, "alias/team/app");
    assert_eq!(snapshot.aliases[0].target_key_id.to_string(), key);
    // The reader loaded the alias, so it may replace it too.
    let other = uuid::Uuid::new_v4().to_string();
    reader.put_alias(&alias(&other)).await.unwrap();
    let snapshot = a.store.load().await.unwrap();
    assert_eq!(snapshot.aliases.len(), 1);
    assert_eq!(snapshot.aliases[0].target_key_id.to_string(), other);
    a.store
        .delete_alias(&scope, "alias/team/app")
        .await
        .unwrap();
    a.store
        .delete_alias(&scope, "alias/team/app")
        .await
        .expect("deleting a deleted alias is fine");
    assert!(reader.load().await.unwrap().aliases.is_empty());

    // Delete is idempotent.
    a.store
        .delete_key(&scope, KeyId::parse(&key).expect("a key id"))
        .await
        .unwrap();
    a.store
        .delete_key(&scope, KeyId::parse(&key).expect("a key id"))
        .await
        .expect("deleting a deleted key is fine");
    assert!(reader.load().await.unwrap().keys.is_empty());
    assert!(secrets
        .get_opt(&key_secret_name(&key))
        .await
        .unwrap()
        .is_none());

    // A malformed record is named, its data never quoted.
    let bogus = Secret {
        metadata: ObjectMeta {
            name: Some("kubekms-key-bogus".into()),
            labels: Some(
                [
                    (
                        "app.kubernetes.io/managed-by".to_string(),
                        "kubekms".to_string(),
                    ),
                    ("kubekms.io/record".to_string(), "key".to_string()),
                ]
                .into(),
            ),
            ..ObjectMeta::default()
        },
        data: Some(
            [(
                "record".to_string(),
                ByteString(br#"{"key_id": "SECRETDATA-1234", "spec": 7"#.to_vec()),
            )]
            .into(),
        ),
        ..Secret::default()
    };
    secrets
        .create(&PostParams::default(), &bogus)
        .await
        .unwrap();
    let err = match reader.load().await {
        Err(e) => e.to_string(),
        Ok(_) => panic!("a malformed record Secret was accepted"),
    };
    assert!(err.contains("kubekms-key-bogus"), "{err}");
    assert!(!err.contains("SECRETDATA"), "{err}");
    drop(a);
    drop_namespace(client, &ns).await;
}

async fn replicas_share_keys(client: &Client) {
    let ns = namespace(client, "store-replicas").await;
    let a = Replica::open(client, &ns, true).await;
    let b = Replica::open(client, &ns, true).await;

    let key = a.create_key("shared").await;
    let ct1 = a.encrypt(&key, b"version one").await;
    a.ok("RotateKeyOnDemand", json!({"KeyId": key})).await;
    let ct2 = a.encrypt(&key, b"version two").await;
    assert_ne!(
        a.decrypt(&ct1).await.unwrap(),
        a.decrypt(&ct2).await.unwrap()
    );

    // B serves the key, both versions, without being told.
    let t = Instant::now();
    eventually("B decrypts both versions written by A", || async {
        match (b.decrypt(&ct1).await, b.decrypt(&ct2).await) {
            (Ok(p1), Ok(p2)) => Some((p1, p2)),
            _ => None,
        }
    })
    .await
    .eq(&(b"version one".to_vec(), b"version two".to_vec()))
    .then_some(())
    .expect("B decrypted to the wrong plaintexts");
    eprintln!("  B saw A's rotation after {:?}", t.elapsed());

    // The other way round, through an alias A creates: B writes a rotation of its own.
    a.ok(
        "CreateAlias",
        json!({"AliasName": "alias/shared", "TargetKeyId": key}),
    )
    .await;
    eventually("B resolves A's alias", || async {
        b.call("DescribeKey", json!({"KeyId": "alias/shared"}))
            .await
            .ok()
    })
    .await;
    b.ok("RotateKeyOnDemand", json!({"KeyId": key})).await;
    let ct3 = b.encrypt("alias/shared", b"version three").await;
    let plain = eventually("A decrypts B's newest version", || async {
        a.decrypt(&ct3).await.ok()
    })
    .await;
    assert_eq!(plain, b"version three");
    let stored = KubeStore::new(client.clone(), &ns).load().await.unwrap();
    assert_eq!(stored.keys[0].versions.len(), 3);

    // Deletion: A schedules it, B refuses the key, A's window ends, B forgets key and alias.
    a.ok(
        "ScheduleKeyDeletion",
        json!({"KeyId": key, "PendingWindowInDays": 7}),
    )
    .await;
    eventually("B sees the pending deletion", || async {
        (b.decrypt(&ct1).await == Err("KMSInvalidStateException".to_string())).then_some(())
    })
    .await;
    a.clock.advance(8 * MILLIS_PER_DAY);
    a.kms.run_due_work().await.unwrap();
    assert_eq!(
        a.call("DescribeKey", json!({"KeyId": key})).await,
        Err("NotFoundException".to_string())
    );
    eventually("B forgets the deleted key and its alias", || async {
        let key_gone = b.call("DescribeKey", json!({"KeyId": key})).await
            == Err("NotFoundException".to_string());
        let alias_gone = b
            .call("DescribeKey", json!({"KeyId": "alias/shared"}))
            .await
            == Err("NotFoundException".to_string());
        (key_gone && alias_gone).then_some(())
    })
    .await;
    // B's own clock never reached the end of the window: it learnt the deletion from A.
    assert_eq!(b.clock.offset(), 0);
    drop((a, b));
    drop_namespace(client, &ns).await;
}

/// Writes are conditioned on the version a replica last saw, so two replicas cannot overwrite
/// each other's key versions.
async fn writes_from_a_stale_replica_conflict(client: &Client) {
    let ns = namespace(client, "store-conflict").await;
    let a = Replica::open(client, &ns, true).await;
    let key = a.create_key("contended").await;
    // B loads the key but does not watch: its view goes stale.
    let mut b = Replica::open(client, &ns, false).await;
    a.ok("RotateKeyOnDemand", json!({"KeyId": key})).await;
    let ct2 = a.encrypt(&key, b"under version two").await;

    assert_eq!(
        b.call(
            "UpdateKeyDescription",
            json!({"KeyId": key, "Description": "stale"})
        )
        .await,
        Err("KMSInternalException".to_string()),
        "a write from a stale replica must not overwrite a newer record"
    );
    let stored = KubeStore::new(client.clone(), &ns).load().await.unwrap();
    assert_eq!(stored.keys[0].versions.len(), 2, "A's rotation was lost");
    assert_eq!(stored.keys[0].description, "contended");

    // Once B watches, it catches up and its write goes through on top of A's.
    b.start_watch();
    eventually("B's retried write succeeds", || async {
        b.call(
            "UpdateKeyDescription",
            json!({"KeyId": key, "Description": "fresh"}),
        )
        .await
        .ok()
    })
    .await;
    let stored = KubeStore::new(client.clone(), &ns).load().await.unwrap();
    assert_eq!(stored.keys[0].versions.len(), 2);
    assert_eq!(stored.keys[0].description, "fresh");
    assert_eq!(b.decrypt(&ct2).await.unwrap(), b"under version two");

    // Both replicas rotate at once: every rotation acknowledged is in the store.
    let (ra, rb) = tokio::join!(
        a.call("RotateKeyOnDemand", json!({"KeyId": key})),
        b.call("RotateKeyOnDemand", json!({"KeyId": key})),
    );
    let acknowledged = [&ra, &rb].iter().filter(|r| r.is_ok()).count();
    for r in [&ra, &rb] {
        if let Err(e) = r {
            assert_eq!(e, "KMSInternalException");
        }
    }
    assert!(acknowledged >= 1, "{ra:?} {rb:?}");
    let stored = KubeStore::new(client.clone(), &ns).load().await.unwrap();
    assert_eq!(
        stored.keys[0].versions.len(),
        2 + acknowledged,
        "an acknowledged rotation was overwritten ({ra:?} {rb:?})"
    );
    // Whatever each replica encrypts now, the other decrypts.
    let from_a = eventually("A encrypts after the race", || async {
        a.call(
            "Encrypt",
            json!({"KeyId": key, "Plaintext": B64.encode(b"from a")}),
        )
        .await
        .ok()
    })
    .await;
    let from_b = b.encrypt(&key, b"from b").await;
    let from_a = from_a["CiphertextBlob"].as_str().unwrap().to_string();
    eventually(
        "each replica decrypts the other's newest ciphertext",
        || async {
            (b.decrypt(&from_a).await.ok()? == b"from a"
                && a.decrypt(&from_b).await.ok()? == b"from b")
                .then_some(())
        },
    )
    .await;
    drop((a, b));
    drop_namespace(client, &ns).await;
}

async fn root_key_creation_race(client: &Client) {
    let ns = namespace(client, "store-root").await;
    let name = "kubekms-root-key";
    assert!(
        root_key_from_secret(client.clone(), &ns, name, false)
            .await
            .is_err(),
        "a missing root key Secret without `create` must be an error"
    );
    let (k1, k2, k3) = tokio::join!(
        root_key_from_secret(client.clone(), &ns, name, true),
        root_key_from_secret(client.clone(), &ns, name, true),
        root_key_from_secret(client.clone(), &ns, name, true),
    );
    let (k1, k2, k3) = (k1.unwrap(), k2.unwrap(), k3.unwrap());
    let later = root_key_from_secret(client.clone(), &ns, name, false)
        .await
        .unwrap();
    let material = KeyMaterial::from_slice(b"0123456789abcdef0123456789abcdef");
    let aad = b"store-test";
    let wrapped = k1.wrap(aad, &material).unwrap();
    for other in [&k2, &k3, &later] {
        let unwrapped = other.unwrap(aad, &wrapped).expect("same root key");
        assert_eq!(unwrapped.expose(), material.expose());
    }
    // And it is not just any key: one made elsewhere does not open it.
    assert!(root().unwrap(aad, &wrapped).is_err());

    let secret = Api::<Secret>::namespaced(client.clone(), &ns)
        .get(name)
        .await
        .unwrap();
    assert_eq!(secret.immutable, Some(true));
    let data = &secret.data.unwrap()["root.key"].0;
    assert_eq!(data.len(), 65);
    assert!(data[..64].iter().all(u8::is_ascii_hexdigit));
    drop_namespace(client, &ns).await;
}

async fn reopened_engine_keeps_keys(client: &Client) {
    let ns = namespace(client, "store-reopen").await;
    let a = Replica::open(client, &ns, true).await;
    let key = a.create_key("durable").await;
    let ct1 = a.encrypt(&key, b"before the restart").await;
    a.ok("RotateKeyOnDemand", json!({"KeyId": key})).await;
    let ct2 = a.encrypt(&key, b"after a rotation").await;
    a.ok(
        "CreateAlias",
        json!({"AliasName": "alias/durable", "TargetKeyId": key}),
    )
    .await;
    drop(a);

    let reopened = Replica::open(client, &ns, true).await;
    assert_eq!(reopened.decrypt(&ct1).await.unwrap(), b"before the restart");
    assert_eq!(reopened.decrypt(&ct2).await.unwrap(), b"after a rotation");
    let ct3 = reopened.encrypt("alias/durable", b"via alias").await;
    assert_eq!(reopened.decrypt(&ct3).await.unwrap(), b"via alias");
    drop(reopened);
    drop_namespace(client, &ns).await;
}

/// A replica that was not watching while a key and its alias were destroyed forgets them on
/// its (re-)list.
async fn a_new_watch_forgets_what_went_away(client: &Client) {
    let ns = namespace(client, "store-relist").await;
    let a = Replica::open(client, &ns, true).await;
    let key = a.create_key("short-lived").await;
    a.ok(
        "CreateAlias",
        json!({"AliasName": "alias/short", "TargetKeyId": key}),
    )
    .await;
    let kept = a.create_key("kept").await;
    let mut b = Replica::open(client, &ns, false).await;
    b.ok("DescribeKey", json!({"KeyId": "alias/short"})).await;

    a.ok(
        "ScheduleKeyDeletion",
        json!({"KeyId": key, "PendingWindowInDays": 7}),
    )
    .await;
    a.clock.advance(8 * MILLIS_PER_DAY);
    a.kms.run_due_work().await.unwrap();
    // B, not watching, still holds both.
    b.ok("DescribeKey", json!({"KeyId": key})).await;

    b.start_watch();
    eventually(
        "B forgets the key and alias missing from its list",
        || async {
            let key_gone = b.call("DescribeKey", json!({"KeyId": key})).await
                == Err("NotFoundException".to_string());
            let alias_gone = b.call("DescribeKey", json!({"KeyId": "alias/short"})).await
                == Err("NotFoundException".to_string());
            (key_gone && alias_gone).then_some(())
        },
    )
    .await;
    assert!(b.store.has_synced());
    b.ok("DescribeKey", json!({"KeyId": kept})).await;
    drop((a, b));
    drop_namespace(client, &ns).await;
}

/// With the API server gone, the engine keeps serving what it holds and refuses writes; once
/// the API server is back, its watch resumes without help.
async fn engine_serves_through_an_outage(cp: &ControlPlane, client: &Client) {
    let ns = namespace(client, "store-outage").await;
    let a = Replica::open(client, &ns, true).await;
    let key = a.create_key("through the outage").await;
    let ct = a.encrypt(&key, b"still here").await;
    let server_before = std::fs::read_to_string(cp.kubeconfig()).unwrap();

    // The API server dies (its graceful stop would wait on open watches for many seconds).
    cp.kill_apiserver();
    assert_eq!(a.decrypt(&ct).await.unwrap(), b"still here");
    let _ = a.encrypt(&key, b"encrypt needs no store").await;
    let t = Instant::now();
    assert_eq!(
        a.call("CreateKey", json!({})).await.err().as_deref(),
        Some("KMSInternalException"),
        "a write without the API server must fail, not be acknowledged"
    );
    assert!(t.elapsed() < Duration::from_secs(15), "{:?}", t.elapsed());

    eprintln!("  write refused after {:?}", t.elapsed());
    let phase = Instant::now();
    cp.run("start");
    eprintln!("  restarted in {:?}", phase.elapsed());
    let phase = Instant::now();
    assert_eq!(
        std::fs::read_to_string(cp.kubeconfig()).unwrap(),
        server_before,
        "the control plane came back on other ports; the test cannot tell a stuck watch apart"
    );
    // Another replica, started after the outage, rotates; A's resumed watch brings it.
    let b = Replica::open(&self::client(&cp.kubeconfig()).await, &ns, false).await;
    b.ok("RotateKeyOnDemand", json!({"KeyId": key})).await;
    let ct2 = b.encrypt(&key, b"after the outage").await;
    let plain = eventually("A's watch resumes after the outage", || async {
        a.decrypt(&ct2).await.ok()
    })
    .await;
    assert_eq!(plain, b"after the outage");
    eprintln!("  A caught up {:?} after the restart", phase.elapsed());
    drop((a, b));
    drop_namespace(client, &ns).await;
}
