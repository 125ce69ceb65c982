//! What to do after a send failed: try again after a backoff, or give up and dead-letter the message.

use std::time::Duration;

/// Why one SMTP attempt failed, reduced to what the decision needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SendFailure {
    /// The server answered with an SMTP error code (4xx or 5xx).
    Rejected { code: u16, detail: String },
    /// No answer: connection refused or lost, TLS failure, timeout.
    Unavailable { detail: String },
}

impl SendFailure {
    /// A short description for the dead-letter entry and the logs. It holds the server's text, never credentials.
    pub fn describe(&self) -> String {
        match self {
            SendFailure::Rejected { code, detail } => format!("SMTP {code}: {detail}"),
            SendFailure::Unavailable { detail } => format!("SMTP server unavailable: {detail}"),
        }
    }

    /// A `5xx` that is about the message, not about our credentials.
    fn is_permanent_refusal(&self) -> bool {
        matches!(self, SendFailure::Rejected { code, .. }
            if (500..600).contains(code) && !AUTHENTICATION_CODES.contains(code))
    }
}

/// Why a message goes to the dead-letter stream; the label is the `kind` field of the entry and of the metric.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeadLetterKind {
    /// The entry is not an email request of this format version.
    Malformed,
    /// The request cannot become a message: a header with a line break, an address or link that is not valid.
    Invalid,
    /// Every attempt failed, the last with a permanent refusal (5xx other than authentication).
    Rejected,
    /// Every attempt failed, the last with a temporary error.
    Exhausted,
    /// Delivered to workers too often without ever finishing (each one died holding it).
    Redelivered,
}

impl DeadLetterKind {
    pub const ALL: [DeadLetterKind; 5] = [
        DeadLetterKind::Malformed,
        DeadLetterKind::Invalid,
        DeadLetterKind::Rejected,
        DeadLetterKind::Exhausted,
        DeadLetterKind::Redelivered,
    ];

