//! Conversations and messages in PostgreSQL. Every query that reads or changes a conversation names the
//! caller's user id in its `WHERE` clause, so another user's id finds nothing, whatever it is.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

#[derive(Clone, Debug, Serialize, sqlx::FromRow)]
#[serde(rename_all = "camelCase")]
pub struct Conversation {
    pub id: Uuid,
    #[serde(skip)]
    pub user_id: String,
    pub title: Option<String>,
    pub model: String,
    pub system_prompt: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Clone, Debug, Serialize, sqlx::FromRow)]
#[serde(rename_all = "camelCase")]
pub struct Message {
    pub id: Uuid,
    pub role: String,
    pub content: String,
    pub status: String,
    pub model: Option<String>,
    pub provider: Option<String>,
    pub input_tokens: Option<i64>,
    pub output_tokens: Option<i64>,
    pub created_at: DateTime<Utc>,
}

/// Where a page of conversations starts: after this (updated_at, id).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cursor {
    pub updated_at: DateTime<Utc>,
    pub id: Uuid,
}

impl Cursor {
    pub fn encode(&self) -> String {
        format!("{}_{}", self.updated_at.timestamp_micros(), self.id.simple())
    }

    pub fn decode(text: &str) -> Option<Cursor> {
        let (micros, id) = text.split_once('_')?;
        let updated_at = DateTime::from_timestamp_micros(micros.parse().ok()?)?;
        Some(Cursor { updated_at, id: Uuid::try_parse(id).ok()? })
    }
}

/// `LIKE` pattern matching `text` anywhere, with its wildcards escaped.
pub fn contains_pattern(text: &str) -> String {
    let escaped = text.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_");
    format!("%{escaped}%")
}

pub struct NewAssistantMessage<'a> {
    pub id: Uuid,
    pub content: &'a str,
    pub status: &'a str,
    pub model: &'a str,
    pub provider: &'a str,
    pub input_tokens: i64,
    pub output_tokens: i64,
}

#[derive(Clone)]
pub struct Store {
    pool: PgPool,
}

const CONVERSATION_COLUMNS: &str = "id, user_id, title, model, system_prompt, created_at, updated_at";

impl Store {
    pub fn new(pool: PgPool) -> Store {
        Store { pool }
    }

