//! The contract between the saaschat operator and the services it runs: what both sides must spell the same way
//! and would otherwise repeat.
//!
//! | module | what it names |
//! |---|---|
//! | [`Component`] | the workloads of a tenant and their names (Service, Deployment, `SAASCHAT_COMPONENT`) |
//! | [`ports`] | the HTTP port, the separate metrics port, and the operational paths on them |
//! | [`env`] | the environment variables the operator sets and the services read |
//! | [`paths`] | where the operator mounts the tenant configuration |
//! | [`routes`] | the public route table: which service answers which path through the Ingress |
//!
//! The operator builds Deployments, Services, NetworkPolicies and the Ingress from these; the services read
//! their settings by these names and refuse to start with a public route the table would not send to them.
//! Nothing here does I/O and the crate has no dependencies, so every crate of the workspace can use it.

mod component;
pub mod env;
pub mod paths;
pub mod ports;
pub mod routes;

pub use component::Component;
