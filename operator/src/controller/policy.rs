//! The KeyPolicy controller: the statements of the KeyPolicies that cover a Key, shipped to that
//! Key's engine key as its key policy (`PutKeyPolicy`), which the engine enforces on every call
//! (`kubekms_engine::policy`).
//!
//! # The document
//!
//! For each Key with an engine key, the document is rendered from every valid KeyPolicy of the
//! namespace that covers the Key (by name in `keyRefs`, or `"*"`), policies in name order and
//! their statements in order:
//!
//! ```json
//! {"Version": "2012-10-17", "Id": "kubekms.io/keypolicy",
//!  "Statement": [
//!   {"Sid": "Enable IAM User Permissions", "Effect": "Allow",
//!    "Principal": {"AWS": "arn:aws:iam::<account>:root"}, "Action": "kms:*", "Resource": "*"},
//!   {"Sid": "kubekms operator manages the key", "Effect": "Allow",
//!    "Principal": {"AWS": "<the operator's ARN>"}, "Action": [<OPERATOR_ACTIONS>], "Resource": "*"},
//!   <the three data-key statements, see `leading_statements`>,
//!   {"Sid": "<policy>/<sid, or the statement's index>", "Effect": "Allow" | "Deny",
//!    "Principal": {"AWS": ["<principal ARN>", ...]}, "Action": ["kms:Decrypt", ...],
//!    "Resource": "<the key's ARN>",
//!    "Condition": {"StringEquals": {"kms:EncryptionContext:<k>": "<v>"},
//!                  "Null": {"kms:EncryptionContext:<k>": "false"}}}]}
//! ```
//!
//! The leading statements are kept in every document: the account's administrators may do
//! anything (AWS's default key policy), the operator may manage the key but never use it, and
//! injected data keys work (the webhook makes them for the Key's namespace, each
//! ServiceAccount decrypts only its own, the operator re-encrypts them after a rotation).
//! A Key no KeyPolicy covers has only those (`default_document`, also its document from
//! creation). A KeyPolicy with a statement that would deny the operator one of its actions is
//! not applied (`WouldLockOut`) unless annotated [`BYPASS_LOCKOUT_ANNOTATION`].
//! `encryptionContextEquals` becomes `StringEquals` on `kms:EncryptionContext:<key>`;
//! `encryptionContextKeys` becomes `Null: "false"` on the same condition key (the pair must be
//! present, any value), as AWS writes "must be present".
//!
//! # Kubernetes identities as principals
//!
//! All in the operator's account, under the `k8s/` path so they never collide with the
//! principals of access keys:
//!
//! | KeyPolicy principal              | in the document                                              |
//! |----------------------------------|--------------------------------------------------------------|
//! | serviceAccounts `{ns, name}`     | `arn:aws:iam::<account>:role/k8s/system:serviceaccount:<ns>:<name>` |
//! | users `<name>`                   | `arn:aws:iam::<account>:user/k8s/<name>`                     |
//! | groups `<name>`                  | `arn:aws:iam::<account>:group/k8s/<name>`                    |
//!
//! A service account's segment is its Kubernetes user name, so an authenticated request (a
//! TokenReview answer) maps to its principals without a lookup: the user name under `role/k8s/`
//! when it is a service account and under `user/k8s/` otherwise, plus one `group/k8s/` principal
//! per group.
//!
//! # When documents are written
//!
//! Every reconcile of a KeyPolicy re-renders every Key of its namespace, comparing with
//! `GetKeyPolicy` and writing only what differs: that one path covers a new policy, a changed
//! `keyRefs` (Keys no longer covered lose the statements), a deleted policy (its finalizer
//! re-renders without it) and Keys created later (the Key watch wakes the policies covering
//! them). A Key no KeyPolicy covers gets the default document back, but only if its document
//! is one this controller rendered (its `Id`): a policy put through the KMS API on an uncovered
//! key is left alone. An invalid KeyPolicy (see `KeyPolicySpec::validate`) is reported
//! in its Ready condition and contributes nothing. Reconciles run one at a time, so two of them
//! never write a namespace's documents from different views of its policies.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::channel::mpsc;
use futures::StreamExt;
use kube::api::ListParams;
use kube::runtime::controller::{Action, Config as ControllerConfig};
use kube::runtime::events::EventType;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{watcher, Controller};
use kube::{Api, ResourceExt};
use kubekms_crds::policy::ALL_KEYS;
use kubekms_crds::{
    condition as condition_type, Effect, Key, KeyPolicy, KeyPolicyStatus, KeyState, PolicyStatement,
};
use kubekms_engine::identity::webhook_role_arn;
use kubekms_engine::policy::{
    Decision, KeyPolicy as EnginePolicy, Request as PolicyRequest, Subject,
};
use kubekms_engine::KmsError;
use kubekms_proto::operation::ACTION_PREFIX;
use kubekms_proto::principal::{self, NAMESPACE_TAG, SERVICE_ACCOUNT_TAG};
use serde_json::{json, Value};

