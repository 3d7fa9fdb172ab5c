-- rocket_advanced_token: users and token digests (MySQL / MariaDB).
-- Usernames compare case-sensitively (utf8mb4_bin), as on the other backends.
CREATE TABLE IF NOT EXISTS advanced_token_users (
    id              BIGINT       NOT NULL AUTO_INCREMENT PRIMARY KEY,
    username        VARCHAR(150) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    password_hash   VARCHAR(255) CHARACTER SET ascii NOT NULL,
    is_active       BOOLEAN      NOT NULL DEFAULT TRUE,
    rotation_locked BOOLEAN      NOT NULL DEFAULT FALSE,
    created_at      BIGINT       NOT NULL,
    UNIQUE KEY advanced_token_users_username (username)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;

CREATE TABLE IF NOT EXISTS advanced_token_tokens (
    id           BIGINT      NOT NULL AUTO_INCREMENT PRIMARY KEY,
    user_id      BIGINT      NOT NULL,
    digest       CHAR(64)    CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    created_at   BIGINT      NOT NULL,
    last_used_at BIGINT      NOT NULL,
    expires_at   BIGINT      NULL,
    UNIQUE KEY advanced_token_tokens_digest (digest),
    KEY advanced_token_tokens_user_id (user_id, last_used_at),
    KEY advanced_token_tokens_expires_at (expires_at),
    CONSTRAINT advanced_token_tokens_user_fk FOREIGN KEY (user_id)
        REFERENCES advanced_token_users (id) ON DELETE CASCADE
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;
