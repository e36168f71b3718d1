//! `DataKey`: the record of one injected data key of a ServiceAccount, ciphertext only.
//!
//! The injection webhook makes a data key the first time a pod of a ServiceAccount names it
//! (GenerateDataKeyWithoutPlaintext, under an encryption context that binds it to the
//! namespace, the ServiceAccount and the data key's name) and keeps the ciphertext here, so
//! every replica and every restart of that ServiceAccount's pods gets the same key. A bump of
//! the annotation's `generation` adds a generation; the earlier ones stay, so data encrypted
//! before stays decryptable. After the Key rotates, the operator re-encrypts each generation to
//! the Key's newest version (ReEncrypt, inside the engine: it never sees the plaintext). The
//! record is not owned by its ServiceAccount: one deleted and made again (an app reinstalled)
//! finds its data keys, and so its data, where they were; records go with their namespace, or
//! by `kubectl delete kmsdatakey`.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{is_namespace_name, is_object_name, validation_result};

/// The encryption-context keys a data key is made under; their values are the namespace, the
/// ServiceAccount's name and the data key's name. Key policies grant on them (see the
/// operator's key policies), so a pod of another ServiceAccount cannot decrypt it.
pub mod context {
    pub const NAMESPACE: &str = "kubekms:namespace";
    pub const SERVICE_ACCOUNT: &str = "kubekms:service-account";
    pub const DATA_KEY: &str = "kubekms:data-key";
}

/// The ciphertexts of one data key of a ServiceAccount (named `<serviceAccount>.<name>`).
/// Written by the injection webhook and, after a Key rotation, by the operator; never holds a
/// plaintext key.
// The repeated `printcolumn(...)` entries are distinct columns, not duplicates.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "kubekms.io",
    version = "v1alpha1",
    kind = "DataKey",
    namespaced,
    status = "DataKeyStatus",
    shortname = "kmsdatakey",
    category = "kubekms",
    derive = "PartialEq",
    doc = "The ciphertexts of one injected data key of a ServiceAccount (ciphertext only). \
           Made by the injection webhook, re-encrypted by the operator after a Key rotation.",
    printcolumn(
        name = "ServiceAccount",
        type_ = "string",
        json_path = ".spec.serviceAccount"
    ),
    printcolumn(name = "Data key", type_ = "string", json_path = ".spec.name"),
    printcolumn(name = "Key", type_ = "string", json_path = ".spec.key"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct DataKeySpec {
    /// The ServiceAccount (in this namespace) whose pods get and may decrypt the data key.
    pub service_account: String,
    /// The data key's name, as in the pod annotation kubekms.io/data-key.<name>.
    pub name: String,
    /// The KMS key the data key is made under, as the annotation names it: a Key of this
    /// namespace, or alias/<name>.
    pub key: String,
    /// The data key's length in bytes.
    #[schemars(range(min = 1, max = 1024))]
    pub number_of_bytes: u32,
    /// Every generation, oldest first.
    #[serde(default)]
    pub generations: Vec<DataKeyGeneration>,
}

/// One generation of a data key.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DataKeyGeneration {
    /// 1, then one more per rotation asked for in the annotation.
    #[schemars(range(min = 1))]
    pub generation: u32,
    /// Base64 of the data key's ciphertext (a KMS CiphertextBlob).
    pub ciphertext: String,
    /// The ARN of the engine key the ciphertext is under.
    pub key_arn: String,
    /// The version of that key's material the ciphertext was last made or re-encrypted under,
    /// as the Key's status.currentKeyVersion said (0 when unknown, e.g. under an alias).
    #[serde(default)]
    pub key_version: i32,
}

/// What the operator last did to the record, written by the operator.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DataKeyStatus {
    /// "Ready" is true when every generation is under the Key's newest version.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,

    /// The metadata.generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "i64")]
    pub observed_generation: Option<i64>,
}

/// One generation as the agent decrypts it: in the agent's configuration (from the webhook)
/// and in the record's mirror ConfigMap (from the operator). Ciphertext only.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct SealedGeneration {
    /// `<name>-<generation>`, the id the keyring file gives it.
    pub id: String,
    pub generation: u32,
    /// Base64 of the data key's CiphertextBlob.
    pub ciphertext: String,
    /// The encryption context it was made under (binds it to namespace, ServiceAccount, name).
    pub encryption_context: BTreeMap<String, String>,
}

