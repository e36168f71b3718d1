//! End-to-end test harness for kubekms: a real local control plane (`e2e/scripts/
//! control-plane.sh`), the real operator binary, and real clients (kubectl, kube-rs,
//! aws-sdk-kms).
//!
//! - [`cluster()`]: one control plane per test binary with the CRDs installed; it is stopped
//!   by a watchdog process when the test binary exits, however it exits.
//! - [`Operator`]: the `kubekms-operator` binary with the test clock, restartable, with
//!   `aws-sdk-kms` clients for its KMS API.
//! - [`TestEnv`]: a fresh namespace per test (and optionally an operator); dumps the namespace's kubekms resources, events
//!   and operator log to stderr when the test fails.
//!
//! Fixtures return errors rather than panicking so tests can use `?`; a test fails by returning
//! the error or by panicking, and either way the dump is printed.

pub mod app;
pub mod cluster;
pub mod env;
pub mod node;
pub mod operator;

pub use cluster::{cluster, repo_root, Cluster};
pub use env::{wait_for, TestEnv};
pub use operator::{Operator, Store, ACCOUNT, REGION};
