//! kubekms operator: the Kubernetes edge around the key engine. It keeps the engine's records in
//! the cluster (`store`), reconciles the kubekms.io resources (`controller`), and serves the
//! KMS API from the same process (`run`).

pub mod admin;
pub mod controller;
pub mod engine;
pub mod error;
pub mod identity;
pub mod run;
pub mod store;

pub use error::{Error, Result};
