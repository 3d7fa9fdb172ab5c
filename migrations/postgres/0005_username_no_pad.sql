-- Only MySQL/MariaDB compared usernames with a PAD SPACE collation; nothing
-- to do here.
SELECT 1;
