//! Reading a Django database: `auth_user`, DRF's `authtoken_token` and the
//! drf_advanced_token package's `drf_advanced_token_userapikeylock`, as
//! streams of rows (never loaded whole). Opened read-only where the backend
//! allows it (SQLite); only `SELECT`s are sent.

use std::time::Duration;

use rocket::futures::stream::BoxStream;
use sqlx::{Database, Executor, FromRow, IntoArguments, Pool};

use crate::error::Error;
use crate::pool::{redact_url, Backend};

/// One user with the user's DRF token (at most one: `user_id` is unique in
/// `authtoken_token`) and lock: username, password, is_active (0/1),
/// date_joined and the key's `created` (Unix seconds), the key, locked (0/1).
pub(crate) type DjangoRow = (
    String,
    String,
    i64,
    Option<i64>,
    Option<String>,
    Option<i64>,
    i64,
);

/// What differs between backends in the `SELECT`: Unix seconds from a
/// `DateTimeField`, and flags as 64-bit integers (each driver decodes
/// BIGINT alike).
struct Dialect {
    active: &'static str,
    joined: &'static str,
    created: &'static str,
    locked: &'static str,
    no_lock: &'static str,
}

/// Django's SQLite backend stores datetimes as ISO text, in UTC when
/// `USE_TZ` is on (the default).
#[cfg(feature = "sqlite")]
const SQLITE: Dialect = Dialect {
    active: "CAST(u.is_active AS INTEGER)",
    joined: "CAST(strftime('%s', u.date_joined) AS INTEGER)",
    created: "CAST(strftime('%s', t.created) AS INTEGER)",
    locked: "CASE WHEN l.user_id IS NULL THEN 0 ELSE 1 END",
    no_lock: "0",
};

/// `timestamp with time zone` columns.
#[cfg(feature = "postgres")]
const POSTGRES: Dialect = Dialect {
    active: "CAST(CAST(u.is_active AS INTEGER) AS BIGINT)",
    joined: "CAST(FLOOR(EXTRACT(EPOCH FROM u.date_joined)) AS BIGINT)",
    created: "CAST(FLOOR(EXTRACT(EPOCH FROM t.created)) AS BIGINT)",
    locked: "CAST(CASE WHEN l.user_id IS NULL THEN 0 ELSE 1 END AS BIGINT)",
    no_lock: "CAST(0 AS BIGINT)",
};

/// `datetime(6)` columns holding UTC (Django with `USE_TZ`); counted from
/// the epoch without the session's time zone.
#[cfg(feature = "mysql")]
const MYSQL: Dialect = Dialect {
    active: "CAST(u.is_active AS SIGNED)",
    joined: "TIMESTAMPDIFF(SECOND, '1970-01-01 00:00:00', u.date_joined)",
    created: "TIMESTAMPDIFF(SECOND, '1970-01-01 00:00:00', t.created)",
    locked: "CAST(CASE WHEN l.user_id IS NULL THEN 0 ELSE 1 END AS SIGNED)",
    no_lock: "CAST(0 AS SIGNED)",
};

/// Which of the optional tables the Django database has.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Tables {
    pub tokens: bool,
    pub locks: bool,
}

/// A Django database, opened by URL scheme.
pub(crate) enum Source {
    #[cfg(feature = "sqlite")]
    Sqlite(sqlx::SqlitePool),
    #[cfg(feature = "postgres")]
    Postgres(sqlx::PgPool),
    #[cfg(feature = "mysql")]
    MySql(sqlx::MySqlPool),
}

/// The error for a Django database that cannot be read.
pub(crate) fn read_error(e: sqlx::Error) -> Error {
    Error::Config(format!("cannot read the Django database: {}", one_line(&e)))
}

