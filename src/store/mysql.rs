//! The MySQL / MariaDB store (Galera clusters included). Statements use
//! positional `?` placeholders, one bound value each. Writes that must see
//! a consistent user row start with an `UPDATE` of it, which locks the row
//! until commit (sqlx sets `CLIENT_FOUND_ROWS`, so the row count is the
//! rows matched, changed or not).

use sqlx::mysql::MySqlArguments;
use sqlx::query::Query;
use sqlx::{Executor, MySql, MySqlConnection, MySqlPool, Row, Transaction};

use super::migrate::{self, Migration, Migrator};
use super::{
    failures, plan, retry, token_seen_before, token_stored, AppTokenTuple, Attempt, Counts,
    ExistingUser, Import, ImportMode, ImportUser, LogEntry, LoginRow, NewToken, Outcome, Revoked,
    Store, TokenInfo, TokenInfoTuple, TokenRow, TokenTuple, UserFlag, UserInfo, UserOutcome,
    UserTuple,
};
use crate::backend::UserId;

/// The crate's tables in a MySQL or MariaDB database.
#[derive(Debug, Clone)]
pub(crate) struct MySqlStore {
    pub(crate) pool: MySqlPool,
    /// The users live in the app's table: tokens hold the app's id as text.
    pub(crate) app_users: bool,
}

type Q<'q> = Query<'q, MySql, MySqlArguments>;

/// `pool.begin()`, run to its end even if the caller is dropped (the 503
/// deadline, a client gone). sqlx 0.7.4's MySQL driver counts a
/// transaction only once `BEGIN` has answered: cut short in between, it
/// returns the connection to the pool inside a transaction nobody ends,
/// where later reads see a frozen snapshot and writes never commit. (On a
/// Galera node `BEGIN` waits for the cluster, so this happens under load.)
/// Its PostgreSQL and SQLite drivers roll such a transaction back
/// themselves. Run as a task, an abandoned `BEGIN` completes and the
/// transaction it returns is dropped, which rolls it back.
async fn begin(pool: &MySqlPool) -> Result<Transaction<'static, MySql>, sqlx::Error> {
    let pool = pool.clone();
    rocket::tokio::spawn(async move { pool.begin().await })
        .await
        .map_err(|e| sqlx::Error::Io(std::io::Error::other(e)))?
}

/// Records a revocation in the log, inside `conn`'s transaction: other
/// instances drop just what it names from their caches.
async fn log(conn: &mut MySqlConnection, r: Revoked<'_>) -> Result<(), sqlx::Error> {
    let (user, digest) = r.parts();
    sqlx::query(
        "INSERT INTO advanced_token_revocation_log (user_id, digest, kind, revoked_at) \
         VALUES (?, ?, ?, UNIX_TIMESTAMP())",
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
    conn: &mut MySqlConnection,
    scope: &str,
    subject: &str,
    now: i64,
) -> Result<i64, sqlx::Error> {
    let done = sqlx::query(
        "INSERT INTO advanced_token_login_failures (scope, subject, failed_at) \
         VALUES (?, ?, ?)",
    )
    .bind(scope)
    .bind(subject)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(done.last_insert_id() as i64)
}

struct MySqlMigrator(sqlx::pool::PoolConnection<sqlx::MySql>);

#[rocket::async_trait]
impl Migrator for MySqlMigrator {
    async fn lock(&mut self) -> Result<(), sqlx::Error> {
        // A named lock, per server (on a Galera cluster, per node: there the
        // runner's retry of a whole run on a certification failure is what
        // makes concurrent runs safe). 1 = granted, 0 = timed out.
        let got: Option<i64> = sqlx::query_scalar("SELECT GET_LOCK('advanced_token_migrate', ?)")
            .bind(migrate::LOCK_WAIT.as_secs() as i64)
            .fetch_one(&mut *self.0)
            .await?;
        if got == Some(1) {
            Ok(())
        } else {
            Err(migrate::lock_timeout())
        }
    }

    async fn unlock(&mut self) -> Result<(), sqlx::Error> {
        self.0
            .execute("SELECT RELEASE_LOCK('advanced_token_migrate')")
            .await?;
        Ok(())
    }

    async fn applied(&mut self) -> Result<Vec<i64>, sqlx::Error> {
        self.0
            .execute(
                "CREATE TABLE IF NOT EXISTS advanced_token_migrations (
                    version BIGINT NOT NULL PRIMARY KEY, description VARCHAR(200) NOT NULL,
                    applied_at BIGINT NOT NULL) ENGINE = InnoDB",
            )
            .await?;
        sqlx::query_scalar("SELECT version FROM advanced_token_migrations")
            .fetch_all(&mut *self.0)
            .await
    }

    async fn apply(&mut self, m: &Migration, now: i64) -> Result<(), sqlx::Error> {
        // DDL commits implicitly in MySQL: no transaction; every statement
        // of a migration is idempotent instead.
        let sql = self.server_specific(m.mysql).await?;
        self.0.execute(sql.as_str()).await?;
        sqlx::query(
            "INSERT IGNORE INTO advanced_token_migrations (version, description, applied_at) \
             VALUES (?, ?, ?)",
        )
        .bind(m.version)
        .bind(m.description)
        .bind(now)
        .execute(&mut *self.0)
        .await?;
        Ok(())
    }
}

