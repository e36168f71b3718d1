//! Finding or making a pod's data keys at admission: the record of each (ServiceAccount, data
//! key) is read, and made or extended when the pod asks for a generation it does not have yet
//! (GenerateDataKeyWithoutPlaintext as the webhook's own identity; no plaintext ever reaches
//! the webhook). Several webhook replicas may admit pods of one ServiceAccount at once: a
//! record is created or replaced only if nobody else did first, and otherwise read again.
//!
//! The cluster (records, Keys, ServiceAccounts) and the engine are behind [`Cluster`] and
//! [`DataKeyMaker`], so the rules here are tested without either.

use std::collections::BTreeMap;

use async_trait::async_trait;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use kubekms_crds::{DataKey, DataKeyGeneration, DataKeySpec};

use crate::annotations::{DataKeyRequest, KeyRef};
use crate::mutate::{CaBundle, DataKeyCiphertexts};

/// How often a record is read again after another replica wrote it first.
const ATTEMPTS: usize = 5;

/// What the cluster knows about a Key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyFacts {
    /// The engine key's ARN (the Key's status.arn).
    pub arn: String,
    /// status.currentKeyVersion.
    pub version: i32,
}

/// How a conditional write went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Written {
    Done,
    /// Someone else created or changed the record first.
    Lost,
}

/// The cluster as admission needs it.
#[async_trait]
pub trait Cluster: Send + Sync {
    async fn record(&self, namespace: &str, name: &str) -> Result<Option<DataKey>, ClusterError>;
    /// The record as a watch last saw it (`Some(None)`: the watch has none), or `None` when
    /// the implementation keeps no watch. A first attempt trusts it: a stale copy still holds
    /// ciphertexts that decrypt, and a write based on it is refused if the record moved on
    /// (then it is read from the API server).
    fn cached_record(&self, _namespace: &str, _name: &str) -> Option<Option<DataKey>> {
        None
    }
    /// How many records ServiceAccount `service_account` has, as a watch last saw them;
    /// `None` when the implementation keeps no watch.
    fn cached_record_count(&self, _namespace: &str, _service_account: &str) -> Option<usize> {
        None
    }
    /// Create `record` unless it exists.
    async fn create_record(
        &self,
        namespace: &str,
        record: DataKey,
    ) -> Result<Written, ClusterError>;
    /// Replace `record` if its resourceVersion is still the stored one.
    async fn replace_record(
        &self,
        namespace: &str,
        record: DataKey,
    ) -> Result<Written, ClusterError>;
    async fn key(&self, namespace: &str, name: &str) -> Result<Option<KeyFacts>, ClusterError>;
    async fn service_account_exists(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<bool, ClusterError>;
    /// The engine's KMS and STS URL as pods reach it; `None` while it has no address yet.
    async fn engine_url(&self) -> Result<Option<String>, ClusterError>;
    /// Make sure `namespace` holds the engine's CA bundle for its pods (ConfigMap
    /// `ca.config_map`), as `ca` says.
    async fn ensure_ca(&self, namespace: &str, ca: &CaBundle) -> Result<(), ClusterError>;
}

/// A failure to talk to the API server, with its source.
#[derive(Debug, thiserror::Error)]
#[error("{what}")]
pub struct ClusterError {
    pub what: String,
    #[source]
    pub source: Box<dyn std::error::Error + Send + Sync>,
}

/// A new data key's ciphertext.
pub struct MadeKey {
    pub ciphertext: Vec<u8>,
    /// The ARN of the key it was made under.
    pub key_arn: String,
}

/// Makes data keys without plaintext (the engine, as the webhook's identity).
#[async_trait]
pub trait DataKeyMaker: Send + Sync {
    async fn generate(
        &self,
        key_id: &str,
        context: &BTreeMap<String, String>,
        number_of_bytes: u32,
    ) -> Result<MadeKey, MakeError>;
    /// Where the engine is (found through the cluster, so it may come late or change).
    fn use_endpoint(&self, _url: &str) {}
}

/// Why the engine did not make a data key.
#[derive(Debug, thiserror::Error)]
pub enum MakeError {
    /// It answered no (the AWS error name and message).
    #[error("{0}")]
    Refused(String),
    /// It could not be asked.
    #[error("the engine could not be reached")]
    Unreachable(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// Why a pod's data keys could not be had; each message says what to do.
#[derive(Debug, thiserror::Error)]
pub enum DataKeyError {
    #[error(
        "data key {name:?}: Key {key:?} is not in namespace {namespace} or has no engine key yet \
         (kubectl get kmskey {key} -n {namespace}: it must be Ready)"
    )]
    KeyNotReady {
        name: String,
        key: String,
        namespace: String,
    },
    #[error("ServiceAccount {namespace}/{name} does not exist")]
    NoServiceAccount { namespace: String, name: String },
    #[error(
        "data key {name:?} of ServiceAccount {service_account} is made under {recorded_key} with \
         {recorded_bytes} bytes; the pod asks for {asked_key} with {asked_bytes}: a data key \
         keeps its Key and size, so name a new data key instead"
    )]
    Changed {
        name: String,
        service_account: String,
        recorded_key: String,
        recorded_bytes: u32,
        asked_key: String,
        asked_bytes: u32,
    },
    #[error("data key {name:?}: the engine refused to make it under {key}: {reason}")]
    Refused {
        name: String,
        key: String,
        reason: String,
    },
    #[error("data key {name:?}: the engine could not be reached")]
    Unreachable {
        name: String,
        #[source]
        source: MakeError,
    },
    #[error(
        "data key {name:?} of ServiceAccount {service_account} would be made now, and a dry run \
         makes nothing: create the pod for real, or a first pod of this ServiceAccount"
    )]
    DryRun {
        name: String,
        service_account: String,
    },
    #[error("data key {name:?}: its record kept changing under us; try again")]
    Contended { name: String },
    #[error(
        "data key {name:?} of ServiceAccount {service_account}: its record's name would be \
         longer than Kubernetes allows (253 characters, with the mirror's prefix); use a shorter \
         data key or ServiceAccount name"
    )]
    NameTooLong {
        name: String,
        service_account: String,
    },
    #[error(
        "ServiceAccount {service_account} has {held} data keys, the most one may have: delete \
         those no longer used (kubectl delete kmsdatakey {service_account}.<name>) or use \
         another ServiceAccount"
    )]
    TooMany {
        service_account: String,
        held: usize,
    },
    #[error("data key {name:?}: its record holds a ciphertext that is not base64")]
    BadRecord { name: String },
    #[error("the cluster")]
    Cluster(#[from] ClusterError),
}

