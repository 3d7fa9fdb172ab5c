//! The connection pool: one of sqlx's native pools, chosen at launch by the
//! URL's scheme, and the [`Store`] on top of it.

use std::sync::Arc;
use std::time::Duration;

use crate::backend::UserBackend;
use crate::config::UsersTable;
use crate::store::Store;

#[cfg(not(any(feature = "sqlite", feature = "postgres", feature = "mysql")))]
compile_error!(
    "rocket_advanced_token needs at least one of the features `sqlite`, `postgres`, `mysql`"
);

/// The crate's connection pool: one of sqlx's native pools, chosen at launch
/// by the scheme of `databases.advanced_token.url`, configured like any
/// `rocket_db_pools` database (`url`, `max_connections`, `connect_timeout`,
/// `idle_timeout`, `min_connections`).
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

/// Which backend a URL names, by its scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Backend {
    Sqlite,
    Postgres,
    MySql,
}

impl Backend {
    /// The backend a URL's scheme names.
    pub(crate) fn of_url(url: &str) -> Option<Backend> {
        let scheme = url.split(':').next()?.to_ascii_lowercase();
        match scheme.as_str() {
            "sqlite" => Some(Backend::Sqlite),
            "postgres" | "postgresql" => Some(Backend::Postgres),
            "mysql" | "mariadb" => Some(Backend::MySql),
            _ => None,
        }
    }

    /// `SQLite`, `PostgreSQL` or `MySQL`.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "SQLite",
            Backend::Postgres => "PostgreSQL",
            Backend::MySql => "MySQL",
        }
    }

    /// The Cargo feature that compiles it in.
    fn feature(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
            Backend::MySql => "mysql",
        }
    }
}

/// Query parameters that carry secrets in a database URL.
const SECRET_PARAMS: [&str; 2] = ["password", "sslpassword"];

/// The URL with any password (in the authority or the query) replaced by
/// `***`, for messages and logs.
/// The file of a SQLite URL (`sqlite://path?...` or `sqlite:path`), if it
/// names one (not `:memory:`).
pub(crate) fn sqlite_path(url: &str) -> Option<std::path::PathBuf> {
    let rest = url.strip_prefix("sqlite:")?;
    let rest = rest.strip_prefix("//").unwrap_or(rest);
    let path = rest.split('?').next().unwrap_or("");
    if path.is_empty() || path.starts_with(':') {
        return None;
    }
    Some(std::path::PathBuf::from(path))
}

/// A SQLite URL with a relative path made absolute against `base` (the
/// directory of the `Rocket.toml` that named it); other URLs unchanged.
pub(crate) fn resolve_sqlite_url(url: &str, base: &std::path::Path) -> String {
    match sqlite_path(url) {
        Some(path) if path.is_relative() => {
            let query = url.find('?').map_or("", |i| &url[i..]);
            format!("sqlite://{}{query}", base.join(path).display())
        }
        _ => url.to_owned(),
    }
}

pub(crate) fn redact_url(raw: &str) -> String {
    let Ok(mut url) = url::Url::parse(raw) else {
        return raw.to_owned();
    };
    if url.password().is_some() {
        let _ = url.set_password(Some("***"));
    }
    if url.query().is_some() {
        let pairs: Vec<(String, String)> = url
            .query_pairs()
            .map(|(k, v)| {
                let secret = SECRET_PARAMS.contains(&k.to_ascii_lowercase().as_str());
                (
                    k.into_owned(),
                    if secret { "***".into() } else { v.into_owned() },
                )
            })
            .collect();
        url.query_pairs_mut().clear().extend_pairs(pairs);
    }
    url.to_string()
}

