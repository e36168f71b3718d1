//! [`Cluster`] on the Kubernetes API: DataKey records (created owned by their ServiceAccount,
//! replaced only at the resourceVersion read), a Key's status, a ServiceAccount's uid.

use std::sync::Mutex;

use async_trait::async_trait;
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::{Service, ServiceAccount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, PostParams};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::Client;
use kubekms_crds::{DataKey, Key};

use crate::datakeys::{Cluster, ClusterError, KeyFacts, Written};

/// The API server, as the webhook's ServiceAccount.
pub struct KubeCluster {
    client: Client,
    /// Every DataKey record, kept by a watch ([`KubeCluster::watch_records`]).
    records: Store<DataKey>,
    engine: EngineService,
    /// The engine's URL once found (a Service's cluster IP does not change).
    engine_url: Mutex<Option<String>>,
}

/// Where the engine is: a URL given outright, or the Service the operator makes for it.
#[derive(Clone, Debug)]
pub enum EngineService {
    Url(String),
    Service {
        namespace: String,
        name: String,
        port: u16,
    },
}

impl KubeCluster {
    /// The cluster, and the watch that keeps its cache of records (to be spawned).
    pub fn new(client: Client, engine: EngineService) -> (Self, BoxFuture<'static, ()>) {
        let engine_url = match &engine {
            EngineService::Url(url) => Some(url.clone()),
            EngineService::Service { .. } => None,
        };
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
            engine_url: Mutex::new(engine_url),
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

    async fn create_record(
        &self,
        namespace: &str,
        mut record: DataKey,
        owner_uid: &str,
    ) -> Result<Written, ClusterError> {
        record.metadata.owner_references = Some(vec![OwnerReference {
            api_version: "v1".into(),
            kind: "ServiceAccount".into(),
            name: record.spec.service_account.clone(),
            uid: owner_uid.to_owned(),
            ..OwnerReference::default()
        }]);
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

    async fn service_account_uid(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<String>, ClusterError> {
        let sa = Api::<ServiceAccount>::namespaced(self.client.clone(), namespace)
            .get_opt(name)
            .await
            .map_err(failed(format!("reading ServiceAccount {namespace}/{name}")))?;
        Ok(sa.and_then(|sa| sa.metadata.uid))
    }

    async fn engine_url(&self) -> Result<Option<String>, ClusterError> {
        if let Some(url) = self.engine_url.lock().ok().and_then(|u| u.clone()) {
            return Ok(Some(url));
        }
        let EngineService::Service {
            namespace,
            name,
            port,
        } = &self.engine
        else {
            return Ok(None);
        };
        let service = Api::<Service>::namespaced(self.client.clone(), namespace)
            .get_opt(name)
            .await
            .map_err(failed(format!("reading Service {namespace}/{name}")))?;
        let url = service.and_then(|s| service_url(&s, *port));
        if let (Some(url), Ok(mut found)) = (&url, self.engine_url.lock()) {
            *found = Some(url.clone());
        }
        Ok(url)
    }
}

/// The engine's URL at a Service's cluster IP, if it has one (pods reach it without DNS).
pub fn service_url(service: &Service, port: u16) -> Option<String> {
    let ip = service.spec.as_ref()?.cluster_ip.as_deref()?;
    kubekms_proto::client::cluster_ip_url(ip, port)
}
