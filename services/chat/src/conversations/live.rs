//! The answers being generated right now, by conversation: at most one per conversation, stoppable and
//! attachable only by the conversation's owner (the entry keeps the owner, and every lookup names the
//! caller).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::broadcast;
use uuid::Uuid;

use crate::gateway::{Observer, Outcome, StopHandle, StreamMessage};
use crate::providers::ProviderEvent;

/// How many events an attached client may fall behind before it is cut off (it can attach again).
const ATTACH_BUFFER: usize = 256;

pub struct LiveEntry {
    pub user_id: String,
    pub message_id: Uuid,
    pub stop: StopHandle,
    /// The text so far and the channel, under one lock so an attaching client misses nothing.
    state: Mutex<LiveState>,
    events: broadcast::Sender<StreamMessage>,
}

#[derive(Default)]
struct LiveState {
    text: String,
    outcome: Option<Box<Outcome>>,
}

/// What an attaching client gets: the text so far, then either the live events or, if the answer ended
/// meanwhile, its outcome.
pub struct Attached {
    pub text: String,
    pub events: broadcast::Receiver<StreamMessage>,
    pub outcome: Option<Box<Outcome>>,
}

impl LiveEntry {
    pub fn attach(&self) -> Attached {
        let state = self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        Attached { text: state.text.clone(), events: self.events.subscribe(), outcome: state.outcome.clone() }
    }
}

impl Observer for LiveEntry {
    fn event(&self, event: &ProviderEvent) {
        let mut state = self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let ProviderEvent::Text(delta) = event {
            state.text.push_str(delta);
        }
        // No receivers is the usual case, not an error.
        let _ = self.events.send(StreamMessage::Event(event.clone()));
    }

    fn finished(&self, outcome: &Outcome) {
        let mut state = self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        state.outcome = Some(Box::new(outcome.clone()));
        let _ = self.events.send(StreamMessage::Finished(Box::new(outcome.clone())));
    }
}

#[derive(Clone, Default)]
pub struct LiveStreams(Arc<Mutex<HashMap<Uuid, Arc<LiveEntry>>>>);

impl LiveStreams {
    /// Claims the conversation for a new answer; `None` if one is already being generated.
    pub fn register(&self, conversation_id: Uuid, user_id: &str, message_id: Uuid) -> Option<Arc<LiveEntry>> {
        let mut map = self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if map.contains_key(&conversation_id) {
            return None;
        }
        let entry = Arc::new(LiveEntry {
            user_id: user_id.to_string(),
            message_id,
            stop: StopHandle::default(),
            state: Mutex::new(LiveState::default()),
            events: broadcast::channel(ATTACH_BUFFER).0,
        });
        map.insert(conversation_id, entry.clone());
        Some(entry)
    }

    /// The caller's live answer in this conversation; another user's is as absent as none.
    pub fn get(&self, conversation_id: Uuid, user_id: &str) -> Option<Arc<LiveEntry>> {
        let map = self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        map.get(&conversation_id).filter(|entry| entry.user_id == user_id).cloned()
    }

    pub fn remove(&self, conversation_id: Uuid) {
        let mut map = self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        map.remove(&conversation_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_answer_per_conversation_and_only_its_owner_finds_it() {
        let live = LiveStreams::default();
        let conversation = Uuid::now_v7();
        let entry = live.register(conversation, "alice", Uuid::now_v7()).expect("registered");
        assert!(live.register(conversation, "alice", Uuid::now_v7()).is_none());
        assert!(live.get(conversation, "bob").is_none());
        assert!(live.get(conversation, "alice").is_some());
        entry.event(&ProviderEvent::Text("Hel".into()));
        let mut attached = entry.attach();
        assert_eq!(attached.text, "Hel");
        assert!(attached.outcome.is_none());
        entry.event(&ProviderEvent::Text("lo".into()));
        assert!(
            matches!(attached.events.try_recv(), Ok(StreamMessage::Event(ProviderEvent::Text(text))) if text == "lo")
        );
        live.remove(conversation);
        assert!(live.get(conversation, "alice").is_none());
    }
}
