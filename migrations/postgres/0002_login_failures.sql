-- Failed logins, per username digest and per client IP, for throttling.
CREATE TABLE IF NOT EXISTS advanced_token_login_failures (
    id        BIGSERIAL PRIMARY KEY,
    scope     TEXT   NOT NULL,  -- 'user' or 'ip'
    subject   TEXT   NOT NULL,  -- SHA-256 of the username, or the IP address
    failed_at BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS advanced_token_login_failures_subject
    ON advanced_token_login_failures (scope, subject, failed_at);
CREATE INDEX IF NOT EXISTS advanced_token_login_failures_failed_at
    ON advanced_token_login_failures (failed_at);
