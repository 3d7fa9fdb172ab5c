//! The token lifecycle: authenticate (the guard's work), rotate, revoke.

use std::net::IpAddr;
use std::sync::Arc;

use crate::audit::{AuditEvent, AuditKind};
use crate::backend::{AppUser, UserId};
use crate::error::Error;
use crate::store::{NewToken, TokenInfo, TokenRow};
use crate::token;

use super::AdvancedToken;

/// Writes of `last_used_at` (and of a sliding expiry) happen at most this
/// often per token, so the guard's hot path is one read.
pub(crate) const TOUCH_INTERVAL: i64 = 60;

/// Users refused a rotation, and until when (this process's clock) they
/// certainly still would be. A rotation leaves the last minute only as it
/// ages, and rotations elsewhere only add, so a refusal holds until the
/// oldest rotation counted ages out: refused from here, a user hammering
/// `PUT token/` costs the database nothing per request.
pub(super) struct Refusals(moka::sync::Cache<String, std::time::Instant>);

impl Default for Refusals {
    fn default() -> Self {
        Refusals(
            moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(std::time::Duration::from_secs(60))
                .build(),
        )
    }
}

impl Refusals {
    /// The seconds to wait (for `Retry-After`), if `id` is still refused.
    fn still(&self, id: &UserId) -> Option<u64> {
        let left = self
            .0
            .get(&id.to_string())?
            .checked_duration_since(std::time::Instant::now())?;
        Some(left.as_secs() + 1)
    }

    /// Refuses `id` for `retry` seconds (at most 60) from `asked`, the
    /// moment before the database was asked, less one: the database counts
    /// in whole seconds, so the last one is left to its answer.
    fn hold(&self, id: &UserId, asked: std::time::Instant, retry: u64) {
        if retry > 1 {
            let until = asked + std::time::Duration::from_secs(retry.min(60) - 1);
            self.0.insert(id.to_string(), until);
        }
    }
}

/// The user a valid `Authorization: <prefix> <token>` header belongs to:
/// what the request guard gives a handler.
///
/// ```rust
/// # use rocket::get;
/// use rocket_advanced_token::AuthUser;
///
/// #[get("/api/hello")]
/// fn hello(user: AuthUser) -> String {
///     format!("hello, {} (user {})", user.username, user.id)
/// }
/// ```
///
/// Without a valid token the request fails with 401 and a DRF-style body,
/// `{"detail": "Invalid token."}`, plus `WWW-Authenticate: <prefix>`; with
/// the database unreachable, with 503. Other forms:
///
/// * `Option<AuthUser>`: `None` instead of failing, for optional
///   authentication.
/// * `Result<AuthUser, Error>`: the [`Error`] itself, to answer as you wish
///   (it is a `Responder` that gives the standard body).
///
/// When the plain `AuthUser` guard fails, the fairing gives Rocket's
/// catcher response the DRF body (or the app's shape, see
/// [`TokenFairing::error_body`](crate::TokenFairing::error_body)) and the
/// `WWW-Authenticate` header, unless `rewrite_guard_failures = false`. A
/// response of a handler that takes `Result<AuthUser, Error>` or
/// `Option<AuthUser>` is never rewritten, nor one that already carries
/// `WWW-Authenticate` (HTTP requires it on every 401).
///
/// Each guard of a request looks the token up (a hit in the token cache,
/// usually); once one has failed, every later guard of the request gives
/// that same failure. Using the guard without attaching
/// [`AdvancedToken::fairing()`] aborts launch.
///
/// With the app's own users table, [`AuthUser::user`] gives the app's user
/// value (from its [`UserBackend`](crate::UserBackend)), or
/// [`AuthUser::fields`] the columns named in `advanced_token.users.fields`,
/// loaded with the token and cached with it: no query of the app's own.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct AuthUser {
    /// The user's id.
    pub id: UserId,
    /// The user's username (login name).
    pub username: String,
    pub(crate) token_id: i64,
    pub(crate) digest: token::Digest,
    pub(crate) rotation_locked: bool,
    pub(crate) created_at: i64,
    /// The client's IP (set by the guard), for audit events.
    pub(crate) ip: Option<IpAddr>,
    app: Option<Arc<AppUser>>,
}

