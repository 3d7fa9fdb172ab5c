//! Configuration, read from the `advanced_token` section of Rocket's figment.

use rocket::data::{ByteUnit, ToByteUnit};
use rocket::figment::Figment;
use serde::{Deserialize, Serialize};

pub(crate) const DEFAULT_PREFIX: &str = "Token";
pub(crate) const SECTION: &str = "advanced_token";
pub(crate) const DEFAULT_DATABASE: &str = "advanced_token";

/// The type of the id column of the app's users table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum IdType {
    /// An integer (`INTEGER`, `BIGINT`, `SERIAL`...).
    #[default]
    Integer,
    /// A PostgreSQL `UUID` (on SQLite and MySQL a UUID is text: use `text`).
    Uuid,
    /// Text (`TEXT`, `VARCHAR`, `CHAR(36)`...).
    Text,
}

/// The app's own users table, named in configuration: the crate reads users
/// from it (it never writes to it, but to replace an old-format password
/// hash by argon2id after a successful login) and creates no users table of
/// its own.
///
/// The defaults are the columns of Django's `auth_user`, so
/// `users = { table = "auth_user" }` reads a Django database as it is.
///
/// ```toml
/// [default.advanced_token.users]
/// table = "app_users"
/// login = "email"
/// password_hash = "password_hash"
/// active = "active"
/// fields = ["email", "display_name"]   # handed to handlers with the user
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct UsersTable {
    /// The table (optionally `schema.table`). Required.
    pub table: String,
    /// The primary key column. _Default:_ `"id"`.
    pub id: String,
    /// The type of the primary key. _Default:_ `integer`.
    pub id_type: IdType,
    /// The column users log in with (the login body's `username`).
    /// _Default:_ `"username"`.
    pub login: String,
    /// The password hash column (argon2, bcrypt or a Django format).
    /// _Default:_ `"password"`.
    pub password_hash: String,
    /// A boolean column: `false` cannot log in and gets 401 `User inactive
    /// or deleted.`. _Default:_ `"is_active"`.
    pub active: String,
    /// More columns to load with the user, handed to handlers as a JSON
    /// object by [`AuthUser::fields()`](crate::AuthUser::fields).
    /// _Default:_ none.
    pub fields: Vec<String>,
}

impl Default for UsersTable {
    fn default() -> Self {
        UsersTable {
            table: String::new(),
            id: "id".into(),
            id_type: IdType::Integer,
            login: "username".into(),
            password_hash: "password".into(),
            active: "is_active".into(),
            fields: Vec::new(),
        }
    }
}

impl UsersTable {
    /// Every name must be a plain SQL identifier (`schema.table` for the
    /// table): they are written into the crate's queries.
    fn validate(&self) -> Result<(), String> {
        let plain = |s: &str| {
            !s.is_empty()
                && !s.starts_with(|c: char| c.is_ascii_digit())
                && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        };
        if self.table.is_empty() {
            return Err(format!("{}: missing", key("users.table")));
        }
        if !self.table.split('.').all(plain) || self.table.split('.').count() > 2 {
            return Err(format!(
                "{}: not a plain SQL name: {:?}",
                key("users.table"),
                self.table
            ));
        }
        let columns = [
            ("id", &self.id),
            ("login", &self.login),
            ("password_hash", &self.password_hash),
            ("active", &self.active),
        ];
        for (name, value) in columns
            .into_iter()
            .chain(self.fields.iter().map(|f| ("fields", f)))
        {
            if !plain(value) {
                return Err(format!(
                    "{}: not a plain SQL name: {value:?}",
                    key(&format!("users.{name}"))
                ));
            }
        }
        Ok(())
    }
}

