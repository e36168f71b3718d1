//! The root key: wraps every key version before it reaches a store.

use aws_lc_rs::{hkdf, hmac};
use zeroize::Zeroizing;

use super::symmetric::{AesGcmKey, KEY_LEN};
use super::KeyMaterial;
use crate::error::{KmsError, Result};

/// Format byte of a wrapped blob: AES-256-GCM under the root key itself, blob =
/// 0x01 || nonce(12) || ciphertext || tag(16). A new format gets a new byte.
const FORMAT_V1: u8 = 0x01;

/// HKDF info for the fingerprint key, so that fingerprints never use the wrapping key itself.
const FINGERPRINT_INFO: &[u8] = b"kubekms/v1/material-fingerprint";

fn auth_failed() -> KmsError {
    KmsError::internal("stored key material failed authentication")
}

/// The root key: wraps every key version before it reaches a store. No Debug, by design.
pub struct RootKey {
    aead: AesGcmKey,
    fingerprint: hmac::Key,
    /// For keys derived for other purposes (session credentials, the audit chain), so that
    /// none of them is the wrapping key itself.
    prk: hkdf::Prk,
}

impl RootKey {
    /// 32 random bytes for a new root key, to be persisted by the caller.
    pub fn generate() -> Result<Zeroizing<Vec<u8>>> {
        super::random_bytes(KEY_LEN)
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        if bytes.len() != KEY_LEN {
            return Err(KmsError::internal(format!(
                "the root key must be {KEY_LEN} bytes"
            )));
        }
        let aead = AesGcmKey::new(bytes).map_err(|_| KmsError::internal("unusable root key"))?;
        // The root key is uniformly random, so it is a valid HKDF PRK as it stands.
        let prk = hkdf::Prk::new_less_safe(hkdf::HKDF_SHA256, bytes);
        let info = [FINGERPRINT_INFO];
        let okm = prk
            .expand(&info, hmac::HMAC_SHA256)
            .map_err(|_| KmsError::internal("fingerprint key derivation failed"))?;
        Ok(Self {
            aead,
            fingerprint: hmac::Key::from(okm),
            prk,
        })
    }

    /// An HMAC-SHA256 key for one purpose, named by `label` (`kubekms/v1/<purpose>`): the same
    /// on every replica holding this root key, and independent of every other label's.
    pub fn derive_hmac_key(&self, label: &'static [u8]) -> Result<hmac::Key> {
        let info = [label];
        let okm = self
            .prk
            .expand(&info, hmac::HMAC_SHA256)
            .map_err(|_| KmsError::internal("key derivation failed"))?;
        Ok(hmac::Key::from(okm))
    }

    /// An AES-256-GCM key for one purpose, named by `label` (see [`RootKey::derive_hmac_key`]).
    pub(crate) fn derive_aead_key(&self, label: &'static [u8]) -> Result<AesGcmKey> {
        let info = [label];
        let okm = self
            .prk
            .expand(&info, DerivedLen(KEY_LEN))
            .map_err(|_| KmsError::internal("key derivation failed"))?;
        let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
        okm.fill(&mut bytes[..])
            .map_err(|_| KmsError::internal("key derivation failed"))?;
        AesGcmKey::new(&bytes[..]).map_err(|_| KmsError::internal("key derivation failed"))
    }

    /// `aad` binds the blob to its context (key id, version), so blobs cannot be swapped.
    pub fn wrap(&self, aad: &[u8], material: &KeyMaterial) -> Result<Vec<u8>> {
        let mut out = vec![FORMAT_V1];
        self.aead
            .seal_into(&mut out, &bound_aad(aad), material.expose())?;
        Ok(out)
    }

    /// Any failure (unknown format, truncation, tampering, wrong AAD, wrong root key) is the
    /// same opaque Internal error.
    pub fn unwrap(&self, aad: &[u8], wrapped: &[u8]) -> Result<KeyMaterial> {
        match wrapped.split_first() {
            Some((&FORMAT_V1, sealed)) => self
                .aead
                .open(&bound_aad(aad), sealed)
                .map(KeyMaterial::new)
                .map_err(|_| auth_failed()),
            _ => Err(auth_failed()),
        }
    }

    /// A keyed fingerprint of material (for matching re-imports without keeping the material).
    pub fn fingerprint(&self, material: &KeyMaterial) -> Vec<u8> {
        hmac::sign(&self.fingerprint, material.expose())
            .as_ref()
            .to_vec()
    }
}

/// An HKDF output length, for keys that are not HMAC keys.
struct DerivedLen(usize);

impl hkdf::KeyType for DerivedLen {
    fn len(&self) -> usize {
        self.0
    }
}

