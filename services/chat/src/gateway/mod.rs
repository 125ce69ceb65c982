//! The gateway runs a completion from admission to settlement, for every transport (conversation SSE,
//! WebSocket, the OpenAI-compatible API):
//!
//! 1. [`Gateway::admit`]: the model must be allowed by the plan; the limits reserve an estimate (Redis).
//! 2. [`Gateway::complete`] or [`Gateway::open_stream`]: candidates in fallback order, each retried with
//!    backoff while nothing has reached the client, behind its provider's circuit breaker.
//! 3. [`Relay`] (streams): read by the transport at its client's pace until the answer ends, the caller stops
//!    it, the client goes away or the service shuts down, then settles: the reservation is replaced by the
//!    real usage, a usage event is recorded, and the transport's hook persists the answer.

pub mod error;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use saaschat_platform::http::ShutdownSignal;
use tokio::sync::{OwnedSemaphorePermit, watch};

use crate::catalog::{Catalog, ModelOffer};
use crate::limits::{Limiter, ProviderQuota, ProviderSlot, Reservation, estimate};
use crate::metrics::Metrics;
use crate::providers::client::{Timeouts, UpstreamClient, UpstreamStream};
use crate::providers::{Completion, CompletionRequest, FinishReason, ProviderError, ProviderEvent, ToolCall, Usage};
use crate::resilience::ResilienceSettings;
use crate::resilience::breaker::Breaker;
use crate::resilience::fallback::{Candidate, candidates};
use crate::resilience::retry::{Next, next_step};
use crate::tracker::{TaskGuard, TaskTracker};
use crate::usage::{UsageEvent, UsageRecorder};

pub use error::GatewayError;

/// The current catalog; replaced whole when the configuration changes, so a request sees one version.
#[derive(Clone)]
pub struct CatalogHandle(Arc<RwLock<Arc<Catalog>>>);

impl CatalogHandle {
    pub fn new(catalog: Catalog) -> CatalogHandle {
        CatalogHandle(Arc::new(RwLock::new(Arc::new(catalog))))
    }

    pub fn current(&self) -> Arc<Catalog> {
        match self.0.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    pub fn replace(&self, catalog: Catalog) {
        match self.0.write() {
            Ok(mut guard) => *guard = Arc::new(catalog),
            Err(poisoned) => *poisoned.into_inner() = Arc::new(catalog),
        }
    }
}

/// Which upstream and model answered.
#[derive(Clone, Debug)]
pub struct Served {
    pub provider: String,
    pub offer: ModelOffer,
}

/// A request that passed the limits, with its reservation.
pub struct Admission {
    pub user_id: String,
    pub request: CompletionRequest,
    candidates: Vec<Candidate>,
    reservation: Reservation,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// The caller asked to stop.
    Requested,
    /// The client went away.
    Disconnected,
    Shutdown,
}

#[derive(Clone, Debug, PartialEq)]
pub enum OutcomeStatus {
    Complete,
    Stopped(StopReason),
    Failed(ProviderError),
}

/// How a streamed answer ended, with everything produced so far.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub status: OutcomeStatus,
    pub finish_reason: Option<FinishReason>,
    pub text: String,
    pub tool_calls: Vec<ToolCall>,
    pub usage: Usage,
    pub served: Served,
    /// Set by the conversation hook when the first exchange gave the conversation its title.
    pub conversation_title: Option<String>,
}

/// What a stream's consumer receives.
#[derive(Clone, Debug)]
pub enum StreamMessage {
    Event(ProviderEvent),
    Finished(Box<Outcome>),
}

/// Sees every event of a stream (the live registry, so others can attach).
pub trait Observer: Send + Sync {
    fn event(&self, event: &ProviderEvent);
    fn finished(&self, outcome: &Outcome);
}

pub type SettleHook = Box<dyn FnOnce(Outcome) -> Pin<Box<dyn Future<Output = Outcome> + Send>> + Send>;

