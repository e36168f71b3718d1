//! Key backends behind one seam, in the style of rustls's `CryptoProvider`: the engine asks a
//! [`KeyProvider`] for new material and for a [`KeyHandle`] to use a stored version, and never
//! looks inside either. The default, [`AwsLcProvider`], keeps keys in this process and does the
//! crypto with aws-lc-rs; a backend that keeps keys elsewhere (a PKCS#11 HSM, an external key
//! manager) hands out a reference as the "material" (which the engine wraps and stores like any
//! other) and does the operations itself, so the key never enters the engine's memory.

use std::sync::Arc;

use zeroize::Zeroizing;

use super::pool::{self, RsaPool};
use super::{ecc, hmac, random_bytes, symmetric, KeyMaterial, PreparedKey};
use crate::error::{KmsError, Result};
use crate::model::{EncryptionAlgorithm, KeySpec, MacAlgorithm, MessageType, SigningAlgorithm};

/// Where key material comes from and where it is used.
pub trait KeyProvider: Send + Sync + 'static {
    /// New material for a key (or a new version of one) of `spec`: the key itself, or for a
    /// backend that keeps its keys, a reference to the key it made.
    fn generate(&self, spec: KeySpec) -> Result<KeyMaterial>;

    /// Stored (or imported) material made ready for use. Wrong material for the spec is
    /// `IncorrectKeyMaterial`.
    fn prepare(&self, spec: KeySpec, material: &KeyMaterial) -> Result<Arc<dyn KeyHandle>>;

    /// A key pair handed out whole (GenerateDataKeyPair, an import's wrapping key): PKCS#8 DER
    /// private key and DER SubjectPublicKeyInfo.
    fn key_pair(&self, spec: KeySpec) -> Result<(KeyMaterial, Vec<u8>)>;

    /// Keep `count` RSA_2048 key pairs ready, so a burst of GenerateDataKeyPair does not wait
    /// on generation. Nothing to do for a backend where generation is cheap.
    fn prewarm_key_pairs(&self, _count: usize) -> Result<()> {
        Ok(())
    }
}

/// One key version, ready for use. A backend implements the families it supports; the rest
/// answer that the operation is not supported for the key.
pub trait KeyHandle: Send + Sync {
    fn spec(&self) -> KeySpec;

    /// AES-256-GCM, nonce || ciphertext || tag appended to `out`.
    fn seal_into(&self, _out: &mut Vec<u8>, _aad: &[u8], _plaintext: &[u8]) -> Result<()> {
        Err(unsupported(self.spec(), "symmetric encryption"))
    }

    /// Inverse of `seal_into`; any failure is InvalidCiphertext.
    fn open(&self, _aad: &[u8], _sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        Err(unsupported(self.spec(), "symmetric decryption"))
    }

    /// The largest plaintext AWS accepts for RSA encryption with `alg` (None for non-RSA keys).
    fn max_rsa_plaintext(&self, _alg: EncryptionAlgorithm) -> Option<usize> {
        None
    }

    fn rsa_encrypt(&self, alg: EncryptionAlgorithm, _plaintext: &[u8]) -> Result<Vec<u8>> {
        Err(unsupported(self.spec(), alg.as_str()))
    }

    fn rsa_decrypt(
        &self,
        alg: EncryptionAlgorithm,
        _ciphertext: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>> {
        Err(unsupported(self.spec(), alg.as_str()))
    }

    fn sign(&self, _alg: SigningAlgorithm, _mt: MessageType, _msg: &[u8]) -> Result<Vec<u8>> {
        Err(unsupported(self.spec(), "signing"))
    }

    /// Ok(false) when the signature does not verify; errors only for bad requests.
    fn verify(
        &self,
        _alg: SigningAlgorithm,
        _mt: MessageType,
        _msg: &[u8],
        _sig: &[u8],
    ) -> Result<bool> {
        Err(unsupported(self.spec(), "signature verification"))
    }

    fn generate_mac(&self, alg: MacAlgorithm, _msg: &[u8]) -> Result<Vec<u8>> {
        Err(unsupported(self.spec(), alg.as_str()))
    }

    /// Compares in constant time; Ok(false) when the MAC does not match.
    fn verify_mac(&self, alg: MacAlgorithm, _msg: &[u8], _mac: &[u8]) -> Result<bool> {
        Err(unsupported(self.spec(), alg.as_str()))
    }

    /// DER SubjectPublicKeyInfo, for asymmetric keys.
    fn public_key_der(&self) -> Result<Vec<u8>> {
        Err(KmsError::UnsupportedOperation(format!(
            "a key with key spec {} has no public key",
            self.spec()
        )))
    }
}

fn unsupported(spec: KeySpec, what: &str) -> KmsError {
    KmsError::InvalidKeyUsage(format!(
        "{what} is not supported for a key with key spec {spec}"
    ))
}

/// The default backend: keys in this process, crypto by aws-lc-rs. RSA key pairs come from a
/// pool this provider owns, which background threads keep full once a size is first used.
pub struct AwsLcProvider {
    rsa_pool: RsaPool,
}

impl AwsLcProvider {
    pub fn new() -> Self {
        Self {
            rsa_pool: RsaPool::new(pool::TARGET),
        }
    }
}

impl Default for AwsLcProvider {
    fn default() -> Self {
        Self::new()
    }
}

impl KeyProvider for AwsLcProvider {
    fn generate(&self, spec: KeySpec) -> Result<KeyMaterial> {
        match spec {
            KeySpec::SymmetricDefault => random_bytes(symmetric::KEY_LEN).map(KeyMaterial::new),
            s if s.is_hmac() => random_bytes(hmac::generated_len(s)).map(KeyMaterial::new),
            s if s.is_rsa() => Ok(KeyMaterial::new(self.rsa_pool.take(s)?.private)),
            s => Ok(KeyMaterial::new(ecc::generate(s)?.private)),
        }
    }

    fn prepare(&self, spec: KeySpec, material: &KeyMaterial) -> Result<Arc<dyn KeyHandle>> {
        Ok(Arc::new(PreparedKey::new(spec, material)?))
    }

    fn key_pair(&self, spec: KeySpec) -> Result<(KeyMaterial, Vec<u8>)> {
        let pair = if spec.is_rsa() {
            self.rsa_pool.take(spec)?
        } else if spec.is_ecc() {
            ecc::generate(spec)?
        } else {
            return Err(KmsError::validation(format!(
                "{spec} is not a valid key pair spec"
            )));
        };
        Ok((KeyMaterial::new(pair.private), pair.public))
    }

    fn prewarm_key_pairs(&self, count: usize) -> Result<()> {
        self.rsa_pool.fill(KeySpec::Rsa2048, count)
    }
}
