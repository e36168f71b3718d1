//! `kubekms-agent serve`: the agent as a sidecar, in pods that asked for
//! `kubekms.io/inject-mode: sidecar` and restart their containers (a Job's pod gets the init
//! container only, so the agent never keeps it from finishing).
//!
//! It holds the pod's data keys (decrypted as the pod's ServiceAccount, like `init`) and
//! - **refreshes after a data-key rotation**: every [`REFRESH_EVERY`] it reads the records'
//!   mirror ConfigMaps (made by the operator, kept current in the pod by the kubelet, ciphertext
//!   only); a generation it does not hold (another pod's admission added it) is decrypted and
//!   written into the keyring files, and becomes the current key;
//! - **serves the app on localhost** ([`AGENT_PORT`], plain HTTP, never beyond the pod):
//!   `GET /v1/data-keys/<name>` answers the keyring document (as in the keyring file), and
//!   `POST /v1/decrypt` with `{"dataKey": "<name>", "ciphertext": "<base64>"}` decrypts a
//!   data-key ciphertext the app kept with its data under that data key's encryption context,
//!   answering `{"key": "<base64>"}`; refusals carry the engine's error name.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use kubekms_crds::SealedGeneration;
use kubekms_proto::client::KmsClient;
use serde::Deserialize;
use zeroize::Zeroizing;

use crate::agent::{decrypt, decrypt_and_write, AgentError, Environment, RETRY_FOR};
use crate::keyring::{self, HeldKey};
use crate::mutate::{DataKeyCiphertexts, AGENT_PORT};

/// How often the mirrors are read (a local file read each; the kubelet's own refresh of a
/// mounted ConfigMap takes up to about a minute, which dominates).
pub const REFRESH_EVERY: Duration = Duration::from_secs(5);
/// How long an app's decrypt request waits for an engine out of reach.
pub const REQUEST_RETRY_FOR: Duration = Duration::from_secs(5);

/// One data key as the sidecar holds it.
struct Held {
    /// Its name, file, and the generations it was given (ciphertexts, for the context).
    data_key: DataKeyCiphertexts,
    keys: Vec<HeldKey>,
    /// Mirror entries the engine refused (generation, ciphertext): not asked again every
    /// refresh; a re-encrypted ciphertext is a new entry.
    refused: BTreeSet<(u32, String)>,
}

/// The sidecar's state: the pod's data keys, decrypted.
pub struct Sidecar {
    client: KmsClient,
    dir: PathBuf,
    mirror_dir: Option<PathBuf>,
    held: Mutex<BTreeMap<String, Held>>,
}

impl Sidecar {
    /// Decrypts every data key it was given (as `init` does) and writes them.
    pub async fn start(env: &Environment) -> Result<Self, AgentError> {
        let client = env.client()?;
        let mut held = BTreeMap::new();
        for data_key in &env.config.data_keys {
            let keys = decrypt_and_write(&client, &env.config.dir, data_key).await?;
            held.insert(
                data_key.name.clone(),
                Held {
                    data_key: data_key.clone(),
                    keys,
                    refused: BTreeSet::new(),
                },
            );
        }
        Ok(Self {
            client,
            dir: PathBuf::from(&env.config.dir),
            mirror_dir: env.config.mirror_dir.as_ref().map(PathBuf::from),
            held: Mutex::new(held),
        })
    }

