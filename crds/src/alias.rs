//! `Alias`: a stable name for a Key.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{
    check_object_name, is_namespace_name, object_name_error, validation_result, KeyReference,
};

/// Longest alias name the engine accepts, `alias/` included.
pub const MAX_ALIAS_NAME_LEN: usize = 256;

/// A stable name for a Key. In the engine it appears as `alias/<namespace>/<name>`, usable as
/// KeyId wherever AWS KMS accepts an alias. Re-pointing keyRef to another Key is how a manual
/// rotation is done: new ciphertexts use the new Key while the old Key still decrypts the old
/// ones.
// The repeated `printcolumn(...)` entries are distinct columns, not duplicates.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "kubekms.io",
    version = "v1alpha1",
    kind = "Alias",
    namespaced,
    status = "AliasStatus",
    shortname = "kmsalias",
    category = "kubekms",
    derive = "PartialEq",
    doc = "A stable name for a Key, alias/<namespace>/<name> in the engine. Re-point keyRef to \
           rotate manually.",
    printcolumn(name = "Key", type_ = "string", json_path = ".spec.keyRef.name"),
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
pub struct AliasSpec {
    /// The Key (in this namespace) the alias points to. Changing it re-points the alias.
    pub key_ref: KeyReference,
}

/// The engine's view of the alias, written by the operator.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AliasStatus {
    /// ARN of the Key the alias currently points to in the engine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "String")]
    pub key_arn: Option<String>,

    /// The alias's name in the engine, alias/<namespace>/<name>.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "String")]
    pub alias_name: Option<String>,

    /// Current observations of the alias's state; "Ready" is true when the engine's alias
    /// points at the referenced Key.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,

    /// The metadata.generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "i64")]
    pub observed_generation: Option<i64>,
}

/// The engine alias name for the Alias object `name` in `namespace`: `alias/<namespace>/<name>`.
///
/// Kubernetes names may contain `.`, which AWS alias names may not, a namespace called `aws`
/// would land in the reserved `alias/aws/` prefix, and the engine caps the whole name at 256
/// characters; such objects are refused with a message saying why.
pub fn engine_alias_name(namespace: &str, name: &str) -> Result<String, String> {
    if !is_namespace_name(namespace) {
        return Err(format!("{namespace:?} is not a valid namespace name"));
    }
    if namespace == "aws" {
        return Err(
            "Aliases cannot live in the namespace \"aws\": alias/aws/ is reserved by AWS KMS"
                .to_owned(),
        );
    }
    if let Some(e) = object_name_error("metadata.name", name) {
        return Err(e);
    }
    if name.contains('.') {
        return Err(format!(
            "metadata.name: {name:?} contains '.', which KMS alias names cannot; use '-' instead"
        ));
    }
    let alias = format!("alias/{namespace}/{name}");
    if alias.len() > MAX_ALIAS_NAME_LEN {
        return Err(format!(
            "metadata.name: {alias} is longer than the {MAX_ALIAS_NAME_LEN} characters a KMS \
             alias may have; use a shorter name"
        ));
    }
    Ok(alias)
}

impl Alias {
    /// This object's engine alias name; see [`engine_alias_name`].
    pub fn engine_alias_name(&self) -> Result<String, String> {
        let namespace = self
            .metadata
            .namespace
            .as_deref()
            .ok_or_else(|| "metadata.namespace: not set".to_owned())?;
        let name = self
            .metadata
            .name
            .as_deref()
            .ok_or_else(|| "metadata.name: not set".to_owned())?;
        engine_alias_name(namespace, name)
    }
}

impl AliasSpec {
    /// Checks the spec for the validating webhook.
    pub fn validate(&self) -> Result<(), Vec<String>> {
        let mut errors = Vec::new();
        check_object_name(&mut errors, "spec.keyRef.name", &self.key_ref.name);
        validation_result(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::core::ObjectMeta;

    #[test]
    fn engine_names() {
        assert_eq!(
            engine_alias_name("team-a", "orders").as_deref(),
            Ok("alias/team-a/orders")
        );
        let dotted = engine_alias_name("team-a", "orders.v2").unwrap_err();
        assert!(dotted.contains("'.'"), "{dotted}");
        assert!(engine_alias_name("aws", "orders").is_err());
        assert!(engine_alias_name("Team", "orders").is_err());
        assert!(engine_alias_name("team-a", "Orders").is_err());
        assert!(engine_alias_name("team-a", "").is_err());

        // 6 + 63 + 1 + 186 = 256 fits; one more does not.
        let ns = "n".repeat(63);
        assert!(engine_alias_name(&ns, &"a".repeat(186)).is_ok());
        assert!(engine_alias_name(&ns, &"a".repeat(187)).is_err());
    }

    #[test]
    fn alias_object_name_needs_metadata() {
        let mut alias = Alias::new(
            "orders",
            AliasSpec {
                key_ref: KeyReference::new("orders-2024"),
            },
        );
        assert!(alias.engine_alias_name().is_err());
        alias.metadata = ObjectMeta {
            name: Some("orders".into()),
            namespace: Some("shop".into()),
            ..ObjectMeta::default()
        };
        assert_eq!(
            alias.engine_alias_name().as_deref(),
            Ok("alias/shop/orders")
        );
    }

    #[test]
    fn spec_validation() {
        let ok = AliasSpec {
            key_ref: KeyReference::new("orders-2024"),
        };
        assert_eq!(ok.validate(), Ok(()));
        let bad = AliasSpec {
            key_ref: KeyReference::new("Orders 2024"),
        };
        let errors = bad.validate().unwrap_err();
        assert!(errors[0].starts_with("spec.keyRef.name"), "{errors:?}");
    }
}
