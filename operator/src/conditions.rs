//! `metav1.Condition` bookkeeping shared by the controllers.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

/// A condition as a controller decides it, before transition times are known.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decided {
    pub type_: &'static str,
    pub status: bool,
    pub reason: String,
    pub message: String,
}

impl Decided {
    pub fn new(type_: &'static str, status: bool, reason: impl Into<String>, message: impl Into<String>) -> Self {
        Decided { type_, status, reason: reason.into(), message: message.into() }
    }
}

fn status_text(status: bool) -> &'static str {
    if status { "True" } else { "False" }
}

/// Merges decided conditions into the previous ones. A condition whose status did not change keeps its
/// `lastTransitionTime`, so that recomputing an unchanged status yields an identical object (and no write).
pub fn merge(previous: &[Condition], decided: Vec<Decided>, generation: Option<i64>, now: Timestamp) -> Vec<Condition> {
    decided
        .into_iter()
        .map(|d| {
            let status = status_text(d.status).to_string();
            let last_transition_time = previous
                .iter()
                .find(|p| p.type_ == d.type_ && p.status == status)
                .map(|p| p.last_transition_time.clone())
                .unwrap_or(Time(now));
            Condition {
                type_: d.type_.into(),
                status,
                reason: d.reason,
                message: d.message,
                observed_generation: generation,
                last_transition_time,
            }
        })
        .collect()
}

/// The status of a condition type, if present.
pub fn is_true(conditions: &[Condition], type_: &str) -> Option<bool> {
    conditions.iter().find(|c| c.type_ == type_).map(|c| c.status == "True")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unchanged_status_keeps_its_transition_time() {
        let then = Timestamp::from_second(1_000).expect("timestamp");
        let now = Timestamp::from_second(2_000).expect("timestamp");
        let first = merge(&[], vec![Decided::new("Ready", false, "Waiting", "m")], Some(1), then);
        let again = merge(&first, vec![Decided::new("Ready", false, "StillWaiting", "m2")], Some(2), now);
        assert_eq!(again[0].last_transition_time, Time(then));
        assert_eq!(again[0].reason, "StillWaiting");
        assert_eq!(again[0].observed_generation, Some(2));
        let flipped = merge(&again, vec![Decided::new("Ready", true, "Ready", "m")], Some(2), now);
        assert_eq!(flipped[0].last_transition_time, Time(now));
        assert_eq!(is_true(&flipped, "Ready"), Some(true));
        assert_eq!(is_true(&flipped, "Degraded"), None);
    }
}
