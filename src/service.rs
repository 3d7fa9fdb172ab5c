//! [`AdvancedToken`]: the managed state behind the guard and the routes, and
//! the library functions the command line is built on.

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rocket::fairing::Fairing;
use rocket::figment::providers::Serialized;
use rocket::figment::Figment;
use rocket::tokio::sync::Notify;

use crate::cache::TokenCache;
use crate::config::{describe_figment_error, Config};
use crate::fairing::TokenFairing;
use crate::password::Hasher;
use crate::store::{redact_url, Backend, Store, TokenRow};
use crate::{token, AuthUser, DbPool, Error, TokenInfo, UserInfo};

/// Writes of `last_used_at` (and of a sliding expiry) happen at most this
/// often per token, so the guard's hot path is one read.
pub(crate) const TOUCH_INTERVAL: i64 = 60;

/// The longest username accepted, as in Django.
const MAX_USERNAME_CHARS: usize = 150;
/// The longest password accepted (bytes).
const MAX_PASSWORD_BYTES: usize = 1024;

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
    store: Store,
    hasher: Hasher,
    clock: Clock,
    database: String,
    /// The most a database call on the request path may take: the pool's
    /// `connect_timeout`. Past it the request gets 503, never a hang.
    db_timeout: Duration,
    /// When this process last pruned old login failures.
    last_prune: AtomicI64,
    /// The database URL, unredacted, for the PostgreSQL listener.
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    url: String,
    /// Verified tokens, when `token_cache` is on (and in a server).
    cache: Option<TokenCache>,
    /// Login attempts under way in this process, per username and per IP.
    in_flight: InFlight,
}

/// Login attempts under way in this process, per key (username digest or
/// IP), so that concurrent attempts count against the failure limit before
/// they have failed. A key's state lives only while someone uses it.
#[derive(Debug, Default)]
struct InFlight(std::sync::Mutex<HashMap<String, Arc<Slots>>>);

#[derive(Debug, Default)]
struct Slots {
    /// Attempts admitted and not finished, and how many have finished.
    state: std::sync::Mutex<(i64, u64)>,
    finished: Notify,
}

/// One admitted attempt; frees its slot, and forgets an idle key, on drop.
struct Slot<'a> {
    map: &'a InFlight,
    key: String,
    slots: Arc<Slots>,
    admitted: bool,
}

impl InFlight {
    /// Waits until `failures + attempts under way < max`, where `failures`
    /// (read from the database by `count`, which also answers `Throttled`)
    /// is re-read whenever an attempt finished in the meantime. So of any
    /// burst, at most `max` minus the recorded failures reach argon2 at
    /// once, and each later one sees their failures.
    /// Returns the slot and the failures it was admitted with.
    async fn admit<F, Fut>(&self, key: String, max: u32, count: F) -> Result<(Slot<'_>, i64), Error>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<i64, Error>>,
    {
        let slots = {
            // Every `Slot` removes its key when it is the last user, on
            // drop (cancelled waits included), so the map holds only keys
            // in use.
            let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
            map.entry(key.clone()).or_default().clone()
        };
        let mut slot = Slot {
            map: self,
            key,
            slots,
            admitted: false,
        };
        // Declared after `slot`, so dropped before it on an early return.
        let slots = slot.slots.clone();
        let lock = || slots.state.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            let seen = lock().1;
            let failures = count().await?;
            let notified = slots.finished.notified();
            rocket::tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut state = lock();
                if state.1 != seen {
                    continue; // someone finished while we counted
                }
                if failures + state.0 < i64::from(max) {
                    state.0 += 1;
                    drop(state);
                    slot.admitted = true;
                    return Ok((slot, failures));
                }
            }
            notified.await;
        }
    }
}

impl Slot<'_> {
    fn lock(&self) -> std::sync::MutexGuard<'_, (i64, u64)> {
        self.slots.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        if self.admitted {
            let mut state = self.lock();
            state.0 -= 1;
            state.1 += 1;
            drop(state);
            self.slots.finished.notify_waiters();
        }
        let mut map = self.map.0.lock().unwrap_or_else(|e| e.into_inner());
        // Held only by the map and by this slot: nobody else wants it.
        if Arc::strong_count(&self.slots) == 2 {
            map.remove(&self.key);
        }
    }
}