use super::{backoff, condition, finalized, referring, Context, MAX_REQUEUE};
use crate::error::{Error, Result};

pub const FINALIZER: &str = "kubekms.io/keypolicy";
/// The `Id` of every document this controller renders: how it knows a document is its own.
pub const DOCUMENT_ID: &str = "kubekms.io/keypolicy";
/// The `Id` of the document of a Key no KeyPolicy covers, and the `Sid` of the statement
/// for the account's administrators.
pub const DEFAULT_DOCUMENT_ID: &str = "kubekms.io/default";
/// The `Sid` of the operator's statement.
pub const OPERATOR_STATEMENT_SID: &str = "kubekms operator manages the key";
/// A KeyPolicy annotated with this (`"true"`) is applied even if it would lock the operator
/// out of the Keys it covers (as AWS's BypassPolicyLockoutSafetyCheck).
pub const BYPASS_LOCKOUT_ANNOTATION: &str = "kubekms.io/bypass-policy-lockout-safety-check";
pub const DEFAULT_STATEMENT_SID: &str = "Enable IAM User Permissions";
/// Key events (every status write) come in bursts; one re-render per burst is enough.
const DEBOUNCE: Duration = Duration::from_millis(500);

/// Event and condition reasons: stable, so alerts and tests can match them.
pub mod reason {
    /// Ready: the documents of the covered Keys hold this policy.
    pub const APPLIED: &str = "Applied";
    /// Not Ready: `validate()` failed; the message lists the errors.
    pub const INVALID: &str = "Invalid";
    /// Not Ready: applying it would lock the operator out of the Keys it covers.
    pub const WOULD_LOCK_OUT: &str = "WouldLockOut";
    /// Event: key policies were rewritten.
    pub const KEY_POLICIES_UPDATED: &str = "KeyPoliciesUpdated";
    /// Event: the policy was deleted and the Keys it covered re-rendered without it.
    pub const REMOVED: &str = "Removed";
}

/// The principals every document of a Key names first: the account (its administrators) and
/// the operator; and the Key's namespace, to which its injected data keys are bound.
#[derive(Clone, Copy, Debug)]
pub struct Managers<'a> {
    pub account: &'a str,
    /// The operator's principal ARN.
    pub operator: &'a str,
    /// The Key's namespace.
    pub namespace: &'a str,
}

/// The `Sid`s of the data-key statements every document holds.
pub const WEBHOOK_STATEMENT_SID: &str = "kubekms webhook makes data keys for this namespace";
pub const WORKLOADS_STATEMENT_SID: &str = "kubekms workloads decrypt their own data keys";
pub const REENCRYPT_STATEMENT_SID: &str = "kubekms operator re-encrypts data keys after rotation";

/// What the operator does to a Key's engine key, and nothing more: never a cryptographic
/// operation with it.
pub const OPERATOR_ACTIONS: &[&str] = &[
    "kms:DescribeKey",
    "kms:EnableKey",
    "kms:DisableKey",
    "kms:ScheduleKeyDeletion",
    "kms:CancelKeyDeletion",
    "kms:EnableKeyRotation",
    "kms:DisableKeyRotation",
    "kms:GetKeyRotationStatus",
    "kms:ListKeyRotations",
    "kms:RotateKeyOnDemand",
    "kms:TagResource",
    "kms:UntagResource",
    "kms:ListResourceTags",
    "kms:UpdateKeyDescription",
    "kms:GetKeyPolicy",
    "kms:PutKeyPolicy",
    "kms:CreateAlias",
    "kms:UpdateAlias",
    "kms:DeleteAlias",
    "kms:GetParametersForImport",
    "kms:ImportKeyMaterial",
    "kms:DeleteImportedKeyMaterial",
];

