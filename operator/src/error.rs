//! The operator's one error type. Engine errors keep the engine's error (matched by variant;
//! its AWS exception name goes into conditions and events), so they say exactly what the engine
//! refused.

use kubekms_engine::KmsError;
use kubekms_proto::Operation;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A call to the Kubernetes API failed.
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),

    /// The engine refused or failed an operation.
    #[error("engine {op}: {}: {source}", source.aws_type())]
    Kms {
        op: Operation,
        #[source]
        source: KmsError,
    },

    /// The engine in its own pods could not be asked (or its answer not read): the operation
    /// may or may not have happened, and the reconcile is retried.
    #[error("engine {op}: {source}")]
    EngineUnreachable {
        op: Operation,
        #[source]
        source: crate::remote::RemoteError,
    },

    /// A value the operator builds (a status, a patch) did not serialize: a bug.
    #[error("{what}: {source}")]
    Json {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },

    /// The object asks for something that cannot be done; it waits for a change.
    #[error("invalid spec: {0}")]
    InvalidSpec(String),

    /// Start-up configuration (flags, files, store).
    #[error("{0}")]
    Config(String),

    /// The Lease election task ended: the operator can no longer tell whether it leads.
    #[error("the leader election stopped")]
    ElectionStopped,

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
    /// The engine's refusal, if this is one.
    pub fn engine_error(&self) -> Option<&KmsError> {
        match self {
            Error::Kms { source, .. } => Some(source),
            _ => None,
        }
    }

    pub fn is_not_found(&self) -> bool {
        matches!(self.engine_error(), Some(KmsError::NotFound(_)))
    }

    /// A stable reason for the Warning event this error becomes.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Kube(_) => "KubernetesApiError",
            Error::Kms { .. } | Error::Engine(_) => "EngineError",
            Error::EngineUnreachable { .. } => "EngineUnreachable",
            Error::InvalidSpec(_) => "InvalidSpec",
            Error::Config(_) | Error::Io { .. } => "ConfigError",
            Error::ElectionStopped => "ElectionStopped",
            Error::Json { .. } => "InternalError",
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
