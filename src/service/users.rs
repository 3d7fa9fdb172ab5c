//! User administration: what the command line does, as library calls.

use crate::audit::{AuditEvent, AuditKind};
use crate::backend::{AppUser, UserId};
use crate::error::Error;
use crate::hashes::{identify, Scheme};
use crate::store::{TokenInfo, UserFlag, UserInfo};

use super::login::MAX_USERNAME_CHARS;
use super::AdvancedToken;

/// The longest password accepted (bytes).
const MAX_PASSWORD_BYTES: usize = 1024;

/// A user, as [`AdvancedToken::user_by_id`] and
/// [`AdvancedToken::user_by_username`] find it: from the crate's table
/// (`info` is then set) or through the app's
/// [`UserBackend`](crate::UserBackend) (`app` is then set). Never the
/// password hash.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct User {
    /// The user's id, as tokens reference it.
    pub id: UserId,
    /// The login name.
    pub username: String,
    /// Whether the user may log in and use tokens.
    pub is_active: bool,
    /// With the crate's table: rotation lock, creation time, live tokens.
    pub info: Option<UserInfo>,
    /// With the app's table: what its `UserBackend::by_id` gave.
    pub app: Option<AppUser>,
}

impl From<UserInfo> for User {
    fn from(info: UserInfo) -> Self {
        User {
            id: UserId::Int(info.id),
            username: info.username.clone(),
            is_active: info.is_active,
            info: Some(info),
            app: None,
        }
    }
}

impl AdvancedToken {
    /// Creates an active user. Usernames are case-sensitive, 1 to 150
    /// characters, without whitespace or control characters; the password
    /// must pass the password policy (`min_password_length` and the app's
    /// rule), else [`Error::WeakPassword`].
    ///
    /// Returns the new user's id, or [`Error::UsernameTaken`].
    pub async fn create_user(&self, username: &str, password: &str) -> Result<i64, Error> {
        self.builtin_only("create_user")?;
        validate_username(username)?;
        self.check_password_policy(password)?;
        let hash = self.inner.hasher.hash(password.to_owned()).await?;
        self.insert_user(username, &hash).await
    }

    /// Creates an active user with a password hash made elsewhere: argon2,
    /// bcrypt (`$2a$`/`$2b$`/`$2y$`) or one of Django's formats (an old
    /// format is upgraded to argon2id at the user's first login). A hash in
    /// no known format is [`Error::InvalidInput`]. For importing users.
    ///
    /// ```rust
    /// # rocket::async_test(async {
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let url = format!("sqlite://{}/db.sqlite?mode=rwc", dir.path().display());
    /// # let figment = rocket::Config::figment().merge(("databases.advanced_token.url", url));
    /// # let at = rocket_advanced_token::AdvancedToken::connect(&figment).await?;
    /// // A bcrypt hash of "U*U*" from another system: it logs in as is.
    /// let bcrypt = "$2a$05$CCCCCCCCCCCCCCCCCCCCC.VGOzA784oUp/Z0DY336zx7pLYAy0lwK";
    /// at.create_user_with_hash("alice", bcrypt).await?;
    /// assert!(at.verify_password("alice", "U*U*").await?);
    /// assert!(at.create_user_with_hash("bob", "not a hash").await.is_err());
    /// # Ok::<(), rocket_advanced_token::Error>(()) }).unwrap();
    /// ```
    pub async fn create_user_with_hash(&self, username: &str, hash: &str) -> Result<i64, Error> {
        self.builtin_only("create_user_with_hash")?;
        validate_username(username)?;
        validate_hash(hash)?;
        self.insert_user(username, hash).await
    }

    async fn insert_user(&self, username: &str, hash: &str) -> Result<i64, Error> {
        let now = self.now();
        let id = self
            .db(|s| s.create_user(username, hash, now))
            .await?
            .ok_or_else(|| Error::UsernameTaken(username.to_owned()))?;
        let event = AuditEvent::new(AuditKind::UserCreated);
        self.audit(event.user(Some(&UserId::Int(id)), Some(username)));
        Ok(id)
    }

    /// The argon2id hash (a PHC string) of `password`, as the crate stores
    /// it: for an app that keeps its users in its own table (signup,
    /// password change). The password must pass the same password policy
    /// as [`AdvancedToken::create_user`]'s.
    ///
    /// ```rust,no_run
    /// # async fn f(at: &rocket_advanced_token::AdvancedToken) -> Result<(), rocket_advanced_token::Error> {
    /// let hash = at.hash_password("correct horse battery staple").await?;
    /// assert!(hash.starts_with("$argon2id$"));
    /// # Ok(()) }
    /// ```
    pub async fn hash_password(&self, password: &str) -> Result<String, Error> {
        self.check_password_policy(password)?;
        self.inner.hasher.hash(password.to_owned()).await
    }

