//! Cryptographic operations: the hot path. Each resolves the key from memory, checks state and
//! usage, and calls into `crate::crypto`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::wire::{
    self, b64, b64_secret, decode, encode, parse_enum, parse_opt_enum, Blob, SecretBlob,
};
use super::{KeyEntry, Kms, RequestContext};
use crate::blob::{self, BlobHeader, EncryptionContext};
use crate::crypto;
use crate::error::{KmsError, Result};
use crate::model::{
    DataKeySpec, EncryptionAlgorithm, KeySpec, KeyUsage, MacAlgorithm, MessageType,
    SigningAlgorithm,
};

const MAX_PLAINTEXT: usize = 4096;

// Responses are typed and borrow the key's ARN: no JSON tree is built on the hot path.

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct CiphertextResponse<'a> {
    #[serde(serialize_with = "b64")]
    ciphertext_blob: Vec<u8>,
    key_id: &'a str,
    encryption_algorithm: EncryptionAlgorithm,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct PlaintextResponse<'a> {
    key_id: &'a str,
    #[serde(serialize_with = "b64_secret")]
    plaintext: Zeroizing<Vec<u8>>,
    encryption_algorithm: EncryptionAlgorithm,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct SignResponse<'a> {
    key_id: &'a str,
    #[serde(serialize_with = "b64")]
    signature: Vec<u8>,
    signing_algorithm: SigningAlgorithm,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct VerifyResponse<'a> {
    key_id: &'a str,
    signature_valid: bool,
    signing_algorithm: SigningAlgorithm,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct MacResponse<'a> {
    key_id: &'a str,
    #[serde(serialize_with = "b64")]
    mac: Vec<u8>,
    mac_algorithm: MacAlgorithm,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct VerifyMacResponse<'a> {
    key_id: &'a str,
    mac_valid: bool,
    mac_algorithm: MacAlgorithm,
}

impl Kms {
    fn require_usage(&self, entry: &KeyEntry, usage: KeyUsage) -> Result<()> {
        if entry.record.usage != usage {
            return Err(KmsError::InvalidKeyUsage(format!(
                "{} key usage is {} which is not valid for this operation",
                entry.arn(),
                entry.record.usage
            )));
        }
        Ok(())
    }

    /// Encrypt under the key's current version.
    fn encrypt_with(
        &self,
        entry: &KeyEntry,
        alg: EncryptionAlgorithm,
        context: &EncryptionContext,
        plaintext: &[u8],
    ) -> Result<Vec<u8>> {
        self.require_enabled(entry)?;
        self.require_usage(entry, KeyUsage::EncryptDecrypt)?;
        let (version, key) = entry.current()?;
        if entry.record.spec == KeySpec::SymmetricDefault {
            if alg != EncryptionAlgorithm::SymmetricDefault {
                return Err(KmsError::InvalidKeyUsage(format!(
                    "{alg} is not valid for symmetric key {}",
                    entry.arn()
                )));
            }
            let header = BlobHeader {
                key_id: entry.id,
                version,
            };
            let mut out =
                Vec::with_capacity(blob::HEADER_LEN + blob::GCM_OVERHEAD + plaintext.len());
            out.extend_from_slice(&header.encode());
            key.seal_into(&mut out, &header.aad(context), plaintext)?;
            Ok(out)
        } else {
            if alg == EncryptionAlgorithm::SymmetricDefault {
                return Err(KmsError::InvalidKeyUsage(format!(
                    "{} is asymmetric: choose RSAES_OAEP_SHA_1 or RSAES_OAEP_SHA_256",
                    entry.arn()
                )));
            }
            if !context.is_empty() {
                return Err(KmsError::validation(
                    "Encryption context is not supported with asymmetric keys",
                ));
            }
            let max = key.max_rsa_plaintext(alg).unwrap_or(0);
            if plaintext.len() > max {
                return Err(KmsError::validation(format!(
                    "Plaintext is too long: {alg} with {} encrypts at most {max} bytes",
                    entry.record.spec
                )));
            }
            key.rsa_encrypt(alg, plaintext)
        }
    }

