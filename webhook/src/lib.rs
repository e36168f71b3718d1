//! kubekms's admission side: what a pod that opts in gets (its KMS identity for the stock AWS
//! SDKs, and its data keys as ciphertext through the agent), decided by pure functions over
//! typed values; the HTTP layer that serves the API server only decodes and encodes.
//!
//! - [`agent`]: the agent in the pod (decrypt as the pod's identity, write the keys);
//! - [`annotations`]: the annotation API, read into a typed request with every problem named;
//! - [`keyring`]: the files the agent writes for the app (current key, keyring of generations);
//! - [`mutate`]: the JSON patch for a pod that opted in;
//! - [`validate`]: the verdict on a Key, Alias, KeyPolicy or ImportedMaterial.

pub mod agent;
pub mod annotations;
pub mod error;
pub mod keyring;
pub mod mutate;
pub mod validate;

pub use error::{Error, Result};
