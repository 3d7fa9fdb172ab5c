//! The crate's one error type: what library calls return (database errors
//! keep their sqlx error as `source()`), and a [`Responder`] that answers
//! with DRF's status and body.

use std::fmt;
use std::io::Cursor;
use std::sync::Arc;

use rocket::http::{ContentType, Header, Status};
use rocket::request::Request;
use rocket::response::{self, Responder, Response};
use serde_json::{json, Map, Value};

use crate::config::Config;

/// Everything that can go wrong in this crate, from a bad `Authorization`
/// header to an unreachable database.
///
/// `Error` is a [`Responder`]: every variant becomes a JSON body with a
/// stable shape (`{"detail": "..."}`, or an object of field errors for
/// [`Error::Validation`]) and the status from [`Error::status()`]. Every 401
/// carries `WWW-Authenticate: <bearer_prefix>`, every 429 `Retry-After`.
/// Database errors keep the sqlx error as their
/// [`source()`](std::error::Error::source); its text is logged, never sent.
///
/// Handlers can take `Result<AuthUser, Error>` to see why authentication
/// failed, or return `Result<T, Error>` from code that calls the library
/// functions of [`AdvancedToken`](crate::AdvancedToken).
#[derive(Debug, Clone)]
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
    /// The request body did not arrive within `advanced_token.body_timeout`
    /// (408).
    RequestTimeout,
    /// Too many password checks for one username are already waiting for
    /// or running argon2 (429, `Retry-After: 1`): one account cannot fill
    /// the hashing queue.
    HashQueueFull,
    /// The path does not answer this method (405).
    MethodNotAllowed,
    /// Token rotation is switched off by `allow_rotation = false` (405).
    RotationDisabled,
    /// Token rotation is locked for this user by an administrator (405).
    RotationLocked,
    /// Logout is switched off by `allow_logout = false` (405).
    LogoutDisabled,
    /// Too many failed logins for this username or client IP (429). Holds
    /// the seconds until the next attempt is allowed (`Retry-After`).
    Throttled(u64),
    /// Too many successful logins for this account within the throttling
    /// window (429). Holds the seconds until the next one is allowed.
    TooManyLogins(u64),
    /// Too many token rotations by this user in the last minute (429).
    /// Holds the seconds until the next one is allowed (`Retry-After`).
    TooManyRotations(u64),
    /// The database did not answer in time or is unreachable (503). Holds
    /// the database error, when there was one (not for a timeout).
    Unavailable(Option<Arc<sqlx::Error>>),
    /// A username that is already taken (409 when returned by a handler).
    UsernameTaken(String),
    /// No user with this username (404 when returned by a handler).
    UnknownUser(String),
    /// No such token among the caller's own (404): `DELETE tokens/<id>`
    /// answers the same for a missing id and another user's.
    TokenNotFound,
    /// A password the password policy refuses (400): shorter than
    /// `min_password_length`, or refused by the app's own rule (see
    /// [`TokenFairing::password_policy`](crate::TokenFairing::password_policy)).
    /// Holds the reason.
    WeakPassword(String),
    /// A username or password the crate will not store (400).
    InvalidInput(String),
    /// Anything else the database reported (500). Its text is logged, never
    /// sent to the client.
    Database(Arc<sqlx::Error>),
    /// Bad configuration, or a database that cannot be opened at launch. The
    /// message names the key or the host (never a password).
    Config(String),
    /// A failure inside the crate, such as a password hashing thread that
    /// died (500).
    Internal(&'static str),
}

/// SQLSTATEs (and SQLite result codes) of a transaction that collided with
/// another: worth running again. MySQL's deadlock (1213) and Galera's
/// certification failure report 40001; PostgreSQL 40001 and 40P01; SQLite
/// BUSY (5) and BUSY_SNAPSHOT (517).
pub(crate) const CONFLICT_CODES: [&str; 4] = ["40001", "40P01", "5", "517"];