    /// Checks a new password against the policy: not empty, at most 1024
    /// bytes, at least `min_password_length` characters, and the app's own
    /// rule ([`TokenFairing::password_policy`](crate::TokenFairing::password_policy)).
    /// [`Error::WeakPassword`] (or [`Error::InvalidInput`]) says why not.
    ///
    /// ```rust
    /// # rocket::async_test(async {
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let url = format!("sqlite://{}/db.sqlite?mode=rwc", dir.path().display());
    /// # let figment = rocket::Config::figment().merge(("databases.advanced_token.url", url));
    /// # let at = rocket_advanced_token::AdvancedToken::connect(&figment).await?;
    /// assert!(at.check_password_policy("pw").is_err()); // under 8 characters
    /// assert!(at.check_password_policy("correct horse").is_ok());
    /// # Ok::<(), rocket_advanced_token::Error>(()) }).unwrap();
    /// ```
    pub fn check_password_policy(&self, password: &str) -> Result<(), Error> {
        validate_password(password)?;
        let min = self.config().min_password_length;
        if password.chars().count() < min {
            return Err(Error::WeakPassword(format!(
                "it must be at least {min} characters long."
            )));
        }
        match &self.inner.policy {
            Some(rule) => rule(password).map_err(Error::WeakPassword),
            None => Ok(()),
        }
    }

    /// Sets a user's password and revokes all of the user's tokens (a
    /// password change logs the user out everywhere); it also clears the
    /// user's login lockout. The password must pass the password policy.
    /// Returns how many tokens were revoked.
    pub async fn set_password(&self, username: &str, password: &str) -> Result<u64, Error> {
        self.builtin_only("set_password")?;
        self.check_password_policy(password)?;
        let id = self.builtin_id(username).await?;
        let hash = self.inner.hasher.hash(password.to_owned()).await?;
        self.store_password(username, id, &hash).await
    }

    /// [`AdvancedToken::set_password()`] with a hash made elsewhere, in any
    /// format [`AdvancedToken::create_user_with_hash()`] accepts.
    ///
    /// ```rust,no_run
    /// # async fn f(at: &rocket_advanced_token::AdvancedToken) -> Result<(), rocket_advanced_token::Error> {
    /// let bcrypt = "$2b$12$R9h/cIPz0gi.URNNX3kh2OPST9/PgBkqquzi.Ss7KIUgO2t0jWMUW";
    /// let revoked = at.set_password_hash("alice", bcrypt).await?;
    /// # Ok(()) }
    /// ```
    pub async fn set_password_hash(&self, username: &str, hash: &str) -> Result<u64, Error> {
        self.builtin_only("set_password_hash")?;
        validate_hash(hash)?;
        let id = self.builtin_id(username).await?;
        self.store_password(username, id, hash).await
    }

    async fn store_password(&self, username: &str, id: i64, hash: &str) -> Result<u64, Error> {
        let revoked = self.db(|s| s.set_password(id, hash)).await;
        self.forget_user(&UserId::Int(id));
        let revoked = revoked?.ok_or_else(|| Error::UnknownUser(username.to_owned()))?;
        let event = AuditEvent::new(AuditKind::PasswordChanged);
        self.audit(
            event
                .user(Some(&UserId::Int(id)), Some(username))
                .count(revoked),
        );
        self.reset_throttle(username).await?;
        Ok(revoked)
    }

    /// The user with this id, from the crate's table or (with the app's
    /// users) through the app's [`UserBackend`](crate::UserBackend);
    /// `None` if there is none.
    ///
    /// ```rust,no_run
    /// # async fn f(at: &rocket_advanced_token::AdvancedToken) -> Result<(), rocket_advanced_token::Error> {
    /// if let Some(user) = at.user_by_id(1).await? {
    ///     println!("{} is {}", user.id, user.username);
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn user_by_id(&self, id: impl Into<UserId>) -> Result<Option<User>, Error> {
        let id = id.into();
        if let Some(users) = self.app_users() {
            let found = self.bounded(users.by_id(&id)).await?;
            return Ok(found.map(|app| User {
                id,
                username: app.username.clone(),
                is_active: app.is_active,
                info: None,
                app: Some(app),
            }));
        }
        let Some(n) = id.as_i64() else {
            return Ok(None);
        };
        let now = self.now();
        Ok(self.db(|s| s.get_user(n, now)).await?.map(User::from))
    }

