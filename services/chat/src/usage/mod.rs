//! Token usage: what a completion cost ([`cost`]) and the rows of `chat.usage_events` (the contract with
//! billing), written off the request path by a batching writer ([`UsageRecorder`]), one row per completion
//! when it settles, stopped streams included.

pub mod cost;
pub mod report;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::catalog::ModelOffer;
use crate::providers::Usage;

/// One row of `usage_events`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsageEvent {
    pub id: Uuid,
    pub user_id: String,
    pub model: String,
    pub provider: String,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cost_micros: u64,
    pub recorded_at: DateTime<Utc>,
}

impl UsageEvent {
    pub fn new(user_id: &str, provider: &str, offer: &ModelOffer, usage: Usage) -> UsageEvent {
        UsageEvent {
            id: Uuid::now_v7(),
            user_id: user_id.to_string(),
            model: offer.name.clone(),
            provider: provider.to_string(),
            input_tokens: usage.input_tokens,
            output_tokens: usage.output_tokens,
            cost_micros: offer
                .input_price
                .cost_micros(usage.input_tokens)
                .saturating_add(offer.output_price.cost_micros(usage.output_tokens)),
            recorded_at: Utc::now(),
        }
    }
}

const QUEUE: usize = 16_384;
const BATCH: usize = 512;
const WRITE_ATTEMPTS: u32 = 5;
/// How long the writer waits for more events after the first of a batch. Without it a steady trickle of
/// completions (1,000 a second arrive one at a time) becomes one statement, one pool check-out and one
/// PostgreSQL commit each. A statement costs PostgreSQL about half a millisecond of CPU however few rows it
/// carries, and on a small node that half millisecond delays the requests it runs beside: lingering 50 ms (20
/// statements a second) put a percent of the gateway's requests behind one and doubled its p99 overhead at
/// 1,000 req/s (`docs/benchmarks-chat.md`). From 1,024 completions a second a full batch is written before the
/// linger ends. Rows appear at most this late; billing counts a window two minutes after it closes.
const LINGER: Duration = Duration::from_millis(500);

/// Hands usage events to the writer task. Cloning shares the queue.
#[derive(Clone)]
pub struct UsageRecorder {
    queue: Arc<Queue>,
}

/// The sending side, and the writer's early wake-up: while it lingers over a batch the writer is not woken by
/// each event (a thousand wake-ups a second at a steady rate), only by a full batch or the last recorder
/// going away.
struct Queue {
    sender: mpsc::Sender<UsageEvent>,
    wake: Arc<Notify>,
}

impl Drop for Queue {
    fn drop(&mut self) {
        self.wake.notify_one();
    }
}

impl UsageRecorder {
    /// Starts the writer; it ends, after writing everything queued, once every recorder is dropped.
    pub fn start(pool: PgPool) -> (UsageRecorder, JoinHandle<()>) {
        let (recorder, receiver, wake) = UsageRecorder::queue();
        (recorder, tokio::spawn(write_batches(pool, receiver, wake)))
    }

    fn queue() -> (UsageRecorder, mpsc::Receiver<UsageEvent>, Arc<Notify>) {
        let (sender, receiver) = mpsc::channel(QUEUE);
        let wake = Arc::new(Notify::new());
        (UsageRecorder { queue: Arc::new(Queue { sender, wake: wake.clone() }) }, receiver, wake)
    }

    /// Queues the event without waiting; gives it back when the queue is full (or the writer is gone), for
    /// [`record`](Self::record).
    pub fn try_record(&self, event: UsageEvent) -> Result<(), UsageEvent> {
        match self.queue.sender.try_send(event) {
            Ok(()) => {
                self.wake_for_a_full_batch();
                Ok(())
            }
            Err(mpsc::error::TrySendError::Full(event) | mpsc::error::TrySendError::Closed(event)) => Err(event),
        }
    }

    /// Queues the event, waiting for room.
    pub async fn record(&self, event: UsageEvent) {
        if self.queue.sender.send(event).await.is_err() {
            tracing::error!("the usage writer has stopped; a usage event is lost");
            return;
        }
        self.wake_for_a_full_batch();
    }

