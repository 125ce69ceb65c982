//! Sending: the SMTP transport ([`smtp`]) and the decision after a failed attempt ([`decide`]).

pub mod decide;
pub mod smtp;
