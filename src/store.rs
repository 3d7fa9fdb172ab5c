//! Storage: the database pool and every SQL statement the crate runs.
//!
//! Each statement is written once, with PostgreSQL-style `$1` placeholders,
//! and runs unchanged on SQLite (which accepts them) and PostgreSQL; for
//! MySQL they are rewritten to `?` by [`mysql_placeholders`]. The
//! [`on_pool!`] macro expands one body per backend, so the Rust code is
//! written once too. Races are settled by the database: unique indexes,
//! single statements, and `WHERE` clauses that re-check what they change.

use std::borrow::Cow;
use std::time::Duration;

use rocket::figment::Figment;
use sqlx::{Executor, Row};

use crate::Error;

#[cfg(not(any(feature = "sqlite", feature = "postgres", feature = "mysql")))]
compile_error!(
    "rocket_advanced_token needs at least one of the features `sqlite`, `postgres`, `mysql`"
);

/// The crate's connection pool: one of sqlx's native pools, chosen at launch
/// by the scheme of `databases.advanced_token.url`.
///
/// It implements [`rocket_db_pools::Pool`], so it is configured exactly like
/// any `rocket_db_pools` database (`url`, `max_connections`,
/// `connect_timeout`, `idle_timeout`, `min_connections`).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum DbPool {
    /// `sqlite:` URLs. WAL mode, foreign keys on, busy timeout =
    /// `connect_timeout`, the file created if missing.
    #[cfg(feature = "sqlite")]
    Sqlite(sqlx::SqlitePool),
    /// `postgres:` and `postgresql:` URLs.
    #[cfg(feature = "postgres")]
    Postgres(sqlx::PgPool),
    /// `mysql:` and `mariadb:` URLs.
    #[cfg(feature = "mysql")]
    MySql(sqlx::MySqlPool),
}

/// A connection checked out of a [`DbPool`].
#[derive(Debug)]
#[non_exhaustive]
pub enum DbConnection {
    /// A SQLite connection.
    #[cfg(feature = "sqlite")]
    Sqlite(sqlx::pool::PoolConnection<sqlx::Sqlite>),
    /// A PostgreSQL connection.
    #[cfg(feature = "postgres")]
    Postgres(sqlx::pool::PoolConnection<sqlx::Postgres>),
    /// A MySQL connection.
    #[cfg(feature = "mysql")]
    MySql(sqlx::pool::PoolConnection<sqlx::MySql>),
}

/// Expands `$body` once per backend, with `$p` bound to the native pool and
/// `$q` to a function that adapts a `$N`-placeholder statement to it.
macro_rules! on_pool {
    ($pool:expr, |$p:ident, $q:ident| $body:expr) => {
        match $pool {
            #[cfg(feature = "sqlite")]
            DbPool::Sqlite($p) => {
                let $q = |s: &'static str| -> Cow<'static, str> { Cow::Borrowed(s) };
                $body
            }
            #[cfg(feature = "postgres")]
            DbPool::Postgres($p) => {
                let $q = |s: &'static str| -> Cow<'static, str> { Cow::Borrowed(s) };
                $body
            }
            #[cfg(feature = "mysql")]
            DbPool::MySql($p) => {
                let $q = mysql_placeholders;
                $body
            }
        }
    };
}

