//! AWS Signature Version 4: verification of incoming requests (header form, as every AWS SDK
//! and the CLI send to KMS). The signer and the canonicalisation it shares with verification
//! live in `kubekms_proto::sigv4`.
//!
//! Derived signing keys are cached per credential scope, so checking a request costs one
//! SHA-256 of the body, one of the canonical request and one HMAC.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use aws_lc_rs::{constant_time, digest, hmac};
use axum::http::header::{HeaderName, AUTHORIZATION, DATE};
use axum::http::HeaderMap;
use kubekms_proto::sigv4::{
    canonical_request, derive_signing_key, hex_lower, push_header_values, signature,
};
pub use kubekms_proto::sigv4::{
    format_amz_date, sign_request, SigningInput, ALGORITHM, AMZ_DATE, SERVICE, TERMINATOR,
};
use parking_lot::RwLock;
use time::format_description::BorrowedFormatItem;
use time::macros::format_description;
use time::{Date, Month, PrimitiveDateTime};
use zeroize::Zeroizing;

use crate::clock::{Clock, Millis};
use crate::config::{Credential, Credentials};
use crate::error::{shown, KmsError, Result};
use crate::identity::WebIdentity;
use crate::record::Scope;
use crate::service::Principal;

/// How far a request's timestamp may be from our clock, either way (AWS allows 5 minutes).
pub const MAX_SKEW_MILLIS: Millis = 5 * 60 * 1000;
/// Signing keys change daily per scope; beyond this many the cache is simply emptied.
const MAX_CACHED_KEYS: usize = 4096;

const HTTP_DATE: &[BorrowedFormatItem<'static>] = format_description!(
    "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
);

const MSG_MISMATCH: &str = "The request signature we calculated does not match the signature \
    you provided. Check your AWS Secret Access Key and signing method. Consult the service \
    documentation for details.";
const MSG_UNKNOWN_KEY: &str = "The security token included in the request is invalid.";
/// The header carrying a session token (temporary credentials).
const SECURITY_TOKEN: &str = "x-amz-security-token";

// The headers looked up on every request, by names parsed once: a lookup by `&str` parses and
// classifies the name first, at every call, which showed in profiles.
/// The operation of an AWS JSON request (`TrentService.Encrypt`).
pub static X_AMZ_TARGET: HeaderName = HeaderName::from_static("x-amz-target");
static X_AMZ_DATE: HeaderName = HeaderName::from_static("x-amz-date");
static X_AMZ_CONTENT_SHA256: HeaderName = HeaderName::from_static("x-amz-content-sha256");
static X_AMZ_SECURITY_TOKEN: HeaderName = HeaderName::from_static(SECURITY_TOKEN);

/// Who signed a request, once the signature checks out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    /// The account from the credential's configuration, the region from the credential scope.
    pub scope: Scope,
    pub principal: Principal,
    /// The service the signature is scoped to: `kms`, or `sts` (GetCallerIdentity).
    pub service: Service,
}

/// The services whose requests this endpoint answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Service {
    Kms,
    Sts,
}

impl Service {
    fn from_scope(name: &str) -> Option<Self> {
        match name {
            SERVICE => Some(Self::Kms),
            STS_SERVICE => Some(Self::Sts),
            _ => None,
        }
    }
}

/// The credential scope's service name of STS requests.
pub const STS_SERVICE: &str = "sts";

/// A derived signing key, with the dynamic-table generation of its secret (`None`: a
/// configured key or a session).
type CachedSigningKey = (Option<u64>, Arc<hmac::Key>);

/// Access keys that change while the engine runs (from Kubernetes Secrets), by id.
pub type KeyTable = HashMap<String, Arc<Credential>>;

/// The parts of an HTTP request that SigV4 covers. `path` and `query` are as received on the
/// wire (still percent-encoded).
pub struct SignedRequest<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub headers: &'a HeaderMap,
    pub body: &'a [u8],
}

pub struct Verifier {
    /// Keys configured at start (file, environment).
    credentials: Credentials,
    /// Keys that come and go (see [`Verifier::set_dynamic_keys`]), with the generation of
    /// the table: each replacement is a new one.
    dynamic: RwLock<Arc<(u64, KeyTable)>>,
    /// Opens session tokens (temporary credentials from the web-identity exchange).
    web_identity: Option<Arc<WebIdentity>>,
    /// Sessions opened before, by access key id (bounded like the signing keys).
    open_sessions: RwLock<HashMap<String, Arc<OpenSession>>>,
    clock: Arc<dyn Clock>,
    /// Keyed by the whole `Credential=` value (`AKID/date/region/service/aws4_request`), which
    /// names exactly the inputs of the key derivation except the secret, and by the generation
    /// of the dynamic table a dynamic key came from: a key derived from a secret that has since
    /// been replaced never matches again. Shared rather than cloned out: cloning an
    /// `hmac::Key` copies its HMAC state.
    signing_keys: RwLock<HashMap<String, CachedSigningKey>>,
}

/// A request head that passed [`Verifier::check_head`]: what the signature check needs, borrowed
/// from the headers (`'h`) and the verifier's credentials (`'v`).
pub struct Head<'h, 'v> {
    auth: Authorization<'h>,
    amz_date: Cow<'h, str>,
    signed: Vec<&'h str>,
    signer: Signer<'v>,
    service: Service,
}

/// Whose secret a request is signed with.
enum Signer<'v> {
    Configured(&'v Credential),
    /// A key from the dynamic table of this generation.
    Dynamic(Arc<Credential>, u64),
    Session(Arc<OpenSession>),
}

/// A session token already opened: what its requests need, kept so that the next request with
/// the same temporary credentials costs a map lookup and a comparison, as a plain access key
/// does, not a decryption.
pub struct OpenSession {
    /// The token as presented: a request naming this key id with any other token is opened
    /// afresh (and fails).
    token: String,
    secret: Zeroizing<String>,
    account: String,
    principal: Principal,
    expiration: Millis,
}

impl Signer<'_> {
    fn secret(&self) -> &str {
        match self {
            Signer::Configured(c) => c.secret_access_key(),
            Signer::Dynamic(c, _) => c.secret_access_key(),
            Signer::Session(s) => &s.secret,
        }
    }
}

struct Authorization<'a> {
    /// `AKID/date/region/service/aws4_request`
    credential: &'a str,
    access_key_id: &'a str,
    date: &'a str,
    region: &'a str,
    service: &'a str,
    signed_headers: &'a str,
    signature: &'a str,
}

