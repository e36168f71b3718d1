//! The operator's one error type. Engine errors keep their AWS exception name, so conditions and
//! events can say exactly what the engine refused.

use kubekms_engine::KmsError;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A call to the Kubernetes API failed.
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),

    /// The engine refused or failed an operation.
    #[error("engine {op}: {}: {source}", source.aws_type())]
    Kms {
        op: &'static str,
        #[source]
        source: KmsError,
    },

    /// The engine answered with JSON we did not expect (a bug on one side or the other).
    #[error("engine {op}: unexpected response: {source}")]
    Decode {
        op: &'static str,
        #[source]
        source: serde_json::Error,
    },

    /// The object asks for something that cannot be done; it waits for a change.
    #[error("invalid spec: {0}")]
    InvalidSpec(String),

    /// Start-up configuration (flags, files, store).
    #[error("{0}")]
    Config(String),

    #[error("engine: {0}")]
    Engine(#[from] KmsError),

    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// The AWS exception name when the engine refused the call.
    pub fn aws_type(&self) -> Option<&'static str> {
        match self {
            Error::Kms { source, .. } => Some(source.aws_type()),
            _ => None,
        }
    }

    pub fn is_not_found(&self) -> bool {
        self.aws_type() == Some("NotFoundException")
    }

    /// A stable reason for the Warning event this error becomes.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Kube(_) => "KubernetesApiError",
            Error::Kms { .. } | Error::Decode { .. } | Error::Engine(_) => "EngineError",
            Error::InvalidSpec(_) => "InvalidSpec",
            Error::Config(_) | Error::Io { .. } => "ConfigError",
        }
    }

    /// The error and its causes on one line, for events and conditions.
    pub fn chain(&self) -> String {
        let mut out = self.to_string();
        let mut source = std::error::Error::source(self);
        while let Some(e) = source {
            let text = e.to_string();
            if !out.contains(&text) {
                out.push_str(": ");
                out.push_str(&text);
            }
            source = e.source();
        }
        out
    }
}
