//! Admission of a Pod: its annotations read, its data keys found or made, the patch computed.
//! Typed in, typed out: the HTTP layer ([`crate::server`]) only decodes the AdmissionReview and
//! encodes the answer. Every refusal starts with `kubekms:` and says what to fix.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use k8s_openapi::api::core::v1::Pod;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, Operation};
use kubekms_proto::client::{CallError, KmsClient};
use kubekms_proto::ops::{GenerateDataKeyRequest, GenerateDataKeyResponse};
use kubekms_proto::Operation as KmsOperation;

use crate::annotations;
use crate::datakeys::{self, Cluster, DataKeyMaker, MadeKey, MakeError, Workload};
use crate::error::chain;
use crate::mutate::{mutate, HostAlias, InjectorSettings};

/// The pod injector: its settings and what it reaches.
pub struct Injector {
    /// Its `engine_url` is replaced by [`Cluster::engine_url`] at each admission.
    pub settings: InjectorSettings,
    /// The engine Service's DNS name, when pods are to reach it by name (it serves TLS, and
    /// its certificate names the Service): pods get that name in their URL and, for clusters
    /// without DNS, a host alias to the Service's cluster IP.
    pub engine_name: Option<String>,
    pub cluster: Arc<dyn Cluster>,
    pub maker: Arc<dyn DataKeyMaker>,
}

impl Injector {
    /// The answer to one Pod admission. Only CREATE is changed: a pod's spec is immutable
    /// after, and an opted-in pod is patched once.
    pub async fn admit(&self, request: &AdmissionRequest<Pod>) -> AdmissionResponse {
        let response = AdmissionResponse::from(request);
        if request.operation != Operation::Create {
            return response;
        }
        let Some(pod) = request.object.as_ref() else {
            return response;
        };
        let none = BTreeMap::new();
        let labels = pod.metadata.labels.as_ref().unwrap_or(&none);
        let annotations = pod.metadata.annotations.as_ref().unwrap_or(&none);
        let injection = match annotations::parse(labels, annotations) {
            Ok(None) => return response,
            Ok(Some(injection)) => injection,
            Err(problems) => {
                return response.deny(format!(
                    "kubekms: the pod's annotations are not valid: {}",
                    problems.join("; ")
                ))
            }
        };
        // Pods made by a controller have no namespace of their own yet; the request has it.
        let namespace = request
            .namespace
            .clone()
            .or_else(|| pod.metadata.namespace.clone())
            .unwrap_or_else(|| "default".to_owned());
        let service_account = pod
            .spec
            .as_ref()
            .and_then(|s| s.service_account_name.clone())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "default".to_owned());
        let engine_url = match self.cluster.engine_url().await {
            Ok(Some(url)) => url,
            Ok(None) => {
                return response.deny(
                    "kubekms: the key engine has no address yet (its Service is made by the \
                     operator once it runs); try again shortly",
                )
            }
            Err(e) => return response.deny(format!("kubekms: {}", chain(&e))),
        };
        self.maker.use_endpoint(&engine_url);
        let (engine_url, engine_host_alias) = match &self.engine_name {
            Some(name) => by_name(&engine_url, name),
            None => (engine_url, None),
        };
        let settings = InjectorSettings {
            engine_url,
            engine_host_alias,
            ..self.settings.clone()
        };
        // The pod's token volume names the namespace's CA bundle ConfigMap: it must be there
        // before the pod starts. A dry run writes nothing.
        if let (Some(ca), false) = (&settings.ca, request.dry_run) {
            if let Err(e) = self.cluster.ensure_ca(&namespace, ca).await {
                return response.deny(format!("kubekms: {}", chain(&e)));
            }
        }
        let workload = Workload {
            namespace: &namespace,
            service_account: &service_account,
            dry_run: request.dry_run,
        };
        let data_keys = match datakeys::ciphertexts(
            self.cluster.as_ref(),
            self.maker.as_ref(),
            workload,
            &injection.data_keys,
        )
        .await
        {
            Ok(keys) => keys,
            Err(e) => return response.deny(format!("kubekms: {}", chain(&e))),
        };
        match mutate(pod, &injection, &data_keys, &settings) {
            Ok(None) => response,
            Ok(Some(patch)) => match response.clone().with_patch(patch) {
                Ok(patched) => patched,
                Err(e) => response.deny(format!("kubekms: encoding the patch: {e}")),
            },
            Err(e) => response.deny(format!("kubekms: {}", chain(&e))),
        }
    }
}

