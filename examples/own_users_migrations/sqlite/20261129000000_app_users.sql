CREATE TABLE app_users (
    id            INTEGER PRIMARY KEY,
    email         TEXT    NOT NULL UNIQUE,
    password_hash TEXT    NOT NULL,
    active        BOOLEAN NOT NULL,
    display_name  TEXT    NOT NULL
);