    /// The chat schema's pool, for the usage report (which reads `usage_events`).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub async fn create(
        &self,
        user_id: &str,
        title: Option<&str>,
        model: &str,
        system_prompt: Option<&str>,
    ) -> Result<Conversation, sqlx::Error> {
        sqlx::query_as(&format!(
            "INSERT INTO conversations (id, user_id, title, model, system_prompt) VALUES ($1, $2, $3, $4, $5) \
             RETURNING {CONVERSATION_COLUMNS}"
        ))
        .bind(Uuid::now_v7())
        .bind(user_id)
        .bind(title)
        .bind(model)
        .bind(system_prompt)
        .fetch_one(&self.pool)
        .await
    }

    /// One page, newest first, optionally only conversations whose title or one of whose messages contains
    /// `search` (case-insensitive). The text search scans the user's messages (no trigram index: it needs an
    /// extension the tenant's PostgreSQL may not have); a user's messages are few enough for that.
    pub async fn list(
        &self,
        user_id: &str,
        search: Option<&str>,
        after: Option<Cursor>,
        limit: i64,
    ) -> Result<Vec<Conversation>, sqlx::Error> {
        sqlx::query_as(&format!(
            "SELECT {CONVERSATION_COLUMNS} FROM conversations \
             WHERE user_id = $1 \
               AND ($2::text IS NULL OR title ILIKE $2 ESCAPE '\\' OR EXISTS ( \
                    SELECT 1 FROM messages m WHERE m.conversation_id = conversations.id \
                      AND m.content ILIKE $2 ESCAPE '\\')) \
               AND ($3::timestamptz IS NULL OR (updated_at, id) < ($3, $4)) \
             ORDER BY updated_at DESC, id DESC LIMIT $5"
        ))
        .bind(user_id)
        .bind(search.map(contains_pattern))
        .bind(after.map(|cursor| cursor.updated_at))
        .bind(after.map(|cursor| cursor.id))
        .bind(limit)
        .fetch_all(&self.pool)
        .await
    }

    pub async fn get(&self, user_id: &str, id: Uuid) -> Result<Option<Conversation>, sqlx::Error> {
        sqlx::query_as(&format!("SELECT {CONVERSATION_COLUMNS} FROM conversations WHERE id = $1 AND user_id = $2"))
            .bind(id)
            .bind(user_id)
            .fetch_optional(&self.pool)
            .await
    }

    /// The messages of a conversation the caller owns (empty for anyone else's).
    pub async fn messages(&self, user_id: &str, id: Uuid) -> Result<Vec<Message>, sqlx::Error> {
        sqlx::query_as(
            "SELECT m.id, m.role, m.content, m.status, m.model, m.provider, m.input_tokens, m.output_tokens, m.created_at \
             FROM messages m JOIN conversations c ON c.id = m.conversation_id \
             WHERE c.id = $1 AND c.user_id = $2 ORDER BY m.created_at, m.id",
        )
        .bind(id)
        .bind(user_id)
        .fetch_all(&self.pool)
        .await
    }

    /// One page of a conversation's messages, the newest `limit` before `before` (a message id of the same
    /// conversation; the newest of all without it), returned oldest first. An unknown `before` finds nothing.
    pub async fn messages_page(
        &self,
        user_id: &str,
        id: Uuid,
        before: Option<Uuid>,
        limit: i64,
    ) -> Result<Vec<Message>, sqlx::Error> {
        let mut page: Vec<Message> = sqlx::query_as(
            "SELECT m.id, m.role, m.content, m.status, m.model, m.provider, m.input_tokens, m.output_tokens, m.created_at \
             FROM messages m JOIN conversations c ON c.id = m.conversation_id \
             WHERE c.id = $1 AND c.user_id = $2 \
               AND ($3::uuid IS NULL OR (m.created_at, m.id) < \
                    (SELECT b.created_at, b.id FROM messages b WHERE b.id = $3 AND b.conversation_id = $1)) \
             ORDER BY m.created_at DESC, m.id DESC LIMIT $4",
        )
        .bind(id)
        .bind(user_id)
        .bind(before)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        page.reverse();
        Ok(page)
    }

    /// Renames and/or switches the model; `None` leaves a field as it is.
    pub async fn update(
        &self,
        user_id: &str,
        id: Uuid,
        title: Option<&str>,
        model: Option<&str>,
    ) -> Result<Option<Conversation>, sqlx::Error> {
        sqlx::query_as(&format!(
            "UPDATE conversations SET title = coalesce($3, title), model = coalesce($4, model), updated_at = now() \
             WHERE id = $1 AND user_id = $2 RETURNING {CONVERSATION_COLUMNS}"
        ))
        .bind(id)
        .bind(user_id)
        .bind(title)
        .bind(model)
        .fetch_optional(&self.pool)
        .await
    }

    pub async fn delete(&self, user_id: &str, id: Uuid) -> Result<bool, sqlx::Error> {
        let result = sqlx::query("DELETE FROM conversations WHERE id = $1 AND user_id = $2")
            .bind(id)
            .bind(user_id)
            .execute(&self.pool)
            .await?;
        Ok(result.rows_affected() == 1)
    }

    /// Adds the user's message as `message_id`, if the conversation is still the caller's. With `replaces`
    /// (a message of this conversation), that message and every later one are deleted first, in the same
    /// transaction: an edited last message, or an answer asked for again.
    pub async fn add_user_message(
        &self,
        user_id: &str,
        id: Uuid,
        message_id: Uuid,
        content: &str,
        replaces: Option<Uuid>,
    ) -> Result<bool, sqlx::Error> {
        let mut transaction = self.pool.begin().await?;
        let owned: Option<(Uuid,)> =
            sqlx::query_as("SELECT id FROM conversations WHERE id = $1 AND user_id = $2 FOR UPDATE")
                .bind(id)
                .bind(user_id)
                .fetch_optional(&mut *transaction)
                .await?;
        if owned.is_none() {
            return Ok(false);
        }
        if let Some(first) = replaces {
            sqlx::query(
                "DELETE FROM messages WHERE conversation_id = $1 AND (created_at, id) >= \
                 (SELECT created_at, id FROM messages WHERE id = $2 AND conversation_id = $1)",
            )
            .bind(id)
            .bind(first)
            .execute(&mut *transaction)
            .await?;
        }
        sqlx::query("INSERT INTO messages (id, conversation_id, role, content) VALUES ($1, $2, 'user', $3)")
            .bind(message_id)
            .bind(id)
            .bind(content)
            .execute(&mut *transaction)
            .await?;
        transaction.commit().await?;
        Ok(true)
    }

    /// Adds the answer and, on the first exchange, the title; returns the title if it was set now. Nothing
    /// happens if the conversation was deleted meanwhile.
    pub async fn add_answer(
        &self,
        user_id: &str,
        id: Uuid,
        message: NewAssistantMessage<'_>,
        title: Option<&str>,
    ) -> Result<Option<String>, sqlx::Error> {
        let mut transaction = self.pool.begin().await?;
        let owned: Option<(Option<String>,)> =
            sqlx::query_as("SELECT title FROM conversations WHERE id = $1 AND user_id = $2 FOR UPDATE")
                .bind(id)
                .bind(user_id)
                .fetch_optional(&mut *transaction)
                .await?;
        let Some((existing_title,)) = owned else {
            return Ok(None);
        };
        sqlx::query(
            "INSERT INTO messages (id, conversation_id, role, content, status, model, provider, input_tokens, output_tokens) \
             VALUES ($1, $2, 'assistant', $3, $4, $5, $6, $7, $8)",
        )
        .bind(message.id)
        .bind(id)
        .bind(message.content)
        .bind(message.status)
        .bind(message.model)
        .bind(message.provider)
        .bind(message.input_tokens)
        .bind(message.output_tokens)
        .execute(&mut *transaction)
        .await?;
        let new_title = match (existing_title, title) {
            (None, Some(title)) => Some(title.to_string()),
            _ => None,
        };
        sqlx::query("UPDATE conversations SET updated_at = now(), title = coalesce(title, $2) WHERE id = $1")
            .bind(id)
            .bind(new_title.as_deref())
            .execute(&mut *transaction)
            .await?;
        transaction.commit().await?;
        Ok(new_title)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_garbage_is_refused() {
        let cursor = Cursor {
            updated_at: DateTime::from_timestamp_micros(1_700_000_000_123_456).expect("time"),
            id: Uuid::now_v7(),
        };
        assert_eq!(Cursor::decode(&cursor.encode()), Some(cursor));
        for bad in ["", "abc", "1_", "_0190", "12_not-a-uuid", "99999999999999999999_0190b1b2c3d4e5f60718293a4b5c6d7e"]
        {
            assert_eq!(Cursor::decode(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn search_patterns_escape_like_wildcards() {
        assert_eq!(contains_pattern("50%_off\\"), "%50\\%\\_off\\\\%");
    }
}
