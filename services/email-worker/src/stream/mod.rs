//! The Redis side: the consumer group on [`STREAM`], reading and taking over entries, the idempotency records, the
//! dead-letter stream, and trimming. Every multi-step change is one script or one `MULTI`, so a crash leaves either
//! the whole change or none of it.
//!
//! Two connections: blocking `XREADGROUP` holds its connection for up to the read timeout, so it gets one of its
//! own and acknowledgements never wait behind it.

pub mod decide;

use std::collections::HashMap;
use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::streams::{
    StreamAutoClaimOptions, StreamAutoClaimReply, StreamId, StreamInfoConsumersReply, StreamInfoGroupsReply,
    StreamPendingCountReply, StreamPendingReply, StreamReadOptions, StreamReadReply, StreamTrimOptions,
    StreamTrimmingMode,
};
use redis::{AsyncCommands, RedisError, Script};
use saaschat_platform::email::{CONSUMER_GROUP, DEAD_LETTER_STREAM, STREAM};

use decide::{ConsumerState, EntryId, GroupProgress, sending_key, sent_key, stale_consumers, trim_threshold};

/// Prefix of the fields the worker adds to a dead-letter entry; everything else is the original entry.
pub const DEAD_LETTER_FIELD_PREFIX: &str = "dead_";

/// Puts a dead letter back on the email stream (without its `dead_*` fields) and deletes it from the dead-letter
/// stream. Operators run the same file with `redis-cli` (`docs/email-stream.md`).
pub const REPLAY_SCRIPT: &str = include_str!("replay.lua");

const BEGIN_SEND: &str = r"
if redis.call('EXISTS', KEYS[1]) == 1 then return 'sent' end
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then return 'locked' end
if redis.call('GET', KEYS[2]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[2], ARGV[2])
  return 'locked'
end
return 'busy'
";

const FINISH_SENT: &str = r"
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
if redis.call('GET', KEYS[2]) == ARGV[3] then redis.call('DEL', KEYS[2]) end
return redis.call('XACK', KEYS[3], ARGV[4], ARGV[5])
";

const RENEW_LOCKS: &str = r"
for index, key in ipairs(KEYS) do
  if redis.call('GET', key) == ARGV[index + 1] then redis.call('PEXPIRE', key, ARGV[1]) end
end
return 0
";

const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
";

/// One entry handed to this worker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    pub entry_id: String,
    pub fields: HashMap<String, String>,
    /// How often the stream has handed this entry to a consumer, this time included.
    pub deliveries: u64,
}

/// The outcome of asking to send an email id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BeginSend {
    /// This worker holds the sending lock and may send.
    Locked,
    /// The email was sent before: acknowledge the entry without sending.
    AlreadySent,
    /// Another worker is sending the same id right now.
    Busy,
}

/// What a dead letter records besides the original entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeadLetter<'a> {
    pub kind: &'static str,
    pub reason: &'a str,
    pub attempts: u32,
}

/// The email stream as one consumer of the group sees it.
#[derive(Clone)]
pub struct EmailStream {
    reader: ConnectionManager,
    commands: ConnectionManager,
    consumer: String,
    begin_send: Script,
    finish_sent: Script,
    renew_locks: Script,
    release: Script,
}

impl EmailStream {
    pub fn new(reader: ConnectionManager, commands: ConnectionManager, consumer: String) -> EmailStream {
        EmailStream {
            reader,
            commands,
            consumer,
            begin_send: Script::new(BEGIN_SEND),
            finish_sent: Script::new(FINISH_SENT),
            renew_locks: Script::new(RENEW_LOCKS),
            release: Script::new(RELEASE),
        }
    }

    pub fn consumer(&self) -> &str {
        &self.consumer
    }