    pub fn label(self) -> &'static str {
        match self {
            DeadLetterKind::Malformed => "malformed",
            DeadLetterKind::Invalid => "invalid",
            DeadLetterKind::Rejected => "rejected",
            DeadLetterKind::Exhausted => "exhausted",
            DeadLetterKind::Redelivered => "redelivered",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub base: Duration,
    pub max: Duration,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NextStep {
    RetryAfter(Duration),
    DeadLetter { kind: DeadLetterKind, reason: String },
}

/// Codes that say the server refused *us* (authentication required or failed), not the message: the tenant's
/// configuration is wrong, so these count as temporary.
const AUTHENTICATION_CODES: [u16; 4] = [530, 534, 535, 538];

/// Attempts in all when the latest failure is a permanent refusal (at most the policy's own).
///
/// The server is the platform's relay, not the recipient's, and relays also answer `5xx` for conditions that
/// clear soon after (a sender being verified, a paused account resumed), so a refusal gets a second and a third
/// chance. Not the whole temporary schedule: a waiting retry keeps its worker slot, and a batch of emails
/// refused for good must not hold every slot for the minutes that schedule lasts.
const PERMANENT_REFUSAL_ATTEMPTS: u32 = 3;

/// Decides the step after attempt number `attempt` (from 1) failed. `jitter` in `[0, 1)` spreads the retries of
/// many workers. The dead letter's kind says whether the last failure was a permanent refusal.
pub fn after_failure(failure: &SendFailure, attempt: u32, policy: &RetryPolicy, jitter: f64) -> NextStep {
    let permanent = failure.is_permanent_refusal();
    let limit = if permanent { policy.max_attempts.min(PERMANENT_REFUSAL_ATTEMPTS) } else { policy.max_attempts };
    if attempt < limit {
        return NextStep::RetryAfter(backoff(attempt, policy, jitter));
    }
    let kind = if permanent { DeadLetterKind::Rejected } else { DeadLetterKind::Exhausted };
    NextStep::DeadLetter {
        kind,
        reason: format!("gave up after {attempt} attempts; the last failed with {}", failure.describe()),
    }
}

/// The delay after failed attempt `attempt`: the base doubled per attempt, at most `max`, then shortened by up to
/// a fifth by `jitter`.
pub fn backoff(attempt: u32, policy: &RetryPolicy, jitter: f64) -> Duration {
    let doublings = attempt.saturating_sub(1).min(31);
    let nominal = policy.base.saturating_mul(1u32 << doublings).min(policy.max);
    nominal.saturating_sub(nominal.mul_f64(0.2 * jitter.clamp(0.0, 1.0)))
}

/// Whether a message delivered `deliveries` times (the stream's count) may be attempted again.
pub fn too_many_deliveries(deliveries: u64, max_deliveries: u64) -> Option<NextStep> {
    (deliveries > max_deliveries).then(|| NextStep::DeadLetter {
        kind: DeadLetterKind::Redelivered,
        reason: format!(
            "delivered {deliveries} times without being finished (more than {max_deliveries}): \
             a worker died each time it held the message"
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: RetryPolicy =
        RetryPolicy { max_attempts: 4, base: Duration::from_secs(1), max: Duration::from_secs(5) };

    fn rejected(code: u16) -> SendFailure {
        SendFailure::Rejected { code, detail: "no".into() }
    }

    #[test]
    fn temporary_failures_are_retried_with_doubling_delays_up_to_the_maximum() {
        let unavailable = SendFailure::Unavailable { detail: "connection refused".into() };
        assert_eq!(after_failure(&unavailable, 1, &POLICY, 0.0), NextStep::RetryAfter(Duration::from_secs(1)));
        assert_eq!(after_failure(&rejected(451), 2, &POLICY, 0.0), NextStep::RetryAfter(Duration::from_secs(2)));
        assert_eq!(after_failure(&rejected(421), 3, &POLICY, 0.0), NextStep::RetryAfter(Duration::from_secs(4)));
        let long = RetryPolicy { max_attempts: 40, ..POLICY };
        assert_eq!(after_failure(&unavailable, 4, &long, 0.0), NextStep::RetryAfter(Duration::from_secs(5)));
        assert_eq!(after_failure(&unavailable, 39, &long, 0.0), NextStep::RetryAfter(Duration::from_secs(5)));
    }

    #[test]
    fn jitter_shortens_the_delay_by_at_most_a_fifth() {
        assert_eq!(backoff(2, &POLICY, 0.5), Duration::from_millis(1800));
        assert_eq!(backoff(2, &POLICY, 1.0), Duration::from_millis(1600));
        assert_eq!(backoff(2, &POLICY, 7.0), Duration::from_millis(1600));
        assert_eq!(backoff(2, &POLICY, -1.0), Duration::from_secs(2));
    }

    #[test]
    fn the_last_attempt_dead_letters_with_the_last_error() {
        let step = after_failure(&rejected(451), 4, &POLICY, 0.0);
        assert_eq!(
            step,
            NextStep::DeadLetter {
                kind: DeadLetterKind::Exhausted,
                reason: "gave up after 4 attempts; the last failed with SMTP 451: no".into()
            }
        );
        let single = RetryPolicy { max_attempts: 1, ..POLICY };
        assert!(matches!(
            after_failure(&SendFailure::Unavailable { detail: "x".into() }, 1, &single, 0.0),
            NextStep::DeadLetter { kind: DeadLetterKind::Exhausted, .. }
        ));
    }

    #[test]
    fn permanent_refusals_are_retried_twice_then_dead_lettered_as_rejected() {
        for code in [550, 551, 552, 553, 554] {
            assert_eq!(after_failure(&rejected(code), 1, &POLICY, 0.0), NextStep::RetryAfter(Duration::from_secs(1)));
            assert_eq!(after_failure(&rejected(code), 2, &POLICY, 0.0), NextStep::RetryAfter(Duration::from_secs(2)));
            assert_eq!(
                after_failure(&rejected(code), 3, &POLICY, 0.0),
                NextStep::DeadLetter {
                    kind: DeadLetterKind::Rejected,
                    reason: format!("gave up after 3 attempts; the last failed with SMTP {code}: no")
                }
            );
        }
        // A temporary failure at the third attempt keeps the longer schedule; a policy shorter than the
        // refusal budget wins.
        assert_eq!(after_failure(&rejected(451), 3, &POLICY, 0.0), NextStep::RetryAfter(Duration::from_secs(4)));
        let single = RetryPolicy { max_attempts: 1, ..POLICY };
        assert!(matches!(
            after_failure(&rejected(550), 1, &single, 0.0),
            NextStep::DeadLetter { kind: DeadLetterKind::Rejected, .. }
        ));
    }

    #[test]
    fn authentication_refusals_are_retried_like_temporary_errors() {
        for code in AUTHENTICATION_CODES {
            assert_eq!(after_failure(&rejected(code), 1, &POLICY, 0.0), NextStep::RetryAfter(Duration::from_secs(1)));
            assert!(matches!(
                after_failure(&rejected(code), 4, &POLICY, 0.0),
                NextStep::DeadLetter { kind: DeadLetterKind::Exhausted, .. }
            ));
        }
    }

    #[test]
    fn huge_attempt_numbers_do_not_overflow() {
        let long = RetryPolicy { max_attempts: u32::MAX, base: Duration::from_secs(u64::MAX / 2), max: Duration::MAX };
        assert_eq!(backoff(u32::MAX - 1, &long, 0.0), Duration::MAX);
    }

    #[test]
    fn redeliveries_beyond_the_limit_dead_letter() {
        assert_eq!(too_many_deliveries(1, 5), None);
        assert_eq!(too_many_deliveries(5, 5), None);
        assert!(matches!(
            too_many_deliveries(6, 5),
            Some(NextStep::DeadLetter { kind: DeadLetterKind::Redelivered, .. })
        ));
    }

    #[test]
    fn every_kind_has_a_distinct_label() {
        let labels: std::collections::BTreeSet<_> = DeadLetterKind::ALL.iter().map(|kind| kind.label()).collect();
        assert_eq!(labels.len(), DeadLetterKind::ALL.len());
    }
}
