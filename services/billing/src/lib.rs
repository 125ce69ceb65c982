//! The billing service: Stripe Checkout and customer portal sessions for a tenant's owners and admins, signed
//! Stripe webhooks processed once each from a durable queue, chat's token usage reported to Stripe meters once
//! per window, emails through the outbox, and the tenant's `Subscription.status` kept in step with Stripe.
//!
//! | module | concern |
//! |---|---|
//! | [`settings`] | the service's own settings and the mounted Stripe credentials |
//! | [`stripe`] | the Stripe client (async-stripe), what it sends and the objects it reads |
//! | [`webhook`] | signature verification and the webhook endpoint that queues events |
//! | [`events`] | the event queue, the decisions taken from fetched objects, the workers |
//! | [`account`] | the tenant's customer and subscription as last fetched |
//! | [`api`] | checkout, portal and subscription endpoints |
//! | [`usage`] | usage windows and the meter event reporter |
//! | [`kubernetes`] | the `Subscription.status` decision and its writer |
//! | [`app`] | state, routes, metrics and background tasks |
//!
//! Deciding code (`*/decide.rs`, `*/window.rs`, `*/status.rs`, `api/checkout.rs`, `webhook/signature.rs`) is
//! pure and unit-tested; the rest is covered by `tests/` against PostgreSQL, Redis and stripe-mock.

pub mod account;
pub mod api;
pub mod app;
pub mod events;
pub mod kubernetes;
pub mod settings;
pub mod stripe;
pub mod usage;
pub mod webhook;