    /// Creates the stream and the group when missing; the group starts at the beginning of the stream so entries
    /// appended before the first worker started are sent too.
    pub async fn ensure_group(&self) -> Result<(), RedisError> {
        let mut connection = self.commands.clone();
        match connection.xgroup_create_mkstream::<_, _, _, ()>(STREAM, CONSUMER_GROUP, "0").await {
            Err(error) if error.code() == Some("BUSYGROUP") => Ok(()),
            other => other,
        }
    }

    /// New entries for this consumer, waiting up to `block` for the first.
    pub async fn read_new(&self, count: usize, block: Duration) -> Result<Vec<Delivery>, RedisError> {
        let options = StreamReadOptions::default()
            .group(CONSUMER_GROUP, &self.consumer)
            .count(count)
            .block(usize::try_from(block.as_millis()).unwrap_or(usize::MAX));
        let mut connection = self.reader.clone();
        let reply: Option<StreamReadReply> = match connection.xread_options(&[STREAM], &[">"], &options).await {
            Err(error) if error.code() == Some("NOGROUP") => {
                // The stream or group is gone (Redis lost its data): recreate them and read again next time.
                self.ensure_group().await?;
                return Ok(Vec::new());
            }
            other => other?,
        };
        Ok(reply
            .into_iter()
            .flat_map(|reply| reply.keys)
            .flat_map(|key| key.ids)
            .map(|entry| delivery(entry, 1))
            .collect())
    }

    /// Takes over up to `count` entries that have been pending with any consumer for at least `min_idle` (a worker
    /// that died, or that handed them back at shutdown), scanning the pending list from `cursor`. Returns the next
    /// cursor (`0-0` once the scan wrapped around) and the entries with their delivery counts.
    pub async fn claim_stale(
        &self,
        cursor: &str,
        min_idle: Duration,
        count: usize,
    ) -> Result<(String, Vec<Delivery>), RedisError> {
        let mut connection = self.commands.clone();
        let reply: StreamAutoClaimReply = match connection
            .xautoclaim_options(
                STREAM,
                CONSUMER_GROUP,
                &self.consumer,
                millis(min_idle),
                cursor,
                StreamAutoClaimOptions::default().count(count),
            )
            .await
        {
            Err(error) if error.code() == Some("NOGROUP") => {
                self.ensure_group().await?;
                return Ok(("0-0".into(), Vec::new()));
            }
            other => other?,
        };
        if reply.claimed.is_empty() {
            return Ok((reply.next_stream_id, Vec::new()));
        }
        let mut pipeline = redis::pipe();
        for entry in &reply.claimed {
            pipeline.cmd("XPENDING").arg(STREAM).arg(CONSUMER_GROUP).arg(&entry.id).arg(&entry.id).arg(1);
        }
        let counts: Vec<StreamPendingCountReply> = pipeline.query_async(&mut connection).await?;
        let deliveries = reply
            .claimed
            .into_iter()
            .zip(counts)
            .map(|(entry, count)| {
                let times = count.ids.first().map(|pending| pending.times_delivered as u64).unwrap_or(1);
                delivery(entry, times)
            })
            .collect();
        Ok((reply.next_stream_id, deliveries))
    }

    /// Checks the "sent" marker and takes the sending lock, in one step. Asking again with the same token (the
    /// answer was lost to a broken connection) finds the lock already held by the caller.
    pub async fn begin_send(&self, email_id: &str, token: &str, lock_ttl: Duration) -> Result<BeginSend, RedisError> {
        let mut connection = self.commands.clone();
        let answer: String = self
            .begin_send
            .key(sent_key(email_id))
            .key(sending_key(email_id))
            .arg(token)
            .arg(millis(lock_ttl))
            .invoke_async(&mut connection)
            .await?;
        Ok(match answer.as_str() {
            "sent" => BeginSend::AlreadySent,
            "locked" => BeginSend::Locked,
            _ => BeginSend::Busy,
        })
    }