    /// The user with this login name; `None` if there is none.
    ///
    /// ```rust
    /// # rocket::async_test(async {
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let url = format!("sqlite://{}/db.sqlite?mode=rwc", dir.path().display());
    /// # let figment = rocket::Config::figment().merge(("databases.advanced_token.url", url));
    /// # let at = rocket_advanced_token::AdvancedToken::connect(&figment).await?;
    /// let id = at.create_user("alice", "correct horse battery staple").await?;
    /// let alice = at.user_by_username("alice").await?.expect("alice exists");
    /// assert_eq!(alice.id, id);
    /// assert!(alice.is_active);
    /// assert!(at.user_by_username("nobody").await?.is_none());
    /// # Ok::<(), rocket_advanced_token::Error>(()) }).unwrap();
    /// ```
    pub async fn user_by_username(&self, username: &str) -> Result<Option<User>, Error> {
        match self.user_id(username).await {
            Ok(id) => self.user_by_id(id).await,
            Err(Error::UnknownUser(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Deactivates a user: login fails and the user's tokens answer 401
    /// "User inactive or deleted." (they are kept, and work again after
    /// [`AdvancedToken::activate_user()`]).
    pub async fn deactivate_user(&self, username: &str) -> Result<(), Error> {
        self.set_flag(username, UserFlag::Active, false).await
    }

    /// Re-activates a deactivated user, and clears the user's login
    /// lockout.
    pub async fn activate_user(&self, username: &str) -> Result<(), Error> {
        self.set_flag(username, UserFlag::Active, true).await?;
        self.reset_throttle(username).await
    }

    /// Locks token rotation for one user: `PUT token/` answers 405 for them.
    /// (The Django package's `UserAPIKeyLock`.)
    pub async fn lock_rotation(&self, username: &str) -> Result<(), Error> {
        self.set_flag(username, UserFlag::RotationLocked, true)
            .await
    }

    /// Lifts [`AdvancedToken::lock_rotation()`].
    pub async fn unlock_rotation(&self, username: &str) -> Result<(), Error> {
        self.set_flag(username, UserFlag::RotationLocked, false)
            .await
    }

    async fn set_flag(&self, username: &str, flag: UserFlag, on: bool) -> Result<(), Error> {
        if flag == UserFlag::Active {
            self.builtin_only("activating or deactivating a user")?;
        }
        let id = self.user_id(username).await?;
        let found = self.db(|s| s.set_flag(&id, flag, on)).await;
        self.forget_user(&id);
        if !found? {
            return Err(Error::UnknownUser(username.to_owned()));
        }
        let kind = match (flag, on) {
            (UserFlag::Active, true) => AuditKind::UserActivated,
            (UserFlag::Active, false) => AuditKind::UserDeactivated,
            (UserFlag::RotationLocked, true) => AuditKind::RotationLocked,
            (UserFlag::RotationLocked, false) => AuditKind::RotationUnlocked,
        };
        self.audit(AuditEvent::new(kind).user(Some(&id), Some(username)));
        Ok(())
    }

    /// Deletes a user and all of the user's tokens.
    pub async fn delete_user(&self, username: &str) -> Result<(), Error> {
        self.builtin_only("delete_user")?;
        let id = self.builtin_id(username).await?;
        let found = self.db(|s| s.delete_user(id)).await;
        self.forget_user(&UserId::Int(id));
        if !found? {
            return Err(Error::UnknownUser(username.to_owned()));
        }
        let event = AuditEvent::new(AuditKind::UserDeleted);
        self.audit(event.user(Some(&UserId::Int(id)), Some(username)));
        Ok(())
    }

    /// Every user, by username, with the number of unexpired tokens.
    pub async fn list_users(&self) -> Result<Vec<UserInfo>, Error> {
        self.builtin_only("list_users")?;
        let now = self.now();
        self.db(|s| s.list_users(now)).await
    }

    /// The metadata of a user's tokens (never the tokens or their digests).
    pub async fn list_tokens(&self, username: &str) -> Result<Vec<TokenInfo>, Error> {
        let id = self.user_id(username).await?;
        self.db(|s| s.list_tokens(&id)).await
    }

    /// The id of a user of the crate's own table.
    async fn builtin_id(&self, username: &str) -> Result<i64, Error> {
        self.db(|s| s.find_user(username))
            .await?
            .map(|u| u.id)
            .ok_or_else(|| Error::UnknownUser(username.to_owned()))
    }

    /// The id of a user, from the crate's table or the app's.
    pub(super) async fn user_id(&self, username: &str) -> Result<UserId, Error> {
        match self.app_users() {
            Some(users) => self
                .bounded(users.by_login(username))
                .await?
                .map(|u| u.id)
                .ok_or_else(|| Error::UnknownUser(username.to_owned())),
            None => Ok(UserId::Int(self.builtin_id(username).await?)),
        }
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

/// A password hash must be in a format the verification chain knows.
fn validate_hash(hash: &str) -> Result<(), Error> {
    match identify(hash) {
        Scheme::Unknown => Err(Error::InvalidInput(
            "The password hash is in no known format (argon2, bcrypt or Django's).".into(),
        )),
        _ => Ok(()),
    }
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
        assert!(validate_hash("plaintext").is_err());
        assert!(
            validate_hash("$2b$12$R9h/cIPz0gi.URNNX3kh2OPST9/PgBkqquzi.Ss7KIUgO2t0jWMUW").is_ok()
        );
    }
}
