//! User administration: what the command line does, as library calls.

use crate::backend::UserId;
use crate::error::Error;
use crate::store::{TokenInfo, UserFlag, UserInfo};

use super::login::MAX_USERNAME_CHARS;
use super::AdvancedToken;

/// The longest password accepted (bytes).
const MAX_PASSWORD_BYTES: usize = 1024;

impl AdvancedToken {
    /// Creates an active user. Usernames are case-sensitive, 1 to 150
    /// characters, without whitespace or control characters.
    ///
    /// Returns the new user's id, or [`Error::UsernameTaken`].
    pub async fn create_user(&self, username: &str, password: &str) -> Result<i64, Error> {
        self.builtin_only("create_user")?;
        validate_username(username)?;
        validate_password(password)?;
        let hash = self.inner.hasher.hash(password.to_owned()).await?;
        let now = self.now();
        self.db(|s| s.create_user(username, &hash, now))
            .await?
            .ok_or_else(|| Error::UsernameTaken(username.to_owned()))
    }

    /// The argon2id hash (a PHC string) of `password`, as the crate stores
    /// it: for an app that keeps its users in its own table (signup,
    /// password change). The password must pass the same checks as
    /// [`AdvancedToken::create_user`]'s.
    pub async fn hash_password(&self, password: &str) -> Result<String, Error> {
        validate_password(password)?;
        self.inner.hasher.hash(password.to_owned()).await
    }

    /// Sets a user's password and revokes all of the user's tokens (a
    /// password change logs the user out everywhere). Returns how many
    /// tokens were revoked.
    pub async fn set_password(&self, username: &str, password: &str) -> Result<u64, Error> {
        self.builtin_only("set_password")?;
        validate_password(password)?;
        let id = self.builtin_id(username).await?;
        let hash = self.inner.hasher.hash(password.to_owned()).await?;
        let revoked = self.db(|s| s.set_password(id, &hash)).await;
        self.forget_user(&UserId::Int(id));
        revoked?.ok_or_else(|| Error::UnknownUser(username.to_owned()))
    }

    /// Deactivates a user: login fails and the user's tokens answer 401
    /// "User inactive or deleted." (they are kept, and work again after
    /// [`AdvancedToken::activate_user()`]).
    pub async fn deactivate_user(&self, username: &str) -> Result<(), Error> {
        self.set_flag(username, UserFlag::Active, false).await
    }

    /// Re-activates a deactivated user.
    pub async fn activate_user(&self, username: &str) -> Result<(), Error> {
        self.set_flag(username, UserFlag::Active, true).await
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
        match found? {
            true => Ok(()),
            false => Err(Error::UnknownUser(username.to_owned())),
        }
    }

    /// Deletes a user and all of the user's tokens.
    pub async fn delete_user(&self, username: &str) -> Result<(), Error> {
        self.builtin_only("delete_user")?;
        let id = self.builtin_id(username).await?;
        let found = self.db(|s| s.delete_user(id)).await;
        self.forget_user(&UserId::Int(id));
        match found? {
            true => Ok(()),
            false => Err(Error::UnknownUser(username.to_owned())),
        }
    }

    /// Clears a username's login lockout: forgets its failed logins (and
    /// its count of successful ones), so it may log in again at once. The
    /// per-IP counts are left alone.
    pub async fn reset_throttle(&self, username: &str) -> Result<(), Error> {
        let key = crate::token::digest(crate::body::normalize_username(username));
        self.db(|s| s.clear_user_failures(&key)).await
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
}