/// The most data keys (records) one ServiceAccount may have: admission is reachable by
/// whatever can reach the webhook's port, so what it can make others store is bounded.
pub const MAX_DATA_KEYS: usize = 32;

/// Who a pod's data keys are for.
#[derive(Clone, Copy, Debug)]
pub struct Workload<'a> {
    pub namespace: &'a str,
    pub service_account: &'a str,
    /// A dry run only reads: a data key that would have to be made is refused.
    pub dry_run: bool,
}

/// The ciphertexts of a pod's data keys, found or made, oldest generation first.
pub async fn ciphertexts(
    cluster: &dyn Cluster,
    maker: &dyn DataKeyMaker,
    workload: Workload<'_>,
    requests: &BTreeMap<String, DataKeyRequest>,
) -> Result<Vec<DataKeyCiphertexts>, DataKeyError> {
    let mut out = Vec::with_capacity(requests.len());
    for (name, request) in requests {
        let record = record_with_generation(cluster, maker, workload, name, request).await?;
        out.push(for_pod(workload.namespace, &record.spec, request)?);
    }
    Ok(out)
}

/// The record of `name`, holding the generation the pod asks for.
async fn record_with_generation(
    cluster: &dyn Cluster,
    maker: &dyn DataKeyMaker,
    workload: Workload<'_>,
    name: &str,
    request: &DataKeyRequest,
) -> Result<DataKey, DataKeyError> {
    let Workload {
        namespace,
        service_account,
        dry_run,
    } = workload;
    if !DataKey::names_fit(service_account, name) {
        return Err(DataKeyError::NameTooLong {
            name: name.to_owned(),
            service_account: service_account.to_owned(),
        });
    }
    let record_name = DataKey::record_name(service_account, name);
    let asked_key = key_text(&request.key);
    let asked_bytes = request.size.bytes();
    let serves = |spec: &DataKeySpec| {
        spec.key == asked_key
            && spec.number_of_bytes == asked_bytes
            && spec
                .generations
                .iter()
                .any(|g| g.generation == request.generation)
    };
    for attempt in 0..ATTEMPTS {
        // First from the watch: every pod after a ServiceAccount's first makes no API call.
        let existing = match cluster.cached_record(namespace, &record_name) {
            // A dry run refuses what it would have to make, so it does not trust a watch that
            // has not seen a record yet.
            Some(seen) if attempt == 0 && (seen.is_some() || !dry_run) => seen,
            _ => cluster.record(namespace, &record_name).await?,
        };
        if let Some(record) = &existing {
            let spec = &record.spec;
            if spec.key != asked_key || spec.number_of_bytes != asked_bytes {
                return Err(DataKeyError::Changed {
                    name: name.to_owned(),
                    service_account: service_account.to_owned(),
                    recorded_key: spec.key.clone(),
                    recorded_bytes: spec.number_of_bytes,
                    asked_key,
                    asked_bytes,
                });
            }
            if serves(spec) {
                return Ok(record.clone());
            }
        }
        if dry_run {
            return Err(DataKeyError::DryRun {
                name: name.to_owned(),
                service_account: service_account.to_owned(),
            });
        }
        if existing.is_none() {
            let held = cluster
                .cached_record_count(namespace, service_account)
                .unwrap_or(0);
            if held >= MAX_DATA_KEYS {
                return Err(DataKeyError::TooMany {
                    service_account: service_account.to_owned(),
                    held,
                });
            }
        }
        // A new record is for a ServiceAccount that exists; looked up while the data key is
        // made (a key made for a missing ServiceAccount is dropped unrecorded). Records are
        // not owned by it: a ServiceAccount deleted and made again (an app reinstalled) finds
        // its data keys, and the data encrypted under them, where they were.
        let account_lookup = async {
            match &existing {
                Some(_) => Ok(true),
                None => {
                    cluster
                        .service_account_exists(namespace, service_account)
                        .await
                }
            }
        };
        let (exists, generation) = tokio::join!(
            account_lookup,
            make(maker, cluster, namespace, service_account, name, request)
        );
        if !exists? {
            return Err(DataKeyError::NoServiceAccount {
                namespace: namespace.to_owned(),
                name: service_account.to_owned(),
            });
        }
        let generation = generation?;
        let written = match existing {
            Some(mut record) => {
                record.spec.generations.push(generation);
                record.spec.generations.sort_by_key(|g| g.generation);
                let kept = record.clone();
                (cluster.replace_record(namespace, record).await?, kept)
            }
            None => {
                let mut record = DataKey::new(
                    &record_name,
                    DataKeySpec {
                        service_account: service_account.to_owned(),
                        name: name.to_owned(),
                        key: asked_key.clone(),
                        number_of_bytes: asked_bytes,
                        generations: vec![generation],
                    },
                );
                record.metadata.namespace = Some(namespace.to_owned());
                let kept = record.clone();
                (cluster.create_record(namespace, record).await?, kept)
            }
        };
        match written {
            (Written::Done, record) => return Ok(record),
            // Another replica wrote first: its record (and maybe the generation) is used.
            (Written::Lost, _) => continue,
        }
    }
    Err(DataKeyError::Contended {
        name: name.to_owned(),
    })
}