/// `https://<ip>:<port>` as pods reach it by `name`: the URL with the name, and the host alias
/// from the name to the IP (for clusters without DNS). Left as it is if it is not a URL.
fn by_name(url: &str, name: &str) -> (String, Option<HostAlias>) {
    let Ok(uri) = url.parse::<hyper::Uri>() else {
        return (url.to_owned(), None);
    };
    let (Some(host), Some(port)) = (uri.host(), uri.port_u16()) else {
        return (url.to_owned(), None);
    };
    let ip = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    (
        format!("https://{name}:{port}"),
        Some(HostAlias {
            ip,
            hostname: name.to_owned(),
        }),
    )
}

/// The engine makes data keys as the webhook's identity (`role/kubekms-webhook`).
pub struct EngineMaker(pub KmsClient);

#[async_trait]
impl DataKeyMaker for EngineMaker {
    async fn generate(
        &self,
        key_id: &str,
        context: &BTreeMap<String, String>,
        number_of_bytes: u32,
    ) -> Result<MadeKey, MakeError> {
        let request = GenerateDataKeyRequest {
            key_id: key_id.to_owned(),
            encryption_context: Some(context.clone()),
            number_of_bytes: Some(i64::from(number_of_bytes)),
            ..GenerateDataKeyRequest::default()
        };
        let answer: Result<GenerateDataKeyResponse, CallError> = self
            .0
            .call(KmsOperation::GenerateDataKeyWithoutPlaintext, &request)
            .await;
        match answer {
            // Without plaintext by construction: the engine sends none for this operation.
            Ok(answer) => Ok(MadeKey {
                ciphertext: answer.ciphertext_blob,
                key_arn: answer.key_id,
            }),
            Err(CallError::Refused(refusal)) => Err(MakeError::Refused(refusal.to_string())),
            Err(CallError::Unreachable(e)) => Err(MakeError::Unreachable(Box::new(e))),
        }
    }

    fn use_endpoint(&self, url: &str) {
        // A fixed endpoint (given on the command line) stays; otherwise the found one is used.
        let _ = self.0.set_endpoint(url);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datakeys::fakes::{FakeCluster, FakeMaker};
    use crate::mutate::AGENT_CONFIG_ENV;
    use kube::core::admission::AdmissionReview;
    use serde_json::{json, Value};

    fn injector() -> Injector {
        Injector {
            settings: InjectorSettings {
                image: "localhost/kubekms:0.1.0".into(),
                engine_url: String::new(),
                region: "us-east-1".into(),
                role_arn: "arn:aws:iam::111122223333:role/kubekms".into(),
                ca: None,
                engine_host_alias: None,
            },
            engine_name: None,
            cluster: Arc::new(FakeCluster::default()),
            maker: Arc::new(FakeMaker::default()),
        }
    }

    fn request(labels: Value, annotations: Value, dry_run: bool) -> AdmissionRequest<Pod> {
        let review: AdmissionReview<Pod> = serde_json::from_value(json!({
            "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {
                "uid": "u1",
                "kind": { "group": "", "version": "v1", "kind": "Pod" },
                "resource": { "group": "", "version": "v1", "resource": "pods" },
                "namespace": "shop", "operation": "CREATE", "dryRun": dry_run,
                "userInfo": { "username": "system:serviceaccount:kube-system:replicaset-controller" },
                "object": {
                    "metadata": { "generateName": "web-", "labels": labels,
                                  "annotations": annotations },
                    "spec": { "serviceAccountName": "app", "containers": [
                        { "name": "web", "image": "web",
                          "securityContext": { "runAsUser": 1000 } } ] },
                },
            },
        }))
        .unwrap();
        review.try_into().unwrap()
    }