/// SQLSTATEs (and SQLite codes) that mean the database cannot serve now:
/// SQLite LOCKED (6); PostgreSQL connection exceptions (class 08), admin
/// shutdown, crash shutdown, cannot connect now (57P01-57P03), too many
/// connections (53300), object not in prerequisite state (55000: "not
/// currently accepting connections"); MySQL/Galera 08S01 (communication
/// error, and Galera's "WSREP has not yet prepared node", 1047).
const UNAVAILABLE_CODES: [&str; 8] = [
    "6", "57P01", "57P02", "57P03", "53300", "55000", "08S01", "08006",
];

/// MySQL error numbers that mean "try again later" where the SQLSTATE is
/// the catch-all HY000: too many connections, shutdown in progress, lock
/// wait timeout, server gone away, lost connection, connection killed;
/// on a Galera node cut off from the quorum, "WSREP has not yet prepared
/// node" (1047) and, in the seconds before it notices, "not connected to
/// Primary Component" (1180).
#[cfg(feature = "mysql")]
const MYSQL_UNAVAILABLE: [u16; 8] = [1040, 1053, 1205, 2006, 2013, 1927, 1047, 1180];

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
            Error::Validation(_)
            | Error::BadRequest(_)
            | Error::InvalidInput(_)
            | Error::WeakPassword(_) => Status::BadRequest,
            Error::UnsupportedMediaType(_) => Status::UnsupportedMediaType,
            Error::PayloadTooLarge => Status::PayloadTooLarge,
            Error::RequestTimeout => Status::RequestTimeout,
            Error::HashQueueFull => Status::TooManyRequests,
            Error::MethodNotAllowed
            | Error::RotationDisabled
            | Error::RotationLocked
            | Error::LogoutDisabled => Status::MethodNotAllowed,
            Error::Throttled(_) | Error::TooManyRotations(_) | Error::TooManyLogins(_) => {
                Status::TooManyRequests
            }
            Error::Unavailable(_) => Status::ServiceUnavailable,
            Error::UsernameTaken(_) => Status::Conflict,
            Error::UnknownUser(_) | Error::TokenNotFound => Status::NotFound,
            Error::Database(_) | Error::Config(_) | Error::Internal(_) => {
                Status::InternalServerError
            }
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
            Error::Database(_) | Error::Config(_) | Error::Internal(_) => {
                json!({ "detail": "A server error occurred." })
            }
            other => json!({ "detail": other.to_string() }),
        }
    }

    /// Whether this is a 401 of the DRF family (which carries
    /// `WWW-Authenticate`).
    pub(crate) fn is_unauthorized(&self) -> bool {
        self.status() == Status::Unauthorized
    }
}

impl From<sqlx::Error> for Error {
    fn from(e: sqlx::Error) -> Self {
        if is_unavailable(&e) {
            Error::Unavailable(Some(Arc::new(e)))
        } else {
            Error::Database(Arc::new(e))
        }
    }
}

/// Whether a database error means "try again later" rather than "bug":
/// the pool or the connection failed (any error acquiring or opening a
/// connection), or the server reported a state it will leave on its own.
fn is_unavailable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        // A connection cut mid-handshake or mid-reply.
        | sqlx::Error::Protocol(_)
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => is_transient(db.as_ref()),
        _ => false,
    }
}

