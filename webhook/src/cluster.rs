//! [`Cluster`] on the Kubernetes API: DataKey records (created if absent, replaced only at the
//! resourceVersion read), a Key's status, whether a ServiceAccount exists.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Service, ServiceAccount};
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::Client;
use kubekms_crds::{DataKey, Key};

use crate::datakeys::{Cluster, ClusterError, KeyFacts, Written};
use crate::mutate::{CaBundle, CA_FILE};

/// The webhook's name as a writer of objects.
const FIELD_MANAGER: &str = "kubekms-webhook";

/// The API server, as the webhook's ServiceAccount.
pub struct KubeCluster {
    client: Client,
    /// Every DataKey record, kept by a watch ([`KubeCluster::watch_records`]).
    records: Store<DataKey>,
    engine: EngineService,
    /// The engine's URL once found, and when. A Service keeps its cluster IP while it lives,
    /// but one deleted and made again (the engine reinstalled) has another: looked up again
    /// after [`ENGINE_URL_FOR`].
    engine_url: Mutex<Option<(String, Instant)>>,
    /// Namespaces whose CA bundle ConfigMap this process has applied, and when: applied
    /// again after [`CA_KEPT_FOR`], so one deleted by hand comes back.
    cas_kept: Mutex<BTreeMap<String, Instant>>,
}

/// How long a namespace's CA bundle ConfigMap is taken to be in place once applied.
pub const CA_KEPT_FOR: Duration = Duration::from_secs(300);

/// How long a looked-up engine URL is used before it is looked up again.
pub const ENGINE_URL_FOR: Duration = Duration::from_secs(60);

/// Where the engine is: a URL given outright, or the Service the operator makes for it.
#[derive(Clone, Debug)]
pub enum EngineService {
    Url(String),
    Service {
        namespace: String,
        name: String,
        port: u16,
        /// It serves TLS: reached over https://.
        tls: bool,
    },
}

impl KubeCluster {
    /// The cluster, and the watch that keeps its cache of records (to be spawned).
    pub fn new(client: Client, engine: EngineService) -> (Self, BoxFuture<'static, ()>) {
        let (records, writer) = reflector::store();
        let watch = reflector::reflector(
            writer,
            watcher(
                Api::<DataKey>::all(client.clone()),
                watcher::Config::default(),
            ),
        )
        .default_backoff()
        .for_each(|event| {
            if let Err(e) = event {
                eprintln!("kubekms-webhook: watching DataKey records: {e}");
            }
            std::future::ready(())
        })
        .boxed();
        let cluster = Self {
            client,
            records,
            engine,
            engine_url: Mutex::new(None),
            cas_kept: Mutex::new(BTreeMap::new()),
        };
        (cluster, watch)
    }
}

fn failed(what: String) -> impl FnOnce(kube::Error) -> ClusterError {
    move |e| ClusterError {
        what,
        source: Box::new(e),
    }
}

/// 409: created or changed by someone else first.
fn conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(status) if status.code == 409)
}

#[async_trait]
impl Cluster for KubeCluster {
    fn cached_record(&self, namespace: &str, name: &str) -> Option<Option<DataKey>> {
        Some(
            self.records
                .get(&ObjectRef::new(name).within(namespace))
                .map(|record| (*record).clone()),
        )
    }

    async fn record(&self, namespace: &str, name: &str) -> Result<Option<DataKey>, ClusterError> {
        Api::<DataKey>::namespaced(self.client.clone(), namespace)
            .get_opt(name)
            .await
            .map_err(failed(format!("reading DataKey {namespace}/{name}")))
    }

    fn cached_record_count(&self, namespace: &str, service_account: &str) -> Option<usize> {
        Some(
            self.records
                .state()
                .iter()
                .filter(|r| {
                    r.metadata.namespace.as_deref() == Some(namespace)
                        && r.spec.service_account == service_account
                })
                .count(),
        )
    }

    async fn create_record(
        &self,
        namespace: &str,
        record: DataKey,
    ) -> Result<Written, ClusterError> {
        let name = record.metadata.name.clone().unwrap_or_default();
        match Api::<DataKey>::namespaced(self.client.clone(), namespace)
            .create(&PostParams::default(), &record)
            .await
        {
            Ok(_) => Ok(Written::Done),
            Err(e) if conflict(&e) => Ok(Written::Lost),
            Err(e) => Err(failed(format!("creating DataKey {namespace}/{name}"))(e)),
        }
    }

