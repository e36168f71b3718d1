//! `KeyPolicy`: who may do what with the Keys of a namespace.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use kubekms_proto::operation::action_matches;
use kubekms_proto::operation::{glob_matches, ACTION_PREFIX};
use kubekms_proto::Action;

use crate::common::{check_object_name, crd_enum, is_namespace_name, validation_result};

/// The `keyRefs` entry that stands for every Key in the namespace.
pub const ALL_KEYS: &str = "*";

/// Grants or denies KMS actions on some Keys of this namespace to Kubernetes principals.
///
/// A request is allowed when at least one Allow statement of the policies covering its Key
/// matches it and no Deny statement does (an explicit Deny wins), as in AWS IAM. A statement
/// matches when the caller is one of its principals, the action is one of its actions and all
/// of its conditions hold.
// The repeated `printcolumn(...)` entries are distinct columns, not duplicates.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "kubekms.io",
    version = "v1alpha1",
    kind = "KeyPolicy",
    namespaced,
    status = "KeyPolicyStatus",
    shortname = "kmspolicy",
    category = "kubekms",
    derive = "PartialEq",
    doc = "Grants or denies KMS actions on Keys of this namespace to service accounts, users and \
           groups. An explicit Deny wins over any Allow.",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct KeyPolicySpec {
    /// Names of the Keys in this namespace the policy covers, or the single entry "*" for
    /// all of them (including Keys created later).
    #[schemars(length(min = 1))]
    pub key_refs: Vec<String>,

    /// The statements, evaluated together: any matching Deny refuses, otherwise any matching
    /// Allow permits.
    #[schemars(length(min = 1))]
    pub statements: Vec<PolicyStatement>,
}

/// The operator's view of the policy.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeyPolicyStatus {
    /// Current observations of the policy; "Ready" is true when the engine enforces it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,

    /// The metadata.generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "i64")]
    pub observed_generation: Option<i64>,
}

/// One Allow or Deny rule.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicyStatement {
    /// Optional statement id (letters and digits), unique within the policy; shown in audit
    /// logs and denial messages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "String")]
    pub sid: Option<String>,

    /// Whether a matching request is allowed or denied.
    pub effect: Effect,

    /// Who the statement is about: the caller must be one of these.
    pub principals: Principals,

    /// KMS actions, as "kms:<Operation>" (for example kms:Encrypt, kms:Decrypt, kms:Sign,
    /// kms:ReEncryptFrom). "*" and "?" are wildcards: kms:GenerateDataKey* covers the four
    /// data key operations, kms:* every action. Case does not matter, as in AWS IAM.
    #[schemars(length(min = 1))]
    pub actions: Vec<String>,

    /// Extra conditions on the request's encryption context; all must hold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "StatementConditions")]
    pub conditions: Option<StatementConditions>,
}

crd_enum!(
    /// Whether a statement allows or denies.
    Effect {
        Allow = "Allow",
        Deny = "Deny",
    }
);

/// Kubernetes identities. The caller matches if it is any one of them.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Principals {
    /// Service accounts, by namespace and name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub service_accounts: Vec<ServiceAccountReference>,

    /// User names as the API server authenticates them (for example alice@example.com).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub users: Vec<String>,

    /// Group names as the API server authenticates them (for example system:authenticated).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
}

impl Principals {
    pub fn is_empty(&self) -> bool {
        self.service_accounts.is_empty() && self.users.is_empty() && self.groups.is_empty()
    }
}

/// A service account, possibly in another namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceAccountReference {
    /// The service account's namespace.
    #[schemars(length(min = 1, max = 63))]
    pub namespace: String,

    /// The service account's name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// Conditions on the request's encryption context.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StatementConditions {
    /// Each pair must be in the request's encryption context with exactly this value (like
    /// kms:EncryptionContext:<key> with StringEquals).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub encryption_context_equals: BTreeMap<String, String>,

    /// Each of these keys must be in the request's encryption context, with any value.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub encryption_context_keys: Vec<String>,
}

impl StatementConditions {
    pub fn is_empty(&self) -> bool {
        self.encryption_context_equals.is_empty() && self.encryption_context_keys.is_empty()
    }
}

