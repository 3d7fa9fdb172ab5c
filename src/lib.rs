//! Token authentication for [Rocket] 0.5, in the manner of Django REST
//! Framework's `authtoken` and the `drf_advanced_token` package: a login
//! route that trades a username and password for a token, a request guard
//! that checks `Authorization: Token <token>`, routes to check, rotate and
//! revoke tokens, and an admin command line.
//!
//! Tokens are 256 random bits, stored only as SHA-256 digests; passwords are
//! argon2id. SQLite works out of the box; PostgreSQL and MySQL/MariaDB are
//! picked by the database URL.
//!
//! [Rocket]: https://rocket.rs
//!
//! # Quick start
//!
//! 1. Add the crate (all three database backends are on by default):
//!
//!    ```toml
//!    [dependencies]
//!    rocket = { version = "0.5", features = ["json"] }
//!    rocket_advanced_token = "0.1"
//!    ```
//!
//! 2. Name the database in `Rocket.toml` (the file is created on first
//!    launch) and, if you like, the keyword:
//!
//!    ```toml
//!    [default.databases.advanced_token]
//!    url = "sqlite://advanced_token.sqlite?mode=rwc"
//!
//!    [default.advanced_token]
//!    bearer_prefix = "Token"
//!    ```
//!
//! 3. Attach the fairing and mount the routes:
//!
//!    ```rust,no_run
//!    # use rocket::launch;
//!    use rocket_advanced_token::AdvancedToken;
//!
//!    #[launch]
//!    fn rocket() -> _ {
//!        rocket::build()
//!            .attach(AdvancedToken::fairing())
//!            .mount("/auth", rocket_advanced_token::routes())
//!    }
//!    ```
//!
//! 4. Guard your handlers with [`AuthUser`]:
//!
//!    ```rust
//!    # use rocket::get;
//!    use rocket_advanced_token::AuthUser;
//!
//!    #[get("/api/hello")]
//!    fn hello(user: AuthUser) -> String {
//!        format!("hello, {}", user.username)
//!    }
//!    ```
//!
//! Create a user with `advanced-token create-user alice --password-stdin`
//! (or [`AdvancedToken::create_user()`]), then
//! `POST /auth/login/ {"username": "alice", "password": "..."}`.
//!
//! # Configuration
//!
//! Two sections of Rocket's configuration, in `Rocket.toml` (any profile) or
//! the environment:
//!
//! * `advanced_token`: the policies, see [`Config`] for every key and its
//!   default. `ROCKET_ADVANCED_TOKEN='{bearer_prefix="Bearer"}'`.
//! * `databases.advanced_token`: a [`rocket_db_pools::Config`]: `url`
//!   (`sqlite:`, `postgres:`/`postgresql:`, `mysql:`/`mariadb:`),
//!   `max_connections` (default workers × 4), `connect_timeout` (seconds,
//!   default 5; also SQLite's busy timeout), `idle_timeout`,
//!   `min_connections`.
//!   `ROCKET_DATABASES='{advanced_token={url="postgres://app@db/app"}}'`.
//!
//! A bad value aborts launch with a message naming the key, e.g.
//! `advanced_token.bearer_prefix: must not contain whitespace`. The crate's
//! migrations run at launch; its tables are prefixed `advanced_token_` and
//! its migrations are tracked in its own table, so they coexist with the
//! application's own sqlx migrations on the same database.
//!
//! # Endpoints
//!
//! Mounted at `/auth`; every path answers with and without a trailing slash.
//! Bodies are JSON; errors are `{"detail": "..."}` except field errors.
//!
//! | request | answer |
//! |---|---|
//! | `POST login/` `{"username", "password"}` (JSON, form or multipart) | 200 `{"token": "..."}`: a new token on every login |
//! | ... wrong password, unknown or inactive user | 401 `{"detail": "Unable to log in with provided credentials."}` |
//! | ... missing, blank or non-string field | 400 `{"username": ["This field is required."]}` |
//! | ... malformed JSON / not an object | 400 |
//! | ... other content type / body over `body_limit` / not received within `body_timeout` | 415 / 413 / 408 |
//! | `GET token/` | 200 `{"username": "..."}` |
//! | `PUT token/` | 200 `{"token": "..."}`; the old token stops working |
//! | `DELETE token/` | 200; only this token is deleted (log out this device) |
//! | `GET tokens/` | 200 `[{"id", "created_at", "last_used_at", "expires_at", "current"}]`: the caller's tokens |
//! | `DELETE tokens/<id>/` | 200; one of the caller's tokens deleted; 404 for a missing id or another user's, alike |
//! | `GET` or `POST logout/` | 200; every token of the user is deleted |
//! | any other method / `OPTIONS` | 405 / 204, with `Allow` |
//! | bad or missing token (token, logout, your guarded routes) | 401 with `WWW-Authenticate: <prefix>` |
//! | database unreachable | 503 |
//!
//! The 401 details are DRF's: `Authentication credentials were not
//! provided.`, `Invalid token header. No credentials provided.`, `Invalid
//! token header. Token string should not contain spaces.`, `Invalid token.`,
//! `User inactive or deleted.`, and `Token has expired.`.
//!
//! The routes with static paths have rank -8, one after Rocket's default:
//! Rocket tries them after the app's own static routes. An app route of the
//! same method and static path as one of the crate's endpoints answers
//! instead of it (the fairing warns at liftoff), and one may take the place
//! of a 405 (a form at `GET /auth/login`). `Allow` names what the path
//! serves: the crate's methods less those switched off (`allow_rotation`,
//! `allow_logout`), plus those of the app's routes written with the same
//! path and ranked before the crate's; a 405 never names the method it
//! refuses.
//!
//! # In your app
//!
//! [`AdvancedToken`] is managed state; besides the administration calls it
//! has what an app's own endpoints need:
//! [`verify_password`](AdvancedToken::verify_password) (no token issued,
//! same throttle), [`user_by_id`](AdvancedToken::user_by_id) /
//! [`user_by_username`](AdvancedToken::user_by_username),
//! [`create_user_with_hash`](AdvancedToken::create_user_with_hash) /
//! [`set_password_hash`](AdvancedToken::set_password_hash),
//! [`reset_throttle`](AdvancedToken::reset_throttle),
//! [`revoke_token`](AdvancedToken::revoke_token). New passwords obey a
//! policy: `min_password_length` (default 8) and the app's own rule,
//! [`TokenFairing::password_policy`]. The admin command line can be
//! embedded in the app's own ([`cli`]).
//!
//! # Audit events
//!
//! Logins (succeeded, failed, throttled), logouts, rotations, revocations,
//! lockout resets and administrative changes are logged at `info` under the
//! target [`AUDIT_TARGET`] (`advanced_token::audit`), with user id, token id
//! and client IP, never a token, digest or password; the app receives the
//! same [`AuditEvent`]s through [`TokenFairing::on_audit`].
//!
//! # Shaping errors
//!
//! [`TokenFairing::error_body`] gives every error body the crate answers
//! with the app's own shape. When a plain [`AuthUser`] guard fails, Rocket
//! answers through its catcher and the fairing rewrites that answer to the
//! crate's body with `WWW-Authenticate`; `rewrite_guard_failures = false`
//! turns that off. Responses of handlers that take `Result<AuthUser, Error>`
//! or `Option<AuthUser>` are never rewritten.
//!
//! # Coming from Django REST Framework
//!
//! [`AdvancedToken::import_django()`] (the `advanced-token import-django
//! URL` command) copies a Django database's users, password hashes, DRF
//! tokens (as digests) and the drf_advanced_token package's rotation locks
//! into the crate's tables: users keep their passwords (Django's hash
//! formats verify, and are re-hashed with argon2id on the first login) and
//! clients keep their keys (40 hex or a UUID, under the same
//! `Authorization: Token` header). Safe to run again; see the README's
//! "Coming from Django REST Framework".
//!
//! # Security notes
//!
//! * Tokens: 32 bytes from the OS CSPRNG, hex-encoded. The database holds
//!   only their SHA-256 digests under a unique index, so a database leak
//!   yields no usable token. Hence each login issues a *new* token (one per
//!   device) and logout deletes all of the user's tokens, where DRF hands
//!   the same stored token back.
//! * Passwords: argon2id with OWASP's parameters (19 MiB, t=2, p=1) as PHC
//!   strings, computed off the async runtime on `hash_concurrency`
//!   low-priority threads behind a semaphore, so a login flood can neither
//!   exhaust memory nor starve other requests.
//! * Login answers identically, after the same argon2 work, for unknown
//!   users, wrong passwords and inactive users.
//! * The login body is capped at `body_limit` (4 KiB by default) and must
//!   arrive within `body_timeout` (5 s; 408). Run behind a reverse proxy
//!   with header timeouts: Rocket has none of its own.
//! * Token responses (login, rotation) carry `Cache-Control: no-store`.
//!   An oversized body is drained (within bounds) before the 413, so
//!   clients that write their whole body first read the answer. Database
//!   URLs are logged with their password masked, query parameters
//!   (`password`, `sslpassword`) included.
//! * A token is stored only if the password hash it was verified against
//!   is still the user's and the user still active, in the token's
//!   transaction: a password change or deactivation cuts off logins
//!   already past the password check.
//! * Failed logins are throttled per username (`login_max_failures`, 5)
//!   and per client IP (`login_max_failures_per_ip`, 50) within
//!   `login_failure_window` (900 s): 429 with `Retry-After`, before any
//!   argon2 work. Each attempt is recorded before its password check (an
//!   attempt that cannot be recorded is refused), and the counts live in
//!   the database, so the limits hold across instances. Successful logins
//!   are capped per account (`login_max_successes`, 100 per window) and
//!   rotations per user (`rotation_max_per_minute`, 30); each account's
//!   argon2 checks wait in a line of their own. Behind no proxy, set
//!   Rocket's `ip_header = false` so clients cannot choose their IP (the
//!   crate warns at launch when `ip_header` is left at its default on a
//!   non-loopback address). IPv6 clients are counted per /64. Usernames
//!   are trimmed before lookup and counting, as DRF's serializer does.
//!
//! # Several instances and the token cache
//!
//! Instances that share one database share everything: tokens, throttling
//! counts, revocations. Each keeps verified tokens in a bounded in-memory
//! cache (`token_cache`, on by default) so the common guarded request makes
//! no query. Its own revocations evict at once. Every revoking write also
//! appends to a revocation log in the database, naming a token, a user's
//! tokens, or everything (revoke-all); each instance reads the recent
//! window of that log every `token_cache_poll` (1 s) and drops only what
//! the entries name (on PostgreSQL a `NOTIFY` triggers the read at once).
//! Changes made behind the crate's back (the app's own SQL) are seen within
//! `token_cache_ttl` (60 s), or within `token_cache_poll` after
//! [`AdvancedToken::user_changed()`]. An instance that cannot read the log
//! stops serving from its cache. `token_cache = false` checks every request
//! against the database.
//!
//! Migrations are safe from any number of instances launched at once: every
//! step is idempotent and a run that collides with another is retried
//! whole; the PostgreSQL and MySQL locks are checked and their wait is
//! bounded. The README's "Running at scale" covers Galera clusters and
//! pgbouncer (session mode; transaction mode is refused at launch).
//!
//! # Testing your app
//!
//! Use `rocket::local` with a database per test (a SQLite file in a
//! temporary directory) and issue tokens through the managed
//! [`AdvancedToken`]. Login throttling is on in tests as in production;
//! turn it off with `login_throttle = false`, or clear one username's
//! lockout with [`AdvancedToken::reset_throttle()`]. Dropping a `Client`
//! ends the crate's background tasks and argon2 threads.
//!
//! ```rust
//! use rocket::http::{Header, Status};
//! use rocket::local::asynchronous::Client;
//! use rocket_advanced_token::AdvancedToken;
//!
//! # rocket::execute(async {
//! let dir = tempfile::tempdir().unwrap();
//! let url = format!("sqlite://{}/test.sqlite?mode=rwc", dir.path().display());
//! let figment = rocket::Config::figment()
//!     .merge(("databases.advanced_token.url", url))
//!     .merge(("advanced_token.login_throttle", false));
//! let app = rocket::custom(figment)
//!     .attach(AdvancedToken::fairing())
//!     .mount("/auth", rocket_advanced_token::routes());
//! let client = Client::tracked(app).await.unwrap();
//!
//! let at = client.rocket().state::<AdvancedToken>().unwrap();
//! let id = at.create_user("alice", "correct horse").await.unwrap();
//! let token = at.issue_token(id).await.unwrap(); // no password check
//! let res = client
//!     .get("/auth/token/")
//!     .header(Header::new("Authorization", format!("Token {token}")))
//!     .dispatch()
//!     .await;
//! assert_eq!(res.status(), Status::Ok);
//! # });
//! ```
//!
//! In a debug build argon2 runs unoptimised unless the app's own
//! `Cargo.toml` says otherwise (Cargo ignores a dependency's profile
//! settings): add `[profile.dev.package.argon2] opt-level = 3`, and the same
//! for `blake2` and `sha2` (and, for hashes brought from elsewhere,
//! `pbkdf2`, `hmac`, `sha1`, `scrypt`, `salsa20`, `bcrypt`, `blowfish`).
//! The README's "Testing your app" also lists the tables and columns an app
//! may reference, and the order of migrations when it does.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

