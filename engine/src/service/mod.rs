//! The KMS operations: JSON request in, JSON response out, over the in-memory key table that
//! writes through to a [`KeyStore`].

use std::sync::Arc;

use crate::clock::Clock;
use crate::crypto::RootKey;
use crate::error::{KmsError, Result};
use crate::record::Scope;
use crate::store::KeyStore;

/// Who is calling and where: filled in by the wire layer after SigV4 verification.
#[derive(Clone, Debug)]
pub struct RequestContext {
    pub scope: Scope,
    /// The caller's ARN, for the audit log and (later) policy evaluation.
    pub principal: String,
    pub request_id: String,
}

/// One operation's outcome, with the key it touched for the audit log.
pub struct Response {
    pub result: Result<Vec<u8>>,
    pub key_arn: Option<String>,
}

pub struct Kms {
    _store: Arc<dyn KeyStore>,
    _root: RootKey,
    _clock: Arc<dyn Clock>,
}

impl Kms {
    /// Load every record from the store and prepare the keys.
    pub async fn open(
        store: Arc<dyn KeyStore>,
        root: RootKey,
        clock: Arc<dyn Clock>,
    ) -> Result<Arc<Self>> {
        Ok(Arc::new(Self { _store: store, _root: root, _clock: clock }))
    }

    /// Run `operation` (the part after `TrentService.`) on a JSON body.
    pub async fn dispatch(&self, _ctx: &RequestContext, operation: &str, _body: &[u8]) -> Response {
        Response {
            result: Err(KmsError::UnknownOperation(format!("{operation} is not supported"))),
            key_arn: None,
        }
    }

    /// Apply what has fallen due (deletions, automatic rotations, material expiry).
    pub async fn run_due_work(&self) -> Result<()> {
        Ok(())
    }
}