/// Stops a stream from elsewhere (a stop request, a WebSocket message).
#[derive(Clone, Debug)]
pub struct StopHandle(Arc<watch::Sender<bool>>);

impl Default for StopHandle {
    fn default() -> Self {
        StopHandle(Arc::new(watch::channel(false).0))
    }
}

impl StopHandle {
    pub fn stop(&self) {
        self.0.send_replace(true);
    }

    fn subscribe(&self) -> watch::Receiver<bool> {
        self.0.subscribe()
    }
}

/// An upstream stream that has produced its first content, so it is committed to.
pub struct OpenStream {
    pub served: Served,
    upstream: UpstreamStream,
    /// A slot of the provider's concurrency limit, handed on to the relay.
    permit: OwnedSemaphorePermit,
    first: Vec<ProviderEvent>,
    admission: Admission,
}

pub struct Gateway {
    client: UpstreamClient,
    pub catalog: CatalogHandle,
    breakers: Mutex<HashMap<String, Breaker>>,
    settings: ResilienceSettings,
    limiter: Limiter,
    usage: UsageRecorder,
    pub metrics: Metrics,
    shutdown: ShutdownSignal,
    /// Drivers outlive their requests; shutdown waits for them.
    pub tasks: TaskTracker,
}

impl Gateway {
    pub fn new(
        client: UpstreamClient,
        catalog: CatalogHandle,
        settings: ResilienceSettings,
        limiter: Limiter,
        usage: UsageRecorder,
        metrics: Metrics,
        shutdown: ShutdownSignal,
    ) -> Gateway {
        Gateway {
            client,
            catalog,
            breakers: Mutex::new(HashMap::new()),
            settings,
            limiter,
            usage,
            metrics,
            shutdown,
            tasks: TaskTracker::default(),
        }
    }

    pub async fn admit(&self, user_id: &str, request: CompletionRequest) -> Result<Admission, GatewayError> {
        let catalog = self.catalog.current();
        let candidates = candidates(&catalog, &request.model)?;
        // `candidates` never returns an empty list; the first is the provider nearly every request goes to.
        let first = candidates.first().map(|c| c.upstream.quota());
        let first = first.unwrap_or(ProviderQuota { provider: "", requests_per_minute: 0 });
        let reservation =
            self.limiter.reserve(user_id, &catalog.plan, estimate::reservation(&request), first).await.inspect_err(
                |error| {
                    let limit = match error {
                        crate::limits::LimitError::RequestsPerMinute { .. } => "requestsPerMinute",
                        crate::limits::LimitError::TokensPerMonth { .. } => "tokensPerMonth",
                        crate::limits::LimitError::Unavailable(_) => "unavailable",
                    };
                    self.metrics.limit_refusals.with_label_values(&[limit]).inc();
                },
            )?;
        Ok(Admission { user_id: user_id.to_string(), request, candidates, reservation })
    }

    /// Gives the whole reservation back: nothing was used (a cache hit, or every provider failed).
    pub async fn release(&self, admission: Admission) {
        self.limiter.settle(&admission.reservation, 0).await;
    }

    fn timeouts(&self, candidate: &Candidate) -> Timeouts {
        Timeouts {
            first_byte: self.settings.first_byte_timeout.min(candidate.upstream.timeout),
            idle: self.settings.idle_timeout,
        }
    }

    /// Runs `use_breaker` on the provider's circuit breaker, created on first use.
    fn with_breaker<T>(&self, provider: &str, use_breaker: impl FnOnce(&mut Breaker) -> T) -> T {
        let mut breakers = self.breakers.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        // The provider's name is copied only the first time: this runs twice for every call.
        if let Some(breaker) = breakers.get_mut(provider) {
            return use_breaker(breaker);
        }
        use_breaker(breakers.entry(provider.to_string()).or_default())
    }

    fn breaker_allows(&self, provider: &str) -> bool {
        self.with_breaker(provider, |breaker| breaker.allow(Instant::now()))
    }

