-- Failed logins, per username digest and per client IP, for throttling.
CREATE TABLE IF NOT EXISTS advanced_token_login_failures (
    id        BIGINT      NOT NULL AUTO_INCREMENT PRIMARY KEY,
    scope     VARCHAR(8)  CHARACTER SET ascii NOT NULL,  -- 'user' or 'ip'
    subject   VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    failed_at BIGINT      NOT NULL,
    KEY advanced_token_login_failures_subject (scope, subject, failed_at),
    KEY advanced_token_login_failures_failed_at (failed_at)
) ENGINE = InnoDB;
