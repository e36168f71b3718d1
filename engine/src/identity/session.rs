//! Temporary credentials for an identity, verifiable by every replica without shared state.
//!
//! The session token *is* the session: the identity (account, Kubernetes user name, groups)
//! and the expiry, sealed with AES-256-GCM under a key derived from the root key. The access
//! key id and the secret access key are HMACs of the token under two more derived keys, so a
//! replica that receives `(access key id, session token, signature)` opens the token, derives
//! the secret and checks the signature; nothing is stored and nothing needs to be shared but
//! the root key every replica already holds. A token changed by one byte fails to open.
//!
//! Tokens cannot be revoked before they expire (as AWS's cannot); the expiry is never later
//! than that of the web identity token exchanged for them, and at most 12 hours.

use aws_lc_rs::{constant_time, hmac};
use base64::engine::general_purpose::{STANDARD as B64, URL_SAFE_NO_PAD as B64URL};
use base64::Engine as _;
use zeroize::Zeroizing;

use crate::clock::Millis;
use crate::crypto::symmetric::AesGcmKey;
use crate::crypto::RootKey;
use crate::error::{KmsError, Result};

/// Token format; a new format gets a new prefix.
const TOKEN_PREFIX: &str = "KKS1";
const TOKEN_AAD: &[u8] = b"kubekms/v1/session-token";
/// The first four characters of temporary access key ids, as AWS's (`ASIA…`).
pub const TEMPORARY_KEY_PREFIX: &str = "ASIA";
/// Identity fields are bounded so a token stays a few hundred bytes.
const MAX_FIELD: usize = 1024;
const MAX_GROUPS: usize = 64;

/// Who a session is for: a Kubernetes identity in an account.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionIdentity {
    pub account: String,
    /// The Kubernetes user name (`system:serviceaccount:<ns>:<name>` for a service account).
    pub username: String,
    pub groups: Vec<String>,
}

/// What a caller gets back: used as AWS temporary credentials.
pub struct SessionCredentials {
    pub access_key_id: String,
    pub secret_access_key: Zeroizing<String>,
    pub session_token: String,
    pub expiration: Millis,
}

/// A session token that opened: its identity and when it expires.
#[derive(Debug)]
pub struct Session {
    pub identity: SessionIdentity,
    pub expiration: Millis,
    pub access_key_id: String,
    secret_access_key: Zeroizing<String>,
}

impl Session {
    pub fn secret_access_key(&self) -> &str {
        &self.secret_access_key
    }
}

/// Issues and opens session tokens; the same on every replica holding the root key.
pub struct Sessions {
    seal: AesGcmKey,
    key_ids: hmac::Key,
    secrets: hmac::Key,
}

impl Sessions {
    pub fn new(root: &RootKey) -> Result<Self> {
        Ok(Self {
            seal: root.derive_aead_key(b"kubekms/v1/session-seal")?,
            key_ids: root.derive_hmac_key(b"kubekms/v1/session-key-id")?,
            secrets: root.derive_hmac_key(b"kubekms/v1/session-secret")?,
        })
    }

    pub fn issue(
        &self,
        identity: &SessionIdentity,
        expiration: Millis,
    ) -> Result<SessionCredentials> {
        let plain = Zeroizing::new(encode(identity, expiration)?);
        let mut sealed = Vec::with_capacity(plain.len() + 28);
        self.seal.seal_into(&mut sealed, TOKEN_AAD, &plain)?;
        let session_token = format!("{TOKEN_PREFIX}{}", B64URL.encode(&sealed));
        Ok(SessionCredentials {
            access_key_id: self.access_key_id(&session_token),
            secret_access_key: self.secret(&session_token),
            session_token,
            expiration,
        })
    }

    /// Open a token presented with `access_key_id` at `now`. Every failure to open (or a key id
    /// that is not the token's) is the same UnrecognizedClient error, as AWS answers an invalid
    /// token; an expired one is ExpiredToken.
    pub fn open(&self, access_key_id: &str, token: &str, now: Millis) -> Result<Session> {
        let invalid = || {
            KmsError::UnrecognizedClient(
                "The security token included in the request is invalid.".into(),
            )
        };
        let body = token.strip_prefix(TOKEN_PREFIX).ok_or_else(invalid)?;
        let sealed = B64URL.decode(body).map_err(|_| invalid())?;
        let plain = self.seal.open(TOKEN_AAD, &sealed).map_err(|_| invalid())?;
        let expected = self.access_key_id(token);
        constant_time::verify_slices_are_equal(expected.as_bytes(), access_key_id.as_bytes())
            .map_err(|_| invalid())?;
        let (identity, expiration) = decode(&plain).ok_or_else(invalid)?;
        if expiration <= now {
            return Err(KmsError::ExpiredToken(
                "The security token included in the request is expired".into(),
            ));
        }
        Ok(Session {
            identity,
            expiration,
            access_key_id: expected,
            secret_access_key: self.secret(token),
        })
    }

    /// `ASIA` + 16 base32 characters, like AWS's temporary key ids.
    fn access_key_id(&self, token: &str) -> String {
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
        let tag = hmac::sign(&self.key_ids, token.as_bytes());
        let mut id = String::from(TEMPORARY_KEY_PREFIX);
        id.extend(
            tag.as_ref()[..16]
                .iter()
                .map(|b| ALPHABET[(b & 31) as usize] as char),
        );
        id
    }

