//! The app's own users: the [`UserBackend`] trait the crate looks users up
//! through when they live in the app's table rather than the crate's, and
//! the [`UserId`] tokens reference.

use std::any::Any;
use std::fmt;
use std::sync::Arc;

use crate::error::Error;

/// A user's id: the built-in table's integer, or the app's own id (an
/// integer, a UUID or any text). Tokens of the app's users store the id's
/// text; one that reads back as a decimal integer is [`UserId::Int`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(untagged)]
pub enum UserId {
    /// An integer id (the built-in table's, or an app's `BIGINT` key).
    Int(i64),
    /// A text id: a UUID, a slug, anything else.
    Text(String),
}

impl UserId {
    /// The integer, for integer ids.
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            UserId::Int(n) => Some(*n),
            UserId::Text(_) => None,
        }
    }

    /// Reads back an id stored as text.
    pub(crate) fn from_stored(text: String) -> UserId {
        match text.parse::<i64>() {
            Ok(n) if n.to_string() == text => UserId::Int(n),
            _ => UserId::Text(text),
        }
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UserId::Int(n) => write!(f, "{n}"),
            UserId::Text(s) => f.write_str(s),
        }
    }
}

impl From<i64> for UserId {
    fn from(n: i64) -> Self {
        UserId::Int(n)
    }
}

impl From<String> for UserId {
    fn from(s: String) -> Self {
        UserId::from_stored(s)
    }
}

impl From<&str> for UserId {
    fn from(s: &str) -> Self {
        UserId::from_stored(s.to_owned())
    }
}

impl PartialEq<i64> for UserId {
    fn eq(&self, other: &i64) -> bool {
        self.as_i64() == Some(*other)
    }
}

/// What login needs to know of a user, found by login name.
#[derive(Debug, Clone)]
pub struct LoginUser {
    /// The user's id, as tokens will reference it.
    pub id: UserId,
    /// The stored password hash: argon2 (PHC), bcrypt or one of Django's
    /// formats (see the crate docs).
    pub password_hash: String,
    /// Whether the user may log in and use tokens.
    pub is_active: bool,
}

/// A user found by id, as the guard gives it to handlers.
#[derive(Clone)]
pub struct AppUser {
    /// The login name (`AuthUser::username`, `GET token/`'s answer).
    pub username: String,
    /// Whether the user may use tokens: `false` answers 401
    /// `User inactive or deleted.`.
    pub is_active: bool,
    /// The app's own user value, handed out by [`crate::AuthUser::user`].
    pub data: Arc<dyn Any + Send + Sync>,
}

impl fmt::Debug for AppUser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AppUser")
            .field("username", &self.username)
            .field("is_active", &self.is_active)
            .finish_non_exhaustive()
    }
}

/// Where the app's users live, when they are not in the crate's table.
///
/// Implement it on anything that can read the app's users table, and pass
/// it to [`TokenFairing::users`](crate::TokenFairing::users). Or, for a
/// plain table, name the table and its columns in `Rocket.toml` (see
/// [`UsersTable`](crate::UsersTable)): the crate then uses a built-in
/// implementation of this trait. Tokens reference the id the backend gives;
/// the crate creates no users table and no foreign key.
///
/// ```rust
/// use std::sync::Arc;
/// use rocket_advanced_token::{AppUser, Error, LoginUser, UserBackend, UserId};
///
/// #[derive(Clone)]
/// struct Me { email: String, plan: String }
///
/// struct MyUsers; // would hold the app's pool
///
/// #[rocket::async_trait]
/// impl UserBackend for MyUsers {
///     async fn by_login(&self, login: &str) -> Result<Option<LoginUser>, Error> {
///         // SELECT id, password_hash, active FROM my_users WHERE email = ?
///         Ok(None)
///     }
///     async fn by_id(&self, id: &UserId) -> Result<Option<AppUser>, Error> {
///         // SELECT email, active, plan FROM my_users WHERE id = ?
///         let me = Me { email: "a@example.com".into(), plan: "pro".into() };
///         Ok(Some(AppUser { username: me.email.clone(), is_active: true, data: Arc::new(me) }))
///     }
/// }
/// ```
#[rocket::async_trait]
pub trait UserBackend: Send + Sync + 'static {
    /// The user with this login name (already trimmed), if any.
    async fn by_login(&self, login: &str) -> Result<Option<LoginUser>, Error>;

    /// The user with this id, if any, with the app's fields: loaded once
    /// per token lookup and cached with the token, so a guarded request
    /// usually makes no query at all.
    async fn by_id(&self, id: &UserId) -> Result<Option<AppUser>, Error>;

    /// Replaces `old` by `new` as the user's password hash, if it is still
    /// `old`: called after a successful login with a hash in an old format
    /// (bcrypt, Django's...), to upgrade it to argon2id. The default does
    /// nothing (the old hash keeps working).
    async fn upgrade_password_hash(&self, id: &UserId, old: &str, new: &str) -> Result<(), Error> {
        let _ = (id, old, new);
        Ok(())
    }
}
