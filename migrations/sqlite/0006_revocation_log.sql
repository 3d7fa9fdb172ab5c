-- What each revocation revoked, so that other instances drop just that from
-- their token caches: one token (digest), all of a user's tokens (user_id
-- alone), or everything (neither). Read by time window; old rows pruned.
CREATE TABLE IF NOT EXISTS advanced_token_revocation_log (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id    TEXT    NULL,
    digest     TEXT    NULL,
    kind       TEXT    NOT NULL,  -- 'rotate', 'token', 'user', 'all'
    revoked_at BIGINT  NOT NULL   -- the database's clock, Unix seconds
);
CREATE INDEX IF NOT EXISTS advanced_token_revocation_log_at
    ON advanced_token_revocation_log (revoked_at);
CREATE INDEX IF NOT EXISTS advanced_token_revocation_log_user
    ON advanced_token_revocation_log (user_id, kind, revoked_at);