/// The statements every document starts with: the account's administrators may do anything
/// (as in AWS's default key policy), the operator may manage the key; and the three that make
/// injected data keys work without a KeyPolicy, each bound by the encryption context to the
/// Key's namespace:
/// - the webhook may make data keys (without plaintext) for a ServiceAccount of the namespace;
/// - a ServiceAccount of the namespace may decrypt the data keys made for it, and only those
///   (`${aws:PrincipalTag/kubernetes-service-account}`, the caller's own name);
/// - the operator may re-encrypt them to the Key's newest version (it never sees plaintext:
///   ReEncrypt decrypts and encrypts inside the engine).
fn leading_statements(managers: Managers<'_>) -> [Value; 5] {
    use kubekms_crds::datakey::context::{DATA_KEY, NAMESPACE, SERVICE_ACCOUNT};
    let context = |k: &str| format!("kms:EncryptionContext:{k}");
    let bound = json!({ context(NAMESPACE): managers.namespace });
    let named = json!({ context(SERVICE_ACCOUNT): "false", context(DATA_KEY): "false" });
    [
        json!({
            "Sid": DEFAULT_STATEMENT_SID,
            "Effect": "Allow",
            "Principal": { "AWS": principal::root_arn(managers.account) },
            "Action": "kms:*",
            "Resource": "*"
        }),
        json!({
            "Sid": OPERATOR_STATEMENT_SID,
            "Effect": "Allow",
            "Principal": { "AWS": managers.operator },
            "Action": OPERATOR_ACTIONS,
            "Resource": "*"
        }),
        json!({
            "Sid": WEBHOOK_STATEMENT_SID,
            "Effect": "Allow",
            "Principal": { "AWS": webhook_role_arn(managers.account) },
            "Action": "kms:GenerateDataKeyWithoutPlaintext",
            "Resource": "*",
            "Condition": { "StringEquals": bound, "Null": named }
        }),
        json!({
            "Sid": WORKLOADS_STATEMENT_SID,
            "Effect": "Allow",
            "Principal": { "AWS": "*" },
            "Action": "kms:Decrypt",
            "Resource": "*",
            "Condition": { "StringEquals": {
                context(NAMESPACE): managers.namespace,
                context(SERVICE_ACCOUNT): format!("${{aws:PrincipalTag/{SERVICE_ACCOUNT_TAG}}}"),
                format!("aws:PrincipalTag/{NAMESPACE_TAG}"): managers.namespace,
            } }
        }),
        json!({
            "Sid": REENCRYPT_STATEMENT_SID,
            "Effect": "Allow",
            "Principal": { "AWS": managers.operator },
            "Action": ["kms:ReEncryptFrom", "kms:ReEncryptTo"],
            "Resource": "*",
            "Condition": { "StringEquals": bound, "Null": named }
        }),
    ]
}

/// The document of a Key no KeyPolicy covers (and of every new Key): its namespace's admins
/// manage it through the Key resource (the operator acts for them), nobody uses it.
pub fn default_document(managers: Managers<'_>) -> Value {
    json!({
        "Version": "2012-10-17",
        "Id": DEFAULT_DOCUMENT_ID,
        "Statement": leading_statements(managers)
    })
}

/// Why `document` would lock the operator out of the key (a Deny that matches it on an action
/// it needs), if it would. Evaluated by the engine's own policy code, so the check and the
/// enforcement cannot disagree.
pub fn lockout(document: &Value, operator: &Subject<'_>) -> Option<String> {
    let parsed = match EnginePolicy::parse(&document.to_string()) {
        Ok(p) => p,
        Err(reason) => {
            return Some(format!(
                "the rendered document is not enforceable: {reason}"
            ))
        }
    };
    OPERATOR_ACTIONS.iter().find_map(|name| {
        let action = name
            .strip_prefix(ACTION_PREFIX)
            .and_then(kubekms_proto::Action::from_name)?;
        match parsed.evaluate(&PolicyRequest {
            subject: *operator,
            action,
            context: None,
            resource: None,
        }) {
            Decision::Allow => None,
            Decision::ExplicitDeny(sid) => Some(format!(
                "statement {} denies the operator ({}) {name}: the Key could no longer be \
                 managed",
                sid.as_deref().unwrap_or("without a Sid"),
                operator.arn
            )),
            Decision::ImplicitDeny => Some(format!(
                "nothing allows the operator ({}) {name}",
                operator.arn
            )),
        }
    })
}

/// Whether a KeyPolicy asks to skip the lockout check (its annotation is `"true"`).
pub fn bypasses_lockout_check(policy: &KeyPolicy) -> bool {
    policy
        .annotations()
        .get(BYPASS_LOCKOUT_ANNOTATION)
        .is_some_and(|v| v == "true")
}

/// One KeyPolicy statement in the document.
pub fn render_statement(
    account: &str,
    key_arn: &str,
    policy: &str,
    index: usize,
    statement: &PolicyStatement,
) -> Value {
    let p = &statement.principals;
    let principals: Vec<String> = p
        .service_accounts
        .iter()
        .map(|sa| principal::service_account_arn(account, &sa.namespace, &sa.name))
        .chain(
            p.users
                .iter()
                .map(|u| principal::kubernetes_user_arn(account, u)),
        )
        .chain(p.groups.iter().map(|g| principal::group_arn(account, g)))
        .collect();
    let sid = match &statement.sid {
        Some(sid) => format!("{policy}/{sid}"),
        None => format!("{policy}/{index}"),
    };
    let mut out = json!({
        "Sid": sid,
        "Effect": match statement.effect {
            Effect::Allow => "Allow",
            Effect::Deny => "Deny",
        },
        "Principal": { "AWS": principals },
        "Action": statement.actions,
        "Resource": key_arn,
    });
    if let Some(c) = statement.conditions.as_ref().filter(|c| !c.is_empty()) {
        let mut conditions = serde_json::Map::new();
        if !c.encryption_context_equals.is_empty() {
            let equals: serde_json::Map<String, Value> = c
                .encryption_context_equals
                .iter()
                .map(|(k, v)| {
                    (
                        format!("kms:EncryptionContext:{k}"),
                        Value::from(v.as_str()),
                    )
                })
                .collect();
            conditions.insert("StringEquals".into(), Value::Object(equals));
        }
        if !c.encryption_context_keys.is_empty() {
            let present: serde_json::Map<String, Value> = c
                .encryption_context_keys
                .iter()
                .map(|k| (format!("kms:EncryptionContext:{k}"), Value::from("false")))
                .collect();
            conditions.insert("Null".into(), Value::Object(present));
        }
        out["Condition"] = Value::Object(conditions);
    }
    out
}

