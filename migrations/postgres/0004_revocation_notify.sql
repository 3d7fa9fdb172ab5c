-- Every bump of the revocation counter also sends a notification, so that
-- instances listening on PostgreSQL drop their token caches at once instead
-- of at their next poll.
CREATE OR REPLACE FUNCTION advanced_token_notify_revocation() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('advanced_token_revocations', NEW.counter::text);
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;

DROP TRIGGER IF EXISTS advanced_token_revocations_notify ON advanced_token_revocations;
CREATE TRIGGER advanced_token_revocations_notify
    AFTER UPDATE ON advanced_token_revocations
    FOR EACH ROW EXECUTE FUNCTION advanced_token_notify_revocation();
