//! `Subscription.status` in the tenant's namespace, following Stripe. [`status`] decides the status; [`writer`]
//! applies it to the status subresource, which is all the operator's Role (`billing-subscription-status`) lets
//! this service touch: `get` on the Subscription `default` and `get`/`patch` on its status.

pub mod status;
pub mod writer;