    fn patch_text(response: &AdmissionResponse) -> String {
        String::from_utf8(response.patch.clone().unwrap_or_default()).unwrap()
    }

    #[tokio::test]
    async fn pods_that_do_not_opt_in_pass_untouched() {
        let response = injector()
            .admit(&request(json!({}), json!({}), false))
            .await;
        assert!(response.allowed);
        assert!(patch_text(&response).is_empty());
    }

    #[tokio::test]
    async fn an_opted_in_pod_gets_its_identity_and_the_ciphertext_only() {
        let injector = injector();
        let response = injector
            .admit(&request(
                json!({ "kubekms.io/inject": "true" }),
                json!({ "kubekms.io/data-key.db": "orders" }),
                false,
            ))
            .await;
        assert!(response.allowed, "{:?}", response.result);
        let patch = patch_text(&response);
        assert!(
            patch.contains("http://10.0.0.10:4599"),
            "the engine's URL: {patch}"
        );
        assert!(patch.contains(AGENT_CONFIG_ENV), "{patch}");
        assert!(patch.contains("kubekms:service-account"), "{patch}");
        // The fake engine's first ciphertext is 32 zero bytes; the patch carries it in base64.
        use base64::Engine as _;
        let ciphertext = base64::engine::general_purpose::STANDARD.encode([0u8; 32]);
        assert!(patch.contains(&ciphertext), "{patch}");
    }

    #[tokio::test]
    async fn with_tls_the_namespace_gets_the_ca_bundle_before_the_pod() {
        let cluster = Arc::new(FakeCluster::default());
        let mut injector = injector();
        injector.cluster = cluster.clone();
        injector.settings.ca = Some(crate::mutate::CaBundle {
            config_map: "kubekms-engine-ca".into(),
            pem: "-----BEGIN CERTIFICATE-----".into(),
        });
        injector.engine_name = Some("kubekms-engine.kubekms.svc".into());
        let labels = json!({ "kubekms.io/inject": "true" });
        let dry = injector
            .admit(&request(labels.clone(), json!({}), true))
            .await;
        assert!(dry.allowed, "{:?}", dry.result);
        assert!(
            cluster.cas.lock().unwrap().is_empty(),
            "a dry run writes nothing"
        );
        let response = injector.admit(&request(labels, json!({}), false)).await;
        assert!(response.allowed, "{:?}", response.result);
        assert_eq!(
            cluster.cas.lock().unwrap().get("shop").map(String::as_str),
            Some("-----BEGIN CERTIFICATE-----")
        );
        let patch = patch_text(&response);
        assert!(patch.contains("AWS_CA_BUNDLE"), "{patch}");
        assert!(patch.contains("kubekms-engine-ca"), "{patch}");
        // By the name its certificate holds, aliased to the cluster IP the fake found.
        assert!(
            patch.contains("https://kubekms-engine.kubekms.svc:4599"),
            "{patch}"
        );
        assert!(patch.contains("hostAliases"), "{patch}");
        assert!(patch.contains("10.0.0.10"), "{patch}");
    }

    #[tokio::test]
    async fn refusals_say_what_to_fix_and_dry_runs_make_nothing() {
        let injector = injector();
        let bad = injector
            .admit(&request(
                json!({ "kubekms.io/inject": "true" }),
                json!({ "kubekms.io/data-key.db": "orders; spec=AES_512" }),
                false,
            ))
            .await;
        assert!(!bad.allowed);
        assert!(
            bad.result
                .message
                .starts_with("kubekms: the pod's annotations are not valid"),
            "{}",
            bad.result.message
        );
        let dry = injector
            .admit(&request(
                json!({ "kubekms.io/inject": "true" }),
                json!({ "kubekms.io/data-key.db": "orders" }),
                true,
            ))
            .await;
        assert!(!dry.allowed);
        assert!(
            dry.result.message.contains("a dry run makes nothing"),
            "{}",
            dry.result.message
        );
    }
}
