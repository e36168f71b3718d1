//! kubekms operator: the Kubernetes edge around the key engine. It keeps the engine's records in
//! the cluster (`store`), reconciles the kubekms.io resources (`controller`), and serves the
//! KMS API from the same process.

pub mod store;
