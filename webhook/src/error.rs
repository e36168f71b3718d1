//! The webhook crate's errors.

/// Why an admission could not be decided.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The operations built for a pod did not form a JSON patch (a bug in `mutate`).
    #[error("building the pod's patch")]
    Patch(#[source] serde_json::Error),
    /// The agent writes key files only the app's user may read, so it must know that user.
    #[error(
        "the pod names data keys but no securityContext.runAsUser (on the pod or its first \
         container): set the user the app runs as, so the agent can write keys only it can read"
    )]
    NoRunAsUser,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
