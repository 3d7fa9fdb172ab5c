-- What each revocation revoked, so that other instances drop just that from
-- their token caches: one token (digest), all of a user's tokens (user_id
-- alone), or everything (neither). Read by time window; old rows pruned.
CREATE TABLE IF NOT EXISTS advanced_token_revocation_log (
    seq        BIGINT       NOT NULL AUTO_INCREMENT PRIMARY KEY,
    user_id    VARCHAR(191) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NULL,
    digest     CHAR(64)     CHARACTER SET ascii COLLATE ascii_bin NULL,
    kind       VARCHAR(8)   CHARACTER SET ascii NOT NULL,  -- 'rotate', 'token', 'user', 'all'
    revoked_at BIGINT       NOT NULL,                      -- the database's clock, Unix seconds
    KEY advanced_token_revocation_log_at (revoked_at),
    KEY advanced_token_revocation_log_user (user_id, kind, revoked_at)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;