impl DbPool {
    /// The backend's name: `SQLite`, `PostgreSQL` or `MySQL`.
    pub fn backend_name(&self) -> &'static str {
        self.backend().name()
    }

    pub(crate) fn backend(&self) -> Backend {
        match self {
            #[cfg(feature = "sqlite")]
            DbPool::Sqlite(_) => Backend::Sqlite,
            #[cfg(feature = "postgres")]
            DbPool::Postgres(_) => Backend::Postgres,
            #[cfg(feature = "mysql")]
            DbPool::MySql(_) => Backend::MySql,
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
        #[allow(unreachable_patterns)]
        match backend {
            #[cfg(feature = "sqlite")]
            Backend::Sqlite => Ok(DbPool::Sqlite(connect_sqlite(config).await?)),
            #[cfg(feature = "postgres")]
            Backend::Postgres => Ok(DbPool::Postgres(connect_postgres(config).await?)),
            #[cfg(feature = "mysql")]
            Backend::MySql => Ok(DbPool::MySql(connect_mysql(config).await?)),
            other => Err(sqlx::Error::Configuration(
                format!(
                    "{} support is not compiled in: enable the crate's `{}` feature",
                    other.name(),
                    other.feature()
                )
                .into(),
            )),
        }
    }

    /// The store on this pool; `app_users` when the users live in the
    /// app's table.
    pub(crate) fn store(&self, app_users: bool) -> Arc<dyn Store> {
        use crate::store::*;
        match self {
            #[cfg(feature = "sqlite")]
            DbPool::Sqlite(p) => Arc::new(sqlite::SqliteStore {
                pool: p.clone(),
                app_users,
            }),
            #[cfg(feature = "postgres")]
            DbPool::Postgres(p) => Arc::new(postgres::PgStore {
                pool: p.clone(),
                app_users,
            }),
            #[cfg(feature = "mysql")]
            DbPool::MySql(p) => Arc::new(mysql::MySqlStore {
                pool: p.clone(),
                app_users,
            }),
        }
    }

    /// The app's users table named in configuration, read through this pool.
    pub(crate) fn table_users(&self, table: &UsersTable) -> Arc<dyn UserBackend> {
        use crate::store::*;
        match self {
            #[cfg(feature = "sqlite")]
            DbPool::Sqlite(p) => on_sqlite(p.clone(), table),
            #[cfg(feature = "postgres")]
            DbPool::Postgres(p) => on_postgres(p.clone(), table),
            #[cfg(feature = "mysql")]
            DbPool::MySql(p) => on_mysql(p.clone(), table),
        }
    }

    /// The SQLite pool, if the database is SQLite: for the app's own
    /// queries on the same database.
    #[cfg(feature = "sqlite")]
    pub fn sqlite(&self) -> Option<&sqlx::SqlitePool> {
        match self {
            DbPool::Sqlite(p) => Some(p),
            #[allow(unreachable_patterns)]
            _ => None,
        }
    }

    /// The PostgreSQL pool, if the database is PostgreSQL.
    #[cfg(feature = "postgres")]
    pub fn postgres(&self) -> Option<&sqlx::PgPool> {
        match self {
            DbPool::Postgres(p) => Some(p),
            #[allow(unreachable_patterns)]
            _ => None,
        }
    }

    /// The MySQL pool, if the database is MySQL or MariaDB.
    #[cfg(feature = "mysql")]
    pub fn mysql(&self) -> Option<&sqlx::MySqlPool> {
        match self {
            DbPool::MySql(p) => Some(p),
            #[allow(unreachable_patterns)]
            _ => None,
        }
    }

    /// Closes every connection.
    pub async fn close(&self) {
        match self {
            #[cfg(feature = "sqlite")]
            DbPool::Sqlite(p) => p.close().await,
            #[cfg(feature = "postgres")]
            DbPool::Postgres(p) => p.close().await,
            #[cfg(feature = "mysql")]
            DbPool::MySql(p) => p.close().await,
        }
    }
}

#[cfg(feature = "sqlite")]
impl From<sqlx::SqlitePool> for DbPool {
    fn from(p: sqlx::SqlitePool) -> Self {
        DbPool::Sqlite(p)
    }
}

#[cfg(feature = "postgres")]
impl From<sqlx::PgPool> for DbPool {
    fn from(p: sqlx::PgPool) -> Self {
        DbPool::Postgres(p)
    }
}

#[cfg(feature = "mysql")]
impl From<sqlx::MySqlPool> for DbPool {
    fn from(p: sqlx::MySqlPool) -> Self {
        DbPool::MySql(p)
    }
}

/// The pool options every backend shares.
fn pool_options<DB: sqlx::Database>(
    config: &rocket_db_pools::Config,
) -> sqlx::pool::PoolOptions<DB> {
    sqlx::pool::PoolOptions::new()
        .max_connections(config.max_connections.max(1) as u32)
        .min_connections(config.min_connections.unwrap_or(0))
        .acquire_timeout(Duration::from_secs(config.connect_timeout))
        .idle_timeout(config.idle_timeout.map(Duration::from_secs))
}

#[cfg(feature = "sqlite")]
async fn connect_sqlite(config: &rocket_db_pools::Config) -> Result<sqlx::SqlitePool, sqlx::Error> {
    use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
    use sqlx::ConnectOptions;
    let mut opts: SqliteConnectOptions = config.url.parse()?;
    opts = opts
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .foreign_keys(true)
        .busy_timeout(Duration::from_secs(config.connect_timeout))
        .disable_statement_logging();
    for ext in config.extensions.iter().flatten() {
        opts = opts.extension(ext.clone());
    }
    pool_options(config).connect_with(opts).await
}

