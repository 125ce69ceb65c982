//! The saaschat operator: turns each `ChatTenant` into an isolated tenant namespace.
//!
//! Deciding and doing are kept apart: `build`, `plan` and `tenant::status` are pure functions with exhaustive
//! unit tests; `apply`, the controllers and `leader` talk to the API server.

pub mod apply;
pub mod backoff;
pub mod build;
pub mod conditions;
pub mod http;
pub mod kinds;
pub mod kube_client;
pub mod leader;
pub mod metrics;
pub mod names;
pub mod plan;
pub mod provider;
pub mod render;
pub mod settings;
pub mod tenant;
pub mod triggers;
pub mod workload;