/// `$1`, `$2`, ... → `?`. Every statement in this file uses each placeholder
/// once and in ascending order, which is what positional `?` needs.
#[cfg(feature = "mysql")]
fn mysql_placeholders(sql: &'static str) -> Cow<'static, str> {
    let mut out = String::with_capacity(sql.len());
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '$' && chars.peek().is_some_and(|d| d.is_ascii_digit()) {
            while chars.peek().is_some_and(|d| d.is_ascii_digit()) {
                chars.next();
            }
            out.push('?');
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// Which backend a URL names, by its scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Backend {
    Sqlite,
    Postgres,
    MySql,
}

impl Backend {
    pub(crate) fn of_url(url: &str) -> Option<Backend> {
        let scheme = url.split(':').next()?.to_ascii_lowercase();
        match scheme.as_str() {
            "sqlite" => Some(Backend::Sqlite),
            "postgres" | "postgresql" => Some(Backend::Postgres),
            "mysql" | "mariadb" => Some(Backend::MySql),
            _ => None,
        }
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "SQLite",
            Backend::Postgres => "PostgreSQL",
            Backend::MySql => "MySQL",
        }
    }
}

/// The URL with any password replaced by `***`, for messages.
pub(crate) fn redact_url(url: &str) -> String {
    let Some(start) = url.find("://").map(|i| i + 3) else {
        return url.to_owned();
    };
    let authority_end = url[start..]
        .find(['/', '?', '#'])
        .map_or(url.len(), |i| start + i);
    let authority = &url[start..authority_end];
    match authority.rfind('@') {
        Some(at) => {
            let userinfo = &authority[..at];
            let user = userinfo.split(':').next().unwrap_or("");
            let masked = if userinfo.contains(':') {
                format!("{user}:***")
            } else {
                user.to_owned()
            };
            format!(
                "{}{}@{}{}",
                &url[..start],
                masked,
                &authority[at + 1..],
                &url[authority_end..]
            )
        }
        None => url.to_owned(),
    }
}

impl DbPool {
    /// The backend's name: `SQLite`, `PostgreSQL` or `MySQL`.
    pub fn backend_name(&self) -> &'static str {
        match self {
            #[cfg(feature = "sqlite")]
            DbPool::Sqlite(_) => "SQLite",
            #[cfg(feature = "postgres")]
            DbPool::Postgres(_) => "PostgreSQL",
            #[cfg(feature = "mysql")]
            DbPool::MySql(_) => "MySQL",
        }
    }

    /// Opens a pool from a `rocket_db_pools` configuration.
    pub async fn connect(config: &rocket_db_pools::Config) -> Result<DbPool, sqlx::Error> {
        let url = config.url.as_str();
        let backend = Backend::of_url(url).ok_or_else(|| {
            sqlx::Error::Configuration(
                format!(
                    "unsupported URL scheme in {:?}: expected sqlite:, postgres:, postgresql:, mysql: or mariadb:",
                    redact_url(url)
                )
                .into(),
            )
        })?;
        let timeout = Duration::from_secs(config.connect_timeout);
        macro_rules! pool_options {
            () => {
                sqlx::pool::PoolOptions::new()
                    .max_connections(config.max_connections.max(1) as u32)
                    .min_connections(config.min_connections.unwrap_or(0))
                    .acquire_timeout(timeout)
                    .idle_timeout(config.idle_timeout.map(Duration::from_secs))
            };
        }
        #[allow(unreachable_patterns)]
        match backend {
            #[cfg(feature = "sqlite")]
            Backend::Sqlite => {
                use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
                use sqlx::ConnectOptions;
                let mut opts: SqliteConnectOptions = url.parse()?;
                opts = opts
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    .synchronous(SqliteSynchronous::Normal)
                    .foreign_keys(true)
                    .busy_timeout(timeout)
                    .disable_statement_logging();
                for ext in config.extensions.iter().flatten() {
                    opts = opts.extension(ext.clone());
                }
                Ok(DbPool::Sqlite(pool_options!().connect_with(opts).await?))
            }
            #[cfg(feature = "postgres")]
            Backend::Postgres => {
                use sqlx::postgres::PgConnectOptions;
                use sqlx::ConnectOptions;
                let opts: PgConnectOptions = url.parse()?;
                let opts = opts.disable_statement_logging();
                Ok(DbPool::Postgres(pool_options!().connect_with(opts).await?))
            }
            #[cfg(feature = "mysql")]
            Backend::MySql => {
                use sqlx::mysql::MySqlConnectOptions;
                use sqlx::ConnectOptions;
                let url = match url.strip_prefix("mariadb:") {
                    Some(rest) => Cow::Owned(format!("mysql:{rest}")),
                    None => Cow::Borrowed(url),
                };
                let opts: MySqlConnectOptions = url.parse()?;
                let opts = opts.disable_statement_logging();
                Ok(DbPool::MySql(pool_options!().connect_with(opts).await?))
            }
            other => Err(sqlx::Error::Configuration(
                format!(
                    "{} support is not compiled in: enable the crate's `{}` feature",
                    other.name(),
                    other.name().to_ascii_lowercase()
                )
                .into(),
            )),
        }
    }

    /// Closes every connection.
    pub async fn close(&self) {
        on_pool!(self, |p, _q| p.close().await)
    }
}

#[rocket::async_trait]
impl rocket_db_pools::Pool for DbPool {
    type Connection = DbConnection;
    type Error = rocket_db_pools::Error<sqlx::Error>;

    async fn init(figment: &Figment) -> Result<Self, Self::Error> {
        let config: rocket_db_pools::Config = figment.extract()?;
        DbPool::connect(&config)
            .await
            .map_err(rocket_db_pools::Error::Init)
    }

    async fn get(&self) -> Result<Self::Connection, Self::Error> {
        let conn = match self {
            #[cfg(feature = "sqlite")]
            DbPool::Sqlite(p) => {
                DbConnection::Sqlite(p.acquire().await.map_err(rocket_db_pools::Error::Get)?)
            }
            #[cfg(feature = "postgres")]
            DbPool::Postgres(p) => {
                DbConnection::Postgres(p.acquire().await.map_err(rocket_db_pools::Error::Get)?)
            }
            #[cfg(feature = "mysql")]
            DbPool::MySql(p) => {
                DbConnection::MySql(p.acquire().await.map_err(rocket_db_pools::Error::Get)?)
            }
        };
        Ok(conn)
    }

    async fn close(&self) {
        DbPool::close(self).await
    }
}

/// What login needs to know about a user.
#[derive(Debug)]
pub(crate) struct LoginRow {
    pub id: i64,
    pub password_hash: String,
    pub is_active: bool,
}

