-- What each revocation revoked, so that other instances drop just that from
-- their token caches: one token (digest), all of a user's tokens (user_id
-- alone), or everything (neither). Read by time window; old rows pruned.
-- Each entry is also announced on the revocations channel, so listening
-- instances read the log at once.
CREATE TABLE IF NOT EXISTS advanced_token_revocation_log (
    seq        BIGSERIAL PRIMARY KEY,
    user_id    TEXT   NULL,
    digest     TEXT   NULL,
    kind       TEXT   NOT NULL,  -- 'rotate', 'token', 'user', 'all'
    revoked_at BIGINT NOT NULL   -- the database's clock, Unix seconds
);
CREATE INDEX IF NOT EXISTS advanced_token_revocation_log_at
    ON advanced_token_revocation_log (revoked_at);
CREATE INDEX IF NOT EXISTS advanced_token_revocation_log_user
    ON advanced_token_revocation_log (user_id, kind, revoked_at);

CREATE OR REPLACE FUNCTION advanced_token_notify_revocation_log() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('advanced_token_revocations', NEW.seq::text);
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;

DROP TRIGGER IF EXISTS advanced_token_revocation_log_notify ON advanced_token_revocation_log;
CREATE TRIGGER advanced_token_revocation_log_notify
    AFTER INSERT ON advanced_token_revocation_log
    FOR EACH ROW EXECUTE FUNCTION advanced_token_notify_revocation_log();
