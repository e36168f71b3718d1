//! Import support: the RSA wrapping key pair of GetParametersForImport and the unwrapping of
//! material a user wrapped with it.

use aws_lc_rs::key_wrap::{AesKek, KeyWrapPadded, AES_256};
use aws_lc_rs::rsa::{
    OaepAlgorithm, OaepPrivateDecryptingKey, PrivateDecryptingKey, OAEP_SHA1_MGF1SHA1,
    OAEP_SHA256_MGF1SHA256,
};
use zeroize::Zeroizing;

use super::{rsa, KeyMaterial, KeyProvider};
use crate::error::{KmsError, Result};
use crate::model::{KeySpec, WrappingAlgorithm, WrappingKeySpec};

/// The ephemeral key of RSA_AES_KEY_WRAP_* is AES-256.
const EPHEMERAL_KEY_LEN: usize = 32;

/// A fresh RSA wrapping key pair: (PKCS#8 DER private key, DER SubjectPublicKeyInfo).
pub fn generate_wrapping_key(
    provider: &dyn KeyProvider,
    spec: WrappingKeySpec,
) -> Result<(KeyMaterial, Vec<u8>)> {
    let key_spec = match spec {
        WrappingKeySpec::Rsa2048 => KeySpec::Rsa2048,
        WrappingKeySpec::Rsa3072 => KeySpec::Rsa3072,
        WrappingKeySpec::Rsa4096 => KeySpec::Rsa4096,
    };
    provider.key_pair(key_spec)
}

/// Unwrap material that a user wrapped with our wrapping public key.
/// Failure is InvalidCiphertext (AWS answers a bad wrap that way).
///
/// RSAES_OAEP_SHA_*: the blob is RSA-OAEP (MGF1 with the same hash, no label) of the material.
/// RSA_AES_KEY_WRAP_SHA_*: the blob is RSA-OAEP of an ephemeral AES-256 key (exactly one
/// modulus long) followed by the material under AES key wrap with padding (RFC 5649), as
/// `openssl pkeyutl -pkeyopt rsa_padding_mode:oaep` plus `openssl enc -id-aes256-wrap-pad`
/// produce it.
pub fn unwrap_imported(
    wrapping_private_key: &KeyMaterial,
    alg: WrappingAlgorithm,
    encrypted: &[u8],
) -> Result<KeyMaterial> {
    let private = PrivateDecryptingKey::from_pkcs8(wrapping_private_key.expose())
        .map_err(|_| KmsError::internal("the stored wrapping key is unusable"))?;
    let key = OaepPrivateDecryptingKey::new(private)
        .map_err(|_| KmsError::internal("the stored wrapping key is unusable"))?;
    let oaep = oaep_for(alg);
    match alg {
        WrappingAlgorithm::RsaesOaepSha1 | WrappingAlgorithm::RsaesOaepSha256 => {
            rsa::oaep_decrypt(&key, oaep, encrypted).map(KeyMaterial::new)
        }
        WrappingAlgorithm::RsaAesKeyWrapSha1 | WrappingAlgorithm::RsaAesKeyWrapSha256 => {
            let split = key.key_size_bytes();
            if encrypted.len() <= split {
                return Err(KmsError::InvalidCiphertext);
            }
            let (wrapped_key, wrapped_material) = encrypted.split_at(split);
            let ephemeral = rsa::oaep_decrypt(&key, oaep, wrapped_key)?;
            if ephemeral.len() != EPHEMERAL_KEY_LEN {
                return Err(KmsError::InvalidCiphertext);
            }
            kwp_unwrap(&ephemeral, wrapped_material).map(KeyMaterial::new)
        }
    }
}

fn oaep_for(alg: WrappingAlgorithm) -> &'static OaepAlgorithm {
    match alg {
        WrappingAlgorithm::RsaesOaepSha1 | WrappingAlgorithm::RsaAesKeyWrapSha1 => {
            &OAEP_SHA1_MGF1SHA1
        }
        WrappingAlgorithm::RsaesOaepSha256 | WrappingAlgorithm::RsaAesKeyWrapSha256 => {
            &OAEP_SHA256_MGF1SHA256
        }
    }
}

