//! Who callers are: Kubernetes identities as KMS principals, and the web-identity exchange
//! (STS `AssumeRoleWithWebIdentity`) that turns a projected ServiceAccount token into
//! temporary credentials. No Kubernetes here: tokens are checked through the
//! [`TokenReviewer`] seam, which the operator implements with the TokenReview API.

pub mod session;

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use aws_lc_rs::digest;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use base64::Engine as _;
use kubekms_proto::principal::{group_arn, kubernetes_user_arn};
use parking_lot::Mutex;

use crate::clock::{Clock, Millis};
use crate::error::{KmsError, Result};
use crate::service::{AccountRole, Principal};
use session::{SessionCredentials, SessionIdentity, Sessions};

/// The audience projected ServiceAccount tokens must be issued for.
pub const AUDIENCE: &str = kubekms_proto::principal::TOKEN_AUDIENCE;
/// Session lengths STS allows, and its default.
pub const MIN_DURATION_SECS: u64 = 900;
pub const MAX_DURATION_SECS: u64 = 43_200;
pub const DEFAULT_DURATION_SECS: u64 = 3_600;
/// A reviewed token is trusted this long without asking again: a deleted ServiceAccount's
/// tokens stop working at most this long after.
pub const REVIEW_CACHE_MILLIS: Millis = 30_000;
const REVIEW_CACHE_ENTRIES: usize = 10_000;

/// The role name of the principal the operator acts as in the engine.
pub const OPERATOR_ROLE: &str = "kubekms-operator";

/// The role name of the principal the injection webhook acts as.
pub const WEBHOOK_ROLE: &str = "kubekms-webhook";

/// The principal the injection webhook acts as: `arn:aws:iam::<account>:role/kubekms-webhook`.
/// It may only make data keys without plaintext, and only as key policies allow it.
pub fn webhook_role_arn(account: &str) -> String {
    format!("arn:aws:iam::{account}:role/{WEBHOOK_ROLE}")
}

/// The principal the operator's controllers act as: `arn:aws:iam::<account>:role/kubekms-operator`.
pub fn operator_role_arn(account: &str) -> String {
    format!("arn:aws:iam::{account}:role/{OPERATOR_ROLE}")
}

/// How Kubernetes identities become principals: user names and groups as ARNs (see
/// `kubekms_proto::principal`), members of `admin_groups` the account's administrators.
#[derive(Clone, Debug, Default)]
pub struct IdentityMap {
    pub admin_groups: Vec<String>,
    /// The Kubernetes user name (`system:serviceaccount:<ns>:<name>`) of the operator's
    /// ServiceAccount, when the operator runs apart from the engine. Its web-identity sessions
    /// act as [`operator_role_arn`] with [`AccountRole::KeyCreator`], the principal the
    /// embedded operator is given in-process; the key policies the operator writes name that
    /// principal, so a remote operator manages exactly the keys an embedded one would.
    pub operator_service_account: Option<String>,
    /// The Kubernetes user name of the injection webhook's ServiceAccount: its web-identity
    /// sessions act as [`webhook_role_arn`], an ordinary member that the operator's key
    /// policies let make data keys for workloads (see `kubekms-operator`'s key policies).
    pub webhook_service_account: Option<String>,
}

impl IdentityMap {
    /// The operator's principal in `account`.
    pub fn operator_principal(account: &str) -> Principal {
        Principal::new(operator_role_arn(account)).with_role(AccountRole::KeyCreator)
    }

    /// The principal a web-identity session of `username` acts as: the operator's for the
    /// operator's ServiceAccount, [`IdentityMap::principal`] for everyone else. Only sessions
    /// get the operator's principal: an access-key Secret naming the operator's user name
    /// stays an ordinary member (a Secret is not a ServiceAccount token the cluster vouches
    /// for).
    pub fn session_principal(&self, account: &str, username: &str, groups: &[String]) -> Principal {
        if self.operator_service_account.as_deref() == Some(username) {
            return Self::operator_principal(account);
        }
        if self.webhook_service_account.as_deref() == Some(username) {
            return Principal::new(webhook_role_arn(account)).with_role(AccountRole::Member);
        }
        self.principal(account, username, groups)
    }