/// The plugin's configuration: the `advanced_token` section of `Rocket.toml`
/// (in any profile) or the `ROCKET_ADVANCED_TOKEN` environment variable.
///
/// Every field has a default, so the section may be left out entirely.
///
/// ```toml
/// [default.advanced_token]
/// bearer_prefix = "Bearer"
/// token_ttl = 86400            # tokens live one day...
/// token_ttl_sliding = true     # ...from their last use
/// token_max_lifetime = 2592000 # but never more than 30 days
/// max_tokens_per_user = 10
/// ```
///
/// ```sh
/// ROCKET_ADVANCED_TOKEN='{bearer_prefix="Bearer",token_ttl=86400}'
/// ```
///
/// The database is configured separately, as a `rocket_db_pools` database
/// named `advanced_token` (`[default.databases.advanced_token]`, key `url`;
/// see the crate docs).
///
/// A value of the wrong type or out of range aborts launch with a message
/// naming the key, e.g. `advanced_token.bearer_prefix: must not be empty`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct Config {
    /// The keyword clients put before the token: `Authorization: <prefix>
    /// <token>`. Matched case-insensitively, as DRF does, and sent back in
    /// `WWW-Authenticate` on every 401. Must be a non-empty HTTP token (no
    /// whitespace, no separators).
    ///
    /// _Default:_ `"Token"`.
    pub bearer_prefix: String,

    /// The largest request body the login route reads; larger bodies get
    /// 413. At most 1 MiB.
    ///
    /// _Default:_ `4 KiB`.
    pub body_limit: ByteUnit,

    /// Seconds the login route waits for the whole request body; a body
    /// still incomplete then gets 408 and the connection is closed, so a
    /// client that sends headers and then trickles (or never sends) its body
    /// cannot hold a connection. This bounds the body only: run behind a
    /// reverse proxy with header timeouts for the rest. Between 0.1 and 300.
    ///
    /// _Default:_ `5`.
    pub body_timeout: f64,

    /// How many argon2 hashes or verifications may run at once. Each takes
    /// about 19 MiB of memory and one core for tens of milliseconds; further
    /// logins wait their turn without holding a thread.
    ///
    /// _Default:_ the number of CPUs.
    pub hash_concurrency: Option<usize>,

    /// Whether `PUT token/` may rotate a token. When `false` it answers 405
    /// and the token keeps working (the Django package's
    /// `PREVENT_TOKEN_API_CHANGE`).
    ///
    /// _Default:_ `true`.
    pub allow_rotation: bool,

    /// Whether the logout route may delete tokens. When `false` it answers
    /// 405 and nothing is deleted (`PREVENT_TOKEN_LOGOUT`).
    ///
    /// _Default:_ `true`.
    pub allow_logout: bool,

    /// Seconds a token lives after it is issued (or, with
    /// `token_ttl_sliding`, after its last use). An expired token gets 401
    /// `Token has expired.` and is deleted. `None` means tokens never expire,
    /// as in DRF.
    ///
    /// _Default:_ `None`.
    pub token_ttl: Option<u64>,

    /// Whether each use pushes the expiry out to `token_ttl` from now (capped
    /// by `token_max_lifetime`). The new expiry is written at most once a
    /// minute per token. Needs `token_ttl`, of at least 120 seconds.
    ///
    /// _Default:_ `false`.
    pub token_ttl_sliding: bool,

    /// With sliding expiry, the most seconds a token may live from its
    /// creation, however often it is used. `None` means no cap.
    ///
    /// _Default:_ `None`.
    pub token_max_lifetime: Option<u64>,

    /// The most tokens one user may hold. A login beyond it deletes the
    /// user's least recently used token, so the table cannot grow without
    /// bound. At least 1.
    ///
    /// _Default:_ `25`.
    pub max_tokens_per_user: u32,

    /// Whether failed logins are throttled. When on, a username with
    /// `login_max_failures` failures, or a client IP with
    /// `login_max_failures_per_ip`, within `login_failure_window`, gets 429
    /// with `Retry-After` (and no password check) until the oldest failure
    /// leaves the window. Counters live in the database, so the limit holds
    /// across instances. The IP is Rocket's `client_ip()`, which honours its
    /// `ip_header` setting (default `X-Real-IP`) behind a proxy.
    ///
    /// _Default:_ `true`.
    pub login_throttle: bool,

    /// Failed logins allowed per username within the window.
    ///
    /// _Default:_ `5`.
    pub login_max_failures: u32,

    /// Failed logins allowed per client IP within the window.
    ///
    /// _Default:_ `50`.
    pub login_max_failures_per_ip: u32,

    /// Successful logins allowed per account within the window (every
    /// login issues a token and costs an argon2 check): past it, 429 with
    /// `Retry-After`, before any password check. Counted with the failures,
    /// so across instances.
    ///
    /// _Default:_ `100`.
    pub login_max_successes: u32,

    /// The throttling window, in seconds.
    ///
    /// _Default:_ `900`.
    pub login_failure_window: u64,

    /// Whether to keep verified tokens in an in-process cache, so the common
    /// guarded request needs no database query. Revocations made by this
    /// process evict at once; revocations made elsewhere (another instance,
    /// the command line) take effect within `token_cache_poll`. Expiry,
    /// sliding renewal and `last_used` keep their meaning. `false` checks
    /// every request against the database, as DRF does.
    ///
    /// _Default:_ `true`.
    pub token_cache: bool,

    /// How often, in seconds, each instance reads the database's revocation
    /// log (one small query, whatever the load) and drops from its cache
    /// what each new entry names: a token, a user's tokens, or everything:
    /// the bound on how long a token revoked elsewhere may still be
    /// accepted here. (On PostgreSQL a `NOTIFY` usually brings the news at
    /// once; the poll is the fallback.) Between 0.05 and 60.
    ///
    /// _Default:_ `1.0`.
    pub token_cache_poll: f64,

    /// How many tokens the cache holds: it evicts none before it holds this
    /// many. Its shards fill unevenly, so above 8,192 it has a few percent
    /// of headroom (about 1/16 more at most); size memory at ~560 bytes a
    /// token.
    ///
    /// _Default:_ `100000`.
    pub token_cache_capacity: u64,

    /// The most seconds a cached token (and its user) is served without
    /// being read from the database again: the bound on how long a change
    /// made behind the crate's back (the app's own SQL on a token row or on
    /// its users table) may go unseen. Changes made through the crate, or
    /// announced with [`AdvancedToken::user_changed()`](crate::AdvancedToken::user_changed),
    /// take effect within `token_cache_poll`.
    ///
    /// _Default:_ `60`.
    pub token_cache_ttl: u64,

    /// The most token rotations (`PUT token/`) one user may make per minute,
    /// counted across every instance; past it, 429 with `Retry-After`. Each
    /// rotation makes every instance read its revocation log, so this bounds
    /// what one user can cost them. A refused user is refused from memory
    /// until the oldest rotation counted ages out (no read per request).
    ///
    /// _Default:_ `30`.
    pub rotation_max_per_minute: u32,

    /// The name of the `rocket_db_pools` database the crate uses: its
    /// `databases.<name>` section gives the URL and pool settings. Name the
    /// app's own database here to configure the URL once; attach the fairing
    /// with [`TokenFairing::database`](crate::TokenFairing::database) to
    /// share the app's pool itself.
    ///
    /// _Default:_ `"advanced_token"`.
    pub database: String,

    /// The app's own users table, when users live there rather than in the
    /// crate's `advanced_token_users` (see [`UsersTable`]).
    ///
    /// _Default:_ none (the crate's own table).
    pub users: Option<UsersTable>,

    /// The fewest characters a new password may have: `create_user`,
    /// `set_password`, `hash_password` and the command line refuse shorter
    /// ones with [`Error::WeakPassword`](crate::Error::WeakPassword). The
    /// app may add its own rule with
    /// [`TokenFairing::password_policy`](crate::TokenFairing::password_policy).
    /// Existing passwords keep working. At least 1.
    ///
    /// _Default:_ `8`.
    pub min_password_length: usize,

    /// Whether the fairing gives a failed plain [`AuthUser`](crate::AuthUser)
    /// guard's catcher response (401 or 503) the crate's JSON body and
    /// `WWW-Authenticate`. `false` leaves Rocket's (or the app's) catcher
    /// answer as it is. Responses of handlers that take
    /// `Result<AuthUser, Error>` or `Option<AuthUser>` are never rewritten.
    ///
    /// _Default:_ `true`.
    pub rewrite_guard_failures: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            bearer_prefix: DEFAULT_PREFIX.to_owned(),
            body_limit: 4.kibibytes(),
            body_timeout: 5.0,
            hash_concurrency: None,
            allow_rotation: true,
            allow_logout: true,
            token_ttl: None,
            token_ttl_sliding: false,
            token_max_lifetime: None,
            max_tokens_per_user: 25,
            login_throttle: true,
            login_max_failures: 5,
            login_max_failures_per_ip: 50,
            login_max_successes: 100,
            login_failure_window: 900,
            token_cache: true,
            token_cache_poll: 1.0,
            token_cache_capacity: 100_000,
            token_cache_ttl: 60,
            rotation_max_per_minute: 30,
            database: DEFAULT_DATABASE.to_owned(),
            users: None,
            min_password_length: 8,
            rewrite_guard_failures: true,
        }
    }
}

