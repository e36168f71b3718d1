//! `ImportedMaterial`: bring-your-own key material for a Key with origin External.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::core::Duration;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{
    check_object_name, crd_enum, is_secret_data_key, validation_result, KeyReference,
};
use crate::key::{KeyOrigin, KeySpec};
/// The AWS names an import uses, shared with the engine.
pub use kubekms_proto::vocab::{WrappingAlgorithm, WrappingKeySpec};

/// Default Secret key holding the wrapped material.
pub const DEFAULT_MATERIAL_KEY: &str = "material";
/// Default Secret key holding the import token the material was wrapped for.
pub const DEFAULT_IMPORT_TOKEN_KEY: &str = "importToken";

/// Imports externally generated key material into a Key with origin External.
///
/// The operator fetches import parameters from the engine and publishes them in status: an RSA
/// wrapping public key (`status.wrappingPublicKey`, PEM) and an import token
/// (`status.importToken`, base64), valid until `status.parametersValidTo`. Wrap the material
/// with the public key, then put the wrapped material and the token into the Secret named by
/// `spec.materialSecretRef`. For RSA_AES_KEY_WRAP_SHA_256:
///
/// ```sh
/// kubectl get kmsimport NAME -o jsonpath='{.status.wrappingPublicKey}' > wrapping.pem
/// kubectl get kmsimport NAME -o jsonpath='{.status.importToken}' | base64 -d > token.bin
/// openssl rand -out aes-key.bin 32
/// openssl pkeyutl -encrypt -in aes-key.bin -out enc-aes-key.bin -inkey wrapping.pem -pubin \
///   -pkeyopt rsa_padding_mode:oaep -pkeyopt rsa_oaep_md:sha256 -pkeyopt rsa_mgf1_md:sha256
/// openssl enc -id-aes256-wrap-pad -K "$(xxd -p < aes-key.bin | tr -d '\n')" -iv A65959A6 \
///   -in material.bin -out material-wrapped.bin
/// cat enc-aes-key.bin material-wrapped.bin > wrapped.bin
/// kubectl create secret generic NAME-material \
///   --from-file=material=wrapped.bin --from-file=importToken=token.bin
/// ```
///
/// With RSAES_OAEP_SHA_256 the material is encrypted directly:
/// `openssl pkeyutl -encrypt -in material.bin -out wrapped.bin -inkey wrapping.pem -pubin
/// -pkeyopt rsa_padding_mode:oaep -pkeyopt rsa_oaep_md:sha256 -pkeyopt rsa_mgf1_md:sha256`.
/// Symmetric material is 32 raw bytes, HMAC material raw bytes, RSA and ECC material a PKCS#8
/// DER private key (too large for RSAES_OAEP, so use an RSA_AES_KEY_WRAP algorithm).
// The repeated `printcolumn(...)` entries are distinct columns, not duplicates.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "kubekms.io",
    version = "v1alpha1",
    kind = "ImportedMaterial",
    namespaced,
    status = "ImportedMaterialStatus",
    shortname = "kmsimport",
    category = "kubekms",
    derive = "PartialEq",
    doc = "Imports key material into a Key with origin External. Wrap the material with \
           status.wrappingPublicKey, store it with status.importToken in the Secret named by \
           spec.materialSecretRef, and the operator imports it.",
    printcolumn(name = "Key", type_ = "string", json_path = ".spec.keyRef.name"),
    printcolumn(name = "State", type_ = "string", json_path = ".status.importState"),
    // A timestamp, not "date", which kubectl shows as `<invalid>` for a time in the future.
    printcolumn(name = "Expires", type_ = "string", json_path = ".status.expiresAt"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct ImportedMaterialSpec {
    /// The Key (in this namespace, with origin External) that receives the material.
    pub key_ref: KeyReference,

    /// How the material is wrapped. RSAES_OAEP_* encrypt the material directly (symmetric and
    /// HMAC material only); RSA_AES_KEY_WRAP_* wrap it under a one-time AES key that is itself
    /// RSA-OAEP encrypted (any material).
    #[serde(default = "default_wrapping_algorithm")]
    pub wrapping_algorithm: WrappingAlgorithm,

    /// Size of the RSA wrapping key the engine generates.
    #[serde(default = "default_wrapping_key_spec")]
    pub wrapping_key_spec: WrappingKeySpec,

    /// The Secret (in this namespace) holding the wrapped material and the import token it was
    /// wrapped for.
    pub material_secret_ref: MaterialSecretReference,

    /// When the imported material expires (RFC 3339). The engine deletes it then and the Key
    /// becomes PendingImport until material is imported again. Omit for material that does not
    /// expire.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Time")]
    pub valid_to: Option<Time>,

    /// How long before validTo the operator asks for renewal (a Go duration such as "720h"): it
    /// publishes fresh import parameters and sets the RenewalDue condition, so the same
    /// material can be wrapped and imported again before it expires. Needs validTo.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Duration")]
    pub renew_before: Option<Duration>,
}

/// Where in a Secret the wrapped material and its import token are.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MaterialSecretReference {
    /// Name of the Secret, in this namespace.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,

    /// Key in the Secret's data holding the wrapped material.
    #[serde(default = "default_material_key")]
    pub key: String,

    /// Key in the Secret's data holding the import token (raw bytes) the material was wrapped
    /// for.
    #[serde(default = "default_import_token_key")]
    pub token_key: String,
}