    fn record_result(&self, provider: &str, result: Result<(), &ProviderError>) {
        self.with_breaker(provider, |breaker| match result {
            Ok(()) => breaker.record_success(),
            Err(error) if error.counts_against_provider() => {
                breaker.record_failure(&self.settings.breaker, Instant::now())
            }
            Err(_) => breaker.record_neutral(),
        });
        let label = match result {
            Ok(()) => "ok",
            Err(error) => error.kind(),
        };
        self.metrics.upstream_attempts.with_label_values(&[provider, label]).inc();
    }

    /// Tries candidates in order, retrying each as the policy says, until `attempt` succeeds.
    async fn run_attempts<T, F, Fut>(
        &self,
        admission: &Admission,
        mut attempt_with: F,
    ) -> Result<(T, Served, OwnedSemaphorePermit), ProviderError>
    where
        F: FnMut(Candidate, CompletionRequest, Timeouts) -> Fut,
        Fut: Future<Output = Result<T, ProviderError>>,
    {
        let mut last_error = ProviderError::CircuitOpen;
        for (index, candidate) in admission.candidates.iter().enumerate() {
            let provider = candidate.upstream.name.as_str();
            let mut attempt = 0;
            loop {
                attempt += 1;
                if !self.breaker_allows(provider) {
                    self.metrics.upstream_attempts.with_label_values(&[provider, "circuit_open"]).inc();
                    last_error = ProviderError::CircuitOpen;
                    break;
                }
                let Ok(permit) = candidate.upstream.concurrency.clone().try_acquire_owned() else {
                    self.metrics.upstream_attempts.with_label_values(&[provider, "concurrency_limit"]).inc();
                    last_error = ProviderError::Throttled { limit: "maxConcurrentRequests", retry_after: None };
                    break;
                };
                let reserved = index == 0 && attempt == 1 && admission.reservation.first_provider_slot;
                if !reserved {
                    let slot = self.limiter.take_provider_slot(candidate.upstream.quota()).await;
                    if let Ok(ProviderSlot::Full { retry_after }) = slot {
                        self.metrics.upstream_attempts.with_label_values(&[provider, "requests_per_minute"]).inc();
                        last_error =
                            ProviderError::Throttled { limit: "requestsPerMinute", retry_after: Some(retry_after) };
                        break;
                    }
                    // Redis unreachable: the plan's limits were checked already, and a provider that minds
                    // will answer 429 itself; not calling it would turn a Redis hiccup into an outage.
                    if let Err(error) = slot {
                        tracing::warn!(provider, %error, "cannot count the provider's requests this minute");
                    }
                }
                let mut request = admission.request.clone();
                request.model = candidate.offer.name.clone();
                match attempt_with(candidate.clone(), request, self.timeouts(candidate)).await {
                    Ok(value) => {
                        self.record_result(provider, Ok(()));
                        let served = Served { provider: provider.to_string(), offer: candidate.offer.clone() };
                        return Ok((value, served, permit));
                    }
                    Err(error) => {
                        self.record_result(provider, Err(&error));
                        tracing::info!(provider, model = %candidate.offer.name, attempt, error = %error, "provider attempt failed");
                        match next_step(&self.settings.retry, attempt, &error, false, fastrand::f64()) {
                            Next::RetryAfter(wait) => {
                                tokio::select! {
                                    () = tokio::time::sleep(wait) => {}
                                    () = self.shutdown.clone().triggered() => return Err(error),
                                }
                            }
                            Next::NextCandidate => {
                                last_error = error;
                                break;
                            }
                            Next::GiveUp => return Err(error),
                        }
                    }
                }
            }
        }
        Err(last_error)
    }