/// `advanced_token.<name>`, for messages.
fn key(name: &str) -> String {
    format!("{SECTION}.{name}")
}

/// `token` in RFC 9110: the characters a header keyword may contain.
fn is_tchar(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c)
}

impl Config {
    /// Reads the `advanced_token` section of `figment` and checks it. A
    /// missing section gives the defaults. The error names the offending key.
    pub fn from_figment(figment: &Figment) -> Result<Config, String> {
        let config = if figment.contains(SECTION) {
            figment
                .extract_inner::<Config>(SECTION)
                .map_err(|e| describe_figment_error(e, SECTION))?
        } else {
            Config::default()
        };
        config.validate()?;
        Ok(config)
    }

    /// Checks values that serde cannot: an error names the key.
    pub fn validate(&self) -> Result<(), String> {
        self.validate_prefix()?;
        self.validate_expiry()?;
        self.validate_ranges()?;
        if self.database.is_empty() {
            return Err(format!("{}: must not be empty", key("database")));
        }
        match &self.users {
            Some(users) => users.validate(),
            None => Ok(()),
        }
    }

    fn validate_prefix(&self) -> Result<(), String> {
        let p = &self.bearer_prefix;
        if p.is_empty() {
            return Err(format!("{}: must not be empty", key("bearer_prefix")));
        }
        if p.chars().any(char::is_whitespace) {
            return Err(format!(
                "{}: must not contain whitespace (got {p:?})",
                key("bearer_prefix")
            ));
        }
        if !p.chars().all(is_tchar) {
            return Err(format!(
                "{}: must be an HTTP token: letters, digits and !#$%&'*+-.^_`|~ (got {p:?})",
                key("bearer_prefix")
            ));
        }
        Ok(())
    }

