//! The durable queue of verified Stripe events: the webhook stores each event once (its id is the key) and
//! answers at once; workers in every replica claim events with `FOR UPDATE SKIP LOCKED`, fetch the current object
//! from Stripe, act, and record the outcome, or the error and the time of the next attempt.

pub mod decide;
pub mod store;
pub mod worker;
