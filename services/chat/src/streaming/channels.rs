//! Channel receivers as streams (what `tokio-stream`'s wrappers do, in a few lines rather than a dependency).

use futures::Stream;
use tokio::sync::{broadcast, mpsc};

use crate::gateway::StreamMessage;

pub fn receiver_stream<T: Send + 'static>(receiver: mpsc::Receiver<T>) -> impl Stream<Item = T> + Send {
    futures::stream::unfold(receiver, |mut receiver| async move { receiver.recv().await.map(|item| (item, receiver)) })
}

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