impl AuthUser {
    fn from_row(row: TokenRow, digest: token::Digest) -> Self {
        AuthUser {
            id: row.user_id,
            username: row.username,
            token_id: row.token_id,
            digest,
            rotation_locked: row.rotation_locked,
            created_at: row.created_at,
            ip: None,
            app: row.app,
        }
    }

    /// The app's own user value, when users live in the app's table and its
    /// [`UserBackend`](crate::UserBackend) put a `U` in
    /// [`AppUser::data`]; `None` otherwise.
    pub fn user<U: 'static>(&self) -> Option<&U> {
        self.app.as_ref()?.data.downcast_ref::<U>()
    }

    /// The columns named in `advanced_token.users.fields`, as a JSON object,
    /// when the users table is named in configuration.
    pub fn fields(&self) -> Option<&serde_json::Map<String, serde_json::Value>> {
        self.user()
    }

    /// The id of the token the request authenticated with (the id that
    /// `list-tokens` shows).
    pub fn token_id(&self) -> i64 {
        self.token_id
    }

    /// The client IP of the request, as Rocket's `client_ip()` saw it.
    pub fn ip(&self) -> Option<IpAddr> {
        self.ip
    }

    /// An audit event about this user and token.
    fn event(&self, kind: AuditKind) -> AuditEvent {
        AuditEvent::new(kind)
            .user(Some(&self.id), Some(&self.username))
            .token(Some(self.token_id), self.ip)
    }
}

/// One of a user's tokens, as `GET tokens/` lists it: its metadata and
/// whether it is the one the request authenticated with. Never the token
/// or its digest.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct Session {
    /// The token's metadata.
    #[serde(flatten)]
    pub token: TokenInfo,
    /// Whether the request authenticated with this token.
    pub current: bool,
}

impl AdvancedToken {
    /// Issues a new token for a user id, without a password: for apps that
    /// authenticate users another way. [`Error::UnknownUser`] if there is
    /// no such user.
    pub async fn issue_token(&self, user_id: impl Into<UserId>) -> Result<String, Error> {
        let id = user_id.into();
        let unknown = || Error::UnknownUser(format!("#{id}"));
        if let Some(users) = self.app_users() {
            self.bounded(users.by_id(&id)).await?.ok_or_else(unknown)?;
        }
        self.store_token(&id, None, None).await?.ok_or_else(unknown)
    }

    /// Stores a new token for `user_id`; `None` if the user is gone or, with
    /// `verified_hash`, no longer has that password hash or is inactive.
    /// `new_hash` replaces the verified one in the same transaction.
    pub(super) async fn store_token(
        &self,
        user_id: &UserId,
        verified_hash: Option<&str>,
        new_hash: Option<&str>,
    ) -> Result<Option<String>, Error> {
        let token = token::generate();
        let digest = token::digest(&token).hex();
        let now = self.now();
        let new = NewToken {
            user_id,
            verified_hash,
            new_hash,
            digest: &digest,
            now,
            expires_at: self.expiry_from(now),
            keep: self.config().max_tokens_per_user,
        };
        let Some(evicted) = self.db(|s| s.insert_token(new)).await? else {
            return Ok(None);
        };
        if evicted > 0 {
            self.forget_user(user_id);
        }
        Ok(Some(token))
    }

    /// Authenticates a token (the part after the keyword). This is what the
    /// [`AuthUser`] guard runs: with the cache, usually no query; otherwise
    /// one indexed read, plus a write at most once a minute per token to
    /// record its use.
    pub async fn authenticate(&self, token: &str) -> Result<AuthUser, Error> {
        if !token::well_formed(token) {
            return Err(Error::InvalidToken);
        }
        let digest = token::digest(token);
        let now = self.now();
        if let Some(row) = self.cache().and_then(|c| c.get(&digest)) {
            // A hit needs no database work unless the token expired (the
            // database path deletes it) or a use is due to be recorded.
            let expired = row.expires_at.is_some_and(|at| at <= now);
            if !expired && row.is_active && self.touch(&row, now).is_none() {
                return Ok(AuthUser::from_row(row, digest));
            }
        }
        // Boxed: the database path's future is large, and the guard moves
        // this one several times on every request (BENCHMARKS.md).
        let row = Box::pin(self.lookup(&digest.hex(), now)).await?;
        Ok(AuthUser::from_row(row, digest))
    }

