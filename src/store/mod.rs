//! Storage: one [`Store`] trait, one implementation per backend, each with
//! its own literal SQL (`sqlite.rs`, `postgres.rs`, `mysql.rs`).
//!
//! What the backends share lives here: the rows they return, the retry
//! policy for deadlocks and serialisation failures, and the migration
//! runner. Races are settled by the database: unique indexes, row locks
//! taken by the first statement of a transaction, and `WHERE` clauses that
//! re-check what they change.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::backend::{AppUser, UserId};

mod migrate;
#[cfg(feature = "mysql")]
pub(crate) mod mysql;
#[cfg(feature = "postgres")]
pub(crate) mod postgres;
#[cfg(feature = "sqlite")]
pub(crate) mod sqlite;
mod table_users;

pub(crate) use table_users::*;

/// What login needs to know about a user.
#[derive(Debug)]
pub(crate) struct LoginRow {
    pub id: i64,
    pub password_hash: String,
    pub is_active: bool,
}

/// A token and its user, found by digest in one indexed query. With the
/// app's own users table, the query gives the token and the crate's
/// settings; the service fills in the user (`username`, `is_active`,
/// `app`) from the app's [`UserBackend`](crate::UserBackend).
#[derive(Debug, Clone)]
pub(crate) struct TokenRow {
    pub token_id: i64,
    pub user_id: UserId,
    pub username: String,
    pub is_active: bool,
    pub rotation_locked: bool,
    pub created_at: i64,
    pub last_used_at: i64,
    pub expires_at: Option<i64>,
    pub app: Option<Arc<AppUser>>,
}

/// The columns of [`TokenRow`] with the crate's users table, in the order
/// every backend selects them.
pub(crate) type TokenTuple = (i64, i64, String, bool, bool, i64, i64, Option<i64>);

impl From<TokenTuple> for TokenRow {
    fn from(t: TokenTuple) -> Self {
        TokenRow {
            token_id: t.0,
            user_id: UserId::Int(t.1),
            username: t.2,
            is_active: t.3,
            rotation_locked: t.4,
            created_at: t.5,
            last_used_at: t.6,
            expires_at: t.7,
            app: None,
        }
    }
}

/// The columns of [`TokenRow`] with the app's users table: the user id as
/// text, and no user columns but the crate's rotation lock.
pub(crate) type AppTokenTuple = (i64, String, bool, i64, i64, Option<i64>);

impl From<AppTokenTuple> for TokenRow {
    fn from(t: AppTokenTuple) -> Self {
        TokenRow {
            token_id: t.0,
            user_id: UserId::from_stored(t.1),
            username: String::new(),
            is_active: false,
            rotation_locked: t.2,
            created_at: t.3,
            last_used_at: t.4,
            expires_at: t.5,
            app: None,
        }
    }
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
    /// When the user was created, in seconds since the Unix epoch.
    pub created_at: i64,
    /// How many unexpired tokens the user holds.
    pub live_tokens: i64,
}

/// The columns of [`UserInfo`], in the order every backend selects them.
pub(crate) type UserTuple = (i64, String, bool, bool, i64, i64);

impl From<UserTuple> for UserInfo {
    fn from(t: UserTuple) -> Self {
        UserInfo {
            id: t.0,
            username: t.1,
            is_active: t.2,
            rotation_locked: t.3,
            created_at: t.4,
            live_tokens: t.5,
        }
    }
}

/// A token's metadata, as `list-tokens` shows it: never the token or its
/// digest.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct TokenInfo {
    /// The token's row id, stable for its lifetime (rotation keeps it).
    pub id: i64,
    /// When the login that started this token's chain happened, Unix
    /// seconds (rotation keeps it: `token_max_lifetime` counts from it).
    pub created_at: i64,
    /// When the token was last used, Unix seconds, to within a minute.
    pub last_used_at: i64,
    /// When the token expires, Unix seconds; `None` for never.
    pub expires_at: Option<i64>,
}