/// A token and its user, found by digest in one indexed query.
#[derive(Debug, Clone)]
pub(crate) struct TokenRow {
    pub token_id: i64,
    pub user_id: i64,
    pub username: String,
    pub is_active: bool,
    pub rotation_locked: bool,
    pub created_at: i64,
    pub last_used_at: i64,
    pub expires_at: Option<i64>,
}

/// A user, as `list-users` shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct UserInfo {
    /// The user's id.
    pub id: i64,
    /// The username (case-sensitive).
    pub username: String,
    /// Whether the user may log in and use tokens.
    pub is_active: bool,
    /// Whether token rotation is locked for this user.
    pub rotation_locked: bool,
    /// How many unexpired tokens the user holds.
    pub live_tokens: i64,
    /// When the user was created, in seconds since the Unix epoch.
    pub created_at: i64,
}

/// A token's metadata, as `list-tokens` shows it: never the token or its
/// digest.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct TokenInfo {
    /// The token's row id, stable for its lifetime (rotation keeps it).
    pub id: i64,
    /// When the token was issued (or last rotated), Unix seconds.
    pub created_at: i64,
    /// When the token was last used, Unix seconds, to within a minute.
    pub last_used_at: i64,
    /// When the token expires, Unix seconds; `None` for never.
    pub expires_at: Option<i64>,
}

impl From<sqlx::Error> for Error {
    fn from(e: sqlx::Error) -> Self {
        Error::from_sqlx(e)
    }
}

#[cfg(feature = "mysql")]
fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.is_unique_violation())
}

/// One migration: a version, a name, and its SQL for each backend.
#[allow(dead_code)] // only the compiled-in backends' SQL is read
struct Migration {
    version: i64,
    description: &'static str,
    sqlite: &'static str,
    postgres: &'static str,
    mysql: &'static str,
}

/// The crate's migrations, in order. They are tracked in the crate's own
/// table, `advanced_token_migrations`, never in sqlx's `_sqlx_migrations`,
/// so the host app's own sqlx migrations on the same database are left alone
/// (and leave us alone), whichever runs first.
const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        description: "create tables",
        sqlite: include_str!("../migrations/sqlite/0001_create_tables.sql"),
        postgres: include_str!("../migrations/postgres/0001_create_tables.sql"),
        mysql: include_str!("../migrations/mysql/0001_create_tables.sql"),
    },
    Migration {
        version: 2,
        description: "login failures",
        sqlite: include_str!("../migrations/sqlite/0002_login_failures.sql"),
        postgres: include_str!("../migrations/postgres/0002_login_failures.sql"),
        mysql: include_str!("../migrations/mysql/0002_login_failures.sql"),
    },
    Migration {
        version: 3,
        description: "revocation counter",
        sqlite: include_str!("../migrations/sqlite/0003_revocations.sql"),
        postgres: include_str!("../migrations/postgres/0003_revocations.sql"),
        mysql: include_str!("../migrations/mysql/0003_revocations.sql"),
    },
    Migration {
        version: 4,
        description: "revocation notify",
        sqlite: include_str!("../migrations/sqlite/0004_revocation_notify.sql"),
        postgres: include_str!("../migrations/postgres/0004_revocation_notify.sql"),
        mysql: include_str!("../migrations/mysql/0004_revocation_notify.sql"),
    },
];

/// The PostgreSQL channel on which revocations are announced.
#[cfg(feature = "postgres")]
pub(crate) const REVOCATION_CHANNEL: &str = "advanced_token_revocations";

/// Runs a transaction again when the database reports a deadlock or a
/// serialisation failure (InnoDB picks a victim when concurrent logins and
/// logouts of one user lock the same index range), with a short, growing,
/// jittered pause.
macro_rules! retry {
    ($attempt:expr) => {{
        let mut tries = 0u32;
        loop {
            match $attempt {
                Err(e) if is_retryable(&e) && tries < 8 => {
                    tries += 1;
                    let jitter = rand::random::<u64>() % 10;
                    rocket::tokio::time::sleep(Duration::from_millis(
                        (2u64 << tries.min(6)) + jitter,
                    ))
                    .await;
                }
                other => break other,
            }
        }
    }};
}

/// Deadlock or serialisation failure: MySQL deadlock (1213, SQLSTATE 40001,
/// which is what sqlx 0.7's `code()` gives for MySQL), PostgreSQL
/// 40P01/40001, SQLite BUSY (5) / BUSY_SNAPSHOT (517).
fn is_retryable(e: &sqlx::Error) -> bool {
    match e {
        #[cfg(feature = "mysql")]
        sqlx::Error::Database(db)
            if db
                .try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>()
                .is_some() =>
        {
            db.code().as_deref() == Some("40001")
        }
        sqlx::Error::Database(db) => {
            matches!(db.code().as_deref(), Some("40001" | "40P01" | "5" | "517"))
        }
        _ => false,
    }
}

