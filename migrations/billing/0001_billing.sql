-- The billing service's tables, in schema `billing`.

-- Verified Stripe webhook events: the durable queue the worker processes. The primary key makes a redelivered
-- event a no-op; `next_attempt_at`, `attempts` and `last_error` carry the retries with backoff.
CREATE TABLE stripe_events (
    id text PRIMARY KEY,
    event_type text NOT NULL,
    object_id text,
    payload jsonb NOT NULL,
    stripe_created_at timestamptz NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    attempts integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_error text,
    processed_at timestamptz,
    -- What processing decided, in words (`applied subscription sub_1 (active)`, `ignored: ...`).
    outcome text
);
CREATE INDEX stripe_events_pending ON stripe_events (next_attempt_at) WHERE processed_at IS NULL;

-- The tenant's Stripe customer and subscription as last fetched from Stripe. One row: the service serves one tenant.
CREATE TABLE account (
    tenant text PRIMARY KEY,
    customer_id text,
    billing_email text,
    subscription_id text,
    price_id text,
    state text,
    state_since timestamptz,
    current_period_start timestamptz,
    current_period_end timestamptz,
    cancel_at_period_end boolean NOT NULL DEFAULT false,
    synced_at timestamptz,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Checkout Sessions this service opened: a `checkout.session.completed` for any other session is not the tenant's.
CREATE TABLE checkout_sessions (
    id text PRIMARY KEY,
    plan text NOT NULL,
    price_id text NOT NULL,
    created_by text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- Usage windows already settled with Stripe: a row is written only after Stripe accepted the meter event (or when
-- there was nothing to send), so the reporter resumes after the last row and never reports a window twice.
CREATE TABLE usage_windows (
    window_start timestamptz PRIMARY KEY,
    window_end timestamptz NOT NULL,
    identifier text NOT NULL UNIQUE,
    tokens bigint NOT NULL,
    customer_id text,
    -- sent, empty (no tokens), no-customer (nobody to bill yet) or expired (older than Stripe accepts).
    outcome text NOT NULL,
    reported_at timestamptz NOT NULL DEFAULT now()
);

-- The transactional outbox of emails (contract with the email worker; published by saaschat_platform::outbox).
CREATE TABLE outbox (
    id uuid PRIMARY KEY,
    recipient text NOT NULL,
    template text NOT NULL,
    data jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    published_at timestamptz
);
CREATE INDEX outbox_pending ON outbox (created_at) WHERE published_at IS NULL;
