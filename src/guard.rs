//! The request guards: [`AuthUser`] and `&AdvancedToken`, and the sentinels
//! that abort launch when the fairing is missing.

use rocket::http::Status;
use rocket::request::{FromRequest, Outcome, Request};
use rocket::{Ignite, Rocket, Sentinel};

use crate::error::Error;
use crate::service::{AdvancedToken, AuthUser};
use crate::token::parse_authorization;

/// The per-request result of authentication, in the request's local cache.
pub(crate) enum Cached {
    NotRun,
    Done(Result<AuthUser, Error>),
}

/// The cached failure, if a guard ran for this request and failed.
pub(crate) fn cached_failure<'r>(req: &'r Request<'_>) -> Option<&'r Error> {
    match req.local_cache(|| Cached::NotRun) {
        Cached::Done(Err(e)) => Some(e),
        _ => None,
    }
}

const NOT_ATTACHED: &str = "rocket_advanced_token is used (AuthUser, AdvancedToken or its routes) \
    but its fairing is not attached: add `.attach(rocket_advanced_token::AdvancedToken::fairing())`";

fn not_attached() -> Error {
    Error::Config(NOT_ATTACHED.into())
}

#[rocket::async_trait]
impl<'r> FromRequest<'r> for AuthUser {
    type Error = Error;

    async fn from_request(req: &'r Request<'_>) -> Outcome<Self, Self::Error> {
        let Some(at) = req.rocket().state::<AdvancedToken>() else {
            return Outcome::Error((Status::InternalServerError, not_attached()));
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
            None => Outcome::Error((Status::InternalServerError, not_attached())),
        }
    }
}

impl Sentinel for AdvancedToken {
    fn abort(rocket: &Rocket<Ignite>) -> bool {
        if rocket.state::<AdvancedToken>().is_some() {
            return false;
        }
        log::error!("{NOT_ATTACHED}");
        true
    }
}
