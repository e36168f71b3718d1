//! The webhook crate's errors.

/// Why an admission could not be decided.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The operations built for a pod did not form a JSON patch (a bug in `mutate`).
    #[error("building the pod's patch")]
    Patch(#[source] serde_json::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
