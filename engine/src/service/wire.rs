//! Helpers for the JSON 1.1 bodies: decoding with AWS-style validation messages that never echo
//! a submitted value (it might be plaintext), base64 blobs, enums and pagination markers.

use std::collections::BTreeMap;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize, Serializer};
use zeroize::Zeroizing;

use crate::blob::EncryptionContext;
use crate::error::{KmsError, Result};
use crate::model::AwsEnum;

/// Decode a request body. Malformed JSON is a SerializationException; a missing or mistyped
/// field is a ValidationException naming the field but not its value.
pub fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T> {
    let body = if body.is_empty() { &b"{}"[..] } else { body };
    serde_json::from_slice(body).map_err(|e| {
        use serde_json::error::Category;
        match e.classify() {
            Category::Syntax | Category::Eof | Category::Io => {
                KmsError::SerializationFailure("The request body is not valid JSON".into())
            }
            Category::Data => {
                let text = e.to_string();
                // serde names the field in "missing field `X`"; other data errors may quote the
                // value, so only the position is reported.
                let detail = match text.find("missing field") {
                    Some(i) => text[i..].split(" at line").next().unwrap_or("").to_string(),
                    None => format!(
                        "a value has the wrong type (line {}, column {})",
                        e.line(),
                        e.column()
                    ),
                };
                KmsError::Validation(format!("1 validation error detected: {detail}"))
            }
        }
    })
}

pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(value).map_err(|_| KmsError::internal("failed to encode the response"))
}

/// A base64 blob in a request. Plaintext-bearing fields use [`SecretBlob`] instead.
#[derive(Default, Deserialize)]
#[serde(transparent)]
pub struct Blob(String);

impl Blob {
    pub fn decode(&self, field: &str) -> Result<Vec<u8>> {
        B64.decode(self.0.as_bytes())
            .map_err(|_| KmsError::Validation(format!("'{field}' is not valid base64")))
    }
}

/// A base64 field that carries plaintext or key material: decoded straight into zeroizing memory.
#[derive(Deserialize)]
#[serde(transparent)]
pub struct SecretBlob(Zeroizing<String>);

impl SecretBlob {
    pub fn decode(&self, field: &str) -> Result<Zeroizing<Vec<u8>>> {
        let mut out = Zeroizing::new(Vec::with_capacity(self.0.len() * 3 / 4 + 3));
        B64.decode_vec(self.0.as_bytes(), &mut out)
            .map_err(|_| KmsError::Validation(format!("'{field}' is not valid base64")))?;
        Ok(out)
    }
}

/// Serialize bytes as base64.
pub fn b64<S: Serializer>(bytes: &[u8], s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(&B64.encode(bytes))
}

/// Serialize secret bytes as base64 through a zeroizing buffer.
pub fn b64_secret<S: Serializer>(bytes: &[u8], s: S) -> std::result::Result<S::Ok, S::Error> {
    let text = Zeroizing::new(B64.encode(bytes));
    s.serialize_str(&text)
}

/// [`b64_secret`] for an optional field: owned zeroizing bytes, or secret bytes borrowed from
/// where they already live (no second copy of a private key just to answer).
pub fn opt_b64_secret<T: AsRef<[u8]>, S: Serializer>(
    bytes: &Option<T>,
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    match bytes {
        Some(b) => b64_secret(b.as_ref(), s),
        None => s.serialize_none(),
    }
}

/// Parse an enum field given as a string, with AWS's constraint message.
pub fn parse_enum<E: AwsEnum>(value: &str, field: &str) -> Result<E> {
    E::from_aws(value).ok_or_else(|| {
        let allowed: Vec<&str> = E::VALUES.iter().map(|v| v.aws_name()).collect();
        KmsError::Validation(format!(
            "1 validation error detected: Value at '{field}' failed to satisfy constraint: \
             Member must satisfy enum value set: [{}]",
            allowed.join(", ")
        ))
    })
}

pub fn parse_opt_enum<E: AwsEnum>(value: &Option<String>, field: &str) -> Result<Option<E>> {
    value.as_deref().map(|v| parse_enum(v, field)).transpose()
}

/// Encryption context from a request: at most 8 KiB of keys and values, as in AWS.
pub fn context(map: Option<BTreeMap<String, String>>) -> Result<EncryptionContext> {
    let map = map.unwrap_or_default();
    let size: usize = map.iter().map(|(k, v)| k.len() + v.len()).sum();
    if size > 8192 {
        return Err(KmsError::validation(
            "The encryption context exceeds 8192 bytes",
        ));
    }
    Ok(EncryptionContext::new(map))
}

