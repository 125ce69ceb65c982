//! The consumer loop: take over what dead workers left, read new entries, and work on up to `concurrency` entries
//! at once; a heartbeat keeps the claim on entries being worked on.
//!
//! One entry: parse → give up if delivered too often → render and build (refusing bad headers) → for each attempt:
//! check the "sent" marker and take the sending lock, send, then either record "sent" and `XACK` in one step, or
//! release the lock and retry after a backoff or dead-letter. Nothing is acknowledged that the SMTP server did not
//! accept (or that was not dead-lettered in the same `MULTI`).
//!
//! Shutdown: stop reading; an entry waiting for a retry is handed back (made claimable at once) and never acked; a
//! send in progress finishes, and if it succeeded its marker and `XACK` are written before the worker exits.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use lettre::Message;
use redis::RedisError;
use saaschat_platform::email::EmailRequest;
use saaschat_platform::http::ShutdownSignal;
use tokio::task::JoinSet;
use tracing::Instrument;

use crate::delivery::decide::{DeadLetterKind, NextStep, RetryPolicy, after_failure, too_many_deliveries};
use crate::delivery::smtp::{self, Transport};
use crate::message;
use crate::metrics::WorkerMetrics;
use crate::render::render;
use crate::settings::WorkerSettings;
use crate::stream::{BeginSend, DeadLetter, Delivery, EmailStream};

/// How long a worker keeps trying to record an accepted email after the shutdown started; past it, the email is
/// sent again by whoever takes the entry over.
const RECORD_AFTER_SHUTDOWN: Duration = Duration::from_secs(15);
/// How often acknowledged entries are trimmed and gone consumers removed.
const MAINTENANCE_INTERVAL: Duration = Duration::from_secs(30);

pub struct Worker {
    stream: EmailStream,
    transport: Transport,
    from: String,
    settings: WorkerSettings,
    metrics: WorkerMetrics,
    /// Entry ids being worked on, with the (email id, token) of the sending lock while one is held.
    in_flight: Mutex<HashMap<String, Option<(String, String)>>>,
}

impl Worker {
    pub fn new(
        stream: EmailStream,
        transport: Transport,
        from: String,
        settings: WorkerSettings,
        metrics: WorkerMetrics,
    ) -> Worker {
        Worker { stream, transport, from, settings, metrics, in_flight: Mutex::new(HashMap::new()) }
    }