impl MySqlMigrator {
    /// `sql` with `{nopad_bin}` replaced by this server's NO PAD binary
    /// collation: MariaDB's `utf8mb4_nopad_bin`, MySQL 8's
    /// `utf8mb4_0900_bin` (the two servers share no such name).
    async fn server_specific(&mut self, sql: &str) -> Result<String, sqlx::Error> {
        if !sql.contains("{nopad_bin}") {
            return Ok(sql.to_owned());
        }
        let version: String = sqlx::query_scalar("SELECT VERSION()")
            .fetch_one(&mut *self.0)
            .await?;
        let collation = if version.contains("MariaDB") {
            "utf8mb4_nopad_bin"
        } else {
            "utf8mb4_0900_bin"
        };
        Ok(sql.replace("{nopad_bin}", collation))
    }
}

impl MySqlStore {
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
    async fn lock_user(conn: &mut MySqlConnection, t: &NewToken<'_>) -> Result<bool, sqlx::Error> {
        let id = t.user_id.as_i64().unwrap_or(-1);
        let lock = match t.verified_hash {
            Some(hash) => sqlx::query(
                "UPDATE advanced_token_users SET password_hash = ? \
                 WHERE id = ? AND password_hash = ? AND is_active",
            )
            .bind(t.new_hash.unwrap_or(hash))
            .bind(id)
            .bind(hash),
            None => sqlx::query("UPDATE advanced_token_users SET id = id WHERE id = ?").bind(id),
        };
        Ok(lock.execute(conn).await?.rows_affected() > 0)
    }

    /// Evicts the user's least recently used tokens beyond `t.keep`.
    async fn evict(
        &self,
        conn: &mut MySqlConnection,
        t: &NewToken<'_>,
    ) -> Result<u64, sqlx::Error> {
        let cutoff = sqlx::query(
            "SELECT last_used_at, id FROM advanced_token_tokens WHERE user_id = ? \
             ORDER BY last_used_at DESC, id DESC LIMIT 1 OFFSET ?",
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
            "DELETE FROM advanced_token_tokens WHERE user_id = ? \
             AND (last_used_at, id) < (?, ?)",
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
        let mut tx = begin(&self.pool).await?;
        if !self.app_users && !Self::lock_user(&mut tx, t).await? {
            return Ok(None);
        }
        let insert = sqlx::query(
            "INSERT INTO advanced_token_tokens (user_id, digest, created_at, last_used_at, expires_at) \
             VALUES (?, ?, ?, ?, ?)",
        );
        self.bind_user(insert, t.user_id)
            .bind(t.digest)
            .bind(t.now) // created_at
            .bind(t.now) // last_used_at
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
            let mut tx = begin(&self.pool).await?;
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
                Some("UPDATE advanced_token_users SET is_active = ? WHERE id = ?")
            }
            (UserFlag::RotationLocked, false) => {
                Some("UPDATE advanced_token_users SET rotation_locked = ? WHERE id = ?")
            }
            (UserFlag::RotationLocked, true) => Some(
                "INSERT INTO advanced_token_user_settings (rotation_locked, user_id) \
                 VALUES (?, ?) ON DUPLICATE KEY UPDATE rotation_locked = VALUES(rotation_locked)",
            ),
            // The app's own table says who is active.
            (UserFlag::Active, true) => None,
        }
    }
}

