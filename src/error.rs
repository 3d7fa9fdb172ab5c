//! The crate's one error type, which is also a [`Responder`].

use std::fmt;
use std::io::Cursor;

use rocket::http::{ContentType, Header, Status};
use rocket::request::Request;
use rocket::response::{self, Responder, Response};
use serde_json::{json, Map, Value};

use crate::AdvancedToken;

/// Everything that can go wrong in this crate, from a bad `Authorization`
/// header to an unreachable database.
///
/// `Error` is a [`Responder`]: every variant becomes a JSON body with a
/// stable shape (`{"detail": "..."}`, or an object of field errors for
/// [`Error::Validation`]) and the status from [`Error::status()`]. Every 401
/// carries `WWW-Authenticate: <bearer_prefix>`, every 405 an `Allow` header.
///
/// Handlers can take `Result<AuthUser, Error>` to see why authentication
/// failed, or return `Result<T, Error>` from code that calls the library
/// functions of [`AdvancedToken`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// No `Authorization` header, or one with another keyword (401).
    NotAuthenticated,
    /// The keyword with nothing after it (401).
    NoCredentials,
    /// More than two whitespace-separated parts in the header (401).
    TokenHasSpaces,
    /// The token is unknown, rotated or revoked (401).
    InvalidToken,
    /// The token has expired; it has been deleted (401).
    TokenExpired,
    /// The token belongs to a deactivated user (401).
    UserInactive,
    /// Login failed: unknown user, wrong password or inactive user, which are
    /// deliberately indistinguishable (401).
    LoginFailed,
    /// The request body had the wrong fields (400). Maps each field to its
    /// messages, in DRF's shape: `{"username": ["This field is required."]}`.
    Validation(Vec<(String, Vec<String>)>),
    /// The request body could not be parsed at all (400).
    BadRequest(String),
    /// A content type the route does not parse (415).
    UnsupportedMediaType(String),
    /// The request body is larger than `advanced_token.body_limit` (413).
    PayloadTooLarge,
    /// The path does not answer this method (405). Holds the `Allow` value.
    MethodNotAllowed(&'static str),
    /// A feature switched off by configuration or by an administrator (405):
    /// the detail, and the `Allow` value (the methods still served).
    Disabled(&'static str, &'static str),
    /// Too many failed logins for this username or client IP (429). Holds
    /// the seconds until the next attempt is allowed (`Retry-After`).
    Throttled(u64),
    /// The database did not answer in time or is unreachable (503).
    Unavailable,
    /// A username that is already taken (409 when returned by a handler).
    UsernameTaken(String),
    /// No user with this username (404 when returned by a handler).
    UnknownUser(String),
    /// A username or password the crate will not store (400).
    InvalidInput(String),
    /// Anything else the database reported (500). The text is logged, never
    /// sent to the client.
    Database(String),
    /// Bad configuration, or a database that cannot be opened at launch. The
    /// message names the key or the host (never a password).
    Config(String),
}

impl Error {
    /// The HTTP status this error is answered with.
    pub fn status(&self) -> Status {
        match self {
            Error::NotAuthenticated
            | Error::NoCredentials
            | Error::TokenHasSpaces
            | Error::InvalidToken
            | Error::TokenExpired
            | Error::UserInactive
            | Error::LoginFailed => Status::Unauthorized,
            Error::Validation(_) | Error::BadRequest(_) | Error::InvalidInput(_) => {
                Status::BadRequest
            }
            Error::UnsupportedMediaType(_) => Status::UnsupportedMediaType,
            Error::PayloadTooLarge => Status::PayloadTooLarge,
            Error::MethodNotAllowed(_) | Error::Disabled(..) => Status::MethodNotAllowed,
            Error::Throttled(_) => Status::TooManyRequests,
            Error::Unavailable => Status::ServiceUnavailable,
            Error::UsernameTaken(_) => Status::Conflict,
            Error::UnknownUser(_) => Status::NotFound,
            Error::Database(_) | Error::Config(_) => Status::InternalServerError,
        }
    }

    /// The JSON body this error is answered with.
    pub fn body(&self) -> Value {
        match self {
            Error::Validation(fields) => {
                let mut map = Map::new();
                for (field, messages) in fields {
                    map.insert(field.clone(), json!(messages));
                }
                Value::Object(map)
            }
            Error::Database(_) | Error::Config(_) => {
                json!({ "detail": "A server error occurred." })
            }
            other => json!({ "detail": other.to_string() }),
        }
    }

    pub(crate) fn from_sqlx(e: sqlx::Error) -> Self {
        match e {
            sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            // A connection cut mid-handshake or mid-reply.
            | sqlx::Error::Protocol(_)
            | sqlx::Error::WorkerCrashed => Error::Unavailable,
            sqlx::Error::Database(ref db) if is_transient(db.as_ref()) => Error::Unavailable,
            other => Error::Database(other.to_string()),
        }
    }
}