fn is_transient(db: &dyn sqlx::error::DatabaseError) -> bool {
    #[cfg(feature = "mysql")]
    if let Some(my) = db.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>() {
        if MYSQL_UNAVAILABLE.contains(&my.number()) {
            return true;
        }
    }
    let code = db.code();
    let code = code.as_deref().unwrap_or("");
    // Class 08 is PostgreSQL's (and the standard's) connection exceptions.
    CONFLICT_CODES.contains(&code) || UNAVAILABLE_CODES.contains(&code) || code.starts_with("08")
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
                let all: Vec<String> = fields
                    .iter()
                    .flat_map(|(field, ms)| ms.iter().map(move |m| format!("{field}: {m}")))
                    .collect();
                f.write_str(&all.join(" "))
            }
            Error::BadRequest(msg) | Error::InvalidInput(msg) | Error::Config(msg) => {
                f.write_str(msg)
            }
            Error::UnsupportedMediaType(ct) => {
                write!(f, "Unsupported media type \"{ct}\" in request.")
            }
            Error::PayloadTooLarge => f.write_str("Request body is too large."),
            Error::RequestTimeout => f.write_str("Timed out reading the request body."),
            Error::HashQueueFull => {
                f.write_str("Too many login attempts under way for this user. Try again later.")
            }
            Error::MethodNotAllowed => f.write_str("Method not allowed."),
            Error::RotationDisabled => f.write_str("Token rotation is disabled."),
            Error::RotationLocked => f.write_str("Token rotation is locked for this user."),
            Error::LogoutDisabled => f.write_str("Logout is disabled."),
            Error::Throttled(_) => f.write_str("Too many failed login attempts. Try again later."),
            Error::TooManyRotations(_) => f.write_str("Too many token rotations. Try again later."),
            Error::TooManyLogins(_) => f.write_str("Too many logins. Try again later."),
            Error::Unavailable(_) => {
                f.write_str("The authentication database is unavailable. Try again later.")
            }
            Error::UsernameTaken(name) => write!(f, "A user named {name:?} already exists."),
            Error::UnknownUser(name) => write!(f, "No user named {name:?}."),
            Error::TokenNotFound => f.write_str("Not found."),
            Error::WeakPassword(why) => write!(f, "This password is not allowed: {why}"),
            Error::Database(e) => write!(f, "database error: {e}"),
            Error::Internal(what) => f.write_str(what),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Database(e) | Error::Unavailable(Some(e)) => Some(e.as_ref()),
            _ => None,
        }
    }
}

impl<'r> Responder<'r, 'static> for Error {
    fn respond_to(self, req: &'r Request<'_>) -> response::Result<'static> {
        match &self {
            Error::Database(_) | Error::Config(_) | Error::Internal(_) => {
                log::error!("advanced_token: {self}")
            }
            Error::Unavailable(Some(e)) => log::warn!("advanced_token: {self}: {e}"),
            _ => {}
        }
        let body = shaped_body(&self, req).to_string();
        let mut res = Response::build();
        res.status(self.status())
            .header(ContentType::JSON)
            .sized_body(body.len(), Cursor::new(body));
        if self.is_unauthorized() {
            res.header(www_authenticate(req));
        }
        match self {
            Error::Throttled(secs) | Error::TooManyRotations(secs) | Error::TooManyLogins(secs) => {
                res.header(Header::new("Retry-After", secs.max(1).to_string()));
            }
            Error::HashQueueFull => {
                res.header(Header::new("Retry-After", "1"));
            }
            _ => {}
        }
        res.ok()
    }
}

/// The app's shaping of error bodies, from
/// [`TokenFairing::error_body`](crate::TokenFairing::error_body), managed by
/// the fairing.
pub(crate) struct BodyHook(pub(crate) ShapeBody);

/// The app's function from an error to its JSON body.
pub(crate) type ShapeBody = Arc<dyn Fn(&Error) -> Value + Send + Sync>;

/// The body `error` is answered with: the app's shape if it gave one, else
/// [`Error::body`].
pub(crate) fn shaped_body(error: &Error, req: &Request<'_>) -> Value {
    match req.rocket().state::<BodyHook>() {
        Some(hook) => (hook.0)(error),
        None => error.body(),
    }
}

/// `WWW-Authenticate: <bearer_prefix>`, with the configured prefix when the
/// fairing is attached (it manages the [`Config`]).
pub(crate) fn www_authenticate(req: &Request<'_>) -> Header<'static> {
    let prefix = req
        .rocket()
        .state::<Config>()
        .map_or(crate::config::DEFAULT_PREFIX, |c| c.bearer_prefix.as_str());
    Header::new("WWW-Authenticate", prefix.to_owned())
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
    fn database_errors_keep_their_source_and_never_leak_their_text() {
        use std::error::Error as _;
        let e = Error::from(sqlx::Error::ColumnNotFound("secret_column".into()));
        assert!(!e.body().to_string().contains("secret"));
        assert_eq!(e.status(), Status::InternalServerError);
        assert!(e.source().unwrap().to_string().contains("secret_column"));
        let e = Error::from(sqlx::Error::PoolTimedOut);
        assert_eq!(e.status(), Status::ServiceUnavailable);
        assert!(e.source().is_some());
    }
}
