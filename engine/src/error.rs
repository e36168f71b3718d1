//! The engine's one error type. Every variant maps to an AWS KMS exception name, so the wire
//! layer never has to guess, and messages never carry key material or plaintext.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum KmsError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    Disabled(String),
    #[error("{0}")]
    InvalidState(String),
    #[error("{0}")]
    InvalidKeyUsage(String),
    #[error("{0}")]
    Validation(String),
    #[error("{0}")]
    InvalidArn(String),
    #[error("{0}")]
    InvalidAliasName(String),
    #[error("{0}")]
    InvalidMarker(String),
    #[error("{0}")]
    InvalidGrantToken(String),
    #[error("{0}")]
    InvalidImportToken(String),
    #[error("{0}")]
    IncorrectKeyMaterial(String),
    #[error("{0}")]
    IncorrectKey(String),
    #[error("{0}")]
    ExpiredImportToken(String),
    #[error("the ciphertext is invalid, was tampered with, or does not match the key or encryption context")]
    InvalidCiphertext,
    #[error("{0}")]
    KmsInvalidSignature(String),
    #[error("{0}")]
    KmsInvalidMac(String),
    #[error("{0}")]
    LimitExceeded(String),
    #[error("{0}")]
    MalformedPolicyDocument(String),
    #[error("{0}")]
    Tag(String),
    #[error("{0}")]
    UnsupportedOperation(String),
    #[error("{0}")]
    DependencyTimeout(String),
    #[error("{0}")]
    AccessDenied(String),
    /// A DryRun request that would have been allowed.
    #[error("{0}")]
    DryRunOperation(String),
    /// Temporary credentials, or a web identity token, past their expiry.
    #[error("{0}")]
    ExpiredToken(String),
    /// A web identity token the cluster does not accept (STS).
    #[error("{0}")]
    InvalidIdentityToken(String),
    /// The cluster could not be asked about a web identity token (STS).
    #[error("{0}")]
    IdpCommunication(String),
    #[error("{0}")]
    UnrecognizedClient(String),
    #[error("{0}")]
    InvalidSignature(String),
    #[error("{0}")]
    IncompleteSignature(String),
    #[error("{0}")]
    MissingAuthenticationToken(String),
    #[error("{0}")]
    UnknownOperation(String),
    #[error("{0}")]
    SerializationFailure(String),
    /// The request body did not arrive in time.
    #[error("{0}")]
    RequestTimeout(String),
    /// An internal failure (crypto library, an impossible state). The message is safe to show.
    #[error("{0}")]
    Internal(String),
    /// A failure of something the engine depends on (the disk, the key database, the
    /// Kubernetes API, a file). The client sees `context`; the source stays attached for logs.
    #[error("{context}")]
    Dependency {
        context: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },
}