    fn wake_for_a_full_batch(&self) {
        if QUEUE - self.queue.sender.capacity() >= BATCH {
            self.queue.wake.notify_one();
        }
    }
}

async fn write_batches(pool: PgPool, mut receiver: mpsc::Receiver<UsageEvent>, wake: Arc<Notify>) {
    let mut batch = Vec::with_capacity(BATCH);
    while next_batch(&mut receiver, &wake, &mut batch).await {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match insert(&pool, &batch).await {
                Ok(()) => break,
                Err(error) if attempt < WRITE_ATTEMPTS => {
                    tracing::warn!(%error, attempt, rows = batch.len(), "writing usage events failed; retrying");
                    tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
                }
                Err(error) => {
                    tracing::error!(%error, rows = batch.len(), "usage events could not be written and are lost");
                    break;
                }
            }
        }
        batch.clear();
    }
}

/// Fills `batch` with the next events: waits for the first, then for up to [`LINGER`] or until a batch is
/// queued, whichever comes first. False once the queue is closed and empty; the last recorder going away ends
/// the wait early, so everything queued at shutdown is written without delay.
async fn next_batch(receiver: &mut mpsc::Receiver<UsageEvent>, wake: &Notify, batch: &mut Vec<UsageEvent>) -> bool {
    if receiver.recv_many(batch, BATCH).await == 0 {
        return false;
    }
    if batch.len() < BATCH && !receiver.is_closed() {
        let _ = tokio::time::timeout(LINGER, wake.notified()).await;
    }
    while batch.len() < BATCH {
        match receiver.try_recv() {
            Ok(event) => batch.push(event),
            Err(_) => break,
        }
    }
    true
}