    fn in_flight(&self) -> std::sync::MutexGuard<'_, HashMap<String, Option<(String, String)>>> {
        // The set stays consistent even if a holder panicked: every operation on it is a single insert or remove.
        self.in_flight.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Consumes until the shutdown, then drains.
    pub async fn run(self: Arc<Self>, shutdown: ShutdownSignal) {
        if self.retry_redis(&shutdown, || self.stream.ensure_group()).await.is_none() {
            return;
        }
        tracing::info!(consumer = self.stream.consumer(), "consuming the email stream");
        let heartbeat = tokio::spawn(self.clone().heartbeat());
        let mut tasks = JoinSet::new();
        let mut cursor = "0-0".to_string();
        let mut next_claim = Instant::now();
        let mut next_maintenance = Instant::now();
        while !shutdown.is_triggered() {
            while let Some(joined) = tasks.try_join_next() {
                report_task_end(joined);
            }
            let free = self.settings.concurrency.saturating_sub(tasks.len());
            if free == 0 {
                tokio::select! {
                    joined = tasks.join_next() => if let Some(joined) = joined { report_task_end(joined) },
                    () = shutdown.clone().triggered() => {}
                }
                continue;
            }
            let batch = match self.next_batch(free, &mut cursor, &mut next_claim).await {
                Ok(batch) => batch,
                Err(error) => {
                    self.metrics.redis_errors.inc();
                    tracing::warn!(%error, "cannot read the email stream; retrying");
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_secs(1)) => {}
                        () = shutdown.clone().triggered() => {}
                    }
                    continue;
                }
            };
            if shutdown.is_triggered() {
                let ids: Vec<String> = batch.into_iter().map(|delivery| delivery.entry_id).collect();
                self.hand_back(&ids).await;
                break;
            }
            for delivery in batch {
                self.in_flight().insert(delivery.entry_id.clone(), None);
                self.metrics.in_flight.inc();
                let (worker, shutdown) = (self.clone(), shutdown.clone());
                tasks.spawn(async move {
                    let entry_id = delivery.entry_id.clone();
                    worker.process(delivery, &shutdown).await;
                    worker.in_flight().remove(&entry_id);
                    worker.metrics.in_flight.dec();
                });
            }
            if Instant::now() >= next_maintenance {
                next_maintenance = Instant::now() + MAINTENANCE_INTERVAL;
                match self.stream.maintain(self.settings.stale_consumer_idle).await {
                    Ok((trimmed, consumers)) if trimmed + consumers > 0 => {
                        tracing::info!(trimmed, consumers_removed = consumers, "trimmed the email stream");
                    }
                    Ok(_) => {}
                    Err(error) => {
                        self.metrics.redis_errors.inc();
                        tracing::warn!(%error, "cannot trim the email stream");
                    }
                }
            }
        }
        tracing::info!(in_flight = tasks.len(), "shutting down: finishing the emails in flight");
        while let Some(joined) = tasks.join_next().await {
            report_task_end(joined);
        }
        heartbeat.abort();
        if let Err(error) = self.stream.leave_group().await {
            tracing::debug!(%error, "cannot leave the consumer group; a later worker removes the consumer");
        }
        tracing::info!("email stream drained");
    }

    /// Entries left behind by dead workers first (every claim interval, and at once again while a scan is under
    /// way), new entries otherwise.
    async fn next_batch(
        &self,
        free: usize,
        cursor: &mut String,
        next_claim: &mut Instant,
    ) -> Result<Vec<Delivery>, RedisError> {
        if Instant::now() >= *next_claim {
            let (next_cursor, claimed) = self.stream.claim_stale(cursor, self.settings.claim_min_idle, free).await?;
            if next_cursor == "0-0" {
                *next_claim = Instant::now() + self.settings.claim_interval();
            }
            *cursor = next_cursor;
            if !claimed.is_empty() {
                self.metrics.taken_over.inc_by(claimed.len() as u64);
                tracing::info!(entries = claimed.len(), "took over entries another consumer left pending");
                return Ok(claimed);
            }
        }
        self.stream.read_new(free, self.settings.read_block).await
    }

    /// Renews the claim on every entry in flight and the sending locks held, until aborted.
    async fn heartbeat(self: Arc<Self>) {
        let mut interval = tokio::time::interval(self.settings.heartbeat_interval());
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            interval.tick().await;
            let (ids, locks): (Vec<String>, Vec<(String, String)>) = {
                let in_flight = self.in_flight();
                (in_flight.keys().cloned().collect(), in_flight.values().flatten().cloned().collect())
            };
            if let Err(error) = self.stream.heartbeat(&ids, &locks, self.settings.sending_lock_ttl()).await {
                self.metrics.redis_errors.inc();
                tracing::warn!(%error, "cannot renew the claim on the entries in flight");
            }
        }
    }

    async fn process(&self, delivery: Delivery, shutdown: &ShutdownSignal) {
        let request = match EmailRequest::from_fields(&delivery.fields) {
            Ok(request) => request,
            Err(error) => {
                return self.dead_letter(&delivery, DeadLetterKind::Malformed, &error.to_string(), 0, shutdown).await;
            }
        };
        if let Some(NextStep::DeadLetter { kind, reason }) =
            too_many_deliveries(delivery.deliveries, self.settings.max_deliveries)
        {
            return self.dead_letter(&delivery, kind, &reason, 0, shutdown).await;
        }
        let message = match render(&request.content)
            .map_err(|error| error.to_string())
            .and_then(|rendered| message::build(&self.from, &request, &rendered).map_err(|error| error.to_string()))
        {
            Ok(message) => message,
            Err(reason) => return self.dead_letter(&delivery, DeadLetterKind::Invalid, &reason, 0, shutdown).await,
        };
        let span = tracing::info_span!(
            "email",
            email_id = %request.id,
            entry_id = %delivery.entry_id,
            template = request.content.template(),
            deliveries = delivery.deliveries,
        );
        self.send_with_retries(&delivery, &request, message, shutdown).instrument(span).await;
    }

    async fn send_with_retries(
        &self,
        delivery: &Delivery,
        request: &EmailRequest,
        message: Message,
        shutdown: &ShutdownSignal,
    ) {
        let policy = RetryPolicy {
            max_attempts: self.settings.max_attempts,
            base: self.settings.retry_base,
            max: self.settings.retry_max,
        };
        let token = format!("{}:{:016x}", self.stream.consumer(), fastrand::u64(..));
        let mut attempt = 0;
        loop {
            let lock_ttl = self.settings.sending_lock_ttl();
            let begun = self.retry_redis(shutdown, || self.stream.begin_send(&request.id, &token, lock_ttl));
            match begun.await {
                None => return self.hand_back(std::slice::from_ref(&delivery.entry_id)).await,
                Some(BeginSend::AlreadySent) => {
                    if self.retry_redis(shutdown, || self.stream.ack(&delivery.entry_id)).await.is_some() {
                        self.metrics.duplicates.inc();
                        tracing::info!("already sent; acknowledged the duplicate without sending");
                    }
                    return;
                }
                Some(BeginSend::Busy) => {
                    // Another worker is sending the same email id (a duplicate entry, or the entry of a worker
                    // that died, whose lock expires within the claim timeout). Wait here, keeping the entry
                    // claimed, rather than leave it pending: every takeover would count as another delivery.
                    tracing::debug!("another worker holds the sending lock of this email id; waiting");
                    tokio::select! {
                        () = tokio::time::sleep(self.settings.heartbeat_interval()) => continue,
                        () = shutdown.clone().triggered() => {
                            return self.hand_back(std::slice::from_ref(&delivery.entry_id)).await;
                        }
                    }
                }
                Some(BeginSend::Locked) => {
                    self.set_lock(&delivery.entry_id, Some((request.id.clone(), token.clone())));
                }
            }
            attempt += 1;
            let started = Instant::now();
            let result = smtp::send(&self.transport, message.clone()).await;
            self.metrics.send_duration.observe(started.elapsed().as_secs_f64());
            let failure = match result {
                Ok(()) => return self.record_sent(delivery, request, &token, shutdown).await,
                Err(failure) => failure,
            };
            self.set_lock(&delivery.entry_id, None);
            if let Err(error) = self.stream.release(&request.id, &token).await {
                self.metrics.redis_errors.inc();
                tracing::debug!(%error, "cannot release the sending lock; it expires by itself");
            }
            match after_failure(&failure, attempt, &policy, fastrand::f64()) {
                NextStep::DeadLetter { kind, reason } => {
                    return self.dead_letter(delivery, kind, &reason, attempt, shutdown).await;
                }
                NextStep::RetryAfter(delay) => {
                    self.metrics.retried.inc();
                    let delay_ms = delay.as_millis() as u64;
                    tracing::warn!(attempt, delay_ms, error = %failure.describe(), "send failed; retrying");
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        () = shutdown.clone().triggered() => {
                            return self.hand_back(std::slice::from_ref(&delivery.entry_id)).await;
                        }
                    }
                }
            }
        }
    }

    fn set_lock(&self, entry_id: &str, lock: Option<(String, String)>) {
        if let Some(held) = self.in_flight().get_mut(entry_id) {
            *held = lock;
        }
    }

    /// The SMTP server accepted the email: record it and acknowledge the entry. Redis may be unreachable right now
    /// (restarting); keep trying, past the shutdown for a while, since giving up means the email is sent again.
    async fn record_sent(&self, delivery: &Delivery, request: &EmailRequest, token: &str, shutdown: &ShutdownSignal) {
        let mut delay = Duration::from_millis(100);
        let mut shutdown_seen: Option<Instant> = None;
        loop {
            match self.stream.finish_sent(delivery, &request.id, token, self.settings.sent_marker_ttl).await {
                Ok(()) => {
                    self.metrics.sent.inc();
                    tracing::info!("sent");
                    return;
                }
                Err(error) => {
                    self.metrics.redis_errors.inc();
                    if shutdown.is_triggered() {
                        let since = *shutdown_seen.get_or_insert_with(Instant::now);
                        if since.elapsed() >= RECORD_AFTER_SHUTDOWN {
                            tracing::error!(%error, "sent, but cannot record it before exiting: it will be sent again");
                            return;
                        }
                    }
                    tracing::warn!(%error, "sent, but cannot record it yet; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(2));
                }
            }
        }
    }

    async fn dead_letter(
        &self,
        delivery: &Delivery,
        kind: DeadLetterKind,
        reason: &str,
        attempts: u32,
        shutdown: &ShutdownSignal,
    ) {
        let letter = DeadLetter { kind: kind.label(), reason, attempts };
        if self.retry_redis(shutdown, || self.stream.dead_letter(delivery, &letter)).await.is_some() {
            self.metrics.dead_lettered.with_label_values(&[kind.label()]).inc();
            tracing::warn!(entry_id = %delivery.entry_id, kind = kind.label(), reason, "moved to the dead-letter stream");
        }
    }

    async fn hand_back(&self, entry_ids: &[String]) {
        if let Err(error) = self.stream.hand_back(entry_ids).await {
            self.metrics.redis_errors.inc();
            tracing::debug!(%error, "cannot hand entries back; they are taken over after the claim timeout");
        }
    }

    /// Runs a Redis operation until it succeeds; `None` if the shutdown started first (the entry then stays
    /// pending and is taken over).
    async fn retry_redis<T, F>(&self, shutdown: &ShutdownSignal, operation: impl Fn() -> F) -> Option<T>
    where
        F: Future<Output = Result<T, RedisError>>,
    {
        let mut delay = Duration::from_millis(100);
        loop {
            match operation().await {
                Ok(value) => return Some(value),
                Err(error) => {
                    self.metrics.redis_errors.inc();
                    tracing::warn!(%error, "Redis command failed; retrying");
                }
            }
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = shutdown.clone().triggered() => return None,
            }
            delay = (delay * 2).min(Duration::from_secs(2));
        }
    }
}

fn report_task_end(joined: Result<(), tokio::task::JoinError>) {
    if let Err(error) = joined {
        tracing::error!(%error, "an email task ended abnormally; its entry is taken over later");
    }
}