/// Bumps the revocation counter; runs inside each revoking transaction.
const BUMP: &str = "UPDATE advanced_token_revocations SET counter = counter + 1 WHERE id = 1";

/// The crate's tables, reached through [`DbPool`].
#[derive(Debug, Clone)]
pub(crate) struct Store {
    pub(crate) pool: DbPool,
}

impl Store {
    /// Applies the migrations this database has not seen yet. Safe to run
    /// from several processes at once: PostgreSQL and MySQL take a named lock,
    /// SQLite serialises writers, and every statement is idempotent.
    pub(crate) async fn migrate(&self, now: i64) -> Result<(), sqlx::Error> {
        match &self.pool {
            #[cfg(feature = "sqlite")]
            DbPool::Sqlite(p) => {
                let mut conn = p.acquire().await?;
                conn.execute(
                    "CREATE TABLE IF NOT EXISTS advanced_token_migrations (
                        version BIGINT PRIMARY KEY, description TEXT NOT NULL, applied_at BIGINT NOT NULL)",
                )
                .await?;
                for m in MIGRATIONS {
                    let done: Option<i64> = sqlx::query_scalar(
                        "SELECT version FROM advanced_token_migrations WHERE version = $1",
                    )
                    .bind(m.version)
                    .fetch_optional(&mut *conn)
                    .await?;
                    if done.is_some() {
                        continue;
                    }
                    let mut tx = sqlx::Connection::begin(&mut *conn).await?;
                    tx.execute(m.sqlite).await?;
                    sqlx::query("INSERT OR IGNORE INTO advanced_token_migrations (version, description, applied_at) VALUES ($1, $2, $3)")
                        .bind(m.version).bind(m.description).bind(now)
                        .execute(&mut *tx).await?;
                    tx.commit().await?;
                }
                Ok(())
            }
            #[cfg(feature = "postgres")]
            DbPool::Postgres(p) => {
                let mut conn = p.acquire().await?;
                // Any fixed 64-bit key: "advtoken" in ASCII.
                conn.execute("SELECT pg_advisory_lock(7018141436911857262)")
                    .await?;
                let result: Result<(), sqlx::Error> = async {
                    conn.execute(
                        "CREATE TABLE IF NOT EXISTS advanced_token_migrations (
                            version BIGINT PRIMARY KEY, description TEXT NOT NULL, applied_at BIGINT NOT NULL)",
                    )
                    .await?;
                    for m in MIGRATIONS {
                        let done: Option<i64> = sqlx::query_scalar(
                            "SELECT version FROM advanced_token_migrations WHERE version = $1",
                        )
                        .bind(m.version)
                        .fetch_optional(&mut *conn)
                        .await?;
                        if done.is_some() {
                            continue;
                        }
                        let mut tx = sqlx::Connection::begin(&mut *conn).await?;
                        tx.execute(m.postgres).await?;
                        sqlx::query("INSERT INTO advanced_token_migrations (version, description, applied_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING")
                            .bind(m.version).bind(m.description).bind(now)
                            .execute(&mut *tx).await?;
                        tx.commit().await?;
                    }
                    Ok(())
                }
                .await;
                conn.execute("SELECT pg_advisory_unlock(7018141436911857262)")
                    .await?;
                result
            }
            #[cfg(feature = "mysql")]
            DbPool::MySql(p) => {
                let mut conn = p.acquire().await?;
                conn.execute("SELECT GET_LOCK('advanced_token_migrate', 60)")
                    .await?;
                let result: Result<(), sqlx::Error> = async {
                    conn.execute(
                        "CREATE TABLE IF NOT EXISTS advanced_token_migrations (
                            version BIGINT NOT NULL PRIMARY KEY, description VARCHAR(200) NOT NULL,
                            applied_at BIGINT NOT NULL) ENGINE = InnoDB",
                    )
                    .await?;
                    for m in MIGRATIONS {
                        let done: Option<i64> = sqlx::query_scalar(
                            "SELECT version FROM advanced_token_migrations WHERE version = ?",
                        )
                        .bind(m.version)
                        .fetch_optional(&mut *conn)
                        .await?;
                        if done.is_some() {
                            continue;
                        }
                        // MySQL commits DDL implicitly; the statements are
                        // idempotent, so a crash half-way is safe to re-run.
                        conn.execute(m.mysql).await?;
                        sqlx::query("INSERT IGNORE INTO advanced_token_migrations (version, description, applied_at) VALUES (?, ?, ?)")
                            .bind(m.version).bind(m.description).bind(now)
                            .execute(&mut *conn).await?;
                    }
                    Ok(())
                }
                .await;
                conn.execute("SELECT RELEASE_LOCK('advanced_token_migrate')")
                    .await?;
                result
            }
        }
    }

    // ----- users -----------------------------------------------------------

    /// Inserts a user. A taken username is reported by the database's
    /// unique index, never by a check-then-insert race. SQLite and
    /// PostgreSQL use `ON CONFLICT DO NOTHING` rather than a failing INSERT:
    /// sqlx 0.7's SQLite driver was seen to re-run a statement that failed
    /// with a constraint violation once the connection was next used.
    pub(crate) async fn create_user(
        &self,
        username: &str,
        hash: &str,
        now: i64,
    ) -> Result<i64, Error> {
        let inserted = match &self.pool {
            #[cfg(feature = "mysql")]
            DbPool::MySql(p) => {
                match sqlx::query("INSERT INTO advanced_token_users (username, password_hash, is_active, rotation_locked, created_at) VALUES (?, ?, TRUE, FALSE, ?)")
                    .bind(username)
                    .bind(hash)
                    .bind(now)
                    .execute(p)
                    .await
                {
                    Ok(_) => true,
                    Err(e) if is_unique_violation(&e) => false,
                    Err(e) => return Err(e.into()),
                }
            }
            #[allow(unreachable_patterns)]
            pool => on_pool!(pool, |p, q| {
                sqlx::query(&q("INSERT INTO advanced_token_users (username, password_hash, is_active, rotation_locked, created_at) \
                    VALUES ($1, $2, TRUE, FALSE, $3) ON CONFLICT (username) DO NOTHING"))
                    .bind(username)
                    .bind(hash)
                    .bind(now)
                    .execute(p)
                    .await?
                    .rows_affected()
                    == 1
            }),
        };
        if !inserted {
            return Err(Error::UsernameTaken(username.to_owned()));
        }
        self.user_id(username)
            .await?
            .ok_or_else(|| Error::UnknownUser(username.to_owned()))
    }

    pub(crate) async fn user_id(&self, username: &str) -> Result<Option<i64>, Error> {
        Ok(on_pool!(&self.pool, |p, q| {
            sqlx::query_scalar(&q(
                "SELECT id FROM advanced_token_users WHERE username = $1",
            ))
            .bind(username)
            .fetch_optional(p)
            .await?
        }))
    }

    pub(crate) async fn find_login(&self, username: &str) -> Result<Option<LoginRow>, Error> {
        Ok(on_pool!(&self.pool, |p, q| {
            sqlx::query(&q(
                "SELECT id, password_hash, is_active FROM advanced_token_users WHERE username = $1",
            ))
            .bind(username)
            .fetch_optional(p)
            .await?
            .map(|row| -> Result<LoginRow, sqlx::Error> {
                Ok(LoginRow {
                    id: row.try_get(0)?,
                    password_hash: row.try_get(1)?,
                    is_active: row.try_get(2)?,
                })
            })
            .transpose()?
        }))
    }

    /// Sets the password hash and deletes the user's tokens, atomically.
    /// Returns how many tokens went.
    pub(crate) async fn set_password(&self, username: &str, hash: &str) -> Result<u64, Error> {
        on_pool!(&self.pool, |p, q| {
            let mut tx = p.begin().await?;
            let updated = sqlx::query(&q(
                "UPDATE advanced_token_users SET password_hash = $1 WHERE username = $2",
            ))
            .bind(hash)
            .bind(username)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if updated == 0 {
                return Err(Error::UnknownUser(username.to_owned()));
            }
            let revoked = sqlx::query(&q("DELETE FROM advanced_token_tokens WHERE user_id IN (SELECT id FROM advanced_token_users WHERE username = $1)"))
                .bind(username)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            sqlx::query(BUMP).execute(&mut *tx).await?;
            tx.commit().await?;
            Ok(revoked)
        })
    }

    pub(crate) async fn set_active(&self, username: &str, active: bool) -> Result<(), Error> {
        let n = on_pool!(&self.pool, |p, q| {
            let mut tx = p.begin().await?;
            let n = sqlx::query(&q(
                "UPDATE advanced_token_users SET is_active = $1 WHERE username = $2",
            ))
            .bind(active)
            .bind(username)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            sqlx::query(BUMP).execute(&mut *tx).await?;
            tx.commit().await?;
            n
        });
        self.found(n, username).await
    }

    pub(crate) async fn set_rotation_locked(
        &self,
        username: &str,
        locked: bool,
    ) -> Result<(), Error> {
        let n = on_pool!(&self.pool, |p, q| {
            let mut tx = p.begin().await?;
            let n = sqlx::query(&q(
                "UPDATE advanced_token_users SET rotation_locked = $1 WHERE username = $2",
            ))
            .bind(locked)
            .bind(username)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            sqlx::query(BUMP).execute(&mut *tx).await?;
            tx.commit().await?;
            n
        });
        self.found(n, username).await
    }

    /// An UPDATE that matched no row: unknown user, unless MySQL reported 0
    /// because the value did not change.
    async fn found(&self, rows: u64, username: &str) -> Result<(), Error> {
        if rows > 0 || self.user_id(username).await?.is_some() {
            Ok(())
        } else {
            Err(Error::UnknownUser(username.to_owned()))
        }
    }

    /// Deletes a user; the foreign key's cascade deletes its tokens.
    pub(crate) async fn delete_user(&self, username: &str) -> Result<(), Error> {
        let n = on_pool!(&self.pool, |p, q| {
            let mut tx = p.begin().await?;
            let n = sqlx::query(&q("DELETE FROM advanced_token_users WHERE username = $1"))
                .bind(username)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            sqlx::query(BUMP).execute(&mut *tx).await?;
            tx.commit().await?;
            n
        });
        if n == 0 {
            return Err(Error::UnknownUser(username.to_owned()));
        }
        Ok(())
    }

    pub(crate) async fn list_users(&self, now: i64) -> Result<Vec<UserInfo>, Error> {
        Ok(on_pool!(&self.pool, |p, q| {
            let rows = sqlx::query(&q("SELECT u.id, u.username, u.is_active, u.rotation_locked, u.created_at, \
                (SELECT COUNT(*) FROM advanced_token_tokens t WHERE t.user_id = u.id AND (t.expires_at IS NULL OR t.expires_at > $1)) \
                FROM advanced_token_users u ORDER BY u.username"))
                .bind(now)
                .fetch_all(p)
                .await?;
            rows.iter()
                .map(|row| -> Result<UserInfo, sqlx::Error> {
                    Ok(UserInfo {
                        id: row.try_get(0)?,
                        username: row.try_get(1)?,
                        is_active: row.try_get(2)?,
                        rotation_locked: row.try_get(3)?,
                        created_at: row.try_get(4)?,
                        live_tokens: row.try_get(5)?,
                    })
                })
                .collect::<Result<Vec<_>, _>>()?
        }))
    }

    // ----- tokens ----------------------------------------------------------

    /// Stores a new token's digest, then deletes the user's least recently
    /// used tokens beyond `keep` (returning how many). The transaction first
    /// write-locks the user's row, so concurrent logins of one user take
    /// turns (on PostgreSQL's READ COMMITTED they would otherwise not see
    /// each other's new rows and could leave more than `keep`); on SQLite
    /// the same statement takes the write lock up front, so the transaction
    /// never has to upgrade a read lock ("database is locked").
    pub(crate) async fn insert_token(
        &self,
        user_id: i64,
        digest: &str,
        now: i64,
        expires_at: Option<i64>,
        keep: u32,
    ) -> Result<u64, Error> {
        let evicted = on_pool!(&self.pool, |p, q| {
            retry!(async {
                let mut tx = p.begin().await?;
                sqlx::query(&q("UPDATE advanced_token_users SET id = id WHERE id = $1"))
                    .bind(user_id)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query(&q("INSERT INTO advanced_token_tokens (user_id, digest, created_at, last_used_at, expires_at) VALUES ($1, $2, $3, $4, $5)"))
                    .bind(user_id)
                    .bind(digest)
                    .bind(now)
                    .bind(now)
                    .bind(expires_at)
                    .execute(&mut *tx)
                    .await?;
                // The oldest token to keep; everything less recently used goes.
                let cutoff: Option<(i64, i64)> = sqlx::query_as(&q("SELECT last_used_at, id FROM advanced_token_tokens \
                    WHERE user_id = $1 ORDER BY last_used_at DESC, id DESC LIMIT 1 OFFSET $2"))
                    .bind(user_id)
                    .bind(i64::from(keep) - 1)
                    .fetch_optional(&mut *tx)
                    .await?;
                let mut evicted = 0;
                if let Some((last_used, id)) = cutoff {
                    evicted = sqlx::query(&q("DELETE FROM advanced_token_tokens WHERE user_id = $1 \
                        AND (last_used_at < $2 OR (last_used_at = $3 AND id < $4))"))
                        .bind(user_id)
                        .bind(last_used)
                        .bind(last_used)
                        .bind(id)
                        .execute(&mut *tx)
                        .await?
                        .rows_affected();
                    if evicted > 0 {
                        sqlx::query(BUMP).execute(&mut *tx).await?;
                    }
                }
                tx.commit().await?;
                Ok::<u64, sqlx::Error>(evicted)
            }
            .await)?
        });
        Ok(evicted)
    }

    /// The token with this digest and its user: the guard's one query.
    pub(crate) async fn find_token(&self, digest: &str) -> Result<Option<TokenRow>, Error> {
        Ok(on_pool!(&self.pool, |p, q| {
            sqlx::query(&q(
                "SELECT t.id, t.user_id, u.username, u.is_active, u.rotation_locked, \
                t.created_at, t.last_used_at, t.expires_at \
                FROM advanced_token_tokens t JOIN advanced_token_users u ON u.id = t.user_id \
                WHERE t.digest = $1",
            ))
            .bind(digest)
            .fetch_optional(p)
            .await?
            .map(|row| -> Result<TokenRow, sqlx::Error> {
                Ok(TokenRow {
                    token_id: row.try_get(0)?,
                    user_id: row.try_get(1)?,
                    username: row.try_get(2)?,
                    is_active: row.try_get(3)?,
                    rotation_locked: row.try_get(4)?,
                    created_at: row.try_get(5)?,
                    last_used_at: row.try_get(6)?,
                    expires_at: row.try_get(7)?,
                })
            })
            .transpose()?
        }))
    }

    /// Records a use: `last_used_at` and, with sliding expiry, the new expiry.
    pub(crate) async fn touch_token(
        &self,
        token_id: i64,
        now: i64,
        expires_at: Option<i64>,
    ) -> Result<(), Error> {
        on_pool!(&self.pool, |p, q| {
            sqlx::query(&q(
                "UPDATE advanced_token_tokens SET last_used_at = $1, expires_at = $2 WHERE id = $3",
            ))
            .bind(now)
            .bind(expires_at)
            .bind(token_id)
            .execute(p)
            .await?;
        });
        Ok(())
    }

    pub(crate) async fn delete_token(&self, token_id: i64) -> Result<(), Error> {
        on_pool!(&self.pool, |p, q| {
            sqlx::query(&q("DELETE FROM advanced_token_tokens WHERE id = $1"))
                .bind(token_id)
                .execute(p)
                .await?;
        });
        Ok(())
    }

    /// Replaces a token's digest, if it still has the old one. Of several
    /// concurrent rotations of one token exactly one matches.
    pub(crate) async fn rotate_token(
        &self,
        token_id: i64,
        old_digest: &str,
        new_digest: &str,
        now: i64,
        expires_at: Option<i64>,
    ) -> Result<bool, Error> {
        let n = on_pool!(&self.pool, |p, q| {
            retry!(async {
            let mut tx = p.begin().await?;
            let n = sqlx::query(&q("UPDATE advanced_token_tokens SET digest = $1, created_at = $2, last_used_at = $3, expires_at = $4 \
                WHERE id = $5 AND digest = $6"))
                .bind(new_digest)
                .bind(now)
                .bind(now)
                .bind(expires_at)
                .bind(token_id)
                .bind(old_digest)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if n == 1 {
                sqlx::query(BUMP).execute(&mut *tx).await?;
            }
            tx.commit().await?;
            Ok::<u64, sqlx::Error>(n)
            }
            .await)?
        });
        Ok(n == 1)
    }

    /// Deletes every token of one user.
    pub(crate) async fn delete_user_tokens(&self, user_id: i64) -> Result<u64, Error> {
        Ok(on_pool!(&self.pool, |p, q| {
            retry!(
                async {
                    let mut tx = p.begin().await?;
                    let n = sqlx::query(&q("DELETE FROM advanced_token_tokens WHERE user_id = $1"))
                        .bind(user_id)
                        .execute(&mut *tx)
                        .await?
                        .rows_affected();
                    sqlx::query(BUMP).execute(&mut *tx).await?;
                    tx.commit().await?;
                    Ok::<u64, sqlx::Error>(n)
                }
                .await
            )?
        }))
    }

    pub(crate) async fn delete_all_tokens(&self) -> Result<u64, Error> {
        Ok(on_pool!(&self.pool, |p, _q| {
            let mut tx = p.begin().await?;
            let n = sqlx::query("DELETE FROM advanced_token_tokens")
                .execute(&mut *tx)
                .await?
                .rows_affected();
            sqlx::query(BUMP).execute(&mut *tx).await?;
            tx.commit().await?;
            n
        }))
    }

    /// The revocation counter: it moves whenever a token may have been
    /// revoked anywhere.
    pub(crate) async fn revocation_counter(&self) -> Result<i64, Error> {
        Ok(on_pool!(&self.pool, |p, _q| {
            sqlx::query_scalar("SELECT counter FROM advanced_token_revocations WHERE id = 1")
                .fetch_optional(p)
                .await?
                .unwrap_or(0)
        }))
    }

    pub(crate) async fn purge_expired(&self, now: i64) -> Result<u64, Error> {
        Ok(on_pool!(&self.pool, |p, q| {
            sqlx::query(&q("DELETE FROM advanced_token_tokens WHERE expires_at IS NOT NULL AND expires_at <= $1"))
                .bind(now)
                .execute(p)
                .await?
                .rows_affected()
        }))
    }

    pub(crate) async fn list_tokens(&self, user_id: i64) -> Result<Vec<TokenInfo>, Error> {
        Ok(on_pool!(&self.pool, |p, q| {
            let rows = sqlx::query(&q(
                "SELECT id, created_at, last_used_at, expires_at FROM advanced_token_tokens \
                WHERE user_id = $1 ORDER BY id",
            ))
            .bind(user_id)
            .fetch_all(p)
            .await?;
            rows.iter()
                .map(|row| -> Result<TokenInfo, sqlx::Error> {
                    Ok(TokenInfo {
                        id: row.try_get(0)?,
                        created_at: row.try_get(1)?,
                        last_used_at: row.try_get(2)?,
                        expires_at: row.try_get(3)?,
                    })
                })
                .collect::<Result<Vec<_>, _>>()?
        }))
    }
}

