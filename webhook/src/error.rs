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

/// An error and its sources, on one line (for refusals and the agent's last words).
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut message = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        message.push_str(": ");
        message.push_str(&s.to_string());
        source = s.source();
    }
    message
}