/// The ConfigMap the operator keeps beside each record for sidecar agents: the record's
/// generations as `[SealedGeneration]` JSON under [`MIRROR_FILE`]. A pod cannot mount a custom
/// resource, but the kubelet keeps a mounted ConfigMap current, so a running sidecar learns of
/// a data-key rotation (a generation added by another pod's admission) without any access to
/// the Kubernetes API.
pub const MIRROR_PREFIX: &str = "kubekms-datakey.";
pub const MIRROR_FILE: &str = "generations.json";
/// The longest object name (a DNS subdomain).
const MAX_NAME: usize = 253;

impl DataKey {
    /// Whether the record of data key `name` of ServiceAccount `service_account`, and its
    /// mirror, have names Kubernetes accepts (a ServiceAccount's name may use up the 253
    /// characters an object name has).
    pub fn names_fit(service_account: &str, name: &str) -> bool {
        Self::mirror_name(&Self::record_name(service_account, name)).len() <= MAX_NAME
    }

    /// The mirror ConfigMap's name for record `record_name`.
    pub fn mirror_name(record_name: &str) -> String {
        format!("{MIRROR_PREFIX}{record_name}")
    }

    /// Generation `generation` of data key `name`, as the agent decrypts it.
    pub fn sealed(
        namespace: &str,
        spec: &DataKeySpec,
        generation: &DataKeyGeneration,
    ) -> SealedGeneration {
        SealedGeneration {
            id: format!("{}-{}", spec.name, generation.generation),
            generation: generation.generation,
            ciphertext: generation.ciphertext.clone(),
            encryption_context: Self::encryption_context(
                namespace,
                &spec.service_account,
                &spec.name,
            ),
        }
    }

    /// The record's name: `<serviceAccount>.<name>` (a data key's name has no dot, so the two
    /// parts are never ambiguous).
    pub fn record_name(service_account: &str, name: &str) -> String {
        format!("{service_account}.{name}")
    }

    /// The encryption context the data key is made and decrypted under.
    pub fn encryption_context(
        namespace: &str,
        service_account: &str,
        name: &str,
    ) -> BTreeMap<String, String> {
        BTreeMap::from([
            (context::NAMESPACE.to_owned(), namespace.to_owned()),
            (
                context::SERVICE_ACCOUNT.to_owned(),
                service_account.to_owned(),
            ),
            (context::DATA_KEY.to_owned(), name.to_owned()),
        ])
    }
}

impl DataKeySpec {
    /// What the schema cannot say; the messages name the field.
    pub fn validate(&self) -> Result<(), Vec<String>> {
        let mut problems = Vec::new();
        if !is_object_name(&self.service_account) {
            problems.push(format!(
                "spec.serviceAccount {:?} is not a ServiceAccount name",
                self.service_account
            ));
        }
        if !is_namespace_name(&self.name) {
            problems.push(format!(
                "spec.name {:?} must be a DNS label (the annotation's data key name)",
                self.name
            ));
        }
        let mut seen = std::collections::BTreeSet::new();
        for g in &self.generations {
            if g.generation == 0 || !seen.insert(g.generation) {
                problems.push(format!(
                    "spec.generations: generation {} is zero or repeated",
                    g.generation
                ));
            }
        }
        validation_result(problems)
    }

