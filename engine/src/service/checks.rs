//! Checks on request members that the model constrains (lengths, ranges, the encryption
//! context's size, grant tokens) and pagination, with AWS's message shapes. Values are never
//! echoed: they might be plaintext.

use std::collections::BTreeMap;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;

use crate::blob::EncryptionContext;
use crate::error::{KmsError, Result};

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

/// The `GrantTokens` member: at most 10 tokens of 1 to 8192 characters. Grants are not
/// supported yet, so a well-formed token grants nothing.
pub fn grant_tokens(tokens: Option<&[String]>) -> Result<()> {
    let tokens = tokens.unwrap_or_default();
    check_len("grantTokens", tokens.len(), 0, 10)?;
    for token in tokens {
        check_len("grantTokens.member", token.chars().count(), 1, 8192)?;
    }
    Ok(())
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
    fn grant_tokens_are_checked_for_shape() {
        assert!(grant_tokens(None).is_ok());
        assert!(grant_tokens(Some(&["t".to_owned()])).is_ok());
        let eleven: Vec<String> = (0..11).map(|i| i.to_string()).collect();
        assert_eq!(
            grant_tokens(Some(&eleven)).err().unwrap().aws_type(),
            "ValidationException"
        );
        assert!(grant_tokens(Some(&[String::new()])).is_err());
        assert!(grant_tokens(Some(&["x".repeat(8193)])).is_err());
    }
}