    /// Decrypt a blob; `key_id` is required for asymmetric ciphertexts and, when given for a
    /// symmetric one, must name the key inside the blob.
    fn decrypt_with(
        &self,
        ctx: &RequestContext,
        key_id: Option<&str>,
        alg: EncryptionAlgorithm,
        context: &EncryptionContext,
        ciphertext: &[u8],
        touched: &mut Option<String>,
    ) -> Result<(std::sync::Arc<KeyEntry>, Zeroizing<Vec<u8>>)> {
        if alg == EncryptionAlgorithm::SymmetricDefault {
            let (header, sealed) = BlobHeader::parse(ciphertext)?;
            let entry = self
                .by_uuid(ctx, &header.key_id)
                .ok_or(KmsError::InvalidCiphertext)?;
            *touched = Some(entry.arn().to_owned());
            if let Some(id) = key_id {
                let named = self.resolve(ctx, id, true)?;
                if named.record.key_id != entry.record.key_id {
                    return Err(KmsError::IncorrectKey(
                        "The key ID in the request does not identify the key that encrypted the ciphertext"
                            .into(),
                    ));
                }
            }
            self.require_enabled(&entry)?;
            self.require_usage(&entry, KeyUsage::EncryptDecrypt)?;
            if entry.record.spec != KeySpec::SymmetricDefault {
                return Err(KmsError::InvalidCiphertext);
            }
            let key = entry
                .versions
                .get(&header.version)
                .ok_or(KmsError::InvalidCiphertext)?;
            let plaintext = key.open(&header.aad(context), sealed)?;
            Ok((entry, plaintext))
        } else {
            let id = key_id.ok_or_else(|| {
                KmsError::validation("KeyId is required to decrypt with an asymmetric key")
            })?;
            let entry = self.resolve_touched(ctx, id, true, touched)?;
            self.require_enabled(&entry)?;
            self.require_usage(&entry, KeyUsage::EncryptDecrypt)?;
            if !entry.record.spec.is_rsa() {
                return Err(KmsError::InvalidKeyUsage(format!(
                    "{alg} is not valid for {}",
                    entry.arn()
                )));
            }
            if !context.is_empty() {
                return Err(KmsError::validation(
                    "Encryption context is not supported with asymmetric keys",
                ));
            }
            let (_, key) = entry.current()?;
            let plaintext = key.rsa_decrypt(alg, ciphertext)?;
            Ok((entry, plaintext))
        }
    }

    pub(super) fn encrypt(
        &self,
        ctx: &RequestContext,
        body: &[u8],
        touched: &mut Option<String>,
    ) -> Result<Vec<u8>> {
        #[derive(Deserialize)]
        #[serde(rename_all = "PascalCase")]
        struct Req {
            key_id: String,
            plaintext: SecretBlob,
            encryption_context: Option<BTreeMap<String, String>>,
            encryption_algorithm: Option<String>,
        }
        let req: Req = decode(body)?;
        let plaintext = req.plaintext.decode("Plaintext")?;
        wire::check_len("plaintext", plaintext.len(), 1, MAX_PLAINTEXT)?;
        let alg = encryption_algorithm(&req.encryption_algorithm, "encryptionAlgorithm")?;
        let context = wire::context(req.encryption_context)?;
        let entry = self.resolve_touched(ctx, &req.key_id, true, touched)?;
        let ciphertext_blob = self.encrypt_with(&entry, alg, &context, &plaintext)?;
        encode(&CiphertextResponse {
            ciphertext_blob,
            key_id: entry.arn(),
            encryption_algorithm: alg,
        })
    }

    pub(super) fn decrypt(
        &self,
        ctx: &RequestContext,
        body: &[u8],
        touched: &mut Option<String>,
    ) -> Result<Vec<u8>> {
        #[derive(Deserialize)]
        #[serde(rename_all = "PascalCase")]
        struct Req {
            ciphertext_blob: Blob,
            key_id: Option<String>,
            encryption_context: Option<BTreeMap<String, String>>,
            encryption_algorithm: Option<String>,
            recipient: Option<serde_json::Value>,
        }
        let req: Req = decode(body)?;
        no_recipient(&req.recipient)?;
        let ciphertext = req.ciphertext_blob.decode("CiphertextBlob")?;
        wire::check_len("ciphertextBlob", ciphertext.len(), 1, 6144)?;
        let alg = encryption_algorithm(&req.encryption_algorithm, "encryptionAlgorithm")?;
        let context = wire::context(req.encryption_context)?;
        let (entry, plaintext) = self.decrypt_with(
            ctx,
            req.key_id.as_deref(),
            alg,
            &context,
            &ciphertext,
            touched,
        )?;
        encode(&PlaintextResponse {
            key_id: entry.arn(),
            plaintext,
            encryption_algorithm: alg,
        })
    }