/// The columns of [`TokenInfo`], in the order every backend selects them.
pub(crate) type TokenInfoTuple = (i64, i64, i64, Option<i64>);

impl From<TokenInfoTuple> for TokenInfo {
    fn from(t: TokenInfoTuple) -> Self {
        TokenInfo {
            id: t.0,
            created_at: t.1,
            last_used_at: t.2,
            expires_at: t.3,
        }
    }
}

/// Failed logins within the throttling window, for one scope.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Failures {
    pub count: i64,
    pub oldest: Option<i64>,
}

/// A user's and an IP's login attempts in the throttling window: failed
/// (or under way) per username and per IP, and successful per username.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Counts {
    pub user: Failures,
    pub ip: Failures,
    pub logins: Failures,
}

/// The rows a login attempt recorded before its password check (so that an
/// attempt is counted even if the check's outcome could not be written).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Attempt {
    pub user_row: i64,
    pub ip_row: Option<i64>,
}

/// A user flag an administrator sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum UserFlag {
    Active,
    RotationLocked,
}

/// A token to store.
#[derive(Debug)]
pub(crate) struct NewToken<'a> {
    pub user_id: &'a UserId,
    /// The password hash the login verified: the token is only stored if
    /// the user still has it and is active (a password change or a
    /// deactivation that committed meanwhile wins). `None` (a token issued
    /// without a password) only needs the user to exist. (With the app's
    /// users table, the service re-checks after the insert instead.)
    pub verified_hash: Option<&'a str>,
    /// A new hash to store in place of the verified one (an old format
    /// upgraded to argon2id), in the same transaction.
    pub new_hash: Option<&'a str>,
    pub digest: &'a str,
    pub now: i64,
    pub expires_at: Option<i64>,
    /// The most tokens the user keeps; the least recently used go.
    pub keep: u32,
}

/// What a revoking write revoked: its entry in the revocation log.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Revoked<'a> {
    /// One token, rotated away (counted by the rotation rate limit).
    Rotated(&'a UserId, &'a str),
    /// One token, deleted (`DELETE token/`, `DELETE tokens/<id>`,
    /// `revoke_token`).
    Token(&'a UserId, &'a str),
    /// Every token of one user (logout, a password change, a deactivation,
    /// an eviction past `max_tokens_per_user`, ...).
    User(&'a UserId),
    /// Every token.
    All,
}

impl Revoked<'_> {
    /// The entry's `user_id` and `digest` columns.
    pub(crate) fn parts(self) -> (Option<String>, Option<String>) {
        match self {
            Revoked::Rotated(user, digest) | Revoked::Token(user, digest) => {
                (Some(user.to_string()), Some(digest.to_owned()))
            }
            Revoked::User(user) => (Some(user.to_string()), None),
            Revoked::All => (None, None),
        }
    }

    /// The entry's `kind` column.
    pub(crate) fn kind(self) -> &'static str {
        match self {
            Revoked::Rotated(..) => "rotate",
            Revoked::Token(..) => "token",
            Revoked::User(_) => "user",
            Revoked::All => "all",
        }
    }
}

/// A revocation log entry, as the poll reads it: `seq`, `user_id`, `digest`.
pub(crate) type LogEntry = (i64, Option<String>, Option<String>);