/// A new generation, made by the engine.
async fn make(
    maker: &dyn DataKeyMaker,
    cluster: &dyn Cluster,
    namespace: &str,
    service_account: &str,
    name: &str,
    request: &DataKeyRequest,
) -> Result<DataKeyGeneration, DataKeyError> {
    let (key_id, version) = match &request.key {
        KeyRef::Key(key) => match cluster.key(namespace, key).await? {
            Some(facts) => (facts.arn, facts.version),
            None => {
                return Err(DataKeyError::KeyNotReady {
                    name: name.to_owned(),
                    key: key.clone(),
                    namespace: namespace.to_owned(),
                })
            }
        },
        KeyRef::Alias(alias) => (alias.clone(), 0),
    };
    let context = DataKey::encryption_context(namespace, service_account, name);
    let made = maker
        .generate(&key_id, &context, request.size.bytes())
        .await
        .map_err(|e| match e {
            MakeError::Refused(reason) => DataKeyError::Refused {
                name: name.to_owned(),
                key: key_text(&request.key),
                reason,
            },
            unreachable @ MakeError::Unreachable(_) => DataKeyError::Unreachable {
                name: name.to_owned(),
                source: unreachable,
            },
        })?;
    Ok(DataKeyGeneration {
        generation: request.generation,
        ciphertext: B64.encode(&made.ciphertext),
        key_arn: made.key_arn,
        key_version: version,
    })
}