/// Failed logins within the throttling window, for one scope.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Failures {
    pub count: i64,
    pub oldest: Option<i64>,
}

impl Store {
    // ----- login throttling ------------------------------------------------

    /// Failures since `since` for a username digest and a client IP.
    pub(crate) async fn login_failures(
        &self,
        user: &str,
        ip: &str,
        since: i64,
    ) -> Result<(Failures, Failures), Error> {
        let rows: Vec<(String, i64, Option<i64>)> = on_pool!(&self.pool, |p, q| {
            sqlx::query_as(&q(
                "SELECT 'user', COUNT(*), MIN(failed_at) FROM advanced_token_login_failures \
                WHERE scope = 'user' AND subject = $1 AND failed_at > $2 \
                UNION ALL \
                SELECT 'ip', COUNT(*), MIN(failed_at) FROM advanced_token_login_failures \
                WHERE scope = 'ip' AND subject = $3 AND failed_at > $4",
            ))
            .bind(user)
            .bind(since)
            .bind(ip)
            .bind(since)
            .fetch_all(p)
            .await?
        });
        let mut out = (Failures::default(), Failures::default());
        for (scope, count, oldest) in rows {
            let f = Failures { count, oldest };
            if scope == "user" {
                out.0 = f;
            } else {
                out.1 = f;
            }
        }
        Ok(out)
    }