fn action_error(action: &str) -> Option<String> {
    if action == "*" {
        return Some("\"*\" is not a KMS action; use \"kms:*\" for every action".to_owned());
    }
    let Some(name) = action
        .get(..ACTION_PREFIX.len())
        .filter(|p| p.eq_ignore_ascii_case(ACTION_PREFIX))
        .map(|_| &action[ACTION_PREFIX.len()..])
    else {
        return Some(format!(
            "{action:?} must start with \"kms:\" (for example kms:Encrypt)"
        ));
    };
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphabetic() || b == b'*' || b == b'?')
    {
        return Some(format!(
            "{action:?}: after \"kms:\" only letters and the wildcards * and ? are allowed"
        ));
    }
    if Action::ALL
        .iter()
        .any(|known| glob_matches(name.as_bytes(), known.name().as_bytes()))
    {
        return None;
    }
    let hint = if name.eq_ignore_ascii_case("ReEncrypt") {
        "; ReEncrypt needs kms:ReEncryptFrom and kms:ReEncryptTo (or kms:ReEncrypt*)"
    } else {
        ""
    };
    Some(format!("{action:?} matches no KMS action{hint}"))
}

impl KeyPolicySpec {
    /// Whether the policy covers the Key called `key_name`.
    pub fn covers_key(&self, key_name: &str) -> bool {
        self.key_refs.iter().any(|r| r == ALL_KEYS || r == key_name)
    }

    /// Checks what the schema cannot express (the API server of Kubernetes 1.20 has no CEL), for
    /// the validating webhook. Each error names the field it is about.
    pub fn validate(&self) -> Result<(), Vec<String>> {
        let mut errors = Vec::new();

        if self.key_refs.is_empty() {
            errors.push(
                "spec.keyRefs: list at least one Key name, or \"*\" for every Key".to_owned(),
            );
        }
        if self.key_refs.len() > 1 && self.key_refs.iter().any(|r| r == ALL_KEYS) {
            errors.push("spec.keyRefs: \"*\" covers every Key; use it alone".to_owned());
        }
        let mut seen = BTreeSet::new();
        for (i, key) in self.key_refs.iter().enumerate() {
            if key != ALL_KEYS {
                check_object_name(&mut errors, &format!("spec.keyRefs[{i}]"), key);
            }
            if !seen.insert(key.as_str()) {
                errors.push(format!("spec.keyRefs[{i}]: {key:?} is listed twice"));
            }
        }

        if self.statements.is_empty() {
            errors.push("spec.statements: at least one statement is needed".to_owned());
        }
        let mut sids = BTreeSet::new();
        for (i, statement) in self.statements.iter().enumerate() {
            let path = format!("spec.statements[{i}]");
            if let Some(sid) = &statement.sid {
                if sid.is_empty() || !sid.bytes().all(|b| b.is_ascii_alphanumeric()) {
                    errors.push(format!(
                        "{path}.sid: {sid:?} must be non-empty letters and digits"
                    ));
                } else if !sids.insert(sid.as_str()) {
                    errors.push(format!("{path}.sid: {sid:?} is used by another statement"));
                }
            }
            statement.validate_into(&path, &mut errors);
        }

        validation_result(errors)
    }
}

impl PolicyStatement {
    /// Whether one of the statement's action patterns covers `action` (e.g. `kms:Encrypt`).
    pub fn covers_action(&self, action: &str) -> bool {
        self.actions.iter().any(|p| action_matches(p, action))
    }