/// The crate's tables on one backend. Every method is one transaction (or
/// one statement); the ones that revoke tokens log what they revoked in the
/// same transaction.
#[rocket::async_trait]
pub(crate) trait Store: Import + Send + Sync + 'static {
    /// Applies the migrations this database has not seen yet. Safe to run
    /// from any number of processes at once.
    async fn migrate(&self, now: i64) -> Result<(), sqlx::Error>;
    /// Closes every connection.
    async fn close(&self);

    /// Inserts an active user; `None` if the username is taken.
    async fn create_user(
        &self,
        name: &str,
        hash: &str,
        now: i64,
    ) -> Result<Option<i64>, sqlx::Error>;
    /// The user with this username.
    async fn find_user(&self, name: &str) -> Result<Option<LoginRow>, sqlx::Error>;
    /// Sets the password hash and deletes the user's tokens; `None` if
    /// there is no such user, else how many tokens went.
    async fn set_password(&self, user_id: i64, hash: &str) -> Result<Option<u64>, sqlx::Error>;
    /// Sets a flag (revoking: cached tokens must see it); `false` if there is
    /// no such user. With the app's users table only the rotation lock is
    /// the crate's to set.
    async fn set_flag(
        &self,
        user_id: &UserId,
        flag: UserFlag,
        on: bool,
    ) -> Result<bool, sqlx::Error>;
    /// Deletes a user and (by the foreign key) the user's tokens.
    async fn delete_user(&self, user_id: i64) -> Result<bool, sqlx::Error>;
    /// One user of the crate's table by id, with the number of unexpired
    /// tokens.
    async fn get_user(&self, user_id: i64, now: i64) -> Result<Option<UserInfo>, sqlx::Error>;
    /// Every user, by username, with the number of unexpired tokens.
    async fn list_users(&self, now: i64) -> Result<Vec<UserInfo>, sqlx::Error>;

    /// Stores a token's digest, then deletes the user's least recently used
    /// tokens beyond `keep`. `None` if the user is gone or no longer has
    /// the verified hash; else how many tokens were evicted.
    async fn insert_token(&self, token: NewToken<'_>) -> Result<Option<u64>, sqlx::Error>;
    /// The token with this digest and its user: the guard's one query.
    async fn find_token(&self, digest: &str) -> Result<Option<TokenRow>, sqlx::Error>;
    /// Records a use: `last_used_at` and, with sliding expiry, the expiry;
    /// only while the token still has this digest.
    async fn touch_token(
        &self,
        token_id: i64,
        digest: &str,
        now: i64,
        expires_at: Option<i64>,
    ) -> Result<(), sqlx::Error>;
    /// Deletes one token (an expired one, found by the guard).
    async fn delete_token(&self, token_id: i64, digest: &str) -> Result<(), sqlx::Error>;
    /// Replaces a token's digest if it still has the old one; of several
    /// concurrent rotations of one token exactly one matches.
    async fn rotate_token(
        &self,
        token_id: i64,
        user_id: &UserId,
        old_digest: &str,
        new_digest: &str,
        now: i64,
        expires_at: Option<i64>,
    ) -> Result<bool, sqlx::Error>;
    /// Deletes every token of one user.
    async fn delete_user_tokens(&self, user_id: &UserId) -> Result<u64, sqlx::Error>;
    /// Deletes one token, of `owner` only when given, and logs the
    /// revocation in the same transaction; whose token it was, `None` if
    /// there is no such token (or it is another user's).
    async fn revoke_token(
        &self,
        token_id: i64,
        owner: Option<&UserId>,
    ) -> Result<Option<UserId>, sqlx::Error>;
    /// Deletes every token.
    async fn delete_all_tokens(&self) -> Result<u64, sqlx::Error>;
    /// Deletes expired tokens.
    async fn purge_expired(&self, now: i64) -> Result<u64, sqlx::Error>;
    /// The metadata of one user's tokens.
    async fn list_tokens(&self, user_id: &UserId) -> Result<Vec<TokenInfo>, sqlx::Error>;
    /// The revocation log's entries of the last `window` seconds (by the
    /// database's clock, which every instance shares).
    async fn revocations(&self, window: i64) -> Result<Vec<LogEntry>, sqlx::Error>;
    /// The entries of [`Store::revocations`]' window from sequence number
    /// `seq` on: what a notification announced. Only PostgreSQL announces
    /// entries, and only its listener calls this, with a query of its own;
    /// here, the window's entries from `seq` on.
    #[cfg(feature = "postgres")]
    async fn revocations_from(&self, seq: i64, window: i64) -> Result<Vec<LogEntry>, sqlx::Error> {
        let mut entries = self.revocations(window).await?;
        entries.retain(|(s, _, _)| *s >= seq);
        Ok(entries)
    }
    /// Deletes log entries older than `keep` seconds.
    async fn prune_revocations(&self, keep: i64) -> Result<u64, sqlx::Error>;
    /// Logs that a user changed behind the crate's back: every instance
    /// reads the user's tokens again.
    async fn user_changed(&self, user_id: &UserId) -> Result<(), sqlx::Error>;
    /// The user's rotations in the last `window` seconds: how many, the
    /// oldest one's time, and the database's time now.
    async fn recent_rotations(
        &self,
        user_id: &UserId,
        window: i64,
    ) -> Result<(i64, Option<i64>, i64), sqlx::Error>;

    /// Attempts since `since` for a username digest and a client IP.
    async fn login_failures(&self, user: &str, ip: &str, since: i64)
        -> Result<Counts, sqlx::Error>;
    /// Records a login attempt as failed, for a username digest and, if
    /// known, an IP, before its password is checked.
    async fn record_login_failure(
        &self,
        user: &str,
        ip: Option<&str>,
        now: i64,
    ) -> Result<Attempt, sqlx::Error>;
    /// The attempt succeeded: deletes its rows and the user's earlier
    /// failures, and records a successful login.
    async fn login_succeeded(
        &self,
        user: &str,
        attempt: Attempt,
        now: i64,
    ) -> Result<(), sqlx::Error>;
    /// Forgets a username's failed and successful logins (a lockout reset).
    async fn clear_user_failures(&self, user: &str) -> Result<(), sqlx::Error>;
    /// Deletes failures that have left every window.
    async fn prune_login_failures(&self, before: i64) -> Result<u64, sqlx::Error>;
}

