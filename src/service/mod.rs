//! [`AdvancedToken`]: the managed state behind the guard and the routes, and
//! the library functions the command line is built on. Split by concern:
//! `login` (throttle, verify, issue), `tokens` (authenticate, rotate,
//! revoke), `users` (administration), `sync` (the cache's background
//! tasks), `throttle` (the in-process admission of login attempts).

use std::future::Future;
use std::sync::atomic::AtomicI64;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rocket::figment::providers::Serialized;
use rocket::figment::{Figment, Source};

use crate::audit::{emit, AuditEvent, AuditHook};
use crate::backend::UserBackend;
use crate::cache::TokenCache;
use crate::config::{describe_figment_error, Config};
use crate::error::Error;
use crate::password::Hasher;
use crate::pool::{redact_url, resolve_sqlite_url, sqlite_path, Backend, DbPool};
use crate::store::Store;

mod ip;
mod login;
mod sync;
mod throttle;
mod tokens;
mod users;

pub use tokens::{AuthUser, Session};
pub use users::User;

/// How a handle is opened: by the fairing (serving, maybe with the app's
/// users or pool), by [`AdvancedToken::connect`], or by a test.
#[derive(Default, Clone)]
pub(crate) struct Options {
    pub clock: Option<Clock>,
    /// The app's users, from [`crate::TokenFairing::users`].
    pub users: Option<Arc<dyn UserBackend>>,
    /// The app's own pool, shared (from [`crate::TokenFairing::database`]),
    /// and the name of its `databases.<name>` section.
    pub pool: Option<(DbPool, &'static str)>,
    /// In a server: the token cache (if configured) and its tasks.
    pub serve: bool,
    /// The app's audit hook, from [`crate::TokenFairing::on_audit`].
    pub audit: Option<AuditHook>,
    /// The app's password rule, from [`crate::TokenFairing::password_policy`].
    pub policy: Option<PasswordRule>,
}

/// The app's own password rule: `Err(reason)` refuses a new password.
pub(crate) type PasswordRule = Arc<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

/// A source of the current time in Unix seconds.
pub(crate) type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

fn system_clock() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// The plugin: its fairing, and a handle on its database for your own code.
///
/// Attach [`AdvancedToken::fairing()`] to your Rocket. Once launched, the
/// handle is managed state, so handlers can take `&State<AdvancedToken>` (or
/// `&AdvancedToken`) and call the same functions the `advanced-token`
/// command line uses, e.g. to build a signup endpoint:
///
/// ```rust,no_run
/// # use rocket::{post, serde::json::Json};
/// use rocket_advanced_token::{AdvancedToken, Error};
///
/// #[post("/signup", data = "<form>")]
/// async fn signup(at: &AdvancedToken, form: Json<(String, String)>) -> Result<Json<String>, Error> {
///     let (username, password) = form.into_inner();
///     at.create_user(&username, &password).await?;
///     Ok(Json(at.login(&username, &password).await?))
/// }
/// ```
///
/// Outside Rocket (scripts, other binaries), [`AdvancedToken::connect()`]
/// opens the same database from the same configuration.
#[derive(Clone)]
pub struct AdvancedToken {
    inner: Arc<Inner>,
}

struct Inner {
    config: Config,
    pool: DbPool,
    store: Arc<dyn Store>,
    /// The app's users, when they are not in the crate's table.
    users: Option<Arc<dyn UserBackend>>,
    hasher: Hasher,
    clock: Clock,
    database: String,
    /// The most a database call may take: the pool's `connect_timeout`.
    /// Past it the call fails with [`Error::Unavailable`] (503), never a hang.
    db_timeout: Duration,
    /// When this process last pruned old login failures.
    last_prune: AtomicI64,
    /// Verified tokens, when `token_cache` is on (and in a server).
    cache: Option<TokenCache>,
    /// Login attempts under way in this process, per username and per IP.
    in_flight: throttle::InFlight,
    /// Users refused a rotation, and until when they still would be.
    rotations_refused: tokens::Refusals,
    audit: Option<AuditHook>,
    policy: Option<PasswordRule>,
    /// The SQLite file this handle created, if it did (absolute).
    new_file: Option<std::path::PathBuf>,
}

impl std::fmt::Debug for AdvancedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdvancedToken")
            .field("config", &self.inner.config)
            .field("database", &self.inner.database)
            .finish()
    }
}

