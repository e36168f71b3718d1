//! kubekms operator: the Kubernetes edge around the key engine. It keeps the engine's records in
//! the cluster (`store`), reconciles the kubekms.io resources (`controller`), and either serves
//! the KMS API from the same process or deploys the engine in its own pods and calls it there
//! (`run`); the engine pods run this binary too (`engine_pod`).

pub mod admin;
pub mod controller;
pub mod engine;
pub mod engine_deploy;
pub mod engine_host;
pub mod engine_pod;
pub mod error;
pub mod identity;
pub mod lease;
pub mod remote;
pub mod run;
pub mod store;

pub use error::{Error, Result};