    /// The database path of [`AdvancedToken::authenticate`].
    async fn lookup(&self, digest: &str, now: i64) -> Result<TokenRow, Error> {
        let generation = self.cache().map(|c| (c.now_ms(), c.generation()));
        let mut row = self
            .db(|s| s.find_token(digest))
            .await?
            .ok_or(Error::InvalidToken)?;
        if row.expires_at.is_some_and(|at| at <= now) {
            self.db(|s| s.delete_token(row.token_id, digest)).await?;
            if let Some(c) = self.cache() {
                c.invalidate(digest);
            }
            return Err(Error::TokenExpired);
        }
        if let Some(users) = self.app_users() {
            // The user from the app's table, cached with the token. A user
            // deleted there leaves the token meaningless.
            let user = self.bounded(users.by_id(&row.user_id)).await?;
            let user = user.ok_or(Error::InvalidToken)?;
            row.username.clone_from(&user.username);
            row.is_active = user.is_active;
            row.app = Some(Arc::new(user));
        }
        if !row.is_active {
            return Err(Error::UserInactive);
        }
        if let Some(expires_at) = self.touch(&row, now) {
            self.db(|s| s.touch_token(row.token_id, digest, now, expires_at))
                .await?;
            row.last_used_at = now;
            row.expires_at = expires_at;
        }
        if let (Some(c), Some((read_at, generation))) = (self.cache(), generation) {
            c.insert(digest, row.clone(), read_at, generation);
        }
        Ok(row)
    }

    /// Whether this use must be written, and the expiry to write. At most once
    /// a [`TOUCH_INTERVAL`] per token.
    fn touch(&self, row: &TokenRow, now: i64) -> Option<Option<i64>> {
        if now - row.last_used_at < TOUCH_INTERVAL {
            return None;
        }
        if self.config().token_ttl_sliding {
            Some(self.capped_expiry(now, row.created_at))
        } else {
            Some(row.expires_at)
        }
    }

    /// `token_ttl` from `now`, capped by `token_max_lifetime` from the login
    /// that started the token's chain (`created_at`, which rotation keeps).
    fn capped_expiry(&self, now: i64, created_at: i64) -> Option<i64> {
        let slid = self.expiry_from(now)?;
        Some(match self.config().token_max_lifetime {
            Some(max) => slid.min(created_at.saturating_add(max as i64)),
            None => slid,
        })
    }

    /// Replaces the token `user` authenticated with by a new one: the old
    /// token stops working at once; the user's other tokens are untouched.
    /// Of concurrent rotations of one token exactly one succeeds; the others
    /// get [`Error::InvalidToken`]. [`Error::RotationDisabled`] or
    /// [`Error::RotationLocked`] when rotation is not allowed.
    pub async fn rotate(&self, user: &AuthUser) -> Result<String, Error> {
        if !self.config().allow_rotation {
            return Err(Error::RotationDisabled);
        }
        if user.rotation_locked {
            return Err(Error::RotationLocked);
        }
        self.check_rotation_rate(&user.id).await?;
        let token = token::generate();
        let (old_digest, new_digest) = (user.digest.hex(), token::digest(&token).hex());
        let now = self.now();
        let expires_at = self.capped_expiry(now, user.created_at);
        let rotated = self
            .db(|s| {
                s.rotate_token(
                    user.token_id,
                    &user.id,
                    &old_digest,
                    &new_digest,
                    now,
                    expires_at,
                )
            })
            .await?;
        if let Some(cache) = self.cache() {
            cache.invalidate(&old_digest);
        }
        if rotated {
            self.audit(user.event(AuditKind::Rotated));
            Ok(token)
        } else {
            Err(Error::InvalidToken)
        }
    }

    /// [`Error::TooManyRotations`] when the user rotated
    /// `rotation_max_per_minute` times in the last minute, on any instance
    /// (the revocation log counts them): one user cannot keep every
    /// instance's cache busy.
    async fn check_rotation_rate(&self, id: &UserId) -> Result<(), Error> {
        let refused = &self.inner.rotations_refused;
        if let Some(left) = refused.still(id) {
            return Err(Error::TooManyRotations(left));
        }
        let max = i64::from(self.config().rotation_max_per_minute);
        // Before the query: the database's `now` is no later than this.
        let asked = std::time::Instant::now();
        let (count, oldest, now) = self.db(|s| s.recent_rotations(id, 60)).await?;
        if count < max {
            return Ok(());
        }
        let retry = oldest.map_or(60, |t| t + 60 - now).clamp(1, 60) as u64;
        refused.hold(id, asked, retry);
        Err(Error::TooManyRotations(retry))
    }