/// How often (seconds) a process prunes login failures that left the window.
const PRUNE_INTERVAL: i64 = 60;

impl std::fmt::Debug for AdvancedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdvancedToken")
            .field("config", &self.inner.config)
            .field("database", &self.inner.database)
            .finish()
    }
}

impl AdvancedToken {
    /// The fairing to attach: it reads [`Config`] from the `advanced_token`
    /// section of Rocket's configuration, opens the database configured as
    /// `databases.advanced_token`, runs the crate's migrations and manages an
    /// `AdvancedToken`. Bad configuration or an unreachable database abort
    /// launch with a message that names the key or the host.
    pub fn fairing() -> impl Fairing {
        TokenFairing { clock: None }
    }

    /// [`AdvancedToken::fairing()`] with a fake clock (Unix seconds), for
    /// tests of expiry.
    #[doc(hidden)]
    pub fn fairing_with_clock(clock: Arc<dyn Fn() -> i64 + Send + Sync>) -> impl Fairing {
        TokenFairing { clock: Some(clock) }
    }

    /// Opens the database named by a Rocket figment (`advanced_token` and
    /// `databases.advanced_token`, exactly as the fairing does), runs the
    /// migrations, and returns a handle. The command line uses this with
    /// `rocket::Config::figment()`, so it sees what the server sees.
    pub async fn connect(figment: &Figment) -> Result<AdvancedToken, Error> {
        Self::open(figment, None, false).await
    }

    /// Opens the database; `serve` adds the token cache (if configured) and
    /// its revocation poll.
    pub(crate) async fn open(
        figment: &Figment,
        clock: Option<Clock>,
        serve: bool,
    ) -> Result<AdvancedToken, Error> {
        let config = Config::from_figment(figment).map_err(Error::Config)?;

        let workers: usize = figment
            .extract_inner(rocket::Config::WORKERS)
            .unwrap_or_else(|_| rocket::Config::default().workers);
        let db_key = "databases.advanced_token";
        if !figment.contains(&format!("{db_key}.url")) {
            return Err(Error::Config(format!(
                "{db_key}.url: missing; set it in Rocket.toml ([default.databases.advanced_token] url = \"sqlite://advanced_token.sqlite?mode=rwc\") or ROCKET_DATABASES='{{advanced_token={{url=\"...\"}}}}'"
            )));
        }
        let db_config: rocket_db_pools::Config = figment
            .focus(db_key)
            .join(Serialized::default("max_connections", workers * 4))
            .join(Serialized::default("connect_timeout", 5))
            .extract()
            .map_err(|e| Error::Config(describe_figment_error(e, db_key)))?;
        let url = redact_url(&db_config.url);
        if Backend::of_url(&db_config.url).is_none() {
            return Err(Error::Config(format!(
                "{db_key}.url: unsupported scheme in {url:?}; use sqlite:, postgres:, postgresql:, mysql: or mariadb:"
            )));
        }
        let pool = DbPool::connect(&db_config)
            .await
            .map_err(|e| Error::Config(format!("cannot open the database at {url}: {e}")))?;
        let clock = clock.unwrap_or_else(|| Arc::new(system_clock));
        let store = Store { pool };
        if let Err(e) = store.migrate(clock()).await {
            store.pool.close().await;
            return Err(Error::Config(format!(
                "cannot run the advanced_token migrations on {url}: {e}"
            )));
        }
        let cache = (serve && config.token_cache).then(|| {
            TokenCache::new(
                config.token_cache_capacity,
                Duration::from_secs_f64(config.token_cache_poll),
            )
        });
        let at = AdvancedToken {
            inner: Arc::new(Inner {
                hasher: Hasher::new(config.hash_permits()),
                config,
                store,
                clock,
                database: url,
                db_timeout: Duration::from_secs(db_config.connect_timeout.max(1)),
                last_prune: AtomicI64::new(0),
                url: db_config.url.clone(),
                cache,
                in_flight: InFlight::default(),
            }),
        };
        if at.inner.cache.is_some() {
            at.start_revocation_poll().await;
        }
        Ok(at)
    }

