//! The kubekms custom resources, `kubekms.io/v1alpha1`, shared by the operator and the webhook.
//!
//! - [`Key`] (`kmskey`): a KMS key in the engine.
//! - [`Alias`] (`kmsalias`): `alias/<namespace>/<name>` pointing at a Key.
//! - [`KeyPolicy`] (`kmspolicy`): who may use which Keys of a namespace.
//! - [`ImportedMaterial`] (`kmsimport`): bring-your-own material for an External Key.
//! - [`DataKey`] (`kmsdatakey`): an injected data key's ciphertexts, kept by the webhook and
//!   the operator (never written by users).
//!
//! The schemas are the API server's only validation on Kubernetes 1.20 (no CEL there), so each
//! spec also has a pure `validate()` for the validating webhook. `crdgen` prints the CRDs;
//! `kubekms.io.yaml` next to this crate's manifest is that output, checked by `tests/drift.rs`.
//! This crate depends on no part of the engine; the AWS names (key specs, usages, states,
//! wrapping) are `kubekms-proto`'s, the same types the engine uses.
//!
//! Optional fields carry `#[schemars(with = "<inner type>")]`, so their schema is the inner type
//! without `nullable`. Kubernetes 1.20 publishes nullable fields without a type (`kubectl
//! explain` shows `<>`), and rejects the `null` schemars adds to an optional enum's values. The
//! API server drops nulls sent for non-nullable fields, so nothing is lost.

pub mod alias;
pub mod common;
pub mod datakey;
pub mod import;
pub mod key;
pub mod policy;

pub use alias::{engine_alias_name, Alias, AliasSpec, AliasStatus};
pub use common::{condition, KeyReference, UnknownValue};
pub use datakey::{DataKey, DataKeyGeneration, DataKeySpec, DataKeyStatus, SealedGeneration};
pub use import::{
    ImportState, ImportedMaterial, ImportedMaterialSpec, ImportedMaterialStatus,
    MaterialSecretReference, WrappingAlgorithm, WrappingKeySpec,
};
pub use key::{Key, KeyOrigin, KeySpec, KeyState, KeyStatus, KeyUsage, KmsKeySpec, RotationSpec};
pub use policy::{
    action_matches, Effect, KeyPolicy, KeyPolicySpec, KeyPolicyStatus, PolicyStatement, Principals,
    ServiceAccountReference, StatementConditions,
};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

/// The API group of every kubekms resource.
pub const GROUP: &str = "kubekms.io";
/// The served and stored version.
pub const VERSION: &str = "v1alpha1";

/// Every kubekms CRD, in a fixed order. Install these rather than `Key::crd()` and friends:
/// see [`published_crd`].
pub fn crds() -> Vec<CustomResourceDefinition> {
    vec![
        published_crd::<Key>(),
        published_crd::<Alias>(),
        published_crd::<KeyPolicy>(),
        published_crd::<ImportedMaterial>(),
        published_crd::<DataKey>(),
    ]
}

/// `K::crd()` with the root `status` made non-nullable. kube-derive declares `status` as an
/// `Option`, hence nullable, and Kubernetes 1.20 publishes a nullable object without its
/// properties, so `kubectl explain key.status` would show nothing.
pub fn published_crd<K: CustomResourceExt>() -> CustomResourceDefinition {
    let mut crd = K::crd();
    for version in &mut crd.spec.versions {
        let status = version
            .schema
            .as_mut()
            .and_then(|s| s.open_api_v3_schema.as_mut())
            .and_then(|s| s.properties.as_mut())
            .and_then(|p| p.get_mut("status"));
        if let Some(status) = status {
            status.nullable = None;
        }
    }
    crd
}

/// [`crds`] as one multi-document YAML stream, as `crdgen` prints it and `kubekms.io.yaml`
/// holds it.
pub fn crds_yaml() -> Result<String, serde_saphyr::SerializeError> {
    serde_saphyr::to_string_multiple(&crds())
}
