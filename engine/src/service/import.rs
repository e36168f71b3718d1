//! Bring-your-own key material: GetParametersForImport, ImportKeyMaterial,
//! DeleteImportedKeyMaterial, and expiry at ValidTo.
//!
//! The import token is self-contained: it carries the wrapping private key, itself wrapped under
//! the root key with the key id and the token's expiry bound in. Tokens therefore survive engine
//! restarts and work on every replica, and nothing has to be stored per request.

use std::sync::Arc;

use kubekms_proto::ops::{
    GetParametersForImportRequest, GetParametersForImportResponse, ImportKeyMaterialRequest,
    ImportKeyMaterialResponse, KeyIdRequest, KeyIdResponse,
};
use kubekms_proto::{Action, Timestamp};

use super::{attempt, Aliases, Caller, KeyEntry, Kms, Outcome, Refused};
use crate::clock::{Millis, MILLIS_PER_DAY};
use crate::crypto::{self, KeyMaterial};
use crate::error::{KmsError, Result};
use crate::model::{ExpirationModel, KeyState, OriginType, WrappingAlgorithm, WrappingKeySpec};
use crate::record::{ImportState, KeyId, RotationType};

const TOKEN_MAGIC: &[u8; 4] = b"kKit";
const TOKEN_PREFIX_LEN: usize = 4 + 8 + 1 + 1;
const TOKEN_VALIDITY: Millis = MILLIS_PER_DAY;

impl Kms {
    /// The key named by `key_id`, authorized for `action`, which must be waiting for or hold
    /// imported material.
    fn external_key(
        &self,
        caller: &Caller,
        action: Action,
        key_id: &str,
    ) -> Result<Arc<KeyEntry>, Refused> {
        let entry = self.authorized(caller, action, key_id, Aliases::Refused, None)?;
        let refused = |error| Refused {
            error,
            key: Some(entry.arn.clone()),
        };
        if entry.record.origin != OriginType::External {
            return Err(refused(KmsError::UnsupportedOperation(format!(
                "{} was not created for imported key material (Origin EXTERNAL)",
                entry.arn()
            ))));
        }
        self.require_not_pending_deletion(&entry.record)
            .map_err(refused)?;
        Ok(entry)
    }

    pub async fn get_parameters_for_import(
        &self,
        caller: &Caller,
        req: GetParametersForImportRequest,
    ) -> Outcome<GetParametersForImportResponse> {
        let alg = req.wrapping_algorithm;
        let spec = req.wrapping_key_spec;
        let entry =
            attempt!(self.external_key(caller, Action::GetParametersForImport, &req.key_id));
        let result = (|| {
            let (private, public) = crypto::import::generate_wrapping_key(&*self.keys, spec)?;
            let valid_to = self.now() + TOKEN_VALIDITY;
            let mut token = Vec::with_capacity(TOKEN_PREFIX_LEN + private.expose().len() + 64);
            token.extend_from_slice(TOKEN_MAGIC);
            token.extend_from_slice(&valid_to.to_be_bytes());
            token.push(index_of(WrappingAlgorithm::ALL, alg));
            token.push(index_of(WrappingKeySpec::ALL, spec));
            let wrapped = self
                .root
                .wrap(&token_aad(entry.record.key_id, &token), &private)?;
            token.extend_from_slice(&wrapped);
            Ok(GetParametersForImportResponse {
                key_id: entry.arn().to_owned(),
                import_token: token,
                public_key: public,
                parameters_valid_to: Timestamp(valid_to),
            })
        })();
        Outcome::on(&entry, result)
    }

    /// Open an import token for `key_id`: the wrapping private key and its algorithm.
    fn open_token(&self, key_id: KeyId, token: &[u8]) -> Result<(KeyMaterial, WrappingAlgorithm)> {
        let invalid =
            || KmsError::InvalidImportToken("The import token is invalid for this key".into());
        if token.len() <= TOKEN_PREFIX_LEN || &token[..4] != TOKEN_MAGIC {
            return Err(invalid());
        }
        let (prefix, wrapped) = token.split_at(TOKEN_PREFIX_LEN);
        let private = self
            .root
            .unwrap(&token_aad(key_id, prefix), wrapped)
            .map_err(|_| invalid())?;
        let mut valid_to = [0u8; 8];
        valid_to.copy_from_slice(&prefix[4..12]);
        if i64::from_be_bytes(valid_to) <= self.now() {
            return Err(KmsError::ExpiredImportToken(
                "The import token has expired".into(),
            ));
        }
        let alg = WrappingAlgorithm::ALL
            .get(prefix[12] as usize)
            .copied()
            .ok_or_else(invalid)?;
        Ok((private, alg))
    }

