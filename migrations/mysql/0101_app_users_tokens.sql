-- rocket_advanced_token with the app's own users table (MySQL / MariaDB):
-- token digests referencing the app's user id as text (an integer's decimal
-- digits, a UUID, ...), with no foreign key into the app's table, and the
-- per-user settings the crate keeps itself.
CREATE TABLE IF NOT EXISTS advanced_token_tokens (
    id           BIGINT       NOT NULL AUTO_INCREMENT PRIMARY KEY,
    user_id      VARCHAR(191) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    digest       CHAR(64)     CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    created_at   BIGINT       NOT NULL,
    last_used_at BIGINT       NOT NULL,
    expires_at   BIGINT       NULL,
    UNIQUE KEY advanced_token_tokens_digest (digest),
    KEY advanced_token_tokens_user_id (user_id, last_used_at),
    KEY advanced_token_tokens_expires_at (expires_at)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;

CREATE TABLE IF NOT EXISTS advanced_token_user_settings (
    user_id         VARCHAR(191) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL PRIMARY KEY,
    rotation_locked BOOLEAN      NOT NULL DEFAULT FALSE
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;