    fn held(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Held>> {
        // Nothing panics while holding it; a poisoned map is still whole.
        self.held.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Reads the mirrors once; the ids of the generations added.
    pub async fn refresh(&self) -> Vec<String> {
        let Some(mirror_dir) = &self.mirror_dir else {
            return Vec::new();
        };
        let names: Vec<String> = self.held().keys().cloned().collect();
        let mut added = Vec::new();
        for name in names {
            match self.refresh_one(mirror_dir, &name).await {
                Ok(ids) => added.extend(ids),
                Err(e) => eprintln!(
                    "kubekms-agent: data key {name:?}: refresh: {}",
                    crate::error::chain(&e)
                ),
            }
        }
        added
    }

    async fn refresh_one(&self, mirror_dir: &Path, name: &str) -> Result<Vec<String>, AgentError> {
        let path = mirror_dir.join(format!("{name}.json"));
        let text = match std::fs::read(&path) {
            Ok(text) => text,
            // Not made yet, or the kubelet has not filled it in.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => return Err(AgentError::Mirror { path, source }),
        };
        let generations: Vec<SealedGeneration> =
            serde_json::from_slice(&text).map_err(|source| AgentError::MirrorFormat {
                path: path.clone(),
                source,
            })?;
        let (data_key, new) = {
            let held = self.held();
            let Some(h) = held.get(name) else {
                return Ok(Vec::new());
            };
            let new: Vec<SealedGeneration> = generations
                .into_iter()
                .filter(|g| !h.keys.iter().any(|k| k.generation == g.generation))
                .filter(|g| !h.refused.contains(&(g.generation, g.ciphertext.clone())))
                .collect();
            (h.data_key.clone(), new)
        };
        let mut decrypted = Vec::new();
        let mut refused = Vec::new();
        for generation in &new {
            // Under the context this pod was given for the data key, not the mirror's: a
            // mirror cannot make the agent decrypt anything else.
            let entry = SealedGeneration {
                encryption_context: context_of(&data_key),
                ..generation.clone()
            };
            match decrypt(&self.client, &data_key, &entry, RETRY_FOR).await {
                Ok(key) => decrypted.push(key),
                Err(e @ (AgentError::Refused { .. } | AgentError::Ciphertext { .. })) => {
                    eprintln!("kubekms-agent: {}", crate::error::chain(&e));
                    refused.push((generation.generation, generation.ciphertext.clone()));
                }
                Err(e) => return Err(e),
            }
        }
        let mut held = self.held();
        let Some(h) = held.get_mut(name) else {
            return Ok(Vec::new());
        };
        h.refused.extend(refused);
        if decrypted.is_empty() {
            return Ok(Vec::new());
        }
        let mut ids = Vec::new();
        for key in decrypted {
            if !h.keys.iter().any(|k| k.generation == key.generation) {
                ids.push(key.id.clone());
                h.keys.push(key);
            }
        }
        keyring::write(&self.dir, &h.data_key.file, &h.keys)?;
        Ok(ids)
    }

    /// The keyring document of data key `name`.
    fn document(&self, name: &str) -> Option<Zeroizing<String>> {
        self.held()
            .get(name)
            .and_then(|h| keyring::document(&h.keys))
    }

    /// Decrypts an app's data-key ciphertext under data key `name`'s encryption context.
    async fn decrypt_for_app(
        &self,
        name: &str,
        ciphertext: String,
    ) -> Option<Result<HeldKey, AgentError>> {
        let data_key = self.held().get(name).map(|h| h.data_key.clone())?;
        let entry = SealedGeneration {
            id: format!("{name}-request"),
            generation: 0,
            ciphertext,
            encryption_context: context_of(&data_key),
        };
        Some(decrypt(&self.client, &data_key, &entry, REQUEST_RETRY_FOR).await)
    }
}

/// The encryption context the pod was given for a data key (every generation shares it).
fn context_of(data_key: &DataKeyCiphertexts) -> BTreeMap<String, String> {
    data_key
        .keys
        .first()
        .map(|k| k.encryption_context.clone())
        .unwrap_or_default()
}

/// Refreshes forever.
pub async fn refresh_loop(sidecar: Arc<Sidecar>) {
    loop {
        tokio::time::sleep(REFRESH_EVERY).await;
        for id in sidecar.refresh().await {
            eprintln!("kubekms-agent: data key generation {id} added to the keyring");
        }
    }
}

/// The app's routes.
pub fn router(sidecar: Arc<Sidecar>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/v1/data-keys/{name}", get(data_key))
        .route("/v1/decrypt", post(decrypt_route))
        .with_state(sidecar)
}

/// Where the sidecar listens: the pod's loopback only.
pub fn address() -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, AGENT_PORT))
}

async fn data_key(State(sidecar): State<Arc<Sidecar>>, UrlPath(name): UrlPath<String>) -> Response {
    match sidecar.document(&name) {
        // The body is hyper's to send; it is not zeroized after (the keyring file is the
        // lasting copy, and it is the app's to read anyway).
        Some(document) => json_response(StatusCode::OK, document.as_bytes().to_vec()),
        None => problem(
            StatusCode::NOT_FOUND,
            "NotFoundException",
            &format!("this pod has no data key {name:?}"),
        ),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct DecryptBody {
    data_key: String,
    ciphertext: String,
}

async fn decrypt_route(State(sidecar): State<Arc<Sidecar>>, body: Bytes) -> Response {
    let request: DecryptBody = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return problem(
                StatusCode::BAD_REQUEST,
                "ValidationException",
                &format!("expected {{\"dataKey\": \"<name>\", \"ciphertext\": \"<base64>\"}}: {e}"),
            )
        }
    };
    match sidecar
        .decrypt_for_app(&request.data_key, request.ciphertext)
        .await
    {
        None => problem(
            StatusCode::NOT_FOUND,
            "NotFoundException",
            &format!("this pod has no data key {:?}", request.data_key),
        ),
        Some(Ok(key)) => {
            let encoded = Zeroizing::new(B64.encode(&*key.key));
            let mut body = Zeroizing::new(String::from("{\"key\":\""));
            body.push_str(&encoded);
            body.push_str("\"}");
            json_response(StatusCode::OK, body.as_bytes().to_vec())
        }
        Some(Err(AgentError::Ciphertext { .. })) => problem(
            StatusCode::BAD_REQUEST,
            "ValidationException",
            "ciphertext is not base64",
        ),
        Some(Err(AgentError::Refused { refusal, .. })) => {
            let name = refusal.aws_type.rsplit('#').next().unwrap_or_default();
            // Not this data key's (another context, another key, altered): the request is
            // wrong, as the engine says with a 400; anything else is a refusal of the pod.
            let status = if refusal.is("InvalidCiphertextException") {
                StatusCode::BAD_REQUEST
            } else {
                StatusCode::FORBIDDEN
            };
            problem(status, name, &refusal.message)
        }
        Some(Err(e)) => problem(
            StatusCode::BAD_GATEWAY,
            "DependencyTimeoutException",
            &crate::error::chain(&e),
        ),
    }
}

fn json_response(status: StatusCode, body: Vec<u8>) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// An error as `{"__type": name, "message": ...}`, the engine's own shape.
fn problem(status: StatusCode, name: &str, message: &str) -> Response {
    let body = serde_json::json!({ "__type": name, "message": message }).to_string();
    json_response(status, body.into_bytes())
}
