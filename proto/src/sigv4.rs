//! AWS Signature Version 4 (header form, as every AWS SDK and the CLI send to KMS): the signer,
//! and the canonical request, key derivation and signature that a verifier shares with it.

use aws_lc_rs::{digest, hmac};
use time::format_description::BorrowedFormatItem;
use time::macros::format_description;
use time::OffsetDateTime;
use zeroize::Zeroizing;

pub const ALGORITHM: &str = "AWS4-HMAC-SHA256";
/// The service name KMS requests are scoped to.
pub const SERVICE: &str = "kms";
pub const TERMINATOR: &str = "aws4_request";

/// `X-Amz-Date`'s ISO-8601 basic form.
pub const AMZ_DATE: &[BorrowedFormatItem<'static>] =
    format_description!("[year][month][day]T[hour][minute][second]Z");

/// Milliseconds since the Unix epoch.
pub type Millis = i64;

/// Lowercase hex, as SigV4 writes hashes and signatures (three times per request).
pub fn hex_lower(bytes: &[u8]) -> String {
    let mut out = Vec::with_capacity(bytes.len() * 2);
    push_hex_lower(&mut out, bytes);
    // Hex digits are ASCII, so this is never the empty default.
    String::from_utf8(out).unwrap_or_default()
}

/// Into bytes, not a `String` (which checks each pushed `char`'s UTF-8 length), sized once and
/// then filled.
fn push_hex_lower(out: &mut Vec<u8>, bytes: &[u8]) {
    let start = out.len();
    out.resize(start + 2 * bytes.len(), 0);
    // Sized to the input just above: the one thing `encode_to_slice` checks.
    let _ = hex::encode_to_slice(bytes, &mut out[start..]);
}

/// The `X-Amz-Target` of a KMS operation is this prefix and the operation's name.
pub const TARGET_PREFIX: &str = "TrentService.";
/// The content type of the AWS JSON 1.1 protocol.
pub const CONTENT_TYPE_JSON: &str = "application/x-amz-json-1.1";

pub fn format_amz_date(millis: Millis) -> String {
    OffsetDateTime::from_unix_timestamp(millis.div_euclid(1000))
        .ok()
        .and_then(|t| t.format(AMZ_DATE).ok())
        .unwrap_or_else(|| "19700101T000000Z".to_owned())
}

pub fn derive_signing_key(secret: &str, date: &str, region: &str, service: &str) -> hmac::Key {
    let mut seed = Zeroizing::new(String::with_capacity(4 + secret.len()));
    seed.push_str("AWS4");
    seed.push_str(secret);
    let k_date = hmac::sign(
        &hmac::Key::new(hmac::HMAC_SHA256, seed.as_bytes()),
        date.as_bytes(),
    );
    let k_region = hmac::sign(
        &hmac::Key::new(hmac::HMAC_SHA256, k_date.as_ref()),
        region.as_bytes(),
    );
    let k_service = hmac::sign(
        &hmac::Key::new(hmac::HMAC_SHA256, k_region.as_ref()),
        service.as_bytes(),
    );
    let k_signing = hmac::sign(
        &hmac::Key::new(hmac::HMAC_SHA256, k_service.as_ref()),
        TERMINATOR.as_bytes(),
    );
    hmac::Key::new(hmac::HMAC_SHA256, k_signing.as_ref())
}

/// Hex HMAC of the string to sign.
pub fn signature(key: &hmac::Key, amz_date: &str, credential: &str, canonical: &[u8]) -> String {
    // The scope is the credential minus the access key id.
    let scope = credential.split_once('/').map_or(credential, |(_, s)| s);
    // Built by hand: on every request, where `format!` showed in profiles.
    let mut string_to_sign =
        Vec::with_capacity(ALGORITHM.len() + amz_date.len() + scope.len() + 3 + 64);
    for part in [ALGORITHM, "\n", amz_date, "\n", scope, "\n"] {
        string_to_sign.extend_from_slice(part.as_bytes());
    }
    push_hex_lower(
        &mut string_to_sign,
        digest::digest(&digest::SHA256, canonical).as_ref(),
    );
    hex_lower(hmac::sign(key, &string_to_sign).as_ref())
}

/// The canonical request, byte for byte as the AWS SDKs build it. `header_value` appends the
/// canonical value of one (lowercase) header name.
pub fn canonical_request(
    method: &str,
    path: &str,
    query: Option<&str>,
    signed: &[&str],
    signed_headers: &str,
    header_value: impl Fn(&str, &mut Vec<u8>),
    payload_hash: &str,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(512);
    out.extend_from_slice(method.as_bytes());
    out.push(b'\n');
    canonical_uri(&mut out, path);
    out.push(b'\n');
    canonical_query(&mut out, query.unwrap_or(""));
    out.push(b'\n');
    for name in signed {
        out.extend_from_slice(name.as_bytes());
        out.push(b':');
        header_value(name, &mut out);
        out.push(b'\n');
    }
    out.push(b'\n');
    out.extend_from_slice(signed_headers.as_bytes());
    out.push(b'\n');
    out.extend_from_slice(payload_hash.as_bytes());
    out
}

/// Every value of one header, each canonicalized, joined by commas.
pub fn push_header_values<'v>(out: &mut Vec<u8>, values: impl Iterator<Item = &'v [u8]>) {
    for (i, value) in values.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        push_header_value(out, value);
    }
}