impl Verifier {
    pub fn new(credentials: Credentials, clock: Arc<dyn Clock>) -> Self {
        Self {
            credentials,
            dynamic: RwLock::new(Arc::new((0, KeyTable::new()))),
            web_identity: None,
            open_sessions: RwLock::new(HashMap::new()),
            clock,
            signing_keys: RwLock::new(HashMap::new()),
        }
    }

    /// Also accept temporary credentials issued by `sessions`.
    pub fn with_sessions(mut self, sessions: Arc<WebIdentity>) -> Self {
        self.web_identity = Some(sessions);
        self
    }

    /// Replace the keys that change while the engine runs. A key removed here is refused from
    /// the next request on; its cached signing keys go with it.
    pub fn set_dynamic_keys(&self, keys: KeyTable) {
        let mut dynamic = self.dynamic.write();
        *dynamic = Arc::new((dynamic.0 + 1, keys));
        drop(dynamic);
        self.signing_keys.write().clear();
    }

    pub fn credentials(&self) -> &Credentials {
        &self.credentials
    }

    /// Check a whole signed request: [`Verifier::check_head`], then the signature over the
    /// body.
    pub fn verify(&self, req: &SignedRequest<'_>) -> Result<Verified> {
        let head = self.check_head(req.headers)?;
        self.check_signature(&head, req)
    }

    /// Everything that can be checked before the body is read: the Authorization header's
    /// form, the credential scope (date, a well-formed region, service), the clock skew, the
    /// signed headers and that the access key exists. A request that fails here is refused
    /// without buffering its body.
    pub fn check_head<'h>(&self, headers: &'h HeaderMap) -> Result<Head<'h, '_>> {
        let header = match headers.get(AUTHORIZATION) {
            Some(h) => h
                .to_str()
                .map_err(|_| incomplete("The Authorization header is not valid ASCII."))?,
            None => {
                return Err(KmsError::MissingAuthenticationToken(
                    "Missing Authentication Token".into(),
                ))
            }
        };
        let auth = parse_authorization(header)?;
        let (amz_date, request_time) = request_date(headers)?;

        if auth.date != &amz_date[..8] {
            return Err(KmsError::InvalidSignature(format!(
                "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date \
                 from HTTP: '{}' != '{}', from '{amz_date}'.",
                auth.date,
                &amz_date[..8]
            )));
        }
        let Some(service) = Service::from_scope(auth.service) else {
            return Err(KmsError::InvalidSignature(format!(
                "Credential should be scoped to correct service: '{SERVICE}'."
            )));
        };
        // The region ends up in every ARN the caller sees and in the audit log.
        if !is_region_name(auth.region) {
            return Err(incomplete("Credential should be scoped to a valid region."));
        }
        check_skew(&amz_date, request_time, self.clock.now_millis())?;

        let signed: Vec<&str> = auth.signed_headers.split(';').collect();
        if !signed.contains(&"host") {
            return Err(KmsError::InvalidSignature(
                "'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization.".into(),
            ));
        }
        // Every SDK signs the target. Insisting on it binds the operation to the signature, so a
        // captured request cannot be replayed as a different operation on the same body.
        if headers.contains_key(&X_AMZ_TARGET) && !signed.contains(&"x-amz-target") {
            return Err(KmsError::InvalidSignature(
                "'X-Amz-Target' must be a 'SignedHeader' in the AWS Authorization.".into(),
            ));
        }

        let signer = self.signer(headers, &auth, &signed)?;
        Ok(Head {
            auth,
            amz_date,
            signed,
            signer,
            service,
        })
    }

    /// The secret's owner: a session when the request carries a security token, else a
    /// configured or dynamic access key.
    fn signer<'v>(
        &'v self,
        headers: &HeaderMap,
        auth: &Authorization<'_>,
        signed: &[&str],
    ) -> Result<Signer<'v>> {
        let unknown = || KmsError::UnrecognizedClient(MSG_UNKNOWN_KEY.into());
        if let Some(token) = headers.get(&X_AMZ_SECURITY_TOKEN) {
            // Signed, so a captured request cannot be replayed under another session.
            if !signed.contains(&SECURITY_TOKEN) {
                return Err(KmsError::InvalidSignature(
                    "'X-Amz-Security-Token' must be a 'SignedHeader' in the AWS Authorization."
                        .into(),
                ));
            }
            let web = self.web_identity.as_ref().ok_or_else(unknown)?;
            let token = token.to_str().map_err(|_| unknown())?;
            let now = self.clock.now_millis();
            if let Some(open) = self.open_sessions.read().get(auth.access_key_id) {
                let same =
                    constant_time::verify_slices_are_equal(open.token.as_bytes(), token.as_bytes())
                        .is_ok();
                if same && now < open.expiration {
                    return Ok(Signer::Session(open.clone()));
                }
            }
            let session = web.sessions().open(auth.access_key_id, token, now)?;
            let open = Arc::new(OpenSession {
                token: token.to_owned(),
                principal: web.principal_of(&session.identity),
                account: session.identity.account.clone(),
                secret: Zeroizing::new(session.secret_access_key().to_owned()),
                expiration: session.expiration,
            });
            let mut cache = self.open_sessions.write();
            if cache.len() >= MAX_CACHED_KEYS {
                cache.retain(|_, s| now < s.expiration);
                if cache.len() >= MAX_CACHED_KEYS {
                    cache.clear();
                }
            }
            cache.insert(session.access_key_id, open.clone());
            return Ok(Signer::Session(open));
        }
        if let Some(credential) = self.credentials.get(auth.access_key_id) {
            return Ok(Signer::Configured(credential));
        }
        let dynamic = self.dynamic.read();
        let generation = dynamic.0;
        dynamic
            .1
            .get(auth.access_key_id)
            .map(|c| Signer::Dynamic(c.clone(), generation))
            .ok_or_else(unknown)
    }

    /// The signature of a request whose head passed [`Verifier::check_head`].
    pub fn check_signature<'v>(
        &'v self,
        head: &Head<'_, 'v>,
        req: &SignedRequest<'_>,
    ) -> Result<Verified> {
        let Head {
            auth,
            amz_date,
            signed,
            signer,
            service,
        } = head;
        let payload_hash = hex_lower(digest::digest(&digest::SHA256, req.body).as_ref());
        if let Some(claimed) = req.headers.get(&X_AMZ_CONTENT_SHA256) {
            if !claimed
                .as_bytes()
                .eq_ignore_ascii_case(payload_hash.as_bytes())
            {
                return Err(KmsError::InvalidSignature(
                    "The provided 'x-amz-content-sha256' header does not match what was computed."
                        .into(),
                ));
            }
        }

        let canonical = canonical_request(
            req.method,
            req.path,
            req.query,
            signed,
            auth.signed_headers,
            |name, out| push_header_values(out, values_of(req.headers, name)),
            &payload_hash,
        );
        let key = self.signing_key(auth, signer);
        let expected = signature(&key, amz_date, auth.credential, &canonical);
        constant_time::verify_slices_are_equal(expected.as_bytes(), auth.signature.as_bytes())
            .map_err(|_| KmsError::InvalidSignature(MSG_MISMATCH.into()))?;

        let (account, principal) = match signer {
            Signer::Configured(c) => (c.account_id.clone(), c.principal.clone()),
            Signer::Dynamic(c, _) => (c.account_id.clone(), c.principal.clone()),
            Signer::Session(s) => (s.account.clone(), s.principal.clone()),
        };
        Ok(Verified {
            scope: Scope::new(account, auth.region),
            principal,
            service: *service,
        })
    }

    fn signing_key(&self, auth: &Authorization<'_>, signer: &Signer<'_>) -> Arc<hmac::Key> {
        // A session's key id is unique to its token, so keys of different sessions never
        // share a cache entry. A dynamic key's entry must be of its table's generation: a
        // request that read the table before a replacement may insert after the replacement
        // cleared the cache, and its key must not serve the replaced secret's successor.
        let generation = match signer {
            Signer::Dynamic(_, generation) => Some(*generation),
            Signer::Configured(_) | Signer::Session(_) => None,
        };
        if let Some((cached, key)) = self.signing_keys.read().get(auth.credential) {
            if *cached == generation {
                return Arc::clone(key);
            }
        }
        let key = Arc::new(derive_signing_key(
            signer.secret(),
            auth.date,
            auth.region,
            auth.service,
        ));
        let mut cache = self.signing_keys.write();
        if cache.len() >= MAX_CACHED_KEYS {
            cache.clear();
        }
        cache.insert(auth.credential.to_owned(), (generation, Arc::clone(&key)));
        key
    }
}

