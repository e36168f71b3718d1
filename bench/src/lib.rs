//! What the benchmark binaries share: wrk scripts for a pre-signed request and their results
//! ([`wrk`]), Keys applied and watched at scale ([`keys`]), and CPU time and peak memory of
//! processes from `/proc` ([`procfs`]), figures against targets ([`report`]). Nothing here ships.

pub mod apiserver;
pub mod keys;
pub mod procfs;
pub mod report;
pub mod wrk;