fn default_material_key() -> String {
    DEFAULT_MATERIAL_KEY.to_owned()
}

fn default_import_token_key() -> String {
    DEFAULT_IMPORT_TOKEN_KEY.to_owned()
}

impl MaterialSecretReference {
    /// A reference to `name` with the default keys.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            key: default_material_key(),
            token_key: default_import_token_key(),
        }
    }
}

/// The wrapping that takes any material (symmetric, HMAC, RSA and ECC private keys).
pub fn default_wrapping_algorithm() -> WrappingAlgorithm {
    WrappingAlgorithm::RsaAesKeyWrapSha256
}

/// The largest wrapping key.
pub fn default_wrapping_key_spec() -> WrappingKeySpec {
    WrappingKeySpec::Rsa4096
}

crd_enum!(
    /// Where an import stands.
    ImportState {
        /// Import parameters are published; waiting for the Secret with wrapped material.
        AwaitingMaterial = "AwaitingMaterial",
        /// The material is in the engine and the Key usable.
        Imported = "Imported",
        /// The material reached validTo and was deleted by the engine.
        Expired = "Expired",
    }
);

/// Import parameters and progress, written by the operator.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImportedMaterialStatus {
    /// The RSA public key to wrap the material with, PEM encoded (SubjectPublicKeyInfo).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "String")]
    pub wrapping_public_key: Option<String>,

    /// The import token to store, decoded, next to the wrapped material (base64).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "String")]
    pub import_token: Option<String>,

    /// When the wrapping key and import token stop being accepted; the operator publishes new
    /// ones before then while material is awaited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Time")]
    pub parameters_valid_to: Option<Time>,

    /// Where the import stands: AwaitingMaterial, Imported or Expired.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "ImportState")]
    pub import_state: Option<ImportState>,

    /// When the imported material expires, if it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Time")]
    pub expires_at: Option<Time>,

    /// Current observations of the import; "Ready" is true when the material is imported.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,

    /// The metadata.generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "i64")]
    pub observed_generation: Option<i64>,
}

impl ImportedMaterialSpec {
    /// Checks the spec on its own, for the validating webhook.
    pub fn validate(&self) -> Result<(), Vec<String>> {
        let mut errors = Vec::new();
        check_object_name(&mut errors, "spec.keyRef.name", &self.key_ref.name);
        let secret = &self.material_secret_ref;
        check_object_name(&mut errors, "spec.materialSecretRef.name", &secret.name);
        for (field, key) in [("key", &secret.key), ("tokenKey", &secret.token_key)] {
            if !is_secret_data_key(key) {
                errors.push(format!(
                    "spec.materialSecretRef.{field}: {key:?} is not a valid Secret key \
                     (letters, digits, '-', '_' and '.')"
                ));
            }
        }
        if secret.key == secret.token_key {
            errors.push(
                "spec.materialSecretRef.tokenKey: must differ from key; the material and the \
                 import token are separate entries"
                    .to_owned(),
            );
        }
        if let Some(renew_before) = &self.renew_before {
            if self.valid_to.is_none() {
                errors.push(
                    "spec.renewBefore: only meaningful with validTo; set validTo or remove it"
                        .to_owned(),
                );
            }
            if renew_before.is_negative() || *renew_before == std::time::Duration::ZERO {
                errors.push("spec.renewBefore: must be a positive duration".to_owned());
            }
        }
        validation_result(errors)
    }

