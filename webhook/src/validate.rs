//! The validating webhook for kubekms's own resources, as a pure function of the admission
//! request. Kubernetes 1.20 has no CEL rules, so what the CRD schemas cannot say is checked
//! here, with the same functions the controllers use (`kubekms_crds`): immutable fields of a
//! Key, names, references, the rules of a KeyPolicy. Every message names its field and what to
//! write instead.

use kube::core::admission::{AdmissionRequest, AdmissionResponse, Operation};
use kube::core::DynamicObject;
use kubekms_crds::{Alias, DataKey, ImportedMaterial, Key, KeyPolicy};
use serde::de::DeserializeOwned;

/// The verdict on one request to create or change a kubekms.io object.
pub fn review(request: &AdmissionRequest<DynamicObject>) -> AdmissionResponse {
    let response = AdmissionResponse::from(request);
    if !matches!(request.operation, Operation::Create | Operation::Update) {
        return response;
    }
    match problems(request) {
        Ok(()) => response,
        Err(problems) => response.deny(format!(
            "{} {:?} is not valid: {}",
            request.kind.kind,
            request.name,
            problems.join("; ")
        )),
    }
}

fn problems(request: &AdmissionRequest<DynamicObject>) -> Result<(), Vec<String>> {
    let object = request.object.as_ref();
    // An update that leaves the spec alone (a finalizer removed, an annotation, the status) or
    // comes during deletion is let through: an object made before a rule existed must still
    // be deletable and annotatable.
    if request.operation == Operation::Update {
        let deleting = object.is_some_and(|o| o.metadata.deletion_timestamp.is_some());
        let spec = |o: Option<&DynamicObject>| o.map(|o| o.data.get("spec").cloned());
        if deleting || spec(object) == spec(request.old_object.as_ref()) {
            return Ok(());
        }
    }
    match request.kind.kind.as_str() {
        "Key" => checked::<Key>(
            request,
            |new| new.spec.validate(),
            |new, old| new.spec.validate_update(&old.spec),
        ),
        "Alias" => {
            let alias: Alias = decode(object)?;
            let mut problems = alias.spec.validate().err().unwrap_or_default();
            if let Err(name) = alias.engine_alias_name() {
                problems.push(format!("metadata.name: {name}"));
            }
            if problems.is_empty() {
                Ok(())
            } else {
                Err(problems)
            }
        }
        "KeyPolicy" => decode::<KeyPolicy>(object)?.spec.validate(),
        "ImportedMaterial" => decode::<ImportedMaterial>(object)?.spec.validate(),
        "DataKey" => checked::<DataKey>(
            request,
            |new| new.spec.validate(),
            |new, old| new.spec.validate_update(&old.spec),
        ),
        other => Err(vec![format!(
            "this webhook checks Key, Alias, KeyPolicy, ImportedMaterial and DataKey, not {other}"
        )]),
    }
}

/// A creation checked by `create`, a change by `update` against the object it replaces.
fn checked<T: DeserializeOwned>(
    request: &AdmissionRequest<DynamicObject>,
    create: impl Fn(&T) -> Result<(), Vec<String>>,
    update: impl Fn(&T, &T) -> Result<(), Vec<String>>,
) -> Result<(), Vec<String>> {
    let new: T = decode(request.object.as_ref())?;
    match request.old_object.as_ref() {
        Some(old) if request.operation == Operation::Update => update(&new, &decode(Some(old))?),
        _ => create(&new),
    }
}

