//! Bring-your-own key material: GetParametersForImport, ImportKeyMaterial,
//! DeleteImportedKeyMaterial, and expiry at ValidTo.
//!
//! The import token is self-contained: it carries the wrapping private key, itself wrapped under
//! the root key with the key id and the token's expiry bound in. Tokens therefore survive engine
//! restarts and work on every replica, and nothing has to be stored per request.

use serde::Deserialize;

use super::crypto_ops::base64_encode;
use super::wire::{decode, encode, parse_enum, parse_opt_enum, Blob};
use super::{KeyEntry, Kms, RequestContext};
use crate::clock::{to_epoch_seconds, Millis, MILLIS_PER_DAY};
use crate::crypto::{self, KeyMaterial, PreparedKey};
use crate::error::{KmsError, Result};
use crate::model::{ExpirationModel, KeyState, OriginType, WrappingAlgorithm, WrappingKeySpec};
use crate::record::{ImportState, RotationType};

const TOKEN_MAGIC: &[u8; 4] = b"kKit";
const TOKEN_PREFIX_LEN: usize = 4 + 8 + 1 + 1;
const TOKEN_VALIDITY: Millis = MILLIS_PER_DAY;

impl Kms {
    fn external_key(
        &self,
        ctx: &RequestContext,
        key_id: &str,
        touched: &mut Option<String>,
    ) -> Result<std::sync::Arc<KeyEntry>> {
        let entry = self.resolve_touched(ctx, key_id, false, touched)?;
        if entry.record.origin != OriginType::External {
            return Err(KmsError::UnsupportedOperation(format!(
                "{} was not created for imported key material (Origin EXTERNAL)",
                entry.arn()
            )));
        }
        self.require_not_pending_deletion(&entry.record)?;
        Ok(entry)
    }

    pub(super) fn get_parameters_for_import(
        &self,
        ctx: &RequestContext,
        body: &[u8],
        touched: &mut Option<String>,
    ) -> Result<Vec<u8>> {
        #[derive(Deserialize)]
        #[serde(rename_all = "PascalCase")]
        struct Req {
            key_id: String,
            wrapping_algorithm: String,
            wrapping_key_spec: String,
        }
        let req: Req = decode(body)?;
        let alg = parse_enum::<WrappingAlgorithm>(&req.wrapping_algorithm, "wrappingAlgorithm")?;
        let spec = parse_enum::<WrappingKeySpec>(&req.wrapping_key_spec, "wrappingKeySpec")?;
        let entry = self.external_key(ctx, &req.key_id, touched)?;
        let (private, public) = crypto::import::generate_wrapping_key(spec)?;
        let valid_to = self.now() + TOKEN_VALIDITY;
        let mut token = Vec::with_capacity(TOKEN_PREFIX_LEN + private.expose().len() + 64);
        token.extend_from_slice(TOKEN_MAGIC);
        token.extend_from_slice(&valid_to.to_be_bytes());
        token.push(index_of(WrappingAlgorithm::ALL, alg));
        token.push(index_of(WrappingKeySpec::ALL, spec));
        let wrapped = self
            .root
            .wrap(&token_aad(&entry.record.key_id, &token), &private)?;
        token.extend_from_slice(&wrapped);
        encode(&serde_json::json!({
            "KeyId": entry.arn(),
            "ImportToken": base64_encode(&token),
            "PublicKey": base64_encode(&public),
            "ParametersValidTo": to_epoch_seconds(valid_to),
        }))
    }

    /// Open an import token for `key_id`: the wrapping private key and its algorithm.
    fn open_token(&self, key_id: &str, token: &[u8]) -> Result<(KeyMaterial, WrappingAlgorithm)> {
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

    pub(super) async fn import_key_material(
        &self,
        ctx: &RequestContext,
        body: &[u8],
        touched: &mut Option<String>,
    ) -> Result<Vec<u8>> {
        #[derive(Deserialize)]
        #[serde(rename_all = "PascalCase")]
        struct Req {
            key_id: String,
            import_token: Blob,
            encrypted_key_material: Blob,
            valid_to: Option<f64>,
            expiration_model: Option<String>,
        }
        let req: Req = decode(body)?;
        let token = req.import_token.decode("ImportToken")?;
        let encrypted = req.encrypted_key_material.decode("EncryptedKeyMaterial")?;
        let model = parse_opt_enum::<ExpirationModel>(&req.expiration_model, "expirationModel")?;
        let valid_to = req.valid_to.map(|secs| (secs * 1000.0) as Millis);
        let model = match (model, valid_to) {
            (None, Some(_)) | (Some(ExpirationModel::KeyMaterialExpires), Some(_)) => {
                ExpirationModel::KeyMaterialExpires
            }
            (None, None) | (Some(ExpirationModel::KeyMaterialDoesNotExpire), None) => {
                ExpirationModel::KeyMaterialDoesNotExpire
            }
            (Some(ExpirationModel::KeyMaterialExpires), None) => {
                return Err(KmsError::validation(
                    "ValidTo is required when the key material expires",
                ))
            }
            (Some(ExpirationModel::KeyMaterialDoesNotExpire), Some(_)) => {
                return Err(KmsError::validation(
                    "ValidTo must be omitted when ExpirationModel is KEY_MATERIAL_DOES_NOT_EXPIRE",
                ))
            }
        };
        if valid_to.is_some_and(|t| t <= self.now()) {
            return Err(KmsError::validation("ValidTo must be in the future"));
        }
        let entry = self.external_key(ctx, &req.key_id, touched)?;
        let (private, alg) = self.open_token(&entry.record.key_id, &token)?;
        let material = crypto::import::unwrap_imported(&private, alg, &encrypted)?;
        // Validates size and type for the key spec before anything is stored; the parsed key is
        // the one published.
        let prepared = PreparedKey::new(entry.record.spec, &material)?;
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
                    "The key material is not the material previously imported into this key".into(),
                ));
            }
        }
        record.import = Some(ImportState {
            expiration_model: model,
            valid_to,
            material_fingerprint: fingerprint,
        });
        // The same material always comes back as version 1, so every earlier ciphertext decrypts.
        record.versions.clear();
        let version = self.add_version(&mut record, &material, RotationType::Imported)?;
        if record.state == KeyState::PendingImport {
            record.state = KeyState::Enabled;
        }
        let entry = self
            .commit_key(None, record, Some((version, prepared)))
            .await?;
        encode(
            &serde_json::json!({ "KeyId": entry.arn(), "KeyMaterialId": format!("{version:08}") }),
        )
    }

    pub(super) async fn delete_imported_key_material(
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
        let entry = self.external_key(ctx, &req.key_id, touched)?;
        let (_guard, entry) = self.lock_fresh(&entry).await?;
        self.expire_material(&entry).await?;
        encode(&serde_json::json!({ "KeyId": entry.arn() }))
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

fn token_aad(key_id: &str, prefix: &[u8]) -> Vec<u8> {
    let mut aad = b"kubekms-import-token:".to_vec();
    aad.extend_from_slice(key_id.as_bytes());
    aad.extend_from_slice(&prefix[..TOKEN_PREFIX_LEN.min(prefix.len())]);
    aad
}

fn index_of<T: PartialEq>(all: &[T], item: T) -> u8 {
    all.iter().position(|x| *x == item).unwrap_or(0) as u8
}
