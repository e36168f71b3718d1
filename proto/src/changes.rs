//! kubekms's one operation beyond AWS KMS's: the keys that changed, for a client that keeps
//! resources in step with the engine over the network (the operator, when the engine runs in
//! its own pods). Not in botocore's model, so not an [`crate::Operation`]: it has its own
//! target and is signed like any KMS request (service `kms`). The engine allows it to callers
//! that may `kms:ListKeys`, and reports only keys the caller could list.
//!
//! A long poll: the engine answers as soon as a key changed after `Position`, or after
//! `WaitSeconds` with no changes. Positions belong to one engine process; a position from
//! another replica or an earlier run, or one older than the changes the engine keeps, answers
//! `Complete: false` (the caller may have missed changes and should re-read every key) with a
//! fresh position to go on from.

use serde::{Deserialize, Serialize};

/// The `X-Amz-Target` of the operation.
pub const LIST_KEY_CHANGES_TARGET: &str = "KubekmsService.ListKeyChanges";

/// The longest wait a request may ask for, within a client's usual 30 s request timeout.
pub const MAX_WAIT_SECONDS: u32 = 20;

/// The most keys one answer carries; more changes wait for the next request.
pub const MAX_KEY_IDS: u32 = 1000;

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ListKeyChangesRequest {
    /// Where the previous answer left off; absent on the first request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position: Option<String>,
    /// How long to wait for a change when there is none yet (0 to [`MAX_WAIT_SECONDS`];
    /// default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait_seconds: Option<u32>,
    /// At most this many key ids (1 to [`MAX_KEY_IDS`]; default [`MAX_KEY_IDS`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}

/// A key that changed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct KeyChange {
    pub key_id: String,
    /// The key record's revision after its latest change in this answer (DescribeKey's
    /// `KeyMetadata.KubekmsRevision`); absent once the key is gone. An answer that shows an
    /// older revision came from a replica that has not seen the change yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<u64>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ListKeyChangesResponse {
    /// The keys that changed (each once), oldest change first.
    pub changes: Vec<KeyChange>,
    /// Where to ask from next.
    pub position: String,
    /// False when changes before `key_ids` may have been missed: the request's position was
    /// absent, from another engine process, or older than the changes kept.
    pub complete: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_form_is_pascal_case_and_optional_fields_may_be_absent() {
        let request: ListKeyChangesRequest = serde_json::from_str("{}").unwrap();
        assert_eq!(request, ListKeyChangesRequest::default());
        let request = ListKeyChangesRequest {
            position: Some("p".into()),
            wait_seconds: Some(20),
            limit: None,
        };
        assert_eq!(
            serde_json::to_string(&request).unwrap(),
            r#"{"Position":"p","WaitSeconds":20}"#
        );
        let answer: ListKeyChangesResponse = serde_json::from_str(
            r#"{"Changes":[{"KeyId":"k","Revision":3},{"KeyId":"gone"}],"Position":"q","Complete":true}"#,
        )
        .unwrap();
        assert_eq!(answer.changes[0].revision, Some(3));
        assert_eq!(answer.changes[1].revision, None);
        assert!(answer.complete);
    }
}