/// Trimmed, with runs of whitespace collapsed to one space (botocore: `' '.join(v.split())`).
pub fn push_header_value(out: &mut Vec<u8>, value: &[u8]) {
    // Nearly every value has nothing to trim or collapse: copied whole rather than byte by
    // byte, on every signed header of every request.
    let is_space = |b: &u8| *b == b' ' || *b == b'\t';
    let canonical = !value.first().is_some_and(is_space)
        && !value.last().is_some_and(is_space)
        && !value.contains(&b'\t')
        && !value.windows(2).any(|pair| pair == b"  ");
    if canonical {
        out.extend_from_slice(value);
        return;
    }
    let mut pending_space = false;
    let mut wrote = false;
    for &b in value {
        if b == b' ' || b == b'\t' {
            pending_space = wrote;
        } else {
            if pending_space {
                out.push(b' ');
                pending_space = false;
            }
            out.push(b);
            wrote = true;
        }
    }
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~')
}

fn percent_encode(out: &mut Vec<u8>, bytes: &[u8], keep_slash: bool) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in bytes {
        if is_unreserved(b) || (keep_slash && b == b'/') {
            out.push(b);
        } else {
            out.extend_from_slice(&[b'%', HEX[(b >> 4) as usize], HEX[(b & 15) as usize]]);
        }
    }
}

fn percent_decode(s: &str) -> Vec<u8> {
    fn hex_digit(b: u8) -> Option<u8> {
        (b as char).to_digit(16).map(|d| d as u8)
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(hi), Some(lo)) = (hex_digit(bytes[i + 1]), hex_digit(bytes[i + 2])) {
                out.push(hi << 4 | lo);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    out
}

/// Non-S3 services sign the normalized path encoded once more on top of its wire form.
fn canonical_uri(out: &mut Vec<u8>, path: &str) {
    let mut segments: Vec<&str> = Vec::new();
    for segment in path.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    let mut normalized = String::with_capacity(path.len() + 1);
    for s in &segments {
        normalized.push('/');
        normalized.push_str(s);
    }
    if normalized.is_empty() || (path.ends_with('/') && !segments.is_empty()) {
        normalized.push('/');
    }
    percent_encode(out, normalized.as_bytes(), true);
}

fn canonical_query(out: &mut Vec<u8>, query: &str) {
    let mut pairs: Vec<(Vec<u8>, Vec<u8>)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let (mut ek, mut ev) = (Vec::new(), Vec::new());
            percent_encode(&mut ek, &percent_decode(k), false);
            percent_encode(&mut ev, &percent_decode(v), false);
            (ek, ev)
        })
        .collect();
    pairs.sort();
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push(b'&');
        }
        out.extend_from_slice(k);
        out.push(b'=');
        out.extend_from_slice(v);
    }
}