    fn validate_expiry(&self) -> Result<(), String> {
        if self.token_ttl == Some(0) {
            return Err(format!(
                "{}: must be at least 1 second (leave it out for tokens that never expire)",
                key("token_ttl")
            ));
        }
        if self.token_ttl_sliding && self.token_ttl.is_none() {
            return Err(format!(
                "{}: needs {} to be set",
                key("token_ttl_sliding"),
                key("token_ttl")
            ));
        }
        if self.token_ttl_sliding && self.token_ttl.is_some_and(|ttl| ttl < 120) {
            // The renewal is written at most once a minute: a shorter TTL
            // would expire before it could slide.
            return Err(format!(
                "{}: must be at least 120 seconds with {} = true (the expiry is renewed at most once a minute)",
                key("token_ttl"),
                key("token_ttl_sliding")
            ));
        }
        let Some(max) = self.token_max_lifetime else {
            return Ok(());
        };
        if !self.token_ttl_sliding {
            return Err(format!(
                "{}: only applies with {} = true",
                key("token_max_lifetime"),
                key("token_ttl_sliding")
            ));
        }
        if Some(max) < self.token_ttl {
            return Err(format!(
                "{}: must not be shorter than {}",
                key("token_max_lifetime"),
                key("token_ttl")
            ));
        }
        Ok(())
    }

    fn validate_ranges(&self) -> Result<(), String> {
        if self.body_limit < 64.bytes() || self.body_limit > 1.mebibytes() {
            return Err(format!(
                "{}: must be between 64 B and 1 MiB (got {})",
                key("body_limit"),
                self.body_limit
            ));
        }
        if !(0.1..=300.0).contains(&self.body_timeout) {
            return Err(format!(
                "{}: must be between 0.1 and 300 seconds (got {})",
                key("body_timeout"),
                self.body_timeout
            ));
        }
        if !(0.05..=60.0).contains(&self.token_cache_poll) {
            return Err(format!(
                "{}: must be between 0.05 and 60 seconds (got {})",
                key("token_cache_poll"),
                self.token_cache_poll
            ));
        }
        for (name, value) in [
            (
                "hash_concurrency",
                self.hash_concurrency.map_or(1, |n| n as u64),
            ),
            ("max_tokens_per_user", u64::from(self.max_tokens_per_user)),
            ("login_max_failures", u64::from(self.login_max_failures)),
            (
                "login_max_failures_per_ip",
                u64::from(self.login_max_failures_per_ip),
            ),
            ("login_failure_window", self.login_failure_window),
            ("login_max_successes", u64::from(self.login_max_successes)),
            ("token_cache_capacity", self.token_cache_capacity),
            ("token_cache_ttl", self.token_cache_ttl),
            ("min_password_length", self.min_password_length as u64),
            (
                "rotation_max_per_minute",
                u64::from(self.rotation_max_per_minute),
            ),
        ] {
            if value == 0 {
                return Err(format!("{}: must be at least 1", key(name)));
            }
        }
        Ok(())
    }

    /// The number of concurrent argon2 operations allowed.
    pub(crate) fn hash_permits(&self) -> usize {
        self.hash_concurrency.unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        })
    }
}