/// What the pod gets of a record: the generations up to the one it asks for.
fn for_pod(
    namespace: &str,
    spec: &DataKeySpec,
    request: &DataKeyRequest,
) -> Result<DataKeyCiphertexts, DataKeyError> {
    let keys = spec
        .generations
        .iter()
        .filter(|g| g.generation <= request.generation)
        .map(|g| {
            // A record is ours or the operator's; refuse one that was tampered with rather
            // than give the agent something it cannot use.
            B64.decode(&g.ciphertext)
                .map_err(|_| DataKeyError::BadRecord {
                    name: spec.name.clone(),
                })?;
            Ok(DataKey::sealed(namespace, spec, g))
        })
        .collect::<Result<Vec<_>, DataKeyError>>()?;
    Ok(DataKeyCiphertexts {
        name: spec.name.clone(),
        file: request.file.clone(),
        keys,
        mirror: DataKey::mirror_name(&DataKey::record_name(&spec.service_account, &spec.name)),
    })
}

/// The annotation's key reference as the record keeps it.
fn key_text(key: &KeyRef) -> String {
    match key {
        KeyRef::Key(name) | KeyRef::Alias(name) => name.clone(),
    }
}

/// A cluster and an engine in memory, for the tests of this module and of admission.
#[cfg(test)]
pub(crate) mod fakes {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;

    #[derive(Default)]
    pub struct FakeCluster {
        pub records: Mutex<BTreeMap<String, DataKey>>,
        /// Records another replica writes just before our next write.
        pub racing: Mutex<Option<DataKey>>,
        /// What a watch would have seen.
        pub cached: Mutex<BTreeMap<String, DataKey>>,
        /// CA bundles kept, by namespace.
        pub cas: Mutex<BTreeMap<String, String>>,
    }

    #[async_trait]
    impl Cluster for FakeCluster {
        fn cached_record(&self, _: &str, name: &str) -> Option<Option<DataKey>> {
            let cached = self.cached.lock().unwrap();
            (!cached.is_empty()).then(|| cached.get(name).cloned())
        }
        async fn record(&self, _: &str, name: &str) -> Result<Option<DataKey>, ClusterError> {
            Ok(self.records.lock().unwrap().get(name).cloned())
        }
        fn cached_record_count(&self, _: &str, service_account: &str) -> Option<usize> {
            let prefix = format!("{service_account}.");
            Some(
                self.records
                    .lock()
                    .unwrap()
                    .keys()
                    .filter(|name| name.starts_with(&prefix))
                    .count(),
            )
        }
        async fn create_record(&self, _: &str, record: DataKey) -> Result<Written, ClusterError> {
            if let Some(racer) = self.racing.lock().unwrap().take() {
                self.records
                    .lock()
                    .unwrap()
                    .insert(racer.metadata.name.clone().unwrap(), racer);
                return Ok(Written::Lost);
            }
            let name = record.metadata.name.clone().unwrap();
            let mut records = self.records.lock().unwrap();
            if records.contains_key(&name) {
                return Ok(Written::Lost);
            }
            records.insert(name, record);
            Ok(Written::Done)
        }
        async fn replace_record(&self, _: &str, record: DataKey) -> Result<Written, ClusterError> {
            let name = record.metadata.name.clone().unwrap();
            self.records.lock().unwrap().insert(name, record);
            Ok(Written::Done)
        }
        async fn key(&self, _: &str, name: &str) -> Result<Option<KeyFacts>, ClusterError> {
            Ok((name == "orders").then(|| KeyFacts {
                arn: "arn:aws:kms:us-east-1:111122223333:key/k1".into(),
                version: 3,
            }))
        }
        async fn service_account_exists(&self, _: &str, name: &str) -> Result<bool, ClusterError> {
            Ok(name == "app")
        }
        async fn engine_url(&self) -> Result<Option<String>, ClusterError> {
            Ok(Some("http://10.0.0.10:4599".into()))
        }
        async fn ensure_ca(&self, namespace: &str, ca: &CaBundle) -> Result<(), ClusterError> {
            self.cas
                .lock()
                .unwrap()
                .insert(namespace.to_owned(), ca.pem.clone());
            Ok(())
        }
    }

    #[derive(Default)]
    pub struct FakeMaker {
        pub made: AtomicUsize,
    }

