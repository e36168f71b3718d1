//! The AWS JSON 1.1 codec: each operation's body is decoded into its typed request from
//! `kubekms_proto::ops`, the engine's typed function is called, and its typed response is
//! encoded. This is the only place where an operation is looked up by name and the only place
//! where JSON meets the engine.

use kubekms_proto::codec::NOT_BASE64;
use kubekms_proto::ops::{
    DecryptRequest, EncryptRequest, EncryptionContextMap, GenerateDataKeyPairRequest,
    GenerateDataKeyRequest, ReEncryptRequest,
};
use kubekms_proto::vocab::ENUM_CONSTRAINT_PREFIX;
use kubekms_proto::Operation;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{KmsError, Result};
use crate::service::{Caller, Kms, Outcome, TouchedKeys};

/// One operation's encoded answer, the keys it touched and the keys (never the values) of the
/// encryption context(s) it was given, for the audit log.
pub struct Answer {
    pub result: Result<Vec<u8>>,
    pub keys: TouchedKeys,
    pub context_keys: Vec<String>,
}

impl<T: Serialize> From<Outcome<T>> for Answer {
    fn from(outcome: Outcome<T>) -> Self {
        Answer {
            result: outcome.result.and_then(|r| encode(&r)),
            keys: outcome.keys,
            context_keys: Vec::new(),
        }
    }
}

impl From<KmsError> for Answer {
    fn from(error: KmsError) -> Self {
        Answer {
            result: Err(error),
            keys: Vec::new(),
            context_keys: Vec::new(),
        }
    }
}

/// Requests that carry an encryption context: its keys are audited, allowed or refused.
trait ContextKeys {
    fn contexts(&self) -> [Option<&EncryptionContextMap>; 2];

    /// The keys of every context, sorted and without repeats (ReEncrypt has two contexts).
    fn context_keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self
            .contexts()
            .into_iter()
            .flatten()
            .flat_map(|c| c.keys().cloned())
            .collect();
        keys.sort_unstable();
        keys.dedup();
        keys
    }
}

macro_rules! context_keys {
    ($($request:ty => |$r:ident| [$a:expr, $b:expr]),+ $(,)?) => {
        $(impl ContextKeys for $request {
            fn contexts(&self) -> [Option<&EncryptionContextMap>; 2] {
                let $r = self;
                [$a, $b]
            }
        })+
    };
}

context_keys! {
    EncryptRequest => |r| [r.encryption_context.as_ref(), None],
    DecryptRequest => |r| [r.encryption_context.as_ref(), None],
    ReEncryptRequest => |r| [
        r.source_encryption_context.as_ref(),
        r.destination_encryption_context.as_ref()
    ],
    GenerateDataKeyRequest => |r| [r.encryption_context.as_ref(), None],
    GenerateDataKeyPairRequest => |r| [r.encryption_context.as_ref(), None],
}

/// [`call!`] for a request with an encryption context, whose keys go into the answer.
macro_rules! call_with_context {
    ($kms:ident . $method:ident ( $caller:ident, $body:ident $(, $extra:expr)* )) => {
        match decode::<_>($body) {
            Ok(request) => {
                let context_keys = ContextKeys::context_keys(&request);
                let mut answer = Answer::from($kms.$method($caller, request $(, $extra)*).await);
                answer.context_keys = context_keys;
                answer
            }
            Err(e) => Answer::from(e),
        }
    };
}

/// `kms.$method(caller, <body decoded>, extra...)`, encoded.
///
/// `call!(boxed: ...)` boxes the operation's future: for the operations that write a key's
/// record and the long poll. Their futures are 1–2 KiB (the store write and the key's new
/// state), against a few hundred bytes for the crypto operations and the alias writes; unboxed,
/// they would size the future of every request, which hyper and the server move (a copy of its
/// whole size) several times per request. A write to the store costs far more than the
/// allocation.
macro_rules! call {
    (@wrapped $wrap:path, $kms:ident . $method:ident ( $caller:ident, $body:ident $(, $extra:expr)* )) => {
        match decode($body) {
            Ok(request) => Answer::from($wrap($kms.$method($caller, request $(, $extra)*)).await),
            Err(e) => Answer::from(e),
        }
    };
    (boxed: $($call:tt)*) => {
        call!(@wrapped Box::pin, $($call)*)
    };
    ($($call:tt)*) => {
        call!(@wrapped std::convert::identity, $($call)*)
    };
}

/// kubekms's long poll for changed keys (`kubekms_proto::changes`) on a JSON body.
pub async fn list_key_changes(kms: &Kms, caller: &Caller, body: &[u8]) -> Answer {
    call!(boxed: kms.list_key_changes(caller, body))
}

