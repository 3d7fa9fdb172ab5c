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
//! | ... other content type / body over `body_limit` | 415 / 413 |
//! | `GET token/` | 200 `{"username": "..."}` |
//! | `PUT token/` | 200 `{"token": "..."}`; the old token stops working |
//! | `GET` or `POST logout/` | 200; every token of the user is deleted |
//! | any other method | 405 with `Allow` |
//! | bad or missing token (token, logout, your guarded routes) | 401 with `WWW-Authenticate: <prefix>` |
//! | database unreachable | 503 |
//!
//! The 401 details are DRF's: `Authentication credentials were not
//! provided.`, `Invalid token header. No credentials provided.`, `Invalid
//! token header. Token string should not contain spaces.`, `Invalid token.`,
//! `User inactive or deleted.`, and `Token has expired.`.
//!
//! # Security notes
//!
//! * Tokens: 32 bytes from the OS CSPRNG, hex-encoded. The database holds
//!   only their SHA-256 digests under a unique index, so a database leak
//!   yields no usable token. Hence each login issues a *new* token (one per
//!   device) and logout deletes all of the user's tokens, where DRF hands
//!   the same stored token back.
//! * Passwords: argon2id with OWASP's parameters (19 MiB, t=2, p=1) as PHC
//!   strings, computed in `spawn_blocking` behind a semaphore
//!   (`hash_concurrency`) so a login flood cannot exhaust memory or threads.
//! * Login answers identically, after the same argon2 work, for unknown
//!   users, wrong passwords and inactive users.
//! * The login body is capped at `body_limit` (4 KiB by default).

#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod cli;
mod config;
mod error;
mod fairing;
mod guard;
mod password;
mod routes;
mod service;
mod store;
mod token;

pub use crate::cli::{demo, run as run_cli};
pub use crate::config::Config;
pub use crate::error::Error;
pub use crate::guard::AuthUser;
pub use crate::routes::routes;
pub use crate::service::AdvancedToken;
pub use crate::store::{DbConnection, DbPool, TokenInfo, UserInfo};
pub use crate::token::parse_authorization;

pub use rocket_db_pools;
pub use sqlx;
