//! kubekms's admission side: what a pod that opts in gets (its KMS identity for the stock AWS
//! SDKs, and its data keys as ciphertext through the agent), decided by pure functions over
//! typed values; the HTTP layer that serves the API server only decodes and encodes.
//!
//! - [`admit`]: a Pod's admission (annotations, data keys, patch), typed in and out;
//! - [`agent`]: the agent in the pod (decrypt as the pod's identity, write the keys);
//! - [`annotations`]: the annotation API, read into a typed request with every problem named;
//! - [`cluster`]: the Kubernetes side of admission (DataKey records, Keys, the engine Service);
//! - [`datakeys`]: finding or making a pod's data keys (ciphertext only);
//! - [`finalize`]: a new Key's finalizer, added in its creation;
//! - [`keyring`]: the files the agent writes for the app (current key, keyring of generations);
//! - [`mutate`]: the JSON patch for a pod that opted in;
//! - [`server`]: HTTPS, decoding and encoding AdmissionReviews only;
//! - [`sidecar`]: the agent as a sidecar (refresh after data-key rotations, localhost API);
//! - [`tls`]: the certificate, reloaded when renewed;
//! - [`validate`]: the verdict on a Key, Alias, KeyPolicy or ImportedMaterial.

pub mod admit;
pub mod agent;
pub mod annotations;
pub mod cluster;
pub mod datakeys;
pub mod error;
pub mod finalize;
pub mod keyring;
pub mod mutate;
pub mod server;
pub mod sidecar;
pub mod validate;

pub use error::{Error, Result};