/// The values of the header `name` (in any case, as the client wrote it in `SignedHeaders`) in
/// the order received, as `HeaderMap::get_all` gives them, found by a pass over the request's
/// few headers: cheaper than a lookup by a name that must be parsed first, for each signed
/// header of every request.
fn values_of<'h>(headers: &'h HeaderMap, name: &'h str) -> impl Iterator<Item = &'h [u8]> + 'h {
    headers
        .iter()
        .filter(move |(n, _)| n.as_str().eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_bytes())
}

/// A region name as AWS forms them (`us-east-1`, `us-gov-west-1`, `eu-central-2`): lowercase
/// letters and digits in two to five hyphen-separated parts, the first letters only, at most 32
/// characters. Anything else (a `:` that would split an ARN, spaces, case) is refused.
pub fn is_region_name(region: &str) -> bool {
    let mut parts = 0;
    region.len() <= 32
        && region.split('-').enumerate().all(|(i, part)| {
            parts = i + 1;
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || (i > 0 && b.is_ascii_digit()))
        })
        && (2..=5).contains(&parts)
}

fn incomplete(msg: impl Into<String>) -> KmsError {
    KmsError::IncompleteSignature(msg.into())
}

fn parse_authorization(header: &str) -> Result<Authorization<'_>> {
    // `trim_ascii`, not `trim`: a header value is ASCII (`to_str` saw to it), and `trim` decodes
    // UTF-8 to test for Unicode spaces, which showed in profiles of every request.
    let header = header.trim_ascii();
    let (algorithm, rest) = header.split_once(' ').unwrap_or((header, ""));
    if algorithm != ALGORITHM {
        return Err(incomplete(format!(
            "Unsupported AWS 'algorithm': '{}'. Only '{ALGORITHM}' is supported.",
            shown(algorithm)
        )));
    }
    let (mut credential, mut signed_headers, mut signature) = (None, None, None);
    for part in rest.split(',') {
        let Some((name, value)) = part.trim_ascii().split_once('=') else {
            continue;
        };
        match name {
            "Credential" => credential = Some(value),
            "SignedHeaders" => signed_headers = Some(value),
            "Signature" => signature = Some(value),
            _ => {}
        }
    }
    let mut missing = String::new();
    for (name, value) in [
        ("Credential", credential),
        ("Signature", signature),
        ("SignedHeaders", signed_headers),
    ] {
        if value.is_none_or(str::is_empty) {
            missing.push_str(&format!(
                "Authorization header requires '{name}' parameter. "
            ));
        }
    }
    let (credential, signed_headers, signature) = match (credential, signed_headers, signature) {
        (Some(c), Some(h), Some(s)) if missing.is_empty() => (c, h, s),
        _ => return Err(incomplete(missing.trim_end())),
    };
    let mut parts = credential.split('/');
    let ([Some(access_key_id), Some(date), Some(region), Some(service), Some(terminator)], None) =
        (std::array::from_fn(|_| parts.next()), parts.next())
    else {
        return Err(incomplete(
            "Credential must have exactly 5 slash-delimited elements, e.g. \
             keyid/date/region/service/term.",
        ));
    };
    if terminator != TERMINATOR {
        return Err(KmsError::InvalidSignature(format!(
            "Credential should be scoped with a valid terminator: '{TERMINATOR}', not \
             '{}'.",
            shown(terminator)
        )));
    }
    if date.len() != 8 || !date.bytes().all(|b| b.is_ascii_digit()) {
        return Err(incomplete(format!(
            "Credential scope date '{}' is not in YYYYMMDD format.",
            shown(date)
        )));
    }
    Ok(Authorization {
        credential,
        access_key_id,
        date,
        region,
        service,
        signed_headers,
        signature,
    })
}