/// Run `op` on a JSON body.
pub async fn dispatch(kms: &Kms, caller: &Caller, op: Operation, body: &[u8]) -> Answer {
    use Operation as Op;
    match op {
        Op::Encrypt => call_with_context!(kms.encrypt(caller, body)),
        Op::Decrypt => call_with_context!(kms.decrypt(caller, body)),
        Op::ReEncrypt => call_with_context!(kms.re_encrypt(caller, body)),
        Op::GenerateDataKey => call_with_context!(kms.generate_data_key(caller, body, true)),
        Op::GenerateDataKeyWithoutPlaintext => {
            call_with_context!(kms.generate_data_key(caller, body, false))
        }
        Op::GenerateDataKeyPair => {
            call_with_context!(kms.generate_data_key_pair(caller, body, true))
        }
        Op::GenerateDataKeyPairWithoutPlaintext => {
            call_with_context!(kms.generate_data_key_pair(caller, body, false))
        }
        Op::GenerateRandom => call!(kms.generate_random(caller, body)),
        Op::Sign => call!(kms.sign(caller, body)),
        Op::Verify => call!(kms.verify(caller, body)),
        Op::GenerateMac => call!(kms.generate_mac(caller, body)),
        Op::VerifyMac => call!(kms.verify_mac(caller, body)),
        Op::GetPublicKey => call!(kms.get_public_key(caller, body)),
        Op::CreateKey => call!(boxed: kms.create_key(caller, body)),
        Op::DescribeKey => call!(kms.describe_key(caller, body)),
        Op::ListKeys => call!(kms.list_keys(caller, body)),
        Op::UpdateKeyDescription => call!(boxed: kms.update_key_description(caller, body)),
        Op::EnableKey => call!(boxed: kms.enable_key(caller, body)),
        Op::DisableKey => call!(boxed: kms.disable_key(caller, body)),
        Op::ScheduleKeyDeletion => call!(boxed: kms.schedule_key_deletion(caller, body)),
        Op::CancelKeyDeletion => call!(boxed: kms.cancel_key_deletion(caller, body)),
        Op::EnableKeyRotation => call!(boxed: kms.enable_key_rotation(caller, body)),
        Op::DisableKeyRotation => call!(boxed: kms.disable_key_rotation(caller, body)),
        Op::GetKeyRotationStatus => call!(kms.get_key_rotation_status(caller, body)),
        Op::RotateKeyOnDemand => call!(boxed: kms.rotate_key_on_demand(caller, body)),
        Op::ListKeyRotations => call!(kms.list_key_rotations(caller, body)),
        Op::TagResource => call!(boxed: kms.tag_resource(caller, body)),
        Op::UntagResource => call!(boxed: kms.untag_resource(caller, body)),
        Op::ListResourceTags => call!(kms.list_resource_tags(caller, body)),
        Op::GetKeyPolicy => call!(kms.get_key_policy(caller, body)),
        Op::PutKeyPolicy => call!(boxed: kms.put_key_policy(caller, body)),
        Op::ListKeyPolicies => call!(kms.list_key_policies(caller, body)),
        Op::CreateAlias => call!(kms.create_alias(caller, body)),
        Op::UpdateAlias => call!(kms.update_alias(caller, body)),
        Op::DeleteAlias => call!(kms.delete_alias(caller, body)),
        Op::ListAliases => call!(kms.list_aliases(caller, body)),
        Op::GetParametersForImport => call!(kms.get_parameters_for_import(caller, body)),
        Op::ImportKeyMaterial => call!(boxed: kms.import_key_material(caller, body)),
        Op::DeleteImportedKeyMaterial => {
            call!(boxed: kms.delete_imported_key_material(caller, body))
        }
        Op::ConnectCustomKeyStore
        | Op::CreateCustomKeyStore
        | Op::CreateGrant
        | Op::DeleteCustomKeyStore
        | Op::DeriveSharedSecret
        | Op::DescribeCustomKeyStores
        | Op::DisconnectCustomKeyStore
        | Op::ListGrants
        | Op::ListRetirableGrants
        | Op::ReplicateKey
        | Op::RetireGrant
        | Op::RevokeGrant
        | Op::UpdateCustomKeyStore
        | Op::UpdatePrimaryRegion => Answer::from(KmsError::UnsupportedOperation(format!(
            "The operation {op} is not supported by this endpoint"
        ))),
    }
}

