//! Audit events: what happened to whose tokens, for the log and the app's
//! hook. Never a token, a digest or a password.

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use crate::backend::UserId;

/// The log target audit events are written under, at `info`.
pub const AUDIT_TARGET: &str = "advanced_token::audit";

/// What an [`AuditEvent`] records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum AuditKind {
    /// A login issued a token.
    LoginSucceeded,
    /// A login failed: unknown user, wrong password or inactive user.
    LoginFailed,
    /// A login (or a password check) was refused by the throttle (429).
    LoginThrottled,
    /// A user logged out everywhere (`logout/`): every token deleted.
    LoggedOut,
    /// A token was rotated (`PUT token/`).
    Rotated,
    /// Tokens were revoked: one (`DELETE token/`, `DELETE tokens/<id>`,
    /// [`revoke_token`](crate::AdvancedToken::revoke_token)), a user's or
    /// everyone's.
    Revoked,
    /// A login lockout was cleared.
    ThrottleReset,
    /// A user was created.
    UserCreated,
    /// A password (or password hash) was set.
    PasswordChanged,
    /// A user was activated.
    UserActivated,
    /// A user was deactivated.
    UserDeactivated,
    /// A user was deleted.
    UserDeleted,
    /// Token rotation was locked for a user.
    RotationLocked,
    /// Token rotation was unlocked for a user.
    RotationUnlocked,
}

impl AuditKind {
    /// The event's name in the log: `login_succeeded`, `revoked`...
    pub fn name(self) -> &'static str {
        match self {
            AuditKind::LoginSucceeded => "login_succeeded",
            AuditKind::LoginFailed => "login_failed",
            AuditKind::LoginThrottled => "login_throttled",
            AuditKind::LoggedOut => "logged_out",
            AuditKind::Rotated => "rotated",
            AuditKind::Revoked => "revoked",
            AuditKind::ThrottleReset => "throttle_reset",
            AuditKind::UserCreated => "user_created",
            AuditKind::PasswordChanged => "password_changed",
            AuditKind::UserActivated => "user_activated",
            AuditKind::UserDeactivated => "user_deactivated",
            AuditKind::UserDeleted => "user_deleted",
            AuditKind::RotationLocked => "rotation_locked",
            AuditKind::RotationUnlocked => "rotation_unlocked",
        }
    }
}

/// One audit event, as logged under [`AUDIT_TARGET`] and handed to the hook
/// of [`TokenFairing::on_audit`](crate::TokenFairing::on_audit).
///
/// It names the user (id and, where known, login name), the token (its row
/// id, as `list-tokens` and `GET tokens/` show it) and the client IP; never
/// a token, a digest or a password.
///
/// ```rust
/// use rocket_advanced_token::{AuditEvent, AuditKind};
///
/// fn record(event: &AuditEvent) {
///     if event.kind == AuditKind::LoginFailed {
///         eprintln!("failed login from {:?}", event.ip);
///     }
/// }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct AuditEvent {
    /// What happened.
    pub kind: AuditKind,
    /// The user concerned, when known (not for a failed login).
    pub user_id: Option<UserId>,
    /// The login name concerned, when known.
    pub username: Option<String>,
    /// The token concerned (its row id), when one is.
    pub token_id: Option<i64>,
    /// The client's IP, for events caused by a request.
    pub ip: Option<IpAddr>,
    /// How many tokens went, for revocations.
    pub count: Option<u64>,
}

impl AuditEvent {
    /// An event of `kind` with nothing else known yet.
    pub(crate) fn new(kind: AuditKind) -> Self {
        AuditEvent {
            kind,
            user_id: None,
            username: None,
            token_id: None,
            ip: None,
            count: None,
        }
    }

    pub(crate) fn user(mut self, id: Option<&UserId>, name: Option<&str>) -> Self {
        self.user_id = id.cloned();
        self.username = name.map(str::to_owned);
        self
    }

    pub(crate) fn token(mut self, id: Option<i64>, ip: Option<IpAddr>) -> Self {
        self.token_id = id;
        self.ip = ip;
        self
    }

    pub(crate) fn count(mut self, n: u64) -> Self {
        self.count = Some(n);
        self
    }
}

impl fmt::Display for AuditEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.kind.name())?;
        if let Some(id) = &self.user_id {
            write!(f, " user_id={id}")?;
        }
        if let Some(name) = &self.username {
            write!(f, " username={name:?}")?;
        }
        if let Some(id) = self.token_id {
            write!(f, " token_id={id}")?;
        }
        if let Some(ip) = self.ip {
            write!(f, " ip={ip}")?;
        }
        if let Some(n) = self.count {
            write!(f, " count={n}")?;
        }
        Ok(())
    }
}

/// The app's audit hook.
pub(crate) type AuditHook = Arc<dyn Fn(&AuditEvent) + Send + Sync>;

/// Logs `event` under [`AUDIT_TARGET`] and hands it to `hook`.
pub(crate) fn emit(hook: Option<&AuditHook>, event: AuditEvent) {
    log::info!(target: AUDIT_TARGET, "{event}");
    if let Some(hook) = hook {
        hook(&event);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_print_ids_and_never_secrets() {
        let e = AuditEvent::new(AuditKind::Revoked)
            .user(Some(&UserId::Int(7)), Some("alice"))
            .token(Some(3), "127.0.0.1".parse().ok())
            .count(1);
        assert_eq!(
            e.to_string(),
            "revoked user_id=7 username=\"alice\" token_id=3 ip=127.0.0.1 count=1"
        );
    }
}
