//! The authorization hook: every operation asks it before acting, with the caller, the action
//! the operation needs, the key it resolved and the encryption context. The engine ships one
//! that allows everything; key-policy evaluation plugs in here.

use kubekms_proto::Action;

use super::Caller;
use crate::blob::EncryptionContext;
use crate::error::Result;
use crate::record::KeyRecord;

/// What an operation is about to do.
pub struct AccessRequest<'a> {
    pub caller: &'a Caller,
    pub action: Action,
    /// The key acted on, resolved from the request (or from the ciphertext); `None` for
    /// operations on no existing key (CreateKey, ListKeys, ListAliases, GenerateRandom).
    pub key: Option<&'a KeyRecord>,
    /// The encryption context of cryptographic operations that take one.
    pub encryption_context: Option<&'a EncryptionContext>,
}

/// Decides whether a request may go ahead. An `Err` (normally `KmsError::AccessDenied`) is
/// answered to the caller as it is.
pub trait Authorizer: Send + Sync + 'static {
    fn authorize(&self, request: &AccessRequest<'_>) -> Result<()>;
}

/// Allows every request: access control is the credentials' alone.
pub struct AllowAll;

impl Authorizer for AllowAll {
    fn authorize(&self, _request: &AccessRequest<'_>) -> Result<()> {
        Ok(())
    }
}