/// Decode a request body. Malformed JSON is a SerializationException; a missing or mistyped
/// member is a ValidationException naming the member but never its value (it might be
/// plaintext).
pub fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T> {
    let body = if body.is_empty() { &b"{}"[..] } else { body };
    serde_json::from_slice(body).map_err(|e| {
        use serde_json::error::Category;
        match e.classify() {
            Category::Syntax | Category::Eof | Category::Io => {
                KmsError::SerializationFailure("The request body is not valid JSON".into())
            }
            Category::Data => KmsError::Validation(format!(
                "1 validation error detected: {}",
                data_error_detail::<T>(body, &e)
            )),
        }
    })
}

/// What was wrong with a well-formed body, found again on the (rare) error path with the
/// member's path, so the hot path pays nothing for it.
fn data_error_detail<T: DeserializeOwned>(body: &[u8], e: &serde_json::Error) -> String {
    let text = e.to_string();
    // serde names the member in "missing field `X`"; other data errors may quote the value, so
    // only what we wrote ourselves (enum constraints, base64) is passed on.
    if let Some(i) = text.find("missing field") {
        return text[i..].split(" at line").next().unwrap_or("").to_string();
    }
    let mut de = serde_json::Deserializer::from_slice(body);
    let path = match serde_path_to_error::deserialize::<_, T>(&mut de) {
        Err(err) => member_name(&err.path().to_string()),
        Ok(_) => String::new(),
    };
    let at = if path.is_empty() {
        format!("line {}, column {}", e.line(), e.column())
    } else {
        format!("'{path}'")
    };
    if let Some(i) = text.find(ENUM_CONSTRAINT_PREFIX) {
        let constraint = text[i..].split(" at line").next().unwrap_or("");
        format!("Value at {at} failed to satisfy constraint: {constraint}")
    } else if text.contains(NOT_BASE64) {
        format!("Value at {at} {NOT_BASE64}")
    } else {
        format!("Value at {at} has the wrong type")
    }
}

/// A member path as AWS writes it in validation messages: `KeySpec` becomes `keySpec`.
fn member_name(path: &str) -> String {
    if path == "." {
        return String::new();
    }
    let mut chars = path.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>> {
    // Most answers (an Encrypt's, a DescribeKey's) fit: no regrowth on the request path.
    let mut out = Vec::with_capacity(512);
    serde_json::to_writer(&mut out, value)
        .map_err(|_| KmsError::internal("failed to encode the response"))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kubekms_proto::ops::{CreateKeyRequest, EncryptRequest};

    #[test]
    fn decode_errors_never_echo_values() {
        let err = decode::<EncryptRequest>(br#"{"KeyId": 5, "Plaintext": "c2VjcmV0"}"#)
            .err()
            .unwrap();
        assert_eq!(err.aws_type(), "ValidationException");
        assert!(!err.to_string().contains('5'), "{err}");
        assert!(err.to_string().contains("'keyId'"), "{err}");
        let err = decode::<EncryptRequest>(br#"{"Plaintext": "c2VjcmV0"}"#)
            .err()
            .unwrap();
        assert!(err.to_string().contains("missing field `KeyId`"), "{err}");
        let err = decode::<EncryptRequest>(b"{not json").err().unwrap();
        assert_eq!(err.aws_type(), "SerializationException");
    }

    #[test]
    fn secret_blob_decodes_base64() {
        let p: EncryptRequest = decode(br#"{"KeyId": "k", "Plaintext": "c2VjcmV0"}"#).unwrap();
        assert_eq!(p.plaintext.as_slice(), b"secret");
        let err = decode::<EncryptRequest>(br#"{"KeyId": "k", "Plaintext": "***"}"#)
            .err()
            .unwrap();
        assert_eq!(err.aws_type(), "ValidationException");
        assert!(err.to_string().contains("'plaintext'"), "{err}");
        assert!(!err.to_string().contains("***"), "{err}");
    }

    #[test]
    fn enum_errors_list_allowed_values() {
        let err = decode::<CreateKeyRequest>(br#"{"KeySpec": "RSA_1024"}"#)
            .err()
            .unwrap();
        assert_eq!(err.aws_type(), "ValidationException");
        assert!(err.to_string().contains("'keySpec'"), "{err}");
        assert!(err.to_string().contains("RSA_2048"), "{err}");
        assert!(!err.to_string().contains("RSA_1024"), "{err}");
    }

    #[test]
    fn grant_tokens_of_another_type_are_refused() {
        for tokens in [r#""t""#, "5", "[5]", r#"{"a": 1}"#, "true"] {
            let body =
                format!(r#"{{"KeyId": "k", "Plaintext": "c2VjcmV0", "GrantTokens": {tokens}}}"#);
            let err = decode::<EncryptRequest>(body.as_bytes()).err().unwrap();
            assert_eq!(err.aws_type(), "ValidationException", "{tokens}");
            assert!(err.to_string().contains("grantTokens"), "{tokens}: {err}");
        }
    }
}