/// Figment's own message, with the full dotted key path in front.
pub(crate) fn describe_figment_error(e: rocket::figment::Error, section: &str) -> String {
    let mut out = Vec::new();
    for err in e {
        // Figment reports the section itself at the start of the path or,
        // for a value of the wrong type, at its end; name it once, in front.
        let mut path: &[String] = &err.path;
        if path.first().map(String::as_str) == Some(section) {
            path = &path[1..];
        }
        if path.last().map(String::as_str) == Some(section) {
            path = &path[..path.len() - 1];
        }
        let path = if path.is_empty() {
            section.to_owned()
        } else {
            format!("{section}.{}", path.join("."))
        };
        out.push(format!("{path}: {}", err.kind));
    }
    out.join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use rocket::figment::providers::{Format, Toml};

    fn from_toml(s: &str) -> Result<Config, String> {
        Config::from_figment(&Figment::from(Toml::string(s)))
    }

    #[test]
    fn sliding_needs_a_ttl_it_can_renew() {
        let e =
            from_toml("[advanced_token]\ntoken_ttl = 30\ntoken_ttl_sliding = true").unwrap_err();
        assert!(e.starts_with("advanced_token.token_ttl: "), "{e}");
        from_toml("[advanced_token]\ntoken_ttl = 120\ntoken_ttl_sliding = true").unwrap();
    }

    #[test]
    fn type_errors_name_the_key_once() {
        for (toml, key) in [
            (
                "[advanced_token]\ntoken_ttl = \"x\"",
                "advanced_token.token_ttl: ",
            ),
            (
                "[advanced_token]\nbearer_prefix = 5",
                "advanced_token.bearer_prefix: ",
            ),
            (
                "[advanced_token]\nallow_rotation = \"maybe\"",
                "advanced_token.allow_rotation: ",
            ),
        ] {
            let e = from_toml(toml).unwrap_err();
            assert!(e.starts_with(key), "{e}");
            assert_eq!(e.matches("advanced_token").count(), 1, "{e}");
        }
    }

    #[test]
    fn missing_section_gives_defaults() {
        assert_eq!(from_toml("").unwrap(), Config::default());
        assert_eq!(Config::default().bearer_prefix, "Token");
    }

    #[test]
    fn bad_values_name_their_key() {
        let e = from_toml("[advanced_token]\nbearer_prefix = ''").unwrap_err();
        assert!(e.contains("advanced_token.bearer_prefix"), "{e}");
        let e = from_toml("[advanced_token]\nbearer_prefix = 'To ken'").unwrap_err();
        assert!(e.contains("advanced_token.bearer_prefix"), "{e}");
        let e = from_toml("[advanced_token]\nbearer_prefix = 5").unwrap_err();
        assert!(e.contains("advanced_token.bearer_prefix"), "{e}");
        let e = from_toml("[advanced_token]\ntoken_ttl = 'soon'").unwrap_err();
        assert!(e.contains("advanced_token.token_ttl"), "{e}");
        let e = from_toml("[advanced_token]\nmax_tokens_per_user = 0").unwrap_err();
        assert!(e.contains("advanced_token.max_tokens_per_user"), "{e}");
        let e = from_toml("[advanced_token]\ntoken_ttl_sliding = true").unwrap_err();
        assert!(e.contains("advanced_token.token_ttl_sliding"), "{e}");
        let e = from_toml("[advanced_token]\nbody_limit = '2 MiB'").unwrap_err();
        assert!(e.contains("advanced_token.body_limit"), "{e}");
        let e = from_toml("[advanced_token]\nbody_timeout = 0").unwrap_err();
        assert!(e.contains("advanced_token.body_timeout"), "{e}");
        let e = from_toml("[advanced_token]\nbody_timeout = 301").unwrap_err();
        assert!(e.contains("advanced_token.body_timeout"), "{e}");
        let e = from_toml("[advanced_token]\nbearer_prefx = 'Bearer'").unwrap_err();
        assert!(e.contains("bearer_prefx"), "{e}");
    }

    #[test]
    fn good_values_parse() {
        let c = from_toml(
            "[advanced_token]\nbearer_prefix = 'Bearer'\nbody_limit = '8 KiB'\ntoken_ttl = 120\ntoken_ttl_sliding = true\ntoken_max_lifetime = 600",
        )
        .unwrap();
        assert_eq!(c.bearer_prefix, "Bearer");
        assert_eq!(c.body_limit, 8.kibibytes());
        assert_eq!(c.token_ttl, Some(120));
        assert_eq!(c.token_max_lifetime, Some(600));
        // Whole and fractional seconds alike.
        let c = from_toml("[advanced_token]\nbody_timeout = 2").unwrap();
        assert_eq!(c.body_timeout, 2.0);
        let c = from_toml("[advanced_token]\nbody_timeout = 0.5").unwrap();
        assert_eq!(c.body_timeout, 0.5);
        assert_eq!(Config::default().body_timeout, 5.0);
    }
}
