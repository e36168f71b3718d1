//! Cryptographic operations: the hot path. Each resolves the key from memory, passes the
//! authorization hook, checks state and usage, and calls into `crate::crypto`.

use std::sync::Arc;

use kubekms_proto::ops::{
    DecryptRequest, DecryptResponse, EncryptRequest, EncryptResponse, GenerateDataKeyPairRequest,
    GenerateDataKeyPairResponse, GenerateDataKeyRequest, GenerateDataKeyResponse,
    GenerateMacRequest, GenerateMacResponse, GenerateRandomRequest, GenerateRandomResponse,
    GetPublicKeyRequest, GetPublicKeyResponse, ReEncryptRequest, ReEncryptResponse, Recipient,
    SignRequest, SignResponse, VerifyMacRequest, VerifyMacResponse, VerifyRequest, VerifyResponse,
};
use kubekms_proto::Action;
use zeroize::Zeroizing;

use super::checks;
use super::{attempt, dry_run, Aliases, Caller, KeyEntry, Kms, Outcome, Refused};
use crate::blob::{self, BlobHeader, EncryptionContext};
use crate::crypto;
use crate::error::{KmsError, Result};
use crate::model::{
    DataKeySpec, EncryptionAlgorithm, KeySpec, KeyUsage, MacAlgorithm, MessageType,
};

const MAX_PLAINTEXT: usize = 4096;

