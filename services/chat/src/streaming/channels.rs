//! A broadcast receiver as a stream (what `tokio-stream`'s wrapper does, in a few lines rather than a
//! dependency).

use futures::Stream;
use tokio::sync::broadcast;

use crate::gateway::StreamMessage;

/// Ends after the outcome, when the stream closes, or when the receiver fell too far behind (the client can
/// attach again).
pub fn broadcast_stream(receiver: broadcast::Receiver<StreamMessage>) -> impl Stream<Item = StreamMessage> + Send {
    futures::stream::unfold(Some(receiver), |receiver| async move {
        let mut receiver = receiver?;
        match receiver.recv().await {
            Ok(message @ StreamMessage::Finished(_)) => Some((message, None)),
            Ok(message) => Some((message, Some(receiver))),
            Err(_) => None,
        }
    })
}
