//! The agent, in a pod that opted in: authenticates as the pod's own ServiceAccount (its
//! projected token, exchanged through STS `AssumeRoleWithWebIdentity` at the engine, as a
//! stock AWS SDK would with the same environment), decrypts the data keys' ciphertexts it was
//! given and writes them for the app ([`crate::keyring`]). `init` does that and exits.
//!
//! While the engine cannot be reached it retries with backoff for a bounded time; a refusal
//! (another ServiceAccount's ciphertext, a policy that does not allow it) is final and is
//! reported as the engine said it, naming the data key.

use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use kubekms_proto::client::{CallError, ClientSettings, KmsClient, Refusal, TransportError};
use kubekms_proto::ops::{DecryptRequest, DecryptResponse};
use kubekms_proto::Operation;

use crate::keyring::{self, HeldKey, KeyringError};
use crate::mutate::{AgentConfig, DataKeyCiphertexts, AGENT_CONFIG_ENV};
use kubekms_crds::SealedGeneration;

/// How long the agent keeps trying while the engine is unreachable.
pub const RETRY_FOR: Duration = Duration::from_secs(120);
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(8);

/// A refusal that says the engine could not do it now, not that it will not: tried again.
fn passing(refusal: &Refusal) -> bool {
    [
        "KMSInternalException",
        "DependencyTimeoutException",
        "ThrottlingException",
    ]
    .iter()
    .any(|name| refusal.is(name))
}

