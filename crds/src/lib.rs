//! Filled in by the Kubernetes control-plane issue.
