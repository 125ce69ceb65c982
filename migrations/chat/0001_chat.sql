-- The chat service's tables, in schema `chat`.

-- Contract with billing: one row per completion, written when it settles (also for stopped streams).
-- billing reads chat.usage_events directly; columns may be added, never removed.
CREATE TABLE usage_events (
    id uuid PRIMARY KEY,
    user_id text NOT NULL,
    model text NOT NULL,
    provider text NOT NULL,
    input_tokens bigint NOT NULL,
    output_tokens bigint NOT NULL,
    cost_micros bigint NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX usage_events_recorded_at ON usage_events (recorded_at);

-- Tokens and cost per user, model and day (UTC), for reports and the monthly quota after a Redis loss.
CREATE VIEW usage_daily AS
SELECT user_id,
       model,
       provider,
       (recorded_at AT TIME ZONE 'UTC')::date AS day,
       count(*) AS completions,
       sum(input_tokens)::bigint AS input_tokens,
       sum(output_tokens)::bigint AS output_tokens,
       sum(cost_micros)::bigint AS cost_micros
FROM usage_events
GROUP BY user_id, model, provider, (recorded_at AT TIME ZONE 'UTC')::date;

CREATE TABLE conversations (
    id uuid PRIMARY KEY,
    user_id text NOT NULL,
    title text,
    model text NOT NULL,
    system_prompt text,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
-- Listing a user's conversations newest first, paginated by (updated_at, id).
CREATE INDEX conversations_user_updated ON conversations (user_id, updated_at DESC, id DESC);

CREATE TABLE messages (
    id uuid PRIMARY KEY,
    conversation_id uuid NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    role text NOT NULL CHECK (role IN ('user', 'assistant')),
    content text NOT NULL,
    -- complete, stopped (by the user, a disconnect or shutdown) or failed (the provider failed mid-answer).
    status text NOT NULL DEFAULT 'complete' CHECK (status IN ('complete', 'stopped', 'failed')),
    model text,
    provider text,
    input_tokens bigint,
    output_tokens bigint,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX messages_conversation_created ON messages (conversation_id, created_at, id);
