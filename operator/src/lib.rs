//! The saaschat operator: turns each `ChatTenant` into an isolated tenant namespace.
//!
//! Deciding and doing are kept apart: `build`, `plan` and `tenant::status` are pure functions with exhaustive
//! unit tests; `apply`, the controllers and `leader` talk to the API server.

pub mod build;
pub mod kinds;
pub mod names;
pub mod plan;
pub mod settings;
