//! The cluster-backed key store (being written).
