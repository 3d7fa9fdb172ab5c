//! The login flow: throttle, verify the password, issue a token.

use std::net::IpAddr;
use std::sync::atomic::Ordering;

use crate::error::Error;
use crate::token;

use super::AdvancedToken;

/// How often (seconds) a process prunes login failures that left the window.
const PRUNE_INTERVAL: i64 = 60;

/// The longest username accepted, as in Django.
pub(super) const MAX_USERNAME_CHARS: usize = 150;

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
        // As DRF's serializer does; so the lookup and the throttle key see
        // the same name, whatever the database's collation pads.
        let username = crate::body::normalize_username(username);
        if !self.config().login_throttle {
            return self.check_password_and_issue(username, password).await;
        }
        let keys = Keys {
            user: token::digest(username),
            ip: ip.map(super::ip::throttle_key),
        };
        self.throttled_login(&keys, username, password).await
    }

    /// The failures in the window for `keys`, per username and per IP;
    /// [`Error::Throttled`] past either limit.
    async fn failures(&self, keys: &Keys) -> Result<(i64, i64), Error> {
        let cfg = self.config();
        let now = self.now();
        let window = cfg.login_failure_window as i64;
        let ip = keys.ip.as_deref().unwrap_or("");
        let (by_user, by_ip) = self
            .db(|s| s.login_failures(&keys.user, ip, now - window))
            .await?;
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
    /// ones all succeed. Across several instances the bound is the limit
    /// per instance.
    async fn throttled_login(
        &self,
        keys: &Keys,
        username: &str,
        password: &str,
    ) -> Result<String, Error> {
        let cfg = self.config();
        let in_flight = &self.inner.in_flight;
        let _ip_slot = match &keys.ip {
            Some(ip) => {
                let count = || async { Ok(self.failures(keys).await?.1) };
                let max = cfg.login_max_failures_per_ip;
                Some(in_flight.admit(format!("ip {ip}"), max, count).await?.0)
            }
            None => None,
        };
        let count = || async { Ok(self.failures(keys).await?.0) };
        let key = format!("user {}", keys.user);
        let (_user_slot, user_failures) =
            in_flight.admit(key, cfg.login_max_failures, count).await?;
        match self.check_password_and_issue(username, password).await {
            Err(Error::LoginFailed) => {
                self.record_failure(keys).await?;
                Err(Error::LoginFailed)
            }
            Ok(token) => {
                if user_failures > 0 {
                    self.db(|s| s.clear_user_failures(&keys.user)).await?;
                }
                Ok(token)
            }
            Err(other) => Err(other),
        }
    }

    /// Records a failed login, and now and then prunes old ones.
    async fn record_failure(&self, keys: &Keys) -> Result<(), Error> {
        let now = self.now();
        let ip = keys.ip.as_deref();
        self.db(|s| s.record_login_failure(&keys.user, ip, now))
            .await?;
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

    async fn check_password_and_issue(
        &self,
        username: &str,
        password: &str,
    ) -> Result<String, Error> {
        // No stored username is longer or holds a NUL (PostgreSQL rejects
        // NUL in text outright), so either is an unknown user: same argon2
        // work, same answer, no query.
        let row = if username.chars().count() <= MAX_USERNAME_CHARS && !username.contains('\0') {
            self.db(|s| s.find_user(username)).await?
        } else {
            None
        };
        let (id, hash, active) = match row {
            Some(r) => (Some(r.id), Some(r.password_hash), r.is_active),
            None => (None, None, false),
        };
        let ok = self
            .inner
            .hasher
            .verify_as(&token::digest(username), password.to_owned(), hash.clone())
            .await?;
        match (id, hash) {
            // Issued only if the user still has the hash just verified and
            // is still active: a password change or deactivation that
            // committed meanwhile wins, and the login fails like a wrong
            // password.
            (Some(id), Some(hash)) if ok && active => self
                .store_token(id, Some(&hash))
                .await?
                .ok_or(Error::LoginFailed),
            _ => Err(Error::LoginFailed),
        }
    }
}