/// The counts of a `login_failures` query, `(scope, count, oldest)` per row.
pub(crate) fn failures(rows: Vec<(String, i64, Option<i64>)>) -> Counts {
    let mut out = Counts::default();
    for (scope, count, oldest) in rows {
        let f = Failures { count, oldest };
        match scope.as_str() {
            "user" => out.user = f,
            "ip" => out.ip = f,
            _ => out.logins = f,
        }
    }
    out
}

/// Whether a transaction failed only because it collided with another:
/// a deadlock or serialisation failure (MySQL 1213 and Galera's
/// certification failures report SQLSTATE 40001; PostgreSQL 40001/40P01),
/// or SQLite BUSY / BUSY_SNAPSHOT. Running it again is the cure.
pub(crate) fn is_conflict(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(db) => {
            crate::error::CONFLICT_CODES.contains(&db.code().as_deref().unwrap_or(""))
        }
        _ => false,
    }
}

/// Runs `attempt` again while it fails with [`is_conflict`], up to 8 times,
/// with a short, growing, jittered pause. (No crate in the dependency tree
/// offers an async retry with jitter; this is the whole policy.)
pub(crate) async fn retry<T, F, Fut>(mut attempt: F) -> Result<T, sqlx::Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, sqlx::Error>>,
{
    let mut tries = 0u32;
    loop {
        match attempt().await {
            Err(e) if is_conflict(&e) && tries < 8 => {
                tries += 1;
                let jitter = rand::random::<u64>() % 10;
                let pause = (2u64 << tries.min(6)) + jitter;
                rocket::tokio::time::sleep(Duration::from_millis(pause)).await;
            }
            other => return other,
        }
    }
}

/// A user read from a Django database, with the user's DRF token and
/// rotation lock: what `import-django` writes, one user at a time.
#[derive(Debug, Clone)]
pub(crate) struct ImportUser {
    pub username: String,
    pub password_hash: String,
    pub is_active: bool,
    /// `date_joined`, Unix seconds.
    pub created_at: i64,
    /// The key's SHA-256 digest and the key's `created`, Unix seconds.
    pub token: Option<(String, i64)>,
    pub rotation_locked: bool,
}