/// The document for the key `key_arn` from the policies covering it (`(name, statements)`, in
/// name order); `None` when no policy covers it.
pub fn render_document(
    managers: Managers<'_>,
    key_arn: &str,
    covering: &[(&str, &[PolicyStatement])],
) -> Option<Value> {
    if covering.is_empty() {
        return None;
    }
    let mut statements = leading_statements(managers).to_vec();
    for (policy, list) in covering {
        for (i, s) in list.iter().enumerate() {
            statements.push(render_statement(managers.account, key_arn, policy, i, s));
        }
    }
    Some(json!({
        "Version": "2012-10-17",
        "Id": DOCUMENT_ID,
        "Statement": statements
    }))
}

/// Whether `document` (as GetKeyPolicy returned it) was rendered by this controller.
pub fn is_rendered(document: &Value) -> bool {
    document.get("Id").and_then(Value::as_str) == Some(DOCUMENT_ID)
}

/// What a Key's document should be, given what it is now: `Some` to write, `None` to leave.
pub fn wanted(current: &Value, rendered: Option<Value>, managers: Managers<'_>) -> Option<Value> {
    // Ours to rewrite: a rendered document, or a default one from an earlier version of the
    // operator (new leading statements reach Keys made before them).
    let ours = is_rendered(current)
        || current.get("Id").and_then(Value::as_str) == Some(DEFAULT_DOCUMENT_ID);
    let want = match rendered {
        Some(doc) => doc,
        None if ours => default_document(managers),
        None => return None,
    };
    (want != *current).then_some(want)
}

/// The KeyPolicies the Key watch should wake: those in the Key's namespace that cover it.
pub fn policies_covering(store: &Store<KeyPolicy>, key: &Key) -> Vec<ObjectRef<KeyPolicy>> {
    referring(store, key, |p, name| p.spec.covers_key(name))
}

/// Runs the controller until the process stops. `trigger` re-reconciles every KeyPolicy;
/// `keys` is the operator's one Key watch, fanned out (see [`super::key::controller`]).
pub async fn run(
    ctx: Arc<Context>,
    trigger: mpsc::UnboundedReceiver<()>,
    keys: mpsc::UnboundedReceiver<Key>,
) {
    let policies: Api<KeyPolicy> = Api::all(ctx.client.clone());
    let controller = Controller::new(policies, watcher::Config::default().any_semantic());
    let store = controller.store();
    controller
        .with_config(
            ControllerConfig::default()
                .concurrency(1)
                .debounce(DEBOUNCE),
        )
        .watches_stream(keys.map(Ok), move |k: Key| policies_covering(&store, &k))
        .reconcile_all_on(trigger)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "KeyPolicy controller");
            }
        })
        .await;
}

pub async fn reconcile(policy: Arc<KeyPolicy>, ctx: Arc<Context>) -> Result<Action> {
    let namespace = policy
        .namespace()
        .ok_or_else(|| Error::InvalidSpec("a KeyPolicy must be namespaced".into()))?;
    let api: Api<KeyPolicy> = Api::namespaced(ctx.client.clone(), &namespace);
    let result = finalized(
        &api,
        &*policy,
        FINALIZER,
        apply(&policy, &api, &ctx),
        cleanup(&policy, &ctx),
    )
    .await;
    if let Err(e) = &result {
        ctx.event(&*policy, EventType::Warning, e.reason(), e.chain())
            .await;
        if !matches!(e, Error::Kube(_)) {
            let _ = write_status(&api, &policy, &ctx, false, e.reason(), &e.chain()).await;
        }
    }
    result
}

pub fn error_policy(policy: Arc<KeyPolicy>, error: &Error, _ctx: Arc<Context>) -> Action {
    tracing::warn!(policy = %policy.name_any(), namespace = ?policy.namespace(), error = %error.chain(), "reconcile failed");
    backoff(error)
}

async fn write_status(
    api: &Api<KeyPolicy>,
    policy: &KeyPolicy,
    ctx: &Context,
    ready: bool,
    why: &str,
    message: &str,
) -> Result<()> {
    let previous = policy.status.as_ref();
    let status = KeyPolicyStatus {
        conditions: vec![condition(
            previous
                .map(|s| s.conditions.as_slice())
                .unwrap_or_default(),
            condition_type::READY,
            ready,
            why,
            message,
            policy.metadata.generation,
            ctx.now(),
        )],
        observed_generation: policy.metadata.generation,
    };
    super::write_status(api, policy, previous, &status).await
}