/// A request to sign. `headers` must include `host`; every header given is signed.
pub struct SigningInput<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub headers: &'a [(&'a str, &'a str)],
    pub body: &'a [u8],
}

/// Sign a request at time `now` and return the headers to add: `x-amz-date` and
/// `authorization`.
pub fn sign_request(
    access_key_id: &str,
    secret_access_key: &str,
    region: &str,
    service: &str,
    input: &SigningInput<'_>,
    now: Millis,
) -> Vec<(String, String)> {
    let amz_date = format_amz_date(now);
    let mut headers: Vec<(String, &str)> = input
        .headers
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), *v))
        .filter(|(k, _)| k != "x-amz-date" && k != "authorization")
        .collect();
    headers.push(("x-amz-date".to_owned(), amz_date.as_str()));
    headers.sort_by(|a, b| a.0.cmp(&b.0));
    let mut names: Vec<&str> = headers.iter().map(|(k, _)| k.as_str()).collect();
    names.dedup();
    let signed_headers = names.join(";");
    let payload_hash = hex_lower(digest::digest(&digest::SHA256, input.body).as_ref());
    let canonical = canonical_request(
        input.method,
        input.path,
        input.query,
        &names,
        &signed_headers,
        |name, out| {
            let values = headers.iter().filter(|(k, _)| k == name);
            push_header_values(out, values.map(|(_, v)| v.as_bytes()))
        },
        &payload_hash,
    );
    let date = &amz_date[..8];
    let credential = format!("{access_key_id}/{date}/{region}/{service}/{TERMINATOR}");
    let key = derive_signing_key(secret_access_key, date, region, service);
    let sig = signature(&key, &amz_date, &credential, &canonical);
    let authorization = format!(
        "{ALGORITHM} Credential={credential}, SignedHeaders={signed_headers}, Signature={sig}"
    );
    vec![
        ("x-amz-date".to_owned(), amz_date),
        ("authorization".to_owned(), authorization),
    ]
}

/// Every header of a signed KMS JSON request to `POST /` on `host`.
pub fn sign_kms_request(
    access_key_id: &str,
    secret_access_key: &str,
    region: &str,
    host: &str,
    operation: &str,
    body: &[u8],
    now: Millis,
) -> Vec<(String, String)> {
    sign_kms_request_with_session(
        access_key_id,
        secret_access_key,
        None,
        region,
        host,
        operation,
        body,
        now,
    )
}

/// The header that carries the session token of temporary credentials.
pub const SECURITY_TOKEN_HEADER: &str = "x-amz-security-token";

/// [`sign_kms_request`] for temporary credentials: `session_token` is sent as
/// `x-amz-security-token` and signed with the other headers, as the AWS SDKs sign it.
/// (A separate function so the many callers with long-term keys keep their signature.)
#[allow(clippy::too_many_arguments)]
pub fn sign_kms_request_with_session(
    access_key_id: &str,
    secret_access_key: &str,
    session_token: Option<&str>,
    region: &str,
    host: &str,
    operation: &str,
    body: &[u8],
    now: Millis,
) -> Vec<(String, String)> {
    let target = format!("{TARGET_PREFIX}{operation}");
    sign_json_request(
        access_key_id,
        secret_access_key,
        session_token,
        region,
        host,
        &target,
        body,
        now,
    )
}