/// How a batch is written.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ImportMode {
    /// Replace the hash of a user whose hash differs, instead of skipping.
    pub overwrite: bool,
    /// Roll the batch back instead of committing it.
    pub dry_run: bool,
    pub now: i64,
    /// The expiry of imported tokens (`token_ttl` from now).
    pub expires_at: Option<i64>,
}

/// What happened to one row of an import.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Imported,
    Updated,
    Unchanged,
    /// Not written: the username holds a different password hash.
    SkippedHashDiffers,
    /// Not written: the key was imported before (and may have been rotated
    /// or logged out since).
    SkippedImportedBefore,
    /// Not written: the digest belongs to a token of another user.
    SkippedTaken,
}

/// What happened to one user of an import: the user, the token (if the
/// user had one) and the rotation lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct UserOutcome {
    pub user: Outcome,
    pub token: Option<Outcome>,
    /// `None` when the user is locked on neither side.
    pub lock: Option<Outcome>,
}

/// The user row an import finds under the username: id, hash, active,
/// locked.
pub(crate) type ExistingUser = (i64, String, bool, bool);

/// What an import does to one user, decided from the row it found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Plan {
    pub user: Outcome,
    pub lock: Option<Outcome>,
    /// The hash changes: the user's tokens go (as with `set_password`).
    pub hash_changed: bool,
    /// Something a cached token carries changes: log a revocation of the
    /// user's tokens.
    pub revoking: bool,
}

/// Decides what to do with `incoming`, given the row found under its
/// username: shared by every backend, so they agree.
pub(crate) fn plan(
    existing: Option<&ExistingUser>,
    incoming: &ImportUser,
    overwrite: bool,
) -> Plan {
    let Some((_, hash, active, locked)) = existing else {
        let lock = incoming.rotation_locked.then_some(Outcome::Imported);
        return Plan {
            user: Outcome::Imported,
            lock,
            hash_changed: false,
            revoking: false,
        };
    };
    let hash_changed = *hash != incoming.password_hash;
    if hash_changed && !overwrite {
        let skipped = Outcome::SkippedHashDiffers;
        let lock = incoming.rotation_locked.then_some(skipped);
        return Plan {
            user: skipped,
            lock,
            hash_changed: false,
            revoking: false,
        };
    }
    let flags_changed = *active != incoming.is_active || *locked != incoming.rotation_locked;
    let lock = match (*locked, incoming.rotation_locked) {
        (false, true) => Some(Outcome::Imported),
        (true, false) => Some(Outcome::Updated),
        (true, true) => Some(Outcome::Unchanged),
        (false, false) => None,
    };
    let user = if hash_changed || flags_changed {
        Outcome::Updated
    } else {
        Outcome::Unchanged
    };
    Plan {
        user,
        lock,
        hash_changed,
        revoking: hash_changed || flags_changed,
    }
}

/// A token imported before: still there, or rotated or logged out since
/// (`live` is how many tokens of the user have the digest).
pub(crate) fn token_seen_before(live: i64) -> Outcome {
    if live > 0 {
        Outcome::Unchanged
    } else {
        Outcome::SkippedImportedBefore
    }
}

/// A first-time token: stored, or its digest already belongs to a token.
pub(crate) fn token_stored(rows: u64) -> Outcome {
    if rows > 0 {
        Outcome::Imported
    } else {
        Outcome::SkippedTaken
    }
}

/// Writing users brought from elsewhere (`import-django`): every backend's
/// own SQL, in a block of its own at the end of its file.
#[rocket::async_trait]
pub(crate) trait Import: Send + Sync {
    /// Writes a batch of users, each with its token and lock, in one
    /// transaction (rolled back in a dry run): users are inserted, or
    /// updated per [`plan`]; a token is inserted unless its digest was
    /// imported before. Logs a revocation of each changed user's tokens.
    async fn import_users(
        &self,
        batch: &[ImportUser],
        mode: ImportMode,
    ) -> Result<Vec<UserOutcome>, sqlx::Error>;
}
