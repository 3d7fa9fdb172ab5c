-- One row counting revocations. Every revocation bumps it in the same
-- transaction; each app instance polls it to know when to drop its cache of
-- verified tokens.
CREATE TABLE IF NOT EXISTS advanced_token_revocations (
    id      BIGINT NOT NULL PRIMARY KEY,
    counter BIGINT NOT NULL
);
INSERT INTO advanced_token_revocations (id, counter) VALUES (1, 0) ON CONFLICT DO NOTHING;
