CREATE TABLE app_users (
    id            INTEGER      NOT NULL AUTO_INCREMENT PRIMARY KEY,
    email         VARCHAR(254) NOT NULL UNIQUE,
    password_hash VARCHAR(255) NOT NULL,
    active        BOOLEAN      NOT NULL,
    display_name  VARCHAR(200) NOT NULL
);