fn decode<T: DeserializeOwned>(object: Option<&DynamicObject>) -> Result<T, Vec<String>> {
    let object = object.ok_or_else(|| vec!["the request carries no object".to_owned()])?;
    let value = serde_json::to_value(object).map_err(|e| vec![e.to_string()])?;
    serde_json::from_value(value).map_err(|e| vec![format!("cannot read it: {e}")])
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::core::admission::AdmissionReview;
    use serde_json::{json, Value};

    fn request(
        kind: &str,
        operation: &str,
        object: Value,
        old: Option<Value>,
    ) -> AdmissionRequest<DynamicObject> {
        let review: AdmissionReview<DynamicObject> = serde_json::from_value(json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
                "kind": { "group": "kubekms.io", "version": "v1alpha1", "kind": kind },
                "resource": { "group": "kubekms.io", "version": "v1alpha1", "resource": "x" },
                "name": object["metadata"]["name"],
                "namespace": "shop",
                "operation": operation,
                "userInfo": { "username": "alice" },
                "object": object,
                "oldObject": old,
                "dryRun": false,
            },
        }))
        .unwrap();
        review.try_into().unwrap()
    }

    fn key(spec: Value) -> Value {
        json!({ "apiVersion": "kubekms.io/v1alpha1", "kind": "Key",
            "metadata": { "name": "orders", "namespace": "shop" }, "spec": spec })
    }

    fn denied(response: &AdmissionResponse) -> Option<String> {
        (!response.allowed).then(|| response.result.message.clone())
    }

    #[test]
    fn a_valid_key_is_allowed_and_a_changed_key_spec_refused_with_what_to_do() {
        let created = review(&request("Key", "CREATE", key(json!({})), None));
        assert_eq!(denied(&created), None);
        let changed = review(&request(
            "Key",
            "UPDATE",
            key(json!({ "keySpec": "ECC_NIST_P256", "keyUsage": "SIGN_VERIFY" })),
            Some(key(json!({}))),
        ));
        let message = denied(&changed).expect("refused");
        assert!(
            message.contains("spec.keySpec: cannot change from SYMMETRIC_DEFAULT to ECC_NIST_P256; create a new Key instead"),
            "{message}"
        );
    }

    #[test]
    fn bad_references_and_names_are_refused() {
        let alias = json!({ "apiVersion": "kubekms.io/v1alpha1", "kind": "Alias",
            "metadata": { "name": "orders", "namespace": "shop" },
            "spec": { "keyRef": { "name": "Not_A_Name" } } });
        let message = denied(&review(&request("Alias", "CREATE", alias, None))).unwrap();
        assert!(message.contains("spec.keyRef.name"), "{message}");
        let policy = json!({ "apiVersion": "kubekms.io/v1alpha1", "kind": "KeyPolicy",
            "metadata": { "name": "p", "namespace": "shop" },
            "spec": { "keyRefs": [], "statements": [ { "effect": "Allow",
                "principals": { "serviceAccounts": [ { "namespace": "shop", "name": "app" } ] },
                "actions": ["kms:Decrypt"] } ] } });
        let message = denied(&review(&request("KeyPolicy", "CREATE", policy, None))).unwrap();
        assert!(
            message.contains("spec.keyRefs: list at least one Key name"),
            "{message}"
        );
    }

    #[test]
    fn a_data_key_record_keeps_every_generation() {
        let record = |generations: Value| {
            json!({ "apiVersion": "kubekms.io/v1alpha1", "kind": "DataKey",
                "metadata": { "name": "app.db", "namespace": "shop" },
                "spec": { "serviceAccount": "app", "name": "db", "key": "orders",
                          "numberOfBytes": 32, "generations": generations } })
        };
        let generation = |n: u32| json!({ "generation": n, "ciphertext": "AA==", "keyArn": "arn", "keyVersion": 1 });
        let both = record(json!([generation(1), generation(2)]));
        assert_eq!(
            denied(&review(&request("DataKey", "CREATE", both.clone(), None))),
            None
        );
        let dropped = review(&request(
            "DataKey",
            "UPDATE",
            record(json!([generation(2)])),
            Some(both),
        ));
        let message = denied(&dropped).expect("refused");
        assert!(
            message.contains("generation 1 may not be removed"),
            "{message}"
        );
    }

    #[test]
    fn updates_that_leave_the_spec_alone_pass_even_for_an_invalid_object() {
        let mut invalid = key(json!({ "keySpec": "ECC_NIST_P256", "keyUsage": "ENCRYPT_DECRYPT" }));
        assert!(denied(&review(&request("Key", "CREATE", invalid.clone(), None))).is_some());
        let old = invalid.clone();
        invalid["metadata"]["annotations"] = json!({ "team": "payments" });
        let annotated = review(&request("Key", "UPDATE", invalid, Some(old)));
        assert_eq!(denied(&annotated), None);
    }

    #[test]
    fn deletions_pass_and_unreadable_objects_are_refused() {
        let deleted = review(&request("Key", "DELETE", key(json!({})), None));
        assert_eq!(denied(&deleted), None);
        let garbage = review(&request(
            "Key",
            "CREATE",
            key(json!({ "keySpec": 7 })),
            None,
        ));
        assert!(denied(&garbage).unwrap().contains("cannot read it"));
    }
}
