//! The pure side of the stream: key names of the idempotency records, stream entry ids, how far the stream may be
//! trimmed, and which consumers may be removed from the group.

use std::time::Duration;

/// The marker set right after the SMTP server accepted an email; a redelivered entry with this id is acknowledged
/// without being sent again.
pub fn sent_key(email_id: &str) -> String {
    format!("saaschat:emails:sent:{email_id}")
}

/// The short lock a worker holds while it sends an email, so two entries with the same id (the outbox relay
/// published twice) are not sent by two workers at once.
pub fn sending_key(email_id: &str) -> String {
    format!("saaschat:emails:sending:{email_id}")
}

/// A stream entry id, `<milliseconds>-<sequence>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct EntryId {
    pub millis: u64,
    pub sequence: u64,
}

impl EntryId {
    pub fn parse(text: &str) -> Option<EntryId> {
        let (millis, sequence) = text.split_once('-')?;
        Some(EntryId { millis: millis.parse().ok()?, sequence: sequence.parse().ok()? })
    }
}

impl std::fmt::Display for EntryId {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "{}-{}", self.millis, self.sequence)
    }
}

/// What one consumer group has done with the stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupProgress {
    /// The last entry handed to any consumer of the group (`0-0` before the first).
    pub last_delivered: EntryId,
    /// The oldest entry handed out but not acknowledged.
    pub oldest_pending: Option<EntryId>,
}

/// The `MINID` to trim the stream to: every entry below it has been delivered to and acknowledged by every group,
/// so removing it loses nothing. A group with pending entries holds the trim at its oldest one; a group without
/// holds it just past its last delivered entry. `None` when there is nothing to trim (no group, or a group that
/// has not read anything yet).
pub fn trim_threshold(groups: &[GroupProgress]) -> Option<EntryId> {
    let start = EntryId { millis: 0, sequence: 0 };
    if groups.is_empty() || groups.iter().any(|group| group.last_delivered == start) {
        return None;
    }
    groups
        .iter()
        .map(|group| {
            group.oldest_pending.unwrap_or(EntryId {
                millis: group.last_delivered.millis,
                sequence: group.last_delivered.sequence.saturating_add(1),
            })
        })
        .min()
}

/// A consumer as `XINFO CONSUMERS` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsumerState {
    pub name: String,
    pub pending: usize,
    pub idle: Duration,
}

/// Consumers to delete from the group: each worker process registers its own name, so names of gone pods pile up.
/// Only those without pending messages (nothing is lost by deleting them) and idle for `stale_after`; never `me`.
pub fn stale_consumers<'a>(consumers: &'a [ConsumerState], me: &str, stale_after: Duration) -> Vec<&'a str> {
    consumers
        .iter()
        .filter(|consumer| consumer.name != me && consumer.pending == 0 && consumer.idle >= stale_after)
        .map(|consumer| consumer.name.as_str())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(text: &str) -> EntryId {
        EntryId::parse(text).expect("entry id")
    }

    #[test]
    fn keys_carry_the_email_id() {
        assert_eq!(sent_key("auth:1"), "saaschat:emails:sent:auth:1");
        assert_eq!(sending_key("billing:2"), "saaschat:emails:sending:billing:2");
    }

    #[test]
    fn entry_ids_parse_order_and_print() {
        assert_eq!(id("1700000000000-3"), EntryId { millis: 1_700_000_000_000, sequence: 3 });
        assert!(id("5-10") > id("5-9"));
        assert!(id("6-0") > id("5-99"));
        assert_eq!(id("12-4").to_string(), "12-4");
        for bad in ["", "12", "a-1", "1-b", "1-2-3", "-1"] {
            assert_eq!(EntryId::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn the_stream_is_trimmed_up_to_the_oldest_unfinished_entry() {
        let groups = [GroupProgress { last_delivered: id("100-0"), oldest_pending: Some(id("40-2")) }];
        assert_eq!(trim_threshold(&groups), Some(id("40-2")));
        let idle = [GroupProgress { last_delivered: id("100-0"), oldest_pending: None }];
        assert_eq!(trim_threshold(&idle), Some(id("100-1")), "everything delivered is acknowledged");
    }

    #[test]
    fn every_group_holds_back_the_trim() {
        let groups = [
            GroupProgress { last_delivered: id("100-0"), oldest_pending: None },
            GroupProgress { last_delivered: id("70-0"), oldest_pending: Some(id("65-1")) },
            GroupProgress { last_delivered: id("90-0"), oldest_pending: Some(id("80-0")) },
        ];
        assert_eq!(trim_threshold(&groups), Some(id("65-1")));
        let behind = [
            GroupProgress { last_delivered: id("100-0"), oldest_pending: Some(id("90-0")) },
            GroupProgress { last_delivered: id("50-3"), oldest_pending: None },
        ];
        assert_eq!(trim_threshold(&behind), Some(id("50-4")));
    }

    #[test]
    fn nothing_is_trimmed_before_anything_was_read() {
        assert_eq!(trim_threshold(&[]), None);
        assert_eq!(trim_threshold(&[GroupProgress { last_delivered: id("0-0"), oldest_pending: None }]), None);
        let groups = [
            GroupProgress { last_delivered: id("100-0"), oldest_pending: None },
            GroupProgress { last_delivered: id("0-0"), oldest_pending: None },
        ];
        assert_eq!(trim_threshold(&groups), None);
    }

    #[test]
    fn only_idle_consumers_without_pending_messages_other_than_me_are_stale() {
        let hour = Duration::from_secs(3600);
        let consumers = [
            ConsumerState { name: "gone".into(), pending: 0, idle: hour * 2 },
            ConsumerState { name: "holding".into(), pending: 3, idle: hour * 2 },
            ConsumerState { name: "recent".into(), pending: 0, idle: hour / 2 },
            ConsumerState { name: "me".into(), pending: 0, idle: hour * 2 },
            ConsumerState { name: "exactly".into(), pending: 0, idle: hour },
        ];
        assert_eq!(stale_consumers(&consumers, "me", hour), ["gone", "exactly"]);
    }
}