fn kwp_unwrap(kek: &[u8], wrapped: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
    let kek = AesKek::new(&AES_256, kek).map_err(|_| KmsError::InvalidCiphertext)?;
    let mut out = Zeroizing::new(vec![0u8; wrapped.len()]);
    let len = kek
        .unwrap_with_padding(wrapped, &mut out)
        .map_err(|_| KmsError::InvalidCiphertext)?
        .len();
    out.truncate(len);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::{generate_material, KeyHandle, PreparedKey};
    use crate::model::{KeyUsage, MessageType};
    use aws_lc_rs::rsa::{OaepPublicEncryptingKey, PublicEncryptingKey};

    fn oaep_encrypt(spki: &[u8], alg: &'static OaepAlgorithm, pt: &[u8]) -> Vec<u8> {
        let public =
            OaepPublicEncryptingKey::new(PublicEncryptingKey::from_der(spki).unwrap()).unwrap();
        let mut out = vec![0u8; public.ciphertext_size()];
        let n = public.encrypt(alg, pt, &mut out, None).unwrap().len();
        out.truncate(n);
        out
    }

    /// What a user does with `openssl pkeyutl` + `openssl enc -id-aes256-wrap-pad`.
    fn rsa_aes_wrap(spki: &[u8], alg: WrappingAlgorithm, material: &[u8]) -> Vec<u8> {
        let ephemeral = crate::crypto::random_bytes(32).unwrap();
        let mut blob = oaep_encrypt(spki, oaep_for(alg), &ephemeral);
        let kek = AesKek::new(&AES_256, &ephemeral).unwrap();
        let mut wrapped = vec![0u8; material.len() + 16];
        let n = kek.wrap_with_padding(material, &mut wrapped).unwrap().len();
        blob.extend_from_slice(&wrapped[..n]);
        blob
    }

    #[test]
    fn oaep_wrapped_symmetric_and_hmac_material() {
        let (private, spki) =
            generate_wrapping_key(crate::crypto::test_provider(), WrappingKeySpec::Rsa2048)
                .unwrap();
        for spec in [KeySpec::SymmetricDefault, KeySpec::Hmac512] {
            let material = generate_material(spec).unwrap();
            for (alg, oaep) in [
                (WrappingAlgorithm::RsaesOaepSha1, &OAEP_SHA1_MGF1SHA1),
                (WrappingAlgorithm::RsaesOaepSha256, &OAEP_SHA256_MGF1SHA256),
            ] {
                let blob = oaep_encrypt(&spki, oaep, material.expose());
                let got = unwrap_imported(&private, alg, &blob).unwrap();
                assert_eq!(got.expose(), material.expose());
                let mut bad = blob.clone();
                bad[0] ^= 1;
                assert!(matches!(
                    unwrap_imported(&private, alg, &bad),
                    Err(KmsError::InvalidCiphertext)
                ));
            }
            // Wrapped with SHA-1, unwrapped as SHA-256.
            let blob = oaep_encrypt(&spki, &OAEP_SHA1_MGF1SHA1, material.expose());
            assert!(matches!(
                unwrap_imported(&private, WrappingAlgorithm::RsaesOaepSha256, &blob),
                Err(KmsError::InvalidCiphertext)
            ));
        }
    }

    #[test]
    fn rsa_aes_key_wrap_of_asymmetric_material() {
        let (private, spki) =
            generate_wrapping_key(crate::crypto::test_provider(), WrappingKeySpec::Rsa3072)
                .unwrap();
        let material = generate_material(KeySpec::EccNistP384).unwrap();
        for alg in [
            WrappingAlgorithm::RsaAesKeyWrapSha1,
            WrappingAlgorithm::RsaAesKeyWrapSha256,
        ] {
            let blob = rsa_aes_wrap(&spki, alg, material.expose());
            assert!(blob.len() > 384);
            let got = unwrap_imported(&private, alg, &blob).unwrap();
            assert_eq!(got.expose(), material.expose());
            let key = PreparedKey::new(KeySpec::EccNistP384, &got).unwrap();
            let a = KeySpec::EccNistP384.signing_algorithms(KeyUsage::SignVerify)[0];
            let sig = key.sign(a, MessageType::Raw, b"imported").unwrap();
            assert!(key.verify(a, MessageType::Raw, b"imported", &sig).unwrap());

            for i in [0, 383, 384, blob.len() - 1] {
                let mut bad = blob.clone();
                bad[i] ^= 0x10;
                assert!(matches!(
                    unwrap_imported(&private, alg, &bad),
                    Err(KmsError::InvalidCiphertext)
                ));
            }
            for bad in [&blob[..384], &blob[..blob.len() - 8], &blob[..100]] {
                assert!(matches!(
                    unwrap_imported(&private, alg, bad),
                    Err(KmsError::InvalidCiphertext)
                ));
            }
        }
        // Non-multiple-of-8 material (a 28-byte HMAC_224 key) exercises the RFC 5649 padding.
        let hmac = generate_material(KeySpec::Hmac224).unwrap();
        let blob = rsa_aes_wrap(&spki, WrappingAlgorithm::RsaAesKeyWrapSha256, hmac.expose());
        let got = unwrap_imported(&private, WrappingAlgorithm::RsaAesKeyWrapSha256, &blob).unwrap();
        assert_eq!(got.expose(), hmac.expose());
        assert!(matches!(
            unwrap_imported(&private, WrappingAlgorithm::RsaAesKeyWrapSha1, &blob),
            Err(KmsError::InvalidCiphertext)
        ));
    }

    #[test]
    fn rsa_aes_key_wrap_rejects_a_non_aes256_ephemeral_key() {
        let (private, spki) =
            generate_wrapping_key(crate::crypto::test_provider(), WrappingKeySpec::Rsa2048)
                .unwrap();
        let mut blob = oaep_encrypt(&spki, &OAEP_SHA256_MGF1SHA256, &[7u8; 16]);
        blob.extend_from_slice(&[0u8; 40]);
        assert!(matches!(
            unwrap_imported(&private, WrappingAlgorithm::RsaAesKeyWrapSha256, &blob),
            Err(KmsError::InvalidCiphertext)
        ));
    }

    #[test]
    fn wrapping_key_is_rsa_of_the_right_size() {
        for (spec, bits) in [
            (WrappingKeySpec::Rsa2048, 2048),
            (WrappingKeySpec::Rsa4096, 4096),
        ] {
            let (private, spki) =
                generate_wrapping_key(crate::crypto::test_provider(), spec).unwrap();
            let public = PublicEncryptingKey::from_der(&spki).unwrap();
            assert_eq!(public.key_size_bits(), bits);
            assert_eq!(
                PrivateDecryptingKey::from_pkcs8(private.expose())
                    .unwrap()
                    .key_size_bits(),
                bits
            );
        }
    }
}
