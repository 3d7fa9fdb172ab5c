//! The SQLite store. Statements use `?N` placeholders; writes that must
//! see a consistent user row start with an `UPDATE` of it, which takes
//! SQLite's write lock up front (a transaction that only read first would
//! have to upgrade its lock, and could fail with "database is locked").

use sqlx::query::Query;
use sqlx::sqlite::SqliteArguments;
use sqlx::{Connection, Executor, Row, Sqlite, SqliteConnection, SqlitePool};

use super::migrate::{self, Migration, Migrator};
use super::{
    failures, plan, retry, token_seen_before, token_stored, AppTokenTuple, Attempt, Counts,
    ExistingUser, Import, ImportMode, ImportUser, LogEntry, LoginRow, NewToken, Outcome, Revoked,
    Store, TokenInfo, TokenInfoTuple, TokenRow, TokenTuple, UserFlag, UserInfo, UserOutcome,
    UserTuple,
};
use crate::backend::UserId;

/// The crate's tables in a SQLite database.
#[derive(Debug, Clone)]
pub(crate) struct SqliteStore {
    pub(crate) pool: SqlitePool,
    /// The users live in the app's table: tokens hold the app's id as text.
    pub(crate) app_users: bool,
}

type Q<'q> = Query<'q, Sqlite, SqliteArguments<'q>>;

/// Records a revocation in the log, inside `conn`'s transaction: other
/// instances drop just what it names from their caches.
async fn log(conn: &mut SqliteConnection, r: Revoked<'_>) -> Result<(), sqlx::Error> {
    let (user, digest) = r.parts();
    sqlx::query(
        "INSERT INTO advanced_token_revocation_log (user_id, digest, kind, revoked_at) \
         VALUES (?1, ?2, ?3, CAST(strftime('%s', 'now') AS INTEGER))",
    )
    .bind(user)
    .bind(digest)
    .bind(r.kind())
    .execute(conn)
    .await?;
    Ok(())
}

/// Inserts one row of the login failures table; returns its id.
async fn failure_row(
    conn: &mut SqliteConnection,
    scope: &str,
    subject: &str,
    now: i64,
) -> Result<i64, sqlx::Error> {
    let done = sqlx::query(
        "INSERT INTO advanced_token_login_failures (scope, subject, failed_at) \
         VALUES (?1, ?2, ?3)",
    )
    .bind(scope)
    .bind(subject)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(done.last_insert_rowid())
}

struct SqliteMigrator(sqlx::pool::PoolConnection<sqlx::Sqlite>);

#[rocket::async_trait]
impl Migrator for SqliteMigrator {
    async fn lock(&mut self) -> Result<(), sqlx::Error> {
        Ok(())
    }

    async fn unlock(&mut self) -> Result<(), sqlx::Error> {
        Ok(())
    }

    async fn applied(&mut self) -> Result<Vec<i64>, sqlx::Error> {
        self.0
            .execute(
                "CREATE TABLE IF NOT EXISTS advanced_token_migrations (
                    version BIGINT PRIMARY KEY, description TEXT NOT NULL,
                    applied_at BIGINT NOT NULL)",
            )
            .await?;
        sqlx::query_scalar("SELECT version FROM advanced_token_migrations")
            .fetch_all(&mut *self.0)
            .await
    }

    async fn apply(&mut self, m: &Migration, now: i64) -> Result<(), sqlx::Error> {
        let mut tx = self.0.begin().await?;
        tx.execute(m.sqlite).await?;
        sqlx::query(
            "INSERT OR IGNORE INTO advanced_token_migrations (version, description, applied_at) \
             VALUES (?1, ?2, ?3)",
        )
        .bind(m.version)
        .bind(m.description)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await
    }
}

