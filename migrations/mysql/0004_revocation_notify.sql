-- PostgreSQL only (LISTEN/NOTIFY for revocations); nothing to do here.
SELECT 1;
