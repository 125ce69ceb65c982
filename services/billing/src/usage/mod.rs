//! Token usage: what chat recorded (`chat.usage_events`), summed per window and reported to Stripe as one meter
//! event per window, exactly once.

pub mod reporter;
pub mod store;
pub mod window;
