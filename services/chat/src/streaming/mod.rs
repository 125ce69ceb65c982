//! The transports of streamed answers: [`sse`] responses and the [`ws`] WebSocket, both speaking the
//! [`events`] of a conversation's answer.

pub mod channels;
pub mod events;
pub mod sse;
pub mod ws;