/// The request time in ISO-8601 basic form, from `X-Amz-Date` or else `Date`.
fn request_date(headers: &HeaderMap) -> Result<(Cow<'_, str>, Millis)> {
    if let Some(value) = headers.get(&X_AMZ_DATE) {
        let text = value.to_str().unwrap_or("");
        let millis = parse_amz_date(text).ok_or_else(|| {
            incomplete(format!(
                "Date must be in ISO-8601 'basic format'. Got '{}'.",
                shown(text)
            ))
        })?;
        return Ok((Cow::Borrowed(text), millis));
    }
    if let Some(value) = headers.get(DATE) {
        let text = value.to_str().unwrap_or("");
        let parsed = PrimitiveDateTime::parse(text, HTTP_DATE).map_err(|_| {
            incomplete(format!(
                "Date must be in RFC 1123 format. Got '{}'.",
                shown(text)
            ))
        })?;
        let millis = parsed.assume_utc().unix_timestamp() * 1000;
        return Ok((Cow::Owned(format_amz_date(millis)), millis));
    }
    Err(incomplete(
        "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header.",
    ))
}

/// `YYYYMMDDTHHMMSSZ` (what `AMZ_DATE` describes) to milliseconds since the epoch, read by
/// hand: `time`'s parser interprets its format description at every call, and that showed in
/// profiles of every request. The calendar checks (month, days in the month, hour, minute,
/// second) are still `time`'s. One difference: `time` also takes a signed year
/// (`+20260101T000000Z`), which no SigV4 signer writes; it is refused here.
fn parse_amz_date(text: &str) -> Option<Millis> {
    let bytes = text.as_bytes();
    if bytes.len() != 16 || bytes[8] != b'T' || bytes[15] != b'Z' {
        return None;
    }
    let number = |from: usize, to: usize| -> Option<u16> {
        bytes[from..to].iter().try_fold(0u16, |n, &digit| {
            digit
                .is_ascii_digit()
                .then(|| n * 10 + u16::from(digit - b'0'))
        })
    };
    let small = |from: usize| number(from, from + 2).and_then(|n| u8::try_from(n).ok());
    let month = Month::try_from(small(4)?).ok()?;
    let date = Date::from_calendar_date(i32::from(number(0, 4)?), month, small(6)?).ok()?;
    let at = date.with_hms(small(9)?, small(11)?, small(13)?).ok()?;
    Some(at.assume_utc().unix_timestamp() * 1000)
}

fn check_skew(amz_date: &str, request: Millis, now: Millis) -> Result<()> {
    if request < now - MAX_SKEW_MILLIS {
        return Err(KmsError::InvalidSignature(format!(
            "Signature expired: {amz_date} is now earlier than {} ({} - 5 min.)",
            format_amz_date(now - MAX_SKEW_MILLIS),
            format_amz_date(now)
        )));
    }
    if request > now + MAX_SKEW_MILLIS {
        return Err(KmsError::InvalidSignature(format!(
            "Signature not yet current: {amz_date} is still later than {} ({} + 5 min.)",
            format_amz_date(now + MAX_SKEW_MILLIS),
            format_amz_date(now)
        )));
    }
    Ok(())
}