impl KmsError {
    /// The `__type` that botocore and the AWS SDKs match on.
    pub fn aws_type(&self) -> &'static str {
        match self {
            KmsError::NotFound(_) => "NotFoundException",
            KmsError::AlreadyExists(_) => "AlreadyExistsException",
            KmsError::Disabled(_) => "DisabledException",
            KmsError::InvalidState(_) => "KMSInvalidStateException",
            KmsError::InvalidKeyUsage(_) => "InvalidKeyUsageException",
            KmsError::Validation(_) => "ValidationException",
            KmsError::InvalidArn(_) => "InvalidArnException",
            KmsError::InvalidAliasName(_) => "InvalidAliasNameException",
            KmsError::InvalidMarker(_) => "InvalidMarkerException",
            KmsError::InvalidGrantToken(_) => "InvalidGrantTokenException",
            KmsError::InvalidImportToken(_) => "InvalidImportTokenException",
            KmsError::IncorrectKeyMaterial(_) => "IncorrectKeyMaterialException",
            KmsError::IncorrectKey(_) => "IncorrectKeyException",
            KmsError::ExpiredImportToken(_) => "ExpiredImportTokenException",
            KmsError::InvalidCiphertext => "InvalidCiphertextException",
            KmsError::KmsInvalidSignature(_) => "KMSInvalidSignatureException",
            KmsError::KmsInvalidMac(_) => "KMSInvalidMacException",
            KmsError::LimitExceeded(_) => "LimitExceededException",
            KmsError::MalformedPolicyDocument(_) => "MalformedPolicyDocumentException",
            KmsError::Tag(_) => "TagException",
            KmsError::UnsupportedOperation(_) => "UnsupportedOperationException",
            KmsError::DependencyTimeout(_) => "DependencyTimeoutException",
            KmsError::AccessDenied(_) => "AccessDeniedException",
            KmsError::DryRunOperation(_) => "DryRunOperationException",
            KmsError::ExpiredToken(_) => "ExpiredTokenException",
            KmsError::InvalidIdentityToken(_) => "InvalidIdentityToken",
            KmsError::IdpCommunication(_) => "IDPCommunicationError",
            KmsError::UnrecognizedClient(_) => "UnrecognizedClientException",
            KmsError::InvalidSignature(_) => "InvalidSignatureException",
            KmsError::IncompleteSignature(_) => "IncompleteSignature",
            KmsError::MissingAuthenticationToken(_) => "MissingAuthenticationTokenException",
            KmsError::UnknownOperation(_) => "UnknownOperationException",
            KmsError::SerializationFailure(_) => "SerializationException",
            KmsError::RequestTimeout(_) => "RequestTimeoutException",
            KmsError::Internal(_) | KmsError::Dependency { .. } => "KMSInternalException",
        }
    }

    /// The error an answer's `{"__type", "message"}` stands for: the inverse of
    /// [`KmsError::aws_type`], so a client of the engine's HTTP API matches refusals by variant
    /// as an in-process caller does. `__type` may carry botocore's namespace prefix
    /// (`com.amazonaws.kms#NotFoundException`) or a `:`-suffix (as some gateways add). Both
    /// internal variants answer `KMSInternalException` and come back as
    /// [`KmsError::Internal`]; a type the engine never sends becomes `Internal` naming it.
    pub fn from_aws_type(aws_type: &str, message: impl Into<String>) -> Self {
        let name = aws_type.rsplit('#').next().unwrap_or(aws_type);
        let name = name.split(':').next().unwrap_or(name);
        let m = message.into();
        match name {
            "NotFoundException" => KmsError::NotFound(m),
            "AlreadyExistsException" => KmsError::AlreadyExists(m),
            "DisabledException" => KmsError::Disabled(m),
            "KMSInvalidStateException" => KmsError::InvalidState(m),
            "InvalidKeyUsageException" => KmsError::InvalidKeyUsage(m),
            "ValidationException" => KmsError::Validation(m),
            "InvalidArnException" => KmsError::InvalidArn(m),
            "InvalidAliasNameException" => KmsError::InvalidAliasName(m),
            "InvalidMarkerException" => KmsError::InvalidMarker(m),
            "InvalidGrantTokenException" => KmsError::InvalidGrantToken(m),
            "InvalidImportTokenException" => KmsError::InvalidImportToken(m),
            "IncorrectKeyMaterialException" => KmsError::IncorrectKeyMaterial(m),
            "IncorrectKeyException" => KmsError::IncorrectKey(m),
            "ExpiredImportTokenException" => KmsError::ExpiredImportToken(m),
            // Its message is fixed: the engine never says more about a bad ciphertext.
            "InvalidCiphertextException" => KmsError::InvalidCiphertext,
            "KMSInvalidSignatureException" => KmsError::KmsInvalidSignature(m),
            "KMSInvalidMacException" => KmsError::KmsInvalidMac(m),
            "LimitExceededException" => KmsError::LimitExceeded(m),
            "MalformedPolicyDocumentException" => KmsError::MalformedPolicyDocument(m),
            "TagException" => KmsError::Tag(m),
            "UnsupportedOperationException" => KmsError::UnsupportedOperation(m),
            "DependencyTimeoutException" => KmsError::DependencyTimeout(m),
            "AccessDeniedException" => KmsError::AccessDenied(m),
            "DryRunOperationException" => KmsError::DryRunOperation(m),
            "ExpiredTokenException" => KmsError::ExpiredToken(m),
            "InvalidIdentityToken" => KmsError::InvalidIdentityToken(m),
            "IDPCommunicationError" => KmsError::IdpCommunication(m),
            "UnrecognizedClientException" => KmsError::UnrecognizedClient(m),
            "InvalidSignatureException" => KmsError::InvalidSignature(m),
            "IncompleteSignature" => KmsError::IncompleteSignature(m),
            "MissingAuthenticationTokenException" => KmsError::MissingAuthenticationToken(m),
            "UnknownOperationException" => KmsError::UnknownOperation(m),
            "SerializationException" => KmsError::SerializationFailure(m),
            "RequestTimeoutException" => KmsError::RequestTimeout(m),
            "KMSInternalException" => KmsError::Internal(m),
            other => KmsError::Internal(format!("{}: {m}", shown(other))),
        }
    }

    /// HTTP status: AWS answers client faults with 400 and its own faults with 500.
    pub fn http_status(&self) -> u16 {
        match self {
            KmsError::Internal(_)
            | KmsError::Dependency { .. }
            | KmsError::DependencyTimeout(_) => 500,
            KmsError::RequestTimeout(_) => 408,
            // AWS answers a dry run with 412 Precondition Failed.
            KmsError::DryRunOperation(_) => 412,
            _ => 400,
        }
    }

    pub fn validation(msg: impl Into<String>) -> Self {
        KmsError::Validation(msg.into())
    }

    pub fn internal(msg: impl Into<String>) -> Self {
        KmsError::Internal(msg.into())
    }

    /// A dependency's failure, with what was being done.
    pub fn dependency(
        context: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
    ) -> Self {
        KmsError::Dependency {
            context: context.into(),
            source: source.into(),
        }
    }

    /// The error and its causes on one line, for logs (not for clients).
    pub fn chain(&self) -> String {
        let mut out = self.to_string();
        let mut source = std::error::Error::source(self);
        while let Some(e) = source {
            out.push_str(": ");
            out.push_str(&e.to_string());
            source = e.source();
        }
        out
    }
}

