-- Usernames compare with a NO PAD binary collation: under utf8mb4_bin
-- (PAD SPACE) 'frank ' = 'frank', so a trailing space found the user while
-- naming another throttling key. {nopad_bin} is chosen by the server at
-- migration time: utf8mb4_nopad_bin on MariaDB, utf8mb4_0900_bin on MySQL 8.
-- No stored username holds a space, so the unique index stays valid.
ALTER TABLE advanced_token_users
    MODIFY username VARCHAR(150) CHARACTER SET utf8mb4 COLLATE {nopad_bin} NOT NULL;