/// Bounds check for a length in bytes, with AWS's message shape.
pub fn check_len(field: &str, len: usize, min: usize, max: usize) -> Result<()> {
    if len < min || len > max {
        return Err(KmsError::Validation(format!(
            "1 validation error detected: Value at '{field}' failed to satisfy constraint: \
             Member must have length between {min} and {max}"
        )));
    }
    Ok(())
}

/// Bounds check for an integer parameter, with AWS's message shape.
pub fn check_range(field: &str, value: i64, min: i64, max: i64) -> Result<i64> {
    if !(min..=max).contains(&value) {
        return Err(KmsError::Validation(format!(
            "1 validation error detected: Value at '{field}' failed to satisfy constraint: \
             Member must have value between {min} and {max}"
        )));
    }
    Ok(value)
}

/// Pagination: Limit 1..=max (default `default`), Marker is the base64 of the last item's sort
/// key. Returns the page and the next marker.
pub fn paginate<T, K: Fn(&T) -> String>(
    items: Vec<T>,
    limit: Option<i64>,
    marker: Option<&str>,
    default: usize,
    max: usize,
    sort_key: K,
) -> Result<(Vec<T>, Option<String>)> {
    let limit = match limit {
        None => default,
        Some(l) => check_range("limit", l, 1, max as i64)? as usize,
    };
    let after = match marker {
        None => None,
        Some(m) => {
            let raw = B64
                .decode(m.as_bytes())
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .ok_or_else(|| KmsError::InvalidMarker("The marker is invalid".into()))?;
            Some(raw)
        }
    };
    let mut page = Vec::with_capacity(limit.min(items.len()));
    let mut rest = items
        .into_iter()
        .filter(|item| after.as_ref().is_none_or(|a| sort_key(item) > *a));
    for item in rest.by_ref() {
        page.push(item);
        if page.len() == limit {
            break;
        }
    }
    let next = match (rest.next(), page.last()) {
        (Some(_), Some(last)) => Some(B64.encode(sort_key(last))),
        _ => None,
    };
    Ok((page, next))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::KeySpec;

    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    #[allow(dead_code)]
    struct Probe {
        key_id: String,
        plaintext: SecretBlob,
    }

    #[test]
    fn decode_errors_never_echo_values() {
        let err = decode::<Probe>(br#"{"KeyId": 5, "Plaintext": "c2VjcmV0"}"#)
            .err()
            .unwrap();
        assert_eq!(err.aws_type(), "ValidationException");
        assert!(
            !err.to_string().contains('5'.to_string().as_str()) || err.to_string().contains("line")
        );
        let err = decode::<Probe>(br#"{"Plaintext": "c2VjcmV0"}"#)
            .err()
            .unwrap();
        assert!(err.to_string().contains("missing field `KeyId`"), "{err}");
        let err = decode::<Probe>(b"{not json").err().unwrap();
        assert_eq!(err.aws_type(), "SerializationException");
    }

    #[test]
    fn secret_blob_decodes_base64() {
        let p: Probe = decode(br#"{"KeyId": "k", "Plaintext": "c2VjcmV0"}"#).unwrap();
        assert_eq!(
            p.plaintext.decode("Plaintext").unwrap().as_slice(),
            b"secret"
        );
        let bad: Probe = decode(br#"{"KeyId": "k", "Plaintext": "***"}"#).unwrap();
        assert_eq!(
            bad.plaintext.decode("Plaintext").err().unwrap().aws_type(),
            "ValidationException"
        );
    }

    #[test]
    fn pagination_walks_every_item_once() {
        let items: Vec<String> = (0..25).map(|i| format!("k{i:03}")).collect();
        let mut seen = Vec::new();
        let mut marker = None;
        loop {
            let (page, next) =
                paginate(items.clone(), Some(10), marker.as_deref(), 100, 1000, |s| {
                    s.clone()
                })
                .unwrap();
            seen.extend(page);
            match next {
                Some(m) => marker = Some(m),
                None => break,
            }
        }
        assert_eq!(seen, items);
        assert!(paginate(items.clone(), Some(0), None, 100, 1000, |s| s.clone()).is_err());
        let bad = paginate(items, None, Some("!!"), 100, 1000, |s| s.clone());
        assert_eq!(bad.err().unwrap().aws_type(), "InvalidMarkerException");
    }

    #[test]
    fn enum_errors_list_allowed_values() {
        let err = parse_enum::<KeySpec>("RSA_1024", "keySpec").err().unwrap();
        assert!(err.to_string().contains("RSA_2048"));
        assert!(!err.to_string().contains("RSA_1024"));
    }
}
