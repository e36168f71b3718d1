//! Serde forms of the AWS JSON 1.1 protocol that plain derives do not give: blobs as base64
//! (secret ones decoded straight into zeroizing memory) and timestamps as epoch seconds.

use std::fmt;

use ::base64::engine::general_purpose::STANDARD as B64;
use ::base64::Engine as _;
use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};
use zeroize::Zeroizing;

/// What a base64 error says once serde has carried it; a transport recognises it by this text.
pub const NOT_BASE64: &str = "is not valid base64";

/// A point in time in milliseconds since the Unix epoch; on the wire, fractional epoch seconds
/// (as botocore's `timestamp` shape in JSON protocols).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub i64);

impl Timestamp {
    pub fn millis(self) -> i64 {
        self.0
    }

    pub fn epoch_seconds(self) -> f64 {
        self.0 as f64 / 1000.0
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(self.epoch_seconds())
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let secs = f64::deserialize(d)?;
        if !secs.is_finite() {
            return Err(de::Error::custom("a timestamp must be a finite number"));
        }
        // Saturating: a date beyond the range of i64 milliseconds is simply far away.
        Ok(Timestamp((secs * 1000.0) as i64))
    }
}

/// Decodes a base64 string into a buffer chosen by the caller.
struct Base64Visitor<F>(F);

impl<T, F: FnOnce(&str) -> Option<T>> Visitor<'_> for Base64Visitor<F> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a base64 string")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
        (self.0)(v).ok_or_else(|| E::custom(NOT_BASE64))
    }
}

/// `#[serde(with = "base64")]` for `Vec<u8>` blobs that carry no secret (ciphertexts,
/// signatures, public keys, import tokens).
pub mod base64 {
    use super::*;

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        // Ciphertexts of small plaintexts (the common case) are encoded on the stack.
        let mut buf = [0u8; 1024];
        let on_stack = B64
            .encode_slice(bytes, &mut buf)
            .ok()
            .and_then(|n| std::str::from_utf8(&buf[..n]).ok());
        match on_stack {
            Some(text) => s.serialize_str(text),
            None => s.serialize_str(&B64.encode(bytes)),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        d.deserialize_str(Base64Visitor(|v: &str| B64.decode(v).ok()))
    }
}

/// `#[serde(with = "secret_base64")]` for plaintext and key material: decoded straight into
/// zeroizing memory, encoded through a zeroizing buffer.
pub mod secret_base64 {
    use super::*;

    pub fn serialize<S: Serializer>(bytes: &Zeroizing<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        serialize_bytes(bytes, s)
    }

    pub(crate) fn serialize_bytes<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        let text = Zeroizing::new(B64.encode(bytes));
        s.serialize_str(&text)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Zeroizing<Vec<u8>>, D::Error> {
        d.deserialize_str(Base64Visitor(|v: &str| {
            let mut out = Zeroizing::new(Vec::with_capacity(v.len() * 3 / 4 + 3));
            B64.decode_vec(v.as_bytes(), &mut out).ok().map(|_| out)
        }))
    }
}

/// [`secret_base64`] for an optional member (absent, not `null`, when `None`).
pub mod opt_secret_base64 {
    use super::*;

    pub fn serialize<S: Serializer>(
        bytes: &Option<Zeroizing<Vec<u8>>>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match bytes {
            Some(b) => secret_base64::serialize_bytes(b, s),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Zeroizing<Vec<u8>>>, D::Error> {
        #[derive(Deserialize)]
        #[serde(transparent)]
        struct Secret(#[serde(with = "secret_base64")] Zeroizing<Vec<u8>>);
        Ok(Option::<Secret>::deserialize(d)?.map(|s| s.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize, Deserialize)]
    struct Blobs {
        #[serde(with = "base64")]
        plain: Vec<u8>,
        #[serde(with = "secret_base64")]
        secret: Zeroizing<Vec<u8>>,
        #[serde(
            with = "opt_secret_base64",
            default,
            skip_serializing_if = "Option::is_none"
        )]
        maybe: Option<Zeroizing<Vec<u8>>>,
        at: Timestamp,
    }

    #[test]
    fn blobs_and_timestamps_round_trip() {
        let json = r#"{"plain":"aGVsbG8=","secret":"c2VjcmV0","at":1700000000.5}"#;
        let b: Blobs = serde_json::from_str(json).unwrap();
        assert_eq!(b.plain, b"hello");
        assert_eq!(&b.secret[..], b"secret");
        assert!(b.maybe.is_none());
        assert_eq!(b.at, Timestamp(1_700_000_000_500));
        assert_eq!(serde_json::to_string(&b).unwrap(), json);
    }

    #[test]
    fn blobs_of_every_size_round_trip_on_the_stack_or_off_it() {
        // 768 bytes make exactly 1,024 characters, the stack buffer's size.
        for len in [0, 1, 2, 3, 767, 768, 769, 5_000] {
            let plain: Vec<u8> = (0..len).map(|i| (i * 7 % 256) as u8).collect();
            let b = Blobs {
                plain: plain.clone(),
                secret: Zeroizing::new(Vec::new()),
                maybe: None,
                at: Timestamp(0),
            };
            let json = serde_json::to_string(&b).unwrap();
            assert!(json.contains(&B64.encode(&plain)), "{len}");
            let back: Blobs = serde_json::from_str(&json).unwrap();
            assert_eq!(back.plain, plain, "{len}");
        }
    }

    #[test]
    fn bad_base64_is_named_without_the_value() {
        let json = r#"{"plain":"not base64!","secret":"c2VjcmV0","at":1}"#;
        let err = serde_json::from_str::<Blobs>(json)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains(NOT_BASE64), "{err}");
        assert!(!err.contains("not base64!"), "{err}");
    }
}
