-- rocket_advanced_token with the app's own users table (PostgreSQL): token
-- digests referencing the app's user id as text (an integer's decimal
-- digits, a UUID, ...), with no foreign key into the app's table, and the
-- per-user settings the crate keeps itself.
CREATE TABLE IF NOT EXISTS advanced_token_tokens (
    id           BIGSERIAL PRIMARY KEY,
    user_id      TEXT   NOT NULL,
    digest       TEXT   NOT NULL UNIQUE,
    created_at   BIGINT NOT NULL,
    last_used_at BIGINT NOT NULL,
    expires_at   BIGINT NULL
);
CREATE INDEX IF NOT EXISTS advanced_token_tokens_user_id
    ON advanced_token_tokens (user_id, last_used_at);
CREATE INDEX IF NOT EXISTS advanced_token_tokens_expires_at
    ON advanced_token_tokens (expires_at);

CREATE TABLE IF NOT EXISTS advanced_token_user_settings (
    user_id         TEXT    NOT NULL PRIMARY KEY,
    rotation_locked BOOLEAN NOT NULL DEFAULT FALSE
);