async fn apply(policy: &KeyPolicy, api: &Api<KeyPolicy>, ctx: &Context) -> Result<Action> {
    let namespace = policy.namespace().unwrap_or_default();
    let synced = sync_namespace(ctx, &namespace).await?;
    if let Err(errors) = policy.spec.validate() {
        let message = errors.join("; ");
        // Once per generation, not on every periodic look.
        let reported = policy.status.as_ref().is_some_and(|s| {
            s.observed_generation == policy.metadata.generation
                && s.conditions.iter().any(|c| c.reason == reason::INVALID)
        });
        if !reported {
            ctx.event(policy, EventType::Warning, reason::INVALID, message.clone())
                .await;
        }
        write_status(api, policy, ctx, false, reason::INVALID, &message).await?;
        return Ok(Action::await_change());
    }
    if let Some(why) = synced.locked_out.get(&policy.name_any()) {
        let message = format!(
            "not applied: {why}; to apply it anyway, annotate the KeyPolicy with \
             {BYPASS_LOCKOUT_ANNOTATION}: \"true\""
        );
        let reported = policy.status.as_ref().is_some_and(|s| {
            s.observed_generation == policy.metadata.generation
                && s.conditions
                    .iter()
                    .any(|c| c.reason == reason::WOULD_LOCK_OUT)
        });
        if !reported {
            ctx.event(
                policy,
                EventType::Warning,
                reason::WOULD_LOCK_OUT,
                message.clone(),
            )
            .await;
        }
        write_status(api, policy, ctx, false, reason::WOULD_LOCK_OUT, &message).await?;
        return Ok(Action::await_change());
    }
    let name = policy.name_any();
    let updated: Vec<&str> = synced
        .updated
        .iter()
        .filter(|k| policy.spec.covers_key(k) || synced.uncovered.contains(k))
        .map(String::as_str)
        .collect();
    if !updated.is_empty() {
        ctx.event(
            policy,
            EventType::Normal,
            reason::KEY_POLICIES_UPDATED,
            format!(
                "wrote the key policy of {} Key(s): {}",
                updated.len(),
                updated.join(", ")
            ),
        )
        .await;
    }
    let count = synced.covered.get(&name).copied().unwrap_or(0);
    let message = if policy.spec.key_refs.iter().any(|r| r == ALL_KEYS) {
        format!("applies to {count} Key(s): every Key of the namespace with an engine key")
    } else {
        let waiting = policy.spec.key_refs.len().saturating_sub(count);
        if waiting == 0 {
            format!("applies to {count} Key(s)")
        } else {
            format!(
                "applies to {count} Key(s); {waiting} named Key(s) do not exist or have no \
                 engine key yet"
            )
        }
    };
    write_status(api, policy, ctx, true, reason::APPLIED, &message).await?;
    Ok(Action::requeue(MAX_REQUEUE))
}

async fn cleanup(policy: &KeyPolicy, ctx: &Context) -> Result<Action> {
    let namespace = policy.namespace().unwrap_or_default();
    let synced = sync_namespace(ctx, &namespace).await?;
    let touched: Vec<&str> = synced
        .updated
        .iter()
        .filter(|k| policy.spec.covers_key(k))
        .map(String::as_str)
        .collect();
    ctx.event(
        policy,
        EventType::Normal,
        reason::REMOVED,
        format!(
            "removed from the key policy of {} Key(s){}",
            touched.len(),
            if touched.is_empty() {
                String::new()
            } else {
                format!(": {}", touched.join(", "))
            }
        ),
    )
    .await;
    Ok(Action::await_change())
}

/// Why `policy` must not be applied: it would lock the operator out of the Keys it covers (and
/// it does not carry the bypass annotation). Each statement is judged the same in any document
/// (a Deny denies whatever else is there), so the policy is checked on its own.
fn refused_for_lockout(policy: &KeyPolicy, ctx: &Context) -> Option<String> {
    if bypasses_lockout_check(policy) {
        return None;
    }
    let caller = ctx.engine.caller();
    let namespace = policy.namespace().unwrap_or_default();
    let managers = Managers {
        account: &caller.scope.account,
        operator: caller.principal.arn(),
        namespace: &namespace,
    };
    let statements = [(policy.name_any(), policy.spec.statements.as_slice())];
    let covering: Vec<(&str, &[PolicyStatement])> =
        statements.iter().map(|(n, s)| (n.as_str(), *s)).collect();
    let document = render_document(managers, "*", &covering)?;
    lockout(&document, &caller.subject())
}

/// What one pass over a namespace did.
#[derive(Default)]
struct Synced {
    /// Keys whose document was written.
    updated: Vec<String>,
    /// Keys written back to the default document.
    uncovered: Vec<String>,
    /// Per policy name: how many Keys with an engine key it covers.
    covered: BTreeMap<String, usize>,
    /// Per policy name: why it was left out (it would lock the operator out).
    locked_out: BTreeMap<String, String>,
}

