//! The Kubernetes edge of identity: ServiceAccount tokens checked with the TokenReview API
//! (for the engine's web-identity exchange), and access keys kept in Secrets.
//!
//! # Access keys from Secrets
//!
//! For callers outside the cluster. A Secret of type `kubekms.io/access-key` in the operator's
//! namespace holds one access key and the Kubernetes identity it stands for:
//!
//! ```yaml
//! apiVersion: v1
//! kind: Secret
//! type: kubekms.io/access-key
//! metadata: {name: ci-deployer, namespace: kubekms}
//! stringData:
//!   accessKeyId: AKIACIDEPLOYER0001   # letters and digits
//!   secretAccessKey: "..."            # 16 characters or more
//!   user: ci-deployer                 # key policies name it as users: [ci-deployer]
//!   groups: "ci, deployers"           # optional, comma-separated
//! ```
//!
//! Only that namespace is read: whoever may write Secrets there may mint identities, which is
//! why it is the operator's own. Creating, changing or deleting such a Secret takes effect as
//! soon as the watch delivers it (normally well under a second).

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use futures::StreamExt;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::core::v1::Secret;
use kube::api::PostParams;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client, ResourceExt};
use kubekms_engine::config::Credential;
use kubekms_engine::identity::{IdentityMap, ReviewedToken, TokenReviewer, AUDIENCE};
use kubekms_engine::sigv4::{KeyTable, Verifier};
use kubekms_engine::KmsError;
use zeroize::Zeroizing;

/// The Secret type of access keys.
pub const ACCESS_KEY_SECRET_TYPE: &str = "kubekms.io/access-key";
/// Shorter secrets are refused: they would be guessable.
const MIN_SECRET_LEN: usize = 16;

/// Tokens reviewed by the API server, for [`AUDIENCE`].
pub struct KubeTokenReviewer {
    client: Client,
}

impl KubeTokenReviewer {
    pub fn new(client: Client) -> Self {
        Self { client }
    }
}

#[async_trait]
impl TokenReviewer for KubeTokenReviewer {
    async fn review(&self, token: &str) -> kubekms_engine::error::Result<ReviewedToken> {
        let api: Api<TokenReview> = Api::all(self.client.clone());
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_owned()),
                audiences: Some(vec![AUDIENCE.to_owned()]),
            },
            ..TokenReview::default()
        };
        let answer = api
            .create(&PostParams::default(), &review)
            .await
            .map_err(|e| {
                KmsError::IdpCommunication(format!("the cluster could not review the token: {e}"))
            })?;
        let status = answer.status.unwrap_or_default();
        let refused = |why: String| Err(KmsError::InvalidIdentityToken(why));
        if status.authenticated != Some(true) {
            return refused(format!(
                "The cluster did not accept the token: {}",
                status.error.as_deref().unwrap_or("not authenticated")
            ));
        }
        // The API server checks the audience itself when asked for one; a server that ignored
        // the request's audiences answers with none.
        if !status
            .audiences
            .as_deref()
            .is_some_and(|a| a.iter().any(|a| a == AUDIENCE))
        {
            return refused(format!("The token is not for the audience {AUDIENCE:?}"));
        }
        let user = status.user.unwrap_or_default();
        match user.username {
            Some(username) if !username.is_empty() => Ok(ReviewedToken {
                username,
                groups: user.groups.unwrap_or_default(),
            }),
            _ => refused("The token names no user".into()),
        }
    }
}

/// Keeps `verifier`'s dynamic keys equal to the access-key Secrets of `namespace`, until the
/// process stops.
pub async fn watch_access_keys(
    client: Client,
    namespace: String,
    verifier: Arc<Verifier>,
    identities: IdentityMap,
    account: String,
) {
    let api: Api<Secret> = Api::namespaced(client, &namespace);
    let config = watcher::Config::default().fields(&format!("type={ACCESS_KEY_SECRET_TYPE}"));
    let mut secrets: BTreeMap<String, Secret> = BTreeMap::new();
    let mut initial: Option<BTreeMap<String, Secret>> = None;
    let mut events = watcher::watcher(api, config).boxed();
    while let Some(event) = events.next().await {
        let changed = match event {
            Ok(Event::Apply(s)) => {
                secrets.insert(s.name_any(), s);
                true
            }
            Ok(Event::Delete(s)) => {
                secrets.remove(&s.name_any());
                true
            }
            Ok(Event::Init) => {
                initial = Some(BTreeMap::new());
                false
            }
            Ok(Event::InitApply(s)) => {
                if let Some(list) = initial.as_mut() {
                    list.insert(s.name_any(), s);
                }
                false
            }
            Ok(Event::InitDone) => {
                secrets = initial.take().unwrap_or_default();
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "watching access-key Secrets; retrying");
                false
            }
        };
        if changed {
            let table = key_table(secrets.values(), &identities, &account);
            tracing::info!(keys = table.len(), "access keys from Secrets updated");
            verifier.set_dynamic_keys(table);
        }
    }
}

