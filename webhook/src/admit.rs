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
use crate::mutate::{mutate, InjectorSettings};

/// The pod injector: its settings and what it reaches.
pub struct Injector {
    /// Its `engine_url` is replaced by [`Cluster::engine_url`] at each admission.
    pub settings: InjectorSettings,
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
        let settings = InjectorSettings {
            engine_url,
            ..self.settings.clone()
        };
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

/// An error and its sources, on one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut message = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        message.push_str(": ");
        message.push_str(&s.to_string());
        source = s.source();
    }
    message
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