    /// 40 characters, like AWS's secrets.
    fn secret(&self, token: &str) -> Zeroizing<String> {
        let tag = hmac::sign(&self.secrets, token.as_bytes());
        let mut secret = Zeroizing::new(B64.encode(&tag.as_ref()[..30]));
        // Base64 of 30 bytes is exactly 40 characters, without padding.
        secret.truncate(40);
        secret
    }
}

/// expiration (8, big-endian) || account || username || group count (1) || groups, each string
/// length-prefixed (2 bytes).
fn encode(identity: &SessionIdentity, expiration: Millis) -> Result<Vec<u8>> {
    if identity.groups.len() > MAX_GROUPS {
        return Err(too_big());
    }
    let mut out = Vec::with_capacity(64 + identity.username.len());
    out.extend_from_slice(&expiration.to_be_bytes());
    push_field(&mut out, &identity.account)?;
    push_field(&mut out, &identity.username)?;
    // At most MAX_GROUPS (64), checked above.
    out.push(identity.groups.len() as u8);
    for group in &identity.groups {
        push_field(&mut out, group)?;
    }
    Ok(out)
}

fn too_big() -> KmsError {
    KmsError::validation("the identity is too large for a session")
}

fn push_field(out: &mut Vec<u8>, s: &str) -> Result<()> {
    if s.len() > MAX_FIELD {
        return Err(too_big());
    }
    // At most MAX_FIELD (1024) bytes, checked above.
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
    Ok(())
}

fn decode(bytes: &[u8]) -> Option<(SessionIdentity, Millis)> {
    let (expiration, mut rest) = bytes.split_first_chunk::<8>()?;
    let field = |rest: &mut &[u8]| -> Option<String> {
        let (len, tail) = rest.split_first_chunk::<2>()?;
        let len = u16::from_be_bytes(*len) as usize;
        let value = tail.get(..len)?;
        *rest = &tail[len..];
        String::from_utf8(value.to_vec()).ok()
    };
    let account = field(&mut rest)?;
    let username = field(&mut rest)?;
    let (&count, mut tail) = rest.split_first()?;
    let mut groups = Vec::with_capacity(count as usize);
    for _ in 0..count {
        groups.push(field(&mut tail)?);
    }
    if !tail.is_empty() {
        return None;
    }
    Some((
        SessionIdentity {
            account,
            username,
            groups,
        },
        Millis::from_be_bytes(*expiration),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sessions() -> Sessions {
        Sessions::new(&RootKey::from_bytes(&[9u8; 32]).unwrap()).unwrap()
    }

    fn identity() -> SessionIdentity {
        SessionIdentity {
            account: "111122223333".into(),
            username: "system:serviceaccount:shop:orders".into(),
            groups: vec![
                "system:serviceaccounts".into(),
                "system:serviceaccounts:shop".into(),
                "system:authenticated".into(),
            ],
        }
    }

    #[test]
    fn issued_credentials_open_on_any_replica_until_they_expire() {
        let creds = sessions().issue(&identity(), 10_000).unwrap();
        assert!(creds.access_key_id.starts_with("ASIA"));
        assert_eq!(creds.access_key_id.len(), 20);
        assert_eq!(creds.secret_access_key.len(), 40);
        // Another instance with the same root key: another replica.
        let session = sessions()
            .open(&creds.access_key_id, &creds.session_token, 9_999)
            .unwrap();
        assert_eq!(session.identity, identity());
        assert_eq!(session.expiration, 10_000);
        assert_eq!(session.secret_access_key(), &*creds.secret_access_key);
        assert!(matches!(
            sessions().open(&creds.access_key_id, &creds.session_token, 10_000),
            Err(KmsError::ExpiredToken(_))
        ));
    }

    #[test]
    fn altered_tokens_and_mismatched_keys_are_refused() {
        let s = sessions();
        let creds = s.issue(&identity(), 10_000).unwrap();
        let token = creds.session_token.as_bytes();
        for i in 0..token.len() {
            let mut altered = token.to_vec();
            altered[i] = if altered[i] == b'A' { b'B' } else { b'A' };
            let altered = String::from_utf8(altered).unwrap();
            if altered == creds.session_token {
                continue;
            }
            assert!(
                matches!(
                    s.open(&creds.access_key_id, &altered, 0),
                    Err(KmsError::UnrecognizedClient(_))
                ),
                "byte {i} altered was accepted"
            );
        }
        let other = s.issue(&identity(), 10_000).unwrap();
        assert!(s
            .open(&other.access_key_id, &creds.session_token, 0)
            .is_err());
        let other_root = Sessions::new(&RootKey::from_bytes(&[8u8; 32]).unwrap()).unwrap();
        assert!(other_root
            .open(&creds.access_key_id, &creds.session_token, 0)
            .is_err());
        // Two sessions for one identity are distinct credentials.
        assert_ne!(other.session_token, creds.session_token);
        assert_ne!(other.access_key_id, creds.access_key_id);
    }

    #[test]
    fn oversized_identities_are_refused() {
        let mut big = identity();
        big.groups = vec!["g".into(); MAX_GROUPS + 1];
        assert!(sessions().issue(&big, 1).is_err());
        big.groups = vec!["x".repeat(MAX_FIELD + 1)];
        assert!(sessions().issue(&big, 1).is_err());
    }
}