/// Why the agent stopped.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("environment variable {0} is not set (the injector sets it)")]
    MissingEnv(&'static str),
    #[error("{AGENT_CONFIG_ENV} is not the agent's configuration")]
    Config(#[source] serde_json::Error),
    #[error("data key {name:?}, {id}: its ciphertext is not base64")]
    Ciphertext {
        name: String,
        id: String,
        #[source]
        source: base64::DecodeError,
    },
    #[error("data key {name:?}, {id}: the engine refused to decrypt it: {refusal}")]
    Refused {
        name: String,
        id: String,
        refusal: Refusal,
    },
    #[error("data key {name:?}, {id}: the engine could not be reached for {seconds}s")]
    Unreachable {
        name: String,
        id: String,
        seconds: u64,
        #[source]
        source: Box<TransportError>,
    },
    #[error("the engine client")]
    Client(#[source] Box<TransportError>),
    #[error("writing the keys")]
    Write(#[from] KeyringError),
    #[error("reading the data key's mirror {}", path.display())]
    Mirror {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the data key's mirror {} is not a list of generations", path.display())]
    MirrorFormat {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("serving on localhost")]
    Listen(#[source] std::io::Error),
}

/// Where the agent finds its identity and work, as the injector sets them.
pub struct Environment {
    pub config: AgentConfig,
    pub token_file: PathBuf,
    pub role_arn: String,
    pub endpoint: String,
    pub region: String,
    /// The CAs an `https://` engine's certificate chains to (`AWS_CA_BUNDLE`, as the SDKs).
    pub ca_bundle: Option<PathBuf>,
}

impl Environment {
    /// From the process environment.
    pub fn from_env() -> Result<Self, AgentError> {
        let var =
            |name: &'static str| std::env::var(name).map_err(|_| AgentError::MissingEnv(name));
        let config = serde_json::from_str(&var(AGENT_CONFIG_ENV)?).map_err(AgentError::Config)?;
        Ok(Self {
            config,
            token_file: PathBuf::from(var("AWS_WEB_IDENTITY_TOKEN_FILE")?),
            role_arn: var("AWS_ROLE_ARN")?,
            endpoint: var("AWS_ENDPOINT_URL_KMS")?,
            region: var("AWS_REGION")?,
            ca_bundle: std::env::var_os("AWS_CA_BUNDLE").map(PathBuf::from),
        })
    }
}

impl Environment {
    /// A KMS client acting as the pod's ServiceAccount.
    pub fn client(&self) -> Result<KmsClient, AgentError> {
        KmsClient::new(ClientSettings {
            endpoint: Some(self.endpoint.clone()),
            ca_bundle: self.ca_bundle.clone(),
            // Pods reach the engine by its name (a host alias where there is no DNS).
            server_name: None,
            endpoint_fixed: true,
            token_file: self.token_file.clone(),
            region: self.region.clone(),
            role_arn: self.role_arn.clone(),
            session_name: "kubekms-agent".to_owned(),
        })
        .map_err(|e| AgentError::Client(Box::new(e)))
    }
}

/// Decrypt every data key and write them; the number of keys written.
pub async fn init(env: &Environment) -> Result<usize, AgentError> {
    let client = env.client()?;
    let mut written = 0;
    for data_key in &env.config.data_keys {
        written += decrypt_and_write(&client, &env.config.dir, data_key)
            .await?
            .len();
    }
    Ok(written)
}

/// Every generation of `data_key` decrypted and written into `dir` (its file and keyring).
pub async fn decrypt_and_write(
    client: &KmsClient,
    dir: &str,
    data_key: &DataKeyCiphertexts,
) -> Result<Vec<HeldKey>, AgentError> {
    let mut held = Vec::with_capacity(data_key.keys.len());
    for entry in &data_key.keys {
        held.push(decrypt(client, data_key, entry, RETRY_FOR).await?);
    }
    keyring::write(Path::new(dir), &data_key.file, &held)?;
    Ok(held)
}

/// One generation, decrypted under its encryption context, with retries while the engine is
/// out of reach, for `retry_for` at most.
pub async fn decrypt(
    client: &KmsClient,
    data_key: &DataKeyCiphertexts,
    entry: &SealedGeneration,
    retry_for: Duration,
) -> Result<HeldKey, AgentError> {
    let ciphertext_blob =
        B64.decode(&entry.ciphertext)
            .map_err(|source| AgentError::Ciphertext {
                name: data_key.name.clone(),
                id: entry.id.clone(),
                source,
            })?;
    let request = DecryptRequest {
        ciphertext_blob,
        encryption_context: Some(entry.encryption_context.clone()),
        ..DecryptRequest::default()
    };
    let started = tokio::time::Instant::now();
    let mut backoff = FIRST_BACKOFF;
    loop {
        let answer: Result<DecryptResponse, CallError> =
            client.call(Operation::Decrypt, &request).await;
        match answer {
            Ok(answer) => {
                return Ok(HeldKey {
                    id: entry.id.clone(),
                    generation: entry.generation,
                    key: answer.plaintext,
                })
            }
            Err(CallError::Refused(refusal))
                if !passing(&refusal) || started.elapsed() >= retry_for =>
            {
                return Err(AgentError::Refused {
                    name: data_key.name.clone(),
                    id: entry.id.clone(),
                    refusal,
                })
            }
            Err(CallError::Unreachable(source))
                if started.elapsed() >= retry_for || source.is_untrusted_certificate() =>
            {
                return Err(AgentError::Unreachable {
                    name: data_key.name.clone(),
                    id: entry.id.clone(),
                    seconds: retry_for.as_secs(),
                    source: Box::new(source),
                })
            }
            Err(e) => {
                eprintln!(
                    "kubekms-agent: data key {:?}: {e}; trying again in {} ms",
                    data_key.name,
                    backoff.as_millis()
                );
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn the_injectors_configuration_reads_back() {
        let written = AgentConfig {
            dir: "/var/run/kubekms".into(),
            data_keys: vec![DataKeyCiphertexts {
                name: "db".into(),
                file: "db.key".into(),
                keys: vec![SealedGeneration {
                    id: "db-1".into(),
                    generation: 1,
                    ciphertext: "AAEC".into(),
                    encryption_context: BTreeMap::from([("k".to_owned(), "v".to_owned())]),
                }],
                mirror: "kubekms-datakey.app.db".into(),
            }],
            mirror_dir: None,
        };
        let text = serde_json::to_string(&written).unwrap();
        let read: AgentConfig = serde_json::from_str(&text).unwrap();
        assert_eq!(read.dir, "/var/run/kubekms");
        assert_eq!(read.data_keys[0].keys[0].id, "db-1");
        assert_eq!(read.data_keys[0].keys[0].encryption_context["k"], "v");
    }
}