    /// After the SMTP server accepted the email: sets the "sent" marker, releases the lock and acknowledges the
    /// entry, in one step.
    pub async fn finish_sent(
        &self,
        delivery: &Delivery,
        email_id: &str,
        token: &str,
        marker_ttl: Duration,
    ) -> Result<(), RedisError> {
        let mut connection = self.commands.clone();
        let marker = format!("{} {} {}", delivery.entry_id, self.consumer, chrono::Utc::now().to_rfc3339());
        self.finish_sent
            .key(sent_key(email_id))
            .key(sending_key(email_id))
            .key(STREAM)
            .arg(marker)
            .arg(millis(marker_ttl))
            .arg(token)
            .arg(CONSUMER_GROUP)
            .arg(&delivery.entry_id)
            .invoke_async::<i64>(&mut connection)
            .await?;
        Ok(())
    }

    /// Gives the sending lock up after a failed attempt, if this worker still holds it.
    pub async fn release(&self, email_id: &str, token: &str) -> Result<(), RedisError> {
        let mut connection = self.commands.clone();
        self.release.key(sending_key(email_id)).arg(token).invoke_async::<i64>(&mut connection).await?;
        Ok(())
    }

    /// Acknowledges an entry that needs no sending (its email was sent before).
    pub async fn ack(&self, entry_id: &str) -> Result<(), RedisError> {
        let mut connection = self.commands.clone();
        connection.xack::<_, _, _, i64>(STREAM, CONSUMER_GROUP, &[entry_id]).await?;
        Ok(())
    }

    /// Moves an entry to the dead-letter stream with the reason, and acknowledges it, in one `MULTI`.
    pub async fn dead_letter(&self, delivery: &Delivery, letter: &DeadLetter<'_>) -> Result<(), RedisError> {
        let mut fields: Vec<(String, String)> = delivery
            .fields
            .iter()
            .filter(|(name, _)| !name.starts_with(DEAD_LETTER_FIELD_PREFIX))
            .map(|(name, value)| (name.clone(), value.clone()))
            .collect();
        fields.sort();
        let prefixed = |name: &str| format!("{DEAD_LETTER_FIELD_PREFIX}{name}");
        fields.extend([
            (prefixed("kind"), letter.kind.to_string()),
            (prefixed("reason"), letter.reason.to_string()),
            (prefixed("attempts"), letter.attempts.to_string()),
            (prefixed("deliveries"), delivery.deliveries.to_string()),
            (prefixed("source_entry"), delivery.entry_id.clone()),
            (prefixed("consumer"), self.consumer.clone()),
            (prefixed("at"), chrono::Utc::now().to_rfc3339()),
        ]);
        let mut connection = self.commands.clone();
        redis::pipe()
            .atomic()
            .xadd(DEAD_LETTER_STREAM, "*", &fields)
            .ignore()
            .xack(STREAM, CONSUMER_GROUP, &[&delivery.entry_id])
            .ignore()
            .query_async::<()>(&mut connection)
            .await
    }

    /// Renews this consumer's claim on entries it is still working on, so no other worker takes them over
    /// (`JUSTID` keeps the delivery count as it is), and the sending locks it holds, given as (email id, token).
    pub async fn heartbeat(
        &self,
        entry_ids: &[String],
        locks: &[(String, String)],
        lock_ttl: Duration,
    ) -> Result<(), RedisError> {
        self.reclaim(entry_ids, None).await?;
        if locks.is_empty() {
            return Ok(());
        }
        let mut invocation = self.renew_locks.prepare_invoke();
        invocation.arg(millis(lock_ttl));
        for (email_id, token) in locks {
            invocation.key(sending_key(email_id)).arg(token);
        }
        let mut connection = self.commands.clone();
        invocation.invoke_async::<i64>(&mut connection).await?;
        Ok(())
    }

    /// Hands entries back at shutdown: marks them idle for a day, longer than any worker's claim timeout, so the
    /// next `XAUTOCLAIM` of any worker takes them at once instead of waiting.
    pub async fn hand_back(&self, entry_ids: &[String]) -> Result<(), RedisError> {
        self.reclaim(entry_ids, Some(Duration::from_secs(24 * 3600))).await
    }

