//! The symmetric ciphertext blob: self-describing, so Decrypt needs no KeyId and every earlier key
//! version keeps decrypting after rotation.
//!
//! ```text
//! offset  size  field
//! 0       2     magic "kK"
//! 2       1     format version (1)
//! 3       16    key id (UUID bytes)
//! 19      4     key material version (big endian)
//! 23      ..    AES-256-GCM output: nonce (12) || ciphertext || tag (16)
//! ```
//!
//! The header and the canonical encoding of the encryption context are the GCM associated data,
//! so a changed header, a different key or version, or a different context all fail the tag.

use std::collections::BTreeMap;

use uuid::Uuid;

use crate::error::{KmsError, Result};

const MAGIC: &[u8; 2] = b"kK";
const FORMAT_V1: u8 = 1;
pub const HEADER_LEN: usize = 2 + 1 + 16 + 4;
/// Nonce and tag that AES-GCM adds around the ciphertext.
pub const GCM_OVERHEAD: usize = 12 + 16;

/// The parsed header of a blob.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlobHeader {
    pub key_id: Uuid,
    pub version: u32,
}

impl BlobHeader {
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        out[0..2].copy_from_slice(MAGIC);
        out[2] = FORMAT_V1;
        out[3..19].copy_from_slice(self.key_id.as_bytes());
        out[19..23].copy_from_slice(&self.version.to_be_bytes());
        out
    }

    /// Split a blob into its header and the sealed part. Anything malformed is
    /// InvalidCiphertext, with no detail (no oracle).
    pub fn parse(blob: &[u8]) -> Result<(Self, &[u8])> {
        if blob.len() < HEADER_LEN + GCM_OVERHEAD || &blob[0..2] != MAGIC || blob[2] != FORMAT_V1 {
            return Err(KmsError::InvalidCiphertext);
        }
        let key_id = Uuid::from_slice(&blob[3..19]).map_err(|_| KmsError::InvalidCiphertext)?;
        let mut version = [0u8; 4];
        version.copy_from_slice(&blob[19..23]);
        Ok((
            Self {
                key_id,
                version: u32::from_be_bytes(version),
            },
            &blob[HEADER_LEN..],
        ))
    }

    /// Associated data: the header, then the encryption context.
    pub fn aad(&self, context: &EncryptionContext) -> Vec<u8> {
        let mut aad = Vec::with_capacity(HEADER_LEN + context.encoded_len());
        aad.extend_from_slice(&self.encode());
        context.encode_into(&mut aad);
        aad
    }
}

/// Does this look like one of our symmetric blobs? (Asymmetric ciphertexts are raw RSA output.)
pub fn looks_symmetric(blob: &[u8]) -> bool {
    blob.len() >= HEADER_LEN + GCM_OVERHEAD && &blob[0..2] == MAGIC
}

/// An encryption context: exact, case-sensitive key/value pairs, order-independent.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EncryptionContext(BTreeMap<String, String>);

impl EncryptionContext {
    pub fn new(pairs: BTreeMap<String, String>) -> Self {
        Self(pairs)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }

    fn encoded_len(&self) -> usize {
        4 + self
            .0
            .iter()
            .map(|(k, v)| 8 + k.len() + v.len())
            .sum::<usize>()
    }

    /// Length-prefixed, sorted by key: unambiguous, so no two contexts encode alike.
    fn encode_into(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&(self.0.len() as u32).to_be_bytes());
        for (k, v) in &self.0 {
            out.extend_from_slice(&(k.len() as u32).to_be_bytes());
            out.extend_from_slice(k.as_bytes());
            out.extend_from_slice(&(v.len() as u32).to_be_bytes());
            out.extend_from_slice(v.as_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(pairs: &[(&str, &str)]) -> EncryptionContext {
        EncryptionContext::new(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn header_round_trips() {
        let header = BlobHeader {
            key_id: Uuid::new_v4(),
            version: 7,
        };
        let mut blob = header.encode().to_vec();
        blob.extend_from_slice(&[0u8; GCM_OVERHEAD]);
        let (parsed, rest) = BlobHeader::parse(&blob).unwrap();
        assert_eq!(parsed, header);
        assert_eq!(rest.len(), GCM_OVERHEAD);
        assert!(looks_symmetric(&blob));
    }

    #[test]
    fn malformed_blobs_are_invalid_ciphertext() {
        let header = BlobHeader {
            key_id: Uuid::new_v4(),
            version: 1,
        };
        let mut blob = header.encode().to_vec();
        blob.extend_from_slice(&[0u8; GCM_OVERHEAD]);
        for bad in [
            &blob[..HEADER_LEN + GCM_OVERHEAD - 1],
            &[][..],
            &[b'x'; 64][..],
        ] {
            assert!(matches!(
                BlobHeader::parse(bad),
                Err(KmsError::InvalidCiphertext)
            ));
        }
        let mut wrong_format = blob.clone();
        wrong_format[2] = 9;
        assert!(matches!(
            BlobHeader::parse(&wrong_format),
            Err(KmsError::InvalidCiphertext)
        ));
    }

    #[test]
    fn context_encoding_is_unambiguous_and_case_sensitive() {
        let h = BlobHeader {
            key_id: Uuid::nil(),
            version: 1,
        };
        let a = h.aad(&ctx(&[("ab", "c")]));
        let b = h.aad(&ctx(&[("a", "bc")]));
        let c = h.aad(&ctx(&[("AB", "c")]));
        assert_ne!(a, b);
        assert_ne!(a, c);
        // Order of insertion does not matter.
        assert_eq!(
            h.aad(&ctx(&[("x", "1"), ("y", "2")])),
            h.aad(&ctx(&[("y", "2"), ("x", "1")]))
        );
        assert_ne!(h.aad(&ctx(&[])), h.aad(&ctx(&[("", "")])));
    }
}