fn one_line(e: &dyn std::fmt::Display) -> String {
    e.to_string()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

fn pool_options<DB: Database>() -> sqlx::pool::PoolOptions<DB> {
    sqlx::pool::PoolOptions::new()
        .max_connections(2)
        .acquire_timeout(Duration::from_secs(10))
}

/// Streams the rows of `sql` (any backend: the rows are tuples).
fn fetch<'a, DB, T>(pool: &'a Pool<DB>, sql: &'a str) -> BoxStream<'a, Result<T, sqlx::Error>>
where
    DB: Database,
    T: for<'r> FromRow<'r, DB::Row> + Send + Unpin + 'a,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> <DB as sqlx::database::HasArguments<'q>>::Arguments: IntoArguments<'q, DB>,
{
    sqlx::query_as::<DB, T>(sql).fetch(pool)
}

impl Source {
    /// Opens the database `url` names (`sqlite:`, `postgres:`,
    /// `postgresql:`, `mysql:`, `mariadb:`).
    pub(crate) async fn open(url: &str) -> Result<Source, Error> {
        let shown = redact_url(url);
        let fail = |e: sqlx::Error| {
            Error::Config(format!(
                "cannot open the Django database at {shown}: {}",
                one_line(&e)
            ))
        };
        #[allow(unreachable_patterns)]
        match Backend::of_url(url) {
            #[cfg(feature = "sqlite")]
            Some(Backend::Sqlite) => {
                let opts = url
                    .parse::<sqlx::sqlite::SqliteConnectOptions>()
                    .map_err(fail)?
                    .read_only(true);
                let pool = pool_options().connect_with(opts).await.map_err(fail)?;
                Ok(Source::Sqlite(pool))
            }
            #[cfg(feature = "postgres")]
            Some(Backend::Postgres) => Ok(Source::Postgres(
                pool_options().connect(url).await.map_err(fail)?,
            )),
            #[cfg(feature = "mysql")]
            Some(Backend::MySql) => {
                let url = url.replacen("mariadb:", "mysql:", 1);
                Ok(Source::MySql(
                    pool_options().connect(&url).await.map_err(fail)?,
                ))
            }
            _ => Err(Error::Config(format!(
                "{shown:?} is not a database URL the import can read: use sqlite:, postgres:, postgresql:, mysql: or mariadb:"
            ))),
        }
    }

    /// Whether `table` exists (in the current schema or database).
    async fn exists(&self, table: &str) -> Result<bool, sqlx::Error> {
        let n: i64 = match self {
            #[cfg(feature = "sqlite")]
            Source::Sqlite(p) => {
                sqlx::query_scalar(
                    "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = ?1",
                )
                .bind(table)
                .fetch_one(p)
                .await?
            }
            #[cfg(feature = "postgres")]
            Source::Postgres(p) => {
                sqlx::query_scalar(
                    "SELECT COUNT(*) FROM information_schema.tables \
                     WHERE table_schema = current_schema() AND table_name = $1",
                )
                .bind(table)
                .fetch_one(p)
                .await?
            }
            #[cfg(feature = "mysql")]
            Source::MySql(p) => {
                sqlx::query_scalar(
                    "SELECT COUNT(*) FROM information_schema.tables \
                     WHERE table_schema = DATABASE() AND table_name = ?",
                )
                .bind(table)
                .fetch_one(p)
                .await?
            }
        };
        Ok(n > 0)
    }

    /// The optional tables present; an error without `auth_user`.
    pub(crate) async fn tables(&self) -> Result<Tables, Error> {
        if !self.exists("auth_user").await.map_err(read_error)? {
            return Err(Error::Config(
                "the Django database has no auth_user table (is it the right database, migrated?)"
                    .into(),
            ));
        }
        Ok(Tables {
            tokens: self.exists("authtoken_token").await.map_err(read_error)?,
            locks: self
                .exists("drf_advanced_token_userapikeylock")
                .await
                .map_err(read_error)?,
        })
    }

    fn dialect(&self) -> &'static Dialect {
        match self {
            #[cfg(feature = "sqlite")]
            Source::Sqlite(_) => &SQLITE,
            #[cfg(feature = "postgres")]
            Source::Postgres(_) => &POSTGRES,
            #[cfg(feature = "mysql")]
            Source::MySql(_) => &MYSQL,
        }
    }

    /// The `SELECT` of every user with token and lock, in `id` order.
    pub(crate) fn users_sql(&self, tables: Tables) -> String {
        let d = self.dialect();
        let (key, created, tokens) = if tables.tokens {
            let join = "LEFT JOIN authtoken_token t ON t.user_id = u.id";
            ("t.key", d.created, join)
        } else {
            ("NULL", "NULL", "")
        };
        let (locked, locks) = if tables.locks {
            let join = "LEFT JOIN drf_advanced_token_userapikeylock l ON l.user_id = u.id";
            (d.locked, join)
        } else {
            (d.no_lock, "")
        };
        format!(
            "SELECT u.username, u.password, {}, {}, {key}, {created}, {locked} \
             FROM auth_user u {tokens} {locks} ORDER BY u.id",
            d.active, d.joined
        )
    }

    /// Streams `(username, password)` of every user, for the check that
    /// runs before anything is written.
    pub(crate) fn hashes(&self) -> BoxStream<'_, Result<(String, String), sqlx::Error>> {
        let sql = "SELECT username, password FROM auth_user ORDER BY id";
        match self {
            #[cfg(feature = "sqlite")]
            Source::Sqlite(p) => fetch(p, sql),
            #[cfg(feature = "postgres")]
            Source::Postgres(p) => fetch(p, sql),
            #[cfg(feature = "mysql")]
            Source::MySql(p) => fetch(p, sql),
        }
    }

    /// Streams the rows of [`Source::users_sql`].
    pub(crate) fn users<'a>(
        &'a self,
        sql: &'a str,
    ) -> BoxStream<'a, Result<DjangoRow, sqlx::Error>> {
        match self {
            #[cfg(feature = "sqlite")]
            Source::Sqlite(p) => fetch(p, sql),
            #[cfg(feature = "postgres")]
            Source::Postgres(p) => fetch(p, sql),
            #[cfg(feature = "mysql")]
            Source::MySql(p) => fetch(p, sql),
        }
    }

    pub(crate) async fn close(&self) {
        match self {
            #[cfg(feature = "sqlite")]
            Source::Sqlite(p) => p.close().await,
            #[cfg(feature = "postgres")]
            Source::Postgres(p) => p.close().await,
            #[cfg(feature = "mysql")]
            Source::MySql(p) => p.close().await,
        }
    }
}