impl SqliteStore {
    /// Binds a user id as the tokens table holds it: an integer with the
    /// crate's users table, text with the app's.
    fn bind_user<'q>(&self, q: Q<'q>, id: &UserId) -> Q<'q> {
        if self.app_users {
            q.bind(id.to_string())
        } else {
            q.bind(id.as_i64().unwrap_or(-1))
        }
    }

    /// With the crate's users table: locks the user's row, and checks (and
    /// upgrades) the verified hash, in the token's transaction.
    async fn lock_user(conn: &mut SqliteConnection, t: &NewToken<'_>) -> Result<bool, sqlx::Error> {
        let id = t.user_id.as_i64().unwrap_or(-1);
        let lock = match t.verified_hash {
            Some(hash) => sqlx::query(
                "UPDATE advanced_token_users SET password_hash = ?3 \
                 WHERE id = ?1 AND password_hash = ?2 AND is_active",
            )
            .bind(id)
            .bind(hash)
            .bind(t.new_hash.unwrap_or(hash)),
            None => sqlx::query("UPDATE advanced_token_users SET id = id WHERE id = ?1").bind(id),
        };
        Ok(lock.execute(conn).await?.rows_affected() > 0)
    }

    /// Evicts the user's least recently used tokens beyond `t.keep`.
    async fn evict(
        &self,
        conn: &mut SqliteConnection,
        t: &NewToken<'_>,
    ) -> Result<u64, sqlx::Error> {
        let cutoff = sqlx::query(
            "SELECT last_used_at, id FROM advanced_token_tokens WHERE user_id = ?1 \
             ORDER BY last_used_at DESC, id DESC LIMIT 1 OFFSET ?2",
        );
        let cutoff: Option<(i64, i64)> = self
            .bind_user(cutoff, t.user_id)
            .bind(i64::from(t.keep) - 1)
            .fetch_optional(&mut *conn)
            .await?
            .map(|row| Ok::<_, sqlx::Error>((row.try_get(0)?, row.try_get(1)?)))
            .transpose()?;
        let Some((last_used, id)) = cutoff else {
            return Ok(0);
        };
        let delete = sqlx::query(
            "DELETE FROM advanced_token_tokens WHERE user_id = ?1 \
             AND (last_used_at, id) < (?2, ?3)",
        );
        let evicted = self
            .bind_user(delete, t.user_id)
            .bind(last_used)
            .bind(id)
            .execute(&mut *conn)
            .await?
            .rows_affected();
        if evicted > 0 {
            log(conn, Revoked::User(t.user_id)).await?;
        }
        Ok(evicted)
    }

    async fn try_insert_token(&self, t: &NewToken<'_>) -> Result<Option<u64>, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        if !self.app_users && !Self::lock_user(&mut tx, t).await? {
            return Ok(None);
        }
        let insert = sqlx::query(
            "INSERT INTO advanced_token_tokens (user_id, digest, created_at, last_used_at, expires_at) \
             VALUES (?1, ?2, ?3, ?3, ?4)",
        );
        self.bind_user(insert, t.user_id)
            .bind(t.digest)
            .bind(t.now)
            .bind(t.expires_at)
            .execute(&mut *tx)
            .await?;
        let evicted = self.evict(&mut tx, t).await?;
        tx.commit().await?;
        Ok(Some(evicted))
    }

    /// Runs one revoking statement and logs the revocation, in a transaction.
    async fn revoking(&self, sql: &'static str, user: Option<&UserId>) -> Result<u64, sqlx::Error> {
        retry(|| async {
            let mut tx = self.pool.begin().await?;
            let query = match user {
                Some(id) => self.bind_user(sqlx::query(sql), id),
                None => sqlx::query(sql),
            };
            let n = query.execute(&mut *tx).await?.rows_affected();
            log(&mut tx, user.map_or(Revoked::All, Revoked::User)).await?;
            tx.commit().await?;
            Ok(n)
        })
        .await
    }

    fn flag_sql(&self, flag: UserFlag) -> Option<&'static str> {
        match (flag, self.app_users) {
            (UserFlag::Active, false) => {
                Some("UPDATE advanced_token_users SET is_active = ?1 WHERE id = ?2")
            }
            (UserFlag::RotationLocked, false) => {
                Some("UPDATE advanced_token_users SET rotation_locked = ?1 WHERE id = ?2")
            }
            (UserFlag::RotationLocked, true) => Some(
                "INSERT INTO advanced_token_user_settings (rotation_locked, user_id) \
                 VALUES (?1, ?2) ON CONFLICT (user_id) \
                 DO UPDATE SET rotation_locked = excluded.rotation_locked",
            ),
            // The app's own table says who is active.
            (UserFlag::Active, true) => None,
        }
    }
}