/// One statement per batch; `ON CONFLICT DO NOTHING` makes a retried batch harmless.
async fn insert(pool: &PgPool, batch: &[UsageEvent]) -> Result<(), sqlx::Error> {
    let to_i64 = |value: u64| i64::try_from(value).unwrap_or(i64::MAX);
    sqlx::query(
        "INSERT INTO usage_events (id, user_id, model, provider, input_tokens, output_tokens, cost_micros, recorded_at) \
         SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::bigint[], $7::bigint[], $8::timestamptz[]) \
         ON CONFLICT (id) DO NOTHING",
    )
    .bind(batch.iter().map(|event| event.id).collect::<Vec<_>>())
    .bind(batch.iter().map(|event| event.user_id.clone()).collect::<Vec<_>>())
    .bind(batch.iter().map(|event| event.model.clone()).collect::<Vec<_>>())
    .bind(batch.iter().map(|event| event.provider.clone()).collect::<Vec<_>>())
    .bind(batch.iter().map(|event| to_i64(event.input_tokens)).collect::<Vec<_>>())
    .bind(batch.iter().map(|event| to_i64(event.output_tokens)).collect::<Vec<_>>())
    .bind(batch.iter().map(|event| to_i64(event.cost_micros)).collect::<Vec<_>>())
    .bind(batch.iter().map(|event| event.recorded_at).collect::<Vec<_>>())
    .execute(pool)
    .await
    .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::usage::cost::Price;

    fn offer(name: &str, input_price: &str, output_price: &str) -> ModelOffer {
        ModelOffer {
            name: name.into(),
            input_price: Price::parse(input_price).expect("price"),
            output_price: Price::parse(output_price).expect("price"),
            context_window: None,
        }
    }

    fn event(user: &str) -> UsageEvent {
        UsageEvent::new(user, "openai", &offer("m", "1", "1"), Usage { input_tokens: 1, output_tokens: 1 })
    }

    #[tokio::test(start_paused = true)]
    async fn events_arriving_within_the_linger_share_one_batch() {
        let (recorder, mut receiver, wake) = UsageRecorder::queue();
        let trickle = tokio::spawn(async move {
            for user in ["a", "b", "c"] {
                recorder.record(event(user)).await;
                tokio::time::sleep(LINGER / 4).await;
            }
            tokio::time::sleep(LINGER * 2).await;
            recorder.record(event("late")).await;
        });
        let mut batch = Vec::new();
        let started = tokio::time::Instant::now();
        assert!(next_batch(&mut receiver, &wake, &mut batch).await);
        assert_eq!(started.elapsed(), LINGER, "the writer lingers for the whole window, not woken per event");
        let users: Vec<_> = batch.iter().map(|event| event.user_id.as_str()).collect();
        assert_eq!(users, ["a", "b", "c"]);
        batch.clear();
        assert!(next_batch(&mut receiver, &wake, &mut batch).await);
        assert_eq!(batch.len(), 1);
        assert_eq!(batch[0].user_id, "late");
        trickle.await.expect("sender");
        batch.clear();
        assert!(!next_batch(&mut receiver, &wake, &mut batch).await, "closed and empty");
    }

    #[tokio::test(start_paused = true)]
    async fn the_last_recorder_going_away_ends_the_linger() {
        let (recorder, mut receiver, wake) = UsageRecorder::queue();
        let other = recorder.clone();
        recorder.record(event("a")).await;
        let closing = tokio::spawn(async move {
            tokio::time::sleep(LINGER / 5).await;
            other.record(event("b")).await;
            drop(recorder);
            drop(other);
        });
        let started = tokio::time::Instant::now();
        let mut batch = Vec::new();
        assert!(next_batch(&mut receiver, &wake, &mut batch).await);
        assert_eq!(batch.len(), 2);
        assert_eq!(started.elapsed(), LINGER / 5);
        closing.await.expect("closing");
        batch.clear();
        assert!(!next_batch(&mut receiver, &wake, &mut batch).await, "closed and empty");
    }

    #[tokio::test(start_paused = true)]
    async fn a_closed_queue_is_written_without_waiting_out_the_linger() {
        let (recorder, mut receiver, wake) = UsageRecorder::queue();
        recorder.record(event("a")).await;
        drop(recorder);
        let started = tokio::time::Instant::now();
        let mut batch = Vec::new();
        assert!(next_batch(&mut receiver, &wake, &mut batch).await);
        assert_eq!(batch.len(), 1);
        assert_eq!(started.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_batch_is_written_at_once() {
        let (recorder, mut receiver, wake) = UsageRecorder::queue();
        recorder.record(event("a")).await;
        let filling = tokio::spawn(async move {
            tokio::time::sleep(LINGER / 5).await;
            for _ in 0..BATCH {
                recorder.try_record(event("a")).expect("room");
            }
            recorder
        });
        let started = tokio::time::Instant::now();
        let mut batch = Vec::new();
        assert!(next_batch(&mut receiver, &wake, &mut batch).await);
        assert_eq!(batch.len(), BATCH);
        assert_eq!(started.elapsed(), LINGER / 5);
        let recorder = filling.await.expect("filling");
        batch.clear();
        assert!(next_batch(&mut receiver, &wake, &mut batch).await);
        assert_eq!(batch.len(), 1, "the rest starts the next batch");
        drop(recorder);
    }

    #[tokio::test]
    async fn a_full_queue_gives_the_event_back() {
        let (recorder, _receiver, _wake) = UsageRecorder::queue();
        for _ in 0..QUEUE {
            recorder.try_record(event("a")).expect("room");
        }
        let refused = recorder.try_record(event("b")).expect_err("full");
        assert_eq!(refused.user_id, "b");
    }

    #[test]
    fn an_event_prices_input_and_output_separately() {
        let offer = offer("gpt-4o", "2.50", "10");
        let event = UsageEvent::new("user-1", "openai", &offer, Usage { input_tokens: 1000, output_tokens: 500 });
        assert_eq!(event.cost_micros, 2500 + 5000);
        assert_eq!((event.model.as_str(), event.provider.as_str()), ("gpt-4o", "openai"));
    }
}