/// Database errors that mean "try again later" rather than "bug": SQLite
/// BUSY/LOCKED; PostgreSQL admin shutdown, cannot connect now, too many
/// connections, and a deadlock or serialisation failure that outlived its
/// retries; MySQL the same by error number (sqlx 0.7's `code()` is MySQL's
/// SQLSTATE, which lumps lock wait timeouts in with everything else as
/// `HY000`).
fn is_transient(db: &dyn sqlx::error::DatabaseError) -> bool {
    #[cfg(feature = "mysql")]
    if let Some(my) = db.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>() {
        // Too many connections, shutdown in progress, lock wait timeout,
        // deadlock, server gone away, lost connection, connection killed.
        return matches!(my.number(), 1040 | 1053 | 1205 | 1213 | 2006 | 2013 | 1927);
    }
    matches!(
        db.code().as_deref(),
        Some("5" | "6" | "517" | "57P01" | "57P02" | "57P03" | "53300" | "40001" | "40P01")
    )
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::NotAuthenticated => f.write_str("Authentication credentials were not provided."),
            Error::NoCredentials => f.write_str("Invalid token header. No credentials provided."),
            Error::TokenHasSpaces => {
                f.write_str("Invalid token header. Token string should not contain spaces.")
            }
            Error::InvalidToken => f.write_str("Invalid token."),
            Error::TokenExpired => f.write_str("Token has expired."),
            Error::UserInactive => f.write_str("User inactive or deleted."),
            Error::LoginFailed => f.write_str("Unable to log in with provided credentials."),
            Error::Validation(fields) => {
                let mut first = true;
                for (field, messages) in fields {
                    for m in messages {
                        if !first {
                            f.write_str(" ")?;
                        }
                        first = false;
                        write!(f, "{field}: {m}")?;
                    }
                }
                Ok(())
            }
            Error::BadRequest(msg) => f.write_str(msg),
            Error::UnsupportedMediaType(ct) => {
                write!(f, "Unsupported media type \"{ct}\" in request.")
            }
            Error::PayloadTooLarge => f.write_str("Request body is too large."),
            Error::MethodNotAllowed(_) => f.write_str("Method not allowed."),
            Error::Disabled(what, _) => f.write_str(what),
            Error::Throttled(_) => f.write_str("Too many failed login attempts. Try again later."),
            Error::Unavailable => {
                f.write_str("The authentication database is unavailable. Try again later.")
            }
            Error::UsernameTaken(name) => write!(f, "A user named {name:?} already exists."),
            Error::UnknownUser(name) => write!(f, "No user named {name:?}."),
            Error::InvalidInput(msg) => f.write_str(msg),
            Error::Database(msg) => write!(f, "database error: {msg}"),
            Error::Config(msg) => f.write_str(msg),
        }
    }
}

impl std::error::Error for Error {}

impl<'r> Responder<'r, 'static> for Error {
    fn respond_to(self, req: &'r Request<'_>) -> response::Result<'static> {
        if let Error::Database(_) | Error::Config(_) = self {
            log::error!("advanced_token: {self}");
        }
        let body = self.body().to_string();
        let mut res = Response::build();
        res.status(self.status())
            .header(ContentType::JSON)
            .sized_body(body.len(), Cursor::new(body));
        if self.status() == Status::Unauthorized {
            res.header(www_authenticate(req));
        }
        if let Error::MethodNotAllowed(allow) | Error::Disabled(_, allow) = self {
            res.header(Header::new("Allow", allow));
        }
        if let Error::Throttled(secs) = self {
            res.header(Header::new("Retry-After", secs.max(1).to_string()));
        }
        res.ok()
    }
}

/// `WWW-Authenticate: <bearer_prefix>`, with the configured prefix when the
/// fairing is attached.
pub(crate) fn www_authenticate(req: &Request<'_>) -> Header<'static> {
    let prefix = req
        .rocket()
        .state::<AdvancedToken>()
        .map(|at| at.config().bearer_prefix.clone())
        .unwrap_or_else(|| crate::config::DEFAULT_PREFIX.to_owned());
    Header::new("WWW-Authenticate", prefix)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_401_has_the_drf_detail() {
        assert_eq!(
            Error::NotAuthenticated.body(),
            json!({"detail": "Authentication credentials were not provided."})
        );
        assert_eq!(Error::InvalidToken.status(), Status::Unauthorized);
        assert_eq!(Error::LoginFailed.status(), Status::Unauthorized);
    }

    #[test]
    fn validation_body_is_an_object_of_lists() {
        let e = Error::Validation(vec![
            ("username".into(), vec!["This field is required.".into()]),
            (
                "password".into(),
                vec!["This field may not be blank.".into()],
            ),
        ]);
        assert_eq!(
            e.body(),
            json!({"username": ["This field is required."], "password": ["This field may not be blank."]})
        );
    }

    #[test]
    fn database_errors_never_leak_their_text() {
        let e = Error::Database("secret table name".into());
        assert!(!e.body().to_string().contains("secret"));
        assert_eq!(e.status(), Status::InternalServerError);
    }
}