    /// Logs `user` out everywhere: deletes all of the user's tokens. Returns
    /// how many. [`Error::LogoutDisabled`] with `allow_logout = false`.
    pub async fn logout(&self, user: &AuthUser) -> Result<u64, Error> {
        if !self.config().allow_logout {
            return Err(Error::LogoutDisabled);
        }
        let n = self.db(|s| s.delete_user_tokens(&user.id)).await;
        self.forget_user(&user.id);
        let n = n?;
        self.audit(user.event(AuditKind::LoggedOut).count(n));
        Ok(n)
    }

    /// Logs out the device `user` authenticated with: deletes only that
    /// token (knox's `logout/`; `DELETE token/`). The user's other tokens
    /// keep working. [`Error::LogoutDisabled`] with `allow_logout = false`;
    /// [`Error::InvalidToken`] if the token went meanwhile.
    pub async fn logout_device(&self, user: &AuthUser) -> Result<(), Error> {
        if !self.config().allow_logout {
            return Err(Error::LogoutDisabled);
        }
        match self.revoke_own_token(user, user.token_id).await {
            Err(Error::TokenNotFound) => Err(Error::InvalidToken),
            other => other,
        }
    }

    /// The tokens of the user `user` is (`GET tokens/`): id, created, last
    /// used, expiry, and which one the request authenticated with.
    pub async fn sessions(&self, user: &AuthUser) -> Result<Vec<Session>, Error> {
        let tokens = self.db(|s| s.list_tokens(&user.id)).await?;
        Ok(tokens
            .into_iter()
            .map(|token| Session {
                current: token.id == user.token_id,
                token,
            })
            .collect())
    }

    /// Deletes one of `user`'s own tokens by id (`DELETE tokens/<id>`):
    /// logs one of the user's devices out. [`Error::TokenNotFound`] when
    /// there is no such token *or it belongs to another user*: the two are
    /// indistinguishable.
    pub async fn revoke_own_token(&self, user: &AuthUser, token_id: i64) -> Result<(), Error> {
        let found = self
            .db(|s| s.revoke_token(token_id, Some(&user.id)))
            .await?;
        if found.is_none() {
            return Err(Error::TokenNotFound);
        }
        self.forget_user(&user.id);
        let event = user.event(AuditKind::Revoked).count(1);
        self.audit(AuditEvent {
            token_id: Some(token_id),
            ..event
        });
        Ok(())
    }

    /// Deletes one token by id, whoever's it is (an administrator's call;
    /// the id is the one `list-tokens` shows). `false` if there is no such
    /// token. Every instance stops accepting it within `token_cache_poll`.
    ///
    /// ```rust,no_run
    /// # async fn f(at: &rocket_advanced_token::AdvancedToken) -> Result<(), rocket_advanced_token::Error> {
    /// for token in at.list_tokens("alice").await? {
    ///     at.revoke_token(token.id).await?;
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn revoke_token(&self, token_id: i64) -> Result<bool, Error> {
        let Some(owner) = self.db(|s| s.revoke_token(token_id, None)).await? else {
            return Ok(false);
        };
        self.forget_user(&owner);
        let event = AuditEvent::new(AuditKind::Revoked).user(Some(&owner), None);
        self.audit(event.token(Some(token_id), None).count(1));
        Ok(true)
    }

    /// Deletes all tokens of one user. Returns how many.
    pub async fn revoke_tokens(&self, username: &str) -> Result<u64, Error> {
        let id = self.user_id(username).await?;
        let n = self.db(|s| s.delete_user_tokens(&id)).await;
        self.forget_user(&id);
        let n = n?;
        let event = AuditEvent::new(AuditKind::Revoked).user(Some(&id), Some(username));
        self.audit(event.count(n));
        Ok(n)
    }

    /// Deletes every token of every user. Returns how many.
    pub async fn revoke_all_tokens(&self) -> Result<u64, Error> {
        let n = self.db(|s| s.delete_all_tokens()).await;
        self.forget_all();
        let n = n?;
        self.audit(AuditEvent::new(AuditKind::Revoked).count(n));
        Ok(n)
    }

    /// Deletes expired tokens. Returns how many.
    pub async fn purge_expired(&self) -> Result<u64, Error> {
        let now = self.now();
        self.db(|s| s.purge_expired(now)).await
    }
}