#[cfg(feature = "postgres")]
async fn connect_postgres(config: &rocket_db_pools::Config) -> Result<sqlx::PgPool, sqlx::Error> {
    use sqlx::postgres::PgConnectOptions;
    use sqlx::ConnectOptions;
    let opts: PgConnectOptions = config.url.parse()?;
    // No `extra_float_digits` startup parameter (the crate reads no
    // floats): pgbouncer refuses unknown startup parameters by default.
    let opts = opts.extra_float_digits(None).disable_statement_logging();
    refuse_transaction_pooling(&opts).await?;
    pool_options(config).connect_with(opts).await
}

/// Refuses a server that hands one backend to several clients, as pgbouncer
/// does with `pool_mode = transaction` or `statement`: sqlx 0.7 always
/// prepares named statements, which such a pooler mixes up between
/// clients (the wrong SQL could run with another client's parameters), and
/// LISTEN never hears a NOTIFY through it. Two connections take turns
/// asking for their backend's pid; on a server or a session pooler they
/// never share one. Plain queries (the simple protocol) survive any
/// pooler.
#[cfg(feature = "postgres")]
async fn refuse_transaction_pooling(
    opts: &sqlx::postgres::PgConnectOptions,
) -> Result<(), sqlx::Error> {
    use sqlx::{ConnectOptions, Connection, Executor, Row};
    let mut a = opts.connect().await?;
    let mut b = opts.connect().await?;
    let mut shared = false;
    for _ in 0..5 {
        let pa: i32 = a.fetch_one("SELECT pg_backend_pid()").await?.try_get(0)?;
        let pb: i32 = b.fetch_one("SELECT pg_backend_pid()").await?.try_get(0)?;
        shared |= pa == pb;
    }
    let _ = a.close().await;
    let _ = b.close().await;
    if shared {
        return Err(sqlx::Error::Configuration(
            "two connections were served by one PostgreSQL backend: a pooler in transaction or \
             statement mode (pgbouncer?) is in front of the database. Set `pool_mode = session` \
             for this database: sqlx's prepared statements cannot cross clients"
                .into(),
        ));
    }
    Ok(())
}

#[cfg(feature = "mysql")]
async fn connect_mysql(config: &rocket_db_pools::Config) -> Result<sqlx::MySqlPool, sqlx::Error> {
    use sqlx::mysql::MySqlConnectOptions;
    use sqlx::ConnectOptions;
    let url = match config.url.strip_prefix("mariadb:") {
        Some(rest) => format!("mysql:{rest}"),
        None => config.url.clone(),
    };
    let opts: MySqlConnectOptions = url.parse()?;
    pool_options(config)
        .after_connect(|conn, _| Box::pin(read_your_writes(conn)))
        .connect_with(opts.disable_statement_logging())
        .await
}

/// On a Galera node, makes every read of this connection wait until the
/// node has applied what the cluster committed before it (a token issued
/// through another node is then found at once). Detected at connect: a
/// plain MariaDB or MySQL server is left as it is.
#[cfg(feature = "mysql")]
async fn read_your_writes(conn: &mut sqlx::MySqlConnection) -> Result<(), sqlx::Error> {
    use sqlx::Executor;
    let wsrep: Option<(String, String)> = sqlx::query_as("SHOW VARIABLES LIKE 'wsrep_on'")
        .fetch_optional(&mut *conn)
        .await?;
    if wsrep.is_some_and(|(_, on)| on.eq_ignore_ascii_case("ON")) {
        conn.execute("SET SESSION wsrep_sync_wait = 1").await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_sqlite_paths_resolve_against_the_config_file() {
        let base = std::path::Path::new("/srv/app");
        assert_eq!(
            resolve_sqlite_url("sqlite://db.sqlite?mode=rwc", base),
            "sqlite:///srv/app/db.sqlite?mode=rwc"
        );
        assert_eq!(
            resolve_sqlite_url("sqlite:data/db.sqlite", base),
            "sqlite:///srv/app/data/db.sqlite"
        );
        assert_eq!(
            resolve_sqlite_url("sqlite:///abs/db.sqlite", base),
            "sqlite:///abs/db.sqlite"
        );
        assert_eq!(
            resolve_sqlite_url("sqlite::memory:", base),
            "sqlite::memory:"
        );
        assert_eq!(
            resolve_sqlite_url("postgres://h/db", base),
            "postgres://h/db"
        );
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
        let r = redact_url("postgres://u:p@ss@h/db?x=1");
        assert!(!r.contains("p@ss") && !r.contains(":p@"), "{r}");
        assert_eq!(
            redact_url("sqlite://a.db?mode=rwc"),
            "sqlite://a.db?mode=rwc"
        );
        let r = redact_url("postgres://u@h/db?sslmode=require&password=hunter2&sslpassword=k3y");
        assert!(!r.contains("hunter2") && !r.contains("k3y"), "{r}");
        assert!(r.contains("sslmode=require"), "{r}");
    }
}
