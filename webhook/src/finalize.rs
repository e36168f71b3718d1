//! A new Key's admission: validated (as [`crate::validate`] checks every kubekms.io object),
//! then given the operator's finalizer in its own creation, as a JSON patch decided by a pure
//! function. One webhook call instead of a mutating and a validating one, and the operator
//! finds the finalizer there instead of writing it: a wave of 10,000 new Keys is bound by the
//! API server. The operator still adds it itself when the webhook was not asked.

use json_patch::Patch;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, Operation};
use kube::core::DynamicObject;
use kubekms_crds::key::KEY_FINALIZER;
use serde_json::{json, Value};

/// The answer to a Key's admission: refused with what to fix when it is not valid, else
/// allowed, with the finalizer added on CREATE when missing.
pub fn admit_key(request: &AdmissionRequest<DynamicObject>) -> AdmissionResponse {
    let response = crate::validate::review(request);
    if !response.allowed || request.operation != Operation::Create {
        return response;
    }
    let Some(key) = request.object.as_ref() else {
        return response;
    };
    let Some(patch) = finalizer_patch(key.metadata.finalizers.as_deref()) else {
        return response;
    };
    match response.clone().with_patch(patch) {
        Ok(patched) => patched,
        // The operator adds it later; never refuse a Key for this.
        Err(_) => response,
    }
}

/// The patch adding [`KEY_FINALIZER`] to `finalizers`, `None` when it is there.
fn finalizer_patch(finalizers: Option<&[String]>) -> Option<Patch> {
    let op: Value = match finalizers {
        Some(list) if list.iter().any(|f| f == KEY_FINALIZER) => return None,
        Some(_) => json!({ "op": "add", "path": "/metadata/finalizers/-", "value": KEY_FINALIZER }),
        None => json!({ "op": "add", "path": "/metadata/finalizers", "value": [KEY_FINALIZER] }),
    };
    serde_json::from_value(Value::Array(vec![op])).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::core::admission::AdmissionReview;

    fn request(operation: &str, finalizers: Option<Value>) -> AdmissionRequest<DynamicObject> {
        let mut metadata = json!({ "name": "orders", "namespace": "shop" });
        if let Some(f) = finalizers {
            metadata["finalizers"] = f;
        }
        let review: AdmissionReview<DynamicObject> = serde_json::from_value(json!({
            "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {
                "uid": "u1",
                "kind": { "group": "kubekms.io", "version": "v1alpha1", "kind": "Key" },
                "resource": { "group": "kubekms.io", "version": "v1alpha1", "resource": "keys" },
                "name": "orders", "namespace": "shop", "operation": operation,
                "userInfo": { "username": "alice" },
                "object": { "apiVersion": "kubekms.io/v1alpha1", "kind": "Key",
                            "metadata": metadata, "spec": {} },
            },
        }))
        .unwrap();
        review.try_into().unwrap()
    }

    fn patched(request: &AdmissionRequest<DynamicObject>) -> Option<Value> {
        let response = admit_key(request);
        assert!(response.allowed);
        let patch: Patch = serde_json::from_slice(response.patch.as_deref()?).unwrap();
        let mut doc = serde_json::to_value(request.object.as_ref().unwrap()).unwrap();
        json_patch::patch(&mut doc, &patch).unwrap();
        Some(doc["metadata"]["finalizers"].clone())
    }

    #[test]
    fn a_new_key_gets_the_finalizer_once_beside_others() {
        assert_eq!(
            patched(&request("CREATE", None)),
            Some(json!([KEY_FINALIZER]))
        );
        assert_eq!(
            patched(&request("CREATE", Some(json!(["example.com/keep"])))),
            Some(json!(["example.com/keep", KEY_FINALIZER]))
        );
        assert_eq!(
            patched(&request("CREATE", Some(json!([KEY_FINALIZER])))),
            None
        );
        assert_eq!(patched(&request("UPDATE", None)), None, "only creations");
    }

    #[test]
    fn an_invalid_key_is_refused_with_what_to_fix() {
        let mut invalid = request("CREATE", None);
        if let Some(key) = invalid.object.as_mut() {
            key.data["spec"] = json!({ "keySpec": "ECC_NIST_P256", "keyUsage": "ENCRYPT_DECRYPT" });
        }
        let response = admit_key(&invalid);
        assert!(!response.allowed);
        assert!(response.patch.is_none());
        assert!(
            response.result.message.contains("spec.keyUsage"),
            "{}",
            response.result.message
        );
    }
}