// The layers, bottom up: configuration and errors; tokens, password
// hashing and the login body; the pool and the store (one file per
// backend); the token cache; the service (login, tokens, users, background
// tasks); the Django import (on the service); then Rocket's side (guard,
// fairing, routes) and the binary's (command line, demo).
mod audit;
mod backend;
mod body;
mod cache;
#[cfg(feature = "cli")]
pub mod cli;
mod config;
#[cfg(feature = "cli")]
mod demo;
mod error;
mod fairing;
mod guard;
mod hashes;
mod import;
mod password;
mod pool;
mod routes;
mod service;
mod store;
mod token;

pub use crate::audit::{AuditEvent, AuditKind, AUDIT_TARGET};
pub use crate::backend::{AppUser, LoginUser, UserBackend, UserId};
#[cfg(feature = "cli")]
pub use crate::cli::run as run_cli;
pub use crate::config::{Config, IdType, UsersTable};
#[cfg(feature = "cli")]
pub use crate::demo::demo;
pub use crate::error::Error;
pub use crate::fairing::TokenFairing;
pub use crate::import::{ImportOptions, ImportProgress, ImportReport, Skipped, Tally};
pub use crate::pool::DbPool;
pub use crate::routes::routes;
pub use crate::service::{AdvancedToken, AuthUser, Session, User};
pub use crate::store::{TokenInfo, UserInfo};
pub use crate::token::parse_authorization;

