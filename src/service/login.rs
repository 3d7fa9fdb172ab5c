//! The login flow: throttle, verify the password, issue a token.

use std::net::IpAddr;
use std::sync::atomic::Ordering;

use crate::audit::{AuditEvent, AuditKind};
use crate::backend::{LoginUser, UserBackend, UserId};
use crate::error::Error;
use crate::token;

use super::AdvancedToken;

/// How often (seconds) a process prunes login failures that left the window.
const PRUNE_INTERVAL: i64 = 60;

/// The longest username accepted, as in Django.
pub(super) const MAX_USERNAME_CHARS: usize = 150;
/// The longest login name looked up in the app's users table (an email
/// address is at most 320 characters).
const MAX_LOGIN_CHARS: usize = 320;

/// What a successful password check leads to.
#[derive(Clone, Copy)]
enum Then {
    /// A login: issue a token.
    Issue,
    /// [`AdvancedToken::verify_password`]: nothing.
    Nothing,
}

/// Where a login attempt comes from, for throttling.
struct Keys {
    /// SHA-256 of the username: failures are counted per username without
    /// storing it.
    user: String,
    ip: Option<String>,
}

impl AdvancedToken {
    /// Checks a username and password and issues a new token. Every call
    /// issues a new token; earlier ones keep working (one per device) until
    /// logout, up to `max_tokens_per_user`.
    ///
    /// Unknown user, wrong password and inactive user all give
    /// [`Error::LoginFailed`], after the same argon2 work. Surrounding
    /// whitespace is trimmed from the username first, as DRF's login
    /// serializer does. With
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
        let result = self.attempt(username, password, ip, Then::Issue).await;
        let mut token_id = None;
        let event = match &result {
            Ok((id, token)) => {
                token_id = self.audited_token_id(token).await;
                AuditEvent::new(AuditKind::LoginSucceeded).user(Some(id), Some(username))
            }
            Err(Error::LoginFailed) => {
                AuditEvent::new(AuditKind::LoginFailed).user(None, Some(username))
            }
            Err(Error::Throttled(_)) => {
                AuditEvent::new(AuditKind::LoginThrottled).user(None, Some(username))
            }
            Err(_) => return result.map(|r| r.1),
        };
        self.audit(event.token(token_id, ip));
        result.map(|r| r.1)
    }

    /// The id of a token just issued, for its audit event: one indexed
    /// read, made only when someone listens (the audit log target is on,
    /// or the app has a hook).
    async fn audited_token_id(&self, token: &str) -> Option<i64> {
        if !self.audit_wanted() {
            return None;
        }
        let digest = token::digest(token).hex();
        match self.db(|s| s.find_token(&digest)).await {
            Ok(row) => row.map(|r| r.token_id),
            Err(_) => None,
        }
    }

    /// Whether `password` is `username`'s password, without issuing a token:
    /// e.g. to confirm the password before a sensitive change. `false` for a
    /// wrong password, an unknown or an inactive user (after the same
    /// argon2 work). It counts against the same login throttle as
    /// [`AdvancedToken::login()`] (a wrong password is a failure; past the
    /// limit it gives [`Error::Throttled`] without checking), but it is
    /// never [`Error::LoginFailed`].
    ///
    /// ```rust
    /// # rocket::async_test(async {
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let url = format!("sqlite://{}/db.sqlite?mode=rwc", dir.path().display());
    /// # let figment = rocket::Config::figment().merge(("databases.advanced_token.url", url));
    /// # let at = rocket_advanced_token::AdvancedToken::connect(&figment).await?;
    /// at.create_user("alice", "correct horse battery staple").await?;
    /// assert!(at.verify_password("alice", "correct horse battery staple").await?);
    /// assert!(!at.verify_password("alice", "wrong password").await?);
    /// assert!(!at.verify_password("nobody", "correct horse battery staple").await?);
    /// # Ok::<(), rocket_advanced_token::Error>(()) }).unwrap();
    /// ```
    pub async fn verify_password(&self, username: &str, password: &str) -> Result<bool, Error> {
        self.verify_password_from(username, password, None).await
    }

    /// [`AdvancedToken::verify_password()`] for a request from `ip`: a
    /// failure also counts against the IP's limit.
    pub async fn verify_password_from(
        &self,
        username: &str,
        password: &str,
        ip: Option<IpAddr>,
    ) -> Result<bool, Error> {
        match self.attempt(username, password, ip, Then::Nothing).await {
            Ok(_) => Ok(true),
            Err(Error::LoginFailed) => Ok(false),
            Err(e @ Error::Throttled(_)) => {
                let event = AuditEvent::new(AuditKind::LoginThrottled).user(None, Some(username));
                self.audit(event.token(None, ip));
                Err(e)
            }
            Err(e) => Err(e),
        }
    }

    /// Clears the login lockout of a username: its failed logins are
    /// forgotten, so it may log in again at once. (Failures counted per
    /// client IP are kept.) `set_password` and `activate_user` do this too.
    ///
    /// ```rust
    /// # rocket::async_test(async {
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let url = format!("sqlite://{}/db.sqlite?mode=rwc", dir.path().display());
    /// # let figment = rocket::Config::figment().merge(("databases.advanced_token.url", url));
    /// # let at = rocket_advanced_token::AdvancedToken::connect(&figment).await?;
    /// # use rocket_advanced_token::Error;
    /// at.create_user("alice", "correct horse battery staple").await?;
    /// for _ in 0..5 {
    ///     at.verify_password("alice", "wrong password").await?;
    /// }
    /// let locked = at.verify_password("alice", "correct horse battery staple").await;
    /// assert!(matches!(locked, Err(Error::Throttled(_))));
    /// at.reset_throttle("alice").await?;
    /// assert!(at.verify_password("alice", "correct horse battery staple").await?);
    /// # Ok::<(), rocket_advanced_token::Error>(()) }).unwrap();
    /// ```
    pub async fn reset_throttle(&self, username: &str) -> Result<(), Error> {
        let digest = token::digest(crate::body::normalize_username(username)).hex();
        self.db(|s| s.clear_user_failures(&digest)).await?;
        self.audit(AuditEvent::new(AuditKind::ThrottleReset).user(None, Some(username)));
        Ok(())
    }

    /// A login or a password check, throttled when `login_throttle` is on.
    async fn attempt(
        &self,
        username: &str,
        password: &str,
        ip: Option<IpAddr>,
        then: Then,
    ) -> Result<(UserId, String), Error> {
        // As DRF's serializer does; so the lookup and the throttle key see
        // the same name, whatever the database's collation pads.
        let username = crate::body::normalize_username(username);
        if !self.config().login_throttle {
            return self.check_password(username, password, then).await;
        }
        let keys = Keys {
            user: token::digest(username).to_string(),
            ip: ip.map(super::ip::throttle_key),
        };
        self.throttled_login(&keys, username, password, then).await
    }

    /// The failures in the window for `keys`, per username and per IP;
    /// [`Error::Throttled`] past either limit, [`Error::TooManyLogins`] past
    /// the successful logins allowed per account.
    async fn failures(&self, keys: &Keys) -> Result<(i64, i64), Error> {
        let cfg = self.config();
        let now = self.now();
        let window = cfg.login_failure_window as i64;
        let ip = keys.ip.as_deref().unwrap_or("");
        let counts = self
            .db(|s| s.login_failures(&keys.user, ip, now - window))
            .await?;
        let (by_user, by_ip) = (counts.user, counts.ip);
        if counts.logins.count >= i64::from(cfg.login_max_successes) {
            let retry = counts.logins.oldest.unwrap_or(now) + window - now;
            return Err(Error::TooManyLogins(retry.max(1) as u64));
        }
        let mut retry_after = 0;
        if by_user.count >= i64::from(cfg.login_max_failures) {
            retry_after = retry_after.max(by_user.oldest.unwrap_or(now) + window - now);
        }
        if keys.ip.is_some() && by_ip.count >= i64::from(cfg.login_max_failures_per_ip) {
            retry_after = retry_after.max(by_ip.oldest.unwrap_or(now) + window - now);
        }
        if retry_after > 0 {
            return Err(Error::Throttled(retry_after as u64));
        }
        Ok((by_user.count, by_ip.count))
    }

    /// Concurrent attempts would all pass the failure count before any of
    /// them records its failure. So attempts under way count as failures
    /// until they are done: past the limit, an attempt waits for one to
    /// finish and then counts again. A burst of wrong passwords gets the
    /// limit's worth of argon2 runs, not one per request; a burst of right
    /// ones all succeed. Each admitted attempt is recorded as a failure in
    /// the database *before* its password check (fail closed: an attempt
    /// whose record cannot be written is refused, no argon2), and a success
    /// takes its record back.
    async fn throttled_login(
        &self,
        keys: &Keys,
        username: &str,
        password: &str,
        then: Then,
    ) -> Result<(UserId, String), Error> {
        let cfg = self.config();
        let in_flight = &self.inner.in_flight;
        let mut ip_slot = match &keys.ip {
            Some(ip) => {
                let count = || async { Ok(self.failures(keys).await?.1) };
                let max = cfg.login_max_failures_per_ip;
                Some(in_flight.admit(format!("ip {ip}"), max, count).await?.0)
            }
            None => None,
        };
        let count = || async { Ok(self.failures(keys).await?.0) };
        let key = format!("user {}", keys.user);
        let (mut user_slot, _) = in_flight.admit(key, cfg.login_max_failures, count).await?;
        let now = self.now();
        let ip = keys.ip.as_deref();
        let attempt = self
            .db(|s| s.record_login_failure(&keys.user, ip, now))
            .await?;
        // Now in the database's count: no longer counted as under way.
        user_slot.recorded();
        if let Some(slot) = ip_slot.as_mut() {
            slot.recorded();
        }
        let outcome = self.check_password(username, password, then).await;
        match &outcome {
            Ok(_) => {
                let done = self
                    .db(|s| s.login_succeeded(&keys.user, attempt, now))
                    .await;
                if let Err(e) = done {
                    // Counted as a failure, which errs on the safe side.
                    log::warn!("advanced_token: cannot record a successful login: {e}");
                }
            }
            Err(Error::LoginFailed) => self.prune_failures(now).await?,
            Err(_) => {}
        }
        outcome
    }

    /// Now and then, deletes the failures that left every window.
    async fn prune_failures(&self, now: i64) -> Result<(), Error> {
        let last = self.inner.last_prune.load(Ordering::Relaxed);
        let due = now - last >= PRUNE_INTERVAL;
        if due
            && self
                .inner
                .last_prune
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            let before = now - self.config().login_failure_window as i64;
            self.db(|s| s.prune_login_failures(before)).await?;
        }
        Ok(())
    }

    /// Who a login name is: from the crate's users table, or the app's.
    async fn find_login(&self, username: &str) -> Result<Option<LoginUser>, Error> {
        // No stored username is longer or holds a NUL (PostgreSQL rejects
        // NUL in text outright), so either is an unknown user: same argon2
        // work, same answer, no query.
        let max = match self.app_users() {
            Some(_) => MAX_LOGIN_CHARS,
            None => MAX_USERNAME_CHARS,
        };
        if username.chars().count() > max || username.contains('\0') {
            return Ok(None);
        }
        match self.app_users() {
            Some(users) => self.bounded(users.by_login(username)).await,
            None => Ok(self
                .db(|s| s.find_user(username))
                .await?
                .map(|r| LoginUser {
                    id: UserId::Int(r.id),
                    password_hash: r.password_hash,
                    is_active: r.is_active,
                })),
        }
    }

    /// Checks the password and, with [`Then::Issue`], issues a token:
    /// `(user id, token)`, the token empty with [`Then::Nothing`].
    async fn check_password(
        &self,
        username: &str,
        password: &str,
        then: Then,
    ) -> Result<(UserId, String), Error> {
        let user = self.find_login(username).await?;
        let stored = user.as_ref().map(|u| u.password_hash.clone());
        let hasher = &self.inner.hasher;
        let (ok, upgrade) = hasher
            .verify_as(&token::digest(username).hex(), password.to_owned(), stored)
            .await?;
        let Some(user) = user.filter(|u| ok && u.is_active) else {
            return Err(Error::LoginFailed);
        };
        if let Then::Nothing = then {
            return Ok((user.id, String::new()));
        }
        // A hash in an old format (bcrypt, Django's, other argon2
        // parameters) is replaced by argon2id with today's parameters.
        let new_hash = match upgrade {
            true => Some(hasher.hash(password.to_owned()).await?),
            false => None,
        };
        let token = match self.app_users() {
            // Stored only if the user still has the hash just verified and
            // is still active, in the token's transaction: a password change
            // or deactivation that committed meanwhile wins, and the login
            // fails like a wrong password.
            None => {
                let hash = Some(user.password_hash.as_str());
                self.store_token(&user.id, hash, new_hash.as_deref())
                    .await?
            }
            Some(users) => {
                self.store_app_token(users, username, &user, new_hash.as_deref())
                    .await?
            }
        };
        token.map(|t| (user.id, t)).ok_or(Error::LoginFailed)
    }

    /// With the app's users table the crate cannot lock the user's row: it
    /// stores the token, then reads the user again, and takes the token
    /// back if the password hash changed or the user was deactivated
    /// meanwhile. (An app that changes a password and then revokes the
    /// user's tokens, as it should, is covered either way: the revocation
    /// deletes a token stored before it; the re-read sees a change made
    /// before it.)
    async fn store_app_token(
        &self,
        users: &dyn UserBackend,
        login: &str,
        user: &LoginUser,
        new_hash: Option<&str>,
    ) -> Result<Option<String>, Error> {
        let Some(token) = self.store_token(&user.id, None, None).await? else {
            return Ok(None);
        };
        let now = self.bounded(users.by_login(login)).await?;
        let current = now.is_some_and(|u| {
            u.id == user.id && u.password_hash == user.password_hash && u.is_active
        });
        if !current {
            let digest = token::digest(&token).hex();
            if let Some(row) = self.db(|s| s.find_token(&digest)).await? {
                self.db(|s| s.delete_token(row.token_id, &digest)).await?;
            }
            return Ok(None);
        }
        if let Some(new) = new_hash {
            let upgraded = users.upgrade_password_hash(&user.id, &user.password_hash, new);
            if let Err(e) = self.bounded(upgraded).await {
                log::warn!("advanced_token: cannot upgrade a password hash: {e}");
            }
        }
        Ok(Some(token))
    }
}