    /// What a change may not do: give the record to another ServiceAccount, data key, Key or
    /// size, or drop a generation (data encrypted under it would be lost).
    pub fn validate_update(&self, old: &Self) -> Result<(), Vec<String>> {
        let mut problems = self.validate().err().unwrap_or_default();
        for (field, new, was) in [
            (
                "spec.serviceAccount",
                &self.service_account,
                &old.service_account,
            ),
            ("spec.name", &self.name, &old.name),
            ("spec.key", &self.key, &old.key),
        ] {
            if new != was {
                problems.push(format!("{field} is immutable (was {was:?})"));
            }
        }
        if self.number_of_bytes != old.number_of_bytes {
            problems.push(format!(
                "spec.numberOfBytes is immutable (was {})",
                old.number_of_bytes
            ));
        }
        for g in &old.generations {
            if !self
                .generations
                .iter()
                .any(|n| n.generation == g.generation)
            {
                problems.push(format!(
                    "spec.generations: generation {} may not be removed (what it encrypted \
                     would become undecryptable); delete the DataKey to drop them all",
                    g.generation
                ));
            }
        }
        validation_result(problems)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_context() {
        assert_eq!(DataKey::record_name("app.v2", "db"), "app.v2.db");
        let context = DataKey::encryption_context("shop", "orders", "db");
        assert_eq!(context[context::NAMESPACE], "shop");
        assert_eq!(context[context::SERVICE_ACCOUNT], "orders");
        assert_eq!(context[context::DATA_KEY], "db");
        assert_eq!(DataKey::mirror_name("app.db"), "kubekms-datakey.app.db");
        assert!(DataKey::names_fit("app", "db"));
        let long = "a".repeat(234);
        assert!(DataKey::names_fit(&long, "db"), "16 + 234 + 1 + 2 = 253");
        assert!(!DataKey::names_fit(&long, "dbs"));
    }

    #[test]
    fn a_sealed_generation_names_itself_and_its_context() {
        let spec = DataKeySpec {
            service_account: "orders".into(),
            name: "db".into(),
            key: "orders".into(),
            number_of_bytes: 32,
            generations: vec![DataKeyGeneration {
                generation: 2,
                ciphertext: "AQI=".into(),
                key_arn: "arn".into(),
                key_version: 1,
            }],
        };
        let sealed = DataKey::sealed("shop", &spec, &spec.generations[0]);
        assert_eq!(sealed.id, "db-2");
        assert_eq!(sealed.ciphertext, "AQI=");
        assert_eq!(
            sealed.encryption_context,
            DataKey::encryption_context("shop", "orders", "db")
        );
        let json = serde_json::to_value(&sealed).unwrap();
        assert_eq!(
            json["encryptionContext"][context::SERVICE_ACCOUNT],
            "orders"
        );
    }

    #[test]
    fn a_change_keeps_owner_key_size_and_every_generation() {
        let old = DataKeySpec {
            service_account: "app".into(),
            name: "db".into(),
            key: "orders".into(),
            number_of_bytes: 32,
            generations: vec![
                DataKeyGeneration {
                    generation: 1,
                    ciphertext: "AA==".into(),
                    key_arn: "arn".into(),
                    key_version: 1,
                },
                DataKeyGeneration {
                    generation: 2,
                    ciphertext: "AQ==".into(),
                    key_arn: "arn".into(),
                    key_version: 1,
                },
            ],
        };
        let mut re_encrypted = old.clone();
        re_encrypted.generations[0].ciphertext = "Ag==".into();
        re_encrypted.generations[0].key_version = 2;
        assert_eq!(re_encrypted.validate_update(&old), Ok(()));
        let mut bad = old.clone();
        bad.key = "other".into();
        bad.number_of_bytes = 16;
        bad.generations.remove(0);
        let problems = bad.validate_update(&old).unwrap_err().join("\n");
        assert!(problems.contains("spec.key is immutable"), "{problems}");
        assert!(
            problems.contains("spec.numberOfBytes is immutable"),
            "{problems}"
        );
        assert!(
            problems.contains("generation 1 may not be removed"),
            "{problems}"
        );
    }

    #[test]
    fn bad_records_are_named() {
        let spec = DataKeySpec {
            service_account: "Orders".into(),
            name: "a.b".into(),
            key: "orders".into(),
            number_of_bytes: 32,
            generations: vec![
                DataKeyGeneration {
                    generation: 1,
                    ciphertext: "AA==".into(),
                    key_arn: "arn".into(),
                    key_version: 1,
                },
                DataKeyGeneration {
                    generation: 1,
                    ciphertext: "AA==".into(),
                    key_arn: "arn".into(),
                    key_version: 1,
                },
            ],
        };
        let problems = spec.validate().unwrap_err().join("\n");
        assert!(problems.contains("spec.serviceAccount"), "{problems}");
        assert!(problems.contains("spec.name"), "{problems}");
        assert!(
            problems.contains("generation 1 is zero or repeated"),
            "{problems}"
        );
    }
}
