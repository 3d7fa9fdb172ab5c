-- rocket_advanced_token: users and token digests (PostgreSQL).
-- TEXT, not CHAR(64), for the digest: a CHAR column compared with a text
-- parameter cannot use its index.
CREATE TABLE IF NOT EXISTS advanced_token_users (
    id              BIGSERIAL PRIMARY KEY,
    username        TEXT    NOT NULL UNIQUE,
    password_hash   TEXT    NOT NULL,
    is_active       BOOLEAN NOT NULL DEFAULT TRUE,
    rotation_locked BOOLEAN NOT NULL DEFAULT FALSE,
    created_at      BIGINT  NOT NULL
);

CREATE TABLE IF NOT EXISTS advanced_token_tokens (
    id           BIGSERIAL PRIMARY KEY,
    user_id      BIGINT NOT NULL REFERENCES advanced_token_users (id) ON DELETE CASCADE,
    digest       TEXT   NOT NULL UNIQUE,
    created_at   BIGINT NOT NULL,
    last_used_at BIGINT NOT NULL,
    expires_at   BIGINT NULL
);

CREATE INDEX IF NOT EXISTS advanced_token_tokens_user_id
    ON advanced_token_tokens (user_id, last_used_at);
CREATE INDEX IF NOT EXISTS advanced_token_tokens_expires_at
    ON advanced_token_tokens (expires_at);