/// The format byte goes into the AAD too, so a future format cannot be downgraded to v1.
fn bound_aad(aad: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + aad.len());
    out.push(FORMAT_V1);
    out.extend_from_slice(aad);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root() -> RootKey {
        RootKey::from_bytes(&RootKey::generate().unwrap()).unwrap()
    }

    #[test]
    fn wrap_unwrap_round_trip() {
        let r = root();
        let m = KeyMaterial::from_slice(b"0123456789abcdef0123456789abcdef");
        let w = r.wrap(b"key-1/v1", &m).unwrap();
        assert_eq!(w[0], FORMAT_V1);
        assert_eq!(w.len(), 1 + 12 + 32 + 16);
        assert!(!w.windows(8).any(|x| x == &m.expose()[..8]));
        assert_eq!(r.unwrap(b"key-1/v1", &w).unwrap().expose(), m.expose());
    }

    #[test]
    fn unwrap_failures_are_opaque() {
        let r = root();
        let m = KeyMaterial::from_slice(&[9u8; 48]);
        let w = r.wrap(b"aad", &m).unwrap();
        let expect_auth = |res: Result<KeyMaterial>| match res {
            Err(KmsError::Internal(msg)) => {
                assert_eq!(msg, "stored key material failed authentication")
            }
            Err(e) => panic!("wrong error {e}"),
            Ok(_) => panic!("tampered blob unwrapped"),
        };
        for i in 0..w.len() {
            let mut bad = w.clone();
            bad[i] ^= 0x04;
            expect_auth(r.unwrap(b"aad", &bad));
        }
        expect_auth(r.unwrap(b"other", &w));
        expect_auth(r.unwrap(b"aad", &w[..w.len() - 1]));
        expect_auth(r.unwrap(b"aad", &[]));
        expect_auth(r.unwrap(b"aad", &[FORMAT_V1]));
        expect_auth(root().unwrap(b"aad", &w));
    }

    #[test]
    fn root_key_size_enforced() {
        assert!(RootKey::from_bytes(&[0u8; 16]).is_err());
        assert!(RootKey::from_bytes(&[0u8; 33]).is_err());
    }

    #[test]
    fn derived_keys_depend_on_root_and_label() {
        let bytes = RootKey::generate().unwrap();
        let (a, b) = (
            RootKey::from_bytes(&bytes).unwrap(),
            RootKey::from_bytes(&bytes).unwrap(),
        );
        let mac = |root: &RootKey, label| {
            hmac::sign(&root.derive_hmac_key(label).unwrap(), b"x")
                .as_ref()
                .to_vec()
        };
        assert_eq!(mac(&a, b"kubekms/v1/a"), mac(&b, b"kubekms/v1/a"));
        assert_ne!(mac(&a, b"kubekms/v1/a"), mac(&a, b"kubekms/v1/b"));
        assert_ne!(mac(&a, b"kubekms/v1/a"), mac(&root(), b"kubekms/v1/a"));
        let sealed = a
            .derive_aead_key(b"kubekms/v1/s")
            .unwrap()
            .seal(b"", b"hi")
            .unwrap();
        assert_eq!(
            &b.derive_aead_key(b"kubekms/v1/s")
                .unwrap()
                .open(b"", &sealed)
                .unwrap()[..],
            b"hi"
        );
        assert!(a
            .derive_aead_key(b"kubekms/v1/t")
            .unwrap()
            .open(b"", &sealed)
            .is_err());
    }

    #[test]
    fn generated_root_keys() {
        assert_eq!(RootKey::generate().unwrap().len(), 32);
        assert_ne!(RootKey::generate().unwrap(), RootKey::generate().unwrap());
    }

    #[test]
    fn fingerprint_is_keyed_and_stable() {
        let bytes = RootKey::generate().unwrap();
        let (a, b) = (
            RootKey::from_bytes(&bytes).unwrap(),
            RootKey::from_bytes(&bytes).unwrap(),
        );
        let m = KeyMaterial::from_slice(&[1u8; 32]);
        let n = KeyMaterial::from_slice(&[2u8; 32]);
        assert_eq!(a.fingerprint(&m), b.fingerprint(&m));
        assert_eq!(a.fingerprint(&m).len(), 32);
        assert_ne!(a.fingerprint(&m), a.fingerprint(&n));
        assert_ne!(a.fingerprint(&m), root().fingerprint(&m));
        // Not a plain hash of the material, nor an HMAC under the root key itself.
        assert_ne!(
            a.fingerprint(&m),
            aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, m.expose()).as_ref()
        );
        let direct = hmac::Key::new(hmac::HMAC_SHA256, &bytes);
        assert_ne!(a.fingerprint(&m), hmac::sign(&direct, m.expose()).as_ref());
    }
}