    /// Reads the revocation counter now, then every `token_cache_poll` in the
    /// background, dropping the cache whenever it moved. The task ends when
    /// the last handle is dropped.
    async fn start_revocation_poll(&self) {
        let Some(cache) = &self.inner.cache else {
            return;
        };
        let read_at = cache.now_ms();
        let mut last = self.bounded(self.store().revocation_counter()).await.ok();
        if last.is_some() {
            cache.mark_fresh(read_at);
        }
        #[cfg(feature = "postgres")]
        self.start_revocation_listener();
        let weak = Arc::downgrade(&self.inner);
        let interval = cache.poll_interval();
        rocket::tokio::spawn(async move {
            // A poll every period on the dot (not period + query time): the
            // cache serves for one period from each poll's read, so a late
            // poll only sends a few requests to the database.
            let mut ticks = rocket::tokio::time::interval(interval);
            ticks.set_missed_tick_behavior(rocket::tokio::time::MissedTickBehavior::Delay);
            ticks.tick().await; // the first tick is immediate
            loop {
                ticks.tick().await;
                let Some(inner) = weak.upgrade() else { return };
                let at = AdvancedToken { inner };
                let Some(cache) = &at.inner.cache else { return };
                let read_at = cache.now_ms();
                match at.bounded(at.store().revocation_counter()).await {
                    Ok(counter) => {
                        if last != Some(counter) {
                            cache.invalidate_all();
                            last = Some(counter);
                        }
                        cache.mark_fresh(read_at);
                    }
                    Err(e) => log::warn!("advanced_token: cannot poll revocations: {e}"),
                }
            }
        });
    }

    /// On PostgreSQL, also LISTEN for the notification every revocation
    /// sends (migration 4), so other instances' revocations arrive at once;
    /// the poll stays as the bound if a notification is lost. The listener
    /// has a connection of its own, outside the pool, and ends with the
    /// last handle.
    #[cfg(feature = "postgres")]
    fn start_revocation_listener(&self) {
        if !matches!(self.pool(), DbPool::Postgres(_)) {
            return;
        }
        let weak = Arc::downgrade(&self.inner);
        let url = self.inner.url.clone();
        let check = self
            .inner
            .cache
            .as_ref()
            .map_or(Duration::from_secs(1), TokenCache::poll_interval);
        rocket::tokio::spawn(async move {
            let mut listener = None;
            loop {
                if weak.strong_count() == 0 {
                    return;
                }
                let Some(l) = listener.as_mut() else {
                    match sqlx::postgres::PgListener::connect(&url).await {
                        Ok(mut l) => match l.listen(crate::store::REVOCATION_CHANNEL).await {
                            Ok(()) => listener = Some(l),
                            Err(e) => {
                                log::warn!("advanced_token: cannot LISTEN for revocations: {e}")
                            }
                        },
                        Err(e) => log::warn!("advanced_token: cannot LISTEN for revocations: {e}"),
                    }
                    if listener.is_none() {
                        rocket::tokio::time::sleep(check).await;
                    }
                    continue;
                };
                match rocket::tokio::time::timeout(check, l.recv()).await {
                    Ok(Ok(_notification)) => {
                        let Some(inner) = weak.upgrade() else { return };
                        if let Some(cache) = &inner.cache {
                            cache.invalidate_all();
                        }
                    }
                    Ok(Err(e)) => {
                        log::warn!("advanced_token: revocation listener: {e}");
                        listener = None;
                    }
                    Err(_elapsed) => {}
                }
            }
        });
    }