    async fn replace_record(
        &self,
        namespace: &str,
        record: DataKey,
    ) -> Result<Written, ClusterError> {
        let name = record.metadata.name.clone().unwrap_or_default();
        // The record carries the resourceVersion it was read at: a replace after someone
        // else's write is refused (409) rather than overwriting it.
        match Api::<DataKey>::namespaced(self.client.clone(), namespace)
            .replace(&name, &PostParams::default(), &record)
            .await
        {
            Ok(_) => Ok(Written::Done),
            Err(e) if conflict(&e) => Ok(Written::Lost),
            Err(e) => Err(failed(format!("updating DataKey {namespace}/{name}"))(e)),
        }
    }

    async fn key(&self, namespace: &str, name: &str) -> Result<Option<KeyFacts>, ClusterError> {
        let key = Api::<Key>::namespaced(self.client.clone(), namespace)
            .get_opt(name)
            .await
            .map_err(failed(format!("reading Key {namespace}/{name}")))?;
        Ok(key.and_then(|k| k.status).and_then(|s| {
            Some(KeyFacts {
                arn: s.arn?,
                version: s.current_key_version.unwrap_or(0),
            })
        }))
    }

    async fn service_account_exists(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<bool, ClusterError> {
        let sa = Api::<ServiceAccount>::namespaced(self.client.clone(), namespace)
            .get_opt(name)
            .await
            .map_err(failed(format!("reading ServiceAccount {namespace}/{name}")))?;
        Ok(sa.is_some())
    }

    async fn engine_url(&self) -> Result<Option<String>, ClusterError> {
        let known = self.engine_url.lock().ok().and_then(|u| u.clone());
        let (namespace, name, port, tls) = match (&self.engine, &known) {
            (EngineService::Url(url), _) => return Ok(Some(url.clone())),
            (_, Some((url, found))) if found.elapsed() < ENGINE_URL_FOR => {
                return Ok(Some(url.clone()))
            }
            (
                EngineService::Service {
                    namespace,
                    name,
                    port,
                    tls,
                },
                _,
            ) => (namespace, name, *port, *tls),
        };
        let service = match Api::<Service>::namespaced(self.client.clone(), namespace)
            .get_opt(name)
            .await
        {
            Ok(service) => service,
            // The API server did not answer: the URL last found is the best there is.
            Err(_) if known.is_some() => return Ok(known.map(|(url, _)| url)),
            Err(e) => return Err(failed(format!("reading Service {namespace}/{name}"))(e)),
        };
        let url = service.and_then(|s| service_url(&s, port, tls));
        if let (Some(url), Ok(mut found)) = (&url, self.engine_url.lock()) {
            *found = Some((url.clone(), Instant::now()));
        }
        Ok(url)
    }

    async fn ensure_ca(&self, namespace: &str, ca: &CaBundle) -> Result<(), ClusterError> {
        let fresh = |cas: &BTreeMap<String, Instant>| {
            cas.get(namespace)
                .is_some_and(|at| at.elapsed() < CA_KEPT_FOR)
        };
        if self.cas_kept.lock().map(|c| fresh(&c)).unwrap_or(false) {
            return Ok(());
        }
        let wanted = ConfigMap {
            metadata: ObjectMeta {
                name: Some(ca.config_map.clone()),
                namespace: Some(namespace.to_owned()),
                labels: Some(BTreeMap::from([(
                    "app.kubernetes.io/managed-by".to_owned(),
                    FIELD_MANAGER.to_owned(),
                )])),
                ..ObjectMeta::default()
            },
            data: Some(BTreeMap::from([(CA_FILE.to_owned(), ca.pem.clone())])),
            ..ConfigMap::default()
        };
        // A server-side apply: made if missing, put right if changed, nothing written if equal.
        Api::<ConfigMap>::namespaced(self.client.clone(), namespace)
            .patch(
                &ca.config_map,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&wanted),
            )
            .await
            .map_err(failed(format!(
                "keeping ConfigMap {namespace}/{} (the engine's CA bundle)",
                ca.config_map
            )))?;
        if let Ok(mut cas) = self.cas_kept.lock() {
            cas.insert(namespace.to_owned(), Instant::now());
        }
        Ok(())
    }
}

/// The engine's URL at a Service's cluster IP, if it has one (pods reach it without DNS).
pub fn service_url(service: &Service, port: u16, tls: bool) -> Option<String> {
    let ip = service.spec.as_ref()?.cluster_ip.as_deref()?;
    kubekms_proto::client::cluster_ip_url(ip, port, tls)
}
