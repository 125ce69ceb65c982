//! The saaschat auth service: accounts, sessions, roles, API keys, and the keys that sign access tokens.
//!
//! | module | concern |
//! |---|---|
//! | [`routes`] | the HTTP API and its OpenAPI document |
//! | [`accounts`] | users, sessions (refresh-token families) and single-use email tokens in PostgreSQL |
//! | [`api_keys`] | per-user API keys in PostgreSQL |
//! | [`browser`] | browser sessions: the refresh token in an `HttpOnly` cookie, same-origin checks |
//! | [`keys`] | the signing key from the operator's Secret, access tokens, the JWKS across rotations |
//! | [`passwords`] | the password policy and argon2id hashing off the async runtime |
//! | [`rate_limit`] | guessing limits in Redis |
//! | [`tokens`] | opaque random secrets and their digests |
//! | [`state`] | what handlers share; the client address |
//! | [`service`] | starting the service from its configuration |

pub mod accounts;
pub mod api_keys;
pub mod browser;
pub mod error;
pub mod keys;
pub mod passwords;
pub mod rate_limit;
pub mod routes;
pub mod service;
pub mod state;
pub mod tokens;