#[rocket::async_trait]
impl Store for SqliteStore {
    async fn migrate(&self, now: i64) -> Result<(), sqlx::Error> {
        let mut m = SqliteMigrator(self.pool.acquire().await?);
        migrate::run(&mut m, self.app_users, now).await
    }

    async fn close(&self) {
        self.pool.close().await
    }

    async fn create_user(
        &self,
        name: &str,
        hash: &str,
        now: i64,
    ) -> Result<Option<i64>, sqlx::Error> {
        // `ON CONFLICT DO NOTHING` rather than a failing INSERT: a taken
        // username is an answer, not an error. Not `RETURNING id` with
        // `fetch_optional`: sqlx 0.7 stops stepping the statement after the
        // row, which leaves SQLite's implicit transaction open, so the new
        // user was not yet committed when the next query (the login) ran on
        // another connection.
        let done = sqlx::query(
            "INSERT INTO advanced_token_users (username, password_hash, is_active, rotation_locked, created_at) \
             VALUES (?1, ?2, TRUE, FALSE, ?3) ON CONFLICT (username) DO NOTHING",
        )
        .bind(name)
        .bind(hash)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok((done.rows_affected() == 1).then(|| done.last_insert_rowid()))
    }

    async fn find_user(&self, name: &str) -> Result<Option<LoginRow>, sqlx::Error> {
        let row: Option<(i64, String, bool)> = sqlx::query_as(
            "SELECT id, password_hash, is_active FROM advanced_token_users WHERE username = ?1",
        )
        .bind(name)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|(id, password_hash, is_active)| LoginRow {
            id,
            password_hash,
            is_active,
        }))
    }

    async fn set_password(&self, user_id: i64, hash: &str) -> Result<Option<u64>, sqlx::Error> {
        retry(|| async {
            let mut tx = self.pool.begin().await?;
            let found =
                sqlx::query("UPDATE advanced_token_users SET password_hash = ?1 WHERE id = ?2")
                    .bind(hash)
                    .bind(user_id)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
            if found == 0 {
                return Ok(None);
            }
            let revoked = sqlx::query("DELETE FROM advanced_token_tokens WHERE user_id = ?1")
                .bind(user_id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            log(&mut tx, Revoked::User(&UserId::Int(user_id))).await?;
            tx.commit().await?;
            Ok(Some(revoked))
        })
        .await
    }

    async fn set_flag(
        &self,
        user_id: &UserId,
        flag: UserFlag,
        on: bool,
    ) -> Result<bool, sqlx::Error> {
        let Some(sql) = self.flag_sql(flag) else {
            return Ok(false);
        };
        retry(|| async {
            let mut tx = self.pool.begin().await?;
            let query = sqlx::query(sql).bind(on);
            let found = self
                .bind_user(query, user_id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            log(&mut tx, Revoked::User(user_id)).await?;
            tx.commit().await?;
            Ok(found > 0)
        })
        .await
    }

    async fn delete_user(&self, user_id: i64) -> Result<bool, sqlx::Error> {
        let sql = "DELETE FROM advanced_token_users WHERE id = ?1";
        Ok(self.revoking(sql, Some(&UserId::Int(user_id))).await? > 0)
    }

    async fn get_user(&self, user_id: i64, now: i64) -> Result<Option<UserInfo>, sqlx::Error> {
        let row: Option<UserTuple> = sqlx::query_as(
            "SELECT u.id, u.username, u.is_active, u.rotation_locked, u.created_at, \
             (SELECT COUNT(*) FROM advanced_token_tokens t WHERE t.user_id = u.id \
              AND (t.expires_at IS NULL OR t.expires_at > ?1)) \
             FROM advanced_token_users u WHERE u.id = ?2",
        )
        .bind(now)
        .bind(user_id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(UserInfo::from))
    }

    async fn list_users(&self, now: i64) -> Result<Vec<UserInfo>, sqlx::Error> {
        let rows: Vec<UserTuple> = sqlx::query_as(
            "SELECT u.id, u.username, u.is_active, u.rotation_locked, u.created_at, \
             (SELECT COUNT(*) FROM advanced_token_tokens t WHERE t.user_id = u.id \
              AND (t.expires_at IS NULL OR t.expires_at > ?1)) \
             FROM advanced_token_users u ORDER BY u.username",
        )
        .bind(now)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(UserInfo::from).collect())
    }

    async fn insert_token(&self, token: NewToken<'_>) -> Result<Option<u64>, sqlx::Error> {
        retry(|| self.try_insert_token(&token)).await
    }

    async fn find_token(&self, digest: &str) -> Result<Option<TokenRow>, sqlx::Error> {
        if self.app_users {
            let row: Option<AppTokenTuple> = sqlx::query_as(
                "SELECT t.id, t.user_id, COALESCE(s.rotation_locked, FALSE), \
                 t.created_at, t.last_used_at, t.expires_at FROM advanced_token_tokens t \
                 LEFT JOIN advanced_token_user_settings s ON s.user_id = t.user_id \
                 WHERE t.digest = ?1",
            )
            .bind(digest)
            .fetch_optional(&self.pool)
            .await?;
            return Ok(row.map(TokenRow::from));
        }
        let row: Option<TokenTuple> = sqlx::query_as(
            "SELECT t.id, t.user_id, u.username, u.is_active, u.rotation_locked, \
             t.created_at, t.last_used_at, t.expires_at \
             FROM advanced_token_tokens t JOIN advanced_token_users u ON u.id = t.user_id \
             WHERE t.digest = ?1",
        )
        .bind(digest)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(TokenRow::from))
    }

    async fn touch_token(
        &self,
        token_id: i64,
        digest: &str,
        now: i64,
        expires_at: Option<i64>,
    ) -> Result<(), sqlx::Error> {
        retry(|| async {
            sqlx::query(
                "UPDATE advanced_token_tokens SET last_used_at = ?1, expires_at = ?2 \
                 WHERE id = ?3 AND digest = ?4",
            )
            .bind(now)
            .bind(expires_at)
            .bind(token_id)
            .bind(digest)
            .execute(&self.pool)
            .await
        })
        .await?;
        Ok(())
    }

    async fn delete_token(&self, token_id: i64, digest: &str) -> Result<(), sqlx::Error> {
        sqlx::query("DELETE FROM advanced_token_tokens WHERE id = ?1 AND digest = ?2")
            .bind(token_id)
            .bind(digest)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn rotate_token(
        &self,
        token_id: i64,
        user_id: &UserId,
        old_digest: &str,
        new_digest: &str,
        now: i64,
        expires_at: Option<i64>,
    ) -> Result<bool, sqlx::Error> {
        retry(|| async {
            let mut tx = self.pool.begin().await?;
            let n = sqlx::query(
                "UPDATE advanced_token_tokens SET digest = ?1, last_used_at = ?2, expires_at = ?3 \
                 WHERE id = ?4 AND digest = ?5",
            )
            .bind(new_digest)
            .bind(now)
            .bind(expires_at)
            .bind(token_id)
            .bind(old_digest)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if n == 1 {
                log(&mut tx, Revoked::Rotated(user_id, old_digest)).await?;
            }
            tx.commit().await?;
            Ok(n == 1)
        })
        .await
    }

    async fn delete_user_tokens(&self, user_id: &UserId) -> Result<u64, sqlx::Error> {
        let sql = "DELETE FROM advanced_token_tokens WHERE user_id = ?1";
        self.revoking(sql, Some(user_id)).await
    }

    async fn revoke_token(
        &self,
        token_id: i64,
        owner: Option<&UserId>,
    ) -> Result<Option<UserId>, sqlx::Error> {
        let find = match owner {
            Some(_) => {
                "SELECT CAST(user_id AS TEXT), digest FROM advanced_token_tokens \
                 WHERE id = ?1 AND user_id = ?2"
            }
            None => "SELECT CAST(user_id AS TEXT), digest FROM advanced_token_tokens WHERE id = ?1",
        };
        retry(|| async {
            let mut tx = self.pool.begin().await?;
            let mut query = sqlx::query(find).bind(token_id);
            if let Some(id) = owner {
                query = self.bind_user(query, id);
            }
            let Some(row) = query.fetch_optional(&mut *tx).await? else {
                return Ok(None);
            };
            let (user, digest): (String, String) = (row.try_get(0)?, row.try_get(1)?);
            let gone =
                sqlx::query("DELETE FROM advanced_token_tokens WHERE id = ?1 AND digest = ?2")
                    .bind(token_id)
                    .bind(&digest)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
            if gone == 0 {
                return Ok(None);
            }
            let user = UserId::from_stored(user);
            log(&mut tx, Revoked::Token(&user, &digest)).await?;
            tx.commit().await?;
            Ok(Some(user))
        })
        .await
    }

    async fn delete_all_tokens(&self) -> Result<u64, sqlx::Error> {
        self.revoking("DELETE FROM advanced_token_tokens", None)
            .await
    }

    async fn purge_expired(&self, now: i64) -> Result<u64, sqlx::Error> {
        let done = sqlx::query(
            "DELETE FROM advanced_token_tokens WHERE expires_at IS NOT NULL AND expires_at <= ?1",
        )
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    async fn list_tokens(&self, user_id: &UserId) -> Result<Vec<TokenInfo>, sqlx::Error> {
        let query = sqlx::query(
            "SELECT id, created_at, last_used_at, expires_at FROM advanced_token_tokens \
             WHERE user_id = ?1 ORDER BY id",
        );
        let rows = self.bind_user(query, user_id).fetch_all(&self.pool).await?;
        let rows = rows
            .iter()
            .map(|r| -> Result<TokenInfoTuple, sqlx::Error> {
                Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?, r.try_get(3)?))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows.into_iter().map(TokenInfo::from).collect())
    }

    async fn revocations(&self, window: i64) -> Result<Vec<LogEntry>, sqlx::Error> {
        sqlx::query_as(
            "SELECT seq, user_id, digest FROM advanced_token_revocation_log \
             WHERE revoked_at >= CAST(strftime('%s', 'now') AS INTEGER) - ?1",
        )
        .bind(window)
        .fetch_all(&self.pool)
        .await
    }

    async fn prune_revocations(&self, keep: i64) -> Result<u64, sqlx::Error> {
        let done = sqlx::query(
            "DELETE FROM advanced_token_revocation_log WHERE revoked_at < CAST(strftime('%s', 'now') AS INTEGER) - ?1",
        )
        .bind(keep)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    async fn user_changed(&self, user_id: &UserId) -> Result<(), sqlx::Error> {
        retry(|| async {
            let mut conn = self.pool.acquire().await?;
            log(&mut conn, Revoked::User(user_id)).await
        })
        .await
    }

    async fn recent_rotations(
        &self,
        user_id: &UserId,
        window: i64,
    ) -> Result<(i64, Option<i64>, i64), sqlx::Error> {
        sqlx::query_as(
            "SELECT COUNT(*), MIN(revoked_at), CAST(strftime('%s', 'now') AS INTEGER) FROM advanced_token_revocation_log \
             WHERE user_id = ?1 AND kind = 'rotate' AND revoked_at > CAST(strftime('%s', 'now') AS INTEGER) - ?2",
        )
        .bind(user_id.to_string())
        .bind(window)
        .fetch_one(&self.pool)
        .await
    }

    async fn login_failures(
        &self,
        user: &str,
        ip: &str,
        since: i64,
    ) -> Result<Counts, sqlx::Error> {
        let rows = sqlx::query_as(
            "SELECT scope, COUNT(*), MIN(failed_at) FROM advanced_token_login_failures \
             WHERE ((scope IN ('user', 'login') AND subject = ?1) OR (scope = 'ip' AND subject = ?2)) \
             AND failed_at > ?3 GROUP BY scope",
        )
        .bind(user)
        .bind(ip)
        .bind(since)
        .fetch_all(&self.pool)
        .await?;
        Ok(failures(rows))
    }

    async fn record_login_failure(
        &self,
        user: &str,
        ip: Option<&str>,
        now: i64,
    ) -> Result<Attempt, sqlx::Error> {
        retry(|| async {
            let mut tx = self.pool.begin().await?;
            let user_row = failure_row(&mut tx, "user", user, now).await?;
            let ip_row = match ip {
                Some(ip) => Some(failure_row(&mut tx, "ip", ip, now).await?),
                None => None,
            };
            tx.commit().await?;
            Ok(Attempt { user_row, ip_row })
        })
        .await
    }

    async fn login_succeeded(
        &self,
        user: &str,
        attempt: Attempt,
        now: i64,
    ) -> Result<(), sqlx::Error> {
        retry(|| async {
            let mut tx = self.pool.begin().await?;
            // The user's failures up to and including this attempt's own
            // row; attempts still under way keep theirs.
            sqlx::query(
                "DELETE FROM advanced_token_login_failures \
                 WHERE scope = 'user' AND subject = ?1 AND id <= ?2",
            )
            .bind(user)
            .bind(attempt.user_row)
            .execute(&mut *tx)
            .await?;
            if let Some(ip_row) = attempt.ip_row {
                sqlx::query("DELETE FROM advanced_token_login_failures WHERE id = ?1")
                    .bind(ip_row)
                    .execute(&mut *tx)
                    .await?;
            }
            failure_row(&mut tx, "login", user, now).await?;
            tx.commit().await
        })
        .await
    }

    async fn clear_user_failures(&self, user: &str) -> Result<(), sqlx::Error> {
        sqlx::query(
            "DELETE FROM advanced_token_login_failures \
             WHERE scope IN ('user', 'login') AND subject = ?1",
        )
        .bind(user)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn prune_login_failures(&self, before: i64) -> Result<u64, sqlx::Error> {
        let done = sqlx::query("DELETE FROM advanced_token_login_failures WHERE failed_at <= ?1")
            .bind(before)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }
}

/// Writes one user of an import in the batch's transaction; also gives the
/// user's id if the change revokes (the caller logs the revocation).
async fn import_one(
    conn: &mut SqliteConnection,
    u: &ImportUser,
    mode: ImportMode,
) -> Result<(UserOutcome, Option<i64>), sqlx::Error> {
    let existing: Option<ExistingUser> = sqlx::query_as(
        "SELECT id, password_hash, is_active, rotation_locked FROM advanced_token_users \
         WHERE username = ?1",
    )
    .bind(&u.username)
    .fetch_optional(&mut *conn)
    .await?;
    let p = plan(existing.as_ref(), u, mode.overwrite);
    let id = match (p.user, &existing) {
        (Outcome::SkippedHashDiffers, _) => {
            let token = u.token.as_ref().map(|_| p.user);
            let out = UserOutcome {
                user: p.user,
                token,
                lock: p.lock,
            };
            return Ok((out, None));
        }
        (Outcome::Unchanged, Some(row)) => row.0,
        _ => upsert_user(conn, u).await?,
    };
    if p.hash_changed {
        sqlx::query("DELETE FROM advanced_token_tokens WHERE user_id = ?1")
            .bind(id)
            .execute(&mut *conn)
            .await?;
    }
    let token = match &u.token {
        Some((digest, created)) => Some(import_token(conn, id, digest, *created, mode).await?),
        None => None,
    };
    Ok((
        UserOutcome {
            user: p.user,
            token,
            lock: p.lock,
        },
        p.revoking.then_some(id),
    ))
}

/// Inserts an imported user, or updates the one with its username; the id.
async fn upsert_user(conn: &mut SqliteConnection, u: &ImportUser) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "INSERT INTO advanced_token_users \
         (username, password_hash, is_active, rotation_locked, created_at) \
         VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (username) DO UPDATE SET \
         password_hash = excluded.password_hash, is_active = excluded.is_active, \
         rotation_locked = excluded.rotation_locked RETURNING id",
    )
    .bind(&u.username)
    .bind(&u.password_hash)
    .bind(u.is_active)
    .bind(u.rotation_locked)
    .bind(u.created_at)
    .fetch_one(&mut *conn)
    .await
}