#[rocket::async_trait]
impl Store for MySqlStore {
    async fn migrate(&self, now: i64) -> Result<(), sqlx::Error> {
        let mut m = MySqlMigrator(self.pool.acquire().await?);
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
        // A taken username is the unique index's violation: an answer.
        let inserted = sqlx::query(
            "INSERT INTO advanced_token_users (username, password_hash, is_active, rotation_locked, created_at) \
             VALUES (?, ?, TRUE, FALSE, ?)",
        )
        .bind(name)
        .bind(hash)
        .bind(now)
        .execute(&self.pool)
        .await;
        match inserted {
            Ok(done) => Ok(Some(done.last_insert_id() as i64)),
            Err(sqlx::Error::Database(db)) if db.is_unique_violation() => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn find_user(&self, name: &str) -> Result<Option<LoginRow>, sqlx::Error> {
        let row: Option<(i64, String, bool)> = sqlx::query_as(
            "SELECT id, password_hash, is_active FROM advanced_token_users WHERE username = ?",
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
            let mut tx = begin(&self.pool).await?;
            let found =
                sqlx::query("UPDATE advanced_token_users SET password_hash = ? WHERE id = ?")
                    .bind(hash)
                    .bind(user_id)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
            if found == 0 {
                return Ok(None);
            }
            let revoked = sqlx::query("DELETE FROM advanced_token_tokens WHERE user_id = ?")
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
            let mut tx = begin(&self.pool).await?;
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
        let sql = "DELETE FROM advanced_token_users WHERE id = ?";
        Ok(self.revoking(sql, Some(&UserId::Int(user_id))).await? > 0)
    }

    async fn get_user(&self, user_id: i64, now: i64) -> Result<Option<UserInfo>, sqlx::Error> {
        let row: Option<UserTuple> = sqlx::query_as(
            "SELECT u.id, u.username, u.is_active, u.rotation_locked, u.created_at, \
             (SELECT COUNT(*) FROM advanced_token_tokens t WHERE t.user_id = u.id \
              AND (t.expires_at IS NULL OR t.expires_at > ?)) \
             FROM advanced_token_users u WHERE u.id = ?",
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
              AND (t.expires_at IS NULL OR t.expires_at > ?)) \
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
                 WHERE t.digest = ?",
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
             WHERE t.digest = ?",
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
                "UPDATE advanced_token_tokens SET last_used_at = ?, expires_at = ? \
                 WHERE id = ? AND digest = ?",
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
        sqlx::query("DELETE FROM advanced_token_tokens WHERE id = ? AND digest = ?")
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
            let mut tx = begin(&self.pool).await?;
            let n = sqlx::query(
                "UPDATE advanced_token_tokens SET digest = ?, last_used_at = ?, expires_at = ? \
                 WHERE id = ? AND digest = ?",
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
        let sql = "DELETE FROM advanced_token_tokens WHERE user_id = ?";
        self.revoking(sql, Some(user_id)).await
    }

    async fn revoke_token(
        &self,
        token_id: i64,
        owner: Option<&UserId>,
    ) -> Result<Option<UserId>, sqlx::Error> {
        let find = match owner {
            Some(_) => {
                "SELECT CAST(user_id AS CHAR), digest FROM advanced_token_tokens \
                 WHERE id = ? AND user_id = ? FOR UPDATE"
            }
            None => "SELECT CAST(user_id AS CHAR), digest FROM advanced_token_tokens WHERE id = ? FOR UPDATE",
        };
        retry(|| async {
            let mut tx = begin(&self.pool).await?;
            let mut query = sqlx::query(find).bind(token_id);
            if let Some(id) = owner {
                query = self.bind_user(query, id);
            }
            let Some(row) = query.fetch_optional(&mut *tx).await? else {
                return Ok(None);
            };
            let (user, digest): (String, String) = (row.try_get(0)?, row.try_get(1)?);
            let gone = sqlx::query("DELETE FROM advanced_token_tokens WHERE id = ? AND digest = ?")
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
            "DELETE FROM advanced_token_tokens WHERE expires_at IS NOT NULL AND expires_at <= ?",
        )
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    async fn list_tokens(&self, user_id: &UserId) -> Result<Vec<TokenInfo>, sqlx::Error> {
        let query = sqlx::query(
            "SELECT id, created_at, last_used_at, expires_at FROM advanced_token_tokens \
             WHERE user_id = ? ORDER BY id",
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
             WHERE revoked_at >= UNIX_TIMESTAMP() - ?",
        )
        .bind(window)
        .fetch_all(&self.pool)
        .await
    }

    async fn prune_revocations(&self, keep: i64) -> Result<u64, sqlx::Error> {
        let done = sqlx::query(
            "DELETE FROM advanced_token_revocation_log WHERE revoked_at < UNIX_TIMESTAMP() - ?",
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
            "SELECT COUNT(*), MIN(revoked_at), UNIX_TIMESTAMP() FROM advanced_token_revocation_log \
             WHERE user_id = ? AND kind = 'rotate' AND revoked_at > UNIX_TIMESTAMP() - ?",
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
             WHERE ((scope IN ('user', 'login') AND subject = ?) OR (scope = 'ip' AND subject = ?)) \
             AND failed_at > ? GROUP BY scope",
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
            let mut tx = begin(&self.pool).await?;
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
            let mut tx = begin(&self.pool).await?;
            // The user's failures up to and including this attempt's own
            // row; attempts still under way keep theirs.
            sqlx::query(
                "DELETE FROM advanced_token_login_failures \
                 WHERE scope = 'user' AND subject = ? AND id <= ?",
            )
            .bind(user)
            .bind(attempt.user_row)
            .execute(&mut *tx)
            .await?;
            if let Some(ip_row) = attempt.ip_row {
                sqlx::query("DELETE FROM advanced_token_login_failures WHERE id = ?")
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
             WHERE scope IN ('user', 'login') AND subject = ?",
        )
        .bind(user)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn prune_login_failures(&self, before: i64) -> Result<u64, sqlx::Error> {
        let done = sqlx::query("DELETE FROM advanced_token_login_failures WHERE failed_at <= ?")
            .bind(before)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }
}

/// Writes one user of an import in the batch's transaction; also gives the
/// user's id if the change revokes (the caller logs the revocation).
async fn import_one(
    conn: &mut MySqlConnection,
    u: &ImportUser,
    mode: ImportMode,
) -> Result<(UserOutcome, Option<i64>), sqlx::Error> {
    let existing: Option<ExistingUser> = sqlx::query_as(
        "SELECT id, password_hash, is_active, rotation_locked FROM advanced_token_users \
         WHERE username = ? FOR UPDATE",
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
        _ => upsert_user(conn, u, existing.as_ref()).await?,
    };
    if p.hash_changed {
        sqlx::query("DELETE FROM advanced_token_tokens WHERE user_id = ?")
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
async fn upsert_user(
    conn: &mut MySqlConnection,
    u: &ImportUser,
    existing: Option<&ExistingUser>,
) -> Result<i64, sqlx::Error> {
    let done = sqlx::query(
        "INSERT INTO advanced_token_users \
         (username, password_hash, is_active, rotation_locked, created_at) \
         VALUES (?, ?, ?, ?, ?) ON DUPLICATE KEY UPDATE \
         password_hash = VALUES(password_hash), is_active = VALUES(is_active), \
         rotation_locked = VALUES(rotation_locked)",
    )
    .bind(&u.username)
    .bind(&u.password_hash)
    .bind(u.is_active)
    .bind(u.rotation_locked)
    .bind(u.created_at)
    .execute(&mut *conn)
    .await?;
    // The row found (and locked) above, or the one just inserted.
    Ok(existing.map_or(done.last_insert_id() as i64, |row| row.0))
}

/// Stores an imported token unless its digest was imported before.
async fn import_token(
    conn: &mut MySqlConnection,
    user_id: i64,
    digest: &str,
    created: i64,
    mode: ImportMode,
) -> Result<Outcome, sqlx::Error> {
    let first = sqlx::query(
        "INSERT IGNORE INTO advanced_token_imported_keys (digest, imported_at) VALUES (?, ?)",
    )
    .bind(digest)
    .bind(mode.now)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if first == 0 {
        let live: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM advanced_token_tokens WHERE digest = ? AND user_id = ?",
        )
        .bind(digest)
        .bind(user_id)
        .fetch_one(&mut *conn)
        .await?;
        return Ok(token_seen_before(live));
    }
    let stored = sqlx::query(
        "INSERT IGNORE INTO advanced_token_tokens \
         (user_id, digest, created_at, last_used_at, expires_at) VALUES (?, ?, ?, ?, ?)",
    )
    .bind(user_id)
    .bind(digest)
    .bind(created)
    .bind(created)
    .bind(mode.expires_at)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    Ok(token_stored(stored))
}

impl MySqlStore {
    async fn try_import(
        &self,
        batch: &[ImportUser],
        mode: ImportMode,
    ) -> Result<Vec<UserOutcome>, sqlx::Error> {
        let mut tx = begin(&self.pool).await?;
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
impl Import for MySqlStore {
    async fn import_users(
        &self,
        batch: &[ImportUser],
        mode: ImportMode,
    ) -> Result<Vec<UserOutcome>, sqlx::Error> {
        retry(|| self.try_import(batch, mode)).await
    }
}
