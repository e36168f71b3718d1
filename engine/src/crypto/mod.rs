//! Crypto, grouped by family. Everything that touches key material lives below this module.
//! INTERFACE STUB: the crypto helper replaces the bodies.

use zeroize::Zeroizing;

use crate::error::{KmsError, Result};
use crate::model::{EncryptionAlgorithm, KeySpec, MacAlgorithm, MessageType, SigningAlgorithm};

/// Raw key material: 32 bytes for SYMMETRIC_DEFAULT, the key bytes for HMAC, PKCS#8 DER for
/// RSA and ECC. Zeroized on drop; deliberately no Debug, Clone-on-purpose only.
pub struct KeyMaterial(Zeroizing<Vec<u8>>);

impl KeyMaterial {
    pub fn new(bytes: Zeroizing<Vec<u8>>) -> Self {
        Self(bytes)
    }
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

/// Generate fresh material for a key spec.
pub fn generate_material(_spec: KeySpec) -> Result<KeyMaterial> {
    Err(KmsError::internal("crypto not built yet"))
}

/// Cryptographically random bytes.
pub fn random_bytes(_n: usize) -> Result<Zeroizing<Vec<u8>>> {
    Err(KmsError::internal("crypto not built yet"))
}

/// A key version parsed once and cached, ready for use.
pub struct PreparedKey {
    spec: KeySpec,
}

impl PreparedKey {
    /// Parse and validate material for a spec (rejects material of the wrong size/type with
    /// IncorrectKeyMaterial).
    pub fn new(spec: KeySpec, _material: &KeyMaterial) -> Result<Self> {
        Ok(Self { spec })
    }
    pub fn spec(&self) -> KeySpec {
        self.spec
    }
    /// AES-256-GCM; returns nonce || ciphertext || tag.
    pub fn seal(&self, _aad: &[u8], _plaintext: &[u8]) -> Result<Vec<u8>> {
        Err(KmsError::internal("crypto not built yet"))
    }
    /// Inverse of seal; any failure is InvalidCiphertext.
    pub fn open(&self, _aad: &[u8], _sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        Err(KmsError::InvalidCiphertext)
    }
    pub fn max_rsa_plaintext(&self, _alg: EncryptionAlgorithm) -> Option<usize> {
        None
    }
    pub fn rsa_encrypt(&self, _alg: EncryptionAlgorithm, _plaintext: &[u8]) -> Result<Vec<u8>> {
        Err(KmsError::internal("crypto not built yet"))
    }
    pub fn rsa_decrypt(
        &self,
        _alg: EncryptionAlgorithm,
        _ciphertext: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>> {
        Err(KmsError::InvalidCiphertext)
    }
    pub fn sign(&self, _alg: SigningAlgorithm, _mt: MessageType, _msg: &[u8]) -> Result<Vec<u8>> {
        Err(KmsError::internal("crypto not built yet"))
    }
    pub fn verify(
        &self,
        _alg: SigningAlgorithm,
        _mt: MessageType,
        _msg: &[u8],
        _sig: &[u8],
    ) -> Result<bool> {
        Err(KmsError::internal("crypto not built yet"))
    }
    pub fn generate_mac(&self, _alg: MacAlgorithm, _msg: &[u8]) -> Result<Vec<u8>> {
        Err(KmsError::internal("crypto not built yet"))
    }
    pub fn verify_mac(&self, _alg: MacAlgorithm, _msg: &[u8], _mac: &[u8]) -> Result<bool> {
        Err(KmsError::internal("crypto not built yet"))
    }
    /// DER SubjectPublicKeyInfo, for asymmetric keys.
    pub fn public_key_der(&self) -> Result<Vec<u8>> {
        Err(KmsError::internal("crypto not built yet"))
    }
}

/// A fresh data key pair: (PKCS#8 DER private key, DER SubjectPublicKeyInfo public key).
/// RSA pairs come from a pool that background threads keep full.
pub fn generate_data_key_pair(_spec: KeySpec) -> Result<(KeyMaterial, Vec<u8>)> {
    Err(KmsError::internal("crypto not built yet"))
}

/// The root key: wraps every key version before it reaches a store.
pub struct RootKey {
    _private: (),
}

impl RootKey {
    pub fn from_bytes(_bytes: &[u8]) -> Result<Self> {
        Ok(Self { _private: () })
    }
    pub fn wrap(&self, _aad: &[u8], _material: &KeyMaterial) -> Result<Vec<u8>> {
        Err(KmsError::internal("crypto not built yet"))
    }
    pub fn unwrap(&self, _aad: &[u8], _wrapped: &[u8]) -> Result<KeyMaterial> {
        Err(KmsError::internal("crypto not built yet"))
    }
    /// A keyed fingerprint of material (for matching re-imports without keeping the material).
    pub fn fingerprint(&self, _material: &KeyMaterial) -> Vec<u8> {
        Vec::new()
    }
}

/// Import support: the RSA wrapping key pair of GetParametersForImport.
pub mod import {
    use super::KeyMaterial;
    use crate::error::{KmsError, Result};
    use crate::model::{WrappingAlgorithm, WrappingKeySpec};

    /// A fresh RSA wrapping key pair: (PKCS#8 DER private key, DER SubjectPublicKeyInfo).
    pub fn generate_wrapping_key(_spec: WrappingKeySpec) -> Result<(KeyMaterial, Vec<u8>)> {
        Err(KmsError::internal("crypto not built yet"))
    }

    /// Unwrap material that a user wrapped with our wrapping public key.
    /// Failure is InvalidCiphertext (AWS answers a bad wrap that way).
    pub fn unwrap_imported(
        _wrapping_private_key: &KeyMaterial,
        _alg: WrappingAlgorithm,
        _encrypted: &[u8],
    ) -> Result<KeyMaterial> {
        Err(KmsError::InvalidCiphertext)
    }
}