pub use rocket_db_pools;
pub use sqlx;

/// Entry points for `benches/hot_path.rs`; not part of the public API.
#[cfg(feature = "test-hooks")]
#[doc(hidden)]
pub mod __bench {
    /// The SHA-256 hex digest the guard looks a token up by.
    pub fn token_digest(token: &str) -> String {
        crate::token::digest(token).to_string()
    }

    /// Whether a token has a shape a stored token can have.
    pub fn well_formed(token: &str) -> bool {
        crate::token::well_formed(token)
    }

    /// A fresh token cache holding the tokens `0..n` (see [`token`]).
    pub struct CacheAtSize(crate::cache::TokenCache);

    /// Token number `i`: 64 hex digits, `i` in the last 16.
    pub fn token(i: u64) -> [u8; 64] {
        let mut t = [b'0'; 64];
        hex::encode_to_slice(i.to_be_bytes(), &mut t[48..]).expect("8 bytes are 16 hex digits");
        t
    }

    impl CacheAtSize {
        /// Caches tokens `0..n`, then marks the cache fresh.
        pub fn new(n: u64) -> Self {
            use std::time::Duration;
            let hour = Duration::from_secs(3600);
            // Room to spare: quick_cache splits its capacity over shards,
            // and a full shard would evict some of the `n`.
            let cache = crate::cache::TokenCache::new(2 * n, hour, hour);
            for i in 0..n {
                let row = (i as i64, 1, "bench".to_owned(), true, false, 0, 0, None);
                let digest = crate::token::digest(std::str::from_utf8(&token(i)).unwrap());
                cache.insert(
                    &digest.hex(),
                    row.into(),
                    cache.now_ms(),
                    cache.generation(),
                );
            }
            cache.apply_log(&[], cache.now_ms(), hour);
            CacheAtSize(cache)
        }

