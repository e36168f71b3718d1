//! kubekms's shared vocabulary, for the engine, the operator, the webhook and agents alike:
//!
//! - [`vocab`]: the AWS KMS names (key specs, usages, states, algorithms);
//! - [`operation`]: the one list of operations and of the policy actions they need;
//! - [`ops`]: each operation's typed request and response, whose derived serde form is the
//!   AWS JSON 1.1 wire form;
//! - [`sigv4`]: the AWS Signature Version 4 signer;
//! - [`changes`]: kubekms's own long poll for changed keys (not an AWS operation);
//! - `client` (feature `client`): a client of the engine's HTTP API with web-identity sessions;
//! - `tls` (feature `tls`): a server certificate from files, served anew when renewed.
//!
//! It depends on no server or Kubernetes crate.

pub mod changes;
#[cfg(feature = "client")]
pub mod client;
pub mod codec;
pub mod operation;
pub mod ops;
pub mod principal;
pub mod sigv4;
#[cfg(feature = "tls")]
pub mod tls;
pub mod vocab;

pub use codec::Timestamp;
pub use operation::{Action, Operation};