    pub fn principal(&self, account: &str, username: &str, groups: &[String]) -> Principal {
        let role = if groups.iter().any(|g| self.admin_groups.contains(g)) {
            AccountRole::Administrator
        } else {
            AccountRole::Member
        };
        Principal::new(kubernetes_user_arn(account, username))
            .with_groups(groups.iter().map(|g| group_arn(account, g)).collect())
            .with_role(role)
    }
}

/// What the cluster says about a token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReviewedToken {
    pub username: String,
    pub groups: Vec<String>,
}

/// Checks a bearer token for [`AUDIENCE`] (the TokenReview API, in the operator).
#[async_trait]
pub trait TokenReviewer: Send + Sync + 'static {
    /// `Err(KmsError::InvalidIdentityToken)` for a token the cluster does not accept,
    /// `Err(KmsError::IdpCommunication)` when it cannot be asked.
    async fn review(&self, token: &str) -> Result<ReviewedToken>;
}

/// One AssumeRoleWithWebIdentity request, as the STS transport decoded it.
pub struct AssumeRequest<'a> {
    pub role_arn: &'a str,
    pub role_session_name: &'a str,
    pub web_identity_token: &'a str,
    pub duration_seconds: Option<u64>,
}

/// Its answer.
pub struct Assumed {
    pub credentials: SessionCredentials,
    /// `arn:aws:sts::<account>:assumed-role/<role>/<session>`
    pub assumed_role_arn: String,
    pub assumed_role_id: String,
    /// The Kubernetes user name the token stands for.
    pub subject: String,
    /// The principal the credentials act as.
    pub principal: Principal,
}

/// The web-identity exchange: reviews tokens (with a bounded cache) and issues sessions.
pub struct WebIdentity {
    reviewer: Arc<dyn TokenReviewer>,
    sessions: Arc<Sessions>,
    identities: IdentityMap,
    account: String,
    clock: Arc<dyn Clock>,
    /// SHA-256 of the token → the review and when it was made.
    reviewed: Mutex<HashMap<[u8; 32], (ReviewedToken, Millis)>>,
}