/// `path` made absolute against the current directory.
fn absolute(path: std::path::PathBuf) -> std::path::PathBuf {
    match std::env::current_dir() {
        Ok(dir) if path.is_relative() => dir.join(path),
        _ => path,
    }
}

/// The `rocket_db_pools` configuration of `databases.<name>`, with the
/// crate's defaults.
fn database_config(figment: &Figment, name: &str) -> Result<rocket_db_pools::Config, Error> {
    let workers: usize = figment
        .extract_inner(rocket::Config::WORKERS)
        .unwrap_or_else(|_| rocket::Config::default().workers);
    let db_key = format!("databases.{name}");
    if !figment.contains(&format!("{db_key}.url")) {
        return Err(Error::Config(format!(
            "{db_key}.url: missing; set it in Rocket.toml ([default.{db_key}] url = \"sqlite://advanced_token.sqlite?mode=rwc\") or ROCKET_DATABASES='{{{name}={{url=\"...\"}}}}'"
        )));
    }
    let mut config: rocket_db_pools::Config = figment
        .focus(&db_key)
        .join(Serialized::default("max_connections", workers * 4))
        .join(Serialized::default("connect_timeout", 5))
        .extract()
        .map_err(|e| Error::Config(describe_figment_error(e, &db_key)))?;
    // A relative SQLite path in a Rocket.toml is relative to that file, not
    // to wherever the server or the command line was started.
    let source = figment.find_metadata(&format!("{db_key}.url"));
    if let Some(Source::File(file)) = source.and_then(|m| m.source.as_ref()) {
        if let Some(dir) = file.parent() {
            config.url = resolve_sqlite_url(&config.url, dir);
        }
    }
    if Backend::of_url(&config.url).is_none() {
        return Err(Error::Config(format!(
            "{db_key}.url: unsupported scheme in {:?}; use sqlite:, postgres:, postgresql:, mysql: or mariadb:",
            redact_url(&config.url)
        )));
    }
    Ok(config)
}

impl AdvancedToken {
    /// Opens the database named by a Rocket figment (`advanced_token` and
    /// `databases.advanced_token`, exactly as the fairing does), runs the
    /// migrations, and returns a handle. The command line uses this with
    /// `rocket::Config::figment()`, so it sees what the server sees.
    pub async fn connect(figment: &Figment) -> Result<AdvancedToken, Error> {
        Self::open(figment, Options::default()).await
    }

    /// Opens the database (or takes the app's pool), runs the migrations,
    /// and with `serve` starts the token cache and its tasks.
    pub(crate) async fn open(figment: &Figment, opts: Options) -> Result<AdvancedToken, Error> {
        let config = Config::from_figment(figment).map_err(Error::Config)?;
        let name = opts.pool.as_ref().map_or(config.database.as_str(), |p| p.1);
        let db = database_config(figment, name)?;
        let url = redact_url(&db.url);
        let new_file = sqlite_path(&db.url).filter(|p| opts.pool.is_none() && !p.exists());
        let pool = match opts.pool {
            Some((pool, _)) => pool,
            None => DbPool::connect(&db)
                .await
                .map_err(|e| Error::Config(format!("cannot open the database at {url}: {e}")))?,
        };
        let clock = opts.clock.unwrap_or_else(|| Arc::new(system_clock));
        let users = opts
            .users
            .or_else(|| config.users.as_ref().map(|t| pool.table_users(t)));
        let store = pool.store(users.is_some());
        if let Err(e) = store.migrate(clock()).await {
            pool.close().await;
            return Err(Error::Config(format!(
                "cannot run the advanced_token migrations on {url}: {e}"
            )));
        }
        let cache = (opts.serve && config.token_cache).then(|| {
            TokenCache::new(
                config.token_cache_capacity,
                Duration::from_secs_f64(config.token_cache_poll),
                Duration::from_secs(config.token_cache_ttl),
            )
        });
        let at = AdvancedToken {
            inner: Arc::new(Inner {
                hasher: Hasher::new(config.hash_permits()),
                config,
                pool,
                store,
                users,
                clock,
                database: url,
                db_timeout: Duration::from_secs(db.connect_timeout.max(1)),
                last_prune: AtomicI64::new(0),
                cache,
                in_flight: throttle::InFlight::default(),
                rotations_refused: tokens::Refusals::default(),
                audit: opts.audit,
                policy: opts.policy,
                new_file: new_file.map(absolute),
            }),
        };
        at.start_background_tasks().await;
        Ok(at)
    }

