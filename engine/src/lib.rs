//! kubekms key engine: an AWS KMS-compatible key service. The domain core (crypto, key state,
//! ciphertext format, operations) depends on no Kubernetes crate.

pub mod api;
pub mod audit;
pub mod blob;
pub mod clock;
pub mod config;
pub mod crypto;
pub mod error;
pub mod identity;
pub mod policy;
/// The AWS vocabulary, shared with every other crate through `kubekms-proto`.
pub use kubekms_proto::vocab as model;
pub mod record;
pub mod runner;
pub mod service;
pub mod sigv4;
pub mod store;

pub use error::{KmsError, Result};