    pub(super) fn re_encrypt(
        &self,
        ctx: &RequestContext,
        body: &[u8],
        touched: &mut Option<String>,
    ) -> Result<Vec<u8>> {
        #[derive(Deserialize)]
        #[serde(rename_all = "PascalCase")]
        struct Req {
            ciphertext_blob: Blob,
            source_encryption_context: Option<BTreeMap<String, String>>,
            source_key_id: Option<String>,
            destination_key_id: String,
            destination_encryption_context: Option<BTreeMap<String, String>>,
            source_encryption_algorithm: Option<String>,
            destination_encryption_algorithm: Option<String>,
        }
        let req: Req = decode(body)?;
        let ciphertext = req.ciphertext_blob.decode("CiphertextBlob")?;
        wire::check_len("ciphertextBlob", ciphertext.len(), 1, 6144)?;
        let src_alg = encryption_algorithm(
            &req.source_encryption_algorithm,
            "sourceEncryptionAlgorithm",
        )?;
        let dst_alg = encryption_algorithm(
            &req.destination_encryption_algorithm,
            "destinationEncryptionAlgorithm",
        )?;
        let src_context = wire::context(req.source_encryption_context)?;
        let dst_context = wire::context(req.destination_encryption_context)?;
        let mut src_touched = None;
        let (source, plaintext) = self.decrypt_with(
            ctx,
            req.source_key_id.as_deref(),
            src_alg,
            &src_context,
            &ciphertext,
            &mut src_touched,
        )?;
        let dest = self.resolve_touched(ctx, &req.destination_key_id, true, touched)?;
        let blob = self.encrypt_with(&dest, dst_alg, &dst_context, &plaintext)?;
        #[derive(Serialize)]
        #[serde(rename_all = "PascalCase")]
        struct Resp<'a> {
            #[serde(serialize_with = "b64")]
            ciphertext_blob: Vec<u8>,
            source_key_id: &'a str,
            key_id: &'a str,
            source_encryption_algorithm: EncryptionAlgorithm,
            destination_encryption_algorithm: EncryptionAlgorithm,
        }
        encode(&Resp {
            ciphertext_blob: blob,
            source_key_id: source.arn(),
            key_id: dest.arn(),
            source_encryption_algorithm: src_alg,
            destination_encryption_algorithm: dst_alg,
        })
    }

    pub(super) fn generate_data_key(
        &self,
        ctx: &RequestContext,
        body: &[u8],
        touched: &mut Option<String>,
        with_plaintext: bool,
    ) -> Result<Vec<u8>> {
        #[derive(Deserialize)]
        #[serde(rename_all = "PascalCase")]
        struct Req {
            key_id: String,
            encryption_context: Option<BTreeMap<String, String>>,
            number_of_bytes: Option<i64>,
            key_spec: Option<String>,
            recipient: Option<serde_json::Value>,
        }
        #[derive(Serialize)]
        #[serde(rename_all = "PascalCase")]
        struct Resp<'a> {
            #[serde(serialize_with = "b64")]
            ciphertext_blob: Vec<u8>,
            #[serde(
                serialize_with = "wire::opt_b64_secret",
                skip_serializing_if = "Option::is_none"
            )]
            plaintext: Option<Zeroizing<Vec<u8>>>,
            key_id: &'a str,
        }
        let req: Req = decode(body)?;
        no_recipient(&req.recipient)?;
        let len = match (
            req.number_of_bytes,
            parse_opt_enum::<DataKeySpec>(&req.key_spec, "keySpec")?,
        ) {
            (Some(_), Some(_)) => {
                return Err(KmsError::validation(
                    "Specify either KeySpec or NumberOfBytes, not both",
                ))
            }
            (None, None) => {
                return Err(KmsError::validation(
                    "Specify either KeySpec or NumberOfBytes",
                ))
            }
            (Some(n), None) => number_of_bytes(n)?,
            (None, Some(DataKeySpec::Aes256)) => 32,
            (None, Some(DataKeySpec::Aes128)) => 16,
        };
        let context = wire::context(req.encryption_context)?;
        let entry = self.resolve_touched(ctx, &req.key_id, true, touched)?;
        self.require_symmetric(&entry)?;
        let plaintext = crypto::random_bytes(len)?;
        let ciphertext_blob = self.encrypt_with(
            &entry,
            EncryptionAlgorithm::SymmetricDefault,
            &context,
            &plaintext,
        )?;
        encode(&Resp {
            ciphertext_blob,
            plaintext: with_plaintext.then_some(plaintext),
            key_id: entry.arn(),
        })
    }

    fn require_symmetric(&self, entry: &KeyEntry) -> Result<()> {
        if entry.record.spec != KeySpec::SymmetricDefault {
            return Err(KmsError::InvalidKeyUsage(format!(
                "{} is not a symmetric encryption key",
                entry.arn()
            )));
        }
        Ok(())
    }

    pub(super) async fn generate_data_key_pair(
        &self,
        ctx: &RequestContext,
        body: &[u8],
        touched: &mut Option<String>,
        with_plaintext: bool,
    ) -> Result<Vec<u8>> {
        #[derive(Deserialize)]
        #[serde(rename_all = "PascalCase")]
        struct Req {
            key_id: String,
            encryption_context: Option<BTreeMap<String, String>>,
            key_pair_spec: String,
            recipient: Option<serde_json::Value>,
        }
        #[derive(Serialize)]
        #[serde(rename_all = "PascalCase")]
        struct Resp<'a> {
            #[serde(serialize_with = "b64")]
            private_key_ciphertext_blob: Vec<u8>,
            #[serde(
                serialize_with = "wire::opt_b64_secret",
                skip_serializing_if = "Option::is_none"
            )]
            private_key_plaintext: Option<&'a [u8]>,
            #[serde(serialize_with = "b64")]
            public_key: Vec<u8>,
            key_id: &'a str,
            key_pair_spec: KeySpec,
        }
        let req: Req = decode(body)?;
        no_recipient(&req.recipient)?;
        let spec = parse_enum::<KeySpec>(&req.key_pair_spec, "keyPairSpec")?;
        if !spec.is_asymmetric() {
            return Err(KmsError::validation(format!(
                "KeyPairSpec must be an RSA or ECC key spec, not {spec}"
            )));
        }
        let context = wire::context(req.encryption_context)?;
        let entry = self.resolve_touched(ctx, &req.key_id, true, touched)?;
        self.require_symmetric(&entry)?;
        self.require_enabled(&entry)?;
        // An empty pool means seconds of RSA generation: keep it off the async workers.
        let (private, public_key) =
            tokio::task::spawn_blocking(move || crypto::generate_data_key_pair(spec))
                .await
                .map_err(|_| KmsError::internal("key pair generation was interrupted"))??;
        let private_key_ciphertext_blob = self.encrypt_with(
            &entry,
            EncryptionAlgorithm::SymmetricDefault,
            &context,
            private.expose(),
        )?;
        encode(&Resp {
            private_key_ciphertext_blob,
            private_key_plaintext: with_plaintext.then_some(private.expose()),
            public_key,
            key_id: entry.arn(),
            key_pair_spec: spec,
        })
    }

    pub(super) fn generate_random(&self, body: &[u8]) -> Result<Vec<u8>> {
        #[derive(Deserialize)]
        #[serde(rename_all = "PascalCase")]
        struct Req {
            number_of_bytes: Option<i64>,
            custom_key_store_id: Option<String>,
            recipient: Option<serde_json::Value>,
        }
        #[derive(Serialize)]
        #[serde(rename_all = "PascalCase")]
        struct Resp {
            #[serde(serialize_with = "b64_secret")]
            plaintext: Zeroizing<Vec<u8>>,
        }
        let req: Req = decode(body)?;
        if req.custom_key_store_id.is_some() || req.recipient.is_some() {
            return Err(KmsError::UnsupportedOperation(
                "Custom key stores and recipients are not supported".into(),
            ));
        }
        let n = number_of_bytes(
            req.number_of_bytes
                .ok_or_else(|| KmsError::validation("NumberOfBytes is required"))?,
        )?;
        encode(&Resp {
            plaintext: crypto::random_bytes(n)?,
        })
    }

    fn signing_key(
        &self,
        ctx: &RequestContext,
        key_id: &str,
        touched: &mut Option<String>,
    ) -> Result<std::sync::Arc<KeyEntry>> {
        let entry = self.resolve_touched(ctx, key_id, true, touched)?;
        self.require_enabled(&entry)?;
        self.require_usage(&entry, KeyUsage::SignVerify)?;
        Ok(entry)
    }

    fn check_signing_algorithm(&self, entry: &KeyEntry, alg: SigningAlgorithm) -> Result<()> {
        let r = &entry.record;
        if !r.spec.signing_algorithms(r.usage).contains(&alg) {
            return Err(KmsError::InvalidKeyUsage(format!(
                "{alg} is not valid for {} ({})",
                entry.arn(),
                r.spec
            )));
        }
        Ok(())
    }

    pub(super) fn sign(
        &self,
        ctx: &RequestContext,
        body: &[u8],
        touched: &mut Option<String>,
    ) -> Result<Vec<u8>> {
        #[derive(Deserialize)]
        #[serde(rename_all = "PascalCase")]
        struct Req {
            key_id: String,
            message: SecretBlob,
            message_type: Option<String>,
            signing_algorithm: String,
        }
        let req: Req = decode(body)?;
        let message = message(&req.message)?;
        let message_type =
            parse_opt_enum(&req.message_type, "messageType")?.unwrap_or(MessageType::Raw);
        let alg = parse_enum::<SigningAlgorithm>(&req.signing_algorithm, "signingAlgorithm")?;
        let entry = self.signing_key(ctx, &req.key_id, touched)?;
        self.check_signing_algorithm(&entry, alg)?;
        let (_, key) = entry.current()?;
        encode(&SignResponse {
            key_id: entry.arn(),
            signature: key.sign(alg, message_type, &message)?,
            signing_algorithm: alg,
        })
    }

    pub(super) fn verify(
        &self,
        ctx: &RequestContext,
        body: &[u8],
        touched: &mut Option<String>,
    ) -> Result<Vec<u8>> {
        #[derive(Deserialize)]
        #[serde(rename_all = "PascalCase")]
        struct Req {
            key_id: String,
            message: SecretBlob,
            message_type: Option<String>,
            signature: Blob,
            signing_algorithm: String,
        }
        let req: Req = decode(body)?;
        let message = message(&req.message)?;
        let signature = req.signature.decode("Signature")?;
        wire::check_len("signature", signature.len(), 1, 6144)?;
        let message_type =
            parse_opt_enum(&req.message_type, "messageType")?.unwrap_or(MessageType::Raw);
        let alg = parse_enum::<SigningAlgorithm>(&req.signing_algorithm, "signingAlgorithm")?;
        let entry = self.signing_key(ctx, &req.key_id, touched)?;
        self.check_signing_algorithm(&entry, alg)?;
        let (_, key) = entry.current()?;
        if !key.verify(alg, message_type, &message, &signature)? {
            return Err(KmsError::KmsInvalidSignature(
                "The signature is not valid".into(),
            ));
        }
        encode(&VerifyResponse {
            key_id: entry.arn(),
            signature_valid: true,
            signing_algorithm: alg,
        })
    }

    fn mac_key(
        &self,
        ctx: &RequestContext,
        key_id: &str,
        alg: MacAlgorithm,
        touched: &mut Option<String>,
    ) -> Result<std::sync::Arc<KeyEntry>> {
        let entry = self.resolve_touched(ctx, key_id, true, touched)?;
        self.require_enabled(&entry)?;
        self.require_usage(&entry, KeyUsage::GenerateVerifyMac)?;
        if !entry.record.spec.mac_algorithms().contains(&alg) {
            return Err(KmsError::InvalidKeyUsage(format!(
                "{alg} is not valid for {} ({})",
                entry.arn(),
                entry.record.spec
            )));
        }
        Ok(entry)
    }

    pub(super) fn generate_mac(
        &self,
        ctx: &RequestContext,
        body: &[u8],
        touched: &mut Option<String>,
    ) -> Result<Vec<u8>> {
        #[derive(Deserialize)]
        #[serde(rename_all = "PascalCase")]
        struct Req {
            key_id: String,
            message: SecretBlob,
            mac_algorithm: String,
        }
        let req: Req = decode(body)?;
        let message = message(&req.message)?;
        let alg = parse_enum::<MacAlgorithm>(&req.mac_algorithm, "macAlgorithm")?;
        let entry = self.mac_key(ctx, &req.key_id, alg, touched)?;
        let (_, key) = entry.current()?;
        encode(&MacResponse {
            key_id: entry.arn(),
            mac: key.generate_mac(alg, &message)?,
            mac_algorithm: alg,
        })
    }

    pub(super) fn verify_mac(
        &self,
        ctx: &RequestContext,
        body: &[u8],
        touched: &mut Option<String>,
    ) -> Result<Vec<u8>> {
        #[derive(Deserialize)]
        #[serde(rename_all = "PascalCase")]
        struct Req {
            key_id: String,
            message: SecretBlob,
            mac_algorithm: String,
            mac: Blob,
        }
        let req: Req = decode(body)?;
        let message = message(&req.message)?;
        let mac = req.mac.decode("Mac")?;
        wire::check_len("mac", mac.len(), 1, 6144)?;
        let alg = parse_enum::<MacAlgorithm>(&req.mac_algorithm, "macAlgorithm")?;
        let entry = self.mac_key(ctx, &req.key_id, alg, touched)?;
        let (_, key) = entry.current()?;
        if !key.verify_mac(alg, &message, &mac)? {
            return Err(KmsError::KmsInvalidMac("The MAC is not valid".into()));
        }
        encode(&VerifyMacResponse {
            key_id: entry.arn(),
            mac_valid: true,
            mac_algorithm: alg,
        })
    }

    pub(super) fn get_public_key(
        &self,
        ctx: &RequestContext,
        body: &[u8],
        touched: &mut Option<String>,
    ) -> Result<Vec<u8>> {
        #[derive(Deserialize)]
        #[serde(rename_all = "PascalCase")]
        struct Req {
            key_id: String,
        }
        let req: Req = decode(body)?;
        let entry = self.resolve_touched(ctx, &req.key_id, true, touched)?;
        let r = &entry.record;
        if !r.spec.is_asymmetric() {
            return Err(KmsError::UnsupportedOperation(format!(
                "{} is not an asymmetric key",
                entry.arn()
            )));
        }
        self.require_enabled(&entry)?;
        let (_, key) = entry.current()?;
        let mut out = serde_json::json!({
            "KeyId": entry.arn(),
            "PublicKey": base64_encode(&key.public_key_der()?),
            "CustomerMasterKeySpec": r.spec,
            "KeySpec": r.spec,
            "KeyUsage": r.usage,
        });
        let enc = r.spec.encryption_algorithms(r.usage);
        if !enc.is_empty() {
            out["EncryptionAlgorithms"] = serde_json::to_value(enc).unwrap_or_default();
        }
        let sig = r.spec.signing_algorithms(r.usage);
        if !sig.is_empty() {
            out["SigningAlgorithms"] = serde_json::to_value(sig).unwrap_or_default();
        }
        encode(&out)
    }
}

/// An EncryptionAlgorithm member: SYMMETRIC_DEFAULT when absent.
fn encryption_algorithm(value: &Option<String>, field: &str) -> Result<EncryptionAlgorithm> {
    Ok(parse_opt_enum(value, field)?.unwrap_or(EncryptionAlgorithm::SymmetricDefault))
}

/// The Recipient member (a Nitro Enclaves attestation) of Decrypt and GenerateDataKey*.
fn no_recipient(recipient: &Option<serde_json::Value>) -> Result<()> {
    if recipient.is_some() {
        return Err(KmsError::UnsupportedOperation(
            "Nitro Enclaves recipients are not supported".into(),
        ));
    }
    Ok(())
}

fn number_of_bytes(n: i64) -> Result<usize> {
    Ok(wire::check_range("numberOfBytes", n, 1, 1024)? as usize)
}

/// The Message of Sign, Verify, GenerateMac and VerifyMac: 1 to 4096 bytes.
fn message(blob: &SecretBlob) -> Result<Zeroizing<Vec<u8>>> {
    let message = blob.decode("Message")?;
    wire::check_len("message", message.len(), 1, MAX_PLAINTEXT)?;
    Ok(message)
}

pub(super) fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}