    fn validate_into(&self, path: &str, errors: &mut Vec<String>) {
        let principals = &self.principals;
        if principals.is_empty() {
            errors.push(format!(
                "{path}.principals: name at least one service account, user or group"
            ));
        }
        for (j, sa) in principals.service_accounts.iter().enumerate() {
            let sa_path = format!("{path}.principals.serviceAccounts[{j}]");
            if !is_namespace_name(&sa.namespace) {
                errors.push(format!(
                    "{sa_path}.namespace: {:?} is not a valid namespace name",
                    sa.namespace
                ));
            }
            check_object_name(errors, &format!("{sa_path}.name"), &sa.name);
        }
        for (field, names) in [("users", &principals.users), ("groups", &principals.groups)] {
            for (j, name) in names.iter().enumerate() {
                if name.is_empty() || name.trim() != name {
                    errors.push(format!(
                        "{path}.principals.{field}[{j}]: {name:?} must be non-empty without \
                         surrounding spaces"
                    ));
                }
            }
        }

        if self.actions.is_empty() {
            errors.push(format!(
                "{path}.actions: list at least one action, e.g. kms:Decrypt"
            ));
        }
        for (j, action) in self.actions.iter().enumerate() {
            if let Some(e) = action_error(action) {
                errors.push(format!("{path}.actions[{j}]: {e}"));
            }
        }

        if let Some(conditions) = &self.conditions {
            if conditions.is_empty() {
                errors.push(format!(
                    "{path}.conditions: give encryptionContextEquals or encryptionContextKeys, \
                     or leave conditions out"
                ));
            }
            if conditions.encryption_context_equals.contains_key("") {
                errors.push(format!(
                    "{path}.conditions.encryptionContextEquals: keys must be non-empty"
                ));
            }
            let mut seen = BTreeSet::new();
            for (j, key) in conditions.encryption_context_keys.iter().enumerate() {
                let key_path = format!("{path}.conditions.encryptionContextKeys[{j}]");
                if key.is_empty() {
                    errors.push(format!("{key_path}: must be non-empty"));
                } else if !seen.insert(key.as_str()) {
                    errors.push(format!("{key_path}: {key:?} is listed twice"));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn statement(actions: &[&str]) -> PolicyStatement {
        PolicyStatement {
            sid: None,
            effect: Effect::Allow,
            principals: Principals {
                service_accounts: vec![ServiceAccountReference {
                    namespace: "shop".into(),
                    name: "orders".into(),
                }],
                ..Principals::default()
            },
            actions: actions.iter().map(|a| (*a).to_owned()).collect(),
            conditions: None,
        }
    }

    fn policy(statements: Vec<PolicyStatement>) -> KeyPolicySpec {
        KeyPolicySpec {
            key_refs: vec!["orders".into()],
            statements,
        }
    }

    fn errors_of(spec: &KeyPolicySpec) -> Vec<String> {
        spec.validate().err().unwrap_or_default()
    }

    #[test]
    fn known_actions_are_unique() {
        let names: std::collections::BTreeSet<&str> =
            Action::ALL.iter().map(|a| a.name()).collect();
        assert_eq!(names.len(), Action::ALL.len());
    }

    #[test]
    fn statement_covers_action() {
        let s = statement(&["kms:Decrypt", "kms:GenerateDataKey*"]);
        assert!(s.covers_action("kms:Decrypt"));
        assert!(s.covers_action("kms:GenerateDataKeyWithoutPlaintext"));
        assert!(!s.covers_action("kms:Encrypt"));
    }

    #[test]
    fn valid_policy() {
        let mut deny = statement(&["kms:Decrypt"]);
        deny.effect = Effect::Deny;
        deny.sid = Some("NoDecryptForCi".into());
        deny.principals = Principals {
            groups: vec!["ci:runners".into()],
            users: vec!["alice@example.com".into()],
            ..Principals::default()
        };
        let mut allow = statement(&[
            "kms:Encrypt",
            "kms:Decrypt",
            "kms:GenerateDataKey*",
            "kms:ReEncrypt*",
        ]);
        allow.sid = Some("AppUse".into());
        allow.conditions = Some(StatementConditions {
            encryption_context_equals: [("app".to_owned(), "orders".to_owned())].into(),
            encryption_context_keys: vec!["tenant".into()],
        });
        let spec = policy(vec![allow, deny]);
        assert_eq!(spec.validate(), Ok(()));
        assert!(spec.covers_key("orders"));
        assert!(!spec.covers_key("payments"));

        let all = KeyPolicySpec {
            key_refs: vec![ALL_KEYS.into()],
            statements: vec![statement(&["kms:*"])],
        };
        assert_eq!(all.validate(), Ok(()));
        assert!(all.covers_key("anything"));
    }

    #[test]
    fn action_names() {
        for good in [
            "kms:Encrypt",
            "kms:decrypt",
            "kms:*",
            "kms:GenerateDataKey*",
            "kms:Get*",
            "kms:ReEncrypt*",
            "kms:?ign",
        ] {
            assert_eq!(action_error(good), None, "{good}");
        }
        for bad in [
            "*",
            "Encrypt",
            "kms:",
            "kms:Encrpyt",
            "kms:Encrypt ",
            "kms:Encrypt,kms:Decrypt",
            "kms:ReEncrypt",
            "kms:Foo*",
            "s3:GetObject",
        ] {
            assert!(action_error(bad).is_some(), "{bad}");
        }
        assert!(action_error("kms:ReEncrypt")
            .unwrap()
            .contains("ReEncryptFrom"));
        let errors = errors_of(&policy(vec![statement(&["kms:Encrypt", "kms:Encrpyt"])]));
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0].starts_with("spec.statements[0].actions[1]"),
            "{errors:?}"
        );
    }

    #[test]
    fn empty_lists_and_principals() {
        let errors = errors_of(&KeyPolicySpec {
            key_refs: vec![],
            statements: vec![],
        });
        assert!(errors.iter().any(|e| e.starts_with("spec.keyRefs")));
        assert!(errors.iter().any(|e| e.starts_with("spec.statements")));

        let mut nobody = statement(&[]);
        nobody.principals = Principals::default();
        let errors = errors_of(&policy(vec![nobody]));
        assert!(errors
            .iter()
            .any(|e| e.starts_with("spec.statements[0].principals")));
        assert!(errors
            .iter()
            .any(|e| e.starts_with("spec.statements[0].actions")));
    }

    #[test]
    fn principal_names() {
        let mut s = statement(&["kms:Sign"]);
        s.principals.service_accounts.push(ServiceAccountReference {
            namespace: "Bad_NS".into(),
            name: "ok".into(),
        });
        s.principals.service_accounts.push(ServiceAccountReference {
            namespace: "ok".into(),
            name: "Bad Name".into(),
        });
        s.principals.users.push(" bob".into());
        s.principals.groups.push(String::new());
        let errors = errors_of(&policy(vec![s]));
        assert_eq!(errors.len(), 4, "{errors:?}");
        assert!(errors[0].contains("serviceAccounts[1].namespace"));
        assert!(errors[1].contains("serviceAccounts[2].name"));
        assert!(errors[2].contains("users[0]"));
        assert!(errors[3].contains("groups[0]"));
    }

    #[test]
    fn key_refs() {
        let mut spec = policy(vec![statement(&["kms:Encrypt"])]);
        spec.key_refs = vec!["*".into(), "orders".into()];
        assert!(errors_of(&spec)[0].contains("use it alone"));
        spec.key_refs = vec!["orders".into(), "orders".into()];
        assert!(errors_of(&spec)[0].contains("twice"));
        spec.key_refs = vec!["Orders".into()];
        assert!(errors_of(&spec)[0].starts_with("spec.keyRefs[0]"));
    }

    #[test]
    fn sids_and_conditions() {
        let mut a = statement(&["kms:Encrypt"]);
        a.sid = Some("Same".into());
        let mut b = statement(&["kms:Decrypt"]);
        b.sid = Some("Same".into());
        let mut c = statement(&["kms:Decrypt"]);
        c.sid = Some("has space".into());
        let errors = errors_of(&policy(vec![a, b, c]));
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(errors[0].starts_with("spec.statements[1].sid"));
        assert!(errors[1].starts_with("spec.statements[2].sid"));

        let mut empty = statement(&["kms:Encrypt"]);
        empty.conditions = Some(StatementConditions::default());
        assert!(errors_of(&policy(vec![empty]))[0].contains("conditions"));

        let mut dup = statement(&["kms:Encrypt"]);
        dup.conditions = Some(StatementConditions {
            encryption_context_equals: [(String::new(), "v".to_owned())].into(),
            encryption_context_keys: vec!["a".into(), "a".into(), String::new()],
        });
        let errors = errors_of(&policy(vec![dup]));
        assert_eq!(errors.len(), 3, "{errors:?}");
    }

    #[test]
    fn deserializes_from_yaml_shape() {
        let spec: KeyPolicySpec = serde_json::from_value(serde_json::json!({
            "keyRefs": ["*"],
            "statements": [{
                "effect": "Deny",
                "principals": {"groups": ["system:authenticated"]},
                "actions": ["kms:ScheduleKeyDeletion"],
            }],
        }))
        .unwrap();
        assert_eq!(spec.statements[0].effect, Effect::Deny);
        assert_eq!(spec.validate(), Ok(()));
        assert!(serde_json::from_value::<KeyPolicySpec>(serde_json::json!({
            "keyRefs": ["*"],
            "statements": [{"effect": "Maybe", "principals": {}, "actions": []}],
        }))
        .is_err());
    }
}