    /// Drops every cached token (after a revocation by this process).
    fn forget_all(&self) {
        if let Some(cache) = &self.inner.cache {
            cache.invalidate_all();
        }
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// The database pool, for apps that want to query the crate's tables.
    pub fn pool(&self) -> &DbPool {
        &self.inner.store.pool
    }

    /// The database URL, with any password masked.
    pub fn database(&self) -> &str {
        &self.inner.database
    }

    /// Closes the database pool.
    pub async fn close(&self) {
        self.inner.store.pool.close().await
    }

    fn now(&self) -> i64 {
        (self.inner.clock)()
    }

    fn store(&self) -> &Store {
        &self.inner.store
    }

    /// Runs a database call with the request-path time bound.
    async fn bounded<T>(&self, call: impl Future<Output = Result<T, Error>>) -> Result<T, Error> {
        rocket::tokio::time::timeout(self.inner.db_timeout, call)
            .await
            .unwrap_or(Err(Error::Unavailable))
    }

    fn expiry_from(&self, now: i64) -> Option<i64> {
        self.config()
            .token_ttl
            .map(|ttl| now.saturating_add(ttl as i64))
    }

    // ----- users -----------------------------------------------------------

    /// Creates an active user. Usernames are case-sensitive, 1 to 150
    /// characters, without whitespace or control characters.
    ///
    /// Returns the new user's id, or [`Error::UsernameTaken`].
    pub async fn create_user(&self, username: &str, password: &str) -> Result<i64, Error> {
        validate_username(username)?;
        validate_password(password)?;
        let hash = self.inner.hasher.hash(password.to_owned()).await?;
        self.store().create_user(username, &hash, self.now()).await
    }

    /// Sets a user's password and revokes all of the user's tokens (a
    /// password change logs the user out everywhere). Returns how many
    /// tokens were revoked.
    pub async fn set_password(&self, username: &str, password: &str) -> Result<u64, Error> {
        validate_password(password)?;
        if self.store().user_id(username).await?.is_none() {
            return Err(Error::UnknownUser(username.to_owned()));
        }
        let hash = self.inner.hasher.hash(password.to_owned()).await?;
        let revoked = self.store().set_password(username, &hash).await;
        self.forget_all();
        revoked
    }

    /// Deactivates a user: login fails and the user's tokens answer 401
    /// "User inactive or deleted." (they are kept, and work again after
    /// [`AdvancedToken::activate_user()`]).
    pub async fn deactivate_user(&self, username: &str) -> Result<(), Error> {
        let done = self.store().set_active(username, false).await;
        self.forget_all();
        done
    }

    /// Re-activates a deactivated user.
    pub async fn activate_user(&self, username: &str) -> Result<(), Error> {
        self.store().set_active(username, true).await
    }

    /// Locks token rotation for one user: `PUT token/` answers 405 for them.
    /// (The Django package's `UserAPIKeyLock`.)
    pub async fn lock_rotation(&self, username: &str) -> Result<(), Error> {
        let done = self.store().set_rotation_locked(username, true).await;
        self.forget_all();
        done
    }

    /// Lifts [`AdvancedToken::lock_rotation()`].
    pub async fn unlock_rotation(&self, username: &str) -> Result<(), Error> {
        let done = self.store().set_rotation_locked(username, false).await;
        self.forget_all();
        done
    }

    /// Deletes a user and all of the user's tokens.
    pub async fn delete_user(&self, username: &str) -> Result<(), Error> {
        let done = self.store().delete_user(username).await;
        self.forget_all();
        done
    }

    /// Every user, by username, with the number of unexpired tokens.
    pub async fn list_users(&self) -> Result<Vec<UserInfo>, Error> {
        self.store().list_users(self.now()).await
    }

    /// The metadata of a user's tokens (never the tokens or their digests).
    pub async fn list_tokens(&self, username: &str) -> Result<Vec<TokenInfo>, Error> {
        let id = self.user_id(username).await?;
        self.store().list_tokens(id).await
    }

    async fn user_id(&self, username: &str) -> Result<i64, Error> {
        self.store()
            .user_id(username)
            .await?
            .ok_or_else(|| Error::UnknownUser(username.to_owned()))
    }

    // ----- tokens ----------------------------------------------------------

    /// Checks a username and password and issues a new token. Every call
    /// issues a new token; earlier ones keep working (one per device) until
    /// logout, up to `max_tokens_per_user`.
    ///
    /// Unknown user, wrong password and inactive user all give
    /// [`Error::LoginFailed`], after the same argon2 work. With
    /// `login_throttle` on, failures are counted per username and the call
    /// gives [`Error::Throttled`] past the limit; use
    /// [`AdvancedToken::login_from()`] to count per client IP as well.
    pub async fn login(&self, username: &str, password: &str) -> Result<String, Error> {
        self.login_from(username, password, None).await
    }

    /// [`AdvancedToken::login()`] for a request from `ip`: failures also
    /// count against the IP's limit. This is what `POST login/` calls, with
    /// Rocket's `client_ip()`.
    pub async fn login_from(
        &self,
        username: &str,
        password: &str,
        ip: Option<IpAddr>,
    ) -> Result<String, Error> {
        let cfg = self.config();
        if !cfg.login_throttle {
            return self.check_password_and_issue(username, password).await;
        }
        let user_key = token::digest(username);
        let ip_key = ip.map(|ip| ip.to_canonical().to_string());
        let window = cfg.login_failure_window as i64;
        // The failures in the window, per username and per IP;
        // `Err(Throttled)` past either limit.
        let check = || async {
            let now = self.now();
            let (by_user, by_ip) = self
                .bounded(self.store().login_failures(
                    &user_key,
                    ip_key.as_deref().unwrap_or(""),
                    now - window,
                ))
                .await?;
            let mut retry_after = 0;
            if by_user.count >= i64::from(cfg.login_max_failures) {
                retry_after = retry_after.max(by_user.oldest.unwrap_or(now) + window - now);
            }
            if ip_key.is_some() && by_ip.count >= i64::from(cfg.login_max_failures_per_ip) {
                retry_after = retry_after.max(by_ip.oldest.unwrap_or(now) + window - now);
            }
            if retry_after > 0 {
                return Err(Error::Throttled(retry_after as u64));
            }
            Ok((by_user.count, by_ip.count))
        };
        // Concurrent attempts would all pass that check before any of them
        // records its failure. So attempts under way count as failures
        // until they are done: past the limit, an attempt waits for one to
        // finish and then counts again. A burst of wrong passwords gets the
        // limit's worth of argon2 runs, not one per request; a burst of
        // right ones all succeed. Across several instances the bound is the
        // limit per instance.
        let in_flight = &self.inner.in_flight;
        let _ip_slot = match &ip_key {
            Some(ip) => Some(
                in_flight
                    .admit(
                        format!("ip {ip}"),
                        cfg.login_max_failures_per_ip,
                        || async { Ok(check().await?.1) },
                    )
                    .await?
                    .0,
            ),
            None => None,
        };
        let (_user_slot, user_failures) = in_flight
            .admit(
                format!("user {user_key}"),
                cfg.login_max_failures,
                || async { Ok(check().await?.0) },
            )
            .await?;
        match self.check_password_and_issue(username, password).await {
            Err(Error::LoginFailed) => {
                let now = self.now();
                self.bounded(
                    self.store()
                        .record_login_failure(&user_key, ip_key.as_deref(), now),
                )
                .await?;
                let last = self.inner.last_prune.load(Ordering::Relaxed);
                if now - last >= PRUNE_INTERVAL
                    && self
                        .inner
                        .last_prune
                        .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                        .is_ok()
                {
                    self.bounded(self.store().prune_login_failures(now - window))
                        .await?;
                }
                Err(Error::LoginFailed)
            }
            Ok(token) => {
                if user_failures > 0 {
                    self.bounded(self.store().clear_user_failures(&user_key))
                        .await?;
                }
                Ok(token)
            }
            Err(other) => Err(other),
        }
    }

    async fn check_password_and_issue(
        &self,
        username: &str,
        password: &str,
    ) -> Result<String, Error> {
        // No stored username is longer or holds a NUL (PostgreSQL rejects
        // NUL in text outright), so either is an unknown user: same argon2
        // work, same answer, no query.
        let row = if username.chars().count() <= MAX_USERNAME_CHARS && !username.contains('\0') {
            self.bounded(self.store().find_login(username)).await?
        } else {
            None
        };
        let (id, hash, active) = match row {
            Some(r) => (Some(r.id), Some(r.password_hash), r.is_active),
            None => (None, None, false),
        };
        let ok = self.inner.hasher.verify(password.to_owned(), hash).await?;
        match id {
            Some(id) if ok && active => self.issue_token(id).await,
            _ => Err(Error::LoginFailed),
        }
    }

    /// How many argon2 operations this process has started (for tests).
    #[doc(hidden)]
    pub fn password_operations(&self) -> u64 {
        self.inner.hasher.operations()
    }

    /// Issues a new token for a user id, without a password: for apps that
    /// authenticate users another way.
    pub async fn issue_token(&self, user_id: i64) -> Result<String, Error> {
        let token = token::generate();
        let now = self.now();
        let evicted = self
            .bounded(self.store().insert_token(
                user_id,
                &token::digest(&token),
                now,
                self.expiry_from(now),
                self.config().max_tokens_per_user,
            ))
            .await?;
        if evicted > 0 {
            self.forget_all();
        }
        Ok(token)
    }

    /// Authenticates a token (the part after the keyword). This is what the
    /// [`AuthUser`] guard runs: one indexed read, plus a write at most once a
    /// minute per token to record its use.
    pub async fn authenticate(&self, token: &str) -> Result<AuthUser, Error> {
        if !token::well_formed(token) {
            return Err(Error::InvalidToken);
        }
        let digest = token::digest(token);
        let now = self.now();
        let cache = self.inner.cache.as_ref();
        if let Some(row) = cache.and_then(|c| c.get(&digest)) {
            // A hit needs no database work unless the token expired (the
            // database path deletes it) or a use is due to be recorded.
            let expired = row.expires_at.is_some_and(|at| at <= now);
            if !expired && row.is_active && self.touch(&row, now).is_none() {
                return Ok(AuthUser::from_row(row, digest));
            }
        }
        let generation = cache.map(TokenCache::generation);
        let mut row = self
            .bounded(self.store().find_token(&digest))
            .await?
            .ok_or(Error::InvalidToken)?;
        if row.expires_at.is_some_and(|at| at <= now) {
            self.bounded(self.store().delete_token(row.token_id))
                .await?;
            if let Some(c) = cache {
                c.invalidate(&digest);
            }
            return Err(Error::TokenExpired);
        }
        if !row.is_active {
            return Err(Error::UserInactive);
        }
        if let Some(expires_at) = self.touch(&row, now) {
            self.bounded(self.store().touch_token(row.token_id, now, expires_at))
                .await?;
            row.last_used_at = now;
            row.expires_at = expires_at;
        }
        if let (Some(c), Some(generation)) = (cache, generation) {
            c.insert(digest.clone(), row.clone(), generation);
        }
        Ok(AuthUser::from_row(row, digest))
    }

    /// Whether this use must be written, and the expiry to write. At most once
    /// a [`TOUCH_INTERVAL`] per token.
    fn touch(&self, row: &TokenRow, now: i64) -> Option<Option<i64>> {
        if now - row.last_used_at < TOUCH_INTERVAL {
            return None;
        }
        let cfg = self.config();
        let expires_at = match (cfg.token_ttl_sliding, cfg.token_ttl) {
            (true, Some(ttl)) => {
                let slid = now.saturating_add(ttl as i64);
                Some(match cfg.token_max_lifetime {
                    Some(max) => slid.min(row.created_at.saturating_add(max as i64)),
                    None => slid,
                })
            }
            _ => row.expires_at,
        };
        Some(expires_at)
    }

    /// Replaces the token `user` authenticated with by a new one: the old
    /// token stops working at once; the user's other tokens are untouched.
    /// Of concurrent rotations of one token exactly one succeeds; the others
    /// get [`Error::InvalidToken`].
    pub async fn rotate(&self, user: &AuthUser) -> Result<String, Error> {
        if !self.config().allow_rotation {
            return Err(Error::Disabled(
                "Token rotation is disabled.",
                "GET, HEAD, OPTIONS",
            ));
        }
        if user.rotation_locked {
            return Err(Error::Disabled(
                "Token rotation is locked for this user.",
                "GET, HEAD, OPTIONS",
            ));
        }
        let token = token::generate();
        let now = self.now();
        let rotated = self
            .bounded(self.store().rotate_token(
                user.token_id,
                &user.digest,
                &token::digest(&token),
                now,
                self.expiry_from(now),
            ))
            .await?;
        if let Some(cache) = &self.inner.cache {
            cache.invalidate(&user.digest);
        }
        if rotated {
            Ok(token)
        } else {
            Err(Error::InvalidToken)
        }
    }

    /// Logs `user` out everywhere: deletes all of the user's tokens. Returns
    /// how many.
    pub async fn logout(&self, user: &AuthUser) -> Result<u64, Error> {
        if !self.config().allow_logout {
            return Err(Error::Disabled("Logout is disabled.", "OPTIONS"));
        }
        let n = self.bounded(self.store().delete_user_tokens(user.id)).await;
        self.forget_all();
        n
    }

    /// Deletes all tokens of one user. Returns how many.
    pub async fn revoke_tokens(&self, username: &str) -> Result<u64, Error> {
        let id = self.user_id(username).await?;
        let n = self.store().delete_user_tokens(id).await;
        self.forget_all();
        n
    }

    /// Deletes every token of every user. Returns how many.
    pub async fn revoke_all_tokens(&self) -> Result<u64, Error> {
        let n = self.store().delete_all_tokens().await;
        self.forget_all();
        n
    }

    /// Deletes expired tokens. Returns how many.
    pub async fn purge_expired(&self) -> Result<u64, Error> {
        self.store().purge_expired(self.now()).await
    }
}

fn validate_username(username: &str) -> Result<(), Error> {
    if username.is_empty() {
        return Err(Error::InvalidInput(
            "The username must not be empty.".into(),
        ));
    }
    if username.chars().count() > MAX_USERNAME_CHARS {
        return Err(Error::InvalidInput(format!(
            "The username must be at most {MAX_USERNAME_CHARS} characters."
        )));
    }
    if username
        .chars()
        .any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(Error::InvalidInput(
            "The username must not contain whitespace or control characters.".into(),
        ));
    }
    Ok(())
}

