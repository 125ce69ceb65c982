-- Accounts, sessions, one-time email tokens, API keys, signing keys seen, and the email outbox of the auth
-- service. Secrets (refresh tokens, email tokens, API keys) are stored only as SHA-256 digests: they are random
-- 256-bit values, so a slow hash adds nothing, and a database leak yields nothing usable.

CREATE TABLE users (
    id uuid PRIMARY KEY,
    -- Normalized: trimmed and lower-cased, so one mailbox is one account.
    email text NOT NULL UNIQUE,
    -- NULL while an invitation is not accepted.
    password_hash text,
    role text NOT NULL CHECK (role IN ('owner', 'admin', 'member')),
    email_verified_at timestamptz,
    disabled_at timestamptz,
    password_changed_at timestamptz NOT NULL DEFAULT now(),
    created_at timestamptz NOT NULL DEFAULT now()
);

-- A tenant has exactly one owner: the first user. The sign-up transaction also serializes on an advisory lock,
-- and this index is the last line of defence.
CREATE UNIQUE INDEX users_single_owner ON users ((true)) WHERE role = 'owner';

-- A session is a refresh-token family: one sign-in and every rotation after it.
CREATE TABLE sessions (
    id uuid PRIMARY KEY,
    user_id uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at timestamptz NOT NULL DEFAULT now(),
    last_used_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    revoked_at timestamptz,
    revoked_reason text
);
CREATE INDEX sessions_user ON sessions (user_id) WHERE revoked_at IS NULL;

CREATE TABLE refresh_tokens (
    token_hash bytea PRIMARY KEY,
    session_id uuid NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    issued_at timestamptz NOT NULL DEFAULT now(),
    -- Set when the token was exchanged; presenting it again is reuse and revokes the session.
    rotated_at timestamptz
);
CREATE INDEX refresh_tokens_session ON refresh_tokens (session_id);

-- Single-use tokens sent by email: address verification, password reset, invitation.
CREATE TABLE email_tokens (
    token_hash bytea PRIMARY KEY,
    user_id uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    purpose text NOT NULL CHECK (purpose IN ('verify-email', 'reset-password', 'invitation')),
    expires_at timestamptz NOT NULL,
    used_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX email_tokens_user ON email_tokens (user_id, purpose);

CREATE TABLE api_keys (
    id uuid PRIMARY KEY,
    user_id uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name text NOT NULL,
    -- The visible start of the key, shown in listings so a user can tell keys apart.
    prefix text NOT NULL,
    key_hash bytea NOT NULL UNIQUE,
    scopes text[] NOT NULL,
    expires_at timestamptz,
    revoked_at timestamptz,
    last_used_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX api_keys_user ON api_keys (user_id);

-- Public keys this service has signed with, so the JWKS keeps publishing the previous key after a rotation.
CREATE TABLE signing_keys (
    kid text PRIMARY KEY,
    public_key_pem text NOT NULL,
    first_used_at timestamptz NOT NULL DEFAULT now(),
    last_used_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE outbox (
    id uuid PRIMARY KEY,
    recipient text NOT NULL,
    template text NOT NULL,
    data jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    published_at timestamptz
);
CREATE INDEX outbox_pending ON outbox (created_at) WHERE published_at IS NULL;
