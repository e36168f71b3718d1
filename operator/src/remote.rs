//! The operator's HTTP way to an engine in other pods: `kubekms_proto::client` (the AWS JSON
//! 1.1 protocol every client speaks, SigV4 with temporary credentials the engine issues for the
//! operator's projected ServiceAccount token through STS `AssumeRoleWithWebIdentity`), as the
//! operator's role. The engine maps that ServiceAccount to the operator's principal (see
//! `kubekms_engine::identity::IdentityMap::operator_service_account`).
//!
//! What this adds to the client: a refusal comes back as the engine's own [`KmsError`]
//! variant, so the controllers match errors exactly as they do with the engine in-process.

use std::path::PathBuf;

use kubekms_engine::KmsError;
use kubekms_proto::changes::{ListKeyChangesRequest, ListKeyChangesResponse};
use kubekms_proto::client::{ClientSettings, KmsClient, Refusal};
use kubekms_proto::Operation;
use serde::de::DeserializeOwned;
use serde::Serialize;

pub use kubekms_proto::client::TransportError as RemoteError;

/// Where kubelet puts the operator's projected token (audience `kubekms`) in its pod.
pub const DEFAULT_TOKEN_FILE: &str = "/var/run/secrets/kubekms/token";
const SESSION_NAME: &str = "kubekms-operator";

/// One call's failure: the engine refused it, or it could not be asked.
#[derive(Debug)]
pub enum CallError {
    Refused(KmsError),
    Unreachable(RemoteError),
}

impl From<kubekms_proto::client::CallError> for CallError {
    fn from(e: kubekms_proto::client::CallError) -> Self {
        match e {
            kubekms_proto::client::CallError::Refused(r) => CallError::Refused(refused(r)),
            kubekms_proto::client::CallError::Unreachable(e) => CallError::Unreachable(e),
        }
    }
}

/// The engine's error a refusal stands for. STS names a few refusals its own way.
pub fn refused(refusal: Refusal) -> KmsError {
    let Refusal { aws_type, message } = refusal;
    match aws_type.as_str() {
        "ValidationError" => KmsError::Validation(message),
        "AccessDenied" => KmsError::AccessDenied(message),
        "InvalidAction" => KmsError::UnsupportedOperation(message),
        other => KmsError::from_aws_type(other, message),
    }
}

/// How to reach the engine and who to be there.
pub struct RemoteSettings {
    /// `http[s]://host:port`; `None` until the engine Service's address is known
    /// ([`RemoteEngine::set_endpoint`]).
    pub endpoint: Option<String>,
    /// Set once by `--engine-url`: the Service's address then never replaces it.
    pub endpoint_fixed: bool,
    /// The engine serves TLS with a certificate from a CA in this PEM file...
    pub ca_bundle: Option<PathBuf>,
    /// ...for this name (checked whatever address the engine is reached at).
    pub server_name: Option<String>,
    pub token_file: PathBuf,
    pub account: String,
    pub region: String,
}

/// The engine over HTTP, as the operator. Cheap to share.
pub struct RemoteEngine {
    client: KmsClient,
    account: String,
}

impl RemoteEngine {
    pub fn new(settings: RemoteSettings) -> Result<Self, RemoteError> {
        let client = KmsClient::new(ClientSettings {
            endpoint: settings.endpoint,
            ca_bundle: settings.ca_bundle,
            server_name: settings.server_name,
            endpoint_fixed: settings.endpoint_fixed,
            token_file: settings.token_file,
            region: settings.region,
            role_arn: kubekms_engine::identity::operator_role_arn(&settings.account),
            session_name: SESSION_NAME.to_owned(),
        })?;
        Ok(Self {
            client,
            account: settings.account,
        })
    }

    /// Point at `url` (`http://HOST:PORT`), unless `--engine-url` fixed the address.
    pub fn set_endpoint(&self, url: &str) -> Result<(), RemoteError> {
        self.client.set_endpoint(url)
    }

    /// The address calls go to, if known.
    pub fn endpoint(&self) -> Option<String> {
        self.client.endpoint()
    }

    pub fn account(&self) -> &str {
        &self.account
    }

    /// Drop the session in hand: the next call exchanges the token file as it is then.
    pub async fn forget_session(&self) {
        self.client.forget_session().await;
    }

    /// Call `op` with `request`; the answer decoded as `Resp`.
    pub async fn call<Req, Resp>(&self, op: Operation, request: &Req) -> Result<Resp, CallError>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
    {
        Ok(self.client.call(op, request).await?)
    }

    /// kubekms's long poll for changed keys (`kubekms_proto::changes`).
    pub async fn list_key_changes(
        &self,
        request: &ListKeyChangesRequest,
    ) -> Result<ListKeyChangesResponse, CallError> {
        Ok(self.client.list_key_changes(request).await?)
    }
}

#[cfg(test)]
mod tests;