    /// Checks the spec against the Key it refers to: the Key must have origin External, and
    /// asymmetric material (a PKCS#8 private key) is too large for RSAES_OAEP_*.
    pub fn validate_for_key(&self, key: &KeySpec) -> Result<(), Vec<String>> {
        let mut errors = Vec::new();
        if key.origin != KeyOrigin::External {
            errors.push(format!(
                "spec.keyRef: Key {:?} has origin {}; only Keys with origin External take \
                 imported material",
                self.key_ref.name, key.origin
            ));
        }
        if key.key_spec.is_asymmetric() && !self.wrapping_algorithm.is_key_wrap() {
            errors.push(format!(
                "spec.wrappingAlgorithm: {} keys need RSA_AES_KEY_WRAP_SHA_1 or \
                 RSA_AES_KEY_WRAP_SHA_256; a private key does not fit in {}",
                key.key_spec, self.wrapping_algorithm
            ));
        }
        validation_result(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::KmsKeySpec;

    fn spec() -> ImportedMaterialSpec {
        serde_json::from_value(serde_json::json!({
            "keyRef": {"name": "byok"},
            "materialSecretRef": {"name": "byok-material"},
        }))
        .unwrap()
    }

    #[test]
    fn defaults() {
        let s = spec();
        assert_eq!(s.wrapping_algorithm, WrappingAlgorithm::RsaAesKeyWrapSha256);
        assert_eq!(s.wrapping_key_spec, WrappingKeySpec::Rsa4096);
        assert_eq!(
            s.material_secret_ref,
            MaterialSecretReference::new("byok-material")
        );
        assert_eq!(s.material_secret_ref.key, "material");
        assert_eq!(s.material_secret_ref.token_key, "importToken");
        assert_eq!(s.validate(), Ok(()));
    }

    #[test]
    fn times_and_durations_parse() {
        let s: ImportedMaterialSpec = serde_json::from_value(serde_json::json!({
            "keyRef": {"name": "byok"},
            "wrappingAlgorithm": "RSAES_OAEP_SHA_1",
            "wrappingKeySpec": "RSA_2048",
            "materialSecretRef": {"name": "m", "key": "wrapped", "tokenKey": "token"},
            "validTo": "2030-01-01T00:00:00Z",
            "renewBefore": "720h",
        }))
        .unwrap();
        assert_eq!(s.wrapping_algorithm, WrappingAlgorithm::RsaesOaepSha1);
        assert_eq!(
            s.renew_before,
            Some(Duration::from(std::time::Duration::from_secs(720 * 3600)))
        );
        assert_eq!(s.validate(), Ok(()));
        let back = serde_json::to_value(&s).unwrap();
        assert_eq!(back["validTo"], "2030-01-01T00:00:00Z");
        assert!(
            serde_json::from_value::<ImportedMaterialSpec>(serde_json::json!({
                "keyRef": {"name": "byok"},
                "materialSecretRef": {"name": "m"},
                "renewBefore": "30 days",
            }))
            .is_err()
        );
    }

    #[test]
    fn spec_errors() {
        let mut s = spec();
        s.renew_before = Some("1h".parse().unwrap());
        assert!(s.validate().unwrap_err()[0].starts_with("spec.renewBefore"));
        s.valid_to = Some(Time("2030-01-01T00:00:00Z".parse().unwrap()));
        assert_eq!(s.validate(), Ok(()));
        s.renew_before = Some("-1h".parse().unwrap());
        assert!(s.validate().is_err());
        s.renew_before = Some("0s".parse().unwrap());
        assert!(s.validate().is_err());

        let mut s = spec();
        s.material_secret_ref.token_key = "material".into();
        assert!(s.validate().unwrap_err()[0].contains("tokenKey"));
        s.material_secret_ref.key = "a/b".into();
        s.material_secret_ref.name = "Bad".into();
        s.key_ref.name = String::new();
        assert_eq!(s.validate().unwrap_err().len(), 3);
    }

    #[test]
    fn key_compatibility() {
        let external = |key_spec| KeySpec {
            key_spec,
            origin: KeyOrigin::External,
            ..KeySpec::default()
        };
        let mut s = spec();
        assert_eq!(s.validate_for_key(&external(KmsKeySpec::Rsa2048)), Ok(()));
        assert_eq!(s.validate_for_key(&external(KmsKeySpec::Hmac256)), Ok(()));

        let generated = KeySpec::default();
        assert!(s.validate_for_key(&generated).unwrap_err()[0].starts_with("spec.keyRef"));

        s.wrapping_algorithm = WrappingAlgorithm::RsaesOaepSha256;
        assert_eq!(
            s.validate_for_key(&external(KmsKeySpec::SymmetricDefault)),
            Ok(())
        );
        assert_eq!(s.validate_for_key(&external(KmsKeySpec::Hmac512)), Ok(()));
        for ks in [KmsKeySpec::Rsa4096, KmsKeySpec::EccNistP256] {
            let errors = s.validate_for_key(&external(ks)).unwrap_err();
            assert!(
                errors[0].starts_with("spec.wrappingAlgorithm"),
                "{errors:?}"
            );
        }
    }
}
