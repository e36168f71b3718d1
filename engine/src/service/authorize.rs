//! The authorization hook: every operation asks it before acting, with the caller, the action
//! the operation needs, the key it resolved and the encryption context.
//!
//! [`KeyPolicies`] (the default) enforces each key's policy document (see [`crate::policy`]);
//! [`AllowAll`] lets every authenticated caller do anything (benchmarks compare the two).
//!
//! Operations on no key (kubekms has no IAM, so the principal's [`AccountRole`] stands in for
//! its identity-based policy): CreateKey needs a key creator or an administrator; ListKeys and
//! ListAliases show a member only the keys it may describe; GenerateRandom is open to every
//! authenticated caller.

use kubekms_proto::Action;

use super::{AccountRole, Caller};
use crate::blob::EncryptionContext;
use crate::error::{shown, KmsError, Result};
use crate::policy::{Decision, KeyPolicy, Request};
use crate::record::KeyRecord;

/// What an operation is about to do.
pub struct AccessRequest<'a> {
    pub caller: &'a Caller,
    pub action: Action,
    /// The key acted on, resolved from the request (or from the ciphertext); `None` for
    /// operations on no existing key (CreateKey, ListKeys, ListAliases, GenerateRandom).
    pub key: Option<KeyAccess<'a>>,
    /// The key as the caller named it (key id, key ARN, alias name or alias ARN), when it did.
    pub requested: Option<&'a str>,
    /// The encryption context of cryptographic operations that take one.
    pub encryption_context: Option<&'a EncryptionContext>,
}

/// A resolved key, as the hook sees it.
#[derive(Clone, Copy)]
pub struct KeyAccess<'a> {
    pub record: &'a KeyRecord,
    pub arn: &'a str,
    /// The key's policy document, parsed.
    pub policy: &'a KeyPolicy,
}

/// Decides whether a request may go ahead. An `Err` (normally `KmsError::AccessDenied`) is
/// answered to the caller as it is.
pub trait Authorizer: Send + Sync + 'static {
    fn authorize(&self, request: &AccessRequest<'_>) -> Result<()>;

    /// What `caller` is told when the key it named (`requested`) does not exist. By default
    /// the truth (`not_found`); an authorizer that hides keys from callers without rights
    /// answers as it would for a key they may not use, so absence and refusal look alike.
    fn absent(
        &self,
        caller: &Caller,
        action: Action,
        requested: &str,
        not_found: KmsError,
    ) -> KmsError {
        let _ = (caller, action, requested);
        not_found
    }

    /// Whether ListKeys and ListAliases show `key` to `caller` (by default, every key).
    fn lists(&self, caller: &Caller, key: KeyAccess<'_>) -> bool {
        let _ = (caller, key);
        true
    }
}

/// Allows every request: access control is the credentials' alone.
pub struct AllowAll;

impl Authorizer for AllowAll {
    fn authorize(&self, _request: &AccessRequest<'_>) -> Result<()> {
        Ok(())
    }
}

/// Enforces each key's policy; see the module documentation for operations on no key.
pub struct KeyPolicies;

impl Authorizer for KeyPolicies {
    fn authorize(&self, request: &AccessRequest<'_>) -> Result<()> {
        let caller = request.caller;
        let principal = &caller.principal;
        let Some(key) = request.key else {
            return keyless(caller, request.action);
        };
        let decision = key.policy.evaluate(&Request {
            subject: caller.subject(),
            action: request.action,
            context: request.encryption_context,
            resource: Some(key.arn),
        });
        let resource = || match request.requested {
            Some(named) => requested_arn(caller, named),
            None => key.arn.to_owned(),
        };
        match decision {
            Decision::Allow => Ok(()),
            // A member hears the same words whatever refused it: an explicit Deny that named
            // everyone would otherwise tell it that the key exists.
            Decision::ExplicitDeny(_) if sees_every_key(caller) => {
                Err(KmsError::AccessDenied(format!(
                "User: {} is not authorized to perform: {} on resource: {} with an explicit deny \
                 in a resource-based policy",
                principal.arn(),
                request.action.iam_name(),
                resource()
            )))
            }
            Decision::ImplicitDeny | Decision::ExplicitDeny(_) => {
                Err(not_allowed(caller, request.action, &resource()))
            }
        }
    }

    fn absent(
        &self,
        caller: &Caller,
        action: Action,
        requested: &str,
        not_found: KmsError,
    ) -> KmsError {
        if sees_every_key(caller) {
            not_found
        } else {
            not_allowed(caller, action, &requested_arn(caller, requested))
        }
    }

    fn lists(&self, caller: &Caller, key: KeyAccess<'_>) -> bool {
        sees_every_key(caller)
            || self
                .authorize(&AccessRequest {
                    caller,
                    action: Action::DescribeKey,
                    key: Some(key),
                    requested: None,
                    encryption_context: None,
                })
                .is_ok()
    }
}

/// Callers with an account role (administrators, key creators) list every key, so they learn
/// nothing from being told a key is absent or that a Deny refused them.
fn sees_every_key(caller: &Caller) -> bool {
    caller.principal.role() != AccountRole::Member
}

fn keyless(caller: &Caller, action: Action) -> Result<()> {
    let role = caller.principal.role();
    let allowed = match action {
        Action::CreateKey => matches!(role, AccountRole::Administrator | AccountRole::KeyCreator),
        // Filtered to what the caller may describe, by the listing itself.
        Action::ListKeys | Action::ListAliases | Action::GenerateRandom => true,
        _ => role == AccountRole::Administrator,
    };
    if allowed {
        Ok(())
    } else {
        Err(KmsError::AccessDenied(format!(
            "User: {} is not authorized to perform: {} because no identity-based policy allows \
             the {} action",
            caller.principal.arn(),
            action.iam_name(),
            action.iam_name()
        )))
    }
}

/// AWS's words for a request no policy allows.
fn not_allowed(caller: &Caller, action: Action, resource: &str) -> KmsError {
    KmsError::AccessDenied(format!(
        "User: {} is not authorized to perform: {} on resource: {} because no resource-based \
         policy allows the {} action",
        caller.principal.arn(),
        action.iam_name(),
        resource,
        action.iam_name()
    ))
}

/// The ARN of the key or alias as the caller named it, for a refusal that must read the same
/// whether or not the key exists. The name is the caller's own, shown in bounded form.
fn requested_arn(caller: &Caller, requested: &str) -> String {
    // Longer than `shown`'s bound: a key ARN is 75 characters.
    let named = if requested.len() <= 320 && requested.bytes().all(|b| b.is_ascii_graphic()) {
        std::borrow::Cow::Borrowed(requested)
    } else {
        shown(requested)
    };
    if named.starts_with("arn:") {
        return named.into_owned();
    }
    let scope = &caller.scope;
    let resource = if named.starts_with("alias/") {
        named
    } else {
        format!("key/{named}").into()
    };
    format!("arn:aws:kms:{}:{}:{resource}", scope.region, scope.account)
}