    /// Records one failed login for a username digest and, if known, an IP.
    pub(crate) async fn record_login_failure(
        &self,
        user: &str,
        ip: Option<&str>,
        now: i64,
    ) -> Result<(), Error> {
        on_pool!(&self.pool, |p, q| {
            match ip {
                Some(ip) => {
                    sqlx::query(&q(
                        "INSERT INTO advanced_token_login_failures (scope, subject, failed_at) \
                    VALUES ('user', $1, $2), ('ip', $3, $4)",
                    ))
                    .bind(user)
                    .bind(now)
                    .bind(ip)
                    .bind(now)
                    .execute(p)
                    .await?
                }
                None => {
                    sqlx::query(&q(
                        "INSERT INTO advanced_token_login_failures (scope, subject, failed_at) \
                    VALUES ('user', $1, $2)",
                    ))
                    .bind(user)
                    .bind(now)
                    .execute(p)
                    .await?
                }
            };
        });
        Ok(())
    }

    /// Forgets a username's failures (after a successful login).
    pub(crate) async fn clear_user_failures(&self, user: &str) -> Result<(), Error> {
        on_pool!(&self.pool, |p, q| {
            sqlx::query(&q(
                "DELETE FROM advanced_token_login_failures WHERE scope = 'user' AND subject = $1",
            ))
            .bind(user)
            .execute(p)
            .await?;
        });
        Ok(())
    }