/// The keys of `secrets`; a Secret that does not hold a valid key is left out (and logged).
pub fn key_table<'a>(
    secrets: impl Iterator<Item = &'a Secret>,
    identities: &IdentityMap,
    account: &str,
) -> KeyTable {
    let mut table = KeyTable::new();
    for secret in secrets {
        match access_key(secret, identities, account) {
            Ok(credential) => {
                let id = credential.access_key_id.clone();
                if table.contains_key(&id) {
                    tracing::warn!(secret = %secret.name_any(), access_key_id = %id, "access key id used by another Secret; ignored");
                    continue;
                }
                table.insert(id, Arc::new(credential));
            }
            Err(why) => {
                tracing::warn!(secret = %secret.name_any(), %why, "not a usable access-key Secret")
            }
        }
    }
    table
}

fn access_key(
    secret: &Secret,
    identities: &IdentityMap,
    account: &str,
) -> Result<Credential, String> {
    let data = secret.data.as_ref().ok_or("it has no data")?;
    let text = |name: &str| -> Result<Option<Zeroizing<String>>, String> {
        match data.get(name) {
            None => Ok(None),
            Some(bytes) => String::from_utf8(bytes.0.clone())
                .map(|s| Some(Zeroizing::new(s)))
                .map_err(|_| format!("{name} is not UTF-8")),
        }
    };
    let id = text("accessKeyId")?.ok_or("accessKeyId is missing")?;
    let secret_key = text("secretAccessKey")?.ok_or("secretAccessKey is missing")?;
    if secret_key.len() < MIN_SECRET_LEN {
        return Err(format!(
            "secretAccessKey must be at least {MIN_SECRET_LEN} characters"
        ));
    }
    let user = text("user")?.ok_or("user is missing")?;
    let user = user.trim();
    if user.is_empty() {
        return Err("user is empty".into());
    }
    let groups: Vec<String> = text("groups")?
        .map(|g| {
            g.split(',')
                .map(str::trim)
                .filter(|g| !g.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    let credential =
        Credential::new(id.trim(), secret_key, account, None).map_err(|e| e.to_string())?;
    Ok(credential.with_principal(identities.principal(account, user, &groups)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;

    fn secret(name: &str, pairs: &[(&str, &str)]) -> Secret {
        Secret {
            metadata: kube::api::ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            type_: Some(ACCESS_KEY_SECRET_TYPE.into()),
            data: Some(
                pairs
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), ByteString(v.as_bytes().to_vec())))
                    .collect(),
            ),
            ..Default::default()
        }
    }

    #[test]
    fn secrets_become_keys_of_their_identity() {
        let identities = IdentityMap {
            admin_groups: vec!["system:masters".into()],
            ..IdentityMap::default()
        };
        let good = secret(
            "ci",
            &[
                ("accessKeyId", "AKIACI0001"),
                ("secretAccessKey", "0123456789abcdefXYZ"),
                ("user", "ci-deployer"),
                ("groups", "ci, deployers,"),
            ],
        );
        let admin = secret(
            "ops",
            &[
                ("accessKeyId", "AKIAOPS001"),
                ("secretAccessKey", "0123456789abcdefXYZ"),
                ("user", "ops"),
                ("groups", "system:masters"),
            ],
        );
        let short = secret(
            "short",
            &[
                ("accessKeyId", "AKIASHORT"),
                ("secretAccessKey", "tiny"),
                ("user", "x"),
            ],
        );
        let no_user = secret(
            "nouser",
            &[
                ("accessKeyId", "AKIANOUSER"),
                ("secretAccessKey", "0123456789abcdefXYZ"),
            ],
        );
        let duplicate = secret(
            "dup",
            &[
                ("accessKeyId", "AKIACI0001"),
                ("secretAccessKey", "another-secret-value"),
                ("user", "mallory"),
            ],
        );
        let all = [good, admin, short, no_user, duplicate];
        let table = key_table(all.iter(), &identities, "111122223333");
        assert_eq!(table.len(), 2);
        let ci = &table["AKIACI0001"];
        assert_eq!(
            ci.principal.arn(),
            "arn:aws:iam::111122223333:user/k8s/ci-deployer"
        );
        assert_eq!(
            ci.principal.groups(),
            [
                "arn:aws:iam::111122223333:group/k8s/ci",
                "arn:aws:iam::111122223333:group/k8s/deployers"
            ]
        );
        assert_eq!(ci.secret_access_key(), "0123456789abcdefXYZ");
        assert_eq!(
            table["AKIAOPS001"].principal.role(),
            kubekms_engine::service::AccountRole::Administrator
        );
    }
}