/// Every header of a signed KMS JSON request to `POST /` on `host`, signed with `credential`.
pub fn sign_kms_request(
    credential: &Credential,
    region: &str,
    host: &str,
    operation: &str,
    body: &[u8],
    now: Millis,
) -> Vec<(String, String)> {
    kubekms_proto::sigv4::sign_kms_request(
        &credential.access_key_id,
        credential.secret_access_key(),
        region,
        host,
        operation,
        body,
        now,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::{HeaderName, HeaderValue};
    use std::sync::atomic::{AtomicI64, Ordering};

    const AKID: &str = "AKIDEXAMPLE";
    const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
    const HOST: &str = "kms.eu-west-3.amazonaws.com";
    const BODY: &[u8] = br#"{"KeyId":"alias/my-key","Plaintext":"aGVsbG8="}"#;
    /// 2026-11-22T12:34:56Z
    const SIGNED_AT: Millis = 1_795_350_896_000;
    /// botocore 1.x `SigV4Auth(creds, 'kms', 'eu-west-3')` with the clock fixed at SIGNED_AT.
    const BOTOCORE_AUTH: &str = "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20261122/eu-west-3/kms/\
        aws4_request, SignedHeaders=content-type;host;x-amz-date;x-amz-target;x-extra, \
        Signature=f2b2eeb85eed022683cb8f5d5089b168f9ce0215c7788007bd703a9b9fe641fa";
    const BOTOCORE_AUTH_PATH_QUERY: &str = "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20261122/\
        eu-west-3/kms/aws4_request, SignedHeaders=host;x-amz-date;x-amz-target, \
        Signature=dc130349769577889f12079e1527f2a176083836a7e4d74b58e13cabbc48fbe8";

    struct TestClock(AtomicI64);
    impl Clock for TestClock {
        fn now_millis(&self) -> Millis {
            self.0.load(Ordering::SeqCst)
        }
    }

    fn verifier(now: Millis) -> (Verifier, Arc<TestClock>) {
        let clock = Arc::new(TestClock(AtomicI64::new(now)));
        let cred = Credential::new(
            AKID,
            Zeroizing::new(SECRET.to_owned()),
            "111122223333",
            Some("arn:aws:iam::111122223333:user/alice".into()),
        )
        .unwrap();
        (
            Verifier::new(Credentials::new([cred]).unwrap(), clock.clone()),
            clock,
        )
    }

    /// A verifier that also accepts sessions, and a session's credentials for `identity`
    /// expiring at `expires`.
    fn session_verifier(
        now: Millis,
        expires: Millis,
    ) -> (Verifier, crate::identity::session::SessionCredentials) {
        use crate::identity::session::{SessionIdentity, Sessions};
        use crate::identity::{IdentityMap, ReviewedToken, TokenReviewer, WebIdentity};
        struct NoCluster;
        #[async_trait::async_trait]
        impl TokenReviewer for NoCluster {
            async fn review(&self, _: &str) -> Result<ReviewedToken> {
                Err(KmsError::IdpCommunication("no cluster".into()))
            }
        }
        let (v, clock) = verifier(now);
        let root = crate::crypto::RootKey::from_bytes(&[5u8; 32]).unwrap();
        let sessions = Arc::new(Sessions::new(&root).unwrap());
        let creds = sessions
            .issue(
                &SessionIdentity {
                    account: "111122223333".into(),
                    username: "system:serviceaccount:shop:orders".into(),
                    groups: vec!["system:serviceaccounts:shop".into()],
                },
                expires,
            )
            .unwrap();
        let web = WebIdentity::new(
            Arc::new(NoCluster),
            sessions,
            IdentityMap::default(),
            "111122223333",
            clock,
        );
        (v.with_sessions(Arc::new(web)), creds)
    }

    /// An Encrypt request to HOST signed at SIGNED_AT with `id`/`secret` for `service`, with
    /// `extra` headers (signed too).
    fn signed_headers(id: &str, secret: &str, service: &str, extra: &[(&str, &str)]) -> HeaderMap {
        let mut headers = vec![("host", HOST), ("x-amz-target", "TrentService.Encrypt")];
        headers.extend_from_slice(extra);
        let input = SigningInput {
            method: "POST",
            path: "/",
            query: None,
            headers: &headers,
            body: BODY,
        };
        let mut all: Vec<(String, String)> = headers
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        all.extend(sign_request(
            id,
            secret,
            "us-east-1",
            service,
            &input,
            SIGNED_AT,
        ));
        owned_header_map(&all)
    }

    fn session_request(
        creds: &crate::identity::session::SessionCredentials,
        token: &str,
        service: &str,
    ) -> HeaderMap {
        signed_headers(
            &creds.access_key_id,
            &creds.secret_access_key,
            service,
            &[("x-amz-security-token", token)],
        )
    }

    #[test]
    fn session_credentials_sign_as_their_identity_until_they_expire() {
        let (v, creds) = session_verifier(SIGNED_AT, SIGNED_AT + 60_000);
        let headers = session_request(&creds, &creds.session_token, "kms");
        let verified = v.verify(&request(&headers, BODY)).unwrap();
        assert_eq!(
            verified.principal.arn(),
            "arn:aws:iam::111122223333:role/k8s/system:serviceaccount:shop:orders"
        );
        assert_eq!(
            verified.principal.groups(),
            ["arn:aws:iam::111122223333:group/k8s/system:serviceaccounts:shop"]
        );
        assert_eq!(verified.scope.account, "111122223333");
        let sts = session_request(&creds, &creds.session_token, "sts");
        assert_eq!(
            v.verify(&request(&sts, BODY)).unwrap().service,
            Service::Sts
        );
        // The session is now open in the cache: the same key id with an altered token is
        // still opened afresh, and refused.
        let mut altered = creds.session_token.clone().into_bytes();
        altered[10] = if altered[10] == b'A' { b'B' } else { b'A' };
        let altered = String::from_utf8(altered).unwrap();
        let headers = session_request(&creds, &altered, "kms");
        assert!(matches!(
            v.verify(&request(&headers, BODY)),
            Err(KmsError::UnrecognizedClient(_))
        ));

        // Past the expiry (the signature itself is still within the clock skew).
        let (late, creds) = session_verifier(SIGNED_AT, SIGNED_AT - 1);
        let headers = session_request(&creds, &creds.session_token, "kms");
        assert!(matches!(
            late.verify(&request(&headers, BODY)),
            Err(KmsError::ExpiredToken(_))
        ));
    }

    #[test]
    fn altered_or_unsigned_session_tokens_are_refused() {
        let (v, creds) = session_verifier(SIGNED_AT, SIGNED_AT + 60_000);
        let mut token = creds.session_token.clone().into_bytes();
        let last = token.len() - 1;
        token[last] = if token[last] == b'A' { b'B' } else { b'A' };
        let altered = String::from_utf8(token).unwrap();
        let headers = session_request(&creds, &altered, "kms");
        assert!(matches!(
            v.verify(&request(&headers, BODY)),
            Err(KmsError::UnrecognizedClient(_))
        ));
        // A valid token sent beside a signature that does not cover it.
        let mut headers = session_request(&creds, &creds.session_token, "kms");
        let auth = headers["authorization"]
            .to_str()
            .unwrap()
            .replace(";x-amz-security-token", "");
        headers.insert("authorization", HeaderValue::from_str(&auth).unwrap());
        assert!(matches!(
            v.verify(&request(&headers, BODY)),
            Err(KmsError::InvalidSignature(_))
        ));
        // Without a session issuer, tokens mean nothing.
        let (plain, _) = verifier(SIGNED_AT);
        let headers = session_request(&creds, &creds.session_token, "kms");
        assert!(matches!(
            plain.verify(&request(&headers, BODY)),
            Err(KmsError::UnrecognizedClient(_))
        ));
    }

    #[test]
    fn dynamic_keys_come_and_go() {
        let (v, _) = verifier(SIGNED_AT);
        let cred = Credential::new(
            "AKIDDYNAMIC",
            Zeroizing::new("dynamic-secret".to_owned()),
            "111122223333",
            None,
        )
        .unwrap()
        .with_principal(Principal::new("arn:aws:iam::111122223333:user/k8s/ci"));
        let signed = signed_headers("AKIDDYNAMIC", "dynamic-secret", "kms", &[]);
        assert!(matches!(
            v.verify(&request(&signed, BODY)),
            Err(KmsError::UnrecognizedClient(_))
        ));
        v.set_dynamic_keys(KeyTable::from([("AKIDDYNAMIC".to_owned(), Arc::new(cred))]));
        assert_eq!(
            v.verify(&request(&signed, BODY)).unwrap().principal.arn(),
            "arn:aws:iam::111122223333:user/k8s/ci"
        );
        // The secret rotated under the same key id: the old secret no longer verifies (its
        // cached signing key belongs to the replaced table), the new one does.
        let rotated = Credential::new(
            "AKIDDYNAMIC",
            Zeroizing::new("rotated-secret".to_owned()),
            "111122223333",
            None,
        )
        .unwrap();
        v.set_dynamic_keys(KeyTable::from([(
            "AKIDDYNAMIC".to_owned(),
            Arc::new(rotated),
        )]));
        assert!(matches!(
            v.verify(&request(&signed, BODY)),
            Err(KmsError::InvalidSignature(_))
        ));
        let fresh = signed_headers("AKIDDYNAMIC", "rotated-secret", "kms", &[]);
        assert!(v.verify(&request(&fresh, BODY)).is_ok());
        v.set_dynamic_keys(KeyTable::new());
        assert!(matches!(
            v.verify(&request(&signed, BODY)),
            Err(KmsError::UnrecognizedClient(_))
        ));
    }

    fn header_map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        map
    }

    fn owned_header_map(pairs: &[(String, String)]) -> HeaderMap {
        let pairs: Vec<(&str, &str)> = pairs
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        header_map(&pairs)
    }

    /// `sign_request` for a `POST /` to kms in us-east-1 at SIGNED_AT, with the test secret.
    fn sign_at(headers: &[(&str, &str)], body: &[u8]) -> Vec<(String, String)> {
        let input = SigningInput {
            method: "POST",
            path: "/",
            query: None,
            headers,
            body,
        };
        sign_request(AKID, SECRET, "us-east-1", "kms", &input, SIGNED_AT)
    }

    fn botocore_headers() -> HeaderMap {
        header_map(&[
            ("host", HOST),
            ("content-type", "application/x-amz-json-1.1"),
            ("x-amz-target", "TrentService.Encrypt"),
            ("x-extra", "  a   b  c "),
            ("x-amz-date", "20261122T123456Z"),
            ("authorization", BOTOCORE_AUTH),
        ])
    }

    fn request<'a>(headers: &'a HeaderMap, body: &'a [u8]) -> SignedRequest<'a> {
        SignedRequest {
            method: "POST",
            path: "/",
            query: None,
            headers,
            body,
        }
    }

    #[test]
    fn derives_the_aws_documentation_signing_key() {
        // docs.aws.amazon.com "Examples of how to derive a signing key for Signature Version 4".
        let key = derive_signing_key(SECRET, "20120215", "us-east-1", "iam");
        let probe = hmac::sign(&key, b"probe");
        let expected_key =
            hex::decode("f4780e2d9f65fa895f9c67b32ce1baf0b0d8a43505a000a1a9e090d414db404d")
                .unwrap();
        let reference = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, &expected_key), b"probe");
        assert_eq!(probe.as_ref(), reference.as_ref());
    }

    #[test]
    fn accepts_a_botocore_signature() {
        let (v, _) = verifier(SIGNED_AT + 60_000);
        let headers = botocore_headers();
        let verified = v.verify(&request(&headers, BODY)).unwrap();
        assert_eq!(verified.scope, Scope::new("111122223333", "eu-west-3"));
        assert_eq!(
            verified.principal.arn(),
            "arn:aws:iam::111122223333:user/alice"
        );
        assert_eq!(verified.service, Service::Kms);
    }

    #[test]
    fn accepts_a_botocore_signature_with_path_and_query() {
        let (v, _) = verifier(SIGNED_AT);
        let headers = header_map(&[
            ("host", HOST),
            ("x-amz-target", "TrentService.ListKeys"),
            ("x-amz-date", "20261122T123456Z"),
            ("authorization", BOTOCORE_AUTH_PATH_QUERY),
        ]);
        let req = SignedRequest {
            method: "POST",
            path: "/a%20b/../c/",
            query: Some("z=1&b=%2Fx&a=2"),
            headers: &headers,
            body: b"",
        };
        v.verify(&req).unwrap();
    }

    #[test]
    fn our_signer_matches_botocore() {
        let base = [
            ("Host", HOST),
            ("Content-Type", "application/x-amz-json-1.1"),
            ("X-Amz-Target", "TrentService.Encrypt"),
            ("X-Extra", "  a   b  c "),
        ];
        let input = SigningInput {
            method: "POST",
            path: "/",
            query: None,
            headers: &base,
            body: BODY,
        };
        let out = sign_request(AKID, SECRET, "eu-west-3", "kms", &input, SIGNED_AT + 999);
        assert_eq!(
            out[0],
            ("x-amz-date".to_owned(), "20261122T123456Z".to_owned())
        );
        assert_eq!(
            out[1],
            ("authorization".to_owned(), BOTOCORE_AUTH.to_owned())
        );
    }

    #[test]
    fn sign_kms_request_round_trips() {
        let (v, _) = verifier(SIGNED_AT);
        let cred = v.credentials().get(AKID).unwrap().clone();
        let headers = sign_kms_request(
            &cred,
            "us-west-2",
            "localhost:4599",
            "ListKeys",
            b"{}",
            SIGNED_AT,
        );
        let map = owned_header_map(&headers);
        let verified = v.verify(&request(&map, b"{}")).unwrap();
        assert_eq!(verified.scope.region, "us-west-2");
        // The cached key gives the same answer the second time.
        v.verify(&request(&map, b"{}")).unwrap();
        assert!(matches!(
            v.verify(&request(&map, b"{ }")),
            Err(KmsError::InvalidSignature(_))
        ));
    }

    #[test]
    fn wrong_secret_is_rejected() {
        let clock = Arc::new(TestClock(AtomicI64::new(SIGNED_AT)));
        let cred = Credential::new(
            AKID,
            Zeroizing::new("not-the-secret".into()),
            "111122223333",
            None,
        )
        .unwrap();
        let v = Verifier::new(Credentials::new([cred]).unwrap(), clock);
        let headers = botocore_headers();
        let err = v.verify(&request(&headers, BODY)).unwrap_err();
        assert!(
            matches!(err, KmsError::InvalidSignature(ref m) if m == MSG_MISMATCH),
            "{err:?}"
        );
    }

    #[test]
    fn tampered_body_is_rejected() {
        let (v, _) = verifier(SIGNED_AT);
        let headers = botocore_headers();
        let tampered = br#"{"KeyId":"alias/my-kez","Plaintext":"aGVsbG8="}"#;
        let err = v.verify(&request(&headers, tampered)).unwrap_err();
        assert!(matches!(err, KmsError::InvalidSignature(_)), "{err:?}");
    }

    #[test]
    fn tampered_signed_header_is_rejected() {
        let (v, _) = verifier(SIGNED_AT);
        let mut headers = botocore_headers();
        headers.insert(
            "x-amz-target",
            HeaderValue::from_static("TrentService.Decrypt"),
        );
        assert!(matches!(
            v.verify(&request(&headers, BODY)),
            Err(KmsError::InvalidSignature(_))
        ));
        // Whitespace inside a value is collapsed, so re-spacing it is not tampering...
        let mut headers = botocore_headers();
        headers.insert("x-extra", HeaderValue::from_static("a b c"));
        v.verify(&request(&headers, BODY)).unwrap();
        // ...but changing it is.
        headers.insert("x-extra", HeaderValue::from_static("a bc"));
        assert!(matches!(
            v.verify(&request(&headers, BODY)),
            Err(KmsError::InvalidSignature(_))
        ));
        // An unsigned header may change freely.
        headers = botocore_headers();
        headers.insert("user-agent", HeaderValue::from_static("anything"));
        v.verify(&request(&headers, BODY)).unwrap();
    }

    #[test]
    fn tampered_signature_is_rejected() {
        let (v, _) = verifier(SIGNED_AT);
        let mut headers = botocore_headers();
        let forged = BOTOCORE_AUTH.replace("641fa", "641fb");
        headers.insert("authorization", HeaderValue::from_str(&forged).unwrap());
        assert!(matches!(
            v.verify(&request(&headers, BODY)),
            Err(KmsError::InvalidSignature(_))
        ));
    }

    #[test]
    fn clock_skew_window_is_five_minutes_either_way() {
        let headers = botocore_headers();
        for (now, ok) in [
            (SIGNED_AT + MAX_SKEW_MILLIS, true),
            (SIGNED_AT - MAX_SKEW_MILLIS, true),
            (SIGNED_AT + MAX_SKEW_MILLIS + 1000, false),
            (SIGNED_AT - MAX_SKEW_MILLIS - 1000, false),
        ] {
            let (v, _) = verifier(now);
            let result = v.verify(&request(&headers, BODY));
            assert_eq!(result.is_ok(), ok, "now={now} {result:?}");
        }
        let (v, clock) = verifier(SIGNED_AT);
        clock.0.store(SIGNED_AT + 10 * 60_000, Ordering::SeqCst);
        let err = v.verify(&request(&headers, BODY)).unwrap_err();
        assert!(
            matches!(err, KmsError::InvalidSignature(ref m) if m.starts_with("Signature expired: 20261122T123456Z is now earlier than 20261122T123956Z")),
            "{err:?}"
        );
        clock.0.store(SIGNED_AT - 10 * 60_000, Ordering::SeqCst);
        let err = v.verify(&request(&headers, BODY)).unwrap_err();
        assert!(
            matches!(err, KmsError::InvalidSignature(ref m) if m.starts_with("Signature not yet current"))
        );
    }

    #[test]
    fn unknown_access_key_is_unrecognized_client() {
        let (v, _) = verifier(SIGNED_AT);
        let mut headers = botocore_headers();
        let other = BOTOCORE_AUTH.replace("AKIDEXAMPLE", "AKIDSOMEONEELSE");
        headers.insert("authorization", HeaderValue::from_str(&other).unwrap());
        let err = v.verify(&request(&headers, BODY)).unwrap_err();
        assert!(matches!(err, KmsError::UnrecognizedClient(ref m) if m == MSG_UNKNOWN_KEY));
        assert_eq!(err.aws_type(), "UnrecognizedClientException");
    }

    /// The hand-read `X-Amz-Date` agrees with `time`'s parser of the same format on valid
    /// dates, calendar edges and malformed text alike, but for a signed year.
    #[test]
    fn amz_date_is_read_as_time_reads_it() {
        let by_time = |text: &str| {
            PrimitiveDateTime::parse(text, AMZ_DATE)
                .ok()
                .map(|t| t.assume_utc().unix_timestamp() * 1000)
        };
        let mut cases = vec![
            "20261122T123456Z",
            "19700101T000000Z",
            "00000101T000000Z",
            "99991231T235959Z",
            "20240229T120000Z",
            "20230229T120000Z",
            "20261131T000000Z",
            "20261301T000000Z",
            "20260001T000000Z",
            "20260100T000000Z",
            "20260101T240000Z",
            "20260101T236000Z",
            "20260101T235960Z",
            "20260101T235959z",
            "20260101t235959Z",
            "20260101T235959",
            "20260101T2359590Z",
            "2026010T1235959Z",
            "2026-01-01T00:00:00Z",
            "+2026101T000000Z",
            "2026 101T000000Z",
            "",
            "\u{e9}0260101T00000Z",
        ];
        // Every day of a leap year and a common one, and days that do not exist, at three
        // times of day.
        let mut generated = Vec::new();
        for year in [2024, 2026] {
            for month in 0..=13 {
                for day in 0..=32 {
                    for time in ["000000", "235959", "120000"] {
                        generated.push(format!("{year}{month:02}{day:02}T{time}Z"));
                    }
                }
            }
        }
        cases.extend(generated.iter().map(String::as_str));
        // The one difference, on purpose: a signed year.
        for signed in ["+20260101T000000Z", "-20260101T000000Z"] {
            assert!(by_time(signed).is_some(), "{signed}");
            assert_eq!(parse_amz_date(signed), None, "{signed}");
        }
        let mut valid = 0;
        for text in cases {
            assert_eq!(parse_amz_date(text), by_time(text), "{text:?}");
            valid += usize::from(by_time(text).is_some());
        }
        // The five valid dates listed, and every real day of 2024 and 2026 three times.
        assert_eq!(valid, 5 + 3 * (366 + 365));
        assert_eq!(parse_amz_date("20261122T123456Z"), Some(SIGNED_AT));
    }

    #[test]
    fn malformed_or_missing_headers() {
        let (v, _) = verifier(SIGNED_AT);
        let mut headers = botocore_headers();
        headers.remove("authorization");
        assert!(matches!(
            v.verify(&request(&headers, BODY)),
            Err(KmsError::MissingAuthenticationToken(_))
        ));

        for bad in [
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20261122/eu-west-3/kms/aws4_request",
            "AWS4-HMAC-SHA256 SignedHeaders=host, Signature=00",
            "AWS4-HMAC-SHA512 Credential=AKIDEXAMPLE/20261122/eu-west-3/kms/aws4_request, SignedHeaders=host, Signature=00",
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20261122/kms/aws4_request, SignedHeaders=host, Signature=00",
            "garbage",
        ] {
            headers.insert("authorization", HeaderValue::from_str(bad).unwrap());
            let err = v.verify(&request(&headers, BODY)).unwrap_err();
            assert!(matches!(err, KmsError::IncompleteSignature(_)), "{bad}: {err:?}");
        }

        let mut headers = botocore_headers();
        headers.remove("x-amz-date");
        let err = v.verify(&request(&headers, BODY)).unwrap_err();
        assert!(matches!(err, KmsError::IncompleteSignature(_)), "{err:?}");

        let wrong_service = BOTOCORE_AUTH.replace("/kms/", "/s3/");
        let mut headers = botocore_headers();
        headers.insert(
            "authorization",
            HeaderValue::from_str(&wrong_service).unwrap(),
        );
        assert!(matches!(
            v.verify(&request(&headers, BODY)),
            Err(KmsError::InvalidSignature(ref m)) if m.contains("'kms'")
        ));

        let wrong_date = BOTOCORE_AUTH.replace("/20261122/", "/20261121/");
        headers.insert("authorization", HeaderValue::from_str(&wrong_date).unwrap());
        assert!(matches!(
            v.verify(&request(&headers, BODY)),
            Err(KmsError::InvalidSignature(_))
        ));
    }

    #[test]
    fn host_and_target_must_be_signed() {
        let (v, _) = verifier(SIGNED_AT);
        let mut pairs = sign_at(&[("host", HOST)], b"{}");
        pairs.push(("host".into(), HOST.into()));
        let mut map = owned_header_map(&pairs);
        // Valid without a target header (the HTTP layer then rejects the missing target)...
        v.verify(&request(&map, b"{}")).unwrap();
        // ...but an unsigned target is refused.
        map.insert(
            "x-amz-target",
            HeaderValue::from_static("TrentService.ListKeys"),
        );
        assert!(matches!(
            v.verify(&request(&map, b"{}")),
            Err(KmsError::InvalidSignature(_))
        ));

        let pairs = sign_at(&[("x-amz-target", "TrentService.ListKeys")], b"{}");
        let mut map = owned_header_map(&pairs);
        map.insert(
            "x-amz-target",
            HeaderValue::from_static("TrentService.ListKeys"),
        );
        map.insert("host", HeaderValue::from_static(HOST));
        assert!(
            matches!(v.verify(&request(&map, b"{}")), Err(KmsError::InvalidSignature(ref m)) if m.contains("Host"))
        );
    }

    #[test]
    fn content_sha256_header_must_match_the_body() {
        let (v, _) = verifier(SIGNED_AT);
        let mut headers = botocore_headers();
        let good = hex::encode(digest::digest(&digest::SHA256, BODY));
        headers.insert(
            "x-amz-content-sha256",
            HeaderValue::from_str(&good).unwrap(),
        );
        v.verify(&request(&headers, BODY)).unwrap();
        headers.insert(
            "x-amz-content-sha256",
            HeaderValue::from_static("UNSIGNED-PAYLOAD"),
        );
        assert!(matches!(
            v.verify(&request(&headers, BODY)),
            Err(KmsError::InvalidSignature(_))
        ));
    }

    #[test]
    fn date_header_is_accepted_when_x_amz_date_is_absent() {
        let (v, _) = verifier(SIGNED_AT);
        let cred = v.credentials().get(AKID).unwrap().clone();
        // Sign with x-amz-date, then move the same instant to `Date:`; the canonical request
        // differs (different header), so recompute it by hand through the signer with `date`.
        let signed = sign_at(
            &[("host", HOST), ("date", "Sun, 22 Nov 2026 12:34:56 GMT")],
            b"{}",
        );
        let auth = signed[1].1.replace(";x-amz-date", "");
        // Our signer always adds x-amz-date, so the signature above covers it; rebuild the
        // expected one for the Date-only form with the internal pieces.
        let payload = hex::encode(digest::digest(&digest::SHA256, b"{}"));
        let date_value = "Sun, 22 Nov 2026 12:34:56 GMT";
        let canonical = canonical_request(
            "POST",
            "/",
            None,
            &["date", "host"],
            "date;host",
            |name, out| {
                out.extend_from_slice(if name == "date" { date_value } else { HOST }.as_bytes())
            },
            &payload,
        );
        let key = derive_signing_key(cred.secret_access_key(), "20261122", "us-east-1", "kms");
        let credential = format!("{AKID}/20261122/us-east-1/kms/aws4_request");
        let sig = signature(&key, "20261122T123456Z", &credential, &canonical);
        let auth = format!(
            "{}Signature={sig}",
            &auth[..auth.find("Signature=").unwrap()]
        );
        let map = header_map(&[
            ("host", HOST),
            ("date", date_value),
            ("authorization", &auth),
        ]);
        v.verify(&request(&map, b"{}")).unwrap();
    }

    #[test]
    fn header_values_are_found_as_get_all_finds_them() {
        let mut headers = HeaderMap::new();
        headers.append("x-amz-meta", HeaderValue::from_static("first"));
        headers.append("host", HeaderValue::from_static(HOST));
        headers.append("X-Amz-Meta", HeaderValue::from_static("second"));
        headers.append("content-type", HeaderValue::from_static("application/json"));
        headers.append("x-amz-meta", HeaderValue::from_static("third"));
        // A client may write a signed header's name in any case; `get_all` folds it.
        for name in [
            "x-amz-meta",
            "X-Amz-Meta",
            "host",
            "HOST",
            "content-type",
            "x-amz-date",
        ] {
            let expected: Vec<&[u8]> = headers.get_all(name).iter().map(|v| v.as_bytes()).collect();
            assert_eq!(
                values_of(&headers, name).collect::<Vec<_>>(),
                expected,
                "{name}"
            );
        }
        assert_eq!(values_of(&headers, "x-amz-meta").count(), 3);
    }

    #[test]
    fn region_names_are_checked() {
        for good in [
            "us-east-1",
            "eu-west-3",
            "us-gov-west-1",
            "cn-north-1",
            "ap-southeast-2",
        ] {
            assert!(is_region_name(good), "{good}");
        }
        for bad in [
            "",
            "us-east-1:999999999999",
            "US-EAST-1",
            "us east 1",
            "useast1",
            "us--east-1",
            "-us-east-1",
            "1us-east-1",
            "us-east-1-",
            &"a-".repeat(20),
        ] {
            assert!(!is_region_name(bad), "{bad}");
        }
    }

    #[test]
    fn a_malformed_region_is_refused_before_the_body() {
        let (v, _) = verifier(SIGNED_AT);
        let input = SigningInput {
            method: "POST",
            path: "/",
            query: None,
            headers: &[("host", HOST)],
            body: b"{}",
        };
        let signed = sign_request(
            AKID,
            SECRET,
            "us-east-1:999999999999",
            "kms",
            &input,
            SIGNED_AT,
        );
        let mut pairs: Vec<(String, String)> = vec![("host".into(), HOST.into())];
        pairs.extend(signed);
        let map = owned_header_map(&pairs);
        assert!(matches!(
            v.check_head(&map),
            Err(KmsError::IncompleteSignature(_))
        ));
        assert!(matches!(
            v.verify(&request(&map, b"{}")),
            Err(KmsError::IncompleteSignature(_))
        ));
    }
}