    /// Deletes failures that have left every window.
    pub(crate) async fn prune_login_failures(&self, before: i64) -> Result<u64, Error> {
        Ok(on_pool!(&self.pool, |p, q| {
            sqlx::query(&q(
                "DELETE FROM advanced_token_login_failures WHERE failed_at <= $1",
            ))
            .bind(before)
            .execute(p)
            .await?
            .rows_affected()
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(feature = "mysql")]
    fn placeholders_become_question_marks() {
        assert_eq!(
            mysql_placeholders("SELECT a FROM t WHERE b = $1 AND c = $2 AND d = '$'"),
            "SELECT a FROM t WHERE b = ? AND c = ? AND d = '$'"
        );
        assert_eq!(mysql_placeholders("LIMIT $10"), "LIMIT ?");
    }

    #[test]
    fn backend_by_scheme() {
        assert_eq!(Backend::of_url("sqlite://x.db"), Some(Backend::Sqlite));
        assert_eq!(Backend::of_url("sqlite::memory:"), Some(Backend::Sqlite));
        assert_eq!(
            Backend::of_url("postgresql://h/db"),
            Some(Backend::Postgres)
        );
        assert_eq!(Backend::of_url("postgres://h/db"), Some(Backend::Postgres));
        assert_eq!(Backend::of_url("mariadb://h/db"), Some(Backend::MySql));
        assert_eq!(Backend::of_url("MySQL://h/db"), Some(Backend::MySql));
        assert_eq!(Backend::of_url("redis://h"), None);
        assert_eq!(Backend::of_url("nonsense"), None);
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact_url("postgres://bob:hunter2@db.example:5432/app"),
            "postgres://bob:***@db.example:5432/app"
        );
        assert_eq!(
            redact_url("mysql://root@127.0.0.1/test"),
            "mysql://root@127.0.0.1/test"
        );
        assert_eq!(
            redact_url("postgres://u:p@ss@h/db?x=1"),
            "postgres://u:***@h/db?x=1"
        );
        assert_eq!(
            redact_url("sqlite://a.db?mode=rwc"),
            "sqlite://a.db?mode=rwc"
        );
    }
}