        /// The guard's work for token `i` once it is parsed: digest it and
        /// look it up. Whether it was a hit.
        pub fn hit(&self, i: u64) -> bool {
            let t = token(i);
            let digest = crate::token::digest(std::str::from_utf8(&t).unwrap());
            self.0.get(&digest).is_some()
        }
    }
}

/// Entry points for the fuzz targets in `fuzz/`; not part of the public API.
#[cfg(feature = "test-hooks")]
#[doc(hidden)]
pub mod __fuzz {
    use crate::body::Credentials;

    /// Parses a login body as the login route would: `kind % 3` picks JSON (0),
    /// form-urlencoded (1) or multipart (2, the body's first line being the
    /// boundary); the error is the HTTP status code.
    pub fn login_body(kind: u8, body: &[u8]) -> Result<(String, String), u16> {
        let parsed = match kind % 3 {
            0 => Credentials::from_json(body),
            1 => Credentials::from_urlencoded(body),
            _ => {
                let (boundary, rest) = match body.iter().position(|&b| b == b'\n') {
                    Some(i) => (&body[..i], &body[i + 1..]),
                    None => (body, &[][..]),
                };
                let boundary = String::from_utf8_lossy(boundary);
                if boundary.is_empty() {
                    // The login route rejects an empty boundary before parsing.
                    return Err(400);
                }
                rocket::tokio::runtime::Builder::new_current_thread()
                    .build()
                    .expect("a current-thread runtime")
                    .block_on(Credentials::from_multipart(rest.to_vec(), &boundary))
            }
        };
        parsed
            .map(|c| (c.username, c.password))
            .map_err(|e| e.status().code)
    }
}