    #[async_trait]
    impl DataKeyMaker for FakeMaker {
        async fn generate(
            &self,
            key_id: &str,
            context: &BTreeMap<String, String>,
            bytes: u32,
        ) -> Result<MadeKey, MakeError> {
            if key_id == "alias/forbidden" {
                return Err(MakeError::Refused("AccessDeniedException: no".into()));
            }
            assert!(context.contains_key("kubekms:service-account"));
            let n = self.made.fetch_add(1, Ordering::SeqCst);
            Ok(MadeKey {
                ciphertext: vec![u8::try_from(n).unwrap(); bytes as usize],
                key_arn: key_id.to_owned(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fakes::{FakeCluster, FakeMaker};
    use super::*;
    use crate::annotations::DataKeySize;
    use std::sync::atomic::Ordering;

    fn shop(service_account: &str) -> Workload<'_> {
        Workload {
            namespace: "shop",
            service_account,
            dry_run: false,
        }
    }

    fn request(key: KeyRef, generation: u32) -> BTreeMap<String, DataKeyRequest> {
        BTreeMap::from([(
            "db".to_owned(),
            DataKeyRequest {
                key,
                size: DataKeySize::Aes256,
                file: "db".into(),
                generation,
            },
        )])
    }

    #[tokio::test]
    async fn made_once_then_shared_and_extended_by_generation() {
        let cluster = FakeCluster::default();
        let maker = FakeMaker::default();
        let orders = || KeyRef::Key("orders".into());
        let first = ciphertexts(&cluster, &maker, shop("app"), &request(orders(), 1))
            .await
            .unwrap();
        let again = ciphertexts(&cluster, &maker, shop("app"), &request(orders(), 1))
            .await
            .unwrap();
        assert_eq!(first, again, "every replica gets the same ciphertext");
        assert_eq!(maker.made.load(Ordering::SeqCst), 1);
        let record = cluster.records.lock().unwrap()["app.db"].clone();
        assert_eq!(record.spec.generations[0].key_version, 3);
        assert_eq!(
            first[0].keys[0].encryption_context,
            DataKey::encryption_context("shop", "app", "db")
        );

        let rotated = ciphertexts(&cluster, &maker, shop("app"), &request(orders(), 2))
            .await
            .unwrap();
        let ids: Vec<&str> = rotated[0].keys.iter().map(|k| k.id.as_str()).collect();
        assert_eq!(ids, ["db-1", "db-2"], "the keyring keeps the older key");
        assert_eq!(rotated[0].keys[0], first[0].keys[0]);
        // A pod of the old template still gets generation 1 alone.
        let old = ciphertexts(&cluster, &maker, shop("app"), &request(orders(), 1))
            .await
            .unwrap();
        assert_eq!(old, first);
        assert_eq!(maker.made.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_record_name_kubernetes_would_refuse_is_refused_first() {
        let cluster = FakeCluster::default();
        let maker = FakeMaker::default();
        let long = "a".repeat(240);
        let refused = ciphertexts(
            &cluster,
            &maker,
            shop(&long),
            &request(KeyRef::Key("orders".into()), 1),
        )
        .await
        .unwrap_err();
        assert!(
            matches!(refused, DataKeyError::NameTooLong { .. }),
            "{refused}"
        );
        assert!(refused.to_string().contains("use a shorter"), "{refused}");
        assert_eq!(maker.made.load(Ordering::SeqCst), 0, "nothing made");
    }

    #[tokio::test]
    async fn a_service_account_holds_a_bounded_number_of_data_keys() {
        let cluster = FakeCluster::default();
        let maker = FakeMaker::default();
        for i in 0..MAX_DATA_KEYS {
            let mut requests = request(KeyRef::Key("orders".into()), 1);
            let asked = requests.remove("db").unwrap();
            requests.insert(format!("k{i}"), asked);
            ciphertexts(&cluster, &maker, shop("app"), &requests)
                .await
                .unwrap();
        }
        let refused = ciphertexts(
            &cluster,
            &maker,
            shop("app"),
            &request(KeyRef::Key("orders".into()), 1),
        )
        .await
        .unwrap_err();
        assert!(
            matches!(refused, DataKeyError::TooMany { held: 32, .. }),
            "{refused}"
        );
        // One it has already is still served, and extended.
        let mut requests = request(KeyRef::Key("orders".into()), 2);
        let asked = requests.remove("db").unwrap();
        requests.insert("k0".into(), asked);
        let served = ciphertexts(&cluster, &maker, shop("app"), &requests)
            .await
            .unwrap();
        assert_eq!(served[0].keys.len(), 2);
    }

    #[tokio::test]
    async fn a_cached_record_serves_only_what_it_holds() {
        let cluster = FakeCluster::default();
        let maker = FakeMaker::default();
        let orders = || KeyRef::Key("orders".into());
        let first = ciphertexts(&cluster, &maker, shop("app"), &request(orders(), 1))
            .await
            .unwrap();
        // The API server's copy is gone; the watch's copy still serves generation 1.
        let record = cluster.records.lock().unwrap().remove("app.db").unwrap();
        cluster
            .cached
            .lock()
            .unwrap()
            .insert("app.db".into(), record);
        let again = ciphertexts(&cluster, &maker, shop("app"), &request(orders(), 1))
            .await
            .unwrap();
        assert_eq!(again, first);
        assert_eq!(maker.made.load(Ordering::SeqCst), 1, "from the cache");
        // Generation 2 is not in the cache: read and made for real.
        ciphertexts(&cluster, &maker, shop("app"), &request(orders(), 2))
            .await
            .unwrap();
        assert_eq!(maker.made.load(Ordering::SeqCst), 2);

        // A watch that has not seen a record yet: the create is refused, the record read.
        let stored = cluster.records.lock().unwrap()["app.db"].clone();
        cluster.cached.lock().unwrap().remove("app.db");
        cluster
            .cached
            .lock()
            .unwrap()
            .insert("other.db".into(), stored.clone());
        let late = ciphertexts(&cluster, &maker, shop("app"), &request(orders(), 2))
            .await
            .unwrap();
        assert_eq!(
            late[0].keys.last().unwrap().ciphertext,
            stored.spec.generations.last().unwrap().ciphertext,
            "the stored key, not the one made on the stale view"
        );
    }

    #[tokio::test]
    async fn a_record_another_replica_created_first_is_used() {
        let cluster = FakeCluster::default();
        let maker = FakeMaker::default();
        // The racer's record holds generation 1 already.
        let mut racer = DataKey::new(
            "app.db",
            DataKeySpec {
                service_account: "app".into(),
                name: "db".into(),
                key: "orders".into(),
                number_of_bytes: 32,
                generations: vec![DataKeyGeneration {
                    generation: 1,
                    ciphertext: B64.encode(b"theirs"),
                    key_arn: "arn".into(),
                    key_version: 3,
                }],
            },
        );
        racer.metadata.namespace = Some("shop".into());
        *cluster.racing.lock().unwrap() = Some(racer);
        let got = ciphertexts(
            &cluster,
            &maker,
            shop("app"),
            &request(KeyRef::Key("orders".into()), 1),
        )
        .await
        .unwrap();
        assert_eq!(got[0].keys[0].ciphertext, B64.encode(b"theirs"));
    }

    #[tokio::test]
    async fn refusals_say_what_to_do() {
        let cluster = FakeCluster::default();
        let maker = FakeMaker::default();
        let err = |r: Result<_, DataKeyError>| r.unwrap_err().to_string();
        let missing = err(ciphertexts(
            &cluster,
            &maker,
            shop("app"),
            &request(KeyRef::Key("nope".into()), 1),
        )
        .await);
        assert!(
            missing.contains("kubectl get kmskey nope -n shop"),
            "{missing}"
        );
        let denied = err(ciphertexts(
            &cluster,
            &maker,
            shop("app"),
            &request(KeyRef::Alias("alias/forbidden".into()), 1),
        )
        .await);
        assert!(denied.contains("AccessDeniedException"), "{denied}");
        let no_sa = err(ciphertexts(
            &cluster,
            &maker,
            shop("ghost"),
            &request(KeyRef::Key("orders".into()), 1),
        )
        .await);
        assert!(
            no_sa.contains("ServiceAccount shop/ghost does not exist"),
            "{no_sa}"
        );
        ciphertexts(
            &cluster,
            &maker,
            shop("app"),
            &request(KeyRef::Key("orders".into()), 1),
        )
        .await
        .unwrap();
        let changed = err(ciphertexts(
            &cluster,
            &maker,
            shop("app"),
            &request(KeyRef::Alias("alias/shop/other".into()), 1),
        )
        .await);
        assert!(changed.contains("name a new data key instead"), "{changed}");
        let dry = Workload {
            dry_run: true,
            ..shop("app")
        };
        let found = ciphertexts(
            &cluster,
            &maker,
            dry,
            &request(KeyRef::Key("orders".into()), 1),
        )
        .await
        .unwrap();
        assert_eq!(found[0].keys.len(), 1, "a dry run reads what is there");
        let would_make = err(ciphertexts(
            &cluster,
            &maker,
            dry,
            &request(KeyRef::Key("orders".into()), 2),
        )
        .await);
        assert!(
            would_make.contains("a dry run makes nothing"),
            "{would_make}"
        );
    }
}