    /// The SQLite database file opening this handle created (absolute), if
    /// it did: the command line and the fairing say so, so that a database
    /// made in the wrong directory does not go unnoticed.
    pub fn created_database_file(&self) -> Option<&std::path::Path> {
        self.inner.new_file.as_deref()
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// The database pool, for apps that want to query the crate's tables.
    pub fn pool(&self) -> &DbPool {
        &self.inner.pool
    }

    /// The database URL, with any password masked.
    pub fn database(&self) -> &str {
        &self.inner.database
    }

    /// Closes the database pool.
    pub async fn close(&self) {
        self.inner.store.close().await
    }

    /// How many argon2 operations this process has started (for tests that
    /// prove one did or did not run).
    #[cfg(feature = "test-hooks")]
    #[doc(hidden)]
    pub fn password_operations(&self) -> u64 {
        self.inner.hasher.operations()
    }

    pub(crate) fn now(&self) -> i64 {
        (self.inner.clock)()
    }

    /// Runs a call into the app's [`UserBackend`] with the same deadline as
    /// [`AdvancedToken::db`].
    async fn bounded<T>(&self, call: impl Future<Output = Result<T, Error>>) -> Result<T, Error> {
        match rocket::tokio::time::timeout(self.inner.db_timeout, call).await {
            Ok(result) => result,
            Err(_elapsed) => Err(Error::Unavailable(None)),
        }
    }

    /// Every database call goes through here: the store is reachable no
    /// other way. The call gets the `connect_timeout` deadline (a hung
    /// database answers 503, never hangs a request or a command), and its
    /// error becomes an [`Error`] that keeps the sqlx error as its source.
    pub(crate) async fn db<'a, T, F, Fut>(&'a self, call: F) -> Result<T, Error>
    where
        F: FnOnce(&'a dyn Store) -> Fut,
        Fut: Future<Output = Result<T, sqlx::Error>>,
    {
        match rocket::tokio::time::timeout(self.inner.db_timeout, call(&*self.inner.store)).await {
            Ok(result) => result.map_err(Error::from),
            Err(_elapsed) => Err(Error::Unavailable(None)),
        }
    }

    /// The app's users, when they live in the app's table.
    fn app_users(&self) -> Option<&dyn UserBackend> {
        self.inner.users.as_deref()
    }

    /// [`Error::Config`] for what only the crate's own users table allows.
    fn builtin_only(&self, what: &str) -> Result<(), Error> {
        match self.app_users() {
            None => Ok(()),
            Some(_) => Err(Error::Config(format!(
                "{what} is not available when users live in the app's own table: change the app's table instead"
            ))),
        }
    }

    /// Tells every instance that a user (or their tokens) changed behind
    /// the crate's back, e.g. the app's own SQL deactivated, deleted or
    /// edited the user in its table: cached tokens are read again, here at
    /// once and on every other instance within `token_cache_poll`.
    pub async fn user_changed(&self, id: impl Into<crate::UserId>) -> Result<(), Error> {
        let id = id.into();
        let logged = self.db(|s| s.user_changed(&id)).await;
        self.forget_user(&id);
        logged
    }

    /// Whether audit events go anywhere: the log target is enabled, or
    /// the app has a hook.
    fn audit_wanted(&self) -> bool {
        self.inner.audit.is_some()
            || log::log_enabled!(target: crate::audit::AUDIT_TARGET, log::Level::Info)
    }

    /// Logs an audit event and hands it to the app's hook.
    fn audit(&self, event: AuditEvent) {
        emit(self.inner.audit.as_ref(), event);
    }

    fn cache(&self) -> Option<&TokenCache> {
        self.inner.cache.as_ref()
    }

    /// Drops one user's cached tokens (after a revocation by this process;
    /// other instances read it from the revocation log).
    fn forget_user(&self, id: &crate::UserId) {
        if let Some(cache) = self.cache() {
            cache.revoke_user(id);
        }
    }

    /// Drops every cached token (after a revocation by this process).
    pub(crate) fn forget_all(&self) {
        if let Some(cache) = self.cache() {
            cache.invalidate_all();
        }
    }

    pub(crate) fn expiry_from(&self, now: i64) -> Option<i64> {
        self.config()
            .token_ttl
            .map(|ttl| now.saturating_add(ttl as i64))
    }
}