    /// A whole answer. Settles the reservation and records usage before returning.
    pub async fn complete(&self, admission: Admission) -> Result<(Completion, Served), GatewayError> {
        let client = &self.client;
        let result = self
            .run_attempts(&admission, |candidate, request, timeouts| async move {
                client
                    .complete(candidate.upstream.kind.adapter(), &candidate.upstream.endpoint, &request, timeouts)
                    .await
            })
            .await;
        match result {
            Ok((completion, served, permit)) => {
                drop(permit);
                let usage = estimate::settle_usage(&admission.request, completion.usage, &completion.text);
                self.settle(&admission, &served, usage, "complete");
                Ok((completion, served))
            }
            Err(error) => {
                self.metrics.completions.with_label_values(&["", &admission.request.model, error.kind()]).inc();
                self.release(admission).await;
                Err(GatewayError::Provider(error))
            }
        }
    }

    /// Replaces the reservation with the real usage and records the usage event. Usually both are done here,
    /// without waiting: the lease absorbs the difference and the event fits in the writer's queue. Otherwise
    /// (Redis must be told, or the queue is full) the rest runs in a task of its own so the answer does not
    /// wait; shutdown waits for it through the task tracker.
    fn settle(&self, admission: &Admission, served: &Served, usage: Usage, outcome: &str) {
        let model = served.offer.name.as_str();
        self.metrics.completions.with_label_values(&[&served.provider, model, outcome]).inc();
        self.metrics.tokens.with_label_values(&[&served.provider, model, "input"]).inc_by(usage.input_tokens);
        self.metrics.tokens.with_label_values(&[&served.provider, model, "output"]).inc_by(usage.output_tokens);
        let remainder = self.limiter.settle_in_lease(&admission.reservation, usage.input_tokens + usage.output_tokens);
        let event = UsageEvent::new(&admission.user_id, &served.provider, &served.offer, usage);
        let unqueued = self.usage.try_record(event).err();
        if remainder.is_none() && unqueued.is_none() {
            return;
        }
        let (limiter, recorder, running) = (self.limiter.clone(), self.usage.clone(), self.tasks.enter());
        tokio::spawn(async move {
            if let Some(remainder) = remainder {
                limiter.settle_remainder(remainder).await;
            }
            if let Some(event) = unqueued {
                recorder.record(event).await;
            }
            drop(running);
        });
    }

    /// Opens a stream on the first candidate that produces content. Nothing has reached the client before
    /// this returns, so every failure until then may be retried or fallen back from.
    pub async fn open_stream(&self, admission: Admission) -> Result<OpenStream, GatewayError> {
        let client = &self.client;
        let result = self
            .run_attempts(&admission, |candidate, request, timeouts| async move {
                let mut upstream = client
                    .stream(candidate.upstream.kind.adapter(), &candidate.upstream.endpoint, &request, timeouts)
                    .await?;
                let mut first = Vec::new();
                loop {
                    match upstream.next().await {
                        Some(Ok(event)) => {
                            let content = !matches!(event, ProviderEvent::Usage(_));
                            first.push(event);
                            if content {
                                return Ok((upstream, first));
                            }
                        }
                        None => return Ok((upstream, first)),
                        Some(Err(error)) => return Err(error),
                    }
                }
            })
            .await;
        match result {
            Ok(((upstream, first), served, permit)) => Ok(OpenStream { served, upstream, permit, first, admission }),
            Err(error) => {
                self.metrics.completions.with_label_values(&["", &admission.request.model, error.kind()]).inc();
                self.release(admission).await;
                Err(GatewayError::Provider(error))
            }
        }
    }

    /// The relay that carries an opened stream to its client.
    pub fn relay(
        self: &Arc<Self>,
        open: OpenStream,
        stop: Option<&StopHandle>,
        observer: Option<Arc<dyn Observer>>,
        hook: Option<SettleHook>,
    ) -> Relay {
        self.metrics.live_streams.inc();
        let OpenStream { served, upstream, permit, first, admission } = open;
        Relay {
            gateway: self.clone(),
            stop: stop.map(StopHandle::subscribe),
            observer,
            hook,
            live: Some(LiveStream {
                served,
                upstream,
                permit,
                pending: first.into_iter(),
                admission,
                answer: Answer::default(),
                _running: self.tasks.enter(),
            }),
        }
    }

