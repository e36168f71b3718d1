//! Encrypt, Decrypt, ReEncrypt, data keys, random bytes, signatures and MACs.

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::{EncryptionContextMap, GrantTokens, Recipient};
use crate::codec::{base64, opt_secret_base64, secret_base64};
use crate::vocab::{
    DataKeySpec, EncryptionAlgorithm, KeySpec, KeyUsage, MacAlgorithm, MessageType,
    SigningAlgorithm,
};

#[derive(Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct EncryptRequest {
    pub key_id: String,
    #[serde(with = "secret_base64")]
    pub plaintext: Zeroizing<Vec<u8>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption_context: Option<EncryptionContextMap>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption_algorithm: Option<EncryptionAlgorithm>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant_tokens: Option<GrantTokens>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dry_run: Option<bool>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct EncryptResponse {
    #[serde(with = "base64")]
    pub ciphertext_blob: Vec<u8>,
    pub key_id: String,
    pub encryption_algorithm: EncryptionAlgorithm,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DecryptRequest {
    #[serde(with = "base64")]
    pub ciphertext_blob: Vec<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption_context: Option<EncryptionContextMap>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption_algorithm: Option<EncryptionAlgorithm>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recipient: Option<Recipient>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant_tokens: Option<GrantTokens>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dry_run: Option<bool>,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DecryptResponse {
    pub key_id: String,
    #[serde(with = "secret_base64")]
    pub plaintext: Zeroizing<Vec<u8>>,
    pub encryption_algorithm: EncryptionAlgorithm,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ReEncryptRequest {
    #[serde(with = "base64")]
    pub ciphertext_blob: Vec<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_encryption_context: Option<EncryptionContextMap>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_key_id: Option<String>,
    pub destination_key_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination_encryption_context: Option<EncryptionContextMap>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_encryption_algorithm: Option<EncryptionAlgorithm>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination_encryption_algorithm: Option<EncryptionAlgorithm>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant_tokens: Option<GrantTokens>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dry_run: Option<bool>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ReEncryptResponse {
    #[serde(with = "base64")]
    pub ciphertext_blob: Vec<u8>,
    pub source_key_id: String,
    pub key_id: String,
    pub source_encryption_algorithm: EncryptionAlgorithm,
    pub destination_encryption_algorithm: EncryptionAlgorithm,
}

/// GenerateDataKey and GenerateDataKeyWithoutPlaintext (which has no Recipient).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct GenerateDataKeyRequest {
    pub key_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption_context: Option<EncryptionContextMap>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub number_of_bytes: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_spec: Option<DataKeySpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recipient: Option<Recipient>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant_tokens: Option<GrantTokens>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dry_run: Option<bool>,
}

/// GenerateDataKey's answer; GenerateDataKeyWithoutPlaintext's has no `plaintext`.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct GenerateDataKeyResponse {
    #[serde(with = "base64")]
    pub ciphertext_blob: Vec<u8>,
    #[serde(
        default,
        with = "opt_secret_base64",
        skip_serializing_if = "Option::is_none"
    )]
    pub plaintext: Option<Zeroizing<Vec<u8>>>,
    pub key_id: String,
}

/// GenerateDataKeyPair and GenerateDataKeyPairWithoutPlaintext.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct GenerateDataKeyPairRequest {
    pub key_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption_context: Option<EncryptionContextMap>,
    pub key_pair_spec: KeySpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recipient: Option<Recipient>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant_tokens: Option<GrantTokens>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dry_run: Option<bool>,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct GenerateDataKeyPairResponse {
    #[serde(with = "base64")]
    pub private_key_ciphertext_blob: Vec<u8>,
    #[serde(
        default,
        with = "opt_secret_base64",
        skip_serializing_if = "Option::is_none"
    )]
    pub private_key_plaintext: Option<Zeroizing<Vec<u8>>>,
    #[serde(with = "base64")]
    pub public_key: Vec<u8>,
    pub key_id: String,
    pub key_pair_spec: KeySpec,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct GenerateRandomRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub number_of_bytes: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_key_store_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recipient: Option<Recipient>,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct GenerateRandomResponse {
    #[serde(with = "secret_base64")]
    pub plaintext: Zeroizing<Vec<u8>>,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct SignRequest {
    pub key_id: String,
    #[serde(with = "secret_base64")]
    pub message: Zeroizing<Vec<u8>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_type: Option<MessageType>,
    pub signing_algorithm: SigningAlgorithm,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant_tokens: Option<GrantTokens>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dry_run: Option<bool>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct SignResponse {
    pub key_id: String,
    #[serde(with = "base64")]
    pub signature: Vec<u8>,
    pub signing_algorithm: SigningAlgorithm,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct VerifyRequest {
    pub key_id: String,
    #[serde(with = "secret_base64")]
    pub message: Zeroizing<Vec<u8>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_type: Option<MessageType>,
    #[serde(with = "base64")]
    pub signature: Vec<u8>,
    pub signing_algorithm: SigningAlgorithm,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant_tokens: Option<GrantTokens>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dry_run: Option<bool>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct VerifyResponse {
    pub key_id: String,
    pub signature_valid: bool,
    pub signing_algorithm: SigningAlgorithm,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct GenerateMacRequest {
    pub key_id: String,
    #[serde(with = "secret_base64")]
    pub message: Zeroizing<Vec<u8>>,
    pub mac_algorithm: MacAlgorithm,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant_tokens: Option<GrantTokens>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dry_run: Option<bool>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct GenerateMacResponse {
    pub key_id: String,
    #[serde(with = "base64")]
    pub mac: Vec<u8>,
    pub mac_algorithm: MacAlgorithm,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct VerifyMacRequest {
    pub key_id: String,
    #[serde(with = "secret_base64")]
    pub message: Zeroizing<Vec<u8>>,
    pub mac_algorithm: MacAlgorithm,
    #[serde(with = "base64")]
    pub mac: Vec<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant_tokens: Option<GrantTokens>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dry_run: Option<bool>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct VerifyMacResponse {
    pub key_id: String,
    pub mac_valid: bool,
    pub mac_algorithm: MacAlgorithm,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct GetPublicKeyRequest {
    pub key_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant_tokens: Option<GrantTokens>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct GetPublicKeyResponse {
    pub key_id: String,
    #[serde(with = "base64")]
    pub public_key: Vec<u8>,
    pub customer_master_key_spec: KeySpec,
    pub key_spec: KeySpec,
    pub key_usage: KeyUsage,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub encryption_algorithms: Vec<EncryptionAlgorithm>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub signing_algorithms: Vec<SigningAlgorithm>,
}