pub type Result<T, E = KmsError> = std::result::Result<T, E>;

/// The longest piece of untrusted text (a header value, an unknown operation name) that goes
/// into a message or a log line.
pub const MAX_SHOWN: usize = 64;

/// Untrusted text as it may appear in a message or log: at most [`MAX_SHOWN`] characters, with
/// anything but ASCII letters, digits and `.,:;/+=_-` replaced by `?`, and `...` when cut.
pub fn shown(text: &str) -> std::borrow::Cow<'_, str> {
    let clean = |c: char| c.is_ascii_alphanumeric() || ".,:;/+=_-".contains(c);
    if text.len() <= MAX_SHOWN && text.chars().all(clean) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out: String = text
        .chars()
        .take(MAX_SHOWN)
        .map(|c| if clean(c) { c } else { '?' })
        .collect();
    if text.chars().nth(MAX_SHOWN).is_some() {
        out.push_str("...");
    }
    std::borrow::Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One error of every variant. The match makes a new variant a compile error here until it
    /// is added to the list (and so to the round trip below).
    fn every_variant() -> Vec<KmsError> {
        let m = || "why".to_owned();
        let all = vec![
            KmsError::NotFound(m()),
            KmsError::AlreadyExists(m()),
            KmsError::Disabled(m()),
            KmsError::InvalidState(m()),
            KmsError::InvalidKeyUsage(m()),
            KmsError::Validation(m()),
            KmsError::InvalidArn(m()),
            KmsError::InvalidAliasName(m()),
            KmsError::InvalidMarker(m()),
            KmsError::InvalidGrantToken(m()),
            KmsError::InvalidImportToken(m()),
            KmsError::IncorrectKeyMaterial(m()),
            KmsError::IncorrectKey(m()),
            KmsError::ExpiredImportToken(m()),
            KmsError::InvalidCiphertext,
            KmsError::KmsInvalidSignature(m()),
            KmsError::KmsInvalidMac(m()),
            KmsError::LimitExceeded(m()),
            KmsError::MalformedPolicyDocument(m()),
            KmsError::Tag(m()),
            KmsError::UnsupportedOperation(m()),
            KmsError::DependencyTimeout(m()),
            KmsError::AccessDenied(m()),
            KmsError::DryRunOperation(m()),
            KmsError::ExpiredToken(m()),
            KmsError::InvalidIdentityToken(m()),
            KmsError::IdpCommunication(m()),
            KmsError::UnrecognizedClient(m()),
            KmsError::InvalidSignature(m()),
            KmsError::IncompleteSignature(m()),
            KmsError::MissingAuthenticationToken(m()),
            KmsError::UnknownOperation(m()),
            KmsError::SerializationFailure(m()),
            KmsError::RequestTimeout(m()),
            KmsError::Internal(m()),
            KmsError::dependency("why", std::io::Error::other("disk")),
        ];
        for e in &all {
            match e {
                KmsError::NotFound(_)
                | KmsError::AlreadyExists(_)
                | KmsError::Disabled(_)
                | KmsError::InvalidState(_)
                | KmsError::InvalidKeyUsage(_)
                | KmsError::Validation(_)
                | KmsError::InvalidArn(_)
                | KmsError::InvalidAliasName(_)
                | KmsError::InvalidMarker(_)
                | KmsError::InvalidGrantToken(_)
                | KmsError::InvalidImportToken(_)
                | KmsError::IncorrectKeyMaterial(_)
                | KmsError::IncorrectKey(_)
                | KmsError::ExpiredImportToken(_)
                | KmsError::InvalidCiphertext
                | KmsError::KmsInvalidSignature(_)
                | KmsError::KmsInvalidMac(_)
                | KmsError::LimitExceeded(_)
                | KmsError::MalformedPolicyDocument(_)
                | KmsError::Tag(_)
                | KmsError::UnsupportedOperation(_)
                | KmsError::DependencyTimeout(_)
                | KmsError::AccessDenied(_)
                | KmsError::DryRunOperation(_)
                | KmsError::ExpiredToken(_)
                | KmsError::InvalidIdentityToken(_)
                | KmsError::IdpCommunication(_)
                | KmsError::UnrecognizedClient(_)
                | KmsError::InvalidSignature(_)
                | KmsError::IncompleteSignature(_)
                | KmsError::MissingAuthenticationToken(_)
                | KmsError::UnknownOperation(_)
                | KmsError::SerializationFailure(_)
                | KmsError::RequestTimeout(_)
                | KmsError::Internal(_)
                | KmsError::Dependency { .. } => {}
            }
        }
        all
    }

    #[test]
    fn every_variant_comes_back_from_its_wire_form() {
        for e in every_variant() {
            let back = KmsError::from_aws_type(e.aws_type(), e.to_string());
            assert_eq!(back.aws_type(), e.aws_type(), "{e:?}");
            assert_eq!(back.to_string(), e.to_string(), "{e:?}");
            assert_eq!(back.http_status(), e.http_status(), "{e:?}");
            // The internal variants collapse into one; every other comes back as itself.
            if !matches!(e, KmsError::Dependency { .. }) {
                assert_eq!(
                    std::mem::discriminant(&back),
                    std::mem::discriminant(&e),
                    "{e:?}"
                );
            }
        }
    }

    #[test]
    fn prefixed_and_unknown_types() {
        assert!(matches!(
            KmsError::from_aws_type("com.amazonaws.kms#NotFoundException", "gone"),
            KmsError::NotFound(m) if m == "gone"
        ));
        assert!(matches!(
            KmsError::from_aws_type("AccessDeniedException:http://internal.amazon.com/", "no"),
            KmsError::AccessDenied(_)
        ));
        let unknown = KmsError::from_aws_type("ThrottlingException", "slow down");
        assert_eq!(unknown.aws_type(), "KMSInternalException");
        assert_eq!(unknown.to_string(), "ThrottlingException: slow down");
    }
}
