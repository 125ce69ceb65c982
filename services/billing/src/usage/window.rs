//! Deciding usage windows: their bounds (aligned to UTC), their Stripe identifiers, which window is next and
//! what to do with it.

use std::time::Duration;

use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};

/// Stripe accepts meter events at most 35 days old; a margin keeps a slow request from crossing the line.
pub const MAX_EVENT_AGE: TimeDelta = TimeDelta::days(35);
const AGE_MARGIN: TimeDelta = TimeDelta::hours(1);

fn delta(duration: Duration) -> TimeDelta {
    TimeDelta::from_std(duration).unwrap_or(TimeDelta::hours(1))
}

/// The start of the window holding `time`: windows divide a day, so they line up with UTC midnight.
pub fn window_start(time: DateTime<Utc>, window: Duration) -> DateTime<Utc> {
    let size = i64::try_from(window.as_secs()).unwrap_or(3600).max(1);
    let seconds = time.timestamp().div_euclid(size) * size;
    DateTime::from_timestamp(seconds, 0).unwrap_or(time)
}

/// The meter event identifier of a window: the same for every replica and every retry, so Stripe counts it once.
pub fn identifier(tenant: &str, start: DateTime<Utc>) -> String {
    format!("{tenant}-{}", start.to_rfc3339_opts(SecondsFormat::Secs, true))
}

/// The next window to settle: the one after the last settled, or (the first time) the one holding the earliest
/// usage, no older than Stripe accepts. `None` while that window has not closed plus `settle`.
pub fn next_due(
    last_settled: Option<DateTime<Utc>>,
    earliest_usage: Option<DateTime<Utc>>,
    window: Duration,
    settle: Duration,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    let start = match last_settled {
        Some(last) => last + delta(window),
        None => {
            let oldest_accepted = window_start(now - MAX_EVENT_AGE + AGE_MARGIN, window) + delta(window);
            window_start(earliest_usage?, window).max(oldest_accepted)
        }
    };
    (start + delta(window) + delta(settle) <= now).then_some(start)
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WindowAction {
    /// Send one meter event for the customer, then record the window as `sent`.
    Send { customer: String, tokens: i64, timestamp: i64 },
    /// Record the window without a meter event, with this outcome.
    Record(&'static str),
}

/// What a settled window leads to.
pub fn decide(end: DateTime<Utc>, tokens: i64, customer: Option<&str>, now: DateTime<Utc>) -> WindowAction {
    // The event is stamped inside its window, on its last second.
    let timestamp = end - TimeDelta::seconds(1);
    if tokens <= 0 {
        WindowAction::Record("empty")
    } else if timestamp < now - MAX_EVENT_AGE + AGE_MARGIN {
        WindowAction::Record("expired")
    } else {
        match customer {
            Some(customer) => {
                WindowAction::Send { customer: customer.to_string(), tokens, timestamp: timestamp.timestamp() }
            }
            None => WindowAction::Record("no-customer"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);
    const SETTLE: Duration = Duration::from_secs(120);

    fn at(text: &str) -> DateTime<Utc> {
        text.parse().expect("time")
    }

    #[test]
    fn windows_are_aligned_to_utc() {
        assert_eq!(window_start(at("2026-11-26T05:59:59Z"), HOUR), at("2026-11-26T05:00:00Z"));
        assert_eq!(window_start(at("2026-11-26T06:00:00Z"), HOUR), at("2026-11-26T06:00:00Z"));
        assert_eq!(window_start(at("2026-11-26T06:14:00Z"), Duration::from_secs(900)), at("2026-11-26T06:00:00Z"));
        assert_eq!(window_start(at("2026-11-26T23:00:00Z"), Duration::from_secs(86_400)), at("2026-11-26T00:00:00Z"));
    }

    #[test]
    fn identifiers_are_deterministic() {
        assert_eq!(identifier("acme", at("2026-11-26T05:00:00Z")), "acme-2026-11-26T05:00:00Z");
        assert_eq!(identifier("acme", at("2026-11-26T05:00:00Z")), identifier("acme", at("2026-11-26T05:00:00Z")));
    }

    #[test]
    fn the_next_window_follows_the_last_settled_once_it_has_settled() {
        let last = Some(at("2026-11-26T04:00:00Z"));
        assert_eq!(next_due(last, None, HOUR, SETTLE, at("2026-11-26T06:01:59Z")), None);
        assert_eq!(next_due(last, None, HOUR, SETTLE, at("2026-11-26T06:02:00Z")), Some(at("2026-11-26T05:00:00Z")));
        // After a long stop every missed window comes next, in order.
        assert_eq!(next_due(last, None, HOUR, SETTLE, at("2026-11-27T12:00:00Z")), Some(at("2026-11-26T05:00:00Z")));
    }

    #[test]
    fn the_first_window_is_the_one_of_the_earliest_usage() {
        let earliest = Some(at("2026-11-26T03:17:00Z"));
        assert_eq!(
            next_due(None, earliest, HOUR, SETTLE, at("2026-11-26T05:00:00Z")),
            Some(at("2026-11-26T03:00:00Z"))
        );
        assert_eq!(next_due(None, earliest, HOUR, SETTLE, at("2026-11-26T04:01:00Z")), None);
        assert_eq!(next_due(None, None, HOUR, SETTLE, at("2026-11-26T05:00:00Z")), None);
    }

    #[test]
    fn the_first_window_is_never_older_than_stripe_accepts() {
        let now = at("2026-11-26T05:30:00Z");
        let start = next_due(None, Some(at("2025-01-01T00:00:00Z")), HOUR, SETTLE, now).expect("due");
        assert_eq!(start, at("2026-10-22T07:00:00Z"));
        assert!(matches!(decide(start + TimeDelta::hours(1), 5, Some("cus_1"), now), WindowAction::Send { .. }));
    }

    #[test]
    fn a_window_with_tokens_and_a_customer_is_sent_stamped_inside_it() {
        let end = at("2026-11-26T05:00:00Z");
        assert_eq!(
            decide(end, 1234, Some("cus_1"), at("2026-11-26T05:02:00Z")),
            WindowAction::Send { customer: "cus_1".into(), tokens: 1234, timestamp: end.timestamp() - 1 }
        );
    }

    #[test]
    fn windows_without_tokens_customer_or_time_left_are_only_recorded() {
        let now = at("2026-11-26T05:02:00Z");
        let end = at("2026-11-26T05:00:00Z");
        assert_eq!(decide(end, 0, Some("cus_1"), now), WindowAction::Record("empty"));
        assert_eq!(decide(end, 10, None, now), WindowAction::Record("no-customer"));
        assert_eq!(decide(at("2026-10-01T00:00:00Z"), 10, Some("cus_1"), now), WindowAction::Record("expired"));
    }
}
