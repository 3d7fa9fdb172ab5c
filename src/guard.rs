//! The request guards: [`AuthUser`] and `&AdvancedToken`, and the sentinels
//! that abort launch when the fairing is missing.

use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};

use rocket::http::Status;
use rocket::request::{FromRequest, Outcome, Request};
use rocket::{Ignite, Rocket, Sentinel};

use crate::error::Error;
use crate::service::{AdvancedToken, AuthUser};
use crate::token::parse_authorization;

/// A guard failure of this request, in the request's local cache: every
/// later guard of the request gives the same answer, and the fairing
/// answers a catcher with it. A success is not kept there: storing it costs
/// every guarded request an allocation and a clone, and a second guard finds
/// the token in the token cache anyway.
#[derive(Default)]
struct Failure(std::sync::OnceLock<Error>);

/// A cookie the guard sets when it fails, only to learn where the failure
/// went: Rocket drops the cookies of a request that ends in a catcher (the
/// plain `AuthUser` guard failing), and keeps them when a handler answers
/// (`Result<AuthUser, Error>`, `Option<AuthUser>`). The fairing reads it
/// and always removes it from the response. Until then it also tells later
/// guards of the request that a failure is cached, without a look there.
pub(crate) const HANDLED_MARK: &str = "__advanced_token_guard";

/// The cached failure, if a guard ran for this request and failed.
pub(crate) fn cached_failure<'r>(req: &'r Request<'_>) -> Option<&'r Error> {
    req.local_cache(Failure::default).0.get()
}

/// Whether a guard of this request failed (or the client sent a cookie of
/// the marker's name), while the request is being handled.
fn marked(req: &Request<'_>) -> bool {
    req.cookies().get_pending(HANDLED_MARK).is_some()
}

/// Keeps the first failure of this request and marks the request; the
/// failure to answer with.
fn keep_failure(req: &Request<'_>, error: Error) -> Error {
    let kept = req.local_cache(Failure::default).0.get_or_init(|| error);
    req.cookies().add((HANDLED_MARK, "1"));
    kept.clone()
}

/// The headers [`header`] scans before it leaves the lookup to Rocket:
/// more than an ordinary request carries. (HTTP/2 lets a client send
/// thousands.)
const SCAN_LIMIT: usize = 32;

/// The first value of a request header: a scan of the request's few
/// headers, which on the guard's path is cheaper than `get_one`'s hashing
/// of the name (Rocket hashes it a byte at a time); `get_one` past
/// [`SCAN_LIMIT`] headers.
fn header<'r>(req: &'r Request<'_>, name: &str) -> Option<&'r str> {
    let mut headers = req.headers().iter();
    for h in headers.by_ref().take(SCAN_LIMIT) {
        // `iter` lends the map's values: the `Owned` arm is never taken.
        if let Cow::Borrowed(value) = h.value {
            if h.name() == name {
                return Some(value);
            }
        }
    }
    match headers.next() {
        Some(_) => req.headers().get_one(name),
        None => None,
    }
}

/// `Request::client_ip`, with the header found by [`header`]: the
/// configured `ip_header`'s address if it holds one, else the peer's.
fn client_ip(req: &Request<'_>) -> Option<IpAddr> {
    let named = req.rocket().config().ip_header.as_deref();
    let real = named.and_then(|name| {
        let value = header(req, name.as_str())?;
        let ip = value.parse().ok();
        if ip.is_none() {
            log::warn!("'{name}' header is malformed: {value}");
        }
        ip
    });
    real.or_else(|| req.remote().map(|r| r.ip()))
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
        if marked(req) {
            if let Some(e) = cached_failure(req) {
                return Outcome::Error((e.status(), e.clone()));
            }
        }
        let header = header(req, "Authorization");
        let result = match parse_authorization(header, &at.config().bearer_prefix) {
            Ok(token) => at.authenticate(token).await,
            Err(e) => Err(e),
        };
        match result {
            Ok(mut user) => {
                user.ip = client_ip(req);
                Outcome::Success(user)
            }
            Err(e) => {
                let e = keep_failure(req, e);
                Outcome::Error((e.status(), e))
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
        // Every route that uses the crate asks; say it once per Rocket.
        static REPORTED: AtomicUsize = AtomicUsize::new(0);
        let this = rocket as *const Rocket<Ignite> as usize;
        if REPORTED.swap(this, Ordering::Relaxed) != this {
            log::error!("{NOT_ATTACHED}");
        }
        true
    }
}