/// [`sign_kms_request_with_session`] with the whole `X-Amz-Target` given: for kubekms's own
/// operation beyond AWS KMS's (`crate::changes::LIST_KEY_CHANGES_TARGET`), signed for service
/// `kms` like the rest.
#[allow(clippy::too_many_arguments)]
pub fn sign_json_request(
    access_key_id: &str,
    secret_access_key: &str,
    session_token: Option<&str>,
    region: &str,
    host: &str,
    target: &str,
    body: &[u8],
    now: Millis,
) -> Vec<(String, String)> {
    let mut base = vec![
        ("host", host),
        ("content-type", CONTENT_TYPE_JSON),
        ("x-amz-target", target),
    ];
    if let Some(token) = session_token {
        base.push((SECURITY_TOKEN_HEADER, token));
    }
    let input = SigningInput {
        method: "POST",
        path: "/",
        query: None,
        headers: &base,
        body,
    };
    let mut out: Vec<(String, String)> = base
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    out.extend(sign_request(
        access_key_id,
        secret_access_key,
        region,
        SERVICE,
        &input,
        now,
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const AKID: &str = "ASIAEXAMPLE";
    const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
    const BODY: &[u8] = br#"{"KeyId":"alias/k"}"#;
    /// 2026-11-22T12:34:56Z
    const AT: Millis = 1_795_350_896_000;

    fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn a_session_token_is_sent_and_signed() {
        let plain = sign_kms_request(AKID, SECRET, "us-east-1", "h:1", "DescribeKey", BODY, AT);
        let with = sign_kms_request_with_session(
            AKID,
            SECRET,
            Some("TOKEN"),
            "us-east-1",
            "h:1",
            "DescribeKey",
            BODY,
            AT,
        );
        assert_eq!(header(&plain, SECURITY_TOKEN_HEADER), None);
        assert_eq!(header(&with, SECURITY_TOKEN_HEADER), Some("TOKEN"));
        let auth = header(&with, "authorization").unwrap();
        assert!(
            auth.contains(
                "SignedHeaders=content-type;host;x-amz-date;x-amz-security-token;x-amz-target,"
            ),
            "{auth}"
        );
        assert!(auth.starts_with(
            "AWS4-HMAC-SHA256 Credential=ASIAEXAMPLE/20261122/us-east-1/kms/aws4_request"
        ));
        // The token is part of what is signed: another token, another signature.
        let other = sign_kms_request_with_session(
            AKID,
            SECRET,
            Some("OTHER"),
            "us-east-1",
            "h:1",
            "DescribeKey",
            BODY,
            AT,
        );
        assert_ne!(header(&other, "authorization"), Some(auth));
        // Without a token the result is what it always was.
        assert_eq!(
            sign_kms_request_with_session(
                AKID,
                SECRET,
                None,
                "us-east-1",
                "h:1",
                "DescribeKey",
                BODY,
                AT
            ),
            plain
        );
    }

    #[test]
    fn hex_is_lowercase_two_digits_per_byte() {
        let all: Vec<u8> = (0..=255).collect();
        let expected: String = all.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex_lower(&all), expected);
        assert_eq!(hex_lower(&[]), "");
    }

    /// Values with and without anything to trim or collapse come out as botocore writes them:
    /// `' '.join(value.split())` over spaces and tabs.
    #[test]
    fn header_values_are_trimmed_and_collapsed_as_botocore_does() {
        let botocore = |value: &str| {
            value
                .split([' ', '\t'])
                .filter(|word| !word.is_empty())
                .collect::<Vec<_>>()
                .join(" ")
        };
        for value in [
            "",
            " ",
            "\t",
            "a",
            "application/x-amz-json-1.1",
            "a b c",
            "  a   b  c ",
            " a",
            "a ",
            "a\tb",
            "a \tb",
            "a  b",
            "\ta b\t",
            "a b  ",
        ] {
            let mut out = b"x:".to_vec();
            push_header_value(&mut out, value.as_bytes());
            assert_eq!(
                out,
                format!("x:{}", botocore(value)).as_bytes(),
                "{value:?}"
            );
        }
    }
}