fn validate_password(password: &str) -> Result<(), Error> {
    if password.is_empty() {
        return Err(Error::InvalidInput(
            "The password must not be empty.".into(),
        ));
    }
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(Error::InvalidInput(format!(
            "The password must be at most {MAX_PASSWORD_BYTES} bytes."
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames_are_checked() {
        assert!(validate_username("alice").is_ok());
        assert!(validate_username("Élodie@example.com").is_ok());
        assert!(validate_username("").is_err());
        assert!(validate_username("a b").is_err());
        assert!(validate_username("a\u{0}").is_err());
        assert!(validate_username(&"x".repeat(151)).is_err());
        assert!(validate_password("").is_err());
        assert!(validate_password(&"x".repeat(2000)).is_err());
    }

    #[rocket::async_test]
    async fn in_flight_counts_attempts_and_forgets_idle_keys() {
        let in_flight = InFlight::default();
        let ok = || async { Ok(0) };
        // With 2 failures on record and a limit of 3, one attempt at a time.
        let two = || async { Ok(2) };
        let (first, failures) = in_flight.admit("k".into(), 3, two).await.unwrap();
        assert_eq!(failures, 2);
        let second = in_flight.admit("k".into(), 3, two);
        rocket::tokio::pin!(second);
        let waited = rocket::tokio::time::timeout(Duration::from_millis(50), &mut second).await;
        assert!(waited.is_err(), "admitted past the limit");
        drop(first);
        let (second, _) = second.await.unwrap();
        // A wait that is cancelled (the client went away) frees its key too.
        let cancelled = rocket::tokio::time::timeout(
            Duration::from_millis(20),
            in_flight.admit("k".into(), 3, two),
        )
        .await;
        assert!(cancelled.is_err(), "admitted past the limit");
        drop(second);
        // An attempt refused by the count leaves nothing behind either.
        let refused = in_flight
            .admit("k".into(), 3, || async {
                Err::<i64, _>(Error::Throttled(1))
            })
            .await;
        assert!(refused.is_err());
        let (kept, _) = in_flight.admit("other".into(), 3, ok).await.unwrap();
        drop(kept);
        assert!(in_flight.0.lock().unwrap().is_empty());
    }
}