    /// Settles a stream that ended with `status` and builds its outcome (before the hook and the observer).
    fn conclude(&self, live: LiveStream, status: OutcomeStatus) -> (Outcome, TaskGuard) {
        let LiveStream { served, upstream, permit, admission, answer, _running: running, .. } = live;
        drop(upstream);
        drop(permit);
        let usage = estimate::settle_usage(&admission.request, answer.usage, &answer.text);
        let label = match &status {
            OutcomeStatus::Complete => "complete",
            OutcomeStatus::Stopped(_) => "stopped",
            OutcomeStatus::Failed(error) => error.kind(),
        };
        self.settle(&admission, &served, usage, label);
        self.metrics.live_streams.dec();
        let outcome = Outcome {
            status,
            finish_reason: answer.finish_reason,
            text: answer.text,
            tool_calls: answer.tool_calls.into_values().collect(),
            usage,
            served,
            conversation_title: None,
        };
        (outcome, running)
    }
}

/// A committed stream on its way to one client. Each [`Relay::next`] reads the upstream, so the upstream is
/// read at the client's pace with no queue between them, and no task of its own. The answer is settled once:
/// [`Relay::next`] returns the outcome when the answer ends, is stopped or the service shuts down; a relay
/// dropped before that (its client went away) settles as a disconnect when it is dropped.
pub struct Relay {
    gateway: Arc<Gateway>,
    stop: Option<watch::Receiver<bool>>,
    observer: Option<Arc<dyn Observer>>,
    hook: Option<SettleHook>,
    /// `None` once settled.
    live: Option<LiveStream>,
}

struct LiveStream {
    served: Served,
    upstream: UpstreamStream,
    /// A slot of the provider's concurrency limit, held until the stream ends.
    permit: OwnedSemaphorePermit,
    /// What was read while the stream was opened.
    pending: std::vec::IntoIter<ProviderEvent>,
    admission: Admission,
    answer: Answer,
    /// Shutdown waits for streams, also for the hook of one whose client left.
    _running: TaskGuard,
}

impl Relay {
    /// The next event for the client; then, once, the outcome; then `None`.
    pub async fn next(&mut self) -> Option<StreamMessage> {
        let live = self.live.as_mut()?;
        let status = loop {
            let next = match live.pending.next() {
                Some(event) => Some(Ok(event)),
                None => tokio::select! {
                    biased;
                    reason = interrupted(&mut self.stop, &self.gateway.shutdown) => break OutcomeStatus::Stopped(reason),
                    next = live.upstream.next() => next,
                },
            };
            let event = match next {
                None => break OutcomeStatus::Complete,
                Some(Err(error)) => {
                    self.gateway.record_result(&live.served.provider, Err(&error));
                    break OutcomeStatus::Failed(error);
                }
                Some(Ok(ProviderEvent::Text(mut text))) => {
                    // A burst that arrived together goes on as one event: fewer wake-ups and writes.
                    if let Some(more) = live.upstream.take_ready_text() {
                        text.push_str(&more);
                    }
                    ProviderEvent::Text(text)
                }
                Some(Ok(event)) => event,
            };
            live.answer.add(&event);
            if matches!(event, ProviderEvent::Usage(_)) {
                continue;
            }
            if let Some(observer) = &self.observer {
                observer.event(&event);
            }
            return Some(StreamMessage::Event(event));
        };
        let live = self.live.take()?;
        let (outcome, running) = self.gateway.conclude(live, status);
        let has_hook = self.hook.is_some();
        let ending = finish(outcome, self.hook.take(), self.observer.take(), running);
        let outcome = if has_hook {
            // The hook persists the answer: in a task of its own, so that a client leaving meanwhile cannot
            // cut it short by dropping this future.
            let finished = tokio::spawn(ending).await;
            finished.inspect_err(|error| tracing::error!(%error, "a stream's settle hook failed")).ok()?
        } else {
            ending.await
        };
        Some(StreamMessage::Finished(Box::new(outcome)))
    }