    async fn reclaim(&self, entry_ids: &[String], idle: Option<Duration>) -> Result<(), RedisError> {
        if entry_ids.is_empty() {
            return Ok(());
        }
        let mut command = redis::cmd("XCLAIM");
        command.arg(STREAM).arg(CONSUMER_GROUP).arg(&self.consumer).arg(0).arg(entry_ids);
        if let Some(idle) = idle {
            command.arg("IDLE").arg(millis(idle));
        }
        command.arg("JUSTID");
        let mut connection = self.commands.clone();
        command.query_async::<redis::Value>(&mut connection).await?;
        Ok(())
    }

    /// Trims the entries every group has finished with and removes consumers of gone workers. Returns how many
    /// entries and consumers were removed.
    pub async fn maintain(&self, stale_consumer_idle: Duration) -> Result<(usize, usize), RedisError> {
        let mut connection = self.commands.clone();
        let groups: StreamInfoGroupsReply = match connection.xinfo_groups(STREAM).await {
            Ok(groups) => groups,
            Err(error) if error.code() == Some("ERR") || error.code() == Some("NOGROUP") => return Ok((0, 0)),
            Err(error) => return Err(error),
        };
        let mut progress = Vec::with_capacity(groups.groups.len());
        for group in &groups.groups {
            let pending: StreamPendingReply = connection.xpending(STREAM, &group.name).await?;
            let oldest_pending = match &pending {
                StreamPendingReply::Data(data) => EntryId::parse(&data.start_id),
                _ => None,
            };
            let Some(last_delivered) = EntryId::parse(&group.last_delivered_id) else { continue };
            progress.push(GroupProgress { last_delivered, oldest_pending });
        }
        let trimmed = if progress.len() == groups.groups.len()
            && let Some(threshold) = trim_threshold(&progress)
        {
            connection
                .xtrim_options::<_, usize>(
                    STREAM,
                    &StreamTrimOptions::minid(StreamTrimmingMode::Exact, threshold.to_string()),
                )
                .await?
        } else {
            0
        };
        let consumers: StreamInfoConsumersReply = connection.xinfo_consumers(STREAM, CONSUMER_GROUP).await?;
        let states: Vec<ConsumerState> = consumers
            .consumers
            .into_iter()
            .map(|consumer| ConsumerState {
                name: consumer.name,
                pending: consumer.pending,
                idle: Duration::from_millis(consumer.idle as u64),
            })
            .collect();
        let stale = stale_consumers(&states, &self.consumer, stale_consumer_idle);
        for name in &stale {
            connection.xgroup_delconsumer::<_, _, _, i64>(STREAM, CONSUMER_GROUP, *name).await?;
        }
        Ok((trimmed, stale.len()))
    }

    /// Removes this consumer from the group at a clean shutdown, when it holds nothing.
    pub async fn leave_group(&self) -> Result<(), RedisError> {
        let mut connection = self.commands.clone();
        let consumers: StreamInfoConsumersReply = connection.xinfo_consumers(STREAM, CONSUMER_GROUP).await?;
        let holds_nothing =
            consumers.consumers.iter().any(|consumer| consumer.name == self.consumer && consumer.pending == 0);
        if holds_nothing {
            connection.xgroup_delconsumer::<_, _, _, i64>(STREAM, CONSUMER_GROUP, &self.consumer).await?;
        }
        Ok(())
    }
}

fn millis(duration: Duration) -> usize {
    usize::try_from(duration.as_millis()).unwrap_or(usize::MAX)
}

fn delivery(entry: StreamId, deliveries: u64) -> Delivery {
    let fields = entry
        .map
        .into_iter()
        .filter_map(|(name, value)| redis::from_redis_value::<String>(value).ok().map(|value| (name, value)))
        .collect();
    Delivery { entry_id: entry.id, fields, deliveries }
}