/// Stores an imported token unless its digest was imported before.
async fn import_token(
    conn: &mut SqliteConnection,
    user_id: i64,
    digest: &str,
    created: i64,
    mode: ImportMode,
) -> Result<Outcome, sqlx::Error> {
    let first = sqlx::query(
        "INSERT INTO advanced_token_imported_keys (digest, imported_at) VALUES (?1, ?2) \
         ON CONFLICT (digest) DO NOTHING",
    )
    .bind(digest)
    .bind(mode.now)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if first == 0 {
        let live: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM advanced_token_tokens WHERE digest = ?1 AND user_id = ?2",
        )
        .bind(digest)
        .bind(user_id)
        .fetch_one(&mut *conn)
        .await?;
        return Ok(token_seen_before(live));
    }
    let stored = sqlx::query(
        "INSERT INTO advanced_token_tokens (user_id, digest, created_at, last_used_at, expires_at) \
         VALUES (?1, ?2, ?3, ?3, ?4) ON CONFLICT (digest) DO NOTHING",
    )
    .bind(user_id)
    .bind(digest)
    .bind(created)
    .bind(mode.expires_at)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    Ok(token_stored(stored))
}

impl SqliteStore {
    async fn try_import(
        &self,
        batch: &[ImportUser],
        mode: ImportMode,
    ) -> Result<Vec<UserOutcome>, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        // A write first: the transaction holds SQLite's write lock from the
        // start (see the top of this file).
        sqlx::query("UPDATE advanced_token_revocations SET counter = counter WHERE id = 1")
            .execute(&mut *tx)
            .await?;
        let mut out = Vec::with_capacity(batch.len());
        for u in batch {
            let (outcome, revoked) = import_one(&mut tx, u, mode).await?;
            out.push(outcome);
            if let Some(id) = revoked {
                log(&mut tx, Revoked::User(&UserId::Int(id))).await?;
            }
        }
        if mode.dry_run {
            tx.rollback().await?;
        } else {
            tx.commit().await?;
        }
        Ok(out)
    }
}

#[rocket::async_trait]
impl Import for SqliteStore {
    async fn import_users(
        &self,
        batch: &[ImportUser],
        mode: ImportMode,
    ) -> Result<Vec<UserOutcome>, sqlx::Error> {
        retry(|| self.try_import(batch, mode)).await
    }
}