impl WebIdentity {
    pub fn new(
        reviewer: Arc<dyn TokenReviewer>,
        sessions: Arc<Sessions>,
        identities: IdentityMap,
        account: impl Into<String>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            reviewer,
            sessions,
            identities,
            account: account.into(),
            clock,
            reviewed: Mutex::new(HashMap::new()),
        }
    }

    pub async fn assume(&self, req: AssumeRequest<'_>) -> Result<Assumed> {
        let role = role_name(req.role_arn, &self.account)?;
        check_session_name(req.role_session_name)?;
        let duration = req.duration_seconds.unwrap_or(DEFAULT_DURATION_SECS);
        if !(MIN_DURATION_SECS..=MAX_DURATION_SECS).contains(&duration) {
            return Err(KmsError::validation(format!(
                "1 validation error detected: Value '{duration}' at 'durationSeconds' failed to \
                 satisfy constraint: Member must have value between {MIN_DURATION_SECS} and \
                 {MAX_DURATION_SECS}"
            )));
        }
        let now = self.clock.now_millis();
        // The claims are read only for the expiry; the review is what vouches for the token.
        let token_expiry = jwt_expiry(req.web_identity_token)?;
        if token_expiry <= now {
            return Err(KmsError::ExpiredToken(
                "Token expired: current date/time is past the token's exp claim".into(),
            ));
        }
        let reviewed = self.review(req.web_identity_token, now).await?;
        let identity = SessionIdentity {
            account: self.account.clone(),
            username: reviewed.username,
            groups: reviewed.groups,
        };
        // `duration` is at most MAX_DURATION_SECS, checked above.
        let expiration = token_expiry.min(now + duration as Millis * 1000);
        let credentials = self.sessions.issue(&identity, expiration)?;
        let principal = self.principal_of(&identity);
        Ok(Assumed {
            assumed_role_arn: format!(
                "arn:aws:sts::{}:assumed-role/{role}/{}",
                self.account, req.role_session_name
            ),
            assumed_role_id: format!("{}:{}", &credentials.access_key_id, req.role_session_name),
            subject: identity.username,
            credentials,
            principal,
        })
    }

    /// The principal a session acts as.
    pub fn principal_of(&self, identity: &SessionIdentity) -> Principal {
        self.identities
            .session_principal(&identity.account, &identity.username, &identity.groups)
    }

    pub fn sessions(&self) -> &Sessions {
        &self.sessions
    }

    async fn review(&self, token: &str, now: Millis) -> Result<ReviewedToken> {
        let mut digest_bytes = [0u8; 32];
        digest_bytes.copy_from_slice(digest::digest(&digest::SHA256, token.as_bytes()).as_ref());
        if let Some((review, at)) = self.reviewed.lock().get(&digest_bytes) {
            if now.saturating_sub(*at) < REVIEW_CACHE_MILLIS {
                return Ok(review.clone());
            }
        }
        let review = self.reviewer.review(token).await?;
        let mut cache = self.reviewed.lock();
        if cache.len() >= REVIEW_CACHE_ENTRIES {
            cache.retain(|_, (_, at)| now.saturating_sub(*at) < REVIEW_CACHE_MILLIS);
            if cache.len() >= REVIEW_CACHE_ENTRIES {
                cache.clear();
            }
        }
        cache.insert(digest_bytes, (review.clone(), now));
        Ok(review)
    }
}

/// The role name of `arn:aws:iam::<account>:role/<path/name>`, in our account. The role names
/// nothing beyond the token's identity: any role of the account is accepted.
fn role_name<'a>(role_arn: &'a str, account: &str) -> Result<&'a str> {
    let invalid = || {
        KmsError::validation(format!(
            "RoleArn must be an IAM role ARN such as arn:aws:iam::{account}:role/kubekms"
        ))
    };
    let rest = role_arn.strip_prefix("arn:aws:iam::").ok_or_else(invalid)?;
    let (arn_account, resource) = rest.split_once(':').ok_or_else(invalid)?;
    let path = resource.strip_prefix("role/").ok_or_else(invalid)?;
    if arn_account != account {
        return Err(KmsError::AccessDenied(format!(
            "Not authorized to perform sts:AssumeRoleWithWebIdentity on {role_arn}: roles are in \
             account {account}"
        )));
    }
    let name = path.rsplit('/').next().unwrap_or(path);
    if name.is_empty() || role_arn.len() > 2048 {
        return Err(invalid());
    }
    Ok(name)
}

/// 2 to 64 of `[\w+=,.@-]`, as STS requires.
fn check_session_name(name: &str) -> Result<()> {
    let ok = (2..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_+=,.@-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(KmsError::validation(
            "RoleSessionName must be 2 to 64 characters of letters, digits and _+=,.@-",
        ))
    }
}

/// The `exp` claim of a JWT, in milliseconds. The token's signature is the cluster's to check
/// (TokenReview); a token that is not a JWT at all is refused here.
fn jwt_expiry(token: &str) -> Result<Millis> {
    let invalid =
        || KmsError::InvalidIdentityToken("The web identity token is not a valid JWT".into());
    let mut parts = token.split('.');
    let (Some(_), Some(payload), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(invalid());
    };
    let bytes = B64URL
        .decode(payload.trim_end_matches('='))
        .map_err(|_| invalid())?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).map_err(|_| invalid())?;
    let exp = claims
        .get("exp")
        .and_then(serde_json::Value::as_i64)
        .ok_or_else(invalid)?;
    Ok(exp.saturating_mul(1000))
}

#[cfg(any(test, feature = "testing"))]
pub mod testing;
#[cfg(test)]
mod tests;