/// Brings the document of every Key in `namespace` in line with the namespace's live, valid
/// KeyPolicies (those being deleted are left out).
async fn sync_namespace(ctx: &Context, namespace: &str) -> Result<Synced> {
    let policies: Api<KeyPolicy> = Api::namespaced(ctx.client.clone(), namespace);
    let keys: Api<Key> = Api::namespaced(ctx.client.clone(), namespace);
    let mut out = Synced::default();
    let mut live: Vec<KeyPolicy> = Vec::new();
    for p in policies.list(&ListParams::default()).await?.items {
        if p.metadata.deletion_timestamp.is_some() || p.spec.validate().is_err() {
            continue;
        }
        match refused_for_lockout(&p, ctx) {
            Some(why) => {
                out.locked_out.insert(p.name_any(), why);
            }
            None => live.push(p),
        }
    }
    live.sort_by_key(|p| p.name_any());
    let caller = ctx.engine.caller();
    let managers = Managers {
        account: &caller.scope.account,
        operator: caller.principal.arn(),
        namespace,
    };
    for key in keys.list(&ListParams::default()).await?.items {
        let status = key.status.as_ref();
        let (Some(key_id), Some(arn)) = (
            status.and_then(|s| s.key_id.clone()),
            status.and_then(|s| s.arn.clone()),
        ) else {
            continue;
        };
        // The engine refuses changes to a key pending deletion; a Key applied again catches
        // up through the Key watch.
        if key.metadata.deletion_timestamp.is_some()
            || status.and_then(|s| s.state) == Some(KeyState::PendingDeletion)
        {
            continue;
        }
        let name = key.name_any();
        let covering_policies: Vec<&KeyPolicy> =
            live.iter().filter(|p| p.spec.covers_key(&name)).collect();
        let bypass = covering_policies.iter().any(|p| bypasses_lockout_check(p));
        let covering: Vec<(&str, &[PolicyStatement])> = covering_policies
            .iter()
            .map(|p| {
                (
                    p.metadata.name.as_deref().unwrap_or_default(),
                    p.spec.statements.as_slice(),
                )
            })
            .collect();
        for (policy, _) in &covering {
            *out.covered.entry((*policy).to_owned()).or_default() += 1;
        }
        let rendered = render_document(managers, &arn, &covering);
        let current = match ctx.engine.key_policy(&key_id).await {
            Ok(policy) => serde_json::from_str::<Value>(&policy).unwrap_or(Value::Null),
            // Destroyed at the end of its window; the Key controller reports that.
            Err(e) if e.is_not_found() => continue,
            Err(e) => return Err(e),
        };
        let uncovered = rendered.is_none();
        let Some(want) = wanted(&current, rendered, managers) else {
            continue;
        };
        let document = serde_json::to_string(&want).map_err(|source| Error::Json {
            what: "key policy",
            source,
        })?;
        match ctx.engine.put_key_policy(&key_id, document, bypass).await {
            Ok(()) => {}
            Err(e)
                if matches!(
                    e.engine_error(),
                    Some(KmsError::NotFound(_) | KmsError::InvalidState(_))
                ) =>
            {
                continue
            }
            Err(e) => return Err(e),
        }
        tracing::info!(key = %name, namespace, arn = %arn, "key policy written");
        if uncovered {
            out.uncovered.push(name.clone());
        }
        out.updated.push(name);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kubekms_crds::{KeyPolicySpec, Principals, ServiceAccountReference, StatementConditions};

    const ACCOUNT: &str = "111122223333";
    const OPERATOR: &str = "arn:aws:iam::111122223333:role/kubekms-operator";
    const M: Managers<'static> = Managers {
        account: ACCOUNT,
        operator: OPERATOR,
        namespace: "shop",
    };
    const ARN: &str = "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab";

    fn statement() -> PolicyStatement {
        PolicyStatement {
            sid: Some("AppUse".into()),
            effect: Effect::Allow,
            principals: Principals {
                service_accounts: vec![ServiceAccountReference {
                    namespace: "shop".into(),
                    name: "orders".into(),
                }],
                users: vec!["alice@example.com".into()],
                groups: vec!["system:authenticated".into()],
            },
            actions: vec!["kms:Encrypt".into(), "kms:GenerateDataKey*".into()],
            conditions: Some(StatementConditions {
                encryption_context_equals: [("app".to_owned(), "orders".to_owned())].into(),
                encryption_context_keys: vec!["tenant".into()],
            }),
        }
    }

    #[test]
    fn statements_render_in_the_aws_policy_language() {
        let s = statement();
        let out = render_statement(ACCOUNT, ARN, "orders-use", 0, &s);
        assert_eq!(out["Sid"], "orders-use/AppUse");
        assert_eq!(out["Effect"], "Allow");
        assert_eq!(
            out["Principal"]["AWS"],
            json!([
                "arn:aws:iam::111122223333:role/k8s/system:serviceaccount:shop:orders",
                "arn:aws:iam::111122223333:user/k8s/alice@example.com",
                "arn:aws:iam::111122223333:group/k8s/system:authenticated",
            ])
        );
        assert_eq!(
            out["Action"],
            json!(["kms:Encrypt", "kms:GenerateDataKey*"])
        );
        assert_eq!(out["Resource"], ARN);
        assert_eq!(
            out["Condition"]["StringEquals"]["kms:EncryptionContext:app"],
            "orders"
        );
        assert_eq!(
            out["Condition"]["Null"]["kms:EncryptionContext:tenant"],
            "false"
        );

        let mut deny = statement();
        deny.sid = None;
        deny.effect = Effect::Deny;
        deny.conditions = None;
        let out = render_statement(ACCOUNT, ARN, "p", 3, &deny);
        assert_eq!(out["Sid"], "p/3");
        assert_eq!(out["Effect"], "Deny");
        assert!(out.get("Condition").is_none());
    }

    #[test]
    fn documents_keep_the_default_statement_first_and_policies_in_order() {
        assert_eq!(render_document(M, ARN, &[]), None);
        let a = [statement()];
        let mut second = statement();
        second.sid = Some("Other".into());
        let b = [statement(), second];
        let doc = render_document(M, ARN, &[("a", &a), ("b", &b)]).unwrap();
        assert_eq!(doc["Version"], "2012-10-17");
        assert!(is_rendered(&doc));
        let statements = doc["Statement"].as_array().unwrap();
        let leading = default_document(M)["Statement"].as_array().unwrap().clone();
        assert_eq!(leading.len(), 5);
        assert_eq!(statements.len(), leading.len() + 3);
        assert_eq!(statements[..leading.len()], leading[..]);
        assert_eq!(statements[1]["Principal"]["AWS"], OPERATOR);
        assert_eq!(
            statements[0]["Principal"]["AWS"],
            "arn:aws:iam::111122223333:root"
        );
        let sids: Vec<&str> = statements[leading.len()..]
            .iter()
            .map(|s| s["Sid"].as_str().unwrap())
            .collect();
        assert_eq!(sids, ["a/AppUse", "b/AppUse", "b/Other"]);
    }

    #[test]
    fn only_changes_and_own_documents_are_written() {
        let default = default_document(M);
        assert!(!is_rendered(&default));
        let a = [statement()];
        let doc = render_document(M, ARN, &[("a", &a)]).unwrap();
        // Covered: written when it differs, not when it is already there.
        assert_eq!(wanted(&default, Some(doc.clone()), M), Some(doc.clone()));
        assert_eq!(wanted(&doc, Some(doc.clone()), M), None);
        // No longer covered: ours goes back to the default; someone else's stays.
        assert_eq!(wanted(&doc, None, M), Some(default.clone()));
        assert_eq!(wanted(&default, None, M), None);
        // A default document of an earlier version (fewer leading statements) is brought up.
        let mut older = default.clone();
        older["Statement"].as_array_mut().unwrap().truncate(2);
        assert_eq!(wanted(&older, None, M), Some(default.clone()));
        let foreign = json!({"Version": "2012-10-17", "Statement": []});
        assert_eq!(wanted(&foreign, None, M), None);
    }

    fn operator() -> Subject<'static> {
        Subject {
            arn: OPERATOR,
            groups: &[],
            account: ACCOUNT,
            administrator: false,
        }
    }

    #[test]
    fn the_default_document_lets_the_operator_manage_and_nobody_use() {
        let doc = default_document(M);
        assert_eq!(lockout(&doc, &operator()), None);
        let parsed = EnginePolicy::parse(&doc.to_string()).unwrap();
        let may = |subject: Subject<'_>, action| {
            parsed.evaluate(&PolicyRequest {
                subject,
                action,
                context: None,
                resource: None,
            }) == Decision::Allow
        };
        use kubekms_proto::Action;
        assert!(may(operator(), Action::PutKeyPolicy));
        assert!(may(operator(), Action::ScheduleKeyDeletion));
        for crypto in [
            Action::Encrypt,
            Action::Decrypt,
            Action::GenerateDataKey,
            Action::Sign,
        ] {
            assert!(!may(operator(), crypto), "{crypto}");
        }
        let app = Subject {
            arn: "arn:aws:iam::111122223333:role/k8s/system:serviceaccount:shop:orders",
            ..operator()
        };
        assert!(!may(app, Action::DescribeKey));
        let admin = Subject {
            arn: "arn:aws:iam::111122223333:user/k8s/alice",
            administrator: true,
            ..operator()
        };
        assert!(may(admin, Action::Decrypt));
    }

    #[test]
    fn injected_data_keys_are_made_by_the_webhook_and_opened_only_by_their_service_account() {
        let parsed = EnginePolicy::parse(&default_document(M).to_string()).unwrap();
        let ctx = |pairs: &[(&str, &str)]| {
            kubekms_engine::blob::EncryptionContext::new(
                pairs
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
            )
        };
        let ours = ctx(&[
            ("kubekms:namespace", "shop"),
            ("kubekms:service-account", "orders"),
            ("kubekms:data-key", "db"),
        ]);
        let other_namespace = ctx(&[
            ("kubekms:namespace", "ci"),
            ("kubekms:service-account", "orders"),
            ("kubekms:data-key", "db"),
        ]);
        let may = |arn: &str, action, context: &kubekms_engine::blob::EncryptionContext| {
            parsed.evaluate(&PolicyRequest {
                subject: Subject { arn, ..operator() },
                action,
                context: Some(context),
                resource: None,
            }) == Decision::Allow
        };
        use kubekms_proto::Action;
        let webhook = "arn:aws:iam::111122223333:role/kubekms-webhook";
        let orders = "arn:aws:iam::111122223333:role/k8s/system:serviceaccount:shop:orders";
        let billing = "arn:aws:iam::111122223333:role/k8s/system:serviceaccount:shop:billing";
        let namesake = "arn:aws:iam::111122223333:role/k8s/system:serviceaccount:ci:orders";
        assert!(may(webhook, Action::GenerateDataKeyWithoutPlaintext, &ours));
        assert!(!may(
            webhook,
            Action::GenerateDataKeyWithoutPlaintext,
            &other_namespace
        ));
        assert!(
            !may(webhook, Action::GenerateDataKey, &ours),
            "never plaintext"
        );
        assert!(!may(webhook, Action::Decrypt, &ours));
        assert!(may(orders, Action::Decrypt, &ours));
        assert!(!may(orders, Action::Encrypt, &ours));
        assert!(
            !may(billing, Action::Decrypt, &ours),
            "another ServiceAccount"
        );
        assert!(
            !may(namesake, Action::Decrypt, &ours),
            "a namesake elsewhere"
        );
        assert!(
            !may(namesake, Action::Decrypt, &other_namespace),
            "not this Key's namespace"
        );
        assert!(may(OPERATOR, Action::ReEncryptFrom, &ours));
        assert!(may(OPERATOR, Action::ReEncryptTo, &ours));
        assert!(
            !may(OPERATOR, Action::Decrypt, &ours),
            "the operator never sees plaintext"
        );
        assert!(!may(OPERATOR, Action::ReEncryptFrom, &ctx(&[("app", "x")])));
    }

    #[test]
    fn a_deny_naming_the_operator_is_a_lockout() {
        let mut deny = statement();
        deny.effect = Effect::Deny;
        deny.conditions = None;
        deny.sid = Some("NoOne".into());
        deny.actions = vec!["kms:*".into()];
        deny.principals = Principals {
            users: vec!["ci".into()],
            ..Principals::default()
        };
        let harmless = render_document(M, ARN, &[("p", &[deny.clone()])]).unwrap();
        assert_eq!(lockout(&harmless, &operator()), None);
        // The operator as a Kubernetes identity in a group the Deny names.
        let group = "arn:aws:iam::111122223333:group/k8s/system:serviceaccounts".to_owned();
        let groups = [group];
        let in_group = Subject {
            groups: &groups,
            ..operator()
        };
        deny.principals = Principals {
            groups: vec!["system:serviceaccounts".into()],
            ..Principals::default()
        };
        let locking = render_document(M, ARN, &[("p", &[deny])]).unwrap();
        let why = lockout(&locking, &in_group).unwrap();
        assert!(
            why.contains("p/NoOne") && why.contains("kms:DescribeKey"),
            "{why}"
        );
        assert_eq!(lockout(&locking, &operator()), None);
    }

    #[test]
    fn the_key_watch_wakes_covering_policies_only() {
        use kube::runtime::reflector::store::Writer;
        use kubekms_crds::KeySpec;

        let policy = |ns: &str, name: &str, refs: &[&str]| {
            let mut p = KeyPolicy::new(
                name,
                KeyPolicySpec {
                    key_refs: refs.iter().map(|r| (*r).to_owned()).collect(),
                    statements: vec![statement()],
                },
            );
            p.metadata.namespace = Some(ns.into());
            p
        };
        let mut writer = Writer::<KeyPolicy>::default();
        for p in [
            policy("shop", "all", &["*"]),
            policy("shop", "named", &["orders", "billing"]),
            policy("shop", "other", &["billing"]),
            policy("elsewhere", "all", &["*"]),
        ] {
            writer.apply_watcher_event(&watcher::Event::Apply(p));
        }
        let mut key = Key::new("orders", KeySpec::default());
        key.metadata.namespace = Some("shop".into());
        let mut woken: Vec<String> = policies_covering(&writer.as_reader(), &key)
            .into_iter()
            .map(|r| format!("{}/{}", r.namespace.unwrap_or_default(), r.name))
            .collect();
        woken.sort();
        assert_eq!(woken, ["shop/all", "shop/named"]);
    }
}
