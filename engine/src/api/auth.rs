//! Authentication in the HTTP layer: who sent a request. SigV4 with access keys
//! ([`crate::sigv4::Verifier`]) is one [`Authenticator`]; others (temporary credentials from a
//! web-identity exchange) plug in beside it.

use axum::http::HeaderMap;

use crate::error::Result;
use crate::record::Scope;
use crate::service::Principal;
use crate::sigv4::{Service, SignedRequest, Verifier};

/// An authenticated caller: the account and region the request is for, and who it is.
pub struct Authenticated {
    pub scope: Scope,
    pub principal: Principal,
    /// The service the request was signed for.
    pub service: Service,
}

pub trait Authenticator: Send + Sync + 'static {
    /// What can be checked from the request head alone (the credential, its scope, the date),
    /// before any of the body is read: a request refused here costs no body buffering.
    fn check_head(&self, headers: &HeaderMap) -> Result<()>;

    /// The whole request, body included.
    fn authenticate(&self, request: &SignedRequest<'_>) -> Result<Authenticated>;
}

/// A shared authenticator (one whose keys change while it serves, such as a [`Verifier`] fed
/// from Secrets).
impl<T: Authenticator> Authenticator for std::sync::Arc<T> {
    fn check_head(&self, headers: &HeaderMap) -> Result<()> {
        (**self).check_head(headers)
    }

    fn authenticate(&self, request: &SignedRequest<'_>) -> Result<Authenticated> {
        (**self).authenticate(request)
    }
}

impl Authenticator for Verifier {
    fn check_head(&self, headers: &HeaderMap) -> Result<()> {
        Verifier::check_head(self, headers).map(drop)
    }

    fn authenticate(&self, request: &SignedRequest<'_>) -> Result<Authenticated> {
        let verified = self.verify(request)?;
        Ok(Authenticated {
            scope: verified.scope,
            principal: verified.principal,
            service: verified.service,
        })
    }
}
