-- Digests of the tokens brought in by `import-django`, kept after the token
-- itself is rotated or deleted, so importing again never revives a key that
-- was rotated away or logged out.
CREATE TABLE IF NOT EXISTS advanced_token_imported_keys (
    digest      CHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL PRIMARY KEY,
    imported_at BIGINT   NOT NULL
) ENGINE = InnoDB;