    /// The messages as a stream, for a response body.
    pub fn into_stream(self) -> impl futures::Stream<Item = StreamMessage> + Send {
        futures::stream::unfold(self, |mut relay| async move { relay.next().await.map(|message| (message, relay)) })
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        let Some(live) = self.live.take() else { return };
        // Without a runtime the process is ending and nothing could be recorded anyway.
        if tokio::runtime::Handle::try_current().is_err() {
            return;
        }
        let (outcome, running) = self.gateway.conclude(live, OutcomeStatus::Stopped(StopReason::Disconnected));
        tokio::spawn(finish(outcome, self.hook.take(), self.observer.take(), running));
    }
}

/// Resolves when the caller asks the stream to stop or the service shuts down.
async fn interrupted(stop: &mut Option<watch::Receiver<bool>>, shutdown: &ShutdownSignal) -> StopReason {
    let requested = async {
        let asked = match stop {
            Some(stop) => stop.wait_for(|stopped| *stopped).await.is_ok(),
            None => false,
        };
        // A stop handle that is gone can no longer ask.
        if !asked {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        biased;
        () = requested => StopReason::Requested,
        () = shutdown.clone().triggered() => StopReason::Shutdown,
    }
}

/// Runs the transport's hook on the outcome and tells the observer.
async fn finish(
    mut outcome: Outcome,
    hook: Option<SettleHook>,
    observer: Option<Arc<dyn Observer>>,
    running: TaskGuard,
) -> Outcome {
    if let Some(hook) = hook {
        outcome = hook(outcome).await;
    }
    if let Some(observer) = &observer {
        observer.finished(&outcome);
    }
    drop(running);
    outcome
}

/// What a stream has produced so far.
#[derive(Default)]
struct Answer {
    text: String,
    tool_calls: std::collections::BTreeMap<u32, ToolCall>,
    usage: Option<Usage>,
    finish_reason: Option<FinishReason>,
}

impl Answer {
    fn add(&mut self, event: &ProviderEvent) {
        match event {
            ProviderEvent::Text(text) => self.text.push_str(text),
            ProviderEvent::ToolCallDelta { index, id, name, arguments } => {
                let call = self.tool_calls.entry(*index).or_insert_with(|| ToolCall {
                    id: String::new(),
                    name: String::new(),
                    arguments: String::new(),
                });
                if let Some(id) = id {
                    call.id.clone_from(id);
                }
                if let Some(name) = name {
                    call.name.clone_from(name);
                }
                call.arguments.push_str(arguments);
            }
            ProviderEvent::Usage(usage) => self.usage = Some(*usage),
            ProviderEvent::Finished(reason) => self.finish_reason = Some(reason.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_assemble_text_tool_calls_and_the_latest_usage() {
        let mut answer = Answer::default();
        for event in [
            ProviderEvent::Usage(Usage { input_tokens: 5, output_tokens: 1 }),
            ProviderEvent::Text("Hel".into()),
            ProviderEvent::Text("lo".into()),
            ProviderEvent::ToolCallDelta {
                index: 0,
                id: Some("c1".into()),
                name: Some("f".into()),
                arguments: "{\"a\":".into(),
            },
            ProviderEvent::ToolCallDelta { index: 0, id: None, name: None, arguments: "1}".into() },
            ProviderEvent::Usage(Usage { input_tokens: 5, output_tokens: 9 }),
            ProviderEvent::Finished(FinishReason::ToolCalls),
        ] {
            answer.add(&event);
        }
        assert_eq!(answer.text, "Hello");
        assert_eq!(
            answer.tool_calls[&0],
            ToolCall { id: "c1".into(), name: "f".into(), arguments: "{\"a\":1}".into() }
        );
        assert_eq!(answer.usage, Some(Usage { input_tokens: 5, output_tokens: 9 }));
        assert_eq!(answer.finish_reason, Some(FinishReason::ToolCalls));
    }
}
