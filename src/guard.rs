//! The [`AuthUser`] request guard.

use rocket::http::Status;
use rocket::request::{FromRequest, Outcome, Request};
use rocket::{Ignite, Rocket, Sentinel};

use crate::token::parse_authorization;
use crate::{AdvancedToken, Error};

/// A request guard for the user a valid `Authorization: <prefix> <token>`
/// header belongs to.
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
/// catcher response the DRF body and `WWW-Authenticate` header. It tells
/// such a response by its status (401 or 503) and the absence of
/// `WWW-Authenticate`, so a handler that takes `Option<AuthUser>` and
/// answers 401 itself should set that header (HTTP requires it on every
/// 401); a response that carries it is never rewritten.
///
/// The lookup runs once per request, however many guards ask. Using the
/// guard without attaching [`AdvancedToken::fairing()`] aborts launch.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct AuthUser {
    /// The user's id.
    pub id: i64,
    /// The user's username.
    pub username: String,
    pub(crate) token_id: i64,
    pub(crate) digest: String,
    pub(crate) rotation_locked: bool,
}

impl AuthUser {
    pub(crate) fn from_row(row: crate::store::TokenRow, digest: String) -> Self {
        AuthUser {
            id: row.user_id,
            username: row.username,
            token_id: row.token_id,
            digest,
            rotation_locked: row.rotation_locked,
        }
    }

    /// The id of the token the request authenticated with (the id that
    /// `list-tokens` shows).
    pub fn token_id(&self) -> i64 {
        self.token_id
    }
}

/// The per-request result of authentication, in the request's local cache.
pub(crate) enum Cached {
    NotRun,
    Done(Result<AuthUser, Error>),
}

/// The cached result, if a guard ran for this request.
pub(crate) fn cached_failure<'r>(req: &'r Request<'_>) -> Option<&'r Error> {
    match req.local_cache(|| Cached::NotRun) {
        Cached::Done(Err(e)) => Some(e),
        _ => None,
    }
}

#[rocket::async_trait]
impl<'r> FromRequest<'r> for AuthUser {
    type Error = Error;

    async fn from_request(req: &'r Request<'_>) -> Outcome<Self, Self::Error> {
        let Some(at) = req.rocket().state::<AdvancedToken>() else {
            let e = Error::Config("the AdvancedToken fairing is not attached".into());
            return Outcome::Error((Status::InternalServerError, e));
        };
        let cached = req
            .local_cache_async(async {
                let header = req.headers().get_one("Authorization");
                let result = match parse_authorization(header, &at.config().bearer_prefix) {
                    Ok(token) => at.authenticate(token).await,
                    Err(e) => Err(e),
                };
                Cached::Done(result)
            })
            .await;
        match cached {
            Cached::Done(Ok(user)) => Outcome::Success(user.clone()),
            Cached::Done(Err(e)) => Outcome::Error((e.status(), e.clone())),
            Cached::NotRun => {
                Outcome::Error((Status::InternalServerError, Error::NotAuthenticated))
            }
        }
    }
}

impl Sentinel for AuthUser {
    fn abort(rocket: &Rocket<Ignite>) -> bool {
        AdvancedToken::abort(rocket)
    }
}

#[rocket::async_trait]
impl<'r> FromRequest<'r> for &'r AdvancedToken {
    type Error = Error;

    async fn from_request(req: &'r Request<'_>) -> Outcome<Self, Self::Error> {
        match req.rocket().state::<AdvancedToken>() {
            Some(at) => Outcome::Success(at),
            None => Outcome::Error((
                Status::InternalServerError,
                Error::Config("the AdvancedToken fairing is not attached".into()),
            )),
        }
    }
}

impl Sentinel for AdvancedToken {
    fn abort(rocket: &Rocket<Ignite>) -> bool {
        if rocket.state::<AdvancedToken>().is_some() {
            return false;
        }
        log::error!(
            "rocket_advanced_token is used (AuthUser, AdvancedToken or its routes) but its fairing \
             is not attached: add `.attach(rocket_advanced_token::AdvancedToken::fairing())`"
        );
        true
    }
}