    pub async fn import_key_material(
        &self,
        caller: &Caller,
        req: ImportKeyMaterialRequest,
    ) -> Outcome<ImportKeyMaterialResponse> {
        let valid_to = req.valid_to.map(Timestamp::millis);
        let model = match (req.expiration_model, valid_to) {
            (None, Some(_)) | (Some(ExpirationModel::KeyMaterialExpires), Some(_)) => {
                ExpirationModel::KeyMaterialExpires
            }
            (None, None) | (Some(ExpirationModel::KeyMaterialDoesNotExpire), None) => {
                ExpirationModel::KeyMaterialDoesNotExpire
            }
            (Some(ExpirationModel::KeyMaterialExpires), None) => {
                return KmsError::validation("ValidTo is required when the key material expires")
                    .into()
            }
            (Some(ExpirationModel::KeyMaterialDoesNotExpire), Some(_)) => {
                return KmsError::validation(
                    "ValidTo must be omitted when ExpirationModel is KEY_MATERIAL_DOES_NOT_EXPIRE",
                )
                .into()
            }
        };
        if valid_to.is_some_and(|t| t <= self.now()) {
            return KmsError::validation("ValidTo must be in the future").into();
        }
        let entry = attempt!(self.external_key(caller, Action::ImportKeyMaterial, &req.key_id));
        let result = async {
            let (private, alg) = self.open_token(entry.record.key_id, &req.import_token)?;
            let material =
                crypto::import::unwrap_imported(&private, alg, &req.encrypted_key_material)?;
            // Validates size and type for the key spec before anything is stored; the parsed key
            // is the one published.
            let prepared = self.keys.prepare(entry.record.spec, &material)?;
            let fingerprint = self.root.fingerprint(&material);

            let (_guard, entry) = self.lock_fresh(&entry).await?;
            self.require_not_pending_deletion(&entry.record)?;
            let mut record = entry.record.clone();
            if let Some(previous) = &record.import {
                if aws_lc_rs::constant_time::verify_slices_are_equal(
                    &previous.material_fingerprint,
                    &fingerprint,
                )
                .is_err()
                {
                    return Err(KmsError::IncorrectKeyMaterial(
                        "The key material is not the material previously imported into this key"
                            .into(),
                    ));
                }
            }
            record.import = Some(ImportState {
                expiration_model: model,
                valid_to,
                material_fingerprint: fingerprint,
            });
            // The same material always comes back as version 1, so every earlier ciphertext
            // decrypts.
            record.versions.clear();
            let version = self.add_version(&mut record, &material, RotationType::Imported)?;
            if record.state == KeyState::PendingImport {
                record.state = KeyState::Enabled;
            }
            let entry = self
                .commit_key(None, record, Some((version, prepared)))
                .await?;
            Ok(ImportKeyMaterialResponse {
                key_id: entry.arn().to_owned(),
                key_material_id: format!("{version:08}"),
            })
        }
        .await;
        Outcome::on(&entry, result)
    }

    pub async fn delete_imported_key_material(
        &self,
        caller: &Caller,
        req: KeyIdRequest,
    ) -> Outcome<KeyIdResponse> {
        let entry =
            attempt!(self.external_key(caller, Action::DeleteImportedKeyMaterial, &req.key_id));
        let result = async {
            let (_guard, fresh) = self.lock_fresh(&entry).await?;
            self.expire_material(&fresh).await?;
            Ok(KeyIdResponse {
                key_id: fresh.arn().to_owned(),
            })
        }
        .await;
        Outcome::on(&entry, result)
    }

    /// Drop imported material (on request or at ValidTo): the key waits for a re-import.
    pub(super) async fn expire_material(&self, entry: &KeyEntry) -> Result<()> {
        let mut record = entry.record.clone();
        record.versions.clear();
        if record.state != KeyState::PendingDeletion {
            record.state = KeyState::PendingImport;
        }
        if let Some(import) = record.import.as_mut() {
            import.valid_to = None;
        }
        self.commit_key(Some(entry), record, None).await?;
        tracing::info!(key = %entry.arn(), "imported key material deleted");
        Ok(())
    }
}

fn token_aad(key_id: KeyId, prefix: &[u8]) -> Vec<u8> {
    let mut aad = b"kubekms-import-token:".to_vec();
    aad.extend_from_slice(key_id.to_string().as_bytes());
    aad.extend_from_slice(&prefix[..TOKEN_PREFIX_LEN.min(prefix.len())]);
    aad
}

fn index_of<T: PartialEq>(all: &[T], item: T) -> u8 {
    all.iter().position(|x| *x == item).unwrap_or(0) as u8
}
