//! A cluster for tests of the web-identity exchange (this crate's, and the operator's remote
//! client's): it accepts exactly the tokens put into `known`, and counts the reviews it was
//! asked for, so tests can see what the review cache spared.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use base64::Engine as _;
use parking_lot::Mutex;

use super::{ReviewedToken, TokenReviewer};
use crate::error::{KmsError, Result};

#[derive(Default)]
pub struct FakeTokenReviewer {
    /// Token → what the cluster says about it; remove one to "delete its ServiceAccount".
    pub known: Mutex<HashMap<String, ReviewedToken>>,
    pub reviews: AtomicUsize,
}

#[async_trait]
impl TokenReviewer for FakeTokenReviewer {
    async fn review(&self, token: &str) -> Result<ReviewedToken> {
        self.reviews.fetch_add(1, Ordering::SeqCst);
        self.known
            .lock()
            .get(token)
            .cloned()
            .ok_or_else(|| KmsError::InvalidIdentityToken("token not accepted".into()))
    }
}

/// A JWT-shaped token (audience `kubekms`) expiring at `exp` (Unix seconds), distinct per
/// `n`. Only its claims are read before review; the signature is the cluster's business.
pub fn jwt(exp: u64, n: u32) -> String {
    let claims = format!(r#"{{"exp":{exp},"aud":["kubekms"],"n":{n}}}"#);
    format!("e30.{}.sig", B64URL.encode(claims))
}