/// A ciphertext as Decrypt and ReEncrypt found it: a symmetric blob, parsed once (its header and
/// the sealed bytes after it), or raw RSA output.
enum Sealed<'c> {
    Blob(BlobHeader, &'c [u8]),
    Rsa(&'c [u8]),
}
/// The model's `CiphertextType`: 1 to 6144 bytes.
const MAX_CIPHERTEXT: usize = 6144;

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
                key_id: entry.uuid(),
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

    /// The key that encrypted `ciphertext`: named inside a symmetric blob (returned parsed, with
    /// what follows the header), or by `key_id` (which an asymmetric ciphertext requires).
    /// A key that does not exist reads as the authorization hook says (see
    /// [`Kms::absent`]), for `action`.
    fn ciphertext_key<'c>(
        &self,
        caller: &Caller,
        action: Action,
        key_id: Option<&str>,
        alg: EncryptionAlgorithm,
        ciphertext: &'c [u8],
    ) -> Result<(Arc<KeyEntry>, Sealed<'c>)> {
        if alg == EncryptionAlgorithm::SymmetricDefault {
            let (header, sealed) = BlobHeader::parse(ciphertext)?;
            let entry = self.by_uuid(caller, &header.key_id).ok_or_else(|| {
                // The truth for those who may know it: the blob names no key of ours.
                self.hidden(
                    caller,
                    action,
                    &header.key_id.to_string(),
                    KmsError::InvalidCiphertext,
                )
            })?;
            Ok((entry, Sealed::Blob(header, sealed)))
        } else {
            let id = key_id.ok_or_else(|| {
                KmsError::validation("KeyId is required to decrypt with an asymmetric key")
            })?;
            let entry = self
                .resolve(caller, id, Aliases::Allowed)
                .map_err(|e| self.absent(caller, action, id, e))?;
            Ok((entry, Sealed::Rsa(ciphertext)))
        }
    }

    /// Resolve the key that encrypted `ciphertext` and pass it through the authorization hook
    /// for `action` (Decrypt, or ReEncryptFrom); then `key_id`, when given for a symmetric
    /// ciphertext, must name that key (checked only once the caller may use it, so a refused
    /// caller learns nothing about the key it named).
    fn authorized_ciphertext_key<'c>(
        &self,
        caller: &Caller,
        action: Action,
        key_id: Option<&str>,
        alg: EncryptionAlgorithm,
        context: &EncryptionContext,
        ciphertext: &'c [u8],
    ) -> Result<(Arc<KeyEntry>, Sealed<'c>), Refused> {
        let (entry, sealed) = self.ciphertext_key(caller, action, key_id, alg, ciphertext)?;
        self.authorize_entry(caller, action, &entry, Some(context))?;
        if let (Sealed::Blob(..), Some(id)) = (&sealed, key_id) {
            let incorrect = || {
                KmsError::IncorrectKey(
                    "The key ID in the request does not identify the key that encrypted the \
                     ciphertext"
                        .into(),
                )
            };
            // Another key, or none: the same answer to a caller the hook hides keys from, so the
            // KeyId cannot be used to probe for keys it may not see.
            let error = match self.resolve(caller, id, Aliases::Allowed) {
                Ok(named) if named.record.key_id == entry.record.key_id => None,
                Ok(_) => Some(incorrect()),
                Err(missing @ KmsError::NotFound(_)) => {
                    Some(match self.hidden(caller, action, id, missing) {
                        truth @ KmsError::NotFound(_) => truth,
                        _ => incorrect(),
                    })
                }
                Err(other) => Some(other),
            };
            if let Some(error) = error {
                return Err(Refused {
                    error,
                    key: Some(entry.arn.clone()),
                });
            }
        }
        Ok((entry, sealed))
    }

    /// Decrypt a ciphertext of `entry`, as [`Kms::authorized_ciphertext_key`] found it.
    fn decrypt_with(
        &self,
        entry: &KeyEntry,
        sealed: Sealed<'_>,
        alg: EncryptionAlgorithm,
        context: &EncryptionContext,
    ) -> Result<Zeroizing<Vec<u8>>> {
        match sealed {
            Sealed::Blob(header, sealed) => {
                self.require_enabled(entry)?;
                self.require_usage(entry, KeyUsage::EncryptDecrypt)?;
                if entry.record.spec != KeySpec::SymmetricDefault {
                    return Err(KmsError::InvalidCiphertext);
                }
                let key = entry
                    .versions
                    .get(&header.version)
                    .ok_or(KmsError::InvalidCiphertext)?;
                key.open(&header.aad(context), sealed)
            }
            Sealed::Rsa(ciphertext) => {
                self.require_enabled(entry)?;
                self.require_usage(entry, KeyUsage::EncryptDecrypt)?;
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
                key.rsa_decrypt(alg, ciphertext)
            }
        }
    }

    pub async fn encrypt(&self, caller: &Caller, req: EncryptRequest) -> Outcome<EncryptResponse> {
        attempt!(checks::check_len(
            "plaintext",
            req.plaintext.len(),
            1,
            MAX_PLAINTEXT
        ));
        attempt!(checks::grant_tokens(req.grant_tokens.as_deref()));
        let alg = req
            .encryption_algorithm
            .unwrap_or(EncryptionAlgorithm::SymmetricDefault);
        let context = attempt!(checks::context(req.encryption_context));
        let entry = attempt!(self.authorized(
            caller,
            Action::Encrypt,
            &req.key_id,
            Aliases::Allowed,
            Some(&context)
        ));
        if let Err(e) = dry_run(req.dry_run) {
            return Outcome::on(&entry, Err(e));
        }
        let result = self
            .encrypt_with(&entry, alg, &context, &req.plaintext)
            .map(|ciphertext_blob| EncryptResponse {
                ciphertext_blob,
                key_id: entry.arn().to_owned(),
                encryption_algorithm: alg,
            });
        Outcome::on(&entry, result)
    }

    pub async fn decrypt(&self, caller: &Caller, req: DecryptRequest) -> Outcome<DecryptResponse> {
        attempt!(no_recipient(&req.recipient));
        attempt!(checks::check_len(
            "ciphertextBlob",
            req.ciphertext_blob.len(),
            1,
            MAX_CIPHERTEXT
        ));
        attempt!(checks::grant_tokens(req.grant_tokens.as_deref()));
        let alg = req
            .encryption_algorithm
            .unwrap_or(EncryptionAlgorithm::SymmetricDefault);
        let context = attempt!(checks::context(req.encryption_context));
        let key_id = req.key_id.as_deref();
        let (entry, sealed) = attempt!(self.authorized_ciphertext_key(
            caller,
            Action::Decrypt,
            key_id,
            alg,
            &context,
            &req.ciphertext_blob
        ));
        if let Err(e) = dry_run(req.dry_run) {
            return Outcome::on(&entry, Err(e));
        }
        let result = self
            .decrypt_with(&entry, sealed, alg, &context)
            .map(|plaintext| DecryptResponse {
                key_id: entry.arn().to_owned(),
                plaintext,
                encryption_algorithm: alg,
            });
        Outcome::on(&entry, result)
    }

    pub async fn re_encrypt(
        &self,
        caller: &Caller,
        req: ReEncryptRequest,
    ) -> Outcome<ReEncryptResponse> {
        attempt!(checks::check_len(
            "ciphertextBlob",
            req.ciphertext_blob.len(),
            1,
            MAX_CIPHERTEXT
        ));
        attempt!(checks::grant_tokens(req.grant_tokens.as_deref()));
        let src_alg = req
            .source_encryption_algorithm
            .unwrap_or(EncryptionAlgorithm::SymmetricDefault);
        let dst_alg = req
            .destination_encryption_algorithm
            .unwrap_or(EncryptionAlgorithm::SymmetricDefault);
        let src_context = attempt!(checks::context(req.source_encryption_context));
        let dst_context = attempt!(checks::context(req.destination_encryption_context));
        let src_key_id = req.source_key_id.as_deref();
        let (source, sealed) = attempt!(self.authorized_ciphertext_key(
            caller,
            Action::ReEncryptFrom,
            src_key_id,
            src_alg,
            &src_context,
            &req.ciphertext_blob
        ));
        // Both keys authorized (and a dry run answered) before anything is decrypted.
        let dest = match self.authorized(
            caller,
            Action::ReEncryptTo,
            &req.destination_key_id,
            Aliases::Allowed,
            Some(&dst_context),
        ) {
            Ok(d) => d,
            Err(refused) => {
                let mut out = Outcome::from(refused);
                out.keys.insert(0, source.arn.clone());
                return out;
            }
        };
        if let Err(e) = dry_run(req.dry_run) {
            return Outcome {
                result: Err(e),
                keys: vec![source.arn.clone(), dest.arn.clone()],
            };
        }
        let plaintext = match self.decrypt_with(&source, sealed, src_alg, &src_context) {
            Ok(p) => p,
            Err(e) => return Outcome::on(&source, Err(e)),
        };
        let result = self
            .encrypt_with(&dest, dst_alg, &dst_context, &plaintext)
            .map(|ciphertext_blob| ReEncryptResponse {
                ciphertext_blob,
                source_key_id: source.arn().to_owned(),
                key_id: dest.arn().to_owned(),
                source_encryption_algorithm: src_alg,
                destination_encryption_algorithm: dst_alg,
            });
        Outcome {
            result,
            keys: vec![source.arn.clone(), dest.arn.clone()],
        }
    }

    /// GenerateDataKey (`with_plaintext`) and GenerateDataKeyWithoutPlaintext.
    pub async fn generate_data_key(
        &self,
        caller: &Caller,
        req: GenerateDataKeyRequest,
        with_plaintext: bool,
    ) -> Outcome<GenerateDataKeyResponse> {
        attempt!(no_recipient(&req.recipient));
        attempt!(checks::grant_tokens(req.grant_tokens.as_deref()));
        let len = match (req.number_of_bytes, req.key_spec) {
            (Some(_), Some(_)) => {
                return KmsError::validation("Specify either KeySpec or NumberOfBytes, not both")
                    .into()
            }
            (None, None) => {
                return KmsError::validation("Specify either KeySpec or NumberOfBytes").into()
            }
            (Some(n), None) => attempt!(number_of_bytes(n)),
            (None, Some(DataKeySpec::Aes256)) => 32,
            (None, Some(DataKeySpec::Aes128)) => 16,
        };
        let context = attempt!(checks::context(req.encryption_context));
        let action = if with_plaintext {
            Action::GenerateDataKey
        } else {
            Action::GenerateDataKeyWithoutPlaintext
        };
        let entry = attempt!(self.authorized(
            caller,
            action,
            &req.key_id,
            Aliases::Allowed,
            Some(&context)
        ));
        if let Err(e) = dry_run(req.dry_run) {
            return Outcome::on(&entry, Err(e));
        }
        let result = (|| {
            self.require_symmetric(&entry)?;
            let plaintext = crypto::random_bytes(len)?;
            let ciphertext_blob = self.encrypt_with(
                &entry,
                EncryptionAlgorithm::SymmetricDefault,
                &context,
                &plaintext,
            )?;
            Ok(GenerateDataKeyResponse {
                ciphertext_blob,
                plaintext: with_plaintext.then_some(plaintext),
                key_id: entry.arn().to_owned(),
            })
        })();
        Outcome::on(&entry, result)
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

    /// GenerateDataKeyPair (`with_plaintext`) and GenerateDataKeyPairWithoutPlaintext.
    pub async fn generate_data_key_pair(
        &self,
        caller: &Caller,
        req: GenerateDataKeyPairRequest,
        with_plaintext: bool,
    ) -> Outcome<GenerateDataKeyPairResponse> {
        attempt!(no_recipient(&req.recipient));
        attempt!(checks::grant_tokens(req.grant_tokens.as_deref()));
        let spec = req.key_pair_spec;
        if !spec.is_asymmetric() {
            return KmsError::validation(format!(
                "KeyPairSpec must be an RSA or ECC key spec, not {spec}"
            ))
            .into();
        }
        let context = attempt!(checks::context(req.encryption_context));
        let action = if with_plaintext {
            Action::GenerateDataKeyPair
        } else {
            Action::GenerateDataKeyPairWithoutPlaintext
        };
        let entry = attempt!(self.authorized(
            caller,
            action,
            &req.key_id,
            Aliases::Allowed,
            Some(&context)
        ));
        if let Err(e) = dry_run(req.dry_run) {
            return Outcome::on(&entry, Err(e));
        }
        let result = async {
            self.require_symmetric(&entry)?;
            self.require_enabled(&entry)?;
            // An empty pool means seconds of RSA generation: keep it off the async workers.
            let keys = self.keys.clone();
            let (private, public_key) = tokio::task::spawn_blocking(move || keys.key_pair(spec))
                .await
                .map_err(|_| KmsError::internal("key pair generation was interrupted"))??;
            let private_key_ciphertext_blob = self.encrypt_with(
                &entry,
                EncryptionAlgorithm::SymmetricDefault,
                &context,
                private.expose(),
            )?;
            Ok(GenerateDataKeyPairResponse {
                private_key_ciphertext_blob,
                private_key_plaintext: with_plaintext.then(|| private.into_secret()),
                public_key,
                key_id: entry.arn().to_owned(),
                key_pair_spec: spec,
            })
        }
        .await;
        Outcome::on(&entry, result)
    }

    pub async fn generate_random(
        &self,
        caller: &Caller,
        req: GenerateRandomRequest,
    ) -> Outcome<GenerateRandomResponse> {
        let result = (|| {
            if req.custom_key_store_id.is_some() || req.recipient.is_some() {
                return Err(KmsError::UnsupportedOperation(
                    "Custom key stores and recipients are not supported".into(),
                ));
            }
            let n = number_of_bytes(
                req.number_of_bytes
                    .ok_or_else(|| KmsError::validation("NumberOfBytes is required"))?,
            )?;
            self.authorize_keyless(caller, Action::GenerateRandom)?;
            Ok(GenerateRandomResponse {
                plaintext: crypto::random_bytes(n)?,
            })
        })();
        Outcome::keyless(result)
    }

    fn check_signing_key(
        &self,
        entry: &KeyEntry,
        alg: kubekms_proto::vocab::SigningAlgorithm,
    ) -> Result<()> {
        self.require_enabled(entry)?;
        self.require_usage(entry, KeyUsage::SignVerify)?;
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

    pub async fn sign(&self, caller: &Caller, req: SignRequest) -> Outcome<SignResponse> {
        attempt!(check_message(&req.message));
        attempt!(checks::grant_tokens(req.grant_tokens.as_deref()));
        let message_type = req.message_type.unwrap_or(MessageType::Raw);
        let alg = req.signing_algorithm;
        let entry =
            attempt!(self.authorized(caller, Action::Sign, &req.key_id, Aliases::Allowed, None));
        if let Err(e) = dry_run(req.dry_run) {
            return Outcome::on(&entry, Err(e));
        }
        let result = (|| {
            self.check_signing_key(&entry, alg)?;
            let (_, key) = entry.current()?;
            Ok(SignResponse {
                key_id: entry.arn().to_owned(),
                signature: key.sign(alg, message_type, &req.message)?,
                signing_algorithm: alg,
            })
        })();
        Outcome::on(&entry, result)
    }

    pub async fn verify(&self, caller: &Caller, req: VerifyRequest) -> Outcome<VerifyResponse> {
        attempt!(check_message(&req.message));
        attempt!(checks::check_len(
            "signature",
            req.signature.len(),
            1,
            MAX_CIPHERTEXT
        ));
        attempt!(checks::grant_tokens(req.grant_tokens.as_deref()));
        let message_type = req.message_type.unwrap_or(MessageType::Raw);
        let alg = req.signing_algorithm;
        let entry =
            attempt!(self.authorized(caller, Action::Verify, &req.key_id, Aliases::Allowed, None));
        if let Err(e) = dry_run(req.dry_run) {
            return Outcome::on(&entry, Err(e));
        }
        let result = (|| {
            self.check_signing_key(&entry, alg)?;
            let (_, key) = entry.current()?;
            if !key.verify(alg, message_type, &req.message, &req.signature)? {
                return Err(KmsError::KmsInvalidSignature(
                    "The signature is not valid".into(),
                ));
            }
            Ok(VerifyResponse {
                key_id: entry.arn().to_owned(),
                signature_valid: true,
                signing_algorithm: alg,
            })
        })();
        Outcome::on(&entry, result)
    }

    fn check_mac_key(&self, entry: &KeyEntry, alg: MacAlgorithm) -> Result<()> {
        self.require_enabled(entry)?;
        self.require_usage(entry, KeyUsage::GenerateVerifyMac)?;
        if !entry.record.spec.mac_algorithms().contains(&alg) {
            return Err(KmsError::InvalidKeyUsage(format!(
                "{alg} is not valid for {} ({})",
                entry.arn(),
                entry.record.spec
            )));
        }
        Ok(())
    }

    pub async fn generate_mac(
        &self,
        caller: &Caller,
        req: GenerateMacRequest,
    ) -> Outcome<GenerateMacResponse> {
        attempt!(check_message(&req.message));
        attempt!(checks::grant_tokens(req.grant_tokens.as_deref()));
        let alg = req.mac_algorithm;
        let entry = attempt!(self.authorized(
            caller,
            Action::GenerateMac,
            &req.key_id,
            Aliases::Allowed,
            None
        ));
        if let Err(e) = dry_run(req.dry_run) {
            return Outcome::on(&entry, Err(e));
        }
        let result = (|| {
            self.check_mac_key(&entry, alg)?;
            let (_, key) = entry.current()?;
            Ok(GenerateMacResponse {
                key_id: entry.arn().to_owned(),
                mac: key.generate_mac(alg, &req.message)?,
                mac_algorithm: alg,
            })
        })();
        Outcome::on(&entry, result)
    }

    pub async fn verify_mac(
        &self,
        caller: &Caller,
        req: VerifyMacRequest,
    ) -> Outcome<VerifyMacResponse> {
        attempt!(check_message(&req.message));
        attempt!(checks::check_len("mac", req.mac.len(), 1, MAX_CIPHERTEXT));
        attempt!(checks::grant_tokens(req.grant_tokens.as_deref()));
        let alg = req.mac_algorithm;
        let entry = attempt!(self.authorized(
            caller,
            Action::VerifyMac,
            &req.key_id,
            Aliases::Allowed,
            None
        ));
        if let Err(e) = dry_run(req.dry_run) {
            return Outcome::on(&entry, Err(e));
        }
        let result = (|| {
            self.check_mac_key(&entry, alg)?;
            let (_, key) = entry.current()?;
            if !key.verify_mac(alg, &req.message, &req.mac)? {
                return Err(KmsError::KmsInvalidMac("The MAC is not valid".into()));
            }
            Ok(VerifyMacResponse {
                key_id: entry.arn().to_owned(),
                mac_valid: true,
                mac_algorithm: alg,
            })
        })();
        Outcome::on(&entry, result)
    }

    pub async fn get_public_key(
        &self,
        caller: &Caller,
        req: GetPublicKeyRequest,
    ) -> Outcome<GetPublicKeyResponse> {
        attempt!(checks::grant_tokens(req.grant_tokens.as_deref()));
        let entry = attempt!(self.authorized(
            caller,
            Action::GetPublicKey,
            &req.key_id,
            Aliases::Allowed,
            None
        ));
        let result = (|| {
            let r = &entry.record;
            if !r.spec.is_asymmetric() {
                return Err(KmsError::UnsupportedOperation(format!(
                    "{} is not an asymmetric key",
                    entry.arn()
                )));
            }
            self.require_enabled(&entry)?;
            let (_, key) = entry.current()?;
            Ok(GetPublicKeyResponse {
                key_id: entry.arn().to_owned(),
                public_key: key.public_key_der()?,
                customer_master_key_spec: r.spec,
                key_spec: r.spec,
                key_usage: r.usage,
                encryption_algorithms: r.spec.encryption_algorithms(r.usage).to_vec(),
                signing_algorithms: r.spec.signing_algorithms(r.usage).to_vec(),
            })
        })();
        Outcome::on(&entry, result)
    }
}

/// The Recipient member (a Nitro Enclaves attestation) of Decrypt and GenerateDataKey*.
fn no_recipient(recipient: &Option<Recipient>) -> Result<()> {
    if recipient.is_some() {
        return Err(KmsError::UnsupportedOperation(
            "Nitro Enclaves recipients are not supported".into(),
        ));
    }
    Ok(())
}

fn number_of_bytes(n: i64) -> Result<usize> {
    Ok(checks::check_range("numberOfBytes", n, 1, 1024)? as usize)
}

/// The Message of Sign, Verify, GenerateMac and VerifyMac: 1 to 4096 bytes.
fn check_message(message: &[u8]) -> Result<()> {
    checks::check_len("message", message.len(), 1, MAX_PLAINTEXT)
}
